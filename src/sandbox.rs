//! The sandbox template: [`SandboxBuilder`] collects settings (setters never fail),
//! [`SandboxBuilder::build`] validates them all at once into an immutable, cheaply cloned
//! [`Sandbox`], from which any number of [`Command`]s are run.

use std::ffi::{OsStr, OsString};
use std::os::unix::ffi::OsStrExt;
use std::path::PathBuf;
use std::sync::Arc;

use crate::fs::plan::{FsConfig, FsPlan};
use crate::privileges::{self, CapPlan};
use crate::resources::LimitsConfig;
use crate::resources::cgroup::{self, Layout};
use crate::userns::{self, IdKind, IdMap, Writer};
use crate::{
    Capability, CapabilitySets, ClockOffsets, Command, Compat, Error, IoLimit, Landlock, Mount, Namespaces,
    Rlimit, Root, SyscallFilter,
};
use std::time::Duration;

/// Longest hostname / domain name the kernel accepts (`__NEW_UTS_LEN`).
const MAX_UTS_NAME: usize = 64;

/// Largest clock offset the kernel accepts (half of `KTIME_SEC_MAX`, so clocks cannot overflow).
const MAX_CLOCK_OFFSET_SECS: u64 = (i64::MAX as u64 / 1_000_000_000) / 2;

/// Collects a sandbox's settings. Create it with [`Sandbox::builder`]; finish with
/// [`build`](SandboxBuilder::build), which validates everything and reports the first problem as
/// a typed [`Error`] naming the setting.
///
/// ```no_run
/// use stockade::{Namespaces, Sandbox};
/// # fn main() -> Result<(), stockade::Error> {
/// let sandbox = Sandbox::builder()
///     .namespaces(Namespaces::all())
///     .hostname("box")
///     .build()?;
/// let out = sandbox.command("hostname").output()?;
/// assert_eq!(out.stdout, b"box\n");
/// # Ok(()) }
/// ```
#[derive(Clone, Debug, Default)]
pub struct SandboxBuilder {
    namespaces: Namespaces,
    /// Existing namespaces to join instead of creating them: `(kind, namespace file)`.
    joined: Vec<(Namespaces, PathBuf)>,
    uid_map: Option<Vec<IdMap>>,
    gid_map: Option<Vec<IdMap>>,
    user: Option<(u32, u32)>,
    /// A user spec to resolve in the sandbox's own `/etc/passwd` at build.
    user_name: Option<String>,
    /// The payload's home directory, from the `/etc/passwd` entry of its user.
    home: Option<PathBuf>,
    groups: Option<Vec<u32>>,
    hostname: Option<OsString>,
    sysctls: Vec<(String, String)>,
    domainname: Option<OsString>,
    clock_offsets: Option<ClockOffsets>,
    id_map_helpers: Option<(PathBuf, PathBuf)>,
    root: Option<Root>,
    mounts: Vec<Mount>,
    keep_unmasked: bool,
    no_default_mounts: bool,
    chroot: bool,
    legacy_overlay: bool,
    root_size: Option<u64>,
    capabilities: Option<CapabilitySets>,
    allow_new_privs: bool,
    syscall_filter: Option<SyscallFilter>,
    no_syscall_filter: bool,
    landlock: Option<Landlock>,
    umask: Option<u32>,
    oom_score_adj: Option<i32>,
    outlive_parent: bool,
    limits: LimitsConfig,
    run_defaults: Option<RunDefaults>,
    /// `groups` came from an image's `User`, so an explicit `user` replaces them too.
    groups_from_image: bool,
    /// Whatever must live as long as the sandbox (an image's lease on its stored layers).
    keep_alive: Option<Arc<dyn std::any::Any + Send + Sync>>,
}

impl SandboxBuilder {
    /// The namespaces to create (default: none). Without [`Namespaces::USER`], any namespace
    /// needs root (`CAP_SYS_ADMIN`).
    pub fn namespaces(&mut self, namespaces: Namespaces) -> &mut Self {
        self.namespaces = namespaces;
        self
    }

    /// Joins an existing namespace instead of creating one of that kind: `path` is a namespace
    /// file, such as `/proc/<pid>/ns/net` or a bind-mounted `/run/netns/NAME` (as CNI gives a
    /// container its network). The file is opened at each spawn, which fails with
    /// [`Error::InvalidPath`] when it is not a namespace of `kind`. A joined kind is not created
    /// even when [`namespaces`](Self::namespaces) lists it. The sandbox leaves a joined network
    /// namespace as it is (no loopback setup); a [`hostname`](Self::hostname) or
    /// [`sysctl`](Self::sysctl) is set in the joined namespace, as runc sets it, except in the
    /// embedding program's own namespace (refused at spawn).
    ///
    /// `kind` is one of [`Namespaces::NET`], [`Namespaces::IPC`], [`Namespaces::UTS`],
    /// [`Namespaces::CGROUP`] and [`Namespaces::PID`] (the payload then shares the pid
    /// namespace's processes: the sandbox's init is not its pid 1, and its end does not end
    /// the namespace's other processes). Joining needs `CAP_SYS_ADMIN` over the namespace, and
    /// cannot be combined with a new [`Namespaces::USER`], which would hold no privilege over
    /// it; anything else is refused at build.
    pub fn join_namespace(&mut self, kind: Namespaces, path: impl Into<PathBuf>) -> &mut Self {
        self.joined.push((kind, path.into()));
        self
    }

    /// The uid map of the user namespace. Default: uid 0 inside is the caller's effective uid,
    /// nothing else is mapped. Maps other than "one id, the caller's own" need `CAP_SETUID`, or
    /// are written through `newuidmap` with ranges from `/etc/subuid`.
    pub fn uid_map(&mut self, map: impl IntoIterator<Item = IdMap>) -> &mut Self {
        self.uid_map = Some(map.into_iter().collect());
        self
    }

    /// The gid map of the user namespace. Default: gid 0 inside is the caller's effective gid.
    /// Same rules as [`uid_map`](Self::uid_map), with `CAP_SETGID`, `newgidmap` and
    /// `/etc/subgid`.
    pub fn gid_map(&mut self, map: impl IntoIterator<Item = IdMap>) -> &mut Self {
        self.gid_map = Some(map.into_iter().collect());
        self
    }

    /// The uid and gid the payload runs as, as seen inside the sandbox. Default: unchanged (in a
    /// user namespace, the caller's own ids as the map shows them, i.e. root with the default
    /// map). With a user namespace both must be mapped. Replaces an image's `User` (see
    /// `image`, with the `image` feature) including the groups it brought.
    pub fn user(&mut self, uid: u32, gid: u32) -> &mut Self {
        self.user = Some((uid, gid));
        self.user_name = None;
        self.home = None;
        if std::mem::take(&mut self.groups_from_image) {
            self.groups = None;
        }
        self
    }

    /// The user the payload runs as, by name, as Docker's `--user` takes it: `name`, `uid`,
    /// `name:group`, `uid:gid`, `name:gid`, ... Resolved at [`build`](Self::build) in the
    /// sandbox's own `/etc/passwd` and `/etc/group`: each is what the last mount covering it
    /// puts there (a directory bound at `/etc`, a file bound or given with [`Mount::file`] at
    /// its path; nothing, for another kind of mount), else the one of the sandbox's
    /// image (the `image` feature), root directory or overlay layers; never the host's unless the
    /// sandbox's root is the host's. A user named without a group gets its primary group
    /// and, unless [`groups`](Self::groups) says otherwise, the groups that list it as a
    /// member; its home directory becomes `HOME` unless a command sets one. A name that is not
    /// there is an [`Error::InvalidValue`] naming it. Replaces [`user`](Self::user).
    pub fn user_name(&mut self, spec: impl Into<String>) -> &mut Self {
        self.user_name = Some(spec.into());
        if std::mem::take(&mut self.groups_from_image) {
            self.groups = None;
        }
        self
    }

