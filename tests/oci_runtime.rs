//! The runtime binary (`stockade-runtime`, runc's command line): a container's lifecycle as the
//! runtime spec gives it (create leaves it waiting and outliving the runtime, start runs it,
//! state, kill, delete, and the errors for operations out of order), bad bundles that leave
//! nothing behind, the terminal sent over a console socket, and containerd driving it
//! (`ctr run --runc-binary`).
//!
//! Runs as root: containerd and Docker run their runtime as root, and a container's cgroups
//! are made under the hierarchy's root. As uid 65534 every test records a skip.

#[path = "common/bundle.rs"]
mod bundle;
mod common;
#[path = "common/oci.rs"]
mod oci;

use std::io::Read;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use bundle::{bundle_dir, config};
use serde_json::{Value, json};

fn runtime() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_stockade-runtime"))
}

fn rt_path() -> &'static str {
    env!("CARGO_BIN_EXE_stockade-runtime")
}

/// Skips (with the reason logged) unless root.
fn root_only(test: &str) -> bool {
    if common::is_root() {
        return true;
    }
    common::skip(test, "the runtime binary is driven as root, as containerd and Docker drive it");
    false
}

/// Whether every one of `programs` is installed; if not, the test records a skip.
fn installed(test: &str, programs: &[&str], package: &str) -> bool {
    let missing: Vec<_> = programs.iter().filter(|p| !common::have(p)).collect();
    if !missing.is_empty() {
        common::skip(
            test,
            &format!("{missing:?} not installed (Debian package {package}; .ci/run installs it)"),
        );
    }
    missing.is_empty()
}

/// This process becomes the subreaper of what it starts, as containerd's shim is: a container
/// whose runtime exited is reparented here, and reaped here.
fn become_subreaper() {
    // SAFETY: prctl with integer arguments.
    let r = unsafe { libc::prctl(libc::PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) };
    assert_eq!(r, 0, "PR_SET_CHILD_SUBREAPER");
}

/// A runtime root (`--root`) of its own, and the runtime's output for each command.
struct Runtime {
    root: common::TempDir,
}

impl Runtime {
    fn new() -> Runtime {
        Runtime { root: common::tempdir() }
    }

    fn command(&self, args: &[&str]) -> Command {
        let mut c = Command::new(runtime());
        c.arg("--root").arg(self.root.path()).args(args);
        c
    }

    /// Runs a command, its stdout and stderr captured.
    fn run(&self, args: &[&str]) -> Output {
        self.command(args).stdin(Stdio::null()).output().expect("run stockade-runtime")
    }

    fn ok(&self, args: &[&str]) -> String {
        let out = self.run(args);
        assert!(out.status.success(), "stockade-runtime {args:?}: {}", text(&out));
        String::from_utf8(out.stdout).unwrap()
    }

    /// Runs a command that must fail; returns its stderr.
    fn fails(&self, args: &[&str]) -> String {
        let out = self.run(args);
        assert!(!out.status.success(), "stockade-runtime {args:?} succeeded: {}", text(&out));
        String::from_utf8_lossy(&out.stderr).into_owned()
    }

    /// `create`, the container's stdout and stderr going to `log` (a file: a pipe would keep
    /// `output` waiting for the container). Returns the init's pid from the pid file.
    fn create(&self, id: &str, bundle: &Path, log: &Path) -> i32 {
        let pid_file = bundle.join(format!("{id}.pid"));
        let log_path = log;
        let log = std::fs::File::create(log_path).unwrap();
        let out = self
            .command(&[
                "create",
                "--bundle",
                bundle.to_str().unwrap(),
                "--pid-file",
                pid_file.to_str().unwrap(),
                id,
            ])
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .output()
            .expect("run stockade-runtime create");
        assert!(
            out.status.success(),
            "create {id}: {}",
            std::fs::read_to_string(log_path).unwrap_or_default()
        );
        std::fs::read_to_string(&pid_file).unwrap().trim().parse().unwrap()
    }

    fn state(&self, id: &str) -> Value {
        serde_json::from_str(&self.ok(&["state", id])).expect("state JSON")
    }
}

fn text(out: &Output) -> String {
    format!(
        "{}\nstdout: {}\nstderr: {}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

/// Reaps `pid` (a child of this subreaper) and returns its exit code (128 + signal if killed).
fn reap(pid: i32) -> i32 {
    use nix::sys::wait::{WaitStatus, waitpid};
    loop {
        match waitpid(nix::unistd::Pid::from_raw(pid), None) {
            Ok(WaitStatus::Exited(_, code)) => return code,
            Ok(WaitStatus::Signaled(_, signal, _)) => return 128 + signal as i32,
            Ok(_) | Err(nix::errno::Errno::EINTR) => continue,
            Err(e) => panic!("waitpid {pid}: {e}"),
        }
    }
}

fn parent_of(pid: i32) -> i32 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
    let rest = &stat[stat.rfind(')').unwrap() + 2..];
    rest.split(' ').nth(1).unwrap().parse().unwrap()
}

/// The container's group directories, one per hierarchy, from its init's /proc entry.
fn cgroup_dirs(pid: i32) -> Vec<PathBuf> {
    cgroup_dirs_under(pid, "stockade-runtime")
}

/// The group directories of `pid` whose path contains `part`.
fn cgroup_dirs_under(pid: i32, part: &str) -> Vec<PathBuf> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/cgroup")).unwrap();
    let mut dirs = Vec::new();
    for line in text.lines() {
        let mut parts = line.splitn(3, ':');
        let (_, controllers, path) = (parts.next(), parts.next().unwrap_or(""), parts.next().unwrap_or(""));
        let mount = if controllers.is_empty() {
            if Path::new("/sys/fs/cgroup/cgroup.controllers").exists() {
                PathBuf::from("/sys/fs/cgroup")
            } else {
                PathBuf::from("/sys/fs/cgroup/unified")
            }
        } else {
            PathBuf::from("/sys/fs/cgroup").join(controllers.trim_start_matches("name="))
        };
        let dir = mount.join(path.trim_start_matches('/'));
        if dir.exists() && path.contains(part) {
            dirs.push(dir);
        }
    }
    dirs
}

/// A bundle whose process runs `script` with a host directory bound at /out (for marks).
fn script_bundle(script: &str) -> (common::TempDir, common::TempDir, Value) {
    let dir = bundle_dir();
    let out = common::tempdir();
    std::fs::create_dir(dir.path().join("rootfs/out")).unwrap();
    let mut cfg = config(&["sh", "-c", script]);
    cfg["mounts"].as_array_mut().unwrap().push(json!({
        "destination": "/out", "type": "bind", "source": out.path(), "options": ["rbind", "rw"]
    }));
    std::fs::write(dir.path().join("config.json"), serde_json::to_vec_pretty(&cfg).unwrap()).unwrap();
    (dir, out, cfg)
}

