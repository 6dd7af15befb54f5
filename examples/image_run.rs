//! Unpacks (or reuses) an OCI / Docker image and runs its command in a sandbox.
//!
//! ```text
//! cargo run --example image_run --features image -- [FLAGS] PATH[:REF] [-- CMD [ARGS...]]
//!
//!   PATH               an OCI layout directory, an OCI archive or a `docker save` archive
//!   REF                the image's reference name or tag (needed when PATH holds several);
//!                      it may hold ':' (`x.tar:deb:latest`), and so may PATH: PATH is the
//!                      longest part before a ':' that exists (or all of it)
//!   CMD                replaces the image's Cmd (kept after its Entrypoint)
//!
//!   --store DIR        the layer store (default: /var/tmp/stockade-layers-UID)
//!   --flat DIR         flatten into DIR/rootfs instead of using the store (DIR must not exist)
//!   --unpack-only      prepare the root file system and exit without running anything
//!   --sync             flush each new layer to disk before it enters the store
//!   --platform OS/ARCH[/VARIANT]  (default: this machine's)
//!   --env KEY=VALUE    add or override an image variable (repeatable)
//!   --cwd DIR          override the image's WorkingDir
//!   --user UID:GID     override the image's User
//! ```
//!
//! As root the sandbox maps ids 0-65535 to themselves, so the image's file owners and `User`
//! work as in the image. Rootless, only the caller's id is mapped (to root): the unpacked
//! files belong to it, and an image `User` other than root falls back to root with a note.
//!
//! Example: `cargo run --example image_run --features image -- ./alpine-oci:latest -- /bin/sh -c 'id; ls /'`

use std::ffi::OsString;
use std::path::Path;
use std::process::ExitCode;

use stockade::image::{ImageSource, LayerStore, Platform};
use stockade::{IdMap, Namespaces, Sandbox};

struct Args {
    source: String,
    reference: Option<String>,
    cmd: Option<Vec<OsString>>,
    store: Option<String>,
    flat: Option<String>,
    unpack_only: bool,
    sync: bool,
    platform: Platform,
    env: Vec<(String, String)>,
    cwd: Option<String>,
    user: Option<(u32, u32)>,
}

fn parse() -> Result<Args, String> {
    let mut it = std::env::args_os().skip(1);
    let mut args = Args {
        source: String::new(),
        reference: None,
        cmd: None,
        store: None,
        flat: None,
        unpack_only: false,
        sync: false,
        platform: Platform::host(),
        env: Vec::new(),
        cwd: None,
        user: None,
    };
    let text = |v: Option<OsString>, flag: &str| -> Result<String, String> {
        v.and_then(|v| v.into_string().ok()).ok_or_else(|| format!("{flag} needs a value"))
    };
    while let Some(arg) = it.next() {
        match arg.to_str().unwrap_or("") {
            "--store" => args.store = Some(text(it.next(), "--store")?),
            "--flat" => args.flat = Some(text(it.next(), "--flat")?),
            "--unpack-only" => args.unpack_only = true,
            "--sync" => args.sync = true,
            "--platform" => {
                let v = text(it.next(), "--platform")?;
                let parts: Vec<&str> = v.split('/').collect();
                args.platform = match parts.as_slice() {
                    [os, arch] => Platform::new(*os, *arch),
                    [os, arch, variant] => Platform::new(*os, *arch).variant(*variant),
                    _ => return Err(format!("--platform {v}: expected OS/ARCH[/VARIANT]")),
                };
            }
            "--env" => {
                let v = text(it.next(), "--env")?;
                let (k, val) = v.split_once('=').ok_or(format!("--env {v}: expected KEY=VALUE"))?;
                args.env.push((k.to_owned(), val.to_owned()));
            }
            "--cwd" => args.cwd = Some(text(it.next(), "--cwd")?),
            "--user" => {
                let v = text(it.next(), "--user")?;
                let (u, g) = v.split_once(':').ok_or(format!("--user {v}: expected UID:GID"))?;
                args.user = Some((
                    u.parse().map_err(|_| format!("bad uid {u}"))?,
                    g.parse().map_err(|_| format!("bad gid {g}"))?,
                ));
            }
            "--" => {
                args.cmd = Some(it.by_ref().collect());
            }
            s if s.starts_with("--") => return Err(format!("unknown flag {s}")),
            _ if args.source.is_empty() => {
                let s = arg.into_string().map_err(|_| "PATH must be UTF-8".to_owned())?;
                (args.source, args.reference) = split_source(&s)?;
            }
            s => return Err(format!("unexpected argument {s} (put the command after --)")),
        }
    }
    if args.source.is_empty() {
        return Err("usage: image_run [FLAGS] PATH[:REF] [-- CMD...]".into());
    }
    Ok(args)
}

