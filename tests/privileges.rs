//! What the payload may do as a process (security.md A6): exactly the capabilities asked for,
//! in all five sets, and no privileges gained through set-user-ID programs.
//!
//! The tests run one at a time (`serial`): two of them write a program and then exec it, which
//! fails with ETXTBSY while a sandbox another test clones meanwhile still holds the copy's
//! descriptor.

mod common;

use common::*;
use stockade::{Capability, DEFAULT_CAPABILITIES, Error, Namespaces, Sandbox};

/// The payload's five capability sets, from its /proc/self/status.
fn capability_sets(sandbox: &Sandbox) -> Vec<(String, u64)> {
    sh_ok(sandbox, "grep -E '^Cap(Inh|Prm|Eff|Bnd|Amb)' /proc/self/status")
        .lines()
        .map(|l| {
            let (name, hex) = l.split_once(':').unwrap();
            (name.to_owned(), u64::from_str_radix(hex.trim(), 16).unwrap())
        })
        .collect()
}

fn mask(caps: &[Capability]) -> u64 {
    caps.iter().fold(0, |m, c| m | 1 << c.index())
}

fn assert_all_five(sets: &[(String, u64)], expected: u64) {
    assert_eq!(sets.len(), 5, "{sets:?}");
    for (name, value) in sets {
        assert_eq!(*value, expected, "{name} is {value:#x}, expected {expected:#x}: {sets:?}");
    }
}

#[test]
fn a_root_payload_has_exactly_the_default_capabilities_in_all_five_sets() {
    // One at a time: two tests here write a program and then exec it, which fails with ETXTBSY
    // while a sandbox cloned meanwhile by another test still holds the copy\'s descriptor.
    let _serial = serial();
    assert_all_five(&capability_sets(&sandbox(Namespaces::all())), mask(DEFAULT_CAPABILITIES));
    if is_root() {
        // Real root without a user namespace: the same set, not the host's full one.
        assert_all_five(&capability_sets(&sandbox(Namespaces::empty())), mask(DEFAULT_CAPABILITIES));
    }
}

#[test]
fn requested_capabilities_are_exactly_what_the_payload_gets() {
    // One at a time: two tests here write a program and then exec it, which fails with ETXTBSY
    // while a sandbox cloned meanwhile by another test still holds the copy\'s descriptor.
    let _serial = serial();
    for set in [vec![], vec![Capability::CAP_NET_RAW, Capability::CAP_KILL], vec![Capability::CAP_SYS_ADMIN]]
    {
        let sandbox = builder(Namespaces::all()).capabilities(set.clone()).build().unwrap();
        assert_all_five(&capability_sets(&sandbox), mask(&set));
    }
}

#[test]
fn a_payload_switched_to_another_user_has_no_capabilities_but_keeps_the_bounding_set() {
    // One at a time: two tests here write a program and then exec it, which fails with ETXTBSY
    // while a sandbox cloned meanwhile by another test still holds the copy\'s descriptor.
    let _serial = serial();
    if !is_root() {
        return skip(
            "a_payload_switched_to_another_user_has_no_capabilities_but_keeps_the_bounding_set",
            "needs root to switch uid without a map range",
        );
    }
    let sets = capability_sets(&Sandbox::builder().user(1000, 1000).build().unwrap());
    for (name, value) in &sets {
        // As Docker and runc: nothing held, the default set as the bound of what exec may give.
        let expected = if name == "CapBnd" { mask(DEFAULT_CAPABILITIES) } else { 0 };
        assert_eq!(*value, expected, "{name}: {sets:?}");
    }
    let sandbox =
        Sandbox::builder().user(1000, 1000).capabilities([Capability::CAP_NET_BIND_SERVICE]).build().unwrap();
    assert_all_five(&capability_sets(&sandbox), mask(&[Capability::CAP_NET_BIND_SERVICE]));
}