#[test]
fn a_created_container_runs_nothing_until_started_and_outlives_the_runtime() {
    if !root_only("a_created_container_runs_nothing_until_started_and_outlives_the_runtime") {
        return;
    }
    let _serial = common::serial();
    become_subreaper();
    let rt = Runtime::new();
    let (dir, out, _) = script_bundle("echo started > /out/mark; echo hello; exit 3");
    let log = out.path().join("log");
    let pid = rt.create("c1", dir.path(), &log);

    // The runtime has exited; the container waits, reparented to this subreaper.
    assert_eq!(parent_of(pid), std::process::id() as i32, "the init's parent");
    let state = rt.state("c1");
    assert_eq!(state["status"], "created", "{state}");
    assert_eq!(state["id"], "c1");
    assert_eq!(state["pid"], pid);
    assert_eq!(state["bundle"], dir.path().canonicalize().unwrap().to_str().unwrap());
    assert!(!out.path().join("mark").exists(), "the process ran before start");
    let groups = cgroup_dirs(pid);
    assert!(!groups.is_empty(), "the container has cgroups of its own");
    let list = rt.ok(&["list", "--format", "json"]);
    assert!(list.contains("\"c1\""), "{list}");

    rt.ok(&["start", "c1"]);
    assert_eq!(reap(pid), 3, "the process's exit code, through its init");
    assert_eq!(std::fs::read_to_string(out.path().join("mark")).unwrap(), "started\n");
    assert_eq!(std::fs::read_to_string(&log).unwrap(), "hello\n", "the container's stdout is the runtime's");
    assert_eq!(rt.state("c1")["status"], "stopped");

    rt.ok(&["delete", "c1"]);
    let err = rt.fails(&["state", "c1"]);
    assert!(err.contains("does not exist"), "{err}");
    assert!(!rt.root.path().join("c1").exists(), "state left behind");
    for g in &groups {
        assert!(!g.exists(), "cgroup {} left behind", g.display());
    }
}

#[test]
fn operations_out_of_order_fail_as_the_runtime_spec_says() {
    if !root_only("operations_out_of_order_fail_as_the_runtime_spec_says") {
        return;
    }
    let _serial = common::serial();
    become_subreaper();
    let rt = Runtime::new();
    let (dir, out, _) = script_bundle("echo up > /out/up; exec sleep 1000");
    let pid = rt.create("c2", dir.path(), &out.path().join("log"));

    let err = rt.fails(&["create", "--bundle", dir.path().to_str().unwrap(), "c2"]);
    assert!(err.contains("already exists"), "{err}");
    let err = rt.fails(&["kill", "c2", "NOSUCHSIG"]);
    assert!(err.contains("unknown signal"), "{err}");
    rt.ok(&["start", "c2"]);
    let err = rt.fails(&["start", "c2"]);
    assert!(err.contains("running already"), "{err}");
    assert_eq!(rt.state("c2")["status"], "running");
    let err = rt.fails(&["delete", "c2"]);
    assert!(err.contains("running"), "{err}");
    assert!(common::pidfd_open(pid).is_some(), "a refused delete left the container running");

    // SIGTERM goes to the init, which passes it on to the process.
    rt.ok(&["kill", "c2", "TERM"]);
    assert_eq!(reap(pid), 128 + libc::SIGTERM);
    assert_eq!(rt.state("c2")["status"], "stopped");
    assert_eq!(rt.state("c2")["pid"], 0);
    let err = rt.fails(&["kill", "c2", "KILL"]);
    assert!(err.contains("not running"), "{err}");
    let err = rt.fails(&["start", "c2"]);
    assert!(err.contains("stopped"), "{err}");
    rt.ok(&["delete", "c2"]);

    // A created container is deleted without --force: it never ran.
    std::fs::remove_file(out.path().join("up")).unwrap();
    let pid = rt.create("c3", dir.path(), &out.path().join("log3"));
    rt.ok(&["delete", "c3"]);
    assert_eq!(reap(pid), 128 + libc::SIGKILL);
    assert!(!out.path().join("up").exists(), "a deleted created container ran");

    for args in [["state", "nope"], ["start", "nope"], ["kill", "nope"], ["delete", "nope"]] {
        let err = rt.fails(&args);
        assert!(err.contains("does not exist"), "{args:?}: {err}");
    }
    for id in ["..", "a/b", "", "x y"] {
        let err = rt.fails(&["create", "--bundle", dir.path().to_str().unwrap(), id]);
        assert!(err.contains("invalid container id"), "{id:?}: {err}");
    }
    rt.ok(&["delete", "--force", "nope"]);
    assert_eq!(std::fs::read_dir(rt.root.path()).unwrap().count(), 0, "state left behind");
}

#[test]
fn kill_all_reaches_every_process_and_ps_lists_them() {
    if !root_only("kill_all_reaches_every_process_and_ps_lists_them") {
        return;
    }
    let _serial = common::serial();
    become_subreaper();
    let rt = Runtime::new();
    let (dir, out, _) = script_bundle("sleep 1000 & sleep 1000 & echo > /out/ready; wait");
    let pid = rt.create("c4", dir.path(), &out.path().join("log"));
    rt.ok(&["start", "c4"]);
    // Both sleeps exist once the mark is there (they were started before it).
    let deadline = Instant::now() + Duration::from_secs(30);
    while !out.path().join("ready").exists() {
        assert!(Instant::now() < deadline, "the container never got ready");
        std::thread::sleep(Duration::from_millis(20));
    }
    let pids: Vec<i32> = serde_json::from_str(&rt.ok(&["ps", "--format", "json", "c4"])).unwrap();
    assert!(pids.contains(&pid), "the init is listed: {pids:?}");
    assert_eq!(pids.len(), 4, "init, sh and two sleeps: {pids:?}");
    let table = rt.ok(&["ps", "c4"]);
    assert!(table.lines().next().unwrap().contains("PID") && table.contains("sleep 1000"), "{table}");

    rt.ok(&["kill", "--all", "c4", "KILL"]);
    assert_eq!(reap(pid), 128 + libc::SIGKILL);
    for p in pids {
        assert!(!Path::new(&format!("/proc/{p}")).exists() || p == pid, "process {p} survived");
    }
    rt.ok(&["delete", "c4"]);
}

#[test]
fn bad_bundles_fail_naming_the_field_and_leave_nothing_behind() {
    if !root_only("bad_bundles_fail_naming_the_field_and_leave_nothing_behind") {
        return;
    }
    let _serial = common::serial();
    let rt = Runtime::new();
    let dir = bundle_dir();
    let children = common::own_children();
    let host = common::tempdir();
    std::os::unix::fs::symlink(host.path(), dir.path().join("rootfs/evil")).unwrap();

    // (what, config.json's text or none, the field the error names)
    let mut cases: Vec<(&str, Option<String>, &str)> = vec![
        ("missing config.json", None, "config.json"),
        ("malformed JSON", Some("{\"ociVersion\": \"1.0.2\",\n [".into()), "line 2"),
    ];
    let mut unknown = config(&["true"]);
    unknown["linux"]["namespaces"].as_array_mut().unwrap().insert(2, json!({"type": "bogus"}));
    cases.push(("an unknown namespace type", Some(unknown.to_string()), "linux.namespaces[2].type"));
    let mut symlinked = config(&["true"]);
    symlinked["mounts"]
        .as_array_mut()
        .unwrap()
        .push(json!({"destination": "/evil", "type": "tmpfs", "source": "tmpfs"}));
    cases.push((
        "a mount onto a symlink out of the root",
        Some(symlinked.to_string()),
        "mounts[7].destination",
    ));
    let mut escaping = config(&["true"]);
    escaping["root"]["path"] = json!("../..");
    cases.push(("a relative root path leaving the bundle", Some(escaping.to_string()), "root.path"));

    for (what, text, field) in &cases {
        let _ = std::fs::remove_file(dir.path().join("config.json"));
        if let Some(text) = text {
            std::fs::write(dir.path().join("config.json"), text).unwrap();
        }
        let err = rt.fails(&["create", "--bundle", dir.path().to_str().unwrap(), "bad"]);
        assert!(err.contains(field), "{what}: the error names {field}: {err}");
        assert!(!rt.root.path().join("bad").exists(), "{what}: state directory left behind");
        for hierarchy in std::fs::read_dir("/sys/fs/cgroup").unwrap().flatten() {
            let left = hierarchy.path().join("stockade-runtime/bad");
            assert!(!left.exists(), "{what}: cgroup {} left behind", left.display());
        }
        assert_eq!(common::own_children(), children, "{what}: a process left behind");
    }
    assert_eq!(
        std::fs::read_dir(host.path()).unwrap().count(),
        0,
        "something was made in the host directory"
    );
}

