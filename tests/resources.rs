//! Resource control (security.md B16-B20, B22): limits hold real attacks, the status says which
//! limit ended a sandbox, usage is reported, and no process or cgroup outlives the sandbox.

mod common;

use std::io::BufRead;
use std::path::{Path, PathBuf};
use std::time::Duration;

use common::*;
use stockade::{Compat, Error, Limit, Namespaces, Rlimit, Sandbox, SandboxBuilder, Stdio};

// The tests here run one at a time (`serial()`): they count this process's cgroups and
// descriptors, and some of them load the machine on purpose.

/// Cgroup limits need a writable cgroup tree: root here, or a delegated subtree.
fn cgroups_writable(test: &str) -> bool {
    if is_root() {
        return true;
    }
    skip(test, "no cgroup delegation for this user: covered by the compatibility-policy tests instead");
    false
}

fn limited(ns: Namespaces) -> SandboxBuilder {
    builder(ns)
}

/// Every namespace; as root without a user namespace, which cgroups do not need (and which the
/// pure cgroup v2 test guest cannot create: it runs commands under chroot).
fn all_ns() -> Namespaces {
    if is_root() { Namespaces::all() - Namespaces::USER } else { Namespaces::all() }
}

#[test]
fn a_sandboxs_cgroup_where_its_processes_live_belongs_with_every_file_in_it_to_an_unmapped_id() {
    let test = "resources::a_sandboxs_cgroup_where_its_processes_live_belongs_with_every_file_in_it_to_an_unmapped_id";
    if !is_root() {
        return skip(
            test,
            "giving a group to another id takes CAP_CHOWN or CAP_SETUID: as uid 65534 the group stays this user's, which `unenforced` reports",
        );
    }
    let _serial = serial();
    let dumpable = || {
        // SAFETY: PR_GET_DUMPABLE takes no pointers.
        unsafe { libc::prctl(libc::PR_GET_DUMPABLE, 0, 0, 0, 0) }
    };
    // The checks run in a copy of this binary started under umask 077 (a process-wide setting
    // no other test here should see): a restrictive umask would leave the leaf searchable by
    // its former owner only, so this process could no longer read usage or kill through it,
    // and a loose one would leave it writable by its group.
    if std::env::var_os("STOCKADE_TEST_UMASK_077").is_none() {
        // A host that cannot make such a sandbox at all says so here, in this test's own error.
        assert!(
            limited(all_ns())
                .memory_limit(64 << 20)
                .build()
                .unwrap()
                .command("/bin/true")
                .status()
                .unwrap()
                .success()
        );
        let exe = std::env::current_exe().unwrap();
        let out = std::process::Command::new("/bin/sh")
            .args(["-c", "umask 077 && exec \"$0\" \"$@\""])
            .arg(exe)
            .args(["--exact", &test["resources::".len()..], "--test-threads=1"])
            .env("STOCKADE_TEST_UMASK_077", "1")
            .output()
            .unwrap();
        let stdout = String::from_utf8_lossy(&out.stdout);
        // Indented: the copy's report is not this binary's (a runner reads "---- NAME" lines).
        let report = format!("{stdout}{}", String::from_utf8_lossy(&out.stderr)).replace('\n', "\n    ");
        assert!(
            out.status.success() && stdout.contains("1 passed"),
            "under umask 077: {}\n    {report}",
            out.status
        );
        return;
    }
    // SAFETY: umask takes and returns a mode; this copy runs this one test alone.
    let umask = unsafe { libc::umask(0o077) };
    assert_eq!(umask, 0o077, "this copy was started under umask 077");
    assert_eq!(dumpable(), 1, "this process starts dumpable");
    // Without a cgroup namespace the processes live in the group itself; with one, in a leaf.
    // Sealed beside the clone, and (with a hook, which may change owners itself) after it.
    let cases =
        [(all_ns() - Namespaces::CGROUP, false), (all_ns() | Namespaces::CGROUP, false), (all_ns(), true)];
    for (ns, hooked) in cases {
        let sandbox = limited(ns).memory_limit(64 << 20).pids_limit(32).build().unwrap();
        let mut command = sandbox.command("/bin/cat");
        command.stdin(Stdio::piped());
        if hooked {
            command.on_created(|_| Ok(()));
        }
        let mut child = command.spawn().unwrap();
        let groups = leftover_cgroups();
        assert!(!groups.is_empty(), "{ns:?}: no group found");
        for group in groups {
            let leaf = if group.join("payload").is_dir() { group.join("payload") } else { group.clone() };
            let mut owners: Vec<(String, (u32, u32))> = vec![(leaf.display().to_string(), owner(&leaf))];
            for entry in std::fs::read_dir(&leaf).unwrap().flatten() {
                owners.push((entry.path().display().to_string(), owner(&entry.path())));
            }
            assert!(owners.len() > 3, "{ns:?}: {owners:?}");
            let sealed = (u32::MAX - 1, u32::MAX - 1);
            let others: Vec<_> = owners.iter().filter(|(_, ids)| *ids != sealed).collect();
            assert!(
                others.is_empty(),
                "{ns:?} (hook: {hooked}): owned by others than 4294967294:4294967294: {others:?}"
            );
            let mode =
                std::os::unix::fs::PermissionsExt::mode(&std::fs::metadata(&leaf).unwrap().permissions());
            assert_eq!(
                mode & 0o7777,
                0o755,
                "{ns:?} (hook: {hooked}): {} made under umask 077",
                leaf.display()
            );
        }
        drop(child.stdin.take());
        assert!(child.wait().unwrap().success());
        // However its group was made, the embedding process is as it was.
        assert_eq!(dumpable(), 1, "{ns:?}: this process was left non-dumpable");
    }
}

