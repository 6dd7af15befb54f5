//! Warm sandboxes: a started session keeps its filesystem between commands, each command gets
//! its own accounting and limits, and a pool hands out sandboxes nobody used. Every test runs
//! as root and as uid 65534 (with a user namespace); parts that need cgroups say so when they
//! cannot run. Some tests count this process's descriptors and children, so all run one at a
//! time.

mod common;

use std::time::Duration;

use common::*;
use stockade::{Compat, Error, Mount, Namespaces, Pool, Root, Sandbox, SandboxBuilder, Stdio};

/// A tmpfs root with the host's system directories and a writable /work, every namespace (as
/// root without a user namespace where none can be made: the cgroup v2 guest).
fn session_builder() -> SandboxBuilder {
    let all = if user_namespaces_work() { Namespaces::all() } else { Namespaces::all() - Namespaces::USER };
    let mut b = rooted(all, Root::tmpfs());
    b.mount(Mount::tmpfs("/work")).hostname("warm");
    b
}

/// [`session_builder`] without a cgroup namespace (and without limits): commands get no
/// cgroup of their own, so what they leave running stays in the session.
fn lingering_builder() -> SandboxBuilder {
    let mut b = session_builder();
    let all = if user_namespaces_work() { Namespaces::all() } else { Namespaces::all() - Namespaces::USER };
    b.namespaces(all - Namespaces::CGROUP);
    b
}

/// Whether this host lets this process make user namespaces.
fn user_namespaces_work() -> bool {
    static WORK: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    *WORK.get_or_init(|| {
        let works = Sandbox::builder()
            .namespaces(Namespaces::USER)
            .build()
            .is_ok_and(|s| s.command("/bin/true").status().is_ok_and(|st| st.success()));
        if !works {
            skip(
                "sessions in a user namespace",
                "this host refuses user namespaces: sessions run without one",
            );
        }
        works
    })
}

/// Python for the memory tests, or a recorded skip.
fn python(test: &str) -> bool {
    let there = have("/usr/bin/python3");
    if !there {
        skip(test, "no /usr/bin/python3 to allocate memory with");
    }
    there
}

/// Whether this process can make cgroups (root, or delegation).
fn can_make_cgroups() -> bool {
    Sandbox::builder().memory_limit(64 << 20).build().is_ok_and(|s| s.command("/bin/true").status().is_ok())
}

#[test]
fn a_session_keeps_files_between_commands_and_shows_its_namespaces() {
    let _serial = serial();
    let sandbox = session_builder().build().unwrap();
    let session = sandbox.start().unwrap();
    let first = session.command("/bin/sh").args(["-c", "echo kept > /work/note; hostname"]).output().unwrap();
    assert!(first.status.success(), "{first:?}");
    assert_eq!(first.stdout, b"warm\n");
    // The second command sees the first one's file, the session's init (1) and holder (2), and
    // is itself a process of the session's pid namespace.
    let second =
        sh_ok_in(&session, "cat /work/note; ls -d /proc/[0-9]* | sort -n -t/ -k3 | head -2; echo $$");
    let lines: Vec<&str> = second.lines().collect();
    assert_eq!(lines[0], "kept");
    assert_eq!(&lines[1..3], ["/proc/1", "/proc/2"]);
    let pid: u32 = lines[3].parse().unwrap();
    assert!(pid > 2, "the command is a process of the session: {pid}");
    // Nothing of it reached the host.
    assert!(!std::path::Path::new("/work/note").exists());
    session.stop().unwrap();
}

/// Runs `script` with `/bin/sh -c` in the session; asserts success, returns stdout.
fn sh_ok_in(session: &stockade::Session, script: &str) -> String {
    let out = session.command("/bin/sh").args(["-c", script]).output().unwrap();
    assert!(out.status.success(), "{script}: {out:?}");
    String::from_utf8(out.stdout).unwrap()
}

#[test]
fn commands_start_in_the_sessions_root_even_where_it_is_a_chroot() {
    // A sandbox that chroots (use_chroot(), or a host whose root cannot be pivoted) has a root
    // other than its mount namespace's: commands must land in the sandbox's, not the host's.
    let _serial = serial();
    let mut b = session_builder();
    b.use_chroot();
    let session = b.build().unwrap().start().unwrap();
    assert_eq!(sh_ok_in(&session, "echo there > /work/mark; ls /"), sh_ok_in(&session, "ls /"));
    assert_eq!(sh_ok_in(&session, "cat /work/mark"), "there\n");
    assert!(!sh_ok_in(&session, "ls /").contains("home"), "a command sees the host's root");
}

#[test]
fn each_command_reports_its_own_peak_memory() {
    let _serial = serial();
    if !python("each_command_reports_its_own_peak_memory") {
        return;
    }
    let mut b = session_builder();
    b.memory_limit(512 << 20);
    if !can_make_cgroups() {
        skip(
            "each_command_reports_its_own_peak_memory (cgroup part)",
            "no cgroup delegation: the figures come from each command's own rusage",
        );
        b.resource_compat(Compat::BestEffort);
    }
    let session = b.build().unwrap().start().unwrap();
    let big = session
        .command("/usr/bin/python3")
        .args(["-c", "b = b'x' * (200 << 20); print(len(b))"])
        .output()
        .unwrap();
    assert!(big.status.success(), "{big:?}");
    let small = session.command("/usr/bin/python3").args(["-c", "b = b'x' * (10 << 20)"]).output().unwrap();
    assert!(small.status.success(), "{small:?}");
    let (big, small) = (big.status.usage().peak_memory.unwrap(), small.status.usage().peak_memory.unwrap());
    assert!(big >= 200 << 20, "the first command's peak: {big}");
    assert!(small < 100 << 20, "the second command reports its own peak, not the first's: {small}");
}

