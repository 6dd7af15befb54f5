//! Least privilege by default (issue "Security II"): the syscall filter every sandbox gets and
//! the custom and OCI filters that replace it, Landlock rules, identity by name resolved in the
//! sandbox's own root, and the payload's umask and default environment. The attacks that the
//! default filter refuses, one per class, are in `escape_suite.rs`.

mod common;

use std::path::Path;

use common::*;
use stockade::{
    AccessFs, Action, ArgCmp, Cmp, Compat, Error, IdMap, Landlock, Mount, Namespaces, Root, Sandbox,
    SandboxBuilder, Scope, SyscallFilter, SyscallRule, UNTRUSTED_IDS,
};

fn text(out: &stockade::Output) -> String {
    format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr))
}

/// The recommended configuration, runnable in both modes (no cgroup delegation unprivileged).
fn untrusted() -> SandboxBuilder {
    let mut b = Sandbox::untrusted();
    if !is_root() {
        b.resource_compat(Compat::BestEffort);
    }
    b
}

fn status_field(status: &str, field: &str) -> String {
    status
        .lines()
        .find_map(|l| l.strip_prefix(&format!("{field}:")))
        .map(|v| v.trim().to_owned())
        .unwrap_or_else(|| panic!("no {field} in {status}"))
}

fn python(sandbox: &Sandbox, code: &str) -> stockade::Output {
    sandbox.command("/usr/bin/python3").args(["-c", code]).output().unwrap()
}

#[test]
fn the_payload_runs_filtered_with_no_new_privs_and_exactly_its_capabilities() {
    let status = sh_ok(&untrusted().build().unwrap(), "cat /proc/self/status");
    assert_eq!(status_field(&status, "Seccomp"), "2");
    assert_eq!(status_field(&status, "NoNewPrivs"), "1");
    for set in ["CapInh", "CapPrm", "CapEff", "CapBnd", "CapAmb"] {
        assert_eq!(status_field(&status, set), "0000000000000000", "{set}");
    }
    // A root payload with the default capabilities, in a user namespace: all five sets exactly.
    let status =
        sh_ok(&sandbox(Namespaces::USER | Namespaces::PID | Namespaces::MOUNT), "cat /proc/self/status");
    let want = stockade::DEFAULT_CAPABILITIES.iter().fold(0u64, |m, c| m | 1 << c.index());
    for set in ["CapInh", "CapPrm", "CapEff", "CapBnd", "CapAmb"] {
        assert_eq!(u64::from_str_radix(&status_field(&status, set), 16).unwrap(), want, "{set}");
    }
    assert_eq!(status_field(&status, "Seccomp"), "2");
    assert_eq!(status_field(&status, "NoNewPrivs"), "1");
}

#[test]
fn the_filter_and_landlock_hold_with_new_privileges_allowed_too() {
    // Without no_new_privs both go in before the credentials change, while the payload still
    // holds CAP_SYS_ADMIN in its user namespace.
    let mut b = untrusted();
    b.allow_new_privileges().landlock(Landlock::from_mounts());
    let out = sh_ok(
        &b.build().unwrap(),
        "grep -E '^(Seccomp|NoNewPrivs|CapEff)' /proc/self/status; touch /usr/x 2>&1; true",
    );
    assert!(out.contains("Seccomp:\t2") && out.contains("NoNewPrivs:\t0"), "{out}");
    assert!(out.contains("CapEff:\t0000000000000000"), "{out}");
    assert!(out.contains("touch: cannot touch '/usr/x'"), "{out}");
    // A custom filter that refuses what the child still calls then is refused at build.
    let mut b = untrusted();
    b.allow_new_privileges().syscall_filter(SyscallFilter::default_profile().refuse("setresuid"));
    assert!(matches!(b.build(), Err(Error::InvalidValue { what: "syscall filter", .. })));
    let mut b = untrusted();
    b.syscall_filter(SyscallFilter::default_profile().refuse("execve"));
    assert!(matches!(b.build(), Err(Error::InvalidValue { what: "syscall filter", .. })));
}

