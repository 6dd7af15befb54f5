//! OCI bundles in (`stockade::oci`): a runtime spec's `config.json` runs as it says, every
//! field it cannot carry out is refused naming the field, and a bad bundle fails with an error
//! naming the value and leaves nothing behind. As root (a bundle like `runc spec` writes) and
//! as uid 65534 (like `runc spec --rootless`: a user namespace mapping the caller to root).

#[path = "common/bundle.rs"]
mod bundle;
mod common;

use std::path::Path;

use bundle::{bundle_dir, config};
use serde_json::{Value, json};
use stockade::oci::{Bundle, BundleError};

/// Writes `config` into `dir` and opens the bundle.
fn open(dir: &Path, config: &Value) -> Result<Bundle, BundleError> {
    std::fs::write(dir.join("config.json"), serde_json::to_vec_pretty(config).unwrap()).unwrap();
    Bundle::open(dir)
}

/// Runs the bundle's process and returns its stdout, asserting success.
fn run(dir: &Path, config: &Value) -> String {
    let bundle = open(dir, config).expect("open the bundle");
    let out = bundle.command().expect("the bundle's command").output().expect("spawn");
    assert!(
        out.status.success(),
        "{}\nstdout: {}\nstderr: {}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

/// The value of `key:` in /proc/<pid>/status text.
fn status_field<'a>(status: &'a str, key: &str) -> &'a str {
    status
        .lines()
        .find_map(|l| l.strip_prefix(key).and_then(|r| r.strip_prefix(':')))
        .unwrap_or_else(|| panic!("no {key} in {status}"))
        .trim()
}

#[test]
fn a_runc_spec_bundle_runs_with_the_ids_capabilities_limits_and_files_its_config_gives() {
    let _serial = common::serial();
    let dir = bundle_dir();
    let script = "id -u; id -g; id -G; hostname; umask; ulimit -n; cat /proc/self/oom_score_adj; \
        cat /proc/self/status; echo ==; \
        echo ok > /dev/null && echo null-writable; test -c /dev/pts/ptmx && echo pts; \
        readlink /dev/ptmx; readlink /dev/fd; [ -z \"$(head -c 1 /proc/kcore 2>/dev/null)\" ] && echo kcore-masked; \
        touch /rootfs-write 2>/dev/null || echo root-readonly; \
        echo 1 > /proc/sys/kernel/ns_last_pid 2>/dev/null || echo proc-sys-readonly; \
        touch /dev/shm/x && echo shm-writable; ls /sys/kernel >/dev/null && echo sysfs; \
        grep -q ':/$' /proc/self/cgroup && ls /sys/fs/cgroup | grep -q . && echo cgroupfs; \
        mkdir /sys/fs/cgroup/x 2>/dev/null || echo cgroupfs-readonly";
    let mut cfg = config(&["sh", "-c", script]);
    cfg["process"]["user"]["umask"] = json!(0o027);
    cfg["process"]["oomScoreAdj"] = json!(500);
    let out = run(dir.path(), &cfg);
    let (head, tail) = out.split_once("==\n").unwrap();
    let mut lines = head.lines();
    assert_eq!(lines.next(), Some("0"), "{out}");
    assert_eq!(lines.next(), Some("0"), "{out}");
    assert_eq!(lines.next(), Some("0"), "supplementary groups: exactly additionalGids (none)\n{out}");
    assert_eq!(lines.next(), Some("runc"));
    assert_eq!(lines.next(), Some("0027"));
    assert_eq!(lines.next(), Some("1024"));
    assert_eq!(lines.next(), Some("500"));
    // CAP_AUDIT_WRITE (29), CAP_KILL (5), CAP_NET_BIND_SERVICE (10); no inheritable set, so
    // no ambient one (the kernel refuses ambient capabilities that are not inheritable).
    let caps = format!("{:016x}", (1u64 << 29) | (1 << 5) | (1 << 10));
    for key in ["CapPrm", "CapEff", "CapBnd"] {
        assert_eq!(status_field(head, key), caps, "{key}");
    }
    assert_eq!(status_field(head, "CapInh"), "0000000000000000");
    assert_eq!(status_field(head, "CapAmb"), "0000000000000000");
    assert_eq!(status_field(head, "NoNewPrivs"), "1");
    let expected = "null-writable\npts\npts/ptmx\n/proc/self/fd\nkcore-masked\nroot-readonly\nproc-sys-readonly\nshm-writable\nsysfs\ncgroupfs\ncgroupfs-readonly\n";
    assert_eq!(tail, expected);
    // The bundle's root was not written to.
    assert!(!dir.path().join("rootfs/rootfs-write").exists());
}

