//! Hosts with features taken away: each scenario runs this binary again inside an environment
//! made to lack something, and checks there that `stockade::probe` says what is missing and
//! why, that a configuration needing it gets the typed `Unsupported` error naming it (before
//! any process exists), and that what does not need it still runs.
//!
//! - `no_user_namespaces`: in a user namespace whose `user.max_user_namespaces` is 0 (the
//!   sysctl, set for that namespace only: the host's stays untouched);
//! - `user_namespaces_used_up`: the same sysctl at 2 with both in use, then at 3 (a sandbox
//!   needs two): nothing at build says none is left (only making one tells), so the spawn
//!   gets the typed error;
//! - `no_openat2_no_clone3`: under a seccomp filter refusing `openat2` and `clone3` with
//!   `ENOSYS`, as container runtimes before 2020 did.
//!
//! (Without cgroup delegation: the unprivileged pass of every cgroup test, see
//! tests/resources.rs.) A plain program (`harness = false`); as root and as uid 65534.

mod common;

use std::process::ExitCode;

use stockade::{Action, Error, Namespaces, Sandbox, SyscallFilter, SyscallRule};

const SCENARIOS: [(&str, fn()); 3] = [
    ("no_user_namespaces", no_user_namespaces),
    ("user_namespaces_used_up", user_namespaces_used_up),
    ("no_openat2_no_clone3", no_openat2_no_clone3),
];

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().collect();
    if let Some(name) = args.iter().position(|a| a == "--scenario").and_then(|i| args.get(i + 1)) {
        let (_, run) = SCENARIOS.iter().find(|(n, _)| n == name).expect("a known scenario");
        run();
        return ExitCode::SUCCESS;
    }
    // A name filter, as the test harness takes one; options (`--nocapture`, ...) are ignored.
    let filter = args.iter().skip(1).find(|a| !a.starts_with('-'));
    let mut failed = 0;
    for (name, _) in SCENARIOS.iter().filter(|(n, _)| filter.is_none_or(|f| n.contains(f.as_str()))) {
        match run_scenario(name) {
            Ok(Ok(out)) if out.ok => println!("test degraded::{name} ... ok"),
            other => {
                failed += 1;
                // As the test harness reports a failure (tests/expect-unsupported reads it).
                println!(
                    "test degraded::{name} ... FAILED\n\nfailures:\n\n---- degraded::{name} stdout ----"
                );
                match other {
                    Ok(Ok(out)) => println!(
                        "{}\nstdout:\n{}\nstderr:\n{}",
                        out.status,
                        String::from_utf8_lossy(&out.stdout),
                        String::from_utf8_lossy(&out.stderr)
                    ),
                    // As a panic would read (the classifier takes the message after it).
                    Ok(Err(e)) => {
                        println!("thread 'main' panicked at {}: could not start the scenario: {e}", file!())
                    }
                    Err(e) => {
                        println!("thread 'main' panicked at {}: the environment for {name}: {e:?}", file!())
                    }
                }
                println!("\nfailures:\n    degraded::{name}\n");
            }
        }
    }
    println!("\ntest result: {}. {failed} failed", if failed == 0 { "ok" } else { "FAILED" });
    if failed == 0 { ExitCode::SUCCESS } else { ExitCode::FAILURE }
}

fn is_root() -> bool {
    nix::unistd::geteuid().is_root()
}