#[test]
fn a_command_over_its_memory_limit_is_killed_alone_and_the_session_goes_on() {
    let _serial = serial();
    if !python("a_command_over_its_memory_limit_is_killed_alone_and_the_session_goes_on") {
        return;
    }
    if !can_make_cgroups() {
        return skip(
            "a_command_over_its_memory_limit_is_killed_alone_and_the_session_goes_on",
            "memory limits need cgroups this user can make (root or delegation)",
        );
    }
    let mut b = session_builder();
    b.memory_limit(64 << 20);
    let session = b.build().unwrap().start().unwrap();
    let hog = session.command("/usr/bin/python3").args(["-c", "b = b'x' * (256 << 20)"]).output().unwrap();
    assert_eq!(hog.status.limit(), Some(stockade::Limit::Memory), "{hog:?}");
    // The limit was the command's: the next one has all of it again.
    let next = session.command("/usr/bin/python3").args(["-c", "b = b'x' * (32 << 20)"]).output().unwrap();
    assert!(next.status.success(), "{next:?}");
}

#[test]
fn what_a_command_leaves_running_ends_with_it() {
    let _serial = serial();
    if !can_make_cgroups() {
        return skip(
            "what_a_command_leaves_running_ends_with_it",
            "a command's processes are found through its cgroup, which needs root or delegation",
        );
    }
    let mut b = session_builder();
    b.pids_limit(64);
    let session = b.build().unwrap().start().unwrap();
    let out = session.command("/bin/sh").args(["-c", "sleep 1000 & echo $!"]).output().unwrap();
    assert!(out.status.success(), "{out:?}");
    let left: u32 = String::from_utf8(out.stdout).unwrap().trim().parse().unwrap();
    // Waited for: its cgroup, with the sleep in it, is gone.
    let ps = sh_ok_in(&session, &format!("test -e /proc/{left} && echo alive || echo gone"));
    assert_eq!(ps.trim(), "gone");
}

#[test]
fn time_limits_apply_to_each_command() {
    let _serial = serial();
    let mut b = session_builder();
    b.timeout(Duration::from_secs(2));
    let session = b.build().unwrap().start().unwrap();
    let mut slow = session.command("/bin/sleep").arg("1000").spawn().unwrap();
    let status = slow.wait().unwrap();
    assert!(status.timed_out(), "{status:?}");
    // The session outlives its command's limit.
    assert_eq!(sh_ok_in(&session, "echo still"), "still\n");
}

#[test]
fn commands_run_side_by_side_with_their_own_stdio() {
    let _serial = serial();
    let session = session_builder().build().unwrap().start().unwrap();
    let mut a = session.command("/bin/cat").stdin(Stdio::piped()).stdout(Stdio::piped()).spawn().unwrap();
    let b = session.command("/bin/echo").arg("b").output().unwrap();
    assert_eq!(b.stdout, b"b\n");
    use std::io::Write;
    a.stdin.take().unwrap().write_all(b"to a\n").unwrap();
    let out = a.wait_with_output().unwrap();
    assert_eq!(out.stdout, b"to a\n");
}

#[test]
fn a_session_ends_on_drop_and_leaves_nothing_behind() {
    let _serial = serial();
    let sandbox = session_builder().build().unwrap();
    let (fds, children) = (fd_count(), own_children());
    let session = sandbox.start().unwrap();
    let init = session.id() as i32;
    let mut running = session.command("/bin/sleep").arg("1000").spawn().unwrap();
    assert!(running.try_wait().unwrap().is_none());
    drop(session);
    // The command died with its session.
    let status = running.wait().unwrap();
    assert!(!status.success());
    drop(running);
    assert!(wait_gone(init, Duration::from_secs(10)), "the session's init {init} is still there");
    assert_eq!(fd_count(), fds, "descriptor leaked: {:#?}", fd_targets());
    assert_eq!(own_children(), children, "process left behind");
}

