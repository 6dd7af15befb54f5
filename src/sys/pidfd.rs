//! Parent-side process handles: waiting for and signalling a child through its pidfd, so that a
//! recycled pid can never be confused with the sandbox.

use std::os::fd::{AsRawFd, BorrowedFd};

use super::{Errno, SysResult, check_int, retry};

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

/// `waitid(P_PIDFD, fd, WEXITED [| WNOHANG])`: reaps the process. `Ok(None)` with `nohang` when it
/// is still running.
pub(crate) fn wait(pidfd: BorrowedFd<'_>, nohang: bool) -> SysResult<Option<Exit>> {
    const P_PIDFD: libc::idtype_t = 3;
    let options = libc::WEXITED | if nohang { libc::WNOHANG } else { 0 };
    // SAFETY: siginfo_t is plain data; all-zero is valid and lets us detect "no change" (si_pid 0).
    let mut info: libc::siginfo_t = unsafe { std::mem::zeroed() };
    retry(|| {
        // SAFETY: `info` is a valid writable siginfo_t.
        check_int(unsafe { libc::waitid(P_PIDFD, pidfd.as_raw_fd() as libc::id_t, &mut info, options) })
    })?;
    // SAFETY: waitid filled `info` (or left it zeroed with WNOHANG); si_pid/si_status are valid to
    // read for SIGCHLD siginfo.
    let (pid, status) = unsafe { (info.si_pid(), info.si_status()) };
    if pid == 0 {
        return Ok(None);
    }
    Ok(Some(match info.si_code {
        libc::CLD_EXITED => Exit::Code(status),
        libc::CLD_DUMPED => Exit::Signal { signal: status, core_dumped: true },
        _ => Exit::Signal { signal: status, core_dumped: false },
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
