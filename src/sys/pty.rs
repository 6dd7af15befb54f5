//! Pseudo-terminals: the payload's, made by the child inside the sandbox (allocation-free, raw
//! calls), and the caller's end of it (window size).
//!
//! The child opens the multiplexer of the sandbox's own devpts instance, `/dev/pts/ptmx` (a
//! terminal is refused before the clone where the sandbox has no devpts of its own), so the
//! terminal exists only there: the host's devpts never lists it, and the payload never
//! reaches a terminal of the host's.

use std::os::fd::{AsRawFd, BorrowedFd, RawFd};

use super::{Errno, SysResult, fd_of, retry};

/// A terminal's size, as `TIOCSWINSZ` takes it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Size {
    pub(crate) rows: u16,
    pub(crate) cols: u16,
}

impl Size {
    fn winsize(self) -> libc::winsize {
        libc::winsize { ws_row: self.rows, ws_col: self.cols, ws_xpixel: 0, ws_ypixel: 0 }
    }
}

/// Opens a new pseudo-terminal in the sandbox (child side): returns `(master, slave)`, both
/// close-on-exec, the slave unlocked and of size `size`. Owned by this process's ids as they
/// are now (call it after the payload's credentials are set, so its terminal is its own).
pub(crate) fn open(size: Size) -> SysResult<(RawFd, RawFd)> {
    let flags = libc::O_RDWR | libc::O_NOCTTY;
    // The multiplexer of the sandbox's own devpts instance (the parent checked that its plan
    // mounts one at /dev/pts): never `/dev/ptmx`, which may lead to the host's.
    let master = super::open(c"/dev/pts/ptmx", flags)?;
    let opened = (|| {
        let unlock: libc::c_int = 0;
        // SAFETY: TIOCSPTLCK reads an int from the pointer, which is live.
        unsafe { raw!(libc::SYS_ioctl, master, libc::TIOCSPTLCK, &unlock as *const libc::c_int) }?;
        let winsize = size.winsize();
        // SAFETY: TIOCSWINSZ reads a winsize from the pointer, which is live.
        unsafe { raw!(libc::SYS_ioctl, master, libc::TIOCSWINSZ, &winsize as *const libc::winsize) }?;
        // The slave through the master (Linux 4.13+): no path lookup that a planted link or
        // another devpts could redirect.
        // SAFETY: TIOCGPTPEER takes open flags as an integer.
        fd_of(unsafe { raw!(libc::SYS_ioctl, master, libc::TIOCGPTPEER, flags | libc::O_CLOEXEC) })
    })();
    match opened {
        Ok(slave) => Ok((master, slave)),
        Err(e) => {
            super::close(master);
            Err(e)
        }
    }
}

/// Makes `slave` the controlling terminal of this process (leading a session without one), and
/// the descriptors `targets` (0, 1, 2) copies of it; closes `slave` unless it is one of them.
pub(crate) fn attach(slave: RawFd, targets: [bool; 3]) -> SysResult<()> {
    // A payload under an init is a member of the init's session: it leads one of its own.
    // (EPERM: it leads a process group, which only a session leader without an init does.)
    match super::setsid() {
        Ok(()) | Err(Errno(libc::EPERM)) => {}
        Err(e) => return Err(e),
    }
    // SAFETY: TIOCSCTTY takes an integer (0: do not steal a terminal another session has).
    unsafe { raw!(libc::SYS_ioctl, slave, libc::TIOCSCTTY, 0) }?;
    for (fd, _) in targets.iter().enumerate().filter(|(_, on)| **on) {
        super::dup_onto(slave, fd as RawFd)?;
    }
    if slave > 2 {
        super::close(slave);
    }
    Ok(())
}

/// Sets the window size of the terminal whose master is `master` (parent side); the kernel
/// signals SIGWINCH to the terminal's foreground process group.
pub(crate) fn set_size(master: BorrowedFd<'_>, size: Size) -> std::io::Result<()> {
    let winsize = size.winsize();
    // SAFETY: TIOCSWINSZ reads a winsize from the pointer, which is live.
    retry(|| unsafe { raw!(libc::SYS_ioctl, master.as_raw_fd(), libc::TIOCSWINSZ, &winsize as *const _) })
        .map(drop)
        .map_err(Into::into)
}

/// The window size of the terminal whose master is `master` (parent side).
pub(crate) fn size(master: BorrowedFd<'_>) -> std::io::Result<Size> {
    let mut winsize = libc::winsize { ws_row: 0, ws_col: 0, ws_xpixel: 0, ws_ypixel: 0 };
    // SAFETY: TIOCGWINSZ writes a winsize to the pointer, which is live and writable.
    retry(|| unsafe {
        raw!(libc::SYS_ioctl, master.as_raw_fd(), libc::TIOCGWINSZ, &mut winsize as *mut libc::winsize)
    })?;
    Ok(Size { rows: winsize.ws_row, cols: winsize.ws_col })
}
