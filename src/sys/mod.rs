//! The only module of stockade that contains `unsafe` code.
//!
//! Everything here is a thin wrapper over a Linux system call, written so that it can run in the
//! child between `clone` and `execve`: no wrapper allocates, takes a lock, formats text or logs.
//! Errors are a bare [`Errno`], which is `Copy` and allocation-free; the parent turns it into a
//! typed [`crate::Error`] after the fact.
//!
//! Invariants every caller relies on:
//! - a wrapper never panics (no indexing that can fail, no `unwrap`),
//! - pointers handed to the kernel come from live Rust references or from arrays the parent
//!   prepared and keeps alive for the whole spawn (see [`crate::plan::Plan`]),
//! - `fork_raw`/`clone` never run `pthread_atfork` handlers (a raw system call), so the child
//!   inherits no lock state it could block on.

#![allow(unsafe_code)]

/// Makes a system call without the C library: the kernel's result or error number, with nothing
/// written to the thread-local `errno`. The child shares the embedding program's memory
/// (`CLONE_VM`), and with it the `errno` of the thread that spawned it, which keeps running: a
/// C-library wrapper failing in the child would change what that thread reads. Every wrapper the
/// child reaches uses this. Arguments are passed as machine words (integers sign-extended, as
/// the kernel reads only the width it expects).
macro_rules! raw {
    ($nr:expr $(, $arg:expr)* $(,)?) => {
        $crate::sys::raw_call($nr, [$($arg as usize),*])
    };
}
#[allow(unused_imports)]
pub(crate) use raw;

pub(crate) mod child;
pub(crate) mod clone;
mod init;
pub(crate) use init::program as init_program;
pub(crate) use init::wire;
pub(crate) mod landlock;
mod mount;
pub(crate) mod pidfd;
pub(crate) mod probe;
pub(crate) mod pty;
pub(crate) mod reaper;

use std::ffi::CStr;
use std::os::fd::RawFd;

use libc::{c_int, c_long, c_ulong};

/// A raw `errno` value: cheap, `Copy`, and safe to produce after `clone`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Errno(pub i32);

impl Errno {
    /// The calling thread's current `errno`.
    pub(crate) fn last() -> Errno {
        // SAFETY: __errno_location returns a valid pointer to this thread's errno.
        Errno(unsafe { *libc::__errno_location() })
    }
}

impl From<Errno> for std::io::Error {
    fn from(e: Errno) -> Self {
        std::io::Error::from_raw_os_error(e.0)
    }
}

pub(crate) type SysResult<T> = Result<T, Errno>;

/// See [`raw!`].
///
/// # Safety
/// As for the system call `nr` with these arguments.
#[inline(always)]
pub(crate) unsafe fn raw_call<const N: usize>(nr: c_long, args: [usize; N]) -> SysResult<c_long> {
    let mut a = [0usize; 6];
    for (slot, arg) in a.iter_mut().zip(args) {
        *slot = arg;
    }
    // SAFETY: the caller's contract; unused argument registers are zero, which no call reads.
    let ret = unsafe { syscalls::raw::syscall6(nr as usize, a[0], a[1], a[2], a[3], a[4], a[5]) } as isize;
    kernel_result(ret)
}

/// A system call's raw return value as a result: the kernel returns -errno in [-4095, -1].
pub(crate) fn kernel_result(ret: isize) -> SysResult<c_long> {
    if (-4095..0).contains(&ret) { Err(Errno(-ret as i32)) } else { Ok(ret as c_long) }
}

/// Converts a libc-style return value (`-1` + errno on failure) into a result (parent side only).
fn check(ret: c_long) -> SysResult<c_long> {
    if ret == -1 { Err(Errno::last()) } else { Ok(ret) }
}

fn check_int(ret: c_int) -> SysResult<c_int> {
    if ret == -1 { Err(Errno::last()) } else { Ok(ret) }
}

/// The descriptor a raw call returned.
fn fd_of(ret: SysResult<c_long>) -> SysResult<RawFd> {
    ret.map(|fd| fd as RawFd)
}

/// Retries a system call interrupted by a signal.
fn retry<T>(mut f: impl FnMut() -> SysResult<T>) -> SysResult<T> {
    loop {
        match f() {
            Err(Errno(libc::EINTR)) => continue,
            other => return other,
        }
    }
}

pub(crate) fn close(fd: RawFd) {
    // SAFETY: closing a descriptor number has no memory-safety effect; callers only close
    // descriptors they own (in the child, every descriptor is the child's own copy).
    let _ = unsafe { raw!(libc::SYS_close, fd) };
}

