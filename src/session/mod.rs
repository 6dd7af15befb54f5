//! Warm sandboxes: a [`Session`] is a started sandbox (namespaces, root, cgroup and init
//! alive) in which commands run like `docker exec`, and a [`Pool`] keeps sessions started ahead.
//!
//! A session's sandbox runs a *holder* as its payload: the init program in a mode where it only
//! waits, with the payload's credentials, syscall filter and Landlock rules. A command joins
//! the holder's namespaces (`setns` through its pidfd, all at once), so it sees the session's
//! filesystem as earlier commands left it, then takes its own credentials, filter and rules and
//! execs, as any payload does. Where the sandbox has limits or a cgroup namespace, each command
//! gets a cgroup of its own with those limits, so its usage (peak memory, CPU time, OOM,
//! processes) is its own and whatever it leaves running is killed when it ends; without one,
//! what a command leaves running stays in the session (holding its output pipes open, if it
//! inherited them) until the session stops.

mod pool;

use std::ffi::OsStr;
use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::os::unix::fs::OpenOptionsExt;
use std::sync::Arc;

pub use pool::{Pool, Pooled};

use crate::{Child, Command, Error, Namespaces, Sandbox, Stdio};

/// A started sandbox in which [`command`](Session::command)s run, sharing its filesystem
/// state. Its payload is a *holder* that only waits (the init program, with the payload's
/// credentials, filter and Landlock rules); each command joins the holder's namespaces and
/// root, takes its own credentials, filter and rules, and (where the sandbox has limits or a
/// cgroup namespace) gets a cgroup of its own with those limits, so its usage is its own and
/// what it leaves running ends with it. Ends (every process in it killed, its cgroups removed) on
/// [`stop`](Session::stop) or drop.
///
/// Cost: a command's joiner is a copy of the embedding program (the program's own memory must
/// not be reachable from the session's processes, which share the command's ids: see
/// `start_joiner` in `src/sys/child.rs`), so a command costs more the more memory the program
/// holds (`benches/embedder_size.rs`: about 2.5 ms at 50 MiB resident, 110 ms at
/// 4 GiB, 220 ms at 8 GiB); a sandbox's own spawn does not copy it. From a large program,
/// [`Sandbox::command`] is the faster way to run one command.
///
/// ```no_run
/// use stockade::{Mount, Namespaces, Root, Sandbox};
/// # fn main() -> Result<(), stockade::Error> {
/// let sandbox = Sandbox::builder()
///     .namespaces(Namespaces::all())
///     .root(Root::tmpfs())
///     .mounts(Mount::host_system())
///     .mount(Mount::tmpfs("/work"))
///     .memory_limit(256 << 20)
///     .build()?;
/// let session = sandbox.start()?;
/// session.command("/bin/sh").args(["-c", "echo hi > /work/a"]).status()?;
/// let out = session.command("/bin/cat").arg("/work/a").output()?;
/// assert_eq!(out.stdout, b"hi\n");
/// # Ok(()) }
/// ```
#[derive(Debug)]
pub struct Session {
    target: Arc<Target>,
    /// The session's own sandbox (its init, or the holder itself without a pid namespace).
    child: Child,
}

/// What a session command joins.
#[derive(Debug)]
pub(crate) struct Target {
    pub(crate) sandbox: Sandbox,
    /// A pidfd of the holder.
    pub(crate) holder: OwnedFd,
    /// The holder's root directory, where commands start.
    pub(crate) root: OwnedFd,
    /// The namespaces to join (`CLONE_NEW*`).
    pub(crate) flags: libc::c_int,
    /// Groups the command joins (a detached sandbox's); `None`: a group of its own with the
    /// sandbox's limits, if it has any.
    pub(crate) cgroups: Option<Vec<std::path::PathBuf>>,
}

