//! The escape suite: one attack per item of security.md sections A, B, D and E, and one per class
//! of system call the default filter refuses, all against the recommended configuration
//! (`Sandbox::untrusted()`). Every test asserts that the attack fails with its documented outcome
//! (the exact errno, signal or typed error) and that something on the host side stayed as it was.
//!
//! Most attacks are python3 (`ctypes`) programs that make raw system calls. They run under a
//! small protocol: the payload prints `ARMED` and waits for a line on stdin; the test records a
//! host-side view of the payload (its namespaces, descriptors, personality, mounts, status and
//! cgroup, as read from the host's /proc) and the host sentinels it cares about; it releases the
//! payload, which attacks, prints one line per attempt (`name -1 ERRNO` or `name ... ok`), then
//! `READY`, and waits again while the host takes the view once more. So the effect of every
//! attack is also checked from outside, while the payload still lives. The i386 and x32 attacks
//! are small C programs with inline assembly, compiled here at test time.
//!
//! As uid 65534 there is no cgroup delegation: the configuration runs with
//! `resource_compat(BestEffort)`, and the attacks that need a cgroup limit to be bounded (fork
//! bomb, memory hog) record a skip there.

mod common;

use std::collections::BTreeMap;
use std::io::{BufRead, Read, Write};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::{RwLock, RwLockReadGuard, RwLockWriteGuard};
use std::time::Duration;

use common::*;
use stockade::{
    Action, Capability, Command, Compat, Error, Limit, Mount, Root, Sandbox, SandboxBuilder, Stage, Stdio,
    SyscallFilter, SyscallRule, UNTRUSTED_IDS,
};

// ---------------------------------------------------------------------------------------------
// Harness
// ---------------------------------------------------------------------------------------------

/// Most tests share the machine; the ones that count this process's descriptors and children or
/// load the machine on purpose hold it alone.
static MACHINE: RwLock<()> = RwLock::new(());

fn shared() -> RwLockReadGuard<'static, ()> {
    MACHINE.read().unwrap_or_else(|e| e.into_inner())
}

fn exclusive() -> RwLockWriteGuard<'static, ()> {
    MACHINE.write().unwrap_or_else(|e| e.into_inner())
}

/// The recommended configuration. Without cgroup delegation (uid 65534) its limits cannot be
/// enforced, which `Compat::Enforce` refuses: best effort there (the tests that depend on a limit
/// skip in that mode).
fn untrusted() -> SandboxBuilder {
    let mut b = Sandbox::untrusted();
    if !is_root() {
        b.resource_compat(Compat::BestEffort);
    }
    b
}

fn recommended() -> Sandbox {
    untrusted().build().expect("build the recommended sandbox")
}

/// A name unique to this process and `tag`.
fn marker(tag: &str) -> String {
    format!("stockade-escape-{}-{tag}", std::process::id())
}

/// The contents of a host file, or "" when it cannot be read.
fn read(path: impl AsRef<Path>) -> String {
    std::fs::read_to_string(path).unwrap_or_default()
}

/// The host's mount points, as this process sees them.
fn host_mounts() -> Vec<String> {
    mount_points(&read("/proc/self/mountinfo"))
}

fn host_hostname() -> String {
    nix::unistd::gethostname().unwrap().to_string_lossy().into_owned()
}

fn boot_id() -> String {
    read("/proc/sys/kernel/random/boot_id")
}

/// Mode, owner, group, size, device and modification and change times of a host path.
type Meta = (u32, u32, u32, u64, u64, i64, i64);

/// [`Meta`] of a host path (not following a final link).
fn meta(path: impl AsRef<Path>) -> Option<Meta> {
    let m = std::fs::symlink_metadata(path).ok()?;
    Some((m.mode(), m.uid(), m.gid(), m.size(), m.rdev(), m.mtime(), m.ctime()))
}

/// Entries of a host directory, sorted.
fn listing(dir: impl AsRef<Path>) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .map(|d| d.flatten().map(|e| e.file_name().to_string_lossy().into_owned()).collect())
        .unwrap_or_default();
    names.sort();
    names
}

/// A temporary directory the payload's ids can enter (as root they are host ids from
/// `UNTRUSTED_IDS`, which own nothing).
fn open_tempdir(mode: u32) -> TempDir {
    let dir = tempdir();
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(mode)).unwrap();
    dir
}

fn write_file(path: &Path, contents: &str, mode: u32) {
    std::fs::write(path, contents).unwrap();
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).unwrap();
}

/// What the host sees of the payload (and the sandbox's init) in its /proc.
#[derive(Clone, Debug, Default, PartialEq)]
struct View {
    alive: bool,
    /// Processes in the sandbox's tree, init included.
    tree: usize,
    ns: Vec<(String, String)>,
    /// `fd -> target` of the payload.
    fds: Vec<String>,
    personality: String,
    root: String,
    mountinfo: String,
    cgroup: String,
    /// The pids limit over the payload's group, read from the host's cgroupfs (root).
    pids_max: String,
    /// Ids, capabilities, no_new_privs, seccomp and tracer lines of the payload's status.
    status: Vec<String>,
    /// State and tracer of the init.
    init: Vec<String>,
    environ: Vec<String>,
}

fn status_lines(pid: i32, prefixes: &[&str]) -> Vec<String> {
    read(format!("/proc/{pid}/status"))
        .lines()
        .filter(|l| prefixes.iter().any(|p| l.starts_with(p)))
        .map(str::to_owned)
        .collect()
}

impl View {
    fn of(init: i32, payload: i32) -> View {
        let proc = PathBuf::from(format!("/proc/{payload}"));
        let alive = read(proc.join("stat")).split(") ").nth(1).is_some_and(|s| !s.starts_with('Z'));
        if !alive {
            return View { tree: tree_of(init).len(), ..View::default() };
        }
        let ns = ["user", "mnt", "net", "pid", "uts", "ipc", "cgroup", "time"]
            .iter()
            .filter_map(|k| {
                let link = std::fs::read_link(proc.join("ns").join(k)).ok()?;
                Some((k.to_string(), link.to_string_lossy().into_owned()))
            })
            .collect();
        let mut numbers: Vec<i32> = std::fs::read_dir(proc.join("fd"))
            .map(|d| d.flatten().filter_map(|e| e.file_name().to_string_lossy().parse().ok()).collect())
            .unwrap_or_default();
        numbers.sort();
        let fds = numbers
            .iter()
            .map(|n| {
                let target = std::fs::read_link(proc.join("fd").join(n.to_string()))
                    .map(|t| t.to_string_lossy().into_owned())
                    .unwrap_or_else(|e| format!("<{e}>"));
                format!("{n} -> {target}")
            })
            .collect();
        View {
            alive,
            tree: tree_of(init).len(),
            ns,
            fds,
            personality: read(proc.join("personality")),
            root: std::fs::read_link(proc.join("root")).map(|p| p.display().to_string()).unwrap_or_default(),
            mountinfo: read(proc.join("mountinfo")),
            cgroup: read(proc.join("cgroup")),
            pids_max: pids_max(&read(proc.join("cgroup"))),
            status: status_lines(payload, &["Uid:", "Gid:", "Cap", "NoNewPrivs:", "Seccomp:", "TracerPid:"]),
            init: status_lines(init, &["State:", "TracerPid:"]),
            environ: std::fs::read(proc.join("environ"))
                .unwrap_or_default()
                .split(|b| *b == 0)
                .filter(|v| !v.is_empty())
                .map(|v| String::from_utf8_lossy(v).into_owned())
                .collect(),
        }
    }

    fn ns(&self, kind: &str) -> &str {
        self.ns.iter().find(|(k, _)| k == kind).map(|(_, v)| v.as_str()).unwrap_or("")
    }
}

/// The pids limit that applies to a process with cgroup file `cgroup`: `pids.max` of its group
/// or of the group above it (where stockade puts the limits), "" where none is set or readable.
fn pids_max(cgroup: &str) -> String {
    let Some(path) = cgroup.lines().find_map(|l| {
        let mut parts = l.splitn(3, ':');
        let (_, controllers, path) = (parts.next()?, parts.next()?, parts.next()?);
        match controllers {
            "pids" => Some(Path::new("/sys/fs/cgroup/pids").join(path.trim_start_matches('/'))),
            "" => Some(Path::new("/sys/fs/cgroup").join(path.trim_start_matches('/'))),
            _ => None,
        }
    }) else {
        return String::new();
    };
    [path.join("pids.max"), path.join("../pids.max")]
        .iter()
        .map(|f| read(f).trim().to_owned())
        .find(|v| !v.is_empty() && v != "max")
        .unwrap_or_default()
}

/// One run of an attack program under the ARMED/READY protocol.
struct Probe {
    /// What the program printed between ARMED and READY (or its end).
    said: String,
    stderr: String,
    status: stockade::ExitStatus,
    before: View,
    after: View,
}

impl Probe {
    fn dump(&self) -> String {
        format!("status: {}\nstdout:\n{}stderr:\n{}", self.status, self.said, self.stderr)
    }

    /// The line the attack `name` printed.
    fn line(&self, name: &str) -> &str {
        self.said
            .lines()
            .find(|l| l.split(' ').next() == Some(name))
            .unwrap_or_else(|| panic!("no result for {name}\n{}", self.dump()))
    }

    /// Asserts that the attack `name` failed with `errno` (a name such as "EPERM").
    fn refused(&self, name: &str, errno: &str) {
        assert_eq!(self.line(name), format!("{name} -1 {errno}"), "\n{}", self.dump());
    }

    /// Asserts that the control `name` succeeded.
    fn succeeded(&self, name: &str) {
        assert!(self.line(name).ends_with(" ok"), "{name} failed:\n{}", self.dump());
    }

    /// The rest of the line `name` (after the name).
    fn value(&self, name: &str) -> &str {
        let line = self.line(name);
        line.split_once(' ').map(|(_, v)| v).unwrap_or("")
    }

    /// Descriptors the payload holds after the attack that it did not hold before.
    fn new_fds(&self) -> Vec<String> {
        let before: Vec<&str> =
            self.before.fds.iter().map(|f| f.split(" -> ").nth(1).unwrap_or("")).collect();
        self.after
            .fds
            .iter()
            .filter(|f| !before.contains(&f.split(" -> ").nth(1).unwrap_or("")))
            .cloned()
            .collect()
    }
}

/// Runs `argv` in `sandbox` under the ARMED/READY protocol (see the module docs) and checks what
/// every attack must leave alone: the payload's namespaces, root, mounts, personality, ids,
/// capabilities, filter and cgroup (as the host sees them), the init (not traced, not stopped),
/// the number of processes in the sandbox, and the host's hostname.
fn probe(sandbox: &Sandbox, argv: &[&str], setup: impl FnOnce(&mut Command)) -> Probe {
    let hostname = host_hostname();
    let mut cmd = sandbox.command(argv[0]);
    cmd.args(&argv[1..]).stdin(Stdio::piped()).stdout(Stdio::piped()).stderr(Stdio::piped());
    setup(&mut cmd);
    let mut child = cmd.spawn().unwrap_or_else(|e| panic!("spawn {argv:?}: {e}"));
    let mut stdin = child.stdin.take().unwrap();
    let mut stdout = buffered(child.stdout.take().unwrap());
    let mut stderr_pipe = child.stderr.take().unwrap();
    let errors = std::thread::spawn(move || {
        let mut text = String::new();
        let _ = stderr_pipe.read_to_string(&mut text);
        text
    });
    let mut line = String::new();
    let armed = stdout.read_line(&mut line).unwrap() > 0 && line.trim_end() == "ARMED";
    let init = child.id() as i32;
    if !armed {
        drop(stdin);
        let status = child.wait().unwrap();
        panic!("the probe never armed: {line:?}, {status}\nstderr: {}", errors.join().unwrap());
    }
    let payload = *children_of(init).first().expect("the payload under the init");
    let before = View::of(init, payload);
    stdin.write_all(b"go\n").unwrap();
    let mut said = String::new();
    let ready = loop {
        line.clear();
        if stdout.read_line(&mut line).unwrap() == 0 {
            break false;
        }
        if line.trim_end() == "READY" {
            break true;
        }
        said.push_str(&line);
    };
    // A program that died on the way (a crash, SIGSYS) has no state left to compare.
    let after =
        if ready { View::of(init, payload) } else { View { tree: tree_of(init).len(), ..View::default() } };
    drop(stdin);
    let mut rest = String::new();
    let _ = stdout.read_to_string(&mut rest);
    said.push_str(&rest);
    let status = child.wait().unwrap();
    let stderr = errors.join().unwrap();
    let probe = Probe { said, stderr, status, before, after };
    if std::env::var_os("ESCAPE_SUITE_VERBOSE").is_some() {
        eprintln!("{argv:?}\n{}", probe.dump());
    }
    let b = &probe.before;
    assert!(b.alive, "the payload was gone before the attack\n{}", probe.dump());
    // The host really sees the payload (the comparisons below are not of empty views).
    assert!(
        b.ns.len() == 8
            && !b.fds.is_empty()
            && !b.personality.is_empty()
            && !b.root.is_empty()
            && !b.mountinfo.is_empty()
            && b.status.len() == 10
            && b.init.len() == 2,
        "the host cannot read the payload's /proc: {b:?}"
    );
    let a = &probe.after;
    if a.alive {
        assert_eq!(a.ns, b.ns, "the payload changed namespaces\n{}", probe.dump());
        assert_eq!(a.root, b.root, "the payload changed its root\n{}", probe.dump());
        assert_eq!(a.mountinfo, b.mountinfo, "the payload's mounts changed\n{}", probe.dump());
        assert_eq!(a.personality, b.personality, "the payload's personality changed\n{}", probe.dump());
        assert_eq!(a.status, b.status, "the payload's ids or privileges changed\n{}", probe.dump());
        assert_eq!(a.cgroup, b.cgroup, "the payload changed cgroups\n{}", probe.dump());
        assert_eq!(a.pids_max, b.pids_max, "the sandbox's pids limit changed\n{}", probe.dump());
        assert_eq!(a.init, b.init, "the init was traced or stopped\n{}", probe.dump());
        assert_eq!(a.tree, b.tree, "processes were left in the sandbox\n{}", probe.dump());
    }
    assert_eq!(host_hostname(), hostname, "the host's hostname changed");
    probe
}

/// System call numbers of this machine, for the python programs.
fn sys_numbers() -> String {
    #[allow(unused_mut)]
    let mut numbers: Vec<(&str, libc::c_long)> = vec![
        ("keyctl", libc::SYS_keyctl),
        ("add_key", libc::SYS_add_key),
        ("request_key", libc::SYS_request_key),
        ("bpf", libc::SYS_bpf),
        ("perf_event_open", libc::SYS_perf_event_open),
        ("userfaultfd", libc::SYS_userfaultfd),
        ("io_uring_setup", libc::SYS_io_uring_setup),
        ("io_uring_enter", libc::SYS_io_uring_enter),
        ("io_uring_register", libc::SYS_io_uring_register),
        ("unshare", libc::SYS_unshare),
        ("clone", libc::SYS_clone),
        ("clone3", libc::SYS_clone3),
        ("setns", libc::SYS_setns),
        ("mount", libc::SYS_mount),
        ("umount2", libc::SYS_umount2),
        ("fsopen", libc::SYS_fsopen),
        ("fsconfig", libc::SYS_fsconfig),
        ("fsmount", libc::SYS_fsmount),
        ("fspick", libc::SYS_fspick),
        ("move_mount", libc::SYS_move_mount),
        ("open_tree", libc::SYS_open_tree),
        ("mount_setattr", libc::SYS_mount_setattr),
        ("pivot_root", libc::SYS_pivot_root),
        ("chroot", libc::SYS_chroot),
        ("open_by_handle_at", libc::SYS_open_by_handle_at),
        ("kexec_load", libc::SYS_kexec_load),
        ("kexec_file_load", libc::SYS_kexec_file_load),
        ("init_module", libc::SYS_init_module),
        ("finit_module", libc::SYS_finit_module),
        ("delete_module", libc::SYS_delete_module),
        ("reboot", libc::SYS_reboot),
        ("swapon", libc::SYS_swapon),
        ("swapoff", libc::SYS_swapoff),
        ("acct", libc::SYS_acct),
        ("quotactl", libc::SYS_quotactl),
        ("quotactl_fd", libc::SYS_quotactl_fd),
        ("syslog", libc::SYS_syslog),
        ("personality", libc::SYS_personality),
        ("ioctl", libc::SYS_ioctl),
        ("socket", libc::SYS_socket),
        ("ptrace", libc::SYS_ptrace),
        ("process_vm_readv", libc::SYS_process_vm_readv),
        ("process_vm_writev", libc::SYS_process_vm_writev),
        ("settimeofday", libc::SYS_settimeofday),
        ("clock_settime", libc::SYS_clock_settime),
        ("clock_adjtime", libc::SYS_clock_adjtime),
        ("adjtimex", libc::SYS_adjtimex),
        ("sethostname", libc::SYS_sethostname),
        ("setdomainname", libc::SYS_setdomainname),
        ("vhangup", libc::SYS_vhangup),
        ("mknodat", libc::SYS_mknodat),
    ];
    #[cfg(target_arch = "x86_64")]
    numbers.extend([
        ("iopl", libc::SYS_iopl),
        ("ioperm", libc::SYS_ioperm),
        ("lookup_dcookie", libc::SYS_lookup_dcookie),
    ]);
    let items: Vec<String> = numbers.iter().map(|(n, v)| format!("{n}={v}")).collect();
    format!("SYS = dict({})", items.join(", "))
}