#[test]
fn a_command_in_an_ended_session_is_a_typed_error() {
    let _serial = serial();
    let session = session_builder().build().unwrap().start().unwrap();
    // A command may end its own session: kill the holder, and with it the init.
    let _ = session.command("/bin/sh").args(["-c", "kill -9 2"]).status();
    let mut session = session;
    for _ in 0..100 {
        if !session.is_running() {
            break;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    assert!(!session.is_running());
    let err = session.command("/bin/true").status().unwrap_err();
    assert!(matches!(&err, Error::Setup { stage: stockade::Stage::JoinSession, .. }), "{err}");
}

#[test]
fn a_session_needs_a_mount_and_a_pid_namespace() {
    let _serial = serial();
    for ns in [Namespaces::UTS, Namespaces::MOUNT] {
        let sandbox = builder(ns).build().unwrap();
        let err = sandbox.start().unwrap_err();
        assert!(matches!(&err, Error::InvalidValue { what: "session", .. }), "{ns:?}: {err}");
    }
}

#[test]
fn a_process_left_in_the_session_cannot_open_a_new_commands_memory() {
    // Until its exec a command's memory is a copy of its server's (the init program's, never
    // the embedding program's; non-dumpable): a process an earlier command left behind, with the
    // same ids and namespaces, must not be able to open it, nor read the embedder's argv in it. The attacker
    // watches /proc for new pids and records any /proc/<pid>/mem it opens while the pid still
    // maps the test binary, and any cmdline naming the test binary.
    let _serial = serial();
    if !python("a_process_left_in_the_session_cannot_open_a_new_commands_memory") {
        return;
    }
    // Without a time namespace, which alone would force a copy anyway.
    let mut b = session_builder();
    let all = if user_namespaces_work() { Namespaces::all() } else { Namespaces::all() - Namespaces::USER };
    b.namespaces(ns(all - Namespaces::TIME));
    let session = b.build().unwrap().start().unwrap();
    let ours = std::env::current_exe().unwrap();
    let name = ours.file_name().unwrap().to_string_lossy().into_owned();
    let attacker = format!(
        r#"
import os, time
seen = set(os.listdir('/proc'))
open('/work/watching', 'w').close()
while not os.path.exists('/work/stop'):
    for p in os.listdir('/proc'):
        if not p.isdigit() or p in seen:
            continue
        try:
            argv = open('/proc/%s/cmdline' % p, 'rb').read()
        except OSError:
            argv = b''
        if b'{name}' in argv:
            open('/work/leak', 'a').write('read the embedder argv in /proc/%s/cmdline\n' % p)
        try:
            f = open('/proc/%s/mem' % p, 'r+b', buffering=0)
        except OSError:
            seen.add(p)
            continue
        try:
            maps = open('/proc/%s/maps' % p).read()
        except OSError:
            maps = ''
        if '{name}' in maps:
            line = [l for l in maps.splitlines() if '{name}' in l][0]
            open('/work/leak', 'a').write('opened the memory of %s: %s\n' % (p, line))
        f.close()
        seen.add(p)
"#
    );
    let mut watcher =
        session.command("/usr/bin/python3").args(["-c", &attacker]).stdout(Stdio::null()).spawn().unwrap();
    // Started once the file is there (or the watcher ended early, which the wait below reports).
    let up = "for i in $(seq 1000); do [ -e /work/watching ] && break; sleep 0.01; done; echo up";
    assert_eq!(sh_ok_in(&session, up), "up\n");
    for _ in 0..100 {
        assert!(session.command("/bin/true").status().unwrap().success());
    }
    sh_ok_in(&session, "touch /work/stop");
    assert!(watcher.wait().unwrap().success());
    assert_eq!(sh_ok_in(&session, "cat /work/leak 2>/dev/null; true"), "");
}

/// Waits until `pool` holds `n` sessions started ahead (bounded, so that a pool that never
/// refills fails the test instead of hanging it).
fn wait_ready(pool: &Pool, n: usize) {
    for _ in 0..2400 {
        if pool.ready() == n {
            return;
        }
        std::thread::sleep(Duration::from_millis(25));
    }
    panic!("the pool holds {} sessions after 60 s, not {n}", pool.ready());
}

#[test]
fn a_pool_starts_replacements_when_sessions_come_back_or_it_runs_low_not_beside_commands() {
    let _serial = serial();
    let sandbox = session_builder().build().unwrap();
    let pool = Pool::new(&sandbox, 2);
    for round in 0..2 {
        wait_ready(&pool, 2);
        let session = pool.get().unwrap();
        // Half the pool still ready: nothing starts while the session taken runs its commands.
        // (On an idle machine a replacement started beside them is ready well within this
        // window; on a busy one a start may outlast it, so the check can miss a regression
        // there, never fail a correct pool.)
        for _ in 0..5 {
            sh_ok_in(&session, "true");
        }
        std::thread::sleep(Duration::from_millis(300));
        assert_eq!(
            pool.ready(),
            1,
            "round {round}: a replacement started while the session taken was in use"
        );
        drop(session);
        // Came back: its replacement starts.
        wait_ready(&pool, 2);
        // Both taken: below half ready, replacements start at once, with both still out.
        let both = (pool.get().unwrap(), pool.get().unwrap());
        wait_ready(&pool, 2);
        // Coming back to a full pool, they are owed nothing (the next round checks it).
        drop(both);
    }
}

/// The scheduling policy of `pid` (field 41 of /proc/<pid>/stat).
fn policy_of(pid: &str) -> u32 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
    // Fields from the third on follow the command name's closing parenthesis.
    let rest = &stat[stat.rfind(')').unwrap() + 2..];
    rest.split(' ').nth(41 - 3).unwrap().parse().unwrap()
}

#[test]
fn a_pools_sessions_started_ahead_run_idle_and_commands_run_under_their_callers_policy() {
    let _serial = serial();
    let sandbox = session_builder().build().unwrap();
    let caller = policy_of("thread-self");
    assert_ne!(caller, libc::SCHED_IDLE as u32, "the test itself runs idle: nothing to compare");
    let pool = Pool::new(&sandbox, 1);
    wait_ready(&pool, 1);
    // The first is started under the thread's first policy (what it starts once for the whole
    // process, the cgroup reaper, must not run idle).
    let first = pool.get().unwrap();
    assert_eq!(policy_of(&first.id().to_string()), caller, "the pool's first session");
    // Kept out: the pool starts another.
    wait_ready(&pool, 1);
    let ahead = pool.get().unwrap();
    assert_eq!(policy_of(&ahead.id().to_string()), libc::SCHED_IDLE as u32, "the session's init");
    let seen = sh_ok_in(&ahead, "cut -d' ' -f41 /proc/self/stat");
    assert_eq!(seen.trim(), caller.to_string(), "a command in a session started ahead");
    // One back, reset: its new holder made idle, its commands under the caller's policy still.
    drop((first, ahead));
    wait_ready(&pool, 1);
    let reset = pool.get().unwrap();
    let holder = std::fs::read_to_string(format!("/proc/{}/task/{0}/children", reset.id())).unwrap();
    assert_eq!(policy_of(holder.trim()), libc::SCHED_IDLE as u32, "a reset session's holder");
    let seen = sh_ok_in(&reset, "cut -d' ' -f41 /proc/self/stat");
    assert_eq!(seen.trim(), caller.to_string(), "a command in a reset session");
    // A pool with nothing started ahead: `get` starts the session on the calling thread.
    let empty = Pool::new(&sandbox, 0);
    let own = empty.get().unwrap();
    assert_eq!(policy_of(&own.id().to_string()), caller, "a session get started");
}

#[test]
fn a_pool_hands_out_sandboxes_nobody_used_and_refills() {
    let _serial = serial();
    let (fds, children) = (fd_count(), own_children());
    let sandbox = session_builder().build().unwrap();
    {
        let pool = Pool::new(&sandbox, 2);
        for round in 0..4 {
            let session = pool.get().unwrap();
            let seen = sh_ok_in(&session, "cat /work/mark 2>/dev/null; echo used > /work/mark");
            assert_eq!(seen, "", "round {round}: a pooled session had been used before");
        }
        // Refilled in the background (idle work: slow on a busy machine): wait for the event.
        wait_ready(&pool, 2);
    }
    // (The sandbox keeps a descriptor of its own, its /dev/null, until dropped.)
    drop(sandbox);
    assert_eq!(fd_count(), fds, "descriptor leaked");
    assert_eq!(own_children(), children, "process left behind");
}

#[test]
fn a_session_command_that_changes_ids_runs_while_fs_suid_dumpable_is_1_with_nothing_of_this_program_in_the_session()
 {
    // Serial: it starts sessions, and other tests count this process's descriptors.
    let _serial = serial();
    let test = "sessions::a_session_command_that_changes_ids_runs_while_fs_suid_dumpable_is_1_with_nothing_of_this_program_in_the_session";
    // fs.suid_dumpable is the whole machine's (no namespace has its own): set to 1 only on the
    // throw-away guest the runner boots, where nothing else depends on it.
    let lane = std::env::var("STOCKADE_TEST_LANE").unwrap_or_default();
    if !is_root() || !lane.contains("cgroup2-vm guest") {
        return skip(
            test,
            "sets fs.suid_dumpable, the whole machine's: only as root on the throw-away cgroup2-vm guest",
        );
    }
    const SYSCTL: &str = "/proc/sys/fs/suid_dumpable";
    struct Restore(String);
    impl Drop for Restore {
        fn drop(&mut self) {
            std::fs::write(SYSCTL, &self.0).expect("restore fs.suid_dumpable");
        }
    }
    let _restore = Restore(std::fs::read_to_string(SYSCTL).unwrap());
    // Root without a user namespace, the payload running as nobody: its ids change. A command
    // starts from the session's server (the small init program, outside the session's pid
    // namespace), never a copy of this program: with 1 it runs.
    let mut b = rooted(Namespaces::all() - Namespaces::USER, Root::tmpfs());
    b.user(65534, 65534);
    let sandbox = b.build().unwrap();
    for setting in ["1", "0", "2"] {
        std::fs::write(SYSCTL, setting).unwrap();
        let session = sandbox.start().unwrap();
        let out = session.command("/usr/bin/id").arg("-u").output().unwrap();
        assert_eq!(String::from_utf8_lossy(&out.stdout), "65534\n", "with fs.suid_dumpable {setting}");
        assert!(sandbox.command("/bin/true").status().unwrap().success());
    }
}

#[test]
fn a_process_of_the_session_cannot_stop_or_see_the_server_that_starts_its_commands() {
    // The server lives outside the session's pid namespace: a command stopping every process
    // it can signal (the holder among them) stops nothing that starts or reports commands, and
    // sees only the session's own processes.
    let _serial = serial();
    let session = session_builder().build().unwrap().start().unwrap();
    let seen = sh_ok_in(&session, "kill -STOP -1; ls -d /proc/[0-9]* | wc -l");
    // The init, the holder, the shell and `ls` (`wc` may have ended or not).
    let count: u32 = seen.trim().parse().unwrap();
    assert!((3..=5).contains(&count), "processes the command sees: {seen}");
    for _ in 0..3 {
        assert_eq!(sh_ok_in(&session, "echo still"), "still\n");
    }
    let out = session.command("/bin/sh").args(["-c", "exit 7"]).status().unwrap();
    assert_eq!(out.code(), Some(7));
    session.stop().unwrap();
}

#[test]
fn a_session_under_a_filter_its_server_cannot_work_under_is_refused_before_anything_starts() {
    // The server and its commands run under the payload's filter: one refusing a call they
    // need is a typed error from `start`, with nothing started.
    let _serial = serial();
    let mut b = session_builder();
    b.syscall_filter(stockade::SyscallFilter::default_profile().refuse("wait4"));
    let sandbox = b.build().unwrap();
    let (fds, children) = (fd_count(), own_children());
    match sandbox.start() {
        Err(Error::Unsupported { feature, .. }) => assert!(feature.contains("wait4"), "{feature}"),
        other => panic!("a filter refusing wait4: {other:?}"),
    }
    assert_eq!(fd_count(), fds, "descriptor leaked");
    assert_eq!(own_children(), children, "process left behind");
    // The sandbox's own payload may still run under it.
    assert!(sandbox.command("/bin/true").status().unwrap().success());
}

#[test]
fn a_session_whose_payload_may_trace_processes_is_refused_before_anything_starts() {
    // Until its exec a command holds its server's descriptors (and memory): no process of the
    // session may be able to trace it.
    let _serial = serial();
    let mut b = session_builder();
    b.capabilities([stockade::Capability::CAP_SYS_PTRACE, stockade::Capability::CAP_KILL]);
    let sandbox = b.build().unwrap();
    let (fds, children) = (fd_count(), own_children());
    match sandbox.start() {
        Err(Error::Unsupported { feature, .. }) => assert!(feature.contains("CAP_SYS_PTRACE"), "{feature}"),
        other => panic!("a payload holding CAP_SYS_PTRACE: {other:?}"),
    }
    assert_eq!(fd_count(), fds, "descriptor leaked");
    assert_eq!(own_children(), children, "process left behind");
    // Without it, the same session starts.
    let mut b = session_builder();
    b.capabilities([stockade::Capability::CAP_KILL]);
    b.build().unwrap().start().unwrap().stop().unwrap();
}

#[test]
fn each_command_of_a_landlocked_session_is_in_a_landlock_domain_of_its_own() {
    // With Landlock's signal scope a process cannot signal one outside its domain: a command
    // left running is beyond a later command's reach, as a sandbox's payload is beyond
    // another sandbox's (the session's server applies no domain itself).
    let _serial = serial();
    let test = "sessions::each_command_of_a_landlocked_session_is_in_a_landlock_domain_of_its_own";
    let mut b = Sandbox::untrusted();
    b.resource_compat(Compat::BestEffort);
    let session = b.build().unwrap().start().unwrap();
    let mut first = session
        .command("/bin/sh")
        .args(["-c", "echo $$ > /tmp/first; exec sleep 100"])
        .stdout(Stdio::null())
        .spawn()
        .unwrap();
    if first.unenforced().contains(&stockade::LANDLOCK_SCOPES)
        || first.unenforced().contains(&stockade::LANDLOCK)
    {
        return skip(test, "this kernel has no Landlock signal scope (Linux 6.12, ABI 6)");
    }
    let wait = "for i in $(seq 1000); do [ -s /tmp/first ] && break; sleep 0.01; done";
    let out = session
        .command("/bin/sh")
        .args(["-c", &format!("{wait}; kill -0 $(cat /tmp/first) 2>&1 && echo reached || echo refused")])
        .output()
        .unwrap();
    assert!(String::from_utf8_lossy(&out.stdout).ends_with("refused\n"), "{out:?}");
    // Within one command's own tree, signals still go.
    let own =
        session.command("/bin/sh").args(["-c", "sleep 100 & kill $! && wait $!; echo $?"]).output().unwrap();
    assert_eq!(String::from_utf8_lossy(&own.stdout), "143\n", "{own:?}");
    first.kill().unwrap();
    first.wait().unwrap();
}

#[test]
fn a_commands_rlimits_are_its_own_and_its_server_keeps_the_room_it_needs() {
    // The payload's rlimits apply to each command exactly; the server that starts them only
    // raises its own to them: it takes in a request of more descriptors than that (the
    // command's 30, with the request's own 3), which a server held to the limit could not.
    let _serial = serial();
    let mut b = session_builder();
    b.rlimit(stockade::Rlimit::OpenFiles, 32, 32);
    let session = b.build().unwrap().start().unwrap();
    let mut command = session.command("/bin/sh");
    command.args(["-c", "grep 'Max open files' /proc/self/limits; ls /proc/self/fd | wc -l"]);
    for target in 3..30 {
        command.fd(target, std::fs::File::open("/dev/null").unwrap());
    }
    let out = command.output().unwrap();
    assert!(out.status.success(), "{out:?}");
    let text = String::from_utf8_lossy(&out.stdout);
    let mut lines = text.lines();
    let limits: Vec<&str> = lines.next().unwrap().split_whitespace().collect();
    assert_eq!(&limits[3..5], ["32", "32"], "{text}");
    // 0-29, and the one `ls` reads the directory through.
    assert!(lines.next().unwrap().trim().parse::<u32>().unwrap() >= 30, "{text}");
}

#[test]
fn a_command_a_session_process_stops_before_its_exec_is_a_typed_error_not_a_hang() {
    // A process of the session has the command's ids and sees its pid: stopping every
    // process it can, over and over, it stops new commands before their exec. The spawn says
    // so (and ends the command) rather than wait for as long as the attacker likes.
    let _serial = serial();
    let session = session_builder().build().unwrap().start().unwrap();
    let mut attacker = session
        .command("/bin/sh")
        .args(["-c", "while :; do kill -STOP -1 2>/dev/null; done"])
        .stdout(Stdio::null())
        .spawn()
        .unwrap();
    let session = std::sync::Arc::new(session);
    let (tx, rx) = std::sync::mpsc::channel();
    let spawner = session.clone();
    let thread = std::thread::spawn(move || {
        for _ in 0..5 {
            let outcome = match spawner.command("/bin/true").spawn() {
                Ok(mut child) => {
                    // Exec'd in between: stopped (or not) after it, which ends with a kill.
                    child.kill().unwrap();
                    child.wait().map(|_| "ran".to_string()).map_err(|e| e.to_string())
                }
                Err(e) => Err(e.to_string()),
            };
            let _ = tx.send(outcome);
        }
    });
    // A hang is the failure this guards against: a bound far above any spawn's time.
    for _ in 0..5 {
        match rx.recv_timeout(Duration::from_secs(120)).expect("the spawn hung on a stopped command") {
            Ok(_) => {}
            Err(e) => assert!(e.contains("stopped before its exec"), "{e}"),
        }
    }
    attacker.kill().unwrap();
    attacker.wait().unwrap();
    // The session ends here, not on the thread after this test's lock is gone.
    thread.join().unwrap();
    std::sync::Arc::try_unwrap(session).unwrap().stop().unwrap();
}

#[test]
fn a_session_leaves_no_zombie_to_an_embedder_that_reaps_orphans() {
    // A program that is a subreaper (or pid 1 of a container) gets the orphans of its
    // descendants: the session's commands, children of its server, must all be reaped before
    // the server goes, however the session ends. Subreaper status is process-wide: checked in a
    // copy of this binary running this test alone.
    let test = "a_session_leaves_no_zombie_to_an_embedder_that_reaps_orphans";
    let _serial = serial();
    if std::env::var_os("STOCKADE_TEST_SUBREAPER").is_none() {
        let copy = std::process::Command::new(std::env::current_exe().unwrap())
            .args(["--exact", test, "--test-threads=1"])
            .env("STOCKADE_TEST_SUBREAPER", "1")
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        // A zombie left to the copy (which reaps nothing itself) keeps the session's init from
        // ending, and the copy's wait for it: a bound far above the copy's time makes that hang a
        // failure.
        let pid = copy.id() as i32;
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let _ = tx.send(copy.wait_with_output());
        });
        let out = match rx.recv_timeout(Duration::from_secs(300)) {
            Ok(out) => out.unwrap(),
            Err(_) => {
                // SAFETY: a signal to the copy this test started.
                unsafe { libc::kill(pid, libc::SIGKILL) };
                panic!("as a subreaper: the copy hung (a zombie left to it, most likely)");
            }
        };
        let stdout = String::from_utf8_lossy(&out.stdout);
        // Indented: the copy's report is not this binary's (a runner reads "---- NAME" lines).
        let report = format!("{stdout}{}", String::from_utf8_lossy(&out.stderr)).replace('\n', "\n    ");
        assert!(
            out.status.success() && stdout.contains("1 passed"),
            "as a subreaper: {}\n    {report}",
            out.status
        );
        return;
    }
    // SAFETY: an integer option; this copy runs this one test alone.
    assert_eq!(unsafe { libc::prctl(libc::PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) }, 0);
    let children = own_children();
    let sandbox = session_builder().build().unwrap();
    for ending in ["dropped", "dropped while a command of it is still to spawn", "its holder killed"] {
        let session = sandbox.start().unwrap();
        let mut running = session.command("/bin/sleep").arg("1000").spawn().unwrap();
        let pending = session.command("/bin/true");
        match ending {
            "dropped" => drop(session),
            "dropped while a command of it is still to spawn" => drop(session),
            _ => {
                let _ = session.command("/bin/sh").args(["-c", "kill -9 2"]).status();
                assert!(!running.wait().unwrap().success(), "{ending}");
                drop(session);
            }
        }
        assert!(!running.wait().unwrap().success(), "{ending}");
        drop(running);
        if ending != "dropped while a command of it is still to spawn" {
            drop(pending);
        } else {
            // The session is gone: its socket, kept by the command, says so.
            let mut pending = pending;
            assert!(pending.status().is_err(), "{ending}");
        }
        assert_eq!(own_children(), children, "{ending}: a process left to this program");
    }
}