#[test]
fn the_environment_is_exactly_the_configs_and_the_working_directory_is_created() {
    let _serial = common::serial();
    let dir = bundle_dir();
    let mut cfg = config(&["env"]);
    cfg["process"]["env"] = json!(["A=1", "B=two words", "EMPTY="]);
    cfg["process"]["cwd"] = json!("/work/here");
    cfg["root"]["readonly"] = json!(false);
    let out = run(dir.path(), &cfg);
    let mut vars: Vec<&str> = out.lines().collect();
    vars.sort();
    // HOME comes from the user's passwd entry when the spec has none, as runc sets it.
    assert_eq!(vars, ["A=1", "B=two words", "EMPTY=", "HOME=/root"]);
    assert!(dir.path().join("rootfs/work/here").is_dir(), "the working directory was not created");
    cfg["process"]["args"] = json!(["sh", "-c", "pwd"]);
    cfg["process"]["env"] = json!([]);
    assert_eq!(run(dir.path(), &cfg), "/work/here\n");
    // With a read-only root too (made before the root turns read-only, as runc makes it).
    cfg["root"]["readonly"] = json!(true);
    cfg["process"]["cwd"] = json!("/made/read-only");
    assert_eq!(run(dir.path(), &cfg), "/made/read-only\n");
}

#[test]
fn each_of_the_five_capability_sets_is_what_the_config_says() {
    let _serial = common::serial();
    let dir = bundle_dir();
    let mut cfg = config(&["cat", "/proc/self/status"]);
    // A user other than root: after exec its sets are its ambient set, and the rest as given.
    cfg["process"]["user"] = json!({"uid": 1000, "gid": 1000});
    if !common::is_root() {
        let (uid, gid) = (nix::unistd::geteuid().as_raw(), nix::unistd::getegid().as_raw());
        cfg["linux"]["uidMappings"] = json!([{"containerID": 1000, "hostID": uid, "size": 1}]);
        cfg["linux"]["gidMappings"] = json!([{"containerID": 1000, "hostID": gid, "size": 1}]);
        // gid 5 is not mapped here.
    }
    cfg["process"]["capabilities"] = json!({
        "bounding": ["CAP_CHOWN", "CAP_KILL", "CAP_NET_BIND_SERVICE"],
        "permitted": ["CAP_CHOWN", "CAP_KILL"],
        "effective": ["CAP_KILL"],
        "inheritable": ["CAP_CHOWN"],
        "ambient": ["CAP_CHOWN"],
    });
    let status = run(dir.path(), &cfg);
    assert_eq!(status_field(&status, "Uid").split_whitespace().next(), Some("1000"));
    assert_eq!(status_field(&status, "CapBnd"), format!("{:016x}", 1u64 | (1 << 5) | (1 << 10)));
    assert_eq!(status_field(&status, "CapInh"), "0000000000000001");
    assert_eq!(status_field(&status, "CapAmb"), "0000000000000001");
    assert_eq!(status_field(&status, "CapPrm"), "0000000000000001");
    assert_eq!(status_field(&status, "CapEff"), "0000000000000001");
    // Sets the kernel would refuse are refused at build, naming the set.
    cfg["process"]["capabilities"]["effective"] = json!(["CAP_NET_BIND_SERVICE"]);
    let err = open(dir.path(), &cfg).unwrap().command().unwrap_err();
    assert!(
        matches!(
            &err,
            BundleError::Sandbox(stockade::Error::InvalidValue { what: "effective capabilities", .. })
        ),
        "{err:?}"
    );
}

