//! Building the sandbox's filesystem in the child, with the fd-based mount API (`fsopen`,
//! `fsmount`, `open_tree`, `move_mount`, `mount_setattr`) and `openat2` resolution inside the
//! new root. Same rules as the rest of the child: no allocation, no locks.
//!
//! Order: propagation private → root attached on top of `/` → operations in plan order →
//! root read-only (tmpfs roots) → `pivot_root` ([`build`]); then, in the process that will exec
//! the payload, a nested user + mount namespace that locks every mount (user namespaces only)
//! and a chroot if one was asked for ([`enter`]).

use std::ffi::CStr;
use std::os::fd::RawFd;

use super::child::{Failure, at, at_index};
use super::{
    Errno, RESOLVE_IN_ROOT, RESOLVE_NO_MAGICLINKS, RESOLVE_NO_SYMLINKS, SysResult, close, fd_of, open_host,
    openat2, retry,
};
use crate::fs::plan::{Create, FsOp, FsPlan, LEGACY_MAX_LOWERS, RootOp, Target, attr};
use crate::plan::Step;

const FSOPEN_CLOEXEC: u32 = 1;
const FSCONFIG_SET_FLAG: u32 = 0;
const FSCONFIG_SET_STRING: u32 = 1;
const FSCONFIG_CMD_CREATE: u32 = 6;
const FSMOUNT_CLOEXEC: u32 = 1;
const OPEN_TREE_CLONE: u32 = 1;
const OPEN_TREE_CLOEXEC: u32 = libc::O_CLOEXEC as u32;
const AT_RECURSIVE: u32 = 0x8000;
const AT_EMPTY_PATH: u32 = libc::AT_EMPTY_PATH as u32;
const MOVE_MOUNT_F_EMPTY_PATH: u32 = 0x4;
const MOVE_MOUNT_T_EMPTY_PATH: u32 = 0x40;

/// What [`build`] leaves for [`enter`].
pub(super) struct Built {
    /// A procfs directory for the nested namespace's maps (-1 without a lock): our own
    /// `/proc/<pid>` (no pid namespace), or the root of a private proc instance of the sandbox's
    /// pid namespace, where the payload will be `<pid>`.
    pub(super) proc: RawFd,
    switched: bool,
    chroot: bool,
}

/// Builds the filesystem described by `fs` and switches to the new root (with `pivot_root`;
/// a chroot is left to [`enter`]). `pid_ns`: the payload will be forked into a pid namespace
/// after this.
pub(super) fn build(fs: &FsPlan, host_fds: &[RawFd], pid_ns: bool) -> Result<Built, Failure> {
    let mut sources = Sources { fds: host_fds, next: 0 };
    let built = with_exact_modes(|| build_tree(fs, &mut sources, pid_ns));
    // What a failure left unused (each used one was closed by its user).
    for &fd in host_fds.get(sources.next..).unwrap_or(&[]) {
        if fd >= 0 {
            close(fd);
        }
    }
    built
}

/// Opens every host path of `fs` (see `FsPlan::host_sources`) without following a symlink, into
/// `fds`; a path that cannot be opened gets `-errno`, reported when its mount is made.
pub(super) fn open_sources(fs: &FsPlan, fds: &mut [RawFd]) {
    for (source, slot) in fs.host_sources().zip(fds.iter_mut()) {
        *slot = match open_host(source, libc::O_PATH) {
            Ok(fd) => fd,
            Err(Errno(e)) => -e,
        };
    }
}

/// The opened host paths, handed out in the order they were opened.
struct Sources<'a> {
    fds: &'a [RawFd],
    next: usize,
}

impl Sources<'_> {
    /// The next opened path; the caller closes it.
    fn take(&mut self) -> SysResult<RawFd> {
        let fd = self.fds.get(self.next).copied().unwrap_or(-libc::EBADF);
        self.next += 1;
        if fd >= 0 { Ok(fd) } else { Err(Errno(-fd)) }
    }
}

/// Runs `f` with umask 0, so that what it creates gets exactly the modes asked for; the payload
/// then inherits the embedding program's umask again, as with std.
fn with_exact_modes<T>(f: impl FnOnce() -> T) -> T {
    // SAFETY: umask only swaps an integer.
    let old_umask = unsafe { raw!(libc::SYS_umask, 0) }.unwrap_or(0o022);
    let result = f();
    // SAFETY: as above.
    let _ = unsafe { raw!(libc::SYS_umask, old_umask) };
    result
}

/// Finishes in the process that will exec the payload: locks the mounts (after the writer of
/// the nested maps, see [`lock_sync`], was set up) and completes a chroot.
pub(super) fn enter(built: &Built, lock: Option<&LockSync>) -> Result<(), Failure> {
    if built.switched && built.chroot {
        // Before the lock: the kernel refuses a new user namespace to a process whose root is
        // not the top of its mount namespace's root, and the new root is stacked on top of it.
        if let Err(e) = chroot(c".") {
            // Let a waiting writer see end of file rather than wait for us forever.
            if let Some(sync) = lock {
                for fd in [sync.moved.0, sync.moved.1, sync.result.0, sync.result.1] {
                    close(fd);
                }
            }
            return Err(at(Step::PivotRoot)(e));
        }
    }
    if let Some(sync) = lock {
        move_side(sync).map_err(at(Step::LockMounts))?;
    }
    if built.switched {
        super::chdir(c"/").map_err(at(Step::PivotRoot))?;
    }
    Ok(())
}

