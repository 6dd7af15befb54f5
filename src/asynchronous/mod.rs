//! Sandboxes awaited from async code (feature `tokio`): [`AsyncChild`], what
//! [`Command::spawn_async`](crate::Command::spawn_async) returns.
//!
//! The sandbox's pidfd is registered with tokio's reactor, so waiting takes no thread: the
//! task sleeps until the pidfd turns readable (the sandbox ended) or a timer fires (a wall-clock
//! deadline, the next CPU-time check). The supervision is [`Child`]'s own, one look at a time,
//! so limits, accounting and cleanup are exactly those of a blocking wait. The payload's piped
//! stdio become tokio pipes ([`AsyncRead`](tokio::io::AsyncRead) /
//! [`AsyncWrite`](tokio::io::AsyncWrite)).
//!
//! Dropping an [`AsyncChild`] that has not been awaited to its end (a cancelled future drops
//! it) kills the sandbox and reaps it, as dropping a [`Child`] does: the whole tree dies with
//! `SIGKILL`, which takes well under a millisecond, and its cgroup is removed.

use std::io;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd, RawFd};

use tokio::io::AsyncReadExt;
use tokio::io::unix::AsyncFd;
use tokio::net::unix::pipe;

use crate::child::Progress;
use crate::{Child, Error, ExitStatus, Output};

/// A running (or finished) sandbox, awaited without blocking a thread. The async counterpart
/// of [`Child`], with the same supervision: the sandbox's
/// [`timeout`](crate::SandboxBuilder::timeout) and
/// [`cpu_time_limit`](crate::SandboxBuilder::cpu_time_limit) are enforced by timers while it is
/// awaited (and, with a pid namespace, the wall clock by the sandbox's init even when nobody
/// awaits it).
///
/// ```no_run
/// use stockade::{Namespaces, Sandbox};
/// # async fn run() -> Result<(), stockade::Error> {
/// let sandbox = Sandbox::builder().namespaces(Namespaces::USER | Namespaces::PID).build()?;
/// let out = sandbox.command("/bin/echo").arg("hi").output_async().await?;
/// assert_eq!(out.stdout, b"hi\n");
/// # Ok(()) }
/// ```
#[derive(Debug)]
pub struct AsyncChild {
    child: Child,
    /// A duplicate of the child's pidfd, registered with the reactor.
    pidfd: AsyncFd<OwnedFd>,
    /// The payload's stdin, when it was [`Stdio::piped`](crate::Stdio::piped).
    pub stdin: Option<AsyncChildStdin>,
    /// The payload's stdout, when it was [`Stdio::piped`](crate::Stdio::piped).
    pub stdout: Option<AsyncChildStdout>,
    /// The payload's stderr, when it was [`Stdio::piped`](crate::Stdio::piped).
    pub stderr: Option<AsyncChildStderr>,
    /// The caller's end of the payload's terminal
    /// ([`Command::terminal`](crate::Command::terminal)).
    pub terminal: Option<AsyncTerminal>,
}

impl AsyncChild {
    /// Registers `child` with the current tokio runtime's reactor, and its piped stdio.
    pub(crate) fn new(mut child: Child) -> Result<AsyncChild, Error> {
        let register = |op: &'static str| move |source: io::Error| Error::Io { op, source };
        if tokio::runtime::Handle::try_current().is_err() {
            // Dropping `child` kills and reaps it.
            return Err(Error::Io {
                op: "register the sandbox with tokio",
                source: io::Error::other("not called from within a tokio runtime"),
            });
        }
        let stdin = child.stdin.take().map(OwnedFd::from);
        let stdout = child.stdout.take().map(OwnedFd::from);
        let stderr = child.stderr.take().map(OwnedFd::from);
        let stdin = stdin
            .map(|fd| pipe::Sender::from_owned_fd(fd).map(AsyncChildStdin))
            .transpose()
            .map_err(register("register the sandbox's stdin with tokio"))?;
        let stdout = stdout
            .map(|fd| pipe::Receiver::from_owned_fd(fd).map(AsyncChildStdout))
            .transpose()
            .map_err(register("register the sandbox's stdout with tokio"))?;
        let stderr = stderr
            .map(|fd| pipe::Receiver::from_owned_fd(fd).map(AsyncChildStderr))
            .transpose()
            .map_err(register("register the sandbox's stderr with tokio"))?;
        let pidfd = child
            .as_fd()
            .try_clone_to_owned()
            .and_then(|fd| crate::sys::register_with_tokio(fd, tokio::io::Interest::READABLE))
            .map_err(register("register the sandbox's pidfd with tokio"))?;
        let terminal = child
            .terminal
            .take()
            .map(AsyncTerminal::new)
            .transpose()
            .map_err(register("register the sandbox's terminal with tokio"))?;
        Ok(AsyncChild { child, pidfd, stdin, stdout, stderr, terminal })
    }