#[test]
fn a_reset_session_is_as_new_in_the_same_namespaces_and_leaves_nothing_behind() {
    let _serial = serial();
    let (fds, children, targets) = (fd_count(), own_children(), fd_targets());
    // (Commands without cgroups of their own: what they leave running stays for the reset.)
    let sandbox = lingering_builder().build().unwrap();
    let mut session = sandbox.start().unwrap();
    let init = session.id();
    // (A command's user namespace is the nested one the holder locks its mounts in, which a
    // reset makes anew with the mounts.)
    let namespaces = "readlink /proc/self/ns/net /proc/self/ns/pid /proc/self/ns/cgroup";
    let kept = sh_ok_in(&session, namespaces);
    // The holder's (the init's one child yet) mount, ipc and uts namespaces, held open: a
    // namespace freed could give its number to a new one.
    let holder = std::fs::read_to_string(format!("/proc/{init}/task/{init}/children")).unwrap();
    let renewed = ["mnt", "ipc", "uts"];
    let old: Vec<(std::fs::File, String)> = renewed
        .iter()
        .map(|ns| {
            let path = format!("/proc/{}/ns/{ns}", holder.trim());
            (std::fs::File::open(&path).unwrap(), std::fs::read_link(&path).unwrap().display().to_string())
        })
        .collect();
    assert_eq!(sh_ok_in(&session, "readlink /proc/self/ns/mnt").trim(), old[0].1, "the holder's");
    // State an earlier user leaves: a file in the writable layer, a process that outlives its
    // command (a daemon, reparented to the init), a System V shared memory segment where
    // python can make one, a hostname changed where the payload may.
    sh_ok_in(&session, "echo used > /work/mark; echo used > /tmp/mark 2>/dev/null; true");
    let daemon =
        sh_ok_in(&session, "setsid sleep 1000 > /dev/null 2>&1 < /dev/null & echo $!").trim().to_owned();
    let python = have("/usr/bin/python3");
    if python {
        let made = session
            .command("/usr/bin/python3")
            .args([
                "-c",
                "import ctypes; l = ctypes.CDLL(None); \
                 print(l.shmget(0x5eed, 4096, 0o1600))",
            ])
            .output()
            .unwrap();
        assert!(made.status.success(), "{made:?}");
        assert!(String::from_utf8_lossy(&made.stdout).trim().parse::<i32>().unwrap() >= 0, "{made:?}");
    } else {
        skip("a reset session keeps no IPC object", "no /usr/bin/python3 to make one with");
    }
    let running = session.command("/bin/sleep").arg("1000").spawn().unwrap();
    let pending = session.command("/bin/true");

    session.reset().unwrap();
    assert!(session.is_running());
    assert_eq!(session.id(), init, "the init stays");
    assert_eq!(sh_ok_in(&session, namespaces), kept, "kept namespaces");
    for (ns, (_, before)) in renewed.iter().zip(&old) {
        let after = sh_ok_in(&session, &format!("readlink /proc/self/ns/{ns}"));
        assert_ne!(after.trim(), before, "made anew");
    }
    drop(old);
    // Nothing of before: no file, no process but the init and the new holder (and this
    // command's), the hostname set again.
    let seen = sh_ok_in(
        &session,
        "cat /work/mark /tmp/mark 2>/dev/null; hostname; cat /proc/[0-9]*/comm | grep -v -x -e sh -e cat -e grep -e sort | sort",
    );
    assert_eq!(seen, "warm\nstockade-hold\nstockade-init\n", "after the reset");
    assert_eq!(sh_ok_in(&session, &format!("test -e /proc/{daemon} || echo gone")).trim(), "gone");
    if python {
        let probe = session
            .command("/usr/bin/python3")
            .args(["-c", "import ctypes; l = ctypes.CDLL(None); print(l.shmget(0x5eed, 0, 0))"])
            .output()
            .unwrap();
        assert_eq!(String::from_utf8_lossy(&probe.stdout).trim(), "-1", "the segment of before: {probe:?}");
    }
    // The command that ran across the reset ended; one made before it cannot spawn.
    let mut running = running;
    assert!(!running.wait().unwrap().success());
    let mut pending = pending;
    let err = pending.status().unwrap_err();
    assert!(matches!(&err, Error::Setup { stage: stockade::Stage::JoinSession, .. }), "{err}");
    // Used again, and reset again: the same.
    sh_ok_in(&session, "echo used > /work/mark");
    session.reset().unwrap();
    assert_eq!(sh_ok_in(&session, "cat /work/mark 2>/dev/null; true"), "");
    drop((running, pending));
    drop(session);
    assert!(wait_gone(init as i32, Duration::from_secs(10)), "the session's init {init} is still there");
    drop(sandbox);
    assert_eq!(fd_count(), fds, "descriptors before: {targets:#?}, after: {:#?}", fd_targets());
    assert_eq!(own_children(), children, "process left behind");
}

