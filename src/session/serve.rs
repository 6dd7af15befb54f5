//! The library's side of a session's server (the init program in its serving mode,
//! `src/sys/init/serve.rs`; what they say to each other: `src/sys/init/wire.rs`).
//!
//! At the session's start a joiner enters the session, takes the payload's credentials and
//! filter (its Landlock ruleset it keeps for the commands; its rlimits it only raises to), and
//! execs the server, which lives outside the session's pid namespace. A command is then one request on the session socket: the server starts it (it
//! inherits all of that), sends its pidfd back, and reports how it ended on a pipe of its own.
//! No command is a copy of this program: its cost does not grow with this program's memory.

use std::ffi::OsStr;
use std::io::IoSlice;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd, RawFd};

use nix::sys::socket::{ControlMessage, MsgFlags};

use crate::child::Supervision;
use crate::command::StdioKind;
use crate::plan::{Exec, FAILURE_LEN, WorkingDir};
use crate::resources::cgroup::SandboxCgroup;
use crate::sandbox::Config;
use crate::sys::wire;
use crate::sys::{self, pidfd};
use crate::{Child, Compat, Error};

/// The system calls a server and its commands make before their exec, with the first
/// arguments that matter to a filter (the default filter's rules look at no others); with
/// [`check_filter`]'s own additions, every call `src/sys/init/serve.rs` makes.
const SERVER_CALLS: &[(&str, libc::c_long, [u64; 2])] = &[
    ("clock_gettime", libc::SYS_clock_gettime, [1, 0]),
    ("prctl", libc::SYS_prctl, [libc::PR_SET_DUMPABLE as u64, 0]),
    ("prctl", libc::SYS_prctl, [libc::PR_SET_NAME as u64, 0]),
    ("prctl", libc::SYS_prctl, [libc::PR_SET_PDEATHSIG as u64, libc::SIGKILL as u64]),
    ("rt_sigprocmask", libc::SYS_rt_sigprocmask, [libc::SIG_BLOCK as u64, 0]),
    ("rt_sigprocmask", libc::SYS_rt_sigprocmask, [libc::SIG_SETMASK as u64, 0]),
    ("getpid", libc::SYS_getpid, [0, 0]),
    ("pidfd_open", libc::SYS_pidfd_open, [0, 0]),
    ("fcntl", libc::SYS_fcntl, [wire::SERVER_FD as u64, libc::F_SETFD as u64]),
    ("close_range", libc::SYS_close_range, [0, 2]),
    ("close", libc::SYS_close, [0, 0]),
    ("ppoll", libc::SYS_ppoll, [0, 0]),
    ("recvmsg", libc::SYS_recvmsg, [wire::SERVER_FD as u64, 0]),
    ("sendmsg", libc::SYS_sendmsg, [0, 0]),
    // A command sharing the server's memory, on a slot of its own; a fork when none is free.
    (
        "clone",
        libc::SYS_clone,
        [(libc::CLONE_VM | libc::CLONE_CHILD_CLEARTID | libc::CLONE_PIDFD | libc::SIGCHLD) as u64, 0],
    ),
    ("clone", libc::SYS_clone, [(libc::CLONE_PIDFD | libc::SIGCHLD) as u64, 0]),
    ("munmap", libc::SYS_munmap, [0, 0]),
    ("wait4", libc::SYS_wait4, [0, 0]),
    ("kill", libc::SYS_kill, [0, libc::SIGKILL as u64]),
    ("write", libc::SYS_write, [0, 0]),
    ("read", libc::SYS_read, [0, 0]),
    ("mmap", libc::SYS_mmap, [0, 0]),
    ("fcntl", libc::SYS_fcntl, [0, libc::F_DUPFD_CLOEXEC as u64]),
    ("dup3", libc::SYS_dup3, [0, 0]),
    ("setsid", libc::SYS_setsid, [0, 0]),
    ("fcntl", libc::SYS_fcntl, [0, libc::F_SETFD as u64]),
    ("nanosleep", libc::SYS_nanosleep, [0, 0]),
    ("umask", libc::SYS_umask, [0, 0]),
    ("mkdirat", libc::SYS_mkdirat, [libc::AT_FDCWD as u64, 0]),
    // A terminal of the session's devpts.
    ("openat", libc::SYS_openat, [libc::AT_FDCWD as u64, 0]),
    ("ioctl", libc::SYS_ioctl, [0, libc::TIOCSPTLCK]),
    ("ioctl", libc::SYS_ioctl, [0, libc::TIOCSWINSZ]),
    ("ioctl", libc::SYS_ioctl, [0, libc::TIOCGPTPEER]),
    ("ioctl", libc::SYS_ioctl, [0, libc::TIOCSCTTY]),
    ("chdir", libc::SYS_chdir, [0, 0]),
    ("execve", libc::SYS_execve, [0, 0]),
    ("exit_group", libc::SYS_exit_group, [0, 0]),
];