    /// Runs the image `rootfs`: its layers become the root (read-only, under a throw-away
    /// writable layer, as [`Root::overlay`]); its `User` becomes [`user`](Self::user) and
    /// [`groups`](Self::groups); every command starts with its `Env` and `WorkingDir`; and
    /// [`Sandbox::image_command`] runs its `Entrypoint` + `Cmd`. Each can be overridden: call
    /// `user`/`groups`/`root` after this, or `env`/`current_dir` on the command.
    ///
    /// A `WorkingDir` missing from the image is created before the payload starts, as runc
    /// does: its missing components become directories of mode 0755 owned by the sandbox's
    /// root, resolved inside the sandbox (symlinks of the image cannot lead out of it; mounts
    /// are followed, so below a writable bind mount they are made in its source). A dangling
    /// symlink on the way is an error. A directory given with `current_dir` must exist, as
    /// with `std::process::Command`.
    #[cfg(feature = "image")]
    pub fn image(&mut self, rootfs: &crate::image::Rootfs) -> &mut Self {
        self.root = Some(rootfs.root());
        self.keep_alive = rootfs.keep_alive();
        if let Some(u) = rootfs.user() {
            self.user = Some((u.uid, u.gid));
            self.user_name = None;
            self.home = u.home.clone();
            if !u.groups.is_empty() {
                self.groups = Some(u.groups.clone());
                self.groups_from_image = true;
            }
        }
        let config = rootfs.config();
        let env = config
            .env
            .iter()
            .map(|kv| match kv.split_once('=') {
                Some((k, v)) => (OsString::from(k), OsString::from(v)),
                None => (OsString::from(kv), OsString::new()),
            })
            .collect();
        self.run_defaults = Some(RunDefaults {
            env,
            entrypoint: config.entrypoint.iter().map(OsString::from).collect(),
            cmd: config.cmd.iter().map(OsString::from).collect(),
            cwd: config.working_dir.as_ref().map(PathBuf::from),
        });
        self
    }

    /// Supplementary groups of the payload (default: none in a user namespace whose gid map
    /// allows `setgroups`, otherwise unchanged).
    pub fn groups(&mut self, groups: impl IntoIterator<Item = u32>) -> &mut Self {
        self.groups = Some(groups.into_iter().collect());
        self.groups_from_image = false;
        self
    }

    /// The hostname inside the sandbox; needs [`Namespaces::UTS`].
    pub fn hostname(&mut self, name: impl AsRef<OsStr>) -> &mut Self {
        self.hostname = Some(name.as_ref().to_owned());
        self
    }

    /// Sets a kernel parameter inside the sandbox (`key` as `sysctl` names it, `net.ipv4.ip_forward`
    /// or `net/ipv4/ip_forward`), written before anything of the payload's runs. Only
    /// parameters that belong to one of the sandbox's own namespaces are accepted, as runc
    /// accepts them: `net.*` with [`Namespaces::NET`]; `kernel.msgmax`, `msgmnb`, `msgmni`,
    /// `sem`, `shmall`, `shmmax`, `shmmni`, `shm_rmid_forced` and `fs.mqueue.*` with
    /// [`Namespaces::IPC`]; `kernel.hostname` and `kernel.domainname` with
    /// [`Namespaces::UTS`]. Anything else would change the host, and is
    /// [`Error::InvalidValue`] at build.
    pub fn sysctl(&mut self, key: impl Into<String>, value: impl Into<String>) -> &mut Self {
        self.sysctls.push((key.into(), value.into()));
        self
    }

    /// The NIS domain name inside the sandbox; needs [`Namespaces::UTS`].
    pub fn domainname(&mut self, name: impl AsRef<OsStr>) -> &mut Self {
        self.domainname = Some(name.as_ref().to_owned());
        self
    }

    /// Clock offsets of the time namespace; needs [`Namespaces::TIME`].
    pub fn clock_offsets(&mut self, offsets: ClockOffsets) -> &mut Self {
        self.clock_offsets = Some(offsets);
        self
    }

    /// Paths of `newuidmap` and `newgidmap` (default: looked up in `PATH`), for systems that
    /// keep them elsewhere (e.g. `/run/wrappers/bin` on NixOS).
    pub fn id_map_helpers(
        &mut self,
        newuidmap: impl Into<PathBuf>,
        newgidmap: impl Into<PathBuf>,
    ) -> &mut Self {
        self.id_map_helpers = Some((newuidmap.into(), newgidmap.into()));
        self
    }

    /// The payload's root filesystem (default: the host's, unchanged). Needs
    /// [`Namespaces::MOUNT`]. With a root, the payload also gets a minimal `/dev` and (with a
    /// pid namespace) a fresh `/proc`, unless a [`mount`](Self::mount) claims those paths, and
    /// starts in `/` unless [`Command::current_dir`] says otherwise.
    pub fn root(&mut self, root: Root) -> &mut Self {
        self.root = Some(root);
        self
    }

    /// Adds a mount, directory, file or symlink to the payload's filesystem; applied in the
    /// order added, after the root and the default `/proc` and `/dev`. Needs
    /// [`Namespaces::MOUNT`].
    pub fn mount(&mut self, mount: Mount) -> &mut Self {
        self.mounts.push(mount);
        self
    }

    /// Adds several mounts, in order (see [`mount`](Self::mount)).
    pub fn mounts(&mut self, mounts: impl IntoIterator<Item = Mount>) -> &mut Self {
        self.mounts.extend(mounts);
        self
    }

    /// Limits the writable tmpfs of [`Root::tmpfs`] or of an ephemeral [`Root::overlay`] upper
    /// layer to `bytes`, so a payload cannot fill memory through it.
    pub fn root_size(&mut self, bytes: u64) -> &mut Self {
        self.root_size = Some(bytes);
        self
    }

    /// Turns off the default masking of sensitive `/proc` and `/sys` paths (`/proc/kcore`,
    /// `/proc/keys`, `/sys/firmware`, ...) and the read-only `/proc/sys`, `/proc/sysrq-trigger`
    /// and friends. They are on by default whenever the sandbox has a mount namespace.
    pub fn unmask_proc_and_sys(&mut self) -> &mut Self {
        self.keep_unmasked = true;
        self
    }

    /// Mounts only what [`mount`](Self::mount) was given: no fresh `/proc` with a pid
    /// namespace and no minimal `/dev` with a [`root`](Self::root) unless the caller mounts
    /// them (as an OCI runtime spec lists every mount itself). The masks stay on (see
    /// [`unmask_proc_and_sys`](Self::unmask_proc_and_sys)).
    pub fn no_default_mounts(&mut self) -> &mut Self {
        self.no_default_mounts = true;
        self
    }

    /// Switches root with `chroot` instead of `pivot_root`, for hosts where `pivot_root`
    /// cannot work (a root on initramfs). Weaker: the old root stays in the mount namespace,
    /// reachable to a payload that can `chroot` itself. Never chosen automatically.
    pub fn use_chroot(&mut self) -> &mut Self {
        self.chroot = true;
        self
    }

    /// Stacks overlay layers (an overlay root, [`Root::overlay`](crate::Root::overlay), images, and
    /// overlay mounts, [`Mount::overlay`](crate::Mount::overlay)) with
    /// one `lowerdir=` option, for kernels before 6.8, where [`build`](Self::build) otherwise
    /// says `Unsupported { feature: "overlayfs lowerdir+" }`. It takes fewer layers (at most
    /// 48: the option is limited to 255 bytes, each layer named by a descriptor number), and
    /// has to change the child's working directory while the overlay is made. Never chosen
    /// automatically.
    pub fn legacy_overlay(&mut self) -> &mut Self {
        self.legacy_overlay = true;
        self
    }

    /// The payload's capabilities, exactly: after exec its bounding, permitted, effective,
    /// inheritable and ambient sets all equal this set, whether it runs as root or not.
    /// Default: [`DEFAULT_CAPABILITIES`](crate::DEFAULT_CAPABILITIES) for a root payload, none
    /// for a payload [`user`](Self::user) switches to another uid — which keeps
    /// `DEFAULT_CAPABILITIES` as its bounding set only, as with Docker and runc, so programs with
    /// file capabilities (`ping`) still run (without the extra privilege under `no_new_privs`).
    /// In a user namespace they
    /// apply to the sandbox's own namespaces only; without one they are real host capabilities
    /// (a payload given `CAP_SYS_ADMIN` there could undo its mounts).
    pub fn capabilities(&mut self, caps: impl IntoIterator<Item = Capability>) -> &mut Self {
        self.capabilities = Some(CapabilitySets::all(&caps.into_iter().collect::<Vec<_>>()));
        self
    }