#[test]
fn a_session_whose_payload_could_change_what_a_reset_keeps_is_refused_a_reset_and_a_pool_starts_anew() {
    let _serial = serial();
    if !is_root() {
        skip(
            "a reset refused for a payload that may administer the network",
            "only a sandbox without a user namespace lets the payload hold CAP_NET_ADMIN over the \
             session's network namespace, and only root makes one",
        );
        return;
    }
    let mut b = session_builder();
    b.namespaces(Namespaces::all() - Namespaces::USER).capabilities([stockade::Capability::CAP_NET_ADMIN]);
    let sandbox = b.build().unwrap();
    let mut session = sandbox.start().unwrap();
    sh_ok_in(&session, "echo used > /work/mark");
    let err = session.reset().unwrap_err();
    assert!(matches!(&err, Error::Unsupported { feature, .. } if feature.contains("network")), "{err}");
    // Refused before anything changed: the session goes on as it was.
    assert!(session.is_running());
    assert_eq!(sh_ok_in(&session, "cat /work/mark"), "used\n");
    drop(session);
    // A pool of it stops what comes back and starts sessions anew: nobody sees another's file.
    let pool = Pool::new(&sandbox, 1);
    let mut inits = Vec::new();
    for round in 0..3 {
        let session = pool.get().unwrap();
        inits.push(session.id());
        let seen = sh_ok_in(&session, "cat /work/mark 2>/dev/null; echo used > /work/mark");
        assert_eq!(seen, "", "round {round}: a pooled session had been used before");
        drop(session);
        wait_ready(&pool, 1);
    }
    inits.dedup();
    assert_eq!(inits.len(), 3, "a session came back for another caller: {inits:?}");
}