/// Helpers every python attack starts with; the attack follows, then [`PY_END`].
const PY_PRELUDE: &str = r#"
import ctypes, errno, os, socket, struct, sys
libc = ctypes.CDLL(None, use_errno=True)
libc.syscall.restype = ctypes.c_long
def _arg(a):
    return ctypes.c_long(a) if isinstance(a, int) else a
def call(nr, *args):
    ctypes.set_errno(0)
    r = libc.syscall(ctypes.c_long(nr), *[_arg(a) for a in args])
    return r, ctypes.get_errno()
def name_of(e):
    return errno.errorcode.get(e, str(e))
def show(name, r, e):
    print(name, r, name_of(e) if r == -1 else 'ok', flush=True)
def report(name, nr, *args):
    r, e = call(nr, *args)
    show(name, r, e)
    return r
def try_os(name, f):
    try:
        r = f()
    except OSError as e:
        print(name, -1, name_of(e.errno), flush=True)
        return None
    print(name, 'ok', flush=True)
    return r
def say(*a):
    print(*a, flush=True)
say('ARMED')
sys.stdin.readline()
"#;

const PY_END: &str = "\nsay('READY')\nsys.stdin.read()\n";

/// Fills `@NAME@` placeholders of a python snippet.
fn fill(snippet: &str, values: &[(&str, &str)]) -> String {
    values.iter().fold(snippet.to_owned(), |s, (k, v)| s.replace(&format!("@{k}@"), v))
}

/// Runs the python `attack` in `sandbox` (see [`probe`]); `None` (after recording a skip) when
/// python3 is missing. The python program itself must end normally.
fn py_in(test: &str, sandbox: &Sandbox, attack: &str, setup: impl FnOnce(&mut Command)) -> Option<Probe> {
    if !have("/usr/bin/python3") {
        skip(test, "python3 missing for the attack");
        return None;
    }
    let script = format!("{}\n{PY_PRELUDE}\n{attack}\n{PY_END}", sys_numbers());
    let p = probe(sandbox, &["/usr/bin/python3", "-c", &script], setup);
    assert!(p.status.success(), "the attack program failed\n{}", p.dump());
    Some(p)
}

/// [`py_in`] the recommended sandbox.
fn py(test: &str, attack: &str) -> Option<Probe> {
    py_in(test, &recommended(), attack, |_| {})
}

/// Compiles C `source` with the host's `cc` into `dir/name`; an error (to skip with) when there
/// is no compiler.
fn compile(dir: &Path, name: &str, source: &str) -> Result<PathBuf, String> {
    if !have("/usr/bin/cc") {
        return Err("no C compiler (/usr/bin/cc) for the attack program".into());
    }
    let src = dir.join(format!("{name}.c"));
    std::fs::write(&src, source).unwrap();
    let out = dir.join(name);
    let result = std::process::Command::new("/usr/bin/cc").args(["-O1", "-o"]).arg(&out).arg(&src).output();
    match result {
        Ok(o) if o.status.success() => Ok(out),
        Ok(o) => panic!("cc {name}.c failed: {}", String::from_utf8_lossy(&o.stderr)),
        Err(e) => Err(format!("cannot run cc: {e}")),
    }
}

/// A key in this process's user keyring (`@u`), the sentinel of the keyring attacks. Revoked
/// and unlinked on drop.
struct HostKey {
    id: libc::c_long,
    desc: String,
    secret: Vec<u8>,
}

const KEY_SPEC_USER_KEYRING: libc::c_long = -4;
const KEYCTL_REVOKE: libc::c_long = 3;
const KEYCTL_UNLINK: libc::c_long = 9;
const KEYCTL_SEARCH: libc::c_long = 10;
const KEYCTL_READ: libc::c_long = 11;

fn keyctl(
    op: libc::c_long,
    a: libc::c_long,
    b: libc::c_long,
    c: libc::c_long,
    d: libc::c_long,
) -> libc::c_long {
    // SAFETY: keyctl with integer arguments; callers pass pointers to live buffers as needed.
    unsafe { libc::syscall(libc::SYS_keyctl, op, a, b, c, d) }
}

impl HostKey {
    fn plant(tag: &str) -> HostKey {
        let desc = marker(tag);
        let secret = format!("secret-of-{desc}").into_bytes();
        let id = add_user_key(&desc, &secret, KEY_SPEC_USER_KEYRING as i32);
        HostKey { id, desc, secret }
    }

    /// The key's payload, read by this process.
    fn contents(&self) -> Option<Vec<u8>> {
        let mut buf = vec![0u8; 256];
        let n = keyctl(KEYCTL_READ, self.id, buf.as_mut_ptr() as _, buf.len() as _, 0);
        (n >= 0).then(|| buf[..n as usize].to_vec())
    }

    fn assert_intact(&self) {
        assert_eq!(self.contents(), Some(self.secret.clone()), "the host's key {} changed", self.desc);
    }
}

impl Drop for HostKey {
    fn drop(&mut self) {
        keyctl(KEYCTL_REVOKE, self.id, 0, 0, 0);
        keyctl(KEYCTL_UNLINK, self.id, KEY_SPEC_USER_KEYRING, 0, 0);
    }
}

/// Whether a user key named `desc` is in this process's user keyring.
fn host_has_key(desc: &str) -> bool {
    let cdesc = std::ffi::CString::new(desc).unwrap();
    keyctl(KEYCTL_SEARCH, KEY_SPEC_USER_KEYRING, c"user".as_ptr() as _, cdesc.as_ptr() as _, 0) > 0
}

/// Bytes waiting in a terminal's input queue (where TIOCSTI injects).
fn queued(tty: &std::fs::File) -> i32 {
    let mut n: libc::c_int = 0;
    // SAFETY: FIONREAD writes one int.
    assert_eq!(unsafe { libc::ioctl(tty.as_raw_fd(), libc::FIONREAD, &mut n) }, 0);
    n
}

/// Runs the python `attack` with a host terminal's slave as the payload's fd 3 (passed as it is),
/// and asserts that nothing reached the terminal's input queue and that it still works.
fn tty_attack(test: &str, attack: &str) -> Option<Probe> {
    let (master, slave) = open_pty();
    let passed = slave.try_clone().unwrap();
    let p = py_in(test, &recommended(), attack, |c| {
        c.fd_unrestricted(3, passed);
    })?;
    assert_eq!(queued(&slave), 0, "keystrokes reached the host's terminal\n{}", p.dump());
    // Still a working terminal: what the host types arrives.
    (&master).write_all(b"k").unwrap();
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    while queued(&slave) != 1 {
        assert!(std::time::Instant::now() < deadline, "the host's terminal stopped passing input");
        std::thread::yield_now();
    }
    Some(p)
}

/// The payload's namespaces are the sandbox's own, unchanged, and none of them the host's.
fn assert_own_namespaces(p: &Probe) {
    for (kind, link) in &p.after.ns {
        assert_eq!(link, p.before.ns(kind), "{kind}\n{}", p.dump());
        assert_ne!(*link, ns_inode("self", kind), "{kind} is the host's\n{}", p.dump());
    }
}

/// No descriptor of `kinds` (e.g. "bpf-map") appeared in the payload.
fn assert_no_new_fd_of(p: &Probe, kinds: &[&str]) {
    for fd in p.new_fds() {
        assert!(!kinds.iter().any(|k| fd.contains(k)), "the payload holds {fd}\n{}", p.dump());
    }
}

// ---------------------------------------------------------------------------------------------
// A12: the default syscall filter, one test per class
// ---------------------------------------------------------------------------------------------

#[test]
fn keyctl_is_refused_with_eperm() {
    let _g = shared();
    let key = HostKey::plant("keyctl");
    let attack = fill(
        r#"
report('keyctl_revoke_host_key', SYS['keyctl'], 3, @KEY@)
report('keyctl_unlink_host_key', SYS['keyctl'], 9, @KEY@, -4)
report('keyctl_get_user_keyring', SYS['keyctl'], 0, -4, 1)
report('keyctl_join_session', SYS['keyctl'], 1, None)
report('keyctl_search_session', SYS['keyctl'], 10, -3, b'user', b'@DESC@', 0)
"#,
        &[("KEY", &key.id.to_string()), ("DESC", &key.desc)],
    );
    let Some(p) = py("keyctl_is_refused_with_eperm", &attack) else { return };
    for name in [
        "keyctl_revoke_host_key",
        "keyctl_unlink_host_key",
        "keyctl_get_user_keyring",
        "keyctl_join_session",
        "keyctl_search_session",
    ] {
        p.refused(name, "EPERM");
    }
    key.assert_intact();
    assert!(host_has_key(&key.desc), "the host's key left its keyring");
}

#[test]
fn add_key_is_refused_with_eperm() {
    let _g = shared();
    let key = HostKey::plant("add-key");
    let planted = marker("planted-by-payload");
    let attack = fill(
        r#"
report('add_key_user_keyring', SYS['add_key'], b'user', b'@NEW@', b'planted', 7, -4)
report('add_key_session_keyring', SYS['add_key'], b'user', b'@NEW@', b'planted', 7, -3)
report('add_key_overwrite_host_key', SYS['add_key'], b'user', b'@DESC@', b'overwritten', 11, -4)
report('add_key_new_keyring', SYS['add_key'], b'keyring', b'@NEW@', None, 0, -4)
"#,
        &[("NEW", &planted), ("DESC", &key.desc)],
    );
    let Some(p) = py("add_key_is_refused_with_eperm", &attack) else { return };
    for name in [
        "add_key_user_keyring",
        "add_key_session_keyring",
        "add_key_overwrite_host_key",
        "add_key_new_keyring",
    ] {
        p.refused(name, "EPERM");
    }
    key.assert_intact();
    assert!(!host_has_key(&planted), "a key planted by the payload is in the host's keyring");
}

#[test]
fn request_key_is_refused_with_eperm() {
    let _g = shared();
    let key = HostKey::plant("request-key");
    let fresh = marker("requested");
    // With callout information the kernel would run /sbin/request-key on the host, as root.
    let attack = fill(
        r#"
report('request_key_host_key', SYS['request_key'], b'user', b'@DESC@', None, -4)
report('request_key_with_callout', SYS['request_key'], b'user', b'@NEW@', b'callout', -4)
"#,
        &[("DESC", &key.desc), ("NEW", &fresh)],
    );
    let Some(p) = py("request_key_is_refused_with_eperm", &attack) else { return };
    p.refused("request_key_host_key", "EPERM");
    p.refused("request_key_with_callout", "EPERM");
    key.assert_intact();
    assert!(!host_has_key(&fresh), "the callout left a key in the host's keyring");
}

#[test]
fn bpf_is_refused_with_eperm() {
    let _g = shared();
    let attack = r#"
attr = ctypes.create_string_buffer(struct.pack('IIII', 2, 4, 8, 16), 128)
report('bpf_map_create', SYS['bpf'], 0, attr, 128)
prog = ctypes.create_string_buffer(struct.pack('QQ', 0x00000000000000b7, 0x0000000000000095), 16)
license = ctypes.create_string_buffer(b'GPL')
load = ctypes.create_string_buffer(struct.pack('IIQQ', 1, 2, ctypes.addressof(prog), ctypes.addressof(license)), 128)
report('bpf_prog_load', SYS['bpf'], 5, load, 128)
report('bpf_map_get_next_id', SYS['bpf'], 12, attr, 128)
"#;
    let Some(p) = py("bpf_is_refused_with_eperm", attack) else { return };
    p.refused("bpf_map_create", "EPERM");
    p.refused("bpf_prog_load", "EPERM");
    p.refused("bpf_map_get_next_id", "EPERM");
    assert_no_new_fd_of(&p, &["bpf"]);
}

#[test]
fn perf_event_open_is_refused_with_eperm() {
    let _g = shared();
    let paranoid = read("/proc/sys/kernel/perf_event_paranoid");
    let attack = r#"
attr = ctypes.create_string_buffer(struct.pack('IIQ', 1, 128, 0), 128)
report('perf_event_open_self', SYS['perf_event_open'], attr, 0, -1, -1, 0)
report('perf_event_open_init', SYS['perf_event_open'], attr, 1, -1, -1, 0)
report('perf_event_open_cpu', SYS['perf_event_open'], attr, -1, 0, -1, 0)
"#;
    let Some(p) = py("perf_event_open_is_refused_with_eperm", attack) else { return };
    p.refused("perf_event_open_self", "EPERM");
    p.refused("perf_event_open_init", "EPERM");
    p.refused("perf_event_open_cpu", "EPERM");
    assert_no_new_fd_of(&p, &["perf_event"]);
    assert_eq!(read("/proc/sys/kernel/perf_event_paranoid"), paranoid);
}

#[test]
fn userfaultfd_is_refused_with_eperm() {
    let _g = shared();
    let attack = r#"
report('userfaultfd', SYS['userfaultfd'], os.O_CLOEXEC | os.O_NONBLOCK)
report('userfaultfd_user_mode_only', SYS['userfaultfd'], os.O_CLOEXEC | 1)
try_os('open_dev_userfaultfd', lambda: os.open('/dev/userfaultfd', os.O_RDWR))
"#;
    let Some(p) = py("userfaultfd_is_refused_with_eperm", attack) else { return };
    p.refused("userfaultfd", "EPERM");
    p.refused("userfaultfd_user_mode_only", "EPERM");
    p.refused("open_dev_userfaultfd", "ENOENT");
    assert_no_new_fd_of(&p, &["userfaultfd"]);
}

#[test]
fn io_uring_is_refused_with_eperm() {
    let _g = shared();
    let attack = r#"
params = ctypes.create_string_buffer(120)
report('io_uring_setup', SYS['io_uring_setup'], 8, params)
report('io_uring_enter', SYS['io_uring_enter'], -1, 1, 0, 0, None, 0)
report('io_uring_register', SYS['io_uring_register'], -1, 0, None, 0)
"#;
    let Some(p) = py("io_uring_is_refused_with_eperm", attack) else { return };
    p.refused("io_uring_setup", "EPERM");
    // Refused before the kernel looks at the descriptor (EBADF otherwise).
    p.refused("io_uring_enter", "EPERM");
    p.refused("io_uring_register", "EPERM");
    assert_no_new_fd_of(&p, &["io_uring"]);
}

#[test]
fn unshare_of_a_user_namespace_is_refused_with_eperm() {
    let _g = shared();
    let attack = r#"
report('unshare_user', SYS['unshare'], 0x10000000)
report('unshare_user_and_mount', SYS['unshare'], 0x10000000 | 0x20000)
report('unshare_mount', SYS['unshare'], 0x20000)
report('unshare_net', SYS['unshare'], 0x40000000)
report('unshare_cgroup', SYS['unshare'], 0x02000000)
report('unshare_time', SYS['unshare'], 0x80)
"#;
    let Some(p) = py("unshare_of_a_user_namespace_is_refused_with_eperm", attack) else { return };
    for name in [
        "unshare_user",
        "unshare_user_and_mount",
        "unshare_mount",
        "unshare_net",
        "unshare_cgroup",
        "unshare_time",
    ] {
        p.refused(name, "EPERM");
    }
    assert_own_namespaces(&p);
}

#[test]
fn a_payload_without_a_pid_namespace_cannot_give_the_embedding_program_a_child() {
    let _g = shared();
    let test = "a_payload_without_a_pid_namespace_cannot_give_the_embedding_program_a_child";
    if !have("/usr/bin/python3") {
        skip(test, "python3 missing for the attack");
        return;
    }
    if !Path::new("/proc/thread-self/children").exists() {
        skip(test, "the kernel has no /proc/<pid>/task/<tid>/children (CONFIG_PROC_CHILDREN)");
        return;
    }
    // clone(CLONE_PARENT): the new process is a child of the payload's parent, this thread,
    // which never asked for it (a zombie here until this process ends).
    let script = format!(
        "import ctypes, os\n\
         libc = ctypes.CDLL(None, use_errno=True)\n\
         r = libc.syscall({nr}, {flags}, 0, 0, 0, 0)\n\
         if r == 0:\n    os._exit(0)\n\
         print(r, ctypes.get_errno())\n",
        nr = libc::SYS_clone,
        flags = libc::CLONE_PARENT | libc::SIGCHLD,
    );
    let children = || -> std::collections::BTreeSet<i32> {
        read("/proc/thread-self/children").split_whitespace().map(|p| p.parse().unwrap()).collect()
    };
    for filtered in [true, false] {
        let mut b = untrusted();
        b.namespaces(stockade::Namespaces::all() - stockade::Namespaces::PID);
        if !filtered {
            b.no_syscall_filter();
        }
        let sandbox = b.build().unwrap();
        // A first spawn starts what this process keeps for every sandbox (the cgroup reaper,
        // a child of the thread that first needs it).
        assert!(sandbox.command("/bin/true").status().unwrap().success());
        let before = children();
        let out = sandbox.command("/usr/bin/python3").args(["-c", &script]).output().unwrap();
        let said = String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr);
        assert!(out.status.success(), "{said}");
        let new: Vec<i32> = children().difference(&before).copied().collect();
        if filtered {
            assert_eq!(said.trim(), format!("-1 {}", libc::EPERM), "{said}");
            assert!(new.is_empty(), "this thread got children {new:?}");
        } else {
            for &pid in &new {
                // Reaped, so that nothing is left behind by the control.
                let _ = nix::sys::wait::waitpid(nix::unistd::Pid::from_raw(pid), None);
            }
            // The control: without the filter the attack works, and this test sees it.
            assert!(
                said.split_whitespace().next().and_then(|p| p.parse::<i32>().ok()).is_some_and(|pid| pid > 0),
                "{said}"
            );
            assert_eq!(new.len(), 1, "the control made no child here: {said}");
        }
    }
}

