//! Reaching the host through shared kernel objects and host-side paths (security.md, section E):
//! cgroupfs, keyrings, symlinks planted in host paths, payload root as host root, the init as a
//! copy of the embedding program, passed descriptors, an embedder killed at any instant. Each
//! test attacks the way a payload would and checks the effect on the host.

mod common;

use std::io::BufRead;
use std::os::fd::OwnedFd;
use std::path::{Path, PathBuf};
use std::time::Duration;

use common::*;
use stockade::{Error, IdMap, Mount, Namespaces, Root, Sandbox, Stage, Stdio, UNTRUSTED_IDS};

fn text(out: &stockade::Output) -> String {
    format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr))
}

/// A host process in a cgroup of its own in the v1 freezer and pids hierarchies (root only), the
/// sentinel the payload must neither freeze nor kill. Removed on drop.
struct HostSentinel {
    process: HostProcess,
    groups: Vec<PathBuf>,
}

impl HostSentinel {
    fn new(name: &str) -> HostSentinel {
        let process = HostProcess::sleeper();
        let mut groups = Vec::new();
        for hierarchy in ["freezer", "pids"] {
            let dir = Path::new("/sys/fs/cgroup").join(hierarchy).join(name);
            if std::fs::create_dir(&dir).is_ok() {
                std::fs::write(dir.join("cgroup.procs"), process.id().to_string()).unwrap();
                groups.push(dir);
            }
        }
        HostSentinel { process, groups }
    }

    /// Alive, and its freezer group thawed.
    fn assert_untouched(&mut self) {
        assert!(self.process.try_wait().unwrap().is_none(), "the host process was killed");
        for g in &self.groups {
            if let Ok(state) = std::fs::read_to_string(g.join("freezer.state")) {
                assert_eq!(state.trim(), "THAWED", "the host process was frozen");
            }
            let procs = std::fs::read_to_string(g.join("cgroup.procs")).unwrap();
            assert_eq!(procs.trim(), self.process.id().to_string(), "{}", g.display());
            assert!(common::children_dirs(g).is_empty(), "a group appeared in {}", g.display());
        }
    }
}

impl Drop for HostSentinel {
    fn drop(&mut self) {
        // The process first, then its emptied groups.
        let _ = self.process.0.kill();
        let _ = self.process.0.wait();
        for g in &self.groups {
            let _ = std::fs::remove_dir(g);
        }
    }
}