#[test]
fn a_pool_gives_back_sessions_reset_in_their_namespaces() {
    let _serial = serial();
    let sandbox = session_builder().build().unwrap();
    // (Two: a checkout that leaves half the pool ready owes its replacement only on its
    // return, which the session itself then is.)
    let pool = Pool::new(&sandbox, 2);
    wait_ready(&pool, 2);
    let first = pool.get().unwrap();
    let init = first.id();
    let net = sh_ok_in(&first, "readlink /proc/self/ns/net; echo used > /work/mark");
    drop(first);
    wait_ready(&pool, 2);
    let both = [pool.get().unwrap(), pool.get().unwrap()];
    let again = both.iter().find(|s| s.id() == init).expect("reset, not started anew");
    // The same init and network namespace, nothing of the first caller's.
    assert_eq!(sh_ok_in(again, "readlink /proc/self/ns/net; cat /work/mark 2>/dev/null; true"), net);
    // The new holder is in the session's groups, as the first was.
    let holder = std::fs::read_to_string(format!("/proc/{init}/task/{init}/children")).unwrap();
    let groups = |pid: &str| std::fs::read_to_string(format!("/proc/{pid}/cgroup")).unwrap();
    assert_eq!(groups(holder.trim()), groups(&init.to_string()), "the holder's groups");
}

