//! Running payloads like `std::process`: arguments, environment, stdio, passed descriptors, exit
//! codes and signals, timeouts, signal forwarding and reaping by the init.

mod common;

use std::io::{Read, Write};
use std::os::fd::AsRawFd;
use std::time::Duration;

use common::*;
use stockade::{Namespaces, Sandbox, Stdio};

/// The two shapes of sandbox whose process handling differs: a direct payload, and a payload
/// under a pid-1 init.
fn shapes() -> [Sandbox; 2] {
    [sandbox(Namespaces::empty()), sandbox(Namespaces::all())]
}

#[test]
fn exit_codes_come_back_exactly() {
    for sandbox in shapes() {
        for code in [0, 1, 7, 42, 255] {
            let status = sandbox.command("/bin/sh").args(["-c", &format!("exit {code}")]).status().unwrap();
            assert_eq!(status.code(), Some(code), "{:?}", sandbox.namespaces());
            assert_eq!(status.signal(), None);
            assert_eq!(status.success(), code == 0);
        }
    }
}

#[test]
fn death_by_signal_is_reported_as_that_signal_even_under_an_init() {
    for sandbox in shapes() {
        for sig in [libc::SIGKILL, libc::SIGSEGV, libc::SIGTERM, libc::SIGUSR1] {
            let status =
                sandbox.command("/bin/sh").args(["-c", &format!("kill -{sig} $$")]).status().unwrap();
            assert_eq!(status.signal(), Some(sig), "{:?}: {status}", sandbox.namespaces());
            assert_eq!(status.code(), None);
        }
    }
}

#[test]
fn arguments_reach_the_payload_unchanged() {
    let args = ["plain", "with space", "", "ünïcödé", "$HOME", "--flag=x", "'quoted'"];
    for sandbox in shapes() {
        let out = sandbox
            .command("/bin/sh")
            .args(["-c", "for a in \"$@\"; do printf '[%s]' \"$a\"; done", "sh"])
            .args(args)
            .output()
            .unwrap();
        let expected: String = args.iter().map(|a| format!("[{a}]")).collect();
        assert_eq!(String::from_utf8(out.stdout).unwrap(), expected);
    }
}

#[test]
fn payload_environment_is_exactly_what_the_caller_set() {
    // The test process has plenty of variables (PATH, HOME, CARGO_*); none may leak.
    assert!(std::env::vars_os().count() > 0);
    for sandbox in shapes() {
        let out = sandbox.command("/usr/bin/env").env("ONLY", "this").env("AND", "that").output().unwrap();
        // PATH and HOME are Docker's defaults, not the host's.
        let defaults = "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin\n";
        assert_eq!(
            String::from_utf8(out.stdout).unwrap(),
            format!("AND=that\nHOME=/\nONLY=this\n{defaults}")
        );
        let bare = sandbox.command("/usr/bin/env").env_remove("PATH").env_remove("HOME").output().unwrap();
        assert_eq!(bare.stdout, b"");
    }
}

#[test]
fn inherit_env_copies_the_host_environment_with_overrides_and_removals() {
    let sandbox = sandbox(Namespaces::empty());
    let out =
        sandbox.command("/usr/bin/env").inherit_env().env("EXTRA", "1").env_remove("PATH").output().unwrap();
    let text = String::from_utf8(out.stdout).unwrap();
    assert!(text.lines().any(|l| l == "EXTRA=1"));
    assert!(!text.lines().any(|l| l.starts_with("PATH=")));
    let host_vars = std::env::vars_os().filter(|(k, _)| k != "PATH").count();
    assert_eq!(text.lines().count(), host_vars + 1);
}

#[test]
fn program_without_slash_is_found_through_the_payloads_path() {
    let sandbox = sandbox(Namespaces::empty());
    let out = sandbox.command("echo").arg("found").output().unwrap();
    assert_eq!(out.stdout, b"found\n");
    // The payload's own PATH is what counts.
    let err = sandbox.command("echo").env("PATH", "/nonexistent").output().unwrap_err();
    assert!(
        matches!(err, stockade::Error::Exec { ref source, .. } if source.kind() == std::io::ErrorKind::NotFound),
        "{err}"
    );
}

#[test]
fn working_directory_is_set_inside() {
    for sandbox in shapes() {
        let out = sandbox.command("/bin/pwd").current_dir("/usr/share").output().unwrap();
        assert_eq!(out.stdout, b"/usr/share\n");
    }
}

