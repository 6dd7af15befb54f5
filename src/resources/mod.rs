//! Resource control: what a sandbox may consume (cgroup limits, rlimits, time limits) and what
//! it did consume ([`ResourceUsage`]), and which limit ended it ([`Limit`]).
//!
//! cgroups are handled in the embedding process only ([`cgroup`]); the child merely applies
//! rlimits before exec. Time limits are enforced by the embedding process while it waits
//! ([`Child::wait`](crate::Child::wait) and friends), backed by `RLIMIT_CPU` in the payload.

pub(crate) mod cgroup;
pub(crate) mod reaper;

use std::path::PathBuf;
use std::time::Duration;

use crate::Error;

/// What to do when the host cannot enforce a requested cgroup limit (no cgroup delegation for
/// an unprivileged caller, a controller the kernel lacks).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Compat {
    /// Refuse: `build()` or `spawn()` fails with a typed error naming the controller. Never runs
    /// a weaker sandbox than asked for. The default.
    #[default]
    Enforce,
    /// Run anyway without the limits that cannot be enforced; [`Child::unenforced`] lists them.
    ///
    /// [`Child::unenforced`]: crate::Child::unenforced
    BestEffort,
}

/// Bandwidth and operation-rate limits for one block device (`io.max` on cgroup v2,
/// `blkio.throttle.*` on v1), set with [`SandboxBuilder::io_limit`]. Unset fields stay unlimited.
/// On cgroup v1 only direct I/O is throttled; page-cache writeback is not.
///
/// ```
/// use stockade::IoLimit;
/// // At most 10 MB/s of writes and 100 read operations per second on device 8:0 (sda).
/// let limit = IoLimit::new(8, 0).write_bps(10_000_000).read_iops(100);
/// # let _ = limit;
/// ```
///
/// [`SandboxBuilder::io_limit`]: crate::SandboxBuilder::io_limit
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct IoLimit {
    pub(crate) major: u32,
    pub(crate) minor: u32,
    pub(crate) read_bps: Option<u64>,
    pub(crate) write_bps: Option<u64>,
    pub(crate) read_iops: Option<u64>,
    pub(crate) write_iops: Option<u64>,
}

impl IoLimit {
    /// No limits yet on block device `major:minor`.
    pub fn new(major: u32, minor: u32) -> IoLimit {
        IoLimit { major, minor, read_bps: None, write_bps: None, read_iops: None, write_iops: None }
    }

    /// Bytes read per second.
    pub fn read_bps(mut self, bytes: u64) -> IoLimit {
        self.read_bps = Some(bytes);
        self
    }

    /// Bytes written per second.
    pub fn write_bps(mut self, bytes: u64) -> IoLimit {
        self.write_bps = Some(bytes);
        self
    }

    /// Read operations per second.
    pub fn read_iops(mut self, ops: u64) -> IoLimit {
        self.read_iops = Some(ops);
        self
    }

    /// Write operations per second.
    pub fn write_iops(mut self, ops: u64) -> IoLimit {
        self.write_iops = Some(ops);
        self
    }

    fn fields(&self) -> [(&'static str, &'static str, Option<u64>); 4] {
        [
            ("rbps", "blkio.throttle.read_bps_device", self.read_bps),
            ("wbps", "blkio.throttle.write_bps_device", self.write_bps),
            ("riops", "blkio.throttle.read_iops_device", self.read_iops),
            ("wiops", "blkio.throttle.write_iops_device", self.write_iops),
        ]
    }

    /// The line for cgroup v2's `io.max`.
    pub(crate) fn io_max_line(&self) -> String {
        let mut line = format!("{}:{}", self.major, self.minor);
        for (key, _, value) in self.fields() {
            line.push_str(&match value {
                Some(v) => format!(" {key}={v}"),
                None => format!(" {key}=max"),
            });
        }
        line
    }

    /// `(file, line)` pairs for cgroup v1's `blkio.throttle.*` files.
    pub(crate) fn blkio_lines(&self) -> Vec<(&'static str, String)> {
        self.fields()
            .into_iter()
            .filter_map(|(_, file, value)| Some((file, format!("{}:{} {}", self.major, self.minor, value?))))
            .collect()
    }
}