fn build_tree(fs: &FsPlan, sources: &mut Sources<'_>, pid_ns: bool) -> Result<Built, Failure> {
    if !fs.mount_ns {
        return Ok(Built { proc: -1, switched: false, chroot: false });
    }
    super::mount(None, c"/", None, libc::MS_REC | libc::MS_PRIVATE, None)
        .map_err(at(Step::MountPropagation))?;
    let proc = match (&fs.lock_maps, pid_ns) {
        (None, _) => -1,
        (Some(_), false) => {
            super::open(c"/proc/self", libc::O_PATH | libc::O_DIRECTORY).map_err(at(Step::LockMounts))?
        }
        (Some(_), true) => {
            new_fs(c"proc", &[], attr::NOSUID | attr::NODEV | attr::NOEXEC).map_err(at(Step::LockMounts))?
        }
    };
    let root = attach_root(&fs.root, sources).map_err(at(Step::Root))?;
    let staging = if fs.staging {
        new_fs(c"tmpfs", &[(c"mode", Some(c"700"))], 0).map_err(at(Step::Root))?
    } else {
        -1
    };
    for (i, op) in fs.ops.iter().enumerate() {
        apply(root, staging, op, fs.may_create, sources).map_err(at_index(Step::Mount, i))?;
    }
    if staging >= 0 {
        close(staging);
    }
    if fs.root_readonly {
        set_attrs(root, attr::RDONLY, false).map_err(at(Step::Root))?;
    }
    let switched = !matches!(fs.root, RootOp::Host);
    if switched {
        fchdir(root).map_err(at(Step::PivotRoot))?;
        if !fs.chroot {
            // Stacked on the old root: "." is the new root, the old one sits beneath it.
            pivot_root(c".", c".").map_err(at(Step::PivotRoot))?;
            umount2(c".", libc::MNT_DETACH).map_err(at(Step::PivotRoot))?;
        }
    }
    close(root);
    Ok(Built { proc, switched, chroot: fs.chroot })
}

/// Makes the new root and attaches it on top of `/`; returns a descriptor of it.
fn attach_root(root: &RootOp, sources: &mut Sources<'_>) -> SysResult<RawFd> {
    let mnt = match root {
        RootOp::Host => return super::open(c"/", libc::O_PATH | libc::O_DIRECTORY),
        RootOp::Tmpfs { options } => {
            let fs = fsopen(c"tmpfs")?;
            for (key, value) in options {
                fsconfig(fs, key, value.as_deref())?;
            }
            finish_fs(fs, attr::NOSUID | attr::NODEV)?
        }
        RootOp::Bind { writable, .. } => {
            let m = host_tree(sources.take()?, true)?;
            let ro = if *writable { 0 } else { attr::RDONLY };
            set_attrs(m, ro | attr::NODEV, true)?;
            m
        }
        RootOp::HostReadonly => {
            let m = open_tree(libc::AT_FDCWD, c"/", true)?;
            set_attrs(m, attr::RDONLY | attr::NODEV, true)?;
            m
        }
        RootOp::Overlay { lowers, upper, tmpfs_size, userxattr, legacy } => {
            let fs = fsopen(c"overlay")?;
            if *userxattr {
                fsconfig(fs, c"userxattr", None)?;
            }
            // With `legacy`: the layers' descriptors, open until the overlay is created.
            let mut held = [-1 as RawFd; LEGACY_MAX_LOWERS];
            if *legacy {
                legacy_lowerdir(fs, lowers.len(), sources, &mut held)?;
            } else {
                for _ in lowers {
                    fsconfig_host_dir(fs, c"lowerdir+", sources.take()?)?;
                }
            }
            let scratch = match upper {
                Some(_) => {
                    fsconfig_host_dir(fs, c"upperdir", sources.take()?)?;
                    fsconfig_host_dir(fs, c"workdir", sources.take()?)?;
                    -1
                }
                None => {
                    // A detached tmpfs holds the throw-away upper and work directories; overlayfs
                    // is given them as /proc/self/fd/N/... paths.
                    let t = match tmpfs_size {
                        Some(size) => new_fs(c"tmpfs", &[(c"mode", Some(c"755")), (c"size", Some(size))], 0)?,
                        None => new_fs(c"tmpfs", &[(c"mode", Some(c"755"))], 0)?,
                    };
                    for dir in [c"upper", c"work"] {
                        mkdirat(t, dir, 0o755)?;
                    }
                    // Overlayfs takes a private clone of the upper layer's mount, which kernels
                    // before 6.15 make only of a mount attached to this namespace: stacked on
                    // `/` (beneath where the new root goes) until the overlay exists.
                    move_mount(t, libc::AT_FDCWD, c"/", MOVE_MOUNT_F_EMPTY_PATH)?;
                    let mut buf = [0u8; 64];
                    fsconfig(fs, c"upperdir", Some(fd_path(&mut buf, t, b"upper")?))?;
                    fsconfig(fs, c"workdir", Some(fd_path(&mut buf, t, b"work")?))?;
                    t
                }
            };
            let m = finish_fs(fs, attr::NODEV);
            if *legacy {
                for &fd in held.iter().filter(|&&fd| fd >= 0) {
                    close(fd);
                }
                super::chdir(c"/")?;
            }
            // Unstacked whether or not the overlay was made: never left beneath the new root.
            let unstacked = if scratch >= 0 { unstack(scratch) } else { Ok(()) };
            if scratch >= 0 {
                close(scratch);
            }
            let m = m?;
            if let Err(e) = unstacked {
                close(m);
                return Err(e);
            }
            m
        }
    };
    move_mount(mnt, libc::AT_FDCWD, c"/", MOVE_MOUNT_F_EMPTY_PATH)?;
    Ok(mnt)
}

