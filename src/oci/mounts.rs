//! `mounts`: each entry becomes a [`Mount`], in order.

use std::collections::VecDeque;
use std::ffi::OsString;
use std::path::{Component, Path, PathBuf};

use oci_spec::runtime::Mount as OciMount;

use super::BundleError;
use crate::{Mount, Namespaces, SandboxBuilder};

/// What the mounts put at `/dev`.
pub(super) struct Dev {
    /// A `tmpfs` at `/dev`: the default devices and links go in it.
    pub(super) dev_mounted: bool,
    /// A devpts at `/dev/pts`: `/dev/ptmx` links to its `ptmx`.
    pub(super) pts: bool,
    /// A cgroup mount, which needs a cgroup namespace.
    pub(super) cgroup: bool,
}

/// The flags an entry's options ask for.
#[derive(Default)]
struct Flags {
    readonly: bool,
    nosuid: bool,
    noexec: bool,
    bind: Option<bool>,
    /// Options for the file system itself (`size=`, `mode=`, ...), in order.
    data: Vec<(String, Option<String>)>,
}

/// Adds the spec's mounts to `b`.
pub(super) fn mounts(
    mounts: &[OciMount],
    bundle: &Path,
    root: &Path,
    ns: Namespaces,
    b: &mut SandboxBuilder,
) -> Result<Dev, BundleError> {
    let mut dev = Dev { dev_mounted: false, pts: false, cgroup: false };
    for (i, m) in mounts.iter().enumerate() {
        let field = |name: &str| format!("mounts[{i}].{name}");
        let dest = m.destination();
        if !dest.is_absolute() || dest.components().any(|c| c == Component::ParentDir) {
            return Err(BundleError::invalid(
                field("destination"),
                dest,
                "must be an absolute path without ..",
            ));
        }
        if let Some(link) = link_out_of(root, dest) {
            return Err(BundleError::invalid(
                field("destination"),
                dest,
                format!(
                    "passes through the symlink {} in the root, which points out of it (an absolute target, or \
                     one climbing above the root)",
                    link.display()
                ),
            ));
        }
        if m.uid_mappings().is_some() || m.gid_mappings().is_some() {
            return Err(BundleError::unsupported(
                field("uidMappings"),
                "present",
                "id-mapped mounts are not implemented",
            ));
        }
        let flags = options(m.options().as_deref().unwrap_or_default(), &field("options"))?;
        let typ = m.typ().as_deref().unwrap_or("");
        let is_bind = flags.bind.is_some() || typ == "bind";
        let mount = if is_bind {
            if !flags.data.is_empty() {
                return Err(BundleError::unsupported(
                    field("options"),
                    &flags.data,
                    "a bind mount takes no file system options",
                ));
            }
            let source = m.source().as_deref().ok_or_else(|| {
                BundleError::invalid(field("source"), "absent", "a bind mount needs a source")
            })?;
            Mount::bind(bind_source(bundle, source, &field("source"))?, dest)
                .recursive(flags.bind.unwrap_or(false))
                .read_only(flags.readonly)
                .nosuid(flags.nosuid)
                .noexec(flags.noexec)
        } else {
            let plain = |mount: Mount, flags: &Flags| -> Result<Mount, BundleError> {
                if let Some((key, _)) = flags.data.first() {
                    return Err(BundleError::unsupported(
                        field("options"),
                        key,
                        format!("not an option stockade applies to a {typ} mount"),
                    ));
                }
                Ok(mount)
            };
            match typ {
                "tmpfs" => {
                    if dest == Path::new("/dev") {
                        dev.dev_mounted = true;
                    }
                    tmpfs(Mount::tmpfs(dest), &flags, &field("options"))?
                        .read_only(flags.readonly)
                        .nosuid(flags.nosuid)
                        .noexec(flags.noexec)
                }
                "proc" => {
                    if !ns.contains(Namespaces::PID) {
                        return Err(BundleError::unsupported(
                            field("type"),
                            typ,
                            "a proc mount needs a pid namespace of the container's own (it would list the host's processes)",
                        ));
                    }
                    plain(Mount::proc(dest), &flags)?.read_only(flags.readonly)
                }
                "sysfs" => {
                    if !flags.readonly {
                        return Err(BundleError::unsupported(
                            field("options"),
                            "no ro",
                            "stockade mounts sysfs read-only only",
                        ));
                    }
                    plain(Mount::sysfs(dest), &flags)?
                }
                "mqueue" => {
                    if !ns.contains(Namespaces::IPC) {
                        return Err(BundleError::unsupported(
                            field("type"),
                            typ,
                            "an mqueue mount needs an ipc namespace of the container's own",
                        ));
                    }
                    plain(Mount::mqueue(dest), &flags)?
                        .read_only(flags.readonly)
                        .nosuid(flags.nosuid)
                        .noexec(flags.noexec)
                }
                "devpts" => {
                    if dest == Path::new("/dev/pts") {
                        dev.pts = true;
                    }
                    // Never nodev: its nodes are the terminals (and only terminals).
                    devpts(Mount::devpts(dest), &flags, &field("options"))?
                        .read_only(flags.readonly)
                        .nosuid(flags.nosuid)
                        .noexec(flags.noexec)
                }
                "cgroup" | "cgroup2" => {
                    dev.cgroup = true;
                    plain(Mount::cgroup(dest), &flags)?.read_only(flags.readonly)
                }
                "overlay" => overlay(dest, &flags, bundle, &field("options"))?
                    .nosuid(flags.nosuid)
                    .noexec(flags.noexec),
                "" => {
                    return Err(BundleError::invalid(
                        field("type"),
                        typ,
                        "a mount that is not a bind needs a type",
                    ));
                }
                other => {
                    return Err(BundleError::unsupported(
                        field("type"),
                        other,
                        "stockade mounts bind, tmpfs, proc, sysfs, mqueue, devpts, cgroup and overlay file systems",
                    ));
                }
            }
        };
        b.mount(mount);
    }
    Ok(dev)
}

