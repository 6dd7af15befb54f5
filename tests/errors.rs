//! Bad input from the embedding program (security.md, section D): each case is a typed error
//! naming the value, raised before any process exists where possible, and leaves no process
//! or descriptor behind.
//!
//! Tests here count this process's descriptors and children, so they run one at a time.

mod common;

use std::io::ErrorKind;

use common::*;
use stockade::{ClockOffsets, Error, IdMap, Mount, Namespaces, Root, Sandbox, Stage};

/// Runs `f`, then checks that descriptors and children are back to where they were.
fn leaves_nothing_behind<T>(f: impl FnOnce() -> T) -> T {
    let (fds, children) = (fd_count(), own_children());
    let result = f();
    assert_eq!(fd_count(), fds, "descriptor leaked");
    assert_eq!(own_children(), children, "process left behind");
    result
}

#[test]
fn missing_program_is_an_exec_error_naming_it() {
    let _serial = serial();
    for kind in [Namespaces::empty(), Namespaces::all()] {
        let err =
            leaves_nothing_behind(|| sandbox(kind).command("/no/such/program").arg("x").spawn().unwrap_err());
        match err {
            Error::Exec { program, source } => {
                assert_eq!(program, std::path::Path::new("/no/such/program"));
                assert_eq!(source.kind(), ErrorKind::NotFound);
            }
            other => panic!("expected Exec, got {other:?}"),
        }
        let err =
            leaves_nothing_behind(|| sandbox(kind).command("no-such-program-anywhere").status().unwrap_err());
        assert!(
            matches!(&err, Error::Exec { program, .. } if program.as_os_str() == "no-such-program-anywhere"),
            "{err}"
        );
        // Converting keeps the kind, as std's spawn error would have it.
        assert_eq!(std::io::Error::from(err).kind(), ErrorKind::NotFound);
    }
}

#[test]
fn non_executable_program_is_an_exec_error_with_permission_denied() {
    let _serial = serial();
    let path = std::env::temp_dir().join(format!("stockade-not-executable-{}", std::process::id()));
    std::fs::write(&path, "#!/bin/sh\necho should not run\n").unwrap();
    std::fs::set_permissions(&path, std::os::unix::fs::PermissionsExt::from_mode(0o644)).unwrap();
    let err = leaves_nothing_behind(|| sandbox(Namespaces::all()).command(&path).spawn().unwrap_err());
    std::fs::remove_file(&path).unwrap();
    assert!(
        matches!(&err, Error::Exec { program, source } if *program == path && source.kind() == ErrorKind::PermissionDenied),
        "{err:?}"
    );
}

#[test]
fn nul_bytes_in_any_string_are_rejected_naming_the_setting() {
    let _serial = serial();
    let sandbox = sandbox(Namespaces::all());
    type Attempt<'a> = Box<dyn Fn() -> Result<stockade::Child, Error> + 'a>;
    let cases: [(&str, Attempt); 5] = [
        ("argument", Box::new(|| sandbox.command("/bin/echo").arg("a\0b").spawn())),
        ("program", Box::new(|| sandbox.command("/bin/ec\0ho").spawn())),
        ("environment variable", Box::new(|| sandbox.command("/bin/echo").env("K", "v\0").spawn())),
        ("working directory", Box::new(|| sandbox.command("/bin/echo").current_dir("/t\0mp").spawn())),
        ("hostname", Box::new(|| builder(Namespaces::UTS).hostname("a\0b").build().map(|_| unreachable!()))),
    ];
    for (what, attempt) in cases {
        match leaves_nothing_behind(attempt) {
            Err(Error::NulByte { what: got, value }) => {
                assert_eq!(got, what);
                assert!(value.to_string_lossy().contains('\0'));
            }
            other => panic!("{what}: expected NulByte, got {other:?}"),
        }
    }
}

#[test]
fn malformed_environment_names_are_rejected() {
    let _serial = serial();
    let sandbox = sandbox(Namespaces::empty());
    for name in ["", "A=B"] {
        let err = leaves_nothing_behind(|| sandbox.command("/bin/true").env(name, "v").spawn().unwrap_err());
        assert!(matches!(&err, Error::InvalidValue { what: "environment variable name", .. }), "{err:?}");
        assert!(err.to_string().contains(&format!("{name:?}")), "{err}");
    }
}

