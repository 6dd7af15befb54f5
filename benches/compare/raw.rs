//! The raw limit of each configuration: the fewest system calls that give the same isolation as
//! stockade's sandbox of that configuration, written straight on libc, with an init fork where
//! stockade has an init. It is what the running kernel charges for the isolation itself; the
//! ratio stockade/raw is stockade's own overhead.
//!
//! The child is a plain fork of this (small, single-threaded) bench process, which is the
//! cheapest way to get a process that can run setup code. Steps, as stockade does them:
//! user namespace maps written by the parent while the child waits on a pipe; private
//! propagation; /proc; the default masks and read-only paths; for a root: a tmpfs, read-only
//! binds of /usr (and links for /bin, /lib...), a minimal /dev (device binds, devpts, shm),
//! pivot_root, the root made read-only; loopback up; cgroup v1 memory and pids groups created,
//! joined by the child itself first thing (`0` to each group's `tasks`, as stockade does: moving
//! another process waits out an RCU grace period) and removed after exit; the mount lock (a
//! nested user namespace whose maps the init writes); a seccomp filter as long as stockade's
//! default one.

#![allow(unsafe_code)]

use std::ffi::CString;
use std::io::{Error, Result};

/// What one configuration isolates.
#[derive(Clone, Copy, Debug)]
pub struct Config {
    pub namespaces: bool,
    pub root: bool,
    pub net: bool,
    pub cgroup: bool,
    pub filter: bool,
}

const MASKED: &[&str] = &[
    "/proc/acpi",
    "/proc/asound",
    "/proc/cmdline",
    "/proc/interrupts",
    "/proc/kallsyms",
    "/proc/kcore",
    "/proc/keys",
    "/proc/latency_stats",
    "/proc/timer_list",
    "/proc/timer_stats",
    "/proc/sched_debug",
    "/proc/scsi",
    "/sys/firmware",
    "/sys/devices/virtual/powercap",
];
const READONLY: &[&str] = &["/proc/bus", "/proc/fs", "/proc/irq", "/proc/sys", "/proc/sysrq-trigger"];
const DEVICES: &[&str] = &["null", "zero", "full", "random", "urandom", "tty"];

fn c(s: &str) -> CString {
    CString::new(s).unwrap()
}

fn check(ret: libc::c_int) -> Result<libc::c_int> {
    if ret < 0 { Err(Error::last_os_error()) } else { Ok(ret) }
}

/// Everything prepared before the fork, so the child only makes system calls.
pub struct Raw {
    config: Config,
    uid_map: CString,
    gid_map: CString,
    paths: Vec<CString>,
    filter: Vec<libc::sock_filter>,
    cgroups: Vec<String>,
    seq: u64,
}

impl Raw {
    pub fn new(config: Config) -> Raw {
        let (uid, gid) = unsafe { (libc::geteuid(), libc::getegid()) };
        // A filter as long as stockade's default (about 280 instructions) that, like it, makes
        // each call walk about a dozen comparisons before it is allowed.
        let mut filter = vec![libc::sock_filter { code: 0x20, jt: 0, jf: 0, k: 0 }]; // ld nr
        for i in 0..12 {
            filter.push(libc::sock_filter { code: 0x15, jt: 0, jf: 0, k: 0x7fff_0000 + i }); // jeq, falls through
        }
        while filter.len() < 280 {
            filter.push(libc::sock_filter { code: 0x06, jt: 0, jf: 0, k: 0x7fff_0000 }); // ret ALLOW
        }
        let cgroups = if config.cgroup {
            ["memory", "pids"]
                .iter()
                .map(|c| format!("{}/raw-bench-{}", parent_group(c), std::process::id()))
                .collect()
        } else {
            Vec::new()
        };
        let mut paths: Vec<CString> = Vec::new();
        for p in MASKED.iter().chain(READONLY) {
            paths.push(c(p));
        }
        Raw {
            config,
            uid_map: c(&format!("0 {uid} 1")),
            gid_map: c(&format!("0 {gid} 1")),
            paths,
            filter,
            cgroups,
            seq: 0,
        }
    }

