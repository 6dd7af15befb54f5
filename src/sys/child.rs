//! The post-clone child: runs in the new process between `clone` and `execve`.
//!
//! Rules for everything reachable from [`entry`] (a test with an aborting allocator enforces the
//! first): no allocation, no locks, no formatting, no logging, no panics, no C-library calls —
//! the process shares the memory of a possibly multi-threaded program (`CLONE_VM`, see
//! [`super::clone`]) whose other threads may hold any lock, and the `errno` of the thread that
//! spawned it. Only the raw wrappers of [`crate::sys`] and reads of the prepared [`Plan`] are
//! used; the only memory written is the plan's own scratch arrays and this process's stack.
//!
//! Order: signals → parent-death signal → cgroup v1 groups (joined by the child itself) →
//! descriptors → wait for "go" (the parent writes id maps meanwhile, and attaches the cgroup
//! where the child did not join it itself) → root of the user namespace (when the map makes another
//! id root) → cgroup namespace → a new session keyring → time namespace → new session →
//! hostname → loopback → filesystem up to the root switch ([`super::mount`]) → [with a pid
//! namespace: the payload starts on its own stack; this process writes its nested maps and execs
//! `stockade-init` ([`super::init`]), which turns non-dumpable and only then lets the payload
//! go on] → mount lock in a nested user namespace → an image's missing working directory →
//! credentials → parent-death signal again → cwd → unblock signals → exec.
//!
//! A credential change makes the process's memory non-dumpable (and the flag must then stay
//! off until exec: a dumpable process with the payload's ids could be traced by them). Shared
//! memory is the embedder's, so a sandbox whose processes change ids (root of an id range, a
//! payload user) gets a first process with memory of its own, a copy, as `fork` makes
//! ([`Plan::share_memory`]); the others never change ids and never touch the flag.

use std::convert::Infallible;
use std::os::fd::RawFd;

use libc::c_void;

use super::{Errno, SysResult};
use crate::plan::{FAILURE_LEN, INTERNAL_SLOTS, Plan, Step, encode_failure};

/// Exit code of a child that reported a setup failure.
pub(crate) const EXIT_SETUP_FAILED: i32 = 127;
/// Exit code of a child whose parent went away before saying "go".
const EXIT_ABANDONED: i32 = 126;

/// A failed step, on its way to the parent.
pub(super) struct Failure {
    step: Step,
    errno: Errno,
    index: u32,
}

pub(super) fn at(step: Step) -> impl Fn(Errno) -> Failure {
    move |errno| Failure { step, errno, index: 0 }
}

pub(super) fn at_index(step: Step, index: usize) -> impl Fn(Errno) -> Failure {
    move |errno| Failure { step, errno, index: index as u32 }
}