fn owner(path: &std::path::Path) -> (u32, u32) {
    use std::os::unix::fs::MetadataExt;
    let meta = std::fs::symlink_metadata(path).unwrap();
    (meta.uid(), meta.gid())
}

#[test]
fn the_created_hook_sees_the_first_process_already_in_its_cgroups() {
    if !cgroups_writable("resources::the_created_hook_sees_the_first_process_already_in_its_cgroups") {
        return;
    }
    let _serial = serial();
    // Without a cgroup namespace the payload names its groups as the hook does, from the root.
    let sandbox =
        limited(all_ns() - Namespaces::CGROUP).memory_limit(64 << 20).pids_limit(32).build().unwrap();
    let seen = std::sync::Arc::new(std::sync::Mutex::new(None));
    let record = seen.clone();
    let out = sandbox
        .command("/bin/cat")
        .arg("/proc/self/cgroup")
        .on_created(move |pid| {
            *record.lock().unwrap() = Some(std::fs::read_to_string(format!("/proc/{pid}/cgroup"))?);
            Ok(())
        })
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let hook = seen.lock().unwrap().clone().expect("the hook ran");
    let payload = String::from_utf8(out.stdout).unwrap();
    assert_eq!(hook, payload, "the hook saw groups other than the payload's");
    let own = std::fs::read_to_string("/proc/self/cgroup").unwrap();
    assert_ne!(hook, own, "the hook saw this process's groups");
}

#[test]
fn fork_bomb_is_held_at_the_pids_limit_and_everything_is_gone_afterwards() {
    let _serial = serial();
    if !cgroups_writable("fork_bomb_is_held_at_the_pids_limit") {
        return;
    }
    let sandbox = limited(all_ns()).pids_limit(32).timeout(Duration::from_secs(2)).build().unwrap();
    let mut child = sandbox
        .command("/bin/sh")
        // The bomb goes off in a subshell, the only process this shell forks (while pids are
        // plenty), then it execs: a shell that failed to fork once the bomb has taken every pid
        // would end the sandbox early (dash exits 2), whatever the limit did.
        .args(["-c", "(bomb() { bomb | bomb & }; bomb); exec sleep 100"])
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let status = child.wait().unwrap();
    assert_eq!(status.limit(), Some(Limit::WallClock), "{status}");
    if let Some(peak) = status.usage().peak_pids {
        assert!(peak <= 32, "{peak} processes despite a limit of 32");
        assert!(peak >= 16, "the bomb never reached the limit ({peak}): the test proves nothing");
    }
    assert!(tree_of(child.id() as i32).len() <= 1, "processes survived");
    assert_eq!(leftover_cgroups(), Vec::<PathBuf>::new());
}

