//! The payload's filesystem: which [`Root`] it gets and which [`Mount`]s are placed in it.
//!
//! Everything is built in the sandbox's private mount namespace (propagation private before the
//! first mount, so nothing reaches the host) with the kernel's file-descriptor based mount API:
//! each mount is created detached, given its flags, and attached onto a target that was
//! resolved *inside* the new root (`openat2` with `RESOLVE_IN_ROOT`), so a symlink planted in a
//! caller-supplied root can never redirect a mount onto a host path. The root is then switched
//! with `pivot_root` and the old root detached; in a user namespace the finished mount table is
//! finally copied into a nested user namespace, which locks every mount and its flags so that
//! even root inside cannot remount, unmount or uncover them.
//!
//! Host paths handed to the builder (bind sources, [`Root::dir`], overlay directories) must be
//! absolute and contain no symlink in any component: each is opened once per spawn with
//! `openat2(RESOLVE_NO_SYMLINKS | RESOLVE_NO_MAGICLINKS)` and that handle, not the path, is
//! mounted. A symlink an untrusted party planted — an earlier sandbox given a writable bind of a
//! shared directory, replacing `shared/cache` with a link to `/` — is refused (`build()` says
//! [`Error::InvalidPath`](crate::Error::InvalidPath); a link planted after `build()` fails the
//! spawn with `ELOOP`), never followed. A path you trust that has links in it: pass
//! `std::fs::canonicalize(path)?`.

pub(crate) mod plan;

use std::os::unix::ffi::OsStrExt;
use std::path::{Component, Path, PathBuf};

use crate::Error;

/// The payload's root filesystem.
///
/// ```
/// use stockade::Root;
/// let _ = Root::tmpfs();                       // empty, filled by mounts (like bubblewrap)
/// let _ = Root::dir("/srv/rootfs");            // a directory of the caller's, writable
/// let _ = Root::dir_readonly("/srv/rootfs");   // the same, read-only
/// let _ = Root::host_readonly();               // the host's own tree, read-only
/// let _ = Root::overlay(["/srv/base"]);        // read-only lower + throw-away writable upper
/// ```
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Root(pub(crate) RootKind);

#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum RootKind {
    Tmpfs,
    /// `sealed`: writable while the mounts are placed, then read-only (the root mount itself).
    Dir {
        path: PathBuf,
        writable: bool,
        sealed: bool,
    },
    HostReadonly,
    Overlay {
        lowers: Vec<PathBuf>,
        upper: Option<(PathBuf, PathBuf)>,
    },
}

impl Root {
    /// An empty tmpfs, populated only by the sandbox's mounts (read-only binds of `/usr`, a
    /// `/tmp`, ...). The root itself becomes read-only once the mounts are in place.
    pub fn tmpfs() -> Root {
        Root(RootKind::Tmpfs)
    }

    /// A directory of the caller's (e.g. an unpacked root filesystem), bound onto itself and made
    /// the root. The payload can write to it. Mount targets are resolved inside it: symlinks in
    /// it cannot point a mount outside. `path` itself must contain no symlink (see the module
    /// docs: a link to `/` would hand the payload the host's root).
    pub fn dir(path: impl Into<PathBuf>) -> Root {
        Root(RootKind::Dir { path: path.into(), writable: true, sealed: false })
    }

    /// Like [`Root::dir`], but read-only (recursively, including mounts beneath it).
    pub fn dir_readonly(path: impl Into<PathBuf>) -> Root {
        Root(RootKind::Dir { path: path.into(), writable: false, sealed: false })
    }

    /// Like [`Root::dir`] while the sandbox's mounts are placed (a missing mount point is
    /// created in the directory, as an OCI runtime creates it in its bundle's root), then
    /// read-only for the payload: the root mount itself, not the mounts beneath it (as an OCI
    /// spec's `root.readonly`).
    pub fn dir_sealed(path: impl Into<PathBuf>) -> Root {
        Root(RootKind::Dir { path: path.into(), writable: true, sealed: true })
    }

    /// The host's root filesystem, recursively read-only. Add writable places with
    /// [`Mount::tmpfs`] or [`Mount::bind`]. A fresh `/proc` and a minimal `/dev` replace the
    /// host's unless the sandbox mounts its own there.
    pub fn host_readonly() -> Root {
        Root(RootKind::HostReadonly)
    }