/// Writes `contents` to a new file `name` in the staging tmpfs.
fn stage_file(staging: RawFd, name: &CStr, contents: &[u8], mode: libc::mode_t) -> SysResult<()> {
    let f = openat(staging, name, libc::O_CREAT | libc::O_EXCL | libc::O_WRONLY | libc::O_NOFOLLOW, mode)?;
    let written = super::write_all(f, contents);
    close(f);
    written
}

/// A mount of a file `name` holding `contents`, for kernels before 6.15, which clone only
/// mounts attached to this namespace (fsmount leaves the staging tmpfs detached): a tmpfs of
/// its own is stacked on the new root for the moment of the clone, then unmounted again (a
/// failure there fails the spawn: the payload never sees it as its root).
fn clone_from_stacked(root: RawFd, name: &CStr, contents: &[u8], mode: libc::mode_t) -> SysResult<RawFd> {
    let t = new_fs(c"tmpfs", &[(c"mode", Some(c"700"))], 0)?;
    let cloned = stage_file(t, name, contents, mode)
        .and_then(|()| move_mount(t, root, c"", MOVE_MOUNT_F_EMPTY_PATH | MOVE_MOUNT_T_EMPTY_PATH))
        .and_then(|()| {
            let m = open_tree_raw(t, name, OPEN_TREE_CLONE | OPEN_TREE_CLOEXEC);
            match (m, unstack(t)) {
                (Ok(m), Ok(())) => Ok(m),
                (Ok(m), Err(e)) => {
                    close(m);
                    Err(e)
                }
                (Err(e), _) => Err(e),
            }
        });
    close(t);
    cloned
}

/// Unmounts the mount `m` (stacked somewhere by `move_mount`) through the working directory,
/// so that no path to it is needed, and returns to the working directory of before.
fn unstack(m: RawFd) -> SysResult<()> {
    let cwd = super::open(c".", libc::O_PATH | libc::O_DIRECTORY)?;
    let done = fchdir(m).and_then(|()| umount2(c".", libc::MNT_DETACH));
    let back = fchdir(cwd);
    close(cwd);
    done.and(back)
}

