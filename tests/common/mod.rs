//! Helpers shared by the integration tests. The suite runs twice (see `tests/run-all`): as root,
//! and as uid 65534, where every sandbox adds a user namespace.

#![allow(dead_code)]

use std::io::{BufRead, BufReader, Write};
use std::os::fd::{AsFd, FromRawFd, OwnedFd};
use std::time::Duration;

use stockade::{Mount, Namespaces, Output, Root, Sandbox, SandboxBuilder};

pub fn is_root() -> bool {
    nix::unistd::geteuid().is_root()
}

/// `ns`, plus a user namespace when the tests run unprivileged (other namespaces need one).
pub fn ns(ns: Namespaces) -> Namespaces {
    if is_root() || ns.is_empty() { ns } else { ns | Namespaces::USER }
}

/// A builder with `ns` (see [`ns`]).
pub fn builder(namespaces: Namespaces) -> SandboxBuilder {
    let mut b = Sandbox::builder();
    b.namespaces(ns(namespaces));
    b
}

pub fn sandbox(namespaces: Namespaces) -> Sandbox {
    builder(namespaces).build().expect("build sandbox")
}

/// Runs `script` with `/bin/sh -c` and returns its output, failing on setup errors.
pub fn sh(sandbox: &Sandbox, script: &str) -> Output {
    sandbox.command("/bin/sh").args(["-c", script]).output().expect("run sh in sandbox")
}

/// Like [`sh`], and asserts success; returns stdout as a string.
pub fn sh_ok(sandbox: &Sandbox, script: &str) -> String {
    let out = sh(sandbox, script);
    assert!(
        out.status.success(),
        "script {script:?} failed: {}\nstdout: {}\nstderr: {}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).expect("utf-8 output")
}

/// Records that a test cannot run in this mode and why. The reason goes to stderr and, when the
/// runner set `STOCKADE_SKIP_LOG`, to that file, which the runner prints at the end: a skip is
/// never silent.
pub fn skip(test: &str, reason: &str) {
    // The runner names the lane (e.g. the cgroup v2 guest) when it is not this host.
    let lane = std::env::var("STOCKADE_TEST_LANE").map(|l| format!(", {l}")).unwrap_or_default();
    let line = format!("SKIP {test} (uid {}{lane}): {reason}\n", nix::unistd::geteuid());
    eprint!("{line}");
    // Held while the log is open: a test counting descriptors meanwhile would count it.
    let _open = DESCRIPTORS.lock().unwrap_or_else(|e| e.into_inner());
    if let Ok(path) = std::env::var("STOCKADE_SKIP_LOG")
        && let Ok(mut f) = std::fs::OpenOptions::new().append(true).create(true).open(path)
    {
        let _ = f.write_all(line.as_bytes());
    }
}

/// Held by whatever opens a descriptor for an instant outside the serialized tests (a skip
/// writing its log) and by [`fd_count`].
static DESCRIPTORS: std::sync::Mutex<()> = std::sync::Mutex::new(());

/// Number of open descriptors of this process. As root, the cgroup reaper (which keeps one
/// socket for the life of the process) is started first, so counts taken before and after a
/// test's first cgroup compare.
pub fn fd_count() -> usize {
    if is_root() {
        cgroup_prefix();
    }
    let _counting = DESCRIPTORS.lock().unwrap_or_else(|e| e.into_inner());
    std::fs::read_dir("/proc/self/fd").expect("read /proc/self/fd").count() - 1
}

/// What each open descriptor of this process refers to (for a leak's message).
pub fn fd_targets() -> Vec<String> {
    let _counting = DESCRIPTORS.lock().unwrap_or_else(|e| e.into_inner());
    let mut out: Vec<String> = std::fs::read_dir("/proc/self/fd")
        .expect("read /proc/self/fd")
        .filter_map(|e| e.ok())
        .map(|e| {
            format!(
                "{} -> {}",
                e.file_name().to_string_lossy(),
                std::fs::read_link(e.path()).map(|p| p.display().to_string()).unwrap_or_default()
            )
        })
        .collect();
    out.sort();
    out
}

/// Pids of this process's children (over all threads), except the reaper stockade starts once
/// per embedding program (it lives as long as the program; see [`reaper`]).
pub fn own_children() -> Vec<i32> {
    // Each child is asked whether it is the reaper: a second scan of the children lists could
    // miss it while it moves to another thread of this process (a test thread that started it
    // ending), and count it as left behind.
    children_of(std::process::id() as i32).into_iter().filter(|&p| !is_reaper(p)).collect()
}

/// The pid of this process's cgroup reaper (a child named `stockade-reaper`), if it has one.
/// A reaper that died (a zombie) counts as none.
pub fn reaper() -> Option<i32> {
    children_of(std::process::id() as i32).into_iter().find(|&p| is_reaper(p))
}

/// Whether `pid` is a live cgroup reaper.
fn is_reaper(pid: i32) -> bool {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    stat.contains("(stockade-reaper)") && !stat.contains(") Z ")
}

/// Pids of the children of `pid` (over all its threads).
pub fn children_of(pid: i32) -> Vec<i32> {
    let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) else { return Vec::new() };
    let mut out = Vec::new();
    for task in tasks.flatten() {
        if let Ok(text) = std::fs::read_to_string(task.path().join("children")) {
            out.extend(text.split_whitespace().filter_map(|p| p.parse::<i32>().ok()));
        }
    }
    out
}