#[test]
fn running_without_a_filter_is_explicit() {
    let mut b = untrusted();
    b.no_syscall_filter();
    let status = sh_ok(&b.build().unwrap(), "cat /proc/self/status");
    assert_eq!(status_field(&status, "Seccomp"), "0");
    // Filters are per sandbox: this one changed nothing for the next.
    let status = sh_ok(&untrusted().build().unwrap(), "cat /proc/self/status");
    assert_eq!(status_field(&status, "Seccomp"), "2");
}

#[test]
fn bad_rules_are_typed_errors_at_build_naming_the_rule() {
    let cases: Vec<(SyscallFilter, &str)> = vec![
        (SyscallFilter::default_profile().allow("no_such_call"), "no_such_call"),
        (SyscallFilter::default_profile().allow("uname").refuse("uname"), "uname"),
        (
            SyscallFilter::default_profile()
                .rule(SyscallRule::new("kill", Action::Allow).when(ArgCmp::new(1, Cmp::Eq(0))))
                .rule(SyscallRule::new("kill", Action::Errno(1)).when(ArgCmp::new(1, Cmp::Eq(0)))),
            "kill",
        ),
        (SyscallFilter::default_profile().rule(SyscallRule::new("read", Action::Errno(0))), "0"),
        (SyscallFilter::default_profile().rule(SyscallRule::new("read", Action::Errno(5000))), "5000"),
        (SyscallFilter::empty(Action::Errno(-1)), "-1"),
        (
            SyscallFilter::default_profile()
                .rule(SyscallRule::new("read", Action::Allow).when(ArgCmp::new(6, Cmp::Eq(0)))),
            "read",
        ),
        (
            SyscallFilter::default_profile().rule(
                (0..7).fold(SyscallRule::new("read", Action::Allow), |r, i| {
                    r.when(ArgCmp::new(i % 6, Cmp::Ne(i as u64)))
                }),
            ),
            "read",
        ),
    ];
    for (filter, named) in cases {
        match untrusted().syscall_filter(filter.clone()).build() {
            Err(Error::InvalidValue { value, .. }) => {
                assert!(value.contains(named), "{value} for {filter:?}")
            }
            other => panic!("{filter:?}: {other:?}"),
        }
    }
}

#[test]
fn custom_rules_act_per_argument_and_replace_the_base_per_call() {
    if !have("/usr/bin/python3") {
        return skip("custom_rules_act_per_argument_and_replace_the_base_per_call", "python3 missing");
    }
    // getpriority(PRIO_PGRP, 0) fails with EXDEV; getpriority(PRIO_PROCESS, 0) still works; and
    // chroot, which the default profile refuses without CAP_SYS_CHROOT, now gets ENOTSUP.
    let filter = SyscallFilter::default_profile()
        .rule(SyscallRule::new("getpriority", Action::Errno(libc::EXDEV)).when(ArgCmp::low32(0, Cmp::Eq(1))))
        .rule(SyscallRule::new("chroot", Action::Errno(libc::ENOTSUP)));
    let code = "import os\n\
                try:\n    os.getpriority(os.PRIO_PGRP, 0); print('pgrp ok')\n\
                except OSError as e: print('pgrp', e.errno)\n\
                print('process', os.getpriority(os.PRIO_PROCESS, 0))\n\
                try:\n    os.chroot('/')\n\
                except OSError as e: print('chroot', e.errno)\n";
    let out = python(&untrusted().syscall_filter(filter).build().unwrap(), code);
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        format!("pgrp {}\nprocess 0\nchroot {}\n", libc::EXDEV, libc::ENOTSUP),
        "{}",
        text(&out)
    );
    // The default profile alone: both work, chroot is EPERM.
    let out = python(&untrusted().build().unwrap(), code);
    assert_eq!(String::from_utf8_lossy(&out.stdout), format!("pgrp ok\nprocess 0\nchroot {}\n", libc::EPERM));
}