#[test]
fn clone_with_clone_newuser_is_refused_with_eperm() {
    let _g = shared();
    let attack = r#"
def attempt(name, flags):
    r, e = call(SYS['clone'], flags, 0, 0, 0, 0)
    if r == 0:
        os._exit(0)
    if r > 0:
        os.waitpid(r, 0)
    show(name, r, e)
attempt('clone_newuser', 0x10000000 | 17)
attempt('clone_newuser_newns', 0x10000000 | 0x20000 | 17)
attempt('clone_newpid', 0x20000000 | 17)
attempt('clone_newnet', 0x40000000 | 17)
attempt('clone_plain_control', 17)
"#;
    let Some(p) = py("clone_with_clone_newuser_is_refused_with_eperm", attack) else { return };
    for name in ["clone_newuser", "clone_newuser_newns", "clone_newpid", "clone_newnet"] {
        p.refused(name, "EPERM");
    }
    p.succeeded("clone_plain_control");
    assert_own_namespaces(&p);
}

#[test]
fn clone3_fails_with_enosys() {
    let _g = shared();
    let attack = r#"
def attempt(name, flags):
    args = ctypes.create_string_buffer(struct.pack('11Q', flags, 0, 0, 0, 17, 0, 0, 0, 0, 0, 0), 88)
    r, e = call(SYS['clone3'], args, 88)
    if r == 0:
        os._exit(0)
    if r > 0:
        os.waitpid(r, 0)
    show(name, r, e)
attempt('clone3_newuser', 0x10000000)
attempt('clone3_plain', 0)
"#;
    let Some(p) = py("clone3_fails_with_enosys", attack) else { return };
    // ENOSYS, so that libcs fall back to clone, whose flags the filter can see.
    p.refused("clone3_newuser", "ENOSYS");
    p.refused("clone3_plain", "ENOSYS");
    assert_own_namespaces(&p);
}

#[test]
fn setns_into_a_host_namespace_is_refused_with_eperm() {
    let _g = shared();
    // A careless embedder passes descriptors of its own namespaces.
    let net = std::fs::File::open("/proc/self/ns/net").unwrap();
    let uts = std::fs::File::open("/proc/self/ns/uts").unwrap();
    let mnt = std::fs::File::open("/proc/self/ns/mnt").unwrap();
    let attack = r#"
report('setns_host_net', SYS['setns'], 3, 0x40000000)
report('setns_host_uts', SYS['setns'], 4, 0x04000000)
report('setns_host_mnt_any_type', SYS['setns'], 5, 0)
report('setns_bad_fd', SYS['setns'], -1, 0)
fd = try_os('open_init_user_ns', lambda: os.open('/proc/1/ns/user', os.O_RDONLY))
say('setns_own_init_user', *(call(SYS['setns'], fd, 0) if fd is not None else ('skipped',)))
"#;
    let Some(p) = py_in("setns_into_a_host_namespace_is_refused_with_eperm", &recommended(), attack, |c| {
        c.fd_unrestricted(3, net).fd_unrestricted(4, uts).fd_unrestricted(5, mnt);
    }) else {
        return;
    };
    // The init's namespaces are not the payload's to open (a non-dumpable init).
    p.refused("open_init_user_ns", "EACCES");
    p.refused("setns_host_net", "EPERM");
    p.refused("setns_host_uts", "EPERM");
    p.refused("setns_host_mnt_any_type", "EPERM");
    // From the filter, before the kernel looks at the descriptor (EBADF otherwise).
    p.refused("setns_bad_fd", "EPERM");
    assert_own_namespaces(&p);
}

#[test]
fn mount_is_refused_with_eperm() {
    let _g = shared();
    let host = host_mounts();
    let attack = r#"
report('mount_tmpfs', SYS['mount'], b'none', b'/tmp', b'tmpfs', 0, None)
report('mount_remount_usr_rw', SYS['mount'], None, b'/usr', None, 0x20 | 0x1000, None)
report('mount_bind_proc', SYS['mount'], b'/proc', b'/tmp', None, 0x1000, None)
report('mount_make_shared', SYS['mount'], None, b'/', None, 1 << 20, None)
report('mount_proc', SYS['mount'], b'proc', b'/tmp', b'proc', 0, None)
report('mount_bad_pointers', SYS['mount'], 1, 1, 1, 0, None)
"#;
    let Some(p) = py("mount_is_refused_with_eperm", attack) else { return };
    for name in ["mount_tmpfs", "mount_remount_usr_rw", "mount_bind_proc", "mount_make_shared", "mount_proc"]
    {
        p.refused(name, "EPERM");
    }
    // The filter answers before the kernel reads the arguments (EFAULT otherwise).
    p.refused("mount_bad_pointers", "EPERM");
    assert_eq!(host_mounts(), host, "the host's mounts changed");
}

#[test]
fn umount2_is_refused_with_eperm() {
    let _g = shared();
    let attack = r#"
report('umount_usr_detach', SYS['umount2'], b'/usr', 2)
report('umount_proc_detach', SYS['umount2'], b'/proc', 2)
report('umount_tmp', SYS['umount2'], b'/tmp', 0)
report('umount_root_force', SYS['umount2'], b'/', 1)
report('umount_bad_pointer', SYS['umount2'], 1, 0)
"#;
    let Some(p) = py("umount2_is_refused_with_eperm", attack) else { return };
    for name in ["umount_usr_detach", "umount_proc_detach", "umount_tmp", "umount_root_force"] {
        p.refused(name, "EPERM");
    }
    // From the filter, before the kernel reads the path (EFAULT otherwise).
    p.refused("umount_bad_pointer", "EPERM");
    let points = mount_points(&p.after.mountinfo);
    for m in ["/usr", "/proc", "/tmp"] {
        assert!(points.iter().any(|p| p == m), "{m} unmounted: {points:?}");
    }
}

#[test]
fn fsopen_and_fspick_are_refused_with_eperm() {
    let _g = shared();
    let attack = r#"
report('fsopen_tmpfs', SYS['fsopen'], b'tmpfs', 0)
report('fsopen_proc', SYS['fsopen'], b'proc', 0)
report('fsopen_cgroup2', SYS['fsopen'], b'cgroup2', 0)
report('fspick_root', SYS['fspick'], -100, b'/', 0)
"#;
    let Some(p) = py("fsopen_and_fspick_are_refused_with_eperm", attack) else { return };
    for name in ["fsopen_tmpfs", "fsopen_proc", "fsopen_cgroup2", "fspick_root"] {
        p.refused(name, "EPERM");
    }
    assert_no_new_fd_of(&p, &["fscontext"]);
}

#[test]
fn fsconfig_and_fsmount_are_refused_before_the_descriptor_is_checked() {
    let _g = shared();
    let attack = r#"
report('fsconfig_create', SYS['fsconfig'], -1, 6, None, None, 0)
report('fsconfig_set_string', SYS['fsconfig'], -1, 1, b'source', b'none', 0)
report('fsmount', SYS['fsmount'], -1, 0, 0)
"#;
    let Some(p) = py("fsconfig_and_fsmount_are_refused_before_the_descriptor_is_checked", attack) else {
        return;
    };
    // EPERM from the filter, not EBADF from the kernel.
    p.refused("fsconfig_create", "EPERM");
    p.refused("fsconfig_set_string", "EPERM");
    p.refused("fsmount", "EPERM");
}

#[test]
fn move_mount_is_refused_with_eperm() {
    let _g = shared();
    let attack = r#"
os.makedirs('/tmp/target', exist_ok=True)
report('move_mount_proc', SYS['move_mount'], -100, b'/proc', -100, b'/tmp/target', 0)
report('move_mount_usr', SYS['move_mount'], -100, b'/usr', -100, b'/tmp/target', 0)
report('move_mount_empty_path', SYS['move_mount'], 0, b'', -100, b'/tmp/target', 4)
"#;
    let Some(p) = py("move_mount_is_refused_with_eperm", attack) else { return };
    p.refused("move_mount_proc", "EPERM");
    p.refused("move_mount_usr", "EPERM");
    p.refused("move_mount_empty_path", "EPERM");
    assert!(mount_points(&p.after.mountinfo).contains(&"/proc".to_owned()), "{}", p.after.mountinfo);
}

#[test]
fn open_tree_is_refused_with_eperm() {
    let _g = shared();
    let attack = r#"
report('open_tree_clone_recursive', SYS['open_tree'], -100, b'/usr', 1 | 0x8000)
report('open_tree_clone_proc', SYS['open_tree'], -100, b'/proc', 1)
report('open_tree_plain', SYS['open_tree'], -100, b'/', 0)
"#;
    let Some(p) = py("open_tree_is_refused_with_eperm", attack) else { return };
    p.refused("open_tree_clone_recursive", "EPERM");
    p.refused("open_tree_clone_proc", "EPERM");
    p.refused("open_tree_plain", "EPERM");
    assert_eq!(p.new_fds(), Vec::<String>::new(), "{}", p.dump());
}

#[test]
fn mount_setattr_is_refused_with_eperm() {
    let _g = shared();
    // MOUNT_ATTR_RDONLY cleared on /usr and below; MOUNT_ATTR_NOSUID cleared on /tmp.
    let attack = r#"
attr = ctypes.create_string_buffer(struct.pack('QQQQ', 0, 1, 0, 0), 32)
report('mount_setattr_usr_writable', SYS['mount_setattr'], -100, b'/usr', 0x8000, attr, 32)
attr = ctypes.create_string_buffer(struct.pack('QQQQ', 0, 2, 0, 0), 32)
report('mount_setattr_tmp_suid', SYS['mount_setattr'], -100, b'/tmp', 0, attr, 32)
attr = ctypes.create_string_buffer(struct.pack('QQQQ', 0, 0, 1 << 20, 0), 32)
report('mount_setattr_root_shared', SYS['mount_setattr'], -100, b'/', 0x8000, attr, 32)
report('mount_setattr_size_zero', SYS['mount_setattr'], -100, b'/usr', 0, attr, 0)
"#;
    let Some(p) = py("mount_setattr_is_refused_with_eperm", attack) else { return };
    p.refused("mount_setattr_usr_writable", "EPERM");
    p.refused("mount_setattr_tmp_suid", "EPERM");
    p.refused("mount_setattr_root_shared", "EPERM");
    // From the filter, before the kernel checks the size (EINVAL otherwise).
    p.refused("mount_setattr_size_zero", "EPERM");
    let usr = p.after.mountinfo.lines().find(|l| l.split(' ').nth(4) == Some("/usr")).unwrap();
    assert!(usr.split(' ').nth(5).unwrap().split(',').any(|o| o == "ro"), "{usr}");
}

#[test]
fn pivot_root_is_refused_with_eperm() {
    let _g = shared();
    let attack = r#"
os.makedirs('/tmp/old', exist_ok=True)
report('pivot_root_tmp', SYS['pivot_root'], b'/tmp', b'/tmp/old')
os.chdir('/tmp')
report('pivot_root_dot_dot', SYS['pivot_root'], b'.', b'.')
"#;
    let Some(p) = py("pivot_root_is_refused_with_eperm", attack) else { return };
    p.refused("pivot_root_tmp", "EPERM");
    p.refused("pivot_root_dot_dot", "EPERM");
}

#[test]
fn chroot_is_refused_with_eperm() {
    let _g = shared();
    let attack = r#"
os.makedirs('/tmp/jail', exist_ok=True)
report('chroot_jail', SYS['chroot'], b'/tmp/jail')
report('chroot_proc_init_root', SYS['chroot'], b'/proc/1/root')
report('chroot_bad_pointer', SYS['chroot'], 1)
"#;
    let Some(p) = py("chroot_is_refused_with_eperm", attack) else { return };
    // The untrusted configuration holds no CAP_SYS_CHROOT: refused by the filter.
    p.refused("chroot_jail", "EPERM");
    p.refused("chroot_proc_init_root", "EPERM");
    // From the filter, before the kernel reads the path (EFAULT otherwise).
    p.refused("chroot_bad_pointer", "EPERM");
}

/// A `struct file_handle` for `path`, from name_to_handle_at on the host, as hex.
fn file_handle(path: &Path) -> String {
    let mut buf = [0u8; 136];
    buf[..4].copy_from_slice(&128u32.to_ne_bytes());
    let c = std::ffi::CString::new(path.as_os_str().as_encoded_bytes()).unwrap();
    let mut mount_id: libc::c_int = 0;
    // SAFETY: a NUL-terminated path, a buffer holding a file_handle of 128 bytes of handle, an int.
    let r = unsafe {
        libc::syscall(
            libc::SYS_name_to_handle_at,
            libc::AT_FDCWD,
            c.as_ptr(),
            buf.as_mut_ptr(),
            &mut mount_id,
            0,
        )
    };
    assert_eq!(r, 0, "name_to_handle_at: {}", std::io::Error::last_os_error());
    let len = 8 + u32::from_ne_bytes(buf[..4].try_into().unwrap()) as usize;
    buf[..len].iter().map(|b| format!("{b:02x}")).collect()
}

#[test]
fn open_by_handle_at_cannot_reach_an_unbound_host_file() {
    let _g = shared();
    // The Shocker attack (2014): a handle to a host file that was never bound into the sandbox,
    // opened through a descriptor of a bind on the same filesystem.
    let secret_dir = tempdir();
    let secret = secret_dir.path().join("secret");
    write_file(&secret, "host secret", 0o666);
    let bound = open_tempdir(0o755);
    let handle = file_handle(&secret);
    let before = (read(&secret), meta(&secret));
    let mut b = untrusted();
    b.mount(Mount::bind_ro(bound.path(), "/probe"));
    let attack = fill(
        r#"
mfd = os.open('/probe', os.O_RDONLY | os.O_DIRECTORY)
handle = bytes.fromhex('@HANDLE@')
report('open_by_handle_at_rdwr', SYS['open_by_handle_at'], mfd, handle, os.O_RDWR)
report('open_by_handle_at_rdonly', SYS['open_by_handle_at'], mfd, handle, os.O_RDONLY)
"#,
        &[("HANDLE", &handle)],
    );
    let test = "open_by_handle_at_cannot_reach_an_unbound_host_file";
    let Some(p) = py_in(test, &b.build().unwrap(), &attack, |_| {}) else { return };
    p.refused("open_by_handle_at_rdwr", "EPERM");
    p.refused("open_by_handle_at_rdonly", "EPERM");
    assert!(!p.said.contains("host secret"), "{}", p.dump());
    assert_eq!((read(&secret), meta(&secret)), before, "the host file changed");
    if is_root() {
        // Control: the handle is good; the host (CAP_DAC_READ_SEARCH) opens the file with it.
        let mut bytes: Vec<u8> = (0..handle.len())
            .step_by(2)
            .map(|i| u8::from_str_radix(&handle[i..i + 2], 16).unwrap())
            .collect();
        let dir = std::fs::File::open(bound.path()).unwrap();
        // SAFETY: a directory descriptor, a complete file_handle buffer.
        let fd = unsafe {
            libc::syscall(libc::SYS_open_by_handle_at, dir.as_raw_fd(), bytes.as_mut_ptr(), libc::O_RDONLY)
        };
        assert!(fd >= 0, "control: {}", std::io::Error::last_os_error());
        // SAFETY: a descriptor just returned to us.
        let mut f = unsafe { std::fs::File::from_raw_fd(fd as i32) };
        let mut text = String::new();
        f.read_to_string(&mut text).unwrap();
        assert_eq!(text, "host secret");
    }
}

#[test]
fn kexec_load_is_refused_with_eperm() {
    let _g = shared();
    let boot = boot_id();
    let loaded = (read("/sys/kernel/kexec_loaded"), read("/sys/kernel/kexec_crash_loaded"));
    let attack = r#"
report('kexec_load', SYS['kexec_load'], 0, 0, None, 0)
report('kexec_load_on_crash', SYS['kexec_load'], 0, 0, None, 1)
"#;
    let Some(p) = py("kexec_load_is_refused_with_eperm", attack) else { return };
    // EPERM from the filter even where the kernel lacks kexec (ENOSYS otherwise).
    p.refused("kexec_load", "EPERM");
    p.refused("kexec_load_on_crash", "EPERM");
    assert_eq!(boot_id(), boot);
    assert_eq!((read("/sys/kernel/kexec_loaded"), read("/sys/kernel/kexec_crash_loaded")), loaded);
}

#[test]
fn kexec_file_load_is_refused_with_eperm() {
    let _g = shared();
    let boot = boot_id();
    let loaded = read("/sys/kernel/kexec_loaded");
    let attack = r#"
report('kexec_file_load', SYS['kexec_file_load'], -1, -1, 0, None, 4)
kernel = os.open('/usr/bin/true', os.O_RDONLY)
report('kexec_file_load_true', SYS['kexec_file_load'], kernel, -1, 1, b'', 4)
"#;
    let Some(p) = py("kexec_file_load_is_refused_with_eperm", attack) else { return };
    p.refused("kexec_file_load", "EPERM");
    p.refused("kexec_file_load_true", "EPERM");
    assert_eq!(boot_id(), boot);
    assert_eq!(read("/sys/kernel/kexec_loaded"), loaded);
}

