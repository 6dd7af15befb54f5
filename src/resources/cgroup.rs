//! One cgroup per spawned sandbox, in the embedding process: detect the host's layout, create
//! the group under the chosen parent, write the limits into its files, let the child join, read
//! usage, and on the way out kill whatever is left and remove the directories.
//!
//! Layouts, detected like runc (statfs of `/sys/fs/cgroup`):
//! - unified (pure v2): one directory; the child joins at clone time with `CLONE_INTO_CGROUP`.
//! - hybrid (v1 controllers plus a v2 mount at `/sys/fs/cgroup/unified`, as on this project's
//!   machines) and legacy (pure v1): one directory per hierarchy, each under the caller's own
//!   cgroup *in that hierarchy* (they differ); the child writes `0` into each group's `tasks`
//!   itself, first thing (a process moving itself skips the global lock, and the RCU grace
//!   period, a migration by another process waits for); the parent writes the child's pid into
//!   `cgroup.procs` instead where a group has no `tasks` (a hybrid layout's unified group) or
//!   a hook must see the child in its groups.
//!
//! With a cgroup namespace, each sandbox group holds the limits and, inside it, a leaf
//! (`payload`) where the processes live: the namespace, entered by the child only once it is in
//! all its leaves, is rooted there, so a payload that mounts cgroupfs itself can neither read
//! nor raise its limits, nor reach the embedding program's or the host's groups. Without one,
//! the processes live in the group itself. Either way the directory they live in and its files
//! belong to an id no namespace maps. With a cgroup namespace a sandbox gets a group in *every*
//! hierarchy (named and
//! unified ones too), not only in those carrying limits: otherwise the payload's namespace root
//! there would be the embedding program's group. Group names are a random per-process prefix and
//! a counter; a reaper process ([`super::reaper`]) removes them if this process dies.

use std::fs;
use std::os::fd::OwnedFd;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use super::LimitsConfig;
use crate::Error;

const ROOT: &str = "/sys/fs/cgroup";

/// The host's cgroup layout.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Layout {
    Unified,
    Hybrid,
    Legacy,
}

/// Detects the layout; `None` when no cgroup filesystem is mounted at `/sys/fs/cgroup`.
pub(crate) fn layout() -> Option<Layout> {
    use nix::sys::statfs::{CGROUP2_SUPER_MAGIC, TMPFS_MAGIC, statfs};
    let root = statfs(ROOT).ok()?;
    if root.filesystem_type() == CGROUP2_SUPER_MAGIC {
        return Some(Layout::Unified);
    }
    if root.filesystem_type() != TMPFS_MAGIC {
        return None;
    }
    match statfs("/sys/fs/cgroup/unified") {
        Ok(u) if u.filesystem_type() == CGROUP2_SUPER_MAGIC => Some(Layout::Hybrid),
        _ => Some(Layout::Legacy),
    }
}

/// The v1 controllers behind a v2 controller name (v1 needs cpuacct for CPU usage and the
/// freezer to kill a tree reliably).
fn v1_names(controller: &str) -> &'static [&'static str] {
    match controller {
        "memory" => &["memory"],
        "pids" => &["pids"],
        "cpu" => &["cpu"],
        "cpuset" => &["cpuset"],
        "io" => &["blkio"],
        _ => &[],
    }
}

/// The caller's own cgroup path in `controller` (v1; "" for the unified hierarchy), from
/// /proc/self/cgroup (read once per process: the embedding program is not expected to move).
fn own_path(controller: &str) -> String {
    static TEXT: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    let text = TEXT.get_or_init(|| fs::read_to_string("/proc/self/cgroup").unwrap_or_default());
    for line in text.lines() {
        let mut f = line.splitn(3, ':');
        let (_, names, path) = (f.next(), f.next().unwrap_or_default(), f.next().unwrap_or_default());
        let hit =
            if controller.is_empty() { names.is_empty() } else { names.split(',').any(|n| n == controller) };
        if hit {
            return path.trim_start_matches('/').to_owned();
        }
    }
    String::new()
}

/// Which controllers this host can give a sandbox; names the first missing one.
pub(crate) fn check_available(layout: Layout, wanted: &[&'static str]) -> Result<(), Error> {
    let missing = |controller: &'static str, reason: String| {
        Err(Error::Unsupported {
            feature: format!("the {controller} cgroup controller"),
            reason,
            hint: "a host with that controller mounted and enabled, or Compat::BestEffort to run \
                   without the limit (Child::unenforced names it)"
                .into(),
        })
    };
    match layout {
        Layout::Unified => {
            let have = fs::read_to_string(format!("{ROOT}/cgroup.controllers")).unwrap_or_default();
            for c in wanted {
                if !have.split_whitespace().any(|h| h == *c) {
                    return missing(c, format!("not in {ROOT}/cgroup.controllers ({})", have.trim()));
                }
            }
        }
        Layout::Hybrid | Layout::Legacy => {
            for c in wanted {
                for name in v1_names(c) {
                    if !mounted_hierarchies().iter().any(|h| h.controllers.iter().any(|n| n == name)) {
                        return missing(c, format!("no v1 {name} hierarchy is mounted"));
                    }
                }
            }
        }
    }
    Ok(())
}

static COUNTER: AtomicU64 = AtomicU64::new(0);

/// A name no other sandbox uses: the embedding process's random prefix (which the reaper knows
/// its groups by) and a counter. Nothing in it says anything of the host.
fn unique_name() -> String {
    format!("{}-{}", super::reaper::prefix(), COUNTER.fetch_add(1, Ordering::Relaxed))
}

/// The name of the group inside a sandbox's own group that its processes join, and that a
/// cgroup namespace makes their root: the limits sit one level up, out of their sight and reach.
const LEAF: &str = "payload";

/// `parent/name`, or `name` under the hierarchy's root.
fn join(parent: &str, name: &str) -> String {
    if parent.is_empty() { name.to_owned() } else { format!("{parent}/{name}") }
}

/// Creates `dir` (its parent must exist); the name is new, so an existing directory is an error
/// too: it belongs to someone else.
fn make_leaf(dir: &Path, op: &str) -> Result<(), Error> {
    fs::create_dir(dir).map_err(|source| Error::Cgroup { op: op.to_owned(), path: dir.to_owned(), source })
}

/// One mounted cgroup hierarchy: a v1 hierarchy with its controllers (or a named one such as
/// `name=systemd`), or the unified (v2) hierarchy.
#[derive(Debug)]
struct Hierarchy {
    mount: PathBuf,
    /// v1 controllers of the hierarchy (empty for a named or the unified hierarchy).
    controllers: Vec<String>,
    /// `name=...` of a named v1 hierarchy.
    name: Option<String>,
    unified: bool,
}

impl Hierarchy {
    /// How the hierarchy is called in errors and in `/proc/self/cgroup`.
    fn label(&self) -> String {
        match (&self.name, self.unified) {
            (_, true) => "unified".into(),
            (Some(n), _) => n.clone(),
            (None, _) => self.controllers.join(","),
        }
    }

    /// The caller's own cgroup in this hierarchy, from /proc/self/cgroup.
    fn own_path(&self) -> String {
        let key = if self.unified {
            String::new()
        } else {
            self.name.clone().or_else(|| self.controllers.first().cloned()).unwrap_or_default()
        };
        own_path(&key)
    }
}