#[test]
fn bad_id_maps_are_rejected_at_build_with_the_reason() {
    let _serial = serial();
    let cases: [(Vec<IdMap>, &str); 5] = [
        (vec![], "at least one range"),
        (vec![IdMap::new(0, 1000, 0)], "count of 0"),
        (vec![IdMap::new(0, 1000, 10), IdMap::new(5, 5000, 10)], "overlap inside"),
        (vec![IdMap::new(0, 1000, 10), IdMap::new(100, 1005, 10)], "overlap on the host"),
        (vec![IdMap::new(0, u32::MAX - 5, 10)], "runs past"),
    ];
    for (map, reason) in cases {
        let err = leaves_nothing_behind(|| {
            Sandbox::builder().namespaces(Namespaces::USER).uid_map(map.clone()).build().unwrap_err()
        });
        match &err {
            Error::IdMap { kind: "uid", reason: got, .. } => assert!(got.contains(reason), "{map:?}: {got}"),
            other => panic!("{map:?}: expected IdMap, got {other:?}"),
        }
    }
    let too_many: Vec<IdMap> = (0..341).map(|i| IdMap::new(i, i, 1)).collect();
    let err = Sandbox::builder().namespaces(Namespaces::USER).gid_map(too_many).build().unwrap_err();
    assert!(
        matches!(&err, Error::IdMap { kind: "gid", reason, .. } if reason.contains("341 ranges")),
        "{err}"
    );
}

#[test]
fn payload_ids_must_be_mapped() {
    let _serial = serial();
    let err = Sandbox::builder().namespaces(Namespaces::USER).user(1000, 0).build().unwrap_err();
    assert!(matches!(&err, Error::IdMap { kind: "uid", reason, .. } if reason.contains("1000")), "{err}");
    let err = Sandbox::builder().namespaces(Namespaces::USER).user(0, 0).groups([77]).build().unwrap_err();
    assert!(matches!(&err, Error::IdMap { kind: "gid", reason, .. } if reason.contains("77")), "{err}");
}

#[test]
fn settings_without_their_namespace_are_rejected() {
    let _serial = serial();
    let cases: [(SandboxSetup, &str, &str); 5] = [
        (
            |b| {
                b.hostname("h");
            },
            "hostname",
            "uts",
        ),
        (
            |b| {
                b.domainname("d");
            },
            "domain name",
            "uts",
        ),
        (
            |b| {
                b.clock_offsets(ClockOffsets::new());
            },
            "clock offsets",
            "time",
        ),
        (
            |b| {
                b.uid_map([IdMap::new(0, 0, 1)]);
            },
            "uid map",
            "user",
        ),
        (
            |b| {
                b.gid_map([IdMap::new(0, 0, 1)]);
            },
            "gid map",
            "user",
        ),
    ];
    for (setup, what, needs) in cases {
        let mut b = Sandbox::builder();
        setup(&mut b);
        let err = b.build().unwrap_err();
        assert!(
            matches!(err, Error::NamespaceRequired { what: w, needs: n } if w == what && n == needs),
            "{what}"
        );
    }
}

type SandboxSetup = fn(&mut stockade::SandboxBuilder);

#[test]
fn a_pid_namespace_without_a_mount_namespace_is_refused() {
    let _serial = serial();
    // Its payload would see the host's /proc, and through it every host process.
    let err = Sandbox::builder().namespaces(Namespaces::USER | Namespaces::PID).build().unwrap_err();
    assert!(matches!(err, Error::NamespaceRequired { needs: "mount", .. }), "{err}");
}

#[test]
fn the_invalid_id_is_refused_as_uid_gid_or_group() {
    let _serial = serial();
    for (uid, gid, groups) in [(u32::MAX, 0, vec![]), (0, u32::MAX, vec![]), (0, 0, vec![u32::MAX])] {
        let err = Sandbox::builder().user(uid, gid).groups(groups).build().unwrap_err();
        assert!(matches!(&err, Error::InvalidValue { value, .. } if value == &u32::MAX.to_string()), "{err}");
    }
}

#[test]
fn out_of_range_values_are_rejected() {
    let _serial = serial();
    let err = builder(Namespaces::UTS).hostname("x".repeat(65)).build().unwrap_err();
    assert!(matches!(&err, Error::InvalidValue { what: "hostname", .. }), "{err}");
    let err = builder(Namespaces::TIME)
        .clock_offsets(ClockOffsets::new().boottime(std::time::Duration::from_secs(u64::MAX / 2)))
        .build()
        .unwrap_err();
    assert!(matches!(&err, Error::InvalidValue { what: "clock offset", .. }), "{err}");
}

