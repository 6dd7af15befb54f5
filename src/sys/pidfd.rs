//! Parent-side process handles: waiting for and signalling a child through its pidfd, so that a
//! recycled pid can never be confused with the sandbox.

use std::os::fd::{AsRawFd, BorrowedFd};

use super::{Errno, SysResult, retry};

/// How a process ended, as `waitid` reports it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Exit {
    /// `exit(code)`.
    Code(i32),
    /// Killed by a signal.
    Signal { signal: i32, core_dumped: bool },
}

impl Exit {
    /// Decodes a `waitpid`-style status word.
    pub(crate) fn from_wait_status(status: i32) -> Exit {
        if libc::WIFEXITED(status) {
            Exit::Code(libc::WEXITSTATUS(status))
        } else {
            Exit::Signal { signal: libc::WTERMSIG(status), core_dumped: libc::WCOREDUMP(status) }
        }
    }
}

/// A reaped process: how it ended and what it (and the children it waited for) used.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Reaped {
    pub(crate) exit: Exit,
    pub(crate) user: std::time::Duration,
    pub(crate) system: std::time::Duration,
    /// Largest resident set of a single process, bytes.
    pub(crate) max_rss: u64,
}

/// `waitid(P_PIDFD, fd, WEXITED [| WNOHANG])`: reaps the process. `Ok(None)` with `nohang` when it
/// is still running.
pub(crate) fn wait(pidfd: BorrowedFd<'_>, nohang: bool) -> SysResult<Option<Reaped>> {
    const P_PIDFD: libc::idtype_t = 3;
    let options = libc::WEXITED | if nohang { libc::WNOHANG } else { 0 };
    // SAFETY: siginfo_t and rusage are plain data; all-zero is valid and lets us detect "no
    // change" (si_pid 0).
    let mut info: libc::siginfo_t = unsafe { std::mem::zeroed() };
    // SAFETY: as above.
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    retry(|| {
        // SAFETY: `info` and `usage` are valid and writable; the raw system call (unlike the C
        // library's wrapper) reports the reaped process's resource usage.
        unsafe {
            raw!(
                libc::SYS_waitid,
                P_PIDFD,
                pidfd.as_raw_fd(),
                &mut info as *mut libc::siginfo_t,
                options,
                &mut usage as *mut libc::rusage,
            )
        }
    })?;
    // SAFETY: waitid filled `info` (or left it zeroed with WNOHANG); si_pid/si_status are valid to
    // read for SIGCHLD siginfo.
    let (pid, status) = unsafe { (info.si_pid(), info.si_status()) };
    if pid == 0 {
        return Ok(None);
    }
    let exit = match info.si_code {
        libc::CLD_EXITED => Exit::Code(status),
        libc::CLD_DUMPED => Exit::Signal { signal: status, core_dumped: true },
        _ => Exit::Signal { signal: status, core_dumped: false },
    };
    let time = |t: libc::timeval| std::time::Duration::new(t.tv_sec as u64, t.tv_usec as u32 * 1000);
    Ok(Some(Reaped {
        exit,
        user: time(usage.ru_utime),
        system: time(usage.ru_stime),
        max_rss: usage.ru_maxrss as u64 * 1024,
    }))
}

/// Sends `signal` to the process behind `pidfd`.
pub(crate) fn send_signal(pidfd: BorrowedFd<'_>, signal: i32) -> SysResult<()> {
    // SAFETY: integer arguments; info is NULL (kernel fills it as for kill()).
    let ret = unsafe {
        libc::syscall(libc::SYS_pidfd_send_signal, pidfd.as_raw_fd(), signal, std::ptr::null::<u8>(), 0u32)
    };
    if ret == -1 { Err(Errno::last()) } else { Ok(()) }
}

/// The pid (in this process's pid namespace) of the process behind `pidfd`: from the pidfd
/// itself (`PIDFD_GET_INFO`), or on kernels before 6.13 from `/proc/self/fdinfo` (parent side).
pub(crate) fn pid_of(pidfd: BorrowedFd<'_>) -> std::io::Result<libc::pid_t> {
    // `struct pidfd_info` of <linux/pidfd.h> (its first version, 64 bytes).
    #[repr(C)]
    #[derive(Default)]
    struct PidfdInfo {
        mask: u64,
        cgroupid: u64,
        pid: u32,
        tgid: u32,
        rest: [u32; 10],
    }
    const _: () = assert!(std::mem::size_of::<PidfdInfo>() == 64);
    // _IOWR(PIDFS_IOCTL_MAGIC 0xFF, 11, struct pidfd_info): Linux 6.13 and later.
    const PIDFD_GET_INFO: libc::c_ulong = 0xC040_FF0B;
    const PIDFD_INFO_PID: u64 = 1;
    let mut info = PidfdInfo { mask: PIDFD_INFO_PID, ..PidfdInfo::default() };
    // SAFETY: `info` is a live, writable struct of the size the request number encodes.
    let asked =
        unsafe { raw!(libc::SYS_ioctl, pidfd.as_raw_fd(), PIDFD_GET_INFO, &mut info as *mut PidfdInfo) };
    match asked {
        // The process's pid (its thread group's) in this process's pid namespace.
        Ok(_) if info.mask & PIDFD_INFO_PID != 0 && info.tgid > 0 => return Ok(info.tgid as libc::pid_t),
        Err(Errno(libc::ESRCH)) => return Err(std::io::Error::from_raw_os_error(libc::ESRCH)),
        // An older kernel (ENOTTY, EINVAL): its fdinfo says the same.
        _ => {}
    }
    let path = format!("/proc/self/fdinfo/{}", pidfd.as_raw_fd());
    let info = std::fs::read_to_string(&path)?;
    info.lines()
        .find_map(|l| l.strip_prefix("Pid:")?.trim().parse::<libc::pid_t>().ok())
        .filter(|&pid| pid > 0)
        .ok_or_else(|| std::io::Error::other(format!("{path}: no live process")))
}

/// A pidfd of the calling process (parent side), close-on-exec.
pub(crate) fn open_self() -> std::io::Result<std::os::fd::OwnedFd> {
    // SAFETY: getpid has no preconditions.
    open(unsafe { libc::getpid() })
}

/// A pidfd of process `pid` (parent side), close-on-exec.
pub(crate) fn open(pid: libc::pid_t) -> std::io::Result<std::os::fd::OwnedFd> {
    use std::os::fd::FromRawFd;
    // SAFETY: integer arguments; a non-negative result is a fresh descriptor nobody else owns.
    let fd = (unsafe { raw!(libc::SYS_pidfd_open, pid, 0) })?;
    // SAFETY: `fd` was just returned by pidfd_open and is owned here alone.
    Ok(unsafe { std::os::fd::OwnedFd::from_raw_fd(fd as std::os::fd::RawFd) })
}

/// Whether the process behind `pidfd` has exited (its pidfd polls readable); allocation-free,
/// for the child.
pub(crate) fn has_exited(pidfd: std::os::fd::RawFd) -> bool {
    let mut fds = [libc::pollfd { fd: pidfd, events: libc::POLLIN, revents: 0 }];
    // SAFETY: `fds` is a valid array of one pollfd; a zero timeout never blocks.
    let zero = libc::timespec { tv_sec: 0, tv_nsec: 0 };
    let ready = retry(|| unsafe {
        raw!(libc::SYS_ppoll, fds.as_mut_ptr(), 1, &zero as *const libc::timespec, 0usize, 0usize)
    });
    matches!(ready, Ok(n) if n > 0)
}