/// Closes `[first, last]`. Falls back to a loop over `/proc`-free `close` calls when
/// `close_range` is missing (kernels before 5.9), bounded by `RLIMIT_NOFILE`.
pub(crate) fn close_range(first: u32, last: u32) {
    if first > last {
        return;
    }
    // SAFETY: close_range only closes descriptors; no memory is passed to the kernel.
    if unsafe { raw!(libc::SYS_close_range, first, last, 0u32) }.is_ok() {
        return;
    }
    let mut lim = libc::rlimit64 { rlim_cur: 0, rlim_max: 0 };
    // SAFETY: `lim` is a valid, writable rlimit64; no new limit is passed.
    let max = if unsafe {
        raw!(libc::SYS_prlimit64, 0, libc::RLIMIT_NOFILE, 0usize, &mut lim as *mut libc::rlimit64)
    }
    .is_ok()
    {
        lim.rlim_cur.min(1 << 20) as u32
    } else {
        1024
    };
    let mut fd = first;
    while fd <= last && fd < max {
        close(fd as RawFd);
        fd += 1;
    }
}

/// `fcntl(fd, F_DUPFD_CLOEXEC, min)`: a close-on-exec copy of `fd` numbered at least `min`.
pub(crate) fn dup_above(fd: RawFd, min: RawFd) -> SysResult<RawFd> {
    // SAFETY: F_DUPFD_CLOEXEC takes an integer argument; no memory is involved.
    fd_of(unsafe { raw!(libc::SYS_fcntl, fd, libc::F_DUPFD_CLOEXEC, min) })
}

/// `dup3(old, new, 0)`: `new` becomes a copy of `old` without close-on-exec.
pub(crate) fn dup_onto(old: RawFd, new: RawFd) -> SysResult<()> {
    if old == new {
        // dup3 refuses old == new; clear close-on-exec instead.
        // SAFETY: F_SETFD takes an integer argument.
        return unsafe { raw!(libc::SYS_fcntl, old, libc::F_SETFD, 0) }.map(drop);
    }
    // SAFETY: dup3 takes two descriptor numbers and flags.
    retry(|| unsafe { raw!(libc::SYS_dup3, old, new, 0) }).map(drop)
}

/// `dup3(old, new, O_CLOEXEC)`: `new` becomes a close-on-exec copy of `old`.
pub(crate) fn dup_onto_cloexec(old: RawFd, new: RawFd) -> SysResult<()> {
    // SAFETY: dup3 takes two descriptor numbers and flags.
    retry(|| unsafe { raw!(libc::SYS_dup3, old, new, libc::O_CLOEXEC) }).map(drop)
}

/// `accept4(listener, NULL, NULL, SOCK_CLOEXEC)`: the next connection, blocking.
pub(crate) fn accept(listener: RawFd) -> SysResult<RawFd> {
    // SAFETY: no address is asked for (both pointers NULL).
    fd_of(retry(|| unsafe {
        raw!(
            libc::SYS_accept4,
            listener,
            std::ptr::null_mut::<libc::sockaddr>(),
            std::ptr::null_mut::<libc::socklen_t>(),
            libc::SOCK_CLOEXEC
        )
    }))
}

/// `send(socket, buf, MSG_NOSIGNAL)`: a peer that is gone is `EPIPE`, never a signal.
pub(crate) fn send(socket: RawFd, buf: &[u8]) -> SysResult<()> {
    // SAFETY: `buf` is a valid readable slice of `buf.len()` bytes; no address.
    retry(|| unsafe {
        raw!(
            libc::SYS_sendto,
            socket,
            buf.as_ptr(),
            buf.len(),
            libc::MSG_NOSIGNAL,
            std::ptr::null::<libc::sockaddr>(),
            0usize
        )
    })
    .map(drop)
}

pub(crate) fn read(fd: RawFd, buf: &mut [u8]) -> SysResult<usize> {
    // SAFETY: `buf` is a valid writable slice of `buf.len()` bytes.
    retry(|| unsafe { raw!(libc::SYS_read, fd, buf.as_mut_ptr(), buf.len()) }).map(|n| n as usize)
}

/// Writes all of `buf`, retrying on short writes and EINTR.
pub(crate) fn write_all(fd: RawFd, mut buf: &[u8]) -> SysResult<()> {
    while !buf.is_empty() {
        // SAFETY: `buf` is a valid readable slice of `buf.len()` bytes.
        let n = retry(|| unsafe { raw!(libc::SYS_write, fd, buf.as_ptr(), buf.len()) })?;
        if n == 0 {
            return Err(Errno(libc::EIO));
        }
        buf = buf.get(n as usize..).unwrap_or(&[]);
    }
    Ok(())
}

/// A close-on-exec memfd named `name` holding `data` (parent side), with its length.
pub(crate) fn memfd_with(name: &CStr, data: &[u8]) -> std::io::Result<(std::os::fd::OwnedFd, usize)> {
    // SAFETY: `name` is NUL-terminated; the flag is an integer.
    let fd = owned(fd_of(unsafe { raw!(libc::SYS_memfd_create, name.as_ptr(), libc::MFD_CLOEXEC) })?);
    write_all(std::os::fd::AsRawFd::as_raw_fd(&fd), data)?;
    Ok((fd, data.len()))
}

