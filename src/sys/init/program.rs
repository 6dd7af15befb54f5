//! `stockade-init`: the sandbox's pid 1, a program of its own (a few kilobytes, no C library),
//! built by `build.rs` and run from a sealed memfd. It is not a copy of the embedding program:
//! it holds none of its memory, and the spawn never copies the embedder's page tables for it.
//!
//! The child that becomes pid 1 starts the payload, then execs this with every signal blocked,
//! and `STOCKADE_INIT=<payload pid>,<status fd>,<ready fd>,<parent pidfd>,<wall ms>,<keep>` as
//! its only environment (-1 for an absent descriptor or no wall-clock limit; keep 1 for a
//! session's init, which outlives its payload, see 4). It then:
//! 1. turns non-dumpable and names itself, then closes the ready descriptor: the payload waits
//!    for that before its exec, so it can never ptrace or open the init while it is dumpable;
//! 2. re-arms its parent-death signal and exits if the embedding process died meanwhile (with
//!    no parent descriptor, the sandbox outlives the embedding process: neither);
//! 3. closes every descriptor but the status pipe;
//! 4. waits for signals: forwards each to the payload (unless a process inside the namespace
//!    sent it), except SIGCHLD, on which it reaps every child; when the payload is reaped it writes the payload's wait status (native-endian i32)
//!    to the status pipe and exits with the payload's code, which makes the kernel kill
//!    whatever else is left in the namespace (with keep, a session's init, it outlives its
//!    payload instead: see `session_init`);
//! 5. with a wall-clock limit, ends the sandbox when that much time has passed since its
//!    start, so the limit holds even while the embedding program never waits (its own
//!    supervision, when it waits, fires first: it counts from before the clone). As pid 1 it
//!    reports the payload killed and exits, which takes the whole namespace down (killing the
//!    payload and waiting to reap it would not do: a tracer of the payload's could keep it
//!    from ever being reaped). As a joined command's relay (not pid 1: it lives outside the
//!    sandbox's pid namespace, see `Child::join`) it kills the command, and the embedding
//!    program removes the command's cgroup when it next looks.
//!
//! With `STOCKADE_INIT=hold` it is a session's holder (it only waits), with
//! `STOCKADE_INIT=serve` a session's server (`serve.rs`).
//!
//! Each report on the status pipe is two native-endian i32s: the payload's wait status, and 1
//! when the wall-clock limit ended it (0 otherwise).
//!
//! Compiled separately (`#![no_std]`, static, no start files); not part of the library crate.

#![no_std]
#![no_main]
#![allow(unsafe_code)]

use core::arch::{asm, global_asm};

mod serve;
#[path = "wire.rs"]
mod wire;

#[cfg(target_arch = "x86_64")]
global_asm!(
    ".globl _start",
    "_start:",
    "mov rdi, rsp",
    "and rsp, -16",
    "call {main}",
    "ud2",
    main = sym main,
);

#[cfg(target_arch = "aarch64")]
global_asm!(
    ".globl _start",
    "_start:",
    "mov x0, sp",
    "bl {main}",
    "brk #1",
    main = sym main,
);

#[cfg(target_arch = "x86_64")]
mod nr {
    pub const WRITE: usize = 1;
    pub const CLOSE: usize = 3;
    pub const KILL: usize = 62;
    pub const WAIT4: usize = 61;
    pub const PRCTL: usize = 157;
    pub const RT_SIGTIMEDWAIT: usize = 128;
    pub const PPOLL: usize = 271;
    pub const RT_SIGSUSPEND: usize = 130;
    pub const EXIT_GROUP: usize = 231;
    pub const CLOSE_RANGE: usize = 436;
    pub const CLOCK_GETTIME: usize = 228;
    pub const GETPID: usize = 39;
    pub const READ: usize = 0;
    pub const SENDMSG: usize = 46;
    pub const RECVMSG: usize = 47;
    pub const CLONE: usize = 56;
    pub const EXECVE: usize = 59;
    pub const FCNTL: usize = 72;
    pub const CHDIR: usize = 80;
    pub const MMAP: usize = 9;
    pub const IOCTL: usize = 16;
    pub const RT_SIGPROCMASK: usize = 14;
    pub const SETSID: usize = 112;
    pub const KEYCTL: usize = 250;
    pub const OPENAT: usize = 257;
    pub const DUP3: usize = 292;
    pub const PIDFD_OPEN: usize = 434;
    pub const MUNMAP: usize = 11;
    pub const NANOSLEEP: usize = 35;
    pub const PRLIMIT64: usize = 302;
    pub const LANDLOCK_RESTRICT_SELF: usize = 446;
    pub const UMASK: usize = 95;
    pub const MKDIRAT: usize = 258;
    pub const SIGNALFD4: usize = 289;
    pub const SETNS: usize = 308;
    pub const WAITID: usize = 247;
}

