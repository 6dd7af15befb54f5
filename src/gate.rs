//! The start gate: a sandbox set up and waiting to be started, the state OCI's `create` leaves
//! a container in.
//!
//! [`Command::spawn_created`](crate::Command::spawn_created) sets the sandbox up as far as
//! anything can fail before its start, then the payload waits for a connection on the gate's
//! listening socket, a file anyone allowed to connect to it can name: the process that
//! created the sandbox, or a later one (a runtime's `start`). [`StartGate::start`] connects;
//! the payload closes the listening socket (a gate opens once), says it took the start,
//! finishes its setup and execs, and the starter learns which: end of file once the exec
//! happened, or the failed step.

use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

use nix::sys::socket::{AddressFamily, SockFlag, SockType, UnixAddr};

use crate::Error;
use crate::plan::FAILURE_LEN;

/// A listening socket a created sandbox waits on before its payload starts.
///
/// ```no_run
/// use stockade::{Namespaces, Sandbox, StartGate};
/// # fn main() -> Result<(), stockade::Error> {
/// let sandbox = Sandbox::builder().namespaces(Namespaces::all()).build()?;
/// let gate = StartGate::bind("/run/my-runtime/box1.gate")?;
/// let mut child = sandbox.command("/bin/echo").arg("started").spawn_created(gate)?;
/// // Set up, nothing of the payload's has run yet. Later, from any process:
/// StartGate::start("/run/my-runtime/box1.gate")?;
/// child.wait().ok();
/// # Ok(()) }
/// ```
#[derive(Debug)]
pub struct StartGate {
    listener: OwnedFd,
    path: PathBuf,
}

impl StartGate {
    /// Makes the gate: a Unix `SOCK_SEQPACKET` socket listening at `path` (which must not
    /// exist), mode 0600. The file stays when the gate is dropped (the sandbox keeps the
    /// socket, and another process may start it): remove it once started. Who may start the
    /// sandbox is whoever may connect to it, and the mode is set by path after the bind: put it
    /// in a directory only the caller can write and reach. Paths longer than a socket address can hold are
    /// reached through their directory's descriptor.
    ///
    /// # Errors
    /// [`Error::Io`] when the socket cannot be made or bound there.
    pub fn bind(path: impl AsRef<Path>) -> Result<StartGate, Error> {
        let path = path.as_ref();
        let io = |op, e: nix::Error| Error::Io { op, source: e.into() };
        let listener =
            nix::sys::socket::socket(AddressFamily::Unix, SockType::SeqPacket, SockFlag::SOCK_CLOEXEC, None)
                .map_err(|e| io("make a start gate socket", e))?;
        let (_dir, address) = address(path)?;
        nix::sys::socket::bind(listener.as_raw_fd(), &address).map_err(|e| Error::Io {
            op: "bind the start gate",
            source: std::io::Error::new(std::io::Error::from(e).kind(), format!("{}: {e}", path.display())),
        })?;
        let gate = StartGate { listener, path: path.to_owned() };
        use std::os::unix::fs::PermissionsExt;
        let ready = std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))
            .map_err(|source| Error::Io { op: "restrict the start gate to its owner", source })
            .and_then(|()| {
                let backlog = nix::sys::socket::Backlog::new(1).unwrap_or(nix::sys::socket::Backlog::MAXCONN);
                nix::sys::socket::listen(&gate.listener, backlog)
                    .map_err(|e| io("listen at the start gate", e))
            });
        if let Err(e) = ready {
            // Nothing left behind: the socket file goes with the error.
            let _ = std::fs::remove_file(path);
            return Err(e);
        }
        Ok(gate)
    }

    /// Where the gate listens.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Opens the gate at `path`: the sandbox waiting there finishes its setup and execs its
    /// payload. Returns once it has (end of file), or with the step that failed.
    ///
    /// # Errors
    /// [`Error::Io`] when nothing waits there (the sandbox was started already, or has ended:
    /// [`ConnectionRefused`](std::io::ErrorKind::ConnectionRefused), also when a copy of the
    /// closed gate's socket still held by another process let the connection in, or when the
    /// sandbox ended at its gate without taking the start; `ENOENT` without a gate);
    /// [`Error::Setup`] or [`Error::Exec`] for a failed step, as
    /// [`Command::spawn`](crate::Command::spawn) reports them, except that the paths the step
    /// worked on are not known here and are empty.
    pub fn start(path: impl AsRef<Path>) -> Result<(), Error> {
        let path = path.as_ref();
        let socket =
            nix::sys::socket::socket(AddressFamily::Unix, SockType::SeqPacket, SockFlag::SOCK_CLOEXEC, None)
                .map_err(|e| Error::Io { op: "make a socket to open the start gate", source: e.into() })?;
        let (_dir, address) = address(path)?;
        nix::sys::socket::connect(socket.as_raw_fd(), &address).map_err(|e| Error::Io {
            op: "open the start gate",
            source: std::io::Error::new(
                std::io::Error::from(e).kind(),
                format!("{}: {e} (no sandbox waits there)", path.display()),
            ),
        })?;
        let read = |record: &mut [u8]| loop {
            match nix::unistd::read(&socket, record) {
                Err(nix::errno::Errno::EINTR) => continue,
                other => break other,
            }
        };
        let mut record = [0u8; FAILURE_LEN];
        // First the sandbox says it took the start. Without that (end of file or ECONNRESET),
        // the listening socket closed without taking the connection: the sandbox ended at its
        // gate, or had been started already and a copy of its socket that another process held
        // for a moment (a fork of the embedding program) let the connection in.
        match read(&mut record) {
            Ok(1) if record[0] == b't' => {}
            Ok(0) | Err(nix::errno::Errno::ECONNRESET) => {
                return Err(Error::Io {
                    op: "open the start gate",
                    source: std::io::Error::new(
                        std::io::ErrorKind::ConnectionRefused,
                        format!(
                            "{}: the gate closed without taking the start (the sandbox was started already, or ended)",
                            path.display()
                        ),
                    ),
                });
            }
            Ok(n) => return Err(unexpected(n)),
            Err(e) => return Err(Error::Io { op: "read the started sandbox's answer", source: e.into() }),
        }
        match read(&mut record) {
            Ok(0) => Ok(()),
            Ok(FAILURE_LEN) => Err(crate::plan::decode_failure(&record, None)),
            Ok(n) => Err(unexpected(n)),
            Err(e) => Err(Error::Io { op: "read the started sandbox's result", source: e.into() }),
        }
    }
}