/// The holder's root directory (`/proc/<pid>/root`, an `O_PATH` handle), proven to be the
/// holder's: its pidfd says it is still alive after the open, so its pid was not reused.
pub(crate) fn holder_root(holder: &OwnedFd) -> Result<OwnedFd, Error> {
    let pid = crate::sys::pidfd::pid_of(holder.as_fd())
        .map_err(|e| Error::spawn("read the session holder's pid", e))?;
    let path = format!("/proc/{pid}/root");
    let root = std::fs::File::options()
        .read(true)
        .custom_flags(libc::O_PATH | libc::O_DIRECTORY)
        .open(&path)
        .map_err(|e| Error::spawn(format!("open {path}"), e))?;
    let mut poll = [nix::poll::PollFd::new(holder.as_fd(), nix::poll::PollFlags::POLLIN)];
    match nix::poll::poll(&mut poll, nix::poll::PollTimeout::ZERO) {
        Ok(0) => Ok(root.into()),
        _ => Err(Error::spawn("start a session", std::io::Error::other("the holder ended while starting"))),
    }
}

impl Target {
    /// The init program's descriptor (a command's relay runs it).
    pub(crate) fn program(&self) -> std::os::fd::RawFd {
        self.sandbox.config.init_program.as_ref().map_or(-1, AsRawFd::as_raw_fd)
    }
}

impl Session {
    pub(crate) fn start(sandbox: &Sandbox) -> Result<Session, Error> {
        let config = &sandbox.config;
        if config.detached {
            return Err(Error::invalid(
                "session",
                "a sandbox built with outlive_parent",
                "a session ends with its Session (and with this process): build the sandbox without outlive_parent",
            ));
        }
        let needed = Namespaces::MOUNT | Namespaces::PID;
        if !config.namespaces.contains(needed) {
            return Err(Error::invalid(
                "session",
                format!("namespaces {:?}", config.namespaces.names().collect::<Vec<_>>()),
                "a session needs Namespaces::MOUNT (a filesystem of its own for its commands) and \
                 Namespaces::PID (an init whose end takes every process of the session with it)",
            ));
        }
        // A pid namespace has an init, and its program (made at build) also serves the holder
        // and the commands' relays.
        let program = config.init_program.as_ref().map_or(-1, AsRawFd::as_raw_fd);
        let null = || Stdio::null().0;
        let (stdin, stdout, stderr) = (null(), null(), null());
        let spawned = crate::spawn::spawn(
            config,
            OsStr::new("stockade-hold"),
            None,
            &[],
            &[],
            None,
            [(0, &stdin), (1, &stdout), (2, &stderr)],
            Vec::new(),
            None,
            None,
            crate::spawn::Mode::Hold { program },
        )?;
        let holder = spawned.holder.ok_or_else(|| {
            Error::spawn("start a session", std::io::Error::other("the holder sent no pidfd"))
        })?;
        let flags = config.entered().flags() as libc::c_int;
        let root = holder_root(&holder)?;
        let target = Target { sandbox: sandbox.clone(), holder, root, flags, cgroups: None };
        Ok(Session { target: Arc::new(target), child: spawned.child })
    }

    /// A command to run in this session, configured like [`Sandbox::command`]'s (the same
    /// environment rules, stdio, descriptors, limits and time limits, which apply to this
    /// command alone). Its [`Child::id`] is the pid of the command's relay, a small process
    /// outside the session that reports the command's status and forwards signals to it.
    ///
    /// Where the sandbox's processes change ids (a payload user, or a map that makes another
    /// id root) and the host's `fs.suid_dumpable` is 1, spawning is refused
    /// ([`Error::Unsupported`]): the change would leave the command, still holding a copy of
    /// this program's memory, traceable by the session's processes for an instant.
    pub fn command(&self, program: impl AsRef<OsStr>) -> Command {
        Command::in_session(self.target.clone(), program.as_ref())
    }

    /// The sandbox this session was started from.
    pub fn sandbox(&self) -> &Sandbox {
        &self.target.sandbox
    }

    /// The pid of the session's first process, in the embedding program's pid namespace (its
    /// init with a pid namespace, otherwise its holder).
    pub fn id(&self) -> u32 {
        self.child.id()
    }

    /// Whether the session is still running (its holder or init has not ended).
    pub fn is_running(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }

    /// Ends the session: kills every process in it and removes its cgroups. Commands still
    /// running end with it; their [`Child`]ren report it when waited for.
    pub fn stop(mut self) -> Result<(), Error> {
        self.child.kill().map_err(|source| Error::Io { op: "kill session", source })?;
        self.child.wait().map(drop).map_err(|source| Error::Io { op: "wait for session", source })
    }
}
