//! Expands a root and its mounts (plus the defaults: `/proc`, `/dev`, masked paths) into the flat
//! list of operations the child performs, with every path already split into the `CString`
//! pieces the child's in-root resolution walks. Validation happens here, in the parent.

use std::ffi::{CStr, CString, OsStr};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use super::{
    DEFAULT_MASKED, DEFAULT_READONLY, Mount, MountKind, Root, RootKind, check_source, normalise_target,
};
use crate::plan::cstring;
use crate::{Error, Namespaces, Stage};

/// `MOUNT_ATTR_*` bits of `mount_setattr` / `fsmount`.
pub(crate) mod attr {
    pub(crate) const RDONLY: u64 = 0x1;
    pub(crate) const NOSUID: u64 = 0x2;
    pub(crate) const NODEV: u64 = 0x4;
    pub(crate) const NOEXEC: u64 = 0x8;
}

/// Most lower layers overlayfs stacks.
const MAX_LOWERS: usize = 500;
/// Most layers one `lowerdir=` option can name: 255 bytes of descriptor numbers (up to four
/// digits each) and colons.
pub(crate) const LEGACY_MAX_LOWERS: usize = 48;

/// How the payload's root is made.
#[derive(Debug)]
pub(crate) enum RootOp {
    /// Keep the current root (mounts are still private to the sandbox).
    Host,
    Tmpfs {
        options: Vec<(CString, Option<CString>)>,
    },
    Bind {
        source: CString,
        writable: bool,
    },
    HostReadonly,
    /// `lowers` top first, as overlayfs wants them.
    Overlay {
        lowers: Vec<CString>,
        upper: Option<(CString, CString)>,
        tmpfs_size: Option<CString>,
        userxattr: bool,
        /// All lowers in one `lowerdir=` option (see `SandboxBuilder::legacy_overlay`).
        legacy: bool,
    },
}

/// A path inside the new root, pre-split for the child: `levels[i]` is (the path up to and
/// including component i, component i's name), e.g. `("usr/lib", "lib")`.
#[derive(Debug)]
pub(crate) struct Target {
    pub(crate) full: CString,
    pub(crate) levels: Vec<(CString, CString)>,
    pub(crate) path: PathBuf,
    /// Refuse symlinks anywhere on the way (stockade's own /proc, /dev and masks): in a caller's
    /// root, a link there could be swapped between two operations on the same path.
    pub(crate) no_symlinks: bool,
}

/// What to create at a missing target.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Create {
    /// Nothing: a missing target means "skip this operation".
    Nothing,
    Dir,
    File,
}

/// One step of building the filesystem, performed by the child in order.
#[derive(Debug)]
pub(crate) enum FsOp {
    /// Clone the host tree at `source` and attach it at `target`.
    Bind {
        source: CString,
        recursive: bool,
        attrs: u64,
        create: Create,
        target: Target,
    },
    /// A new filesystem instance (tmpfs, proc, devpts, sysfs, mqueue).
    NewFs {
        fstype: &'static CStr,
        options: Vec<(CString, Option<CString>)>,
        attrs: u64,
        target: Target,
    },
    /// Bind a host device node after checking it is the expected character device.
    DevNode {
        source: CString,
        rdev: (u32, u32),
        target: Target,
    },
    /// Write `contents` into the staging tmpfs as `name` and bind it at `target`.
    File {
        name: CString,
        contents: Vec<u8>,
        mode: u32,
        attrs: u64,
        target: Target,
    },
    Dir {
        mode: u32,
        target: Target,
    },
    Symlink {
        link: CString,
        target: Target,
    },
    /// Cover an existing path with /dev/null (files) or an empty read-only tmpfs (directories).
    Mask {
        target: Target,
    },
    /// Make an existing path read-only, recursively.
    ReadOnly {
        target: Target,
    },
    /// Set flags on the mount at an existing target (e.g. /dev read-only once populated).
    SetAttrs {
        attrs: u64,
        target: Target,
    },
    /// An overlayfs of host directories: `layers` are the lowers top first, then upper and
    /// work when `upper` (the child takes their opened handles in this order).
    Overlay {
        layers: Vec<CString>,
        upper: bool,
        userxattr: bool,
        legacy: bool,
        attrs: u64,
        target: Target,
    },
}

