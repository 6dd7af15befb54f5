//! Warm sandboxes: a [`Session`] is a started sandbox (namespaces, root, cgroup and init
//! alive) in which commands run like `docker exec`, and a [`Pool`] keeps sessions started ahead.
//!
//! A session's sandbox runs a *holder* as its payload: the init program in a mode where it only
//! waits, with the payload's credentials, syscall filter and Landlock rules. Beside it runs the
//! session's *server* (`serve.rs`): the init program again, which joined the holder's
//! namespaces and root and took the same credentials, filter and rules, but lives outside the
//! session's pid namespace. A command is a request to the server, which starts it (in the
//! session's pid namespace), so it sees the session's filesystem as earlier commands left it
//! and runs as any payload would. Where the sandbox has limits or a cgroup namespace, each command
//! gets a cgroup of its own with those limits, so its usage (peak memory, CPU time, OOM,
//! processes) is its own and whatever it leaves running is killed when it ends; without one,
//! what a command leaves running stays in the session (holding its output pipes open, if it
//! inherited them) until the session stops.

mod pool;
pub(crate) mod serve;

use std::ffi::OsStr;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd};
use std::os::unix::fs::OpenOptionsExt;
use std::sync::Arc;

pub use pool::{Pool, Pooled};

use crate::{Child, Command, Error, Namespaces, Sandbox, Stdio};

/// A started sandbox in which [`command`](Session::command)s run, sharing its filesystem
/// state. Its payload is a *holder* that only waits (the init program, with the payload's
/// credentials, filter and Landlock rules); its *server*, a process of the session outside its
/// pid namespace with the same credentials and filter, starts each command, which
/// (where the sandbox has limits or a cgroup namespace) gets a cgroup of its own with those
/// limits, so its usage is its own and what it leaves running ends with it. Ends (every
/// process in it killed, its cgroups removed) on [`stop`](Session::stop) or drop.
///
/// Cost: a command starts in the server's memory (a program of a few kilobytes) and costs one
/// message each way, whatever the embedding program's size. Its scheduling policy is the server's: that of
/// the thread that started the session (for a [`Pool`], the thread that made the pool).
///
/// The server runs under the payload's syscall filter: [`Sandbox::start`] refuses a filter
/// that refuses a call it or its commands make before their exec ([`Error::Unsupported`],
/// naming the call), and a payload that may hold `CAP_SYS_PTRACE` (a process of the session
/// could then trace a command before its exec, while it holds the server's descriptors).
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
    // Dropped in this order: the init first (its end ends every process of the session, and
    // waits until the server has reaped its commands), then the server, then its socket (whose
    // end would have the server end first).
    /// The session's own sandbox (its init, or the holder itself without a pid namespace).
    child: Child,
    /// The session's server, which starts its commands (see `serve.rs`).
    server: Child,
    target: Arc<Target>,
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
    /// The session socket of a session's server, which starts the commands; `None`: each
    /// command joins through a joiner of its own (a running sandbox's, [`Child::join`]).
    pub(crate) server: Option<OwnedFd>,
    /// The server's commands join a session keyring of their own (the filter lets them).
    pub(crate) keyring: bool,
}

/// Whether the payload may hold `cap`: in any of its sets, or (where the sandbox leaves
/// capabilities alone) in this process's.
fn may_hold(config: &crate::sandbox::Config, cap: crate::Capability) -> bool {
    let bit = 1u64 << cap.index();
    match &config.caps {
        Some(c) => (c.bounding | c.permitted | c.inheritable | c.ambient | c.effective) & bit != 0,
        // This process's own: held, or (without no_new_privs) within reach of a program with
        // file capabilities or set-user-ID root.
        None => {
            let has = |set| caps::has_cap(None, set, cap).unwrap_or(true);
            has(caps::CapSet::Permitted)
                || has(caps::CapSet::Ambient)
                || (!config.no_new_privs && has(caps::CapSet::Bounding))
        }
    }
}