    /// The payload's five capability sets, each on its own (as an OCI runtime spec gives them;
    /// see [`CapabilitySets`]). Replaces [`capabilities`](Self::capabilities), and the other
    /// way round: the last call counts. [`build`](Self::build) refuses effective capabilities
    /// outside the permitted set and ambient ones outside permitted and inheritable.
    pub fn capability_sets(&mut self, sets: CapabilitySets) -> &mut Self {
        self.capabilities = Some(sets);
        self
    }

    /// Lets the payload gain privileges through set-user-ID programs and file capabilities.
    /// By default `no_new_privs` is set: such programs run without the extra privileges.
    pub fn allow_new_privileges(&mut self) -> &mut Self {
        self.allow_new_privs = true;
        self
    }

    /// The payload's syscall filter (default: [`SyscallFilter::default_profile`], adapted to
    /// the payload's capabilities). Built once, at [`build`](Self::build); installed by the
    /// child as its last step before `execve`, so the filter must allow `execve` and
    /// `rt_sigprocmask` (and, for setup failures to be reported, `write` and `exit_group`).
    /// With [`allow_new_privileges`](Self::allow_new_privileges) it is installed before the
    /// payload's ids and capabilities change instead, and must allow those calls too.
    pub fn syscall_filter(&mut self, filter: SyscallFilter) -> &mut Self {
        self.syscall_filter = Some(filter);
        self.no_syscall_filter = false;
        self
    }

    /// Runs the payload without any syscall filter: every system call the kernel has is open
    /// to it. Only for payloads you trust, or sandboxes that filter otherwise.
    pub fn no_syscall_filter(&mut self) -> &mut Self {
        self.no_syscall_filter = true;
        self.syscall_filter = None;
        self
    }

    /// Landlock rules for the payload (default: none). See [`Landlock`].
    pub fn landlock(&mut self, rules: Landlock) -> &mut Self {
        self.landlock = Some(rules);
        self
    }

    /// The sandbox's OOM score adjustment (`/proc/<pid>/oom_score_adj`, -1000 to 1000; default:
    /// the embedding process's): higher makes its processes the OOM killer's first choice.
    /// Written by the embedding process before the sandbox runs anything, so lowering it needs
    /// `CAP_SYS_RESOURCE` there (root); raising it never does.
    pub fn oom_score_adj(&mut self, adj: i32) -> &mut Self {
        self.oom_score_adj = Some(adj);
        self
    }

    /// Sandboxes outlive the process that spawns them (default: they die with it, and the
    /// cgroup reaper removes their groups if it is killed). For container runtimes whose
    /// `create` leaves the container to its caller (a shim that is its subreaper): no
    /// parent-death signal in any of its processes, no status pipe, no reaper for its cgroups.
    /// Such a sandbox is meant to be [`detach`](crate::Child::detach)ed, then signalled, reaped
    /// and its cgroups removed by others ([`Detached`](crate::Detached)); a `Child` of it that
    /// is waited for reports the init's exit code as the payload's (no wait status, no usage).
    pub fn outlive_parent(&mut self) -> &mut Self {
        self.outlive_parent = true;
        self
    }

    /// The payload's file mode creation mask (default `0o022`, as Docker sets it).
    pub fn umask(&mut self, mask: u32) -> &mut Self {
        self.umask = Some(mask);
        self
    }

    /// Limits the sandbox's memory (its cgroup's, covering every process) to `bytes`. When the
    /// tree needs more, the kernel's OOM killer ends a process of it and the status reports
    /// [`Limit::Memory`](crate::Limit::Memory).
    pub fn memory_limit(&mut self, bytes: u64) -> &mut Self {
        self.limits.memory = Some(bytes);
        self
    }

    /// Limits memory and swap together to `bytes` (at least the memory limit). Needs swap
    /// accounting on the host.
    pub fn memory_swap_limit(&mut self, bytes: u64) -> &mut Self {
        self.limits.memory_swap = Some(bytes);
        self
    }

    /// Limits how many processes (and threads) the sandbox may have at once: a fork bomb stops
    /// there.
    pub fn pids_limit(&mut self, count: u64) -> &mut Self {
        self.limits.pids = Some(count);
        self
    }

    /// Lets the sandbox use at most `quota` of CPU time per `period` (e.g. 50 ms per 100 ms: half
    /// a core).
    pub fn cpu_quota(&mut self, quota: Duration, period: Duration) -> &mut Self {
        self.limits.cpu_quota = Some((quota, period));
        self
    }

    /// The sandbox's CPU weight against its siblings, 1 to 10000 (default 100); `cpu.shares`
    /// on cgroup v1 (weight 100 = 1024 shares).
    pub fn cpu_weight(&mut self, weight: u64) -> &mut Self {
        self.limits.cpu_weight = Some(weight);
        self.limits.cpu_shares = None;
        self
    }

    /// The sandbox's CPU weight in cgroup v1's `cpu.shares`, 2 to 262144 (default 1024): written
    /// as it is on v1, as the same share of the default on v2 (`cpu.weight` = shares × 100 /
    /// 1024). Replaces [`cpu_weight`](Self::cpu_weight); for callers that speak in shares (an
    /// OCI config), so that v1 gets exactly their number.
    pub fn cpu_shares(&mut self, shares: u64) -> &mut Self {
        self.limits.cpu_shares = Some(shares);
        self.limits.cpu_weight = None;
        self
    }

    /// The CPUs the sandbox may run on, as a list like `"0-3,6"`.
    pub fn cpuset_cpus(&mut self, cpus: impl Into<String>) -> &mut Self {
        self.limits.cpuset_cpus = Some(cpus.into());
        self
    }

    /// The memory nodes the sandbox may use, as a list like `"0"`.
    pub fn cpuset_mems(&mut self, mems: impl Into<String>) -> &mut Self {
        self.limits.cpuset_mems = Some(mems.into());
        self
    }

    /// The sandbox's block I/O weight, 1 to 10000 (default 100; `blkio.weight` on v1).
    pub fn io_weight(&mut self, weight: u16) -> &mut Self {
        self.limits.io_weight = Some(weight);
        self
    }

    /// Limits the sandbox's I/O on one block device (repeatable, one per device).
    pub fn io_limit(&mut self, limit: IoLimit) -> &mut Self {
        self.limits.io_limits.push(limit);
        self
    }

    /// Where sandbox cgroups are created, relative to the root of each cgroup hierarchy
    /// (default: `stockade` under the embedding process's own cgroup, so it works inside
    /// containers and delegated trees). Each spawn gets its own uniquely named child, removed
    /// when the sandbox ends.
    pub fn cgroup_parent(&mut self, path: impl Into<PathBuf>) -> &mut Self {
        self.limits.cgroup_parent = Some(path.into());
        self
    }

    /// What to do when the host cannot enforce a cgroup limit (default: [`Compat::Enforce`],
    /// an error).
    pub fn resource_compat(&mut self, compat: Compat) -> &mut Self {
        self.limits.compat = compat;
        self
    }

    /// Sets a per-process resource limit of the payload (`soft` ≤ `hard`).
    pub fn rlimit(&mut self, resource: Rlimit, soft: u64, hard: u64) -> &mut Self {
        self.limits.rlimits.push((resource, soft, hard));
        self
    }

    /// Ends the sandbox (the whole tree) when it has run for `limit` of wall-clock time; the
    /// status then reports [`Limit::WallClock`](crate::Limit::WallClock). Enforced while the
    /// embedding program waits for the sandbox ([`Child::wait`](crate::Child::wait),
    /// [`Command::output`], [`Command::status`]).
    pub fn timeout(&mut self, limit: Duration) -> &mut Self {
        self.limits.wall_time = Some(limit);
        self
    }

    /// Ends the sandbox when its processes together have used `limit` of CPU time (measured
    /// on its cgroup while the embedding program waits; each process also gets `RLIMIT_CPU`).
    /// The status reports [`Limit::CpuTime`](crate::Limit::CpuTime).
    pub fn cpu_time_limit(&mut self, limit: Duration) -> &mut Self {
        self.limits.cpu_time = Some(limit);
        self
    }