#[test]
fn stdio_numbers_and_duplicates_are_rejected_for_passed_descriptors() {
    let _serial = serial();
    let sandbox = sandbox(Namespaces::empty());
    let err = leaves_nothing_behind(|| {
        sandbox.command("/bin/true").fd(1, std::fs::File::open("/dev/null").unwrap()).spawn().unwrap_err()
    });
    assert!(matches!(&err, Error::InvalidValue { what: "fd", value, .. } if value == "1"), "{err}");
    let err = leaves_nothing_behind(|| {
        let mut cmd = sandbox.command("/bin/true");
        cmd.fd(5, std::fs::File::open("/dev/null").unwrap()).fd(5, std::fs::File::open("/dev/null").unwrap());
        let err = cmd.spawn().unwrap_err();
        drop(cmd);
        err
    });
    assert!(matches!(&err, Error::InvalidValue { what: "fd", value, .. } if value == "5"), "{err}");
    let err = leaves_nothing_behind(|| {
        sandbox
            .command("/bin/true")
            .fd(i32::MAX, std::fs::File::open("/dev/null").unwrap())
            .spawn()
            .unwrap_err()
    });
    assert!(
        matches!(&err, Error::InvalidValue { what: "fd", reason, .. } if reason.contains("RLIMIT_NOFILE")),
        "{err}"
    );
}

#[test]
fn missing_working_directory_is_a_setup_error_naming_it() {
    let _serial = serial();
    for kind in [Namespaces::empty(), Namespaces::all()] {
        let err = leaves_nothing_behind(|| {
            sandbox(kind).command("/bin/true").current_dir("/no/such/dir").spawn().unwrap_err()
        });
        match err {
            Error::Setup { stage: Stage::Chdir { dir }, source } => {
                assert_eq!(dir, std::path::Path::new("/no/such/dir"));
                assert_eq!(source.kind(), ErrorKind::NotFound);
            }
            other => panic!("expected Setup/Chdir, got {other:?}"),
        }
    }
}

#[test]
fn unprivileged_namespaces_without_a_user_namespace_are_refused_before_clone() {
    let _serial = serial();
    if is_root() {
        return skip("unprivileged_namespaces_without_a_user_namespace_are_refused", "root may create them");
    }
    let err = leaves_nothing_behind(|| {
        Sandbox::builder()
            .namespaces(Namespaces::PID | Namespaces::MOUNT | Namespaces::NET)
            .build()
            .unwrap_err()
    });
    assert!(
        matches!(&err, Error::NotPermitted { what, .. } if what.contains("pid") && what.contains("net")),
        "{err}"
    );
    let err = Sandbox::builder().user(1, 1).build().unwrap_err();
    assert!(matches!(&err, Error::NotPermitted { .. }), "{err}");
}

#[test]
fn missing_id_map_helper_is_a_typed_error_naming_it() {
    let _serial = serial();
    if is_root() {
        return skip(
            "missing_id_map_helper_is_a_typed_error_naming_it",
            "root writes maps directly and needs no helper",
        );
    }
    let uid = nix::unistd::geteuid().as_raw();
    let gid = nix::unistd::getegid().as_raw();
    let sandbox = Sandbox::builder()
        .namespaces(Namespaces::USER)
        .uid_map([IdMap::new(0, uid, 1), IdMap::new(1, 200_000, 10)])
        .gid_map([IdMap::new(0, gid, 1)])
        .id_map_helpers("/nonexistent/newuidmap", "/nonexistent/newgidmap")
        .build()
        .unwrap();
    match leaves_nothing_behind(|| sandbox.command("/bin/true").status()) {
        Err(Error::IdMapHelper { helper, kind, .. }) => {
            assert_eq!(helper, std::path::Path::new("/nonexistent/newuidmap"));
            assert_eq!(kind, "uid");
        }
        other => panic!("expected IdMapHelper error, got {other:?}"),
    }
}

#[test]
fn bad_mount_and_root_settings_are_rejected_at_build_naming_the_path() {
    let _serial = serial();
    let ns = ns(Namespaces::PID | Namespaces::MOUNT);
    let file = tempfile::NamedTempFile::new().unwrap();
    let expect = |b: &mut stockade::SandboxBuilder, path: &str, what: &str| {
        let err = leaves_nothing_behind(|| b.build().unwrap_err());
        let text = err.to_string();
        assert!(
            text.contains(path) && text.contains(what),
            "expected an error naming {path:?} ({what}), got: {text}"
        );
        err
    };
    let with = |m: Mount| {
        let mut b = Sandbox::builder();
        b.namespaces(ns).mount(m);
        b
    };
    let err = expect(&mut with(Mount::tmpfs("tmp")), "tmp", "absolute");
    assert!(matches!(err, Error::InvalidPath { what: "mount target", .. }));
    let err = expect(&mut with(Mount::bind_ro("/no/such/source", "/x")), "/no/such/source", "No such file");
    assert!(
        matches!(err, Error::PathAccess { what: "bind source", ref source, .. } if source.kind() == ErrorKind::NotFound)
    );
    expect(&mut with(Mount::bind_ro("relative/source", "/x")), "relative/source", "absolute");
    expect(&mut with(Mount::tmpfs("/a/../../etc")), "/a/../../etc", "..");
    expect(&mut with(Mount::tmpfs("/tmp").size(0)), "/tmp", "size 0");
    expect(&mut with(Mount::tmpfs("/tmp").inodes(0)), "/tmp", "inode limit 0");
    expect(&mut with(Mount::tmpfs("/")), "/", "root itself");

    let mut twice = with(Mount::tmpfs("/tmp"));
    twice.mount(Mount::bind_ro("/usr", "/tmp"));
    expect(&mut twice, "/tmp", "earlier mount");
    let mut beneath = with(Mount::file("/etc/conf", "x"));
    beneath.mount(Mount::tmpfs("/etc/conf/sub"));
    expect(&mut beneath, "/etc/conf/sub", "beneath /etc/conf");

    let mut b = Sandbox::builder();
    b.namespaces(ns).root(Root::dir("/no/such/rootfs"));
    expect(&mut b, "/no/such/rootfs", "No such file");
    let mut b = Sandbox::builder();
    b.namespaces(ns).root(Root::dir(file.path()));
    expect(&mut b, &file.path().display().to_string(), "not a directory");
    let mut b = Sandbox::builder();
    b.namespaces(ns).root(Root::overlay(Vec::<&str>::new()));
    expect(&mut b, "overlay", "at least one lower");
    let mut b = Sandbox::builder();
    b.namespaces(ns).root(Root::tmpfs()).root_size(0);
    expect(&mut b, "root size", "0 bytes");
}

