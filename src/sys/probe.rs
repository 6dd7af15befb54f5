//! The system calls behind [`crate::probe`]: each asks the kernel once whether a call exists
//! (and is not refused by a filter around this process), without changing anything.

use std::ffi::c_void;
use std::os::fd::RawFd;

use super::clone::{Stack, clone_with_pidfd, flags};
use super::{Errno, SysResult};

/// `clone3(NULL, 0)`: EINVAL where the call exists (the size is checked first), ENOSYS or a
/// filter's errno where it does not.
pub(crate) fn clone3() -> SysResult<()> {
    // SAFETY: a null argument of size 0 is rejected before anything is read.
    match unsafe { raw!(libc::SYS_clone3, 0usize, 0usize) } {
        Err(Errno(libc::EINVAL)) => Ok(()),
        Err(e) => Err(e),
        Ok(_) => Err(Errno(libc::EINVAL)),
    }
}

/// `pidfd_open(getpid(), 0)`, closed again.
pub(crate) fn pidfd_open() -> SysResult<()> {
    // SAFETY: integer arguments.
    let fd = unsafe { raw!(libc::SYS_pidfd_open, libc::getpid(), 0) }?;
    super::close(fd as RawFd);
    Ok(())
}

/// `openat2(AT_FDCWD, "/", O_PATH, RESOLVE_NO_SYMLINKS)`, closed again.
pub(crate) fn openat2() -> SysResult<()> {
    let fd = super::openat2(libc::AT_FDCWD, c"/", libc::O_PATH, super::RESOLVE_NO_SYMLINKS)?;
    super::close(fd);
    Ok(())
}

/// `open_tree(AT_FDCWD, "/", OPEN_TREE_CLOEXEC)` (no clone: needs no privilege), closed again;
/// and `mount_setattr` (Linux 5.12), the newest call of the mount API stockade uses, asked
/// with an empty attribute set on a bad descriptor.
pub(crate) fn mount_api() -> SysResult<()> {
    const OPEN_TREE_CLOEXEC: u32 = libc::O_CLOEXEC as u32;
    // SAFETY: a NUL-terminated path and integer flags.
    let fd = unsafe { raw!(libc::SYS_open_tree, libc::AT_FDCWD, c"/".as_ptr(), OPEN_TREE_CLOEXEC) }?;
    super::close(fd as RawFd);
    // SAFETY: a null attribute pointer of size 0 on descriptor -1: rejected without reading.
    match unsafe { raw!(libc::SYS_mount_setattr, -1i32, c"".as_ptr(), libc::AT_EMPTY_PATH, 0usize, 0usize) } {
        Err(Errno(libc::ENOSYS)) => Err(Errno(libc::ENOSYS)),
        Err(Errno(libc::EPERM)) => Err(Errno(libc::EPERM)),
        _ => Ok(()),
    }
}

/// Whether overlayfs takes `lowerdir+` (Linux 6.8): a new overlay context is given `/` as a
/// lower layer and dropped unmounted. `EPERM` when this process may not create one (it needs
/// `CAP_SYS_ADMIN`); `EINVAL` when the option is unknown, or when an unknown option is taken
/// too (before 6.5 overlayfs checked its options only when mounting).
pub(crate) fn overlay_lowerdir_plus() -> SysResult<()> {
    const FSCONFIG_SET_STRING: u32 = 1;
    const FSOPEN_CLOEXEC: u32 = 1;
    // SAFETY: a NUL-terminated name and integer flags.
    let fs = unsafe { raw!(libc::SYS_fsopen, c"overlay".as_ptr(), FSOPEN_CLOEXEC) }? as RawFd;
    // SAFETY: NUL-terminated key and value.
    let set =
        unsafe { raw!(libc::SYS_fsconfig, fs, FSCONFIG_SET_STRING, c"lowerdir+".as_ptr(), c"/".as_ptr(), 0) };
    // Before 6.5 overlayfs parsed its options only at mount time: fsconfig took any key then.
    // SAFETY: as above.
    let bogus = unsafe {
        raw!(
            libc::SYS_fsconfig,
            fs,
            FSCONFIG_SET_STRING,
            c"stockade-no-such-option".as_ptr(),
            c"/".as_ptr(),
            0
        )
    };
    super::close(fs);
    match (set, bogus) {
        (Ok(_), Ok(_)) => Err(Errno(libc::EINVAL)),
        (set, _) => set.map(drop),
    }
}