/// Whether this process may change one of its own groups (write in its directory): a payload
/// whose cgroup namespace is rooted there (no group of the sandbox's own), as its root mapped
/// to this process's id, could too.
pub(crate) fn own_groups_writable() -> bool {
    mounted_hierarchies().iter().any(|h| {
        let dir = h.mount.join(h.own_path().trim_start_matches('/'));
        nix::unistd::access(&dir, nix::unistd::AccessFlags::W_OK).is_ok()
    })
}

/// Every cgroup hierarchy mounted here (read once per process), from /proc/self/mountinfo.
fn mounted_hierarchies() -> &'static [Hierarchy] {
    static ALL: std::sync::OnceLock<Vec<Hierarchy>> = std::sync::OnceLock::new();
    ALL.get_or_init(|| {
        let info = fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
        let mut out: Vec<Hierarchy> = Vec::new();
        for line in info.lines() {
            let Some((left, right)) = line.split_once(" - ") else { continue };
            let mut r = right.split(' ');
            let fstype = r.next().unwrap_or_default();
            let super_opts = r.nth(1).unwrap_or_default();
            let Some(point) = left.split(' ').nth(4) else { continue };
            let h = match fstype {
                "cgroup2" => {
                    Hierarchy { mount: point.into(), controllers: Vec::new(), name: None, unified: true }
                }
                "cgroup" => {
                    let mut h = Hierarchy {
                        mount: point.into(),
                        controllers: Vec::new(),
                        name: None,
                        unified: false,
                    };
                    for opt in super_opts.split(',') {
                        if let Some(n) = opt.strip_prefix("name=") {
                            h.name = Some(format!("name={n}"));
                        } else if V1_CONTROLLERS.contains(&opt) {
                            h.controllers.push(opt.to_owned());
                        }
                    }
                    h
                }
                _ => continue,
            };
            // The same hierarchy mounted twice (bind mounts of it): keep the first.
            if !out.iter().any(|o| o.label() == h.label()) {
                out.push(h);
            }
        }
        out
    })
}

/// One entry of the host's `/sys/fs/cgroup` as a payload's cgroup mount repeats it.
#[derive(Clone, Debug)]
pub(crate) enum ViewEntry {
    /// A hierarchy mounted at `/sys/fs/cgroup/<dir>` (`dir` empty: at `/sys/fs/cgroup` itself,
    /// the unified layout), mounted again with `options` (v1: its controllers or its name).
    Hierarchy { dir: String, unified: bool, options: Vec<(String, Option<String>)> },
    /// A symlink `/sys/fs/cgroup/<name>` -> `target` (`cpu` -> `cpu,cpuacct`).
    Link { name: String, target: String },
}

/// What a payload's cgroup mount repeats of the host's `/sys/fs/cgroup`: its hierarchies
/// mounted directly there and its links; `None` when no cgroup filesystem is mounted there.
pub(crate) fn view() -> Option<Vec<ViewEntry>> {
    if layout()? == Layout::Unified {
        return Some(vec![ViewEntry::Hierarchy { dir: String::new(), unified: true, options: Vec::new() }]);
    }
    let mut out = Vec::new();
    for h in mounted_hierarchies() {
        let Some(dir) = h.mount.strip_prefix(ROOT).ok().and_then(|d| d.to_str()) else { continue };
        if dir.is_empty() || dir.contains('/') {
            continue;
        }
        let mut options: Vec<(String, Option<String>)> =
            h.controllers.iter().map(|c| (c.clone(), None)).collect();
        if let Some(name) = h.name.as_deref().and_then(|n| n.strip_prefix("name=")) {
            if h.controllers.is_empty() {
                options.push(("none".into(), None));
            }
            options.push(("name".into(), Some(name.to_owned())));
        }
        out.push(ViewEntry::Hierarchy { dir: dir.to_owned(), unified: h.unified, options });
    }
    for entry in fs::read_dir(ROOT).ok()?.flatten() {
        let (Ok(name), Ok(target)) = (entry.file_name().into_string(), fs::read_link(entry.path())) else {
            continue;
        };
        if let Some(target) = target.to_str().filter(|t| !t.contains('/')) {
            out.push(ViewEntry::Link { name, target: target.to_owned() });
        }
    }
    Some(out)
}

/// The controllers a v1 hierarchy can carry (mount options of a cgroup mount that name one).
const V1_CONTROLLERS: &[&str] = &[
    "cpu",
    "cpuacct",
    "cpuset",
    "memory",
    "devices",
    "freezer",
    "net_cls",
    "blkio",
    "perf_event",
    "net_prio",
    "hugetlb",
    "pids",
    "rdma",
    "misc",
];

/// The owner (user and group) given to a leaf and the files that move, freeze or nest
/// processes: an id no user namespace maps, so that even a payload whose root is the caller
/// (and so the leaf's creator) can read its leaf but make no group in it, freeze nothing and
/// move nothing — the groups it could otherwise make would outlive the sandbox, and a frozen
/// one would keep it alive.
const SEALED_ID: u32 = u32::MAX - 1;

/// The mode a sealed leaf directory gets, whatever the umask it was made under: searchable
/// by all (the caller, now a stranger to it, still reads usage and kills through it),
/// writable by its sealed owner alone.
const SEALED_DIR_MODE: u32 = 0o755;

/// The files that move processes into a group. A spawn whose seal runs on a thread beside the
/// clone may still need them (v2's `CLONE_INTO_CGROUP` checks the caller may write the leaf's
/// `cgroup.procs`; the parent's attach writes it, through the leaf directory, which a umask may
/// have left searchable by its owner only): they and the directory are sealed last.
const MOVE_FILES: [&str; 2] = ["cgroup.procs", "tasks"];

/// Gives every file of `leaf` but the [`MOVE_FILES`] to [`SEALED_ID`] (the directory and those
/// files are [`seal_move_files`]' part); false if that could not be done (no `CAP_CHOWN`: a
/// caller with delegated cgroups), and the leaf stays the caller's, and so its payload's
/// (reported as unconfined).
fn seal_files(leaf: &Path) -> bool {
    let (Ok(dir), Ok(entries)) = (open_leaf(leaf), fs::read_dir(leaf)) else { return false };
    let mut sealed = true;
    for entry in entries {
        // A listing that fails part-way leaves files unsealed: not sealed.
        let Ok(entry) = entry else { return false };
        let name = entry.file_name();
        if !MOVE_FILES.iter().any(|s| name == *s) {
            sealed &= seal_file(&dir, &name).is_ok();
        }
    }
    sealed
}

/// A descriptor of the leaf directory: through it each file costs a one-component lookup.
fn open_leaf(leaf: &Path) -> nix::Result<OwnedFd> {
    use nix::fcntl::OFlag;
    nix::fcntl::open(
        leaf,
        OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC,
        nix::sys::stat::Mode::empty(),
    )
}

/// Gives file `name` of the leaf `dir` to [`SEALED_ID`].
fn seal_file(dir: &OwnedFd, name: &std::ffi::OsStr) -> nix::Result<()> {
    let id = sealed_ids();
    nix::unistd::fchownat(dir, name, id.0, id.1, nix::fcntl::AtFlags::AT_SYMLINK_NOFOLLOW)
}

/// [`SEALED_ID`] as the user and group `chown` takes.
fn sealed_ids() -> (Option<nix::unistd::Uid>, Option<nix::unistd::Gid>) {
    (Some(nix::unistd::Uid::from_raw(SEALED_ID)), Some(nix::unistd::Gid::from_raw(SEALED_ID)))
}