/// Why a session of this sandbox cannot be [`reset`](Session::reset) to what a new one would
/// be, if it cannot: state of an earlier user would outlive the reset.
fn reset_refused(config: &crate::sandbox::Config, sealed: bool, unconfined: bool) -> Option<Error> {
    let refuse = |feature: &str, reason: &str, hint: &str| {
        Some(Error::Unsupported { feature: feature.into(), reason: reason.into(), hint: hint.into() })
    };
    if !config.joined.is_empty() {
        return refuse(
            "resetting a session that joined existing namespaces",
            "a reset makes the session's mount, ipc and uts namespaces anew and kills every process of its pid namespace: namespaces joined from files are not the session's to remake or empty",
            "start a new session instead (stop this one, or drop it, and call Sandbox::start)",
        );
    }
    // The init ends every other process of the session: as root of its user namespace, with
    // every capability there: the map makes it root (it switches to 0), or maps this process's
    // id to 0. Otherwise it keeps some other id, with none.
    let euid = nix::unistd::geteuid().as_raw();
    let init_is_root = config.become_root
        || match &config.user_ns {
            Some(u) => u.uid_map.iter().any(|r| r.inside == 0 && r.outside == euid),
            None => euid == 0,
        };
    if !init_is_root {
        return refuse(
            "resetting a session whose user namespace maps no root to its init",
            "a reset's first step is the session's init killing every other process of the session, \
             which it may do only as root of the session's user namespace",
            "map root inside (a uid map with inside 0), or start a new session instead",
        );
    }
    // The new holder joins the session's groups: where the payload could change them (groups
    // not sealed against it; or a cgroup namespace rooted in this process's own groups, which
    // it may change), an earlier user's limits would hold for the reset, and for what it starts.
    let confinement_unsealed = unconfined && crate::resources::cgroup::own_groups_writable();
    if !sealed || confinement_unsealed {
        return refuse(
            "resetting a session whose cgroup its payload can change",
            "the session's groups could not be sealed against its payload (no CAP_CHOWN), or its \
             cgroup namespace is rooted in groups of this process's that it may change: either \
             could leave limits there that a reset would keep",
            "run as root, or start a new session instead",
        );
    }
    // In a user namespace of its own, the payload is in a nested one, which the reset makes
    // anew (its keyrings with it), and holds no capability over the namespaces kept.
    let user_ns = config.namespaces.contains(Namespaces::USER);
    let admin = may_hold(config, crate::Capability::CAP_NET_ADMIN)
        || may_hold(config, crate::Capability::CAP_SYS_ADMIN);
    if !user_ns && config.entered().contains(Namespaces::NET) && admin {
        return refuse(
            "resetting a session whose payload may administer its network namespace",
            "without a user namespace a payload holding CAP_NET_ADMIN or CAP_SYS_ADMIN can change the session's network namespace (addresses, routes, filters, sysctls), which a reset keeps",
            "leave CAP_NET_ADMIN and CAP_SYS_ADMIN out of the payload's capabilities, give the sandbox a user namespace, or start a new session instead",
        );
    }
    None
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
    /// The init program's descriptor (a joined command's relay runs it).
    pub(crate) fn program(&self) -> std::os::fd::RawFd {
        self.sandbox.config.init_program.as_ref().map_or(-1, AsRawFd::as_raw_fd)
    }
}

/// A session's sandbox started (its init and holder), its server not yet: a [`Pool`] starts
/// the two on threads of different scheduling policies (its commands take their server's).
#[derive(Debug)]
pub(crate) struct Held {
    sandbox: Sandbox,
    child: Child,
    holder: OwnedFd,
    root: OwnedFd,
    flags: libc::c_int,
    keyring: bool,
}

/// How long a session's init may take to answer a request: it answers at once unless a
/// process it must reap cannot end (a process stuck in the kernel), or it gets no CPU (a pool's
/// inits run idle): a reset gives up then, and the session ends.
const INIT_ANSWER: std::time::Duration = std::time::Duration::from_secs(30);