#[test]
fn stdio_can_be_null_a_file_or_inherited_and_output_collects_both_streams() {
    for sandbox in shapes() {
        let out = sandbox.command("/bin/sh").args(["-c", "echo out; echo err >&2; cat"]).output().unwrap();
        assert_eq!((out.stdout.as_slice(), out.stderr.as_slice()), (&b"out\n"[..], &b"err\n"[..]));

        let path = std::env::temp_dir().join(format!(
            "stockade-stdio-{}-{:?}",
            std::process::id(),
            std::thread::current().id()
        ));
        let file = std::fs::File::create(&path).unwrap();
        let status = sandbox.command("/bin/echo").arg("to a file").stdout(file).status().unwrap();
        assert!(status.success());
        assert_eq!(std::fs::read_to_string(&path).unwrap(), "to a file\n");
        std::fs::remove_file(&path).unwrap();

        let out =
            sandbox.command("/bin/sh").args(["-c", "echo gone"]).stdout(Stdio::null()).output().unwrap();
        assert!(out.stdout.is_empty() && out.status.success());
    }
}

#[test]
fn large_output_on_both_streams_does_not_deadlock() {
    let sandbox = sandbox(Namespaces::all());
    let out = sandbox
        .command("/bin/sh")
        .args(["-c", "head -c 1000000 /dev/zero; head -c 1000000 /dev/zero >&2; head -c 1000000 /dev/zero"])
        .output()
        .unwrap();
    assert_eq!((out.stdout.len(), out.stderr.len()), (2_000_000, 1_000_000));
}

#[test]
fn passed_descriptors_arrive_at_the_requested_numbers() {
    for sandbox in shapes() {
        let (r, mut w) = std::io::pipe().unwrap();
        w.write_all(b"through fd 7\n").unwrap();
        drop(w);
        // A file nobody but root may write: passed as it is rootless, pinned read-only as root.
        let file = std::fs::File::open("/etc/passwd").unwrap();
        let out = sandbox
            .command("/bin/sh")
            .args(["-c", "cat <&7; ls /proc/self/fd/ | sort -n | tr '\\n' ' '"])
            .fd(7, r)
            .fd(4, file)
            .output()
            .unwrap();
        let text = String::from_utf8(out.stdout).unwrap();
        // ls shows its own directory descriptor (3) as well.
        assert_eq!(text, "through fd 7\n0 1 2 3 4 7 ", "{:?}", sandbox.namespaces());
    }
}

#[test]
fn wait_timeout_kills_the_whole_tree_and_says_so() {
    for sandbox in shapes() {
        let mut child = sandbox.command("/bin/sleep").arg("3600").spawn().unwrap();
        let status = child.wait_timeout(Duration::from_millis(200)).unwrap();
        assert!(status.timed_out(), "{status}");
        assert_eq!(status.signal(), Some(libc::SIGKILL));
        // A payload that ends in time is not reported as timed out.
        let mut quick = sandbox.command("/bin/true").spawn().unwrap();
        let status = quick.wait_timeout(Duration::from_secs(30)).unwrap();
        assert!(status.success() && !status.timed_out());
    }

    // Under an init, every process of the tree goes, not only the payload.
    let sandbox = sandbox(Namespaces::all());
    let mut child = sandbox
        .command("/bin/sh")
        .args(["-c", "sleep 3600 & sleep 3600 & echo started; wait"])
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    read_until(&mut buffered(child.stdout.take().unwrap()), |l| l == "started");
    let tree = tree_of(child.id() as i32);
    assert!(tree.len() >= 4, "init, sh and two sleeps expected: {tree:?}");
    let status = child.wait_timeout(Duration::from_millis(100)).unwrap();
    assert!(status.timed_out());
    for pid in tree {
        assert!(wait_gone(pid, Duration::from_secs(5)), "pid {pid} survived the timeout");
    }
}

#[test]
fn try_wait_reports_running_then_the_status() {
    for sandbox in shapes() {
        let mut child = sandbox.command("/bin/cat").stdin(Stdio::piped()).spawn().unwrap();
        assert_eq!(child.try_wait().unwrap(), None);
        drop(child.stdin.take());
        let status = child.wait().unwrap();
        assert!(status.success());
        assert_eq!(child.try_wait().unwrap(), Some(status));
    }
}