#[test]
fn memory_hog_is_oom_killed_and_reported_as_such() {
    let _serial = serial();
    if !cgroups_writable("memory_hog_is_oom_killed") {
        return;
    }
    // A timeout only so that a broken limit fails the test instead of hanging it.
    let sandbox = limited(all_ns()).memory_limit(48 << 20).timeout(Duration::from_secs(20)).build().unwrap();
    // tail keeps the last lines, and /dev/zero is one endless line: all of it stays in memory.
    let status =
        sandbox.command("/bin/sh").args(["-c", "tail /dev/zero >/dev/null; echo survived"]).status().unwrap();
    assert!(status.usage().oom_killed, "{status:?}");
    assert!(status.usage().peak_memory.unwrap() <= 48 << 20, "{status:?}");
    assert_eq!(leftover_cgroups(), Vec::<PathBuf>::new());
    // The payload itself is the victim here (the biggest process), so the status says why.
    let status = sandbox.command("/usr/bin/tail").arg("/dev/zero").status().unwrap();
    assert_eq!(status.limit(), Some(Limit::Memory), "{status}");
    assert_eq!(status.signal(), Some(libc::SIGKILL));
}

#[test]
fn cpu_spinner_is_killed_at_the_cpu_time_limit() {
    let _serial = serial();
    let mut b = limited(all_ns());
    b.cpu_time_limit(Duration::from_millis(300)).resource_compat(Compat::BestEffort);
    let sandbox = b.build().unwrap();
    let mut child = sandbox.command("/bin/sh").args(["-c", "while :; do :; done"]).spawn().unwrap();
    let status = child.wait().unwrap();
    assert_eq!(status.limit(), Some(Limit::CpuTime), "{status}");
    let used = status.usage().user_time + status.usage().system_time;
    assert!(used >= Duration::from_millis(300), "killed after only {used:?}");
    if child.unenforced().is_empty() {
        // Measured on the cgroup: killed soon after the limit, not at RLIMIT_CPU's next second.
        assert!(used < Duration::from_millis(800), "killed late, after {used:?}");
    }
}

#[test]
fn cpu_spinner_is_killed_at_the_wall_clock_limit_with_its_whole_tree() {
    let _serial = serial();
    let sandbox = limited(all_ns()).timeout(Duration::from_millis(300)).build().unwrap();
    let mut child = sandbox
        .command("/bin/sh")
        .args(["-c", "while :; do :; done & sleep 100 & echo started; wait"])
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    read_until(&mut buffered(child.stdout.take().unwrap()), |l| l == "started");
    let tree = tree_of(child.id() as i32);
    let status = child.wait().unwrap();
    assert_eq!(status.limit(), Some(Limit::WallClock), "{status}");
    assert!(status.timed_out());
    assert!(status.usage().wall_time >= Duration::from_millis(300));
    for pid in tree {
        assert!(wait_gone(pid, Duration::from_secs(5)), "pid {pid} survived the timeout");
    }
}