/// A per-process resource limit (`setrlimit`), applied to the payload before exec.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Rlimit {
    /// `RLIMIT_AS`: address space, bytes.
    AddressSpace,
    /// `RLIMIT_CORE`: core file size, bytes.
    Core,
    /// `RLIMIT_CPU`: CPU time, seconds.
    Cpu,
    /// `RLIMIT_DATA`: data segment, bytes.
    Data,
    /// `RLIMIT_FSIZE`: largest file the process may create, bytes.
    FileSize,
    /// `RLIMIT_LOCKS`: file locks.
    FileLocks,
    /// `RLIMIT_MEMLOCK`: locked memory, bytes.
    LockedMemory,
    /// `RLIMIT_MSGQUEUE`: POSIX message queue bytes.
    MessageQueue,
    /// `RLIMIT_NICE`: ceiling of the nice value.
    Nice,
    /// `RLIMIT_NOFILE`: open file descriptors.
    OpenFiles,
    /// `RLIMIT_NPROC`: processes of the user (per user, not per sandbox).
    Processes,
    /// `RLIMIT_RSS`: resident set (ignored by modern kernels).
    Rss,
    /// `RLIMIT_RTPRIO`: real-time priority ceiling.
    RealtimePriority,
    /// `RLIMIT_RTTIME`: real-time CPU time without blocking, microseconds.
    RealtimeTime,
    /// `RLIMIT_SIGPENDING`: queued signals.
    PendingSignals,
    /// `RLIMIT_STACK`: stack size, bytes.
    Stack,
}

impl Rlimit {
    pub(crate) fn resource(self) -> libc::__rlimit_resource_t {
        match self {
            Rlimit::AddressSpace => libc::RLIMIT_AS,
            Rlimit::Core => libc::RLIMIT_CORE,
            Rlimit::Cpu => libc::RLIMIT_CPU,
            Rlimit::Data => libc::RLIMIT_DATA,
            Rlimit::FileSize => libc::RLIMIT_FSIZE,
            Rlimit::FileLocks => libc::RLIMIT_LOCKS,
            Rlimit::LockedMemory => libc::RLIMIT_MEMLOCK,
            Rlimit::MessageQueue => libc::RLIMIT_MSGQUEUE,
            Rlimit::Nice => libc::RLIMIT_NICE,
            Rlimit::OpenFiles => libc::RLIMIT_NOFILE,
            Rlimit::Processes => libc::RLIMIT_NPROC,
            Rlimit::Rss => libc::RLIMIT_RSS,
            Rlimit::RealtimePriority => libc::RLIMIT_RTPRIO,
            Rlimit::RealtimeTime => libc::RLIMIT_RTTIME,
            Rlimit::PendingSignals => libc::RLIMIT_SIGPENDING,
            Rlimit::Stack => libc::RLIMIT_STACK,
        }
    }
}

/// The limit that ended a sandbox, reported by [`ExitStatus::limit`](crate::ExitStatus::limit).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Limit {
    /// The wall-clock limit ([`SandboxBuilder::timeout`] or [`Child::wait_timeout`]).
    ///
    /// [`SandboxBuilder::timeout`]: crate::SandboxBuilder::timeout
    /// [`Child::wait_timeout`]: crate::Child::wait_timeout
    WallClock,
    /// The CPU-time limit ([`SandboxBuilder::cpu_time_limit`](crate::SandboxBuilder::cpu_time_limit)).
    CpuTime,
    /// The memory limit: the kernel's OOM killer ended a process of the sandbox.
    Memory,
}

/// What a sandbox consumed, reported with its [`ExitStatus`](crate::ExitStatus).
///
/// CPU times and peak memory come from the sandbox's cgroup when it has one (so they cover every
/// process of the tree), otherwise from the kernel's accounting of the sandbox's first process
/// and the children it waited for.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ResourceUsage {
    /// From spawn to exit.
    pub wall_time: Duration,
    /// CPU time in user mode.
    pub user_time: Duration,
    /// CPU time in the kernel.
    pub system_time: Duration,
    /// Peak memory in bytes: the cgroup's peak usage, or else the largest resident set size of
    /// a single process.
    pub peak_memory: Option<u64>,
    /// Whether the kernel's OOM killer killed a process of the sandbox (cgroup only).
    pub oom_killed: bool,
    /// The most processes alive at once (cgroup v2 with `pids.peak` only).
    pub peak_pids: Option<u64>,
}