/// Seals every leaf of `leaves` with `seal` (each even after one failed); whether all were.
fn seal_all<'a>(leaves: impl Iterator<Item = &'a Path>, seal: fn(&Path) -> bool) -> bool {
    let mut sealed = true;
    for leaf in leaves {
        sealed &= seal(leaf);
    }
    sealed
}

/// Gives `leaf`'s [`MOVE_FILES`] (those it has), then the leaf directory (with
/// [`SEALED_DIR_MODE`]), to [`SEALED_ID`]; whether that was done.
fn seal_move_files(leaf: &Path) -> bool {
    let Ok(dir) = open_leaf(leaf) else { return false };
    let files = MOVE_FILES.iter().fold(true, |sealed, name| match seal_file(&dir, name.as_ref()) {
        Ok(()) | Err(nix::errno::Errno::ENOENT) => sealed,
        Err(_) => false,
    });
    // The mode first (it takes owning the directory), and only where the seal can be had: a
    // caller without CAP_CHOWN keeps its leaf as its umask made it. The owner in any case.
    let mode = nix::sys::stat::Mode::from_bits_truncate(SEALED_DIR_MODE);
    let moded = files && nix::sys::stat::fchmod(&dir, mode).is_ok();
    let id = sealed_ids();
    let owned = nix::unistd::fchown(&dir, id.0, id.1).is_ok();
    files && moded && owned
}

/// A seal running on a thread of its own ([`SandboxCgroup::start_sealing`]); dropping it waits
/// for the thread, so no spawn returns while its cgroup is still being sealed.
#[derive(Debug)]
pub(crate) struct Sealing {
    thread: Option<std::thread::JoinHandle<bool>>,
}