    /// Validates the settings and freezes them into a [`Sandbox`].
    ///
    /// # Errors
    /// The first invalid setting, naming it: a NUL byte or over-long name
    /// ([`Error::NulByte`], [`Error::InvalidValue`]), a setting whose namespace is missing
    /// ([`Error::NamespaceRequired`]), a malformed or insufficient id map ([`Error::IdMap`]), or
    /// namespaces that need privileges the caller lacks ([`Error::NotPermitted`]).
    pub fn build(&self) -> Result<Sandbox, Error> {
        let Some(spec) = &self.user_name else { return self.build_resolved() };
        // The name is looked up in the sandbox's own files, which are read through openat2.
        crate::probe::require(crate::probe::Check::Openat2)?;
        let identity = self.resolve_user(spec)?;
        let mut resolved = self.clone();
        resolved.user_name = None;
        resolved.user = Some((identity.uid, identity.gid));
        resolved.home = identity.home;
        if resolved.groups.is_none() {
            resolved.groups = Some(identity.groups);
        }
        resolved.build_resolved()
    }

    /// The Landlock rules of [`Landlock::from_mounts`]: one per mount point, with the rights its
    /// mount gives.
    fn landlock_mount_rules(&self) -> Vec<(PathBuf, crate::BitFlags<crate::AccessFs>)> {
        use crate::AccessFs;
        use crate::fs::{MountKind, RootKind};
        let read_exec = AccessFs::ReadFile | AccessFs::ReadDir | AccessFs::Execute;
        let all = crate::BitFlags::<AccessFs>::all();
        let rights = |writable: bool| if writable { all } else { read_exec };
        let mut rules = Vec::new();
        let root_writable = match self.root.as_ref().map(|r| &r.0) {
            None => true,
            Some(RootKind::Tmpfs | RootKind::HostReadonly) => false,
            Some(RootKind::Dir { writable, sealed, .. }) => *writable && !*sealed,
            Some(RootKind::Overlay { .. }) => true,
        };
        rules.push((PathBuf::from("/"), rights(root_writable)));
        // The default /proc (with a pid namespace) and /dev that come with a root; a mount of
        // the caller's at either adds its own rule below.
        let claimed = |path: &str| self.mounts.iter().any(|m| m.target == std::path::Path::new(path));
        let defaults = !self.no_default_mounts;
        let pid =
            self.joined.iter().fold(self.namespaces, |all, (kind, _)| all | *kind).contains(Namespaces::PID);
        if defaults && self.root.is_some() && pid && !claimed("/proc") {
            rules.push((PathBuf::from("/proc"), all));
        }
        if defaults && self.root.is_some() && !claimed("/dev") {
            rules.push((PathBuf::from("/dev"), all));
        }
        for m in &self.mounts {
            let writable = match &m.kind {
                MountKind::Bind { .. } | MountKind::Tmpfs { .. } | MountKind::Mqueue => !m.readonly,
                MountKind::Proc | MountKind::Dev | MountKind::Devpts { .. } => true,
                // A node: the rule of the mount it lies in covers it.
                MountKind::Device { .. } => continue,
                MountKind::Sysfs => false,
                MountKind::Cgroup => !m.readonly,
                MountKind::Overlay { upper, .. } => upper.is_some() && !m.readonly,
                // Files, directories and links live in the mount above them; masks and
                // read-only remounts only take away.
                MountKind::File { .. } | MountKind::Dir { .. } | MountKind::Symlink { .. } => continue,
                MountKind::Mask | MountKind::ReadOnly => continue,
            };
            rules.push((m.target.clone(), rights(writable)));
        }
        rules
    }

    /// Finds the user `spec` in the sandbox's own `/etc/passwd` and `/etc/group`.
    pub(crate) fn resolve_user(&self, spec: &str) -> Result<crate::identity::Identity, Error> {
        use crate::fs::{MountKind, RootKind};
        use crate::identity::Db;
        use crate::identity::LookupFailure;
        let path = std::path::Path::new;
        let root_layers = match self.root.as_ref().map(|r| &r.0) {
            None | Some(RootKind::HostReadonly) => vec![PathBuf::from("/")],
            Some(RootKind::Tmpfs) => Vec::new(),
            Some(RootKind::Dir { path, .. }) => vec![path.clone()],
            Some(RootKind::Overlay { lowers, upper }) => {
                let mut layers = lowers.clone();
                layers.extend(upper.iter().map(|(upper, _)| upper.clone()));
                layers
            }
        };
        // Each database is what the last mount covering it puts there (read-only remounts and
        // directories over an existing one keep what is there), else the root's.
        let db = |name: &str| {
            let file = PathBuf::from("/etc").join(name);
            let covers = |m: &&Mount| {
                (m.target == path("/etc") || m.target == file)
                    && !matches!(m.kind, MountKind::ReadOnly | MountKind::Dir { .. })
            };
            match self.mounts.iter().rev().find(covers) {
                None if root_layers.is_empty() => Db::Empty,
                None => Db::Layers(root_layers.clone(), format!("etc/{name}")),
                Some(Mount { target, kind: MountKind::Bind { source, .. }, .. })
                    if target == path("/etc") =>
                {
                    Db::Layers(vec![source.clone()], name.to_owned())
                }
                Some(Mount { kind: MountKind::Bind { source, .. }, .. }) => Db::File(source.clone()),
                Some(Mount { kind: MountKind::File { contents, .. }, .. }) => Db::Text(contents.clone()),
                Some(_) => Db::Empty,
            }
        };
        let (passwd, group) = (db("passwd"), db("group"));
        let no_passwd = matches!(passwd, Db::Empty);
        crate::identity::resolve_in(&passwd, &group, spec).map_err(|e| match e {
            LookupFailure::Io { op, path, errno } => {
                Error::PathAccess { what: op, path, source: std::io::Error::from(errno) }
            }
            LookupFailure::Limit { what, limit } => {
                Error::invalid("user", spec, format!("more than {limit} {what}"))
            }
            LookupFailure::User { reason } if no_passwd => Error::invalid(
                "user",
                spec,
                format!(
                    "{reason}: the sandbox has none (bind a directory at /etc, give /etc/passwd with Mount::file, or give numeric ids)"
                ),
            ),
            LookupFailure::User { reason } => Error::invalid("user", spec, reason),
        })
    }