/// The filesystem part of a spawn plan.
#[derive(Debug)]
pub(crate) struct FsPlan {
    /// The sandbox has a mount namespace; without one nothing here happens.
    pub(crate) mount_ns: bool,
    pub(crate) root: RootOp,
    pub(crate) ops: Vec<FsOp>,
    /// Make the root mount read-only after all operations (tmpfs roots).
    pub(crate) root_readonly: bool,
    /// Switch root with chroot instead of pivot_root.
    pub(crate) chroot: bool,
    /// Missing mount targets may be created (only in a root of the sandbox's own: on the host's
    /// root a missing target is an error).
    pub(crate) may_create: bool,
    /// Whether any `FsOp::File` needs the staging tmpfs.
    pub(crate) staging: bool,
    /// Identity maps for the nested user namespace that locks the mounts (uid, gid), when the
    /// sandbox has a user namespace.
    pub(crate) lock_maps: Option<(Vec<u8>, Vec<u8>)>,
}

/// The settings the filesystem plan is made from, validated by [`FsConfig::new`].
/// What the sandbox adds to the caller's mounts on its own.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Defaults {
    /// The masked and read-only `/proc` and `/sys` paths.
    pub(crate) masks: bool,
    /// A `/proc` with a pid namespace, a `/dev` with a root.
    pub(crate) mounts: bool,
}

#[derive(Clone, Debug)]
pub(crate) struct FsConfig {
    root: Option<Root>,
    mounts: Vec<Mount>,
    defaults: Defaults,
    chroot: bool,
    root_size: Option<u64>,
    /// Overlay roots with one `lowerdir=` option (kernels before 6.8) instead of `lowerdir+`.
    legacy_overlay: bool,
}

impl FsConfig {
    /// Validates roots and mounts (at `SandboxBuilder::build`): targets, sources, conflicts, and
    /// the namespaces each needs.
    pub(crate) fn new(
        root: Option<Root>,
        mounts: Vec<Mount>,
        defaults: Defaults,
        chroot: bool,
        root_size: Option<u64>,
        legacy_overlay: bool,
        ns: Namespaces,
    ) -> Result<FsConfig, Error> {
        let needs_mount_ns = root.is_some() || !mounts.is_empty() || chroot;
        if needs_mount_ns && !ns.contains(Namespaces::MOUNT) {
            let what = if root.is_some() { "a root filesystem" } else { "mounts" };
            return Err(Error::NamespaceRequired { what, needs: "mount" });
        }
        if chroot && root.is_none() {
            return Err(Error::invalid("root switch", "chroot", "needs a Root to switch to"));
        }
        if root_size == Some(0) {
            return Err(Error::invalid("root size", 0, "a tmpfs of 0 bytes cannot hold anything"));
        }
        let overlays = mounts.iter().filter_map(|m| match &m.kind {
            MountKind::Overlay { lowers, .. } => Some(lowers.len()),
            _ => None,
        });
        if let Some(count) = overlays.filter(|_| legacy_overlay).find(|&n| n > LEGACY_MAX_LOWERS) {
            return Err(Error::invalid(
                "overlay mount",
                format!("{count} lower directories"),
                format!("legacy_overlay() stacks at most {LEGACY_MAX_LOWERS}"),
            ));
        }
        if let Some(Root(kind)) = &root {
            validate_root(kind)?;
            if let (true, RootKind::Overlay { lowers, .. }) = (legacy_overlay, kind)
                && lowers.len() > LEGACY_MAX_LOWERS
            {
                return Err(Error::invalid(
                    "overlay root",
                    format!("{} lower directories", lowers.len()),
                    format!(
                        "legacy_overlay() stacks at most {LEGACY_MAX_LOWERS} (its lowerdir= option is \
                             limited to 255 bytes); Linux 6.8 or newer takes up to {MAX_LOWERS} without it"
                    ),
                ));
            }
        }
        let mut mounts = mounts;
        if root.is_none() {
            // Without a root of its own the sandbox's filesystem is the host's: creating
            // anything there would change the host for good.
            if let Some(m) =
                mounts.iter().find(|m| matches!(m.kind, MountKind::Dir { .. } | MountKind::Symlink { .. }))
            {
                return Err(Error::InvalidPath {
                    what: "mount target",
                    path: m.target.clone(),
                    reason: "directories and symlinks can only be created in a sandbox with its own Root"
                        .into(),
                });
            }
        }
        let mut seen: Vec<(PathBuf, bool)> = Vec::new();
        for m in &mut mounts {
            m.target = normalise_target("mount target", &m.target)?;
            validate_mount(m, ns)?;
            let leaf = matches!(m.kind, MountKind::File { .. } | MountKind::Symlink { .. });
            for (other, other_leaf) in &seen {
                if *other == m.target && !matches!(m.kind, MountKind::ReadOnly | MountKind::Mask) {
                    return Err(Error::InvalidPath {
                        what: "mount target",
                        path: m.target.clone(),
                        reason: "is the target of an earlier mount too; the later one would hide it".into(),
                    });
                }
                if *other_leaf && m.target.starts_with(other) && *other != m.target {
                    return Err(Error::InvalidPath {
                        what: "mount target",
                        path: m.target.clone(),
                        reason: format!("lies beneath {}, which is a file or symlink", other.display()),
                    });
                }
            }
            seen.push((m.target.clone(), leaf));
        }
        Ok(FsConfig { root, mounts, defaults, chroot, root_size, legacy_overlay })
    }