/// Splits `PATH[:REF]`. Both may hold ':' (`x.tar:deb:latest`, `/srv/a:b/oci:v1`), so the
/// rule is unambiguous only with the file system's help: PATH is the longest prefix that exists,
/// either all of `arg` or the part before one of its ':'; REF is the rest. When no prefix
/// exists, all of `arg` is PATH, and opening it reports it missing under the name given.
fn split_source(arg: &str) -> Result<(String, Option<String>), String> {
    if Path::new(arg).exists() {
        return Ok((arg.to_owned(), None));
    }
    for (colon, _) in arg.rmatch_indices(':') {
        let (path, reference) = (&arg[..colon], &arg[colon + 1..]);
        if !path.is_empty() && Path::new(path).exists() {
            if reference.is_empty() {
                return Err(format!("{arg}: nothing after the ':' that ends PATH {path}"));
            }
            return Ok((path.to_owned(), Some(reference.to_owned())));
        }
    }
    Ok((arg.to_owned(), None))
}

fn run() -> Result<ExitCode, Box<dyn std::error::Error>> {
    let args = parse()?;
    let root = nix::unistd::geteuid().is_root();
    let image = ImageSource::open(&args.source)?.image(args.reference.as_deref(), &args.platform)?;
    let rootfs = match &args.flat {
        Some(dir) => image.unpack(dir)?,
        None => {
            let store = args
                .store
                .clone()
                .unwrap_or_else(|| format!("/var/tmp/stockade-layers-{}", nix::unistd::geteuid()));
            LayerStore::open(store)?.with_sync(args.sync).prepare(&image)?
        }
    };
    let report = rootfs.report();
    eprintln!(
        "image {}: {} layers ({} unpacked, {} reused), {} entries, {} devices skipped, {} xattrs skipped",
        image.id(),
        image.layers().len(),
        report.layers_unpacked,
        report.layers_reused,
        report.entries,
        report.skipped_devices,
        report.skipped_xattrs
    );
    if args.unpack_only {
        return Ok(ExitCode::SUCCESS);
    }

    let mut builder = Sandbox::builder();
    builder.namespaces(Namespaces::all()).hostname("image").image(&rootfs);
    if root {
        builder.uid_map([IdMap::new(0, 0, 65536)]).gid_map([IdMap::new(0, 0, 65536)]);
    } else if rootfs.user().is_some_and(|u| u.uid != 0 || u.gid != 0) && args.user.is_none() {
        eprintln!("note: rootless, only root is mapped; running as root instead of the image's user");
        builder.user(0, 0);
    }
    if let Some((uid, gid)) = args.user {
        builder.user(uid, gid);
    }
    let sandbox = builder.build()?;
    let mut command = match &args.cmd {
        Some(cmd) => sandbox.image_command_args(cmd),
        None => sandbox.image_command(),
    };
    for (k, v) in &args.env {
        command.env(k, v);
    }
    if let Some(cwd) = &args.cwd {
        command.current_dir(cwd);
    }
    let status = command.status()?;
    eprintln!("exit: {status}");
    Ok(match status.code() {
        Some(code) => ExitCode::from(u8::try_from(code).unwrap_or(1)),
        None => ExitCode::from(128),
    })
}

fn main() -> ExitCode {
    match run() {
        Ok(code) => code,
        Err(e) => {
            eprintln!("image_run: {e}");
            ExitCode::from(125)
        }
    }
}