/// Whether each command restricts itself with the payload's Landlock rules (a domain of its
/// own). With `allow_new_privileges` the rules are applied before the capabilities are
/// dropped, so the server applies them and its commands share its domain.
pub(crate) fn own_landlock(config: &Config) -> bool {
    config.landlock.is_some() && config.no_new_privs
}

/// Checks that the payload's filter lets the server work (it runs under it); says whether its
/// commands may join a keyring of their own (where the filter lets them use keyrings at all).
pub(crate) fn check_filter(config: &Config) -> Result<bool, Error> {
    let Some(program) = &config.seccomp else { return Ok(true) };
    let mut calls: Vec<(&str, libc::c_long, [u64; 2])> = SERVER_CALLS.to_vec();
    if !config.rlimits.is_empty() {
        calls.push(("prlimit64", libc::SYS_prlimit64, [0, 0]));
    }
    if own_landlock(config) {
        calls.push(("landlock_restrict_self", libc::SYS_landlock_restrict_self, [0, 0]));
    }
    if let Some((name, ..)) = calls.iter().find(|(_, nr, args)| !crate::seccomp::allows(program, *nr, *args))
    {
        return Err(Error::Unsupported {
            feature: format!("a session under a syscall filter that refuses {name}"),
            reason: format!(
                "a session's commands are started by a server of the session, which runs under the \
                 payload's syscall filter and needs {name}"
            ),
            hint: format!(
                "allow {name} in the filter (the default filter does), or run each command with \
                 Sandbox::command"
            ),
        });
    }
    const KEYCTL_JOIN_SESSION_KEYRING: u64 = 1;
    Ok(crate::seccomp::allows(program, libc::SYS_keyctl, [KEYCTL_JOIN_SESSION_KEYRING, 0]))
}

/// The strings a command needs at its exec, laid out as `wire::S_ARGV` says.
fn strings(
    exec: &Exec,
    cwd: Option<&std::path::Path>,
    rlimits: &[(libc::__rlimit_resource_t, u64, u64)],
) -> Vec<u8> {
    use std::os::unix::ffi::OsStrExt;
    let (args, env) = exec.strings();
    let candidates = &exec.candidates;
    let words = wire::S_HEADER
        + (args.len() + 1)
        + (env.len() + 1)
        + (candidates.len() + 1)
        + (3 * rlimits.len() + 1);
    let mut header = vec![0u64; words];
    let mut text: Vec<u8> = Vec::new();
    let base = words * 8;
    let mut put = |s: &[u8]| {
        let at = base + text.len();
        text.extend_from_slice(s);
        text.push(0);
        at as u64
    };
    let mut slot = wire::S_HEADER;
    for (k, list) in [(wire::S_ARGV, args), (wire::S_ENVP, env), (wire::S_CANDIDATES, candidates)] {
        header[k] = (slot * 8) as u64;
        for s in list {
            header[slot] = put(s.to_bytes());
            slot += 1;
        }
        // The array's end (already 0).
        slot += 1;
    }
    header[wire::S_RLIMITS] = (slot * 8) as u64;
    for &(resource, soft, hard) in rlimits {
        header[slot..slot + 3].copy_from_slice(&[u64::from(resource), soft, hard]);
        slot += 3;
    }
    header[slot] = u64::MAX;
    if let Some(dir) = cwd {
        header[wire::S_CWD] = put(dir.as_os_str().as_bytes());
    }
    let mut out: Vec<u8> = header.iter().flat_map(|w| w.to_ne_bytes()).collect();
    out.extend_from_slice(&text);
    // The last byte is NUL (the server checks it): a final string's, or this one.
    if out.last() != Some(&0) {
        out.push(0);
    }
    out
}

