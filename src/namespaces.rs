//! Which kernel namespaces a sandbox gets, and the settings that only make sense inside them
//! (clock offsets of a time namespace).

use std::time::Duration;

use crate::sys::clone::flags;

bitflags::bitflags! {
    /// The namespaces a sandbox's processes are placed in. Each one isolates a kind of global
    /// resource; combine them freely.
    ///
    /// Without [`Namespaces::USER`], creating any other namespace needs `CAP_SYS_ADMIN` (root).
    /// With it, an unprivileged program can create all of them.
    ///
    /// ```
    /// use stockade::Namespaces;
    /// let ns = Namespaces::USER | Namespaces::PID | Namespaces::MOUNT;
    /// assert!(ns.contains(Namespaces::PID));
    /// assert!(Namespaces::all().contains(Namespaces::NET));
    /// ```
    #[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
    pub struct Namespaces: u32 {
        /// User namespace: uids, gids and capabilities of their own; the payload can be root
        /// inside while being the caller's (or a mapped) user outside.
        const USER = 1 << 0;
        /// Pid namespace: the payload sees only its own process tree; a small init runs as
        /// pid 1, reaps orphans, forwards signals and takes the tree down with the payload.
        const PID = 1 << 1;
        /// Mount namespace: mounts made inside never reach the host. With [`Namespaces::PID`],
        /// a fresh `/proc` is mounted.
        const MOUNT = 1 << 2;
        /// UTS namespace: hostname and NIS domain name of its own.
        const UTS = 1 << 3;
        /// IPC namespace: System V IPC objects and POSIX message queues of its own.
        const IPC = 1 << 4;
        /// Network namespace: only a loopback interface, brought up by stockade.
        const NET = 1 << 5;
        /// Cgroup namespace: the payload's cgroup appears as the root of every hierarchy. The
        /// sandbox then gets a cgroup of its own in every hierarchy the embedding program can
        /// create one in (not only those with limits), so that nothing above it — the
        /// embedding program's or the host's groups — can be seen or written from inside, even
        /// by a payload that mounts cgroupfs itself.
        const CGROUP = 1 << 6;
        /// Time namespace: monotonic and boot-time clocks with offsets of their own
        /// (see [`crate::SandboxBuilder::clock_offsets`]).
        const TIME = 1 << 7;
    }
}

impl Namespaces {
    /// The `clone3` flags for these namespaces, except [`Namespaces::TIME`] and
    /// [`Namespaces::CGROUP`], which the child enters with `unshare`: a time namespace so that
    /// its offsets can be written before any process lives in it, a cgroup namespace once the
    /// child is in every cgroup of its own (its root is the cgroup it is in when it enters).
    pub(crate) fn clone_flags(self) -> u64 {
        (self - Namespaces::TIME - Namespaces::CGROUP).flags()
    }

    /// The `CLONE_NEW*` flags of all these namespaces (what `setns` takes to join them).
    pub(crate) fn flags(self) -> u64 {
        [
            (Namespaces::USER, flags::CLONE_NEWUSER),
            (Namespaces::PID, flags::CLONE_NEWPID),
            (Namespaces::MOUNT, flags::CLONE_NEWNS),
            (Namespaces::UTS, flags::CLONE_NEWUTS),
            (Namespaces::IPC, flags::CLONE_NEWIPC),
            (Namespaces::NET, flags::CLONE_NEWNET),
            (Namespaces::CGROUP, flags::CLONE_NEWCGROUP),
            (Namespaces::TIME, flags::CLONE_NEWTIME),
        ]
        .into_iter()
        .filter(|(ns, _)| self.contains(*ns))
        .fold(0, |acc, (_, flag)| acc | flag)
    }

    /// The namespaces' names, as the kernel spells them under `/proc/<pid>/ns`.
    pub fn names(self) -> impl Iterator<Item = &'static str> {
        self.iter_names().map(|(name, _)| match name {
            "USER" => "user",
            "PID" => "pid",
            "MOUNT" => "mnt",
            "UTS" => "uts",
            "IPC" => "ipc",
            "NET" => "net",
            "CGROUP" => "cgroup",
            _ => "time",
        })
    }
}

/// Offsets of the clocks in a time namespace, relative to the host. Only `CLOCK_MONOTONIC` and
/// `CLOCK_BOOTTIME` (and their variants) can be shifted; the wall clock is global.
///
/// ```
/// use std::time::Duration;
/// use stockade::ClockOffsets;
/// // The payload sees a machine that booted a day earlier.
/// let offsets = ClockOffsets::new().boottime(Duration::from_secs(86_400));
/// # let _ = offsets;
/// ```
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ClockOffsets {
    pub(crate) monotonic: Duration,
    pub(crate) boottime: Duration,
}

impl ClockOffsets {
    /// No offsets: the namespace's clocks read like the host's.
    pub fn new() -> Self {
        Self::default()
    }

    /// Moves `CLOCK_MONOTONIC` forward by `offset`.
    pub fn monotonic(mut self, offset: Duration) -> Self {
        self.monotonic = offset;
        self
    }

    /// Moves `CLOCK_BOOTTIME` (and the uptime in `/proc/uptime`) forward by `offset`.
    pub fn boottime(mut self, offset: Duration) -> Self {
        self.boottime = offset;
        self
    }

    /// The text written to `/proc/self/timens_offsets`.
    pub(crate) fn to_proc_text(self) -> Vec<u8> {
        format!(
            "monotonic {} {}\nboottime {} {}\n",
            self.monotonic.as_secs(),
            self.monotonic.subsec_nanos(),
            self.boottime.as_secs(),
            self.boottime.subsec_nanos()
        )
        .into_bytes()
    }
}
