//! Parent-side coordination of one spawn: prepare the plan and channels, clone, write the
//! child's id maps while it waits, release it with "go", then learn from the control socket
//! whether it reached `execve` (end of file) or failed (a `{step, errno, index}` record).

use std::ffi::{OsStr, OsString};
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd, RawFd};

use nix::fcntl::OFlag;
use nix::sys::socket::{AddressFamily, MsgFlags, SockFlag, SockType};

use crate::child::Supervision;
use crate::command::StdioKind;
use crate::plan::{Channels, Exec, FAILURE_LEN, Plan, WorkingDir};
use crate::resources::cgroup::SandboxCgroup;
use crate::sandbox::Config;
use crate::sys::clone::{Forked, Stack};
use crate::sys::{self, pidfd};
use crate::{Child, Compat, Error, userns};

/// What a spawn starts.
#[derive(Clone, Copy)]
pub(crate) enum Mode<'a> {
    /// A sandbox running the command.
    Run,
    /// A sandbox whose payload, once set up, waits for a connection on the listening socket
    /// `gate` before its last steps and exec ([`crate::StartGate`]); the spawn returns then.
    Gated { gate: BorrowedFd<'a> },
    /// A session's sandbox: its payload is a holder (the init program, `program`) that sends a
    /// pidfd of itself back.
    Hold { program: RawFd },
    /// A command joining a running sandbox ([`crate::Child::join`]): joins the namespaces `flags`
    /// of the holder `holder` and its root directory `root`; the init program `program` relays
    /// its status.
    /// With `cgroups`, the command joins these groups (a detached sandbox's) instead of getting
    /// its own.
    /// With `serve`, the joiner itself takes the payload's last steps and execs the init program
    /// in its serving mode: a session's server, which starts the session's commands (it joins
    /// `cgroups`: none, it stays in this program's).
    Join {
        holder: BorrowedFd<'a>,
        root: BorrowedFd<'a>,
        flags: libc::c_int,
        program: RawFd,
        cgroups: Option<&'a [std::path::PathBuf]>,
        serve: bool,
    },
    /// A session's new holder ([`crate::Session::reset`], see [`crate::plan::Renew`]): in the
    /// namespaces `flags` of the session's init `init` and its groups `cgroups`, with new mount,
    /// ipc and uts namespaces, after every other process of the session has been killed.
    Renew { init: BorrowedFd<'a>, flags: libc::c_int, program: RawFd, cgroups: &'a [std::path::PathBuf] },
}

/// Called with the first process's pid before "go" (see `Command::on_created`).
pub(crate) type Hook = dyn FnMut(u32) -> std::io::Result<()> + Send;

/// A started sandbox, and with [`Mode::Hold`] the holder's pidfd.
pub(crate) struct Spawned {
    pub(crate) child: Child,
    pub(crate) holder: Option<OwnedFd>,
}