pub(crate) fn open(path: &CStr, flags: c_int) -> SysResult<RawFd> {
    // SAFETY: `path` is a valid NUL-terminated string; mode is only read with O_CREAT.
    fd_of(retry(|| unsafe {
        raw!(libc::SYS_openat, libc::AT_FDCWD, path.as_ptr(), flags | libc::O_CLOEXEC, 0o600)
    }))
}

pub(crate) const RESOLVE_NO_MAGICLINKS: u64 = 0x02;
pub(crate) const RESOLVE_NO_SYMLINKS: u64 = 0x04;
pub(crate) const RESOLVE_IN_ROOT: u64 = 0x10;

/// `struct open_how` of `openat2(2)`.
#[repr(C)]
struct OpenHow {
    flags: u64,
    mode: u64,
    resolve: u64,
}

/// `openat2(dirfd, path, flags | O_CLOEXEC, resolve)`.
pub(crate) fn openat2(dirfd: RawFd, path: &CStr, flags: c_int, resolve: u64) -> SysResult<RawFd> {
    let how = OpenHow { flags: (flags | libc::O_CLOEXEC) as u64, mode: 0, resolve };
    // SAFETY: `how` is a valid open_how of the size passed; `path` is NUL-terminated.
    retry(|| {
        fd_of(unsafe {
            raw!(
                libc::SYS_openat2,
                dirfd,
                path.as_ptr(),
                &how as *const OpenHow,
                std::mem::size_of::<OpenHow>()
            )
        })
    })
}

/// Opens a host path the embedding program handed over (a bind source, a root or overlay
/// directory) without following any symlink or magic link on the way: `ELOOP` if one is there.
/// Used by the parent to validate and by the child to mount, so a link planted meanwhile (by an
/// earlier sandbox with a writable bind, say) is refused, never followed.
pub(crate) fn open_host(path: &CStr, flags: c_int) -> SysResult<RawFd> {
    openat2(libc::AT_FDCWD, path, flags, RESOLVE_NO_SYMLINKS | RESOLVE_NO_MAGICLINKS)
}

/// A new descriptor (`flags`, close-on-exec) of the file `fd` refers to, opened through a
/// detached read-only mount of just that file: reopening it writable, even through
/// `/proc/self/fd`, fails with `EROFS` whatever the opener's privileges. Parent side; needs
/// `CAP_SYS_ADMIN` over this process's mount namespace.
pub(crate) fn reopen_read_only(fd: RawFd, flags: c_int) -> std::io::Result<std::os::fd::OwnedFd> {
    mount::reopen_read_only(fd, flags).map(owned).map_err(Into::into)
}

/// An `O_PATH` descriptor of the host's `/dev/null` (checked to be the character device 1:3)
/// on a read-only, nosuid clone of its mount that is mounted nowhere (see
/// `mount::null_device`), from which [`open_null`] opens it for payloads: the node cannot be
/// changed through such a descriptor (chmod, chown, times, xattrs all fail with `EROFS`), the
/// mount can be neither changed, moved nor cloned, and reopening it through `/proc/self/fd`
/// gives only `/dev/null` again. Parent side; needs `CAP_SYS_ADMIN` over this process's mount
/// namespace, and /proc.
pub(crate) fn null_device() -> std::io::Result<std::os::fd::OwnedFd> {
    let pinned = mount::null_device().map(owned)?;
    // Proven usable once here (no /proc, say, and the spawns keep pinning their own).
    open_null(std::os::fd::AsFd::as_fd(&pinned))?;
    Ok(pinned)
}

/// A new open description (read-write, close-on-exec) of `/dev/null` through the descriptor
/// [`null_device`] made, checked to be that device on a read-only mount (should the
/// descriptor's number have been closed and reused by mistake, nothing else is handed out).
pub(crate) fn open_null(pinned: std::os::fd::BorrowedFd<'_>) -> std::io::Result<std::os::fd::OwnedFd> {
    use std::os::fd::AsRawFd;
    let fd = mount::open_null(pinned.as_raw_fd()).map(owned)?;
    let st = nix::sys::stat::fstat(&fd)?;
    let device = st.st_mode & libc::S_IFMT == libc::S_IFCHR
        && libc::major(st.st_rdev) == 1
        && libc::minor(st.st_rdev) == 3;
    let read_only = nix::sys::statvfs::fstatvfs(&fd)?.flags().contains(nix::sys::statvfs::FsFlags::ST_RDONLY);
    if !(device && read_only) {
        return Err(std::io::Error::other(
            "the pinned /dev/null descriptor no longer is /dev/null on a read-only mount",
        ));
    }
    Ok(fd)
}

/// This process's own standard descriptor `fd` (0, 1 or 2), borrowed for the duration of a
/// spawn that inherits it; `None` if it is closed.
pub(crate) fn borrow_std(fd: RawFd) -> Option<std::os::fd::BorrowedFd<'static>> {
    // SAFETY: F_GETFD only reads the descriptor's flags.
    if unsafe { libc::fcntl(fd, libc::F_GETFD) } == -1 {
        return None;
    }
    // SAFETY: the descriptor is open (above); 0, 1 and 2 stay open for as long as the process
    // keeps them, the borrow lives only while the spawn that inherits them runs, and nothing
    // here closes them.
    Some(unsafe { std::os::fd::BorrowedFd::borrow_raw(fd) })
}

