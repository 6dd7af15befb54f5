//! User namespace id maps: validating them (parent, before clone) and writing them for the
//! waiting child, directly or through the setuid helpers `newuidmap`/`newgidmap` when the
//! caller may not write them itself.

use std::ffi::OsString;
use std::fmt;
use std::fs::File;
use std::io::Write;
use std::os::fd::{AsFd, BorrowedFd};
use std::path::{Path, PathBuf};

use crate::Error;
use crate::sys::pidfd;

/// Most ranges a map may have (kernel limit since Linux 4.15).
const MAX_RANGES: usize = 340;

/// One range of a uid or gid map: ids `inside..inside+count` in the sandbox are ids
/// `outside..outside+count` on the host.
///
/// ```
/// use stockade::IdMap;
/// // Root in the sandbox is uid 1000 on the host; nothing else is mapped.
/// let map = IdMap::new(0, 1000, 1);
/// assert_eq!(map.to_string(), "0:1000:1");
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct IdMap {
    /// First id inside the sandbox.
    pub inside: u32,
    /// First id on the host.
    pub outside: u32,
    /// Number of consecutive ids.
    pub count: u32,
}

impl IdMap {
    /// A range of `count` ids starting at `inside` in the sandbox and `outside` on the host.
    pub const fn new(inside: u32, outside: u32, count: u32) -> Self {
        IdMap { inside, outside, count }
    }

    fn end(side_start: u32, count: u32) -> u64 {
        side_start as u64 + count as u64
    }
}

impl fmt::Display for IdMap {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}:{}", self.inside, self.outside, self.count)
    }
}

/// Which kind of id a map is for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum IdKind {
    Uid,
    Gid,
}

impl IdKind {
    pub(crate) fn name(self) -> &'static str {
        match self {
            IdKind::Uid => "uid",
            IdKind::Gid => "gid",
        }
    }

    fn proc_file(self) -> &'static str {
        match self {
            IdKind::Uid => "uid_map",
            IdKind::Gid => "gid_map",
        }
    }

    fn default_helper(self) -> &'static str {
        match self {
            IdKind::Uid => "newuidmap",
            IdKind::Gid => "newgidmap",
        }
    }
}

pub(crate) fn display_map(map: &[IdMap]) -> String {
    map.iter().map(IdMap::to_string).collect::<Vec<_>>().join(",")
}

/// Checks a map for what the kernel would refuse with a bare EINVAL, so the caller gets a
/// reason instead.
pub(crate) fn validate(kind: IdKind, map: &[IdMap]) -> Result<(), Error> {
    let err = |reason: String| Error::IdMap { kind: kind.name(), map: display_map(map), reason };
    if map.is_empty() {
        return Err(err("a user namespace needs at least one range".into()));
    }
    if map.len() > MAX_RANGES {
        return Err(err(format!("{} ranges, the kernel allows at most {MAX_RANGES}", map.len())));
    }
    for r in map {
        if r.count == 0 {
            return Err(err(format!("range {r} has a count of 0")));
        }
        // u32::MAX is the invalid id (-1) and cannot be mapped.
        for (side, start) in [("inside", r.inside), ("outside", r.outside)] {
            if IdMap::end(start, r.count) > u32::MAX as u64 {
                return Err(err(format!("range {r} runs past the largest {side} id {}", u32::MAX - 1)));
            }
        }
    }
    for (i, a) in map.iter().enumerate() {
        for b in &map[i + 1..] {
            let overlap =
                |x: u32, y: u32| (x as u64) < IdMap::end(y, b.count) && (y as u64) < IdMap::end(x, a.count);
            if overlap(a.inside, b.inside) {
                return Err(err(format!("ranges {a} and {b} overlap inside the sandbox")));
            }
            if overlap(a.outside, b.outside) {
                return Err(err(format!("ranges {a} and {b} overlap on the host")));
            }
        }
    }
    Ok(())
}

/// Whether `id` (inside) is covered by `map`.
pub(crate) fn maps_inside(map: &[IdMap], id: u32) -> bool {
    map.iter().any(|r| id >= r.inside && (id as u64) < IdMap::end(r.inside, r.count))
}

/// How one map gets written, decided in the parent before clone.
#[derive(Clone, Debug)]
pub(crate) enum Writer {
    /// Write `/proc/<pid>/{uid,gid}_map` ourselves.
    Direct,
    /// Run the setuid helper at this path (or found under this name in `PATH`).
    Helper(PathBuf),
}