impl Drop for Sealing {
    fn drop(&mut self) {
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// Whether a failure to create a group only means this caller may not make groups there (an
/// unprivileged caller without delegation): the payload, whose ids are the caller's or
/// subordinate ones, cannot write there either.
fn not_ours(e: &Error) -> bool {
    matches!(e, Error::Cgroup { source, .. }
        if matches!(source.raw_os_error(), Some(libc::EACCES | libc::EPERM | libc::EROFS)))
}

/// One directory pair of a sandbox's cgroup: `dir` (limits, accounting) and `dir/payload`
/// (`leaf`, where its processes live), or with no cgroup namespace `dir` alone (`leaf` is
/// `dir`).
#[derive(Debug)]
struct Group {
    /// Which hierarchy ("unified", "memory", "cpu,cpuacct", "name=systemd", ...).
    label: String,
    /// v1 controllers of the hierarchy.
    controllers: Vec<String>,
    dir: PathBuf,
    leaf: PathBuf,
}

/// A sandbox's cgroup: one group (v2) or one per hierarchy (v1, hybrid), each a limits
/// directory with the processes' leaf inside.
#[derive(Debug)]
pub(crate) struct SandboxCgroup {
    layout: Layout,
    groups: Vec<Group>,
    removed: bool,
    /// Every leaf belongs to [`SEALED_ID`] (once [`SandboxCgroup::seal`] or
    /// [`SandboxCgroup::sealed_by`] has run).
    sealed: bool,
    /// The sandbox has a pid namespace of its own, whose init's end ends every process in it.
    pid_ns: bool,
    /// Processes live in a leaf below each group (a cgroup namespace's root, with the limits
    /// one level up); without a cgroup namespace they live in the group itself, which saves a
    /// directory (a mkdir and an rmdir per hierarchy) on every spawn.
    leaf: bool,
    /// Registered with the reaper, which removes them when the embedding process is gone
    /// (false for a sandbox that outlives it).
    watched: bool,
}

impl SandboxCgroup {
    /// Creates the sandbox's cgroup and applies the limits. Nothing is left behind on error.
    /// `pid_ns`: the sandbox has a pid namespace, so killing its init ends the tree and the init's
    /// accounting covers it (v1 then needs neither the freezer nor cpuacct, each of which costs a
    /// task migration per spawn). `confine`: the sandbox has a cgroup namespace, so it gets a
    /// group in every hierarchy the caller can create one in, not only those with limits.
    /// `Ok(None)`: nothing was wanted and nothing could be made.
    pub(crate) fn create(
        limits: &LimitsConfig,
        layout: Layout,
        pid_ns: bool,
        confine: bool,
    ) -> Result<Option<SandboxCgroup>, Error> {
        let name = unique_name();
        let mut cg = SandboxCgroup {
            layout,
            groups: Vec::new(),
            removed: false,
            sealed: false,
            pid_ns,
            leaf: confine,
            watched: !limits.outlive_parent,
        };
        let result = match layout {
            Layout::Unified => cg.create_v2(limits, &name),
            // A sandbox that outlives its creator is a container others measure and manage
            // through its groups: one in every hierarchy, as runc makes.
            Layout::Hybrid | Layout::Legacy => {
                cg.create_v1(limits, &name, pid_ns, confine || limits.outlive_parent)
            }
        };
        match result {
            Ok(()) if cg.groups.is_empty() => Ok(None),
            Ok(()) => Ok(Some(cg)),
            Err(e) => {
                cg.destroy();
                // Only a namespace's confinement was wanted, and this caller may not make groups
                // (nor, then, may its payload write any).
                if !limits.wants_cgroup() && not_ours(&e) { Ok(None) } else { Err(e) }
            }
        }
    }

    /// The cgroup of a running sandbox from its groups' directories (`Detached::cgroups`), for
    /// changing its limits and reading its usage; dropping it removes nothing.
    pub(crate) fn existing(dirs: &[PathBuf]) -> Option<SandboxCgroup> {
        let layout = layout()?;
        let groups = dirs
            .iter()
            .filter_map(|dir| {
                let h = mounted_hierarchies().iter().find(|h| dir.starts_with(&h.mount))?;
                Some(Group {
                    label: h.label(),
                    controllers: h.controllers.clone(),
                    dir: dir.clone(),
                    leaf: dir.clone(),
                })
            })
            .collect();
        Some(SandboxCgroup {
            layout,
            groups,
            removed: true,
            sealed: false,
            pid_ns: false,
            leaf: false,
            watched: false,
        })
    }

    /// Changes the limits `limits` sets (the others stay as they are). On v1, memory and
    /// memory+swap are written in the order the kernel accepts (memory at most memory+swap).
    pub(crate) fn update(&self, limits: &LimitsConfig) -> Result<(), Error> {
        for controller in limits.controllers() {
            let controller =
                if controller == "io" && self.layout != Layout::Unified { "blkio" } else { controller };
            if self.group(controller).is_none() {
                return Err(Error::Unsupported {
                    feature: format!("changing the {controller} limit"),
                    reason: format!("the sandbox has no group in the {controller} hierarchy"),
                    hint: "set the limit when the sandbox is created".into(),
                });
            }
        }
        if let (Layout::Unified, Some(group)) = (self.layout, self.groups.first()) {
            // A controller the group was created without: enabled in every ancestor's
            // subtree_control, from the root down, as at creation.
            let wanted = limits.controllers();
            let mut dir = PathBuf::from(ROOT);
            enable_controllers(&dir, &wanted);
            let parents = group
                .dir
                .strip_prefix(ROOT)
                .ok()
                .and_then(Path::parent)
                .map(Path::to_owned)
                .unwrap_or_default();
            for part in parents.iter() {
                dir.push(part);
                enable_controllers(&dir, &wanted);
            }
            if let Some(c) = wanted.iter().find(|c| !group.dir.join(first_file(c)).exists()) {
                return Err(Error::Unsupported {
                    feature: format!("changing the {c} limit"),
                    reason: format!("the {c} controller cannot be enabled for {}", group.dir.display()),
                    hint: "set the limit when the sandbox is created".into(),
                });
            }
        }
        if self.layout != Layout::Unified
            && let (Some(memory), Some(swap)) = (limits.memory, limits.memory_swap)
        {
            let current =
                self.read("memory", "memory.memsw.limit_in_bytes").and_then(|v| v.trim().parse::<u64>().ok());
            if current.is_some_and(|c| memory > c) {
                // Raising both: memory+swap first, or the new memory limit exceeds it.
                self.write("memory", "memory.memsw.limit_in_bytes", &swap.to_string())?;
            }
        }
        self.apply(limits)
    }

    /// Current usage and limits of the group (see [`crate::CgroupStats`]).
    pub(crate) fn stats(&self) -> crate::CgroupStats {
        let v2 = self.layout == Layout::Unified;
        let num = |text: Option<String>| text.and_then(|t| t.trim().parse::<u64>().ok());
        let key = |text: Option<String>, k: &str| {
            text.and_then(|t| t.lines().find_map(|l| l.strip_prefix(k)?.trim().parse::<u64>().ok()))
        };
        let (user, system) = self.cpu_times().unzip();
        let cpu_total = if v2 {
            key(self.read("cpu", "cpu.stat"), "usage_usec ").map(Duration::from_micros)
        } else {
            num(self.read("cpuacct", "cpuacct.usage")).map(Duration::from_nanos)
        };
        let (peak, _, _) = self.memory_and_pids();
        let oom_kills = if v2 {
            key(self.read("memory", "memory.events"), "oom_kill ")
        } else {
            // v1 counts a kill in the victim's own group: the leaf's, where the processes live.
            let leaf = self
                .dir("memory")
                .and_then(|d| fs::read_to_string(d.join(LEAF).join("memory.oom_control")).ok());
            key(self.read("memory", "memory.oom_control"), "oom_kill ")
                .map(|n| n + key(leaf, "oom_kill ").unwrap_or(0))
        };
        // "max" (and v1's huge page-rounded number) mean no limit.
        let limit = |text: Option<String>| num(text).filter(|&v| v < i64::MAX as u64 / 4096 * 4096);
        crate::CgroupStats {
            cpu_total,
            cpu_user: user,
            cpu_system: system,
            memory_current: num(
                self.read("memory", if v2 { "memory.current" } else { "memory.usage_in_bytes" })
            ),
            memory_peak: peak,
            memory_limit: limit(self.read("memory", if v2 { "memory.max" } else { "memory.limit_in_bytes" })),
            oom_kills,
            pids_current: num(self.read("pids", "pids.current")),
            pids_limit: limit(self.read("pids", "pids.max")),
        }
    }

    /// Gives each leaf and every file in it to [`SEALED_ID`], here: the files, then the
    /// [`MOVE_FILES`] and the directory (as a seal on a thread does).
    pub(crate) fn seal(&mut self) {
        let files = seal_all(self.groups.iter().map(|g| g.leaf.as_path()), seal_files);
        self.sealed = seal_all(self.groups.iter().map(|g| g.leaf.as_path()), seal_move_files) && files;
    }

    /// Starts [`seal`](Self::seal)ing on a thread of its own, to run beside the clone (about
    /// 40 `chown`s on v1), all but the [`MOVE_FILES`] and the leaf directory; `None` if no
    /// thread could be made. The payload waits for the word that it is done (see `spawn`).
    pub(crate) fn start_sealing(&self) -> Option<Sealing> {
        let leaves: Vec<PathBuf> = self.groups.iter().map(|g| g.leaf.clone()).collect();
        let thread = std::thread::Builder::new()
            .name("stockade-seal".into())
            .spawn(move || seal_all(leaves.iter().map(PathBuf::as_path), seal_files))
            .ok()?;
        Some(Sealing { thread: Some(thread) })
    }

    /// Waits for `sealing` to end, seals the [`MOVE_FILES`] and each leaf directory (the spawn
    /// is done with them), and records whether every leaf was sealed. A panic on the thread is
    /// this one's.
    pub(crate) fn sealed_by(&mut self, mut sealing: Sealing) {
        let rest = sealing
            .thread
            .take()
            .is_some_and(|t| t.join().unwrap_or_else(|panic| std::panic::resume_unwind(panic)));
        self.sealed = seal_all(self.groups.iter().map(|g| g.leaf.as_path()), seal_move_files) && rest;
    }

    /// Whether every leaf was sealed (see [`seal`](Self::seal)).
    pub(crate) fn is_sealed(&self) -> bool {
        self.sealed
    }

    /// Whether the sandbox has a sealed group in every hierarchy this process is in
    /// (`/proc/self/cgroup` lists them all, mounted here or not), so a cgroup namespace shows
    /// nothing beyond them and the payload can change nothing in them.
    pub(crate) fn confines_every_hierarchy(&self) -> bool {
        static COUNT: std::sync::OnceLock<usize> = std::sync::OnceLock::new();
        let all = *COUNT.get_or_init(|| {
            fs::read_to_string("/proc/self/cgroup")
                .map_or(usize::MAX, |t| t.lines().filter(|l| !l.is_empty()).count())
        });
        self.sealed && self.groups.len() >= all
    }

    /// The parent directory, relative to a hierarchy's root ("" is the root itself).
    fn parent(limits: &LimitsConfig, h: &Hierarchy) -> String {
        match &limits.cgroup_parent {
            Some(p) => p.to_string_lossy().trim_matches('/').to_owned(),
            None => join(&h.own_path(), "stockade"),
        }
    }

    fn create_v2(&mut self, limits: &LimitsConfig, name: &str) -> Result<(), Error> {
        let wanted = limits.controllers();
        let h = Hierarchy { mount: ROOT.into(), controllers: Vec::new(), name: None, unified: true };
        let parent = Self::parent(limits, &h);
        // Controllers must be enabled in every ancestor's subtree_control, from the root down.
        let mut dir = PathBuf::from(ROOT);
        enable_controllers(&dir, &wanted);
        for part in parent.split('/').filter(|p| !p.is_empty()) {
            dir.push(part);
            if let Err(source) = fs::create_dir(&dir)
                && source.kind() != std::io::ErrorKind::AlreadyExists
            {
                return Err(Error::Cgroup { op: "create cgroup parent".into(), path: dir, source });
            }
            enable_controllers(&dir, &wanted);
        }
        let controllers: Vec<String> = wanted.iter().map(|c| c.to_string()).collect();
        self.make_group(&dir, name, "unified", controllers)?;
        let leaf_dir = dir.join(name);
        for c in &wanted {
            if !leaf_dir.join(first_file(c)).exists() {
                return Err(Error::Unsupported {
                    feature: format!("the {c} cgroup controller under {}", dir.display()),
                    reason: "it is not enabled there (cgroup.subtree_control): the parent has processes of its own or is not delegated to this user".into(),
                    hint: "choose a delegated parent with SandboxBuilder::cgroup_parent".into(),
                });
            }
        }
        self.apply(limits)
    }

    fn create_v1(
        &mut self,
        limits: &LimitsConfig,
        name: &str,
        pid_ns: bool,
        confine: bool,
    ) -> Result<(), Error> {
        // The requested controllers first (an error then names them), then what the sandbox
        // needs besides: tree-wide CPU accounting (the CPU-time limit, or no init to account for
        // the tree) and the freezer to kill a tree that has no init.
        let mut needed: Vec<&str> =
            limits.controllers().iter().flat_map(|c| v1_names(c).iter().copied()).collect();
        if limits.cpu_time.is_some() || !pid_ns {
            needed.push("cpuacct");
        }
        if !pid_ns || needed.is_empty() {
            needed.push("freezer");
        }
        let all = mounted_hierarchies();
        for controller in &needed {
            if !all.iter().any(|h| h.controllers.iter().any(|c| c == controller)) {
                return Err(Error::Unsupported {
                    feature: format!("the {controller} cgroup controller"),
                    reason: "no v1 hierarchy is mounted".into(),
                    hint: format!("mount the {controller} hierarchy under /sys/fs/cgroup"),
                });
            }
        }
        for h in all {
            let mine: Vec<String> =
                h.controllers.iter().filter(|c| needed.contains(&c.as_str())).cloned().collect();
            if mine.is_empty() && !confine {
                continue;
            }
            let parent = Self::parent(limits, h);
            let parent_dir = h.mount.join(&parent);
            let made = fs::create_dir_all(&parent_dir)
                .map_err(|source| Error::Cgroup {
                    op: format!("create {} cgroup parent", h.label()),
                    path: parent_dir.clone(),
                    source,
                })
                .and_then(|()| {
                    if h.controllers.iter().any(|c| c == "cpuset") {
                        // Every level create_dir_all may have made, from the top: a new v1
                        // cpuset takes no task (nor child's CPUs) until it has its own.
                        let mut level = h.mount.clone();
                        for part in parent.split('/').filter(|p| !p.is_empty()) {
                            level.push(part);
                            init_cpuset(&level)?;
                        }
                    }
                    self.make_group(&parent_dir, name, &h.label(), h.controllers.clone())
                });
            match made {
                Err(e) if mine.is_empty() && not_ours(&e) => continue,
                other => other?,
            }
        }
        self.apply(limits)
    }

    /// Creates `parent/name` and its leaf, registered with the reaper first so that they go
    /// even if this process is killed the next instant.
    fn make_group(
        &mut self,
        parent: &Path,
        name: &str,
        label: &str,
        controllers: Vec<String>,
    ) -> Result<(), Error> {
        // A caller that may not make groups here (no delegation) starts no reaper for nothing.
        nix::unistd::access(parent, nix::unistd::AccessFlags::W_OK | nix::unistd::AccessFlags::X_OK)
            .map_err(|e| Error::Cgroup {
                op: format!("create {label} cgroup"),
                path: parent.to_owned(),
                source: e.into(),
            })?;
        if self.watched {
            super::reaper::watch(parent)?;
        }
        let dir = parent.join(name);
        make_leaf(&dir, &format!("create {label} cgroup"))?;
        let leaf = if self.leaf { dir.join(LEAF) } else { dir.clone() };
        self.groups.push(Group {
            label: label.to_owned(),
            controllers,
            dir: dir.clone(),
            leaf: leaf.clone(),
        });
        // v1 only: a v2 cpuset group starts with its parent's effective CPUs.
        let cpuset = self.layout != Layout::Unified
            && self.groups.last().is_some_and(|g| g.controllers.iter().any(|c| c == "cpuset"));
        if cpuset {
            init_cpuset(&dir)?;
        }
        if self.leaf {
            make_leaf(&leaf, &format!("create {label} cgroup"))?;
            if cpuset {
                init_cpuset(&leaf)?;
            }
        }
        Ok(())
    }

    /// Writes the limits into the groups' files (directly: the limits are a few numbers, and
    /// a library handle per spawn would parse the mount table again each time).
    fn apply(&self, limits: &LimitsConfig) -> Result<(), Error> {
        let v2 = self.layout == Layout::Unified;
        if let Some(bytes) = limits.memory {
            self.write(
                "memory",
                if v2 { "memory.max" } else { "memory.limit_in_bytes" },
                &bytes.to_string(),
            )?;
        }
        if let Some(cpus) = &limits.cpuset_cpus {
            self.write_cpuset("cpuset.cpus", cpus)?;
        }
        if let Some(mems) = &limits.cpuset_mems {
            self.write_cpuset("cpuset.mems", mems)?;
        }
        if let Some(count) = limits.pids {
            self.write("pids", "pids.max", &count.to_string())?;
        }
        if let Some((quota, period)) = limits.cpu_quota {
            let (quota, period) = (quota.as_micros(), period.as_micros());
            if v2 {
                self.write("cpu", "cpu.max", &format!("{quota} {period}"))?;
            } else {
                self.write("cpu", "cpu.cfs_period_us", &period.to_string())?;
                self.write("cpu", "cpu.cfs_quota_us", &quota.to_string())?;
            }
        }
        if let Some(shares) = limits.cpu_shares {
            if v2 {
                self.write("cpu", "cpu.weight", &(shares * 100 / 1024).clamp(1, 10_000).to_string())?;
            } else {
                self.write("cpu", "cpu.shares", &shares.to_string())?;
            }
        }
        if let Some(weight) = limits.cpu_weight {
            if v2 {
                self.write("cpu", "cpu.weight", &weight.to_string())?;
            } else {
                // cpu.shares: 1024 is weight 100.
                self.write("cpu", "cpu.shares", &(weight * 1024 / 100).clamp(2, 262_144).to_string())?;
            }
        }
        if let Some(swap) = limits.memory_swap {
            match self.layout {
                // v2 limits swap alone; our setting counts memory and swap together, as v1 does.
                Layout::Unified => self.write(
                    "memory",
                    "memory.swap.max",
                    &swap.saturating_sub(limits.memory.unwrap_or(0)).to_string(),
                )?,
                _ => self.write("memory", "memory.memsw.limit_in_bytes", &swap.to_string())?,
            }
        }
        for limit in &limits.io_limits {
            match self.layout {
                Layout::Unified => self.write("io", "io.max", &limit.io_max_line())?,
                _ => {
                    for (file, line) in limit.blkio_lines() {
                        self.write("blkio", file, &line)?;
                    }
                }
            }
        }
        if let Some(w) = limits.io_weight {
            match self.layout {
                Layout::Unified => self.write("io", "io.weight", &format!("default {w}"))?,
                // blkio.weight takes 10..1000 with 500 as the default: weight 100 maps to 500.
                _ => self.write("blkio", "blkio.weight", &(u32::from(w) * 5).clamp(10, 1000).to_string())?,
            }
        }
        Ok(())
    }

    /// Writes a cpuset file of the group and, on v1, of its leaf: there a child's set must
    /// stay within its parent's, so the leaf goes first when the set shrinks (the leaf's write
    /// succeeds) and last when it grows.
    fn write_cpuset(&self, file: &str, value: &str) -> Result<(), Error> {
        let leaf =
            self.dir("cpuset").map(|d| d.join(LEAF)).filter(|l| self.layout != Layout::Unified && l.is_dir());
        let Some(leaf) = leaf else { return self.write("cpuset", file, value) };
        let write_leaf = || {
            fs::write(leaf.join(file), value).map_err(|source| Error::Cgroup {
                op: "write".into(),
                path: leaf.join(file),
                source,
            })
        };
        if write_leaf().is_ok() {
            return self.write("cpuset", file, value);
        }
        // Growing, or moving to a disjoint set: the group takes the union of the old and the
        // new set first, then the leaf the new one, then the group the new one too.
        let current = self.read("cpuset", file).unwrap_or_default();
        match union_of_lists(current.trim(), value) {
            Some(union) => self.write("cpuset", file, &union)?,
            None => self.write("cpuset", file, value)?,
        }
        write_leaf()?;
        self.write("cpuset", file, value)
    }

    /// Writes `file` in the directory of `controller` (v2: the one directory).
    fn write(&self, controller: &str, file: &str, value: &str) -> Result<(), Error> {
        let Some(dir) = self.dir(controller) else { return Ok(()) };
        let path = dir.join(file);
        fs::write(&path, value).map_err(|e| match e.raw_os_error() {
            Some(libc::ENOENT) => Error::Unsupported {
                feature: format!("{file} ({controller} controller)"),
                hint: "leave that limit out, or enable it on the host (swap accounting: boot with \
                       swapaccount=1 on cgroup v1)"
                    .into(),
                reason: format!(
                    "{} does not exist on this host (e.g. swap accounting is off)",
                    path.display()
                ),
            },
            _ => Error::Cgroup { op: "write".into(), path, source: e },
        })
    }

    /// The limits directory of the hierarchy that carries `controller` (v2: the one directory).
    fn dir(&self, controller: &str) -> Option<&Path> {
        self.group(controller).map(|g| g.dir.as_path())
    }

    fn group(&self, controller: &str) -> Option<&Group> {
        match self.layout {
            Layout::Unified => self.groups.first(),
            _ => self.groups.iter().find(|g| g.controllers.iter().any(|c| c == controller)),
        }
    }

    fn read(&self, controller: &str, file: &str) -> Option<String> {
        fs::read_to_string(self.dir(controller)?.join(file)).ok()
    }

    /// A directory descriptor of the v2 cgroup's leaf, for `CLONE_INTO_CGROUP`.
    pub(crate) fn clone_into_fd(&self) -> Option<OwnedFd> {
        if self.layout != Layout::Unified {
            return None;
        }
        fs::File::open(&self.groups.first()?.leaf).ok().map(OwnedFd::from)
    }

    /// The `tasks` file of every group's leaf, open for writing, with the hierarchy's label and
    /// the leaf, for a process to join its groups itself by writing `0` (see
    /// `Plan::cgroup_tasks`). cgroup v1 only: `None` on v2, or where any group has no such file
    /// (the unified group of a hybrid layout).
    pub(crate) fn tasks_files(&self) -> Option<Vec<(OwnedFd, String, PathBuf)>> {
        if self.layout == Layout::Unified {
            return None;
        }
        self.groups
            .iter()
            .map(|g| {
                let file = fs::OpenOptions::new().write(true).open(g.leaf.join("tasks")).ok()?;
                Some((OwnedFd::from(file), g.label.clone(), g.leaf.clone()))
            })
            .collect()
    }

    /// Moves process `pid` into the leaf of every group.
    pub(crate) fn attach(&self, pid: libc::pid_t) -> Result<(), Error> {
        for g in &self.groups {
            fs::write(g.leaf.join("cgroup.procs"), pid.to_string()).map_err(|source| Error::Cgroup {
                op: format!("join {} cgroup", g.label),
                path: g.leaf.clone(),
                source,
            })?;
        }
        Ok(())
    }

    /// CPU time used by the whole tree so far (user, system).
    pub(crate) fn cpu_times(&self) -> Option<(Duration, Duration)> {
        match self.layout {
            Layout::Unified => {
                let stat = self.read("cpu", "cpu.stat")?;
                let field =
                    |name: &str| stat.lines().find_map(|l| l.strip_prefix(name)?.trim().parse::<u64>().ok());
                Some((
                    Duration::from_micros(field("user_usec")?),
                    Duration::from_micros(field("system_usec")?),
                ))
            }
            _ => {
                let ns = |file: &str| self.read("cpuacct", file)?.trim().parse::<u64>().ok();
                Some((
                    Duration::from_nanos(ns("cpuacct.usage_user")?),
                    Duration::from_nanos(ns("cpuacct.usage_sys")?),
                ))
            }
        }
    }

    /// Peak memory, whether the OOM killer struck, and peak process count.
    pub(crate) fn memory_and_pids(&self) -> (Option<u64>, bool, Option<u64>) {
        let num = |s: Option<String>| s.and_then(|s| s.trim().parse::<u64>().ok());
        let key = |text: Option<String>, k: &str| {
            text.and_then(|t| t.lines().find_map(|l| l.strip_prefix(k)?.trim().parse::<u64>().ok()))
        };
        match self.layout {
            Layout::Unified => (
                num(self.read("memory", "memory.peak")),
                key(self.read("memory", "memory.events"), "oom_kill ").unwrap_or(0) > 0,
                num(self.read("pids", "pids.peak")),
            ),
            _ => {
                // v1 counts an OOM kill in the victim's own group only: the leaf's, usually.
                let leaf = self
                    .group("memory")
                    .filter(|g| g.leaf != g.dir)
                    .and_then(|g| fs::read_to_string(g.leaf.join("memory.oom_control")).ok());
                let kills = key(self.read("memory", "memory.oom_control"), "oom_kill ").unwrap_or(0)
                    + key(leaf, "oom_kill ").unwrap_or(0);
                (
                    num(self.read("memory", "memory.max_usage_in_bytes")),
                    kills > 0,
                    num(self.read("pids", "pids.peak")),
                )
            }
        }
    }

    /// Kills every process left in the cgroup and removes its directories, retrying while the
    /// kernel still reports them busy. Idempotent.
    pub(crate) fn destroy(&mut self) {
        if !self.removed {
            self.kill_all();
            self.remove();
        }
    }

    /// Removes the groups once the sandbox's first process has been reaped. With a pid
    /// namespace of its own that was the init, and the kernel reaps an init only after every
    /// process of its namespace is gone: nothing is left to kill (a process put in from
    /// outside still is, by the removal's retries). Otherwise as [`destroy`](Self::destroy).
    pub(crate) fn remove_after_exit(&mut self) {
        if self.pid_ns {
            self.remove();
        } else {
            self.destroy();
        }
    }

    /// Removes the groups, deepest first, killing what keeps one busy. Idempotent.
    fn remove(&mut self) {
        if self.removed {
            return;
        }
        for g in self.groups.iter().rev() {
            // Groups the payload made inside its leaf (it may, in its own cgroup) go first.
            remove_tree(&g.dir, 0);
        }
        self.removed = true;
    }

    /// Leaves the groups in place for a sandbox that outlives its `Child` (see
    /// [`crate::Child::detach`]); returns their directories.
    pub(crate) fn keep(mut self) -> Vec<PathBuf> {
        self.removed = true;
        self.dirs()
    }

    /// The groups' directories.
    pub(crate) fn dirs(&self) -> Vec<PathBuf> {
        self.groups.iter().map(|g| g.dir.clone()).collect()
    }

    /// Kills every process in the cgroup (v2: `cgroup.kill`; v1: freeze, kill, thaw).
    pub(crate) fn kill_all(&self) {
        match self.layout {
            Layout::Unified => {
                if let Some(g) = self.groups.first() {
                    // cgroup.kill (5.14+) kills every process of the subtree atomically, forks
                    // included.
                    if fs::write(g.dir.join("cgroup.kill"), "1").is_err() {
                        kill_tree(&g.leaf, 0);
                    }
                }
            }
            _ => {
                // Freeze so nothing can fork while we kill, kill, then thaw so they can die.
                let freezer = self.group("freezer");
                if let Some(g) = freezer {
                    let state = g.dir.join("freezer.state");
                    let _ = fs::write(&state, "FROZEN");
                    // FREEZING until every task has stopped; only then can nothing fork.
                    for _ in 0..1000 {
                        match fs::read_to_string(&state) {
                            Ok(s) if s.trim() == "FREEZING" => std::thread::yield_now(),
                            _ => break,
                        }
                    }
                }
                for g in &self.groups {
                    kill_tree(&g.leaf, 0);
                }
                if let Some(g) = freezer {
                    for dir in [&g.dir, &g.leaf] {
                        let _ = fs::write(dir.join("freezer.state"), "THAWED");
                    }
                }
            }
        }
    }
}

impl Drop for SandboxCgroup {
    fn drop(&mut self) {
        self.destroy();
    }
}

/// The union of two cpuset lists ("0-2,5"), as a list; `None` when either is malformed.
fn union_of_lists(a: &str, b: &str) -> Option<String> {
    let mut set = std::collections::BTreeSet::new();
    for part in a.split(',').chain(b.split(',')).map(str::trim).filter(|p| !p.is_empty()) {
        let (lo, hi) = part.split_once('-').unwrap_or((part, part));
        let (lo, hi): (u32, u32) = (lo.parse().ok()?, hi.parse().ok()?);
        if hi < lo || hi - lo > 65_536 {
            return None;
        }
        set.extend(lo..=hi);
    }
    Some(set.iter().map(u32::to_string).collect::<Vec<_>>().join(","))
}

/// SIGKILL to every process listed in `dir/cgroup.procs`.
fn kill_listed(dir: &Path) {
    let procs = fs::read_to_string(dir.join("cgroup.procs")).unwrap_or_default();
    for pid in procs.lines().filter_map(|l| l.trim().parse::<i32>().ok()) {
        let _ = nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), nix::sys::signal::Signal::SIGKILL);
    }
}