#[test]
fn the_terminal_goes_to_the_console_socket() {
    if !root_only("the_terminal_goes_to_the_console_socket") {
        return;
    }
    let _serial = common::serial();
    become_subreaper();
    let rt = Runtime::new();
    let dir = bundle_dir();
    let mut cfg = config(&["sh", "-c", "test -t 0 && test -t 1 && echo on-a-terminal"]);
    cfg["process"]["terminal"] = json!(true);
    cfg["process"]["consoleSize"] = json!({"height": 30, "width": 100});
    std::fs::write(dir.path().join("config.json"), cfg.to_string()).unwrap();

    // Without a console socket, a terminal has nowhere to go.
    let err = rt.fails(&["create", "--bundle", dir.path().to_str().unwrap(), "t0"]);
    assert!(err.contains("--console-socket"), "{err}");

    let socket_path = dir.path().join("console.sock");
    let listener = std::os::unix::net::UnixListener::bind(&socket_path).unwrap();
    let receiver = std::thread::spawn(move || {
        let (stream, _) = listener.accept().unwrap();
        let mut name = [0u8; 64];
        let mut iov = [std::io::IoSliceMut::new(&mut name)];
        let mut space = nix::cmsg_space!(std::os::fd::RawFd);
        let msg = nix::sys::socket::recvmsg::<()>(
            stream.as_raw_fd(),
            &mut iov,
            Some(&mut space),
            nix::sys::socket::MsgFlags::empty(),
        )
        .unwrap();
        let fd = msg
            .cmsgs()
            .unwrap()
            .find_map(|c| match c {
                nix::sys::socket::ControlMessageOwned::ScmRights(fds) => fds.first().copied(),
                _ => None,
            })
            .expect("a descriptor over the console socket");
        // SAFETY: a descriptor just received, owned by nobody else.
        unsafe { OwnedFd::from_raw_fd(fd) }
    });
    let pid_file = dir.path().join("t1.pid");
    rt.ok(&[
        "create",
        "--bundle",
        dir.path().to_str().unwrap(),
        "--console-socket",
        socket_path.to_str().unwrap(),
        "--pid-file",
        pid_file.to_str().unwrap(),
        "t1",
    ]);
    let master = receiver.join().unwrap();
    assert_eq!(stockade::Terminal::size_of(&master).unwrap(), (30, 100), "consoleSize");
    let pid: i32 = std::fs::read_to_string(&pid_file).unwrap().trim().parse().unwrap();
    rt.ok(&["start", "t1"]);
    let mut master = std::fs::File::from(master);
    let mut seen = String::new();
    let mut buf = [0u8; 256];
    // Until the terminal hangs up (EIO) once the process has exited.
    while let Ok(n @ 1..) = master.read(&mut buf) {
        seen.push_str(&String::from_utf8_lossy(&buf[..n]));
    }
    assert!(seen.contains("on-a-terminal"), "{seen:?}");
    assert_eq!(reap(pid), 0);
    rt.ok(&["delete", "t1"]);
}

/// Waits until a daemon serves at `socket` (its client's `version` reaches it), for up to two
/// minutes (a slow guest).
fn wait_serving(what: &str, socket: &Path, answers: impl Fn() -> bool, log: impl Fn() -> String) {
    let deadline = Instant::now() + Duration::from_secs(120);
    while !(socket.exists() && answers()) {
        assert!(Instant::now() < deadline, "{what} did not come up: {}", log());
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// A containerd of the test's own (its root, state and socket in a temporary directory),
/// killed when dropped.
struct Containerd {
    dir: common::TempDir,
    process: std::process::Child,
}

impl Containerd {
    fn start() -> Containerd {
        let dir = common::tempdir();
        let socket = dir.path().join("containerd.sock");
        let config = format!(
            "version = 2\nroot = \"{0}/root\"\nstate = \"{0}/state\"\n\
             disabled_plugins = [\"io.containerd.grpc.v1.cri\"]\n[grpc]\n  address = \"{1}\"\n",
            dir.path().display(),
            socket.display()
        );
        std::fs::write(dir.path().join("config.toml"), config).unwrap();
        let log = std::fs::File::create(dir.path().join("containerd.log")).unwrap();
        let process = Command::new("containerd")
            .arg("--config")
            .arg(dir.path().join("config.toml"))
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .expect("start containerd");
        let containerd = Containerd { dir, process };
        wait_serving(
            "containerd",
            &socket,
            || containerd.ctr(&["version"]).status.success(),
            || containerd.log(),
        );
        containerd
    }

    fn ctr(&self, args: &[&str]) -> Output {
        Command::new("ctr")
            .arg("--address")
            .arg(self.dir.path().join("containerd.sock"))
            .args(args)
            .stdin(Stdio::null())
            .output()
            .expect("run ctr")
    }

    fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("containerd.log")).unwrap_or_default()
    }

    /// `ctr run --runc-binary <ours> --rm IMAGE ID ARGS...` with `options` before the image.
    fn run(&self, options: &[&str], id: &str, args: &[&str]) -> Output {
        let rt = runtime();
        let mut all = vec!["run", "--runc-binary", rt.to_str().unwrap(), "--rm"];
        all.extend(options);
        all.extend([IMAGE, id]);
        all.extend(args);
        self.ctr(&all)
    }
}

impl Drop for Containerd {
    fn drop(&mut self) {
        let _ = self.process.kill();
        let _ = self.process.wait();
        // Its snapshots are overlay mounts under its root: gone with their tasks, but make sure.
        let root = self.dir.path().join("root");
        let mounts = std::fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
        for line in mounts.lines().rev() {
            if let Some(point) = line.split(' ').nth(4).filter(|p| Path::new(p).starts_with(&root)) {
                let _ = Command::new("umount").args(["-l", point]).status();
            }
        }
    }
}

const IMAGE: &str = "stockade.test/busybox:1";

/// A Docker-archive image of busybox (built here: no registry), for `ctr images import`.
fn busybox_image() -> Vec<u8> {
    let mut layer = oci::LayerBuilder::new();
    for d in ["bin", "etc", "tmp", "home/app"] {
        layer.dir(d);
    }
    layer.file_mode("bin/busybox", std::fs::read(common::busybox()).unwrap(), 0o755);
    for applet in [
        "sh", "id", "echo", "cat", "sleep", "touch", "head", "tr", "env", "pwd", "grep", "test", "ls",
        "unshare",
    ] {
        layer.symlink(format!("bin/{applet}"), "busybox");
    }
    layer.file("etc/passwd", "root:x:0:0:root:/root:/bin/sh\napp:x:1000:1000::/home/app:/bin/sh\n");
    layer.file("etc/group", "root:x:0:\napp:x:1000:\n");
    let layer = layer.tar();
    let config = json!({
        "architecture": "amd64", "os": "linux",
        "config": {"Env": ["PATH=/bin"], "Cmd": ["sh"]},
        "rootfs": {"type": "layers", "diff_ids": [format!("sha256:{}", oci::sha256_hex(&layer))]}
    })
    .to_string();
    let config_name = format!("{}.json", oci::sha256_hex(config.as_bytes()));
    let manifest = json!([{"Config": config_name, "RepoTags": [IMAGE], "Layers": ["layer.tar"]}]).to_string();
    let mut archive = oci::LayerBuilder::new();
    archive.file("layer.tar", layer).file(&config_name, config).file("manifest.json", manifest);
    archive.tar()
}