/// Starts `program` in the session whose server listens on `server` (see the module docs).
#[allow(clippy::too_many_arguments)]
pub(crate) fn spawn(
    config: &Config,
    server: BorrowedFd<'_>,
    keyring: bool,
    program: &OsStr,
    arg0: Option<&OsStr>,
    args: &[std::ffi::OsString],
    env: &[(std::ffi::OsString, std::ffi::OsString)],
    cwd: Option<WorkingDir<'_>>,
    stdio: [(RawFd, &StdioKind); 3],
    passed: Vec<(RawFd, RawFd)>,
    terminal: Option<sys::pty::Size>,
) -> Result<Child, Error> {
    let started = std::time::Instant::now();
    let exec = Exec::new(program, arg0, args, env)?;
    // Descriptors the command gets: ours to close once the request is sent.
    let mut child_only: Vec<OwnedFd> = Vec::new();
    let mut parent_stdio: [Option<OwnedFd>; 3] = [None, None, None];
    let mut moves: Vec<(RawFd, RawFd)> = Vec::with_capacity(3 + passed.len());
    let mut on_terminal = 0u32;
    for (target, kind) in stdio {
        match kind {
            StdioKind::Terminal => on_terminal |= 1 << target,
            // This program's own: sent, as the server's are not this program's.
            StdioKind::Inherit => {
                if let Some(fd) = sys::borrow_std(target) {
                    moves.push((fd.as_raw_fd(), target));
                }
            }
            StdioKind::Null => {
                let null: OwnedFd = std::fs::OpenOptions::new()
                    .read(true)
                    .write(true)
                    .open("/dev/null")
                    .map_err(|e| Error::spawn("open /dev/null", e))?
                    .into();
                moves.push((null.as_raw_fd(), target));
                child_only.push(null);
            }
            StdioKind::Piped => {
                let (read, write) =
                    nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC).map_err(|e| Error::spawn("pipe2", e))?;
                let (ours, theirs) = if target == 0 { (write, read) } else { (read, write) };
                moves.push((theirs.as_raw_fd(), target));
                child_only.push(theirs);
                parent_stdio[target as usize] = Some(ours);
            }
            StdioKind::Fd(fd) | StdioKind::Unrestricted(fd) => moves.push((fd.as_raw_fd(), target)),
        }
    }
    moves.extend(passed);
    if moves.len() > wire::MAX_MOVES {
        return Err(Error::invalid(
            "fd",
            format!("{} descriptors (stdio included)", moves.len()),
            format!("a session command takes at most {} descriptors", wire::MAX_MOVES),
        ));
    }
    let limits = &config.limits;
    let (cgroup, mut unenforced) = match config.cgroup_layout {
        Some(layout) => match SandboxCgroup::create(limits, layout, false, false) {
            Ok(cgroup) => (cgroup, Vec::new()),
            Err(_) if limits.compat == Compat::BestEffort => (None, limits.cgroup_limit_names()),
            Err(e) => return Err(e),
        },
        None if limits.wants_cgroup() => (None, limits.cgroup_limit_names()),
        None => (None, Vec::new()),
    };
    unenforced.extend(&config.unenforced);
    let mut cgroup = cgroup;
    if config.namespaces.contains(crate::Namespaces::CGROUP)
        && !cgroup.as_ref().is_some_and(SandboxCgroup::confines_every_hierarchy)
    {
        unenforced.push(crate::resources::CGROUP_CONFINEMENT);
    }

    let (control, child_control) = nix::sys::socket::socketpair(
        nix::sys::socket::AddressFamily::Unix,
        nix::sys::socket::SockType::SeqPacket,
        None,
        nix::sys::socket::SockFlag::SOCK_CLOEXEC,
    )
    .map_err(|e| Error::spawn("socketpair", e))?;
    let (status_read, status_write) =
        nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC | nix::fcntl::OFlag::O_NONBLOCK)
            .map_err(|e| Error::spawn("pipe2", e))?;
    let text = sys::memfd_with(c"stockade-command", &strings(&exec, cwd.map(|c| c.path), &config.rlimits))
        .map_err(|e| Error::spawn("write the command's strings to a memfd", e))?;

    // Until it has a cgroup (and its score): "go" after, as for any sandbox's first process.
    let go = cgroup.is_some() || config.oom_score_adj.is_some() || terminal.is_some();
    let mut words = [0u32; wire::REQUEST_WORDS];
    words[wire::W_MAGIC] = wire::MAGIC;
    words[wire::W_FLAGS] = if go { wire::GO } else { 0 }
        | if terminal.is_some() { wire::TERMINAL } else { 0 }
        | if keyring { wire::KEYRING } else { 0 }
        | if own_landlock(config) { wire::LANDLOCK } else { 0 }
        | if cwd.is_some_and(|c| c.create) { wire::CREATE_CWD } else { 0 };
    // Rounded up: the server's deadline must not come before this program's.
    words[wire::W_WALL_MS] =
        limits.wall_time.and_then(|w| i32::try_from(w.as_micros().div_ceil(1000).max(1)).ok()).unwrap_or(-1)
            as u32;
    if let Some(size) = terminal {
        words[wire::W_SIZE] = (u32::from(size.rows) << 16) | u32::from(size.cols);
        words[wire::W_TERMINAL_FDS] = on_terminal;
    }
    words[wire::W_STRINGS_LEN] = text.1 as u32;
    words[wire::W_MOVES] = moves.len() as u32;
    for (slot, (_, target)) in words[wire::W_TARGETS..].iter_mut().zip(&moves) {
        *slot = *target as u32;
    }
    let mut fds = vec![child_control.as_raw_fd(), status_write.as_raw_fd(), text.0.as_raw_fd()];
    fds.extend(moves.iter().map(|(fd, _)| *fd));
    let bytes: Vec<u8> = words.iter().flat_map(|w| w.to_ne_bytes()).collect();
    let sent = loop {
        match nix::sys::socket::sendmsg::<()>(
            server.as_raw_fd(),
            &[IoSlice::new(&bytes)],
            &[ControlMessage::ScmRights(&fds)],
            MsgFlags::MSG_NOSIGNAL,
            None,
        ) {
            Err(nix::errno::Errno::EINTR) => continue,
            other => break other,
        }
    };
    match sent {
        Ok(_) => {}
        // Its server gone: the session has ended.
        Err(nix::errno::Errno::EPIPE | nix::errno::Errno::ECONNRESET | nix::errno::Errno::ECONNREFUSED) => {
            return Err(ended());
        }
        Err(e) => return Err(Error::spawn("send a command to the session's server", e)),
    }
    drop((child_only, child_control, status_write, text));
    let failure = |record: &[u8; FAILURE_LEN]| {
        let mut error = crate::plan::decode_failure(record, None);
        // What the record's index names, as a sandbox's own spawn says it.
        if let Error::Exec { program: path, source } = &mut error {
            let index = u32::from_ne_bytes([record[8], record[9], record[10], record[11]]) as usize;
            *path = match exec.candidates.get(index) {
                Some(p) if source.kind() != std::io::ErrorKind::NotFound => crate::plan::path_of(p),
                _ => std::path::PathBuf::from(&exec.program),
            };
        }
        if let Error::Setup { stage, .. } = &mut error {
            match stage {
                crate::Stage::Chdir { dir } | crate::Stage::CreateWorkingDir { dir } => {
                    *dir = cwd.map(|c| c.path.to_path_buf()).unwrap_or_default()
                }
                crate::Stage::Fds { fd } => {
                    let index = u32::from_ne_bytes([record[8], record[9], record[10], record[11]]) as usize;
                    *fd = moves.get(index).map_or(-1, |m| m.1);
                }
                _ => {}
            }
        }
        error
    };
    let (command, started_data) =
        receive(&control, b'p', "the session command's pidfd").map_err(|e| e.into_error(&failure))?;
    // From here a failure ends the command (the server reaps it), and its group once it is
    // gone.
    let abort = |e: Error| {
        let _ = pidfd::send_signal(command.as_fd(), libc::SIGKILL);
        let _ = poll_readable(command.as_fd());
        e
    };
    // From the server, in whose (and this program's) pid namespace it is: a command that needs
    // nothing more before its exec may have ended, and been reaped, before its pidfd could say.
    // One that waits for "go" cannot have exec'd: its pid is taken from its pidfd, which names
    // none once it has been reaped (a process of the session may kill it meanwhile), so the
    // cgroup below gets this command, unless it is killed, reaped and its pid reused between
    // this and the attach (which the check after the attach then reports).
    let sent_pid = i32::from_ne_bytes([started_data[1], started_data[2], started_data[3], started_data[4]]);
    let pid = if go {
        pidfd::pid_of(command.as_fd()).map_err(|e| abort(Error::spawn("the session command's pid", e)))?
    } else {
        sent_pid
    };
    if started_data[0] != b'p' || pid <= 0 {
        return Err(abort(Error::spawn(
            "receive the session command's pid",
            std::io::Error::new(std::io::ErrorKind::InvalidData, format!("pid {pid}")),
        )));
    }
    if let Some(cgroup) = &cgroup {
        cgroup.attach(pid).map_err(abort)?;
        // The pid named the command when it was written if the command was not reaped by then,
        // which it still is not if its pidfd still names a pid (a session process may kill
        // it while it waits for "go", and its server then reaps it).
        if pidfd::pid_of(command.as_fd()).ok() != Some(pid) {
            return Err(abort(Error::spawn(
                "put the session command in its cgroup",
                std::io::Error::from_raw_os_error(libc::ESRCH),
            )));
        }
    }
    if let Some(adj) = config.oom_score_adj {
        let dir = crate::userns::ProcDir::open(pid, command.as_fd()).map_err(abort)?;
        dir.write("oom_score_adj", adj.to_string().as_bytes()).map_err(abort)?;
    }
    if let Some(cgroup) = &mut cgroup {
        cgroup.seal();
    }
    if go {
        nix::sys::socket::send(control.as_raw_fd(), b"g", MsgFlags::MSG_NOSIGNAL)
            .map_err(|e| abort(Error::spawn("release the session command (send go)", e)))?;
    }
    // A process of the session may stop the command before its exec (it has the command's ids
    // and sees its pid): then nothing would come on the channel for as long as it likes.
    let stopped = || {
        abort(Error::spawn(
            "start the session command",
            std::io::Error::other(
                "it was stopped before its exec (by a signal from a process of the session)",
            ),
        ))
    };
    let master = match terminal {
        Some(_) if !readable_unless_stopped(control.as_fd(), command.as_fd(), pid) => return Err(stopped()),
        Some(_) => Some(
            receive(&control, b't', "the command's terminal").map_err(|e| abort(e.into_error(&failure)))?.0,
        ),
        None => None,
    };
    if !readable_unless_stopped(control.as_fd(), command.as_fd(), pid) {
        return Err(stopped());
    }
    // End of file: the close-on-exec channel closed in execve. Otherwise a failure record.
    let mut record = [0u8; FAILURE_LEN];
    let n = loop {
        match nix::unistd::read(&control, &mut record) {
            Err(nix::errno::Errno::EINTR) => continue,
            other => break other,
        }
    };
    match n {
        Ok(0) => {
            let supervision = Supervision {
                started,
                wall_limit: limits.wall_time,
                cpu_limit: limits.cpu_time,
                cgroup,
                unenforced,
            };
            Ok(Child::served(pid, command, status_read, parent_stdio, supervision).with_terminal(master))
        }
        Ok(FAILURE_LEN) => Err(abort(failure(&record))),
        Ok(n) => Err(abort(Error::spawn(
            "read the session command's setup result",
            std::io::Error::new(std::io::ErrorKind::InvalidData, format!("short record of {n} bytes")),
        ))),
        Err(e) => Err(abort(Error::spawn("read the session command's setup result", e))),
    }
}