#[allow(clippy::too_many_arguments)]
pub(crate) fn spawn(
    config: &Config,
    program: &OsStr,
    arg0: Option<&OsStr>,
    args: &[OsString],
    env: &[(OsString, OsString)],
    cwd: Option<WorkingDir<'_>>,
    stdio: [(RawFd, &StdioKind); 3],
    passed: Vec<(RawFd, RawFd)>,
    terminal: Option<sys::pty::Size>,
    hook: Option<&mut Hook>,
    mode: Mode<'_>,
) -> Result<Spawned, Error> {
    let exec = Exec::new(program, arg0, args, env)?;
    let joining = matches!(mode, Mode::Join { .. });
    // A session's server: a joiner that becomes the session's process itself.
    let serving = matches!(mode, Mode::Join { serve: true, .. });
    // (A server lives outside the session's pid namespace: no process of the session can name
    // it. Its commands, which can be named until their exec, are refused to payloads that may
    // trace: see `Session`.)
    if joining && !serving && config.changes_ids() && suid_dumpable_is_user() {
        return Err(Error::Unsupported {
            feature: "a session command that changes ids while fs.suid_dumpable is 1".into(),
            reason: "a change of ids makes a process dumpable until it says otherwise, one system \
                     call later; until its exec a session command holds a copy of this program's \
                     memory, and the session's processes, with the same ids, could stop and trace \
                     it in between"
                .into(),
            hint: "set fs.suid_dumpable to 0 (the kernel's default) or 2, or run the command with \
                   Sandbox::command: no sandboxed process can reach a new sandbox's first processes"
                .into(),
        });
    }
    let renewing = matches!(mode, Mode::Renew { .. });
    // A session command is no sandbox's first process: no init of its own. (A session's new
    // holder is started the way an init starts a payload, by a process that then exits.)
    let use_init = config.use_init() && !joining;

    // Descriptors the child needs only until it has copied them; dropped right after clone.
    let mut child_only: Vec<OwnedFd> = Vec::new();
    let mut parent_stdio: [Option<OwnedFd>; 3] = [None, None, None];
    let mut moves = Vec::with_capacity(3 + passed.len());
    for (target, kind) in stdio {
        match kind {
            // The child copies the terminal it makes over these.
            StdioKind::Inherit | StdioKind::Terminal => {}
            StdioKind::Null => {
                let null = nix::fcntl::open(
                    "/dev/null",
                    OFlag::O_RDWR | OFlag::O_CLOEXEC,
                    nix::sys::stat::Mode::empty(),
                )
                .map_err(|e| Error::spawn("open /dev/null", e))?;
                moves.push((null.as_raw_fd(), target));
                child_only.push(null);
            }
            StdioKind::Piped => {
                let (read, write) =
                    nix::unistd::pipe2(OFlag::O_CLOEXEC).map_err(|e| Error::spawn("pipe2", e))?;
                let (ours, theirs) = if target == 0 { (write, read) } else { (read, write) };
                moves.push((theirs.as_raw_fd(), target));
                child_only.push(theirs);
                parent_stdio[target as usize] = Some(ours);
            }
            StdioKind::Fd(fd) | StdioKind::Unrestricted(fd) => moves.push((fd.as_raw_fd(), target)),
        }
    }
    moves.extend(passed);

    let (control, child_control) =
        nix::sys::socket::socketpair(AddressFamily::Unix, SockType::SeqPacket, None, SockFlag::SOCK_CLOEXEC)
            .map_err(|e| Error::spawn("socketpair", e))?;
    // The init, or a joined command's relay, reports the payload's status through a pipe
    // (not to a process that will not be there: a sandbox that outlives this one).
    let (status_read, status_write) = if matches!(mode, Mode::Hold { .. }) {
        // A session's init: a socket, on which it also takes requests (see `Session::reset`).
        let (ours, theirs) = nix::sys::socket::socketpair(
            AddressFamily::Unix,
            SockType::SeqPacket,
            None,
            SockFlag::SOCK_CLOEXEC,
        )
        .map_err(|e| Error::spawn("socketpair", e))?;
        // Nonblocking on this side only, as a status pipe is.
        nix::fcntl::fcntl(&ours, nix::fcntl::FcntlArg::F_SETFL(OFlag::O_NONBLOCK))
            .map_err(|e| Error::spawn("fcntl", e))?;
        (Some(ours), Some(theirs))
    } else if ((use_init && !renewing) || (joining && !serving)) && !config.detached {
        let (r, w) =
            nix::unistd::pipe2(OFlag::O_CLOEXEC | OFlag::O_NONBLOCK).map_err(|e| Error::spawn("pipe2", e))?;
        (Some(r), Some(w))
    } else {
        (None, None)
    };
    // The child checks it once its parent-death signal is armed: this process may have died
    // before, and then no signal ever comes.
    // A sandbox that outlives this process has no parent to check.
    let parent = match config.detached {
        true => None,
        false => Some(pidfd::open_self().map_err(|e| Error::spawn("pidfd_open of this process", e))?),
    };
    let raw = |fd: &Option<OwnedFd>| fd.as_ref().map_or(-1, AsRawFd::as_raw_fd);
    let init_program = match mode {
        Mode::Hold { program } | Mode::Join { program, .. } | Mode::Renew { program, .. } => program,
        Mode::Run | Mode::Gated { .. } => config.init_program.as_ref().map_or(-1, AsRawFd::as_raw_fd),
    };
    let gate = match mode {
        Mode::Gated { gate } => gate.as_raw_fd(),
        _ => -1,
    };
    let channels = Channels {
        control: child_control.as_raw_fd(),
        status: raw(&status_write),
        parent: raw(&parent),
        init_program,
        gate,
        parent_ends: [control.as_raw_fd(), raw(&status_read)],
    };
    // The child, and with an init the payload, share this process's memory until they exec:
    // each runs on a stack of its own, kept (like the plan) until both have exec'd or died.
    let stack = Stack::new().map_err(|e| Error::spawn("mmap the child's stack", e))?;
    let joined = if joining || renewing { Vec::new() } else { open_joined(config)? };
    let mut plan = Plan::new(config, exec, cwd, moves, channels)?;
    plan.join_ns = joined
        .iter()
        .filter(|j| j.nstype != libc::CLONE_NEWPID)
        .map(|j| (j.fd.as_raw_fd(), j.nstype, j.path.clone()))
        .collect();
    let pid_namespace = joined.iter().find(|j| j.nstype == libc::CLONE_NEWPID);
    plan.use_init = use_init;
    plan.hold = matches!(mode, Mode::Hold { .. } | Mode::Renew { .. });
    if gate >= 0 {
        // The spawn returns while the payload still has its last steps to take, from a plan
        // and a stack this frame frees: it takes them in memory of its own, a copy.
        plan.share_memory = false;
    }
    plan.terminal = terminal.filter(|_| !plan.hold).map(|size| {
        let on = |i: usize| matches!(stdio[i].1, StdioKind::Terminal);
        (size, [on(0), on(1), on(2)])
    });
    if plan.hold {
        // A session's own sandbox has no time limits: its commands have them.
        plan.wall_limit_ms = -1;
    }
    if use_init {
        plan.payload_stack = Some(Stack::new().map_err(|e| Error::spawn("mmap the payload's stack", e))?);
    }

    let started = std::time::Instant::now();
    let limits = &config.limits;
    let confine = config.namespaces.contains(crate::Namespaces::CGROUP);
    let own_pid_ns = use_init && config.namespaces.contains(crate::Namespaces::PID);
    let existing_groups = match mode {
        Mode::Join { cgroups, .. } => cgroups,
        _ => None,
    };
    let (cgroup, unenforced) = match config.cgroup_layout {
        // (A session's new holder goes to the session's groups: see below.)
        _ if existing_groups.is_some() || renewing => (None, Vec::new()),
        // A joined pid namespace's end is not the sandbox's: its tree is ended through the group.
        Some(layout) => match SandboxCgroup::create(limits, layout, own_pid_ns, confine && !joining) {
            Ok(cgroup) => (cgroup, Vec::new()),
            Err(_) if limits.compat == Compat::BestEffort => (None, limits.cgroup_limit_names()),
            Err(e) => return Err(e),
        },
        None if limits.wants_cgroup() => (None, limits.cgroup_limit_names()),
        None => (None, Vec::new()),
    };
    // A cgroup namespace rooted anywhere but in groups of the sandbox's own (no delegation, a
    // read-only or unmounted hierarchy, a best-effort failure) shows the embedding program's
    // groups: say so.
    let mut unenforced = unenforced;
    unenforced.extend(&config.unenforced);
    let mut cgroup = cgroup;
    // The cgroup is sealed while the child is made and sets itself up, and its payload waits
    // for the word (one more byte after "go"). Not for a session command: it and its joiner read one
    // channel, and either could take that byte; its groups are sealed before its release.
    let seal_late = cgroup.is_some() && !joining;
    plan.await_seal = seal_late;
    if use_init && !own_pid_ns && cgroup.is_none() {
        return Err(Error::Unsupported {
            feature: "joining a pid namespace without a cgroup".into(),
            reason: "the sandbox's init is not that namespace's pid 1, so its processes can only be \
                     ended through a cgroup of the sandbox's own, which could not be made"
                .into(),
            hint: "give the sandbox a cgroup it can create (root, or a delegated cgroup_parent)".into(),
        });
    }
    // A session's new holder goes to the session's groups as a sandbox's first process goes
    // to its own (never moved by this process: that waits out an RCU grace period on v1).
    let renewed_groups = match mode {
        Mode::Renew { cgroups, .. } if !cgroups.is_empty() => {
            SandboxCgroup::existing(&crate::resources::cgroup::leaves(cgroups))
        }
        _ => None,
    };
    let joined_groups = cgroup.as_ref().or(renewed_groups.as_ref());
    let cgroup_fd = joined_groups.and_then(SandboxCgroup::clone_into_fd);
    // cgroup v1: the child joins its groups itself, first thing (see `Plan::cgroup_tasks`);
    // not when a hook runs before "go", which is promised a process in its cgroups.
    // The descriptors stay open here until the clone (the child gets copies).
    let mut tasks = Vec::new();
    let self_joins = match joined_groups
        .filter(|_| cgroup_fd.is_none() && hook.is_none())
        .and_then(SandboxCgroup::tasks_files)
    {
        Some(files) => {
            for (fd, label, leaf) in files {
                plan.cgroup_tasks.push((fd.as_raw_fd(), label, leaf));
                tasks.push(fd);
            }
            true
        }
        None => false,
    };
    if let Mode::Renew { init, flags, .. } = mode {
        // The namespaces the session keeps are joined; those its filesystem and its
        // processes' shared state live in are made anew (see `crate::plan::Renew`).
        let renewed = (libc::CLONE_NEWNS | libc::CLONE_NEWIPC | libc::CLONE_NEWUTS) as u64;
        plan.clone_flags &= renewed;
        plan.renew = Some(crate::plan::Renew {
            init: init.as_raw_fd(),
            flags,
            stack: Stack::new().map_err(|e| Error::spawn("mmap the renewer's child's stack", e))?,
            arranged: None,
        });
    }
    if let Mode::Join { holder, root, flags, serve, .. } = mode {
        plan.join = Some(crate::plan::Join {
            holder: holder.as_raw_fd(),
            root: root.as_raw_fd(),
            flags,
            serve,
            stack: Stack::new().map_err(|e| Error::spawn("mmap the command's stack", e))?,
            relay: (-1).into(),
            arg_area: crate::plan::arg_area(),
        });
    }

    let old_mask = sys::block_all_signals();
    // The seal runs beside the clone, on a thread of its own (started with every signal
    // blocked, so no handler of the embedding program runs there). Done on this thread after
    // "go", it kept the sandbox's processes, woken onto this CPU, waiting behind it: about
    // 0.1 ms of each spawn with cgroup v1 limits.
    // Not beside a hook, which may change the leaf's owners itself: sealed after it then.
    let mut sealing =
        cgroup.as_ref().filter(|_| seal_late && hook.is_none()).and_then(SandboxCgroup::start_sealing);
    let flags = plan.clone_flags;
    let cgroup_raw = cgroup_fd.as_ref().map(AsRawFd::as_raw_fd);
    // The plan and the stack live in this frame until the child has exec'd (end of file on the
    // control socket: its close-on-exec end closes only in the exec, or at exit) or died (every
    // path below that gives up kills it and waits for it), and the plan is not touched here
    // until then: the rule `start` states.
    let forked = match (mode, pid_namespace) {
        (Mode::Join { .. }, _) => sys::child::start_joiner(&stack, &mut plan),
        (Mode::Renew { .. }, _) => sys::child::start_renewer(cgroup_raw, &stack, &mut plan),
        (_, None) => sys::child::start(flags, cgroup_raw, &stack, &mut plan),
        (_, Some(joined)) => {
            match sys::with_pid_namespace_for_children(joined.fd.as_fd(), || {
                sys::child::start(flags, cgroup_raw, &stack, &mut plan)
            }) {
                Ok(forked) => forked,
                Err(e) => {
                    let _ = sys::set_sigmask(&old_mask);
                    return Err(Error::Setup {
                        stage: crate::Stage::JoinNamespace { path: joined.path.clone() },
                        source: e,
                    });
                }
            }
        }
    };
    let _ = sys::set_sigmask(&old_mask);
    let (pid, pidfd, in_cgroup) = match forked {
        Ok(Forked { pid, pidfd, in_cgroup }) => (pid, pidfd, in_cgroup),
        Err(e) => {
            // A user namespace the host refuses is tried at build only where a sign says so.
            // (A session command's clone makes none: its user namespace is the session's.)
            let new_user_ns = flags & libc::CLONE_NEWUSER as u64 != 0 && !joining && !renewing;
            if let Some(refused) = new_user_ns.then(|| crate::probe::user_namespaces_refused(e.0)).flatten() {
                return Err(refused);
            }
            let ns: Vec<_> = config.namespaces.names().collect();
            return Err(Error::spawn(
                format!("clone3 (or clone, where clone3 is refused) with namespaces {ns:?}"),
                e,
            ));
        }
    };
    // Should anything below panic, the stack and the plan must not be freed under a child still
    // using them: the guard kills it and waits for it first.
    // A session's reset: the renewer's child and the new holder share this memory too, and
    // only the session's end ends them (see `end_session`).
    let session_init = match mode {
        Mode::Renew { init, .. } => Some(init),
        _ => None,
    };
    let unwinding = Unwinding(pidfd.as_fd(), session_init);
    drop(child_only);
    drop(tasks);
    drop(parent);
    drop(child_control);
    drop(status_write);

    // Something failed on our side: if the child already reported a failure of its own (it
    // failed before "go"), that is the better error; then make sure it is gone.
    let abort = |e: Error| {
        let mut record = [0u8; FAILURE_LEN];
        let reported = matches!(
            nix::sys::socket::recv(control.as_raw_fd(), &mut record, MsgFlags::MSG_DONTWAIT),
            Ok(FAILURE_LEN)
        );
        // (A session's first: the renewer reaps its child as that ends with the session.)
        if let Some(init) = session_init {
            end_session(init);
        }
        let _ = pidfd::send_signal(pidfd.as_fd(), libc::SIGKILL);
        let _ = pidfd::wait(pidfd.as_fd(), false);
        if reported { plan.failure_to_error(&record) } else { e }
    };
    // A session command is the joiner's child: the joiner sends its pidfd, and waits (not
    // reaping it) until the parent is done with it (on v2, has put it in its cgroup), so the
    // pid cannot be reused meanwhile.
    let command = if joining && !serving {
        Some(receive_fd(&control, &plan, "the session command's pidfd").map_err(abort)?)
    } else {
        None
    };
    let abort = |e: Error| {
        if let Some(command) = &command {
            let _ = pidfd::send_signal(command.as_fd(), libc::SIGKILL);
        }
        abort(e)
    };
    let (target, in_cgroup) = match &command {
        Some(fd) => (
            pidfd::pid_of(fd.as_fd()).map_err(|e| abort(Error::spawn("the session command's pid", e)))?,
            false,
        ),
        None => (pid, in_cgroup),
    };
    // Where the child did not join its groups itself (v2 without clone3; a hybrid layout's
    // unified group; a hook to run first): it joins them now, before it runs anything.
    if let (Some(cgroup), false, false) = (cgroup.as_ref().or(renewed_groups.as_ref()), in_cgroup, self_joins)
    {
        cgroup.attach(target).map_err(abort)?;
    }
    if let Some(groups) = existing_groups {
        crate::resources::cgroup::attach_to(groups, target).map_err(abort)?;
    }
    if let Some(adj) = config.oom_score_adj {
        // Inherited by everything the child starts (a session command: the command itself).
        let fd = command.as_ref().map_or(pidfd.as_fd(), |fd| fd.as_fd());
        let dir = userns::ProcDir::open(target, fd).map_err(abort)?;
        dir.write("oom_score_adj", adj.to_string().as_bytes()).map_err(abort)?;
    }
    if let (Some(user_ns), false) = (&config.user_ns, joining || renewing) {
        // /proc/<pid>, proven through the pidfd to be our child: maps are written through it.
        let dir = userns::ProcDir::open(pid, pidfd.as_fd()).map_err(abort)?;
        dir.write_maps(
            (&user_ns.uid_map, &user_ns.uid_writer),
            (&user_ns.gid_map, &user_ns.gid_writer),
            user_ns.deny_setgroups,
        )
        .map_err(abort)?;
    }
    if let Some(hook) = hook {
        hook(pid as u32).map_err(|source| abort(Error::Hook { source }))?;
    }
    if !seal_late && let Some(cgroup) = &mut cgroup {
        cgroup.seal();
    }
    release(&control).map_err(abort)?;
    if joining && !serving {
        // The second message: one for the command ("go"), one for the joiner ("attached").
        release(&control).map_err(abort)?;
    }
    if seal_late && let Some(cgroup) = &mut cgroup {
        match sealing.take() {
            Some(sealing) => cgroup.sealed_by(sealing),
            None => cgroup.seal(),
        }
        match nix::sys::socket::send(control.as_raw_fd(), b"s", MsgFlags::MSG_NOSIGNAL) {
            // A child that failed meanwhile has closed its end: its record, read below, says why.
            Ok(_) | Err(nix::errno::Errno::EPIPE | nix::errno::Errno::ECONNRESET) => {}
            Err(e) => return Err(abort(Error::spawn("tell the sandbox its cgroup is sealed", e))),
        }
    }
    if confine && !cgroup.as_ref().is_some_and(SandboxCgroup::confines_every_hierarchy) {
        unenforced.push(crate::resources::CGROUP_CONFINEMENT);
    }
    // A session's holder sends a pidfd of itself before its exec.
    let holder = match mode {
        Mode::Hold { .. } | Mode::Renew { .. } => {
            Some(receive_fd(&control, &plan, "the session holder's pidfd").map_err(abort)?)
        }
        _ => None,
    };
    // The payload sends the master of the terminal it made, before its exec.
    let terminal = match plan.terminal {
        Some(_) => Some(receive_fd(&control, &plan, "the payload's terminal").map_err(abort)?),
        None => None,
    };

    // End of file: the close-on-exec socket closed in execve; at a start gate, one byte: the
    // payload waits there. Otherwise a failure record.
    let mut record = [0u8; FAILURE_LEN];
    let n = loop {
        match nix::unistd::read(&control, &mut record) {
            Err(nix::errno::Errno::EINTR) => continue,
            other => break other,
        }
    };
    let gated = matches!(mode, Mode::Gated { .. });
    match n {
        Ok(0) if gated => Err(abort(Error::spawn(
            "read setup result",
            std::io::Error::new(std::io::ErrorKind::InvalidData, "the payload never reached its start gate"),
        ))),
        Ok(n) if n == usize::from(gated) => {
            drop(unwinding);
            // A session's own sandbox lives until it is stopped: its commands have the limits.
            let session = matches!(mode, Mode::Hold { .. } | Mode::Renew { .. }) || serving;
            let supervision = Supervision {
                started,
                wall_limit: limits.wall_time.filter(|_| !session),
                cpu_limit: limits.cpu_time.filter(|_| !session),
                cgroup,
                unenforced,
            };
            let child = Child::new(pid, pidfd, status_read, parent_stdio, supervision)
                .with_command(command)
                .with_terminal(terminal)
                // A sandbox outliving this process waits at its gate until let go.
                .with_release(if gated && config.detached { Some(control) } else { None });
            Ok(Spawned { child, holder })
        }
        Ok(FAILURE_LEN) => {
            // The child exits right after reporting; reap it so nothing is left behind (after
            // the session, whose end ends the renewer's child, which the renewer reaps).
            if let Some(init) = session_init {
                end_session(init);
            }
            let _ = pidfd::wait(pidfd.as_fd(), false);
            Err(plan.failure_to_error(&record))
        }
        Ok(n) => Err(abort(Error::spawn(
            "read setup result",
            std::io::Error::new(std::io::ErrorKind::InvalidData, format!("short record of {n} bytes")),
        ))),
        Err(e) => Err(abort(Error::spawn("read setup result", e))),
    }
}

