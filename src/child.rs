//! Supervision of a running sandbox: [`Child`] waits and signals through a pidfd (never a bare
//! pid, so a recycled pid cannot be hit), reports how the payload ended as an [`ExitStatus`],
//! and kills the sandbox if it is dropped while still running.

use std::fmt;
use std::fs::File;
use std::io::{self, Read, Write};
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd, RawFd};
use std::path::PathBuf;
use std::time::{Duration, Instant};

use nix::poll::{PollFd, PollFlags, PollTimeout};

use crate::resources::cgroup::SandboxCgroup;
use crate::sys::pidfd::{self, Exit, Reaped};
use crate::{Error, Limit, ResourceUsage};

/// A running (or finished) sandbox.
///
/// With a pid namespace, [`id`](Child::id) and the pidfd refer to the sandbox's init, which
/// forwards signals to the payload and reports the payload's status; killing it takes down the
/// whole tree. Dropping a `Child` that has not been waited for kills the sandbox and reaps it.
///
/// ```no_run
/// use std::time::Duration;
/// use stockade::{Namespaces, Sandbox};
/// # fn main() -> Result<(), Box<dyn std::error::Error>> {
/// let sandbox = Sandbox::builder().namespaces(Namespaces::USER | Namespaces::PID).build()?;
/// let mut child = sandbox.command("/bin/sleep").arg("60").spawn()?;
/// let status = child.wait_timeout(Duration::from_millis(100))?;
/// assert!(status.timed_out());
/// # Ok(()) }
/// ```
#[derive(Debug)]
pub struct Child {
    pid: u32,
    pidfd: OwnedFd,
    /// Read end of the init's status pipe (pid namespace only).
    status_pipe: Option<OwnedFd>,
    status: Option<ExitStatus>,
    supervision: Supervision,
    /// The payload's stdin, when it was [`Stdio::piped`](crate::Stdio::piped).
    pub stdin: Option<ChildStdin>,
    /// The payload's stdout, when it was [`Stdio::piped`](crate::Stdio::piped).
    pub stdout: Option<ChildStdout>,
    /// The payload's stderr, when it was [`Stdio::piped`](crate::Stdio::piped).
    pub stderr: Option<ChildStderr>,
    /// The caller's end of the payload's terminal, when it has one
    /// ([`Command::terminal`](crate::Command::terminal)).
    pub terminal: Option<crate::Terminal>,
    /// A joined command's own pidfd (`pidfd` is its relay's): killed with it.
    command: Option<OwnedFd>,
    /// A session command its session's server started: `pidfd` is the command's (a child of
    /// the server, not of this process), and `status_pipe` carries the server's report.
    served: bool,
    /// The server said the command's wall-clock limit ended it.
    served_timed_out: bool,
    /// The limit this process killed the sandbox for, until it is reaped.
    ending: Option<Limit>,
    /// Left running by [`Child::detach`]: not killed on drop.
    detached: bool,
    /// The control channel of a sandbox outliving this process waiting at its start gate:
    /// [`Child::detach`] lets it go on to wait for its start.
    release: Option<OwnedFd>,
}

/// A sandbox left running by [`Child::detach`]: it outlives this process (it was built with
/// [`SandboxBuilder::outlive_parent`](crate::SandboxBuilder::outlive_parent)), and whoever
/// reaps it (the parent of this process, or a subreaper) learns how it ended. Plain data, so a
/// runtime can keep it in its state and act on it from a later process.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Detached {
    /// The pid of the sandbox's first process (its init with a pid namespace), as seen by the
    /// process that detached it.
    pub pid: u32,
    /// The sandbox's cgroup directories (one per hierarchy), which stay until
    /// [`remove_cgroups`](Detached::remove_cgroups).
    pub cgroups: Vec<PathBuf>,
    /// The first process's start time (`/proc/<pid>/stat`, field 22: clock ticks since boot),
    /// when known: [`join`](Detached::join) checks it, so a pid reused by another process is
    /// never joined.
    pub start_time: Option<u64>,
}

/// A process's start time (`/proc/<pid>/stat`, field 22), if it exists.
pub(crate) fn start_time(pid: u32) -> Option<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // After the command name, which is in parentheses and may hold anything; field 3 on.
    let rest = stat.get(stat.rfind(')')? + 2..)?;
    rest.split(' ').nth(22 - 3)?.parse().ok()
}

impl Detached {
    /// Every process in the sandbox's cgroups (pids as this process sees them); empty without
    /// cgroups.
    pub fn processes(&self) -> Vec<u32> {
        crate::resources::cgroup::processes_in(&self.cgroups)
    }