/// Takes ownership of a descriptor a wrapper here just returned (parent side).
pub(crate) fn owned(fd: RawFd) -> std::os::fd::OwnedFd {
    use std::os::fd::FromRawFd;
    // SAFETY: callers pass a fresh descriptor that nothing else owns or will close.
    unsafe { std::os::fd::OwnedFd::from_raw_fd(fd) }
}

/// Opens `path` (relative to `dirfd`) for writing, writes all of `data`, closes it.
pub(crate) fn write_file_at(dirfd: RawFd, path: &CStr, data: &[u8]) -> SysResult<()> {
    // SAFETY: `path` is NUL-terminated; the mode is unused without O_CREAT.
    let fd = fd_of(retry(|| unsafe {
        raw!(libc::SYS_openat, dirfd, path.as_ptr(), libc::O_WRONLY | libc::O_CLOEXEC, 0)
    }))?;
    let result = write_all(fd, data);
    close(fd);
    result
}

/// A full signal set (every one of the kernel's 64 signals, the two the C library keeps for
/// itself included); `filled == false` gives an empty one. Built directly: no C library.
pub(crate) fn sigset(filled: bool) -> libc::sigset_t {
    // SAFETY: sigset_t is plain data, valid all-zero; the kernel reads its first 8 bytes.
    let mut set: libc::sigset_t = unsafe { std::mem::zeroed() };
    if filled {
        // SAFETY: sigset_t is at least 8 bytes on Linux; this writes its first word.
        unsafe { std::ptr::write_unaligned(&mut set as *mut libc::sigset_t as *mut u64, u64::MAX) };
    }
    set
}

/// Replaces the signal mask of the calling thread.
pub(crate) fn set_sigmask(set: &libc::sigset_t) -> SysResult<()> {
    // SAFETY: `set` is a valid sigset_t; the old mask is not requested.
    unsafe {
        raw!(libc::SYS_rt_sigprocmask, libc::SIG_SETMASK, set as *const libc::sigset_t, 0usize, SIGSET_SIZE)
    }
    .map(drop)
}

/// Blocks every signal in the calling thread and returns the previous mask. Spawning does this
/// around `clone`, as `posix_spawn` does: otherwise a signal arriving before the child has reset
/// its dispositions would run one of the embedding program's handlers in the child.
pub(crate) fn block_all_signals() -> libc::sigset_t {
    let all = sigset(true);
    let mut old = sigset(false);
    // SAFETY: both sets are valid sigset_t values.
    unsafe { libc::pthread_sigmask(libc::SIG_SETMASK, &all, &mut old) };
    old
}

/// The kernel's signal set size (`_NSIG / 8`), which the `rt_sig*` calls take.
const SIGSET_SIZE: usize = 8;

/// Resets every signal disposition to `SIG_DFL` (SIGKILL and SIGSTOP cannot change and are
/// skipped). Ignored signals survive `execve`, and Rust's runtime ignores SIGPIPE, so without this
/// the payload would inherit the embedding program's dispositions.
pub(crate) fn reset_signal_dispositions() {
    // The kernel's `struct sigaction` (handler, flags, restorer where the arch has one, mask):
    // all zero is SIG_DFL with no flags and an empty mask on every layout.
    let act = [0u64; 4];
    for sig in 1..=64 {
        if sig == libc::SIGKILL || sig == libc::SIGSTOP {
            continue;
        }
        // SAFETY: `act` is a valid kernel sigaction; the old action is not requested.
        let _ = unsafe { raw!(libc::SYS_rt_sigaction, sig, act.as_ptr(), 0usize, SIGSET_SIZE) };
    }
}

/// Clears close-on-exec on `fd`, so it survives an exec.
pub(crate) fn keep_on_exec(fd: RawFd) -> SysResult<()> {
    // SAFETY: F_SETFD takes an integer argument.
    unsafe { raw!(libc::SYS_fcntl, fd, libc::F_SETFD, 0) }.map(drop)
}

pub(crate) fn prctl(option: c_int, arg: c_ulong) -> SysResult<()> {
    prctl3(option, arg, 0)
}

pub(crate) fn prctl3(option: c_int, arg2: c_ulong, arg3: c_ulong) -> SysResult<()> {
    // SAFETY: the prctl options used here take integer arguments only.
    unsafe { raw!(libc::SYS_prctl, option, arg2, arg3, 0, 0) }.map(drop)
}