    /// Runs `/bin/true` once in the configuration; returns its exit status.
    pub fn run(&mut self) -> Result<i32> {
        if !self.config.namespaces {
            return spawn_plain();
        }
        self.seq += 1;
        let groups: Vec<String> = self.cgroups.iter().map(|g| format!("{g}-{}", self.seq)).collect();
        for g in &groups {
            std::fs::create_dir(g)?;
        }
        if let Some(memory) = groups.first() {
            std::fs::write(format!("{memory}/memory.limit_in_bytes"), "268435456")?;
        }
        if let Some(pids) = groups.get(1) {
            std::fs::write(format!("{pids}/pids.max"), "64")?;
        }
        let tasks = groups
            .iter()
            .map(|g| std::fs::OpenOptions::new().write(true).open(format!("{g}/tasks")))
            .collect::<Result<Vec<_>>>()?;
        let mut go = [0 as libc::c_int; 2];
        check(unsafe { libc::pipe2(go.as_mut_ptr(), libc::O_CLOEXEC) })?;
        let mut flags = libc::CLONE_NEWUSER
            | libc::CLONE_NEWPID
            | libc::CLONE_NEWNS
            | libc::CLONE_NEWUTS
            | libc::CLONE_NEWIPC;
        if self.config.net {
            flags |= libc::CLONE_NEWNET;
        }
        let pid = unsafe {
            libc::syscall(
                libc::SYS_clone,
                (flags | libc::SIGCHLD) as libc::c_ulong,
                0usize,
                0usize,
                0usize,
                0usize,
            )
        };
        if pid < 0 {
            return Err(Error::last_os_error());
        }
        if pid == 0 {
            for file in &tasks {
                use std::os::fd::AsRawFd;
                if unsafe { libc::write(file.as_raw_fd(), b"0".as_ptr().cast(), 1) } != 1 {
                    unsafe { libc::_exit(99) }
                }
            }
            unsafe { libc::close(go[1]) };
            let mut b = [0u8; 1];
            unsafe { libc::read(go[0], b.as_mut_ptr().cast(), 1) };
            let code = child(self);
            unsafe { libc::_exit(code) }
        }
        let pid = pid as libc::pid_t;
        unsafe { libc::close(go[0]) };
        std::fs::write(format!("/proc/{pid}/setgroups"), "deny")?;
        std::fs::write(format!("/proc/{pid}/uid_map"), self.uid_map.as_bytes())?;
        std::fs::write(format!("/proc/{pid}/gid_map"), self.gid_map.as_bytes())?;
        drop(tasks);
        unsafe { libc::write(go[1], b"g".as_ptr().cast(), 1) };
        unsafe { libc::close(go[1]) };
        let mut status = 0;
        check(unsafe { libc::waitpid(pid, &mut status, 0) })?;
        for g in &groups {
            std::fs::remove_dir(g)?;
        }
        Ok(libc::WEXITSTATUS(status))
    }
}

/// Where stockade makes a sandbox's group of `controller` by default: a `stockade` group under
/// this process's own (so the embedder's limits hold for the sandbox too). The raw limit makes
/// its groups there as well: a memory charge walks every group above, so a group nearer the
/// root would be cheaper and escape the embedder's limits.
fn parent_group(controller: &str) -> String {
    let own = std::fs::read_to_string("/proc/self/cgroup").unwrap_or_default();
    let path = own
        .lines()
        .filter_map(|l| {
            let mut fields = l.splitn(3, ':');
            fields.next();
            Some((fields.next()?, fields.next()?))
        })
        .find(|(names, _)| names.split(',').any(|n| n == controller))
        .map_or("/", |(_, path)| path);
    let parent = format!("/sys/fs/cgroup/{controller}{}/stockade", path.trim_end_matches('/'));
    let _ = std::fs::create_dir(&parent);
    parent
}

fn spawn_plain() -> Result<i32> {
    let prog = c("/bin/true");
    let argv = [prog.as_ptr(), std::ptr::null()];
    let envp: [*const libc::c_char; 1] = [std::ptr::null()];
    let mut pid = 0;
    let ret = unsafe {
        libc::posix_spawn(
            &mut pid,
            prog.as_ptr(),
            std::ptr::null(),
            std::ptr::null(),
            argv.as_ptr() as _,
            envp.as_ptr() as _,
        )
    };
    if ret != 0 {
        return Err(Error::from_raw_os_error(ret));
    }
    let mut status = 0;
    check(unsafe { libc::waitpid(pid, &mut status, 0) })?;
    Ok(libc::WEXITSTATUS(status))
}