/// Sends `request` (with the descriptor `fd`) to the session's init (see `session_init` in
/// `src/sys/init/program.rs`) and waits for its answer: the request's first byte once done.
fn ask_init(init: &Child, request: &[u8], fd: Option<BorrowedFd<'_>>) -> Result<(), Error> {
    use nix::poll::{PollFd, PollFlags, PollTimeout, poll};
    use nix::sys::socket::{ControlMessage, MsgFlags, sendmsg};
    let fail =
        |e: std::io::Error| Error::spawn(format!("ask the session's init for {:?}", request[0] as char), e);
    let channel =
        init.status_channel().ok_or_else(|| fail(std::io::Error::other("no channel to the init")))?;
    let fds = fd.map(|fd| [fd.as_raw_fd()]);
    let rights = fds.as_ref().map(|fds| ControlMessage::ScmRights(fds));
    let iov = [std::io::IoSlice::new(request)];
    sendmsg::<()>(channel.as_raw_fd(), &iov, rights.as_slice(), MsgFlags::MSG_NOSIGNAL, None)
        .map_err(|e| fail(e.into()))?;
    let deadline = std::time::Instant::now() + INIT_ANSWER;
    loop {
        let left = deadline.saturating_duration_since(std::time::Instant::now());
        let timeout = PollTimeout::try_from(left).unwrap_or(PollTimeout::MAX);
        let mut fds = [PollFd::new(channel, PollFlags::POLLIN), PollFd::new(init.as_fd(), PollFlags::POLLIN)];
        match poll(&mut fds, timeout) {
            Err(nix::errno::Errno::EINTR) => continue,
            Err(e) => return Err(fail(e.into())),
            Ok(0) => return Err(fail(std::io::Error::from(std::io::ErrorKind::TimedOut))),
            Ok(_) => {}
        }
        if fds[0].any().unwrap_or(false) {
            let mut answer = [0u8; 1];
            return match nix::unistd::read(channel, &mut answer) {
                Ok(1) if answer[0] == request[0] => Ok(()),
                Err(nix::errno::Errno::EAGAIN | nix::errno::Errno::EINTR) => continue,
                Ok(1) => Err(fail(std::io::Error::other("the init refused"))),
                Ok(_) => Err(fail(std::io::Error::other("the init ended"))),
                Err(e) => Err(fail(e.into())),
            };
        }
        if fds[1].any().unwrap_or(false) {
            return Err(fail(std::io::Error::other("the init ended")));
        }
    }
}

/// Waits for the session's server to end (its socket shut down), with the session's init
/// killing every process of the session meanwhile, again every 10 ms: the server may still
/// start a command it was asked for, which a process of the session could keep it from reaping
/// (tracing it). At [`INIT_ANSWER`] the reset fails.
fn end_server(init: &Child, server: &mut Child) -> Result<(), Error> {
    let deadline = std::time::Instant::now() + INIT_ANSWER;
    loop {
        ask_init(init, b"k", None)?;
        let mut fds = [nix::poll::PollFd::new(server.as_fd(), nix::poll::PollFlags::POLLIN)];
        match nix::poll::poll(&mut fds, nix::poll::PollTimeout::from(10u8)) {
            Ok(0) | Err(nix::errno::Errno::EINTR) => {}
            _ => break,
        }
        if std::time::Instant::now() > deadline {
            // The session ends (the caller kills the init), and the server reaps its commands
            // then (killed outright, it would leave them to this process's reaper).
            return Err(Error::spawn(
                "reset a session",
                std::io::Error::new(std::io::ErrorKind::TimedOut, "its server did not end"),
            ));
        }
    }
    server.wait().map(drop).map_err(|source| Error::Io { op: "wait for the session's server", source })
}

/// The holder's mount namespace (`/proc/<pid>/ns/mnt`) and its pid in the session's pid
/// namespace (the last of `NSpid`), proven to be the holder's as [`holder_root`] proves.
fn holder_mount_ns(holder: &OwnedFd) -> Result<(OwnedFd, i32), Error> {
    let pid = crate::sys::pidfd::pid_of(holder.as_fd())
        .map_err(|e| Error::spawn("read the session holder's pid", e))?;
    let path = format!("/proc/{pid}/ns/mnt");
    let mount_ns: OwnedFd =
        std::fs::File::open(&path).map_err(|e| Error::spawn(format!("open {path}"), e))?.into();
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))
        .map_err(|e| Error::spawn(format!("read /proc/{pid}/status"), e))?;
    let inner = status
        .lines()
        .find_map(|l| l.strip_prefix("NSpid:"))
        .and_then(|ids| ids.split_whitespace().last())
        .and_then(|id| id.parse().ok())
        .ok_or_else(|| Error::spawn("read the session holder's pid", std::io::Error::other("no NSpid")))?;
    // Still the holder (its pid not reused meanwhile): its pidfd is not readable.
    let mut poll = [nix::poll::PollFd::new(holder.as_fd(), nix::poll::PollFlags::POLLIN)];
    match nix::poll::poll(&mut poll, nix::poll::PollTimeout::ZERO) {
        Ok(0) => Ok((mount_ns, inner)),
        _ => Err(Error::spawn("reset a session", std::io::Error::other("the new holder ended"))),
    }
}

