//! Differential tests against runc (Debian's runc 1.1): the same bundle runs under runc and under
//! stockade-runtime, and what the container observes is compared.
//!
//! Equal: `/proc/self/status` (uids, gids, groups, the five capability sets, NoNewPrivs,
//! Seccomp), hostname, environment, working directory, umask, rlimits; the state JSON's fields
//! and status at each lifecycle step; which operations out of order fail.
//!
//! The cgroup limit files (memory, pids, CPU shares or weight, quota, period, cpuset) are equal,
//! read from the group that carries them: stockade's processes live in a leaf (`payload`)
//! below it. Listed differences: on cgroup v2 runc 1.1 turns CPU shares into a weight by a
//! formula that gives the default 1024 shares weight 39 (the kernel's default is 100); stockade
//! keeps the share of the default. Hooks run in the runtime spec's order with its states;
//! runc 1.1 runs `poststart` before the process runs (the spec says after), concurrently with
//! `startContainer`, with the state still `created`.
//!
//! Mounts: the same mount points, and on each one at least runc's restrictions (`ro`, `nosuid`,
//! `nodev`, `noexec`). The differences allowed, each with its reason:
//! - stockade mounts everything `nodev` (the root, `/dev`, `/proc`) and `/proc` also `nosuid`
//!   and `noexec`: device nodes work only where it binds them (stricter than runc);
//! - the default devices are bind mounts of the host's nodes (runc `mknod`s them in the `/dev`
//!   tmpfs): one mount each at `/dev/null`, `zero`, `full`, `random`, `urandom`, `tty`;
//! - masked files are covered by the host's `/dev/null` (runc's comes from the container's
//!   `/dev`, a tmpfs) and masked directories by a read-only tmpfs of stockade's options;
//! - the `cgroup` mount is stockade's view of the container's own groups (`Mount::cgroup`): on a
//!   hybrid host it also mounts the cgroup2 hierarchy at `/sys/fs/cgroup/unified`, read-only;
//! - file system options (the superblock's: a tmpfs's size, sysfs mounted read-write then made
//!   read-only per mount) differ; only the per-mount flags are compared.
//!
//! Root only (runc runs containers as root here). As uid 65534 the tests record a skip.

#[path = "common/bundle.rs"]
mod bundle;
mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

use bundle::{bundle_dir, config};
use serde_json::{Value, json};

fn ours() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_stockade-runtime"))
}

/// Root with runc installed, or a skip recorded.
fn can_run(test: &str) -> bool {
    if !common::is_root() {
        common::skip(test, "runc runs containers as root here; so is stockade-runtime driven");
        return false;
    }
    if !common::have("/usr/sbin/runc") && !common::have("/usr/bin/runc") {
        common::skip(test, "runc is not installed (Debian package runc; .ci/run installs it)");
        return false;
    }
    true
}

/// One runtime with a root of its own.
struct Runtime {
    binary: PathBuf,
    root: common::TempDir,
}

impl Runtime {
    fn both() -> [Runtime; 2] {
        let runc =
            ["/usr/sbin/runc", "/usr/bin/runc"].iter().map(PathBuf::from).find(|p| p.exists()).unwrap();
        [
            Runtime { binary: runc, root: common::tempdir() },
            Runtime { binary: ours(), root: common::tempdir() },
        ]
    }

    fn name(&self) -> &str {
        if self.binary == ours() { "stockade-runtime" } else { "runc" }
    }

    /// Runs a command; its stdout and stderr go through files (a container it leaves running
    /// holds them, which a pipe's reader would wait for).
    fn run(&self, args: &[&str]) -> Output {
        let out = self.root.path().join(".out");
        let err = self.root.path().join(".err");
        let status = Command::new(&self.binary)
            .arg("--root")
            .arg(self.root.path())
            .args(args)
            .stdin(Stdio::null())
            .stdout(std::fs::File::create(&out).unwrap())
            .stderr(std::fs::File::create(&err).unwrap())
            .status()
            .expect("run the runtime");
        Output { status, stdout: std::fs::read(&out).unwrap(), stderr: std::fs::read(&err).unwrap() }
    }
}

/// What the probe prints, before its mount table.
const PROBE: &str = "grep -E '^(Uid|Gid|Groups|CapInh|CapPrm|CapEff|CapBnd|CapAmb|NoNewPrivs|Seccomp):' \
                     /proc/self/status; hostname; env | sort; pwd; umask; cat /proc/self/limits; \
                     echo ===; cat /proc/self/mountinfo";