/// This binary again, running `scenario` in the environment it needs: a sandbox of stockade's
/// own with every capability (inside its user namespace, when one is needed or made), or this
/// host itself where it already lacks what the scenario takes away. An environment that
/// cannot be built is the outer error (the typed one, where this host lacks what it needs).
fn run_scenario(scenario: &str) -> Result<std::io::Result<Ran>, Error> {
    let this = std::env::current_exe().unwrap();
    let host_has = |feature: &str| stockade::probe().feature(feature).is_some_and(|f| f.available);
    if scenario == "user_namespaces_used_up" && !host_has("user namespaces") {
        common::skip(
            "degraded::user_namespaces_used_up",
            "this host makes no user namespaces: there is no limit of them to use up",
        );
        return Ok(Ok(Ran { ok: true, status: "skipped".into(), stdout: Vec::new(), stderr: Vec::new() }));
    }
    if scenario == "no_user_namespaces" && !host_has("user namespaces") {
        // The real thing (user.max_user_namespaces=0 on this host): no sandbox needed.
        let out = std::process::Command::new(this).args(["--scenario", scenario]).output();
        return Ok(out.map(|out| Ran {
            ok: out.status.success(),
            status: out.status.to_string(),
            stdout: out.stdout,
            stderr: out.stderr,
        }));
    }
    let mut b = Sandbox::builder();
    // Every capability: all of a new user namespace's, or (without one, as root) this
    // process's own.
    let own = || caps::read(None, caps::CapSet::Permitted).expect("read this process's capabilities");
    match scenario {
        // Only a user namespace's own sysctls can be changed without touching the host's.
        "no_user_namespaces" | "user_namespaces_used_up" => b
            .namespaces(Namespaces::USER)
            .capabilities(caps::all())
            .allow_new_privileges()
            .no_syscall_filter(),
        _ => {
            b.capabilities(if is_root() { own() } else { caps::all() });
            let refused = |name: &str| SyscallRule::new(name, Action::Errno(libc::ENOSYS));
            b.syscall_filter(
                SyscallFilter::empty(Action::Allow).rule(refused("openat2")).rule(refused("clone3")),
            );
            // Unprivileged, capabilities come only with a user namespace.
            b.namespaces(if is_root() { Namespaces::empty() } else { Namespaces::USER })
        }
    };
    let sandbox = b.build()?;
    let mut command = sandbox.command(this);
    command.args(["--scenario", scenario]).inherit_env();
    Ok(command.output().map_err(std::io::Error::other).map(|out| Ran {
        ok: out.status.success(),
        status: out.status.to_string(),
        stdout: out.stdout,
        stderr: out.stderr,
    }))
}

/// How a scenario's process ended, and what it printed.
struct Ran {
    ok: bool,
    status: String,
    stdout: Vec<u8>,
    stderr: Vec<u8>,
}

/// Asserts `feature` is reported missing, with a reason containing `reason` and a hint
/// containing `hint`.
fn assert_missing(report: &stockade::HostReport, feature: &str, reason: &str, hint: &str) {
    let f = report.feature(feature).unwrap_or_else(|| panic!("no {feature} in the report:\n{report}"));
    assert!(!f.available, "{feature} reported available:\n{report}");
    assert!(f.detail.contains(reason), "{feature}: {:?} lacks {reason:?}", f.detail);
    assert!(f.hint.as_deref().unwrap_or_default().contains(hint), "{feature}: {:?} lacks {hint:?}", f.hint);
}

/// Asserts `built` is `Unsupported` naming `feature`.
fn assert_unsupported(built: Result<Sandbox, Error>, feature: &str, reason: &str) {
    match built {
        Err(Error::Unsupported { feature: f, reason: r, hint }) => {
            assert_eq!(f, feature);
            assert!(r.contains(reason), "{f}: {r:?} lacks {reason:?}");
            assert!(!hint.is_empty(), "{f}: no hint");
        }
        Err(other) => panic!("expected Unsupported {feature}, got {other:?}"),
        Ok(_) => panic!("expected Unsupported {feature}, but it built"),
    }
}

/// Runs `/bin/sh -c script` in `sandbox` and returns its stdout, asserting success.
fn run(sandbox: &Sandbox, script: &str) -> (String, stockade::ExitStatus) {
    let out = sandbox.command("/bin/sh").args(["-c", script]).output().expect("spawn");
    assert!(out.status.success(), "{script}: {} {}", out.status, String::from_utf8_lossy(&out.stderr));
    (String::from_utf8(out.stdout).unwrap(), out.status)
}