/// Whether `fs.suid_dumpable` is 1: a process whose ids change is then dumpable (traceable by
/// processes of its new ids) until it turns that off. Unreadable counts as 1.
fn suid_dumpable_is_user() -> bool {
    std::fs::read_to_string("/proc/sys/fs/suid_dumpable").map_or(true, |v| v.trim() == "1")
}

/// Kills and reaps the child whose pidfd it holds if dropped while unwinding (see `spawn`).
struct Unwinding<'a>(BorrowedFd<'a>, Option<BorrowedFd<'a>>);

impl Drop for Unwinding<'_> {
    fn drop(&mut self) {
        if std::thread::panicking() {
            if let Some(init) = self.1 {
                end_session(init);
            }
            let _ = pidfd::send_signal(self.0, libc::SIGKILL);
            let _ = pidfd::wait(self.0, false);
        }
    }
}

/// Ends the session whose init is `init` (a reset that failed), and returns once every
/// process of it is gone: the renewer's child and the new holder may still be running on the
/// spawn's stacks and reading its plan, and the kernel reports an init's end only after every
/// other process of its pid namespace has ended and been reaped (the renewer's child by the
/// renewer, alive until then: the caller kills the renewer after this). The init is left for
/// its `Child` to reap.
fn end_session(init: BorrowedFd<'_>) {
    let _ = pidfd::send_signal(init, libc::SIGKILL);
    loop {
        let mut fds = [nix::poll::PollFd::new(init, nix::poll::PollFlags::POLLIN)];
        match nix::poll::poll(&mut fds, nix::poll::PollTimeout::NONE) {
            Err(nix::errno::Errno::EINTR) => continue,
            _ => break,
        }
    }
}