/// Whether this process's root directory is the root of a mount (`pivot_root` needs it; a
/// process in a plain chroot has none). `statx` with `STATX_ATTR_MOUNT_ROOT` (Linux 5.8).
pub(crate) fn root_is_mount_root() -> SysResult<bool> {
    const STATX_ATTR_MOUNT_ROOT: u64 = 0x2000;
    // SAFETY: statx is plain data; all-zero is valid.
    let mut stx: libc::statx = unsafe { std::mem::zeroed() };
    // SAFETY: a NUL-terminated path and a writable statx buffer.
    unsafe { raw!(libc::SYS_statx, libc::AT_FDCWD, c"/".as_ptr(), 0, 0u32, &mut stx as *mut libc::statx) }?;
    if stx.stx_attributes_mask & STATX_ATTR_MOUNT_ROOT == 0 {
        return Err(Errno(libc::ENOSYS));
    }
    Ok(stx.stx_attributes & STATX_ATTR_MOUNT_ROOT != 0)
}

/// What went wrong in a user namespace trial, as the child's exit code says it: the step
/// (1: the uid map, 2: `setgroups`, 3: the gid map, 4: a mount namespace inside) and errno.
pub(crate) struct UserNsFailure {
    pub(crate) step: u8,
    pub(crate) errno: i32,
}

/// Makes a child in a new user namespace, as a sandbox would, which maps this process's ids,
/// then makes a mount namespace in it (which needs the capabilities the namespace gave it: an
/// AppArmor restriction of unprivileged user namespaces takes those away). `Err` from the
/// clone itself; `Ok(Some)` when a step inside failed.
pub(crate) fn user_namespace() -> Result<Option<UserNsFailure>, Errno> {
    let stack = Stack::new().map_err(|e| Errno(e.raw_os_error().unwrap_or(libc::ENOMEM)))?;
    // SAFETY: plain integer getters.
    let ids = unsafe { [libc::geteuid(), libc::getegid()] };
    // SAFETY: `trial` makes raw calls only (no allocation, no lock) and exits; `ids` and
    // `stack` live until it has been reaped below.
    let forked = unsafe {
        clone_with_pidfd(flags::CLONE_NEWUSER, None, true, &stack, trial, ids.as_ptr() as *mut c_void)
    }?;
    let reaped = super::pidfd::wait(std::os::fd::AsFd::as_fd(&forked.pidfd), false)?;
    match reaped.map(|r| r.exit) {
        Some(super::pidfd::Exit::Code(0)) => Ok(None),
        Some(super::pidfd::Exit::Code(code)) => {
            Ok(Some(UserNsFailure { step: (code / 40) as u8, errno: code % 40 }))
        }
        _ => Ok(Some(UserNsFailure { step: 0, errno: libc::EINTR })),
    }
}

/// The trial child: writes its maps the way an unprivileged caller can (its own ids, setgroups
/// denied), then unshares a mount namespace. Exits with `step * 40 + errno` (errno capped at
/// 39) on failure, 0 on success.
unsafe extern "C" fn trial(arg: *mut c_void) -> ! {
    // SAFETY: `arg` points at the parent's two ids, alive until this process is reaped.
    let [uid, gid] = unsafe { *(arg as *const [u32; 2]) };
    let fail = |step: i32, Errno(e): Errno| -> ! { super::exit(step * 40 + e.clamp(1, 39)) };
    let mut text = [0u8; 32];
    if let Err(e) = super::write_file_at(libc::AT_FDCWD, c"/proc/self/uid_map", map_line(&mut text, uid)) {
        fail(1, e)
    }
    if let Err(e) = super::write_file_at(libc::AT_FDCWD, c"/proc/self/setgroups", b"deny") {
        fail(2, e)
    }
    if let Err(e) = super::write_file_at(libc::AT_FDCWD, c"/proc/self/gid_map", map_line(&mut text, gid)) {
        fail(3, e)
    }
    if let Err(e) = super::unshare(libc::CLONE_NEWNS) {
        fail(4, e)
    }
    super::exit(0)
}

/// `"0 <id> 1"`, written into `buf` without allocating (or panicking).
fn map_line(buf: &mut [u8; 32], id: u32) -> &[u8] {
    let mut digits = [0u8; 10];
    let (mut start, mut n) = (digits.len(), id);
    while let Some(d) = start.checked_sub(1).and_then(|i| digits.get_mut(i)) {
        *d = b'0' + (n % 10) as u8;
        start -= 1;
        n /= 10;
        if n == 0 {
            break;
        }
    }
    let mut len = 0;
    for &b in b"0 ".iter().chain(digits.get(start..).unwrap_or(&[])).chain(b" 1") {
        if let Some(slot) = buf.get_mut(len) {
            *slot = b;
            len += 1;
        }
    }
    buf.get(..len).unwrap_or(&[])
}