fn unexpected(n: usize) -> Error {
    Error::Io {
        op: "read the started sandbox's result",
        source: std::io::Error::new(std::io::ErrorKind::InvalidData, format!("{n} bytes")),
    }
}

impl AsFd for StartGate {
    /// The listening socket.
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.listener.as_fd()
    }
}

/// The socket address of `path`: the path itself when it fits, otherwise its name in the
/// directory's `/proc/self/fd` entry (kept open in the returned descriptor).
fn address(path: &Path) -> Result<(Option<OwnedFd>, UnixAddr), Error> {
    let invalid = |reason: &str| Error::invalid("start gate", path.display(), reason.to_owned());
    // sun_path holds 108 bytes with the terminating NUL.
    if path.as_os_str().len() < 108 {
        return UnixAddr::new(path).map(|a| (None, a)).map_err(|_| invalid("not a socket path"));
    }
    let (Some(dir), Some(name)) = (path.parent(), path.file_name()) else {
        return Err(invalid("has no directory and name"));
    };
    let dir = nix::fcntl::open(
        dir,
        nix::fcntl::OFlag::O_PATH | nix::fcntl::OFlag::O_DIRECTORY | nix::fcntl::OFlag::O_CLOEXEC,
        nix::sys::stat::Mode::empty(),
    )
    .map_err(|e| Error::Io { op: "open the start gate's directory", source: e.into() })?;
    let mut short = format!("/proc/self/fd/{}/", dir.as_raw_fd()).into_bytes();
    short.extend_from_slice(name.as_bytes());
    let short = PathBuf::from(std::ffi::OsStr::from_bytes(&short));
    let address = UnixAddr::new(&short).map_err(|_| invalid("its name is too long for a socket address"))?;
    Ok((Some(dir), address))
}