/// In the child (pid 1 of the new namespaces): builds everything, forks the payload, waits.
fn child(raw: &Raw) -> i32 {
    unsafe {
        let null = std::ptr::null::<libc::c_char>();
        macro_rules! ok {
            ($e:expr) => {
                if $e < 0 {
                    return 100 + line!() as i32 % 100;
                }
            };
        }
        ok!(libc::mount(null, c"/".as_ptr(), null, libc::MS_REC | libc::MS_PRIVATE, std::ptr::null()));
        let base = if raw.config.root { c"/tmp" } else { c"/" };
        if raw.config.root {
            ok!(libc::mount(
                c"tmpfs".as_ptr(),
                base.as_ptr(),
                c"tmpfs".as_ptr(),
                libc::MS_NOSUID | libc::MS_NODEV,
                c"mode=0755".as_ptr().cast()
            ));
            for d in [c"/tmp/usr", c"/tmp/proc", c"/tmp/dev", c"/tmp/sys", c"/tmp/old"] {
                ok!(libc::mkdir(d.as_ptr(), 0o755));
            }
            ok!(libc::mount(
                c"/usr".as_ptr(),
                c"/tmp/usr".as_ptr(),
                null,
                libc::MS_BIND | libc::MS_REC,
                std::ptr::null()
            ));
            ok!(libc::mount(
                null,
                c"/tmp/usr".as_ptr(),
                null,
                libc::MS_BIND | libc::MS_REMOUNT | libc::MS_RDONLY | libc::MS_NOSUID | libc::MS_NODEV,
                std::ptr::null()
            ));
            for (to, at) in [
                (c"usr/bin", c"/tmp/bin"),
                (c"usr/lib", c"/tmp/lib"),
                (c"usr/lib64", c"/tmp/lib64"),
                (c"usr/sbin", c"/tmp/sbin"),
            ] {
                ok!(libc::symlink(to.as_ptr(), at.as_ptr()));
            }
            ok!(libc::mount(
                c"tmpfs".as_ptr(),
                c"/tmp/dev".as_ptr(),
                c"tmpfs".as_ptr(),
                libc::MS_NOSUID | libc::MS_NOEXEC,
                c"mode=0755".as_ptr().cast()
            ));
            for dev in DEVICES {
                let at = c(&format!("/tmp/dev/{dev}"));
                let from = c(&format!("/dev/{dev}"));
                let fd = libc::open(at.as_ptr(), libc::O_CREAT | libc::O_WRONLY | libc::O_CLOEXEC, 0o666);
                ok!(fd);
                libc::close(fd);
                ok!(libc::mount(from.as_ptr(), at.as_ptr(), null, libc::MS_BIND, std::ptr::null()));
            }
            for d in [c"/tmp/dev/pts", c"/tmp/dev/shm"] {
                ok!(libc::mkdir(d.as_ptr(), 0o755));
            }
            ok!(libc::mount(
                c"devpts".as_ptr(),
                c"/tmp/dev/pts".as_ptr(),
                c"devpts".as_ptr(),
                libc::MS_NOSUID | libc::MS_NOEXEC,
                c"newinstance,ptmxmode=0666,mode=620".as_ptr().cast()
            ));
            ok!(libc::mount(
                c"tmpfs".as_ptr(),
                c"/tmp/dev/shm".as_ptr(),
                c"tmpfs".as_ptr(),
                libc::MS_NOSUID | libc::MS_NODEV,
                std::ptr::null()
            ));
            ok!(libc::symlink(c"pts/ptmx".as_ptr(), c"/tmp/dev/ptmx".as_ptr()));
            ok!(libc::mount(
                c"proc".as_ptr(),
                c"/tmp/proc".as_ptr(),
                c"proc".as_ptr(),
                libc::MS_NOSUID | libc::MS_NODEV | libc::MS_NOEXEC,
                std::ptr::null()
            ));
            ok!(libc::chdir(c"/tmp".as_ptr()));
            ok!(libc::syscall(libc::SYS_pivot_root, c".".as_ptr(), c"old".as_ptr()) as i32);
            ok!(libc::umount2(c"/old".as_ptr(), libc::MNT_DETACH));
            ok!(libc::rmdir(c"/old".as_ptr()));
        } else {
            ok!(libc::mount(
                c"proc".as_ptr(),
                c"/proc".as_ptr(),
                c"proc".as_ptr(),
                libc::MS_NOSUID | libc::MS_NODEV | libc::MS_NOEXEC,
                std::ptr::null()
            ));
        }
        // Masks (/dev/null over files, an empty read-only tmpfs over directories) and
        // read-only paths, where they exist.
        for (i, p) in raw.paths.iter().enumerate() {
            let mut st: libc::stat = std::mem::zeroed();
            if libc::stat(p.as_ptr(), &mut st) != 0 {
                continue;
            }
            if i < MASKED.len() {
                if st.st_mode & libc::S_IFMT == libc::S_IFDIR {
                    ok!(libc::mount(
                        c"tmpfs".as_ptr(),
                        p.as_ptr(),
                        c"tmpfs".as_ptr(),
                        libc::MS_RDONLY,
                        std::ptr::null()
                    ));
                } else {
                    ok!(libc::mount(
                        c"/dev/null".as_ptr(),
                        p.as_ptr(),
                        null,
                        libc::MS_BIND,
                        std::ptr::null()
                    ));
                }
            } else {
                ok!(libc::mount(
                    p.as_ptr(),
                    p.as_ptr(),
                    null,
                    libc::MS_BIND | libc::MS_REC,
                    std::ptr::null()
                ));
                ok!(libc::mount(
                    null,
                    p.as_ptr(),
                    null,
                    libc::MS_BIND | libc::MS_REMOUNT | libc::MS_RDONLY,
                    std::ptr::null()
                ));
            }
        }
        if raw.config.root {
            ok!(libc::mount(
                null,
                c"/".as_ptr(),
                null,
                libc::MS_BIND | libc::MS_REMOUNT | libc::MS_RDONLY,
                std::ptr::null()
            ));
        }
        if raw.config.net {
            let sock = libc::socket(libc::AF_INET, libc::SOCK_DGRAM | libc::SOCK_CLOEXEC, 0);
            ok!(sock);
            let mut req: libc::ifreq = std::mem::zeroed();
            req.ifr_name[0] = b'l' as libc::c_char;
            req.ifr_name[1] = b'o' as libc::c_char;
            ok!(libc::ioctl(sock, libc::SIOCGIFFLAGS, &mut req));
            req.ifr_ifru.ifru_flags |= (libc::IFF_UP | libc::IFF_RUNNING) as libc::c_short;
            ok!(libc::ioctl(sock, libc::SIOCSIFFLAGS, &req));
            libc::close(sock);
        }
        // The mount lock: the payload enters a nested user namespace (with a copy of the mount
        // namespace, which locks every mount); the init writes its maps.
        let mut sync = [0 as libc::c_int; 2];
        let mut done = [0 as libc::c_int; 2];
        ok!(libc::pipe2(sync.as_mut_ptr(), libc::O_CLOEXEC));
        ok!(libc::pipe2(done.as_mut_ptr(), libc::O_CLOEXEC));
        let payload = libc::fork();
        ok!(payload);
        if payload == 0 {
            let mut b = [0u8; 1];
            if libc::unshare(libc::CLONE_NEWUSER | libc::CLONE_NEWNS) != 0 {
                libc::_exit(90);
            }
            libc::write(sync[1], b"m".as_ptr().cast(), 1);
            libc::read(done[0], b.as_mut_ptr().cast(), 1);
            if raw.config.filter {
                libc::prctl(libc::PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0);
                let prog =
                    libc::sock_fprog { len: raw.filter.len() as u16, filter: raw.filter.as_ptr() as *mut _ };
                if libc::syscall(libc::SYS_seccomp, 1, 0, &prog as *const libc::sock_fprog) != 0 {
                    libc::_exit(91);
                }
            }
            let prog = c"/bin/true";
            let argv = [prog.as_ptr(), null];
            let envp = [null];
            libc::execve(prog.as_ptr(), argv.as_ptr(), envp.as_ptr());
            libc::_exit(92);
        }
        let mut b = [0u8; 1];
        libc::read(sync[0], b.as_mut_ptr().cast(), 1);
        for (file, map) in [("uid_map", &raw.uid_map), ("gid_map", &raw.gid_map)] {
            let path = c(&format!("/proc/{payload}/{file}"));
            if file == "gid_map" {
                let sg = c(&format!("/proc/{payload}/setgroups"));
                let fd = libc::open(sg.as_ptr(), libc::O_WRONLY | libc::O_CLOEXEC);
                libc::write(fd, b"deny".as_ptr().cast(), 4);
                libc::close(fd);
            }
            let fd = libc::open(path.as_ptr(), libc::O_WRONLY | libc::O_CLOEXEC);
            ok!(fd);
            // Inside the first namespace this process is 0: map the nested 0 to it.
            let _ = map;
            libc::write(fd, b"0 0 1".as_ptr().cast(), 5);
            libc::close(fd);
        }
        libc::write(done[1], b"d".as_ptr().cast(), 1);
        let mut status = 0;
        libc::waitpid(payload, &mut status, 0);
        libc::WEXITSTATUS(status)
    }
}