/// What a session's new holder is made from ([`Session::reset`]), apart from the session: a
/// [`Pool`] makes it on another thread.
#[derive(Debug)]
pub(crate) struct Renewal {
    sandbox: Sandbox,
    /// A pidfd of the session's init.
    init: OwnedFd,
    /// The session's groups (the holder joins them).
    groups: Vec<std::path::PathBuf>,
}

/// Spawns a session's holder in `mode` (a session's start, or a reset's renewal): stdio
/// null, in the image's working directory, which it makes if missing (as any payload does):
/// commands start there by default. Returns the spawn's first process and the holder's pidfd.
fn spawn_holder(
    config: &crate::sandbox::Config,
    mode: crate::spawn::Mode<'_>,
) -> Result<(Child, OwnedFd), Error> {
    let null = || Stdio::null().0;
    let (stdin, stdout, stderr) = (null(), null(), null());
    let cwd = config
        .run_defaults
        .as_ref()
        .and_then(|d| d.cwd.as_deref())
        .map(|path| crate::plan::WorkingDir { path, create: true });
    let spawned = crate::spawn::spawn(
        config,
        OsStr::new("stockade-hold"),
        None,
        &[],
        &[],
        cwd,
        [(0, &stdin), (1, &stdout), (2, &stderr)],
        Vec::new(),
        None,
        None,
        mode,
    )?;
    let holder = spawned.holder.ok_or_else(|| {
        Error::spawn("start a session's holder", std::io::Error::other("the holder sent no pidfd"))
    })?;
    Ok((spawned.child, holder))
}

impl Renewal {
    /// Makes the new holder (see `crate::plan::Renew`): every other process of the session
    /// ends first. Returns its pidfd and root.
    pub(crate) fn holder(self) -> Result<(OwnedFd, OwnedFd), Error> {
        let config = &self.sandbox.config;
        let program = config.init_program.as_ref().map_or(-1, AsRawFd::as_raw_fd);
        let kept = Namespaces::USER | Namespaces::PID | Namespaces::NET | Namespaces::CGROUP;
        let mode = crate::spawn::Mode::Renew {
            init: self.init.as_fd(),
            flags: (config.namespaces & kept).flags() as libc::c_int,
            program,
            cgroups: &self.groups,
        };
        let (mut renewer, holder) = spawn_holder(config, mode)?;
        renewer.wait().map_err(|source| Error::Io { op: "wait for the session's renewer", source })?;
        let root = holder_root(&holder)?;
        Ok((holder, root))
    }
}

impl Session {
    /// Starts a session: its sandbox, then its server.
    pub(crate) fn start(sandbox: &Sandbox) -> Result<Session, Error> {
        Session::hold(sandbox)?.serve()
    }

    /// Starts a session's sandbox (its init and holder).
    pub(crate) fn hold(sandbox: &Sandbox) -> Result<Held, Error> {
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
        // Until its exec a command holds its server's descriptors (the session socket among
        // them) and, sharing the server's memory, that memory: a process of the session that
        // may trace it (CAP_SYS_PTRACE, which a non-dumpable process needs) could take them.
        if may_hold(config, crate::Capability::CAP_SYS_PTRACE) {
            return Err(Error::Unsupported {
                feature: "a session whose payload may hold CAP_SYS_PTRACE".into(),
                reason: "until its exec a session command holds its server's descriptors and memory, \
                         which a process of the session holding CAP_SYS_PTRACE could trace and take"
                    .into(),
                hint: "leave CAP_SYS_PTRACE out of the payload's capabilities, or run each command \
                       with Sandbox::command (no sandboxed process reaches a sandbox's first \
                       processes)"
                    .into(),
            });
        }
        // The server runs under the payload's filter: checked before anything starts.
        let keyring = serve::check_filter(config)?;
        // A pid namespace has an init, and its program (made at build) also serves the holder
        // and the server.
        let program = config.init_program.as_ref().map_or(-1, AsRawFd::as_raw_fd);
        let (child, holder) = spawn_holder(config, crate::spawn::Mode::Hold { program })?;
        let flags = config.entered().flags() as libc::c_int;
        let root = holder_root(&holder)?;
        Ok(Held { sandbox: sandbox.clone(), child, holder, root, flags, keyring })
    }
}

