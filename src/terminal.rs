//! [`Terminal`]: the caller's end of a payload's pseudo-terminal
//! ([`Command::terminal`](crate::Command::terminal)).

use std::fs::File;
use std::io::{self, Read, Write};
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd, RawFd};

use crate::sys::pty;

/// The master side of a payload's pseudo-terminal: what the payload writes to its terminal is
/// read here, what is written here is its terminal input (including control characters: `^C`
/// is `b"\x03"`, which interrupts the payload's foreground job). Reading returns end of file
/// once no process holds the payload's side any more.
///
/// ```no_run
/// use std::io::{Read, Write};
/// use stockade::{Mount, Namespaces, Root, Sandbox};
/// # fn main() -> Result<(), Box<dyn std::error::Error>> {
/// let sandbox = Sandbox::builder()
///     .namespaces(Namespaces::all())
///     .root(Root::tmpfs())
///     .mounts(Mount::host_system())
///     .build()?;
/// let mut child = sandbox.command("/bin/sh").arg("-i").terminal(24, 80).spawn()?;
/// let mut terminal = child.terminal.take().unwrap();
/// terminal.write_all(b"tty; exit\n")?;
/// let mut screen = String::new();
/// terminal.read_to_string(&mut screen)?; // the echo, the prompt, "/dev/pts/0"
/// child.wait()?;
/// # Ok(()) }
/// ```
#[derive(Debug)]
pub struct Terminal(File);

impl Terminal {
    pub(crate) fn new(master: OwnedFd) -> Terminal {
        Terminal(File::from(master))
    }

    /// Sets the terminal's size; the kernel sends `SIGWINCH` to the payload's foreground job.
    pub fn resize(&self, rows: u16, cols: u16) -> io::Result<()> {
        pty::set_size(self.0.as_fd(), pty::Size { rows, cols })
    }

    /// The terminal's size: `(rows, cols)`.
    pub fn size(&self) -> io::Result<(u16, u16)> {
        pty::size(self.0.as_fd()).map(|s| (s.rows, s.cols))
    }

    /// The size of any terminal, e.g. the caller's own stdin, to give a payload the same one:
    /// `(rows, cols)`. `ENOTTY` when `fd` is no terminal.
    pub fn size_of(fd: impl AsFd) -> io::Result<(u16, u16)> {
        pty::size(fd.as_fd()).map(|s| (s.rows, s.cols))
    }

    /// Another handle to the same terminal (e.g. one thread reads while another writes).
    pub fn try_clone(&self) -> io::Result<Terminal> {
        self.0.try_clone().map(Terminal)
    }
}

/// A master reads `EIO` once the last descriptor of the other side is closed: that is the end.
pub(crate) fn end_of_terminal(result: io::Result<usize>) -> io::Result<usize> {
    match result {
        Err(e) if e.raw_os_error() == Some(libc::EIO) => Ok(0),
        other => other,
    }
}

impl Read for Terminal {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        end_of_terminal(self.0.read(buf))
    }
}

impl Read for &Terminal {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        end_of_terminal((&self.0).read(buf))
    }
}

impl Write for Terminal {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.0.write(buf)
    }
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

impl Write for &Terminal {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        (&self.0).write(buf)
    }
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

impl AsFd for Terminal {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.0.as_fd()
    }
}

impl AsRawFd for Terminal {
    fn as_raw_fd(&self) -> RawFd {
        self.0.as_raw_fd()
    }
}

impl From<Terminal> for OwnedFd {
    fn from(terminal: Terminal) -> OwnedFd {
        terminal.0.into()
    }
}
