//! Filesystem isolation: roots, mounts, /dev, /proc, masked paths, and the attacks of
//! security.md A3, A7, A8, A10, A14 against them. Each test checks the effect inside *and* that
//! the host's side (a sentinel tree, the host mount table) is unchanged.

mod common;

use std::collections::BTreeSet;
use std::os::unix::fs::symlink;
use std::path::Path;

use common::*;
use stockade::{Capability, DEFAULT_CAPABILITIES, Error, Mount, Namespaces, Root, Sandbox, Stage, Stdio};

fn host_mountinfo() -> String {
    std::fs::read_to_string("/proc/self/mountinfo").unwrap()
}

/// Namespaces for these tests: a user namespace in both modes, so the mount lock is exercised
/// as root too (real root without one is covered separately).
fn fs_ns() -> Namespaces {
    Namespaces::USER | Namespaces::PID | Namespaces::MOUNT | Namespaces::IPC | Namespaces::UTS
}

#[test]
fn payload_sees_only_the_mounts_it_was_given() {
    let data = tempdir();
    let sandbox = rooted(fs_ns(), Root::tmpfs())
        .mount(Mount::tmpfs("/tmp"))
        .mount(Mount::bind_ro(data.path(), "/data"))
        .build()
        .unwrap();
    let inside = sh_ok(&sandbox, "cat /proc/self/mountinfo");
    let points: BTreeSet<String> = mount_points(&inside).into_iter().collect();
    let mut allowed: BTreeSet<String> =
        ["/", "/usr", "/tmp", "/data", "/proc", "/dev", "/dev/pts", "/dev/shm"]
            .into_iter()
            .map(String::from)
            .collect();
    allowed.extend(["null", "zero", "full", "random", "urandom", "tty"].map(|n| format!("/dev/{n}")));
    for p in ["/bin", "/sbin", "/lib", "/lib32", "/lib64", "/libx32"] {
        allowed.insert(p.to_owned());
    }
    let proc_extra = |p: &str| p.starts_with("/proc/");
    for p in &points {
        assert!(allowed.contains(p) || proc_extra(p), "unexpected mount {p} inside:\n{inside}");
    }
    for p in ["/", "/usr", "/tmp", "/data", "/proc", "/dev"] {
        assert!(points.contains(p), "missing mount {p}:\n{inside}");
    }
    // Nothing of the host's own mount table is there.
    for host_point in mount_points(&host_mountinfo()) {
        if !allowed.contains(&host_point) && !proc_extra(&host_point) && host_point != "/proc" {
            assert!(!points.contains(&host_point), "host mount {host_point} visible inside");
        }
    }
}

#[test]
fn private_tmp_is_empty_writable_and_invisible_to_the_host() {
    let sandbox = rooted(fs_ns(), Root::tmpfs()).mount(Mount::tmpfs("/tmp").size(1 << 20)).build().unwrap();
    let host_tmp_before: BTreeSet<_> =
        std::fs::read_dir("/tmp").unwrap().map(|e| e.unwrap().file_name()).collect();
    let out = sh_ok(&sandbox, "ls -A /tmp | wc -l; echo hi > /tmp/made-inside && cat /tmp/made-inside");
    assert_eq!(out, "0\nhi\n");
    let host_tmp_after: BTreeSet<_> =
        std::fs::read_dir("/tmp").unwrap().map(|e| e.unwrap().file_name()).collect();
    assert!(!host_tmp_after.contains(std::ffi::OsStr::new("made-inside")));
    assert!(host_tmp_after.is_superset(&host_tmp_before) || host_tmp_before.len() >= host_tmp_after.len());
}