    /// Makes `command` run inside this sandbox while it runs, as OCI's `exec` does: it joins
    /// the namespaces and root of the sandbox's first process (`pid`) and the sandbox's
    /// cgroups, then takes the credentials, capabilities, syscall filter and Landlock rules of
    /// the sandbox it was made from (which should have this one's namespaces: build it from
    /// the same configuration, with the command's own process settings), and its stdio,
    /// environment and working directory. Its [`Child::id`] is its relay's, a small process
    /// outside the sandbox that reports its status and forwards signals to it; with
    /// [`outlive_parent`](crate::SandboxBuilder::outlive_parent) the relay outlives this
    /// process too.
    ///
    /// The caller makes sure `pid` is still the sandbox's (a runtime compares its start time):
    /// the pidfd opened here then pins it.
    ///
    /// # Errors
    /// [`Error::Spawn`] when the process is gone or its root cannot be opened.
    pub fn join(&self, command: &mut crate::Command) -> Result<(), crate::Error> {
        let sandbox = command.get_sandbox().clone();
        let config = &sandbox.config;
        let unsupported = |feature: &str, reason: &str, hint: &str| crate::Error::Unsupported {
            feature: feature.into(),
            reason: reason.into(),
            hint: hint.into(),
        };
        if config.init_program.is_none() {
            return Err(unsupported(
                "joining a sandbox without a pid namespace",
                "the joined command's relay is the init program, which a sandbox gets with its pid namespace",
                "give the sandbox Namespaces::PID",
            ));
        }
        if config.fs.lock_maps.is_some() || config.fs.chroot {
            // The first process (the init) stays outside the nested user and mount namespace
            // that locks the payload's mounts (or the chroot): joining it would give the
            // command more than the payload has.
            return Err(unsupported(
                "joining a sandbox whose mounts are locked in a nested user namespace",
                "its init is outside the payload's nested user and mount namespace (or chroot), and a \
                 command joining the init would not be held by the mount lock",
                "run the command in a Session, or without a user namespace",
            ));
        }
        let holder = pidfd::open(self.pid as libc::pid_t).map_err(|e| {
            crate::Error::spawn(format!("pidfd_open of the sandbox's process {}", self.pid), e)
        })?;
        // Opened first, checked after: a pid reused before the open fails the check, and the
        // pidfd pins the process from then on.
        if let Some(expected) = self.start_time
            && start_time(self.pid) != Some(expected)
        {
            return Err(crate::Error::spawn(
                format!("join the sandbox's process {}", self.pid),
                std::io::Error::from_raw_os_error(libc::ESRCH),
            ));
        }
        let root = crate::session::holder_root(&holder)?;
        let flags = sandbox.config.entered().flags() as libc::c_int;
        command.join_target(crate::session::Target {
            sandbox,
            holder,
            root,
            flags,
            cgroups: Some(self.cgroups.clone()),
            server: None,
            keyring: false,
        });
        Ok(())
    }

    /// Changes the running sandbox's cgroup limits to those `limits` sets (memory, memory+swap,
    /// pids, CPU quota and weight, cpuset, I/O), as `docker update` does; limits it does not
    /// set stay as they are. Other settings of `limits` are ignored: they belong to a spawn.
    ///
    /// # Errors
    /// [`Error::Unsupported`](crate::Error::Unsupported) when the sandbox has no group for a
    /// limit (it had none of that controller at its creation), or the host lacks its file;
    /// [`Error::Cgroup`](crate::Error::Cgroup) when the kernel refuses a value (e.g. a memory
    /// limit below what the group uses and cannot reclaim).
    pub fn update_limits(&self, limits: &crate::SandboxBuilder) -> Result<(), crate::Error> {
        let limits = limits.limits();
        limits.validate()?;
        let cgroup = crate::resources::cgroup::SandboxCgroup::existing(&self.cgroups).ok_or_else(|| {
            crate::Error::Unsupported {
                feature: "changing cgroup limits".into(),
                reason: "no cgroup filesystem is mounted at /sys/fs/cgroup".into(),
                hint: "mount cgroup2 at /sys/fs/cgroup".into(),
            }
        })?;
        cgroup.update(limits)
    }

    /// Kills every process in the sandbox's cgroups at once (v2 `cgroup.kill`; v1 frozen,
    /// killed, thawed), so that no pid read from a group is signalled after it was reused.
    /// Without groups, nothing happens.
    pub fn kill_all(&self) {
        if let Some(cgroup) = crate::resources::cgroup::SandboxCgroup::existing(&self.cgroups) {
            cgroup.kill_all();
        }
    }

    /// The sandbox's cgroup usage and limits now (all `None` without cgroups).
    pub fn stats(&self) -> crate::CgroupStats {
        crate::resources::cgroup::SandboxCgroup::existing(&self.cgroups)
            .map(|c| c.stats())
            .unwrap_or_default()
    }