/// An `overlay` entry: `lowerdir=` (colon-separated, top first, as overlayfs reads it) and
/// optionally `upperdir=` with `workdir=`, host paths (relative ones are the bundle's); without
/// an upper directory the overlay is read-only.
fn overlay(dest: &Path, flags: &Flags, bundle: &Path, field: &str) -> Result<Mount, BundleError> {
    let (mut lower, mut upper, mut work) = (None, None, None);
    for (key, value) in &flags.data {
        let slot = match key.as_str() {
            "lowerdir" => &mut lower,
            "upperdir" => &mut upper,
            "workdir" => &mut work,
            other => {
                return Err(BundleError::unsupported(
                    field,
                    other,
                    "not an overlay option stockade applies (lowerdir, upperdir, workdir)",
                ));
            }
        };
        *slot = Some(
            value
                .clone()
                .filter(|v| !v.is_empty())
                .ok_or_else(|| BundleError::invalid(field, key, "needs a directory"))?,
        );
    }
    let lower = lower
        .ok_or_else(|| BundleError::invalid(field, "no lowerdir", "an overlay mount needs lowerdir="))?;
    let mut lowers =
        lower.split(':').map(|p| bind_source(bundle, Path::new(p), field)).collect::<Result<Vec<_>, _>>()?;
    lowers.reverse();
    match (upper, work) {
        (Some(upper), Some(work)) => Ok(Mount::overlay_writable(
            lowers,
            bind_source(bundle, Path::new(&upper), field)?,
            bind_source(bundle, Path::new(&work), field)?,
            dest,
        )
        .read_only(flags.readonly)),
        (None, None) => Ok(Mount::overlay(lowers, dest)),
        _ => Err(BundleError::invalid(
            field,
            "one of upperdir and workdir",
            "upperdir and workdir go together",
        )),
    }
}

/// The links a runtime puts in a `/dev` it mounts: `fd`, `stdin`, `stdout`, `stderr`, and
/// `ptmx` when there is a devpts.
pub(super) fn dev_links(pts: bool, b: &mut SandboxBuilder) {
    for (name, link) in crate::fs::DEV_LINKS {
        b.mount(Mount::symlink(link, Path::new("/dev").join(name)));
    }
    if pts {
        b.mount(Mount::symlink("pts/ptmx", "/dev/ptmx"));
    }
}