    /// Whether the sandbox's filesystem differs from the host's in any way (a mount namespace
    /// with anything in it).
    fn has_root(&self) -> bool {
        self.root.is_some()
    }

    /// The plan for one spawn. `lock_maps` are the nested user namespace's maps, if any.
    pub(crate) fn plan(
        &self,
        ns: Namespaces,
        lock_maps: Option<(Vec<u8>, Vec<u8>)>,
    ) -> Result<FsPlan, Error> {
        if !ns.contains(Namespaces::MOUNT) {
            return Ok(FsPlan {
                mount_ns: false,
                may_create: false,
                root: RootOp::Host,
                ops: Vec::new(),
                root_readonly: false,
                chroot: false,
                staging: false,
                lock_maps: None,
            });
        }
        let user_ns = ns.contains(Namespaces::USER);
        let root = match self.root.as_ref().map(|r| &r.0) {
            None => RootOp::Host,
            Some(RootKind::Tmpfs) => {
                RootOp::Tmpfs { options: tmpfs_options(self.root_size, None, Some(0o755)) }
            }
            Some(RootKind::Dir { path, writable, .. }) => {
                RootOp::Bind { source: cstring("root directory", path.as_os_str())?, writable: *writable }
            }
            Some(RootKind::HostReadonly) => RootOp::HostReadonly,
            Some(RootKind::Overlay { lowers, upper }) => RootOp::Overlay {
                lowers: lowers
                    .iter()
                    .rev()
                    .map(|l| cstring("overlay lower", l.as_os_str()))
                    .collect::<Result<_, _>>()?,
                upper: upper
                    .as_ref()
                    .map(|(u, w)| {
                        Ok::<_, Error>((
                            cstring("overlay upper", u.as_os_str())?,
                            cstring("overlay work", w.as_os_str())?,
                        ))
                    })
                    .transpose()?,
                tmpfs_size: self.root_size.map(|s| CString::new(s.to_string()).unwrap_or_default()),
                userxattr: user_ns,
                legacy: self.legacy_overlay,
            },
        };

        let mut ops = Vec::new();
        let mut finish = Vec::new();
        let overlay = OverlayMode { userxattr: user_ns, legacy: self.legacy_overlay };
        let claimed = |p: &str| self.mounts.iter().any(|m| m.target == Path::new(p));
        if self.defaults.mounts && ns.contains(Namespaces::PID) && !claimed("/proc") {
            expand(&Mount::proc("/proc"), &mut ops, &mut finish, strict_target, overlay)?;
        }
        if self.defaults.mounts && self.has_root() && !claimed("/dev") {
            expand(&Mount::dev("/dev"), &mut ops, &mut finish, strict_target, overlay)?;
        }
        for m in &self.mounts {
            expand(m, &mut ops, &mut finish, target, overlay)?;
        }
        ops.append(&mut finish);
        if self.defaults.masks {
            for p in DEFAULT_MASKED {
                ops.push(FsOp::Mask { target: strict_target(Path::new(p))? });
            }
            for p in DEFAULT_READONLY {
                ops.push(FsOp::ReadOnly { target: strict_target(Path::new(p))? });
            }
        }
        let staging = ops.iter().any(|op| matches!(op, FsOp::File { .. }));
        Ok(FsPlan {
            mount_ns: true,
            may_create: !matches!(root, RootOp::Host),
            root_readonly: matches!(root, RootOp::Tmpfs { .. })
                || matches!(&self.root, Some(Root(RootKind::Dir { sealed: true, .. }))),
            root,
            ops,
            chroot: self.chroot,
            staging,
            lock_maps: if user_ns { lock_maps } else { None },
        })
    }
}