/// Mount point → (file system type, per-mount flags among ro, nosuid, nodev, noexec).
fn mounts(mountinfo: &str) -> BTreeMap<String, (String, BTreeSet<String>)> {
    let mut out = BTreeMap::new();
    for line in mountinfo.lines() {
        let Some((left, right)) = line.split_once(" - ") else { continue };
        let fields: Vec<&str> = left.split(' ').collect();
        let (Some(point), Some(options)) = (fields.get(4), fields.get(5)) else { continue };
        let fstype = right.split(' ').next().unwrap_or_default().to_owned();
        let flags = options
            .split(',')
            .filter(|o| ["ro", "nosuid", "nodev", "noexec"].contains(o))
            .map(str::to_owned)
            .collect();
        out.insert((*point).to_owned(), (fstype, flags));
    }
    out
}

#[test]
fn the_container_sees_what_it_sees_under_runc() {
    if !can_run("the_container_sees_what_it_sees_under_runc") {
        return;
    }
    let _serial = common::serial();
    let dir = bundle_dir();
    let mut cfg = config(&["sh", "-c", PROBE]);
    cfg["process"]["env"].as_array_mut().unwrap().push("GREETING=hello there".into());
    cfg["process"]["cwd"] = "/tmp".into();
    cfg["process"]["user"]["umask"] = 0o027.into();
    cfg["process"]["user"]["additionalGids"] = serde_json::json!([5, 1000]);
    cfg["process"]["rlimits"] = serde_json::json!([
        {"type": "RLIMIT_NOFILE", "hard": 4096, "soft": 512},
        {"type": "RLIMIT_NPROC", "hard": 900, "soft": 800}
    ]);
    std::fs::write(dir.path().join("config.json"), cfg.to_string()).unwrap();
    let bundle = dir.path().to_str().unwrap();

    let mut seen = Vec::new();
    for (i, rt) in Runtime::both().iter().enumerate() {
        let out = rt.run(&["run", "--bundle", bundle, &format!("probe{i}")]);
        assert!(
            out.status.success(),
            "{}: {}\n{}",
            rt.name(),
            out.status,
            String::from_utf8_lossy(&out.stderr)
        );
        let text = String::from_utf8(out.stdout).unwrap();
        let (observed, mountinfo) = text.split_once("===\n").expect("the probe's output");
        seen.push((rt.name().to_owned(), observed.to_owned(), mounts(mountinfo)));
    }
    let [(_, runc, runc_mounts), (_, stockade, stockade_mounts)] = <[_; 2]>::try_from(seen).unwrap();
    assert_eq!(stockade, runc, "ids, capabilities, NoNewPrivs, Seccomp, hostname, env, cwd, umask, rlimits");

    // The same mount points, but for stockade's device binds and its cgroup2 view.
    let allowed_extra = |point: &str| {
        [
            "/dev/null",
            "/dev/zero",
            "/dev/full",
            "/dev/random",
            "/dev/urandom",
            "/dev/tty",
            "/sys/fs/cgroup/unified",
        ]
        .contains(&point)
    };
    let runc_points: BTreeSet<_> = runc_mounts.keys().cloned().collect();
    let stockade_points: BTreeSet<_> =
        stockade_mounts.keys().filter(|p| !allowed_extra(p)).cloned().collect();
    assert_eq!(stockade_points, runc_points, "mount points");
    // Never weaker than runc on any of them.
    for (point, (_, flags)) in &runc_mounts {
        let (_, ours) = &stockade_mounts[point];
        assert!(flags.is_subset(ours), "{point}: runc has {flags:?}, stockade {ours:?}");
    }
}

/// A created container's pid, from the state.
fn state(rt: &Runtime, id: &str) -> Option<Value> {
    let out = rt.run(&["state", id]);
    out.status.success().then(|| serde_json::from_slice(&out.stdout).expect("state JSON"))
}

