//! Runs a command in a sandbox and prints how it ended.
//!
//! ```text
//! cargo run --example run -- [FLAGS] -- CMD [ARGS...]
//!
//!   --untrusted        (first flag only) start from Sandbox::untrusted(), the recommended
//!                      configuration for hostile code; the flags after it change it
//!   --ns LIST          namespaces: comma-separated user,pid,mount,uts,ipc,net,cgroup,time,
//!                      or "all" (default) or "none"
//!   --hostname NAME    hostname inside (needs uts)
//!   --uid-map I:O:C    a uid map range (repeatable; default: 0 -> your uid)
//!   --gid-map I:O:C    a gid map range (repeatable; default: 0 -> your gid)
//!   --user UID:GID     ids the payload runs as, inside
//!   --env KEY=VALUE    set a variable (repeatable; nothing is inherited otherwise)
//!   --inherit-env      start from this program's environment
//!   --cwd DIR          working directory inside
//!   --timeout SECS     kill the sandbox after SECS seconds
//!   --boottime SECS    boot-time clock offset (needs time)
//!   --print-pid        print the sandbox's pid (host view) to stderr once it runs
//!
//!   --root KIND        the payload's root: tmpfs, host-ro, dir:PATH, dir-ro:PATH,
//!                      overlay:LOWER[,LOWER...] (bottom first; throw-away upper)
//!   --system           bind the host's /usr, /bin, /sbin, /lib* read-only (for --root tmpfs)
//!   --bind SRC:DST     bind a host path, writable (repeatable)
//!   --ro-bind SRC:DST  bind a host path, read-only (repeatable)
//!   --tmpfs DST[:SIZE] a private tmpfs, SIZE in bytes (repeatable)
//!   --file DST:TEXT    a read-only file with TEXT (repeatable)
//!   --caps LIST        the payload's capabilities: none, default, or CAP_NAME,CAP_NAME,...
//!
//!   --memory BYTES     memory limit of the whole sandbox (cgroup)
//!   --pids N           process limit of the whole sandbox (cgroup)
//!   --cpu-time SECS    CPU-time limit of the whole sandbox
//!   --best-effort      run even if the host cannot enforce a cgroup limit
//!   --no-filter        no syscall filter (every sandbox gets the default one otherwise)
//!   --cgroup-parent P  create the sandbox's cgroups under P (relative to each hierarchy's root)
//!   --repeat N         run the command N times, one after another (each ended by --timeout);
//!                      prints "run K" to stderr after each
//! ```
//!
//! Examples:
//! `cargo run --example run -- --hostname box -- /bin/sh -c 'hostname; id; echo $$'`
//! `cargo run --example run -- --root tmpfs --system --tmpfs /tmp -- /bin/sh -c 'ls /; ls /dev'`

use std::process::ExitCode;
use std::time::Duration;

use stockade::{
    Capability, ClockOffsets, Compat, DEFAULT_CAPABILITIES, IdMap, Mount, Namespaces, Root, Sandbox,
};

fn main() -> ExitCode {
    match run() {
        Ok(code) => code,
        Err(e) => {
            eprintln!("run: {e}");
            ExitCode::from(125)
        }
    }
}

fn run() -> Result<ExitCode, Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1).peekable();
    let mut builder = if args.next_if_eq("--untrusted").is_some() {
        Sandbox::untrusted()
    } else {
        let mut b = Sandbox::builder();
        b.namespaces(Namespaces::all());
        b
    };
    let mut repeat = 1u64;
    let (mut uid_map, mut gid_map) = (Vec::new(), Vec::new());
    let (mut env, mut inherit_env, mut cwd, mut timeout, mut print_pid) =
        (Vec::new(), false, None, None, false);
    let mut command = Vec::new();
    while let Some(flag) = args.next() {
        let mut value = |name: &str| args.next().ok_or_else(|| format!("{name} needs a value"));
        match flag.as_str() {
            "--ns" => {
                builder.namespaces(parse_namespaces(&value("--ns")?)?);
            }
            "--hostname" => {
                builder.hostname(value("--hostname")?);
            }
            "--uid-map" => uid_map.push(parse_map(&value("--uid-map")?)?),
            "--gid-map" => gid_map.push(parse_map(&value("--gid-map")?)?),
            "--user" => {
                let v = value("--user")?;
                let (u, g) = v.split_once(':').ok_or("--user takes UID:GID")?;
                builder.user(u.parse()?, g.parse()?);
            }
            "--env" => {
                let v = value("--env")?;
                let (k, val) = v.split_once('=').ok_or("--env takes KEY=VALUE")?;
                env.push((k.to_owned(), val.to_owned()));
            }
            "--inherit-env" => inherit_env = true,
            "--cwd" => cwd = Some(value("--cwd")?),
            "--timeout" => timeout = Some(Duration::from_secs_f64(value("--timeout")?.parse()?)),
            "--boottime" => {
                let secs = value("--boottime")?.parse()?;
                builder.clock_offsets(ClockOffsets::new().boottime(Duration::from_secs(secs)));
            }
            "--print-pid" => print_pid = true,
            "--root" => {
                builder.root(parse_root(&value("--root")?)?);
            }
            "--system" => {
                builder.mounts(Mount::host_system());
            }
            "--bind" | "--ro-bind" => {
                let v = value(&flag)?;
                let (src, dst) = v.split_once(':').ok_or_else(|| format!("{flag} takes SRC:DST"))?;
                builder.mount(if flag == "--bind" {
                    Mount::bind(src, dst)
                } else {
                    Mount::bind_ro(src, dst)
                });
            }
            "--tmpfs" => {
                let v = value("--tmpfs")?;
                let mount = match v.split_once(':') {
                    Some((dst, size)) => Mount::tmpfs(dst).size(size.parse()?),
                    None => Mount::tmpfs(v),
                };
                builder.mount(mount);
            }
            "--file" => {
                let v = value("--file")?;
                let (dst, text) = v.split_once(':').ok_or("--file takes DST:TEXT")?;
                builder.mount(Mount::file(dst, format!("{text}\n")));
            }
            "--memory" => {
                builder.memory_limit(value("--memory")?.parse()?);
            }
            "--pids" => {
                builder.pids_limit(value("--pids")?.parse()?);
            }
            "--cpu-time" => {
                builder.cpu_time_limit(Duration::from_secs_f64(value("--cpu-time")?.parse()?));
            }
            "--best-effort" => {
                builder.resource_compat(Compat::BestEffort);
            }
            "--no-filter" => {
                builder.no_syscall_filter();
            }
            "--cgroup-parent" => {
                builder.cgroup_parent(value("--cgroup-parent")?);
            }
            "--repeat" => repeat = value("--repeat")?.parse()?,
            "--caps" => {
                builder.capabilities(parse_caps(&value("--caps")?)?);
            }
            "--" => {
                command.extend(args.by_ref());
            }
            other => return Err(format!("unknown flag {other:?} (see the top of examples/run.rs)").into()),
        }
    }
    if !uid_map.is_empty() {
        builder.uid_map(uid_map);
    }
    if !gid_map.is_empty() {
        builder.gid_map(gid_map);
    }
    let Some((program, rest)) = command.split_first() else {
        return Err("no command given: run -- [flags] -- CMD [ARGS...]".into());
    };

    let sandbox = builder.build()?;
    for k in 1..repeat {
        let status =
            run_once(&sandbox, program, rest, &env, inherit_env, cwd.as_deref(), timeout, print_pid)?;
        eprintln!("run {k}: {status}");
    }
    let status = run_once(&sandbox, program, rest, &env, inherit_env, cwd.as_deref(), timeout, print_pid)?;
    Ok(match (status.code(), status.signal()) {
        (Some(code), _) => ExitCode::from(code as u8),
        (None, Some(sig)) => ExitCode::from(128u8.wrapping_add(sig as u8)),
        _ => ExitCode::FAILURE,
    })
}