fn validate_root(kind: &RootKind) -> Result<(), Error> {
    let dir = |what: &'static str, p: &Path| -> Result<std::fs::Metadata, Error> {
        let meta = check_source(what, p)?;
        if !meta.is_dir() {
            return Err(Error::InvalidPath { what, path: p.to_owned(), reason: "is not a directory".into() });
        }
        Ok(meta)
    };
    match kind {
        RootKind::Tmpfs | RootKind::HostReadonly => {}
        RootKind::Dir { path, .. } => {
            dir("root directory", path)?;
        }
        RootKind::Overlay { lowers, upper } => {
            if lowers.is_empty() {
                return Err(Error::invalid("overlay root", "[]", "needs at least one lower directory"));
            }
            if lowers.len() > MAX_LOWERS {
                return Err(Error::invalid(
                    "overlay root",
                    format!("{} lower directories", lowers.len()),
                    format!("overlayfs stacks at most {MAX_LOWERS}"),
                ));
            }
            for l in lowers {
                dir("overlay lower directory", l)?;
            }
            if let Some((u, w)) = upper {
                let um = dir("overlay upper directory", u)?;
                let wm = dir("overlay work directory", w)?;
                if um.dev() != wm.dev() {
                    return Err(Error::InvalidPath {
                        what: "overlay work directory",
                        path: w.clone(),
                        reason: format!(
                            "must be on the same filesystem as the upper directory {}",
                            u.display()
                        ),
                    });
                }
            }
        }
    }
    Ok(())
}

fn validate_mount(m: &Mount, ns: Namespaces) -> Result<(), Error> {
    let invalid =
        |reason: &str| Error::InvalidPath { what: "mount", path: m.target.clone(), reason: reason.into() };
    match &m.kind {
        MountKind::Bind { source, .. } => {
            check_source("bind source", source)?;
        }
        MountKind::Tmpfs { size, mode, inodes } => {
            if *size == Some(0) {
                return Err(invalid(
                    "tmpfs size 0: a tmpfs of 0 bytes cannot hold anything (the kernel would read it as unlimited)",
                ));
            }
            if *inodes == Some(0) {
                return Err(invalid("tmpfs inode limit 0 (the kernel would read it as unlimited)"));
            }
            if mode.is_some_and(|m| m > 0o7777) {
                return Err(invalid("tmpfs mode has bits beyond 0o7777"));
            }
        }
        MountKind::Proc if !ns.contains(Namespaces::PID) => {
            return Err(Error::NamespaceRequired { what: "a proc mount", needs: "pid" });
        }
        MountKind::Mqueue if !ns.contains(Namespaces::IPC) => {
            return Err(Error::NamespaceRequired { what: "an mqueue mount", needs: "ipc" });
        }
        MountKind::Sysfs if ns.contains(Namespaces::USER) && !ns.contains(Namespaces::NET) => {
            return Err(Error::NamespaceRequired { what: "a sysfs mount in a user namespace", needs: "net" });
        }
        MountKind::File { mode, .. } | MountKind::Dir { mode } if *mode > 0o7777 => {
            return Err(invalid("mode has bits beyond 0o7777"));
        }
        MountKind::Symlink { link } => {
            cstring("symlink target", link.as_os_str())?;
        }
        MountKind::Device { source } => {
            device_number(source)?;
        }
        MountKind::Cgroup if !ns.contains(Namespaces::CGROUP) => {
            return Err(Error::NamespaceRequired { what: "a cgroup mount", needs: "cgroup" });
        }
        MountKind::Overlay { lowers, upper } => {
            if upper.is_none() && lowers.len() < 2 {
                return Err(invalid("a read-only overlay needs two lower directories at least (overlayfs)"));
            }
            validate_root(&RootKind::Overlay { lowers: lowers.clone(), upper: upper.clone() })?;
        }
        _ => {}
    }
    Ok(())
}