    /// Freezes every process of the sandbox (its cgroup's freezer: v2's `cgroup.freeze`, v1's
    /// freezer hierarchy), as `docker pause` does, and returns once the kernel says they all
    /// are.
    ///
    /// # Errors
    /// [`Error::Unsupported`](crate::Error::Unsupported) when the sandbox has no group that can
    /// be frozen; [`Error::Cgroup`](crate::Error::Cgroup) when the kernel refuses.
    pub fn freeze(&self) -> Result<(), crate::Error> {
        self.set_frozen(true)
    }

    /// Thaws what [`freeze`](Detached::freeze) froze.
    ///
    /// # Errors
    /// As [`freeze`](Detached::freeze).
    pub fn thaw(&self) -> Result<(), crate::Error> {
        self.set_frozen(false)
    }

    /// Whether the sandbox's processes are frozen.
    pub fn is_frozen(&self) -> bool {
        crate::resources::cgroup::frozen_dirs(&self.cgroups)
    }

    fn set_frozen(&self, frozen: bool) -> Result<(), crate::Error> {
        match crate::resources::cgroup::freeze_dirs(&self.cgroups, frozen)? {
            true => Ok(()),
            false => Err(crate::Error::Unsupported {
                feature: "freezing a sandbox".into(),
                reason: "it has no cgroup that can be frozen (no cgroup v2 group, no v1 freezer group)"
                    .into(),
                hint: "mount the freezer hierarchy (cgroup v1) or use cgroup v2".into(),
            }),
        }
    }

    /// Kills every process left in the sandbox's cgroups and removes them (groups the payload
    /// made inside included). Idempotent: directories already gone are skipped.
    pub fn remove_cgroups(&self) {
        crate::resources::cgroup::destroy_dirs(&self.cgroups)
    }
}

/// Where a sandbox is, for one who waits without blocking: ended, or to be looked at again
/// when its pidfd turns readable or at the instant given (a deadline, a CPU-time check).
pub(crate) enum Progress {
    Ended(ExitStatus),
    Running(Option<Instant>),
}

/// What the embedding process keeps watching while a sandbox runs.
#[derive(Debug)]
pub(crate) struct Supervision {
    pub(crate) started: Instant,
    pub(crate) wall_limit: Option<Duration>,
    pub(crate) cpu_limit: Option<Duration>,
    pub(crate) cgroup: Option<SandboxCgroup>,
    /// Limits that could not be enforced (best effort).
    pub(crate) unenforced: Vec<&'static str>,
}

impl Child {
    pub(crate) fn new(
        pid: libc::pid_t,
        pidfd: OwnedFd,
        status_pipe: Option<OwnedFd>,
        [stdin, stdout, stderr]: [Option<OwnedFd>; 3],
        supervision: Supervision,
    ) -> Child {
        Child {
            pid: pid as u32,
            pidfd,
            status_pipe,
            status: None,
            supervision,
            stdin: stdin.map(|fd| ChildStdin(File::from(fd))),
            stdout: stdout.map(|fd| ChildStdout(File::from(fd))),
            stderr: stderr.map(|fd| ChildStderr(File::from(fd))),
            terminal: None,
            command: None,
            served: false,
            served_timed_out: false,
            ending: None,
            detached: false,
            release: None,
        }
    }

    /// A session command started by its session's server (see `src/session/serve.rs`):
    /// `pidfd` is the command's, `report` the read end of the pipe the server reports on.
    pub(crate) fn served(
        pid: libc::pid_t,
        pidfd: OwnedFd,
        report: OwnedFd,
        stdio: [Option<OwnedFd>; 3],
        supervision: Supervision,
    ) -> Child {
        let mut child = Child::new(pid, pidfd, Some(report), stdio, supervision);
        child.served = true;
        child
    }