#[cfg(target_arch = "aarch64")]
mod nr {
    pub const WRITE: usize = 64;
    pub const CLOSE: usize = 57;
    pub const KILL: usize = 129;
    pub const WAIT4: usize = 260;
    pub const PRCTL: usize = 167;
    pub const RT_SIGTIMEDWAIT: usize = 137;
    pub const PPOLL: usize = 73;
    pub const RT_SIGSUSPEND: usize = 133;
    pub const EXIT_GROUP: usize = 94;
    pub const CLOSE_RANGE: usize = 436;
    pub const CLOCK_GETTIME: usize = 113;
    pub const GETPID: usize = 172;
    pub const READ: usize = 63;
    pub const SENDMSG: usize = 211;
    pub const RECVMSG: usize = 212;
    pub const CLONE: usize = 220;
    pub const EXECVE: usize = 221;
    pub const FCNTL: usize = 25;
    pub const CHDIR: usize = 49;
    pub const MMAP: usize = 222;
    pub const IOCTL: usize = 29;
    pub const RT_SIGPROCMASK: usize = 135;
    pub const SETSID: usize = 157;
    pub const KEYCTL: usize = 219;
    pub const OPENAT: usize = 56;
    pub const DUP3: usize = 24;
    pub const PIDFD_OPEN: usize = 434;
    pub const MUNMAP: usize = 215;
    pub const NANOSLEEP: usize = 101;
    pub const PRLIMIT64: usize = 261;
    pub const LANDLOCK_RESTRICT_SELF: usize = 446;
    pub const UMASK: usize = 166;
    pub const MKDIRAT: usize = 34;
    pub const SIGNALFD4: usize = 74;
    pub const SETNS: usize = 268;
    pub const WAITID: usize = 95;
}

const SIGCHLD: isize = 17;
const SIGKILL: usize = 9;
const EINTR: isize = 4;
const EAGAIN: isize = 11;
const CLOCK_MONOTONIC: usize = 1;
const PR_SET_PDEATHSIG: usize = 1;
const PR_SET_DUMPABLE: usize = 4;
const PR_SET_NAME: usize = 15;
const WNOHANG: usize = 1;
const POLLIN: i16 = 1;

/// `struct timespec`.
#[repr(C)]
#[derive(Clone, Copy)]
struct Timespec {
    sec: i64,
    nsec: i64,
}

impl Timespec {
    fn now() -> Timespec {
        let mut t = Timespec { sec: 0, nsec: 0 };
        call(nr::CLOCK_GETTIME, CLOCK_MONOTONIC, &mut t as *mut Timespec as usize, 0, 0);
        t
    }

    fn nanos(self) -> i128 {
        self.sec as i128 * 1_000_000_000 + self.nsec as i128
    }

    fn from_nanos(n: i128) -> Timespec {
        Timespec { sec: (n / 1_000_000_000) as i64, nsec: (n % 1_000_000_000) as i64 }
    }
}

/// `struct pollfd`.
#[repr(C)]
struct PollFd {
    fd: i32,
    events: i16,
    revents: i16,
}
/// Exit code when the init cannot do its job (bad environment, sigwait failure).
const EXIT_BROKEN: usize = 127;
/// Exit code when the embedding process died before the parent-death signal was re-armed.
const EXIT_ABANDONED: usize = 126;