fn apply(
    root: RawFd,
    staging: RawFd,
    op: &FsOp,
    may_create: bool,
    sources: &mut Sources<'_>,
) -> SysResult<()> {
    // On the host's own root nothing is created: a missing target is an error.
    let creating = |c: Create| if may_create { c } else { Create::Nothing };
    match op {
        FsOp::Bind { recursive, attrs, create, target, .. } => {
            let m = host_tree(sources.take()?, *recursive)?;
            set_attrs(m, *attrs, *recursive)?;
            attach(m, root, target, creating(*create))
        }
        FsOp::NewFs { fstype, options, attrs, target } => {
            let fs = fsopen(fstype)?;
            for (key, value) in options {
                fsconfig(fs, key, value.as_deref())?;
            }
            let m = finish_fs(fs, *attrs)?;
            attach(m, root, target, creating(Create::Dir))
        }
        FsOp::DevNode { source, rdev, target } => {
            let m = clone_device(source, *rdev)?;
            // Read-only: writing to a device needs no writable mount, but changing the node (the
            // host's own, bound here) does: a payload that owns it cannot chmod it.
            set_attrs(m, attr::RDONLY | attr::NOSUID | attr::NOEXEC, false)?;
            attach(m, root, target, creating(Create::File))
        }
        FsOp::File { name, contents, mode, attrs, target } => {
            stage_file(staging, name, contents, *mode)?;
            let m = match open_tree_raw(staging, name, OPEN_TREE_CLONE | OPEN_TREE_CLOEXEC) {
                Err(Errno(libc::EINVAL)) => clone_from_stacked(root, name, contents, *mode)?,
                other => other?,
            };
            set_attrs(m, *attrs, false)?;
            attach(m, root, target, creating(Create::File))
        }
        FsOp::Dir { mode, target } => {
            let fd = resolve(root, target, &target.levels, Create::Dir, *mode)?;
            close(fd);
            Ok(())
        }
        FsOp::Symlink { link, target } => {
            let Some(((_, name), parents)) = target.levels.split_last() else {
                return Err(Errno(libc::EINVAL));
            };
            let parent =
                if parents.is_empty() { root } else { resolve(root, target, parents, Create::Dir, 0o755)? };
            let made = match symlinkat(link, parent, name) {
                // Already there from an earlier run in the same caller root: fine if identical.
                Err(Errno(libc::EEXIST)) if same_link(parent, name, link) => Ok(()),
                other => other,
            };
            if parent != root {
                close(parent);
            }
            made
        }
        FsOp::Mask { target } => {
            let Some(t) = lookup(root, target)? else { return Ok(()) };
            let m = match fstat(t).map(|st| st.st_mode & libc::S_IFMT) {
                Ok(libc::S_IFDIR) => {
                    new_fs(c"tmpfs", &[(c"mode", Some(c"555")), (c"nr_inodes", Some(c"2"))], 0)
                }
                Ok(_) => clone_device(c"/dev/null", (1, 3)),
                Err(e) => Err(e),
            };
            let m = m.inspect_err(|_| close(t))?;
            let done = set_attrs(m, attr::RDONLY | attr::NOSUID | attr::NODEV | attr::NOEXEC, false)
                .and_then(|()| move_mount(m, t, c"", MOVE_MOUNT_F_EMPTY_PATH | MOVE_MOUNT_T_EMPTY_PATH));
            close(m);
            close(t);
            done
        }
        FsOp::ReadOnly { target } => {
            let Some(t) = lookup(root, target)? else { return Ok(()) };
            let done = open_tree(t, c"", true).and_then(|m| {
                let r = set_attrs(m, attr::RDONLY, true)
                    .and_then(|()| move_mount(m, t, c"", MOVE_MOUNT_F_EMPTY_PATH | MOVE_MOUNT_T_EMPTY_PATH));
                close(m);
                r
            });
            close(t);
            done
        }
        FsOp::SetAttrs { attrs, target } => {
            let Some(t) = lookup(root, target)? else { return Ok(()) };
            let done = set_attrs(t, *attrs, false);
            close(t);
            done
        }
        FsOp::Overlay { layers, upper, userxattr, legacy, attrs, target } => {
            let m = overlay_mount(layers.len(), *upper, *userxattr, *legacy, *attrs, sources)?;
            attach(m, root, target, creating(Create::Dir))
        }
    }
}

/// A detached overlayfs of the next `count` sources: the lowers top first, then (with `upper`)
/// the upper and work directories, each given to overlayfs through its opened handle.
fn overlay_mount(
    count: usize,
    upper: bool,
    userxattr: bool,
    legacy: bool,
    attrs: u64,
    sources: &mut Sources<'_>,
) -> SysResult<RawFd> {
    let lowers = count - if upper { 2 } else { 0 };
    let fs = fsopen(c"overlay")?;
    // With `legacy`: the layers' descriptors, open until the overlay is created.
    let mut held = [-1 as RawFd; LEGACY_MAX_LOWERS];
    let configured = (|| {
        if userxattr {
            fsconfig(fs, c"userxattr", None)?;
        }
        if legacy {
            legacy_lowerdir(fs, lowers, &mut *sources, &mut held)?;
        } else {
            for _ in 0..lowers {
                fsconfig_host_dir(fs, c"lowerdir+", sources.take()?)?;
            }
        }
        if upper {
            fsconfig_host_dir(fs, c"upperdir", sources.take()?)?;
            fsconfig_host_dir(fs, c"workdir", sources.take()?)?;
        }
        Ok(())
    })();
    // finish_fs closes the context; so does a failure before it.
    let m = match configured {
        Ok(()) => finish_fs(fs, attrs),
        Err(e) => {
            close(fs);
            Err(e)
        }
    };
    if legacy {
        for &fd in held.iter().filter(|&&fd| fd >= 0) {
            close(fd);
        }
        // Back from /proc/self/fd (see `legacy_lowerdir`).
        if let Err(e) = super::chdir(c"/") {
            if let Ok(m) = m {
                close(m);
            }
            return Err(e);
        }
    }
    m
}

/// Attaches the detached mount `m` at `target` (created as `create` if missing; with
/// `Create::Nothing` a missing target is ENOENT), closing `m`.
fn attach(m: RawFd, root: RawFd, target: &Target, create: Create) -> SysResult<()> {
    let resolved = match create {
        Create::Nothing => lookup(root, target).and_then(|t| t.ok_or(Errno(libc::ENOENT))),
        _ => {
            resolve(root, target, &target.levels, create, if create == Create::File { 0o644 } else { 0o755 })
        }
    };
    let done = resolved.and_then(|t| {
        let r = move_mount(m, t, c"", MOVE_MOUNT_F_EMPTY_PATH | MOVE_MOUNT_T_EMPTY_PATH);
        close(t);
        r
    });
    close(m);
    done
}