#[test]
fn signals_are_forwarded_by_the_init_to_the_payload() {
    let signals = [
        (libc::SIGTERM, "TERM"),
        (libc::SIGINT, "INT"),
        (libc::SIGHUP, "HUP"),
        (libc::SIGQUIT, "QUIT"),
        (libc::SIGUSR1, "USR1"),
        (libc::SIGUSR2, "USR2"),
        (libc::SIGWINCH, "WINCH"),
    ];
    for sandbox in shapes() {
        for (i, (sig, name)) in signals.iter().enumerate() {
            let code = 10 + i as i32;
            let script = format!(
                "trap 'echo got {name}; exit {code}' {name}; echo ready; while :; do sleep 0.01; done"
            );
            let mut child =
                sandbox.command("/bin/sh").args(["-c", &script]).stdout(Stdio::piped()).spawn().unwrap();
            let mut out = buffered(child.stdout.take().unwrap());
            read_until(&mut out, |l| l == "ready");
            child.signal(*sig).unwrap();
            let got = read_until(&mut out, |l| l.starts_with("got"));
            assert_eq!(got, format!("got {name}"));
            let status = child.wait().unwrap();
            assert_eq!(status.code(), Some(code), "{:?} {name}: {status}", sandbox.namespaces());
        }
    }
}

#[test]
fn orphans_are_reparented_to_the_init_and_reaped() {
    let sandbox = sandbox(Namespaces::all());
    // The inner shell starts a background sleep and exits at once: the sleep is orphaned and
    // reparented to pid 1. Once it exits, only a reaping init makes /proc/<pid> disappear; a
    // zombie would keep it forever, and the wait below would time out.
    let script = "orphan=$(sh -c 'sleep 0.3 >/dev/null 2>&1 & echo $!'); \
                  echo parent $(cut -d' ' -f4 /proc/$orphan/stat); \
                  while [ -e /proc/$orphan ]; do sleep 0.02; done; echo reaped";
    let mut child = sandbox.command("/bin/sh").args(["-c", script]).stdout(Stdio::piped()).spawn().unwrap();
    let mut text = String::new();
    let mut stdout = child.stdout.take().unwrap();
    let status = child.wait_timeout(Duration::from_secs(20)).unwrap();
    stdout.read_to_string(&mut text).unwrap();
    assert!(!status.timed_out(), "the orphan was never reaped: {text}");
    assert_eq!(text, "parent 1\nreaped\n");
}