#[test]
fn containerd_runs_containers_with_the_stockade_runtime() {
    let test = "containerd_runs_containers_with_the_stockade_runtime";
    if !root_only(test) || !installed(test, &["/usr/bin/containerd", "/usr/bin/ctr"], "containerd") {
        return;
    }
    let _serial = common::serial();
    let containerd = Containerd::start();
    let archive = containerd.dir.path().join("busybox.tar");
    std::fs::write(&archive, busybox_image()).unwrap();
    let out = containerd.ctr(&["images", "import", archive.to_str().unwrap()]);
    assert!(out.status.success(), "import: {}", text(&out));

    // Output and exit code.
    // (pid 1 is stockade's init: the runtime that ran is ours, not runc.)
    let out =
        containerd.run(&[], "run1", &["sh", "-c", "echo hello from $(id -u) $(cat /proc/1/comm); exit 7"]);
    assert_eq!(out.status.code(), Some(7), "{}\n{}", text(&out), containerd.log());
    assert_eq!(String::from_utf8_lossy(&out.stdout), "hello from 0 stockade-init\n");

    // Environment and working directory.
    let out = containerd.run(
        &["--env", "GREETING=hi", "--cwd", "/tmp"],
        "run2",
        &["sh", "-c", "echo $GREETING $(pwd)"],
    );
    assert!(out.status.success(), "{}", text(&out));
    assert_eq!(String::from_utf8_lossy(&out.stdout), "hi /tmp\n");

    // A read-only root.
    let out = containerd.run(&["--read-only"], "run3", &["sh", "-c", "touch /x || echo refused"]);
    assert!(out.status.success(), "{}", text(&out));
    assert_eq!(String::from_utf8_lossy(&out.stdout), "refused\n");

    // A memory limit that holds: 100 MiB in a shell variable against 32 MiB.
    let out = containerd.run(
        &["--memory-limit", "33554432"],
        "run4",
        &["sh", "-c", "x=$(head -c 100000000 /dev/zero | tr '\\0' a); echo survived ${#x}"],
    );
    assert!(!String::from_utf8_lossy(&out.stdout).contains("survived"), "{}", text(&out));
    assert_eq!(out.status.code(), Some(137), "killed by the OOM killer: {}", text(&out));

    // A user other than root and a pids limit, through a spec of the test's own (ctr 1.6 has
    // no flags for them): 8 background sleeps against pids.max 5, counted without forking.
    // (A shell whose fork fails exits: the inner one does, the outer one counts.)
    let script = "id -u; id -g; sh -c 'for i in 1 2 3 4 5 6 7 8; do sleep 30 & done' 2>/dev/null; \
                  set -- /proc/[0-9]*; echo $#";
    let spec_dir = common::tempdir();
    let out = Command::new(runtime()).args(["spec", "--bundle"]).arg(spec_dir.path()).output().unwrap();
    assert!(out.status.success(), "{}", text(&out));
    let mut spec: Value =
        serde_json::from_slice(&std::fs::read(spec_dir.path().join("config.json")).unwrap()).unwrap();
    spec["process"]["args"] = json!(["sh", "-c", script]);
    spec["process"]["user"] = json!({"uid": 1000, "gid": 1000});
    spec["process"]["terminal"] = json!(false);
    // With a spec file ctr takes no image: the root is the test's busybox tree.
    let rootfs = bundle_dir();
    spec["root"] = json!({"path": rootfs.path().join("rootfs"), "readonly": false});
    spec["linux"]["resources"]["pids"] = json!({"limit": 5});
    let spec_path = spec_dir.path().join("spec.json");
    std::fs::write(&spec_path, spec.to_string()).unwrap();
    let config = spec_path.to_str().unwrap();
    let out = containerd.ctr(&["run", "--runc-binary", rt_path(), "--rm", "--config", config, "run5"]);
    assert!(out.status.success(), "{}\n{}", text(&out), containerd.log());
    let lines: Vec<String> = String::from_utf8_lossy(&out.stdout).lines().map(str::to_owned).collect();
    assert_eq!(lines[..2], ["1000", "1000"], "{}", text(&out));
    let alive: usize = lines[2].parse().unwrap();
    assert!(alive <= 5, "pids.max 5 held: {alive} processes (init, sh and 8 sleeps without it)");

    // --tty: ctr attaches its own terminal (a pseudo-terminal here) to the container's.
    let (mut master, slave) = common::open_pty();
    let mut ctr = Command::new("ctr")
        .arg("--address")
        .arg(containerd.dir.path().join("containerd.sock"))
        .args(["run", "--runc-binary", rt_path(), "--rm", "-t", IMAGE, "run6", "sh", "-c"])
        .arg("test -t 0 && test -t 1 && echo on-a-tty")
        .stdin(slave.try_clone().unwrap())
        .stdout(slave.try_clone().unwrap())
        .stderr(slave)
        .spawn()
        .unwrap();
    // Read until ctr has exited and closed its end: EIO then (no slave left open).
    let mut seen = Vec::new();
    let _ = master.read_to_end(&mut seen);
    let status = ctr.wait().unwrap();
    let seen = String::from_utf8_lossy(&seen);
    assert!(status.success() && seen.contains("on-a-tty"), "{status}: {seen:?}\n{}", containerd.log());

    // A detached task: listed, its processes listed, SIGTERM forwarded to a process that
    // handles it, then deleted.
    let rt = runtime();
    let out = containerd.ctr(&[
        "run",
        "--runc-binary",
        rt.to_str().unwrap(),
        "-d",
        IMAGE,
        "task1",
        "sh",
        "-c",
        "trap 'echo got TERM > /tmp/term; exit 42' TERM; while true; do sleep 0.1; done",
    ]);
    assert!(out.status.success(), "{}\n{}", text(&out), containerd.log());
    let ps = containerd.ctr(&["task", "ps", "task1"]);
    assert!(ps.status.success(), "{}", text(&ps));
    let pids = String::from_utf8_lossy(&ps.stdout).lines().skip(1).count();
    assert!(pids >= 2, "init and sh at least: {}", text(&ps));
    // A process exec'd into it: its output and exit code, inside the container's pid namespace.
    let exec = containerd.ctr(&[
        "task",
        "exec",
        "--exec-id",
        "e1",
        "task1",
        "sh",
        "-c",
        "echo exec sees $(ls /proc | grep -c '^[0-9]')' processes'; exit 4",
    ]);
    assert_eq!(exec.status.code(), Some(4), "{}\n{}", text(&exec), containerd.log());
    let seen = String::from_utf8_lossy(&exec.stdout).into_owned();
    assert!(seen.starts_with("exec sees ") && !seen.contains("sees 1 "), "{seen}");
    let kill = containerd.ctr(&["task", "kill", "task1"]);
    assert!(kill.status.success(), "{}", text(&kill));
    // Stopped once the task's status says so (containerd reports the exit it reaped).
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let list = containerd.ctr(&["task", "ls"]);
        let line =
            String::from_utf8_lossy(&list.stdout).lines().find(|l| l.starts_with("task1")).map(str::to_owned);
        if line.as_deref().is_some_and(|l| l.contains("STOPPED")) {
            break;
        }
        assert!(Instant::now() < deadline, "task1 never stopped: {line:?}");
        std::thread::sleep(Duration::from_millis(50));
    }
    let delete = containerd.ctr(&["task", "delete", "task1"]);
    assert!(delete.status.success(), "{}", text(&delete));
    assert!(text(&delete).contains("exit code 42"), "the exit status of the trap: {}", text(&delete));
    let out = containerd.ctr(&["containers", "delete", "task1"]);
    assert!(out.status.success(), "{}", text(&out));
}

/// A dockerd of the test's own (data, exec root, socket in a temporary directory; networking
/// off), with stockade-runtime added as the runtime "stockade"; killed when dropped.
struct Dockerd {
    dir: common::TempDir,
    process: std::process::Child,
}