/// `pid` and all its descendants.
pub fn tree_of(pid: i32) -> Vec<i32> {
    let mut all = vec![pid];
    let mut i = 0;
    while i < all.len() {
        let kids = children_of(all[i]);
        all.extend(kids);
        i += 1;
    }
    all
}

/// A pidfd for `pid`, or `None` if it no longer exists.
pub fn pidfd_open(pid: i32) -> Option<OwnedFd> {
    let fd = unsafe { libc::syscall(libc::SYS_pidfd_open, pid, 0) };
    if fd < 0 { None } else { Some(unsafe { OwnedFd::from_raw_fd(fd as i32) }) }
}

/// Waits (on its pidfd, not by sleeping) until `pid` has exited; false if it is still alive
/// after `timeout`.
pub fn wait_gone(pid: i32, timeout: Duration) -> bool {
    let Some(fd) = pidfd_open(pid) else { return true };
    let mut fds = [nix::poll::PollFd::new(fd.as_fd(), nix::poll::PollFlags::POLLIN)];
    let ms = nix::poll::PollTimeout::try_from(timeout.as_millis().min(i32::MAX as u128) as i32).unwrap();
    matches!(nix::poll::poll(&mut fds, ms), Ok(n) if n > 0)
}

/// Reads lines from `reader` until one satisfies `pred`; returns it.
pub fn read_until(reader: &mut impl BufRead, pred: impl Fn(&str) -> bool) -> String {
    let mut line = String::new();
    let mut passed = String::new();
    loop {
        line.clear();
        let n = reader.read_line(&mut line).expect("read line");
        assert!(n > 0, "stream ended before the expected line, after: {passed:?}");
        passed.push_str(&line);
        if pred(line.trim_end()) {
            return line.trim_end().to_owned();
        }
    }
}

pub fn buffered<R: std::io::Read>(r: R) -> BufReader<R> {
    BufReader::new(r)
}

/// Whether `program` exists on the host (for tests that use a tool inside the sandbox).
pub fn have(program: &str) -> bool {
    std::path::Path::new(program).exists()
}

/// The namespace inode of `kind` (e.g. "net") of process `pid` ("self" allowed).
pub fn ns_inode(pid: &str, kind: &str) -> String {
    std::fs::read_link(format!("/proc/{pid}/ns/{kind}")).expect("read ns link").to_string_lossy().into_owned()
}

/// A builder for a sandbox with `root` (plus a mount namespace) and the system mounts.
pub fn rooted(namespaces: Namespaces, root: Root) -> SandboxBuilder {
    let mut b = builder(namespaces | Namespaces::MOUNT);
    b.root(root).mounts(Mount::host_system());
    b
}

/// The mount points of a mountinfo text, in order.
pub fn mount_points(mountinfo: &str) -> Vec<String> {
    mountinfo.lines().filter_map(|l| l.split(' ').nth(4)).map(str::to_owned).collect()
}

/// Every file under `dir` with its type, mode and contents (symlink targets for links): a
/// fingerprint to prove a host tree unchanged.
pub fn snapshot(dir: &std::path::Path) -> Vec<(String, u32, Vec<u8>)> {
    use std::os::unix::fs::MetadataExt;
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(p) = stack.pop() {
        let meta = std::fs::symlink_metadata(&p).unwrap();
        let data = if meta.file_type().is_symlink() {
            std::fs::read_link(&p).unwrap().into_os_string().into_encoded_bytes()
        } else if meta.is_file() {
            std::fs::read(&p).unwrap()
        } else {
            if meta.is_dir() {
                let mut entries: Vec<_> = std::fs::read_dir(&p).unwrap().map(|e| e.unwrap().path()).collect();
                entries.sort();
                stack.extend(entries);
            }
            Vec::new()
        };
        out.push((p.display().to_string(), meta.mode(), data));
    }
    out
}