    /// Reaps the sandbox, or for a served command reads the server's report: `None` with
    /// `nohang` while it runs.
    fn reap(&mut self, nohang: bool) -> io::Result<Option<Reaped>> {
        if !self.served {
            return Ok(pidfd::wait(self.pidfd.as_fd(), nohang)?);
        }
        use crate::sys::wire::REPORT_LEN;
        let killed = Reaped {
            exit: crate::sys::pidfd::Exit::Signal { signal: libc::SIGKILL, core_dumped: false },
            user: Duration::ZERO,
            system: Duration::ZERO,
            max_rss: 0,
        };
        loop {
            let Some(pipe) = &self.status_pipe else {
                // The server ended without a report: the session ended, and its pid namespace
                // with it. Ended (it was sent SIGKILL) once its pidfd says so.
                if nohang {
                    return Ok(poll_readable(self.pidfd.as_fd(), Some(Duration::ZERO))?.then_some(killed));
                }
                // (An interrupted poll says not readable: looked at again.)
                while !poll_readable(self.pidfd.as_fd(), None)? {}
                return Ok(Some(killed));
            };
            let mut report = [0u8; REPORT_LEN];
            match nix::unistd::read(pipe, &mut report) {
                Ok(REPORT_LEN) => {
                    self.status_pipe = None;
                    let i32_at =
                        |i: usize| i32::from_ne_bytes(report[i..i + 4].try_into().unwrap_or_default());
                    let i64_at =
                        |i: usize| i64::from_ne_bytes(report[i..i + 8].try_into().unwrap_or_default());
                    let micros = |v: i64| Duration::from_micros(v.max(0) as u64);
                    self.served_timed_out = i32_at(4) != 0;
                    return Ok(Some(Reaped {
                        exit: crate::sys::pidfd::Exit::from_wait_status(i32_at(0)),
                        user: micros(i64_at(8)),
                        system: micros(i64_at(16)),
                        max_rss: i64_at(24).max(0) as u64 * 1024,
                    }));
                }
                Err(nix::errno::Errno::EAGAIN) if nohang => return Ok(None),
                Err(nix::errno::Errno::EAGAIN) => {
                    poll_readable(pipe.as_fd(), None)?;
                }
                Err(nix::errno::Errno::EINTR) => {}
                Err(e) => return Err(e.into()),
                // End of file (or a torn report): no report will come.
                Ok(_) => {
                    self.status_pipe = None;
                    let _ = pidfd::send_signal(self.pidfd.as_fd(), libc::SIGKILL);
                }
            }
        }
    }