/// A running sandbox's cgroup usage and limits ([`Detached::stats`](crate::Detached::stats)),
/// read from its groups' files; `None` where the host has no such file (a controller the
/// sandbox has no group in, or a counter this kernel lacks).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct CgroupStats {
    /// CPU time used so far by every process of the group, user and kernel.
    pub cpu_total: Option<Duration>,
    /// CPU time in user mode.
    pub cpu_user: Option<Duration>,
    /// CPU time in the kernel.
    pub cpu_system: Option<Duration>,
    /// Memory charged to the group now, in bytes.
    pub memory_current: Option<u64>,
    /// The most memory charged at once, in bytes.
    pub memory_peak: Option<u64>,
    /// The memory limit in bytes (`None`: unlimited, or no memory group).
    pub memory_limit: Option<u64>,
    /// How many times the OOM killer killed a process of the group.
    pub oom_kills: Option<u64>,
    /// Processes (and threads) in the group now.
    pub pids_current: Option<u64>,
    /// The process limit (`None`: unlimited, or no pids group).
    pub pids_limit: Option<u64>,
}

/// How [`Child::unenforced`](crate::Child::unenforced) names a cgroup namespace that could not
/// be rooted in groups of the sandbox's own in every hierarchy.
pub(crate) const CGROUP_CONFINEMENT: &str = "cgroup namespace (own groups)";

/// The longest wall-clock or CPU-time limit: longer ones could not be added to a clock reading
/// or turned into `RLIMIT_CPU` seconds without overflowing, and would silently mean "none".
const MAX_TIME_LIMIT: Duration = Duration::from_secs(100 * 365 * 24 * 3600);

/// Resource settings of a sandbox, as collected by the builder.
#[derive(Clone, Debug, Default)]
pub(crate) struct LimitsConfig {
    pub(crate) memory: Option<u64>,
    pub(crate) memory_swap: Option<u64>,
    pub(crate) pids: Option<u64>,
    pub(crate) cpu_quota: Option<(Duration, Duration)>,
    pub(crate) cpu_weight: Option<u64>,
    /// The weight in v1 shares (`SandboxBuilder::cpu_shares`), instead of `cpu_weight`.
    pub(crate) cpu_shares: Option<u64>,
    pub(crate) cpuset_cpus: Option<String>,
    pub(crate) cpuset_mems: Option<String>,
    pub(crate) io_weight: Option<u16>,
    pub(crate) io_limits: Vec<IoLimit>,
    pub(crate) cgroup_parent: Option<PathBuf>,
    /// The groups outlive the embedding process (`SandboxBuilder::outlive_parent`): the reaper
    /// is not told of them.
    pub(crate) outlive_parent: bool,
    pub(crate) compat: Compat,
    pub(crate) rlimits: Vec<(Rlimit, u64, u64)>,
    pub(crate) wall_time: Option<Duration>,
    pub(crate) cpu_time: Option<Duration>,
}