    fn inner(&mut self) -> &mut Child {
        &mut self.child
    }

    /// The pid of the sandbox's first process, as [`Child::id`].
    pub fn id(&self) -> u32 {
        self.child.id()
    }

    /// Limits that were requested but are not enforced on this host, as
    /// [`Child::unenforced`].
    pub fn unenforced(&self) -> &[&'static str] {
        self.child.unenforced()
    }

    /// Waits for the sandbox to end, enforcing its time limits with timers. Closes the
    /// payload's stdin first, as [`Child::wait`] does. Cancel-safe: dropping the future and
    /// calling `wait` again goes on where it was.
    pub async fn wait(&mut self) -> io::Result<ExitStatus> {
        drop(self.stdin.take());
        self.supervise(None).await
    }

    /// Waits at most `timeout`; if the sandbox still runs then, kills it (the whole tree) and
    /// returns a status whose [`limit`](ExitStatus::limit) is
    /// [`Limit::WallClock`](crate::Limit::WallClock), as [`Child::wait_timeout`].
    pub async fn wait_timeout(&mut self, timeout: std::time::Duration) -> io::Result<ExitStatus> {
        drop(self.stdin.take());
        self.supervise(std::time::Instant::now().checked_add(timeout)).await
    }

    /// Returns the status if the sandbox has ended, without waiting. Unlike
    /// [`Child::try_wait`], a time limit that has passed kills the sandbox here without
    /// waiting for it to end: `None` until a later call (or [`wait`](AsyncChild::wait)) reaps
    /// it.
    pub fn try_wait(&mut self) -> io::Result<Option<ExitStatus>> {
        match self.inner().progress(None)? {
            Progress::Ended(status) => Ok(Some(status)),
            Progress::Running(_) => Ok(None),
        }
    }

    async fn supervise(&mut self, deadline: Option<std::time::Instant>) -> io::Result<ExitStatus> {
        let mut stuck = false;
        loop {
            let wake = match self.inner().progress(deadline)? {
                Progress::Ended(status) => return Ok(status),
                Progress::Running(wake) => wake,
            };
            if stuck {
                // Readable, yet nothing to reap (a tracer of its own holds the exited process):
                // look again a little later rather than spin.
                let later = std::time::Instant::now() + crate::child::STUCK_BACKOFF;
                tokio::time::sleep_until(wake.map_or(later, |w| w.min(later)).into()).await;
                stuck = false;
                continue;
            }
            let ended = async {
                let mut guard = self.pidfd.readable().await?;
                // Readable: the sandbox has ended (the next look reaps it). A stale readiness
                // is cleared only if no newer event came meanwhile (tokio tracks that).
                let readable = pidfd_readable(guard.get_inner().as_fd());
                if !readable {
                    guard.clear_ready();
                }
                io::Result::Ok(readable)
            };
            stuck = match wake {
                None => ended.await?,
                Some(at) => tokio::select! {
                    result = ended => result?,
                    () = tokio::time::sleep_until(at.into()) => false,
                },
            };
        }
    }

    /// Sends `SIGKILL` to the sandbox (with a pid namespace or a cgroup, every process in it)
    /// without waiting; [`wait`](AsyncChild::wait) then collects it. As [`Child::kill`].
    pub fn start_kill(&mut self) -> io::Result<()> {
        self.inner().kill()
    }

    /// Kills the sandbox and waits for it to end.
    pub async fn kill(&mut self) -> io::Result<ExitStatus> {
        self.start_kill()?;
        self.wait().await
    }

    /// Sends `signal` to the sandbox, as [`Child::signal`].
    pub fn signal(&mut self, signal: i32) -> io::Result<()> {
        self.inner().signal(signal)
    }