#[cfg(target_arch = "x86_64")]
unsafe fn syscall6(n: usize, a: usize, b: usize, c: usize, d: usize, e: usize, f: usize) -> isize {
    let ret: isize;
    // SAFETY: the caller passes arguments valid for system call `n`.
    unsafe {
        asm!("syscall", inlateout("rax") n as isize => ret, in("rdi") a, in("rsi") b, in("rdx") c,
             in("r10") d, in("r8") e, in("r9") f, out("rcx") _, out("r11") _, options(nostack));
    }
    ret
}

#[cfg(target_arch = "aarch64")]
unsafe fn syscall6(n: usize, a: usize, b: usize, c: usize, d: usize, e: usize, f: usize) -> isize {
    let ret: isize;
    // SAFETY: the caller passes arguments valid for system call `n`.
    unsafe {
        asm!("svc 0", in("x8") n, inlateout("x0") a as isize => ret, in("x1") b, in("x2") c,
             in("x3") d, in("x4") e, in("x5") f, options(nostack));
    }
    ret
}

/// A system call of at most four arguments.
///
/// # Safety
/// As for the system call `n` with these arguments.
unsafe fn syscall(n: usize, a: usize, b: usize, c: usize, d: usize) -> isize {
    // SAFETY: the caller's contract; the last two argument registers are zero.
    unsafe { syscall6(n, a, b, c, d, 0, 0) }
}

fn call(n: usize, a: usize, b: usize, c: usize, d: usize) -> isize {
    loop {
        // SAFETY: every call below passes integers or pointers to live locals.
        let ret = unsafe { syscall(n, a, b, c, d) };
        if ret != -EINTR {
            return ret;
        }
    }
}

fn exit(code: usize) -> ! {
    loop {
        call(nr::EXIT_GROUP, code, 0, 0, 0);
    }
}

/// Parses `<int>,<int>,<int>,<int>,<int>,<int>` (each may be -1).
fn parse(mut s: *const u8) -> Option<[isize; 6]> {
    let mut out = [0isize; 6];
    let last = out.len() - 1;
    for (i, slot) in out.iter_mut().enumerate() {
        // SAFETY: `s` walks a NUL-terminated string from the initial stack and stops at its NUL.
        let mut c = unsafe { *s };
        let negative = c == b'-';
        if negative {
            s = s.wrapping_add(1);
            c = unsafe { *s };
        }
        let mut value: isize = 0;
        let mut digits = 0;
        while c.is_ascii_digit() && digits < 10 {
            value = value * 10 + (c - b'0') as isize;
            digits += 1;
            s = s.wrapping_add(1);
            c = unsafe { *s };
        }
        if digits == 0 || (i < last && c != b',') || (i == last && c != 0) {
            return None;
        }
        s = s.wrapping_add(1);
        *slot = if negative { -value } else { value };
    }
    Some(out)
}

/// What the environment asks for.
enum Mode {
    /// Be the sandbox's pid 1: payload pid, status, ready and parent descriptors, wall-clock
    /// limit in milliseconds, and 1 when the namespace outlives its payload (a session's).
    Init([isize; 6]),
    /// Be a session's holder: wait until killed.
    Hold,
    /// Be a session's server: start its commands (see `serve.rs`).
    Serve,
}

/// Finds `STOCKADE_INIT=` in the environment of the initial stack `sp`.
fn arguments(sp: *const usize) -> Option<Mode> {
    const KEY: &[u8] = b"STOCKADE_INIT=";
    // SAFETY: the kernel's initial stack: argc, argv[argc], NULL, envp..., NULL.
    unsafe {
        let argc = *sp;
        let mut env = sp.add(1 + argc + 1) as *const *const u8;
        while !(*env).is_null() {
            let var = *env;
            if (0..KEY.len()).all(|i| *var.add(i) == KEY[i]) {
                let value = var.add(KEY.len());
                if (0..5).all(|i| *value.add(i) == b"hold\0"[i]) {
                    return Some(Mode::Hold);
                }
                if (0..6).all(|i| *value.add(i) == b"serve\0"[i]) {
                    return Some(Mode::Serve);
                }
                return parse(value).map(Mode::Init);
            }
            env = env.add(1);
        }
    }
    None
}