    fn build_resolved(&self) -> Result<Sandbox, Error> {
        let joined = self.joined_kinds()?;
        // `ns`: the namespaces created; `entered`: every namespace the sandbox has of its own,
        // created or joined.
        let ns = self.namespaces - joined;
        let entered = ns | joined;
        if joined.contains(Namespaces::CGROUP)
            && self.mounts.iter().any(|m| matches!(m.kind, crate::fs::MountKind::Cgroup))
        {
            return Err(Error::Unsupported {
                feature: "a cgroup mount in a joined cgroup namespace".into(),
                reason: "it would show the joined namespace's whole tree, not the sandbox's own groups"
                    .into(),
                hint: "create the cgroup namespace new (Namespaces::CGROUP) for a cgroup mount".into(),
            });
        }
        let needs = |what: &'static str, ns_flag: Namespaces, name: &'static str| {
            if ns.contains(ns_flag) { Ok(()) } else { Err(Error::NamespaceRequired { what, needs: name }) }
        };

        let hostname = self.hostname.as_deref().map(|n| uts_name("hostname", n)).transpose()?;
        let domainname = self.domainname.as_deref().map(|n| uts_name("domain name", n)).transpose()?;
        // In a joined uts namespace too, as runc sets it (a pod's containers share the pod's).
        if hostname.is_some() && !entered.contains(Namespaces::UTS) {
            needs("hostname", Namespaces::UTS, "uts")?;
        }
        if domainname.is_some() && !entered.contains(Namespaces::UTS) {
            needs("domain name", Namespaces::UTS, "uts")?;
        }
        let sysctls = self
            .sysctls
            .iter()
            .map(|(key, value)| sysctl_entry(key, value, entered))
            .collect::<Result<Vec<_>, _>>()?;
        let uts = (self.hostname.is_some() || self.domainname.is_some()).then_some(Namespaces::UTS);
        let configured_kinds =
            sysctls.iter().map(|(_, _, kind)| *kind).chain(uts).fold(Namespaces::empty(), |a, k| a | k);
        let sysctls: Vec<_> = sysctls.into_iter().map(|(path, value, _)| (path, value)).collect();
        if let Some(offsets) = self.clock_offsets {
            needs("clock offsets", Namespaces::TIME, "time")?;
            for (clock, d) in [("monotonic", offsets.monotonic), ("boottime", offsets.boottime)] {
                if d.as_secs() > MAX_CLOCK_OFFSET_SECS {
                    return Err(Error::invalid(
                        "clock offset",
                        format!("{clock} {d:?}"),
                        format!("the kernel accepts at most {MAX_CLOCK_OFFSET_SECS} s"),
                    ));
                }
            }
        }

        if entered.contains(Namespaces::PID) && !ns.contains(Namespaces::MOUNT) {
            // Without its own mount namespace the payload would see the host's /proc, and
            // with it every host process: the pid namespace would hide nothing.
            return Err(Error::NamespaceRequired {
                what: "a pid namespace (for its own /proc)",
                needs: "mount",
            });
        }
        let ids = self.user.iter().flat_map(|&(u, g)| [("uid", u), ("gid", g)]);
        for (what, id) in ids.chain(self.groups.iter().flatten().map(|&g| ("group", g))) {
            if id == u32::MAX {
                return Err(Error::invalid(
                    what,
                    id,
                    "is the invalid id (-1), which the kernel reads as \"unchanged\"",
                ));
            }
        }

        let privileged =
            caps::has_cap(None, caps::CapSet::Effective, caps::Capability::CAP_SYS_ADMIN).unwrap_or(false);
        if !ns.contains(Namespaces::USER) && !ns.is_empty() && !privileged {
            return Err(Error::NotPermitted {
                what: format!("creating namespaces {:?}", ns.names().collect::<Vec<_>>()),
                reason: "needs CAP_SYS_ADMIN; add Namespaces::USER to create them unprivileged".into(),
            });
        }
        if !joined.is_empty() && !privileged {
            return Err(Error::NotPermitted {
                what: format!("joining namespaces {:?}", joined.names().collect::<Vec<_>>()),
                reason: "setns needs CAP_SYS_ADMIN over the namespace joined".into(),
            });
        }

        self.host_offers(ns)?;
        let user_ns = if ns.contains(Namespaces::USER) {
            Some(self.user_namespace()?)
        } else {
            if self.uid_map.is_some() {
                needs("uid map", Namespaces::USER, "user")?;
            }
            if self.gid_map.is_some() {
                needs("gid map", Namespaces::USER, "user")?;
            }
            None
        };

        // Without a user namespace, changing ids needs the real privileges.
        if user_ns.is_none() {
            let has = |cap| caps::has_cap(None, caps::CapSet::Effective, cap).unwrap_or(false);
            if self.user.is_some()
                && !(has(caps::Capability::CAP_SETUID) && has(caps::Capability::CAP_SETGID))
            {
                let (uid, gid) = self.user.unwrap_or_default();
                return Err(Error::NotPermitted {
                    what: format!("running the payload as uid {uid} gid {gid}"),
                    reason: "needs CAP_SETUID and CAP_SETGID; add Namespaces::USER to pick ids inside a user namespace".into(),
                });
            }
            if self.groups.is_some() && !has(caps::Capability::CAP_SETGID) {
                return Err(Error::NotPermitted {
                    what: "setting supplementary groups".into(),
                    reason: "needs CAP_SETGID; add Namespaces::USER".into(),
                });
            }
        }

        let non_root_user = self.user.is_some_and(|(uid, _)| uid != 0);
        if let Some(adj) = self.oom_score_adj.filter(|a| !(-1000..=1000).contains(a)) {
            return Err(Error::invalid("oom_score_adj", adj, "the kernel takes -1000 to 1000"));
        }
        self.limits.validate()?;
        let cgroup_layout = self.cgroup_layout()?;

        let caps = privileges::plan(self.capabilities.as_ref(), user_ns.is_some(), non_root_user)?;
        let fs = FsConfig::new(
            self.root.clone(),
            self.mounts.clone(),
            crate::fs::plan::Defaults { masks: !self.keep_unmasked, mounts: !self.no_default_mounts },
            self.chroot,
            self.root_size,
            self.legacy_overlay,
            entered,
        )?;

        // In a user namespace whose setgroups is allowed, drop the caller's supplementary groups
        // unless told otherwise: they would show up as "nogroup" and still grant host access.
        // Likewise when root switches the payload to another user: root's groups must not stay.
        let groups = match (&self.groups, &user_ns) {
            (Some(g), _) => Some(g.clone()),
            (None, Some(u)) if !u.deny_setgroups => Some(Vec::new()),
            (None, None) if self.user.is_some() => Some(Vec::new()),
            _ => None,
        };

        let fs = fs.plan(entered, lock_maps(user_ns.as_ref()))?;
        let no_new_privs = !self.allow_new_privs;
        if let Some(mask) = self.umask.filter(|m| *m > 0o777) {
            return Err(Error::invalid("umask", format!("{mask:#o}"), "must be at most 0o777"));
        }
        let seccomp = if self.no_syscall_filter {
            None
        } else {
            let filter = self.syscall_filter.clone().unwrap_or_default();
            Some(filter.compile(caps.map_or(0, |c| c.bounding), !no_new_privs)?)
        };
        let (landlock, unenforced) = match &self.landlock {
            Some(rules) => rules.plan(self.landlock_mount_rules())?,
            None => (None, Vec::new()),
        };
        // Both need no_new_privs, or CAP_SYS_ADMIN in the payload's user namespace until the
        // credentials change (then they are applied before it).
        if (seccomp.is_some() || landlock.is_some()) && !no_new_privs && user_ns.is_none() && !privileged {
            return Err(Error::NotPermitted {
                what: "a syscall filter or Landlock rules with new privileges allowed".into(),
                reason: "installing them needs no_new_privs or CAP_SYS_ADMIN; drop allow_new_privileges, add Namespaces::USER, or no_syscall_filter".into(),
            });
        }
        // With a pid namespace, pid 1 is the init program, run from a sealed memfd each spawn
        // passes to its child.
        let init_program = if entered.contains(Namespaces::PID) {
            Some(
                crate::sys::init_program()
                    .map_err(|e| Error::spawn("memfd_create for the init program stockade-init", e))?,
            )
        } else {
            None
        };
        Ok(Sandbox {
            config: Arc::new(Config {
                init_program,
                null_device: std::sync::OnceLock::new(),
                namespaces: ns,
                joined: self.joined.clone(),
                configured_kinds,
                user: self.user,
                run_defaults: self.run_defaults.clone(),
                _keep_alive: self.keep_alive.clone(),
                groups,
                hostname,
                domainname,
                sysctls,
                time_offsets: ns
                    .contains(Namespaces::TIME)
                    .then(|| self.clock_offsets.unwrap_or_default().to_proc_text()),
                rlimits: self.limits.child_rlimits(),
                become_root: user_ns.as_ref().is_some_and(UserNamespace::maps_caller_elsewhere),
                user_ns,
                fs,
                caps,
                no_new_privs,
                home: self.home.clone(),
                umask: self.umask.unwrap_or(0o022),
                oom_score_adj: self.oom_score_adj,
                detached: self.outlive_parent,
                seccomp,
                landlock,
                unenforced,
                limits: LimitsConfig { outlive_parent: self.outlive_parent, ..self.limits.clone() },
                cgroup_layout,
            }),
        })
    }