/// The major and minor number of the host's character device `source`.
fn device_number(source: &Path) -> Result<(u32, u32), Error> {
    use std::os::unix::fs::{FileTypeExt, MetadataExt};
    let meta = super::check_source("device", source)?;
    if !meta.file_type().is_char_device() {
        return Err(Error::InvalidPath {
            what: "device",
            path: source.to_owned(),
            reason: "is not a character device (block devices are not bound into sandboxes)".into(),
        });
    }
    Ok((libc::major(meta.rdev()), libc::minor(meta.rdev())))
}

fn tmpfs_options(
    size: Option<u64>,
    inodes: Option<u64>,
    mode: Option<u32>,
) -> Vec<(CString, Option<CString>)> {
    let num = |s: String| Some(CString::new(s).unwrap_or_default());
    let mut o = Vec::new();
    if let Some(s) = size {
        o.push((c"size".to_owned(), num(s.to_string())));
    }
    if let Some(i) = inodes {
        o.push((c"nr_inodes".to_owned(), num(i.to_string())));
    }
    if let Some(m) = mode {
        o.push((c"mode".to_owned(), num(format!("{m:o}"))));
    }
    o
}

fn flags(m: &Mount) -> u64 {
    let mut a = 0;
    if m.readonly {
        a |= attr::RDONLY;
    }
    if m.nosuid {
        a |= attr::NOSUID;
    }
    if m.nodev {
        a |= attr::NODEV;
    }
    if m.noexec {
        a |= attr::NOEXEC;
    }
    a
}

/// Splits an absolute, normalised path into the child's [`Target`].
pub(crate) fn target(path: &Path) -> Result<Target, Error> {
    let rel = path.strip_prefix("/").unwrap_or(path);
    let mut levels = Vec::new();
    let mut prefix = PathBuf::new();
    for name in rel.iter() {
        prefix.push(name);
        levels.push((cstring("mount target", prefix.as_os_str())?, cstring("mount target", name)?));
    }
    Ok(Target {
        full: cstring("mount target", rel.as_os_str())?,
        levels,
        path: path.to_owned(),
        no_symlinks: false,
    })
}

/// Like [`target`], for stockade's own mounts: no symlink may be followed on the way.
fn strict_target(path: &Path) -> Result<Target, Error> {
    target(path).map(|t| Target { no_symlinks: true, ..t })
}

/// How overlay mounts are made: with `userxattr` in a user namespace, and with one
/// `lowerdir=` option on kernels before 6.8 (`SandboxBuilder::legacy_overlay`).
#[derive(Clone, Copy)]
struct OverlayMode {
    userxattr: bool,
    legacy: bool,
}

