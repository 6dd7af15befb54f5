//! Differential tests against runc (Debian's runc 1.1): the same bundle runs under runc and under
//! stockade-runtime, and what the container observes is compared.
//!
//! Equal: `/proc/self/status` (uids, gids, groups, the five capability sets, NoNewPrivs,
//! Seccomp), hostname, environment, working directory, umask, rlimits; the state JSON's fields
//! and status at each lifecycle step; which operations out of order fail.
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
use serde_json::Value;

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