#[test]
fn a_payload_that_daemonises_and_ignores_sigterm_is_still_gone() {
    let _serial = serial();
    if !cgroups_writable("a_payload_that_daemonises_and_ignores_sigterm") {
        return;
    }
    // No pid namespace: only the cgroup can find the daemon once the payload has exited.
    let sandbox = limited(Namespaces::empty()).pids_limit(64).build().unwrap();
    let out = sandbox
        .command("/bin/sh")
        .args([
            "-c",
            "setsid sh -c 'trap \"\" TERM HUP INT; echo $$; exec sleep 1000' </dev/null 2>/dev/null & wait",
        ])
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut child = out;
    let daemon: i32 = read_until(&mut buffered(child.stdout.take().unwrap()), |_| true).parse().unwrap();
    assert!(pidfd_open(daemon).is_some(), "daemon not running");
    child.signal(libc::SIGTERM).unwrap();
    let status = child.wait().unwrap();
    assert_eq!(status.signal(), Some(libc::SIGTERM), "{status}");
    assert!(wait_gone(daemon, Duration::from_secs(5)), "the daemon outlived its sandbox");
    assert_eq!(leftover_cgroups(), Vec::<PathBuf>::new());
}

#[test]
fn a_thousand_sandboxes_killed_oom_timed_out_or_normal_leave_no_cgroup_behind() {
    let _serial = serial();
    if !cgroups_writable("a_thousand_sandboxes_leave_no_cgroup_behind") {
        return;
    }
    let fds = fd_count();
    let plain = limited(Namespaces::empty())
        .memory_limit(32 << 20)
        .pids_limit(16)
        .timeout(Duration::from_secs(20))
        .build()
        .unwrap();
    let timed = limited(Namespaces::empty())
        .memory_limit(32 << 20)
        .timeout(Duration::from_millis(20))
        .build()
        .unwrap();
    let (mut oom, mut timeouts, mut kills) = (0, 0, 0);
    for i in 0..1000 {
        match i % 10 {
            0 => {
                let s = plain.command("/usr/bin/tail").arg("/dev/zero").status().unwrap();
                oom += usize::from(s.limit() == Some(Limit::Memory));
            }
            1 => {
                let s = timed.command("/bin/sleep").arg("10").status().unwrap();
                timeouts += usize::from(s.timed_out());
            }
            2 => {
                let mut c = plain.command("/bin/sleep").arg("10").spawn().unwrap();
                c.kill().unwrap();
                kills += usize::from(c.wait().unwrap().signal() == Some(libc::SIGKILL));
            }
            3 => drop(plain.command("/bin/sleep").arg("10").spawn().unwrap()),
            _ => assert!(plain.command("/bin/true").status().unwrap().success()),
        }
    }
    assert_eq!((oom, timeouts, kills), (100, 100, 100));
    assert_eq!(leftover_cgroups(), Vec::<PathBuf>::new());
    // (Each sandbox holds descriptors of its own until dropped: its /dev/null mount.)
    drop((plain, timed));
    assert_eq!(fd_count(), fds);
}

#[test]
fn a_limit_the_host_cannot_enforce_is_a_typed_error_naming_the_controller() {
    let _serial = serial();
    if is_root() {
        return skip(
            "a_limit_the_host_cannot_enforce_is_a_typed_error",
            "root can enforce every controller this host has",
        );
    }
    // Found at build, from the cgroup directory this user may not write: no process is made.
    let fds = fd_count();
    let err = limited(all_ns()).memory_limit(64 << 20).build().unwrap_err();
    match &err {
        Error::Unsupported { feature, reason, hint } => {
            assert_eq!(feature, "cgroup delegation", "{err}");
            assert!(reason.contains("memory") && reason.contains("/sys/fs/cgroup"), "{err}");
            assert!(hint.contains("cgroup_parent") && hint.contains("BestEffort"), "{err}");
        }
        other => panic!("expected Unsupported (cgroup delegation), got {other:?}"),
    }
    assert_eq!(fd_count(), fds);
    assert_eq!(own_children(), Vec::<i32>::new());
}