/// Picks the writer for a map: the caller may write a map directly when it holds `CAP_SETUID`
/// (`CAP_SETGID`) or when the map is exactly its own id once; anything else needs the helper.
pub(crate) fn writer_for(kind: IdKind, map: &[IdMap], helper: Option<&Path>) -> Writer {
    let (own, cap) = match kind {
        IdKind::Uid => (nix::unistd::geteuid().as_raw(), caps::Capability::CAP_SETUID),
        IdKind::Gid => (nix::unistd::getegid().as_raw(), caps::Capability::CAP_SETGID),
    };
    let privileged = caps::has_cap(None, caps::CapSet::Effective, cap).unwrap_or(false);
    let own_only = matches!(map, [r] if r.count == 1 && r.outside == own);
    if privileged || own_only {
        Writer::Direct
    } else {
        Writer::Helper(helper.map_or_else(|| PathBuf::from(kind.default_helper()), Path::to_path_buf))
    }
}

/// The `/proc/<pid>` directory of a spawned child, opened once and proven (through its pidfd) to
/// belong to that child: from then on it cannot refer to a recycled pid.
pub(crate) struct ProcDir {
    dir: File,
    path: String,
    pid: libc::pid_t,
}

impl ProcDir {
    pub(crate) fn open(pid: libc::pid_t, pidfd: BorrowedFd<'_>) -> Result<ProcDir, Error> {
        let path = format!("/proc/{pid}");
        let dir = File::open(&path).map_err(|e| Error::spawn(format!("open {path}"), e))?;
        pidfd::send_signal(pidfd, 0).map_err(|e| Error::spawn(format!("signal 0 to {path}"), e))?;
        Ok(ProcDir { dir, path, pid })
    }

    /// Writes the maps of the child's (outer) user namespace. `deny_setgroups` must be true
    /// when the gid map is written directly without `CAP_SETGID`.
    pub(crate) fn write_maps(
        &self,
        uid: (&[IdMap], &Writer),
        gid: (&[IdMap], &Writer),
        deny_setgroups: bool,
    ) -> Result<(), Error> {
        if deny_setgroups {
            self.write("setgroups", b"deny")?;
        }
        for (kind, (map, writer)) in [(IdKind::Uid, uid), (IdKind::Gid, gid)] {
            match writer {
                Writer::Direct => {
                    let text: String =
                        map.iter().map(|r| format!("{} {} {}\n", r.inside, r.outside, r.count)).collect();
                    self.write(kind.proc_file(), text.as_bytes())?;
                }
                Writer::Helper(helper) => run_helper(kind, helper, self.pid, map)?,
            }
        }
        Ok(())
    }

    /// Writes `data` to the process's `name` file.
    pub(crate) fn write(&self, name: &str, data: &[u8]) -> Result<(), Error> {
        let op = || format!("write {:?} to {}/{name}", String::from_utf8_lossy(data).trim_end(), self.path);
        let mut file = nix::fcntl::openat(
            self.dir.as_fd(),
            name,
            nix::fcntl::OFlag::O_WRONLY | nix::fcntl::OFlag::O_CLOEXEC,
            nix::sys::stat::Mode::empty(),
        )
        .map(File::from)
        .map_err(|e| Error::spawn(op(), e))?;
        file.write_all(data).map_err(|e| Error::spawn(op(), e))
    }
}

fn run_helper(kind: IdKind, helper: &Path, pid: libc::pid_t, map: &[IdMap]) -> Result<(), Error> {
    let mut args: Vec<OsString> = vec![pid.to_string().into()];
    for r in map {
        args.extend([r.inside.to_string().into(), r.outside.to_string().into(), r.count.to_string().into()]);
    }
    let fail = |reason: String| Error::IdMapHelper {
        helper: helper.to_path_buf(),
        kind: kind.name(),
        map: display_map(map),
        reason,
    };
    let out = std::process::Command::new(helper)
        .args(&args)
        .stdin(std::process::Stdio::null())
        .output()
        .map_err(|e| match e.kind() {
            std::io::ErrorKind::NotFound => fail(format!(
                "{} not found (install the uidmap package, or set its path with SandboxBuilder::id_map_helpers): {e}",
                helper.display()
            )),
            _ => fail(format!("cannot run it: {e}")),
        })?;
    if out.status.success() {
        Ok(())
    } else {
        let msg = String::from_utf8_lossy(&out.stderr);
        Err(fail(format!(
            "{} ({}); the caller needs a matching range in /etc/sub{}",
            msg.trim(),
            out.status,
            kind.name()
        )))
    }
}
