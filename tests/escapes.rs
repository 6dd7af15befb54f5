//! Attacks from a hostile payload against the embedding program and the host (security.md,
//! section A): each test asserts the attack fails and that the host-side object is unchanged.

mod common;

use std::io::BufRead;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::time::Duration;

use common::*;
use stockade::{Capability, Namespaces, Sandbox, Stdio};

fn open_fds(pid: i32) -> Vec<i32> {
    let mut fds: Vec<i32> = std::fs::read_dir(format!("/proc/{pid}/fd"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().parse().unwrap())
        .collect();
    fds.sort();
    fds
}

#[test]
fn descriptors_the_embedding_program_left_inheritable_do_not_reach_the_payload() {
    // A host directory opened without O_CLOEXEC, as careless embedding programs do.
    // SAFETY: plain open(2) of a constant path, then a copy at 50 or above (F_DUPFD leaves
    // close-on-exec off); both descriptors are owned or closed here.
    let leaked = unsafe {
        let raw = libc::open(c"/".as_ptr(), libc::O_RDONLY | libc::O_DIRECTORY);
        assert!(raw >= 0);
        let high = libc::fcntl(raw, libc::F_DUPFD, 50);
        libc::close(raw);
        assert!(high >= 50);
        OwnedFd::from_raw_fd(high)
    };
    let fd = leaked.as_raw_fd();
    for kind in [Namespaces::empty(), Namespaces::all()] {
        let sandbox = sandbox(kind);
        let mut child = sandbox.command("/bin/sleep").arg("3600").stdin(Stdio::null()).spawn().unwrap();
        // The payload is the sandbox's first process, or the init's only child.
        let payload = if kind.contains(Namespaces::PID) {
            let mut kids = children_of(child.id() as i32);
            while kids.is_empty() {
                std::thread::yield_now();
                kids = children_of(child.id() as i32);
            }
            kids[0]
        } else {
            child.id() as i32
        };
        // Read from the host side: exact, and independent of what a shell opens itself (once
        // sleep is sleeping: during exec the loader briefly holds its libraries open).
        wait_until_sleeping(payload);
        let fds = open_fds(payload);
        if is_root() && kind.contains(Namespaces::PID) {
            // The init (a copy of this program) holds nothing but its status pipe once it
            // waits for signals (it closes the rest right after forking the payload).
            wait_until_blocked_in(child.id() as i32, "sigtimedwait");
            let init_fds = open_fds(child.id() as i32);
            assert_eq!(init_fds.len(), 1, "init holds {init_fds:?}");
        }
        child.kill().unwrap();
        child.wait().unwrap();
        assert_eq!(fds, [0, 1, 2], "{kind:?}: payload descriptors");
        // And the host descriptor really was inheritable: a plain child process sees it.
        let std_out = std::process::Command::new("/bin/sh")
            .args(["-c", &format!("[ -e /proc/$$/fd/{fd} ] && echo inherited")])
            .output()
            .unwrap();
        assert_eq!(std_out.stdout, b"inherited\n", "control: std::process sees the leaked fd");
    }
    drop(leaked);
}

#[test]
fn init_exe_cannot_be_opened_for_writing_or_read_from_the_payload() {
    let exe = std::env::current_exe().unwrap();
    let before = std::fs::read(&exe).unwrap();
    let sandbox = sandbox(Namespaces::all());
    // pid 1 is the init, a copy of this test binary (runc CVE-2019-5736 wants to overwrite it).
    let out = sh(
        &sandbox,
        "echo 1 exe: $(readlink /proc/1/exe 2>&1); \
         (echo pwned >> /proc/1/exe) 2>/dev/null && echo wrote-exe; \
         (cat /proc/1/exe > /dev/null) 2>/dev/null && echo read-exe; \
         (cat /proc/1/environ > /dev/null) 2>/dev/null && echo read-environ; \
         (cat /proc/1/mem > /dev/null) 2>/dev/null && echo read-mem; \
         for f in /proc/1/fd/*; do readlink $f 2>/dev/null && echo followed-fd; done; \
         ls /proc/1/root/ >/dev/null 2>&1 && echo listed-root; \
         ls /proc/1/cwd/ >/dev/null 2>&1 && echo listed-cwd; \
         echo done",
    );
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.ends_with("done\n"), "{text}");
    // (Listing /proc/1/fd shows bare numbers to a payload mapped to host root; what they
    // point to, like the init's root and cwd on the host, stays out of reach.)
    for forbidden in
        ["wrote-exe", "read-exe", "read-environ", "read-mem", "followed-fd", "listed-root", "listed-cwd"]
    {
        assert!(!text.contains(forbidden), "payload could {forbidden}: {text}");
    }
    assert_eq!(std::fs::read(&exe).unwrap(), before, "the embedding program's binary changed");
}