/// The first symlink on the way to `dest` in the root directory `root` that points out of
/// it, following the links that stay inside: a relative target climbing above the root, or
/// an absolute one whose target is not in the root (absolute links read inside the root, as
/// images mean them: `/var/run` -> `/run` is fine where the root has a `/run`). The mount
/// itself is resolved inside the root whatever this finds (see [`crate::fs`]); this only
/// turns a destination that would land elsewhere than it reads into an error.
fn link_out_of(root: &Path, dest: &Path) -> Option<PathBuf> {
    let normal = |p: &Path| -> Vec<OsString> {
        p.components()
            .filter_map(|c| match c {
                Component::Normal(n) => Some(n.to_owned()),
                Component::ParentDir => Some("..".into()),
                _ => None,
            })
            .collect()
    };
    let mut todo: VecDeque<OsString> = normal(dest).into();
    let mut at: Vec<OsString> = Vec::new();
    // The last link followed, and how many components of an absolute link's target are still
    // to be found in the root.
    let (mut last, mut must_exist) = (None::<PathBuf>, 0usize);
    let mut links = 0;
    while let Some(c) = todo.pop_front() {
        if c == ".." {
            if at.pop().is_none() {
                return Some(last.unwrap_or_else(|| dest.to_owned()));
            }
            must_exist = must_exist.saturating_sub(1);
            continue;
        }
        let inside: PathBuf = at.iter().chain([&c]).collect();
        match std::fs::symlink_metadata(root.join(&inside)).map(|m| m.file_type().is_symlink()) {
            Ok(true) => {}
            // Missing where an absolute link pointed: it points out of the root.
            Err(_) if must_exist > 0 => return last,
            // Present, or missing (made at spawn, as a directory or file).
            _ => {
                must_exist = must_exist.saturating_sub(1);
                at.push(c);
                continue;
            }
        }
        links += 1;
        let link = Path::new("/").join(&inside);
        let target = match std::fs::read_link(root.join(&inside)) {
            Ok(target) if links <= 40 => target,
            _ => return Some(link),
        };
        let parts = normal(&target);
        if target.is_absolute() {
            at.clear();
            must_exist = parts.len();
        } else if must_exist > 0 {
            must_exist = must_exist - 1 + parts.len();
        }
        last = Some(link);
        for part in parts.into_iter().rev() {
            todo.push_front(part);
        }
    }
    None
}

/// Reads an entry's options.
fn options(options: &[String], field: &str) -> Result<Flags, BundleError> {
    let mut f = Flags::default();
    for o in options {
        match o.as_str() {
            "ro" => f.readonly = true,
            "rw" => f.readonly = false,
            "nosuid" => f.nosuid = true,
            "suid" => f.nosuid = false,
            "noexec" => f.noexec = true,
            "exec" => f.noexec = false,
            // Every mount is nodev (see the module docs): the option only agrees.
            "nodev" => {}
            "bind" => f.bind = Some(f.bind.unwrap_or(false)),
            "rbind" => f.bind = Some(true),
            // Mounts in the container's namespace never propagate to the host or from it.
            "private" | "rprivate" => {}
            // Access-time bookkeeping has no bearing on isolation (see the module docs).
            "relatime" | "norelatime" | "strictatime" | "nostrictatime" | "noatime" | "atime"
            | "nodiratime" | "diratime" => {}
            "dev" => {
                return Err(BundleError::unsupported(
                    field,
                    o,
                    "stockade makes every mount nodev; devices reach the container through linux.devices",
                ));
            }
            "shared" | "rshared" | "slave" | "rslave" | "unbindable" | "runbindable" => {
                return Err(BundleError::unsupported(
                    field,
                    o,
                    "mounts in a stockade container are private: nothing propagates to or from the host",
                ));
            }
            "sync" | "async" | "dirsync" | "mand" | "nomand" | "remount" | "recursive" | "silent"
            | "loud" | "lazytime" | "nolazytime" | "iversion" | "noiversion" | "rro" | "rrw" | "rnosuid"
            | "rnoexec" | "rnodev" | "rsuid" | "rexec" | "rdev" | "idmap" | "ridmap" | "tmpcopyup"
            | "copy-symlink" => {
                return Err(BundleError::unsupported(field, o, "not an option stockade applies"));
            }
            other => {
                let (key, value) = match other.split_once('=') {
                    Some((k, v)) => (k.to_owned(), Some(v.to_owned())),
                    None => (other.to_owned(), None),
                };
                f.data.push((key, value));
            }
        }
    }
    Ok(f)
}