#[test]
fn best_effort_runs_without_the_limits_it_cannot_enforce_and_says_so() {
    let _serial = serial();
    if is_root() {
        return skip("best_effort_runs_without_the_limits_it_cannot_enforce", "root can enforce them");
    }
    let sandbox = limited(all_ns())
        .memory_limit(64 << 20)
        .pids_limit(10)
        .resource_compat(Compat::BestEffort)
        .build()
        .unwrap();
    let mut child = sandbox.command("/bin/true").spawn().unwrap();
    assert_eq!(child.unenforced(), ["memory", "pids", "cgroup namespace (own groups)"]);
    assert!(child.wait().unwrap().success());
}

#[test]
fn bad_limit_values_are_rejected_at_build() {
    let _serial = serial();
    type Setter = fn(&mut SandboxBuilder);
    let cases: [(Setter, &str); 10] = [
        (
            |b| {
                b.io_limit(stockade::IoLimit::new(8, 0));
            },
            "io limit",
        ),
        (
            |b| {
                b.memory_limit(0);
            },
            "memory limit",
        ),
        (
            |b| {
                b.pids_limit(0);
            },
            "pids limit",
        ),
        (
            |b| {
                b.timeout(Duration::ZERO);
            },
            "timeout",
        ),
        (
            |b| {
                b.cpu_time_limit(Duration::ZERO);
            },
            "cpu time limit",
        ),
        (
            |b| {
                b.memory_limit(100 << 20).memory_swap_limit(50 << 20);
            },
            "memory+swap limit",
        ),
        (
            |b| {
                b.cpu_weight(0);
            },
            "cpu weight",
        ),
        (
            |b| {
                b.cpuset_cpus("0-a");
            },
            "cpuset cpus",
        ),
        (
            |b| {
                b.rlimit(Rlimit::OpenFiles, 100, 10);
            },
            "rlimit",
        ),
        (
            |b| {
                b.cpu_quota(Duration::from_millis(10), Duration::from_secs(5));
            },
            "cpu quota",
        ),
    ];
    for (set, what) in cases {
        let mut b = Sandbox::builder();
        set(&mut b);
        let err = b.build().unwrap_err();
        assert!(matches!(&err, Error::InvalidValue { what: w, .. } if *w == what), "{what}: {err}");
    }
}

#[test]
fn rlimits_reach_the_payload() {
    let _serial = serial();
    let sandbox = limited(all_ns())
        .rlimit(Rlimit::OpenFiles, 77, 99)
        .rlimit(Rlimit::FileSize, 4096, 4096)
        .build()
        .unwrap();
    let out = sh(
        &sandbox,
        "ulimit -n; ulimit -Hn; head -c 10000 /dev/zero > /tmp/stockade-fsize-$$ 2>/dev/null; echo $?; wc -c < /tmp/stockade-fsize-$$; rm -f /tmp/stockade-fsize-$$",
    );
    let text = String::from_utf8_lossy(&out.stdout);
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(&lines[..2], ["77", "99"], "{text}");
    assert_ne!(lines[2], "0", "writing past RLIMIT_FSIZE succeeded: {text}");
    assert_eq!(lines[3].trim(), "4096", "{text}");
}

#[test]
fn usage_reports_cpu_time_wall_time_and_peak_memory() {
    let _serial = serial();
    let sandbox = sandbox(all_ns());
    let status = sandbox
        .command("/bin/sh")
        .args(["-c", "i=0; while [ $i -lt 300000 ]; do i=$((i+1)); done"])
        .status()
        .unwrap();
    let u = status.usage();
    assert!(status.success() && status.limit().is_none());
    assert!(u.user_time + u.system_time >= Duration::from_millis(50), "{u:?}");
    assert!(u.wall_time >= u.user_time / 2, "{u:?}");
    assert!(u.peak_memory.unwrap_or(0) > 100_000, "{u:?}");
    assert!(!u.oom_killed);
}