#[test]
fn payload_exit_takes_down_everything_left_in_the_pid_namespace() {
    let sandbox = sandbox(Namespaces::all());
    let mut child = sandbox
        .command("/bin/sh")
        .args(["-c", "setsid sleep 3600 >/dev/null 2>&1 & sleep 3600 >/dev/null 2>&1 & echo started; read line; exit 0"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    read_until(&mut buffered(child.stdout.take().unwrap()), |l| l == "started");
    let tree = tree_of(child.id() as i32);
    assert!(tree.len() >= 4, "{tree:?}");
    // Closing stdin ends the payload shell; its daemonised children must die with it.
    drop(child.stdin.take());
    assert!(child.wait().unwrap().success());
    for pid in tree {
        assert!(wait_gone(pid, Duration::from_secs(5)), "pid {pid} outlived the payload");
    }
}

#[test]
fn kill_ends_the_sandbox_and_is_idempotent() {
    for sandbox in shapes() {
        let mut child = sandbox.command("/bin/sleep").arg("3600").spawn().unwrap();
        child.kill().unwrap();
        let status = child.wait().unwrap();
        assert_eq!(status.signal(), Some(libc::SIGKILL));
        assert!(!status.timed_out());
        child.kill().unwrap();
    }
}

#[test]
fn dropping_a_running_child_kills_and_reaps_it() {
    for sandbox in shapes() {
        let child = sandbox.command("/bin/sleep").arg("3600").spawn().unwrap();
        let pid = child.id() as i32;
        let pidfd = pidfd_open(pid).unwrap();
        drop(child);
        // Reaped, not a zombie: the pid is gone from /proc.
        assert!(!std::path::Path::new(&format!("/proc/{pid}")).exists());
        drop(pidfd);
    }
}

#[test]
fn child_pidfd_is_pollable_and_becomes_readable_on_exit() {
    use std::os::fd::AsFd;
    let sandbox = sandbox(Namespaces::all());
    let mut child = sandbox.command("/bin/cat").stdin(Stdio::piped()).spawn().unwrap();
    let poll = |child: &stockade::Child, ms: i32| {
        let mut fds = [nix::poll::PollFd::new(child.as_fd(), nix::poll::PollFlags::POLLIN)];
        nix::poll::poll(&mut fds, nix::poll::PollTimeout::try_from(ms).unwrap()).unwrap()
    };
    assert_eq!(poll(&child, 0), 0);
    drop(child.stdin.take());
    assert_eq!(poll(&child, 10_000), 1);
    assert!(child.wait().unwrap().success());
    assert!(child.as_fd().as_raw_fd() >= 0);
}

#[test]
fn root_runs_the_payload_as_the_requested_user_without_a_user_namespace() {
    if !is_root() {
        return skip(
            "root_runs_the_payload_as_the_requested_user",
            "needs CAP_SETUID outside a user namespace",
        );
    }
    let sandbox = Sandbox::builder().user(4242, 4343).groups([4444]).build().unwrap();
    let out = sandbox.command("/bin/sh").args(["-c", "id -u; id -g; id -G"]).output().unwrap();
    assert_eq!(String::from_utf8(out.stdout).unwrap(), "4242\n4343\n4343 4444\n");
}

#[test]
fn the_init_kills_the_payload_at_the_wall_clock_limit_while_nobody_waits() {
    use std::os::fd::AsFd;
    // The embedding program never calls wait: it only watches the pidfd, with no timeout. The
    // sandbox ends all the same, at its limit, through its own init.
    let sandbox =
        builder(Namespaces::PID | Namespaces::MOUNT).timeout(Duration::from_millis(300)).build().unwrap();
    let mut child = sandbox.command("/bin/sleep").arg("1000").spawn().unwrap();
    let mut fds = [nix::poll::PollFd::new(child.as_fd(), nix::poll::PollFlags::POLLIN)];
    // (A bound, so that a regression fails instead of hanging: the limit is 300 ms.)
    let bound = nix::poll::PollTimeout::try_from(120_000).unwrap();
    assert_eq!(nix::poll::poll(&mut fds, bound).unwrap(), 1, "the init did not end the sandbox");
    let status = child.try_wait().unwrap().expect("the sandbox has ended");
    assert_eq!(status.signal(), Some(libc::SIGKILL), "{status}");
    assert_eq!(status.limit(), Some(stockade::Limit::WallClock), "{status}");
    assert!(status.usage().wall_time >= Duration::from_millis(300));
}

#[test]
fn the_oom_score_adjustment_is_set_before_the_payload_runs_and_checked_at_build() {
    for ns in [Namespaces::empty(), Namespaces::PID | Namespaces::MOUNT] {
        let sandbox = builder(ns).oom_score_adj(700).build().unwrap();
        // The payload and what it starts (here a child of sh) inherit it.
        assert_eq!(sh_ok(&sandbox, "cat /proc/self/oom_score_adj"), "700\n", "{ns:?}");
    }
    let err = Sandbox::builder().oom_score_adj(1001).build().unwrap_err();
    assert!(matches!(&err, stockade::Error::InvalidValue { what: "oom_score_adj", .. }), "{err:?}");
}

#[test]
fn a_created_sandbox_runs_nothing_until_its_gate_opens_and_the_gate_opens_once() {
    let dir = tempdir();
    open_up(dir.path());
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o777)).unwrap();
    let mark = dir.path().join("mark");
    for (i, sandbox) in shapes().iter().enumerate() {
        let gate_path = dir.path().join(format!("gate{i}"));
        let gate = stockade::StartGate::bind(&gate_path).unwrap();
        let script = format!("echo ran > {}", mark.display());
        let mut child = sandbox.command("/bin/sh").args(["-c", &script]).spawn_created(gate).unwrap();
        assert!(child.try_wait().unwrap().is_none(), "shape {i}: a created sandbox ended");
        assert!(!mark.exists(), "shape {i}: the payload ran before its start");
        stockade::StartGate::start(&gate_path).unwrap();
        assert!(child.wait().unwrap().success(), "shape {i}");
        assert_eq!(std::fs::read_to_string(&mark).unwrap(), "ran\n", "shape {i}");
        std::fs::remove_file(&mark).unwrap();
        // Opened once: nothing listens there any more.
        let err = stockade::StartGate::start(&gate_path).unwrap_err();
        assert!(
            matches!(&err, stockade::Error::Io { source, .. } if source.kind() == std::io::ErrorKind::ConnectionRefused),
            "shape {i}: {err:?}"
        );
    }
}