/// Receives a pidfd (one byte of data with SCM_RIGHTS: a session's holder, or a session
/// command from its joiner), or a failure record.
fn receive_fd(control: &OwnedFd, plan: &Plan<'_>, what: &str) -> Result<OwnedFd, Error> {
    let (bytes, fd, data) = receive(control).map_err(|e| Error::spawn(format!("receive {what}"), e))?;
    match (bytes, fd) {
        (1, Some(fd)) => Ok(fd),
        (FAILURE_LEN, None) => Err(plan.failure_to_error(&data)),
        _ => Err(Error::spawn(
            format!("receive {what}"),
            std::io::Error::new(std::io::ErrorKind::InvalidData, format!("{bytes} bytes, no descriptor")),
        )),
    }
}

/// Receives one message of at most [`FAILURE_LEN`] bytes on `control`, with the descriptor it
/// carries (if any; owned at once, so closed on every path that does not keep it): its length,
/// the descriptor and the bytes.
pub(crate) fn receive(control: &OwnedFd) -> nix::Result<(usize, Option<OwnedFd>, [u8; FAILURE_LEN])> {
    let mut data = [0u8; FAILURE_LEN];
    let mut iov = [std::io::IoSliceMut::new(&mut data)];
    let mut space = nix::cmsg_space!(RawFd);
    let msg = loop {
        match nix::sys::socket::recvmsg::<()>(
            control.as_raw_fd(),
            &mut iov,
            Some(&mut space),
            MsgFlags::MSG_CMSG_CLOEXEC,
        ) {
            Err(nix::errno::Errno::EINTR) => continue,
            other => break other?,
        }
    };
    let fd = msg.cmsgs().ok().and_then(|mut c| {
        c.find_map(|c| match c {
            nix::sys::socket::ControlMessageOwned::ScmRights(fds) => fds.first().copied(),
            _ => None,
        })
    });
    let bytes = msg.bytes;
    Ok((bytes, fd.map(sys::owned), data))
}

