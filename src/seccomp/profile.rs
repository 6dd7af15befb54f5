//! The default profile (see [`SyscallFilter::default_profile`](super::SyscallFilter)): Docker's
//! default allow-list, narrowed, as a table of syscall numbers for this machine.

use std::collections::BTreeMap;

use syscalls::Sysno;

use super::bpf::Entry;
use super::{Action, ArgCmp, Cmp};
use crate::Capability;

/// Allowed for every payload: Docker's default allow-list (2025) without `io_uring_*` (the
/// source of most kernel exploits of the last years; Docker and isolate close it too),
/// `modify_ldt`, and the calls handled below by arguments. Names of other architectures are
/// kept so the list reads like Docker's; names this machine lacks are skipped.
const ALLOWED: &[&str] = &[
    "accept",
    "accept4",
    "access",
    "adjtimex",
    "alarm",
    "arch_prctl",
    "bind",
    "brk",
    "cachestat",
    "capget",
    "capset",
    "chdir",
    "chmod",
    "chown",
    "clock_adjtime",
    "clock_getres",
    "clock_gettime",
    "clock_nanosleep",
    "close",
    "close_range",
    "connect",
    "copy_file_range",
    "creat",
    "dup",
    "dup2",
    "dup3",
    "epoll_create",
    "epoll_create1",
    "epoll_ctl",
    "epoll_pwait",
    "epoll_pwait2",
    "epoll_wait",
    "eventfd",
    "eventfd2",
    "execve",
    "execveat",
    "exit",
    "exit_group",
    "faccessat",
    "faccessat2",
    "fadvise64",
    "fallocate",
    "fanotify_mark",
    "fchdir",
    "fchmod",
    "fchmodat",
    "fchmodat2",
    "fchown",
    "fchownat",
    "fcntl",
    "fdatasync",
    "fgetxattr",
    "flistxattr",
    "flock",
    "fork",
    "fremovexattr",
    "fsetxattr",
    "fstat",
    "fstatfs",
    "fsync",
    "ftruncate",
    "futex",
    "futex_requeue",
    "futex_wait",
    "futex_waitv",
    "futex_wake",
    "futimesat",
    "get_robust_list",
    "get_thread_area",
    "getcpu",
    "getcwd",
    "getdents",
    "getdents64",
    "getegid",
    "geteuid",
    "getgid",
    "getgroups",
    "getitimer",
    "getpeername",
    "getpgid",
    "getpgrp",
    "getpid",
    "getppid",
    "getpriority",
    "getrandom",
    "getresgid",
    "getresuid",
    "getrlimit",
    "getrusage",
    "getsid",
    "getsockname",
    "getsockopt",
    "gettid",
    "gettimeofday",
    "getuid",
    "getxattr",
    "getxattrat",
    "inotify_add_watch",
    "inotify_init",
    "inotify_init1",
    "inotify_rm_watch",
    "io_cancel",
    "io_destroy",
    "io_getevents",
    "io_pgetevents",
    "io_setup",
    "io_submit",
    "ioprio_get",
    "ioprio_set",
    "kill",
    "landlock_add_rule",
    "landlock_create_ruleset",
    "landlock_restrict_self",
    "lchown",
    "lgetxattr",
    "link",
    "linkat",
    "listen",
    "listxattr",
    "listxattrat",
    "llistxattr",
    "lremovexattr",
    "lseek",
    "lsetxattr",
    "lsm_get_self_attr",
    "lsm_list_modules",
    "lstat",
    "madvise",
    "map_shadow_stack",
    "membarrier",
    "memfd_create",
    "memfd_secret",
    "mincore",
    "mkdir",
    "mkdirat",
    "mknod",
    "mknodat",
    "mlock",
    "mlock2",
    "mlockall",
    "mmap",
    "mprotect",
    "mq_getsetattr",
    "mq_notify",
    "mq_open",
    "mq_timedreceive",
    "mq_timedsend",
    "mq_unlink",
    "mremap",
    "mseal",
    "msgctl",
    "msgget",
    "msgrcv",
    "msgsnd",
    "msync",
    "munlock",
    "munlockall",
    "munmap",
    "name_to_handle_at",
    "nanosleep",
    "newfstatat",
    "open",
    "openat",
    "openat2",
    "pause",
    "pidfd_open",
    "pidfd_send_signal",
    "pipe",
    "pipe2",
    "pkey_alloc",
    "pkey_free",
    "pkey_mprotect",
    "poll",
    "ppoll",
    "prctl",
    "pread64",
    "preadv",
    "preadv2",
    "prlimit64",
    "process_mrelease",
    "process_vm_readv",
    "process_vm_writev",
    "pselect6",
    "ptrace",
    "pwrite64",
    "pwritev",
    "pwritev2",
    "read",
    "readahead",
    "readlink",
    "readlinkat",
    "readv",
    "recvfrom",
    "recvmmsg",
    "recvmsg",
    "remap_file_pages",
    "removexattr",
    "removexattrat",
    "rename",
    "renameat",
    "renameat2",
    "restart_syscall",
    "rmdir",
    "rseq",
    "rt_sigaction",
    "rt_sigpending",
    "rt_sigprocmask",
    "rt_sigqueueinfo",
    "rt_sigreturn",
    "rt_sigsuspend",
    "rt_sigtimedwait",
    "rt_tgsigqueueinfo",
    "sched_get_priority_max",
    "sched_get_priority_min",
    "sched_getaffinity",
    "sched_getattr",
    "sched_getparam",
    "sched_getscheduler",
    "sched_rr_get_interval",
    "sched_setaffinity",
    "sched_setattr",
    "sched_setparam",
    "sched_setscheduler",
    "sched_yield",
    "seccomp",
    "select",
    "semctl",
    "semget",
    "semop",
    "semtimedop",
    "sendfile",
    "sendmmsg",
    "sendmsg",
    "sendto",
    "set_robust_list",
    "set_thread_area",
    "set_tid_address",
    "setfsgid",
    "setfsuid",
    "setgid",
    "setgroups",
    "setitimer",
    "setpgid",
    "setpriority",
    "setregid",
    "setresgid",
    "setresuid",
    "setreuid",
    "setrlimit",
    "setsid",
    "setsockopt",
    "setuid",
    "setxattr",
    "setxattrat",
    "shmat",
    "shmctl",
    "shmdt",
    "shmget",
    "shutdown",
    "sigaltstack",
    "signalfd",
    "signalfd4",
    "splice",
    "stat",
    "statfs",
    "statx",
    "symlink",
    "symlinkat",
    "sync",
    "sync_file_range",
    "syncfs",
    "sysinfo",
    "tee",
    "tgkill",
    "time",
    "timer_create",
    "timer_delete",
    "timer_getoverrun",
    "timer_gettime",
    "timer_settime",
    "timerfd_create",
    "timerfd_gettime",
    "timerfd_settime",
    "times",
    "tkill",
    "truncate",
    "umask",
    "uname",
    "unlink",
    "unlinkat",
    "uretprobe",
    "utime",
    "utimensat",
    "utimes",
    "vfork",
    "vmsplice",
    "wait4",
    "waitid",
    "write",
    "writev",
];