#[test]
fn tmpfs_size_limit_bounds_what_the_payload_can_write() {
    let sandbox = rooted(fs_ns(), Root::tmpfs()).mount(Mount::tmpfs("/tmp").size(1 << 20)).build().unwrap();
    let out = sh(&sandbox, "head -c 4000000 /dev/zero > /tmp/fill; echo rc=$?; du -k /tmp/fill | cut -f1");
    let text = String::from_utf8_lossy(&out.stdout);
    let kib: u64 = text.lines().nth(1).unwrap().trim().parse().unwrap();
    assert!(text.starts_with("rc=1"), "{text}");
    assert!(kib <= 1024, "wrote {kib} KiB into a 1 MiB tmpfs");
}

/// Attack script against a read-only bind at /data: every way to write through it.
const UNDO_READ_ONLY: &str = "\
    touch /data/new 2>/dev/null && echo WROTE-NEW; \
    echo x >> /data/sentinel 2>/dev/null && echo APPENDED; \
    mount -o remount,rw /data 2>/dev/null && echo REMOUNTED; \
    mount -o remount,rw,bind /data 2>/dev/null && echo REMOUNTED-BIND; \
    mkdir -p /tmp/alias && mount --bind /data /tmp/alias 2>/dev/null && \
        (mount -o remount,rw,bind /tmp/alias 2>/dev/null && echo ALIAS-REMOUNTED; \
         touch /tmp/alias/new 2>/dev/null && echo ALIAS-WROTE); \
    umount /data 2>/dev/null && echo UNMOUNTED; \
    umount -l /data 2>/dev/null && echo LAZY-UNMOUNTED; \
    mount --make-shared /data 2>/dev/null; mount -t tmpfs none /data 2>/dev/null && touch /data/over; \
    echo done";

#[test]
fn read_only_binds_stay_read_only_even_for_root_with_cap_sys_admin_inside() {
    let data = tempdir();
    std::fs::write(data.path().join("sentinel"), "host data\n").unwrap();
    let before = snapshot(data.path());
    let host_before = host_mountinfo();
    // The payload gets CAP_SYS_ADMIN in its user namespace: only the mount lock stops it.
    let mut caps = DEFAULT_CAPABILITIES.to_vec();
    caps.push(Capability::CAP_SYS_ADMIN);
    let sandbox = rooted(fs_ns(), Root::tmpfs())
        .mount(Mount::tmpfs("/tmp"))
        .mount(Mount::bind_ro(data.path(), "/data"))
        .capabilities(caps)
        .build()
        .unwrap();
    let out = sh_ok(&sandbox, UNDO_READ_ONLY);
    assert_eq!(out, "done\n", "an attack got through");
    assert_eq!(snapshot(data.path()), before, "host data changed");
    assert_eq!(host_mountinfo(), host_before, "a mount reached the host");
}

#[test]
fn read_only_binds_stay_read_only_for_real_root_without_a_user_namespace() {
    if !is_root() {
        return skip(
            "read_only_binds_stay_read_only_for_real_root",
            "needs root to sandbox without a user namespace",
        );
    }
    let data = tempdir();
    std::fs::write(data.path().join("sentinel"), "host data\n").unwrap();
    let before = snapshot(data.path());
    let sandbox = Sandbox::builder()
        .namespaces(Namespaces::PID | Namespaces::MOUNT)
        .root(Root::tmpfs())
        .mounts(Mount::host_system())
        .mount(Mount::tmpfs("/tmp"))
        .mount(Mount::bind_ro(data.path(), "/data"))
        .build()
        .unwrap();
    // Real root, but with the default capabilities: no CAP_SYS_ADMIN, so no mount(2) at all.
    let out = sh_ok(&sandbox, UNDO_READ_ONLY);
    assert_eq!(out, "done\n", "an attack got through");
    assert_eq!(snapshot(data.path()), before, "host data changed");
}

#[test]
fn host_mount_table_is_unchanged_after_100_sandboxes() {
    let before = host_mountinfo();
    let sandbox = rooted(fs_ns(), Root::tmpfs())
        .mount(Mount::tmpfs("/tmp"))
        .mount(Mount::file("/etc/hosts", "127.0.0.1 localhost\n"))
        .build()
        .unwrap();
    for _ in 0..100 {
        let status = sandbox.command("/bin/true").status().unwrap();
        assert!(status.success());
    }
    assert_eq!(host_mountinfo(), before);
}