/// How deep below its leaf a payload's own groups are followed when killing and removing.
const MAX_DEPTH: usize = 32;

/// The subdirectories of a cgroup directory (child groups).
fn child_groups(dir: &Path) -> Vec<PathBuf> {
    let Ok(entries) = fs::read_dir(dir) else { return Vec::new() };
    entries.flatten().filter(|e| e.file_type().is_ok_and(|t| t.is_dir())).map(|e| e.path()).collect()
}

/// SIGKILL to every process in `dir` and the groups below it.
fn kill_tree(dir: &Path, depth: usize) {
    if depth < MAX_DEPTH {
        for child in child_groups(dir) {
            kill_tree(&child, depth + 1);
        }
    }
    kill_listed(dir);
}

/// Every process in the groups `dirs` and below them, each once, in ascending order.
pub(crate) fn processes_in(dirs: &[PathBuf]) -> Vec<u32> {
    fn walk(dir: &Path, depth: usize, out: &mut Vec<u32>) {
        if let Ok(text) = fs::read_to_string(dir.join("cgroup.procs")) {
            out.extend(text.lines().filter_map(|l| l.trim().parse::<u32>().ok()));
        }
        if depth < MAX_DEPTH {
            for child in child_groups(dir) {
                walk(&child, depth + 1, out);
            }
        }
    }
    let mut out = Vec::new();
    for dir in dirs {
        walk(dir, 0, &mut out);
    }
    out.sort_unstable();
    out.dedup();
    out
}