#[test]
fn a_filter_from_nothing_applies_its_action_to_every_call_it_does_not_name() {
    // A deny-list: everything runs but getppid, which kills the process.
    let filter = SyscallFilter::empty(Action::Allow).rule(SyscallRule::new("getppid", Action::KillProcess));
    let sandbox = untrusted().syscall_filter(filter).build().unwrap();
    let out = python(&sandbox, "import os; print('before', flush=True); os.getppid(); print('after')");
    assert_eq!(String::from_utf8_lossy(&out.stdout), "before\n", "{}", text(&out));
    assert_eq!(out.status.signal(), Some(libc::SIGSYS), "{}", out.status);
}

#[cfg(feature = "oci")]
#[test]
fn oci_and_docker_profiles_load_into_the_same_filter() {
    // An OCI profile: mkdir refused with EACCES, a name of another architecture skipped.
    let oci = r#"{
        "defaultAction": "SCMP_ACT_ALLOW",
        "architectures": ["SCMP_ARCH_X86_64", "SCMP_ARCH_AARCH64"],
        "syscalls": [
            {"names": ["mkdir", "mkdirat", "chown32"], "action": "SCMP_ACT_ERRNO", "errnoRet": 13},
            {"names": ["uname"], "action": "SCMP_ACT_ERRNO", "errnoRet": 18,
             "includes": {"caps": ["CAP_SYS_ADMIN"]}},
            {"names": ["rmdir"], "action": "SCMP_ACT_ERRNO", "errnoRet": 18,
             "excludes": {"caps": ["CAP_SYS_ADMIN"]}}
        ]
    }"#;
    let filter = SyscallFilter::from_oci_json(oci).unwrap();
    let sandbox = untrusted().syscall_filter(filter).build().unwrap();
    let out =
        sh(&sandbox, "mkdir /tmp/d; echo mkdir $?; uname >/dev/null; echo uname $?; rmdir /tmp/none 2>&1");
    // uname's rule needs CAP_SYS_ADMIN, which the payload lacks; rmdir's applies without it.
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        "mkdir 1\nuname 0\nrmdir: failed to remove '/tmp/none': Invalid cross-device link\n",
        "{}",
        text(&out)
    );
    assert!(String::from_utf8_lossy(&out.stderr).contains("Permission denied"), "{}", text(&out));
    // What a runtime cannot carry out is a typed error.
    let notify = r#"{"defaultAction": "SCMP_ACT_ALLOW", "syscalls": [{"names": ["read"], "action": "SCMP_ACT_NOTIFY"}]}"#;
    assert!(matches!(SyscallFilter::from_oci_json(notify), Err(Error::Unsupported { .. })));
    assert!(matches!(SyscallFilter::from_oci_json("{"), Err(Error::InvalidValue { .. })));
}

/// A Landlock ABI of at least `abi` on this kernel; otherwise logs the skip of `test`.
fn landlock_abi() -> i32 {
    // SAFETY: a version query reads no memory.
    let v = unsafe { libc::syscall(libc::SYS_landlock_create_ruleset, std::ptr::null::<u8>(), 0usize, 1u32) };
    v.max(0) as i32
}