#[test]
fn a_reset_completes_whatever_the_processes_left_in_the_session_do() {
    // A process left behind stops everything it can see, over and over, and signals the init:
    // nothing the reset starts may be stopped or kept waiting by it (it is dead before the
    // reset's processes exist), and the init takes no request from inside.
    let _serial = serial();
    let session = lingering_builder().build().unwrap().start().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    let thread = std::thread::spawn(move || {
        let mut session = session;
        for round in 0..5 {
            // Its launcher says when it runs (and may be stopped itself then: the reset ends it).
            let mut launcher = session
                .command("/bin/sh")
                .args([
                    "-c",
                    "setsid sh -c 'while :; do kill -STOP -1; kill -USR1 1; kill -CONT 1; done' \
                     > /dev/null 2>&1 < /dev/null & echo started; exec sleep 1000",
                ])
                .stdout(Stdio::piped())
                .spawn()
                .unwrap();
            let mut line = String::new();
            let stdout = launcher.stdout.take().unwrap();
            std::io::BufRead::read_line(&mut std::io::BufReader::new(stdout), &mut line).unwrap();
            assert_eq!(line, "started\n");
            let reset = session.reset().map_err(|e| e.to_string());
            assert!(!launcher.wait().unwrap().success());
            let seen = reset.and_then(|()| {
                let out = session.command("/bin/sh").args(["-c", "cat /proc/[0-9]*/comm"]).output();
                out.map(|o| String::from_utf8_lossy(&o.stdout).into_owned()).map_err(|e| e.to_string())
            });
            let _ = tx.send((round, seen));
        }
        session
    });
    // A hang is the failure this guards against: a bound far above any reset's time.
    for _ in 0..5 {
        let (round, seen) = rx.recv_timeout(Duration::from_secs(120)).expect("a reset hung");
        let seen = seen.unwrap_or_else(|e| panic!("round {round}: {e}"));
        // The command's own shell, not the one left behind.
        assert_eq!(seen.lines().filter(|comm| *comm == "sh").count(), 1, "round {round}: {seen}");
        assert!(seen.contains("stockade-hold"), "round {round}: {seen}");
    }
    thread.join().unwrap().stop().unwrap();
}