    /// Waits for the sandbox while collecting its piped stdout and stderr, as
    /// [`Child::wait_with_output`]: both pipes are read at once, the time limits hold
    /// meanwhile, and once the sandbox has ended past its wall-clock limit, what is already in
    /// the pipes is taken without waiting for processes outside its control to close them.
    ///
    /// # Errors
    /// [`Error::Io`] if reading the pipes or waiting fails.
    pub async fn wait_with_output(mut self) -> Result<Output, Error> {
        drop(self.stdin.take());
        let mut pipes = [self.stdout.take().map(|o| o.0), self.stderr.take().map(|e| e.0)];
        let mut bufs = [Vec::new(), Vec::new()];
        let read_error = |source| Error::Io { op: "read sandbox output", source };
        let wait_error = |source| Error::Io { op: "wait for sandbox", source };
        let status = {
            let [out_pipe, err_pipe] = &mut pipes;
            let [out_buf, err_buf] = &mut bufs;
            let reading =
                async { tokio::try_join!(read_to_end(out_pipe, out_buf), read_to_end(err_pipe, err_buf)) };
            tokio::pin!(reading);
            tokio::select! {
                read = &mut reading => {
                    read.map_err(read_error)?;
                    self.wait().await.map_err(wait_error)?
                }
                status = self.wait() => {
                    let status = status.map_err(wait_error)?;
                    // Read to the end, as the blocking version does, but no later than the
                    // wall-clock deadline: past it, what still holds the pipes is outside the
                    // sandbox's control (it has ended).
                    match self.child.wall_deadline() {
                        None => {
                            reading.await.map_err(read_error)?;
                        }
                        Some(deadline) => tokio::select! {
                            read = &mut reading => {
                                read.map_err(read_error)?;
                            }
                            () = tokio::time::sleep_until(deadline.into()) => {}
                        },
                    }
                    status
                }
            }
        };
        // Whatever is already in pipes still open, without waiting (read(2) itself: tokio's
        // readiness may not know of it).
        for (pipe, buf) in pipes.iter().zip(&mut bufs) {
            if let Some(pipe) = pipe {
                drain(pipe.as_fd(), buf).map_err(read_error)?;
            }
        }
        let [stdout, stderr] = bufs;
        Ok(Output { status, stdout, stderr })
    }
}

/// Whether the pidfd `fd` is readable now (its process has exited).
fn pidfd_readable(fd: BorrowedFd<'_>) -> bool {
    let mut fds = [nix::poll::PollFd::new(fd, nix::poll::PollFlags::POLLIN)];
    matches!(nix::poll::poll(&mut fds, nix::poll::PollTimeout::ZERO), Ok(n) if n > 0)
}

/// Reads `pipe` to its end into `buf`, then drops it; cancel-safe (what was read stays in
/// `buf`, the pipe stays for whoever goes on).
async fn read_to_end(pipe: &mut Option<pipe::Receiver>, buf: &mut Vec<u8>) -> io::Result<()> {
    let mut chunk = [0u8; 16 * 1024];
    while let Some(open) = pipe {
        match open.read(&mut chunk).await? {
            0 => *pipe = None,
            n => buf.extend_from_slice(&chunk[..n]),
        }
    }
    Ok(())
}

/// Takes what the (non-blocking) pipe `fd` holds now, without waiting.
fn drain(fd: BorrowedFd<'_>, buf: &mut Vec<u8>) -> io::Result<()> {
    let mut chunk = [0u8; 16 * 1024];
    loop {
        match nix::unistd::read(fd, &mut chunk) {
            Ok(0) | Err(nix::errno::Errno::EAGAIN) => return Ok(()),
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
            Err(nix::errno::Errno::EINTR) => {}
            Err(e) => return Err(e.into()),
        }
    }
}