unsafe extern "C" fn main(sp: *const usize) -> ! {
    let start = Timespec::now();
    let [payload, status, ready, parent, wall_ms, keep] = match arguments(sp) {
        Some(Mode::Init(values)) => values,
        Some(Mode::Hold) => hold(),
        Some(Mode::Serve) => serve::serve(),
        None => exit(EXIT_BROKEN),
    };
    call(nr::PRCTL, PR_SET_DUMPABLE, 0, 0, 0);
    call(nr::PRCTL, PR_SET_NAME, b"stockade-init\0".as_ptr() as usize, 0, 0);
    if ready >= 0 {
        call(nr::CLOSE, ready as usize, 0, 0, 0);
    }
    // Without the embedding process's pidfd the sandbox outlives it (a runtime's detached
    // container): no parent-death signal then.
    if parent >= 0 {
        call(nr::PRCTL, PR_SET_PDEATHSIG, SIGKILL, 0, 0);
        let mut fd = PollFd { fd: parent as i32, events: POLLIN, revents: 0 };
        let zero = [0usize; 2];
        let n = call(nr::PPOLL, &mut fd as *mut PollFd as usize, 1, zero.as_ptr() as usize, 0);
        if n != 0 {
            // Readable (the embedding process exited) or an error: nobody is left to serve.
            call(nr::KILL, payload as usize, SIGKILL, 0, 0);
            exit(EXIT_ABANDONED);
        }
    }
    // Nothing of the host (stdio, the embedding program's descriptors) stays open in a process
    // that lives as long as the sandbox.
    if status > 0 {
        call(nr::CLOSE_RANGE, 0, status as usize - 1, 0, 0);
    }
    call(nr::CLOSE_RANGE, (status + 1).max(0) as usize, u32::MAX as usize, 0, 0);
    if keep == 1 {
        session_init(status, payload);
    }
    let all = [u64::MAX];
    // pid 1 of the sandbox's namespace, or a session command's relay outside it.
    let pid1 = call(nr::GETPID, 0, 0, 0, 0) == 1;
    let mut timed_out = false;
    let mut deadline = (wall_ms >= 0).then(|| start.nanos() + wall_ms as i128 * 1_000_000);
    loop {
        // Until the deadline (if any): what is left of it, as a relative timeout, computed
        // again after every wake (an interrupted wait must not push the deadline back).
        let left = deadline.map(|d| Timespec::from_nanos((d - Timespec::now().nanos()).max(0)));
        let timeout = left.as_ref().map_or(0, |t| t as *const Timespec as usize);
        // The kernel's siginfo (128 bytes): si_code at byte 8, a sender's pid at byte 16.
        let mut info = [0i32; 32];
        // SAFETY: a live signal set of 8 bytes, a live siginfo buffer of 128 bytes and a live
        // timespec (or none).
        let signal = unsafe {
            syscall(nr::RT_SIGTIMEDWAIT, all.as_ptr() as usize, info.as_mut_ptr() as usize, timeout, 8)
        };
        if signal == -EINTR {
            continue;
        }
        if signal == -EAGAIN && deadline.is_some() {
            deadline = None;
            if pid1 {
                // The whole namespace goes with this process: report the payload killed.
                report(status, SIGKILL as i32, true);
                exit(128 + SIGKILL);
            }
            // A relay: its command goes; its cgroup, with anything it left, when the
            // embedding program looks.
            call(nr::KILL, payload as usize, SIGKILL, 0, 0);
            timed_out = true;
            continue;
        }
        if signal < 0 {
            exit(EXIT_BROKEN);
        }
        if signal == SIGCHLD {
            // Always, whoever sent it: a SIGCHLD sent from inside may have been merged with
            // the payload's exit.
            reap(payload, status, timed_out);
        } else if pid1 && from_inside(info[2], info[4]) {
            // The init is not the payload's to signal (the kernel drops such signals to a
            // namespace's init only while they are not blocked; Landlock's signal scope refuses
            // them from 6.12 on): dropped. A standard signal pending from inside also absorbs
            // the same signal sent meanwhile from outside (signals do not queue): a payload can
            // keep its init from forwarding, say, SIGTERM, which it could ignore anyway; kill
            // and the limits do not go through the init.
        } else {
            // The payload may be gone already (ESRCH); nothing to do then.
            call(nr::KILL, payload as usize, signal as usize, 0, 0);
        }
    }
}

