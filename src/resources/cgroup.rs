//! One cgroup per spawned sandbox, in the embedding process (through cgroups-rs): detect the
//! host's layout, create the group under the chosen parent, apply limits, let the child join,
//! read usage, and on the way out kill whatever is left and remove the directories.
//!
//! Layouts, detected like runc (statfs of `/sys/fs/cgroup`):
//! - unified (pure v2): one directory; the child joins at clone time with `CLONE_INTO_CGROUP`.
//! - hybrid (v1 controllers plus a v2 mount at `/sys/fs/cgroup/unified`, as on this project's
//!   machines) and legacy (pure v1): one directory per controller, each under the caller's own
//!   cgroup *in that controller* (they differ); the parent writes the child's pid into each
//!   while the child waits for "go".

use std::fs;
use std::os::fd::OwnedFd;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use cgroups_rs::cpuset::CpuSetController;
use cgroups_rs::memory::MemController;
use cgroups_rs::{Cgroup, MaxValue, Resources, hierarchies};

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

/// Where each v1 controller hierarchy is mounted (read once per process).
fn v1_mounts() -> &'static [(String, PathBuf)] {
    static MOUNTS: std::sync::OnceLock<Vec<(String, PathBuf)>> = std::sync::OnceLock::new();
    MOUNTS.get_or_init(read_v1_mounts)
}

/// Where each v1 controller hierarchy is mounted, from /proc/self/mountinfo.
fn read_v1_mounts() -> Vec<(String, PathBuf)> {
    let info = fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
    let mut out = Vec::new();
    for line in info.lines() {
        let Some((left, right)) = line.split_once(" - ") else { continue };
        let mut r = right.split(' ');
        if r.next() != Some("cgroup") {
            continue;
        }
        let super_opts = r.nth(1).unwrap_or_default();
        let Some(point) = left.split(' ').nth(4) else { continue };
        for opt in super_opts.split(',') {
            if !matches!(opt, "rw" | "ro") && !opt.starts_with("name=") {
                out.push((opt.to_owned(), PathBuf::from(point)));
            }
        }
    }
    out
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
        Err(Error::Unsupported { what: format!("the {controller} cgroup controller"), reason })
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
            let mounts = v1_mounts();
            for c in wanted {
                for name in v1_names(c) {
                    if !mounts.iter().any(|(n, _)| n == name) {
                        return missing(c, format!("no v1 {name} hierarchy is mounted"));
                    }
                }
            }
        }
    }
    Ok(())
}

static COUNTER: AtomicU64 = AtomicU64::new(0);

/// A name no other sandbox uses: this process's pid (for the garbage collector), a counter, and
/// random bits (embedding processes in different pid namespaces may share pids and a parent).
fn unique_name() -> String {
    let random = crate::sys::random_u32();
    format!("sb-{}-{}-{random:08x}", std::process::id(), COUNTER.fetch_add(1, Ordering::Relaxed))
}

/// `parent/name`, or `name` under the hierarchy's root.
fn join(parent: &str, name: &str) -> String {
    if parent.is_empty() { name.to_owned() } else { format!("{parent}/{name}") }
}

/// Creates `dir` (its parent must exist); the name is new, so an existing directory is an error
/// too: it belongs to someone else.
fn make_leaf(dir: &Path, op: &str) -> Result<(), Error> {
    fs::create_dir(dir).map_err(|source| Error::Cgroup { op: op.to_owned(), path: dir.to_owned(), source })
}

/// A sandbox's cgroup: one directory (v2) or one per controller (v1).
#[derive(Debug)]
pub(crate) struct SandboxCgroup {
    layout: Layout,
    /// (controller, handle, directory) for every controller directory created.
    groups: Vec<(String, Cgroup, PathBuf)>,
    removed: bool,
}

impl SandboxCgroup {
    /// Creates the sandbox's cgroup and applies the limits. Nothing is left behind on error.
    /// `pid_ns`: the sandbox has a pid namespace, so killing its init ends the tree and the init's
    /// accounting covers it (v1 then needs neither the freezer nor cpuacct, each of which costs a
    /// task migration per spawn).
    pub(crate) fn create(
        limits: &LimitsConfig,
        layout: Layout,
        pid_ns: bool,
    ) -> Result<SandboxCgroup, Error> {
        let name = unique_name();
        let wanted = limits.controllers();
        let mut cg = SandboxCgroup { layout, groups: Vec::new(), removed: false };
        let result = match layout {
            Layout::Unified => cg.create_v2(limits, &name, &wanted),
            Layout::Hybrid | Layout::Legacy => cg.create_v1(limits, &name, &wanted, pid_ns),
        };
        match result {
            Ok(()) => Ok(cg),
            Err(e) => {
                cg.destroy();
                Err(e)
            }
        }
    }