/// How a target is resolved: inside the root, never through magic links, and for stockade's
/// own targets through no symlink at all.
fn resolution(target: &Target) -> u64 {
    RESOLVE_IN_ROOT | RESOLVE_NO_MAGICLINKS | if target.no_symlinks { RESOLVE_NO_SYMLINKS } else { 0 }
}

/// Opens an existing target inside the root; `None` if it does not exist.
fn lookup(root: RawFd, target: &Target) -> SysResult<Option<RawFd>> {
    match openat2(root, &target.full, libc::O_PATH, resolution(target)) {
        Ok(fd) => Ok(Some(fd)),
        Err(Errno(libc::ENOENT)) => Ok(None),
        Err(e) => Err(e),
    }
}

/// Resolves `levels` (a target's path, component by component) inside `root`, creating missing
/// components: directories, and for `Create::File` an empty file as the last one; the last
/// component gets `mode`. Every lookup is confined to the root (`RESOLVE_IN_ROOT`): `..` and
/// absolute symlinks cannot leave it. Returns an `O_PATH` descriptor of the target.
fn resolve(
    root: RawFd,
    target: &Target,
    levels: &[(std::ffi::CString, std::ffi::CString)],
    create: Create,
    mode: u32,
) -> SysResult<RawFd> {
    let how = resolution(target);
    if let Some((full, _)) = levels.last() {
        match openat2(root, full, libc::O_PATH, how) {
            Err(Errno(libc::ENOENT)) if create != Create::Nothing => {}
            other => return other,
        }
    }
    let mut parent = root;
    for (i, (prefix, name)) in levels.iter().enumerate() {
        let last = i + 1 == levels.len();
        let fd = match openat2(root, prefix, libc::O_PATH, how) {
            Err(Errno(libc::ENOENT)) => {
                let made = if last && create == Create::File {
                    openat(
                        parent,
                        name,
                        libc::O_CREAT | libc::O_EXCL | libc::O_WRONLY | libc::O_NOFOLLOW,
                        mode,
                    )
                    .map(close)
                } else {
                    mkdirat(parent, name, if last { mode } else { 0o755 })
                };
                match made {
                    // A dangling symlink is "existing": the lookup below then fails, rather than
                    // anything being created through the link.
                    Ok(()) | Err(Errno(libc::EEXIST)) => openat2(root, prefix, libc::O_PATH, how),
                    Err(e) => Err(e),
                }
            }
            other => other,
        };
        if parent != root {
            close(parent);
        }
        parent = fd?;
    }
    Ok(parent)
}

/// Creates directory `target` of the current root, and its missing parents (mode 0755), unless
/// it exists; resolved like a mount target, inside the root.
pub(super) fn create_dir(target: &Target) -> SysResult<()> {
    if target.levels.is_empty() {
        return Ok(());
    }
    let root = super::open(c"/", libc::O_PATH | libc::O_DIRECTORY)?;
    // Exactly 0755 whatever the embedding program's umask (runc forces 022 likewise).
    let made = with_exact_modes(|| resolve(root, target, &target.levels, Create::Dir, 0o755).map(close));
    close(root);
    made
}

/// Whether `name` in `dir` is a symlink to exactly `link`.
fn same_link(dir: RawFd, name: &CStr, link: &CStr) -> bool {
    let mut buf = [0u8; 4096];
    // SAFETY: `buf` is writable for its length; `name` is NUL-terminated.
    let n = unsafe { raw!(libc::SYS_readlinkat, dir, name.as_ptr(), buf.as_mut_ptr(), buf.len()) };
    matches!(n, Ok(n) if buf.get(..n as usize) == Some(link.to_bytes()))
}

/// A detached copy of the mount tree at an opened host path `fd` (see [`open_sources`]: opened
/// once without following any symlink, so one planted by an untrusted party, e.g. an earlier
/// sandbox given a writable bind of a shared directory, cannot redirect it); closes `fd`.
fn host_tree(fd: RawFd, recursive: bool) -> SysResult<RawFd> {
    let m = open_tree(fd, c"", recursive);
    close(fd);
    m
}

/// Gives overlayfs the opened host directory `fd` as option `key`, named through that handle
/// (`/proc/self/fd/N`), not by its path; closes `fd`.
fn fsconfig_host_dir(fs: RawFd, key: &CStr, fd: RawFd) -> SysResult<()> {
    let mut buf = [0u8; 64];
    let done = fd_path(&mut buf, fd, b"").and_then(|path| fsconfig(fs, key, Some(path)));
    close(fd);
    done
}