/// Held by the tests of one binary that must not overlap: descriptor, child and cgroup counts
/// are per process, and some tests load the machine on purpose.
pub fn serial() -> std::sync::MutexGuard<'static, ()> {
    static SERIAL: std::sync::Mutex<()> = std::sync::Mutex::new(());
    SERIAL.lock().unwrap_or_else(|e| e.into_inner())
}

/// A temporary directory any test user can use.
pub fn tempdir() -> TempDir {
    TempDir(tempfile::Builder::new().prefix("stockade-test-").tempdir().expect("temp dir"))
}

/// A temporary directory removed with everything in it when dropped, including directories a
/// test or an image made inaccessible (mode 0000 or 0555, an overlayfs work directory), which
/// a rootless run could not otherwise remove.
pub struct TempDir(tempfile::TempDir);

impl TempDir {
    pub fn path(&self) -> &std::path::Path {
        self.0.path()
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        open_up(self.0.path());
    }
}

/// Gives the owner full access to every directory under `path` (not following links).
pub fn open_up(path: &std::path::Path) {
    use std::os::unix::fs::PermissionsExt;
    let Ok(meta) = std::fs::symlink_metadata(path) else { return };
    if meta.is_dir() {
        let _ = std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o700));
        if let Ok(entries) = std::fs::read_dir(path) {
            for e in entries.flatten() {
                open_up(&e.path());
            }
        }
    }
}

/// The `run` example, a real embedding program (`cargo test` builds the examples).
pub fn run_example() -> std::path::PathBuf {
    let path = std::env::current_exe().unwrap().parent().unwrap().parent().unwrap().join("examples/run");
    assert!(path.exists(), "{} missing: `cargo test` builds the examples", path.display());
    path
}

/// Waits until process `pid` sleeps in `nanosleep` (a `sleep` payload has finished loading and
/// holds only what it will keep): its descriptors can be inspected then.
pub fn wait_until_sleeping(pid: i32) {
    wait_until_blocked_in(pid, "nanosleep");
}

/// Waits (up to 10 s) until `pid` is blocked in a kernel function whose name contains `wchan`.
pub fn wait_until_blocked_in(pid: i32, wchan: &str) {
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while !std::fs::read_to_string(format!("/proc/{pid}/wchan")).unwrap_or_default().contains(wchan) {
        assert!(std::time::Instant::now() < deadline, "process {pid} never blocked in {wchan}");
        std::thread::yield_now();
    }
}

/// The random prefix (`sb-` and 16 hex digits) of the cgroups this process's sandboxes get, found
/// the way an administrator would: from a sandbox's `/proc/<pid>/cgroup`, read on the host. Needs
/// cgroups this user can create (root).
pub fn cgroup_prefix() -> String {
    static PREFIX: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    PREFIX
        .get_or_init(|| {
            let sandbox = Sandbox::builder().pids_limit(16).build().expect("sandbox with a pids limit");
            let mut child = sandbox
                .command("/bin/sleep")
                .arg("60")
                .stdin(stockade::Stdio::null())
                .spawn()
                .expect("spawn sleep");
            let text = std::fs::read_to_string(format!("/proc/{}/cgroup", child.id())).unwrap();
            child.kill().unwrap();
            child.wait().unwrap();
            let name = text
                .split(['/', '\n', ':'])
                .find(|part| part.starts_with("sb-"))
                .unwrap_or_else(|| panic!("no sandbox group in {text}"));
            name.rsplit_once('-').expect("sb-PREFIX-N").0.to_owned()
        })
        .clone()
}

/// All `sb-*` cgroup directories this process created that still exist.
pub fn leftover_cgroups() -> Vec<std::path::PathBuf> {
    let prefix = format!("{}-", cgroup_prefix());
    let mut found = Vec::new();
    let mut stack = vec![std::path::PathBuf::from("/sys/fs/cgroup")];
    while let Some(dir) = stack.pop() {
        let Ok(entries) = std::fs::read_dir(&dir) else { continue };
        for e in entries.flatten() {
            if e.file_type().map(|t| t.is_dir()).unwrap_or(false) {
                let path = e.path();
                if e.file_name().to_string_lossy().starts_with(&prefix) {
                    found.push(path);
                } else if path.components().count() < 9 {
                    stack.push(path);
                }
            }
        }
    }
    found
}