/// A caller-supplied root with a shell: the host's system directories bound in by the sandbox.
fn caller_root() -> TempDir {
    let root = tempdir();
    for dir in ["usr", "etc", "var/tmp"] {
        std::fs::create_dir_all(root.path().join(dir)).unwrap();
    }
    root
}

#[test]
fn planted_symlinks_at_mount_destinations_never_redirect_a_mount_to_the_host() {
    // The host directory the planted links point at, with a sentinel file.
    let sentinel = tempdir();
    std::fs::write(sentinel.path().join("sentinel"), "untouched\n").unwrap();
    let before = snapshot(sentinel.path());
    let host_before = host_mountinfo();
    let data = tempdir();
    std::fs::write(data.path().join("payload-data"), "data\n").unwrap();
    let target = sentinel.path().to_str().unwrap().to_owned();
    let relative = format!("../../../../../../../..{target}");

    for (name, link) in [
        ("proc", target.as_str()),
        ("dev", target.as_str()),
        ("tmp", target.as_str()),
        ("tmp", relative.as_str()),
        ("data", target.as_str()),
        ("data", relative.as_str()),
    ] {
        let root = caller_root();
        // The link's target path also exists inside the root (created before the link is
        // planted, and not through it), so the link resolves there.
        if name != "tmp" {
            std::fs::create_dir_all(root.path().join(target.trim_start_matches('/'))).unwrap();
        }
        symlink(link, root.path().join(name)).unwrap();
        let sandbox = rooted(fs_ns(), Root::dir(root.path()))
            .mount(Mount::tmpfs("/tmp"))
            .mount(Mount::bind_ro(data.path(), "/data"))
            .build()
            .unwrap();
        let out = sandbox.command("/bin/sh").args(["-c", &format!("ls {target}")]).output();
        match out {
            Ok(out) => {
                // Every mount landed inside the root, where the link leads within it; a bind
                // at /data then shows up at the link's target path inside.
                let text = String::from_utf8_lossy(&out.stdout);
                if name == "data" {
                    assert!(text.contains("payload-data"), "{name} -> {link}: {text}");
                }
            }
            Err(Error::Setup { stage: Stage::Mount { target, .. }, .. }) => {
                assert!(target.starts_with("/"), "{name} -> {link}: error names {target:?}");
            }
            Err(e) => panic!("{name} -> {link}: {e}"),
        }
        assert_eq!(snapshot(sentinel.path()), before, "{name} -> {link}: host sentinel changed");
        assert_eq!(host_mountinfo(), host_before, "{name} -> {link}: host mounts changed");
    }
}

#[test]
fn caller_root_directory_is_used_and_writable_unless_read_only() {
    let root = caller_root();
    std::fs::write(root.path().join("etc/motd"), "welcome\n").unwrap();
    let sandbox = rooted(fs_ns(), Root::dir(root.path())).build().unwrap();
    let out = sh_ok(&sandbox, "cat /etc/motd; echo changed > /etc/motd; pwd");
    assert_eq!(out, "welcome\n/\n");
    assert_eq!(std::fs::read_to_string(root.path().join("etc/motd")).unwrap(), "changed\n");

    let sandbox = rooted(fs_ns(), Root::dir_readonly(root.path())).build().unwrap();
    let out = sh(&sandbox, "echo again > /etc/motd");
    assert!(!out.status.success());
    assert_eq!(std::fs::read_to_string(root.path().join("etc/motd")).unwrap(), "changed\n");
}