impl Dockerd {
    fn start() -> Dockerd {
        let dir = common::tempdir();
        let socket = dir.path().join("docker.sock");
        let log = std::fs::File::create(dir.path().join("dockerd.log")).unwrap();
        let process = Command::new("/usr/sbin/dockerd")
            .arg("--data-root")
            .arg(dir.path().join("data"))
            .arg("--exec-root")
            .arg(dir.path().join("exec"))
            .arg("--pidfile")
            .arg(dir.path().join("dockerd.pid"))
            .arg("-H")
            .arg(format!("unix://{}", socket.display()))
            .args(["--bridge=none", "--iptables=false", "--ip6tables=false"])
            .arg("--add-runtime")
            .arg(format!("stockade={}", runtime().display()))
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .expect("start dockerd");
        let dockerd = Dockerd { dir, process };
        wait_serving("dockerd", &socket, || dockerd.docker(&["version"]).status.success(), || dockerd.log());
        dockerd
    }

    fn docker(&self, args: &[&str]) -> Output {
        Command::new("/usr/bin/docker")
            .arg("-H")
            .arg(format!("unix://{}", self.dir.path().join("docker.sock").display()))
            .args(args)
            .stdin(Stdio::null())
            .output()
            .expect("run docker")
    }

    fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("dockerd.log")).unwrap_or_default()
    }

    /// `docker run --runtime stockade --network none --rm OPTIONS IMAGE ARGS...`.
    fn run(&self, options: &[&str], args: &[&str]) -> Output {
        let mut all = vec!["run", "--runtime", "stockade", "--network", "none", "--rm"];
        all.extend(options);
        all.push(IMAGE);
        all.extend(args);
        self.docker(&all)
    }
}

impl Drop for Dockerd {
    fn drop(&mut self) {
        // SIGTERM: dockerd stops its containerd (and with it the shims) on the way out.
        let _ = nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(self.process.id() as i32),
            nix::sys::signal::Signal::SIGTERM,
        );
        let _ = self.process.wait();
        let root = self.dir.path().to_owned();
        let mounts = std::fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
        for line in mounts.lines().rev() {
            if let Some(point) = line.split(' ').nth(4).filter(|p| Path::new(p).starts_with(&root)) {
                let _ = Command::new("umount").args(["-l", point]).status();
            }
        }
    }
}