/// The loaded modules and taint flags of the host kernel.
fn kernel_modules() -> (String, String) {
    (read("/proc/modules"), read("/proc/sys/kernel/tainted"))
}

#[test]
fn init_module_is_refused_with_eperm() {
    let _g = shared();
    let modules = kernel_modules();
    let attack = r#"
image = b'\x7fELF\x02\x01\x01' + bytes(57)
report('init_module', SYS['init_module'], image, len(image), b'')
"#;
    let Some(p) = py("init_module_is_refused_with_eperm", attack) else { return };
    p.refused("init_module", "EPERM");
    assert_eq!(kernel_modules(), modules);
}

#[test]
fn finit_module_is_refused_with_eperm() {
    let _g = shared();
    let modules = kernel_modules();
    let attack = r#"
fd = os.open('/usr/bin/true', os.O_RDONLY)
report('finit_module', SYS['finit_module'], fd, b'', 0)
report('finit_module_ignore_checks', SYS['finit_module'], fd, b'', 3)
"#;
    let Some(p) = py("finit_module_is_refused_with_eperm", attack) else { return };
    p.refused("finit_module", "EPERM");
    p.refused("finit_module_ignore_checks", "EPERM");
    assert_eq!(kernel_modules(), modules);
}

#[test]
fn delete_module_is_refused_with_eperm() {
    let _g = shared();
    let modules = kernel_modules();
    // A module the host has loaded, where it has modules.
    let name = modules.0.split_whitespace().next().unwrap_or("stockade_none").to_owned();
    let attack = fill(
        r#"
report('delete_module', SYS['delete_module'], b'@NAME@', os.O_NONBLOCK)
report('delete_module_force', SYS['delete_module'], b'@NAME@', os.O_NONBLOCK | os.O_TRUNC)
"#,
        &[("NAME", &name)],
    );
    let Some(p) = py("delete_module_is_refused_with_eperm", &attack) else { return };
    p.refused("delete_module", "EPERM");
    p.refused("delete_module_force", "EPERM");
    assert_eq!(kernel_modules(), modules);
}

#[test]
fn reboot_is_refused_with_eperm() {
    let _g = shared();
    let cad = read("/proc/sys/kernel/ctrl-alt-del");
    let boot = boot_id();
    // Only the Ctrl-Alt-Del switch, a global setting: nothing that would stop a machine.
    let attack = r#"
report('reboot_cad_off', SYS['reboot'], 0xfee1dead, 672274793, 0, None)
report('reboot_cad_on', SYS['reboot'], 0xfee1dead, 672274793, 0x89abcdef, None)
"#;
    let Some(p) = py("reboot_is_refused_with_eperm", attack) else { return };
    p.refused("reboot_cad_off", "EPERM");
    p.refused("reboot_cad_on", "EPERM");
    assert_eq!(read("/proc/sys/kernel/ctrl-alt-del"), cad);
    assert_eq!(boot_id(), boot);
    assert!(p.after.init.iter().any(|l| l.starts_with("State:")), "the init is gone\n{}", p.dump());
}

#[test]
fn swapon_is_refused_with_eperm() {
    let _g = shared();
    let swaps = read("/proc/swaps");
    let attack = r#"
with open('/tmp/swapfile', 'wb') as f:
    f.write(bytes(4096 * 9) + b'SWAPSPACE2')
report('swapon', SYS['swapon'], b'/tmp/swapfile', 0)
report('swapon_prefer', SYS['swapon'], b'/tmp/swapfile', 0x8000 | 7)
report('swapon_bad_flags', SYS['swapon'], b'/tmp/swapfile', 0x7fffffff)
"#;
    let Some(p) = py("swapon_is_refused_with_eperm", attack) else { return };
    p.refused("swapon", "EPERM");
    p.refused("swapon_prefer", "EPERM");
    // From the filter, before the kernel checks the flags (EINVAL otherwise).
    p.refused("swapon_bad_flags", "EPERM");
    assert_eq!(read("/proc/swaps"), swaps);
}

#[test]
fn swapoff_is_refused_with_eperm() {
    let _g = shared();
    let swaps = read("/proc/swaps");
    let device =
        swaps.lines().nth(1).and_then(|l| l.split_whitespace().next()).unwrap_or("/tmp/swapfile").to_owned();
    let attack = fill(
        r#"
report('swapoff_host_device', SYS['swapoff'], b'@DEV@')
report('swapoff_usr', SYS['swapoff'], b'/usr/bin/true')
"#,
        &[("DEV", &device)],
    );
    let Some(p) = py("swapoff_is_refused_with_eperm", &attack) else { return };
    p.refused("swapoff_host_device", "EPERM");
    p.refused("swapoff_usr", "EPERM");
    assert_eq!(read("/proc/swaps"), swaps);
}

#[test]
fn acct_is_refused_with_eperm() {
    let _g = shared();
    // A host file the payload may write, where accounting records would land.
    let dir = open_tempdir(0o777);
    let log = dir.path().join("log");
    write_file(&log, "", 0o666);
    let mut b = untrusted();
    b.mount(Mount::bind(dir.path(), "/acct"));
    let attack = r#"
report('acct_on', SYS['acct'], b'/acct/log')
for i in range(3):
    os.system('/bin/true')
report('acct_off', SYS['acct'], None)
"#;
    let Some(p) = py_in("acct_is_refused_with_eperm", &b.build().unwrap(), attack, |_| {}) else { return };
    p.refused("acct_on", "EPERM");
    p.refused("acct_off", "EPERM");
    assert_eq!(std::fs::metadata(&log).unwrap().len(), 0, "accounting records reached the host file");
}

/// Quota syncs the host kernel counted (each quota sync of a filesystem adds one).
fn quota_syncs() -> Option<u64> {
    read("/proc/sys/fs/quota/syncs").trim().parse().ok()
}

/// 200 quota syncs, made by the payload with `call`; the first result and how many succeeded.
const QUOTA_SYNC_LOOP: &str = r#"
first, succeeded = None, 0
for i in range(200):
    r, e = CALL
    first = first or (r, e)
    succeeded += r == 0
show(NAME, *first)
say('succeeded', succeeded)
"#;

#[test]
fn quotactl_is_refused_with_eperm() {
    let _g = shared();
    let syncs = quota_syncs();
    // Q_SYNC of user quotas on every filesystem: allowed to anyone by the kernel.
    let attack = QUOTA_SYNC_LOOP
        .replace("CALL", "call(SYS['quotactl'], 0x80000100, None, 0, None)")
        .replace("NAME", "'quotactl_sync'");
    let Some(p) = py("quotactl_is_refused_with_eperm", &attack) else { return };
    p.refused("quotactl_sync", "EPERM");
    assert_eq!(p.value("succeeded"), "0");
    if let (Some(before), Some(after)) = (syncs, quota_syncs()) {
        // 200 syncs would count at least 200; other programs' syncs count a few.
        assert!(after - before < 200, "the host counted {} quota syncs", after - before);
    }
}

#[test]
fn quotactl_fd_is_refused_with_eperm() {
    let _g = shared();
    let syncs = quota_syncs();
    let attack = format!(
        "fd = os.open('/usr', os.O_RDONLY)\n{}",
        QUOTA_SYNC_LOOP
            .replace("CALL", "call(SYS['quotactl_fd'], fd, 0x80000100, 0, None)")
            .replace("NAME", "'quotactl_fd_sync'")
    );
    let Some(p) = py("quotactl_fd_is_refused_with_eperm", &attack) else { return };
    p.refused("quotactl_fd_sync", "EPERM");
    assert_eq!(p.value("succeeded"), "0");
    if let (Some(before), Some(after)) = (syncs, quota_syncs()) {
        assert!(after - before < 200, "the host counted {} quota syncs", after - before);
    }
}

#[test]
fn syslog_is_refused_with_eperm() {
    let _g = shared();
    let printk = read("/proc/sys/kernel/printk");
    let attack = r#"
buf = ctypes.create_string_buffer(4096)
report('syslog_read_all', SYS['syslog'], 3, buf, 4096)
report('syslog_read_clear', SYS['syslog'], 4, buf, 4096)
report('syslog_clear', SYS['syslog'], 5, None, 0)
report('syslog_console_off', SYS['syslog'], 6, None, 0)
report('syslog_console_level', SYS['syslog'], 8, None, 1)
report('syslog_size_buffer', SYS['syslog'], 10, None, 0)
"#;
    let Some(p) = py("syslog_is_refused_with_eperm", attack) else { return };
    for name in [
        "syslog_read_all",
        "syslog_read_clear",
        "syslog_clear",
        "syslog_console_off",
        "syslog_console_level",
        "syslog_size_buffer",
    ] {
        p.refused(name, "EPERM");
    }
    assert_eq!(read("/proc/sys/kernel/printk"), printk, "the host's console log level changed");
}

#[test]
fn personality_addr_no_randomize_is_refused_with_eperm() {
    let _g = shared();
    let attack = r#"
report('personality_query', SYS['personality'], 0xffffffff)
report('personality_addr_no_randomize', SYS['personality'], 0x0040000)
report('personality_addr_no_randomize_upper_bits', SYS['personality'], (1 << 32) | 0x0040000)
report('personality_addr_compat_layout', SYS['personality'], 0x0200000)
"#;
    let Some(p) = py("personality_addr_no_randomize_is_refused_with_eperm", attack) else { return };
    assert_eq!(p.line("personality_query"), "personality_query 0 ok", "{}", p.dump());
    p.refused("personality_addr_no_randomize", "EPERM");
    p.refused("personality_addr_no_randomize_upper_bits", "EPERM");
    p.refused("personality_addr_compat_layout", "EPERM");
    assert_eq!(p.after.personality.trim(), "00000000", "{}", p.dump());
}

#[test]
fn personality_read_implies_exec_is_refused_with_eperm() {
    let _g = shared();
    let attack = r#"
report('personality_read_implies_exec', SYS['personality'], 0x0400000)
report('personality_read_implies_exec_linux32', SYS['personality'], 0x0400000 | 8)
"#;
    let Some(p) = py("personality_read_implies_exec_is_refused_with_eperm", attack) else { return };
    p.refused("personality_read_implies_exec", "EPERM");
    p.refused("personality_read_implies_exec_linux32", "EPERM");
    assert_eq!(p.after.personality.trim(), "00000000", "{}", p.dump());
}

#[test]
fn tiocsti_on_a_terminal_is_refused_with_eperm() {
    let _g = shared();
    let attack = r#"
report('tiocsti_host_terminal', SYS['ioctl'], 3, 0x5412, b'x')
m = os.open('/dev/ptmx', os.O_RDWR | os.O_NOCTTY)
report('tiocsti_own_pty', SYS['ioctl'], m, 0x5412, b'x')
report('tiocsti_bad_fd', SYS['ioctl'], 99, 0x5412, b'x')
"#;
    let Some(p) = tty_attack("tiocsti_on_a_terminal_is_refused_with_eperm", attack) else { return };
    p.refused("tiocsti_host_terminal", "EPERM");
    p.refused("tiocsti_own_pty", "EPERM");
    // Refused before any descriptor check.
    p.refused("tiocsti_bad_fd", "EPERM");
}

#[test]
fn tioclinux_is_refused_with_eperm() {
    let _g = shared();
    // TIOCL_PASTESEL would paste the selection into the terminal's input.
    let attack = r#"
report('tioclinux_paste', SYS['ioctl'], 3, 0x541C, b'\x03')
report('tioclinux_set_selection', SYS['ioctl'], 3, 0x541C, b'\x02' + bytes(10))
"#;
    let Some(p) = tty_attack("tioclinux_is_refused_with_eperm", attack) else { return };
    p.refused("tioclinux_paste", "EPERM");
    p.refused("tioclinux_set_selection", "EPERM");
}

#[test]
fn tiocsti_with_the_upper_32_bits_set_is_still_refused() {
    let _g = shared();
    // The kernel reads the request as an unsigned int: these are all TIOCSTI.
    let attack = r#"
report('tiocsti_bit_32', SYS['ioctl'], 3, (1 << 32) | 0x5412, b'x')
report('tiocsti_upper_ones', SYS['ioctl'], 3, 0x7fffffff00005412, b'x')
report('tiocsti_upper_negative', SYS['ioctl'], 3, -(1 << 32) + 0x5412, b'x')
report('tioclinux_bit_40', SYS['ioctl'], 3, (1 << 40) | 0x541C, b'\x03')
"#;
    let Some(p) = tty_attack("tiocsti_with_the_upper_32_bits_set_is_still_refused", attack) else { return };
    p.refused("tiocsti_bit_32", "EPERM");
    p.refused("tiocsti_upper_ones", "EPERM");
    p.refused("tiocsti_upper_negative", "EPERM");
    p.refused("tioclinux_bit_40", "EPERM");
}

#[test]
fn vhangup_is_refused_with_eperm() {
    let _g = shared();
    let attack = r#"
report('vhangup', SYS['vhangup'])
"#;
    let Some(p) = tty_attack("vhangup_is_refused_with_eperm", attack) else { return };
    p.refused("vhangup", "EPERM");
}

#[test]
fn socket_af_vsock_fails_with_eafnosupport() {
    let _g = shared();
    let attack = r#"
report('socket_vsock_stream', SYS['socket'], 40, 1, 0)
report('socket_vsock_dgram', SYS['socket'], 40, 2, 0)
report('socket_vsock_upper_bits', SYS['socket'], (1 << 32) | 40, 1, 0)
r = report('socket_unix_control', SYS['socket'], 1, 1, 0)
os.close(r)
"#;
    let Some(p) = py("socket_af_vsock_fails_with_eafnosupport", attack) else { return };
    p.refused("socket_vsock_stream", "EAFNOSUPPORT");
    p.refused("socket_vsock_dgram", "EAFNOSUPPORT");
    p.refused("socket_vsock_upper_bits", "EAFNOSUPPORT");
    p.succeeded("socket_unix_control");
    assert_no_new_fd_of(&p, &["socket:"]);
}

#[test]
fn socket_af_alg_fails_with_eafnosupport() {
    let _g = shared();
    let attack = r#"
report('socket_alg', SYS['socket'], 38, 5, 0)
try_os('python_socket_alg', lambda: socket.socket(38, 5, 0))
"#;
    let Some(p) = py("socket_af_alg_fails_with_eafnosupport", attack) else { return };
    p.refused("socket_alg", "EAFNOSUPPORT");
    p.refused("python_socket_alg", "EAFNOSUPPORT");
    assert_no_new_fd_of(&p, &["socket:"]);
}

#[test]
fn socket_af_bluetooth_fails_with_eafnosupport() {
    let _g = shared();
    let attack = r#"
report('socket_bluetooth_hci', SYS['socket'], 31, 3, 1)
report('socket_bluetooth_l2cap', SYS['socket'], 31, 5, 0)
"#;
    let Some(p) = py("socket_af_bluetooth_fails_with_eafnosupport", attack) else { return };
    p.refused("socket_bluetooth_hci", "EAFNOSUPPORT");
    p.refused("socket_bluetooth_l2cap", "EAFNOSUPPORT");
    assert_no_new_fd_of(&p, &["socket:"]);
}

/// x32 and i386 system calls from a 64-bit program, made with inline assembly.
#[cfg(target_arch = "x86_64")]
const ABI_PROBE: &str = r#"
#define _GNU_SOURCE
#include <stdio.h>
#include <string.h>
#include <unistd.h>

static long sys64(long nr, long a1) {
    long ret;
    __asm__ volatile("syscall" : "=a"(ret) : "a"(nr), "D"(a1) : "rcx", "r11", "memory");
    return ret;
}

static int sys32(int nr, int a1) {
    int ret;
    __asm__ volatile("int $0x80" : "=a"(ret) : "a"(nr), "b"(a1) : "memory");
    return ret;
}

static void show(const char *name, long r) {
    if (r < 0 && r > -4096)
        printf("%s -1 %s\n", name, strerrorname_np((int)-r));
    else
        printf("%s %ld ok\n", name, r);
    fflush(stdout);
}

int main(int argc, char **argv) {
    char c, buf[64];
    printf("ARMED\n");
    fflush(stdout);
    while (read(0, &c, 1) == 1 && c != '\n') {}
    if (argc > 1 && !strcmp(argv[1], "x32")) {
        show("x32_getpid", sys64(0x40000000L | 39, 0));
        show("x32_unshare_newuser", sys64(0x40000000L | 272, 0x10000000));
        show("x32_own_range_rt_sigaction", sys64(0x40000000L | 512, 0));
    } else {
        show("i386_calling", 0);
        show("i386_unshare_newuser", sys32(310, 0x10000000));
    }
    printf("READY\n");
    fflush(stdout);
    while (read(0, buf, sizeof buf) > 0) {}
    return 0;
}
"#;

#[cfg(target_arch = "x86_64")]
fn abi_probe(test: &str, mode: &str, sandbox: impl FnOnce(&Path) -> Sandbox) -> Option<Probe> {
    let dir = open_tempdir(0o755);
    let program = match compile(dir.path(), "abi", ABI_PROBE) {
        Ok(p) => p,
        Err(why) => {
            skip(test, &why);
            return None;
        }
    };
    Some(probe(&sandbox(&program), &["/probe/abi", mode], |_| {}))
}

#[cfg(target_arch = "x86_64")]
fn with_probe_dir(mut b: SandboxBuilder, program: &Path) -> Sandbox {
    b.mount(Mount::bind_ro(program.parent().unwrap(), "/probe"));
    b.build().unwrap()
}