#[test]
fn mounts_and_special_filesystems_without_their_namespace_are_rejected() {
    let _serial = serial();
    let cases: [(Namespaces, Mount, &str); 4] = [
        (ns(Namespaces::PID), Mount::tmpfs("/tmp"), "mount"),
        (ns(Namespaces::MOUNT), Mount::proc("/proc"), "pid"),
        (ns(Namespaces::PID | Namespaces::MOUNT), Mount::mqueue("/dev/mqueue"), "ipc"),
        (Namespaces::USER | Namespaces::MOUNT, Mount::sysfs("/sys"), "net"),
    ];
    for (namespaces, mount, needs) in cases {
        let mut b = Sandbox::builder();
        b.namespaces(namespaces).mount(mount.clone());
        let err = b.build().unwrap_err();
        assert!(matches!(err, Error::NamespaceRequired { needs: n, .. } if n == needs), "{mount:?}: {err}");
    }
}

#[test]
fn a_mount_failing_inside_the_child_is_a_setup_error_naming_it_and_leaves_nothing_behind() {
    let _serial = serial();
    let host_before = std::fs::read_to_string("/proc/self/mountinfo").unwrap();
    // /usr is bound read-only first, so nothing can be created beneath it.
    let sandbox = Sandbox::builder()
        .namespaces(ns(Namespaces::PID | Namespaces::MOUNT))
        .root(Root::tmpfs())
        .mount(Mount::bind_ro("/usr", "/usr"))
        .mount(Mount::tmpfs("/usr/stockade-cannot-exist"))
        .build()
        .unwrap();
    let err = leaves_nothing_behind(|| sandbox.command("/usr/bin/true").spawn().unwrap_err());
    match err {
        Error::Setup { stage: Stage::Mount { what, target }, source } => {
            assert_eq!(what, "tmpfs");
            assert_eq!(target, std::path::Path::new("/usr/stockade-cannot-exist"));
            assert_eq!(source.raw_os_error(), Some(libc::EROFS));
        }
        other => panic!("expected Setup/Mount, got {other:?}"),
    }
    assert_eq!(std::fs::read_to_string("/proc/self/mountinfo").unwrap(), host_before);
}

#[test]
fn without_a_root_of_its_own_a_sandbox_never_creates_anything_on_the_host() {
    let _serial = serial();
    let missing = std::env::temp_dir().join(format!("stockade-must-not-exist-{}", std::process::id()));
    let ns = ns(Namespaces::PID | Namespaces::MOUNT);
    // A mount on a missing host path: an error naming it, and the path still does not exist.
    let sandbox = Sandbox::builder().namespaces(ns).mount(Mount::tmpfs(missing.join("sub"))).build().unwrap();
    let err = leaves_nothing_behind(|| sandbox.command("/bin/true").spawn().unwrap_err());
    match &err {
        Error::Setup { stage: Stage::Mount { target, .. }, source } => {
            assert_eq!(target, &missing.join("sub"));
            assert_eq!(source.raw_os_error(), Some(libc::ENOENT));
        }
        other => panic!("expected Setup/Mount, got {other:?}"),
    }
    assert!(!missing.exists(), "{} was created on the host", missing.display());
    // Directories and symlinks need a root of the sandbox's own.
    let err = Sandbox::builder().namespaces(ns).mount(Mount::dir(&missing)).build().unwrap_err();
    assert!(matches!(err, Error::InvalidPath { .. }), "{err}");
    assert!(!missing.exists());
}