#[test]
fn landlock_limits_the_payload_to_the_paths_and_rights_given() {
    if landlock_abi() < 1 {
        let built = untrusted().landlock(Landlock::new().read("/usr")).build();
        assert!(matches!(built, Err(Error::Unsupported { .. })), "{built:?}");
        return skip(
            "landlock_limits_the_payload_to_the_paths_and_rights_given",
            "no Landlock on this kernel",
        );
    }
    let host = tempdir();
    std::fs::write(host.path().join("sentinel"), "untouched").unwrap();
    open_up(host.path());
    // Writable for anyone: only Landlock stands between the payload and the directory.
    std::fs::set_permissions(host.path(), std::os::unix::fs::PermissionsExt::from_mode(0o777)).unwrap();
    std::fs::set_permissions(
        host.path().join("sentinel"),
        std::os::unix::fs::PermissionsExt::from_mode(0o666),
    )
    .unwrap();
    let mut rules = Landlock::new().read_exec("/usr").read_write("/tmp").read("/data");
    for dir in ["/lib", "/lib64", "/bin"] {
        // Directories of their own (not merged-usr links, which /usr covers).
        if std::fs::symlink_metadata(dir).is_ok_and(|m| m.is_dir()) {
            rules = rules.read_exec(dir);
        }
    }
    let mut b = untrusted();
    b.mount(Mount::bind(host.path(), "/data")).landlock(rules);
    let code = "import os\n\
                open('/tmp/x', 'w').write('mine'); print('tmp', open('/tmp/x').read())\n\
                print('data', open('/data/sentinel').read())\n\
                for what, f in [('write data', lambda: open('/data/sentinel', 'w')),\n\
                                ('create data', lambda: open('/data/new', 'w')),\n\
                                ('list proc', lambda: os.listdir('/proc'))]:\n\
                \x20   try:\n        f(); print(what, 'allowed')\n\
                \x20   except PermissionError as e: print(what, e.errno)\n";
    let out = python(&b.build().unwrap(), code);
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        "tmp mine\ndata untouched\nwrite data 13\ncreate data 13\nlist proc 13\n",
        "{}",
        text(&out)
    );
    assert_eq!(std::fs::read_to_string(host.path().join("sentinel")).unwrap(), "untouched");
    assert!(!host.path().join("new").exists());
    // A rule for a path the sandbox lacks fails the spawn, naming it.
    let mut b = untrusted();
    b.landlock(Landlock::new().read("/no/such/dir"));
    match b.build().unwrap().command("/bin/true").status() {
        Err(Error::Setup { stage: stockade::Stage::Landlock { path }, source }) => {
            assert_eq!(path, Path::new("/no/such/dir"));
            assert_eq!(source.raw_os_error(), Some(libc::ENOENT));
        }
        other => panic!("{other:?}"),
    }
    // A rule through a symlink (a planted one would widen it) fails the spawn, naming it.
    let mut b = untrusted();
    b.mount(Mount::symlink("/usr", "/tmp-link")).landlock(Landlock::new().read("/tmp-link"));
    match b.build().unwrap().command("/bin/true").status() {
        Err(Error::Setup { stage: stockade::Stage::Landlock { path }, source }) => {
            assert_eq!(path, Path::new("/tmp-link"));
            assert_eq!(source.raw_os_error(), Some(libc::ELOOP));
        }
        other => panic!("{other:?}"),
    }
    // Relative paths are refused at build.
    assert!(matches!(
        untrusted().landlock(Landlock::new().read("tmp")).build(),
        Err(Error::InvalidPath { .. })
    ));
}

#[test]
fn landlock_network_and_scopes_are_enforced_or_reported_as_the_kernel_allows() {
    let abi = landlock_abi();
    let rules =
        || Landlock::new().read_write("/").allow("/", AccessFs::Execute).tcp_bind(8080).scope(Scope::Signal);
    if abi < 6 {
        // The older-kernel lane: enforcing is a typed error; best effort runs and says what is
        // missing.
        let built = untrusted().landlock(rules()).build();
        assert!(matches!(built, Err(Error::Unsupported { .. })), "abi {abi}: {built:?}");
        let sandbox = untrusted().landlock(rules().compat(Compat::BestEffort)).build().unwrap();
        let child = sandbox.command("/bin/true").spawn().unwrap();
        let missing = child.unenforced().to_vec();
        let want: &[&str] = match abi {
            0 => &[stockade::LANDLOCK],
            1..=3 => &[stockade::LANDLOCK_NETWORK, stockade::LANDLOCK_SCOPES, stockade::LANDLOCK_FILE_RIGHTS],
            4 => &[stockade::LANDLOCK_SCOPES, stockade::LANDLOCK_FILE_RIGHTS],
            _ => &[stockade::LANDLOCK_SCOPES],
        };
        for w in want {
            assert!(missing.contains(w), "abi {abi}: {missing:?}");
        }
        return skip(
            "landlock_network_and_scopes_are_enforced_or_reported_as_the_kernel_allows",
            &format!("Landlock ABI {abi}: only the refusal and the report were checked"),
        );
    }
    if !have("/usr/bin/python3") {
        return skip(
            "landlock_network_and_scopes_are_enforced_or_reported_as_the_kernel_allows",
            "python3 missing",
        );
    }
    let code = "import socket, os\n\
                for port in (8080, 8081):\n\
                \x20   s = socket.socket()\n\
                \x20   try:\n        s.bind(('127.0.0.1', port)); print(port, 'bound')\n\
                \x20   except PermissionError as e: print(port, e.errno)\n\
                try:\n    os.kill(1, 0); print('signal init allowed')\n\
                except PermissionError as e: print('signal init', e.errno)\n";
    let out = python(&untrusted().landlock(rules()).build().unwrap(), code);
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        "8080 bound\n8081 13\nsignal init 1\n",
        "{}",
        text(&out)
    );
    // Control: without these rules (the preset's own scope signals too) the init can be
    // signalled and any port bound.
    let out = python(&untrusted().landlock(Landlock::from_mounts()).build().unwrap(), code);
    assert_eq!(String::from_utf8_lossy(&out.stdout), "8080 bound\n8081 bound\nsignal init allowed\n");
}

