//! Proves the post-clone code allocates nothing: this test binary's global allocator kills any
//! process that is not the test process itself (a child between clone and exec, or the pid-1
//! init) the moment it allocates, with an exit code the test recognises. Eight threads spawn
//! concurrently to shake out lock and descriptor races.

mod common;
#[cfg(feature = "image")]
#[path = "common/oci.rs"]
mod oci;

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicI32, Ordering};
use std::thread;

use common::*;
use stockade::{Error, Namespaces, Root, Stdio};

/// Exit code of a process killed for allocating after clone.
const ALLOCATED_IN_CHILD: i32 = 86;

struct AbortInChild;

static TEST_PROCESS: AtomicI32 = AtomicI32::new(0);

impl AbortInChild {
    fn check() {
        // SAFETY: getpid has no preconditions and does not allocate.
        let pid = unsafe { libc::getpid() };
        let owner = match TEST_PROCESS.compare_exchange(0, pid, Ordering::SeqCst, Ordering::SeqCst) {
            Ok(_) => pid,
            Err(owner) => owner,
        };
        if pid != owner {
            let msg = b"allocation after clone\n";
            // SAFETY: write and _exit are async-signal-safe; the message is a static buffer.
            unsafe {
                libc::write(2, msg.as_ptr().cast(), msg.len());
                libc::_exit(ALLOCATED_IN_CHILD);
            }
        }
    }
}