#[test]
fn payload_cannot_ptrace_or_read_the_memory_of_its_init() {
    if !have("/usr/bin/python3") {
        return skip("payload_cannot_ptrace_or_read_the_memory_of_its_init", "python3 missing for the probe");
    }
    let sandbox = sandbox(Namespaces::all());
    let probe = "import ctypes, os\n\
                 libc = ctypes.CDLL(None, use_errno=True)\n\
                 libc.ptrace.argtypes = [ctypes.c_long, ctypes.c_int, ctypes.c_void_p, ctypes.c_void_p]\n\
                 r = libc.ptrace(16, 1, None, None)\n\
                 print('attach', r, os.strerror(ctypes.get_errno()))\n\
                 buf = ctypes.create_string_buffer(8)\n\
                 class iov(ctypes.Structure): _fields_ = [('base', ctypes.c_void_p), ('len', ctypes.c_size_t)]\n\
                 local = iov(ctypes.cast(buf, ctypes.c_void_p), 8); remote = iov(0x400000, 8)\n\
                 r = libc.process_vm_readv(1, ctypes.byref(local), 1, ctypes.byref(remote), 1, 0)\n\
                 print('vm_readv', r, os.strerror(ctypes.get_errno()))\n";
    let out = sandbox.command("/usr/bin/python3").args(["-c", probe]).output().unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains("attach -1 Operation not permitted"),
        "{text} {}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(text.contains("vm_readv -1 Operation not permitted"), "{text}");
}

#[test]
fn payload_runs_in_a_new_session_without_a_controlling_terminal() {
    for kind in [Namespaces::empty(), Namespaces::all()] {
        let sandbox = sandbox(kind);
        // Field 6 of /proc/<pid>/stat is the session id, field 7 the controlling tty.
        let out = sh_ok(
            &sandbox,
            "cut -d' ' -f6,7 /proc/self/stat; (exec 3</dev/tty) 2>/dev/null && echo has-tty; true",
        );
        let mut fields = out.lines().next().unwrap().split(' ');
        let session: i32 = fields.next().unwrap().parse().unwrap();
        let tty: i32 = fields.next().unwrap().parse().unwrap();
        assert_ne!(session, nix::unistd::getsid(None).unwrap().as_raw(), "{kind:?}: shares the host session");
        assert_eq!(tty, 0, "{kind:?}: has a controlling terminal");
        assert!(!out.contains("has-tty"), "{kind:?}: /dev/tty opened: {out}");
    }
}

fn kill_embedder_and_check_sandbox_dies(ns: &str, script: &str, expect_processes: usize) {
    let mut embedder = std::process::Command::new(run_example())
        .args(["--ns", ns, "--print-pid", "--", "/bin/sh", "-c", script])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut err = std::io::BufReader::new(embedder.stderr.take().unwrap());
    let mut line = String::new();
    err.read_line(&mut line).unwrap();
    let pid: i32 =
        line.trim().strip_prefix("pid ").unwrap_or_else(|| panic!("unexpected: {line}")).parse().unwrap();
    // The payload prints once all its processes exist.
    read_until(&mut buffered(embedder.stdout.take().unwrap()), |l| l == "started");
    let tree = tree_of(pid);
    assert!(tree.len() >= expect_processes, "sandbox tree {tree:?}");
    embedder.kill().unwrap(); // SIGKILL: no destructor, no cleanup code runs.
    embedder.wait().unwrap();
    for p in tree {
        assert!(
            wait_gone(p, Duration::from_secs(10)),
            "sandbox process {p} survived the embedding program ({ns})"
        );
    }
}

#[test]
fn killing_the_embedding_program_kills_the_whole_sandbox_tree() {
    kill_embedder_and_check_sandbox_dies(
        "all",
        "sleep 3600 >/dev/null 2>&1 & setsid sleep 3600 >/dev/null 2>&1 & echo started; wait",
        4,
    );
}

#[test]
fn killing_the_embedding_program_kills_a_payload_without_namespaces() {
    // Without a pid namespace only the payload itself carries the parent-death signal.
    kill_embedder_and_check_sandbox_dies("none", "echo started; exec sleep 3600", 1);
}