impl Held {
    /// Starts the session's server (on the calling thread, whose scheduling policy its
    /// commands take, and with which it ends): the session is ready then.
    pub(crate) fn serve(self) -> Result<Session, Error> {
        let Held { sandbox, child, holder, root, flags, keyring } = self;
        let (server, socket) = start_server(&sandbox, &holder, &root, flags)?;
        let target = Target { sandbox, holder, root, flags, cgroups: None, server: Some(socket), keyring };
        Ok(Session { target: Arc::new(target), child, server })
    }
}

/// Starts a session's server, which joins the namespaces `flags` of the holder `holder` and its
/// root `root`; returns it and the session socket.
fn start_server(
    sandbox: &Sandbox,
    holder: &OwnedFd,
    root: &OwnedFd,
    flags: libc::c_int,
) -> Result<(Child, OwnedFd), Error> {
    {
        let config = &sandbox.config;
        let program = config.init_program.as_ref().map_or(-1, AsRawFd::as_raw_fd);
        let null = || Stdio::null().0;
        let (stdin, stdout, stderr) = (null(), null(), null());
        let (socket, server_end) = nix::sys::socket::socketpair(
            nix::sys::socket::AddressFamily::Unix,
            nix::sys::socket::SockType::SeqPacket,
            None,
            nix::sys::socket::SockFlag::SOCK_CLOEXEC,
        )
        .map_err(|e| Error::spawn("socketpair", e))?;
        let holder_copy = holder.try_clone().map_err(|e| Error::spawn("dup the holder's pidfd", e))?;
        let placeholder: OwnedFd =
            std::fs::File::open("/dev/null").map_err(|e| Error::spawn("open /dev/null", e))?.into();
        // The server stays in this program's groups, as a joiner did: the session's are killed
        // whole when it ends, and the server must outlive its commands to reap them (a command
        // orphaned would go to this program if it reaps orphans, a subreaper or a container's
        // pid 1). Its commands go to groups of their own, or stay beside it as a joiner's did.
        let groups: Vec<std::path::PathBuf> = Vec::new();
        let server = crate::spawn::spawn(
            config,
            OsStr::new("stockade-serve"),
            None,
            &[],
            &[],
            None,
            [(0, &stdin), (1, &stdout), (2, &stderr)],
            vec![
                (server_end.as_raw_fd(), crate::sys::wire::SERVER_FD),
                (holder_copy.as_raw_fd(), crate::sys::wire::HOLDER_FD),
                // Where the server's joiner puts the Landlock ruleset (kept free for it).
                (placeholder.as_raw_fd(), crate::sys::wire::LANDLOCK_FD),
            ],
            None,
            None,
            crate::spawn::Mode::Join {
                holder: holder.as_fd(),
                root: root.as_fd(),
                flags,
                program,
                cgroups: Some(&groups),
                serve: true,
            },
        )?
        .child;
        Ok((server, socket))
    }
}

impl Session {
    /// A command to run in this session, configured like [`Sandbox::command`]'s (the same
    /// environment rules, stdio, descriptors, limits and time limits, which apply to this
    /// command alone). Its [`Child::id`] is the command's pid. At most 240 descriptors
    /// (stdio included) go to one command, and a session runs at most 512 commands at once
    /// (more: [`Error::Setup`] at [`Stage::ForkPayload`](crate::Stage::ForkPayload), `EAGAIN`).
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