    /// What turns readable when the sandbox has ended: its pidfd, or a served command's report
    /// pipe.
    fn wait_fd(&self) -> BorrowedFd<'_> {
        match (&self.status_pipe, self.served) {
            (Some(pipe), true) => pipe.as_fd(),
            _ => self.pidfd.as_fd(),
        }
    }

    /// See `release`.
    pub(crate) fn with_release(mut self, control: Option<OwnedFd>) -> Child {
        self.release = control;
        self
    }

    /// Leaves the sandbox running and forgets it: no kill on drop, its cgroups stay (the
    /// returned [`Detached`] names them). For a sandbox built with
    /// [`SandboxBuilder::outlive_parent`](crate::SandboxBuilder::outlive_parent), the way a
    /// container runtime leaves a container to its caller (OCI `create`); any other sandbox
    /// still ends when this process does (its parent-death signal). Take [`Child::terminal`]
    /// and the pipes first if they are wanted: they are closed here.
    ///
    /// A sandbox that outlives this process and waits at a start gate
    /// ([`Command::spawn_created`](crate::Command::spawn_created)) waits for this call before it
    /// takes a start: until then this process may die (a runtime killed during its `create`)
    /// and the sandbox ends with it rather than run unknown to anyone.
    pub fn detach(mut self) -> Detached {
        self.detached = true;
        if let Some(control) = self.release.take() {
            // Waiting at its gate, it waits for this before it takes a start (and ends if this
            // process dies first). A sandbox already gone does not mind.
            let _ =
                nix::sys::socket::send(control.as_raw_fd(), b"d", nix::sys::socket::MsgFlags::MSG_NOSIGNAL);
        }
        let cgroups = self.supervision.cgroup.take().map(SandboxCgroup::keep).unwrap_or_default();
        Detached { pid: self.pid, cgroups, start_time: start_time(self.pid) }
    }

    /// Whether the sandbox's cgroup, if it has one, is sealed against its payload.
    pub(crate) fn cgroup_sealed(&self) -> bool {
        self.supervision.cgroup.as_ref().is_none_or(SandboxCgroup::is_sealed)
    }

    /// A session's init's channel, its status socket (see `Session::reset`).
    pub(crate) fn status_channel(&self) -> Option<BorrowedFd<'_>> {
        self.status_pipe.as_ref().map(AsFd::as_fd)
    }

    /// The sandbox's cgroup directories, one per hierarchy (empty without cgroups).
    pub fn cgroup_dirs(&self) -> Vec<PathBuf> {
        self.supervision.cgroup.as_ref().map(SandboxCgroup::dirs).unwrap_or_default()
    }

    /// The master of the payload's terminal, if it has one.
    pub(crate) fn with_terminal(mut self, master: Option<OwnedFd>) -> Child {
        self.terminal = master.map(crate::Terminal::new);
        self
    }

    /// A joined command: `command` is its own pidfd, signalled along with its relay's.
    pub(crate) fn with_command(mut self, command: Option<OwnedFd>) -> Child {
        self.command = command;
        self
    }

    /// The pid of the sandbox's first process, in the embedding program's pid namespace (the
    /// init with a pid namespace, otherwise the payload).
    pub fn id(&self) -> u32 {
        self.pid
    }

    /// Waits for the sandbox to end, enforcing its [`timeout`](crate::SandboxBuilder::timeout)
    /// and [`cpu_time_limit`](crate::SandboxBuilder::cpu_time_limit). Closes the payload's stdin
    /// first, as `std` does, so a payload reading it sees end of file.
    pub fn wait(&mut self) -> io::Result<ExitStatus> {
        if let Some(status) = self.status {
            return Ok(status);
        }
        drop(self.stdin.take());
        self.supervise(None)
    }

    /// Returns the status if the sandbox has ended, without blocking. A time limit that has
    /// passed ends the sandbox here.
    pub fn try_wait(&mut self) -> io::Result<Option<ExitStatus>> {
        if let Some(status) = self.status {
            return Ok(Some(status));
        }
        // Reap first: a sandbox that has already ended did not hit a limit, however late we look.
        if let Some(reaped) = self.reap(true)? {
            return Ok(Some(self.finish(reaped, None)));
        }
        match self.check_limits(Instant::now(), self.wall_deadline()) {
            Err(limit) => self.end_for(limit).map(Some),
            Ok(_) => Ok(None),
        }
    }

    /// Waits at most `timeout` for the sandbox to end; if it is still running then, kills it
    /// (the whole tree) and returns a status whose [`limit`](ExitStatus::limit) is
    /// [`Limit::WallClock`].
    pub fn wait_timeout(&mut self, timeout: Duration) -> io::Result<ExitStatus> {
        if let Some(status) = self.status {
            return Ok(status);
        }
        drop(self.stdin.take());
        self.supervise(Instant::now().checked_add(timeout))
    }

    /// Kills the sandbox with `SIGKILL`: with a pid namespace or a cgroup, every process in
    /// it. Does nothing if the sandbox has already been waited for.
    pub fn kill(&mut self) -> io::Result<()> {
        if self.status.is_some() {
            return Ok(());
        }
        // A joined command first: once its relay is gone nothing else would end it (its
        // parent-death signal may have been cleared by a setuid exec).
        if let Some(command) = &self.command {
            let _ = pidfd::send_signal(command.as_fd(), libc::SIGKILL);
        }
        let sent = match pidfd::send_signal(self.pidfd.as_fd(), libc::SIGKILL) {
            Ok(()) | Err(crate::sys::Errno(libc::ESRCH)) => Ok(()),
            Err(e) => Err(e.into()),
        };
        if let Some(cgroup) = &self.supervision.cgroup {
            cgroup.kill_all();
        }
        sent
    }

    /// Limits that were requested but are not enforced on this host (with
    /// [`Compat::BestEffort`](crate::Compat::BestEffort)), e.g. `["memory", "pids"]` for an
    /// unprivileged caller without cgroup delegation; and `"cgroup namespace (own groups)"` when
    /// a sandbox with [`Namespaces::CGROUP`](crate::Namespaces::CGROUP) could not get a group of
    /// its own in every cgroup hierarchy (no delegation, a read-only or unmounted hierarchy), so
    /// that a payload mounting cgroupfs would see the embedding program's groups there. Empty
    /// when everything is enforced.
    pub fn unenforced(&self) -> &[&'static str] {
        &self.supervision.unenforced
    }

    /// Waits until the sandbox ends or a limit (`deadline`, the wall-clock limit, the CPU-time
    /// limit) ends it.
    fn supervise(&mut self, deadline: Option<Instant>) -> io::Result<ExitStatus> {
        let mut stuck = false;
        loop {
            match self.progress(deadline)? {
                Progress::Ended(status) => return Ok(status),
                Progress::Running(wake) => {
                    let timeout = wake.map(|w| w.saturating_duration_since(Instant::now()));
                    if stuck {
                        // Readable, yet nothing to reap: a tracer of its own holds the exited
                        // process (no pid namespace or cgroup to end the tracer with). Look
                        // again a little later rather than spin.
                        std::thread::sleep(timeout.map_or(STUCK_BACKOFF, |t| t.min(STUCK_BACKOFF)));
                        stuck = false;
                    } else {
                        stuck = poll_readable(self.wait_fd(), timeout)?;
                    }
                }
            }
        }
    }

    /// One look at the sandbox, never blocking: reaps it if it has ended; kills it if a limit
    /// (`deadline`, the wall-clock limit, the CPU-time limit) has been reached, to be reaped
    /// at a later look. The caller looks again once the pidfd is readable, or at the instant
    /// returned.
    pub(crate) fn progress(&mut self, deadline: Option<Instant>) -> io::Result<Progress> {
        if let Some(status) = self.status {
            return Ok(Progress::Ended(status));
        }
        // Reap first: a sandbox that has already ended did not hit a limit.
        if let Some(reaped) = self.reap(true)? {
            return Ok(Progress::Ended(self.finish(reaped, None)));
        }
        if self.ending.is_some() {
            return Ok(Progress::Running(None));
        }
        let deadline = earliest(deadline, self.wall_deadline());
        match self.check_limits(Instant::now(), deadline) {
            Err(limit) => {
                self.kill()?;
                self.ending = Some(limit);
                Ok(Progress::Running(None))
            }
            Ok(wake) => Ok(Progress::Running(wake)),
        }
    }

    /// When the sandbox's wall-clock limit passes, if it has one.
    pub(crate) fn wall_deadline(&self) -> Option<Instant> {
        self.supervision.wall_limit.and_then(|w| self.supervision.started.checked_add(w))
    }

    fn cpu_used(&self) -> Option<Duration> {
        let (user, system) = self.supervision.cgroup.as_ref()?.cpu_times()?;
        Some(user + system)
    }

    /// Checks the time limits: `Err` with the limit that has been reached, or `Ok` with when to
    /// look again (the deadline, or the next CPU check: the tree can use at most one CPU second
    /// per second per core, so nothing can be missed before then). One CPU reading per call.
    fn check_limits(&self, now: Instant, deadline: Option<Instant>) -> Result<Option<Instant>, Limit> {
        if deadline.is_some_and(|d| now >= d) {
            return Err(Limit::WallClock);
        }
        let next_cpu_check = match (self.supervision.cpu_limit, self.cpu_used()) {
            (Some(limit), Some(used)) if used >= limit => return Err(Limit::CpuTime),
            (Some(limit), Some(used)) => {
                let left = limit.saturating_sub(used) / cores();
                Some(now + left.clamp(Duration::from_millis(1), Duration::from_millis(100)))
            }
            _ => None,
        };
        Ok(earliest(deadline, next_cpu_check))
    }

    fn end_for(&mut self, limit: Limit) -> io::Result<ExitStatus> {
        self.kill()?;
        match self.reap(false)? {
            Some(reaped) => Ok(self.finish(reaped, Some(limit))),
            None => Err(io::Error::other("waitid returned no status for the sandbox")),
        }
    }

    /// Sends `signal` (e.g. `libc::SIGTERM`) to the sandbox. With a pid namespace the init
    /// forwards it to the payload (`SIGKILL` and `SIGSTOP` act on the init itself).
    pub fn signal(&mut self, signal: i32) -> io::Result<()> {
        if self.status.is_some() {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                "the sandbox has already been waited for",
            ));
        }
        pidfd::send_signal(self.pidfd.as_fd(), signal).map_err(io::Error::from)
    }

    /// Waits for the sandbox while collecting its piped stdout and stderr.
    ///
    /// # Errors
    /// [`Error::Io`] if reading the pipes or waiting fails.
    pub fn wait_with_output(mut self) -> Result<Output, Error> {
        drop(self.stdin.take());
        let (stdout, stderr) =
            self.read_both().map_err(|source| Error::Io { op: "read sandbox output", source })?;
        let status = self.wait().map_err(|source| Error::Io { op: "wait for sandbox", source })?;
        Ok(Output { status, stdout, stderr })
    }

    /// Reads the piped stdout and stderr to their ends at once (so a payload filling one while
    /// we block on the other cannot deadlock), enforcing the time limits meanwhile: a limit that
    /// fires ends the sandbox, which closes the pipes.
    fn read_both(&mut self) -> io::Result<(Vec<u8>, Vec<u8>)> {
        let deadline = self.wall_deadline();
        let mut pipes: [Option<File>; 2] = [self.stdout.take().map(|o| o.0), self.stderr.take().map(|e| e.0)];
        let mut bufs: [Vec<u8>; 2] = [Vec::new(), Vec::new()];
        let mut chunk = vec![0u8; 64 * 1024];
        while pipes.iter().any(Option::is_some) {
            let now = Instant::now();
            let mut wake = deadline;
            if self.status.is_none() {
                // Reap first: a sandbox that has already ended did not hit a limit.
                if let Some(reaped) = self.reap(true)? {
                    self.finish(reaped, None);
                }
            }
            if self.status.is_none() {
                match self.check_limits(now, deadline) {
                    Err(limit) => drop(self.end_for(limit)?),
                    Ok(next) => wake = next,
                }
            }
            // Past the time limit with the sandbox ended, yet the pipes still open: something it
            // started outside its control (no pid namespace or cgroup to end it with, or a
            // process it passed them to) holds them. Take what is already in them, without
            // waiting, and stop: that is the output.
            let draining = self.status.is_some() && deadline.is_some_and(|d| now >= d);
            let timeout = match wake {
                _ if draining => PollTimeout::ZERO,
                None => PollTimeout::NONE,
                Some(w) => poll_timeout(w.saturating_duration_since(now)),
            };
            let (open, mut fds): (Vec<usize>, Vec<PollFd<'_>>) = pipes
                .iter()
                .enumerate()
                .filter_map(|(i, p)| p.as_ref().map(|f| (i, PollFd::new(f.as_fd(), PollFlags::POLLIN))))
                .unzip();
            // Until it has ended, the sandbox's own end wakes us too: ending it (its cgroup
            // removed) ends what it left behind holding the pipes (a session command's
            // background processes, which no pid namespace of its own takes down).
            if self.status.is_none() {
                fds.push(PollFd::new(self.wait_fd(), PollFlags::POLLIN));
            }
            match nix::poll::poll(&mut fds, timeout) {
                Ok(_) => {}
                Err(nix::errno::Errno::EINTR) => continue,
                Err(e) => return Err(e.into()),
            }
            let ready: Vec<usize> = open
                .into_iter()
                .zip(&fds)
                .filter(|(_, fd)| fd.revents().is_some_and(|r| !r.is_empty()))
                .map(|(i, _)| i)
                .collect();
            drop(fds);
            if draining && ready.is_empty() {
                break;
            }
            for i in ready {
                let Some(file) = pipes[i].as_mut() else { continue };
                match file.read(&mut chunk) {
                    Ok(0) => pipes[i] = None,
                    Ok(n) => bufs[i].extend_from_slice(&chunk[..n]),
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                    Err(e) => return Err(e),
                }
            }
        }
        let [stdout, stderr] = bufs;
        Ok((stdout, stderr))
    }

    /// Records how the sandbox ended and what it used, then removes its cgroup.
    fn finish(&mut self, reaped: Reaped, limit: Option<Limit>) -> ExitStatus {
        // The init reports the payload's own status; without it (the init was killed), the
        // init's status is the sandbox's.
        let (exit, init_timed_out) = self.payload_exit().unwrap_or((reaped.exit, self.served_timed_out));
        self.status_pipe = None;
        let mut usage = ResourceUsage {
            wall_time: self.supervision.started.elapsed(),
            user_time: reaped.user,
            system_time: reaped.system,
            peak_memory: (reaped.max_rss > 0).then_some(reaped.max_rss),
            ..ResourceUsage::default()
        };
        if let Some(cgroup) = &mut self.supervision.cgroup {
            if let Some((user, system)) = cgroup.cpu_times() {
                (usage.user_time, usage.system_time) = (user, system);
            }
            let (peak, oom, pids) = cgroup.memory_and_pids();
            usage.peak_memory = peak.or(usage.peak_memory);
            usage.oom_killed = oom;
            usage.peak_pids = pids;
            cgroup.remove_after_exit();
        }
        let cpu_exceeded =
            self.supervision.cpu_limit.is_some_and(|l| usage.user_time + usage.system_time >= l);
        // The init (or relay, or server) ends the payload itself at the wall-clock limit when nobody
        // waited, and says so.
        let limit = limit.or(self.ending).or(init_timed_out.then_some(Limit::WallClock)).or(match exit {
            Exit::Signal { signal: libc::SIGKILL, .. } if usage.oom_killed => Some(Limit::Memory),
            Exit::Signal { signal: libc::SIGXCPU | libc::SIGKILL, .. } if cpu_exceeded => {
                Some(Limit::CpuTime)
            }
            _ => None,
        });
        let status = ExitStatus { exit, limit, usage };
        self.status = Some(status);
        status
    }

    /// The payload's status as the init (or relay) reported it, and whether the wall-clock
    /// limit ended it: two native-endian i32s.
    fn payload_exit(&self) -> Option<(Exit, bool)> {
        let pipe = self.status_pipe.as_ref()?;
        let mut report = [0u8; 8];
        match nix::unistd::read(pipe, &mut report) {
            Ok(8) => {
                let (status, timed_out) = report.split_at(4);
                let word = |b: &[u8]| i32::from_ne_bytes(b.try_into().unwrap_or_default());
                Some((Exit::from_wait_status(word(status)), word(timed_out) != 0))
            }
            _ => None,
        }
    }
}