/// Sets the effective, permitted and inheritable capability sets of the calling thread
/// (capability `n` is bit `n` of each).
pub(crate) fn capset(effective: u64, permitted: u64, inheritable: u64) -> SysResult<()> {
    #[repr(C)]
    struct Header {
        version: u32,
        pid: c_int,
    }
    #[repr(C)]
    #[derive(Clone, Copy)]
    struct Data {
        effective: u32,
        permitted: u32,
        inheritable: u32,
    }
    const VERSION_3: u32 = 0x2008_0522;
    let header = Header { version: VERSION_3, pid: 0 };
    let word = |shift: u32| Data {
        effective: (effective >> shift) as u32,
        permitted: (permitted >> shift) as u32,
        inheritable: (inheritable >> shift) as u32,
    };
    let data = [word(0), word(32)];
    // SAFETY: header and the two data words are valid for the version-3 layout.
    (unsafe { raw!(libc::SYS_capset, &header as *const Header, data.as_ptr()) }).map(drop)
}

/// Installs a seccomp filter on the calling thread (which needs `no_new_privs` or
/// `CAP_SYS_ADMIN` in its user namespace).
pub(crate) fn install_seccomp(program: &[crate::seccomp::SockFilter]) -> SysResult<()> {
    #[repr(C)]
    struct SockFprog {
        len: u16,
        filter: *const crate::seccomp::SockFilter,
    }
    const SECCOMP_SET_MODE_FILTER: c_ulong = 1;
    let prog = SockFprog { len: program.len() as u16, filter: program.as_ptr() };
    // SAFETY: `prog` points at `len` instructions that outlive the call (the kernel copies them).
    (unsafe { raw!(libc::SYS_seccomp, SECCOMP_SET_MODE_FILTER, 0 as c_ulong, &prog as *const SockFprog) })
        .map(drop)
}

/// Sets the file mode creation mask.
pub(crate) fn umask(mask: u32) {
    // SAFETY: umask cannot fail.
    let _ = unsafe { raw!(libc::SYS_umask, mask) };
}

/// Gives the calling process a new, empty, anonymous session keyring
/// (`KEYCTL_JOIN_SESSION_KEYRING` with no name), so it cannot search, read or add to the one it
/// inherited. `ENOSYS` (a kernel without keys) and `EPERM` (a seccomp filter around the
/// embedding program refuses `keyctl`, and so refuses it to the payload too, which inherits the
/// filter) leave nothing reachable and count as success.
///
/// `EDQUOT` (the user's key quota, 200 keys for a user other than root, full of the keyrings of
/// sandboxes that have ended but that the kernel's key collector, a background work item, has
/// not freed yet: a burst of spawns can outrun it) is tried again, every millisecond for up to
/// a second, before it fails the spawn.
pub(crate) fn join_new_session_keyring() -> SysResult<()> {
    const KEYCTL_JOIN_SESSION_KEYRING: c_long = 1;
    let mut tries = 0;
    loop {
        // SAFETY: a null name asks for an anonymous keyring; no memory is read.
        match unsafe { raw!(libc::SYS_keyctl, KEYCTL_JOIN_SESSION_KEYRING, 0usize) } {
            Ok(_) | Err(Errno(libc::ENOSYS | libc::EPERM)) => return Ok(()),
            Err(Errno(libc::EDQUOT)) if tries < 1000 => {
                tries += 1;
                let millisecond = libc::timespec { tv_sec: 0, tv_nsec: 1_000_000 };
                // SAFETY: a live timespec; no remainder is asked for.
                let _ = unsafe {
                    raw!(libc::SYS_nanosleep, &millisecond as *const libc::timespec, std::ptr::null::<u8>())
                };
            }
            Err(e) => return Err(e),
        }
    }
}

/// Sets the calling thread's name (`/proc/<pid>/comm`, at most 15 bytes).
pub(crate) fn set_name(name: &CStr) {
    // SAFETY: `name` is NUL-terminated; the kernel copies at most 16 bytes.
    let _ = unsafe { raw!(libc::SYS_prctl, libc::PR_SET_NAME, name.as_ptr(), 0, 0, 0) };
}

/// Overwrites the argument area `[start, end)` of the calling process's own memory with `name`,
/// so that `/proc/<pid>/cmdline` reads `name` and nothing else: the rest is zeroed, and the last
/// byte is made non-zero, which makes the kernel stop at the first NUL (its `setproctitle`
/// rule) instead of showing the zeroed tail.
///
/// # Safety
/// `[start, end)` must be writable memory of this process that nothing else uses: the initial
/// stack's argument strings of a process that never reads its `argv` again (the init).
pub(crate) unsafe fn overwrite_arg_area((start, end): (usize, usize), name: &[u8]) {
    let len = end - start;
    if len < 2 {
        return;
    }
    // SAFETY: the caller guarantees the region is writable and unused.
    let area = unsafe { std::slice::from_raw_parts_mut(start as *mut u8, len) };
    area.fill(0);
    let n = name.len().min(len - 2);
    area[..n].copy_from_slice(&name[..n]);
    area[len - 1] = b' ';
}

pub(crate) fn setsid() -> SysResult<()> {
    // SAFETY: no arguments.
    unsafe { raw!(libc::SYS_setsid) }.map(drop)
}

pub(crate) fn sethostname(name: &[u8]) -> SysResult<()> {
    // SAFETY: `name` is a valid slice; the kernel copies `len` bytes.
    unsafe { raw!(libc::SYS_sethostname, name.as_ptr(), name.len()) }.map(drop)
}