/// The child's entry point (see [`super::clone::clone_with_pidfd`]); `arg` is the spawn's
/// [`Plan`]. Never returns: it either execs the payload, becomes the pid-1 init, or reports a
/// failure to the parent and exits.
///
/// # Safety
/// `arg` must point at a `Plan` that stays valid, and that nothing else uses, until this
/// process has exec'd or died.
pub(crate) unsafe extern "C" fn entry(arg: *mut c_void) -> ! {
    // SAFETY: the caller's contract.
    let plan = unsafe { &mut *(arg as *mut Plan<'static>) };
    let mut control = plan.channels.control;
    let Err(failure) =
        if plan.join.is_some() { setup_command(plan, &mut control) } else { setup(plan, &mut control) };
    report(control, failure)
}

/// Clones the sandbox's first process (namespaces `flags`, in the cgroup directory `cgroup`),
/// which runs [`entry`] with `plan` on `stack`.
///
/// The caller must keep `plan` and `stack` alive, and must not touch the plan, until the child
/// has exec'd or died: the child shares this memory. (A safe function for the one caller,
/// `spawn`, which keeps both in its frame and waits for one or the other on every path.)
pub(crate) fn start(
    flags: u64,
    cgroup: Option<RawFd>,
    stack: &super::clone::Stack,
    plan: &mut Plan<'_>,
) -> SysResult<super::clone::Forked> {
    let arg = plan as *mut Plan<'_> as *mut c_void;
    let share = plan.share_memory;
    // SAFETY: `entry` follows the post-clone rules; the caller keeps `plan` and `stack` valid and
    // unused until the child has exec'd or died (above).
    unsafe { super::clone::clone_with_pidfd(flags, cgroup, share, stack, entry, arg) }
}

/// Joins the sandbox's cgroup v1 groups: `0` to each `tasks` file the parent opened (see
/// [`Plan::cgroup_tasks`]), each closed once written.
fn join_cgroups(plan: &Plan<'_>) -> Result<(), Failure> {
    for (i, (fd, ..)) in plan.cgroup_tasks.iter().enumerate() {
        super::write_all(*fd, b"0").map_err(at_index(Step::JoinCgroup, i))?;
        super::close(*fd);
    }
    Ok(())
}

fn report(control: RawFd, failure: Failure) -> ! {
    let record = encode_failure(failure.step, failure.errno.0, failure.index);
    let _ = super::write_all(control, &record[..FAILURE_LEN]);
    super::exit(EXIT_SETUP_FAILED)
}

/// What the payload process, started by the child that becomes the init, continues with.
struct PayloadStart<'p> {
    plan: *const Plan<'p>,
    built: *const super::mount::Built,
    lock: Option<*const super::mount::LockSync>,
    control: RawFd,
    /// The init program (a session's holder execs it too).
    program: RawFd,
    /// The start gate, or -1.
    gate: RawFd,
    /// Read end of the pipe the init closes once it is non-dumpable, and the write end (the
    /// init's; the payload closes its copy).
    ready: (RawFd, RawFd),
}

/// The payload's entry point under an init; `arg` is a [`PayloadStart`] on the init's stack.
///
/// # Safety
/// `arg` must point at a `PayloadStart` that, with everything it points at, stays valid until
/// this process has exec'd or died.
unsafe extern "C" fn payload_entry(arg: *mut c_void) -> ! {
    // SAFETY: the caller's contract; the init never returns from the frame holding it, and the
    // plan outlives both (see `entry`).
    let start = unsafe { &*(arg as *const PayloadStart<'static>) };
    // SAFETY: as above.
    let (plan, built, lock) = unsafe { (&*start.plan, &*start.built, start.lock.map(|l| &*l)) };
    let Err(failure) = continue_payload(start, plan, built, lock);
    report(start.control, failure)
}

fn continue_payload(
    start: &PayloadStart<'_>,
    plan: &Plan<'_>,
    built: &super::mount::Built,
    lock: Option<&super::mount::LockSync>,
) -> Result<Infallible, Failure> {
    super::close(start.ready.1);
    super::mount::enter(built, lock)?;
    if built.proc >= 0 {
        super::close(built.proc);
    }
    // The init closes its end once it is non-dumpable: only then may the payload's own code run.
    let mut byte = [0u8; 1];
    match super::read(start.ready.0, &mut byte) {
        Ok(0) => {}
        Ok(_) => return Err(at(Step::Init)(Errno(libc::EPROTO))),
        Err(e) => return Err(at(Step::Init)(e)),
    }
    super::close(start.ready.0);
    exec_payload(plan, Ends { control: start.control, parent: -1, program: start.program, gate: start.gate })
}

fn setup(plan: &mut Plan<'_>, control: &mut RawFd) -> Result<Infallible, Failure> {
    // Dispositions back to default (ignored signals would survive exec); everything blocked
    // until just before exec, so the init can wait for signals instead of being interrupted.
    super::reset_signal_dispositions();
    super::set_sigmask(&super::sigset(true)).map_err(at(Step::Signals))?;
    if !plan.detached {
        super::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL as libc::c_ulong)
            .map_err(at(Step::DeathSignal))?;
    }
    // A session's reset (see `crate::plan::Renew`): the renewer has joined the groups, arranged
    // the descriptors and had "go" already.
    let renewing = plan.renew.is_some();

    // (A renewer's child is in the session's groups: the renewer joined them.)
    if !renewing {
        join_cgroups(plan)?;
    }
    // Existing namespaces first (CNI's network, a pod's ipc and uts): what follows configures
    // the sandbox's own. Their descriptors are close-on-exec, and below any `arrange_fds` moves.
    for (i, (fd, nstype, _)) in plan.join_ns.iter().enumerate() {
        super::setns(*fd, *nstype).map_err(at_index(Step::JoinNamespace, i))?;
    }
    let [status, parent, init_program, gate] = match plan.renew.as_ref().and_then(|r| r.arranged) {
        Some((arranged, moved)) => {
            *control = moved;
            arranged
        }
        None => arrange_fds(plan, control, None)?,
    };
    if !renewing {
        wait_for_go(*control);
    }
    // The parent-death signal was armed first thing; had the parent died before that, no signal
    // will ever come (and "go" may still have been waiting in the socket): look.
    if super::pidfd::has_exited(parent) {
        super::exit(EXIT_ABANDONED);
    }
    // With the embedding program's own ids still: the paths it handed over are its to open,
    // whatever the ids the map gives the sandbox can reach.
    super::mount::open_sources(plan.fs, &mut plan.host_fds);
    if plan.become_root {
        super::setresgid(0).map_err(at(Step::BecomeRoot))?;
        super::setresuid(0).map_err(at(Step::BecomeRoot))?;
        // The change also made us non-dumpable, which gives our /proc files to host root:
        // dumpable again (this memory is our own copy: ids change only in one, see above).
        super::prctl(libc::PR_SET_DUMPABLE, 1).map_err(at(Step::BecomeRoot))?;
        // The credential change cleared the parent-death signal: arm it again, then make sure
        // the parent did not die in between (inside a pid namespace getppid cannot tell).
        if !plan.detached {
            super::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL as libc::c_ulong)
                .map_err(at(Step::DeathSignal))?;
        }
        if super::pidfd::has_exited(parent) {
            super::exit(EXIT_ABANDONED);
        }
    }
    // In every cgroup of ours by now (joined above, or put there by the parent before "go"):
    // that is the namespace's root.
    if plan.cgroup_ns && !renewing {
        super::unshare(super::clone::flags::CLONE_NEWCGROUP as libc::c_int)
            .map_err(at(Step::CgroupNamespace))?;
    }
    // Nothing the embedding program keeps in its session keyring is searchable from here.
    super::join_new_session_keyring().map_err(at(Step::SessionKeyring))?;

    // /proc/self/timens_offsets is ours to write only while we are dumpable (an unprivileged
    // caller's child cannot write it once it turns root-owned): before the init drops that.
    if let Some(offsets) = plan.time_offsets {
        enter_time_namespace(offsets).map_err(at(Step::TimeNamespace))?;
    }
    // A new session without a controlling terminal: TIOCSTI cannot inject keystrokes.
    super::setsid().map_err(at(Step::NewSession))?;
    if let Some(name) = plan.hostname {
        super::sethostname(name).map_err(at(Step::Hostname))?;
    }
    if let Some(name) = plan.domainname {
        super::setdomainname(name).map_err(at(Step::Domainname))?;
    }
    if plan.loopback && !renewing {
        super::loopback_up().map_err(at(Step::Loopback))?;
        if plan.fs.lock_maps.is_some() {
            // The payload ends up in a nested user namespace without privileges over this
            // network namespace: let it bind low ports like root could (as Docker does).
            write_file(c"/proc/sys/net/ipv4/ip_unprivileged_port_start", b"0").map_err(at(Step::Loopback))?;
        }
    }
    // Through this process's /proc/sys, which shows its own namespaces' parameters (the host's
    // /proc is still where it was: the root changes below).
    for (i, (path, value)) in plan.sysctls.iter().enumerate() {
        write_file(path, value).map_err(at_index(Step::Sysctl, i))?;
    }
    let built = super::mount::build(plan.fs, &plan.host_fds, plan.use_init)?;
    let lock_maps = plan.fs.lock_maps.as_ref().map(|(u, g)| (u.as_slice(), g.as_slice()));
    let lock = match lock_maps {
        Some(_) => Some(super::mount::lock_sync()?),
        None => None,
    };
    if plan.use_init {
        // The payload starts on its own stack, sharing this memory until its exec; this process
        // becomes the init. The payload waits for the init's "ready" (its end of this pipe
        // closing) before its own code runs: by then the init is non-dumpable, so the payload
        // can neither ptrace it nor open its /proc/<pid>/exe or fds (runc CVE-2019-5736).
        let stack = plan.payload_stack.as_ref().ok_or(Failure {
            step: Step::ForkPayload,
            errno: Errno(libc::EINVAL),
            index: 0,
        })?;
        let ready = super::pipe().map_err(at(Step::ForkPayload))?;
        let start = PayloadStart {
            plan: &*plan,
            built: &built,
            lock: lock.as_ref().map(|l| l as *const _),
            control: *control,
            program: init_program,
            gate,
            ready,
        };
        // SAFETY: `start` lives in this frame, which this process never leaves (it execs or
        // exits from here); the plan and the stack outlive both processes (see `entry`).
        let payload = unsafe {
            super::clone::clone_on_stack(
                stack,
                payload_entry,
                &start as *const PayloadStart<'_> as *mut c_void,
            )
        }
        .map_err(at(Step::ForkPayload))?;
        super::close(ready.0);
        // The init stays in the outer user namespace and writes the payload's nested maps.
        if let (Some(sync), Some(maps)) = (&lock, lock_maps) {
            super::mount::write_side(sync, super::mount::pid_dir(built.proc, payload), maps);
        }
        super::close(built.proc);
        if renewing {
            // The new holder goes on once this process has ended (its end of `ready` closes
            // then) and the session's init has taken it as an orphan: its parent from then on,
            // as for the first holder. This frame is never left: the exit keeps `start` intact.
            super::exit(0);
        }
        // From here a failure must end the payload before this frame (which holds `start`) is
        // left: the payload may still be reading it.
        let abandon = |errno: Errno| {
            let _ = super::kill(payload, libc::SIGKILL);
            let _ = super::waitpid(payload);
            at(Step::Init)(errno)
        };
        let kept = [status, ready.1, parent];
        for fd in kept.into_iter().filter(|&fd| fd >= 0) {
            super::keep_on_exec(fd).map_err(abandon)?;
        }
        let mut text = [0u8; 96];
        // A session's init outlives its holder, which a reset replaces.
        let values = [payload, status, ready.1, parent, plan.wall_limit_ms, i32::from(plan.hold)];
        let environment = super::init::environment(&mut text, values);
        let errno = super::init::exec(init_program, environment);
        return Err(abandon(errno));
    } else if let (Some(sync), Some(maps)) = (&lock, lock_maps) {
        // No init: a short-lived helper stays behind to write our nested maps.
        let helper = super::fork_raw().map_err(at(Step::LockMounts))?;
        if helper == 0 {
            super::mount::write_side(sync, Ok(built.proc), maps);
            super::exit(0);
        }
        let entered = super::mount::enter(&built, Some(sync));
        let _ = super::waitpid(helper);
        entered?;
    } else {
        super::mount::enter(&built, None)?;
    }
    if built.proc >= 0 {
        super::close(built.proc);
    }
    exec_payload(plan, Ends { control: *control, parent: -1, program: init_program, gate })
}

/// Clones a session's renewer (see [`crate::plan::Renew`]) on `stack`, in the cgroup directory
/// `cgroup` (v2), sharing this process's memory as a sandbox's first process does
/// (`Plan::share_memory`).
///
/// The caller keeps `plan` and `stack` alive, and touches neither, until the renewer, its child
/// and the new holder have exec'd or died, as for [`start`].
pub(crate) fn start_renewer(
    cgroup: Option<RawFd>,
    stack: &super::clone::Stack,
    plan: &mut Plan<'_>,
) -> SysResult<super::clone::Forked> {
    let arg = plan as *mut Plan<'_> as *mut c_void;
    let share = plan.share_memory;
    // SAFETY: `renew_entry` follows the post-clone rules; the caller keeps `plan` and `stack`
    // valid (above).
    unsafe { super::clone::clone_with_pidfd(0, cgroup, share, stack, renew_entry, arg) }
}

/// The renewer's entry point.
///
/// # Safety
/// As for [`entry`]; `plan.renew` is set.
unsafe extern "C" fn renew_entry(arg: *mut c_void) -> ! {
    // SAFETY: the caller's contract.
    let plan = unsafe { &mut *(arg as *mut Plan<'static>) };
    let mut control = plan.channels.control;
    let Err(failure) = renew(plan, &mut control, arg);
    report(control, failure)
}

/// The renewer: joins the session's cgroup v1 groups (or was cloned into its v2 group, or the
/// parent puts it there before "go"), then the init's namespaces; arranges its descriptors;
/// waits for "go"; starts its child (`entry`, which sees `plan.renew`) and waits for it. (No process of the session is left to reach either: the
/// init has killed them all before the spawn.)
fn renew(plan: &mut Plan<'_>, control: &mut RawFd, arg: *mut c_void) -> Result<Infallible, Failure> {
    let einval = || Failure { step: Step::JoinSession, errno: Errno(libc::EINVAL), index: 0 };
    let (init, flags) = plan.renew.as_ref().map(|r| (r.init, r.flags)).ok_or_else(einval)?;
    super::reset_signal_dispositions();
    super::set_sigmask(&super::sigset(true)).map_err(at(Step::Signals))?;
    super::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL as libc::c_ulong).map_err(at(Step::DeathSignal))?;
    join_cgroups(plan)?;
    // Every namespace at once, the user namespace first (see `enter_session`); the pid
    // namespace applies to the child. (A sandbox's first process opens the host paths in its
    // new user namespace too.)
    super::setns(init, flags).map_err(at(Step::JoinSession))?;
    let arranged = arrange_fds(plan, control, None)?;
    if let Some(renew) = plan.renew.as_mut() {
        renew.arranged = Some((arranged, *control));
    }
    wait_for_go(*control);
    let [_, parent, _, _] = arranged;
    if super::pidfd::has_exited(parent) {
        super::exit(EXIT_ABANDONED);
    }
    let stack = &plan.renew.as_ref().ok_or_else(einval)?.stack;
    // SAFETY: `entry` follows the post-clone rules; the plan and the child's stack live (in the
    // embedding program's memory, and in this copy) until the spawn is over.
    let child = unsafe { super::clone::clone_with_pidfd(plan.clone_flags, None, true, stack, entry, arg) }
        .map_err(at(Step::ForkPayload))?;
    use std::os::fd::IntoRawFd;
    super::close(child.pidfd.into_raw_fd());
    // The child reports its own failure.
    let _ = super::waitpid(child.pid);
    super::exit(0)
}

/// Clones the joiner of a session command (see [`crate::plan::Join`]): it shares this
/// process's memory, runs [`join_entry`] with `plan` on `stack`, starts the command as its own
/// child, tells the parent the command's pid over the control socket, and execs the init
/// program as the command's relay (it reports the command's status and forwards signals).
///
/// The caller keeps `plan` and `stack` alive, and touches neither, until both have exec'd or
/// died, as for [`start`].
pub(crate) fn start_joiner(
    stack: &super::clone::Stack,
    plan: &mut Plan<'_>,
) -> SysResult<super::clone::Forked> {
    // The joiner always gets a copy of this memory, which it makes non-dumpable before the
    // command (sharing that copy) exists: a session already runs untrusted processes with the
    // command's namespaces and, once it drops its capabilities, its credentials, which could
    // otherwise open /proc/<command>/mem before its exec. (A copy also lets it join a time
    // namespace, which needs memory of its own, and lets the command change ids.)
    let arg = plan as *mut Plan<'_> as *mut c_void;
    // SAFETY: `join_entry` follows the post-clone rules; the caller keeps `plan` and `stack`
    // valid (above).
    unsafe { super::clone::clone_with_pidfd(0, None, false, stack, join_entry, arg) }
}

/// The joiner's entry point.
///
/// # Safety
/// As for [`entry`]; `plan.join` is set.
unsafe extern "C" fn join_entry(arg: *mut c_void) -> ! {
    // SAFETY: the caller's contract.
    let serve = unsafe { (*(arg as *const Plan<'static>)).join.as_ref().is_some_and(|j| j.serve) };
    if serve {
        // The session's server: this process takes the last steps itself and execs the init
        // program in its serving mode; no command shares the plan.
        // SAFETY: the caller's contract; nothing else uses the plan until this process has
        // exec'd or died.
        let plan = unsafe { &mut *(arg as *mut Plan<'static>) };
        let mut control = plan.channels.control;
        let Err(failure) = enter_session(plan).and_then(|()| setup_command(plan, &mut control));
        report(control, failure)
    }
    // SAFETY: the caller's contract; only shared access here (the command takes the plan as its
    // own; the joiner writes only the atomics of `join`).
    let plan = unsafe { &*(arg as *const Plan<'static>) };
    let control = plan.channels.control;
    let Err(failure) = enter_session(plan).and_then(|()| join(plan, arg));
    report(control, failure)
}

/// The joiner's first steps: non-dumpable, named, and in the session's namespaces and root.
fn enter_session(plan: &Plan<'_>) -> Result<(), Failure> {
    let einval = Failure { step: Step::JoinSession, errno: Errno(libc::EINVAL), index: 0 };
    let join = plan.join.as_ref().ok_or(einval)?;
    let channels = &plan.channels;
    // This memory is the joiner's own copy (see `start_joiner`).
    super::prctl(libc::PR_SET_DUMPABLE, 0).map_err(at(Step::NonDumpable))?;
    // Anyone may read a process's /proc/<pid>/cmdline, and until its exec the command's is
    // this copy's: the embedding program's argv. Overwritten here, in the copy.
    if let Some(area) = join.arg_area {
        // SAFETY: this memory is the joiner's own copy of the embedding program's, whose argv
        // nothing here reads; the area is its initial stack's argument strings.
        unsafe { super::overwrite_arg_area(area, b"stockade-join") };
    }
    // Its /proc/<pid>/comm too (the command inherits it): the session's processes can read
    // the command's until its exec, which would show the embedding program's thread name.
    super::set_name(c"stockade-join");
    // The relay this becomes must see SIGCHLD (an ignored one would reap the command for it).
    super::reset_signal_dispositions();
    // (A detached command's relay outlives the embedding process.)
    if !plan.detached {
        super::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL as libc::c_ulong)
            .map_err(at(Step::DeathSignal))?;
    }
    if super::pidfd::has_exited(channels.parent) {
        super::exit(EXIT_ABANDONED);
    }
    // Every namespace of the holder at once: the kernel enters the user namespace first and
    // checks the others against it, with this process's privileges over them (the embedding
    // user owns the session's user namespaces). The pid namespace applies to children: the
    // command.
    super::setns(join.holder, join.flags).map_err(at(Step::JoinSession))?;
    // setns put this process at its mount namespace's root; the holder's own may be a chroot.
    super::mount::fchdir(join.root).map_err(at(Step::JoinSession))?;
    super::mount::chroot(c".").map_err(at(Step::JoinSession))
}

/// The joiner of a command, in the session already: starts the command and becomes its relay.
fn join(plan: &Plan<'_>, arg: *mut c_void) -> Result<Infallible, Failure> {
    use std::sync::atomic::Ordering;
    let einval = Failure { step: Step::JoinSession, errno: Errno(libc::EINVAL), index: 0 };
    let join = plan.join.as_ref().ok_or(einval)?;
    let channels = &plan.channels;
    // The command's parent-death check looks at this process (its relay) through this.
    let relay = super::pidfd_of_self().map_err(at(Step::DeathSignal))?;
    join.relay.store(relay, Ordering::SeqCst);
    // Unlike a sandbox's init (pid 1, which its payload can name), the relay lives outside the
    // session's pid namespace (sessions always have one): nothing in the session can name it to
    // trace it, so the command need not wait for it to turn non-dumpable.
    // The command shares the joiner's (non-dumpable) copy. It joins its cgroup v1 groups itself;
    // on v2 the parent puts it in its cgroup: CLONE_INTO_CGROUP would be checked against the
    // session's cgroup namespace, which the command's group is outside of.
    // SAFETY: `entry` follows the post-clone rules; the plan and the command's stack are in this
    // copy of memory, which lives as long as either process.
    let command = unsafe { super::clone::clone_with_pidfd(0, None, true, &join.stack, entry, arg) }
        .map_err(at(Step::ForkPayload))?;
    let pid = command.pid;
    use std::os::fd::IntoRawFd;
    let command_pidfd = command.pidfd.into_raw_fd();
    super::close(relay);
    // From here a failure must end the command first (it may still be reading this memory).
    let abandon = |errno: Errno| {
        let _ = super::kill(pid, libc::SIGKILL);
        let _ = super::waitpid(pid);
        at(Step::Init)(errno)
    };
    // The parent gets the command's pidfd (it signals the command through it, and on cgroup v2
    // puts it in its cgroup), and says when it has: until then the command is not reaped (this
    // process is not yet its relay), so its pid cannot be reused under the parent.
    let sent = super::send_fd(channels.control, command_pidfd);
    super::close(command_pidfd);
    sent.map_err(abandon)?;
    let mut attached = [0u8; 1];
    match super::read(channels.control, &mut attached) {
        Ok(1) => {}
        Ok(_) => return Err(abandon(Errno(libc::ECANCELED))),
        Err(e) => return Err(abandon(e)),
    }
    for fd in [channels.status, channels.parent].into_iter().filter(|&fd| fd >= 0) {
        super::keep_on_exec(fd).map_err(abandon)?;
    }
    let mut text = [0u8; 96];
    let values = [pid, channels.status, -1, channels.parent, plan.wall_limit_ms, 0];
    let environment = super::init::environment(&mut text, values);
    Err(abandon(super::init::exec(channels.init_program, environment)))
}

/// A session command: in the session's namespaces already (the joiner's), it joins its cgroup
/// v1 groups, arranges its descriptors, waits for "go" (on v2 the parent has put it in its
/// cgroup by then), becomes root of the namespace when the map makes another id root, and goes
/// on like any payload.
fn setup_command(plan: &mut Plan<'_>, control: &mut RawFd) -> Result<Infallible, Failure> {
    use std::sync::atomic::Ordering;
    let einval = Failure { step: Step::JoinSession, errno: Errno(libc::EINVAL), index: 0 };
    let join = plan.join.as_ref().ok_or(einval)?;
    // A session's server has no relay: its parent is the embedding process, which `join`
    // checked already (and which the server watches through the plan's pidfd from here).
    let relay = (!join.serve).then(|| join.relay.load(Ordering::SeqCst));
    if let Some(relay) = relay {
        // Dies with the relay (which dies with the embedding process); look in case it already
        // has.
        super::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL as libc::c_ulong)
            .map_err(at(Step::DeathSignal))?;
        if super::pidfd::has_exited(relay) {
            super::exit(EXIT_ABANDONED);
        }
    }
    // Into its own groups before anything else (the joiner stays where it is).
    join_cgroups(plan)?;
    // The dispositions are the defaults already: this process got a copy of the joiner's (no
    // CLONE_SIGHAND), which it reset before the clone.
    super::set_sigmask(&super::sigset(true)).map_err(at(Step::Signals))?;
    let [_, parent, program, _] = arrange_fds(plan, control, relay)?;
    wait_for_go(*control);
    if super::pidfd::has_exited(parent) {
        super::exit(EXIT_ABANDONED);
    }
    if plan.become_root {
        super::setresgid(0).map_err(at(Step::BecomeRoot))?;
        super::setresuid(0).map_err(at(Step::BecomeRoot))?;
        // A credential change sets the flag to fs.suid_dumpable, which may be 1: off again.
        super::prctl(libc::PR_SET_DUMPABLE, 0).map_err(at(Step::NonDumpable))?;
    }
    super::join_new_session_keyring().map_err(at(Step::SessionKeyring))?;
    super::setsid().map_err(at(Step::NewSession))?;
    exec_payload(plan, Ends { control: *control, parent, program, gate: -1 })
}
/// Moves stdio and passed descriptors to their numbers, moves the child's own channels out of
/// their way, and closes every other inherited descriptor. Returns the status pipe, the
/// parent's pidfd, the init program and the start gate (each -1 when not used).
/// `parent` replaces the parent's pidfd of the plan (a session command watches its relay).
fn arrange_fds(
    plan: &mut Plan<'_>,
    control: &mut RawFd,
    parent: Option<RawFd>,
) -> Result<[RawFd; 4], Failure> {
    let fds = &mut plan.fds;
    let channels = &plan.channels;
    for fd in channels.parent_ends {
        if fd >= 0 {
            super::close(fd);
        }
    }
    let internal_failure = at_index(Step::Fds, u32::MAX as usize);
    *control = super::dup_above(channels.control, fds.base).map_err(&internal_failure)?;
    let status = if channels.status >= 0 {
        super::dup_above(channels.status, fds.base).map_err(&internal_failure)?
    } else {
        -1
    };
    let parent_fd = parent.unwrap_or(channels.parent);
    let parent =
        if parent_fd >= 0 { super::dup_above(parent_fd, fds.base).map_err(&internal_failure)? } else { -1 };
    let init_program = if channels.init_program >= 0 {
        super::dup_above(channels.init_program, fds.base).map_err(&internal_failure)?
    } else {
        -1
    };
    let gate = if channels.gate >= 0 {
        super::dup_above(channels.gate, fds.base).map_err(&internal_failure)?
    } else {
        -1
    };
    for (i, (&(src, _), slot)) in fds.moves.iter().zip(fds.scratch.iter_mut()).enumerate() {
        *slot = super::dup_above(src, fds.base).map_err(at_index(Step::Fds, i))?;
    }
    for (i, (&(_, dst), &copy)) in fds.moves.iter().zip(fds.scratch.iter()).enumerate() {
        super::dup_onto(copy, dst).map_err(at_index(Step::Fds, i))?;
    }
    // Keep 0-2, the targets and the two channels; close everything else.
    let slots = fds.keep.len();
    if let Some([a, b, c, d, e]) = fds.keep.get_mut(slots.saturating_sub(INTERNAL_SLOTS)..) {
        *a = *control;
        *b = status;
        *c = parent;
        *d = init_program;
        *e = gate;
    }
    fds.keep.sort_unstable();
    let mut next: i64 = 0;
    for &fd in fds.keep.iter() {
        let fd = fd as i64;
        if fd < next {
            continue;
        }
        if fd > next {
            super::close_range(next as u32, (fd - 1) as u32);
        }
        next = fd + 1;
    }
    super::close_range(next as u32, u32::MAX);
    Ok([status, parent, init_program, gate])
}

/// The start gate: tells the parent (one byte on `control`) that setup is done, waits for a
/// connection on the listening socket `gate`, says on it that the start is taken (one byte),
/// and makes that connection the control channel (close-on-exec, so its end of file tells the
/// starter the exec happened). A sandbox that
/// outlives its parent first waits for the parent to let it go ("d", sent by `Child::detach`):
/// should the parent die before, nobody would know of it, so it ends. Signals are unblocked
/// while it waits: a fatal one (a runtime's `kill` of a created container) ends it there.
fn wait_at_gate(control: RawFd, gate: RawFd, detached: bool) -> super::SysResult<()> {
    super::send(control, b"c")?;
    super::set_sigmask(&super::sigset(false))?;
    if detached {
        let mut byte = [0u8; 1];
        if !matches!(super::read(control, &mut byte), Ok(1)) {
            super::exit(EXIT_ABANDONED);
        }
    }
    let connection = super::accept(gate);
    let masked = super::set_sigmask(&super::sigset(true));
    let connection = connection?;
    super::close(gate);
    let moved = super::dup_onto_cloexec(connection, control);
    super::close(connection);
    moved?;
    // The connection is the control channel now: what fails from here reaches the starter.
    // A starter gone already changes nothing: the start was asked for.
    let _ = super::send(control, b"t");
    masked
}

/// Blocks until the parent says "go". End of file means the parent died or gave up before
/// releasing us: exit quietly, there is nobody to report to.
fn wait_for_go(control: RawFd) {
    let mut byte = [0u8; 1];
    if !matches!(super::read(control, &mut byte), Ok(1)) {
        super::exit(EXIT_ABANDONED);
    }
}

/// Creates the Landlock ruleset, adds its rules (paths resolved in the sandbox's root) and
/// restricts this process with it.
fn apply_landlock(creds: &crate::plan::Creds<'_>) -> Result<(), Failure> {
    let Some(ruleset) = landlock_ruleset(creds)? else { return Ok(()) };
    let restricted = super::landlock::restrict_self(ruleset).map_err(at_index(Step::Landlock, usize::MAX));
    super::close(ruleset);
    restricted
}

/// Creates the Landlock ruleset and adds its rules (paths resolved in the sandbox's root), if
/// the sandbox has any.
fn landlock_ruleset(creds: &crate::plan::Creds<'_>) -> Result<Option<RawFd>, Failure> {
    let Some(rules) = creds.landlock else { return Ok(None) };
    let whole = at_index(Step::Landlock, usize::MAX);
    let ruleset = super::landlock::create_ruleset(&rules.attr).map_err(&whole)?;
    let added = (|| {
        for (i, (path, access)) in rules.paths.iter().enumerate() {
            super::landlock::add_path_rule(ruleset, path, *access, rules.file_rights)
                .map_err(at_index(Step::Landlock, i))?;
        }
        for &(access, port) in &rules.ports {
            super::landlock::add_port_rule(ruleset, access, port).map_err(&whole)?;
        }
        Ok(())
    })();
    match added {
        Ok(()) => Ok(Some(ruleset)),
        Err(e) => {
            super::close(ruleset);
            Err(e)
        }
    }
}

fn install_filter(creds: &crate::plan::Creds<'_>) -> Result<(), Failure> {
    match creds.seccomp {
        Some(program) => super::install_seccomp(program).map_err(at(Step::SyscallFilter)),
        None => Ok(()),
    }
}

/// `unshare(CLONE_NEWTIME)` and write the offsets: they apply to processes created (or exec'd)
/// from now on, which is why the namespace is not requested at clone time.
fn enter_time_namespace(offsets: &[u8]) -> SysResult<()> {
    super::unshare(super::clone::flags::CLONE_NEWTIME as libc::c_int)?;
    write_file(c"/proc/self/timens_offsets", offsets)
}

fn write_file(path: &std::ffi::CStr, data: &[u8]) -> SysResult<()> {
    super::write_file_at(libc::AT_FDCWD, path, data)
}

/// The payload's descriptors that [`exec_payload`] uses.
struct Ends {
    /// The channel to the parent (a session's holder sends its pidfd there).
    control: RawFd,
    /// A pidfd of the embedding process (a session command's parent), or -1.
    parent: RawFd,
    /// The init program (a session's holder execs it), or -1.
    program: RawFd,
    /// The start gate ([`crate::StartGate`]), or -1.
    gate: RawFd,
}

/// The payload's last steps: credentials, Landlock, the syscall filter, exec.
fn exec_payload(plan: &Plan<'_>, ends: Ends) -> Result<Infallible, Failure> {
    let parent = ends.parent;
    if plan.hold {
        // The session's holder: its namespaces are what commands join, through this pidfd.
        let me = super::pidfd_of_self().map_err(at(Step::Init))?;
        super::send_fd(ends.control, me).map_err(at(Step::Init))?;
        super::close(me);
    }
    // In the final root, while still its root: an image's working directory may be missing.
    if let Some(dir) = &plan.create_cwd {
        super::mount::create_dir(dir).map_err(at(Step::CreateWorkingDir))?;
    }
    let creds = &plan.creds;
    // Landlock and seccomp need no_new_privs, or CAP_SYS_ADMIN: without the first, applied
    // while the second is still held (the filter then also sees the credential calls).
    if !creds.no_new_privs {
        apply_landlock(creds)?;
        install_filter(creds)?;
    }
    let serve = plan.join.as_ref().is_some_and(|j| j.serve);
    // While all capabilities are still there (raising a hard limit needs CAP_SYS_RESOURCE).
    for &(resource, soft, hard) in creds.rlimits {
        if serve {
            // A session's server only raises its own (its CPU time, say, adds up over every
            // command): each command sets exactly these, lowering from there.
            let (old_soft, old_hard) = super::getrlimit(resource).map_err(at(Step::Rlimits))?;
            super::prlimit(resource, soft.max(old_soft), hard.max(old_hard)).map_err(at(Step::Rlimits))?;
        } else {
            super::prlimit(resource, soft, hard).map_err(at(Step::Rlimits))?;
        }
    }
    if let Some(caps) = creds.caps {
        // Keep the permitted set across the uid change; drop from the bounding set while we
        // still have CAP_SETPCAP in the effective set (a uid change clears it).
        super::prctl(libc::PR_SET_KEEPCAPS, 1).map_err(at(Step::Capabilities))?;
        for cap in 0..=caps.last {
            if caps.bounding & (1 << cap) == 0 {
                match super::prctl(libc::PR_CAPBSET_DROP, cap as libc::c_ulong) {
                    Ok(()) | Err(Errno(libc::EINVAL)) => {}
                    Err(e) => return Err(at(Step::Capabilities)(e)),
                }
            }
        }
    }
    if let Some(groups) = creds.groups {
        super::setgroups(groups).map_err(at(Step::SetGroups))?;
    }
    if let Some(gid) = creds.gid {
        super::setresgid(gid).map_err(at(Step::SetGid))?;
    }
    if let Some(uid) = creds.uid {
        super::setresuid(uid).map_err(at(Step::SetUid))?;
    }
    if creds.uid.is_some() || creds.gid.is_some() {
        // The change set the flag to fs.suid_dumpable (maybe 1): off again. This memory is a
        // copy of the embedder's until the exec (ids change only in a copy, see the module
        // docs), which processes of the same ids could otherwise trace; for a session command
        // they exist, and with 1 a session command is refused (see `spawn`).
        super::prctl(libc::PR_SET_DUMPABLE, 0).map_err(at(Step::NonDumpable))?;
    }
    if let Some((size, targets)) = plan.terminal {
        // With the payload's ids: the terminal is its own. The parent gets the master.
        let (master, slave) = super::pty::open(size).map_err(at(Step::Terminal))?;
        let sent = super::send_fd(ends.control, master);
        super::close(master);
        sent.and_then(|()| super::pty::attach(slave, targets)).map_err(at(Step::Terminal))?;
    }
    if plan.await_seal {
        // The parent seals the cgroup while this process sets up: done before the payload runs.
        wait_for_go(ends.control);
    }
    if ends.gate >= 0 {
        if !plan.detached {
            // The credential changes cleared the parent-death signal: armed again before the
            // wait, which may be long (with an init, the init is the parent).
            super::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL as libc::c_ulong)
                .map_err(at(Step::DeathSignal))?;
            if !plan.use_init && super::getppid() != plan.parent_pid {
                super::exit(EXIT_ABANDONED);
            }
        }
        // Set up as far as anything can fail before the start: say so, and wait for it. What
        // fails from here is told to the one who opens the gate.
        wait_at_gate(ends.control, ends.gate, plan.detached).map_err(at(Step::Gate))?;
    }

    if let Some(caps) = creds.caps {
        // After exec a root payload gets bounding | inheritable, any other payload its ambient
        // set (with `capabilities`, all five sets are one: exactly that set either way).
        super::capset(caps.effective, caps.permitted, caps.inheritable).map_err(at(Step::Capabilities))?;
        super::prctl3(libc::PR_CAP_AMBIENT, libc::PR_CAP_AMBIENT_CLEAR_ALL as libc::c_ulong, 0)
            .map_err(at(Step::Capabilities))?;
        for cap in 0..=caps.last {
            if caps.ambient & (1 << cap) != 0 {
                super::prctl3(
                    libc::PR_CAP_AMBIENT,
                    libc::PR_CAP_AMBIENT_RAISE as libc::c_ulong,
                    cap as libc::c_ulong,
                )
                .map_err(at(Step::Capabilities))?;
            }
        }
        super::prctl(libc::PR_SET_KEEPCAPS, 0).map_err(at(Step::Capabilities))?;
    }
    if creds.no_new_privs {
        super::prctl(libc::PR_SET_NO_NEW_PRIVS, 1).map_err(at(Step::NoNewPrivs))?;
        if serve {
            // A session's server keeps the ruleset (at the number the spawn reserved for it)
            // for its commands, each of which restricts itself with it: a domain of each
            // command's own, as a sandbox's payload has.
            if let Some(ruleset) = landlock_ruleset(creds)? {
                // Kept across the exec (the server marks it close-on-exec for its commands').
                let placed = super::dup_onto(ruleset, super::wire::LANDLOCK_FD);
                if ruleset != super::wire::LANDLOCK_FD {
                    super::close(ruleset);
                }
                placed.map_err(at_index(Step::Landlock, usize::MAX))?;
            }
        } else {
            apply_landlock(creds)?;
        }
    }
    // Changing credentials clears the parent-death signal: arm it again, then make sure the
    // parent did not die in between (without an init, our parent is the embedding process;
    // with one, the init, whose own death takes the namespace down). A detached sandbox
    // without an init has no parent to die with. A session's new holder has none either: its
    // parent is the renewer's child, which exits meanwhile (it becomes the init's orphan,
    // and dies with the namespace when the init does).
    if (!plan.detached || plan.use_init || plan.join.is_some()) && plan.renew.is_none() {
        super::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL as libc::c_ulong)
            .map_err(at(Step::DeathSignal))?;
    }
    if parent >= 0 {
        // A session command's parent is its relay, outside its pid namespace (getppid says 0).
        if super::pidfd::has_exited(parent) {
            super::exit(EXIT_ABANDONED);
        }
    } else if !plan.use_init && !plan.detached && super::getppid() != plan.parent_pid {
        super::exit(EXIT_ABANDONED);
    }
    if let Some(dir) = &plan.cwd {
        super::chdir(dir).map_err(at(Step::Chdir))?;
    }
    super::umask(creds.umask);
    if creds.no_new_privs {
        // The last step before exec: from here on the payload's rules apply.
        install_filter(creds)?;
    }
    super::set_sigmask(&super::sigset(false)).map_err(at(Step::Signals))?;

    if plan.hold {
        return Err(at(Step::Init)(super::init::exec_holder(ends.program)));
    }
    if plan.join.as_ref().is_some_and(|j| j.serve) {
        return Err(at(Step::Init)(super::init::exec_server(ends.program)));
    }
    // Like execvp: try each candidate; remember EACCES but keep looking; stop on other errors.
    let exec = &plan.exec;
    let mut failure = Failure { step: Step::Exec, errno: Errno(libc::ENOENT), index: 0 };
    for (i, path) in exec.candidates.iter().enumerate() {
        let errno = super::execve(path, &exec.argv, &exec.envp);
        match errno.0 {
            libc::ENOENT | libc::ENOTDIR | libc::ESTALE | libc::ENODEV | libc::ETIMEDOUT => {}
            libc::EACCES => failure = Failure { step: Step::Exec, errno, index: i as u32 },
            _ => return Err(Failure { step: Step::Exec, errno, index: i as u32 }),
        }
    }
    Err(failure)
}