impl AsFd for Child {
    /// The pidfd of the sandbox's first process (pollable: readable once it has exited); for a
    /// session command, what turns readable once its end is known.
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.wait_fd()
    }
}

impl Drop for Child {
    /// Kills and reaps a sandbox nobody waited for; its cgroup goes with it.
    fn drop(&mut self) {
        if self.status.is_none() && !self.detached {
            let _ = self.kill();
            // A served command is its server's to reap (its cgroup goes with `supervision`).
            if !self.served {
                let _ = pidfd::wait(self.pidfd.as_fd(), false);
            }
        }
    }
}

/// How long to wait before looking again at a process whose pidfd is readable but which
/// cannot be reaped yet (traced by a process of its own).
pub(crate) const STUCK_BACKOFF: Duration = Duration::from_millis(10);

/// The number of CPUs this process may use (asked once).
fn cores() -> u32 {
    static CORES: std::sync::OnceLock<u32> = std::sync::OnceLock::new();
    *CORES.get_or_init(|| std::thread::available_parallelism().map_or(1, |n| n.get() as u32))
}

/// The earlier of two optional instants.
fn earliest(a: Option<Instant>, b: Option<Instant>) -> Option<Instant> {
    match (a, b) {
        (Some(a), Some(b)) => Some(a.min(b)),
        (a, b) => a.or(b),
    }
}