fn stdout(out: &Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[test]
fn docker_runs_containers_with_the_stockade_runtime() {
    let test = "docker_runs_containers_with_the_stockade_runtime";
    if !root_only(test) || !installed(test, &["/usr/sbin/dockerd", "/usr/bin/docker"], "docker.io") {
        return;
    }
    let _serial = common::serial();
    let dockerd = Dockerd::start();
    let archive = dockerd.dir.path().join("busybox.tar");
    std::fs::write(&archive, busybox_image()).unwrap();
    let out = dockerd.docker(&["load", "-i", archive.to_str().unwrap()]);
    assert!(out.status.success(), "load: {}", text(&out));

    // Output and exit code; Docker's sysctls (unprivileged ports, ping) arrive.
    let out = dockerd
        .run(&[], &["sh", "-c", "echo hello; cat /proc/sys/net/ipv4/ip_unprivileged_port_start; exit 5"]);
    assert_eq!(out.status.code(), Some(5), "{}\n{}", text(&out), dockerd.log());
    assert_eq!(stdout(&out), "hello\n0\n");

    // -e, -w, --user.
    let out = dockerd.run(
        &["-e", "FOO=bar", "-w", "/tmp", "--user", "1000:1000"],
        &["sh", "-c", "echo $FOO $(pwd) $(id -u):$(id -g)"],
    );
    assert!(out.status.success(), "{}", text(&out));
    assert_eq!(stdout(&out), "bar /tmp 1000:1000\n");

    // --read-only.
    let out = dockerd.run(&["--read-only"], &["sh", "-c", "touch /x || echo refused"]);
    assert_eq!(stdout(&out), "refused\n", "{}", text(&out));

    // --cap-drop ALL: no capability in any set.
    let out = dockerd.run(&["--cap-drop", "ALL"], &["grep", "-E", "^Cap(Prm|Eff|Bnd)", "/proc/self/status"]);
    assert!(out.status.success(), "{}", text(&out));
    for line in stdout(&out).lines() {
        assert!(line.ends_with("0000000000000000"), "{line}");
    }

    // --pids-limit and --memory hold.
    let out = dockerd.run(
        &["--pids-limit", "8"],
        &["sh", "-c", "for i in 1 2 3 4 5 6 7 8 9 10; do sleep 10 & done; echo forked"],
    );
    assert!(text(&out).contains("can't fork"), "{}", text(&out));
    let out = dockerd.run(
        &["--memory", "32m"],
        &["sh", "-c", "x=$(head -c 100000000 /dev/zero | tr '\\0' a); echo survived"],
    );
    assert_eq!(out.status.code(), Some(137), "killed by the OOM killer: {}", text(&out));

    // Docker's default seccomp profile is enforced: it refuses unshare (which the kernel would
    // allow root here for a user namespace); unconfined, the same call works.
    let out = dockerd.run(&[], &["sh", "-c", "unshare -U true && echo allowed || echo refused"]);
    assert_eq!(stdout(&out), "refused\n", "{}", text(&out));
    let user_namespaces =
        std::fs::read_to_string("/proc/sys/user/max_user_namespaces").is_ok_and(|v| v.trim() != "0");
    if user_namespaces {
        let out = dockerd.run(
            &["--security-opt", "seccomp=unconfined"],
            &["sh", "-c", "unshare -U true && echo allowed || echo refused"],
        );
        assert_eq!(stdout(&out), "allowed\n", "{}", text(&out));
    } else {
        common::skip(
            "docker_runs_containers_with_the_stockade_runtime (its unconfined unshare)",
            "user.max_user_namespaces is 0: the kernel refuses unshare -U whatever the filter",
        );
    }

    // -t: a terminal.
    let out = dockerd.run(&["-t"], &["sh", "-c", "test -t 0 && test -t 1 && echo on-a-tty"]);
    assert!(stdout(&out).contains("on-a-tty"), "{}", text(&out));

    // docker exec into a running container, then docker stop: SIGTERM first (the trap sees
    // it and stays), SIGKILL after the grace period.
    let out = dockerd.docker(&[
        "run",
        "-d",
        "--runtime",
        "stockade",
        "--network",
        "none",
        "--name",
        "stopme",
        IMAGE,
        "sh",
        "-c",
        "trap 'echo got TERM' TERM; while true; do sleep 0.1; done",
    ]);
    assert!(out.status.success(), "{}\n{}", text(&out), dockerd.log());
    let out = dockerd.docker(&[
        "exec",
        "-u",
        "1000",
        "-e",
        "X=y",
        "stopme",
        "sh",
        "-c",
        "echo $(id -u) $X; exit 3",
    ]);
    assert_eq!(out.status.code(), Some(3), "{}", text(&out));
    assert_eq!(stdout(&out), "1000 y\n");
    // docker pause / unpause.
    for (command, paused) in [("pause", "true"), ("unpause", "false")] {
        let out = dockerd.docker(&[command, "stopme"]);
        assert!(out.status.success(), "{command}: {}", text(&out));
        let out = dockerd.docker(&["inspect", "-f", "{{.State.Paused}}", "stopme"]);
        assert_eq!(stdout(&out).trim(), paused, "{}", text(&out));
    }
    // docker update: through containerd's shim, `update --resources -`.
    let out = dockerd.docker(&["update", "--pids-limit", "30", "--cpu-quota", "50000", "stopme"]);
    assert!(out.status.success(), "update: {}\n{}", text(&out), dockerd.log());
    let out = dockerd.docker(&["inspect", "-f", "{{.State.Pid}}", "stopme"]);
    let pid: i32 = stdout(&out).trim().parse().unwrap();
    let dirs: Vec<PathBuf> = cgroup_dirs_under(pid, "docker")
        .into_iter()
        .map(|d| if d.ends_with("payload") { d.parent().unwrap().to_owned() } else { d })
        .collect();
    assert_eq!(cgroup_value(&dirs, "pids", "pids.max", "pids.max"), "30");
    let quota = cgroup_value(&dirs, "cpu", "cpu.cfs_quota_us", "cpu.max");
    assert!(quota == "50000" || quota.starts_with("50000 "), "{quota}");
    let out = dockerd.docker(&["stop", "-t", "1", "stopme"]);
    assert!(out.status.success(), "{}", text(&out));
    let out = dockerd.docker(&["inspect", "-f", "{{.State.ExitCode}}", "stopme"]);
    assert_eq!(stdout(&out).trim(), "137", "killed after the grace period: {}", text(&out));
    let logs = dockerd.docker(&["logs", "stopme"]);
    assert!(stdout(&logs).contains("got TERM"), "SIGTERM first: {}", text(&logs));
    let out = dockerd.docker(&["rm", "stopme"]);
    assert!(out.status.success(), "{}", text(&out));
}

#[test]
fn hooks_run_in_order_with_the_state_on_stdin_and_a_failing_one_stops_create() {
    if !root_only("hooks_run_in_order_with_the_state_on_stdin_and_a_failing_one_stops_create") {
        return;
    }
    let _serial = common::serial();
    become_subreaper();
    let rt = Runtime::new();
    let (dir, out, mut cfg) = script_bundle("exit 0");
    // The same file, as the host sees it and as the container does (/out).
    let record = out.path().join("hooks.log");
    // Each hook appends its name, whether $GREETING came, the hostname where it runs, and the
    // state.
    let hook = |name: &str, record: &Path| {
        json!({
            "path": "/bin/sh",
            "args": ["sh", "-c", "state=$(cat); echo \"$0 $GREETING $(hostname) $state\" >> \"$1\"", name, record],
            "env": ["GREETING=hi"],
            "timeout": 30
        })
    };
    cfg["hooks"] = json!({
        "prestart": [hook("prestart", &record)],
        "createRuntime": [hook("createRuntime", &record)],
        "startContainer": [hook("startContainer", Path::new("/out/hooks.log"))],
        "poststart": [hook("poststart", &record)],
        "poststop": [hook("poststop", &record)]
    });
    std::fs::write(dir.path().join("config.json"), cfg.to_string()).unwrap();
    let pid = rt.create("h1", dir.path(), &out.path().join("log"));
    rt.ok(&["start", "h1"]);
    assert_eq!(reap(pid), 0);
    rt.ok(&["delete", "h1"]);
    let log = std::fs::read_to_string(&record).unwrap();
    let lines: Vec<&str> = log.lines().collect();
    let names: Vec<&str> = lines.iter().map(|l| l.split(' ').next().unwrap()).collect();
    assert_eq!(names, ["prestart", "createRuntime", "startContainer", "poststart", "poststop"], "{log}");
    let host = nix::unistd::gethostname().unwrap().into_string().unwrap();
    let expected = [
        ("creating", &host),
        ("creating", &host),
        ("created", &"runc".to_string()),
        ("running", &host),
        ("stopped", &host),
    ];
    for (line, (status, hostname)) in lines.iter().zip(expected) {
        let state: Value = serde_json::from_str(line.splitn(4, ' ').nth(3).unwrap()).unwrap();
        assert_eq!(line.split(' ').nth(1), Some("hi"), "the hook's env: {line}");
        assert_eq!(line.split(' ').nth(2), Some(hostname.as_str()), "where the hook ran: {line}");
        assert_eq!(state["id"], "h1", "{line}");
        assert_eq!(state["status"], status, "{line}");
        assert_eq!(state["pid"], pid, "{line}");
    }

    // A failing startContainer hook: start fails naming it, and the container is stopped.
    cfg["hooks"] =
        json!({"startContainer": [{"path": "/bin/sh", "args": ["sh", "-c", "echo no >&2; exit 4"]}]});
    std::fs::write(dir.path().join("config.json"), cfg.to_string()).unwrap();
    let pid = rt.create("h3", dir.path(), &out.path().join("log"));
    let err = rt.fails(&["start", "h3"]);
    assert!(
        err.contains("hooks.startContainer[0]") && err.contains("exit status: 4") && err.contains("no"),
        "{err}"
    );
    assert_eq!(reap(pid), 128 + libc::SIGKILL);
    assert_eq!(rt.state("h3")["status"], "stopped");
    rt.ok(&["delete", "h3"]);
    // startContainer where it cannot run (no pid namespace of the container's): refused at create.
    let mut no_pid = cfg.clone();
    no_pid["hooks"] = json!({"startContainer": [{"path": "/bin/true"}]});
    no_pid["linux"]["namespaces"].as_array_mut().unwrap().retain(|n| n["type"] != "pid");
    no_pid["mounts"].as_array_mut().unwrap().retain(|m| m["type"] != "proc");
    std::fs::write(dir.path().join("config.json"), no_pid.to_string()).unwrap();
    let err = rt.fails(&["create", "--bundle", dir.path().to_str().unwrap(), "h5"]);
    assert!(err.contains("hooks.startContainer[0]") && err.contains("pid namespace"), "{err}");
    assert!(!rt.root.path().join("h5").exists(), "state left behind");
    // createContainer is refused by name (see runtime/hooks.rs), with nothing left behind.
    cfg["hooks"] = json!({"createContainer": [{"path": "/bin/true"}]});
    std::fs::write(dir.path().join("config.json"), cfg.to_string()).unwrap();
    let err = rt.fails(&["create", "--bundle", dir.path().to_str().unwrap(), "h4"]);
    assert!(err.contains("hooks.createContainer"), "{err}");
    assert!(!rt.root.path().join("h4").exists(), "state left behind");

    // A failing prestart hook, and one that outlives its timeout: create fails naming it, and
    // leaves nothing behind.
    let children = common::own_children();
    let cases = [
        ("/bin/sh", "exit 3", "exit status: 3"),
        ("/bin/sh", "exec sleep 1000", "timed out"),
        ("sh", "exit 0", "must be absolute"),
    ];
    for (path, script, expect) in cases {
        let timeout = if script.contains("sleep") { 1 } else { 30 };
        cfg["hooks"] =
            json!({"prestart": [{"path": path, "args": ["sh", "-c", script], "timeout": timeout}]});
        std::fs::write(dir.path().join("config.json"), cfg.to_string()).unwrap();
        let err = rt.fails(&["create", "--bundle", dir.path().to_str().unwrap(), "h2"]);
        assert!(err.contains("hooks.prestart[0]") && err.contains(expect), "{err}");
        assert!(!rt.root.path().join("h2").exists(), "state left behind");
        assert_eq!(common::own_children(), children, "a process left behind");
    }
}

#[test]
fn a_created_container_killed_before_start_is_stopped_and_start_says_so() {
    if !root_only("a_created_container_killed_before_start_is_stopped_and_start_says_so") {
        return;
    }
    let _serial = common::serial();
    become_subreaper();
    let rt = Runtime::new();
    let (dir, out, _) = script_bundle("echo ran > /out/mark");
    let pid = rt.create("k1", dir.path(), &out.path().join("log"));
    rt.ok(&["kill", "k1", "TERM"]);
    assert_eq!(reap(pid), 128 + libc::SIGTERM, "the signal ended it at its gate");
    assert_eq!(rt.state("k1")["status"], "stopped");
    let err = rt.fails(&["start", "k1"]);
    assert!(err.contains("stopped"), "{err}");
    assert!(!out.path().join("mark").exists(), "the process ran");
    rt.ok(&["delete", "k1"]);
}

#[test]
fn a_runtime_killed_during_create_leaves_no_container_running() {
    if !root_only("a_runtime_killed_during_create_leaves_no_container_running") {
        return;
    }
    let _serial = common::serial();
    become_subreaper();
    let rt = Runtime::new();
    let dir = bundle_dir();
    let mut cfg = config(&["sh", "-c", "echo never"]);
    cfg["process"]["terminal"] = json!(true);
    std::fs::write(dir.path().join("config.json"), cfg.to_string()).unwrap();
    // A console socket whose backlog is full: create blocks sending the terminal, after the
    // container is set up and before it is let go.
    let socket = dir.path().join("console.sock");
    let listener = nix::sys::socket::socket(
        nix::sys::socket::AddressFamily::Unix,
        nix::sys::socket::SockType::Stream,
        nix::sys::socket::SockFlag::SOCK_CLOEXEC,
        None,
    )
    .unwrap();
    let address = nix::sys::socket::UnixAddr::new(&socket).unwrap();
    nix::sys::socket::bind(listener.as_raw_fd(), &address).unwrap();
    nix::sys::socket::listen(&listener, nix::sys::socket::Backlog::new(0).unwrap()).unwrap();
    let _filler = std::os::unix::net::UnixStream::connect(&socket).unwrap();
    let children = common::own_children();
    let errors = dir.path().join("create.err");
    let mut create = rt
        .command(&[
            "create",
            "--bundle",
            dir.path().to_str().unwrap(),
            "--console-socket",
            socket.to_str().unwrap(),
            "k2",
        ])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&errors).unwrap())
        .spawn()
        .unwrap();
    // Until it blocks sending the terminal (or fails before, saying why).
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        if let Some(status) = create.try_wait().unwrap() {
            panic!("create ended ({status}) before blocking: {}", std::fs::read_to_string(&errors).unwrap());
        }
        let wchan = std::fs::read_to_string(format!("/proc/{}/wchan", create.id())).unwrap_or_default();
        if wchan.contains("unix_wait_for_peer") {
            break;
        }
        assert!(Instant::now() < deadline, "create never blocked on the console socket ({wchan})");
        std::thread::sleep(Duration::from_millis(10));
    }
    let init = common::children_of(create.id() as i32);
    assert_eq!(init.len(), 1, "the container's init, set up: {init:?}");
    create.kill().unwrap();
    create.wait().unwrap();
    // Reparented here, it ends by itself: nobody let it go (126), or its terminal hung up with
    // the runtime's end of it (SIGHUP), whichever comes first.
    let code = reap(init[0]);
    assert!(
        code == 126 || code == 128 + libc::SIGHUP,
        "the init's exit when abandoned before its start: {code}"
    );
    assert_eq!(common::own_children(), children);
    rt.ok(&["delete", "--force", "k2"]);
    assert!(!rt.root.path().join("k2").exists());
    for hierarchy in std::fs::read_dir("/sys/fs/cgroup").unwrap().flatten() {
        let left = hierarchy.path().join("stockade-runtime/k2");
        assert!(!left.exists(), "cgroup {} left behind", left.display());
    }
}