/// Appends the operations for one mount; steps that must wait until every mount is in place go
/// to `finish` (e.g. making `/dev` read-only after other mounts were placed under it).
fn expand(
    m: &Mount,
    ops: &mut Vec<FsOp>,
    finish: &mut Vec<FsOp>,
    target: fn(&Path) -> Result<Target, Error>,
    overlay: OverlayMode,
) -> Result<(), Error> {
    let t = &m.target;
    match &m.kind {
        MountKind::Overlay { lowers, upper } => {
            let mut layers: Vec<CString> = lowers
                .iter()
                .rev()
                .map(|l| cstring("overlay lower", l.as_os_str()))
                .collect::<Result<_, _>>()?;
            for (what, dir) in upper.iter().flat_map(|(u, w)| [("overlay upper", u), ("overlay work", w)]) {
                layers.push(cstring(what, dir.as_os_str())?);
            }
            ops.push(FsOp::Overlay {
                layers,
                upper: upper.is_some(),
                userxattr: overlay.userxattr,
                legacy: overlay.legacy,
                attrs: flags(m),
                target: target(t)?,
            });
        }
        MountKind::Bind { source, recursive } => {
            let is_dir = super::check_source("bind source", source)?.is_dir();
            ops.push(FsOp::Bind {
                source: cstring("bind source", source.as_os_str())?,
                recursive: *recursive,
                attrs: flags(m),
                create: if is_dir { Create::Dir } else { Create::File },
                target: target(t)?,
            });
        }
        MountKind::Tmpfs { size, mode, inodes } => ops.push(FsOp::NewFs {
            fstype: c"tmpfs",
            options: tmpfs_options(*size, *inodes, *mode),
            attrs: flags(m),
            target: target(t)?,
        }),
        MountKind::Proc => ops.push(FsOp::NewFs {
            fstype: c"proc",
            options: Vec::new(),
            attrs: attr::NOSUID | attr::NODEV | attr::NOEXEC | if m.readonly { attr::RDONLY } else { 0 },
            target: target(t)?,
        }),
        MountKind::Sysfs => ops.push(FsOp::NewFs {
            fstype: c"sysfs",
            options: Vec::new(),
            attrs: attr::RDONLY | attr::NOSUID | attr::NODEV | attr::NOEXEC,
            target: target(t)?,
        }),
        MountKind::Devpts { gid } => {
            let mut options = vec![
                (c"newinstance".to_owned(), None),
                (c"ptmxmode".to_owned(), Some(c"0666".to_owned())),
                (c"mode".to_owned(), Some(c"620".to_owned())),
            ];
            if let Some(gid) = gid {
                options.push((c"gid".to_owned(), Some(CString::new(gid.to_string()).unwrap_or_default())));
            }
            ops.push(FsOp::NewFs { fstype: c"devpts", options, attrs: flags(m), target: target(t)? })
        }
        MountKind::Cgroup => {
            use crate::resources::cgroup::ViewEntry;
            let view = crate::resources::cgroup::view().ok_or_else(|| Error::Unsupported {
                feature: "cgroups".into(),
                reason: "no cgroup filesystem is mounted at /sys/fs/cgroup".into(),
                hint: "mount cgroup2 at /sys/fs/cgroup, or leave out the cgroup mount".into(),
            })?;
            let attrs = attr::NOSUID | attr::NODEV | attr::NOEXEC | if m.readonly { attr::RDONLY } else { 0 };
            let text = |s: &str| CString::new(s).unwrap_or_default();
            let fs_op = |unified: bool, options: &[(String, Option<String>)], at: &Path| {
                Ok::<_, Error>(FsOp::NewFs {
                    fstype: if unified { c"cgroup2" } else { c"cgroup" },
                    options: options.iter().map(|(k, v)| (text(k), v.as_deref().map(text))).collect(),
                    attrs,
                    target: target(at)?,
                })
            };
            if let [ViewEntry::Hierarchy { dir, unified, options }] = view.as_slice()
                && dir.is_empty()
            {
                ops.push(fs_op(*unified, options, t)?);
            } else {
                ops.push(FsOp::NewFs {
                    fstype: c"tmpfs",
                    options: tmpfs_options(Some(64 << 10), None, Some(0o755)),
                    attrs: attr::NOSUID | attr::NODEV | attr::NOEXEC,
                    target: target(t)?,
                });
                for entry in &view {
                    match entry {
                        ViewEntry::Hierarchy { dir, unified, options } => {
                            ops.push(FsOp::Dir { mode: 0o755, target: target(&t.join(dir))? });
                            ops.push(fs_op(*unified, options, &t.join(dir))?);
                        }
                        ViewEntry::Link { name, target: link } => {
                            ops.push(FsOp::Symlink { link: text(link), target: target(&t.join(name))? })
                        }
                    }
                }
                if m.readonly {
                    finish.push(FsOp::SetAttrs { attrs: attr::RDONLY, target: target(t)? });
                }
            }
        }
        MountKind::Device { source } => ops.push(FsOp::DevNode {
            source: cstring("device", source.as_os_str())?,
            rdev: device_number(source)?,
            target: target(t)?,
        }),
        MountKind::Mqueue => ops.push(FsOp::NewFs {
            fstype: c"mqueue",
            options: Vec::new(),
            attrs: attr::NOSUID | attr::NODEV | attr::NOEXEC | if m.readonly { attr::RDONLY } else { 0 },
            target: target(t)?,
        }),
        MountKind::Dev => {
            ops.push(FsOp::NewFs {
                fstype: c"tmpfs",
                options: tmpfs_options(Some(64 << 10), None, Some(0o755)),
                attrs: attr::NOSUID | attr::NOEXEC,
                target: target(t)?,
            });
            for (name, major, minor) in super::DEFAULT_DEVICES {
                ops.push(FsOp::DevNode {
                    source: CString::new(format!("/dev/{name}")).unwrap_or_default(),
                    rdev: (major, minor),
                    target: target(&t.join(name))?,
                });
            }
            ops.push(FsOp::Dir { mode: 0o755, target: target(&t.join("pts"))? });
            ops.push(FsOp::NewFs {
                fstype: c"devpts",
                options: vec![
                    (c"newinstance".to_owned(), None),
                    (c"ptmxmode".to_owned(), Some(c"0666".to_owned())),
                    (c"mode".to_owned(), Some(c"620".to_owned())),
                ],
                attrs: attr::NOSUID | attr::NOEXEC,
                target: target(&t.join("pts"))?,
            });
            ops.push(FsOp::Symlink { link: c"pts/ptmx".to_owned(), target: target(&t.join("ptmx"))? });
            ops.push(FsOp::Dir { mode: 0o755, target: target(&t.join("shm"))? });
            ops.push(FsOp::NewFs {
                fstype: c"tmpfs",
                options: tmpfs_options(Some(64 << 20), None, Some(0o1777)),
                attrs: attr::NOSUID | attr::NODEV,
                target: target(&t.join("shm"))?,
            });
            for (name, link) in super::DEV_LINKS {
                ops.push(FsOp::Symlink {
                    link: CString::new(link).unwrap_or_default(),
                    target: target(&t.join(name))?,
                });
            }
            finish.push(FsOp::SetAttrs { attrs: attr::RDONLY, target: target(t)? });
        }
        MountKind::File { contents, mode } => {
            let name = CString::new(format!("f{}", ops.len())).unwrap_or_default();
            ops.push(FsOp::File {
                name,
                contents: contents.clone(),
                mode: *mode,
                attrs: flags(m),
                target: target(t)?,
            });
        }
        MountKind::Dir { mode } => ops.push(FsOp::Dir { mode: *mode, target: target(t)? }),
        MountKind::Symlink { link } => {
            ops.push(FsOp::Symlink { link: cstring("symlink target", link.as_os_str())?, target: target(t)? })
        }
        MountKind::Mask => ops.push(FsOp::Mask { target: target(t)? }),
        MountKind::ReadOnly => ops.push(FsOp::ReadOnly { target: target(t)? }),
    }
    Ok(())
}