#[test]
fn tiocsti_keystroke_injection_into_the_terminal_fails() {
    if !have("/usr/bin/python3") {
        return skip("tiocsti_keystroke_injection_into_the_terminal_fails", "python3 missing for the probe");
    }
    let probe = "import fcntl, termios\n\
                 try:\n    fcntl.ioctl(0, termios.TIOCSTI, b'\\n'); print('injected')\n\
                 except OSError as e:\n    print('refused', e.errno)\n";
    let attempt = |sandbox: &stockade::Sandbox| {
        let (_master, slave) = open_pty();
        let out = sandbox
            .command("/usr/bin/python3")
            .args(["-c", probe])
            .stdin(slave.try_clone().unwrap())
            .output()
            .unwrap();
        // Whatever was injected would now be waiting in the terminal's input queue.
        let mut queued: libc::c_int = 0;
        // SAFETY: FIONREAD writes an int.
        assert_eq!(unsafe { libc::ioctl(slave.as_raw_fd(), libc::FIONREAD, &mut queued) }, 0);
        (String::from_utf8_lossy(&out.stdout).into_owned(), queued)
    };
    for kind in [Namespaces::empty(), Namespaces::all()] {
        let (said, queued) = attempt(&sandbox(kind));
        assert_eq!(said, "refused 1\n", "{kind:?}");
        assert_eq!(queued, 0, "{kind:?}: keystrokes reached the terminal");
    }
    if is_root() {
        // Given CAP_SYS_ADMIN (root, no user namespace), which passes the kernel's own check,
        // the syscall filter still refuses the request.
        let filtered = Sandbox::builder().capabilities([Capability::CAP_SYS_ADMIN]).build().unwrap();
        assert_eq!(attempt(&filtered), ("refused 1\n".to_owned(), 0));
        // Control: without the filter the same probe does inject, so the refusals above come
        // from the sandbox, not from the test.
        let control =
            Sandbox::builder().capabilities([Capability::CAP_SYS_ADMIN]).no_syscall_filter().build().unwrap();
        let (said, queued) = attempt(&control);
        assert_eq!((said.as_str(), queued), ("injected\n", 1));
    }
}

#[test]
fn a_payload_traced_by_its_own_child_still_ends_at_the_wall_clock_limit_while_nobody_waits() {
    // The payload lets its child trace it; killed and traced, it would stay an unreaped zombie
    // (only its tracer may reap it), which an init waiting to reap it never sees end. The init
    // ends the whole namespace instead. The embedding program only watches the pidfd.
    if !have("/usr/bin/python3") {
        return skip("a_payload_traced_by_its_own_child_still_ends", "no /usr/bin/python3 for ptrace");
    }
    use std::os::fd::AsFd;
    let script = r#"
import ctypes, os, signal, sys
libc = ctypes.CDLL(None, use_errno=True)
libc.prctl(0x59616d61, ctypes.c_ulong(-1 & 0xffffffffffffffff), 0, 0, 0)  # PR_SET_PTRACER_ANY
payload = os.getpid()
r, w = os.pipe()
if os.fork() == 0:
    ok = libc.ptrace(0x4206, payload, 0, 0) == 0  # PTRACE_SEIZE, the tracee keeps running
    os.write(w, b"1" if ok else b"0")
    while True:
        signal.pause()  # never waits for the payload
print("traced" if os.read(r, 1) == b"1" else "refused", flush=True)
while True:
    signal.pause()
"#;
    // The limit must leave the payload time to start and set up its tracer: on a slow machine
    // (an emulated guest) python alone may take longer than the first try's 300 ms, so a run
    // the limit ended before "traced" is tried again with twice the limit.
    let mut limit = Duration::from_millis(300);
    let mut child = loop {
        let sandbox = builder(Namespaces::PID | Namespaces::MOUNT).timeout(limit).build().unwrap();
        let mut child =
            sandbox.command("/usr/bin/python3").args(["-c", script]).stdout(Stdio::piped()).spawn().unwrap();
        let mut line = String::new();
        std::io::BufRead::read_line(&mut buffered(child.stdout.take().unwrap()), &mut line).unwrap();
        if line.trim() == "traced" {
            break child;
        }
        let status = child.wait().unwrap();
        assert!(
            line.is_empty()
                && status.limit() == Some(stockade::Limit::WallClock)
                && limit < Duration::from_secs(60),
            "the payload could not set up its tracer: {line:?}, {status}"
        );
        limit *= 2;
    };
    let mut fds = [nix::poll::PollFd::new(child.as_fd(), nix::poll::PollFlags::POLLIN)];
    // (A bound, so that a regression fails instead of hanging.)
    let bound = nix::poll::PollTimeout::try_from(120_000).unwrap();
    assert_eq!(nix::poll::poll(&mut fds, bound).unwrap(), 1, "the sandbox outlived its wall-clock limit");
    let status = child.try_wait().unwrap().expect("ended");
    assert_eq!(status.limit(), Some(stockade::Limit::WallClock), "{status}");
}