/// Gives overlay context `fs` its `count` lower layers (the next `count` sources, top first)
/// in one `lowerdir=` option, for kernels before 6.8 (no `lowerdir+`): each named by its
/// descriptor number, relative to `/proc/self/fd`, which becomes the working directory until
/// the overlay is created (where kernels before 6.5 resolve the paths). The descriptors are
/// kept in `held` until then.
fn legacy_lowerdir(
    fs: RawFd,
    count: usize,
    sources: &mut Sources<'_>,
    held: &mut [RawFd; LEGACY_MAX_LOWERS],
) -> SysResult<()> {
    let mut list = [0u8; 256];
    let mut len = 0;
    for i in 0..count {
        let fd = sources.take()?;
        let slot = held.get_mut(i).ok_or(Errno(libc::E2BIG))?;
        *slot = fd;
        let mut num = [0u8; 16];
        let digits = decimal(&mut num, fd as u32).to_bytes();
        let sep: &[u8] = if i == 0 { b"" } else { b":" };
        for &b in sep.iter().chain(digits) {
            // One byte stays for the NUL.
            let at = list.get_mut(len).filter(|_| len + 1 < 256).ok_or(Errno(libc::ENAMETOOLONG))?;
            *at = b;
            len += 1;
        }
    }
    super::chdir(c"/proc/self/fd")?;
    let value =
        list.get(..=len).and_then(|b| CStr::from_bytes_until_nul(b).ok()).ok_or(Errno(libc::EINVAL))?;
    fsconfig(fs, c"lowerdir", Some(value))
}

/// Parent side of [`super::reopen_read_only`].
pub(super) fn reopen_read_only(fd: RawFd, flags: libc::c_int) -> SysResult<RawFd> {
    let m = open_tree(fd, c"", false)?;
    let done = set_attrs(m, attr::RDONLY | attr::NOSUID, false).and_then(|()| {
        let mut buf = [0u8; 64];
        let pinned = super::open(fd_path(&mut buf, m, b"")?, flags)?;
        // Only now nodev: our own descriptor of a device is open; any later open of it through
        // this mount (a reopen through /proc/self/fd) is refused, in any mode. (A read-only mount
        // alone does not stop writes to a device, only its chmod.)
        set_attrs(m, attr::NODEV, false).inspect_err(|_| close(pinned)).map(|()| pinned)
    });
    close(m);
    done
}

/// Parent side of [`super::null_device`]: an `O_PATH` descriptor of `/dev/null` on a
/// read-only, nosuid clone of its mount. The clone's own descriptor is closed once this one
/// exists, which dissolves it: a mount that is no longer mounted belongs to no namespace and no
/// peer group, and mount_setattr, move_mount and open_tree all refuse it, whoever asks (a
/// payload with `CAP_SYS_ADMIN` in a namespace of its own included), while opens through the
/// descriptor still work.
pub(super) fn null_device() -> SysResult<RawFd> {
    let m = clone_device(c"/dev/null", (1, 3))?;
    let pinned = set_attrs(m, attr::RDONLY | attr::NOSUID, false).and_then(|()| {
        let mut buf = [0u8; 64];
        super::open(fd_path(&mut buf, m, b"")?, libc::O_PATH)
    });
    close(m);
    pinned
}

/// Parent side of [`super::open_null`].
pub(super) fn open_null(pinned: RawFd) -> SysResult<RawFd> {
    let mut buf = [0u8; 64];
    super::open(fd_path(&mut buf, pinned, b"")?, libc::O_RDWR | libc::O_NOCTTY)
}

/// Opens host device `path`, checks it is character device `rdev`, and clones a mount of it.
fn clone_device(path: &CStr, (major, minor): (u32, u32)) -> SysResult<RawFd> {
    let fd = open_host(path, libc::O_PATH)?;
    let ok = fstat(fd).map(|st| {
        st.st_mode & libc::S_IFMT == libc::S_IFCHR
            && libc::major(st.st_rdev) == major
            && libc::minor(st.st_rdev) == minor
    });
    let m = match ok {
        Ok(true) => open_tree(fd, c"", false),
        Ok(false) => Err(Errno(libc::ENODEV)),
        Err(e) => Err(e),
    };
    close(fd);
    m
}

/// The two pipes between the process that enters the nested user and mount namespace (the
/// mover) and the process that writes its maps (the writer).
///
/// Entering a nested user namespace with a copy of the mount namespace makes the kernel lock
/// every copied mount and its flags: root in the new namespace can neither unmount, remount nor
/// change them. But the kernel accepts the new namespace's maps only from a process in it or in
/// its parent namespace with privileges there, so a process that stays behind writes them: the
/// init (with a pid namespace) or a short-lived helper.
pub(super) struct LockSync {
    moved: (RawFd, RawFd),
    result: (RawFd, RawFd),
}

pub(super) fn lock_sync() -> Result<LockSync, Failure> {
    let moved = super::pipe().map_err(at(Step::LockMounts))?;
    let result = super::pipe().map_err(at(Step::LockMounts))?;
    Ok(LockSync { moved, result })
}

/// Writer side: waits until the mover has moved, writes `maps` into its proc directory `dir`,
/// and reports the outcome (0 or an errno) to it.
pub(super) fn write_side(sync: &LockSync, dir: SysResult<RawFd>, maps: (&[u8], &[u8])) {
    close(sync.moved.1);
    close(sync.result.0);
    let mut byte = [0u8; 1];
    let code = match (super::read(sync.moved.0, &mut byte), dir) {
        (Ok(1), Ok(dir)) => write_maps(dir, maps).map_or_else(|e| e.0.clamp(1, 255) as u8, |()| 0),
        (Ok(1), Err(e)) => e.0.clamp(1, 255) as u8,
        _ => libc::ECANCELED as u8,
    };
    let _ = super::write_all(sync.result.1, &[code]);
    close(sync.moved.0);
    close(sync.result.1);
}