/// The subdirectories of `dir` (none if it cannot be read).
pub fn children_dirs(dir: &std::path::Path) -> Vec<std::path::PathBuf> {
    let Ok(entries) = std::fs::read_dir(dir) else { return Vec::new() };
    entries.flatten().filter(|e| e.file_type().is_ok_and(|t| t.is_dir())).map(|e| e.path()).collect()
}

/// A pseudo-terminal pair (master, slave), in raw mode, that is nobody's controlling terminal.
pub fn open_pty() -> (std::fs::File, std::fs::File) {
    // SAFETY: standard posix_openpt/grantpt/unlockpt/ptsname_r sequence on descriptors owned here.
    unsafe {
        let master = libc::posix_openpt(libc::O_RDWR | libc::O_NOCTTY | libc::O_CLOEXEC);
        assert!(master >= 0);
        assert_eq!(libc::grantpt(master), 0);
        assert_eq!(libc::unlockpt(master), 0);
        let mut name = [0 as libc::c_char; 128];
        assert_eq!(libc::ptsname_r(master, name.as_mut_ptr(), name.len()), 0);
        let slave = libc::open(name.as_ptr(), libc::O_RDWR | libc::O_NOCTTY | libc::O_CLOEXEC);
        assert!(slave >= 0);
        // Raw mode: every byte injected or typed counts at once (not only complete lines).
        let mut t: libc::termios = std::mem::zeroed();
        assert_eq!(libc::tcgetattr(slave, &mut t), 0);
        libc::cfmakeraw(&mut t);
        assert_eq!(libc::tcsetattr(slave, libc::TCSANOW, &t), 0);
        (std::fs::File::from_raw_fd(master), std::fs::File::from_raw_fd(slave))
    }
}

/// Adds a `user` key `desc` holding `secret` to `keyring` (a `KEY_SPEC_*`) of this process;
/// returns its id.
pub fn add_user_key(desc: &str, secret: &[u8], keyring: i32) -> i64 {
    let cdesc = std::ffi::CString::new(desc).unwrap();
    // SAFETY: NUL-terminated strings and a live payload buffer of the length passed.
    let id = unsafe {
        libc::syscall(
            libc::SYS_add_key,
            c"user".as_ptr(),
            cdesc.as_ptr(),
            secret.as_ptr(),
            secret.len(),
            keyring,
        )
    };
    assert!(id > 0, "add_key {desc}: {}", std::io::Error::last_os_error());
    id
}

/// A process on the host (outside any sandbox) that a test uses as a target: killed and reaped
/// when dropped, so a failing test leaves nothing running.
pub struct HostProcess(pub std::process::Child);

impl HostProcess {
    /// `sleep 3600`, on the host.
    pub fn sleeper() -> HostProcess {
        HostProcess::spawn(std::process::Command::new("/bin/sleep").arg("3600"))
    }

    /// `command`, started on the host.
    pub fn spawn(command: &mut std::process::Command) -> HostProcess {
        HostProcess(command.spawn().unwrap_or_else(|e| panic!("start {command:?} on the host: {e}")))
    }

    pub fn id(&self) -> u32 {
        self.0.id()
    }

    pub fn try_wait(&mut self) -> std::io::Result<Option<std::process::ExitStatus>> {
        self.0.try_wait()
    }
}

impl Drop for HostProcess {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// `b`, with the explicit legacy overlay mode ([`SandboxBuilder::legacy_overlay`]) where this
/// kernel's overlayfs lacks `lowerdir+` (before 6.8), so that tests of what an image's overlay
/// root shows run there too. Where that happens, the skip log says so once per test binary.
pub fn overlay_as_supported(b: &mut SandboxBuilder) -> &mut SandboxBuilder {
    static MISSING: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    let missing = *MISSING.get_or_init(|| {
        let report = stockade::probe();
        let feature = report.feature("overlayfs lowerdir+").expect("the probe reports lowerdir+");
        if !feature.available {
            skip(
                "overlay roots through lowerdir+",
                &format!("{}: image roots use legacy_overlay() instead", feature.detail),
            );
        }
        !feature.available
    });
    if missing {
        b.legacy_overlay();
    }
    b
}

/// The static busybox of Debian's busybox-static (the payload of hand-built roots and images).
pub fn busybox() -> std::path::PathBuf {
    ["/bin/busybox", "/usr/bin/busybox"]
        .iter()
        .map(std::path::PathBuf::from)
        .find(|p| p.exists())
        .expect("busybox-static installed")
}