/// Allowed when the payload holds the capability, as in Docker's profile. Namespaces and
/// mounts with `CAP_SYS_ADMIN` are handled in [`table`]; `bpf` and `perf_event_open` stay
/// refused whatever the payload holds.
const BY_CAPABILITY: &[(Capability, &[&str])] = &[
    (
        Capability::CAP_SYS_ADMIN,
        &[
            "fanotify_init",
            "fsconfig",
            "fsmount",
            "fsopen",
            "fspick",
            "mount",
            "mount_setattr",
            "move_mount",
            "open_tree",
            "setdomainname",
            "sethostname",
            "setns",
            "umount2",
            "pivot_root",
        ],
    ),
    (Capability::CAP_SYS_BOOT, &["reboot"]),
    (Capability::CAP_SYS_CHROOT, &["chroot"]),
    (Capability::CAP_SYS_PACCT, &["acct"]),
    (Capability::CAP_SYS_PTRACE, &["kcmp", "pidfd_getfd", "process_madvise"]),
    (Capability::CAP_SYS_TIME, &["settimeofday", "clock_settime"]),
    (Capability::CAP_SYS_NICE, &["get_mempolicy", "mbind", "set_mempolicy", "set_mempolicy_home_node"]),
    (Capability::CAP_DAC_READ_SEARCH, &["open_by_handle_at"]),
];