/// Mover side: enters the nested namespaces, tells the writer, waits for its result.
fn move_side(sync: &LockSync) -> SysResult<()> {
    close(sync.moved.0);
    close(sync.result.1);
    let moved = super::unshare(libc::CLONE_NEWUSER | libc::CLONE_NEWNS)
        .and_then(|()| super::write_all(sync.moved.1, b"x"));
    // On failure the writer sees end of file and stops.
    close(sync.moved.1);
    if let Err(e) = moved {
        close(sync.result.0);
        return Err(e);
    }
    let mut byte = [0u8; 1];
    let n = super::read(sync.result.0, &mut byte);
    close(sync.result.0);
    match (n, byte[0]) {
        (Ok(1), 0) => Ok(()),
        (Ok(1), errno) => Err(Errno(errno as i32)),
        _ => Err(Errno(libc::ECHILD)),
    }
}

/// Opens `<pid>` in the proc instance `proc` (the init's view of the payload).
pub(super) fn pid_dir(proc: RawFd, pid: libc::pid_t) -> SysResult<RawFd> {
    let mut buf = [0u8; 16];
    openat(proc, decimal(&mut buf, pid as u32), libc::O_PATH | libc::O_DIRECTORY, 0)
}

fn write_maps(dir: RawFd, (uid_map, gid_map): (&[u8], &[u8])) -> SysResult<()> {
    super::write_file_at(dir, c"uid_map", uid_map)?;
    super::write_file_at(dir, c"gid_map", gid_map)
}

/// Writes `n` in decimal, NUL-terminated, into `buf` (no allocation).
fn decimal(buf: &mut [u8; 16], mut n: u32) -> &CStr {
    let mut digits = [0u8; 10];
    let mut len = 0;
    loop {
        digits[len] = b'0' + (n % 10) as u8;
        len += 1;
        n /= 10;
        if n == 0 || len == digits.len() {
            break;
        }
    }
    for (i, d) in digits[..len].iter().rev().enumerate() {
        buf[i] = *d;
    }
    buf[len] = 0;
    CStr::from_bytes_until_nul(&buf[..=len]).unwrap_or(c"0")
}

/// Writes `/proc/self/fd/<fd>/<suffix>` (or `/proc/self/fd/<fd>` for an empty suffix) into
/// `buf` (no allocation).
fn fd_path<'a>(buf: &'a mut [u8; 64], fd: RawFd, suffix: &[u8]) -> SysResult<&'a CStr> {
    let mut num = [0u8; 16];
    let digits = decimal(&mut num, fd as u32).to_bytes();
    let slash: &[u8] = if suffix.is_empty() { b"" } else { b"/" };
    let parts: [&[u8]; 5] = [b"/proc/self/fd/", digits, slash, suffix, b"\0"];
    if parts.iter().map(|p| p.len()).sum::<usize>() > buf.len() {
        return Err(Errno(libc::ENAMETOOLONG));
    }
    let mut at = 0;
    for &b in parts.iter().flat_map(|p| p.iter()) {
        buf[at] = b;
        at += 1;
    }
    CStr::from_bytes_until_nul(&buf[..at]).map_err(|_| Errno(libc::EINVAL))
}

// ---- thin wrappers of the mount API --------------------------------------------------------

fn fsopen(fstype: &CStr) -> SysResult<RawFd> {
    // SAFETY: `fstype` is NUL-terminated; flags are integers.
    fd_of(unsafe { raw!(libc::SYS_fsopen, fstype.as_ptr(), FSOPEN_CLOEXEC) })
}

/// Sets a string option (`Some`) or a flag option (`None`) on a filesystem context.
fn fsconfig(fs: RawFd, key: &CStr, value: Option<&CStr>) -> SysResult<()> {
    let (cmd, value) = match value {
        Some(v) => (FSCONFIG_SET_STRING, v.as_ptr()),
        None => (FSCONFIG_SET_FLAG, std::ptr::null()),
    };
    // SAFETY: key and value are NUL-terminated or null as the command requires.
    (unsafe { raw!(libc::SYS_fsconfig, fs, cmd, key.as_ptr(), value, 0) }).map(drop)
}

/// Creates the filesystem of context `fs` and mounts it detached with `attrs`; closes `fs`.
fn finish_fs(fs: RawFd, attrs: u64) -> SysResult<RawFd> {
    // SAFETY: CMD_CREATE takes no key or value.
    let created = unsafe {
        raw!(libc::SYS_fsconfig, fs, FSCONFIG_CMD_CREATE, std::ptr::null::<u8>(), std::ptr::null::<u8>(), 0,)
    };
    // SAFETY: integer arguments.
    let m =
        created.and_then(|_| fd_of(unsafe { raw!(libc::SYS_fsmount, fs, FSMOUNT_CLOEXEC, attrs as u32) }));
    close(fs);
    m
}