#[test]
fn pause_freezes_the_container_and_resume_thaws_it() {
    if !root_only("pause_freezes_the_container_and_resume_thaws_it") {
        return;
    }
    let _serial = common::serial();
    become_subreaper();
    let rt = Runtime::new();
    let (dir, out, _) = script_bundle("exec sleep 1000");
    let pid = rt.create("p1", dir.path(), &out.path().join("log"));
    let err = rt.fails(&["pause", "p1"]);
    assert!(err.contains("created"), "a created container is not paused: {err}");
    rt.ok(&["start", "p1"]);
    let err = rt.fails(&["resume", "p1"]);
    assert!(err.contains("running"), "{err}");
    rt.ok(&["pause", "p1"]);
    // The status is the kernel's: the container's cgroup says frozen.
    assert_eq!(rt.state("p1")["status"], "paused");
    let pids: Vec<i32> = serde_json::from_str(&rt.ok(&["ps", "--format", "json", "p1"])).unwrap();
    assert_eq!(pids.len(), 2, "init and sleep: {pids:?}");
    let err = rt.fails(&["exec", "p1", "sh", "-c", "true"]);
    assert!(err.contains("not running"), "{err}");
    rt.ok(&["resume", "p1"]);
    assert_eq!(rt.state("p1")["status"], "running");
    rt.ok(&["pause", "p1"]);
    // A paused container is deleted (with --force): thawed to die.
    let err = rt.fails(&["delete", "p1"]);
    assert!(err.contains("paused"), "{err}");
    rt.ok(&["delete", "--force", "p1"]);
    assert_eq!(reap(pid), 128 + libc::SIGKILL);
    for p in pids {
        assert!(!Path::new(&format!("/proc/{p}")).exists() || p == pid, "process {p} survived");
    }
}