#[cfg(target_arch = "x86_64")]
#[test]
fn an_x32_syscall_fails_with_enosys() {
    let _g = shared();
    let test = "an_x32_syscall_fails_with_enosys";
    let Some(p) = abi_probe(test, "x32", |prog| with_probe_dir(untrusted(), prog)) else { return };
    assert!(p.status.success(), "{}", p.dump());
    p.refused("x32_getpid", "ENOSYS");
    p.refused("x32_unshare_newuser", "ENOSYS");
    p.refused("x32_own_range_rt_sigaction", "ENOSYS");
    assert_own_namespaces(&p);
}

#[cfg(target_arch = "x86_64")]
#[test]
fn an_i386_int_0x80_syscall_kills_the_process_with_sigsys() {
    let _g = shared();
    let test = "an_i386_int_0x80_syscall_kills_the_process_with_sigsys";
    let Some(p) = abi_probe(test, "i386", |prog| with_probe_dir(untrusted(), prog)) else { return };
    assert!(p.said.contains("i386_calling"), "{}", p.dump());
    assert!(!p.said.contains("i386_unshare_newuser"), "the i386 call returned\n{}", p.dump());
    assert_eq!(p.status.signal(), Some(libc::SIGSYS), "{}", p.dump());
    assert!(!p.after.alive);
    // Control: without the filter the same call returns (a new user namespace, here).
    let dir = open_tempdir(0o755);
    let program = compile(dir.path(), "abi", ABI_PROBE).unwrap();
    let mut b = untrusted();
    b.no_syscall_filter();
    let out =
        with_probe_dir(b, &program).command("/probe/abi").arg("i386").stdin(Stdio::null()).output().unwrap();
    let said = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "control: {}: {said}", out.status);
    assert!(said.contains("i386_unshare_newuser 0 ok"), "control: {said}");
}

#[test]
fn unknown_syscall_numbers_fail_with_enosys() {
    let _g = shared();
    let attack = r#"
report('nr_1000', 1000)
report('nr_500', 500)
report('nr_0x3fffffff', 0x3fffffff)
report('nr_minus_one', -1)
"#;
    let Some(p) = py("unknown_syscall_numbers_fail_with_enosys", attack) else { return };
    for name in ["nr_1000", "nr_500", "nr_0x3fffffff", "nr_minus_one"] {
        p.refused(name, "ENOSYS");
    }
}

#[test]
fn ptrace_attach_to_the_init_is_refused_with_eperm() {
    let _g = shared();
    let attack = r#"
report('ptrace_attach_init', SYS['ptrace'], 16, 1, 0, 0)
report('ptrace_seize_init', SYS['ptrace'], 0x4206, 1, 0, 0)
report('ptrace_peek_init', SYS['ptrace'], 1, 1, 0x400000, 0)
"#;
    let Some(p) = py("ptrace_attach_to_the_init_is_refused_with_eperm", attack) else { return };
    p.refused("ptrace_attach_init", "EPERM");
    p.refused("ptrace_seize_init", "EPERM");
    // Not attached, so not even a peek (ESRCH: not our tracee).
    p.refused("ptrace_peek_init", "ESRCH");
    assert!(p.after.init.contains(&"TracerPid:\t0".to_owned()), "{:?}", p.after.init);
}

#[test]
fn process_vm_readv_and_writev_of_the_init_are_refused_with_eperm() {
    let _g = shared();
    let attack = r#"
buf = ctypes.create_string_buffer(64)
local = struct.pack('QQ', ctypes.addressof(buf), 64)
remote = struct.pack('QQ', 0x400000, 64)
report('process_vm_readv_init', SYS['process_vm_readv'], 1, local, 1, remote, 1, 0)
report('process_vm_writev_init', SYS['process_vm_writev'], 1, local, 1, remote, 1, 0)
try_os('open_init_mem', lambda: os.open('/proc/1/mem', os.O_RDWR))
"#;
    let test = "process_vm_readv_and_writev_of_the_init_are_refused_with_eperm";
    let Some(p) = py(test, attack) else { return };
    p.refused("process_vm_readv_init", "EPERM");
    p.refused("process_vm_writev_init", "EPERM");
    p.refused("open_init_mem", "EACCES");
    // The init still ran the sandbox to its end: the payload's exit status came through it.
    assert!(p.status.success());
}

#[test]
fn the_init_cannot_be_signalled_by_the_payload() {
    let _g = shared();
    let attack = r#"
import signal
try_os('kill_init_term', lambda: os.kill(1, signal.SIGTERM))
try_os('kill_init_kill', lambda: os.kill(1, signal.SIGKILL))
try_os('kill_init_stop', lambda: os.kill(1, signal.SIGSTOP))
try_os('kill_all', lambda: os.kill(-1, signal.SIGKILL))
try_os('kill_own_group_control', lambda: os.kill(0, 0))
"#;
    let Some(p) = py("the_init_cannot_be_signalled_by_the_payload", attack) else { return };
    if landlock_abi() >= 6 {
        // Landlock's signal scope: nothing outside the payload's own domain.
        p.refused("kill_init_term", "EPERM");
        p.refused("kill_init_kill", "EPERM");
        p.refused("kill_init_stop", "EPERM");
    } else {
        skip(
            "the_init_cannot_be_signalled_by_the_payload (errno)",
            "no Landlock signal scoping (ABI < 6): the kernel ignores such signals to a namespace's init",
        );
    }
    // kill(-1) reaches every process the payload may signal but itself and its init: none.
    p.refused("kill_all", "ESRCH");
    p.succeeded("kill_own_group_control");
    // The init still runs, neither stopped nor traced, and ends the sandbox normally.
    assert!(p.after.init.iter().any(|l| l.starts_with("State:\tS")), "{:?}", p.after.init);
    assert!(p.status.success(), "{}", p.dump());
}

#[cfg(target_arch = "x86_64")]
#[test]
fn iopl_and_ioperm_are_refused_with_eperm() {
    let _g = shared();
    let boot = boot_id();
    // Port 0x64: the keyboard controller, whose reset line reboots many machines.
    let attack = r#"
report('iopl_3', SYS['iopl'], 3)
report('ioperm_0x64', SYS['ioperm'], 0x64, 1, 1)
report('ioperm_all', SYS['ioperm'], 0, 0x10000, 1)
report('ioperm_out_of_range', SYS['ioperm'], 0xffff, 2, 1)
"#;
    let Some(p) = py("iopl_and_ioperm_are_refused_with_eperm", attack) else { return };
    p.refused("iopl_3", "EPERM");
    p.refused("ioperm_0x64", "EPERM");
    p.refused("ioperm_all", "EPERM");
    // From the filter, before the kernel checks the range (EINVAL otherwise).
    p.refused("ioperm_out_of_range", "EPERM");
    assert_eq!(boot_id(), boot);
}

/// CLOCK_REALTIME minus CLOCK_BOOTTIME on the host: moves when someone sets the clock.
fn clock_offset() -> i64 {
    let now = |clock| {
        let mut ts = libc::timespec { tv_sec: 0, tv_nsec: 0 };
        // SAFETY: clock_gettime writes one timespec.
        assert_eq!(unsafe { libc::clock_gettime(clock, &mut ts) }, 0);
        ts.tv_sec
    };
    now(libc::CLOCK_REALTIME) - now(libc::CLOCK_BOOTTIME)
}

#[test]
fn setting_the_clock_is_refused_with_eperm() {
    let _g = shared();
    let offset = clock_offset();
    let attack = r#"
import time
tv = struct.pack('qq', int(time.time()) + 86400 * 400, 0)
report('settimeofday', SYS['settimeofday'], tv, None)
report('clock_settime_realtime', SYS['clock_settime'], 0, tv)
report('settimeofday_bad_pointer', SYS['settimeofday'], 1, None)
report('clock_settime_bad_pointer', SYS['clock_settime'], 0, 1)
tx = bytearray(208)
struct.pack_into('I', tx, 0, 0x0100)
struct.pack_into('qq', tx, 72, 86400 * 400, 0)
report('clock_adjtime_setoffset', SYS['clock_adjtime'], 0, ctypes.create_string_buffer(bytes(tx), 208))
report('adjtimex_setoffset', SYS['adjtimex'], ctypes.create_string_buffer(bytes(tx), 208))
"#;
    let Some(p) = py("setting_the_clock_is_refused_with_eperm", attack) else { return };
    p.refused("settimeofday", "EPERM");
    p.refused("clock_settime_realtime", "EPERM");
    // From the filter, before the kernel reads the time (EFAULT otherwise).
    p.refused("settimeofday_bad_pointer", "EPERM");
    p.refused("clock_settime_bad_pointer", "EPERM");
    // adjtimex and clock_adjtime are allowed for reading; setting needs CAP_SYS_TIME.
    p.refused("clock_adjtime_setoffset", "EPERM");
    p.refused("adjtimex_setoffset", "EPERM");
    assert!((clock_offset() - offset).abs() < 5, "the host clock moved");
}

#[test]
fn sethostname_is_refused_with_eperm() {
    let _g = shared();
    let host = (host_hostname(), read("/proc/sys/kernel/domainname"));
    let attack = r#"
report('sethostname', SYS['sethostname'], b'pwned', 5)
report('setdomainname', SYS['setdomainname'], b'pwned', 5)
say('hostname', socket.gethostname())
"#;
    let Some(p) = py("sethostname_is_refused_with_eperm", attack) else { return };
    p.refused("sethostname", "EPERM");
    p.refused("setdomainname", "EPERM");
    assert_eq!(p.value("hostname"), "sandbox");
    assert_eq!((host_hostname(), read("/proc/sys/kernel/domainname")), host);
}

#[cfg(target_arch = "x86_64")]
#[test]
fn lookup_dcookie_is_refused_with_eperm() {
    let _g = shared();
    // In the filter's table of this machine's calls (the kernel itself dropped it in 6.10).
    let attack = r#"
buf = ctypes.create_string_buffer(256)
report('lookup_dcookie', SYS['lookup_dcookie'], 0, buf, 256)
"#;
    let Some(p) = py("lookup_dcookie_is_refused_with_eperm", attack) else { return };
    p.refused("lookup_dcookie", "EPERM");
}

// ---------------------------------------------------------------------------------------------
// A: process escapes
// ---------------------------------------------------------------------------------------------

#[test]
fn host_pids_are_invisible_and_pid_1_is_the_sandbox_init() {
    let _g = shared();
    let mut host = HostProcess::sleeper();
    let attack = fill(
        r#"
say('pids', ' '.join(sorted((p for p in os.listdir('/proc') if p.isdigit()), key=int)))
say('init', open('/proc/1/comm').read().strip())
try_os('kill_host_process', lambda: os.kill(@PID@, 9))
try_os('signal_host_process_group', lambda: os.killpg(@PID@, 9))
"#,
        &[("PID", &host.id().to_string())],
    );
    let test = "host_pids_are_invisible_and_pid_1_is_the_sandbox_init";
    let p = py(test, &attack);
    let alive = host.try_wait().unwrap().is_none();
    let Some(p) = p else { return };
    // The init and the payload, nothing else (as the host counts the sandbox's tree too).
    assert_eq!(p.value("pids"), "1 2", "{}", p.dump());
    assert_eq!(p.after.tree, 2);
    assert_eq!(p.value("init"), "stockade-init");
    p.refused("kill_host_process", "ESRCH");
    p.refused("signal_host_process_group", "ESRCH");
    assert!(alive, "the host process was killed");
}

#[test]
fn an_inheritable_descriptor_of_the_embedder_does_not_reach_the_payload() {
    let _g = shared();
    let dir = open_tempdir(0o777);
    std::fs::write(dir.path().join("inside"), "x").unwrap();
    let before = snapshot(dir.path());
    // A host directory opened without O_CLOEXEC, as careless embedding programs do.
    let c = std::ffi::CString::new(dir.path().as_os_str().as_encoded_bytes()).unwrap();
    // SAFETY: open(2) of a NUL-terminated path, then a copy at 50 or above (F_DUPFD leaves
    // close-on-exec off); both descriptors are owned or closed here.
    let leaked = unsafe {
        let raw = libc::open(c.as_ptr(), libc::O_RDONLY | libc::O_DIRECTORY);
        assert!(raw >= 0);
        let high = libc::fcntl(raw, libc::F_DUPFD, 50);
        libc::close(raw);
        assert!(high >= 50);
        OwnedFd::from_raw_fd(high)
    };
    let fd = leaked.as_raw_fd().to_string();
    let attack = fill(
        r#"
try_os('fchdir_leaked', lambda: os.fchdir(@FD@))
try_os('openat_leaked', lambda: os.open('pwned', os.O_CREAT | os.O_WRONLY, 0o666, dir_fd=@FD@))
try_os('readlink_leaked', lambda: os.readlink('/proc/self/fd/@FD@'))
"#,
        &[("FD", &fd)],
    );
    let test = "an_inheritable_descriptor_of_the_embedder_does_not_reach_the_payload";
    let Some(p) = py(test, &attack) else { return };
    p.refused("fchdir_leaked", "EBADF");
    p.refused("openat_leaked", "EBADF");
    p.refused("readlink_leaked", "ENOENT");
    // From the host: the payload holds its three stdio pipes and nothing else.
    let numbers: Vec<&str> = p.before.fds.iter().map(|f| f.split(' ').next().unwrap()).collect();
    assert_eq!(numbers, ["0", "1", "2"], "{:?}", p.before.fds);
    assert_eq!(snapshot(dir.path()), before, "the host directory changed");
    // Control: the descriptor really is inheritable; a plain child process has it.
    let out = std::process::Command::new("/bin/sh")
        .args(["-c", &format!("[ -e /proc/$$/fd/{fd} ] && echo inherited")])
        .output()
        .unwrap();
    assert_eq!(out.stdout, b"inherited\n");
    drop(leaked);
}

/// What the root of the recommended sandbox holds: the host's system directories (binds or
/// links), /dev, /proc and /tmp.
fn expected_root_entries() -> Vec<String> {
    let mut names: Vec<String> = Mount::host_system()
        .iter()
        .map(|m| m.target().to_string_lossy().trim_start_matches('/').to_owned())
        .chain(["dev", "proc", "tmp"].map(String::from))
        .collect();
    names.sort();
    names.dedup();
    names
}

#[test]
fn the_working_directory_and_its_parents_stay_inside_the_new_root() {
    let _g = shared();
    let cwd = std::env::current_dir().unwrap();
    let name = marker("cwd");
    let attack = fill(
        r#"
say('cwd', os.getcwd())
say('cwd_link', os.readlink('/proc/self/cwd'))
for i in range(30):
    os.chdir('..')
say('top', ' '.join(sorted(os.listdir('.'))))
say('proc_cwd_parents', ' '.join(sorted(os.listdir('/proc/self/cwd/../../../..'))))
try_os('create_in_cwd', lambda: open('@NAME@', 'w'))
try_os('chdir_init_cwd', lambda: os.chdir('/proc/1/cwd'))
try_os('chdir_init_root', lambda: os.chdir('/proc/1/root'))
"#,
        &[("NAME", &name)],
    );
    let Some(p) = py("the_working_directory_and_its_parents_stay_inside_the_new_root", &attack) else {
        return;
    };
    let expected = expected_root_entries().join(" ");
    assert_eq!(p.value("cwd"), p.value("cwd_link"), "{}", p.dump());
    assert!(p.value("cwd").starts_with('/'), "{}", p.dump());
    assert_eq!(p.value("top"), expected, "`..` left the sandbox's root\n{}", p.dump());
    assert_eq!(p.value("proc_cwd_parents"), expected, "{}", p.dump());
    p.refused("create_in_cwd", "EROFS");
    p.refused("chdir_init_cwd", "EACCES");
    p.refused("chdir_init_root", "EACCES");
    assert!(!cwd.join(&name).exists(), "a file appeared in the embedder's working directory");
}

/// Length, times and a hash of a host file's contents.
fn fingerprint(path: &Path) -> (Option<Meta>, u64) {
    use std::hash::{Hash, Hasher};
    let mut h = std::collections::hash_map::DefaultHasher::new();
    std::fs::read(path).unwrap().hash(&mut h);
    (meta(path), h.finish())
}

#[test]
fn the_init_exe_cannot_be_opened_for_writing() {
    let _g = shared();
    let exe = std::env::current_exe().unwrap();
    let before = fingerprint(&exe);
    // runc CVE-2019-5736: overwrite the runtime's binary through /proc/<init>/exe.
    let attack = r#"
try_os('open_init_exe_write', lambda: os.open('/proc/1/exe', os.O_WRONLY))
try_os('open_init_exe_append', lambda: os.open('/proc/1/exe', os.O_WRONLY | os.O_APPEND))
try_os('open_init_exe_read', lambda: os.open('/proc/1/exe', os.O_RDONLY))
try_os('readlink_init_exe', lambda: os.readlink('/proc/1/exe'))
try_os('open_init_exe_path', lambda: os.open('/proc/1/exe', os.O_PATH))
"#;
    let Some(p) = py("the_init_exe_cannot_be_opened_for_writing", attack) else { return };
    p.refused("open_init_exe_write", "EACCES");
    p.refused("open_init_exe_append", "EACCES");
    p.refused("open_init_exe_read", "EACCES");
    p.refused("readlink_init_exe", "EACCES");
    p.refused("open_init_exe_path", "EACCES");
    assert_eq!(fingerprint(&exe), before, "the embedding program's binary changed");
}