/// A command sent to a session that has ended.
fn ended() -> Error {
    Error::Setup { stage: crate::Stage::JoinSession, source: std::io::Error::from_raw_os_error(libc::ESRCH) }
}

/// Waits until the command's channel `control` is readable; `false` if the command (`pidfd`,
/// `pid` in this process's pid namespace) is found stopped meanwhile. Woken by the channel;
/// looks at the command's state every tenth of a second while it waits.
fn readable_unless_stopped(control: BorrowedFd<'_>, pidfd: BorrowedFd<'_>, pid: libc::pid_t) -> bool {
    loop {
        let mut poll = [nix::poll::PollFd::new(control, nix::poll::PollFlags::POLLIN)];
        match nix::poll::poll(&mut poll, nix::poll::PollTimeout::from(100u8)) {
            Ok(0) => {}
            Err(nix::errno::Errno::EINTR) => continue,
            // Readable, hung up, or an error the read after reports.
            _ => return true,
        }
        let state = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok().and_then(|stat| {
            let rest = stat.get(stat.rfind(')')? + 2..)?;
            rest.chars().next()
        });
        // Still the command (its pidfd names the pid: not reaped), stopped by a signal (not
        // traced: nothing of the session may trace it), and still before its exec (the channel
        // closes in the exec, before any stop after it could take effect).
        if state == Some('T') && pidfd::pid_of(pidfd).ok() == Some(pid) {
            let mut poll = [nix::poll::PollFd::new(control, nix::poll::PollFlags::POLLIN)];
            return matches!(nix::poll::poll(&mut poll, nix::poll::PollTimeout::ZERO), Ok(n) if n > 0);
        }
    }
}