#[test]
fn the_lifecycle_and_its_errors_match_runc() {
    if !can_run("the_lifecycle_and_its_errors_match_runc") {
        return;
    }
    let _serial = common::serial();
    // SAFETY: prctl with integer arguments. Both runtimes' containers are reparented here.
    assert_eq!(unsafe { libc::prctl(libc::PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) }, 0);
    let dir = bundle_dir();
    std::fs::write(dir.path().join("config.json"), config(&["sleep", "1000"]).to_string()).unwrap();
    let bundle = dir.path().to_str().unwrap();

    for rt in Runtime::both() {
        let who = rt.name().to_owned();
        let ok = |args: &[&str]| {
            let out = rt.run(args);
            assert!(out.status.success(), "{who} {args:?}: {}", String::from_utf8_lossy(&out.stderr));
        };
        let fails = |args: &[&str]| {
            let out = rt.run(args);
            assert!(!out.status.success(), "{who} {args:?} succeeded");
        };
        ok(&["create", "--bundle", bundle, "life"]);
        let created = state(&rt, "life").unwrap();
        let keys: BTreeSet<_> = created.as_object().unwrap().keys().cloned().collect();
        for key in ["ociVersion", "id", "pid", "status", "bundle"] {
            assert!(keys.contains(key), "{who}: state has no {key}: {created}");
        }
        assert_eq!(created["status"], "created", "{who}");
        assert_eq!(created["id"], "life", "{who}");
        assert_eq!(created["bundle"], dir.path().canonicalize().unwrap().to_str().unwrap(), "{who}");
        let pid = created["pid"].as_i64().unwrap() as i32;
        assert!(pid > 0, "{who}");
        fails(&["create", "--bundle", bundle, "life"]);
        ok(&["start", "life"]);
        assert_eq!(state(&rt, "life").unwrap()["status"], "running", "{who}");
        fails(&["start", "life"]);
        fails(&["delete", "life"]);
        ok(&["kill", "life", "KILL"]);
        let _ = nix::sys::wait::waitpid(nix::unistd::Pid::from_raw(pid), None);
        assert_eq!(state(&rt, "life").unwrap()["status"], "stopped", "{who}");
        fails(&["start", "life"]);
        fails(&["kill", "life", "KILL"]);
        ok(&["delete", "life"]);
        assert!(state(&rt, "life").is_none(), "{who}: state after delete");
        fails(&["delete", "life"]);
        fails(&["state", "nope"]);
        assert!(!Path::new(&format!("/proc/{pid}")).exists(), "{who}: the container's init survived");
    }
}

/// The limit files of the container whose init is `pid`, by name (v1 `controller/file`, v2
/// `file`): read from the group its init is in, or that group's parent when the init is in
/// stockade's leaf (`payload`) below the group that carries the limits.
fn limit_files(pid: i32) -> BTreeMap<String, String> {
    const V1: [(&str, &str); 6] = [
        ("memory", "memory.limit_in_bytes"),
        ("pids", "pids.max"),
        ("cpu", "cpu.shares"),
        ("cpu", "cpu.cfs_quota_us"),
        ("cpu", "cpu.cfs_period_us"),
        ("cpuset", "cpuset.cpus"),
    ];
    const V2: [&str; 5] = ["memory.max", "pids.max", "cpu.weight", "cpu.max", "cpuset.cpus"];
    let text = std::fs::read_to_string(format!("/proc/{pid}/cgroup")).unwrap();
    let mut out = BTreeMap::new();
    let unified = Path::new("/sys/fs/cgroup/cgroup.controllers").exists();
    for line in text.lines() {
        let mut parts = line.splitn(3, ':');
        let (_, controllers, path) = (parts.next(), parts.next().unwrap_or(""), parts.next().unwrap_or(""));
        let group = |mount: &Path| {
            let dir = mount.join(path.trim_start_matches('/'));
            if dir.ends_with("payload") { dir.parent().unwrap().to_owned() } else { dir }
        };
        if controllers.is_empty() && unified {
            let dir = group(Path::new("/sys/fs/cgroup"));
            for file in V2 {
                out.insert(
                    file.to_owned(),
                    std::fs::read_to_string(dir.join(file)).unwrap_or_default().trim().to_owned(),
                );
            }
            continue;
        }
        for (controller, file) in V1 {
            if controllers.split(',').any(|c| c == controller) {
                let dir = group(&Path::new("/sys/fs/cgroup").join(controllers));
                let value = std::fs::read_to_string(dir.join(file)).unwrap_or_default();
                out.insert(format!("{controller}/{file}"), value.trim().to_owned());
            }
        }
    }
    out
}