#[test]
fn capabilities_are_zero_in_all_five_sets_under_seccomp_and_no_new_privs() {
    let _g = shared();
    let attack = r#"
for l in open('/proc/self/status'):
    if l.startswith(('Cap', 'NoNewPrivs', 'Seccomp:')):
        say('status', l.split()[0], l.split()[1])
"#;
    let Some(p) = py("capabilities_are_zero_in_all_five_sets_under_seccomp_and_no_new_privs", attack) else {
        return;
    };
    let inside: Vec<&str> = p.said.lines().filter_map(|l| l.strip_prefix("status ")).collect();
    let expected = [
        "CapInh: 0000000000000000",
        "CapPrm: 0000000000000000",
        "CapEff: 0000000000000000",
        "CapBnd: 0000000000000000",
        "CapAmb: 0000000000000000",
        "NoNewPrivs: 1",
        "Seccomp: 2",
    ];
    assert_eq!(inside, expected, "{}", p.dump());
    // The host sees the same, and host ids that are nobody's.
    for line in &expected {
        let host_line = line.replacen(": ", ":\t", 1);
        assert!(p.after.status.contains(&host_line), "{host_line} not in {:?}", p.after.status);
    }
    let host_uid = if is_root() { UNTRUSTED_IDS } else { nix::unistd::geteuid().as_raw() };
    let uid = p.after.status.iter().find(|l| l.starts_with("Uid:")).unwrap();
    assert!(uid.split_whitespace().skip(1).all(|u| u == host_uid.to_string()), "{uid}");
}

/// Prints its ids, then appends to /data/rootonly.
const SETUID_PROBE: &str = r#"
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>
int main(void) {
    printf("ids %d %d\n", (int)getuid(), (int)geteuid());
    int fd = open("/data/rootonly", O_WRONLY | O_APPEND);
    if (fd < 0) {
        printf("open -1 %s\n", strerrorname_np(errno));
        return 0;
    }
    printf("open %s\n", write(fd, "pwned\n", 6) == 6 ? "wrote" : "short");
    return 0;
}
"#;

#[test]
fn a_setuid_root_program_gains_nothing() {
    let _g = shared();
    let test = "a_setuid_root_program_gains_nothing";
    if !is_root() {
        return skip(
            test,
            "a program set-user-ID to the payload's root needs a host id other than ours (root)",
        );
    }
    let bin = open_tempdir(0o755);
    let program = match compile(bin.path(), "suid", SETUID_PROBE) {
        Ok(p) => p,
        Err(why) => return skip(test, &why),
    };
    // Owned by the host id that is root inside the sandbox, set-user-ID, on a mount that honours it.
    std::os::unix::fs::chown(&program, Some(UNTRUSTED_IDS), Some(UNTRUSTED_IDS)).unwrap();
    std::fs::set_permissions(&program, std::fs::Permissions::from_mode(0o4755)).unwrap();
    let data = open_tempdir(0o755);
    let file = data.path().join("rootonly");
    write_file(&file, "original\n", 0o600);
    std::os::unix::fs::chown(&file, Some(UNTRUSTED_IDS), Some(UNTRUSTED_IDS)).unwrap();
    let build = |allow: bool| {
        let mut b = untrusted();
        b.user(1000, 1000)
            .mount(Mount::bind_ro(bin.path(), "/probe").nosuid(false))
            .mount(Mount::bind(data.path(), "/data"));
        if allow {
            b.allow_new_privileges();
        }
        b.build().unwrap()
    };
    let out = build(false).command("/probe/suid").output().unwrap();
    let said = String::from_utf8_lossy(&out.stdout);
    assert_eq!(said, "ids 1000 1000\nopen -1 EACCES\n", "{}", String::from_utf8_lossy(&out.stderr));
    assert_eq!(read(&file), "original\n");
    assert_eq!(meta(&program).unwrap().0 & 0o7777, 0o4755);
    // Control: with new privileges allowed, the same program becomes root and writes.
    let out = build(true).command("/probe/suid").output().unwrap();
    assert_eq!(String::from_utf8_lossy(&out.stdout), "ids 1000 0\nopen wrote\n");
    assert_eq!(read(&file), "original\npwned\n");
}

#[test]
fn a_read_only_bind_stays_read_only() {
    let _g = shared();
    let dir = open_tempdir(0o777);
    write_file(&dir.path().join("file"), "original", 0o666);
    let before = snapshot(dir.path());
    let mut b = untrusted();
    b.mount(Mount::bind_ro(dir.path(), "/data"));
    let attack = r#"
try_os('write_before', lambda: open('/data/file', 'w'))
report('remount_rw', SYS['mount'], None, b'/data', None, 0x20 | 0x1000, None)
report('remount_rw_plain', SYS['mount'], None, b'/data', None, 0x20, None)
report('umount', SYS['umount2'], b'/data', 2)
report('bind_over', SYS['mount'], b'/tmp', b'/data', None, 0x1000, None)
attr = ctypes.create_string_buffer(struct.pack('QQQQ', 0, 1, 0, 0), 32)
report('mount_setattr_rw', SYS['mount_setattr'], -100, b'/data', 0, attr, 32)
try_os('write_after', lambda: open('/data/file', 'w'))
try_os('create_after', lambda: open('/data/new', 'w'))
try_os('chmod_after', lambda: os.chmod('/data/file', 0o777))
"#;
    let Some(p) = py_in("a_read_only_bind_stays_read_only", &b.build().unwrap(), attack, |_| {}) else {
        return;
    };
    p.refused("write_before", "EROFS");
    for name in ["remount_rw", "remount_rw_plain", "umount", "bind_over", "mount_setattr_rw"] {
        p.refused(name, "EPERM");
    }
    p.refused("write_after", "EROFS");
    p.refused("create_after", "EROFS");
    p.refused("chmod_after", "EROFS");
    assert_eq!(snapshot(dir.path()), before, "the host directory changed");
}

/// The Landlock ABI of this kernel (0: none).
fn landlock_abi() -> i64 {
    // SAFETY: LANDLOCK_CREATE_RULESET_VERSION with no attributes only queries.
    let v = unsafe { libc::syscall(libc::SYS_landlock_create_ruleset, std::ptr::null::<u8>(), 0usize, 1u32) };
    v.max(0)
}

const MOUNT_ATTACK: &str = r#"
report('make_root_shared', SYS['mount'], None, b'/', None, (1 << 20) | (1 << 14), None)
report('make_data_shared', SYS['mount'], None, b'/data', None, 1 << 20, None)
r = report('mount_tmpfs_over_bind', SYS['mount'], b'none', b'/data/sub', b'tmpfs', 0, None)
if r == 0:
    with open('/data/sub/inside-only', 'w') as f:
        f.write('x')
report('bind_proc_into_bind', SYS['mount'], b'/proc', b'/data/sub', None, 0x1000 | 0x4000, None)
"#;

#[test]
fn mounts_made_inside_with_cap_sys_admin_never_reach_the_host() {
    let _g = shared();
    let test = "mounts_made_inside_with_cap_sys_admin_never_reach_the_host";
    if !have("/usr/bin/python3") {
        return skip(test, "python3 missing for the attack");
    }
    let dir = open_tempdir(0o777);
    std::fs::create_dir(dir.path().join("sub")).unwrap();
    std::fs::set_permissions(dir.path().join("sub"), std::fs::Permissions::from_mode(0o777)).unwrap();
    let before = snapshot(dir.path());
    let host = host_mounts();
    // Given CAP_SYS_ADMIN (of its user namespace), the recommended configuration still refuses
    // every mount: its Landlock domain forbids them.
    let mut b = untrusted();
    b.capabilities([Capability::CAP_SYS_ADMIN]).mount(Mount::bind(dir.path(), "/data"));
    let p = py_in(test, &b.build().unwrap(), MOUNT_ATTACK, |_| {}).unwrap();
    if landlock_abi() > 0 {
        for name in ["make_root_shared", "make_data_shared", "mount_tmpfs_over_bind", "bind_proc_into_bind"] {
            p.refused(name, "EPERM");
        }
    } else {
        skip(&format!("{test} (Landlock)"), "this kernel has no Landlock: the mounts below go through");
    }
    assert_eq!(host_mounts(), host, "a mount made inside appeared on the host");
    assert_eq!(snapshot(dir.path()), before, "the host directory changed under the bind");
    // Without Landlock (the preset's namespaces, filesystem and ids, CAP_SYS_ADMIN, the filter
    // then allowing the mount family) the mounts succeed, and still none reaches the host.
    let mut b = Sandbox::builder();
    b.namespaces(ns(stockade::Namespaces::all()))
        .hostname("sandbox")
        .root(Root::tmpfs())
        .mounts(Mount::host_system())
        .mount(Mount::tmpfs("/tmp").size(64 << 20))
        .mount(Mount::bind(dir.path(), "/data"))
        .capabilities([Capability::CAP_SYS_ADMIN]);
    if is_root() {
        let ids = [stockade::IdMap::new(0, UNTRUSTED_IDS, 65536)];
        b.uid_map(ids).gid_map(ids);
    }
    let script = format!("{}\n{PY_PRELUDE}\n{MOUNT_ATTACK}\n{PY_END}", sys_numbers());
    let sandbox = b.build().unwrap();
    let mut child = sandbox
        .command("/usr/bin/python3")
        .args(["-c", &script])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdin = child.stdin.take().unwrap();
    let mut out = buffered(child.stdout.take().unwrap());
    read_until(&mut out, |l| l == "ARMED");
    stdin.write_all(b"go\n").unwrap();
    let mut said = Vec::new();
    let mut line = String::new();
    while out.read_line(&mut line).unwrap() > 0 && line.trim_end() != "READY" {
        said.push(line.trim_end().to_owned());
        line.clear();
    }
    assert_eq!(line.trim_end(), "READY", "{said:?}");
    // While the payload still holds its mounts: none of them is on the host.
    let host_now = host_mounts();
    let on_host = snapshot(dir.path());
    drop(stdin);
    let status = child.wait().unwrap();
    let said = said.join("\n");
    assert!(status.success(), "{status}: {said}");
    for name in ["make_root_shared", "make_data_shared", "mount_tmpfs_over_bind", "bind_proc_into_bind"] {
        assert!(said.contains(&format!("{name} 0 ok")), "{name}: {said}");
    }
    assert_eq!(host_now, host, "a mount made inside appeared on the host");
    assert_eq!(on_host, before, "the host directory changed under the bind");
}

#[test]
fn sensitive_proc_files_are_masked() {
    let _g = shared();
    let key = HostKey::plant("proc-keys");
    let boot = boot_id();
    let attack = r#"
for f in ['/proc/kcore', '/proc/keys', '/proc/timer_list', '/proc/sched_debug', '/proc/interrupts', '/proc/latency_stats', '/proc/timer_stats']:
    try:
        n = len(open(f, 'rb').read())
    except OSError as e:
        n = name_of(e.errno)
    say('size' + f.replace('/', '_'), n)
for d in ['/proc/acpi', '/proc/scsi', '/proc/asound']:
    try:
        n = len(os.listdir(d))
    except OSError as e:
        n = name_of(e.errno)
    say('entries' + d.replace('/', '_'), n)
try_os('write_sysrq_trigger', lambda: os.open('/proc/sysrq-trigger', os.O_WRONLY | os.O_TRUNC))
try_os('write_keys', lambda: os.open('/proc/keys', os.O_WRONLY | os.O_TRUNC))
"#;
    let Some(p) = py("sensitive_proc_files_are_masked", attack) else { return };
    // Masked with the host's /dev/null on a nodev mount: EACCES.
    for f in ["kcore", "keys", "timer_list", "sched_debug", "interrupts", "latency_stats", "timer_stats"] {
        let expected = if Path::new("/proc").join(f).exists() { "EACCES" } else { "ENOENT" };
        assert_eq!(p.value(&format!("size_proc_{f}")), expected, "/proc/{f}\n{}", p.dump());
    }
    for d in ["acpi", "scsi", "asound"] {
        let expected = if Path::new("/proc").join(d).exists() { "0" } else { "ENOENT" };
        assert_eq!(p.value(&format!("entries_proc_{d}")), expected, "/proc/{d}\n{}", p.dump());
    }
    // Read-only where the host has it.
    let sysrq = if Path::new("/proc/sysrq-trigger").exists() { "EROFS" } else { "ENOENT" };
    p.refused("write_sysrq_trigger", sysrq);
    p.refused("write_keys", "EACCES");
    assert!(!p.said.contains(&key.desc), "the host's key is listed inside");
    key.assert_intact();
    assert_eq!(boot_id(), boot);
}

#[test]
fn proc_sys_is_read_only() {
    let _g = shared();
    let knobs = [
        ("/proc/sys/kernel/core_pattern", "|/tmp/pwn"),
        ("/proc/sys/kernel/modprobe", "/tmp/pwn"),
        ("/proc/sys/kernel/kptr_restrict", "0"),
        ("/proc/sys/vm/panic_on_oom", "1"),
        ("/proc/sys/kernel/hostname", "pwned"),
    ];
    let before: Vec<String> = knobs.iter().map(|(k, _)| read(k)).collect();
    let attack: String = knobs
        .iter()
        .map(|(path, value)| format!("try_os('{path}', lambda: open('{path}', 'w').write('{value}'))\n"))
        .collect::<String>()
        + "try_os('/proc/sys/vm/drop_caches', lambda: open('/proc/sys/vm/drop_caches', 'w').write('3'))\n";
    let Some(p) = py("proc_sys_is_read_only", &attack) else { return };
    for (path, _) in knobs {
        if Path::new(path).exists() {
            p.refused(path, "EROFS");
        }
    }
    p.refused("/proc/sys/vm/drop_caches", "EROFS");
    let after: Vec<String> = knobs.iter().map(|(k, _)| read(k)).collect();
    assert_eq!(after, before, "a host sysctl changed");
}

#[test]
fn sys_is_absent_and_when_mounted_firmware_is_masked_and_nothing_writable() {
    let _g = shared();
    let test = "sys_is_absent_and_when_mounted_firmware_is_masked_and_nothing_writable";
    let thp = "/sys/kernel/mm/transparent_hugepage/enabled";
    let before = read(thp);
    let attack = r#"
try_os('list_sys', lambda: os.listdir('/sys'))
try_os('list_sys_firmware', lambda: say('firmware_entries', len(os.listdir('/sys/firmware'))))
try_os('write_thp', lambda: open('/sys/kernel/mm/transparent_hugepage/enabled', 'w').write('never'))
try_os('write_uevent_helper', lambda: open('/sys/kernel/uevent_helper', 'w').write('/tmp/pwn'))
"#;
    // The recommended configuration has no /sys at all.
    let Some(p) = py(test, attack) else { return };
    p.refused("list_sys", "ENOENT");
    p.refused("list_sys_firmware", "ENOENT");
    p.refused("write_thp", "ENOENT");
    // An embedder that adds one gets it read-only, firmware masked.
    let mut b = untrusted();
    b.mount(Mount::sysfs("/sys"));
    let Some(p) = py_in(test, &b.build().unwrap(), attack, |_| {}) else { return };
    p.succeeded("list_sys");
    assert_eq!(p.value("firmware_entries"), "0", "{}", p.dump());
    if Path::new(thp).exists() {
        p.refused("write_thp", "EROFS");
    }
    if Path::new("/sys/kernel/uevent_helper").exists() {
        p.refused("write_uevent_helper", "EROFS");
    }
    assert_eq!(read(thp), before);
}

/// A file masked with the host's /dev/null on a nodev mount: opening it fails with EACCES, so
/// nothing of the host's file is read.
fn assert_masked(p: &Probe, attempt: &str, size: &str) {
    assert!(!p.said.contains(&format!("{size} ")), "{attempt} read something\n{}", p.dump());
    p.refused(attempt, "EACCES");
}

#[test]
fn proc_cmdline_and_kallsyms_are_masked() {
    let _g = shared();
    let kptr = read("/proc/sys/kernel/kptr_restrict");
    let attack = r#"
try_os('read_cmdline', lambda: say('cmdline_bytes', len(open('/proc/cmdline', 'rb').read())))
try_os('read_kallsyms', lambda: say('kallsyms_bytes', len(open('/proc/kallsyms', 'rb').read())))
try_os('unrestrict_kptr', lambda: open('/proc/sys/kernel/kptr_restrict', 'w').write('0'))
try_os('read_kallsyms_after', lambda: say('kallsyms_bytes_after', len(open('/proc/kallsyms', 'rb').read())))
"#;
    let Some(p) = py("proc_cmdline_and_kallsyms_are_masked", attack) else { return };
    assert_masked(&p, "read_cmdline", "cmdline_bytes");
    assert_masked(&p, "read_kallsyms", "kallsyms_bytes");
    assert_masked(&p, "read_kallsyms_after", "kallsyms_bytes_after");
    p.refused("unrestrict_kptr", "EROFS");
    // Control: the host's are not empty, so the masks did the hiding.
    assert!(!read("/proc/cmdline").is_empty());
    assert_eq!(read("/proc/sys/kernel/kptr_restrict"), kptr);
}