    /// The cgroup layout spawns will use: `None` when no cgroup is wanted, or when it cannot be
    /// had and the sandbox is best-effort. A sandbox without limits but with a cgroup namespace
    /// gets groups wherever the caller can make them.
    fn cgroup_layout(&self) -> Result<Option<Layout>, Error> {
        if self.joined.iter().any(|(kind, _)| *kind == Namespaces::PID) && !self.limits.wants_cgroup() {
            // The sandbox's init is not the joined namespace's pid 1: its end does not end the
            // sandbox's other processes, which are ended through the sandbox's cgroup.
            return cgroup::layout().map(Some).ok_or_else(|| Error::Unsupported {
                feature: "joining a pid namespace".into(),
                reason: "the sandbox's processes are ended through a cgroup of its own, and no cgroup \
                         filesystem is mounted at /sys/fs/cgroup"
                    .into(),
                hint: "mount cgroup2 at /sys/fs/cgroup, or create the pid namespace new".into(),
            });
        }
        if !self.limits.wants_cgroup() {
            // A cgroup namespace still wants groups of its own, wherever they can be had.
            return Ok(self.namespaces.contains(Namespaces::CGROUP).then(cgroup::layout).flatten());
        }
        let checked = match cgroup::layout() {
            None => Err(Error::Unsupported {
                feature: "cgroups".into(),
                reason: "no cgroup filesystem is mounted at /sys/fs/cgroup".into(),
                hint: "mount cgroup2 at /sys/fs/cgroup, or Compat::BestEffort to run without the limits"
                    .into(),
            }),
            Some(layout) => cgroup::check_available(layout, &self.limits.controllers())
                .and_then(|()| {
                    let parent = self.limits.cgroup_parent.as_deref();
                    cgroup::check_delegated(layout, &self.limits.controllers(), parent)
                })
                .map(|()| layout),
        };
        match (checked, self.limits.compat) {
            (Ok(layout), _) => Ok(Some(layout)),
            (Err(_), Compat::BestEffort) => Ok(None),
            (Err(e), Compat::Enforce) => Err(e),
        }
    }

    /// Checks that this host offers what the configuration needs (see [`crate::probe`]): a
    /// missing feature is [`Error::Unsupported`] with its reason and what to change, before
    /// any process exists. The host's answers are asked once per process.
    fn host_offers(&self, ns: Namespaces) -> Result<(), Error> {
        use crate::probe::{Check, require};
        for check in crate::probe::namespace_checks(ns) {
            require(check)?;
        }
        if ns.contains(Namespaces::USER) {
            crate::probe::user_namespaces_for_build()?;
        }
        require(Check::Pidfd)?;
        if ns.contains(Namespaces::TIME) && !ns.contains(Namespaces::PID) {
            crate::probe::exec_enters_time_namespace()?;
        }
        if ns.contains(Namespaces::MOUNT) {
            require(Check::MountApi)?;
            require(Check::Openat2)?;
        }
        let overlay_mount =
            self.mounts.iter().any(|m| matches!(m.kind, crate::fs::MountKind::Overlay { .. }));
        if overlay_mount && !self.legacy_overlay {
            require(Check::OverlayLowerdirPlus)?;
        }
        if let Some(root) = &self.root {
            if matches!(root.0, crate::fs::RootKind::Overlay { .. }) && !self.legacy_overlay {
                require(Check::OverlayLowerdirPlus)?;
            }
            if !self.chroot {
                require(Check::PivotRoot)?;
            }
        }
        Ok(())
    }

    /// The resource settings collected so far.
    pub(crate) fn limits(&self) -> &LimitsConfig {
        &self.limits
    }

    /// The kinds of namespace joined by file, checked: one kind per entry, each once, among
    /// those a sandbox can join, and no new user namespace beside them.
    fn joined_kinds(&self) -> Result<Namespaces, Error> {
        let joinable =
            Namespaces::NET | Namespaces::IPC | Namespaces::UTS | Namespaces::CGROUP | Namespaces::PID;
        let mut kinds = Namespaces::empty();
        for (kind, path) in &self.joined {
            let name = kind.names().collect::<Vec<_>>().join("|");
            if kind.bits().count_ones() != 1 {
                return Err(Error::InvalidPath {
                    what: "namespace to join",
                    path: path.clone(),
                    reason: format!(
                        "names {} kinds of namespace ({name}); give one per file",
                        kind.bits().count_ones()
                    ),
                });
            }
            if !joinable.contains(*kind) {
                return Err(Error::Unsupported {
                    feature: format!("joining an existing {name} namespace ({})", path.display()),
                    reason: match *kind {
                        Namespaces::USER => "the sandbox's other namespaces are created by its clone, before a user namespace could be joined",
                        Namespaces::MOUNT => "the sandbox builds its own mount tree in a new mount namespace",
                        _ => "a time namespace applies to the children of the process that joins it, after its offsets are fixed",
                    }
                    .into(),
                    hint: "create this namespace new instead".into(),
                });
            }
            if kinds.contains(*kind) {
                return Err(Error::InvalidPath {
                    what: "namespace to join",
                    path: path.clone(),
                    reason: format!("a {name} namespace is already joined"),
                });
            }
            if !path.is_absolute() {
                return Err(Error::InvalidPath {
                    what: "namespace to join",
                    path: path.clone(),
                    reason: "must be an absolute path".into(),
                });
            }
            kinds |= *kind;
        }
        if !kinds.is_empty() && self.namespaces.contains(Namespaces::USER) {
            return Err(Error::Unsupported {
                feature: format!(
                    "joining namespaces {:?} with a new user namespace",
                    kinds.names().collect::<Vec<_>>()
                ),
                reason:
                    "the new user namespace would hold no privilege over namespaces joined from outside it"
                        .into(),
                hint: "leave out Namespaces::USER, or create those namespaces new".into(),
            });
        }
        Ok(kinds)
    }

    fn user_namespace(&self) -> Result<UserNamespace, Error> {
        let uid_map =
            self.uid_map.clone().unwrap_or_else(|| vec![IdMap::new(0, nix::unistd::geteuid().as_raw(), 1)]);
        let gid_map =
            self.gid_map.clone().unwrap_or_else(|| vec![IdMap::new(0, nix::unistd::getegid().as_raw(), 1)]);
        userns::validate(IdKind::Uid, &uid_map)?;
        userns::validate(IdKind::Gid, &gid_map)?;
        if let Some((uid, gid)) = self.user {
            for (kind, map, id) in [(IdKind::Uid, &uid_map, uid), (IdKind::Gid, &gid_map, gid)] {
                if !userns::maps_inside(map, id) {
                    return Err(Error::IdMap {
                        kind: kind.name(),
                        map: userns::display_map(map),
                        reason: format!("the payload's {} {id} is not mapped", kind.name()),
                    });
                }
            }
        }
        for &g in self.groups.iter().flatten() {
            if !userns::maps_inside(&gid_map, g) {
                return Err(Error::IdMap {
                    kind: "gid",
                    map: userns::display_map(&gid_map),
                    reason: format!("supplementary group {g} is not mapped"),
                });
            }
        }
        let helpers = self.id_map_helpers.as_ref();
        let uid_writer = userns::writer_for(IdKind::Uid, &uid_map, helpers.map(|h| h.0.as_path()));
        let gid_writer = userns::writer_for(IdKind::Gid, &gid_map, helpers.map(|h| h.1.as_path()));
        // An unprivileged direct gid map requires setgroups to be denied first; and in a user
        // namespace that denies it (`unshare -r`, a rootless container), every namespace made
        // inside denies it too.
        let unprivileged = matches!(gid_writer, Writer::Direct)
            && !caps::has_cap(None, caps::CapSet::Effective, caps::Capability::CAP_SETGID).unwrap_or(false);
        let denied_here = std::fs::read("/proc/self/setgroups").is_ok_and(|s| s.trim_ascii() == b"deny");
        let deny_setgroups = unprivileged || denied_here;
        if deny_setgroups && self.groups.is_some() {
            return Err(Error::NotPermitted {
                what: "supplementary groups in a user namespace".into(),
                reason: if denied_here {
                    "this process's user namespace denies setgroups (/proc/self/setgroups), and so does \
                     every namespace made inside it; leave the groups unset"
                        .into()
                } else {
                    "setgroups is denied when an unprivileged caller writes its own gid map; map more gids \
                     (through newgidmap) to use groups"
                        .into()
                },
            });
        }
        Ok(UserNamespace { uid_map, gid_map, uid_writer, gid_writer, deny_setgroups })
    }
}