#[test]
fn a_device_node_made_inside_cannot_be_opened_and_listed_devices_arrive() {
    let _serial = common::serial();
    let dir = bundle_dir();
    let script = "mknod /dev/mem2 c 1 1 && echo made; head -c 1 /dev/mem2 >/dev/null 2>&1 || echo refused; \
        test -c /dev/kmsg && echo kmsg";
    let mut cfg = config(&["sh", "-c", script]);
    for set in ["bounding", "effective", "permitted"] {
        cfg["process"]["capabilities"][set] = json!(["CAP_MKNOD"]);
    }
    cfg["linux"]["devices"] = json!([{"path": "/dev/kmsg", "type": "c", "major": 1, "minor": 11}]);
    cfg["linux"]["resources"]["devices"] = json!([{"allow": false, "access": "rwm"}, {"allow": true, "type": "c", "major": 1, "minor": 11, "access": "rw"}]);
    let out = run(dir.path(), &cfg);
    // As root the node is made (CAP_MKNOD), but /dev is nodev: /dev/mem stays out of reach. In
    // a user namespace mknod itself is refused.
    let expected = if common::is_root() { "made\nrefused\nkmsg\n" } else { "refused\nkmsg\n" };
    assert_eq!(out, expected);
    // CAP_SYS_ADMIN without a user namespace could mount a file system where nodes work:
    // with rules to keep, that is refused.
    if common::is_root() {
        let mut admin = cfg.clone();
        admin["process"]["capabilities"]["bounding"] = json!(["CAP_MKNOD", "CAP_SYS_ADMIN"]);
        let err = open(dir.path(), &admin).unwrap().command().unwrap_err();
        assert!(
            matches!(&err, BundleError::Unsupported { field, .. } if field == "process.capabilities.bounding"),
            "{err:?}"
        );
    }
    // A listed device no rule allows is refused (the rules are an allowlist).
    let mut unlisted = cfg.clone();
    unlisted["linux"]["resources"]["devices"] = json!([]);
    let err = open(dir.path(), &unlisted).unwrap().command().unwrap_err();
    assert!(
        matches!(&err, BundleError::Unsupported { field, .. } if field == "linux.resources.devices"),
        "{err:?}"
    );
    // Rules that deny a device the container gets as a node are refused, naming them.
    cfg["linux"]["resources"]["devices"] = json!([{"allow": false, "access": "rwm"}]);
    let err = open(dir.path(), &cfg).unwrap().command().unwrap_err();
    assert!(
        matches!(&err, BundleError::Unsupported { field, value, .. } if field == "linux.resources.devices" && value.contains("1:11")),
        "{err:?}"
    );
}

#[test]
fn the_configs_seccomp_filter_is_enforced() {
    let _serial = common::serial();
    let dir = bundle_dir();
    let mut cfg = config(&["sh", "-c", "mkdir /tmp/x && echo made; touch /tmp/y && echo touched"]);
    cfg["mounts"]
        .as_array_mut()
        .unwrap()
        .push(json!({"destination": "/tmp", "type": "tmpfs", "source": "tmpfs"}));
    cfg["linux"]["seccomp"] = json!({
        "defaultAction": "SCMP_ACT_ALLOW",
        "architectures": ["SCMP_ARCH_X86_64"],
        "syscalls": [{"names": ["mkdir", "mkdirat"], "action": "SCMP_ACT_ERRNO", "errnoRet": 1}]
    });
    assert_eq!(run(dir.path(), &cfg), "touched\n");
}