/// A poll timeout of at least `t`, rounded up so a short remaining time does not become a busy
/// zero-timeout poll.
fn poll_timeout(t: Duration) -> PollTimeout {
    let ms = t.as_nanos().div_ceil(1_000_000).min(i32::MAX as u128) as i32;
    PollTimeout::try_from(ms).unwrap_or(PollTimeout::MAX)
}

/// Waits until `fd` is readable, at most `timeout` (`None`: no limit).
fn poll_readable(fd: BorrowedFd<'_>, timeout: Option<Duration>) -> io::Result<bool> {
    let timeout = timeout.map_or(PollTimeout::NONE, poll_timeout);
    let mut fds = [PollFd::new(fd, PollFlags::POLLIN)];
    match nix::poll::poll(&mut fds, timeout) {
        Ok(n) => Ok(n > 0),
        Err(nix::errno::Errno::EINTR) => Ok(false),
        Err(e) => Err(e.into()),
    }
}

/// How a sandbox ended: the payload's exit code or the signal that killed it, which limit (if
/// any) ended it, and what it used.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ExitStatus {
    exit: Exit,
    limit: Option<Limit>,
    usage: ResourceUsage,
}

impl ExitStatus {
    /// True if the payload exited with code 0.
    pub fn success(&self) -> bool {
        self.exit == Exit::Code(0)
    }