pub(crate) fn setdomainname(name: &[u8]) -> SysResult<()> {
    // SAFETY: `name` is a valid slice; the kernel copies `len` bytes.
    unsafe { raw!(libc::SYS_setdomainname, name.as_ptr(), name.len()) }.map(drop)
}

pub(crate) fn mount(
    source: Option<&CStr>,
    target: &CStr,
    fstype: Option<&CStr>,
    flags: c_ulong,
    data: Option<&CStr>,
) -> SysResult<()> {
    let p = |s: Option<&CStr>| s.map_or(std::ptr::null(), CStr::as_ptr);
    // SAFETY: every pointer is either null or a valid NUL-terminated string.
    unsafe { raw!(libc::SYS_mount, p(source), target.as_ptr(), p(fstype), flags, p(data)) }.map(drop)
}

/// `setns(fd, flags)`: joins the namespaces `flags` of the process behind the pidfd `fd`, all at
/// once (Linux 5.8+).
pub(crate) fn setns(fd: RawFd, flags: c_int) -> SysResult<()> {
    // SAFETY: integer arguments.
    unsafe { raw!(libc::SYS_setns, fd, flags) }.map(drop)
}

/// The `CLONE_NEW*` type of the namespace an nsfs descriptor refers to (`NS_GET_NSTYPE`).
pub(crate) fn namespace_type(fd: std::os::fd::BorrowedFd<'_>) -> SysResult<c_int> {
    const NS_GET_NSTYPE: c_ulong = 0xb7 << 8 | 0x3;
    use std::os::fd::AsRawFd;
    // SAFETY: NS_GET_NSTYPE takes no argument; the descriptor is borrowed for the call.
    unsafe { raw!(libc::SYS_ioctl, fd.as_raw_fd(), NS_GET_NSTYPE) }.map(|t| t as c_int)
}

/// Runs `f` with the calling thread's pid namespace for children switched to `target` (the
/// processes `f` clones start there), then switches it back, also when `f` panics. Should the
/// switch back fail, the process aborts: every later child of this thread would otherwise
/// start in `target`.
pub(crate) fn with_pid_namespace_for_children<T>(
    target: std::os::fd::BorrowedFd<'_>,
    f: impl FnOnce() -> T,
) -> std::io::Result<T> {
    use std::os::fd::AsRawFd;
    struct Back(std::fs::File);
    impl Drop for Back {
        fn drop(&mut self) {
            // The thread's own: its active pid namespace (or a child of it), which the kernel
            // always lets it enter.
            if setns(self.0.as_raw_fd(), libc::CLONE_NEWPID).is_err() {
                std::process::abort();
            }
        }
    }
    let back = Back(std::fs::File::open("/proc/thread-self/ns/pid_for_children")?);
    setns(target.as_raw_fd(), libc::CLONE_NEWPID).map_err(|e| std::io::Error::from_raw_os_error(e.0))?;
    let out = f();
    drop(back);
    Ok(out)
}

/// A pidfd of the calling process (allocation-free, for the child), close-on-exec.
pub(crate) fn pidfd_of_self() -> SysResult<RawFd> {
    // SAFETY: integer arguments.
    let pid = unsafe { raw!(libc::SYS_getpid) }?;
    // SAFETY: integer arguments.
    fd_of(unsafe { raw!(libc::SYS_pidfd_open, pid, 0) })
}

/// Sends the descriptor `fd` over the socket `socket` (SCM_RIGHTS, one byte of data),
/// allocation-free.
pub(crate) fn send_fd(socket: RawFd, fd: RawFd) -> SysResult<()> {
    #[repr(C)]
    struct Control {
        header: libc::cmsghdr,
        fd: c_int,
        _pad: c_int,
    }
    // SAFETY: cmsghdr is plain data; all-zero is valid and the fields are set below.
    let mut control: Control = unsafe { std::mem::zeroed() };
    control.header.cmsg_len = std::mem::size_of::<libc::cmsghdr>() + std::mem::size_of::<c_int>();
    control.header.cmsg_level = libc::SOL_SOCKET;
    control.header.cmsg_type = libc::SCM_RIGHTS;
    control.fd = fd;
    let byte = [b'p'];
    let mut iov = libc::iovec { iov_base: byte.as_ptr() as *mut libc::c_void, iov_len: 1 };
    // SAFETY: msghdr is plain data; all-zero is valid and the fields are set below.
    let mut msg: libc::msghdr = unsafe { std::mem::zeroed() };
    msg.msg_iov = &mut iov;
    msg.msg_iovlen = 1;
    msg.msg_control = &mut control as *mut Control as *mut libc::c_void;
    msg.msg_controllen = std::mem::size_of::<Control>();
    // SAFETY: `msg` points at live buffers of the sizes given.
    retry(|| unsafe { raw!(libc::SYS_sendmsg, socket, &msg as *const libc::msghdr, libc::MSG_NOSIGNAL) })
        .map(drop)
}