#[test]
fn pids_and_memory_limits_of_the_config_are_enforced() {
    let _serial = common::serial();
    if !common::is_root() {
        common::skip(
            "pids_and_memory_limits_of_the_config_are_enforced",
            "needs cgroups this user may create (root); the limits themselves are tested in tests/resources.rs",
        );
        return;
    }
    let dir = bundle_dir();
    let script = "i=0; while [ $i -lt 12 ]; do sleep 60 & i=$((i+1)); done 2>&1; echo started; \
        cat /sys/fs/cgroup/pids.max /sys/fs/cgroup/pids/pids.max 2>/dev/null";
    let mut cfg = config(&["sh", "-c", script]);
    cfg["linux"]["resources"]["pids"] = json!({"limit": 8});
    cfg["linux"]["resources"]["memory"] = json!({"limit": 64 << 20});
    let bundle = open(dir.path(), &cfg).unwrap();
    let out = bundle.command().unwrap().output().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(stdout.contains("can't fork") || stdout.contains("Resource temporarily unavailable"), "{stdout}");
    assert_eq!(out.status.usage().peak_pids, Some(8), "{:?}", out.status);
    assert!(out.status.usage().peak_memory.is_some(), "no memory accounting: {:?}", out.status);
}

/// Process, fd, mount table and cgroup counts, to compare before and after.
fn footprint() -> (usize, Vec<i32>, usize, usize) {
    let mounts = std::fs::read_to_string("/proc/self/mountinfo").unwrap().lines().count();
    let cgroups = if common::is_root() { common::leftover_cgroups().len() } else { 0 };
    (common::fd_count(), common::own_children(), mounts, cgroups)
}

#[test]
fn bad_bundles_fail_naming_the_field_and_leave_nothing_behind() {
    let _serial = common::serial();
    let dir = bundle_dir();
    let before = footprint();

    // No config.json.
    let err = Bundle::open(dir.path()).unwrap_err();
    assert!(matches!(&err, BundleError::Read { path, .. } if path.ends_with("config.json")), "{err:?}");
    // Not JSON.
    std::fs::write(dir.path().join("config.json"), "{\"ociVersion\": \"1.0.2\",\n  \"process\": [}").unwrap();
    let err = Bundle::open(dir.path()).unwrap_err();
    assert!(matches!(&err, BundleError::Json { reason, .. } if reason.contains("line 2")), "{err:?}");
    // An unknown namespace type.
    let mut cfg = config(&["true"]);
    cfg["linux"]["namespaces"].as_array_mut().unwrap().insert(2, json!({"type": "bogus"}));
    let err = open(dir.path(), &cfg).unwrap_err();
    assert!(
        matches!(&err, BundleError::Invalid { field, value, .. } if field == "linux.namespaces[2].type" && value.contains("bogus")),
        "{err:?}"
    );
    // A mount onto a symlink in the root that points out of it: absolute, and climbing.
    let host = common::tempdir();
    let root = dir.path().join("rootfs");
    std::os::unix::fs::symlink(host.path(), root.join("evil")).unwrap();
    std::os::unix::fs::symlink("../../../../../../../..", root.join("tmp/up")).unwrap();
    for dest in ["/evil", "/evil/sub", "/tmp/up/etc"] {
        let mut cfg = config(&["true"]);
        cfg["mounts"]
            .as_array_mut()
            .unwrap()
            .push(json!({"destination": dest, "type": "tmpfs", "source": "tmpfs"}));
        let err = open(dir.path(), &cfg).unwrap().command().unwrap_err();
        assert!(
            matches!(&err, BundleError::Invalid { field, .. } if field == "mounts[7].destination"),
            "{dest}: {err:?}"
        );
    }
    assert_eq!(
        std::fs::read_dir(host.path()).unwrap().count(),
        0,
        "something was made in the host directory"
    );
    // An absolute link to a place in the root, as images have them (/var/run -> /run), is fine.
    std::fs::create_dir_all(root.join("run")).unwrap();
    std::fs::create_dir_all(root.join("var")).unwrap();
    std::os::unix::fs::symlink("/run", root.join("var/run")).unwrap();
    let mut cfg = config(&["true"]);
    cfg["mounts"]
        .as_array_mut()
        .unwrap()
        .push(json!({"destination": "/var/run/x", "type": "tmpfs", "source": "tmpfs"}));
    open(dir.path(), &cfg)
        .unwrap()
        .command()
        .expect("a destination through an absolute link inside the root");
    // A relative root path leaving the bundle, directly and through a symlink.
    std::os::unix::fs::symlink("/", dir.path().join("hostroot")).unwrap();
    for path in ["../", "rootfs/../..", "hostroot"] {
        let mut cfg = config(&["true"]);
        cfg["root"]["path"] = json!(path);
        let err = open(dir.path(), &cfg).unwrap().command().unwrap_err();
        assert!(
            matches!(&err, BundleError::Invalid { field, .. } if field == "root.path"),
            "{path}: {err:?}"
        );
    }
    // A version this does not follow; no process.
    let mut cfg = config(&["true"]);
    cfg["ociVersion"] = json!("2.0.0");
    let err = open(dir.path(), &cfg).unwrap().command().unwrap_err();
    assert!(matches!(&err, BundleError::Invalid { field, .. } if field == "ociVersion"), "{err:?}");
    let mut cfg = config(&["true"]);
    cfg["process"]["args"] = json!([]);
    let err = open(dir.path(), &cfg).unwrap().command().unwrap_err();
    assert!(matches!(&err, BundleError::Invalid { field, .. } if field == "process.args"), "{err:?}");

    assert_eq!(footprint(), before, "fds, children, mount table lines, cgroups");
}