#[test]
fn a_sealed_root_gets_its_mount_points_then_is_read_only_above_its_writable_mounts() {
    let root = caller_root();
    std::fs::write(root.path().join("etc/motd"), "welcome\n").unwrap();
    let sandbox =
        rooted(fs_ns(), Root::dir_sealed(root.path())).mount(Mount::tmpfs("/work/tmp")).build().unwrap();
    let out = sh(
        &sandbox,
        "echo changed > /etc/motd || echo root-read-only; echo x > /work/tmp/x && echo tmp-writable",
    );
    assert_eq!(String::from_utf8_lossy(&out.stdout), "root-read-only\ntmp-writable\n");
    assert_eq!(std::fs::read_to_string(root.path().join("etc/motd")).unwrap(), "welcome\n");
    // The mount point was made in the directory, as an OCI runtime makes it in its bundle.
    assert!(root.path().join("work/tmp").is_dir());
}

#[test]
fn without_default_mounts_only_the_given_mounts_are_there() {
    let sandbox =
        rooted(fs_ns(), Root::tmpfs()).no_default_mounts().mount(Mount::proc("/proc")).build().unwrap();
    let inside = sh_ok(&sandbox, "cat /proc/self/mountinfo; test -e /dev/null || echo no-dev");
    let points = mount_points(&inside);
    assert!(points.iter().all(|p| !p.starts_with("/dev")), "{inside}");
    assert!(points.iter().any(|p| p == "/proc"), "{inside}");
    assert!(inside.ends_with("no-dev\n"), "{inside}");
}

#[test]
fn overlay_root_writes_land_in_the_upper_layer_and_the_lower_is_unchanged() {
    let lower = caller_root();
    std::fs::write(lower.path().join("etc/keep"), "lower keep\n").unwrap();
    std::fs::write(lower.path().join("etc/edit"), "lower edit\n").unwrap();
    std::fs::write(lower.path().join("etc/gone"), "lower gone\n").unwrap();
    let before = snapshot(lower.path());
    let state = tempdir();
    let (upper, work) = (state.path().join("upper"), state.path().join("work"));
    std::fs::create_dir_all(&upper).unwrap();
    std::fs::create_dir_all(&work).unwrap();
    let script = "cat /etc/keep; echo upper edit > /etc/edit; rm /etc/gone; echo new > /etc/new; ls /etc";

    // Persistent upper: the changes are kept there.
    let sandbox = rooted(fs_ns(), Root::overlay_persistent([lower.path()], &upper, &work)).build().unwrap();
    let out = sh_ok(&sandbox, script);
    assert_eq!(out, "lower keep\nedit\nkeep\nnew\n");
    assert_eq!(snapshot(lower.path()), before, "the lower layer changed");
    assert_eq!(std::fs::read_to_string(upper.join("etc/edit")).unwrap(), "upper edit\n");
    assert_eq!(std::fs::read_to_string(upper.join("etc/new")).unwrap(), "new\n");
    // The deletion is recorded in the upper layer, as a whiteout.
    assert!(std::fs::symlink_metadata(upper.join("etc/gone")).is_ok(), "no whiteout for the deleted file");

    // Ephemeral upper: the same changes vanish with the sandbox.
    let sandbox = rooted(fs_ns(), Root::overlay([lower.path()])).build().unwrap();
    sh_ok(&sandbox, script);
    let again = sh_ok(&sandbox, "cat /etc/edit; ls /etc");
    assert_eq!(again, "lower edit\nedit\ngone\nkeep\n");
    assert_eq!(snapshot(lower.path()), before, "the lower layer changed");
}