/// Lets the waiting child continue. MSG_NOSIGNAL: if the child died, this must not raise SIGPIPE
/// in the embedding program.
fn release(control: &OwnedFd) -> Result<(), Error> {
    nix::sys::socket::send(control.as_raw_fd(), b"g", MsgFlags::MSG_NOSIGNAL)
        .map(drop)
        .map_err(|e| Error::spawn("release sandbox (send go)", e))
}

/// A namespace file the sandbox joins, opened for one spawn.
struct JoinedNamespace {
    fd: OwnedFd,
    nstype: libc::c_int,
    path: std::path::PathBuf,
}

/// Opens the namespace files the sandbox joins, checking each is a namespace of its kind, and
/// that none whose parameters the sandbox sets is the embedding program's own (that would be
/// setting the host's).
fn open_joined(config: &Config) -> Result<Vec<JoinedNamespace>, Error> {
    let mut out = Vec::with_capacity(config.joined.len());
    for (kind, path) in &config.joined {
        let invalid =
            |reason: String| Error::InvalidPath { what: "namespace to join", path: path.clone(), reason };
        let fd: OwnedFd = std::fs::File::open(path)
            .map_err(|e| Error::PathAccess { what: "namespace to join", path: path.clone(), source: e })?
            .into();
        let nstype = kind.flags() as libc::c_int;
        let name = kind.names().next().unwrap_or("?");
        match sys::namespace_type(fd.as_fd()) {
            Ok(t) if t == nstype => {}
            Ok(t) => {
                let found = crate::Namespaces::all()
                    .iter()
                    .find(|k| k.flags() as libc::c_int == t)
                    .and_then(|k| k.names().next())
                    .unwrap_or("unknown");
                return Err(invalid(format!("is a {found} namespace, not a {name} namespace")));
            }
            Err(_) => return Err(invalid(format!("is not a namespace file (wanted a {name} namespace)"))),
        }
        if config.configured_kinds.contains(*kind) {
            let own = std::fs::metadata(format!("/proc/self/ns/{name}"))
                .map_err(|e| Error::spawn(format!("stat /proc/self/ns/{name}"), e))?;
            let joined = nix::sys::stat::fstat(&fd)
                .map_err(|e| Error::spawn(format!("fstat {}", path.display()), e))?;
            use std::os::unix::fs::MetadataExt;
            if own.ino() == joined.st_ino && own.dev() == joined.st_dev {
                return Err(invalid(format!(
                    "is this program's own {name} namespace, whose parameters (sysctl, hostname) the sandbox would set for the host"
                )));
            }
        }
        out.push(JoinedNamespace { fd, nstype, path: path.clone() });
    }
    Ok(out)
}