#[test]
fn fields_stockade_does_not_carry_out_are_refused_by_name() {
    let _serial = common::serial();
    let dir = bundle_dir();
    type Change = fn(&mut Value);
    let cases: [(&str, Change); 7] = [
        ("hooks.prestart", |c| c["hooks"] = json!({"prestart": [{"path": "/bin/true"}]})),
        // Joining a mount namespace: the root is built in a new one.
        ("linux.namespaces[4].path", |c| c["linux"]["namespaces"][4]["path"] = json!("/proc/1/ns/mnt")),
        ("process.apparmorProfile", |c| c["process"]["apparmorProfile"] = json!("docker-default")),
        ("mounts[7].type", |c| {
            c["mounts"]
                .as_array_mut()
                .unwrap()
                .push(json!({"destination": "/x", "type": "nfs", "source": "server:/x"}))
        }),
        ("mounts[0].options", |c| c["mounts"][0]["options"] = json!(["rshared"])),
        ("linux.resources.unified", |c| c["linux"]["resources"]["unified"] = json!({"memory.high": "1M"})),
        ("linux.resources.memory.swappiness", |c| {
            c["linux"]["resources"]["memory"] = json!({"swappiness": 10})
        }),
    ];
    for (field, change) in cases {
        let mut cfg = config(&["true"]);
        change(&mut cfg);
        let err = open(dir.path(), &cfg).unwrap().command().unwrap_err();
        assert!(matches!(&err, BundleError::Unsupported { field: f, .. } if f == field), "{field}: {err:?}");
    }
}