#[test]
fn the_kernel_log_is_refused() {
    let _g = shared();
    let printk = read("/proc/sys/kernel/printk");
    let mark = marker("kmsg");
    // As root, a line in the host's kernel log that the payload tries to clear.
    let marked = is_root()
        && std::fs::OpenOptions::new()
            .write(true)
            .open("/dev/kmsg")
            .and_then(|mut k| k.write_all(format!("{mark}\n").as_bytes()))
            .is_ok();
    let attack = r#"
try_os('open_dev_kmsg', lambda: os.open('/dev/kmsg', os.O_RDONLY))
buf = ctypes.create_string_buffer(1 << 16)
report('syslog_read_all', SYS['syslog'], 3, buf, 1 << 16)
report('syslog_read_clear', SYS['syslog'], 4, buf, 1 << 16)
report('syslog_clear', SYS['syslog'], 5, None, 0)
r = os.system('dmesg > /dev/null 2>&1')
say('dmesg_status', r)
"#;
    let Some(p) = py("the_kernel_log_is_refused", attack) else { return };
    p.refused("open_dev_kmsg", "ENOENT");
    p.refused("syslog_read_all", "EPERM");
    p.refused("syslog_read_clear", "EPERM");
    p.refused("syslog_clear", "EPERM");
    assert_ne!(p.value("dmesg_status"), "0", "dmesg read the log\n{}", p.dump());
    assert!(!p.said.contains(&mark));
    assert_eq!(read("/proc/sys/kernel/printk"), printk);
    if marked {
        let mut buf = vec![0u8; 1 << 22];
        // SAFETY: klogctl reads into a live buffer of the length passed.
        let n = unsafe { libc::klogctl(3, buf.as_mut_ptr().cast(), buf.len() as i32) };
        assert!(n > 0);
        assert!(
            String::from_utf8_lossy(&buf[..n as usize]).contains(&mark),
            "the host's kernel log was cleared"
        );
    }
}

#[test]
fn dev_holds_only_the_minimal_nodes() {
    let _g = shared();
    let host_dev = listing("/dev");
    let attack = r#"
say('dev', ' '.join(sorted(os.listdir('/dev'))))
say('pts', ' '.join(sorted(os.listdir('/dev/pts'))))
try_os('create_in_dev', lambda: open('/dev/sda', 'w'))
try_os('symlink_in_dev', lambda: os.symlink('/proc/1/root', '/dev/root'))
"#;
    let Some(p) = py("dev_holds_only_the_minimal_nodes", attack) else { return };
    assert_eq!(
        p.value("dev"),
        "fd full null ptmx pts random shm stderr stdin stdout tty urandom zero",
        "{}",
        p.dump()
    );
    assert_eq!(p.value("pts"), "ptmx", "{}", p.dump());
    p.refused("create_in_dev", "EROFS");
    p.refused("symlink_in_dev", "EROFS");
    assert_eq!(listing("/dev"), host_dev, "the host's /dev changed");
}

#[test]
fn mknod_of_a_device_fails_with_eperm() {
    let _g = shared();
    let null = meta("/dev/null");
    let attack = r#"
report('mknod_mem', SYS['mknodat'], -100, b'/tmp/mem', 0o20600, 0x101)
report('mknod_kmsg', SYS['mknodat'], -100, b'/tmp/kmsg', 0o20600, 0x10b)
report('mknod_sda', SYS['mknodat'], -100, b'/tmp/sda', 0o60600, 0x800)
report('mknod_null_in_dev', SYS['mknodat'], -100, b'/dev/null2', 0o20666, 0x103)
report('mknod_fifo_control', SYS['mknodat'], -100, b'/tmp/fifo', 0o10600, 0)
"#;
    let Some(p) = py("mknod_of_a_device_fails_with_eperm", attack) else { return };
    p.refused("mknod_mem", "EPERM");
    p.refused("mknod_kmsg", "EPERM");
    p.refused("mknod_sda", "EPERM");
    p.refused("mknod_null_in_dev", "EROFS");
    p.succeeded("mknod_fifo_control");
    assert_eq!(meta("/dev/null"), null, "the host's /dev/null changed");
}

#[test]
fn dev_mem_and_other_host_devices_are_absent() {
    let _g = shared();
    let devices =
        ["mem", "kmem", "port", "kmsg", "kvm", "fuse", "loop-control", "loop0", "console", "tty0", "net/tun"];
    let before: Vec<_> = devices.iter().map(|d| meta(Path::new("/dev").join(d))).collect();
    let attack: String = devices
        .iter()
        .map(|d| format!("try_os('open_{d}', lambda: os.open('/dev/{d}', os.O_RDWR))\n"))
        .collect();
    let Some(p) = py("dev_mem_and_other_host_devices_are_absent", &attack) else { return };
    for d in devices {
        p.refused(&format!("open_{d}"), "ENOENT");
    }
    let after: Vec<_> = devices.iter().map(|d| meta(Path::new("/dev").join(d))).collect();
    assert_eq!(after, before, "a host device node changed");
}

#[test]
fn the_network_has_only_lo_and_no_route_out() {
    let _g = shared();
    let host_ifaces = read("/proc/net/dev")
        .lines()
        .skip(2)
        .map(|l| l.split(':').next().unwrap().trim().to_owned())
        .collect::<Vec<_>>();
    let attack = r#"
say('ifaces', ' '.join(sorted(l.split(':')[0].strip() for l in open('/proc/net/dev').readlines()[2:])))
s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
s.settimeout(5)
try_os('connect_outside', lambda: s.connect(('192.0.2.1', 80)))
u = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
try_os('udp_outside', lambda: u.sendto(b'x', ('192.0.2.1', 53)))
"#;
    let Some(p) = py("the_network_has_only_lo_and_no_route_out", attack) else { return };
    assert_eq!(p.value("ifaces"), "lo", "{}", p.dump());
    p.refused("connect_outside", "ENETUNREACH");
    p.refused("udp_outside", "ENETUNREACH");
    let now: Vec<String> = read("/proc/net/dev")
        .lines()
        .skip(2)
        .map(|l| l.split(':').next().unwrap().trim().to_owned())
        .collect();
    assert_eq!(now, host_ifaces, "the host's interfaces changed");
}

#[test]
fn a_host_loopback_service_is_unreachable() {
    let _g = shared();
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    listener.set_nonblocking(true).unwrap();
    let port = listener.local_addr().unwrap().port().to_string();
    let attack = fill(
        r#"
s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
s.settimeout(5)
try_os('connect_host_loopback', lambda: s.connect(('127.0.0.1', @PORT@)))
"#,
        &[("PORT", &port)],
    );
    let Some(p) = py("a_host_loopback_service_is_unreachable", &attack) else { return };
    p.refused("connect_host_loopback", "ECONNREFUSED");
    let pending = listener.accept();
    assert!(matches!(&pending, Err(e) if e.kind() == std::io::ErrorKind::WouldBlock), "{pending:?}");
}

#[test]
fn a_host_abstract_unix_socket_is_unreachable() {
    use std::os::linux::net::SocketAddrExt;
    let _g = shared();
    let name = marker("abstract");
    let addr = std::os::unix::net::SocketAddr::from_abstract_name(name.as_bytes()).unwrap();
    let listener = std::os::unix::net::UnixListener::bind_addr(&addr).unwrap();
    listener.set_nonblocking(true).unwrap();
    let attack = fill(
        r#"
s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
try_os('connect_abstract', lambda: s.connect('\0@NAME@'))
d = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
try_os('send_abstract', lambda: d.sendto(b'x', '\0@NAME@'))
"#,
        &[("NAME", &name)],
    );
    let Some(p) = py("a_host_abstract_unix_socket_is_unreachable", &attack) else { return };
    p.refused("connect_abstract", "ECONNREFUSED");
    p.refused("send_abstract", "ECONNREFUSED");
    let pending = listener.accept();
    assert!(matches!(&pending, Err(e) if e.kind() == std::io::ErrorKind::WouldBlock), "{pending:?}");
    // Control: the socket is live; a host connection is accepted.
    let _c = std::os::unix::net::UnixStream::connect_addr(&addr).unwrap();
    listener.set_nonblocking(false).unwrap();
    assert!(listener.accept().is_ok());
}

#[test]
fn no_host_environment_variable_reaches_the_payload() {
    let _g = shared();
    let host: BTreeMap<String, String> = std::env::vars().collect();
    assert!(!host.is_empty());
    let attack = r#"
say('env', ' '.join(sorted(k for k in os.environ if k != 'LC_CTYPE')))
"#;
    let Some(p) = py_in("no_host_environment_variable_reaches_the_payload", &recommended(), attack, |c| {
        c.env("GIVEN", "yes");
    }) else {
        return;
    };
    // What the payload was started with, read by the host: the variable given, and the
    // sandbox's own PATH and HOME defaults.
    let names: Vec<&str> = p.before.environ.iter().map(|v| v.split('=').next().unwrap()).collect();
    assert!(p.before.environ.contains(&"GIVEN=yes".to_owned()), "{:?}", p.before.environ);
    for name in &names {
        assert!(
            ["GIVEN", "PATH", "HOME"].contains(name),
            "{name} reached the payload: {:?}",
            p.before.environ
        );
    }
    for name in p.value("env").split(' ') {
        assert!(["GIVEN", "PATH", "HOME"].contains(&name), "{name} inside: {}", p.dump());
    }
    for (k, v) in &host {
        if !["PATH", "HOME"].contains(&k.as_str()) {
            assert!(!p.before.environ.contains(&format!("{k}={v}")), "{k} leaked");
        }
    }
    assert_eq!(std::env::vars().collect::<BTreeMap<_, _>>(), host);
}

// ---------------------------------------------------------------------------------------------
// B: resources and lifetime
// ---------------------------------------------------------------------------------------------

/// The limits of the recommended configuration need cgroups this user can make.
fn limits_enforced(test: &str) -> bool {
    if !is_root() {
        skip(test, "no cgroup delegation for uid 65534: the recommended limits run best effort, unenforced");
    }
    is_root()
}

#[test]
fn a_fork_bomb_is_held_at_the_pids_limit_and_the_host_stays_responsive() {
    let _g = exclusive();
    let test = "a_fork_bomb_is_held_at_the_pids_limit_and_the_host_stays_responsive";
    if !limits_enforced(test) {
        return;
    }
    let mut host = HostProcess::sleeper();
    let sandbox = untrusted().timeout(Duration::from_secs(3)).build().unwrap();
    let mut child = sandbox
        .command("/bin/sh")
        .args(["-c", "(bomb() { bomb | bomb & }; bomb); exec sleep 100"])
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let init = child.id() as i32;
    // Wait for the bomb to fill the sandbox (it ends by the timeout at the latest).
    let mut biggest = Vec::new();
    while child.try_wait().unwrap().is_none() {
        let tree = tree_of(init);
        if tree.len() > biggest.len() {
            biggest = tree;
        }
        if biggest.len() >= 100 {
            break;
        }
    }
    // The host still forks.
    assert!(std::process::Command::new("/bin/true").status().unwrap().success());
    let status = child.wait().unwrap();
    assert_eq!(status.limit(), Some(Limit::WallClock), "{status}");
    // The bomb went off: the cgroup's own count is the witness. (A walk of /proc sees only the
    // processes alive at once during the walk: under load it saw 73 where the cgroup counted
    // 128.) Without that count, the walk must have seen it.
    match status.usage().peak_pids {
        Some(peak) => assert!((100..=128).contains(&peak), "{peak} processes under a limit of 128"),
        None => assert!(biggest.len() >= 100, "the bomb never went off: {} processes seen", biggest.len()),
    }
    for pid in tree_of(init).into_iter().chain(biggest) {
        assert!(wait_gone(pid, Duration::from_secs(10)), "pid {pid} survived the sandbox");
    }
    assert!(host.try_wait().unwrap().is_none(), "the host process died");
}

#[test]
fn a_memory_hog_is_oom_killed_and_reported_as_such() {
    let _g = exclusive();
    let test = "a_memory_hog_is_oom_killed_and_reported_as_such";
    if !limits_enforced(test) {
        return;
    }
    let mut host = HostProcess::sleeper();
    let sandbox = untrusted().build().unwrap();
    // One endless line: tail keeps all of it.
    let mut child = sandbox.command("/usr/bin/tail").arg("/dev/zero").spawn().unwrap();
    let init = child.id() as i32;
    let status = child.wait().unwrap();
    assert_eq!(status.limit(), Some(Limit::Memory), "{status}");
    assert_eq!(status.signal(), Some(libc::SIGKILL), "{status}");
    assert!(status.usage().oom_killed, "{status:?}");
    assert!(status.usage().peak_memory.unwrap_or(0) <= 512 << 20, "{status:?}");
    assert!(wait_gone(init, Duration::from_secs(10)));
    assert!(host.try_wait().unwrap().is_none(), "the OOM killer took a host process");
}

#[test]
fn filling_tmp_stops_at_64_mib_with_enospc() {
    let _g = shared();
    let name = marker("fill");
    let out = sh(
        &recommended(),
        &format!(
            "head -c 100000000 /dev/zero > /tmp/{name}; echo rc=$?; wc -c < /tmp/{name}; df -k /tmp | tail -n 1"
        ),
    );
    let said = String::from_utf8_lossy(&out.stdout);
    let err = String::from_utf8_lossy(&out.stderr);
    let mut lines = said.lines();
    assert_ne!(lines.next(), Some("rc=0"), "{said}{err}");
    let size: u64 = lines.next().unwrap().trim().parse().unwrap();
    assert!(size <= 64 << 20 && size > 60 << 20, "{size} bytes written to a 64 MiB /tmp");
    assert!(err.contains("No space left on device"), "{err}");
    assert!(!Path::new("/tmp").join(&name).exists(), "the file landed in the host's /tmp");
}

#[test]
fn filling_dev_shm_stops_at_64_mib_with_enospc() {
    let _g = shared();
    let name = marker("shm");
    let out = sh(
        &recommended(),
        &format!("head -c 100000000 /dev/zero > /dev/shm/{name}; echo rc=$?; wc -c < /dev/shm/{name}"),
    );
    let said = String::from_utf8_lossy(&out.stdout);
    let err = String::from_utf8_lossy(&out.stderr);
    let mut lines = said.lines();
    assert_ne!(lines.next(), Some("rc=0"), "{said}{err}");
    let size: u64 = lines.next().unwrap().trim().parse().unwrap();
    assert!(size <= 64 << 20 && size > 60 << 20, "{size} bytes written to /dev/shm");
    assert!(err.contains("No space left on device"), "{err}");
    assert!(!Path::new("/dev/shm").join(&name).exists(), "the file landed in the host's /dev/shm");
}

#[test]
fn a_cpu_spinner_is_killed_with_its_whole_tree_at_the_timeout() {
    let _g = shared();
    let sandbox = untrusted().timeout(Duration::from_millis(500)).build().unwrap();
    let mut child = sandbox
        .command("/bin/sh")
        .args(["-c", "while :; do :; done & while :; do :; done & echo started; wait"])
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    read_until(&mut buffered(child.stdout.take().unwrap()), |l| l == "started");
    let tree = tree_of(child.id() as i32);
    assert!(tree.len() >= 4, "{tree:?}");
    let status = child.wait().unwrap();
    assert!(status.timed_out(), "{status}");
    assert_eq!(status.limit(), Some(Limit::WallClock));
    for pid in tree {
        assert!(wait_gone(pid, Duration::from_secs(10)), "pid {pid} survived the timeout");
    }
}

/// Host pids whose command line contains `marker`.
fn processes_with(marker: &str) -> Vec<i32> {
    let mut found = Vec::new();
    for e in std::fs::read_dir("/proc").unwrap().flatten() {
        let Ok(pid) = e.file_name().to_string_lossy().parse::<i32>() else { continue };
        if String::from_utf8_lossy(&std::fs::read(e.path().join("cmdline")).unwrap_or_default())
            .contains(marker)
        {
            found.push(pid);
        }
    }
    found
}

#[test]
fn a_daemonised_payload_that_ignores_sigterm_dies_with_the_sandbox() {
    let _g = shared();
    let mark = format!("3600.{}1", std::process::id());
    let script = format!(
        "setsid sh -c 'trap \"\" TERM HUP INT; exec sleep {mark}' </dev/null >/dev/null 2>&1 & \
         until grep -qs {mark} /proc/[0-9]*/cmdline; do :; done; echo started"
    );
    let mut child =
        recommended().command("/bin/sh").args(["-c", &script]).stdout(Stdio::piped()).spawn().unwrap();
    let mut out = buffered(child.stdout.take().unwrap());
    read_until(&mut out, |l| l == "started");
    let daemons = processes_with(&mark);
    let status = child.wait().unwrap();
    assert!(status.success(), "{status}");
    for pid in daemons {
        assert!(wait_gone(pid, Duration::from_secs(10)), "the daemon {pid} outlived its sandbox");
    }
    assert_eq!(processes_with(&mark), Vec::<i32>::new());
}

#[test]
fn killing_the_embedder_mid_run_leaves_no_sandbox_process() {
    let _g = shared();
    let mut args = vec!["--untrusted"];
    if !is_root() {
        args.push("--best-effort");
    }
    args.extend([
        "--print-pid",
        "--",
        "/bin/sh",
        "-c",
        "sleep 3600 >/dev/null 2>&1 & setsid sleep 3600 >/dev/null 2>&1 & echo started; wait",
    ]);
    let mut embedder = std::process::Command::new(run_example())
        .args(&args)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut err = std::io::BufReader::new(embedder.stderr.take().unwrap());
    let line = read_until(&mut err, |l| l.starts_with("pid "));
    let pid: i32 = line.strip_prefix("pid ").unwrap().parse().unwrap();
    read_until(&mut buffered(embedder.stdout.take().unwrap()), |l| l == "started");
    let tree = tree_of(pid);
    assert!(tree.len() >= 4, "sandbox tree {tree:?}");
    embedder.kill().unwrap(); // SIGKILL: no destructor runs.
    embedder.wait().unwrap();
    for p in tree {
        assert!(wait_gone(p, Duration::from_secs(10)), "sandbox process {p} survived the embedder");
    }
}