/// Where the processes of the groups `dirs` (a sandbox's) live: in each, its leaf when it has
/// one.
pub(crate) fn leaves(dirs: &[PathBuf]) -> Vec<PathBuf> {
    dirs.iter()
        .map(|dir| {
            let leaf = dir.join(LEAF);
            if leaf.is_dir() { leaf } else { dir.clone() }
        })
        .collect()
}

/// Puts `pid` in the groups `dirs` (a detached sandbox's: in each, its processes' leaf when it
/// has one).
pub(crate) fn attach_to(dirs: &[PathBuf], pid: libc::pid_t) -> Result<(), Error> {
    for leaf in leaves(dirs) {
        fs::write(leaf.join("cgroup.procs"), pid.to_string()).map_err(|source| Error::Cgroup {
            op: "join the sandbox's cgroup".into(),
            path: leaf.clone(),
            source,
        })?;
    }
    Ok(())
}

/// Freezes (or thaws) the groups `dirs` and waits until the kernel says they are: v2's
/// `cgroup.freeze` (and `frozen` in `cgroup.events`), or v1's freezer hierarchy. `Ok(false)`:
/// none of them can be frozen (no freezer group).
pub(crate) fn freeze_dirs(dirs: &[PathBuf], frozen: bool) -> Result<bool, Error> {
    let fail = |path: &Path, source| Error::Cgroup {
        op: "freeze the sandbox".into(),
        path: path.to_owned(),
        source,
    };
    for dir in dirs {
        let (file, value, check, want) = if dir.join("cgroup.freeze").exists() {
            (
                "cgroup.freeze",
                if frozen { "1" } else { "0" },
                "cgroup.events",
                if frozen { "frozen 1" } else { "frozen 0" },
            )
        } else if dir.join("freezer.state").exists() {
            (
                "freezer.state",
                if frozen { "FROZEN" } else { "THAWED" },
                "freezer.state",
                if frozen { "FROZEN" } else { "THAWED" },
            )
        } else {
            continue;
        };
        fs::write(dir.join(file), value).map_err(|e| fail(&dir.join(file), e))?;
        // The kernel gets there once every task has stopped (or started again): tasks in the
        // middle of a system call take a moment.
        let mut delay = Duration::from_micros(100);
        for _ in 0..200 {
            let text = fs::read_to_string(dir.join(check)).map_err(|e| fail(&dir.join(check), e))?;
            if text.lines().any(|l| l.trim() == want) {
                return Ok(true);
            }
            std::thread::sleep(delay);
            delay = (delay * 2).min(Duration::from_millis(50));
        }
        return Err(fail(
            &dir.join(check),
            std::io::Error::new(std::io::ErrorKind::TimedOut, format!("never reached {want:?}")),
        ));
    }
    Ok(false)
}