fn no_user_namespaces() {
    let limit = std::fs::read_to_string("/proc/sys/user/max_user_namespaces").unwrap_or_default();
    // Already 0 where this host has none (then this runs on the host itself).
    if limit.trim() != "0"
        && let Err(e) = std::fs::write("/proc/sys/user/max_user_namespaces", "0")
    {
        let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
        let map = std::fs::read_to_string("/proc/self/uid_map").unwrap_or_default();
        panic!("set this namespace's limit: {e}\nuid_map: {map}\n{status}");
    }
    let report = stockade::probe();
    assert_missing(
        &report,
        "user namespaces",
        "user.max_user_namespaces is 0",
        "sysctl -w user.max_user_namespaces",
    );
    // Needing one: a typed error at build, before any process.
    assert_unsupported(
        Sandbox::builder().namespaces(Namespaces::USER | Namespaces::PID | Namespaces::MOUNT).build(),
        "user namespaces",
        "max_user_namespaces",
    );
    // Not needing one: every other namespace still works, for root (with its capabilities;
    // in the user namespace made for this scenario, or on a host without them).
    if !is_root() {
        common::skip(
            "degraded::no_user_namespaces (other namespaces)",
            "uid 65534 on a host without user namespaces can make no namespace at all",
        );
        return;
    }
    let others = Namespaces::all() - Namespaces::USER;
    let sandbox = Sandbox::builder().namespaces(others).hostname("degraded").build().unwrap();
    let (out, _) = run(&sandbox, "hostname; echo $$");
    assert_eq!(out, "degraded\n2\n");
}

fn user_namespaces_used_up() {
    let limit = "/proc/sys/user/max_user_namespaces";
    let set = |n: &str| {
        std::fs::write(limit, n).unwrap_or_else(|e| panic!("set this namespace's {limit} to {n}: {e}"))
    };
    let used_up = |spawned: Result<stockade::ExitStatus, Error>, reason: &str| match spawned {
        Err(Error::Unsupported { feature, reason: r, hint }) => {
            assert_eq!(feature, "user namespaces");
            assert!(r.contains(reason), "{r:?} lacks {reason:?}");
            assert!(hint.contains("max_user_namespaces"), "{hint}");
        }
        other => panic!("with the limit used up: expected Unsupported, got {other:?}"),
    };
    let needs = Namespaces::USER | Namespaces::PID | Namespaces::MOUNT;
    // Each step makes room by raising the limit: a user namespace that ends is uncounted later,
    // by a kernel worker. A sandbox takes two: its own, and the nested one that locks its mounts.
    set("2");
    // Not 0, and no filter around this process: nothing says at build that none is left.
    let sandbox = Sandbox::builder().namespaces(needs).build().expect("built: the limit is 2, not 0");
    let mut holder = sandbox.command("/bin/sleep").arg("1000").spawn().expect("the user namespaces allowed");
    // No room for a second sandbox's own: its clone is refused.
    used_up(sandbox.command("/bin/true").status(), "limit of user namespaces (2) is used up");
    // Room for its own, not for the nested one.
    set("3");
    used_up(sandbox.command("/bin/true").status(), "limit of user namespaces (3) is used up: a sandbox");
    // The refusals are not remembered: with room again, the next spawn runs.
    set("10");
    let (out, _) = run(&sandbox, "echo $$");
    assert_eq!(out, "2\n");
    holder.kill().expect("kill the first sandbox");
    holder.wait().expect("wait for the first sandbox");
}

fn no_openat2_no_clone3() {
    let report = stockade::probe();
    assert_missing(&report, "openat2", "ENOSYS", "Linux 5.6");
    assert_missing(&report, "clone3", "ENOSYS", "nothing to do");
    // A mount namespace needs openat2 (every mount target is resolved with it).
    assert_unsupported(
        Sandbox::builder().namespaces(Namespaces::MOUNT | Namespaces::PID).build(),
        "openat2",
        "ENOSYS",
    );
    // Without one, sandboxes spawn through legacy clone; as root with cgroup limits, which the
    // child joins by pid before it runs anything.
    // (Root here may be root of a user namespace only: cgroups where this process may make them.)
    let cgroups = report.feature("cgroup delegation").is_some_and(|f| f.available);
    let mut b = Sandbox::builder();
    b.namespaces(Namespaces::UTS | Namespaces::IPC | Namespaces::NET).hostname("no-clone3");
    if cgroups {
        b.memory_limit(64 << 20).pids_limit(16);
    } else {
        common::skip(
            "degraded::no_openat2_no_clone3 (cgroup part)",
            "no cgroup delegation here: the legacy clone's cgroup attach is covered as root",
        );
    }
    let sandbox = b.build().unwrap();
    let (out, status) = run(&sandbox, "hostname; cat /proc/self/cgroup");
    assert!(out.starts_with("no-clone3\n"), "{out}");
    if cgroups {
        assert!(out.contains("/sb-"), "the payload is not in its cgroup: {out}");
        assert!(status.usage().peak_memory.is_some() && status.usage().peak_pids.is_some(), "{status:?}");
    }
}