#[test]
fn stockade_itself_spawns_under_the_default_filter_but_gets_no_namespaces() {
    let _g = shared();
    // The run example (an embedding program) inside the recommended sandbox: clone3 fails with
    // ENOSYS there, and it falls back to clone; new namespaces stay refused.
    let example = run_example();
    let mut b = untrusted();
    b.mount(Mount::bind_ro(example.parent().unwrap(), "/probe"));
    let sandbox = b.build().unwrap();
    let inner = |ns: &str| {
        let out = sandbox
            .command("/probe/run")
            .args(["--ns", ns, "--", "/bin/sh", "-c", "echo inner $$"])
            .output()
            .unwrap();
        (
            out.status,
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    };
    let (status, out, err) = inner("none");
    assert!(status.success(), "{status}: {out}{err}");
    assert!(out.starts_with("inner "), "{out}{err}");
    let (status, out, err) = inner("user,pid,mount");
    assert_eq!(status.code(), Some(125), "a nested sandbox got namespaces: {out}{err}");
    assert!(err.contains("Operation not permitted"), "{err}");
    assert!(!out.contains("inner"), "{out}");
}

#[test]
fn fifty_sandboxes_return_the_embedders_descriptors_and_children_to_their_start() {
    let _g = exclusive();
    // Counted before the sandboxes exist: each keeps a descriptor of its own (its /dev/null)
    // until dropped.
    let fds = fd_count();
    let sandbox = recommended();
    let timed = untrusted().timeout(Duration::from_millis(50)).build().unwrap();
    let children = own_children();
    for i in 0..50 {
        match i % 5 {
            0 => assert!(sandbox.command("/bin/true").status().unwrap().success()),
            1 => {
                let mut c = sandbox.command("/bin/sleep").arg("10").spawn().unwrap();
                c.kill().unwrap();
                assert_eq!(c.wait().unwrap().signal(), Some(libc::SIGKILL));
            }
            2 => drop(sandbox.command("/bin/sleep").arg("10").spawn().unwrap()),
            3 => assert!(timed.command("/bin/sleep").arg("10").status().unwrap().timed_out()),
            _ => {
                let out = sandbox.command("/bin/sh").args(["-c", "echo out; echo err >&2"]).output().unwrap();
                assert_eq!((out.stdout.as_slice(), out.stderr.as_slice()), (&b"out\n"[..], &b"err\n"[..]));
            }
        }
    }
    // Ten at once.
    let mut many: Vec<_> =
        (0..10).map(|_| sandbox.command("/bin/sleep").arg("10").spawn().unwrap()).collect();
    for c in &mut many {
        c.kill().unwrap();
        c.wait().unwrap();
    }
    drop(many);
    for pid in own_children() {
        if !children.contains(&pid) {
            assert!(wait_gone(pid, Duration::from_secs(10)), "child {pid} stayed");
        }
    }
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while own_children() != children && std::time::Instant::now() < deadline {
        std::thread::yield_now();
    }
    assert_eq!(own_children(), children, "children (zombies included) left behind");
    drop((sandbox, timed));
    assert_eq!(fd_count(), fds, "descriptors leaked");
}

// ---------------------------------------------------------------------------------------------
// D: bad input from the embedding program
// ---------------------------------------------------------------------------------------------

/// Asserts that building (and spawning) `b` fails as `check` says, before any process or
/// descriptor of it exists.
fn assert_build_error(b: &SandboxBuilder, check: impl Fn(&Error) -> bool) {
    let fds = fd_count();
    let children = own_children();
    let err = b.build().err().unwrap_or_else(|| panic!("build succeeded"));
    assert!(check(&err), "unexpected error: {err:?}");
    assert_eq!(fd_count(), fds, "descriptors leaked: {err}");
    assert_eq!(own_children(), children, "a process was created: {err}");
}

#[test]
fn a_nul_byte_in_the_hostname_is_a_typed_error() {
    let _g = exclusive();
    let mut b = untrusted();
    b.hostname("sand\0box");
    assert_build_error(
        &b,
        |e| matches!(e, Error::NulByte { what: "hostname", value } if value == "sand\0box"),
    );
}

#[test]
fn a_relative_mount_target_is_a_typed_error() {
    let _g = exclusive();
    let mut b = untrusted();
    b.mount(Mount::tmpfs("relative/tmp"));
    assert_build_error(
        &b,
        |e| matches!(e, Error::InvalidPath { what: "mount target", path, .. } if path == Path::new("relative/tmp")),
    );
}

#[test]
fn an_unknown_syscall_name_in_a_filter_rule_is_invalid_value() {
    let _g = exclusive();
    let mut b = untrusted();
    b.syscall_filter(SyscallFilter::default_profile().refuse("no_such_call"));
    assert_build_error(
        &b,
        |e| matches!(e, Error::InvalidValue { what: "syscall name", value, .. } if value == "no_such_call"),
    );
}

#[test]
fn conflicting_filter_rules_are_invalid_value() {
    let _g = exclusive();
    let mut b = untrusted();
    b.syscall_filter(
        SyscallFilter::default_profile()
            .rule(SyscallRule::new("getpid", Action::Allow))
            .rule(SyscallRule::new("getpid", Action::Errno(libc::EPERM))),
    );
    assert_build_error(
        &b,
        |e| matches!(e, Error::InvalidValue { what: "syscall rule", value, .. } if value == "getpid"),
    );
}

#[test]
fn errno_zero_in_a_filter_rule_is_invalid_value() {
    let _g = exclusive();
    let mut b = untrusted();
    b.syscall_filter(SyscallFilter::default_profile().rule(SyscallRule::new("getpid", Action::Errno(0))));
    assert_build_error(
        &b,
        |e| matches!(e, Error::InvalidValue { what: "syscall filter errno", value, .. } if value == "0"),
    );
}

#[test]
fn a_missing_bind_source_is_a_typed_error() {
    let _g = exclusive();
    let missing = PathBuf::from(format!("/nonexistent-{}", marker("source")));
    let mut b = untrusted();
    b.mount(Mount::bind_ro(&missing, "/data"));
    assert_build_error(
        &b,
        |e| matches!(e, Error::PathAccess { path, source, .. } if *path == missing && source.kind() == std::io::ErrorKind::NotFound),
    );
}

#[test]
fn a_missing_program_is_an_exec_error_and_leaves_nothing_behind() {
    let _g = exclusive();
    let fds = fd_count();
    let sandbox = recommended();
    let children = own_children();
    let err = sandbox.command("/no/such/program").output().unwrap_err();
    assert!(
        matches!(&err, Error::Exec { program, source } if program == Path::new("/no/such/program") && source.kind() == std::io::ErrorKind::NotFound),
        "{err:?}"
    );
    for pid in own_children() {
        if !children.contains(&pid) {
            assert!(wait_gone(pid, Duration::from_secs(10)));
        }
    }
    drop(sandbox);
    assert_eq!(fd_count(), fds, "descriptors leaked");
}

// ---------------------------------------------------------------------------------------------
// A8, A9 and E: host paths and shared kernel objects
// ---------------------------------------------------------------------------------------------

#[test]
fn symlinks_planted_in_a_callers_root_never_redirect_a_mount_to_the_host() {
    let _g = shared();
    let victim = open_tempdir(0o777);
    std::fs::write(victim.path().join("sentinel"), "untouched").unwrap();
    let before = snapshot(victim.path());
    let host = host_mounts();
    // A root directory of the caller's whose mount destination `link` is a symlink to a host
    // directory (one destination at a time, so that each is tried).
    for link in ["proc", "dev", "tmp"] {
        let rootfs = open_tempdir(0o755);
        for dir in ["usr", "bin", "lib", "lib64", "sbin", "lib32", "libx32", "proc", "dev", "tmp"] {
            let host_dir = Path::new("/").join(dir);
            if dir == link {
                std::os::unix::fs::symlink(victim.path(), rootfs.path().join(dir)).unwrap();
            } else if std::fs::symlink_metadata(&host_dir).is_ok_and(|m| m.file_type().is_symlink()) {
                std::os::unix::fs::symlink(std::fs::read_link(&host_dir).unwrap(), rootfs.path().join(dir))
                    .unwrap();
            } else if host_dir.exists() {
                std::fs::create_dir(rootfs.path().join(dir)).unwrap();
            }
        }
        let mut b = untrusted();
        b.root(Root::dir(rootfs.path()));
        let err = b
            .build()
            .unwrap()
            .command("/bin/sh")
            .args(["-c", "echo pwned > /tmp/sentinel; echo pwned > /dev/sentinel"])
            .output()
            .unwrap_err();
        // The spawn fails at that mount, which will not follow the link.
        assert!(
            matches!(&err, Error::Setup { stage: Stage::Mount { target, .. }, source }
                if *target == Path::new("/").join(link) && source.raw_os_error() == Some(libc::ELOOP)),
            "{link}: {err:?}"
        );
        assert_eq!(snapshot(victim.path()), before, "{link}: a mount or write reached the host directory");
        assert_eq!(host_mounts(), host, "{link}: the host's mounts changed");
    }
}

#[test]
fn the_host_cgroup_tree_is_out_of_reach() {
    let _g = shared();
    let attack = r#"
report('mount_cgroup2', SYS['mount'], b'none', b'/tmp', b'cgroup2', 0, None)
report('mount_cgroup_pids', SYS['mount'], b'cgroup', b'/tmp', b'cgroup', 0, b'pids')
report('unshare_cgroup', SYS['unshare'], 0x02000000)
try_os('list_sys_fs_cgroup', lambda: os.listdir('/sys/fs/cgroup'))
say('cgroup', ';'.join(open('/proc/self/cgroup').read().split()))
"#;
    let Some(p) = py("the_host_cgroup_tree_is_out_of_reach", attack) else { return };
    p.refused("mount_cgroup2", "EPERM");
    p.refused("mount_cgroup_pids", "EPERM");
    p.refused("unshare_cgroup", "EPERM");
    p.refused("list_sys_fs_cgroup", "ENOENT");
    if is_root() {
        // Its groups are the root of what it sees; from the host, its pids limit still holds.
        for line in p.value("cgroup").split(';') {
            assert!(line.ends_with(":/"), "{line}\n{}", p.dump());
        }
        assert_eq!(p.after.pids_max, "128", "{}", p.after.cgroup);
    } else {
        // No delegation: the payload stays in the embedder's groups, moved nowhere.
        assert_eq!(p.after.cgroup, read("/proc/self/cgroup"));
    }
}

#[test]
fn the_embedders_keys_are_neither_searchable_nor_listed() {
    let _g = shared();
    let key = HostKey::plant("search");
    let attack = fill(
        r#"
report('search_session', SYS['keyctl'], 10, -3, b'user', b'@DESC@', 0)
report('search_user', SYS['keyctl'], 10, -4, b'user', b'@DESC@', 0)
buf = ctypes.create_string_buffer(256)
report('read_host_key', SYS['keyctl'], 11, @KEY@, buf, 256)
try_os('read_proc_keys', lambda: say('proc_keys_bytes', len(open('/proc/keys').read())))
"#,
        &[("DESC", &key.desc), ("KEY", &key.id.to_string())],
    );
    let Some(p) = py("the_embedders_keys_are_neither_searchable_nor_listed", &attack) else { return };
    p.refused("search_session", "EPERM");
    p.refused("search_user", "EPERM");
    p.refused("read_host_key", "EPERM");
    assert_masked(&p, "read_proc_keys", "proc_keys_bytes");
    assert!(!p.said.contains("secret-of"), "{}", p.dump());
    key.assert_intact();
}

#[test]
fn a_symlink_planted_in_a_shared_host_path_never_redirects_a_bind() {
    let _g = shared();
    let shared_dir = open_tempdir(0o755);
    let secret = open_tempdir(0o777);
    write_file(&secret.path().join("sentinel"), "host secret", 0o666);
    let before = snapshot(secret.path());
    let cache = shared_dir.path().join("cache");
    std::fs::create_dir(&cache).unwrap();
    let mut b = untrusted();
    b.mount(Mount::bind(&cache, "/cache"));
    let built = b.build().unwrap();
    // An untrusted party swaps the directory for a link to the secret.
    std::fs::remove_dir(&cache).unwrap();
    std::os::unix::fs::symlink(secret.path(), &cache).unwrap();
    let err = built.command("/bin/sh").args(["-c", "echo pwned > /cache/sentinel"]).output().unwrap_err();
    assert!(
        matches!(&err, Error::Setup { stage: Stage::Mount { target, .. }, source } if target == Path::new("/cache") && source.raw_os_error() == Some(libc::ELOOP)),
        "{err:?}"
    );
    // Built after the swap: refused at build(), naming the path.
    let err = b.build().unwrap_err();
    assert!(matches!(&err, Error::InvalidPath { path, .. } if *path == cache), "{err:?}");
    assert_eq!(snapshot(secret.path()), before, "the secret directory changed");
}

#[test]
fn the_payloads_root_is_not_host_root() {
    let _g = shared();
    let passwd = (fingerprint(Path::new("/etc/passwd")), read("/etc/passwd"));
    let mut b = untrusted();
    b.mount(Mount::bind("/etc/passwd", "/data/passwd"));
    // Only opened for writing, never written: a file every user can read, that host root owns.
    let attack = r#"
say('id', os.getuid(), os.geteuid())
try_os('open_host_file_for_writing', lambda: os.open('/data/passwd', os.O_WRONLY))
try_os('chown_host_file', lambda: os.chown('/data/passwd', 0, 0))
try_os('chmod_host_file', lambda: os.chmod('/data/passwd', 0o666))
"#;
    let Some(p) = py_in("the_payloads_root_is_not_host_root", &b.build().unwrap(), attack, |_| {}) else {
        return;
    };
    assert_eq!(p.value("id"), "0 0", "{}", p.dump());
    p.refused("open_host_file_for_writing", "EACCES");
    p.refused("chown_host_file", "EPERM");
    p.refused("chmod_host_file", "EPERM");
    let host_uid = if is_root() { UNTRUSTED_IDS } else { nix::unistd::geteuid().as_raw() };
    let uid = p.after.status.iter().find(|l| l.starts_with("Uid:")).unwrap();
    assert!(uid.split_whitespace().skip(1).all(|u| u == host_uid.to_string()), "{uid}");
    assert_eq!((fingerprint(Path::new("/etc/passwd")), read("/etc/passwd")), passwd);
}

#[test]
fn nothing_of_the_embedder_is_visible_through_the_init() {
    let _g = shared();
    let exe = std::env::current_exe().unwrap().display().to_string();
    let attack = r#"
say('init_cmdline', open('/proc/1/cmdline').read().replace('\0', ' ').strip())
say('init_comm', open('/proc/1/comm').read().strip())
try_os('read_init_environ', lambda: open('/proc/1/environ').read())
try_os('read_init_maps', lambda: say('maps', len(open('/proc/1/maps').read())))
try_os('list_init_fds', lambda: [os.readlink('/proc/1/fd/' + f) for f in os.listdir('/proc/1/fd')])
try_os('read_init_auxv', lambda: open('/proc/1/auxv', 'rb').read())
"#;
    let Some(p) = py("nothing_of_the_embedder_is_visible_through_the_init", attack) else { return };
    assert_eq!(p.value("init_cmdline"), "stockade-init", "{}", p.dump());
    assert_eq!(p.value("init_comm"), "stockade-init");
    p.refused("read_init_environ", "EACCES");
    p.refused("list_init_fds", "EACCES");
    p.refused("read_init_auxv", "EACCES");
    if let Some(n) = p.said.lines().find_map(|l| l.strip_prefix("maps ")) {
        assert_eq!(n, "0", "the init's memory map is readable\n{}", p.dump());
    } else {
        p.refused("read_init_maps", "EACCES");
    }
    assert!(!p.said.contains(&exe), "the embedding program's path is visible\n{}", p.dump());
}

#[test]
fn a_file_passed_read_only_cannot_be_reopened_writable() {
    let _g = shared();
    let dir = open_tempdir(0o777);
    let file = dir.path().join("config");
    write_file(&file, "original", 0o666);
    let attack = r#"
try_os('reopen_writable', lambda: os.open('/proc/self/fd/3', os.O_WRONLY))
try_os('write_fd', lambda: os.write(3, b'pwned'))
try_os('chmod_via_fd', lambda: os.fchmod(3, 0o777))
say('read', os.read(3, 64).decode())
"#;
    let test = "a_file_passed_read_only_cannot_be_reopened_writable";
    if !is_root() {
        // Without root the file cannot be pinned read-only, and this user may write it: refused.
        let err = recommended()
            .command("/bin/true")
            .fd(3, std::fs::File::open(&file).unwrap())
            .output()
            .unwrap_err();
        assert!(matches!(&err, Error::NotPermitted { what, .. } if what.contains("fd 3")), "{err}");
        assert_eq!(read(&file), "original");
        return;
    }
    let passed = std::fs::File::open(&file).unwrap();
    let Some(p) = py_in(test, &recommended(), attack, |c| {
        c.fd(3, passed);
    }) else {
        return;
    };
    p.refused("reopen_writable", "EROFS");
    p.refused("write_fd", "EBADF");
    p.refused("chmod_via_fd", "EROFS");
    assert_eq!(p.value("read"), "original");
    assert_eq!(read(&file), "original");
    assert_eq!(meta(&file).unwrap().0 & 0o777, 0o666);
}