#[test]
fn io_limits_are_set_on_the_sandboxes_cgroup() {
    let _serial = serial();
    if !cgroups_writable("io_limits_are_set_on_the_sandboxes_cgroup") {
        return;
    }
    use std::os::unix::fs::{FileTypeExt, MetadataExt};
    let Some((major, minor)) = ["/dev/vda", "/dev/sda", "/dev/nvme0n1"].into_iter().find_map(|d| {
        let m = std::fs::metadata(d).ok()?;
        m.file_type().is_block_device().then(|| (libc::major(m.rdev()), libc::minor(m.rdev())))
    }) else {
        return skip(
            "io_limits_are_set_on_the_sandboxes_cgroup",
            "no /dev/vda, /dev/sda or /dev/nvme0n1 block device",
        );
    };
    // No mount or cgroup namespace: the payload reads its own cgroup's files from the host's
    // /sys/fs/cgroup, at the path /proc/self/cgroup gives. Without a cgroup namespace the limits
    // sit in the group the payload's processes are in.
    let sandbox = Sandbox::builder()
        .io_limit(stockade::IoLimit::new(major, minor).write_bps(1_048_576).read_iops(120))
        .build()
        .unwrap();
    let script = "p=$(grep -E '^0::|:blkio:' /proc/self/cgroup | head -n 1 | cut -d: -f3); \
                  for d in /sys/fs/cgroup$p /sys/fs/cgroup/blkio$p; do \
                    cat $d/io.max $d/blkio.throttle.write_bps_device $d/blkio.throttle.read_iops_device 2>/dev/null; done; true";
    let out = sh_ok(&sandbox, script);
    let dev = format!("{major}:{minor}");
    let v2 =
        out.lines().any(|l| l.starts_with(&dev) && l.contains("wbps=1048576") && l.contains("riops=120"));
    let v1 =
        out.lines().any(|l| l == format!("{dev} 1048576")) && out.lines().any(|l| l == format!("{dev} 120"));
    assert!(v2 || v1, "limits not found in the payload's cgroup: {out}");
    assert_eq!(leftover_cgroups(), Vec::<PathBuf>::new());
}

#[test]
fn output_stops_at_the_timeout_even_while_the_payload_holds_its_pipes_open() {
    let _serial = serial();
    // The limit must come after the shell's first line: a generous one, as the cgroup v2 guest
    // (emulated, under load) once took over 300 ms to start the shell.
    let sandbox = limited(all_ns()).timeout(Duration::from_secs(3)).build().unwrap();
    let out = sandbox.command("/bin/sh").args(["-c", "echo partial; exec sleep 100"]).output().unwrap();
    assert_eq!(out.status.limit(), Some(Limit::WallClock), "{}", out.status);
    assert_eq!(out.stdout, b"partial\n");
}

#[test]
fn a_sandbox_that_ended_in_time_is_not_reported_as_timed_out_when_waited_for_late() {
    let _serial = serial();
    let sandbox = limited(all_ns()).timeout(Duration::from_millis(200)).build().unwrap();
    let mut child = sandbox.command("/bin/true").spawn().unwrap();
    // Wait for the exit itself (the pidfd turns readable), then let the deadline pass.
    assert!(wait_readable(&child, Duration::from_secs(10)));
    std::thread::sleep(Duration::from_millis(250));
    let status = child.wait().unwrap();
    assert!(status.success() && status.limit().is_none(), "{status}");
}

fn wait_readable(child: &stockade::Child, timeout: Duration) -> bool {
    use std::os::fd::AsFd;
    let mut fds = [nix::poll::PollFd::new(child.as_fd(), nix::poll::PollFlags::POLLIN)];
    let ms = nix::poll::PollTimeout::try_from(timeout.as_millis() as i32).unwrap();
    matches!(nix::poll::poll(&mut fds, ms), Ok(1))
}