    /// Read-only lower directories (listed **bottom to top**, like image layers) stacked with
    /// overlayfs under a writable upper layer on a throw-away tmpfs: the payload can change
    /// anything, and the changes vanish with the sandbox. The lower directories never change.
    pub fn overlay<I, P>(lowers: I) -> Root
    where
        I: IntoIterator<Item = P>,
        P: Into<PathBuf>,
    {
        Root(RootKind::Overlay { lowers: lowers.into_iter().map(Into::into).collect(), upper: None })
    }

    /// Like [`Root::overlay`], but the upper layer is the caller's directory `upper`, which
    /// keeps the changes; `work` is overlayfs's scratch directory and must be an empty
    /// directory on the same filesystem as `upper`.
    pub fn overlay_persistent<I, P>(lowers: I, upper: impl Into<PathBuf>, work: impl Into<PathBuf>) -> Root
    where
        I: IntoIterator<Item = P>,
        P: Into<PathBuf>,
    {
        Root(RootKind::Overlay {
            lowers: lowers.into_iter().map(Into::into).collect(),
            upper: Some((upper.into(), work.into())),
        })
    }
}

/// Something placed at a path of the sandbox's filesystem. Paths are absolute, as the payload
/// sees them; missing parent directories are created (inside the sandbox's root).
///
/// Binds and new filesystems are `nosuid` and `nodev` unless told otherwise.
///
/// ```
/// use stockade::Mount;
/// let _ = Mount::bind_ro("/usr", "/usr");
/// let _ = Mount::bind("/srv/work", "/work").noexec(true);
/// let _ = Mount::tmpfs("/tmp").size(64 << 20).mode(0o1777);
/// let _ = Mount::file("/etc/hosts", "127.0.0.1 localhost\n");
/// let _ = Mount::symlink("usr/bin", "/bin");
/// ```
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Mount {
    pub(crate) target: PathBuf,
    pub(crate) kind: MountKind,
    pub(crate) readonly: bool,
    pub(crate) nosuid: bool,
    pub(crate) nodev: bool,
    pub(crate) noexec: bool,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum MountKind {
    Bind {
        source: PathBuf,
        recursive: bool,
    },
    Tmpfs {
        size: Option<u64>,
        mode: Option<u32>,
        inodes: Option<u64>,
    },
    Proc,
    Dev,
    Sysfs,
    Mqueue,
    Devpts {
        gid: Option<u32>,
    },
    Cgroup,
    Device {
        source: PathBuf,
    },
    File {
        contents: Vec<u8>,
        mode: u32,
    },
    Dir {
        mode: u32,
    },
    Symlink {
        link: PathBuf,
    },
    Mask,
    ReadOnly,
    /// `lowers` bottom first; with `upper`, `(upper, work)`.
    Overlay {
        lowers: Vec<PathBuf>,
        upper: Option<(PathBuf, PathBuf)>,
    },
}

impl Mount {
    fn new(target: impl Into<PathBuf>, kind: MountKind, readonly: bool) -> Mount {
        Mount { target: target.into(), kind, readonly, nosuid: true, nodev: true, noexec: false }
    }

    /// Binds the host path `source` at `target`, writable. Recursive (submounts come along)
    /// unless [`recursive(false)`](Mount::recursive). `source` must contain no symlink: it is
    /// opened without following any, so one planted in a shared directory is refused.
    pub fn bind(source: impl Into<PathBuf>, target: impl Into<PathBuf>) -> Mount {
        Mount::new(target, MountKind::Bind { source: source.into(), recursive: true }, false)
    }

    /// Binds the host path `source` at `target`, read-only (recursively: submounts too).
    pub fn bind_ro(source: impl Into<PathBuf>, target: impl Into<PathBuf>) -> Mount {
        Mount::new(target, MountKind::Bind { source: source.into(), recursive: true }, true)
    }

    /// A new, empty tmpfs at `target`. Limit it with [`size`](Mount::size),
    /// [`inodes`](Mount::inodes); [`mode`](Mount::mode) sets its root's permissions.
    pub fn tmpfs(target: impl Into<PathBuf>) -> Mount {
        Mount::new(target, MountKind::Tmpfs { size: None, mode: None, inodes: None }, false)
    }

    /// A read-only overlayfs at `target`: the host directories `lowers` stacked, the last one
    /// on top (as [`Root::overlay`] stacks them). Without an upper layer overlayfs needs two
    /// lower directories at least.
    pub fn overlay<I, P>(lowers: I, target: impl Into<PathBuf>) -> Mount
    where
        I: IntoIterator<Item = P>,
        P: Into<PathBuf>,
    {
        let lowers = lowers.into_iter().map(Into::into).collect();
        Mount::new(target, MountKind::Overlay { lowers, upper: None }, true)
    }

    /// A writable overlayfs at `target`: `lowers` (the last one on top) under the host
    /// directory `upper`, which receives the changes; `work` is overlayfs's scratch directory,
    /// empty and on the same file system as `upper`.
    pub fn overlay_writable<I, P>(
        lowers: I,
        upper: impl Into<PathBuf>,
        work: impl Into<PathBuf>,
        target: impl Into<PathBuf>,
    ) -> Mount
    where
        I: IntoIterator<Item = P>,
        P: Into<PathBuf>,
    {
        let lowers = lowers.into_iter().map(Into::into).collect();
        Mount::new(target, MountKind::Overlay { lowers, upper: Some((upper.into(), work.into())) }, false)
    }

    /// A fresh proc filesystem at `target` showing only the sandbox's processes; needs
    /// [`Namespaces::PID`](crate::Namespaces::PID). Mounted at `/proc` by default when the
    /// sandbox has a pid and a mount namespace.
    pub fn proc(target: impl Into<PathBuf>) -> Mount {
        Mount::new(target, MountKind::Proc, false)
    }

    /// A minimal `/dev` at `target`: `null`, `zero`, `full`, `random`, `urandom`, `tty` (the
    /// host's device nodes, checked to be the right devices), a private `pts` with `ptmx`, a
    /// `shm` tmpfs, and the `fd`, `stdin`, `stdout`, `stderr` links. Nothing else; no node can be
    /// created in it. Mounted at `/dev` by default when the sandbox has its own root.
    pub fn dev(target: impl Into<PathBuf>) -> Mount {
        Mount::new(target, MountKind::Dev, false)
    }

    /// A read-only sysfs at `target`. In a user namespace the kernel requires the sandbox's own
    /// network namespace ([`Namespaces::NET`](crate::Namespaces::NET)).
    pub fn sysfs(target: impl Into<PathBuf>) -> Mount {
        Mount::new(target, MountKind::Sysfs, true)
    }

    /// A POSIX message queue filesystem at `target`; needs
    /// [`Namespaces::IPC`](crate::Namespaces::IPC).
    pub fn mqueue(target: impl Into<PathBuf>) -> Mount {
        Mount::new(target, MountKind::Mqueue, false)
    }

    /// A devpts instance of the sandbox's own at `target` (`newinstance`, `ptmxmode=0666`,
    /// `mode=620`): terminals made in it belong to the sandbox. [`Mount::dev`] already has one
    /// at `/dev/pts`; this is for a `/dev` put together from its parts (as an OCI spec lists
    /// it).
    pub fn devpts(target: impl Into<PathBuf>) -> Mount {
        // Not nodev: its nodes are the terminals.
        Mount::new(target, MountKind::Devpts { gid: None }, false).noexec(true).nodev(false)
    }

    /// For [`devpts`](Self::devpts): the group new terminals get (`gid=`, e.g. 5, `tty` on
    /// Debian), which must be mapped in the sandbox's user namespace. Ignored for other mounts.
    pub fn group(mut self, gid: u32) -> Mount {
        if let MountKind::Devpts { gid: g } = &mut self.kind {
            *g = Some(gid);
        }
        self
    }

    /// The sandbox's own cgroups at `target` (usually `/sys/fs/cgroup`), laid out as the
    /// host's `/sys/fs/cgroup` is (one cgroup2 file system, or a tmpfs holding each v1
    /// hierarchy and its links), each showing the sandbox's cgroup as its root. Needs
    /// [`Namespaces::CGROUP`](crate::Namespaces::CGROUP). Read-only unless
    /// [`read_only(false)`](Self::read_only).
    pub fn cgroup(target: impl Into<PathBuf>) -> Mount {
        Mount::new(target, MountKind::Cgroup, true).noexec(true)
    }

    /// The host's character device node `source` (e.g. `/dev/fuse`), bound at `target`
    /// (read-only as a node: the payload cannot change its mode or owner; reading and writing
    /// the device follow the node's permissions). Every other mount is `nodev`, so this is how
    /// a device reaches the payload.
    pub fn device(source: impl Into<PathBuf>, target: impl Into<PathBuf>) -> Mount {
        Mount::new(target, MountKind::Device { source: source.into() }, true)
    }

    /// A file with `contents` at `target` (e.g. `/etc/hosts`), read-only unless
    /// [`read_only(false)`](Mount::read_only). It is bound over whatever is there, so it works
    /// in read-only roots too.
    pub fn file(target: impl Into<PathBuf>, contents: impl Into<Vec<u8>>) -> Mount {
        Mount::new(target, MountKind::File { contents: contents.into(), mode: 0o644 }, true)
    }

    /// A directory at `target` (with its parents).
    pub fn dir(target: impl Into<PathBuf>) -> Mount {
        Mount::new(target, MountKind::Dir { mode: 0o755 }, false)
    }

    /// A symbolic link at `target` pointing to `link` (which is not checked or resolved).
    pub fn symlink(link: impl Into<PathBuf>, target: impl Into<PathBuf>) -> Mount {
        Mount::new(target, MountKind::Symlink { link: link.into() }, false)
    }

    /// Hides `target`: a file is covered by `/dev/null` (checked to be character device 1:3), a
    /// directory by an empty read-only tmpfs. Nothing happens if `target` does not exist.
    pub fn mask(target: impl Into<PathBuf>) -> Mount {
        Mount::new(target, MountKind::Mask, true)
    }

    /// Makes the existing `target` (and everything mounted beneath it) read-only. Nothing
    /// happens if `target` does not exist.
    pub fn read_only_path(target: impl Into<PathBuf>) -> Mount {
        Mount::new(target, MountKind::ReadOnly, true)
    }

    /// For binds: include submounts of the source (default) or only the source mount itself.
    pub fn recursive(mut self, recursive: bool) -> Mount {
        if let MountKind::Bind { recursive: r, .. } = &mut self.kind {
            *r = recursive;
        }
        self
    }

    /// Read-only or writable.
    pub fn read_only(mut self, readonly: bool) -> Mount {
        self.readonly = readonly;
        self
    }

    /// Ignore set-user-ID bits and file capabilities (default: on).
    pub fn nosuid(mut self, on: bool) -> Mount {
        self.nosuid = on;
        self
    }

    /// Refuse to open device nodes (default: on).
    pub fn nodev(mut self, on: bool) -> Mount {
        self.nodev = on;
        self
    }

    /// Refuse to execute programs (default: off).
    pub fn noexec(mut self, on: bool) -> Mount {
        self.noexec = on;
        self
    }

    /// For tmpfs: the most bytes it may hold.
    pub fn size(mut self, bytes: u64) -> Mount {
        if let MountKind::Tmpfs { size, .. } = &mut self.kind {
            *size = Some(bytes);
        }
        self
    }

    /// For tmpfs: the most files and directories it may hold.
    pub fn inodes(mut self, count: u64) -> Mount {
        if let MountKind::Tmpfs { inodes, .. } = &mut self.kind {
            *inodes = Some(count);
        }
        self
    }

    /// Permission bits: of a tmpfs's root, a created file or a created directory.
    pub fn mode(mut self, bits: u32) -> Mount {
        match &mut self.kind {
            MountKind::Tmpfs { mode, .. } => *mode = Some(bits),
            MountKind::File { mode, .. } | MountKind::Dir { mode } => *mode = bits,
            _ => {}
        }
        self
    }

    /// Read-only binds of the host's system directories, enough to run the host's programs in
    /// a [`Root::tmpfs`]: `/usr`, and `/bin`, `/sbin`, `/lib`, `/lib32`, `/lib64`, `/libx32`
    /// where the host has them, as binds, or as the same symlinks on merged-`/usr` hosts. Not
    /// `/etc`: bind what the payload needs from it yourself.
    ///
    /// ```no_run
    /// use stockade::{Mount, Namespaces, Root, Sandbox};
    /// # fn main() -> Result<(), stockade::Error> {
    /// let sandbox = Sandbox::builder()
    ///     .namespaces(Namespaces::all())
    ///     .root(Root::tmpfs())
    ///     .mounts(Mount::host_system())
    ///     .build()?;
    /// # Ok(()) }
    /// ```
    pub fn host_system() -> Vec<Mount> {
        let mut mounts = vec![Mount::bind_ro("/usr", "/usr")];
        for path in ["/bin", "/sbin", "/lib", "/lib32", "/lib64", "/libx32"] {
            match std::fs::symlink_metadata(path) {
                Ok(meta) if meta.file_type().is_symlink() => {
                    if let Ok(link) = std::fs::read_link(path) {
                        mounts.push(Mount::symlink(link, path));
                    }
                }
                Ok(meta) if meta.is_dir() => mounts.push(Mount::bind_ro(path, path)),
                _ => {}
            }
        }
        mounts
    }

    /// The path this mount is placed at, as the payload sees it.
    pub fn target(&self) -> &Path {
        &self.target
    }
}

/// The device nodes every `/dev` of a sandbox has (the OCI runtime spec's default devices):
/// name under `/dev`, major and minor number (character devices).
pub(crate) const DEFAULT_DEVICES: [(&str, u32, u32); 6] =
    [("null", 1, 3), ("zero", 1, 5), ("full", 1, 7), ("random", 1, 8), ("urandom", 1, 9), ("tty", 5, 0)];

/// The links every `/dev` of a sandbox has: name under `/dev`, and where it points.
pub(crate) const DEV_LINKS: [(&str, &str); 4] = [
    ("fd", "/proc/self/fd"),
    ("stdin", "/proc/self/fd/0"),
    ("stdout", "/proc/self/fd/1"),
    ("stderr", "/proc/self/fd/2"),
];

/// Paths masked by default in a sandbox with a fresh `/proc` or its own root (the OCI runtime
/// defaults, plus the kernel's command line and symbol table): kernel memory, keys and timers,
/// boot parameters and symbol addresses, firmware and power-capping interfaces.
pub(crate) const DEFAULT_MASKED: &[&str] = &[
    "/proc/acpi",
    "/proc/asound",
    "/proc/cmdline",
    "/proc/interrupts",
    "/proc/kallsyms",
    "/proc/kcore",
    "/proc/keys",
    "/proc/latency_stats",
    "/proc/timer_list",
    "/proc/timer_stats",
    "/proc/sched_debug",
    "/proc/scsi",
    "/sys/firmware",
    "/sys/devices/virtual/powercap",
];

/// Paths made read-only by default (the OCI runtime defaults).
pub(crate) const DEFAULT_READONLY: &[&str] =
    &["/proc/bus", "/proc/fs", "/proc/irq", "/proc/sys", "/proc/sysrq-trigger"];

/// Checks a mount target: absolute, no `..`, no NUL, not the root itself. Returns it normalised
/// (no `.`, no repeated or trailing slashes).
pub(crate) fn normalise_target(what: &'static str, path: &Path) -> Result<PathBuf, Error> {
    let bad = |reason: &str| Error::InvalidPath { what, path: path.to_owned(), reason: reason.into() };
    if path.as_os_str().as_bytes().contains(&0) {
        return Err(Error::NulByte { what, value: path.as_os_str().to_owned() });
    }
    if !path.is_absolute() {
        return Err(bad("must be an absolute path inside the sandbox"));
    }
    let mut out = PathBuf::from("/");
    for c in path.components() {
        match c {
            Component::RootDir | Component::CurDir => {}
            Component::Normal(name) => out.push(name),
            Component::ParentDir => {
                return Err(bad("must not contain `..` (it could point outside the root)"));
            }
            Component::Prefix(_) => return Err(bad("unsupported path prefix")),
        }
    }
    if out == Path::new("/") {
        return Err(bad("cannot mount over the root itself; choose a Root instead"));
    }
    Ok(out)
}

/// Checks a host path given as a mount source or root: absolute, present, and reachable without
/// following a symlink (the child opens it the same way when it mounts it).
pub(crate) fn check_source(what: &'static str, path: &Path) -> Result<std::fs::Metadata, Error> {
    if path.as_os_str().as_bytes().contains(&0) {
        return Err(Error::NulByte { what, value: path.as_os_str().to_owned() });
    }
    if !path.is_absolute() {
        return Err(Error::InvalidPath {
            what,
            path: path.to_owned(),
            reason: "must be an absolute host path".into(),
        });
    }
    let c = crate::plan::cstring(what, path.as_os_str())?;
    match crate::sys::open_host(&c, libc::O_PATH) {
        Ok(fd) => {
            let file = std::fs::File::from(crate::sys::owned(fd));
            file.metadata().map_err(|source| Error::PathAccess { what, path: path.to_owned(), source })
        }
        Err(crate::sys::Errno(libc::ELOOP)) => Err(Error::InvalidPath {
            what,
            path: path.to_owned(),
            reason: "contains a symlink: host paths are opened without following symlinks, which \
                     an untrusted party (an earlier sandbox given a writable bind, say) could have \
                     planted; pass the resolved path (std::fs::canonicalize) of a path you trust"
                .into(),
        }),
        Err(e) => Err(Error::PathAccess { what, path: path.to_owned(), source: e.into() }),
    }
}