/// A root of the sandbox's own with `/etc/passwd` and `/etc/group` bound at `/etc`, and the ids
/// mapped a range wide; `None` (skip logged) without a range for the unprivileged user.
fn with_own_etc(test: &str, passwd: &str, group: &str) -> Option<(SandboxBuilder, common::TempDir)> {
    let mut b = with_id_range(test)?;
    let etc = tempdir();
    std::fs::write(etc.path().join("passwd"), passwd).unwrap();
    std::fs::write(etc.path().join("group"), group).unwrap();
    open_up(etc.path());
    b.mount(Mount::bind_ro(etc.path(), "/etc"));
    Some((b, etc))
}

/// The recommended configuration with 65536 ids mapped (as root its own range; unprivileged,
/// nobody's subordinate range); `None` (skip logged) without one.
fn with_id_range(test: &str) -> Option<SandboxBuilder> {
    let base = if is_root() {
        UNTRUSTED_IDS
    } else {
        let subuid = std::fs::read_to_string("/etc/subuid").unwrap_or_default();
        match subuid.lines().find_map(|l| l.strip_prefix("nobody:")).and_then(|r| r.split(':').next()) {
            Some(start) => start.parse().unwrap(),
            None => {
                skip(test, "no subordinate id range for nobody in /etc/subuid");
                return None;
            }
        }
    };
    let mut b = untrusted();
    b.uid_map([IdMap::new(0, base, 65536)]).gid_map([IdMap::new(0, base, 65536)]);
    Some(b)
}