#[test]
fn the_cgroup_limits_and_the_hooks_match_runc() {
    if !can_run("the_cgroup_limits_and_the_hooks_match_runc") {
        return;
    }
    let _serial = common::serial();
    // SAFETY: prctl with integer arguments. Both runtimes' containers are reparented here.
    assert_eq!(unsafe { libc::prctl(libc::PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) }, 0);
    let dir = bundle_dir();
    let records = common::tempdir();
    std::fs::create_dir(dir.path().join("rootfs/out")).unwrap();
    let shares = 512u64;
    let mut seen = Vec::new();
    for (i, rt) in Runtime::both().iter().enumerate() {
        let who = rt.name().to_owned();
        let host_log = records.path().join(format!("{i}.log"));
        // Each hook appends its name and the state's status.
        let hook = |name: &str, log: &Path| {
            json!({
                "path": "/bin/sh",
                "args": ["sh", "-c", "state=$(cat); echo \"$0 $(echo \"$state\" | grep -o '\"status\":\"[a-z]*\"')\" >> \"$1\"", name, log],
                "timeout": 30
            })
        };
        let mut cfg = config(&["sleep", "1000"]);
        cfg["mounts"].as_array_mut().unwrap().push(json!({
            "destination": "/out", "type": "bind", "source": records.path(), "options": ["rbind", "rw"]
        }));
        cfg["linux"]["cgroupsPath"] = json!(format!("/stockade-differential-{i}-{}", std::process::id()));
        cfg["linux"]["resources"] = json!({
            "devices": [{"allow": false, "access": "rwm"}],
            "memory": {"limit": 64 << 20},
            "pids": {"limit": 40},
            "cpu": {"shares": shares, "quota": 20000, "period": 100000, "cpus": "0"}
        });
        cfg["hooks"] = json!({
            "prestart": [hook("prestart", &host_log)],
            "createRuntime": [hook("createRuntime", &host_log)],
            "startContainer": [hook("startContainer", &Path::new("/out").join(format!("{i}.log")))],
            "poststart": [hook("poststart", &host_log)],
            "poststop": [hook("poststop", &host_log)]
        });
        std::fs::write(dir.path().join("config.json"), cfg.to_string()).unwrap();
        let bundle = dir.path().to_str().unwrap();
        let out = rt.run(&["create", "--bundle", bundle, "limits"]);
        assert!(out.status.success(), "{who} create: {}", String::from_utf8_lossy(&out.stderr));
        let pid = state(rt, "limits").unwrap()["pid"].as_i64().unwrap() as i32;
        let limits = limit_files(pid);
        for args in [&["start", "limits"][..], &["kill", "limits", "KILL"]] {
            let out = rt.run(args);
            assert!(out.status.success(), "{who} {args:?}: {}", String::from_utf8_lossy(&out.stderr));
        }
        let _ = nix::sys::wait::waitpid(nix::unistd::Pid::from_raw(pid), None);
        let out = rt.run(&["delete", "limits"]);
        assert!(out.status.success(), "{who} delete: {}", String::from_utf8_lossy(&out.stderr));
        seen.push((who, limits, std::fs::read_to_string(&host_log).unwrap()));
    }
    let [(_, mut runc_limits, runc_hooks), (_, ours_limits, ours_hooks)] = <[_; 2]>::try_from(seen).unwrap();
    assert!(!ours_limits.is_empty() && ours_limits.values().all(|v| !v.is_empty()), "{ours_limits:?}");
    if let Some(weight) = runc_limits.get_mut("cpu.weight") {
        // cgroup v2: runc 1.1 turns shares into a weight by 1 + (shares - 2) * 9999 / 262142,
        // which makes the default 1024 shares weight 39 instead of the kernel's default 100;
        // stockade keeps the share of the default (shares * 100 / 1024), as runc 1.3 came to.
        assert_eq!(*weight, (1 + (shares - 2) * 9999 / 262142).to_string());
        *weight = (shares * 100 / 1024).to_string();
    }
    assert_eq!(ours_limits, runc_limits, "the cgroup limit files");
    // The runtime spec's order and states, which stockade follows exactly.
    let expected = [
        "prestart creating",
        "createRuntime creating",
        "startContainer created",
        "poststart running",
        "poststop stopped",
    ];
    let lines = |log: &str| -> Vec<String> {
        log.lines().map(|l| l.replace("\"status\":", "").replace('"', "")).collect()
    };
    assert_eq!(lines(&ours_hooks), expected, "stockade's hooks");
    // runc 1.1 runs poststart as soon as it has told the init to go, which is before the
    // process runs (the spec: after), concurrently with startContainer, and with the state
    // still "created": the same hooks, but its poststart's place and status differ.
    let mut runc_lines = lines(&runc_hooks);
    for line in &mut runc_lines {
        if line == "poststart created" {
            *line = "poststart running".into();
        }
    }
    runc_lines.sort();
    let mut sorted = expected.map(String::from).to_vec();
    sorted.sort();
    assert_eq!(runc_lines, sorted, "runc's hooks: {runc_hooks}");
}