/// Whether a signal with this `si_code` and `si_pid` came from inside the namespace. Only
/// kill and tgkill (SI_USER, SI_TKILL) have a sender pid the kernel vouches for: a sender
/// outside the namespace shows 0, one inside its pid. Other user-sent codes (sigqueue and
/// the like, si_code < 0) carry a siginfo the sender wrote, pid included: the embedding program
/// never sends those (it sends with no siginfo), so they come from inside. Kernel-sent codes
/// (> 0: a child's exit, a terminal's SIGINT or SIGWINCH) are forwarded.
fn from_inside(code: i32, pid: i32) -> bool {
    const SI_USER: i32 = 0;
    const SI_TKILL: i32 = -6;
    match code {
        SI_USER | SI_TKILL => pid != 0,
        code => code < 0,
    }
}

/// A session's holder: a process whose namespaces commands join. It holds nothing and does
/// nothing; signals take their default action (it runs with the payload's credentials, filter
/// and Landlock rules, and its signals unblocked).
fn hold() -> ! {
    call(nr::PRCTL, PR_SET_DUMPABLE, 0, 0, 0);
    call(nr::PRCTL, PR_SET_NAME, b"stockade-hold\0".as_ptr() as usize, 0, 0);
    call(nr::CLOSE_RANGE, 0, u32::MAX as usize, 0, 0);
    loop {
        // No descriptors, no timeout: sleeps until a signal ends the process. Should a filter
        // refuse ppoll, sigsuspend with nothing blocked does the same; should that be refused
        // too, the holder ends (and with it the session) rather than spin.
        if call(nr::PPOLL, 0, 0, 0, 0) < 0 {
            let none = [0u64];
            // Returns only with an error other than EINTR (`call` retries those).
            call(nr::RT_SIGSUSPEND, none.as_ptr() as usize, 8, 0, 0);
            exit(EXIT_BROKEN);
        }
    }
}