#[test]
fn an_overlay_mount_stacks_its_layers_and_writes_reach_only_its_upper_directory() {
    let base = tempdir();
    let top = tempdir();
    for (dir, which) in [(&base, "base"), (&top, "top")] {
        std::fs::write(dir.path().join("which"), format!("{which}\n")).unwrap();
    }
    std::fs::write(base.path().join("only-base"), "base\n").unwrap();
    let before = (snapshot(base.path()), snapshot(top.path()));
    let state = tempdir();
    let (upper, work) = (state.path().join("upper"), state.path().join("work"));
    std::fs::create_dir_all(&upper).unwrap();
    std::fs::create_dir_all(&work).unwrap();
    let layers = [base.path(), top.path()];
    let mut b = rooted(fs_ns(), Root::tmpfs());
    b.mount(Mount::overlay_writable(layers, &upper, &work, "/data")).mount(Mount::overlay(layers, "/ro"));
    let sandbox = b.build().unwrap();
    let script = "cat /data/which /data/only-base /ro/which; echo changed > /data/which; echo new > /data/new; \
                  rm /data/only-base; touch /ro/x 2>/dev/null || echo read-only; ls /data";
    assert_eq!(sh_ok(&sandbox, script), "top\nbase\ntop\nread-only\nnew\nwhich\n");
    assert_eq!((snapshot(base.path()), snapshot(top.path())), before, "a lower layer changed");
    assert_eq!(std::fs::read_to_string(upper.join("which")).unwrap(), "changed\n");
    assert_eq!(std::fs::read_to_string(upper.join("new")).unwrap(), "new\n");
    assert!(std::fs::symlink_metadata(upper.join("only-base")).is_ok(), "no whiteout for the deleted file");
    // The same through one lowerdir= option (kernels before 6.8), chosen explicitly.
    let mut b = rooted(fs_ns(), Root::tmpfs());
    b.mount(Mount::overlay(layers, "/ro")).legacy_overlay();
    assert_eq!(sh_ok(&b.build().unwrap(), "cat /ro/which /ro/only-base; pwd"), "top\nbase\n/\n");
    // A read-only overlay of one layer is refused at build (overlayfs needs two).
    let mut b = rooted(fs_ns(), Root::tmpfs());
    let err = b.mount(Mount::overlay([base.path()], "/ro")).build().unwrap_err();
    assert!(err.to_string().contains("two lower directories"), "{err}");
}

#[test]
fn overlay_stacks_several_lower_layers_top_last() {
    let base = caller_root();
    std::fs::write(base.path().join("etc/which"), "base\n").unwrap();
    std::fs::write(base.path().join("etc/only-base"), "base\n").unwrap();
    let top = tempdir();
    std::fs::create_dir_all(top.path().join("etc")).unwrap();
    std::fs::write(top.path().join("etc/which"), "top\n").unwrap();
    let sandbox = rooted(fs_ns(), Root::overlay([base.path(), top.path()])).build().unwrap();
    assert_eq!(sh_ok(&sandbox, "cat /etc/which /etc/only-base"), "top\nbase\n");
    // The same through one lowerdir= option (kernels before 6.8), chosen explicitly.
    let mut b = rooted(fs_ns(), Root::overlay([base.path(), top.path()]));
    let legacy = b.legacy_overlay().build().unwrap();
    assert_eq!(sh_ok(&legacy, "cat /etc/which /etc/only-base; pwd"), "top\nbase\n/\n");
}

#[test]
fn a_legacy_overlay_takes_at_most_48_layers_and_says_so() {
    let layers: Vec<_> = (0..49).map(|_| tempdir()).collect();
    let paths: Vec<_> = layers.iter().map(|l| l.path().to_owned()).collect();
    let mut b = rooted(fs_ns(), Root::overlay(paths.clone()));
    let err = b.legacy_overlay().build().unwrap_err();
    assert!(
        matches!(&err, stockade::Error::InvalidValue { what: "overlay root", .. })
            && err.to_string().contains("48"),
        "{err:?}"
    );
    // 48 stack, through one option of descriptor numbers.
    std::fs::create_dir_all(paths[0].join("etc")).unwrap();
    std::fs::write(paths[0].join("etc/top"), "48 layers\n").unwrap();
    let base = caller_root();
    let mut lowers = paths[..47].to_vec();
    lowers.push(base.path().to_owned());
    lowers.reverse(); // bottom (the base) to top

    let mut b = rooted(fs_ns(), Root::overlay(lowers));
    let sandbox = b.legacy_overlay().build().unwrap();
    assert_eq!(sh_ok(&sandbox, "cat /etc/top"), "48 layers\n");
}

