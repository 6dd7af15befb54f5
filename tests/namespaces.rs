//! Each namespace's effect, observed from inside a real sandbox (and, where it applies, checked
//! against a control run without the namespace, so the test can fail).

mod common;

use std::io::Read;
use std::net::TcpListener;
use std::os::linux::net::SocketAddrExt;
use std::time::Duration;

use common::*;
use stockade::{ClockOffsets, IdMap, Namespaces, Root, Sandbox, Stdio};

#[test]
fn every_requested_namespace_is_new_and_the_others_are_shared() {
    for kind in [
        Namespaces::PID | Namespaces::MOUNT,
        Namespaces::MOUNT,
        Namespaces::UTS,
        Namespaces::IPC,
        Namespaces::NET,
        Namespaces::CGROUP,
        Namespaces::TIME,
    ] {
        let sandbox = sandbox(kind);
        // readlink is a child of the payload shell, in the same namespaces.
        let inside = sh_ok(
            &sandbox,
            "for n in user pid mnt uts ipc net cgroup time; do readlink /proc/self/ns/$n; done",
        );
        let inside: Vec<&str> = inside.lines().collect();
        for (i, name) in ["user", "pid", "mnt", "uts", "ipc", "net", "cgroup", "time"].into_iter().enumerate()
        {
            let host = ns_inode("self", name);
            let requested = ns(kind).names().any(|n| n == name);
            // A pid or time namespace applies to children (the payload), which is what we read.
            assert_eq!(
                inside[i] != host,
                requested,
                "{name} namespace with {kind:?}: inside {} host {host}",
                inside[i]
            );
        }
    }
}

#[test]
fn hostname_and_domainname_are_set_inside_and_host_keeps_its_own() {
    let host_before = nix::unistd::gethostname().unwrap();
    let sandbox = builder(Namespaces::UTS).hostname("box").domainname("example.test").build().unwrap();
    let out = sh_ok(&sandbox, "hostname; cat /proc/sys/kernel/domainname");
    assert_eq!(out, "box\nexample.test\n");
    assert_eq!(nix::unistd::gethostname().unwrap(), host_before);
}

#[test]
fn payload_is_pid_2_under_an_init_and_cannot_see_host_pids() {
    // A host process with a unique command line the payload must not find.
    let sentinel = HostProcess::spawn(std::process::Command::new("/bin/sleep").arg("3600.4242"));
    let sandbox = sandbox(Namespaces::PID | Namespaces::MOUNT);
    let out = sh_ok(
        &sandbox,
        "echo $$; cat /proc/1/stat | cut -d' ' -f1; cat /proc/[0-9]*/cmdline | tr '\\0' ' '; echo; ls /proc | grep -c '^[0-9]'",
    );
    drop(sentinel);
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(lines[0], "2", "payload pid: {out}");
    assert_eq!(lines[1], "1", "pid 1 exists: {out}");
    assert!(!out.contains("3600.4242"), "host process visible: {out}");
    // init, sh, cat (gone by then) ... only a handful of processes exist inside.
    let count: usize = lines.last().unwrap().parse().unwrap();
    assert!(count <= 5, "{count} processes visible inside: {out}");

    // Control: without a pid namespace the sentinel-like host processes are visible.
    let control = sh_ok(&Sandbox::builder().build().unwrap(), "ls /proc | grep -c '^[0-9]'");
    assert!(control.trim().parse::<usize>().unwrap() > count);
}

#[test]
fn new_net_namespace_has_only_loopback_and_it_is_up() {
    let sandbox = sandbox(Namespaces::NET);
    let devs = sh_ok(&sandbox, "tail -n +3 /proc/net/dev | cut -d: -f1 | tr -d ' '");
    assert_eq!(devs, "lo\n");
    if !have("/usr/bin/python3") {
        return skip("new_net_namespace_has_only_loopback_and_it_is_up", "python3 missing: cannot probe lo");
    }
    // Binding and connecting on 127.0.0.1 works only if lo is up.
    let out = sandbox
        .command("/usr/bin/python3")
        .args([
            "-c",
            "import socket\ns=socket.socket(); s.bind(('127.0.0.1',0)); s.listen()\n\
             c=socket.create_connection(s.getsockname(), timeout=5); print('connected')",
        ])
        .output()
        .unwrap();
    assert_eq!(String::from_utf8_lossy(&out.stdout), "connected\n", "{out:?}");
}