/// The maps of the nested user namespace that locks the mounts: the identity over the outer
/// namespace's ids.
fn lock_maps(user_ns: Option<&UserNamespace>) -> Option<(Vec<u8>, Vec<u8>)> {
    let identity = |map: &[IdMap]| -> Vec<u8> {
        map.iter()
            .map(|r| format!("{} {} {}\n", r.inside, r.inside, r.count))
            .collect::<String>()
            .into_bytes()
    };
    user_ns.map(|u| (identity(&u.uid_map), identity(&u.gid_map)))
}

fn uts_name(what: &'static str, name: &OsStr) -> Result<Vec<u8>, Error> {
    let bytes = name.as_bytes();
    if bytes.contains(&0) {
        return Err(Error::NulByte { what, value: name.to_owned() });
    }
    if bytes.len() > MAX_UTS_NAME {
        return Err(Error::invalid(what, format!("{name:?}"), format!("longer than {MAX_UTS_NAME} bytes")));
    }
    Ok(bytes.to_vec())
}

/// A validated, immutable sandbox template. Cloning is cheap (a reference count); each
/// [`command`](Sandbox::command) runs in fresh namespaces built from the same settings.
///
/// ```no_run
/// use stockade::{Namespaces, Sandbox};
/// # fn main() -> Result<(), stockade::Error> {
/// let sandbox = Sandbox::builder().namespaces(Namespaces::USER | Namespaces::PID | Namespaces::MOUNT).build()?;
/// let status = sandbox.command("/bin/true").status()?;
/// assert!(status.success());
/// # Ok(()) }
/// ```
#[derive(Clone, Debug)]
pub struct Sandbox {
    pub(crate) config: Arc<Config>,
}

/// Where the payload's ids go on the host in [`Sandbox::untrusted`] when the embedding program
/// is root: ids 0 to 65535 inside are host ids `UNTRUSTED_IDS` to `UNTRUSTED_IDS + 65535`, which
/// no host user or file has, so the payload's root owns nothing on the host.
pub const UNTRUSTED_IDS: u32 = 2_000_000_000;

impl Sandbox {
    /// Starts configuring a sandbox.
    pub fn builder() -> SandboxBuilder {
        SandboxBuilder::default()
    }

    /// Starts from the configuration recommended for code you do not trust; every line can be
    /// changed afterwards on the returned builder:
    ///
    /// - every namespace ([`Namespaces::all`]): the payload sees only its own processes,
    ///   mounts, hostname (`sandbox`), IPC objects, cgroups and clocks, and a network of its own
    ///   holding only `lo`;
    /// - ids of its own: as root, the payload's ids 0–65535 are the unused host ids from
    ///   [`UNTRUSTED_IDS`], so its root is nobody on the host; unprivileged, it is the caller's
    ///   own uid and gid (the only ones the caller can give);
    /// - no capabilities ([`capabilities`](SandboxBuilder::capabilities) `[]`) and
    ///   `no_new_privs`;
    /// - the default syscall filter ([`SyscallFilter::default_profile`]): no new user
    ///   namespaces, mounts, keyrings, `bpf`, `io_uring`, `perf_event_open`, ...;
    /// - Landlock ([`Landlock::from_mounts`]): the payload reaches only what its mounts show,
    ///   read-only where they are, and can neither signal nor reach an abstract unix socket
    ///   outside the sandbox; on a kernel without (all of) Landlock the sandbox runs without
    ///   the missing parts and [`Child::unenforced`](crate::Child::unenforced) names them;
    /// - an empty read-only root ([`Root::tmpfs`]) with the host's system directories read-only
    ///   ([`Mount::host_system`]), a fresh `/proc` with the sensitive paths masked, a minimal
    ///   `/dev`, and a private `/tmp` of 64 MiB;
    /// - limits on the whole tree: 512 MiB of memory, 128 processes, 60 s of wall-clock time
    ///   (a typed error when the host cannot enforce them: at `build()` for a controller the
    ///   host lacks, at spawn, [`Error::Cgroup`], where the caller may not create groups; see
    ///   [`resource_compat`](SandboxBuilder::resource_compat) for hosts without cgroup
    ///   delegation).
    ///
    /// Every sandbox also gets its own session keyring, its own cgroups in every hierarchy, and
    /// an init that shows nothing of the embedding program.
    ///
    /// ```no_run
    /// use stockade::Sandbox;
    /// # fn main() -> Result<(), stockade::Error> {
    /// let sandbox = Sandbox::untrusted().build()?;
    /// let out = sandbox.command("/bin/sh").args(["-c", "id -u; ls /"]).output()?;
    /// assert!(out.status.success());
    /// # Ok(()) }
    /// ```
    pub fn untrusted() -> SandboxBuilder {
        let mut b = SandboxBuilder::default();
        b.namespaces(Namespaces::all())
            .hostname("sandbox")
            .root(Root::tmpfs())
            .mounts(crate::Mount::host_system())
            .mount(crate::Mount::tmpfs("/tmp").size(64 << 20))
            .capabilities([])
            .landlock(
                Landlock::from_mounts()
                    .scope(crate::Scope::AbstractUnixSocket | crate::Scope::Signal)
                    .compat(Compat::BestEffort),
            )
            .memory_limit(512 << 20)
            .pids_limit(128)
            .timeout(Duration::from_secs(60));
        if nix::unistd::geteuid().is_root() {
            b.uid_map([IdMap::new(0, UNTRUSTED_IDS, 65536)]).gid_map([IdMap::new(0, UNTRUSTED_IDS, 65536)]);
        }
        b
    }

    /// A command that runs `program` in this sandbox. A program without a `/` is looked up in
    /// the payload's `PATH` (or a default one), inside the sandbox.
    pub fn command(&self, program: impl AsRef<OsStr>) -> Command {
        Command::new(self.clone(), program.as_ref())
    }

    /// Starts a [`Session`](crate::Session): this sandbox, running, in which commands run one
    /// after another or side by side, sharing its filesystem state (like `docker exec`); each
    /// command with its own limits and accounting. Needs [`Namespaces::MOUNT`] and
    /// [`Namespaces::PID`].
    ///
    /// # Errors
    /// As [`Command::spawn`]; [`Error::InvalidValue`] without a mount or pid namespace;
    /// [`Error::Unsupported`] when the syscall filter refuses a call the session's server
    /// makes (it runs under the payload's filter, see [`Session`](crate::Session)).
    pub fn start(&self) -> Result<crate::Session, Error> {
        crate::session::Session::start(self)
    }

    /// A command running the image's `Entrypoint` followed by its `Cmd` (see
    /// `SandboxBuilder::image`, with the `image` feature); without an image, a command with an empty program, which
    /// fails to spawn.
    pub fn image_command(&self) -> Command {
        self.image_command_with(Vec::new(), false)
    }

    /// Like [`image_command`](Self::image_command), but `cmd` replaces the image's `Cmd` (as
    /// arguments to its `Entrypoint`, or as the whole command line when it has none), like
    /// `docker run IMAGE CMD...`.
    pub fn image_command_args<I, S>(&self, cmd: I) -> Command
    where
        I: IntoIterator<Item = S>,
        S: AsRef<OsStr>,
    {
        self.image_command_with(cmd.into_iter().map(|s| s.as_ref().to_owned()).collect(), true)
    }

    fn image_command_with(&self, cmd: Vec<OsString>, replace: bool) -> Command {
        let mut argv: Vec<OsString> = Vec::new();
        if let Some(d) = &self.config.run_defaults {
            argv.extend(d.entrypoint.iter().cloned());
            if replace {
                argv.extend(cmd);
            } else {
                argv.extend(d.cmd.iter().cloned());
            }
        } else if replace {
            argv.extend(cmd);
        }
        let mut it = argv.into_iter();
        let mut command = self.command(it.next().unwrap_or_default());
        command.args(it);
        command
    }

    /// The namespaces each command of this sandbox gets, created or joined.
    pub fn namespaces(&self) -> Namespaces {
        self.config.entered()
    }
}