fn new_fs(fstype: &CStr, options: &[(&CStr, Option<&CStr>)], attrs: u64) -> SysResult<RawFd> {
    let fs = fsopen(fstype)?;
    for (key, value) in options {
        if let Err(e) = fsconfig(fs, key, *value) {
            close(fs);
            return Err(e);
        }
    }
    finish_fs(fs, attrs)
}

fn open_tree_raw(dirfd: RawFd, path: &CStr, flags: u32) -> SysResult<RawFd> {
    // SAFETY: `path` is NUL-terminated; flags are integers.
    fd_of(unsafe { raw!(libc::SYS_open_tree, dirfd, path.as_ptr(), flags) })
}

/// A detached copy of the mount tree at `path` (relative to `dirfd`; empty path: `dirfd`
/// itself).
fn open_tree(dirfd: RawFd, path: &CStr, recursive: bool) -> SysResult<RawFd> {
    let mut flags = OPEN_TREE_CLONE | OPEN_TREE_CLOEXEC;
    if recursive {
        flags |= AT_RECURSIVE;
    }
    if path.is_empty() {
        flags |= AT_EMPTY_PATH;
    }
    open_tree_raw(dirfd, path, flags)
}

fn move_mount(from: RawFd, to_dir: RawFd, to_path: &CStr, flags: u32) -> SysResult<()> {
    // SAFETY: both paths are NUL-terminated (the source path is empty: F_EMPTY_PATH).
    (unsafe { raw!(libc::SYS_move_mount, from, c"".as_ptr(), to_dir, to_path.as_ptr(), flags) }).map(drop)
}

/// `struct mount_attr` of `mount_setattr(2)`.
#[repr(C)]
struct MountAttr {
    attr_set: u64,
    attr_clr: u64,
    propagation: u64,
    userns_fd: u64,
}

/// Sets `attrs` on the mount `fd` refers to (and its submounts with `recursive`).
fn set_attrs(fd: RawFd, attrs: u64, recursive: bool) -> SysResult<()> {
    if attrs == 0 {
        return Ok(());
    }
    let a = MountAttr { attr_set: attrs, attr_clr: 0, propagation: 0, userns_fd: 0 };
    let flags = AT_EMPTY_PATH | if recursive { AT_RECURSIVE } else { 0 };
    // SAFETY: `a` is a valid mount_attr of the size passed; the path is empty.
    (unsafe {
        raw!(
            libc::SYS_mount_setattr,
            fd,
            c"".as_ptr(),
            flags,
            &a as *const MountAttr,
            std::mem::size_of::<MountAttr>(),
        )
    })
    .map(drop)
}

fn openat(dirfd: RawFd, path: &CStr, flags: libc::c_int, mode: u32) -> SysResult<RawFd> {
    // SAFETY: `path` is NUL-terminated.
    fd_of(retry(|| unsafe { raw!(libc::SYS_openat, dirfd, path.as_ptr(), flags | libc::O_CLOEXEC, mode) }))
}

fn mkdirat(dirfd: RawFd, name: &CStr, mode: u32) -> SysResult<()> {
    // SAFETY: `name` is NUL-terminated.
    unsafe { raw!(libc::SYS_mkdirat, dirfd, name.as_ptr(), mode) }.map(drop)
}

fn symlinkat(link: &CStr, dirfd: RawFd, name: &CStr) -> SysResult<()> {
    // SAFETY: both strings are NUL-terminated.
    unsafe { raw!(libc::SYS_symlinkat, link.as_ptr(), dirfd, name.as_ptr()) }.map(drop)
}

fn fstat(fd: RawFd) -> SysResult<libc::stat> {
    // SAFETY: stat is plain data; fstat fills it.
    let mut st: libc::stat = unsafe { std::mem::zeroed() };
    // SAFETY: `st` is valid and writable.
    unsafe { raw!(libc::SYS_fstat, fd, &mut st as *mut libc::stat) }.map(|_| st)
}

pub(super) fn fchdir(fd: RawFd) -> SysResult<()> {
    // SAFETY: integer argument.
    unsafe { raw!(libc::SYS_fchdir, fd) }.map(drop)
}

fn pivot_root(new_root: &CStr, put_old: &CStr) -> SysResult<()> {
    // SAFETY: both paths are NUL-terminated.
    (unsafe { raw!(libc::SYS_pivot_root, new_root.as_ptr(), put_old.as_ptr()) }).map(drop)
}

fn umount2(path: &CStr, flags: libc::c_int) -> SysResult<()> {
    // SAFETY: `path` is NUL-terminated.
    unsafe { raw!(libc::SYS_umount2, path.as_ptr(), flags) }.map(drop)
}

pub(super) fn chroot(path: &CStr) -> SysResult<()> {
    // SAFETY: `path` is NUL-terminated.
    unsafe { raw!(libc::SYS_chroot, path.as_ptr()) }.map(drop)
}