// SAFETY: delegates to the system allocator after a check that never allocates.
unsafe impl GlobalAlloc for AbortInChild {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        Self::check();
        unsafe { System.alloc(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        Self::check();
        unsafe { System.dealloc(ptr, layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        Self::check();
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static ALLOCATOR: AbortInChild = AbortInChild;

#[test]
fn allocator_guard_catches_an_allocation_in_a_forked_child() {
    // The guard itself must work, or the real test below proves nothing.
    let _ = Box::new(1u8); // claims this process as the test process
    // SAFETY: the child only allocates (caught by the guard) and exits.
    let pid = unsafe { libc::fork() };
    if pid == 0 {
        let v = vec![1u8; 64];
        std::hint::black_box(v);
        unsafe { libc::_exit(0) };
    }
    let mut status = 0;
    unsafe { libc::waitpid(pid, &mut status, 0) };
    assert!(libc::WIFEXITED(status));
    assert_eq!(libc::WEXITSTATUS(status), ALLOCATED_IN_CHILD);
}

#[test]
fn eight_threads_spawning_fifty_sandboxes_each_never_allocate_after_clone() {
    // Counts this process's descriptors and children: no other test may run meanwhile.
    let _serial = serial();
    let _ = Box::new(1u8);
    let fds_before = fd_count();
    let configs = [Namespaces::empty(), Namespaces::all()];
    let threads: Vec<_> = (0..8)
        .map(|t| {
            thread::spawn(move || {
                // Every other thread: all namespaces, a tmpfs root with stockade's /dev (and
                // its devpts, where terminals are made).
                let rooted_fs = t % 4 == 1;
                let mut b =
                    if rooted_fs { rooted(configs[1], Root::tmpfs()) } else { builder(configs[t % 2]) };
                let sandbox = b.hostname_if(configs[t % 2].contains(Namespaces::UTS)).build().unwrap();
                for i in 0..50 {
                    // Success path (exec), and the failure-report path (missing program).
                    if i % 10 == 9 {
                        let err = sandbox.command("/no/such/program").spawn().unwrap_err();
                        assert!(matches!(err, Error::Exec { .. }), "thread {t} run {i}: {err}");
                        continue;
                    }
                    let mut cmd = sandbox.command("/bin/true");
                    cmd.arg("x")
                        .env("A", "B")
                        .stdout(Stdio::null())
                        .fd(5, std::fs::File::open("/dev/null").unwrap());
                    if rooted_fs && i % 5 == 0 {
                        // A terminal made in the sandbox, its master sent back.
                        cmd.terminal(24, 80);
                    }
                    assert_ran_without_allocating(cmd.status().unwrap(), t, i);
                }
            })
        })
        .collect();
    join_and_check_nothing_left(threads, fds_before);
}

/// A spawn's status: not the guard's exit code, and success.
fn assert_ran_without_allocating(status: stockade::ExitStatus, t: usize, i: usize) {
    assert_ne!(status.code(), Some(ALLOCATED_IN_CHILD), "thread {t} run {i}: allocation after clone");
    assert!(status.success(), "thread {t} run {i}: {status}");
}

/// Joins the spawning threads, then checks that no descriptor and no child is left (a reaper
/// that allocated would have died: a zombie counts as a child left).
fn join_and_check_nothing_left(threads: Vec<thread::JoinHandle<()>>, fds_before: usize) {
    for t in threads {
        t.join().unwrap();
    }
    assert_eq!(fd_count(), fds_before, "descriptors leaked");
    assert_eq!(own_children(), Vec::<i32>::new(), "children left");
}

#[test]
fn created_sandboxes_waiting_at_their_gate_and_outliving_us_never_allocate_after_clone() {
    // The start gate (the payload reports it waits, accepts, takes the connection as its
    // channel) and a sandbox without parent-death signals, with and without an init.
    let _serial = serial();
    let _ = Box::new(1u8);
    let fds_before = fd_count();
    let dir = tempdir();
    let threads: Vec<_> = (0..4)
        .map(|t| {
            let gates = dir.path().to_owned();
            thread::spawn(move || {
                let namespaces =
                    if t % 2 == 0 { Namespaces::all() } else { Namespaces::USER | Namespaces::MOUNT };
                let sandbox = builder(namespaces).outlive_parent().build().unwrap();
                for i in 0..10 {
                    let path = gates.join(format!("{t}-{i}"));
                    let gate = stockade::StartGate::bind(&path).unwrap();
                    let program = if i % 5 == 4 { "/no/such/program" } else { "/bin/true" };
                    let child = sandbox.command(program).stdout(Stdio::null()).spawn_created(gate).unwrap();
                    // Let go (it waits for that before taking a start), then reaped here: it is
                    // still this process's child.
                    let detached = child.detach();
                    let started = stockade::StartGate::start(&path);
                    let code = match nix::sys::wait::waitpid(
                        nix::unistd::Pid::from_raw(detached.pid as i32),
                        None,
                    ) {
                        Ok(nix::sys::wait::WaitStatus::Exited(_, code)) => code,
                        other => panic!("thread {t} run {i}: {other:?}"),
                    };
                    assert_ne!(code, ALLOCATED_IN_CHILD, "thread {t} run {i}: allocation after clone");
                    if i % 5 == 4 {
                        assert!(
                            matches!(started, Err(Error::Exec { .. })),
                            "thread {t} run {i}: {started:?}"
                        );
                    } else {
                        started.unwrap();
                        assert_eq!(code, 0, "thread {t} run {i}");
                    }
                    detached.remove_cgroups();
                    std::fs::remove_file(&path).unwrap();
                }
            })
        })
        .collect();
    join_and_check_nothing_left(threads, fds_before);
}

#[test]
fn the_untrusted_preset_never_allocates_after_clone_nor_does_the_reaper() {
    // As root: an unprivileged id range (the child becomes root of its namespace and re-arms its
    // parent-death signal), groups in every hierarchy, a cgroup namespace, a new session keyring,
    // the init's argv overwritten. Unprivileged: the same without the limits.
    let _serial = serial();
    let _ = Box::new(1u8);
    let fds_before = fd_count();
    let threads: Vec<_> = (0..4)
        .map(|t| {
            thread::spawn(move || {
                let mut b = stockade::Sandbox::untrusted();
                if !is_root() {
                    b.resource_compat(stockade::Compat::BestEffort);
                }
                let sandbox = b.build().unwrap();
                for i in 0..20 {
                    let status = sandbox
                        .command("/bin/true")
                        .stdout(Stdio::null())
                        .fd(5, std::fs::File::open("/etc/hostname").unwrap())
                        .status()
                        .unwrap();
                    assert_ran_without_allocating(status, t, i);
                }
            })
        })
        .collect();
    join_and_check_nothing_left(threads, fds_before);
    if is_root() {
        assert!(reaper().is_some(), "the cgroup reaper is not running");
    }
}

#[test]
fn session_commands_never_allocate_after_clone_nor_do_their_joiners() {
    // The session's holder and its server's joiner (joining the namespaces, taking the
    // payload's credentials), each command (started by the server), and what a reset starts,
    // in the untrusted preset, from two threads; and the failure path.
    let _serial = serial();
    let _ = Box::new(1u8);
    let fds_before = fd_count();
    let threads: Vec<_> = (0..2)
        .map(|t| {
            thread::spawn(move || {
                let mut b = stockade::Sandbox::untrusted();
                if !is_root() {
                    b.resource_compat(stockade::Compat::BestEffort);
                }
                let mut session = b.build().unwrap().start().unwrap();
                for i in 0..20 {
                    if i % 10 == 4 {
                        // A reset's renewer, its child and the new holder (one that allocated
                        // would die at once: the reset fails).
                        let reset = session.reset();
                        assert!(
                            reset.is_ok(),
                            "thread {t} run {i}: reset (allocated after clone?): {reset:?}"
                        );
                    }
                    if i % 10 == 9 {
                        let err = session.command("/no/such/program").spawn().unwrap_err();
                        assert!(matches!(err, Error::Exec { .. }), "thread {t} run {i}: {err}");
                        continue;
                    }
                    let status = session.command("/bin/true").stdout(Stdio::null()).status().unwrap();
                    assert_ran_without_allocating(status, t, i);
                }
                session.stop().unwrap();
            })
        })
        .collect();
    join_and_check_nothing_left(threads, fds_before);
}

#[test]
#[cfg(feature = "image")]
fn image_sandboxes_creating_their_working_dir_never_allocate_after_clone() {
    use stockade::image::{ImageSource, LayerStore, Platform};
    let _serial = serial();
    let _ = Box::new(1u8);
    // An overlay root of stored layers, an image user and a WorkingDir the image lacks (created
    // after clone), or one that cannot be created (the failure-report path).
    let tmp = tempdir();
    let busybox = ["/bin/busybox", "/usr/bin/busybox"].into_iter().find(|p| have(p)).expect("busybox-static");
    let mut l = oci::LayerBuilder::new();
    let mut bb = oci::Entry::new("bin/busybox", b'0');
    bb.data = std::fs::read(busybox).unwrap();
    bb.mode = 0o755;
    l.dir("bin")
        .entry(bb)
        .symlink("bin/true", "busybox")
        .dir("etc")
        .file("etc/passwd", "root:x:0:0::/:/bin/true\n");
    let layer = oci::LayerSpec::new(l.tar());
    for (reference, workdir) in [("made", "/work/dir"), ("blocked", "/etc/passwd/dir")] {
        let config = serde_json::json!({"User": "root", "WorkingDir": workdir});
        oci::write_image(&tmp.path().join("oci"), reference, std::slice::from_ref(&layer), config);
    }
    let source = ImageSource::open(tmp.path().join("oci")).unwrap();
    let store = LayerStore::open(tmp.path().join("store")).unwrap();
    for reference in ["made", "blocked"] {
        let rootfs = store.prepare(&source.image(Some(reference), &Platform::host()).unwrap()).unwrap();
        let mut b = builder(Namespaces::all());
        b.image(&rootfs);
        let sandbox = overlay_as_supported(&mut b).build().unwrap();
        for run in 0..20 {
            let result = sandbox.command("/bin/true").stdout(Stdio::null()).status();
            match (reference, result) {
                ("made", Ok(status)) => assert!(status.success(), "{reference} run {run}: {status}"),
                (
                    "blocked",
                    Err(Error::Setup { stage: stockade::Stage::CreateWorkingDir { .. }, source }),
                ) if source.raw_os_error() == Some(libc::ENOTDIR) => {}
                (_, other) => panic!("{reference} run {run}: {other:?}"),
            }
        }
    }
    assert_eq!(own_children(), Vec::<i32>::new(), "children left");
}

trait HostnameIf {
    fn hostname_if(&mut self, yes: bool) -> &mut Self;
}

impl HostnameIf for stockade::SandboxBuilder {
    fn hostname_if(&mut self, yes: bool) -> &mut Self {
        if yes { self.hostname("alloc-test") } else { self }
    }
}