/// A session's init (`keep`): it outlives its payload, the holder, which a reset replaces
/// (`Session::reset`). It reaps every child, forwards no signal (a holder only waits), and
/// serves the embedding program's requests on `status`, a socket (no process of the session can
/// reach it), each answered by one byte:
/// - `k`: kill every other process of the namespace (as its pid 1, which `kill(-1)` leaves
///   out, no process of the session can stop or kill it, nor keep it from doing this), and
///   reap each one that is its child until none is left;
/// - `h` with the new holder's pid (in this namespace, native-endian i32) and a descriptor of
///   its mount namespace: join that namespace (the one this process was in, with the tree it
///   built for the first holder and what was written to it, goes once nothing else is in it),
///   and take that holder as the one whose end ends every other process, as the first's did.
///
/// The socket's end (the embedding program let the session go) ends it, and the namespace with
/// it; so does a kill, the usual end. Requests come first, and signals are read in bounded
/// batches: signals sent from inside cannot keep it from a request.
fn session_init(status: isize, first_holder: isize) -> ! {
    const SFD_CLOEXEC: usize = 0o2000000;
    const SFD_NONBLOCK: usize = 0o4000;
    const CLONE_NEWNS: usize = 0x0002_0000;
    // Every signal stays blocked, and is read from here: SIGCHLD to reap, the others dropped
    // (a signal from inside would otherwise stay pending).
    let all = [u64::MAX];
    let signals = call(nr::SIGNALFD4, usize::MAX, all.as_ptr() as usize, 8, SFD_CLOEXEC | SFD_NONBLOCK);
    if signals < 0 || status < 0 {
        exit(EXIT_BROKEN);
    }
    let mut holder = first_holder;
    loop {
        let mut fds = [
            PollFd { fd: status as i32, events: POLLIN, revents: 0 },
            PollFd { fd: signals as i32, events: POLLIN, revents: 0 },
        ];
        if call(nr::PPOLL, fds.as_mut_ptr() as usize, 2, 0, 0) < 0 {
            exit(EXIT_BROKEN);
        }
        if fds[0].revents != 0 {
            let mut message = [0u8; 5];
            let mut iov = serve::Iovec { base: message.as_mut_ptr(), len: message.len() };
            // One cmsghdr (16 bytes) with one descriptor, 8-aligned.
            let mut space = [0u64; 3];
            let mut msg = serve::MsgHdr {
                name: core::ptr::null_mut(),
                namelen: 0,
                iov: &mut iov,
                iovlen: 1,
                control: space.as_mut_ptr() as *mut u8,
                controllen: core::mem::size_of_val(&space),
                flags: 0,
            };
            let got =
                call(nr::RECVMSG, status as usize, &mut msg as *mut serve::MsgHdr as usize, serve::MSG_CMSG_CLOEXEC, 0);
            if got <= 0 {
                exit(EXIT_ABANDONED);
            }
            // The descriptor, if one came (one at most: a second one, in the upper half of the
            // last word, is closed; a message cut short is refused).
            const MSG_TRUNC: i32 = 0x20;
            const MSG_CTRUNC: i32 = 0x8;
            let (len, level, kind) = (space[0] as usize, space[1] as u32 as i32, (space[1] >> 32) as i32);
            let rights = msg.controllen >= 20 && level == serve::SOL_SOCKET && kind == serve::SCM_RIGHTS;
            let fd = (rights && len >= 20).then_some(space[2] as u32 as i32);
            if rights && len >= 24 {
                call(nr::CLOSE, (space[2] >> 32) as u32 as usize, 0, 0, 0);
            }
            let cut = msg.flags & (MSG_TRUNC | MSG_CTRUNC) != 0 || (rights && len != 20);
            let message = if cut { [0u8; 5] } else { message };
            let answer = match (message[0], got, fd) {
                (b'k', 1, None) => {
                    // Until none of its children is left (each killed process that was not one
                    // is either some other's, reaped by that one, or becomes its orphan), and
                    // again after each: a process the server started meanwhile goes too.
                    loop {
                        call(nr::KILL, usize::MAX, SIGKILL, 0, 0);
                        let mut wait_status: i32 = 0;
                        let pid = call(nr::WAIT4, usize::MAX, &mut wait_status as *mut i32 as usize, 0, 0);
                        if pid <= 0 {
                            break;
                        }
                    }
                    holder = 0;
                    b'k'
                }
                (b'h', 5, Some(fd)) => {
                    let pid = i32::from_ne_bytes([message[1], message[2], message[3], message[4]]);
                    // The holder must be a child of this process that has not ended (its pid
                    // could be another's later): `waitid` without reaping says so.
                    const P_PID: usize = 1;
                    const WEXITED: usize = 4;
                    const WNOWAIT: usize = 0x0100_0000;
                    let mut info = [0i32; 32];
                    // SAFETY: a live siginfo buffer of 128 bytes; no rusage.
                    let waited = unsafe {
                        syscall6(nr::WAITID, P_PID, pid as usize, info.as_mut_ptr() as usize, WEXITED | WNOHANG | WNOWAIT, 0, 0)
                    };
                    // si_pid (byte 16) stays 0 while the child runs.
                    let alive = pid > 1 && waited == 0 && info[4] == 0;
                    let joined = alive && call(nr::SETNS, fd as usize, CLONE_NEWNS, 0, 0) == 0;
                    call(nr::CLOSE, fd as usize, 0, 0, 0);
                    if joined {
                        holder = pid as isize;
                        b'h'
                    } else {
                        b'!'
                    }
                }
                (_, _, fd) => {
                    if let Some(fd) = fd {
                        call(nr::CLOSE, fd as usize, 0, 0, 0);
                    }
                    b'!'
                }
            };
            call(nr::WRITE, status as usize, &answer as *const u8 as usize, 1, 0);
        }
        if fds[1].revents != 0 {
            // `struct signalfd_siginfo`: 128 bytes each; what they say does not matter here.
            let mut info = [0u8; 128];
            for _ in 0..64 {
                if call(nr::READ, signals as usize, info.as_mut_ptr() as usize, info.len(), 0) <= 0 {
                    break;
                }
            }
            loop {
                let mut wait_status: i32 = 0;
                let pid = call(nr::WAIT4, usize::MAX, &mut wait_status as *mut i32 as usize, WNOHANG, 0);
                if pid <= 0 {
                    break;
                }
                if pid == holder {
                    // The holder is gone (killed from inside): so is the session, until a reset.
                    holder = 0;
                    call(nr::KILL, usize::MAX, SIGKILL, 0, 0);
                }
            }
        }
    }
}