#[test]
fn a_cgroup_parent_at_the_hierarchy_root_stays_inside_the_cgroup_filesystem() {
    let _serial = serial();
    if !cgroups_writable("a_cgroup_parent_at_the_hierarchy_root") {
        return;
    }
    let before: Vec<_> = std::fs::read_dir("/").unwrap().map(|e| e.unwrap().file_name()).collect();
    let sandbox = limited(all_ns()).pids_limit(16).cgroup_parent("/").build().unwrap();
    let out = sh_ok(&sandbox, "echo ok");
    assert_eq!(out, "ok\n");
    let after: Vec<_> = std::fs::read_dir("/").unwrap().map(|e| e.unwrap().file_name()).collect();
    assert_eq!(before, after, "something was created in the host's /");
    assert_eq!(leftover_cgroups(), Vec::<PathBuf>::new());
}

#[test]
fn with_a_cgroup_namespace_the_sandbox_has_a_group_of_its_own_in_every_hierarchy() {
    if !cgroups_writable("with_a_cgroup_namespace_the_sandbox_has_a_group_of_its_own_in_every_hierarchy") {
        return;
    }
    let _serial = serial();
    // No limits at all: the groups exist only to confine the namespace.
    let sandbox = builder(all_ns()).build().unwrap();
    let mut child = sandbox.command("/bin/sleep").arg("3600").stdin(stockade::Stdio::null()).spawn().unwrap();
    let payload = loop {
        if let Some(&p) = children_of(child.id() as i32).first() {
            break p;
        }
        std::thread::yield_now();
    };
    let host_view = std::fs::read_to_string(format!("/proc/{payload}/cgroup")).unwrap();
    let ours = std::fs::read_to_string("/proc/self/cgroup").unwrap();
    child.kill().unwrap();
    child.wait().unwrap();
    assert_eq!(host_view.lines().count(), ours.lines().count(), "{host_view}");
    let prefix = cgroup_prefix();
    for line in host_view.lines() {
        let path = line.splitn(3, ':').nth(2).unwrap();
        assert!(path.contains(&format!("/{prefix}-")) && path.ends_with("/payload"), "{line}");
    }
}

#[test]
fn a_payload_mounting_cgroupfs_in_its_cgroup_namespace_sees_only_its_own_group() {
    if !cgroups_writable("a_payload_mounting_cgroupfs_in_its_cgroup_namespace_sees_only_its_own_group") {
        return;
    }
    if !have("/usr/bin/python3") {
        return skip(
            "a_payload_mounting_cgroupfs_in_its_cgroup_namespace_sees_only_its_own_group",
            "python3 missing for the memory hog",
        );
    }
    let _serial = serial();
    // Real CAP_SYS_ADMIN (no user namespace, so this runs in the v2 guest too): it may mount
    // cgroupfs, which then starts at its namespace's root.
    let sandbox = limited(all_ns())
        .memory_limit(64 << 20)
        .pids_limit(64)
        .capabilities([stockade::Capability::CAP_SYS_ADMIN])
        .build()
        .unwrap();
    let script = r#"
        mkdir -p /tmp/v2 /tmp/mem
        mount -t cgroup2 none /tmp/v2 && echo mounted v2
        mount -t cgroup -o memory none /tmp/mem 2>/dev/null && echo mounted v1
        for d in /tmp/v2/*/ /tmp/mem/*/; do [ -d "$d" ] && echo group $d; done
        grep -q . /tmp/v2/cgroup.procs && echo sees-procs
        for f in /tmp/v2/memory.max /tmp/mem/memory.limit_in_bytes; do
          [ -e $f ] && echo max > $f 2>/dev/null; [ -e $f ] && echo -1 > $f 2>/dev/null; true
        done
        cat /proc/self/cgroup | sed 's/^/self /'
        python3 -c 'b = bytearray(256 << 20); print("allocated", len(b))'
    "#;
    let out = sandbox.command("/bin/sh").args(["-c", script]).output().unwrap();
    let said = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert!(said.contains("mounted v2"), "{said}");
    assert!(!said.contains("group "), "a group beyond its own is visible: {said}");
    assert!(said.contains("sees-procs"), "its own group is the root it sees: {said}");
    for line in said.lines().filter(|l| l.starts_with("self ")) {
        assert!(line.ends_with(":/"), "{line}");
    }
    assert!(!said.contains("allocated"), "the limit was raised from inside: {said}");
    assert!(out.status.usage().oom_killed, "{}: {said}", out.status);
    assert_eq!(leftover_cgroups(), Vec::<PathBuf>::new());
}