#[test]
fn a_terminal_in_the_config_gives_the_process_one() {
    let _serial = common::serial();
    let dir = bundle_dir();
    let mut cfg = config(&["sh", "-c", "test -t 0 && test -t 1 && echo on-a-tty"]);
    cfg["process"]["terminal"] = json!(true);
    cfg["process"]["consoleSize"] = json!({"height": 30, "width": 100});
    let bundle = open(dir.path(), &cfg).unwrap();
    let mut child = bundle.command().unwrap().spawn().expect("spawn with a terminal");
    let terminal = child.terminal.take().expect("the caller's end of the terminal");
    // Kept open until the payload ended: closing it first would hang up on the payload.
    let mut screen = common::buffered(terminal);
    let text = common::read_until(&mut screen, |t| t.contains("on-a-tty"));
    assert!(text.contains("on-a-tty"), "{text}");
    let status = child.wait().unwrap();
    assert!(status.success(), "{status}");
    drop(screen);
}

#[test]
fn the_configs_namespaced_sysctls_are_set_and_host_wide_ones_refused() {
    let dir = bundle_dir();
    let mut cfg =
        config(&["cat", "/proc/sys/net/ipv4/ip_unprivileged_port_start", "/proc/sys/kernel/shmmni"]);
    cfg["linux"]["sysctl"] = json!({"net.ipv4.ip_unprivileged_port_start": "0", "kernel.shmmni": "100"});
    assert_eq!(run(dir.path(), &cfg), "0\n100\n");
    cfg["linux"]["sysctl"] = json!({"kernel.panic": "1"});
    let err = open(dir.path(), &cfg).unwrap().command().unwrap_err();
    assert!(
        matches!(&err, BundleError::Sandbox(stockade::Error::InvalidValue { value, .. }) if value == "kernel.panic"),
        "{err:?}"
    );
}

#[test]
fn overlay_mounts_of_the_config_stack_their_layers_and_refuse_unknown_options() {
    let _serial = common::serial();
    let dir = bundle_dir();
    let layers = common::tempdir();
    for (name, which) in [("a", "bottom"), ("b", "top"), ("upper", ""), ("work", "")] {
        std::fs::create_dir(layers.path().join(name)).unwrap();
        if !which.is_empty() {
            std::fs::write(layers.path().join(name).join("which"), format!("{which}\n")).unwrap();
        }
    }
    let at = |name: &str| layers.path().join(name).to_str().unwrap().to_owned();
    let mut cfg =
        config(&["sh", "-c", "cat /o/which /r/which; echo x > /o/new; touch /r/new 2>/dev/null || echo ro"]);
    let mounts = cfg["mounts"].as_array_mut().unwrap();
    // lowerdir lists the top layer first, as overlayfs reads it.
    mounts.push(json!({"destination": "/o", "type": "overlay", "source": "overlay",
        "options": [format!("lowerdir={}:{}", at("b"), at("a")), format!("upperdir={}", at("upper")), format!("workdir={}", at("work"))]}));
    mounts.push(json!({"destination": "/r", "type": "overlay", "source": "overlay",
        "options": [format!("lowerdir={}:{}", at("a"), at("b"))]}));
    assert_eq!(run(dir.path(), &cfg), "top\nbottom\nro\n");
    assert_eq!(std::fs::read_to_string(layers.path().join("upper/new")).unwrap(), "x\n");
    assert!(!layers.path().join("b/new").exists() && !layers.path().join("a/new").exists());

    for (options, field) in [
        (json!([format!("lowerdir={}", at("a")), "index=on"]), "index"),
        (json!([format!("upperdir={}", at("upper"))]), "no lowerdir"),
        (
            json!([format!("lowerdir={}:{}", at("a"), at("b")), format!("upperdir={}", at("upper"))]),
            "upperdir and workdir",
        ),
        (json!(["lowerdir=/nonexistent/layer:/also/not"]), "does not exist"),
    ] {
        let mut cfg = config(&["true"]);
        cfg["mounts"]
            .as_array_mut()
            .unwrap()
            .push(json!({"destination": "/o", "type": "overlay", "source": "overlay", "options": options}));
        let err = open(dir.path(), &cfg).unwrap().command().unwrap_err();
        let text = err.to_string();
        assert!(text.contains("mounts[7].options") && text.contains(field), "{options}: {text}");
    }
}