impl FsPlan {
    /// Whether the sandbox's `/dev/pts` is a devpts instance of its own (stockade's `/dev`,
    /// [`Mount::dev`](crate::Mount::dev) at `/dev`) that nothing mounted later covers: where a
    /// payload's terminal may be made (never in the host's instance).
    pub(crate) fn own_devpts(&self) -> bool {
        let pts = Path::new("/dev/pts");
        let covers = |target: &Target| pts.starts_with(&target.path);
        let mut own = false;
        for op in &self.ops {
            match op {
                FsOp::NewFs { fstype, target, .. } if *fstype == c"devpts" && target.path == pts => {
                    own = true
                }
                FsOp::Bind { target, .. }
                | FsOp::Overlay { target, .. }
                | FsOp::NewFs { target, .. }
                | FsOp::DevNode { target, .. }
                | FsOp::File { target, .. }
                | FsOp::Mask { target } => own &= !covers(target),
                FsOp::Dir { .. } | FsOp::Symlink { .. } | FsOp::ReadOnly { .. } | FsOp::SetAttrs { .. } => {}
            }
        }
        self.mount_ns && own
    }

    /// The host paths the caller handed over, in the order the child consumes them: the root's
    /// (a bound directory; overlay lowers, then upper and work), then each bind's source and
    /// each overlay mount's layers, in the order of the operations. The child opens them all
    /// before it takes the ids of its namespace (see `sys::mount::open_sources`).
    pub(crate) fn host_sources(&self) -> impl Iterator<Item = &CStr> {
        let root: &[CString] = match &self.root {
            RootOp::Bind { source, .. } => std::slice::from_ref(source),
            RootOp::Overlay { lowers, .. } => lowers,
            _ => &[],
        };
        let upper = match &self.root {
            RootOp::Overlay { upper: Some((upper, work)), .. } => {
                [Some(upper.as_c_str()), Some(work.as_c_str())]
            }
            _ => [None, None],
        };
        let mounted = self.ops.iter().flat_map(|op| match op {
            FsOp::Bind { source, .. } => std::slice::from_ref(source),
            FsOp::Overlay { layers, .. } => layers.as_slice(),
            _ => &[],
        });
        root.iter()
            .map(CString::as_c_str)
            .chain(upper.into_iter().flatten())
            .chain(mounted.map(CString::as_c_str))
    }