/// Runs the command once and reports how it ended on stderr.
#[allow(clippy::too_many_arguments)]
fn run_once(
    sandbox: &Sandbox,
    program: &str,
    rest: &[String],
    env: &[(String, String)],
    inherit_env: bool,
    cwd: Option<&str>,
    timeout: Option<Duration>,
    print_pid: bool,
) -> Result<stockade::ExitStatus, Box<dyn std::error::Error>> {
    let mut cmd = sandbox.command(program);
    cmd.args(rest).envs(env.iter().cloned());
    if inherit_env {
        cmd.inherit_env();
    }
    if let Some(dir) = cwd {
        cmd.current_dir(dir);
    }
    let mut child = cmd.spawn()?;
    if print_pid {
        eprintln!("pid {}", child.id());
    }
    let status = match timeout {
        Some(t) => child.wait_timeout(t)?,
        None => child.wait()?,
    };
    let u = status.usage();
    eprintln!(
        "stockade: {status} (wall {:?}, user {:?}, sys {:?}, peak memory {:?} bytes, oom {})",
        u.wall_time, u.user_time, u.system_time, u.peak_memory, u.oom_killed
    );
    if !child.unenforced().is_empty() {
        eprintln!("stockade: not enforced on this host: {:?}", child.unenforced());
    }
    Ok(status)
}

fn parse_root(text: &str) -> Result<Root, String> {
    Ok(match text.split_once(':') {
        None if text == "tmpfs" => Root::tmpfs(),
        None if text == "host-ro" => Root::host_readonly(),
        Some(("dir", path)) => Root::dir(path),
        Some(("dir-ro", path)) => Root::dir_readonly(path),
        Some(("overlay", lowers)) => Root::overlay(lowers.split(',')),
        _ => {
            return Err(format!(
                "unknown root {text:?} (tmpfs, host-ro, dir:PATH, dir-ro:PATH, overlay:LOWER,...)"
            ));
        }
    })
}

fn parse_caps(list: &str) -> Result<Vec<Capability>, String> {
    match list {
        "none" | "" => Ok(Vec::new()),
        "default" => Ok(DEFAULT_CAPABILITIES.to_vec()),
        _ => list
            .split(',')
            .map(|name| name.parse::<Capability>().map_err(|e| format!("{name}: {e}")))
            .collect(),
    }
}

fn parse_namespaces(list: &str) -> Result<Namespaces, String> {
    match list {
        "all" => return Ok(Namespaces::all()),
        "none" | "" => return Ok(Namespaces::empty()),
        _ => {}
    }
    list.split(',').try_fold(Namespaces::empty(), |acc, name| {
        let ns = match name {
            "user" => Namespaces::USER,
            "pid" => Namespaces::PID,
            "mount" | "mnt" => Namespaces::MOUNT,
            "uts" => Namespaces::UTS,
            "ipc" => Namespaces::IPC,
            "net" => Namespaces::NET,
            "cgroup" => Namespaces::CGROUP,
            "time" => Namespaces::TIME,
            other => return Err(format!("unknown namespace {other:?}")),
        };
        Ok(acc | ns)
    })
}

fn parse_map(text: &str) -> Result<IdMap, Box<dyn std::error::Error>> {
    let parts: Vec<&str> = text.split(':').collect();
    let [i, o, c] = parts.as_slice() else {
        return Err(format!("id map {text:?} is not INSIDE:OUTSIDE:COUNT").into());
    };
    Ok(IdMap::new(i.parse()?, o.parse()?, c.parse()?))
}