/// Whether the groups `dirs` are frozen (see [`freeze_dirs`]).
pub(crate) fn frozen_dirs(dirs: &[PathBuf]) -> bool {
    dirs.iter().any(|dir| {
        let events = fs::read_to_string(dir.join("cgroup.events")).unwrap_or_default();
        let state = fs::read_to_string(dir.join("freezer.state")).unwrap_or_default();
        events.lines().any(|l| l.trim() == "frozen 1") || matches!(state.trim(), "FROZEN" | "FREEZING")
    })
}

/// Kills every process in the groups `dirs` (v2: `cgroup.kill`; otherwise each listed
/// process, below them included) and removes them, deepest first.
pub(crate) fn destroy_dirs(dirs: &[PathBuf]) {
    // v1: frozen (where the sandbox has a freezer group) so nothing forks while it is killed,
    // as `SandboxCgroup::kill_all` does.
    let freezer = dirs.iter().find(|d| d.join("freezer.state").exists());
    if let Some(dir) = freezer {
        let state = dir.join("freezer.state");
        let _ = fs::write(&state, "FROZEN");
        for _ in 0..1000 {
            match fs::read_to_string(&state) {
                Ok(s) if s.trim() == "FREEZING" => std::thread::yield_now(),
                _ => break,
            }
        }
    }
    for dir in dirs {
        if fs::write(dir.join("cgroup.kill"), "1").is_err() {
            kill_tree(dir, 0);
        }
    }
    if let Some(dir) = freezer {
        let _ = fs::write(dir.join("freezer.state"), "THAWED");
    }
    for dir in dirs.iter().rev() {
        remove_tree(dir, 0);
    }
}