    /// The stage to report for a failure of operation `index` (or of the root, `u32::MAX`).
    pub(crate) fn stage(&self, step: crate::plan::Step, index: usize) -> Stage {
        use crate::plan::Step;
        match step {
            Step::Root => Stage::Root { what: self.root_description() },
            Step::PivotRoot => Stage::PivotRoot,
            Step::LockMounts => Stage::LockMounts,
            _ => match self.ops.get(index) {
                Some(op) => {
                    let (what, target) = op.describe();
                    Stage::Mount { what, target: target.to_owned() }
                }
                None => Stage::Mount { what: "mount".into(), target: PathBuf::new() },
            },
        }
    }

    fn root_description(&self) -> String {
        let show = |c: &CString| Path::new(OsStr::from_bytes(c.as_bytes())).display().to_string();
        match &self.root {
            RootOp::Host => "host root".into(),
            RootOp::Tmpfs { .. } => "tmpfs root".into(),
            RootOp::Bind { source, .. } => format!("root directory {}", show(source)),
            RootOp::HostReadonly => "read-only host root".into(),
            RootOp::Overlay { lowers, .. } => {
                format!("overlay root over {}", lowers.iter().rev().map(show).collect::<Vec<_>>().join(", "))
            }
        }
    }
}

impl FsOp {
    fn describe(&self) -> (String, &Path) {
        let show = |c: &CString| Path::new(OsStr::from_bytes(c.as_bytes())).display().to_string();
        match self {
            FsOp::Bind { source, target, .. } => (format!("bind of {}", show(source)), &target.path),
            FsOp::Overlay { layers, upper, target, .. } => {
                let lowers = &layers[..layers.len() - if *upper { 2 } else { 0 }];
                (
                    format!("overlay over {}", lowers.iter().rev().map(show).collect::<Vec<_>>().join(", ")),
                    &target.path,
                )
            }
            FsOp::NewFs { fstype, target, .. } => (fstype.to_string_lossy().into_owned(), &target.path),
            FsOp::DevNode { source, rdev, target } => {
                (format!("device {} (expected {}:{})", show(source), rdev.0, rdev.1), &target.path)
            }
            FsOp::File { target, .. } => ("file".into(), &target.path),
            FsOp::Dir { target, .. } => ("directory".into(), &target.path),
            FsOp::Symlink { link, target } => (format!("symlink to {}", show(link)), &target.path),
            FsOp::Mask { target } => ("mask".into(), &target.path),
            FsOp::ReadOnly { target } => ("read-only remount".into(), &target.path),
            FsOp::SetAttrs { target, .. } => ("mount flags".into(), &target.path),
        }
    }
}