    /// The exit code, if the payload exited normally.
    pub fn code(&self) -> Option<i32> {
        match self.exit {
            Exit::Code(c) => Some(c),
            Exit::Signal { .. } => None,
        }
    }

    /// The signal that killed the payload, if any.
    pub fn signal(&self) -> Option<i32> {
        match self.exit {
            Exit::Signal { signal, .. } => Some(signal),
            Exit::Code(_) => None,
        }
    }

    /// True if the payload dumped core when it was killed.
    pub fn core_dumped(&self) -> bool {
        matches!(self.exit, Exit::Signal { core_dumped: true, .. })
    }

    /// True if the sandbox was killed because its wall-clock time ran out (its
    /// [`timeout`](crate::SandboxBuilder::timeout) or [`Child::wait_timeout`]).
    pub fn timed_out(&self) -> bool {
        self.limit == Some(Limit::WallClock)
    }

    /// The limit that ended the sandbox, if one did.
    pub fn limit(&self) -> Option<Limit> {
        self.limit
    }

    /// What the sandbox used.
    pub fn usage(&self) -> &ResourceUsage {
        &self.usage
    }
}

impl fmt::Display for ExitStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.exit {
            Exit::Code(c) => write!(f, "exit status: {c}")?,
            Exit::Signal { signal, core_dumped } => {
                let name =
                    nix::sys::signal::Signal::try_from(signal).map(|s| s.as_str()).unwrap_or("real-time");
                write!(f, "signal: {signal} ({name}){}", if core_dumped { " (core dumped)" } else { "" })?
            }
        }
        match self.limit {
            Some(Limit::WallClock) => f.write_str(", killed: wall-clock time limit")?,
            Some(Limit::CpuTime) => f.write_str(", killed: CPU time limit")?,
            Some(Limit::Memory) => f.write_str(", killed: out of memory")?,
            None => {}
        }
        Ok(())
    }
}

/// The result of [`Command::output`](crate::Command::output): status and captured output.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Output {
    /// How the payload ended.
    pub status: ExitStatus,
    /// Everything the payload wrote to stdout.
    pub stdout: Vec<u8>,
    /// Everything the payload wrote to stderr.
    pub stderr: Vec<u8>,
}

macro_rules! pipe_end {
    ($(#[$doc:meta])* $name:ident) => {
        $(#[$doc])*
        #[derive(Debug)]
        pub struct $name(File);

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

        impl From<$name> for OwnedFd {
            fn from(end: $name) -> OwnedFd {
                end.0.into()
            }
        }
    };
}

pipe_end!(
    /// The writing end of a payload's piped stdin.
    ChildStdin
);
pipe_end!(
    /// The reading end of a payload's piped stdout.
    ChildStdout
);
pipe_end!(
    /// The reading end of a payload's piped stderr.
    ChildStderr
);

impl Write for ChildStdin {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.0.write(buf)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.0.flush()
    }
}

impl Read for ChildStdout {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        self.0.read(buf)
    }
}

impl Read for ChildStderr {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        self.0.read(buf)
    }
}