    /// Whether the session is still running (its holder or init, and its server, have not
    /// ended).
    pub fn is_running(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None)) && matches!(self.server.try_wait(), Ok(None))
    }

    /// Resets the session to what a new session of its sandbox would be, without making its
    /// sandbox again: every process of the session ends (commands still running report it
    /// when waited for), its filesystem is built afresh from the sandbox's (a new writable
    /// layer: tmpfs mounts empty again, an image's upper layer new), with new mount, ipc and
    /// uts namespaces (no System V or POSIX IPC object of before, the hostname set again), a
    /// new holder and server. Its init, user, pid, network and cgroup namespaces and its
    /// cgroup stay: the reset skips their setup and teardown, which is most of a session's
    /// start ([`Pool`] resets the sessions that come back). [`Command`]s made before the reset
    /// fail to spawn ([`Error::Setup`] at [`Stage::JoinSession`](crate::Stage::JoinSession)).
    /// What commands wrote to host directories (a writable bind, a persistent overlay's
    /// upper layer) stays, as it would for a new session.
    ///
    /// Nothing an earlier command could change survives: in its user namespace the payload is
    /// in a nested one the reset makes anew (keyrings included) and holds no capability over the
    /// namespaces kept; without one, a payload that may hold `CAP_NET_ADMIN` or
    /// `CAP_SYS_ADMIN` could change the network namespace, and such a session is refused, as is
    /// one that joined namespaces by file, or whose user namespace maps no root (its init, which
    /// ends the session's processes, would then hold no capability: [`Error::Unsupported`],
    /// before anything changes). What the reset keeps shows only as counters: pids go on from
    /// where they were, and the session's own cgroup (not its commands', which are new) counts
    /// on (its peaks, its OOM events).
    ///
    /// The new server, like the first, belongs to the thread that calls this: it ends with it.
    ///
    /// # Errors
    /// Those refusals, and whatever fails making the new holder or server (as
    /// [`Sandbox::start`]), or an init that does not answer within 30 s (a process of the
    /// session stuck in the kernel); the session has then ended, with every process of it.
    pub fn reset(&mut self) -> Result<(), Error> {
        self.reset_with(Renewal::holder)
    }

    /// [`reset`](Self::reset), with the new holder made by `make` (a [`Pool`] makes it on
    /// its idle thread).
    pub(crate) fn reset_with(
        &mut self,
        make: impl FnOnce(Renewal) -> Result<(OwnedFd, OwnedFd), Error>,
    ) -> Result<(), Error> {
        // A cgroup namespace not rooted in groups of the session's own.
        let unconfined = self.target.sandbox.config.namespaces.contains(Namespaces::CGROUP)
            && self.child.unenforced().contains(&crate::resources::CGROUP_CONFINEMENT);
        if let Some(refused) =
            reset_refused(&self.target.sandbox.config, self.child.cgroup_sealed(), unconfined)
        {
            return Err(refused);
        }
        // The server ends (the end of its socket tells it; the socket itself may live on in
        // commands not yet spawned): it kills and reaps its commands. The init kills every
        // process of the session first (a process left behind could keep a command the server
        // waits for from being reaped, as its tracer), and again once the server is gone (what it
        // started meanwhile). Only then does anything of the reset start.
        if let Some(socket) = &self.target.server {
            let _ = nix::sys::socket::shutdown(socket.as_raw_fd(), nix::sys::socket::Shutdown::Both);
        }
        let renewed = end_server(&self.child, &mut self.server)
            .and_then(|()| ask_init(&self.child, b"k", None))
            .and_then(|()| {
                let init = self.child.as_fd().try_clone_to_owned();
                let init = init.map_err(|e| Error::spawn("dup the session's init pidfd", e))?;
                let groups = self.child.cgroup_dirs();
                make(Renewal { sandbox: self.target.sandbox.clone(), init, groups })
            })
            .and_then(|(holder, root)| {
                // The init moves to the new holder's mount namespace: the one it built the first
                // tree in goes, and with it whatever was written there.
                let (mount_ns, pid) = holder_mount_ns(&holder)?;
                let mut request = [b'h'; 5];
                request[1..].copy_from_slice(&pid.to_ne_bytes());
                ask_init(&self.child, &request, Some(mount_ns.as_fd()))?;
                self.serve_holder(holder, root)
            });
        if renewed.is_err() {
            // Whatever was started ends with the init (every process of the session does).
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
        renewed
    }

    /// Starts a server for the new holder `holder` (whose root is `root`): the session is
    /// ready again.
    fn serve_holder(&mut self, holder: OwnedFd, root: OwnedFd) -> Result<(), Error> {
        let target = &self.target;
        let (server, socket) = start_server(&target.sandbox, &holder, &root, target.flags)?;
        self.server = server;
        self.target = Arc::new(Target {
            sandbox: target.sandbox.clone(),
            holder,
            root,
            flags: target.flags,
            cgroups: None,
            server: Some(socket),
            keyring: target.keyring,
        });
        Ok(())
    }

    /// Ends the session: kills every process in it and removes its cgroups. Commands still
    /// running end with it; their [`Child`]ren report it when waited for.
    pub fn stop(mut self) -> Result<(), Error> {
        self.child.kill().map_err(|source| Error::Io { op: "kill session", source })?;
        self.child.wait().map(drop).map_err(|source| Error::Io { op: "wait for session", source })?;
        self.server.kill().map_err(|source| Error::Io { op: "kill the session's server", source })?;
        self.server
            .wait()
            .map(drop)
            .map_err(|source| Error::Io { op: "wait for the session's server", source })
    }
}