/// Removes `dir` and the groups below it, deepest first.
fn remove_tree(dir: &Path, depth: usize) {
    // Most groups have none below them and nothing left in them: one `rmdir`.
    if fs::remove_dir(dir).is_ok() {
        return;
    }
    if depth < MAX_DEPTH {
        for child in child_groups(dir) {
            remove_tree(&child, depth + 1);
        }
    }
    remove_dir_retrying(dir);
}

/// `rmdir` with retries on EBUSY: killed processes leave the cgroup only once the kernel has
/// finished tearing them down.
fn remove_dir_retrying(dir: &Path) {
    let mut delay = Duration::from_micros(100);
    for _ in 0..40 {
        match fs::remove_dir(dir) {
            Ok(()) => return,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return,
            Err(_) => {
                kill_listed(dir);
                std::thread::sleep(delay);
                delay = (delay * 2).min(Duration::from_millis(100));
            }
        }
    }
}

/// Writes `+controller` into `dir/cgroup.subtree_control` for each wanted controller (errors are
/// found afterwards, by the missing interface files).
fn enable_controllers(dir: &Path, wanted: &[&str]) {
    for c in wanted {
        let _ = fs::write(dir.join("cgroup.subtree_control"), format!("+{c}"));
    }
}

/// Gives the new v1 cpuset `dir` its parent's CPUs and memory nodes: an empty one takes no task.
fn init_cpuset(dir: &Path) -> Result<(), Error> {
    inherit_cpuset(dir).map_err(|source| Error::Cgroup {
        op: "initialise cpuset".into(),
        path: dir.to_owned(),
        source,
    })
}

/// Copies the parent's `cpuset.cpus` and `cpuset.mems` into `dir` where they are empty.
fn inherit_cpuset(dir: &Path) -> std::io::Result<()> {
    let Some(parent) = dir.parent() else { return Ok(()) };
    for file in ["cpuset.cpus", "cpuset.mems"] {
        if fs::read_to_string(dir.join(file))?.trim().is_empty() {
            fs::write(dir.join(file), fs::read_to_string(parent.join(file))?.trim())?;
        }
    }
    Ok(())
}

fn first_file(controller: &str) -> &'static str {
    match controller {
        "memory" => "memory.max",
        "pids" => "pids.max",
        "cpu" => "cpu.max",
        "cpuset" => "cpuset.cpus",
        "io" => "io.max",
        _ => "cgroup.procs",
    }
}

/// For [`crate::probe`]: the layout and controllers this host shows (`Err`: none mounted),
/// and whether this process may make groups where a sandbox's would go by default (below its
/// own group in each hierarchy with a controller): `Ok(where)`, or `Err((reason, hint))`.
pub(crate) fn host_report() -> (Result<String, String>, Result<String, (String, String)>) {
    let Some(layout) = layout() else {
        let none = "no cgroup filesystem is mounted at /sys/fs/cgroup".to_owned();
        return (Err(none.clone()), Err((none, "mount cgroup2 at /sys/fs/cgroup".into())));
    };
    let hierarchies: Vec<&Hierarchy> =
        mounted_hierarchies().iter().filter(|h| h.unified || !h.controllers.is_empty()).collect();
    let shown = match layout {
        Layout::Unified => {
            let have = fs::read_to_string(format!("{ROOT}/cgroup.controllers")).unwrap_or_default();
            format!("cgroup v2, controllers: {}", have.trim())
        }
        Layout::Hybrid | Layout::Legacy => {
            let v1: Vec<String> = hierarchies.iter().filter(|h| !h.unified).map(|h| h.label()).collect();
            let kind = if layout == Layout::Hybrid {
                "hybrid (v1 controllers, a cgroup2 mount)"
            } else {
                "cgroup v1"
            };
            format!("{kind}, v1 hierarchies: {}", v1.join(" "))
        }
    };
    let mut refused = Vec::new();
    for h in &hierarchies {
        // Groups with limits go where the controllers are (on hybrid hosts: the v1 ones).
        if h.unified && layout == Layout::Hybrid {
            continue;
        }
        let dir = h.mount.join(h.own_path());
        let may = nix::unistd::access(&dir, nix::unistd::AccessFlags::W_OK | nix::unistd::AccessFlags::X_OK);
        if may.is_err() {
            refused.push(dir.display().to_string());
        }
    }
    let delegation = if refused.is_empty() {
        Ok("this process may make groups below its own in every hierarchy".to_owned())
    } else {
        Err((
            format!("not writable by uid {}: {}", nix::unistd::geteuid(), refused.join(", ")),
            "run under a delegated cgroup (e.g. systemd-run --user --scope -p Delegate=yes) and pass \
             SandboxBuilder::cgroup_parent, or run as root; without it limits are Unsupported (or, with \
             Compat::BestEffort, reported by Child::unenforced)"
                .to_owned(),
        ))
    };
    (Ok(shown), delegation)
}

/// Whether this process may make groups where a sandbox with these controllers would get
/// them: below `parent` (relative to each hierarchy's root), or by default `stockade` below
/// its own group. Checked at build, so that a caller without delegation gets
/// [`Error::Unsupported`] naming the directory before any process exists (the spawn would
/// fail with EACCES). The nearest existing directory on the way is the one that must be
/// writable.
pub(crate) fn check_delegated(
    layout: Layout,
    wanted: &[&'static str],
    parent: Option<&Path>,
) -> Result<(), Error> {
    let hierarchies = mounted_hierarchies();
    let mut dirs: Vec<(&'static str, PathBuf)> = Vec::new();
    for &c in wanted {
        let holding = hierarchies.iter().filter(|h| match layout {
            Layout::Unified => h.unified,
            Layout::Hybrid | Layout::Legacy => {
                !h.unified && v1_names(c).iter().any(|n| h.controllers.iter().any(|have| have == n))
            }
        });
        for h in holding {
            let relative = match parent {
                Some(p) => p.to_string_lossy().trim_matches('/').to_owned(),
                None => join(&h.own_path(), "stockade"),
            };
            dirs.push((c, h.mount.join(relative)));
        }
    }
    for (controller, dir) in dirs {
        let mut nearest = dir.as_path();
        while !nearest.exists() {
            match nearest.parent() {
                Some(up) => nearest = up,
                None => break,
            }
        }
        let flags = nix::unistd::AccessFlags::W_OK | nix::unistd::AccessFlags::X_OK;
        if let Err(e) = nix::unistd::access(nearest, flags) {
            return Err(Error::Unsupported {
                feature: "cgroup delegation".into(),
                reason: format!(
                    "the {controller} limit needs a group under {}, and {} is not writable by uid {} ({e})",
                    dir.display(),
                    nearest.display(),
                    nix::unistd::geteuid()
                ),
                hint: "run under a delegated cgroup (e.g. systemd-run --user --scope -p Delegate=yes) and \
                       pass SandboxBuilder::cgroup_parent, run as root, or use Compat::BestEffort to run \
                       without the limits (Child::unenforced names them)"
                    .into(),
            });
        }
    }
    Ok(())
}