macro_rules! async_pipe_end {
    ($(#[$doc:meta])* $name:ident, $inner:ty, $($trait:ident)+) => {
        $(#[$doc])*
        #[derive(Debug)]
        pub struct $name($inner);

        impl AsFd for $name {
            fn as_fd(&self) -> BorrowedFd<'_> {
                self.0.as_fd()
            }
        }

        impl AsRawFd for $name {
            fn as_raw_fd(&self) -> RawFd {
                self.0.as_raw_fd()
            }
        }

        $(async_pipe_end!(@$trait $name);)+
    };
    (@AsyncRead $name:ident) => {
        impl tokio::io::AsyncRead for $name {
            fn poll_read(
                self: std::pin::Pin<&mut Self>,
                cx: &mut std::task::Context<'_>,
                buf: &mut tokio::io::ReadBuf<'_>,
            ) -> std::task::Poll<io::Result<()>> {
                std::pin::Pin::new(&mut self.get_mut().0).poll_read(cx, buf)
            }
        }
    };
    (@AsyncWrite $name:ident) => {
        impl tokio::io::AsyncWrite for $name {
            fn poll_write(
                self: std::pin::Pin<&mut Self>,
                cx: &mut std::task::Context<'_>,
                buf: &[u8],
            ) -> std::task::Poll<io::Result<usize>> {
                std::pin::Pin::new(&mut self.get_mut().0).poll_write(cx, buf)
            }

            fn poll_flush(
                self: std::pin::Pin<&mut Self>,
                cx: &mut std::task::Context<'_>,
            ) -> std::task::Poll<io::Result<()>> {
                std::pin::Pin::new(&mut self.get_mut().0).poll_flush(cx)
            }

            fn poll_shutdown(
                self: std::pin::Pin<&mut Self>,
                cx: &mut std::task::Context<'_>,
            ) -> std::task::Poll<io::Result<()>> {
                std::pin::Pin::new(&mut self.get_mut().0).poll_shutdown(cx)
            }
        }
    };
}

async_pipe_end!(
    /// The writing end of a payload's piped stdin, for async code.
    AsyncChildStdin, pipe::Sender, AsyncWrite
);
async_pipe_end!(
    /// The reading end of a payload's piped stdout, for async code.
    AsyncChildStdout, pipe::Receiver, AsyncRead
);
async_pipe_end!(
    /// The reading end of a payload's piped stderr, for async code.
    AsyncChildStderr, pipe::Receiver, AsyncRead
);

/// The caller's end of a payload's terminal, for async code: [`Terminal`](crate::Terminal)'s
/// counterpart, read and written through tokio's reactor. Reading ends (0 bytes) once no
/// process holds the payload's side any more.
#[derive(Debug)]
pub struct AsyncTerminal(AsyncFd<OwnedFd>);

impl AsyncTerminal {
    fn new(terminal: crate::Terminal) -> io::Result<AsyncTerminal> {
        let fd = OwnedFd::from(terminal);
        let flags = nix::fcntl::fcntl(&fd, nix::fcntl::FcntlArg::F_GETFL)?;
        let flags = nix::fcntl::OFlag::from_bits_truncate(flags) | nix::fcntl::OFlag::O_NONBLOCK;
        nix::fcntl::fcntl(&fd, nix::fcntl::FcntlArg::F_SETFL(flags))?;
        let interest = tokio::io::Interest::READABLE | tokio::io::Interest::WRITABLE;
        crate::sys::register_with_tokio(fd, interest).map(AsyncTerminal)
    }

    /// Sets the terminal's size; the kernel sends `SIGWINCH` to the payload's foreground job.
    pub fn resize(&self, rows: u16, cols: u16) -> io::Result<()> {
        crate::sys::pty::set_size(self.0.get_ref().as_fd(), crate::sys::pty::Size { rows, cols })
    }

    /// The terminal's size: `(rows, cols)`.
    pub fn size(&self) -> io::Result<(u16, u16)> {
        crate::sys::pty::size(self.0.get_ref().as_fd()).map(|s| (s.rows, s.cols))
    }
}

impl AsFd for AsyncTerminal {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.0.get_ref().as_fd()
    }
}

impl tokio::io::AsyncRead for AsyncTerminal {
    fn poll_read(
        self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &mut tokio::io::ReadBuf<'_>,
    ) -> std::task::Poll<io::Result<()>> {
        loop {
            let mut guard = std::task::ready!(self.0.poll_read_ready(cx))?;
            let unfilled = buf.initialize_unfilled();
            let read = guard.try_io(|fd| {
                crate::terminal::end_of_terminal(nix::unistd::read(fd, unfilled).map_err(io::Error::from))
            });
            match read {
                Ok(Ok(n)) => {
                    buf.advance(n);
                    return std::task::Poll::Ready(Ok(()));
                }
                Ok(Err(e)) => return std::task::Poll::Ready(Err(e)),
                Err(_would_block) => continue,
            }
        }
    }
}

impl tokio::io::AsyncWrite for AsyncTerminal {
    fn poll_write(
        self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        data: &[u8],
    ) -> std::task::Poll<io::Result<usize>> {
        loop {
            let mut guard = std::task::ready!(self.0.poll_write_ready(cx))?;
            match guard.try_io(|fd| nix::unistd::write(fd, data).map_err(io::Error::from)) {
                Ok(result) => return std::task::Poll::Ready(result),
                Err(_would_block) => continue,
            }
        }
    }

    fn poll_flush(
        self: std::pin::Pin<&mut Self>,
        _: &mut std::task::Context<'_>,
    ) -> std::task::Poll<io::Result<()>> {
        std::task::Poll::Ready(Ok(()))
    }

    fn poll_shutdown(
        self: std::pin::Pin<&mut Self>,
        _: &mut std::task::Context<'_>,
    ) -> std::task::Poll<io::Result<()>> {
        std::task::Poll::Ready(Ok(()))
    }
}