/// Waits until `fd` is readable (a pidfd: its process has ended).
fn poll_readable(fd: BorrowedFd<'_>) -> nix::Result<()> {
    let mut poll = [nix::poll::PollFd::new(fd, nix::poll::PollFlags::POLLIN)];
    loop {
        match nix::poll::poll(&mut poll, nix::poll::PollTimeout::NONE) {
            Err(nix::errno::Errno::EINTR) => continue,
            other => return other.map(drop),
        }
    }
}

/// What came instead of a descriptor.
enum Received {
    Failure([u8; FAILURE_LEN]),
    Other(Error),
}

impl Received {
    fn into_error(self, failure: &dyn Fn(&[u8; FAILURE_LEN]) -> Error) -> Error {
        match self {
            Received::Failure(record) => failure(&record),
            Received::Other(e) => e,
        }
    }
}

/// Receives a descriptor sent with data starting with `tag` (`p`: and a pid, `t`: nothing
/// else), or a failure record; returns the data too.
fn receive(control: &OwnedFd, tag: u8, what: &str) -> Result<(OwnedFd, [u8; FAILURE_LEN]), Received> {
    let (bytes, fd, data) = crate::spawn::receive(control)
        .map_err(|e| Received::Other(Error::spawn(format!("receive {what}"), e)))?;
    match (bytes, fd) {
        (n, Some(fd)) if data[0] == tag && n == if tag == b'p' { wire::STARTED_LEN } else { 1 } => {
            Ok((fd, data))
        }
        (FAILURE_LEN, None) => Err(Received::Failure(data)),
        // The server ended with the request unread (the session ended meanwhile).
        (0, None) => Err(Received::Other(ended())),
        _ => Err(Received::Other(Error::spawn(
            format!("receive {what}"),
            std::io::Error::new(std::io::ErrorKind::InvalidData, format!("{bytes} bytes, no descriptor")),
        ))),
    }
}