#[test]
fn a_user_named_in_the_sandboxs_own_passwd_runs_with_its_ids_groups_and_home() {
    let test = "a_user_named_in_the_sandboxs_own_passwd_runs_with_its_ids_groups_and_home";
    let passwd = "root:x:0:0:root:/root:/bin/sh\napp:x:1000:1000:App:/home/app:/bin/sh\n";
    let group = "root:x:0:\napp:x:1000:\nstaff:x:50:app,other\naudio:x:29:other\n";
    let Some((mut b, _etc)) = with_own_etc(test, passwd, group) else { return };
    b.user_name("app");
    let out = sh_ok(&b.build().unwrap(), "id -u; id -g; id -G; echo $HOME; echo $PATH");
    assert_eq!(
        out,
        "1000\n1000\n1000 50\n/home/app\n/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin\n"
    );
    // A read-only remount of /etc keeps what the bind put there.
    let mut ro = b.clone();
    ro.mount(Mount::read_only_path("/etc"));
    assert_eq!(sh_ok(&ro.build().unwrap(), "id -u"), "1000\n");
    // user:group by name: that group, no supplementary ones.
    b.user_name("app:audio");
    assert_eq!(sh_ok(&b.build().unwrap(), "id -u; id -G"), "1000\n29\n");
    // A name the host has and the sandbox's passwd lacks is a typed error naming it.
    let host_only = std::fs::read_to_string("/etc/passwd")
        .unwrap()
        .lines()
        .filter_map(|l| l.split(':').next().map(str::to_owned))
        .find(|n| !passwd.contains(&format!("{n}:")))
        .unwrap();
    b.user_name(host_only.clone());
    match b.build() {
        Err(Error::InvalidValue { what: "user", value, reason }) => {
            assert_eq!(value, host_only);
            assert!(reason.contains("/etc/passwd"), "{reason}");
        }
        other => panic!("{other:?}"),
    }
    // A later mount hides the bound /etc: the name is not looked up where the payload will not
    // see it.
    b.user_name("app").mount(Mount::tmpfs("/etc"));
    match b.build() {
        Err(Error::InvalidValue { what: "user", reason, .. }) => assert!(reason.contains("/etc"), "{reason}"),
        other => panic!("{other:?}"),
    }
    // Databases given as files of the sandbox's own (in its tmpfs root).
    if let Some(mut b) = with_id_range(test) {
        b.mount(Mount::file("/etc/passwd", passwd.replace("app:", "file-app:")))
            .mount(Mount::file("/etc/group", group.replace("app", "file-app")))
            .user_name("file-app");
        assert_eq!(sh_ok(&b.build().unwrap(), "id -u; id -G; echo $HOME"), "1000\n1000 50\n/home/file-app\n");
    }
    // Databases given as host files bound at their paths.
    if let Some(mut b) = with_id_range(test) {
        let files = tempdir();
        std::fs::write(files.path().join("passwd"), passwd.replace("app:", "bound-app:")).unwrap();
        std::fs::write(files.path().join("group"), group.replace("app", "bound-app")).unwrap();
        open_up(files.path());
        b.mount(Mount::bind_ro(files.path().join("passwd"), "/etc/passwd"))
            .mount(Mount::bind_ro(files.path().join("group"), "/etc/group"))
            .user_name("bound-app");
        assert_eq!(
            sh_ok(&b.build().unwrap(), "id -u; id -G; echo $HOME"),
            "1000\n1000 50\n/home/bound-app\n"
        );
    }
    // A root without /etc: names cannot be resolved (numeric ids still can).
    let mut b = untrusted();
    b.user_name("app");
    assert!(matches!(b.build(), Err(Error::InvalidValue { what: "user", .. })));
}

#[test]
fn commands_get_umask_path_and_home_defaults_unless_set() {
    let mut b = rooted(Namespaces::all(), Root::tmpfs());
    let sandbox = b.build().unwrap();
    assert_eq!(
        sh_ok(&sandbox, "umask; echo $HOME; echo $PATH"),
        "0022\n/\n/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin\n"
    );
    b.umask(0o077);
    let out = b
        .build()
        .unwrap()
        .command("/bin/sh")
        .args(["-c", "umask; echo $HOME; echo $PATH"])
        .env("HOME", "/x")
        .env("PATH", "/bin")
        .output()
        .unwrap();
    assert_eq!(String::from_utf8_lossy(&out.stdout), "0077\n/x\n/bin\n");
    assert!(matches!(b.umask(0o1000).build(), Err(Error::InvalidValue { what: "umask", .. })));
}

#[test]
fn stockade_spawns_under_its_own_default_filter_which_refuses_clone3() {
    // The `run` example as the payload of a filtered sandbox: its clone3 gets ENOSYS, it falls
    // back to clone, and its own sandbox (no namespaces: new user namespaces are refused) runs
    // under a second copy of the filter.
    let mut b = untrusted();
    b.mount(Mount::bind_ro(run_example(), "/stockade-run"));
    let out = b
        .build()
        .unwrap()
        .command("/stockade-run")
        .args(["--ns", "none", "--", "/bin/sh", "-c", "grep -E '^Seccomp_filters' /proc/self/status"])
        .output()
        .unwrap();
    let said = text(&out);
    assert!(out.status.success(), "{said}");
    assert!(said.contains("Seccomp_filters:\t2"), "{said}");
    // And a nested sandbox that asks for a user namespace is refused, with the reason.
    let out = b
        .build()
        .unwrap()
        .command("/stockade-run")
        .args(["--ns", "user", "--", "/bin/true"])
        .output()
        .unwrap();
    assert!(!out.status.success(), "{}", text(&out));
    assert!(text(&out).contains("Operation not permitted"), "{}", text(&out));
}