/// `--ns` for the run example.
fn ns_list(ns: Namespaces) -> String {
    ns.names().map(|n| if n == "mnt" { "mount" } else { n }).collect::<Vec<_>>().join(",")
}

/// Kills `embedder` once it has finished `runs` spawns, then checks that nothing of its
/// sandboxes survives: no process carrying `marker`, and (with `cgroup_parent`) no group.
fn kill_after_runs(
    mut embedder: std::process::Child,
    runs: usize,
    marker: &str,
    cgroup_parent: Option<&str>,
) {
    let mut err = buffered(embedder.stderr.take().unwrap());
    let mut line = String::new();
    let mut seen = 0;
    let mut said = String::new();
    while seen < runs {
        line.clear();
        assert!(err.read_line(&mut line).unwrap() > 0, "embedder ended early: {said}");
        said.push_str(&line);
        if line.starts_with("run ") {
            seen += 1;
        }
    }
    embedder.kill().unwrap(); // SIGKILL: at whatever point of the next spawn it is.
    embedder.wait().unwrap();
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    loop {
        let survivors = processes_with(marker);
        let groups = cgroup_parent.map(leftover_groups).unwrap_or_default();
        if survivors.is_empty() && groups.is_empty() {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "after the embedder's death: processes {survivors:?}, groups {groups:?}"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Pids of processes whose command line contains `marker`.
fn processes_with(marker: &str) -> Vec<i32> {
    let mut found = Vec::new();
    for e in std::fs::read_dir("/proc").unwrap().flatten() {
        let Ok(pid) = e.file_name().to_string_lossy().parse::<i32>() else { continue };
        let cmdline = std::fs::read(e.path().join("cmdline")).unwrap_or_default();
        if String::from_utf8_lossy(&cmdline).contains(marker) {
            found.push(pid);
        }
    }
    found
}

/// Sandbox groups left under `parent` in any hierarchy.
fn leftover_groups(parent: &str) -> Vec<PathBuf> {
    let mut found = Vec::new();
    for h in children_dirs(Path::new("/sys/fs/cgroup")) {
        found.extend(children_dirs(&h.join(parent)));
    }
    found
}

#[test]
fn an_embedder_killed_at_any_point_leaves_no_sandbox_process_and_no_cgroup() {
    let _serial = serial();
    for round in 0..6usize {
        let marker = format!("3600.{}{round}", std::process::id());
        let parent = format!("stockade-kill-test-{}-{round}", std::process::id());
        let mut args: Vec<String> =
            vec!["--repeat".into(), "100000".into(), "--timeout".into(), "0.02".into()];
        let with_cgroups = is_root() && round % 2 == 0;
        args.extend(["--ns".into(), ns_list(all_ns())]);
        if with_cgroups {
            args.extend([
                "--cgroup-parent".into(),
                parent.clone(),
                "--memory".into(),
                "67108864".into(),
                "--pids".into(),
                "32".into(),
            ]);
        }
        args.extend([
            "--root".into(),
            "tmpfs".into(),
            "--system".into(),
            "--".into(),
            "/bin/sleep".into(),
            marker.clone(),
        ]);
        let embedder = std::process::Command::new(run_example())
            .args(&args)
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        // Different points of the spawn cycle: after 1, 4, 7, ... completed runs.
        kill_after_runs(embedder, 1 + round * 3, &marker, with_cgroups.then_some(parent.as_str()));
        if with_cgroups {
            for h in children_dirs(Path::new("/sys/fs/cgroup")) {
                let _ = std::fs::remove_dir(h.join(&parent));
            }
        }
    }
}