#[test]
fn a_payload_that_mounts_cgroupfs_itself_sees_and_raises_nothing_of_the_host() {
    if !have("/usr/bin/unshare") || !have("/usr/bin/python3") {
        return skip(
            "a_payload_that_mounts_cgroupfs_itself_sees_and_raises_nothing_of_the_host",
            "util-linux unshare or python3 missing for the attack",
        );
    }
    let _serial = serial();
    let sentinel_name = format!("stockade-sentinel-{}", std::process::id());
    let mut sentinel = is_root().then(|| HostSentinel::new(&sentinel_name));
    let mut b = rooted(Namespaces::all(), Root::tmpfs());
    b.mount(Mount::tmpfs("/tmp"));
    if is_root() {
        b.memory_limit(64 << 20).pids_limit(64);
    }
    // The default syscall filter refuses the first step, a nested user namespace.
    let filtered = sh(&b.build().unwrap(), "unshare -UCm --map-root-user true; echo unshare $?");
    assert_eq!(String::from_utf8_lossy(&filtered.stdout), "unshare 1\n", "{}", text(&filtered));
    // The confinement beneath it, without the filter.
    let sandbox = b.no_syscall_filter().build().unwrap();
    // The attack: a nested user + mount + cgroup namespace (allowed without the filter), every
    // hierarchy mounted, a look around, every write that would matter, then memory beyond the
    // limit.
    let script = r#"
        cat /proc/self/cgroup | sed 's/^/self /'
        unshare -UCm --map-root-user sh -c '
          for h in freezer pids memory devices cpu systemd; do
            mkdir -p /tmp/$h
            o=$h; [ $h = systemd ] && o=none,name=systemd
            mount -t cgroup -o $o cgroup /tmp/$h 2>/dev/null && echo mounted $h
          done
          mkdir -p /tmp/unified; mount -t cgroup2 none /tmp/unified 2>/dev/null && echo mounted unified
          for d in /tmp/*/*/; do [ -d "$d" ] && echo group $d; done
          mountpoint -q /tmp/pids && echo max > /tmp/pids/pids.max 2>/dev/null && echo raised pids
          mountpoint -q /tmp/memory && echo -1 > /tmp/memory/memory.limit_in_bytes 2>/dev/null && echo raised memory
          mountpoint -q /tmp/freezer && mkdir /tmp/freezer/escape 2>/dev/null && echo made-group
          echo max > /tmp/unified/pids.max 2>/dev/null && echo raised pids
          echo max > /tmp/unified/memory.max 2>/dev/null && echo raised memory
          mkdir /tmp/unified/escape 2>/dev/null && echo made-group
          for f in /tmp/freezer/*/freezer.state; do echo FROZEN > $f 2>/dev/null && echo froze $f; done
        '
        python3 -c 'b = bytearray(256 << 20); print("allocated", len(b))'
    "#;
    let out = sh(&sandbox, script);
    let said = text(&out);
    // The attack ran: the hierarchies were mounted (v1 ones only where the host has v1).
    let v1 = std::path::Path::new("/sys/fs/cgroup/freezer").exists();
    assert!((said.contains("mounted freezer") || !v1) && said.contains("mounted unified"), "{said}");
    // Nothing above the sandbox's own group is visible: no host or embedder group names.
    if is_root() {
        for line in said.lines().filter(|l| l.starts_with("group ")) {
            assert!(line.ends_with("/escape/"), "the payload sees a group beyond its own: {line}\n{said}");
        }
    } else {
        skip(
            "a_payload_that_mounts_cgroupfs_itself_sees_and_raises_nothing_of_the_host (visibility)",
            "without cgroup delegation the sandbox has no groups of its own: the payload sees the \
             embedding program's groups (none writable to it, checked below)",
        );
    }
    for line in said.lines().filter(|l| l.starts_with("self ")) {
        if is_root() {
            assert!(line.ends_with(":/"), "the payload's cgroup path reveals the host's: {line}");
        }
    }
    for line in said.lines().filter(|l| l.starts_with("froze ")) {
        // Only a group of its own making (inside its own) can it freeze.
        assert!(is_root() && line.contains("/escape/"), "{line}\n{said}");
    }
    if is_root() {
        // Its own leaf it may change, but it can neither nest groups in it nor freeze it; the
        // limits above it hold.
        assert!(!said.contains("made-group"), "{said}");
        assert!(!said.contains("allocated"), "the memory limit was raised: {said}");
        assert!(out.status.usage().oom_killed, "{}: {said}", out.status);
        sentinel.as_mut().unwrap().assert_untouched();
        assert_no_group_named("escape");
    } else {
        // Without cgroup delegation the sandbox has no group of its own, and nothing of the
        // embedder's groups is writable for its ids.
        for forbidden in ["raised pids", "raised memory", "made-group"] {
            assert!(!said.contains(forbidden), "{forbidden}: {said}");
        }
    }
}

/// Fails if a directory called `name` exists anywhere under /sys/fs/cgroup (a few levels deep).
fn assert_no_group_named(name: &str) {
    let mut stack = vec![(PathBuf::from("/sys/fs/cgroup"), 0)];
    while let Some((dir, depth)) = stack.pop() {
        for child in children_dirs(&dir) {
            assert!(child.file_name().is_none_or(|n| n != name), "{} outlived the sandbox", child.display());
            if depth < 7 {
                stack.push((child, depth + 1));
            }
        }
    }
}

/// The key's payload, read by this process through its session keyring.
fn keyctl(args: [libc::c_ulong; 4]) -> libc::c_long {
    // SAFETY: keyctl with integer arguments (callers pass pointers to live buffers as needed).
    unsafe { libc::syscall(libc::SYS_keyctl, args[0], args[1], args[2], args[3]) }
}

#[test]
fn every_sandbox_has_its_own_session_keyring() {
    if !have("/usr/bin/python3") {
        return skip("every_sandbox_has_its_own_session_keyring", "python3 missing for the probe");
    }
    const KEY_SPEC_SESSION_KEYRING: i32 = -3;
    let desc = format!("stockade-secret-{}", std::process::id());
    let secret = b"s3cret-value";
    let key = add_user_key(&desc, secret, KEY_SPEC_SESSION_KEYRING);
    let contents = || {
        let mut buf = [0u8; 4096];
        let n =
            keyctl([11, KEY_SPEC_SESSION_KEYRING as libc::c_ulong, buf.as_mut_ptr() as _, buf.len() as _]);
        buf[..n.max(0) as usize].to_vec()
    };
    let before = contents();
    let probe = format!(
        "import ctypes, os\n\
         l = ctypes.CDLL(None, use_errno=True)\n\
         r = l.syscall(250, 10, -3, b'user', b'{desc}', 0)\n\
         print('search', r, ctypes.get_errno())\n\
         buf = ctypes.create_string_buffer(64)\n\
         r = l.syscall(250, 11, {key}, buf, 64)\n\
         print('read', r, buf.raw[:12])\n\
         r = l.syscall(248, b'user', b'planted', b'x', 1, -3)\n\
         print('added', r > 0)\n"
    );
    let attempt = |sandbox: &Sandbox| {
        let out = sandbox.command("/usr/bin/python3").args(["-c", &probe]).output().unwrap();
        assert!(out.status.success(), "{}", text(&out));
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    for ns in [Namespaces::empty(), Namespaces::all()] {
        if ns.is_empty() && !is_root() {
            continue;
        }
        // The default syscall filter refuses every key call.
        let said = attempt(&sandbox(ns));
        assert!(said.contains("search -1 1\n") && said.contains("added False"), "{ns:?}: {said}");
        assert!(!said.contains("s3cret"), "{ns:?}: {said}");
        assert_eq!(contents(), before, "{ns:?}: the embedder's session keyring changed");
        // Beneath it, the sandbox's own session keyring: the calls work, the key is not there.
        let said = attempt(&builder(ns).no_syscall_filter().build().unwrap());
        assert!(said.contains("search -1 126"), "{ns:?}: the key was found: {said}");
        assert!(said.contains("read -1"), "{ns:?}: the key was read: {said}");
        assert!(!said.contains("s3cret"), "{ns:?}: {said}");
        // The payload may use a keyring of its own; ours is unchanged.
        assert!(said.contains("added True"), "{ns:?}: {said}");
        assert_eq!(contents(), before, "{ns:?}: the embedder's session keyring changed");
    }
    // Control: a plain child process finds and reads it, so the refusals come from the sandbox.
    let control = std::process::Command::new("/usr/bin/python3").args(["-c", &probe]).output().unwrap();
    let said = String::from_utf8_lossy(&control.stdout);
    assert!(said.contains("read 12 b's3cret-value'"), "control: {said}");
    keyctl([3, key as libc::c_ulong, 0, 0]); // KEYCTL_REVOKE
}

#[test]
fn a_symlink_planted_in_a_shared_directory_never_redirects_a_bind() {
    let shared = tempdir();
    let secret = tempdir();
    std::fs::write(secret.path().join("sentinel"), "host secret").unwrap();
    let cache = shared.path().join("cache");
    std::fs::create_dir(&cache).unwrap();
    // Configured while `cache` is a real directory.
    let victim =
        rooted(Namespaces::all(), Root::tmpfs()).mount(Mount::bind(&cache, "/cache")).build().unwrap();
    // A first sandbox, given the shared directory writable, plants the link.
    let planter = rooted(Namespaces::all(), Root::tmpfs())
        .mount(Mount::bind(shared.path(), "/shared"))
        .build()
        .unwrap();
    let link = format!(
        "ln -s {} /shared/cache.new && mv -T /shared/cache.new /shared/cache",
        secret.path().display()
    );
    sh_ok(&planter, &format!("rmdir /shared/cache && {link}"));
    assert!(std::fs::symlink_metadata(&cache).unwrap().file_type().is_symlink());

    // The sandbox built before: the spawn refuses the link.
    let err = victim.command("/bin/sh").args(["-c", "echo pwned > /cache/sentinel"]).output().unwrap_err();
    match &err {
        Error::Setup { stage: Stage::Mount { target, .. }, source } => {
            assert_eq!(target, Path::new("/cache"));
            assert_eq!(source.raw_os_error(), Some(libc::ELOOP), "{err}");
        }
        other => panic!("expected a mount setup error, got {other}"),
    }
    // Built after: refused at build(), naming the path.
    let err =
        rooted(Namespaces::all(), Root::tmpfs()).mount(Mount::bind(&cache, "/cache")).build().unwrap_err();
    assert!(matches!(&err, Error::InvalidPath { path, .. } if *path == cache), "{err}");
    assert_eq!(std::fs::read_to_string(secret.path().join("sentinel")).unwrap(), "host secret");

    // A root directory or overlay layer that is a link to the host's root: refused too.
    let to_root = shared.path().join("root-link");
    std::os::unix::fs::symlink("/", &to_root).unwrap();
    for root in [Root::dir(&to_root), Root::overlay([&to_root])] {
        let err = builder(Namespaces::all()).root(root).build().unwrap_err();
        assert!(matches!(&err, Error::InvalidPath { path, .. } if *path == to_root), "{err}");
    }
}

/// The id range the payload's ids 0-65535 go to for this user, or why there is none.
fn unprivileged_range() -> Result<u32, String> {
    if is_root() {
        return Ok(UNTRUSTED_IDS);
    }
    let user = "nobody";
    let subuid = std::fs::read_to_string("/etc/subuid").unwrap_or_default();
    subuid
        .lines()
        .filter_map(|l| l.strip_prefix(&format!("{user}:")))
        .filter_map(|rest| rest.split_once(':'))
        .find(|(_, count)| count.parse::<u32>().is_ok_and(|c| c >= 65536))
        .map(|(start, _)| start.parse().unwrap())
        .ok_or_else(|| format!("no 65536-id range for {user} in /etc/subuid"))
}

#[test]
fn an_unprivileged_id_range_works_as_root_for_every_root_and_mount_type() {
    let base = match unprivileged_range() {
        Ok(base) => base,
        Err(why) => {
            return skip("an_unprivileged_id_range_works_as_root_for_every_root_and_mount_type", &why);
        }
    };
    // A caller's root directory belongs to the caller, whom the map leaves out: the payload's
    // root cannot create in it, so the mount targets exist already.
    let rootfs = tempdir();
    for dir in ["bin", "usr", "lib", "lib64", "sbin", "tmp", "proc", "dev", "scratch", "made", "host"] {
        std::fs::create_dir(rootfs.path().join(dir)).unwrap();
    }
    std::fs::write(rootfs.path().join("etc-note"), "").unwrap();
    std::os::unix::fs::symlink("/scratch", rootfs.path().join("link")).unwrap();
    for (link, to) in [("bin", "usr/bin"), ("lib", "usr/lib"), ("lib64", "usr/lib64"), ("sbin", "usr/sbin")] {
        if std::fs::symlink_metadata(Path::new("/").join(link)).is_ok_and(|m| m.file_type().is_symlink()) {
            std::fs::remove_dir(rootfs.path().join(link)).unwrap();
            std::os::unix::fs::symlink(to, rootfs.path().join(link)).unwrap();
        }
    }
    open_up(rootfs.path());
    chmod_tree(rootfs.path(), 0o755);
    let lower = tempdir();
    std::fs::write(lower.path().join("from-lower"), "lower").unwrap();
    // A host file the caller can write, bound writable: the payload's root must not be able to.
    let sentinel_dir = tempdir();
    let sentinel = sentinel_dir.path().join("sentinel");
    std::fs::write(&sentinel, "untouched").unwrap();
    let roots = [
        ("tmpfs", Root::tmpfs()),
        ("dir", Root::dir(rootfs.path())),
        ("dir_readonly", Root::dir_readonly(rootfs.path())),
        ("host_readonly", Root::host_readonly()),
        ("overlay", Root::overlay([lower.path()])),
    ];
    for (name, root) in roots {
        let mut b = builder(Namespaces::all() | Namespaces::USER);
        b.uid_map([IdMap::new(0, base, 65536)]).gid_map([IdMap::new(0, base, 65536)]).root(root);
        // The host's own root (read-only) has no room for new targets: existing ones there.
        let (scratch, note, host) = if name == "host_readonly" {
            ("/tmp", "/etc/hostname", "/mnt")
        } else {
            b.mounts(Mount::host_system())
                .mount(Mount::dir("/made"))
                .mount(Mount::symlink("/scratch", "/link"));
            ("/scratch", "/etc-note", "/host")
        };
        b.mount(Mount::tmpfs(scratch).size(1 << 20))
            .mount(Mount::file(note, "hello\n"))
            .mount(Mount::mqueue("/dev/mqueue"))
            .mount(Mount::bind(sentinel_dir.path(), host));
        let sandbox = b.build().unwrap_or_else(|e| panic!("{name}: {e}"));
        let out = sh(
            &sandbox,
            &format!(
                "id -u; id -g; touch {scratch}/x && echo scratch-ok; cat {note}; \
                 echo pwned > {host}/sentinel 2>/dev/null && echo wrote-host; \
                 [ -e /from-lower ] && echo lower-visible; true"
            ),
        );
        let said = text(&out);
        assert!(out.status.success(), "{name}: {}: {said}", out.status);
        assert!(said.starts_with("0\n0\nscratch-ok\nhello\n"), "{name}: {said}");
        assert!(!said.contains("wrote-host"), "{name}: payload root wrote a host file: {said}");
        assert_eq!(name == "overlay", said.contains("lower-visible"), "{name}: {said}");
    }
    assert_eq!(std::fs::read_to_string(&sentinel).unwrap(), "untouched");
    // Control: with the default map (root inside is the caller) the same write goes through.
    if !is_root() {
        return;
    }
    let plain =
        rooted(Namespaces::all(), Root::tmpfs()).mount(Mount::bind(sentinel_dir.path(), "/host")).build();
    sh_ok(&plain.unwrap(), "echo changed > /host/sentinel");
    assert_eq!(std::fs::read_to_string(&sentinel).unwrap(), "changed\n");
}

/// `chmod mode` on `dir` and the directories below it.
fn chmod_tree(dir: &Path, mode: u32) {
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(dir, std::fs::Permissions::from_mode(mode)).unwrap();
    for child in children_dirs(dir) {
        if !std::fs::symlink_metadata(&child).unwrap().file_type().is_symlink() {
            chmod_tree(&child, mode);
        }
    }
}

#[test]
fn the_init_shows_nothing_of_the_embedding_program() {
    // The run example is the embedding program; a secret rides on its command line and in its
    // environment.
    let out = std::process::Command::new(run_example())
        .env("STOCKADE_TEST_SECRET", "env-secret-4711")
        .args([
            "--env",
            "UNRELATED=argv-secret-4711",
            "--",
            "/bin/sh",
            "-c",
            "cat /proc/1/cmdline; echo; cat /proc/1/comm; cat /proc/1/environ 2>/dev/null && echo read-environ; \
             readlink /proc/1/exe 2>/dev/null && echo read-exe; \
             [ -n \"$(cat /proc/1/maps 2>/dev/null)\" ] && echo read-maps; true",
        ])
        .output()
        .unwrap();
    let said = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{said} {}", String::from_utf8_lossy(&out.stderr));
    let mut lines = said.lines();
    assert_eq!(lines.next().map(|l| l.trim_end_matches(['\0', ' '])), Some("stockade-init"), "{said:?}");
    assert_eq!(lines.next(), Some("stockade-init"), "{said:?}");
    for leak in ["4711", "read-environ", "read-exe", "read-maps", "examples/run"] {
        assert!(!said.contains(leak), "{leak}: {said:?}");
    }
}

/// A file opened read-only, passed with `Command::fd`: reopened writable through
/// /proc/self/fd by a payload with every privilege over its namespaces.
#[test]
fn a_file_passed_read_only_cannot_be_reopened_writable() {
    let dir = tempdir();
    let file = dir.path().join("config");
    std::fs::write(&file, "original").unwrap();
    let attack = "echo pwned > /proc/self/fd/3 && echo wrote; cat <&3";
    for ns in [Namespaces::empty(), Namespaces::all()] {
        if ns.is_empty() && !is_root() {
            continue;
        }
        let sandbox = sandbox(ns);
        let result = sandbox
            .command("/bin/sh")
            .args(["-c", attack])
            .fd(3, std::fs::File::open(&file).unwrap())
            .output();
        if is_root() {
            let out = result.unwrap();
            let said = text(&out);
            assert!(!said.contains("wrote"), "{ns:?}: {said}");
            assert!(said.contains("Read-only file system"), "{ns:?}: {said}");
            assert!(said.contains("original"), "{ns:?}: the payload cannot read it: {said}");
        } else {
            // Without root the file cannot be pinned read-only, and this user may write it.
            let err = result.unwrap_err();
            assert!(matches!(&err, Error::NotPermitted { what, .. } if what.contains("fd 3")), "{err}");
        }
        assert_eq!(std::fs::read_to_string(&file).unwrap(), "original");
    }
    // A file this user may not write either passes as it is, rootless too.
    let out = sandbox(Namespaces::all())
        .command("/bin/sh")
        .args(["-c", "echo x > /proc/self/fd/3 || echo refused; head -c 3 <&3; echo"])
        .fd(3, std::fs::File::open("/etc/passwd").unwrap())
        .output()
        .unwrap();
    assert_eq!(String::from_utf8_lossy(&out.stdout).lines().last(), Some("roo"), "{}", text(&out));
    assert!(text(&out).contains("refused"), "{}", text(&out));
    if is_root() {
        // Control: passed unrestricted, the same attack changes the host file.
        let out = sandbox(Namespaces::all())
            .command("/bin/sh")
            .args(["-c", attack])
            .fd_unrestricted(3, std::fs::File::open(&file).unwrap())
            .output()
            .unwrap();
        assert!(text(&out).contains("wrote"), "{}", text(&out));
        assert_eq!(std::fs::read_to_string(&file).unwrap(), "pwned\n");
    }
}

#[test]
fn a_directory_descriptor_is_refused_unless_passed_unrestricted() {
    let dir = tempdir();
    std::fs::write(dir.path().join("inside"), "x").unwrap();
    let open_dir = || OwnedFd::from(std::fs::File::open(dir.path()).unwrap());
    let sandbox = sandbox(Namespaces::all());
    let err = sandbox.command("/bin/true").fd(5, open_dir()).output().unwrap_err();
    assert!(
        matches!(&err, Error::InvalidValue { what: "fd", value, reason } if value == "5" && reason.contains("directory")),
        "{err}"
    );
    // Opted in, it works, with what it reaches (here: its filesystem's root through `..`).
    let out = sandbox
        .command("/bin/sh")
        .args(["-c", "ls /proc/self/fd/5/; ls /proc/self/fd/5/../../ | grep -c ."])
        .fd_unrestricted(5, open_dir())
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", text(&out));
    assert!(String::from_utf8_lossy(&out.stdout).starts_with("inside\n"), "{}", text(&out));
}

#[test]
fn output_honours_its_time_limit_when_a_payload_outside_any_namespace_keeps_its_pipes() {
    // No pid namespace and no cgroup: nothing can end what the payload starts in the background.
    let marker = format!("3600.{}", std::process::id());
    let sandbox = builder(Namespaces::empty()).timeout(Duration::from_secs(1)).build().unwrap();
    let script = format!("sleep {marker} & echo started");
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(sandbox.command("/bin/sh").args(["-c", &script]).output());
    });
    let out = rx.recv_timeout(Duration::from_secs(120)).expect("output() never returned");
    let _ = std::process::Command::new("pkill").args(["-f", &format!("sleep {marker}")]).status();
    let out = out.unwrap();
    assert_eq!(out.stdout, b"started\n");
    // The payload itself ended in time: not a limit.
    assert!(out.status.success(), "{}", out.status);
}

#[test]
fn time_limits_out_of_range_are_typed_errors() {
    for (what, b) in [
        ("timeout", Sandbox::builder().timeout(Duration::MAX).build()),
        ("cpu time limit", Sandbox::builder().cpu_time_limit(Duration::MAX).build()),
        ("timeout", Sandbox::builder().timeout(Duration::from_secs(200 * 365 * 86_400)).build()),
    ] {
        let err = b.unwrap_err();
        assert!(matches!(&err, Error::InvalidValue { what: w, .. } if *w == what), "{err}");
    }
}

#[test]
fn the_untrusted_preset_is_nobody_on_the_host_with_limits_and_nothing_of_the_host() {
    let built = Sandbox::untrusted().build();
    if !is_root() {
        // Without cgroup delegation its limits cannot be enforced: a typed error, not a weaker
        // sandbox; with best effort it runs and says what is missing.
        let err = built.unwrap_err();
        assert!(
            matches!(&err, Error::Unsupported { feature, .. } if feature == "cgroup delegation"),
            "{err}"
        );
        let sandbox = Sandbox::untrusted().resource_compat(stockade::Compat::BestEffort).build().unwrap();
        let child = sandbox.command("/bin/true").spawn().unwrap();
        assert!(!child.unenforced().is_empty());
        return;
    }
    let sandbox = built.unwrap();
    let mut child = sandbox
        .command("/bin/sh")
        .args(["-c", "id -u; hostname; grep -E '^(CapEff|CapBnd|NoNewPrivs)' /proc/self/status; ls /sys/class/net 2>/dev/null || ip -o link 2>/dev/null | wc -l; ls /; sleep 3600"])
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut out = buffered(child.stdout.take().unwrap());
    let mut lines = Vec::new();
    let mut line = String::new();
    while out.read_line(&mut line).unwrap() > 0 {
        lines.push(line.trim_end().to_owned());
        line.clear();
        if lines.last().is_some_and(|l| l == "usr") {
            break;
        }
    }
    // From the host: the payload runs as an unused id, not as root.
    let payload = children_of(child.id() as i32)[0];
    let status = std::fs::read_to_string(format!("/proc/{payload}/status")).unwrap();
    let uid_line = status.lines().find(|l| l.starts_with("Uid:")).unwrap();
    assert!(uid_line.split_whitespace().skip(1).all(|u| u == UNTRUSTED_IDS.to_string()), "{uid_line}");
    child.kill().unwrap();
    child.wait().unwrap();
    assert_eq!(lines[0], "0");
    assert_eq!(lines[1], "sandbox");
    assert!(lines.contains(&"CapEff:\t0000000000000000".to_owned()), "{lines:?}");
    assert!(lines.contains(&"CapBnd:\t0000000000000000".to_owned()), "{lines:?}");
    assert!(lines.contains(&"NoNewPrivs:\t1".to_owned()), "{lines:?}");
    assert!(lines.contains(&"tmp".to_owned()), "{lines:?}");
    // The limits are there.
    let hog = sandbox
        .command("/bin/sh")
        .args(["-c", "x=$(head -c 900000000 /dev/zero | tr '\\0' a); echo survived"])
        .output()
        .unwrap();
    assert!(!String::from_utf8_lossy(&hog.stdout).contains("survived"), "{}", hog.status);
}

#[test]
fn kernel_information_is_masked_or_refused() {
    let sandbox = rooted(Namespaces::all(), Root::tmpfs()).mount(Mount::sysfs("/sys")).build().unwrap();
    let out = sh(
        &sandbox,
        "for f in /proc/cmdline /proc/kallsyms /proc/kcore /proc/keys; do echo $f $(cat $f 2>/dev/null | wc -c); done; \
         dmesg >/dev/null 2>&1 && echo read-dmesg; touch /sys/kernel/x 2>/dev/null && echo wrote-sys-kernel; \
         for f in /sys/kernel/*; do [ -w $f ] && [ -f $f ] && echo > $f 2>/dev/null && echo wrote $f; done; echo done",
    );
    let said = text(&out);
    for f in ["/proc/cmdline", "/proc/kallsyms", "/proc/kcore", "/proc/keys"] {
        if Path::new(f).exists() {
            assert!(said.contains(&format!("{f} 0\n")), "{f} readable inside: {said}");
        }
    }
    assert!(!said.contains("wrote"), "{said}");
    assert!(said.ends_with("done\n"), "{said}");
    // Control: the host's command line is not empty, so the masks above did the hiding.
    assert!(!std::fs::read("/proc/cmdline").unwrap().is_empty());
    if std::fs::read_to_string("/proc/sys/kernel/dmesg_restrict").is_ok_and(|v| v.trim() == "1") {
        assert!(!said.contains("read-dmesg"), "{said}");
    } else {
        skip(
            "kernel_information_is_masked_or_refused (dmesg)",
            "kernel.dmesg_restrict is 0 on this host: anyone may read the log until the syscall filter closes syslog(2)",
        );
    }
}

#[test]
fn a_payload_with_cap_sys_admin_can_neither_change_move_nor_clone_the_mount_of_its_null_stdio() {
    let test = "a_payload_with_cap_sys_admin_can_neither_change_move_nor_clone_the_mount_of_its_null_stdio";
    if !have("/usr/bin/python3") {
        return skip(test, "python3 missing for the attack");
    }
    use std::os::unix::fs::PermissionsExt;
    let null_mode = || std::fs::metadata("/dev/null").unwrap().permissions().mode() & 0o7777;
    let before = null_mode();
    // CAP_SYS_ADMIN over its own user and mount namespaces and no syscall filter: the mount
    // calls reach the kernel. Its /dev/null (stdin, stdout) is opened through a read-only mount
    // shared by the sandbox's spawns (as root), or pinned per spawn: either way one that is
    // mounted nowhere, which the kernel lets nobody change, move or clone.
    let mut b = rooted(Namespaces::all(), Root::tmpfs());
    b.capabilities([stockade::Capability::CAP_SYS_ADMIN]).no_syscall_filter();
    let sandbox = b.build().unwrap();
    let attack = r#"
import ctypes, os, struct, sys
libc = ctypes.CDLL(None, use_errno=True)
libc.syscall.restype = ctypes.c_long
AT_FDCWD, AT_EMPTY_PATH, AT_RECURSIVE, OPEN_TREE_CLONE, MOVE_MOUNT_F_EMPTY_PATH = -100, 0x1000, 0x8000, 1, 4
def call(name, nr, *args):
    r = libc.syscall(nr, *args)
    sys.stderr.write("%s %s\n" % (name, "ok" if r >= 0 else os.strerror(ctypes.get_errno())))
clear_ro = struct.pack("QQQQ", 0, 1, 0, 0)
call("control", 428, AT_FDCWD, b"/", OPEN_TREE_CLONE | AT_RECURSIVE)
call("setattr", 442, 0, b"", AT_EMPTY_PATH, clear_ro, len(clear_ro))
call("clone", 428, 0, b"", AT_EMPTY_PATH | OPEN_TREE_CLONE)
call("move", 429, 0, b"", AT_FDCWD, b"/dev/null", MOVE_MOUNT_F_EMPTY_PATH)
try:
    os.chmod("/proc/self/fd/1", 0o600)
    sys.stderr.write("chmod ok\n")
except OSError as e:
    sys.stderr.write("chmod %s\n" % e.strerror)
"#;
    for _ in 0..2 {
        let out = sandbox
            .command("/usr/bin/python3")
            .args(["-c", attack])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .output()
            .unwrap();
        let said = String::from_utf8_lossy(&out.stderr).into_owned();
        let now = null_mode();
        if now != before {
            // Put right before failing: the rest of the suite needs the host's /dev/null.
            std::fs::set_permissions("/dev/null", std::fs::Permissions::from_mode(before)).unwrap();
        }
        assert_eq!(now, before, "the host's /dev/null changed: {said}");
        assert!(out.status.success(), "{said}");
        // The payload does hold the capability: it clones a mount of its own namespace.
        assert!(said.contains("control ok"), "{said}");
        for refused in ["setattr Invalid argument", "clone Invalid argument", "move Invalid argument"] {
            assert!(said.contains(refused), "{refused}: {said}");
        }
        assert!(!said.contains("chmod ok"), "{said}");
    }
}

#[test]
fn stdio_allows_no_more_than_it_was_opened_for_and_changes_no_device_node() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempdir();
    let input = dir.path().join("input");
    std::fs::write(&input, "original").unwrap();
    let null_mode = || std::fs::metadata("/dev/null").unwrap().permissions().mode() & 0o7777;
    let before = null_mode();
    let attack = "echo PWNED > /proc/self/fd/0 && echo wrote; chmod 600 /proc/self/fd/0 && echo chmod-fd; \
                  chmod 600 /proc/self/fd/1 && echo chmod-null; chmod 600 /dev/null 2>/dev/null && echo chmod-dev; \
                  head -c 8 <&0; echo";
    for ns in [Namespaces::empty(), Namespaces::all()] {
        if ns.is_empty() && !is_root() {
            continue;
        }
        let sandbox = rooted(ns | Namespaces::MOUNT, Root::tmpfs()).build().unwrap();
        let result = sandbox
            .command("/bin/sh")
            .args(["-c", attack])
            .stdin(std::fs::File::open(&input).unwrap())
            .stdout(stockade::Stdio::null())
            .stderr(Stdio::piped())
            .spawn();
        if !is_root() {
            // This user's own file cannot be pinned read-only without root: refused.
            assert!(matches!(result, Err(Error::NotPermitted { .. })), "{ns:?}: {:?}", result.err());
            continue;
        }
        let out = result.unwrap().wait_with_output().unwrap();
        let said = text(&out);
        for forbidden in ["wrote", "chmod-fd", "chmod-null", "chmod-dev"] {
            assert!(!said.contains(forbidden), "{ns:?}: {forbidden}: {said}");
        }
        assert_eq!(std::fs::read_to_string(&input).unwrap(), "original");
        assert_eq!(null_mode(), before, "{ns:?}: the host's /dev/null changed");
    }
    // Passed as it is on request: the same reopening then writes the file (the control).
    let sandbox = sandbox(Namespaces::all());
    let out = sandbox
        .command("/bin/sh")
        .args(["-c", "echo PWNED > /proc/self/fd/0 && echo wrote"])
        .stdin(stockade::Stdio::unrestricted(std::fs::File::open(&input).unwrap()))
        .output()
        .unwrap();
    assert!(text(&out).contains("wrote"), "{}", text(&out));
    assert_eq!(std::fs::read_to_string(&input).unwrap(), "PWNED\n");
}

/// The embedding process's own dumpable flag (1: its /proc files are its own, it can be traced
/// by its user and dump core).
fn embedder_dumpable() -> i32 {
    // SAFETY: PR_GET_DUMPABLE takes no pointers.
    unsafe { libc::prctl(libc::PR_GET_DUMPABLE, 0, 0, 0, 0) }
}

#[test]
fn changing_ids_in_the_sandbox_leaves_the_embedding_process_dumpable() {
    // The child shares the embedder's memory until its exec, and the kernel makes that memory
    // non-dumpable on every id change: the child restores the flag, else the embedder would
    // stay non-dumpable (and an unprivileged one could not write its next child's id maps).
    let base = match unprivileged_range() {
        Ok(base) => base,
        Err(why) => return skip("changing_ids_in_the_sandbox_leaves_the_embedding_process_dumpable", &why),
    };
    assert_eq!(embedder_dumpable(), 1, "the test process starts dumpable");
    let mut ranged = builder(Namespaces::all() | Namespaces::USER);
    ranged.uid_map([IdMap::new(0, base, 65536)]).gid_map([IdMap::new(0, base, 65536)]);
    let mut as_user = ranged.clone();
    as_user.user(1000, 1000);
    let mut cases = vec![("root of an id range", ranged), ("a user of an id range", as_user)];
    if is_root() {
        let mut plain = Sandbox::builder();
        plain.user(4242, 4343);
        cases.push(("another user without a user namespace", plain));
    }
    for (what, builder) in cases {
        let sandbox = builder.build().unwrap();
        for _ in 0..2 {
            let out = sandbox.command("/bin/sh").args(["-c", "id -u"]).output().unwrap();
            assert!(out.status.success(), "{what}: {out:?}");
            assert_eq!(embedder_dumpable(), 1, "{what}: the embedding process became non-dumpable");
        }
    }
}

#[test]
fn the_init_is_a_program_of_its_own_holding_none_of_the_embedders_memory() {
    let sandbox = sandbox(Namespaces::all());
    let mut child = sandbox.command("/bin/cat").stdin(Stdio::piped()).stdout(Stdio::null()).spawn().unwrap();
    let init = child.id();
    // The payload runs only once the init has exec'd (it waits for the init's "ready").
    let exe = std::fs::read_link(format!("/proc/{init}/exe")).unwrap();
    assert!(exe.to_string_lossy().starts_with("/memfd:stockade-init"), "{exe:?}");
    let maps = std::fs::read_to_string(format!("/proc/{init}/maps")).unwrap();
    let ours = std::env::current_exe().unwrap();
    assert!(!maps.contains(&*ours.to_string_lossy()), "the init maps the test binary:\n{maps}");
    assert!(!maps.contains("libc"), "the init maps the C library:\n{maps}");
    let status = std::fs::read_to_string(format!("/proc/{init}/status")).unwrap();
    let rss_kib: u64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches(" kB").trim().parse().ok())
        .unwrap();
    assert!(rss_kib < 1024, "the init holds {rss_kib} KiB resident");
    drop(child.stdin.take());
    assert!(child.wait().unwrap().success());
}