pub(crate) fn unshare(flags: c_int) -> SysResult<()> {
    // SAFETY: integer flags only.
    unsafe { raw!(libc::SYS_unshare, flags) }.map(drop)
}

pub(crate) fn setgroups(groups: &[libc::gid_t]) -> SysResult<()> {
    // SAFETY: `groups` is a valid slice of gid_t. The raw system call is used because glibc's
    // wrapper broadcasts the change to all threads with a signal, which needs locks.
    (unsafe { raw!(libc::SYS_setgroups, groups.len(), groups.as_ptr()) }).map(drop)
}

pub(crate) fn setresgid(gid: libc::gid_t) -> SysResult<()> {
    // SAFETY: integer arguments. Raw system call: glibc's wrapper synchronises all threads (setxid
    // broadcast), which must not happen in a forked child.
    (unsafe { raw!(libc::SYS_setresgid, gid, gid, gid) }).map(drop)
}

pub(crate) fn setresuid(uid: libc::uid_t) -> SysResult<()> {
    // SAFETY: integer arguments. Raw system call for the same reason as setresgid.
    (unsafe { raw!(libc::SYS_setresuid, uid, uid, uid) }).map(drop)
}

pub(crate) fn chdir(path: &CStr) -> SysResult<()> {
    // SAFETY: `path` is a valid NUL-terminated string.
    unsafe { raw!(libc::SYS_chdir, path.as_ptr()) }.map(drop)
}

/// 32 random bits from the kernel (the clock's nanoseconds if getrandom fails).
pub(crate) fn random_u32() -> u32 {
    let mut bytes = [0u8; 4];
    // SAFETY: `bytes` is a valid writable buffer of its length.
    let got = unsafe { libc::getrandom(bytes.as_mut_ptr().cast(), bytes.len(), libc::GRND_NONBLOCK) };
    if got == 4 {
        u32::from_ne_bytes(bytes)
    } else {
        std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.subsec_nanos())
    }
}

/// This process's limits for `resource`: (soft, hard).
pub(crate) fn getrlimit(resource: libc::__rlimit_resource_t) -> SysResult<(u64, u64)> {
    let mut old = [0u64; 2];
    // SAFETY: `old` is a writable `struct rlimit64`; no new limit is given.
    unsafe { raw!(libc::SYS_prlimit64, 0, resource, std::ptr::null::<u64>(), old.as_mut_ptr()) }?;
    Ok((old[0], old[1]))
}

/// Sets a resource limit of the calling process.
pub(crate) fn prlimit(resource: libc::__rlimit_resource_t, soft: u64, hard: u64) -> SysResult<()> {
    let new = libc::rlimit64 { rlim_cur: soft, rlim_max: hard };
    // SAFETY: `new` is a valid rlimit64; the old value is not requested.
    unsafe { raw!(libc::SYS_prlimit64, 0, resource, &new as *const libc::rlimit64, 0usize) }.map(drop)
}

/// `execve`; returns only on failure.
pub(crate) fn execve(path: &CStr, argv: &[*const libc::c_char], envp: &[*const libc::c_char]) -> Errno {
    // SAFETY: `argv` and `envp` are NULL-terminated arrays of pointers into CStrings the parent
    // keeps alive (the child's copy of its memory); `path` is NUL-terminated.
    match unsafe { raw!(libc::SYS_execve, path.as_ptr(), argv.as_ptr(), envp.as_ptr()) } {
        Err(e) => e,
        Ok(_) => Errno(libc::EINVAL),
    }
}

/// `fork` as a raw system call: no `pthread_atfork` handlers, no C-library locks.
pub(crate) fn fork_raw() -> SysResult<libc::pid_t> {
    // SAFETY: clone without CLONE_VM behaves like fork: the child gets a copy of the address
    // space and continues from here; no stack or TLS argument is needed.
    (unsafe { raw!(libc::SYS_clone, libc::SIGCHLD as c_ulong, 0usize, 0usize, 0usize, 0usize) })
        .map(|p| p as libc::pid_t)
}

/// Puts the calling thread under `SCHED_IDLE`: it runs when nothing else wants the CPU, and
/// any other task woken on its CPU preempts it at once. Inherited by the processes it starts.
pub(crate) fn set_idle_policy() -> SysResult<()> {
    let param = libc::sched_param { sched_priority: 0 };
    // SAFETY: `param` is a valid sched_param for the duration of the call; pid 0 is this thread.
    unsafe { raw!(libc::SYS_sched_setscheduler, 0, libc::SCHED_IDLE, &param as *const libc::sched_param) }
        .map(drop)
}

pub(crate) fn getppid() -> libc::pid_t {
    // SAFETY: no arguments.
    unsafe { raw!(libc::SYS_getppid) }.map_or(0, |p| p as libc::pid_t)
}

pub(crate) fn kill(pid: libc::pid_t, sig: c_int) -> SysResult<()> {
    // SAFETY: integer arguments.
    unsafe { raw!(libc::SYS_kill, pid, sig) }.map(drop)
}