#[test]
fn dev_holds_exactly_the_minimal_set_and_nothing_can_be_created_in_it() {
    let sandbox = rooted(fs_ns(), Root::tmpfs()).build().unwrap();
    let out = sh_ok(
        &sandbox,
        "ls -A /dev | tr '\\n' ' '; echo; \
         echo discarded > /dev/null && echo null-ok; head -c 4 /dev/zero | wc -c; head -c 4 /dev/urandom | wc -c; \
         mknod /dev/mem c 1 1 2>/dev/null && echo MKNOD; touch /dev/x 2>/dev/null && echo TOUCH; \
         ls /dev/pts/ptmx >/dev/null && echo pts-ok; [ -e /dev/mem ] && echo HAS-MEM; true",
    );
    let mut lines = out.lines();
    assert_eq!(
        lines.next().unwrap(),
        "fd full null ptmx pts random shm stderr stdin stdout tty urandom zero ",
        "{out}"
    );
    assert_eq!(lines.collect::<Vec<_>>(), ["null-ok", "4", "4", "pts-ok"]);
}

#[test]
fn dev_is_minimal_for_real_root_too_and_mknod_fails() {
    if !is_root() {
        return skip(
            "dev_is_minimal_for_real_root_too_and_mknod_fails",
            "needs root to sandbox without a user namespace",
        );
    }
    let sandbox = Sandbox::builder()
        .namespaces(Namespaces::PID | Namespaces::MOUNT)
        .root(Root::tmpfs())
        .mounts(Mount::host_system())
        .build()
        .unwrap();
    // Real root with CAP_MKNOD: /dev is read-only, and everything else is nodev.
    let out = sh_ok(
        &sandbox,
        "mknod /dev/mem c 1 1 2>/dev/null && echo MKNOD-DEV; mknod /mem c 1 1 2>/dev/null && echo MKNOD-ROOT; echo done",
    );
    assert_eq!(out, "done\n");
}

#[test]
fn sensitive_proc_and_sys_paths_are_masked_or_read_only() {
    let sandbox =
        rooted(fs_ns() | Namespaces::NET, Root::tmpfs()).mount(Mount::sysfs("/sys")).build().unwrap();
    // Each masked file that this kernel has must read as empty inside.
    let masked =
        ["/proc/keys", "/proc/kcore", "/proc/timer_list", "/proc/sched_debug", "/proc/latency_stats"];
    let present: Vec<&str> = masked.into_iter().filter(|p| Path::new(p).exists()).collect();
    assert!(!present.is_empty(), "none of {masked:?} exists on this host; the test proves nothing");
    let script = format!(
        "for f in {}; do echo $f $(cat $f | wc -c); done; ls -A /sys/firmware | wc -l; \
         echo 1 > /proc/sys/kernel/domainname 2>/dev/null && echo WROTE-SYS; \
         echo h > /proc/sysrq-trigger 2>/dev/null && echo WROTE-SYSRQ; \
         touch /sys/x 2>/dev/null && echo WROTE-SYSFS; echo done",
        present.join(" ")
    );
    let out = sh_ok(&sandbox, &script);
    let expected: String = present.iter().map(|p| format!("{p} 0\n")).collect::<String>() + "0\ndone\n";
    assert_eq!(out, expected);
}

#[test]
fn host_readonly_root_shows_the_host_read_only_with_a_fresh_proc_and_minimal_dev() {
    let sandbox = builder(fs_ns()).root(Root::host_readonly()).mount(Mount::tmpfs("/tmp")).build().unwrap();
    let hostname = std::fs::read_to_string("/etc/hostname").unwrap_or_default();
    let out = sh_ok(
        &sandbox,
        "cat /etc/hostname; touch /etc/x 2>/dev/null && echo WROTE-ETC; touch /tmp/ok && echo tmp-ok; \
         cat /proc/1/stat | cut -d' ' -f1; ls /dev | wc -l",
    );
    assert_eq!(out, format!("{hostname}tmp-ok\n1\n13\n"));
}