#[test]
fn a_reset_moves_the_init_off_the_first_filesystem_and_a_killed_holder_ends_the_rest_until_the_next_reset() {
    let _serial = serial();
    let mut session = lingering_builder().build().unwrap().start().unwrap();
    let init = session.id();
    let link = |pid: &str, ns: &str| {
        std::fs::read_link(format!("/proc/{pid}/ns/{ns}")).map(|l| l.display().to_string())
    };
    let children = || std::fs::read_to_string(format!("/proc/{init}/task/{init}/children")).unwrap();
    let first = link(&init.to_string(), "mnt").unwrap();
    session.reset().unwrap();
    // The init is in the new holder's mount namespace now: the one holding the first tree (and
    // whatever the first user wrote to it) is gone with it.
    let holder = children();
    assert_eq!(link(&init.to_string(), "mnt").unwrap(), link(holder.trim(), "mnt").unwrap());
    assert_ne!(link(&init.to_string(), "mnt").unwrap(), first);
    // A command kills the holder, leaving a process behind: the init ends that one too (the
    // session has ended until a reset), and stays.
    let script = "setsid sleep 1000 > /dev/null 2>&1 < /dev/null & \
                  for p in /proc/[0-9]*; do [ \"$(cat $p/comm)\" = stockade-hold ] && kill -9 ${p#/proc/}; done; true";
    let _ = session.command("/bin/sh").args(["-c", script]).status();
    let mut left = children();
    for _ in 0..400 {
        if left.trim().is_empty() && !session.is_running() {
            break;
        }
        std::thread::sleep(Duration::from_millis(25));
        left = children();
    }
    assert_eq!(left.trim(), "", "processes left in the session after its holder's end");
    assert!(!session.is_running(), "its server still runs");
    // A reset makes it whole again.
    session.reset().unwrap();
    assert!(session.is_running());
    assert_eq!(sh_ok_in(&session, "echo back"), "back\n");
}

#[test]
fn a_session_whose_init_is_not_root_of_its_user_namespace_is_refused_a_reset() {
    let _serial = serial();
    if !user_namespaces_work() {
        skip("a reset refused without a root in the map", "this host makes no user namespaces");
        return;
    }
    // SAFETY: getuid and getgid have no preconditions.
    let (uid, gid) = unsafe { (libc::getuid(), libc::getgid()) };
    let mut b = session_builder();
    b.uid_map([stockade::IdMap::new(1000, uid, 1)]).gid_map([stockade::IdMap::new(1000, gid, 1)]);
    let mut session = b.build().unwrap().start().unwrap();
    sh_ok_in(&session, "echo used > /work/mark");
    let err = session.reset().unwrap_err();
    assert!(matches!(&err, Error::Unsupported { feature, .. } if feature.contains("no root")), "{err}");
    assert_eq!(sh_ok_in(&session, "cat /work/mark"), "used\n", "refused before anything changed");
}