/// `waitpid(pid, 0)`: blocks until the child `pid` exits; returns its wait status.
pub(crate) fn waitpid(pid: libc::pid_t) -> SysResult<c_int> {
    let mut status: c_int = 0;
    // SAFETY: `status` is a valid writable int.
    retry(|| unsafe { raw!(libc::SYS_wait4, pid, &mut status as *mut c_int, 0, 0usize) })?;
    Ok(status)
}

/// A close-on-exec pipe: (read end, write end).
pub(crate) fn pipe() -> SysResult<(RawFd, RawFd)> {
    let mut fds = [-1 as c_int; 2];
    // SAFETY: `fds` is a valid array of two ints.
    unsafe { raw!(libc::SYS_pipe2, fds.as_mut_ptr(), libc::O_CLOEXEC) }?;
    Ok((fds[0], fds[1]))
}

/// Ends the calling process at once, without running destructors or `atexit` handlers.
pub(crate) fn exit(code: c_int) -> ! {
    loop {
        // SAFETY: exit_group ends every thread of the process and never returns.
        let _ = unsafe { raw!(libc::SYS_exit_group, code) };
    }
}

/// Brings the loopback interface of the current network namespace up.
pub(crate) fn loopback_up() -> SysResult<()> {
    // SAFETY: socket() takes integers; the descriptor is closed below.
    let sock =
        fd_of(unsafe { raw!(libc::SYS_socket, libc::AF_INET, libc::SOCK_DGRAM | libc::SOCK_CLOEXEC, 0) })?;
    // SAFETY: ifreq is plain data; an all-zero value is valid.
    let mut req: libc::ifreq = unsafe { std::mem::zeroed() };
    for (dst, src) in req.ifr_name.iter_mut().zip(b"lo\0") {
        *dst = *src as libc::c_char;
    }
    // SAFETY: `req` is a valid ifreq naming "lo"; SIOCGIFFLAGS fills ifru_flags.
    let result = unsafe { raw!(libc::SYS_ioctl, sock, libc::SIOCGIFFLAGS, &mut req as *mut libc::ifreq) }
        .and_then(|_| {
            // SAFETY: ifru_flags is the union member SIOCGIFFLAGS just filled.
            unsafe { req.ifr_ifru.ifru_flags |= (libc::IFF_UP | libc::IFF_RUNNING) as libc::c_short };
            // SAFETY: `req` is valid; SIOCSIFFLAGS reads the name and flags.
            unsafe { raw!(libc::SYS_ioctl, sock, libc::SIOCSIFFLAGS, &req as *const libc::ifreq) }
        });
    close(sock);
    result.map(drop)
}

/// `getxattr(2)`: reads extended attribute `name` of the file `fd` refers to (any descriptor,
/// `O_PATH` included, and whatever the file's mode) into `buf`, returning its length (parent
/// side; used by the image unpacker and the user lookup).
pub(crate) fn fd_getxattr(
    fd: std::os::fd::BorrowedFd<'_>,
    name: &CStr,
    buf: &mut [u8],
) -> std::io::Result<usize> {
    use std::os::fd::AsRawFd;
    let path =
        std::ffi::CString::new(format!("/proc/self/fd/{}", fd.as_raw_fd())).map_err(std::io::Error::other)?;
    // SAFETY: `path` and `name` are NUL-terminated; `buf` is a live, writable slice of the
    // length passed.
    let ret = unsafe { libc::getxattr(path.as_ptr(), name.as_ptr(), buf.as_mut_ptr().cast(), buf.len()) };
    check(ret as libc::c_long).map(|n| n as usize).map_err(Into::into)
}

/// `fsetxattr(2)`: sets extended attribute `name` of the open file `fd` (parent side; used by
/// the image unpacker).
#[cfg(feature = "image")]
pub(crate) fn fsetxattr(fd: std::os::fd::BorrowedFd<'_>, name: &CStr, value: &[u8]) -> std::io::Result<()> {
    use std::os::fd::AsRawFd;
    // SAFETY: `name` is NUL-terminated and `value` is a live slice of the length passed.
    let ret =
        unsafe { libc::fsetxattr(fd.as_raw_fd(), name.as_ptr(), value.as_ptr().cast(), value.len(), 0) };
    check_int(ret).map(drop).map_err(Into::into)
}

/// Registers `fd` with the current tokio runtime's reactor for `interest`.
///
/// # Panics
/// Outside a tokio runtime, or in one without its I/O driver, as tokio's own I/O types do.
#[cfg(feature = "tokio")]
pub(crate) fn register_with_tokio(
    fd: std::os::fd::OwnedFd,
    interest: tokio::io::Interest,
) -> std::io::Result<tokio::io::unix::AsyncFd<std::os::fd::OwnedFd>> {
    // SAFETY: the `AsyncFd` owns `fd`, an open descriptor, until it is dropped; nothing in this
    // crate replaces it through `get_mut`, so it stays the same description all along.
    unsafe { tokio::io::unix::AsyncFd::register_with_interest(fd, interest) }.map_err(|e| e.into())
}