#[test]
fn files_directories_and_symlinks_are_created_inside() {
    let sandbox = rooted(fs_ns(), Root::tmpfs())
        .mount(Mount::file("/etc/hosts", "127.0.0.1 box\n"))
        .mount(Mount::file("/etc/secret", "s\n").mode(0o600))
        .mount(Mount::dir("/srv/app").mode(0o750))
        .mount(Mount::symlink("/etc/hosts", "/etc/hosts.link"))
        .build()
        .unwrap();
    let out = sh_ok(
        &sandbox,
        "cat /etc/hosts.link; stat -c '%a' /etc/secret /srv/app; echo x > /etc/hosts 2>/dev/null && echo WROTE; true",
    );
    assert_eq!(out, "127.0.0.1 box\n600\n750\n");
    // A file also goes over an existing one in a read-only root.
    let sandbox = builder(fs_ns())
        .root(Root::host_readonly())
        .mount(Mount::file("/etc/hostname", "boxed\n"))
        .build()
        .unwrap();
    assert_eq!(sh_ok(&sandbox, "cat /etc/hostname"), "boxed\n");
}

#[test]
fn working_directory_is_inside_the_new_root_and_nothing_of_the_old_root_survives() {
    let sandbox = rooted(fs_ns(), Root::tmpfs()).build().unwrap();
    // Default: the new root, whatever the embedding program's cwd is.
    assert_eq!(sh_ok(&sandbox, "readlink /proc/self/cwd; readlink /proc/self/root"), "/\n/\n");
    let out = sandbox.command("/bin/pwd").current_dir("/usr/share").output().unwrap();
    assert_eq!(out.stdout, b"/usr/share\n");
    // The payload's descriptors, read from the host: stdio only (no fd of the old root).
    let mut child = sandbox.command("/bin/sleep").arg("3600").stdin(Stdio::null()).spawn().unwrap();
    let payload = loop {
        if let Some(&p) = children_of(child.id() as i32).first() {
            break p;
        }
        std::thread::yield_now();
    };
    // Look once sleep is sleeping: during exec the loader briefly holds its libraries open.
    wait_until_sleeping(payload);
    let fds: Vec<String> = std::fs::read_dir(format!("/proc/{payload}/fd"))
        .unwrap()
        .map(|e| std::fs::read_link(e.unwrap().path()).unwrap().display().to_string())
        .collect();
    let cwd = std::fs::read_link(format!("/proc/{payload}/cwd")).unwrap();
    child.kill().unwrap();
    child.wait().unwrap();
    assert_eq!(fds.len(), 3, "{fds:?}");
    assert_eq!(cwd, Path::new("/"), "cwd as the host sees it is the new root's top");
}

#[test]
fn mqueue_and_chroot_mode_work() {
    let sandbox = rooted(fs_ns(), Root::tmpfs()).mount(Mount::mqueue("/dev/mqueue")).build().unwrap();
    assert_eq!(sh_ok(&sandbox, "grep -c ' /dev/mqueue ' /proc/self/mountinfo"), "1\n");
    let sandbox = rooted(fs_ns(), Root::tmpfs()).use_chroot().build().unwrap();
    assert_eq!(sh_ok(&sandbox, "ls /usr/bin/env; readlink /proc/self/root"), "/usr/bin/env\n/\n");
}

#[test]
fn payload_in_a_network_namespace_can_bind_low_ports() {
    if !have("/usr/bin/python3") {
        return skip("payload_in_a_network_namespace_can_bind_low_ports", "python3 missing for the probe");
    }
    let sandbox = rooted(fs_ns() | Namespaces::NET, Root::tmpfs()).build().unwrap();
    let out = sandbox
        .command("/usr/bin/python3")
        .args(["-c", "import socket; s = socket.socket(); s.bind(('127.0.0.1', 80)); print('bound')"])
        .output()
        .unwrap();
    assert_eq!(String::from_utf8_lossy(&out.stdout), "bound\n", "{}", String::from_utf8_lossy(&out.stderr));
}