/// Reaps every exited child; if one of them is the payload (0: none is), reports its status
/// and exits.
fn reap(payload: isize, status: isize, timed_out: bool) {
    loop {
        let mut wait_status: i32 = 0;
        let pid = call(nr::WAIT4, usize::MAX, &mut wait_status as *mut i32 as usize, WNOHANG, 0);
        if pid <= 0 {
            return;
        }
        if pid == payload {
            report(status, wait_status, timed_out);
            let code = if wait_status & 0x7f == 0 {
                (wait_status >> 8) & 0xff
            } else {
                128 + (wait_status & 0x7f)
            };
            exit(code as usize);
        }
    }
}

/// Writes the payload's wait status and whether the wall-clock limit ended it.
fn report(status: isize, wait_status: i32, timed_out: bool) {
    if status < 0 {
        return;
    }
    let mut bytes = [0u8; 8];
    bytes[..4].copy_from_slice(&wait_status.to_ne_bytes());
    bytes[4..].copy_from_slice(&(timed_out as i32).to_ne_bytes());
    call(nr::WRITE, status as usize, bytes.as_ptr() as usize, bytes.len(), 0);
}

// The memory functions the compiler calls for large arrays (no C library here). Volatile
// accesses, so that the compiler does not turn these loops back into calls to themselves.

/// `memset`.
///
/// # Safety
/// `dest` is writable for `n` bytes.
#[unsafe(no_mangle)]
unsafe extern "C" fn memset(dest: *mut u8, c: i32, n: usize) -> *mut u8 {
    for i in 0..n {
        // SAFETY: the caller's contract.
        unsafe { core::ptr::write_volatile(dest.add(i), c as u8) };
    }
    dest
}

/// `memcpy`.
///
/// # Safety
/// `src` is readable and `dest` writable for `n` bytes; they do not overlap.
#[unsafe(no_mangle)]
unsafe extern "C" fn memcpy(dest: *mut u8, src: *const u8, n: usize) -> *mut u8 {
    for i in 0..n {
        // SAFETY: the caller's contract.
        unsafe { core::ptr::write_volatile(dest.add(i), core::ptr::read_volatile(src.add(i))) };
    }
    dest
}

/// `memmove`.
///
/// # Safety
/// `src` is readable and `dest` writable for `n` bytes.
#[unsafe(no_mangle)]
unsafe extern "C" fn memmove(dest: *mut u8, src: *const u8, n: usize) -> *mut u8 {
    if (dest as usize) < (src as usize) {
        // SAFETY: the caller's contract; forwards, each byte read before it is overwritten.
        unsafe { memcpy(dest, src, n) }
    } else {
        for i in (0..n).rev() {
            // SAFETY: the caller's contract; backwards, likewise.
            unsafe { core::ptr::write_volatile(dest.add(i), core::ptr::read_volatile(src.add(i))) };
        }
        dest
    }
}

/// `memcmp`.
///
/// # Safety
/// `a` and `b` are readable for `n` bytes.
#[unsafe(no_mangle)]
unsafe extern "C" fn memcmp(a: *const u8, b: *const u8, n: usize) -> i32 {
    for i in 0..n {
        // SAFETY: the caller's contract.
        let (x, y) = unsafe { (core::ptr::read_volatile(a.add(i)), core::ptr::read_volatile(b.add(i))) };
        if x != y {
            return x as i32 - y as i32;
        }
    }
    0
}

/// The unwinding personality the precompiled `core` refers to (its panic paths have unwind
/// tables); never called: this program aborts on panic (`panic=abort`, [`panic`]).
#[unsafe(no_mangle)]
extern "C" fn rust_eh_personality() {}

#[panic_handler]
fn panic(_: &core::panic::PanicInfo<'_>) -> ! {
    exit(EXIT_BROKEN)
}