impl LimitsConfig {
    /// The cgroup controllers the settings need (v2 names; `cgroup` maps them for v1).
    pub(crate) fn controllers(&self) -> Vec<&'static str> {
        let mut c = Vec::new();
        if self.memory.is_some() || self.memory_swap.is_some() {
            c.push("memory");
        }
        if self.pids.is_some() {
            c.push("pids");
        }
        if self.cpu_quota.is_some() || self.cpu_weight.is_some() || self.cpu_shares.is_some() {
            c.push("cpu");
        }
        if self.cpuset_cpus.is_some() || self.cpuset_mems.is_some() {
            c.push("cpuset");
        }
        if self.io_weight.is_some() || !self.io_limits.is_empty() {
            c.push("io");
        }
        c
    }

    /// The names of the limits that need a cgroup, for reporting them unenforced.
    pub(crate) fn cgroup_limit_names(&self) -> Vec<&'static str> {
        let mut names = self.controllers();
        if self.cpu_time.is_some() {
            names.push("cpu time (tree-wide)");
        }
        names
    }

    /// Whether spawns need a cgroup: for a limit, for tree-wide CPU accounting, or because the
    /// caller chose where cgroups go.
    pub(crate) fn wants_cgroup(&self) -> bool {
        !self.controllers().is_empty() || self.cpu_time.is_some() || self.cgroup_parent.is_some()
    }

    /// Checks values that can never work (at `build()`).
    pub(crate) fn validate(&self) -> Result<(), Error> {
        let positive = |what: &'static str, v: Option<u64>| match v {
            Some(0) => Err(Error::invalid(what, 0, "must be greater than 0")),
            _ => Ok(()),
        };
        positive("memory limit", self.memory)?;
        positive("pids limit", self.pids)?;
        for (what, d) in [("timeout", self.wall_time), ("cpu time limit", self.cpu_time)] {
            if d.is_some_and(|d| d.is_zero()) {
                return Err(Error::invalid(what, "0s", "must be longer than zero"));
            }
            if let Some(d) = d.filter(|d| *d > MAX_TIME_LIMIT) {
                return Err(Error::invalid(
                    what,
                    format!("{d:?}"),
                    format!(
                        "longer than the longest limit stockade can enforce ({} s, about 100 years)",
                        MAX_TIME_LIMIT.as_secs()
                    ),
                ));
            }
        }
        if self.memory_swap.is_some() && self.memory.is_none() {
            return Err(Error::invalid(
                "memory+swap limit",
                self.memory_swap.unwrap_or_default(),
                "needs a memory limit too (it counts memory and swap together)",
            ));
        }
        if let (Some(mem), Some(swap)) = (self.memory, self.memory_swap)
            && swap < mem
        {
            return Err(Error::invalid(
                "memory+swap limit",
                swap,
                format!("must be at least the memory limit {mem} (it counts memory and swap together)"),
            ));
        }
        if let Some((quota, period)) = self.cpu_quota
            && (quota < Duration::from_millis(1)
                || !(Duration::from_millis(1)..=Duration::from_secs(1)).contains(&period))
        {
            return Err(Error::invalid(
                "cpu quota",
                format!("{quota:?} per {period:?}"),
                "the quota must be at least 1ms and the period between 1ms and 1s",
            ));
        }
        if let Some(w) = self.cpu_weight
            && !(1..=10_000).contains(&w)
        {
            return Err(Error::invalid("cpu weight", w, "must be between 1 and 10000 (100 is the default)"));
        }
        if let Some(shares) = self.cpu_shares
            && !(2..=262_144).contains(&shares)
        {
            return Err(Error::invalid(
                "cpu shares",
                shares,
                "must be between 2 and 262144 (1024 is the default)",
            ));
        }
        if let Some(w) = self.io_weight
            && !(1..=10_000).contains(&w)
        {
            return Err(Error::invalid("io weight", w, "must be between 1 and 10000 (100 is the default)"));
        }
        for limit in &self.io_limits {
            let values = [limit.read_bps, limit.write_bps, limit.read_iops, limit.write_iops];
            if values.iter().all(Option::is_none) || values.contains(&Some(0)) {
                return Err(Error::invalid(
                    "io limit",
                    format!("{}:{}", limit.major, limit.minor),
                    "needs at least one rate, and rates must be greater than 0",
                ));
            }
        }
        for (what, v) in [("cpuset cpus", &self.cpuset_cpus), ("cpuset mems", &self.cpuset_mems)] {
            if let Some(list) = v {
                let ok = !list.is_empty()
                    && list.split(',').all(|r| {
                        let mut ends = r.splitn(2, '-');
                        ends.all(|n| !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit()))
                    });
                if !ok {
                    return Err(Error::invalid(what, format!("{list:?}"), "must be a list like \"0-3,6\""));
                }
            }
        }
        for &(res, soft, hard) in &self.rlimits {
            if soft > hard {
                return Err(Error::invalid(
                    "rlimit",
                    format!("{res:?} {soft} > {hard}"),
                    "the soft limit exceeds the hard limit",
                ));
            }
        }
        if let Some(parent) = &self.cgroup_parent
            && parent.components().any(|c| matches!(c, std::path::Component::ParentDir))
        {
            return Err(Error::InvalidPath {
                what: "cgroup parent",
                path: parent.clone(),
                reason: "must not contain `..`".into(),
            });
        }
        Ok(())
    }

    /// The rlimits the child sets: the caller's, plus `RLIMIT_CPU` as a per-process backstop of
    /// the CPU-time limit (soft: the limit, rounded up; hard: one second later).
    pub(crate) fn child_rlimits(&self) -> Vec<(libc::__rlimit_resource_t, u64, u64)> {
        let mut out: Vec<_> = self.rlimits.iter().map(|&(r, s, h)| (r.resource(), s, h)).collect();
        if let Some(cpu) = self.cpu_time
            && !self.rlimits.iter().any(|(r, ..)| *r == Rlimit::Cpu)
        {
            let secs = cpu.as_secs() + u64::from(cpu.subsec_nanos() > 0);
            out.push((libc::RLIMIT_CPU, secs, secs + 1));
        }
        out
    }
}