/// A tmpfs with its `size`, `mode` and `nr_inodes` options.
fn tmpfs(mut m: Mount, flags: &Flags, field: &str) -> Result<Mount, BundleError> {
    for (key, value) in &flags.data {
        let bad =
            |why: &str| BundleError::invalid(field, format!("{key}={}", value.as_deref().unwrap_or("")), why);
        let value = value.as_deref().ok_or_else(|| bad("needs a value"))?;
        match key.as_str() {
            "size" => m = m.size(bytes(value).ok_or_else(|| bad("a size in bytes, with k, m or g"))?),
            "mode" => {
                let mode = u32::from_str_radix(value, 8).ok().filter(|m| *m <= 0o7777);
                m = m.mode(mode.ok_or_else(|| bad("an octal mode up to 7777"))?)
            }
            "nr_inodes" => m = m.inodes(bytes(value).ok_or_else(|| bad("a number, with k, m or g"))?),
            _ => {
                return Err(BundleError::unsupported(
                    field,
                    format!("{key}={value}"),
                    "stockade sets size, mode and nr_inodes of a tmpfs",
                ));
            }
        }
    }
    Ok(m)
}

/// A devpts: a new instance (`newinstance`) with `ptmxmode=0666`, `mode=0620` and, if given,
/// `gid=`.
fn devpts(mut m: Mount, flags: &Flags, field: &str) -> Result<Mount, BundleError> {
    let mut new_instance = false;
    for (key, value) in &flags.data {
        let shown = format!("{key}{}", value.as_deref().map(|v| format!("={v}")).unwrap_or_default());
        match (key.as_str(), value.as_deref()) {
            ("newinstance", None) => new_instance = true,
            ("ptmxmode", Some("0666" | "666")) | ("mode", Some("0620" | "620")) => {}
            ("gid", Some(gid)) => {
                m = m.group(gid.parse().map_err(|_| BundleError::invalid(field, &shown, "a group id"))?);
            }
            _ => {
                return Err(BundleError::unsupported(
                    field,
                    shown,
                    "stockade makes devpts with newinstance, ptmxmode=0666, mode=0620 and gid=",
                ));
            }
        }
    }
    if !new_instance {
        return Err(BundleError::unsupported(
            field,
            "no newinstance",
            "the host's devpts instance is never mounted into a container",
        ));
    }
    Ok(m)
}

/// A size like `65536k`, `64m`, `1g` or `4096`.
fn bytes(s: &str) -> Option<u64> {
    let (digits, shift) = match s.as_bytes().last()? {
        b'k' | b'K' => (&s[..s.len() - 1], 10),
        b'm' | b'M' => (&s[..s.len() - 1], 20),
        b'g' | b'G' => (&s[..s.len() - 1], 30),
        _ => (s, 0),
    };
    digits.parse::<u64>().ok()?.checked_mul(1 << shift)
}

/// A bind source: relative ones are the bundle's.
fn bind_source(bundle: &Path, source: &Path, field: &str) -> Result<PathBuf, BundleError> {
    // Not resolved here: the library opens the path without following any symlink in it, so
    // one planted on the way (by an earlier container given a writable bind, say, or in the
    // root filesystem a relative source runs through) is refused, never followed.
    if source.components().any(|c| c == Component::ParentDir) {
        return Err(BundleError::invalid(field, source, "must not contain .."));
    }
    let joined = bundle.join(source);
    if std::fs::symlink_metadata(&joined).is_err() {
        return Err(BundleError::invalid(field, source, format!("{} does not exist", joined.display())));
    }
    Ok(joined)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_take_the_suffixes_runc_takes() {
        assert_eq!(bytes("65536k"), Some(64 << 20));
        assert_eq!(bytes("64m"), Some(64 << 20));
        assert_eq!(bytes("1g"), Some(1 << 30));
        assert_eq!(bytes("4096"), Some(4096));
        assert_eq!(bytes("12%"), None);
        assert_eq!(bytes(""), None);
        assert_eq!(bytes("99999999999999999g"), None);
    }
}