    /// The parent directory, relative to a hierarchy's root, for `controller` ("" on v2); ""
    /// is the root itself.
    fn parent(limits: &LimitsConfig, controller: &str) -> String {
        match &limits.cgroup_parent {
            Some(p) => p.to_string_lossy().trim_matches('/').to_owned(),
            None => join(&own_path(controller), "stockade"),
        }
    }

    fn create_v2(&mut self, limits: &LimitsConfig, name: &str, wanted: &[&'static str]) -> Result<(), Error> {
        let parent = Self::parent(limits, "");
        // Controllers must be enabled in every ancestor's subtree_control, from the root down.
        let mut dir = PathBuf::from(ROOT);
        enable_controllers(&dir, wanted);
        for part in parent.split('/').filter(|p| !p.is_empty()) {
            dir.push(part);
            if let Err(source) = fs::create_dir(&dir) {
                if source.kind() != std::io::ErrorKind::AlreadyExists {
                    return Err(Error::Cgroup { op: "create cgroup parent".into(), path: dir, source });
                }
            }
            enable_controllers(&dir, wanted);
        }
        gc_stale(&dir);
        let rel = join(&parent, name);
        let leaf = dir.join(name);
        make_leaf(&leaf, &format!("create cgroup for {wanted:?}"))?;
        let controllers: Vec<String> = wanted.iter().map(|c| c.to_string()).collect();
        let cg = Cgroup::load_with_specified_controllers(hierarchies::auto(), &rel, controllers);
        self.groups.push(("unified".into(), cg, leaf.clone()));
        for c in wanted {
            if !leaf.join(first_file(c)).exists() {
                return Err(Error::Unsupported {
                    what: format!("the {c} cgroup controller under {}", dir.display()),
                    reason: "it is not enabled there (cgroup.subtree_control); the parent has processes of its own or is not delegated to this user — choose a delegated parent with SandboxBuilder::cgroup_parent".into(),
                });
            }
        }
        self.apply(limits)
    }

    fn create_v1(
        &mut self,
        limits: &LimitsConfig,
        name: &str,
        wanted: &[&'static str],
        pid_ns: bool,
    ) -> Result<(), Error> {
        let mounts = v1_mounts();
        // The requested controllers first (an error then names them), then what the sandbox
        // needs besides: tree-wide CPU accounting (the CPU-time limit, or no init to account for
        // the tree) and the freezer to kill a tree that has no init.
        let mut names: Vec<&str> = wanted.iter().flat_map(|c| v1_names(c).iter().copied()).collect();
        if limits.cpu_time.is_some() || !pid_ns {
            names.push("cpuacct");
        }
        if !pid_ns || names.is_empty() {
            names.push("freezer");
        }
        for controller in names {
            let Some((_, mount)) = mounts.iter().find(|(n, _)| n == controller) else {
                return Err(Error::Unsupported {
                    what: format!("the {controller} cgroup controller"),
                    reason: "no v1 hierarchy is mounted".into(),
                });
            };
            let parent = Self::parent(limits, controller);
            let parent_dir = mount.join(&parent);
            fs::create_dir_all(&parent_dir).map_err(|source| Error::Cgroup {
                op: format!("create {controller} cgroup parent"),
                path: parent_dir.clone(),
                source,
            })?;
            gc_stale(&parent_dir);
            let rel = join(&parent, name);
            let dir = mount.join(&rel);
            make_leaf(&dir, &format!("create {controller} cgroup"))?;
            let cg = Cgroup::load_with_specified_controllers(
                hierarchies::auto(),
                &rel,
                vec![controller.to_owned()],
            );
            if controller == "cpuset" {
                // A new v1 cpuset is empty and takes no task until it has CPUs and memory nodes.
                for d in [parent_dir.as_path(), dir.as_path()] {
                    inherit_cpuset(d).map_err(|source| Error::Cgroup {
                        op: "initialise cpuset".into(),
                        path: d.to_owned(),
                        source,
                    })?;
                }
            }
            self.groups.push((controller.to_owned(), cg, dir));
        }
        self.apply(limits)
    }

    fn apply(&self, limits: &LimitsConfig) -> Result<(), Error> {
        // cgroups-rs's apply() drops memory and cpuset write errors: set those through the
        // controllers' own setters, which report them.
        for (controller, cg, dir) in &self.groups {
            if let (Some(m), Some(mem)) = (limits.memory, cg.controller_of::<MemController>()) {
                mem.set_limit(m as i64)
                    .map_err(|e| cgroup_error(&format!("set memory limit ({controller})"), dir, e))?;
            }
            if let Some(cpuset) = cg.controller_of::<CpuSetController>() {
                if let Some(cpus) = &limits.cpuset_cpus {
                    cpuset.set_cpus(cpus).map_err(|e| cgroup_error("set cpuset.cpus", dir, e))?;
                }
                if let Some(mems) = &limits.cpuset_mems {
                    cpuset.set_mems(mems).map_err(|e| cgroup_error("set cpuset.mems", dir, e))?;
                }
            }
        }
        let mut res = Resources::default();
        res.pid.maximum_number_of_processes = limits.pids.map(|p| MaxValue::Value(p as i64));
        if let Some((quota, period)) = limits.cpu_quota {
            res.cpu.quota = Some(quota.as_micros() as i64);
            res.cpu.period = Some(period.as_micros() as u64);
        }
        res.cpu.shares = limits.cpu_weight.map(|w| match self.layout {
            // cgroups-rs writes cpu.weight on v2 and cpu.shares on v1 (1024 = weight 100).
            Layout::Unified => w,
            _ => (w * 1024 / 100).clamp(2, 262_144),
        });
        for (controller, cg, dir) in &self.groups {
            cg.apply(&res).map_err(|e| cgroup_error(&format!("apply {controller} limits"), dir, e))?;
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

    /// Writes `file` in the directory of `controller` (v2: the one directory).
    fn write(&self, controller: &str, file: &str, value: &str) -> Result<(), Error> {
        let Some(dir) = self.dir(controller) else { return Ok(()) };
        let path = dir.join(file);
        fs::write(&path, value).map_err(|e| match e.raw_os_error() {
            Some(libc::ENOENT) => Error::Unsupported {
                what: format!("{file} ({controller} controller)"),
                reason: format!(
                    "{} does not exist on this host (e.g. swap accounting is off)",
                    path.display()
                ),
            },
            _ => Error::Cgroup { op: "write".into(), path, source: e },
        })
    }

    fn dir(&self, controller: &str) -> Option<&Path> {
        let want = if self.layout == Layout::Unified { "unified" } else { controller };
        self.groups.iter().find(|(c, ..)| c == want).map(|(.., d)| d.as_path())
    }

    fn read(&self, controller: &str, file: &str) -> Option<String> {
        fs::read_to_string(self.dir(controller)?.join(file)).ok()
    }

    /// A directory descriptor of the v2 cgroup, for `CLONE_INTO_CGROUP`.
    pub(crate) fn clone_into_fd(&self) -> Option<OwnedFd> {
        if self.layout != Layout::Unified {
            return None;
        }
        let dir = self.dir("unified")?;
        fs::File::open(dir).ok().map(OwnedFd::from)
    }

    /// Moves process `pid` into every directory of the cgroup.
    pub(crate) fn attach(&self, pid: libc::pid_t) -> Result<(), Error> {
        for (controller, _, dir) in &self.groups {
            fs::write(dir.join("cgroup.procs"), pid.to_string()).map_err(|source| Error::Cgroup {
                op: format!("join {controller} cgroup"),
                path: dir.clone(),
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
            _ => (
                num(self.read("memory", "memory.max_usage_in_bytes")),
                key(self.read("memory", "memory.oom_control"), "oom_kill ").unwrap_or(0) > 0,
                num(self.read("pids", "pids.peak")),
            ),
        }
    }

    /// Kills every process left in the cgroup and removes its directories, retrying while the
    /// kernel still reports them busy. Idempotent.
    pub(crate) fn destroy(&mut self) {
        if self.removed {
            return;
        }
        self.kill_all();
        for (_, cg, dir) in self.groups.iter().rev() {
            remove_dir_retrying(cg, dir);
        }
        self.removed = true;
    }

    /// Kills every process in the cgroup (v2: `cgroup.kill`; v1: freeze, kill, thaw).
    pub(crate) fn kill_all(&self) {
        match self.layout {
            Layout::Unified => {
                if let Some((_, cg, dir)) = self.groups.first() {
                    // cgroup.kill (5.14+) kills every process atomically, forks included.
                    if cg.kill().is_err() {
                        kill_listed(dir);
                    }
                }
            }
            _ => {
                // Freeze so nothing can fork while we kill, kill, then thaw so they can die.
                let freezer = self.groups.iter().find(|(c, ..)| c == "freezer");
                if let Some((_, _, dir)) = freezer {
                    let state = dir.join("freezer.state");
                    let _ = fs::write(&state, "FROZEN");
                    // FREEZING until every task has stopped; only then can nothing fork.
                    for _ in 0..1000 {
                        match fs::read_to_string(&state) {
                            Ok(s) if s.trim() == "FREEZING" => std::thread::yield_now(),
                            _ => break,
                        }
                    }
                }
                for (_, _, dir) in &self.groups {
                    kill_listed(dir);
                }
                if let Some((_, _, dir)) = freezer {
                    let _ = fs::write(dir.join("freezer.state"), "THAWED");
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

/// SIGKILL to every process listed in `dir/cgroup.procs`.
fn kill_listed(dir: &Path) {
    let procs = fs::read_to_string(dir.join("cgroup.procs")).unwrap_or_default();
    for pid in procs.lines().filter_map(|l| l.trim().parse::<i32>().ok()) {
        let _ = nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), nix::sys::signal::Signal::SIGKILL);
    }
}

/// `rmdir` with retries on EBUSY: killed processes leave the cgroup only once the kernel has
/// finished tearing them down.
fn remove_dir_retrying(cg: &Cgroup, dir: &Path) {
    let mut delay = Duration::from_micros(100);
    for _ in 0..40 {
        match cg.delete() {
            Ok(()) => return,
            Err(_) if !dir.exists() => return,
            Err(_) => {
                kill_listed(dir);
                std::thread::sleep(delay);
                delay = (delay * 2).min(Duration::from_millis(100));
            }
        }
    }
}

/// Removes empty cgroups left by embedding processes that died without cleaning up: named by a
/// pid that no longer exists here, and untouched for a minute (so a peer's group that was just
/// made and is about to be joined is never taken). A cgroup holding processes cannot be removed
/// (rmdir fails) and is left alone.
fn gc_stale(parent: &Path) {
    static DONE: std::sync::Mutex<Vec<PathBuf>> = std::sync::Mutex::new(Vec::new());
    {
        let mut done = DONE.lock().unwrap_or_else(|e| e.into_inner());
        if done.iter().any(|p| p == parent) {
            return;
        }
        done.push(parent.to_owned());
    }
    let Ok(entries) = fs::read_dir(parent) else { return };
    for entry in entries.flatten() {
        let name = entry.file_name();
        let Some(pid) = name.to_str().and_then(|n| n.strip_prefix("sb-")).and_then(|n| n.split('-').next())
        else {
            continue;
        };
        let Ok(pid) = pid.parse::<i32>() else { continue };
        let alive = !matches!(
            nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), None),
            Err(nix::errno::Errno::ESRCH)
        );
        let idle = entry
            .metadata()
            .and_then(|m| m.modified())
            .ok()
            .and_then(|t| t.elapsed().ok())
            .is_some_and(|age| age > Duration::from_secs(60));
        if !alive && idle {
            let _ = fs::remove_dir(entry.path());
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

fn cgroup_error(op: &str, dir: &Path, e: cgroups_rs::error::Error) -> Error {
    let source = std::error::Error::source(&e)
        .and_then(|s| s.downcast_ref::<std::io::Error>())
        .and_then(std::io::Error::raw_os_error)
        .map(std::io::Error::from_raw_os_error)
        .unwrap_or_else(|| std::io::Error::other(e.to_string()));
    Error::Cgroup { op: op.to_owned(), path: dir.to_owned(), source }
}