/// Every namespace flag of `clone` (`CLONE_NEWTIME` shares its bit with the exit signal: only
/// `unshare` and `clone3` can ask for it, and both are refused).
const CLONE_NAMESPACES: u64 = (libc::CLONE_NEWNS
    | libc::CLONE_NEWCGROUP
    | libc::CLONE_NEWUTS
    | libc::CLONE_NEWIPC
    | libc::CLONE_NEWUSER
    | libc::CLONE_NEWPID
    | libc::CLONE_NEWNET) as u64;

/// Socket families a payload may create; others get `EAFNOSUPPORT`, as from a kernel without
/// them.
const SOCKET_FAMILIES: &[i32] =
    &[libc::AF_UNIX, libc::AF_INET, libc::AF_INET6, libc::AF_NETLINK, libc::AF_PACKET];

/// `personality` values programs use: `PER_LINUX`, `PER_LINUX32`, `UNAME26`,
/// `UNAME26 | PER_LINUX32`, and `0xffffffff`, which only queries.
const PERSONALITIES: &[u64] = &[0, 0x0008, 0x20000, 0x20008, 0xffff_ffff];

fn nr(name: &str) -> Option<u32> {
    name.parse::<Sysno>().ok().map(|s| s.id() as u32)
}

/// The profile for a payload holding the capabilities `caps` (bit `n`: capability `n`).
pub(super) fn table(caps: u64) -> BTreeMap<u32, Entry> {
    let eperm = Action::Errno(libc::EPERM).ret();
    let allow = Action::Allow.ret();
    let has = |cap: Capability| super::holds(caps, cap);
    // Every call this machine has is refused, then the allowed ones opened.
    let mut table: BTreeMap<u32, Entry> =
        // Every number from the first to the last the table knows (`Sysno::iter` stops short of
        // the last one).
        (Sysno::first().id()..=Sysno::last().id())
            .filter_map(|id| Sysno::new(id as usize))
            .map(|s| (s.id() as u32, Entry { rules: Vec::new(), fallback: eperm }))
            .collect();
    let mut set = |name: &str, entry: Entry| {
        if let Some(nr) = nr(name) {
            table.insert(nr, entry);
        }
    };
    let plain = |fallback| Entry { rules: Vec::new(), fallback };
    for name in ALLOWED {
        set(name, plain(allow));
    }
    for (cap, names) in BY_CAPABILITY {
        if has(*cap) {
            for name in *names {
                set(name, plain(allow));
            }
        }
    }
    // New namespaces: never a user namespace (the way in to most of the kernel's attack
    // surface); others with CAP_SYS_ADMIN.
    // `unshare` only with CAP_SYS_ADMIN, as with Docker.
    // Never CLONE_PARENT: without a pid namespace the payload's parent is the embedding
    // program, which would get children it knows nothing of (zombies it never reaps).
    let no_flags = |mask| vec![(vec![ArgCmp::new(0, Cmp::MaskedEq { mask, value: 0 })], allow)];
    let parent = libc::CLONE_PARENT as u64;
    if has(Capability::CAP_SYS_ADMIN) {
        let newuser = libc::CLONE_NEWUSER as u64;
        set("clone", Entry { rules: no_flags(newuser | parent), fallback: eperm });
        set("unshare", Entry { rules: no_flags(newuser), fallback: eperm });
    } else {
        set("clone", Entry { rules: no_flags(CLONE_NAMESPACES | parent), fallback: eperm });
    }
    set("clone3", plain(Action::Errno(libc::ENOSYS).ret()));
    let refuse_request = |request: u64| (vec![ArgCmp::low32(1, Cmp::Eq(request))], eperm);
    set(
        "ioctl",
        Entry {
            rules: vec![refuse_request(libc::TIOCSTI), refuse_request(libc::TIOCLINUX)],
            fallback: allow,
        },
    );
    let family = |f: &i32| (vec![ArgCmp::low32(0, Cmp::Eq(*f as u64))], allow);
    // A pair of sockets runs its family's code as much as one socket does: unix only.
    set(
        "socketpair",
        Entry { rules: vec![family(&libc::AF_UNIX)], fallback: Action::Errno(libc::EAFNOSUPPORT).ret() },
    );
    set(
        "socket",
        Entry {
            rules: SOCKET_FAMILIES.iter().map(family).collect(),
            fallback: Action::Errno(libc::EAFNOSUPPORT).ret(),
        },
    );
    let persona = |p: &u64| (vec![ArgCmp::low32(0, Cmp::Eq(*p))], allow);
    set("personality", Entry { rules: PERSONALITIES.iter().map(persona).collect(), fallback: eperm });
    table
}