#[test]
fn a_start_let_in_by_a_leftover_copy_of_an_opened_gate_is_refused_once_the_copy_closes() {
    // A fork of the embedding program (another thread's spawn) holds a copy of every
    // descriptor for a moment, the gate's listening socket too: a start in that moment is let
    // in, and nobody will take it. Here the copy is this process's own, held until the start
    // is queued on it.
    let dir = tempdir();
    let gate_path = dir.path().join("gate");
    let gate = stockade::StartGate::bind(&gate_path).unwrap();
    let copy = std::os::fd::AsFd::as_fd(&gate).try_clone_to_owned().unwrap();
    let sandbox = sandbox(Namespaces::empty());
    let mut child = sandbox.command("/bin/true").spawn_created(gate).unwrap();
    stockade::StartGate::start(&gate_path).unwrap();
    assert!(child.wait().unwrap().success());

    let path = gate_path.clone();
    let second = std::thread::spawn(move || stockade::StartGate::start(&path));
    // The copy becomes readable when the connection waits on it.
    let mut fds = [nix::poll::PollFd::new(std::os::fd::AsFd::as_fd(&copy), nix::poll::PollFlags::POLLIN)];
    while nix::poll::poll(&mut fds, nix::poll::PollTimeout::from(100u8)).unwrap() == 0 {
        assert!(!second.is_finished(), "the start ended without being let in: {:?}", second.join());
    }
    drop(copy);
    let err = second.join().unwrap().unwrap_err();
    assert!(
        matches!(&err, stockade::Error::Io { source, .. } if source.kind() == std::io::ErrorKind::ConnectionRefused),
        "{err:?}"
    );
    assert!(err.to_string().contains(&gate_path.display().to_string()), "{err}");
}

#[test]
fn a_step_failing_after_the_gate_is_told_to_the_starter() {
    let dir = tempdir();
    for (i, sandbox) in shapes().iter().enumerate() {
        let gate_path = dir.path().join(format!("gate{i}"));
        let gate = stockade::StartGate::bind(&gate_path).unwrap();
        let mut child = sandbox.command("/no/such/program").spawn_created(gate).unwrap();
        let err = stockade::StartGate::start(&gate_path).unwrap_err();
        assert!(
            matches!(&err, stockade::Error::Exec { source, .. } if source.kind() == std::io::ErrorKind::NotFound),
            "shape {i}: {err:?}"
        );
        assert!(!child.wait().unwrap().success(), "shape {i}");
        // A sandbox dropped at its gate is killed like any other.
        let gate_path = dir.path().join(format!("again{i}"));
        let gate = stockade::StartGate::bind(&gate_path).unwrap();
        let child = sandbox.command("/bin/true").spawn_created(gate).unwrap();
        let pid = child.id() as i32;
        drop(child);
        assert!(wait_gone(pid, Duration::from_secs(30)), "shape {i}: a dropped created sandbox lives on");
    }
}

#[test]
fn the_created_hook_sees_the_new_namespaces_and_its_error_ends_the_spawn() {
    let sandbox = sandbox(Namespaces::all());
    let seen = std::sync::Arc::new(std::sync::Mutex::new(None));
    let record = seen.clone();
    let out = sandbox
        .command("/bin/sh")
        .args(["-c", "readlink /proc/self/ns/net"])
        .on_created(move |pid| {
            *record.lock().unwrap() = Some(std::fs::read_link(format!("/proc/{pid}/ns/net"))?);
            Ok(())
        })
        .output()
        .unwrap();
    assert!(out.status.success());
    let inside = seen.lock().unwrap().clone().expect("the hook ran");
    assert_ne!(inside, std::fs::read_link("/proc/self/ns/net").unwrap(), "the hook saw the host's namespace");
    assert_eq!(
        String::from_utf8_lossy(&out.stdout).trim(),
        inside.to_str().unwrap(),
        "the payload's namespace"
    );

    // The sandbox the failing hook saw is killed and reaped (other tests run alongside: the
    // check is on that process, not on this process's counts).
    let created = std::sync::Arc::new(std::sync::Mutex::new(None));
    let record = created.clone();
    let err = sandbox
        .command("/bin/true")
        .on_created(move |pid| {
            *record.lock().unwrap() = Some(pid);
            Err(std::io::Error::other("no network for you"))
        })
        .status()
        .unwrap_err();
    assert!(
        matches!(&err, stockade::Error::Hook { source } if source.to_string() == "no network for you"),
        "{err:?}"
    );
    let pid = created.lock().unwrap().expect("the hook ran");
    assert!(!std::path::Path::new(&format!("/proc/{pid}")).exists(), "the sandbox {pid} was left behind");
}