#[test]
fn host_loopback_and_abstract_sockets_are_unreachable_from_new_net_namespace() {
    if !have("/usr/bin/python3") {
        return skip("host_loopback_and_abstract_sockets_are_unreachable", "python3 missing");
    }
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let name = format!("stockade-test-{}", std::process::id());
    let abs = std::os::unix::net::SocketAddr::from_abstract_name(name.as_bytes()).unwrap();
    let _unix = std::os::unix::net::UnixListener::bind_addr(&abs).unwrap();
    let probe = format!(
        "import socket\n\
         for what, fam, addr in [('tcp', socket.AF_INET, ('127.0.0.1', {port})), ('abstract', socket.AF_UNIX, '\\0{name}')]:\n\
         \x20   s = socket.socket(fam)\n\
         \x20   s.settimeout(3)\n\
         \x20   try:\n\
         \x20       s.connect(addr); print(what, 'reached')\n\
         \x20   except OSError as e:\n\
         \x20       print(what, 'refused')\n"
    );
    let run = |sandbox: &Sandbox| {
        let out = sandbox.command("/usr/bin/python3").args(["-c", &probe]).output().unwrap();
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    assert_eq!(run(&sandbox(Namespaces::NET)), "tcp refused\nabstract refused\n");
    // Control: the same probe reaches both without a network namespace.
    assert_eq!(run(&sandbox(Namespaces::empty())), "tcp reached\nabstract reached\n");
}

#[test]
fn ipc_namespace_hides_host_message_queues() {
    // SAFETY: msgget/msgctl take integers; the queue is removed at the end.
    let id = unsafe { libc::msgget(libc::IPC_PRIVATE, 0o600 | libc::IPC_CREAT) };
    assert!(id >= 0, "msgget: {}", std::io::Error::last_os_error());
    let script = "cat /proc/sysvipc/msg | awk 'NR > 1 { print $2 }'";
    let inside = sh_ok(&sandbox(Namespaces::IPC), script);
    let outside = sh_ok(&sandbox(Namespaces::empty()), script);
    unsafe { libc::msgctl(id, libc::IPC_RMID, std::ptr::null_mut()) };
    assert!(!inside.lines().any(|l| l == id.to_string()), "queue {id} visible inside: {inside}");
    assert!(outside.lines().any(|l| l == id.to_string()), "control run cannot see queue {id}: {outside}");
}

#[test]
fn cgroup_namespace_makes_the_payloads_cgroup_the_root() {
    let inside = sh_ok(&sandbox(Namespaces::CGROUP), "cat /proc/self/cgroup");
    assert!(!inside.is_empty());
    for line in inside.lines() {
        assert!(line.ends_with(":/"), "not at the namespace root: {line}");
    }
    let host = std::fs::read_to_string("/proc/self/cgroup").unwrap();
    if host.lines().all(|l| l.ends_with(":/")) {
        skip(
            "cgroup_namespace_makes_the_payloads_cgroup_the_root",
            "this process sits in root cgroups, so only the namespace inode proves the new namespace",
        );
    } else {
        let control = sh_ok(&sandbox(Namespaces::empty()), "cat /proc/self/cgroup");
        assert_eq!(control, host, "control run must see the host's cgroup paths");
    }
}

#[test]
fn time_namespace_shifts_boottime_and_monotonic_clocks() {
    let offset = Duration::from_secs(10 * 86_400);
    let sandbox = builder(Namespaces::TIME)
        .clock_offsets(ClockOffsets::new().boottime(offset).monotonic(offset))
        .build()
        .unwrap();
    let out = sh_ok(&sandbox, "cut -d' ' -f1 /proc/uptime; cat /proc/self/timens_offsets");
    let mut lines = out.lines();
    let uptime: f64 = lines.next().unwrap().parse().unwrap();
    let host: f64 =
        std::fs::read_to_string("/proc/uptime").unwrap().split(' ').next().unwrap().parse().unwrap();
    assert!(uptime >= host + offset.as_secs_f64() - 1.0, "uptime inside {uptime}, host {host}");
    let offsets: String = lines.collect::<Vec<_>>().join("\n");
    assert!(offsets.contains("monotonic") && offsets.contains("864000"), "{offsets}");
}

#[test]
fn time_namespace_works_under_a_pid_namespace_init_too() {
    let offset = Duration::from_secs(1_000_000);
    let sandbox = builder(Namespaces::TIME | Namespaces::PID | Namespaces::MOUNT)
        .clock_offsets(ClockOffsets::new().boottime(offset))
        .build()
        .unwrap();
    let uptime: f64 = sh_ok(&sandbox, "cut -d' ' -f1 /proc/uptime").trim().parse().unwrap();
    assert!(uptime >= 1_000_000.0, "uptime inside {uptime}");
}

/// Starts `script` (which must print a line and then block), and returns the payload's host-side
/// `Uid:`/`Gid:` lines from /proc together with what it printed.
fn ids_inside_and_outside(sandbox: &Sandbox) -> (String, String, String) {
    let mut child = sandbox
        .command("/bin/sh")
        .args(["-c", "echo $(id -u) $(id -g); exec sleep 3600"])
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut out = buffered(child.stdout.take().unwrap());
    let inside = read_until(&mut out, |_| true);
    let status = std::fs::read_to_string(format!("/proc/{}/status", child.id())).unwrap();
    let field = |name: &str| {
        status.lines().find(|l| l.starts_with(name)).unwrap().split_whitespace().nth(1).unwrap().to_owned()
    };
    let (uid, gid) = (field("Uid:"), field("Gid:"));
    child.kill().unwrap();
    child.wait().unwrap();
    (inside, uid, gid)
}

#[test]
fn default_user_namespace_maps_root_inside_to_the_caller_outside() {
    let sandbox = Sandbox::builder().namespaces(Namespaces::USER).build().unwrap();
    let (inside, uid, gid) = ids_inside_and_outside(&sandbox);
    assert_eq!(inside, "0 0");
    assert_eq!(uid, nix::unistd::geteuid().to_string());
    assert_eq!(gid, nix::unistd::getegid().to_string());
    let map = sh_ok(&sandbox, "cat /proc/self/uid_map");
    let fields: Vec<&str> = map.split_whitespace().collect();
    assert_eq!(fields, ["0", &nix::unistd::geteuid().to_string(), "1"]);
}

#[test]
fn root_can_map_a_range_of_unprivileged_host_ids() {
    if !is_root() {
        return skip(
            "root_can_map_a_range_of_unprivileged_host_ids",
            "needs CAP_SETUID to write a multi-id map directly",
        );
    }
    let sandbox = Sandbox::builder()
        .namespaces(Namespaces::USER)
        .uid_map([IdMap::new(0, 100_000, 65_536)])
        .gid_map([IdMap::new(0, 100_000, 65_536)])
        .user(1000, 1000)
        .build()
        .unwrap();
    let (inside, uid, gid) = ids_inside_and_outside(&sandbox);
    assert_eq!(inside, "1000 1000");
    assert_eq!((uid.as_str(), gid.as_str()), ("101000", "101000"));
}

#[test]
fn rootless_multi_range_maps_go_through_newuidmap() {
    if is_root() {
        return skip(
            "rootless_multi_range_maps_go_through_newuidmap",
            "root writes maps directly; covered rootless",
        );
    }
    let uid = nix::unistd::geteuid().as_raw();
    let gid = nix::unistd::getegid().as_raw();
    let Some((sub_uid, sub_gid)) = subordinate("/etc/subuid", uid).zip(subordinate("/etc/subgid", uid))
    else {
        return skip(
            "rootless_multi_range_maps_go_through_newuidmap",
            "no /etc/subuid and /etc/subgid range for this user (.ci/run adds one)",
        );
    };
    if !have("/usr/bin/newuidmap") {
        return skip(
            "rootless_multi_range_maps_go_through_newuidmap",
            "newuidmap not installed (package uidmap)",
        );
    }
    let sandbox = Sandbox::builder()
        .namespaces(Namespaces::USER)
        .uid_map([IdMap::new(0, uid, 1), IdMap::new(1, sub_uid, 1000)])
        .gid_map([IdMap::new(0, gid, 1), IdMap::new(1, sub_gid, 1000)])
        .user(5, 5)
        .build()
        .unwrap();
    let (inside, host_uid, host_gid) = ids_inside_and_outside(&sandbox);
    assert_eq!(inside, "5 5");
    assert_eq!(host_uid, (sub_uid + 4).to_string());
    assert_eq!(host_gid, (sub_gid + 4).to_string());
}

/// Start of `file`'s (/etc/subuid or /etc/subgid) range of at least 1000 ids for user `id`.
fn subordinate(file: &str, id: u32) -> Option<u32> {
    let name = nix::unistd::User::from_uid(nix::unistd::Uid::from_raw(id)).ok().flatten().map(|u| u.name);
    std::fs::read_to_string(file).ok()?.lines().find_map(|l| {
        let mut f = l.split(':');
        let owner = f.next()?;
        let start: u32 = f.next()?.parse().ok()?;
        let count: u32 = f.next()?.parse().ok()?;
        ((owner == id.to_string() || Some(owner) == name.as_deref()) && count >= 1000).then_some(start)
    })
}

#[test]
fn mount_namespace_with_pid_namespace_gets_a_fresh_proc_and_host_mounts_are_unchanged() {
    let host_before = std::fs::read_to_string("/proc/self/mountinfo").unwrap();
    let sandbox = sandbox(Namespaces::PID | Namespaces::MOUNT);
    // The fresh /proc shows the namespace's own pid 1; mounting inside never reaches the host.
    let out = sh_ok(
        &sandbox,
        "grep ' /proc ' /proc/self/mountinfo | tail -n 1; cat /proc/1/status | grep '^NSpid'",
    );
    assert!(out.contains(" /proc "), "{out}");
    assert!(out.lines().nth(1).unwrap().split_whitespace().nth(1) == Some("1"), "{out}");
    let host_after = std::fs::read_to_string("/proc/self/mountinfo").unwrap();
    assert_eq!(host_before, host_after);
}

#[test]
fn payload_reads_stdin_and_its_output_is_captured_in_every_namespace_mix() {
    for kind in [Namespaces::empty(), Namespaces::all()] {
        let sandbox = sandbox(kind);
        let mut child =
            sandbox.command("/bin/cat").stdin(Stdio::piped()).stdout(Stdio::piped()).spawn().unwrap();
        use std::io::Write;
        child.stdin.take().unwrap().write_all(b"hello through the sandbox\n").unwrap();
        let mut text = String::new();
        child.stdout.take().unwrap().read_to_string(&mut text).unwrap();
        assert_eq!(text, "hello through the sandbox\n");
        assert!(child.wait().unwrap().success());
    }
}

#[test]
fn a_cgroup_mount_shows_only_the_sandboxs_own_cgroups_and_is_read_only() {
    use stockade::{Mount, Root};
    let sandbox = rooted(Namespaces::PID | Namespaces::CGROUP | Namespaces::UTS, Root::tmpfs())
        .mount(Mount::cgroup("/sys/fs/cgroup"))
        .build()
        .unwrap();
    // The processes file of one hierarchy (the unified one on pure v2, else pids or memory).
    let script = "cat /proc/self/cgroup; echo ==; \
        for f in /sys/fs/cgroup/cgroup.procs /sys/fs/cgroup/pids/cgroup.procs /sys/fs/cgroup/memory/cgroup.procs; do \
          if [ -e $f ]; then cat $f; break; fi; done; echo ==; \
        mkdir /sys/fs/cgroup/x 2>/dev/null || echo read-only";
    let out = sh_ok(&sandbox, script);
    let parts: Vec<&str> = out.split("==\n").collect();
    let [own, procs, rest] = parts.as_slice() else { panic!("{out}") };
    // Every hierarchy's path is its namespace root.
    for line in own.lines() {
        assert!(line.ends_with(":/"), "not the namespace root: {line}\n{out}");
    }
    // Only the sandbox's processes are listed (its init, the shell, cat: pids of its own
    // namespace, all small), none of the host's.
    let pids: Vec<u32> = procs.lines().map(|l| l.parse().unwrap()).collect();
    assert!((2..=4).contains(&pids.len()) && pids.iter().all(|p| *p < 10), "{out}");
    assert_eq!(*rest, "read-only\n");
}

#[test]
fn namespaced_kernel_parameters_are_set_inside_and_host_wide_ones_refused() {
    let host = std::fs::read_to_string("/proc/sys/net/ipv4/ip_unprivileged_port_start").unwrap();
    let sandbox = builder(Namespaces::NET | Namespaces::IPC | Namespaces::MOUNT)
        .sysctl("net.ipv4.ip_unprivileged_port_start", "80")
        .sysctl("kernel/shmmni", "100")
        .build()
        .unwrap();
    let out = sh_ok(&sandbox, "cat /proc/sys/net/ipv4/ip_unprivileged_port_start /proc/sys/kernel/shmmni");
    assert_eq!(out, "80\n100\n");
    assert_eq!(std::fs::read_to_string("/proc/sys/net/ipv4/ip_unprivileged_port_start").unwrap(), host);
    for (key, needs) in [
        ("kernel.panic", "host"),
        ("vm.swappiness", "host"),
        ("net.ipv4.ip_forward", "network"),
        ("../x", "name"),
    ] {
        let err = builder(Namespaces::IPC).sysctl(key, "1").build().unwrap_err();
        assert!(
            matches!(&err, stockade::Error::InvalidValue { .. }) && err.to_string().contains(needs),
            "{key}: {err}"
        );
    }
}

/// A running sandbox whose namespaces others join: its own pid, mount, network, uts and ipc
/// namespaces, hostname "pod", and a sleeper with a command line to find.
fn pod() -> stockade::Child {
    builder(Namespaces::PID | Namespaces::MOUNT | Namespaces::NET | Namespaces::UTS | Namespaces::IPC)
        .hostname("pod")
        .build()
        .unwrap()
        .command("/bin/sleep")
        .arg("1000.4243")
        .stdout(Stdio::null())
        .spawn()
        .unwrap()
}

#[test]
fn joined_network_uts_and_ipc_namespaces_are_the_pods_and_its_hostname_shows() {
    if !is_root() {
        skip(
            "joined_network_uts_and_ipc_namespaces",
            "joining another sandbox's namespaces needs CAP_SYS_ADMIN over them",
        );
        return;
    }
    let mut pod = pod();
    let pid = pod.id().to_string();
    let mut b = Sandbox::builder();
    b.namespaces(Namespaces::MOUNT | Namespaces::NET);
    for (kind, name) in [(Namespaces::NET, "net"), (Namespaces::UTS, "uts"), (Namespaces::IPC, "ipc")] {
        b.join_namespace(kind, format!("/proc/{pid}/ns/{name}"));
    }
    let sandbox = b.build().unwrap();
    assert!(sandbox.namespaces().contains(Namespaces::NET | Namespaces::UTS | Namespaces::IPC));
    let out = sh_ok(&sandbox, "for n in net uts ipc mnt; do readlink /proc/self/ns/$n; done; hostname");
    let lines: Vec<&str> = out.lines().collect();
    for (i, name) in ["net", "uts", "ipc"].into_iter().enumerate() {
        assert_eq!(lines[i], ns_inode(&pid, name), "{name}");
        assert_ne!(lines[i], ns_inode("self", name), "{name}");
    }
    // The mount namespace is the sandbox's own, new: neither the pod's nor the host's.
    assert_ne!(lines[3], ns_inode(&pid, "mnt"));
    assert_ne!(lines[3], ns_inode("self", "mnt"));
    assert_eq!(lines[4], "pod");
    assert_eq!(pod.try_wait().unwrap(), None, "the pod outlives the sandbox that joined it");
}

#[test]
fn a_joined_pid_namespace_shows_the_pods_processes_and_its_end_leaves_them_running() {
    if !is_root() {
        skip("a_joined_pid_namespace", "joining another sandbox's namespaces needs CAP_SYS_ADMIN over them");
        return;
    }
    let mut pod = pod();
    let pid = pod.id().to_string();
    let mut b = rooted(Namespaces::empty(), Root::tmpfs());
    b.join_namespace(Namespaces::PID, format!("/proc/{pid}/ns/pid"));
    let sandbox = b.build().unwrap();
    // A process left behind in the background: in a joined pid namespace the sandbox's end does
    // not take it along, its cgroup does.
    let out = sh_ok(
        &sandbox,
        "sleep 1000.4245 & readlink /proc/self/ns/pid; cut -d' ' -f1 /proc/self/stat; \
         for p in /proc/[0-9]*; do tr '\\0' ' ' < $p/cmdline 2>/dev/null; echo; done",
    );
    let left = std::fs::read_dir("/proc")
        .unwrap()
        .filter_map(|e| std::fs::read(e.ok()?.path().join("cmdline")).ok())
        .any(|cmdline| String::from_utf8_lossy(&cmdline).contains("1000.4245"));
    assert!(!left, "the sandbox's background process outlived it in the pod's pid namespace");
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(lines[0], ns_inode(&pid, "pid"));
    let own: u32 = lines[1].parse().unwrap();
    assert!(own > 2, "the pod's init and sleeper come first; this shell is {own}");
    assert!(lines.iter().any(|l| l.contains("1000.4243")), "the pod's sleeper is visible:\n{out}");
    assert_eq!(pod.try_wait().unwrap(), None, "the pod outlives the sandbox that joined it");
    pod.kill().unwrap();
}

#[test]
fn a_namespace_file_of_the_wrong_kind_or_no_namespace_is_refused_at_spawn_naming_it() {
    let mut b = Sandbox::builder();
    b.namespaces(Namespaces::MOUNT).join_namespace(Namespaces::NET, "/proc/self/ns/uts");
    if !is_root() {
        // Unprivileged, joining is refused at build: the check below needs root.
        let err = b.build().unwrap_err();
        assert!(matches!(err, stockade::Error::NotPermitted { .. }), "{err}");
        skip(
            "a_namespace_file_of_the_wrong_kind",
            "joining needs CAP_SYS_ADMIN; only the build refusal is checked",
        );
        return;
    }
    let err = b.build().unwrap().command("/bin/true").status().unwrap_err();
    assert!(err.to_string().contains("is a uts namespace, not a net namespace"), "{err}");
    assert!(err.to_string().contains("/proc/self/ns/uts"), "{err}");
    let mut b = Sandbox::builder();
    b.namespaces(Namespaces::MOUNT).join_namespace(Namespaces::IPC, "/etc/hostname");
    let err = b.build().unwrap().command("/bin/true").status().unwrap_err();
    assert!(matches!(err, stockade::Error::InvalidPath { .. }), "{err}");
    assert!(err.to_string().contains("not a namespace file"), "{err}");
    // The sandbox would set the host's hostname: refused.
    let mut b = Sandbox::builder();
    b.namespaces(Namespaces::MOUNT).join_namespace(Namespaces::UTS, "/proc/self/ns/uts").hostname("evil");
    let host = nix::unistd::gethostname().unwrap();
    let err = b.build().unwrap().command("/bin/true").status().unwrap_err();
    assert!(err.to_string().contains("own uts namespace"), "{err}");
    assert_eq!(nix::unistd::gethostname().unwrap(), host);
}

#[test]
fn namespaces_that_cannot_be_joined_or_a_new_user_namespace_beside_a_join_fail_at_build() {
    for kind in [Namespaces::USER, Namespaces::MOUNT, Namespaces::TIME] {
        let mut b = Sandbox::builder();
        b.namespaces(Namespaces::PID | Namespaces::MOUNT).join_namespace(kind, "/proc/self/ns/x");
        let err = b.build().unwrap_err();
        assert!(matches!(err, stockade::Error::Unsupported { .. }), "{kind:?}: {err}");
    }
    let mut b = Sandbox::builder();
    b.namespaces(Namespaces::USER | Namespaces::MOUNT).join_namespace(Namespaces::NET, "/proc/self/ns/net");
    let err = b.build().unwrap_err();
    assert!(err.to_string().contains("new user namespace"), "{err}");
    let mut b = Sandbox::builder();
    b.join_namespace(Namespaces::NET | Namespaces::UTS, "/proc/self/ns/net");
    assert!(matches!(b.build().unwrap_err(), stockade::Error::InvalidPath { .. }));
    // A cgroup mount would show the joined cgroup namespace's whole tree.
    let mut b = Sandbox::builder();
    b.namespaces(Namespaces::MOUNT)
        .join_namespace(Namespaces::CGROUP, "/proc/self/ns/cgroup")
        .mount(stockade::Mount::cgroup("/sys/fs/cgroup"));
    let err = b.build().unwrap_err();
    assert!(err.to_string().contains("joined cgroup namespace"), "{err}");
}