#[test]
fn a_non_root_payload_runs_programs_with_file_capabilities_without_gaining_them() {
    // One at a time: two tests here write a program and then exec it, which fails with ETXTBSY
    // while a sandbox cloned meanwhile by another test still holds the copy\'s descriptor.
    let _serial = serial();
    if !is_root() {
        return skip(
            "a_non_root_payload_runs_programs_with_file_capabilities_without_gaining_them",
            "setting file capabilities (security.capability) needs root",
        );
    }
    use std::os::unix::fs::PermissionsExt;
    let dir = tempdir();
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    let cat = dir.path().join("capcat");
    std::fs::copy("/bin/cat", &cat).unwrap();
    std::fs::set_permissions(&cat, std::fs::Permissions::from_mode(0o755)).unwrap();
    // cap_net_raw+ep, as `setcap` writes it (struct vfs_cap_data, revision 2, effective bit).
    let mut xattr = Vec::new();
    for word in [0x0200_0001u32, 1 << Capability::CAP_NET_RAW.index(), 0, 0, 0] {
        xattr.extend_from_slice(&word.to_le_bytes());
    }
    let path = std::ffi::CString::new(cat.as_os_str().as_encoded_bytes()).unwrap();
    // SAFETY: NUL-terminated path and name; `xattr` is a live buffer of the length passed.
    let set = unsafe {
        libc::setxattr(path.as_ptr(), c"security.capability".as_ptr(), xattr.as_ptr().cast(), xattr.len(), 0)
    };
    assert_eq!(set, 0, "setxattr: {}", std::io::Error::last_os_error());
    let sandbox = Sandbox::builder().user(1000, 1000).build().unwrap();
    let out = sandbox.command(&cat).arg("/proc/self/status").output().unwrap();
    assert!(out.status.success(), "{}: {}", out.status, String::from_utf8_lossy(&out.stderr));
    let status = String::from_utf8_lossy(&out.stdout);
    let field = |name: &str| {
        let line = status.lines().find(|l| l.starts_with(name)).unwrap();
        u64::from_str_radix(line.split_whitespace().nth(1).unwrap(), 16).unwrap()
    };
    // Under no_new_privs the file's capability is not granted.
    assert_eq!((field("CapEff:"), field("CapPrm:")), (0, 0), "{status}");
    assert_eq!(field("CapBnd:"), mask(DEFAULT_CAPABILITIES), "{status}");
}

#[test]
fn no_new_privs_is_on_unless_allowed() {
    // One at a time: two tests here write a program and then exec it, which fails with ETXTBSY
    // while a sandbox cloned meanwhile by another test still holds the copy\'s descriptor.
    let _serial = serial();
    let on = sh_ok(&sandbox(Namespaces::all()), "grep NoNewPrivs /proc/self/status");
    assert_eq!(on.split_whitespace().nth(1), Some("1"));
    let sandbox = builder(Namespaces::all()).allow_new_privileges().build().unwrap();
    let off = sh_ok(&sandbox, "grep NoNewPrivs /proc/self/status");
    assert_eq!(off.split_whitespace().nth(1), Some("0"));
}

#[test]
fn a_setuid_root_program_gains_nothing_under_no_new_privs() {
    // One at a time: two tests here write a program and then exec it, which fails with ETXTBSY
    // while a sandbox cloned meanwhile by another test still holds the copy\'s descriptor.
    let _serial = serial();
    if !is_root() {
        return skip(
            "a_setuid_root_program_gains_nothing_under_no_new_privs",
            "creating a setuid-root program needs root",
        );
    }
    use std::os::unix::fs::PermissionsExt;
    let dir = tempdir();
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    let id = dir.path().join("id");
    std::fs::copy("/usr/bin/id", &id).unwrap();
    std::fs::set_permissions(&id, std::fs::Permissions::from_mode(0o4755)).unwrap();
    let run = |sandbox: &Sandbox| String::from_utf8(sandbox.command(&id).output().unwrap().stdout).unwrap();
    let guarded = run(&Sandbox::builder().user(1000, 1000).build().unwrap());
    assert!(guarded.starts_with("uid=1000") && !guarded.contains("euid=0"), "{guarded}");
    // Control: the same program does make root of its caller when new privileges are allowed.
    let allowed = run(&Sandbox::builder().user(1000, 1000).allow_new_privileges().build().unwrap());
    assert!(allowed.contains("euid=0"), "control did not gain root: {allowed}");
}

#[test]
fn capabilities_cannot_be_granted_by_an_unprivileged_caller_without_a_user_namespace() {
    // One at a time: two tests here write a program and then exec it, which fails with ETXTBSY
    // while a sandbox cloned meanwhile by another test still holds the copy\'s descriptor.
    let _serial = serial();
    if is_root() {
        return skip("capabilities_cannot_be_granted_by_an_unprivileged_caller", "root can grant them");
    }
    let err = Sandbox::builder().capabilities([Capability::CAP_NET_RAW]).build().unwrap_err();
    assert!(matches!(err, Error::NotPermitted { .. }), "{err}");
}