/// Validated settings shared by all commands of a sandbox.
#[derive(Debug)]
pub(crate) struct Config {
    /// The namespaces each spawn creates.
    pub(crate) namespaces: Namespaces,
    /// The namespaces each spawn joins, by file (see `SandboxBuilder::join_namespace`).
    pub(crate) joined: Vec<(Namespaces, PathBuf)>,
    /// The kinds of namespace the sandbox sets parameters of (sysctls, hostname).
    pub(crate) configured_kinds: Namespaces,
    /// The init program (a sealed memfd), with a pid namespace.
    pub(crate) init_program: Option<std::os::fd::OwnedFd>,
    /// `/dev/null` on a read-only mount of its own, through which payloads'
    /// [`Stdio::null`](crate::Stdio::null) is opened (see `sys::null_device`): made by the
    /// first spawn that needs it (not at build: a sandbox built for one spawn would pay for it
    /// twice), when this process may make one; otherwise each spawn pins its own, or decides it
    /// need not.
    pub(crate) null_device: std::sync::OnceLock<Option<std::os::fd::OwnedFd>>,
    /// The image's command line, environment and working directory, if it runs one.
    pub(crate) run_defaults: Option<RunDefaults>,
    /// Kept alive with the sandbox (see `SandboxBuilder::keep_alive`).
    pub(crate) _keep_alive: Option<Arc<dyn std::any::Any + Send + Sync>>,
    pub(crate) user: Option<(u32, u32)>,
    pub(crate) groups: Option<Vec<u32>>,
    pub(crate) hostname: Option<Vec<u8>>,
    /// `(/proc/sys path, value)` of each kernel parameter to set, checked to be namespaced.
    pub(crate) sysctls: Vec<(std::ffi::CString, Vec<u8>)>,
    pub(crate) domainname: Option<Vec<u8>>,
    /// With a time namespace: the text for its offsets file (zero offsets unless set).
    pub(crate) time_offsets: Option<Vec<u8>>,
    /// `(resource, soft, hard)` the payload gets, the CPU-time backstop included.
    pub(crate) rlimits: Vec<(libc::__rlimit_resource_t, u64, u64)>,
    pub(crate) user_ns: Option<UserNamespace>,
    /// The child switches to root of its user namespace after the maps are written (see
    /// [`UserNamespace::maps_caller_elsewhere`]).
    pub(crate) become_root: bool,
    /// The filesystem operations of every spawn, prepared once.
    pub(crate) fs: FsPlan,
    pub(crate) caps: Option<CapPlan>,
    pub(crate) no_new_privs: bool,
    /// `HOME` for commands that set none (the user's home from `/etc/passwd`, else `/`).
    pub(crate) home: Option<PathBuf>,
    pub(crate) umask: u32,
    /// Written to the child's `oom_score_adj` before it runs anything.
    pub(crate) oom_score_adj: Option<i32>,
    /// Sandboxes outlive the embedding process (`SandboxBuilder::outlive_parent`).
    pub(crate) detached: bool,
    /// The compiled syscall filter (`None`: none, explicitly).
    pub(crate) seccomp: Option<Vec<crate::seccomp::SockFilter>>,
    pub(crate) landlock: Option<crate::access::LandlockPlan>,
    /// What this sandbox asked for and the host cannot enforce (best effort), reported by
    /// every child.
    pub(crate) unenforced: Vec<&'static str>,
    pub(crate) limits: LimitsConfig,
    /// Where each spawn's cgroup goes (`None`: no cgroup).
    pub(crate) cgroup_layout: Option<Layout>,
}

/// What an image contributes to each command: its environment, command line and directory.
#[derive(Clone, Debug, Default)]
pub(crate) struct RunDefaults {
    pub(crate) env: Vec<(OsString, OsString)>,
    pub(crate) entrypoint: Vec<OsString>,
    pub(crate) cmd: Vec<OsString>,
    pub(crate) cwd: Option<PathBuf>,
}

/// A validated user namespace setup.
#[derive(Debug)]
pub(crate) struct UserNamespace {
    pub(crate) uid_map: Vec<IdMap>,
    pub(crate) gid_map: Vec<IdMap>,
    pub(crate) uid_writer: Writer,
    pub(crate) gid_writer: Writer,
    pub(crate) deny_setgroups: bool,
}

impl UserNamespace {
    /// Whether the maps make some id other than the caller's own root (e.g. root mapped to an
    /// unprivileged range): then the child, which starts with the caller's ids, must switch to
    /// root of the namespace before it creates anything (files it made as an unmapped id would
    /// fail with EOVERFLOW).
    /// Maps without a root inside leave the child as it is.
    fn maps_caller_elsewhere(&self) -> bool {
        let root_is = |map: &[IdMap], own: u32| map.iter().any(|r| r.inside == 0 && r.outside == own);
        let has_root = userns::maps_inside(&self.uid_map, 0) && userns::maps_inside(&self.gid_map, 0);
        has_root
            && !(root_is(&self.uid_map, nix::unistd::geteuid().as_raw())
                && root_is(&self.gid_map, nix::unistd::getegid().as_raw()))
    }
}

impl Config {
    /// A pid namespace gets an init as pid 1.
    /// Whether the sandbox's processes change ids before exec (root of an id range, or a
    /// payload user): they then need memory of their own (see `sys::child`).
    pub(crate) fn changes_ids(&self) -> bool {
        self.become_root || self.user.is_some()
    }

    pub(crate) fn use_init(&self) -> bool {
        self.entered().contains(Namespaces::PID)
    }

    /// Every namespace the sandbox's processes are in of their own, created or joined.
    pub(crate) fn entered(&self) -> Namespaces {
        self.joined.iter().fold(self.namespaces, |all, (kind, _)| all | *kind)
    }

    pub(crate) fn loopback(&self) -> bool {
        self.namespaces.contains(Namespaces::NET)
    }
}

/// Checks a kernel parameter (`SandboxBuilder::sysctl`): it must belong to a namespace of the
/// sandbox's own. Returns its `/proc/sys` path and value.
/// A kernel parameter's `/proc/sys` path, its value, and the namespace it belongs to.
fn sysctl_entry(
    key: &str,
    value: &str,
    ns: Namespaces,
) -> Result<(std::ffi::CString, Vec<u8>, Namespaces), Error> {
    // With '/' separators a '.' is part of a name (an interface `eth0.100`), as sysctl(8) reads.
    let parts: Vec<&str> =
        if key.contains('/') { key.split('/').collect() } else { key.split('.').collect() };
    let dotted = parts.join(".");
    let well_formed = !parts.is_empty()
        && parts
            .iter()
            .all(|p| !p.is_empty() && p.bytes().all(|b| b.is_ascii_alphanumeric() || b"_-+:@".contains(&b)));
    if !well_formed {
        return Err(Error::invalid(
            "sysctl",
            key,
            "not a kernel parameter name (words joined by '.' or '/')",
        ));
    }
    const IPC: &[&str] = &[
        "kernel.msgmax",
        "kernel.msgmnb",
        "kernel.msgmni",
        "kernel.sem",
        "kernel.shmall",
        "kernel.shmmax",
        "kernel.shmmni",
        "kernel.shm_rmid_forced",
    ];
    let (needed, name) = if dotted.starts_with("net.") {
        (Namespaces::NET, "network")
    } else if IPC.contains(&dotted.as_str()) || dotted.starts_with("fs.mqueue.") {
        (Namespaces::IPC, "ipc")
    } else if dotted == "kernel.hostname" || dotted == "kernel.domainname" {
        (Namespaces::UTS, "uts")
    } else {
        return Err(Error::invalid(
            "sysctl",
            key,
            "not a parameter of a namespace the sandbox can have its own of: setting it would change the host",
        ));
    };
    if !ns.contains(needed) {
        return Err(Error::invalid(
            "sysctl",
            key,
            format!("belongs to the {name} namespace, which the sandbox does not have"),
        ));
    }
    if value.contains('\0') {
        return Err(Error::invalid("sysctl value", value, "contains a NUL byte"));
    }
    let path = format!("/proc/sys/{}", parts.join("/"));
    let path =
        std::ffi::CString::new(path).map_err(|_| Error::invalid("sysctl", key, "contains a NUL byte"))?;
    Ok((path, value.as_bytes().to_vec(), needed))
}