#[test]
fn a_container_joins_a_pods_namespaces_by_path_and_its_end_leaves_the_pod_running() {
    if !root_only("a_container_joins_a_pods_namespaces_by_path") {
        return;
    }
    let _serial = common::serial();
    become_subreaper();
    let rt = Runtime::new();
    // The pod's sandbox container, as containerd's CRI makes it: created, holding the namespaces.
    let (pause_dir, pause_out, mut pause_cfg) = script_bundle("exec sleep 1000.4244");
    pause_cfg["hostname"] = json!("pod");
    std::fs::write(pause_dir.path().join("config.json"), serde_json::to_vec(&pause_cfg).unwrap()).unwrap();
    let pause = rt.create("pause", pause_dir.path(), &pause_out.path().join("log"));
    rt.ok(&["start", "pause"]);

    let (dir, out, mut cfg) = script_bundle(
        "for n in net ipc uts pid; do readlink /proc/self/ns/$n; done > /out/ns; hostname >> /out/ns; \
         ls -d /proc/[0-9]* > /out/procs.part; mv /out/procs.part /out/procs; exec sleep 1000",
    );
    let mut namespaces = vec![json!({"type": "mount"})];
    for (kind, file) in [("network", "net"), ("ipc", "ipc"), ("uts", "uts"), ("pid", "pid")] {
        namespaces.push(json!({"type": kind, "path": format!("/proc/{pause}/ns/{file}")}));
    }
    cfg["linux"]["namespaces"] = Value::Array(namespaces);
    cfg["hostname"] = json!("pod");
    std::fs::write(dir.path().join("config.json"), serde_json::to_vec(&cfg).unwrap()).unwrap();
    let app = rt.create("app", dir.path(), &out.path().join("log"));
    rt.ok(&["start", "app"]);
    let deadline = Instant::now() + Duration::from_secs(30);
    // Renamed into place once written: its existence means it is whole.
    while !out.path().join("procs").exists() {
        assert!(
            Instant::now() < deadline,
            "the container never ran: {:?}",
            std::fs::read_to_string(out.path().join("log"))
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    let seen = std::fs::read_to_string(out.path().join("ns")).unwrap();
    let expected: Vec<String> =
        ["net", "ipc", "uts", "pid"].iter().map(|n| common::ns_inode(&pause.to_string(), n)).collect();
    assert_eq!(seen.lines().take(4).collect::<Vec<_>>(), expected, "{seen}");
    assert_eq!(seen.lines().nth(4), Some("pod"));
    let procs = std::fs::read_to_string(out.path().join("procs")).unwrap();
    // The pod's process, by its pid in the pod's namespace (the last NSpid field).
    let pause_processes: Vec<i32> =
        serde_json::from_str(&rt.ok(&["ps", "--format", "json", "pause"])).unwrap();
    let payload = pause_processes.iter().find(|&&p| p != pause).expect("the pod's process");
    let status = std::fs::read_to_string(format!("/proc/{payload}/status")).unwrap();
    let nspid =
        status.lines().find_map(|l| l.strip_prefix("NSpid:")).unwrap().split_whitespace().last().unwrap();
    assert!(
        procs.lines().any(|l| l == format!("/proc/{nspid}")),
        "the pod's process {nspid} is visible: {procs}"
    );

    // exec enters the same namespaces (joined ones included).
    let net = rt.ok(&["exec", "app", "readlink", "/proc/self/ns/net"]);
    assert_eq!(net.trim(), expected[0]);

    // Killing the container's init takes its processes along, though the pid namespace is
    // the pod's (its init is not pid 1 there).
    let processes: Vec<i32> = serde_json::from_str(&rt.ok(&["ps", "--format", "json", "app"])).unwrap();
    assert_eq!(processes.len(), 2, "the app's init and sleeper: {processes:?}");
    rt.ok(&["kill", "app", "KILL"]);
    assert_eq!(reap(app), 128 + libc::SIGKILL);
    for p in processes.into_iter().filter(|&p| p != app) {
        // Orphaned into the pod, reaped by the pod's init: gone once it has.
        assert!(common::wait_gone(p, Duration::from_secs(30)), "process {p} of the app survived its kill");
    }
    rt.ok(&["delete", "app"]);
    assert_eq!(rt.state("pause")["status"], "running", "the pod outlives its container");
    let left: Vec<i32> = serde_json::from_str(&rt.ok(&["ps", "--format", "json", "pause"])).unwrap();
    assert_eq!(left.len(), 2, "the pod's init and sleeper only, nothing of the app's: {left:?}");
    rt.ok(&["delete", "--force", "pause"]);
    assert_eq!(reap(pause), 128 + libc::SIGKILL);
}

/// The value of a cgroup file of the container: v2's `v2` in its group, or v1's `v1` in the
/// group of the hierarchy `controller`.
fn cgroup_value(dirs: &[PathBuf], controller: &str, v1: &str, v2: &str) -> String {
    let v2_dir = dirs.iter().find(|d| d.join("cgroup.controllers").exists());
    let path = match v2_dir.filter(|d| Path::new(&d.join(v2)).exists()) {
        Some(d) => d.join(v2),
        None => dirs
            .iter()
            .find(|d| d.iter().any(|c| c.to_str().is_some_and(|c| c.split(',').any(|c| c == controller))))
            .unwrap_or_else(|| panic!("no {controller} group among {dirs:?}"))
            .join(v1),
    };
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display())).trim().to_owned()
}

#[test]
fn update_changes_a_running_containers_limits_and_events_reports_them() {
    if !root_only("update_changes_a_running_containers_limits") {
        return;
    }
    let _serial = common::serial();
    become_subreaper();
    let rt = Runtime::new();
    let (dir, out, mut cfg) = script_bundle("echo > /out/ready; exec sleep 1000");
    cfg["linux"]["resources"]["memory"] = json!({"limit": 100 << 20});
    cfg["linux"]["resources"]["pids"] = json!({"limit": 50});
    std::fs::write(dir.path().join("config.json"), serde_json::to_vec(&cfg).unwrap()).unwrap();
    let pid = rt.create("up", dir.path(), &out.path().join("log"));
    // The limits are on the container's groups, the processes in a leaf below each.
    let dirs: Vec<PathBuf> = cgroup_dirs(pid)
        .into_iter()
        .map(|d| if d.ends_with("payload") { d.parent().unwrap().to_owned() } else { d })
        .collect();
    let memory = || cgroup_value(&dirs, "memory", "memory.limit_in_bytes", "memory.max");
    let pids = || cgroup_value(&dirs, "pids", "pids.max", "pids.max");
    assert_eq!((memory(), pids()), ((100u64 << 20).to_string(), "50".to_string()));

    rt.ok(&["start", "up"]);
    rt.ok(&["update", "--memory", "200m", "--pids-limit", "20", "up"]);
    assert_eq!((memory(), pids()), ((200u64 << 20).to_string(), "20".to_string()));

    // containerd's shim passes a LinuxResources object on stdin.
    let mut update = rt.command(&["update", "--resources", "-", "up"]).stdin(Stdio::piped()).spawn().unwrap();
    let resources = json!({"memory": {"limit": 150 << 20}, "cpu": {"quota": 50000, "period": 100000}});
    std::io::Write::write_all(&mut update.stdin.take().unwrap(), resources.to_string().as_bytes()).unwrap();
    assert!(update.wait().unwrap().success());
    assert_eq!(memory(), (150u64 << 20).to_string());
    let quota = cgroup_value(&dirs, "cpu", "cpu.cfs_quota_us", "cpu.max");
    assert!(quota == "50000" || quota == "50000 100000", "{quota}");

    let event: Value = serde_json::from_str(rt.ok(&["events", "--stats", "up"]).trim()).unwrap();
    assert_eq!(event["type"], "stats");
    assert_eq!(event["id"], "up");
    assert_eq!(event["data"]["memory"]["usage"]["limit"], 150u64 << 20, "{event}");
    assert_eq!(event["data"]["pids"]["limit"], 20, "{event}");
    assert!(event["data"]["pids"]["current"].as_u64().unwrap() >= 2, "init and sleeper: {event}");
    assert!(event["data"]["memory"]["usage"]["usage"].as_u64().unwrap() > 0, "{event}");

    // Refused, naming what, and nothing changed.
    let err = rt.fails(&["update", "--memory", "-1", "up"]);
    assert!(err.contains("memory.limit"), "{err}");
    let err = rt.fails(&["update", "--memory", "12q", "up"]);
    assert!(err.contains("--memory"), "{err}");
    let path = out.path().join("swappiness.json");
    std::fs::write(&path, json!({"memory": {"swappiness": 10}}).to_string()).unwrap();
    let err = rt.fails(&["update", "--resources", path.to_str().unwrap(), "up"]);
    assert!(err.contains("linux.resources.memory.swappiness"), "{err}");
    std::fs::write(&path, "[1]").unwrap();
    let err = rt.fails(&["update", "--resources", path.to_str().unwrap(), "--memory", "1g", "up"]);
    assert!(err.contains("not a JSON object"), "{err}");
    let err = rt.fails(&["update", "--cpu-period", "50000", "up"]);
    assert!(err.contains("cpu.period without cpu.quota"), "{err}");
    let err = rt.fails(&["events", "--interval", "5000000000000000000h5000000000000000000h", "up"]);
    assert!(err.contains("--interval"), "{err}");
    assert_eq!((memory(), pids()), ((150u64 << 20).to_string(), "20".to_string()));

    // Streaming events end when the container does.
    let mut events =
        rt.command(&["events", "--interval", "50ms", "up"]).stdout(Stdio::piped()).spawn().unwrap();
    let mut lines = common::buffered(events.stdout.take().unwrap());
    let first = common::read_until(&mut lines, |l| l.contains("\"stats\""));
    assert!(first.contains("\"up\""), "{first}");
    rt.ok(&["kill", "up", "KILL"]);
    assert_eq!(reap(pid), 128 + libc::SIGKILL);
    assert!(events.wait().unwrap().success());
    let err = rt.fails(&["update", "--memory", "300m", "up"]);
    assert!(err.contains("stopped"), "{err}");
    rt.ok(&["delete", "up"]);
}
