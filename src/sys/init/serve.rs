//! Serve mode: a session's server, which starts the session's commands (the wire format and
//! where the server stands: `wire.rs`).
//!
//! The server lives outside the session's pid namespace (nothing in the session can name it to
//! signal or trace it), with the payload's credentials and filter, which its children inherit,
//! and the payload's Landlock ruleset, which each command restricts itself with (a domain of
//! its own, as a sandbox's payload has); its children are in the session's pid namespace, where
//! until their exec they hold its descriptors (and, on a slot, are its memory): non-dumpable,
//! and sessions whose payload may hold CAP_SYS_PTRACE are refused (see `Session`). It waits on
//! the session socket, the holder's pidfd and each running command's pidfd:
//! - a request: starts the command (in this memory, on a slot of its own: see `Slot`; a
//!   fork when every slot is taken), sends its pidfd on the command's control channel, keeps its
//!   status pipe; the command arranges its descriptors, waits for "go" if asked, joins a new
//!   session (and keyring, and terminal, if asked), changes directory (made if asked), sets
//!   its rlimits, restricts itself with the Landlock ruleset (if any) and execs, or writes a
//!   failure record on its control channel and exits;
//! - a command's end: reaps it and writes its report (`wire::REPORT_LEN`) to its status pipe;
//! - a command's wall-clock limit: kills it (reported as ended by the limit);
//! - the socket's end (the library let the session go) or the holder's (the session ended):
//!   exits; its commands end with it (their parent-death signal), and with the session's pid
//!   namespace.

use core::arch::asm;
use core::sync::atomic::{AtomicI32, Ordering::Acquire, Ordering::Relaxed};

use crate::wire::*;
use crate::{EXIT_BROKEN, PollFd, SIGKILL, Timespec, call, exit, nr, syscall6};

const CLONE_PIDFD: usize = 0x1000;
const CLONE_VM: usize = 0x100;
const CLONE_CHILD_CLEARTID: usize = 0x20_0000;
const SIGCHLD: usize = 17;
const SIGPIPE: usize = 13;
const MSG_NOSIGNAL: usize = 0x4000;
pub(crate) const MSG_CMSG_CLOEXEC: usize = 0x4000_0000;
const MSG_CTRUNC: i32 = 0x8;
pub(crate) const SOL_SOCKET: i32 = 1;
pub(crate) const SCM_RIGHTS: i32 = 1;
const POLLIN: i16 = 0x1;
const F_DUPFD_CLOEXEC: usize = 1030;
const FD_CLOEXEC: usize = 1;
const F_SETFD: usize = 2;
const PROT_READ: usize = 1;
const PROT_WRITE: usize = 2;
const MAP_PRIVATE: usize = 2;
const O_RDWR: usize = 2;
const O_NOCTTY: usize = 0x100;
const O_CLOEXEC: usize = 0x80000;
const AT_FDCWD: isize = -100;
const SIG_BLOCK: usize = 0;
const SIG_SETMASK: usize = 2;
const WNOHANG: usize = 1;
const KEYCTL_JOIN_SESSION_KEYRING: usize = 1;
const TIOCSPTLCK: usize = 0x4004_5431;
const TIOCSWINSZ: usize = 0x5414;
const TIOCGPTPEER: usize = 0x5441;
const TIOCSCTTY: usize = 0x540E;
const PR_SET_PDEATHSIG: usize = 1;
const PR_SET_DUMPABLE: usize = 4;
const PR_SET_NAME: usize = 15;
const EINVAL: isize = 22;
const EAGAIN: isize = 11;
const ESRCH: isize = 3;
const EDQUOT: isize = 122;
const ENOENT: isize = 2;
const EACCES: isize = 13;
/// Exit code of a command that reported a setup failure (the library's `EXIT_SETUP_FAILED`).
const EXIT_SETUP_FAILED: usize = 127;
/// Exit code of a command whose server or library went away before its exec.
const EXIT_ABANDONED: usize = 126;
/// How long to wait before looking again at a command whose pidfd is readable but which
/// cannot be reaped yet (a tracer of its own holds it), so the server does not spin.
const STUCK_BACKOFF_NS: i128 = 10_000_000;
/// Most descriptors one request may carry (the kernel's `SCM_MAX_FD`).
const MAX_FDS: usize = 253;

/// A running command.
#[derive(Clone, Copy)]
struct Running {
    pid: i32,
    pidfd: i32,
    status: i32,
    /// When its wall-clock limit passes (monotonic nanoseconds), 0: no limit (or passed).
    deadline: i128,
    timed_out: bool,
    /// Its pidfd was readable but it could not be reaped: looked at again after a backoff.
    stuck: bool,
}

/// `struct iovec`.
#[repr(C)]
pub(crate) struct Iovec {
    pub(crate) base: *mut u8,
    pub(crate) len: usize,
}

/// `struct msghdr`.
#[repr(C)]
pub(crate) struct MsgHdr {
    pub(crate) name: *mut u8,
    pub(crate) namelen: u32,
    pub(crate) iov: *mut Iovec,
    pub(crate) iovlen: usize,
    pub(crate) control: *mut u8,
    pub(crate) controllen: usize,
    pub(crate) flags: i32,
}

fn close(fd: i32) {
    call(nr::CLOSE, fd as usize, 0, 0, 0);
}

fn mono_now() -> i128 {
    Timespec::now().nanos()
}

pub fn serve() -> ! {
    // Non-dumpable, which its commands share until their exec: no process of the session may
    // trace or open one (a slot's command is this memory, with its descriptors), and a command
    // crashing before its exec dumps no core (a dump of a process sharing this memory would take
    // the server with it, and skips clearing a slot's word on older kernels).
    call(nr::PRCTL, PR_SET_DUMPABLE, 0, 0, 0);
    call(nr::PRCTL, PR_SET_NAME, b"stockade-serve\0".as_ptr() as usize, 0, 0);
    // A status pipe whose reader has gone must give EPIPE, not end the server. Its commands
    // unblock it again before their exec.
    let pipe = [1u64 << (SIGPIPE - 1)];
    call(nr::RT_SIGPROCMASK, SIG_BLOCK, pipe.as_ptr() as usize, 0, 8);
    // Only the session socket, the holder's pidfd and the Landlock ruleset stay open, each
    // close-on-exec: no command keeps one across its exec, whatever else fails.
    call(nr::CLOSE_RANGE, 0, SERVER_FD as usize - 1, 0, 0);
    call(nr::CLOSE_RANGE, LANDLOCK_FD as usize + 1, u32::MAX as usize, 0, 0);
    for fd in [SERVER_FD, HOLDER_FD, LANDLOCK_FD] {
        call(nr::FCNTL, fd as usize, F_SETFD, FD_CLOEXEC, 0);
    }
    // The commands' way to tell that this process has ended: their parent reads as pid 0
    // (outside their pid namespace) before and after.
    let me = call(nr::GETPID, 0, 0, 0, 0);
    let server = call(nr::PIDFD_OPEN, me as usize, 0, 0, 0);
    if server < 0 {
        exit(EXIT_BROKEN);
    }
    let server = server as i32;
    let mut table: [Option<Running>; MAX_COMMANDS] = [None; MAX_COMMANDS];
    let mut fds = [const { PollFd { fd: -1, events: POLLIN, revents: 0 } }; MAX_COMMANDS + 2];
    let mut slots = [0usize; MAX_COMMANDS];
    loop {
        fds[0] = PollFd { fd: SERVER_FD, events: POLLIN, revents: 0 };
        fds[1] = PollFd { fd: HOLDER_FD, events: POLLIN, revents: 0 };
        let mut n = 2;
        let mut wake: Option<i128> = None;
        for (i, running) in table.iter().enumerate() {
            let Some(r) = running else { continue };
            if r.deadline != 0 {
                wake = Some(wake.map_or(r.deadline, |w| w.min(r.deadline)));
            }
            if r.stuck {
                let again = mono_now() + STUCK_BACKOFF_NS;
                wake = Some(wake.map_or(again, |w| w.min(again)));
                continue;
            }
            fds[n] = PollFd { fd: r.pidfd, events: POLLIN, revents: 0 };
            slots[n - 2] = i;
            n += 1;
        }
        let left = wake.map(|w| Timespec::from_nanos((w - mono_now()).max(0)));
        let timeout = left.as_ref().map_or(0, |t| t as *const Timespec as usize);
        if call(nr::PPOLL, fds.as_mut_ptr() as usize, n, timeout, 0) < 0 {
            end(&mut table, EXIT_BROKEN);
        }
        if fds[1].revents != 0 {
            // The session ended (its holder is gone): so do its commands.
            end(&mut table, 0);
        }
        for k in 2..n {
            if fds[k].revents != 0 {
                reap(&mut table[slots[k - 2]]);
            }
        }
        unmap_left();
        let now = mono_now();
        for entry in table.iter_mut() {
            let Some(r) = entry else { continue };
            if r.stuck {
                r.stuck = false;
                reap(entry);
                continue;
            }
            if r.deadline != 0 && r.deadline <= now {
                // Not reaped yet, so its pid is still its own.
                call(nr::KILL, r.pid as usize, SIGKILL, 0, 0);
                r.timed_out = true;
                r.deadline = 0;
            }
        }
        if fds[0].revents & POLLIN != 0 {
            if !request(&mut table, server) {
                end(&mut table, 0);
            }
        } else if fds[0].revents != 0 {
            // Hung up or failed: the library let the session go.
            end(&mut table, 0);
        }
    }
}

/// Ends the server: kills every command still running and reaps it first. A command whose
/// parent ended would go to the nearest subreaper above it, or the init of the server's pid
/// namespace: the embedding program, if it is either (a program that is pid 1 of a container,
/// say), which would get zombies it never reaps.
fn end(table: &mut [Option<Running>; MAX_COMMANDS], code: usize) -> ! {
    // No request waits on this process from here (the library sees the socket's end).
    close(SERVER_FD);
    for r in table.iter().flatten() {
        call(nr::KILL, r.pid as usize, SIGKILL, 0, 0);
    }
    for r in table.iter().flatten() {
        let mut status: i32 = 0;
        // Blocking: a process killed is reaped once its tracer (if one of the session holds it)
        // lets it go, which the session's end makes happen.
        call(nr::WAIT4, r.pid as usize, &mut status as *mut i32 as usize, 0, 0);
    }
    exit(code)
}

/// Reaps the command of `entry` if it has ended, writes its report and forgets it.
fn reap(entry: &mut Option<Running>) {
    let Some(r) = entry else { return };
    let mut status: i32 = 0;
    // `struct rusage`: ru_utime and ru_stime (seconds, microseconds), then ru_maxrss (KiB).
    let mut usage = [0i64; 18];
    let pid = call(
        nr::WAIT4,
        r.pid as usize,
        &mut status as *mut i32 as usize,
        WNOHANG,
        usage.as_mut_ptr() as usize,
    );
    if pid == 0 {
        r.stuck = true;
        return;
    }
    if pid == r.pid as isize {
        let mut report = [0u8; REPORT_LEN];
        report[0..4].copy_from_slice(&status.to_ne_bytes());
        report[4..8].copy_from_slice(&(r.timed_out as i32).to_ne_bytes());
        report[8..16].copy_from_slice(&(usage[0] * 1_000_000 + usage[1]).to_ne_bytes());
        report[16..24].copy_from_slice(&(usage[2] * 1_000_000 + usage[3]).to_ne_bytes());
        report[24..32].copy_from_slice(&usage[4].to_ne_bytes());
        // A reader gone (EPIPE) wanted no report.
        call(nr::WRITE, r.status as usize, report.as_ptr() as usize, REPORT_LEN, 0);
    }
    // Reaped, or not this server's to reap (an error): either way no report will follow, and
    // the closed pipe tells the library so.
    close(r.pidfd);
    close(r.status);
    *entry = None;
}

/// Takes one request from the session socket and starts its command. `false` at the socket's
/// end.
fn request(table: &mut [Option<Running>; MAX_COMMANDS], server: i32) -> bool {
    let mut words = [0u32; REQUEST_WORDS];
    let mut iov = Iovec { base: words.as_mut_ptr() as *mut u8, len: REQUEST_WORDS * 4 };
    // cmsghdr (16 bytes) and up to MAX_FDS descriptors, 8-aligned.
    let mut space = [0u64; 2 + MAX_FDS.div_ceil(2)];
    let mut msg = MsgHdr {
        name: core::ptr::null_mut(),
        namelen: 0,
        iov: &mut iov,
        iovlen: 1,
        control: space.as_mut_ptr() as *mut u8,
        controllen: core::mem::size_of_val(&space),
        flags: 0,
    };
    let got = call(nr::RECVMSG, SERVER_FD as usize, &mut msg as *mut MsgHdr as usize, MSG_CMSG_CLOEXEC, 0);
    match got {
        // The library let the session go.
        0 => return false,
        // Nothing taken (no memory for it now, say): the library's request is lost, and its
        // control channel closed with it, which the library reports.
        -12 | -105 | -11 => return true, // ENOMEM ENOBUFS EAGAIN
        _ if got < 0 => return false,
        _ => {}
    }
    let mut received = [-1i32; MAX_FDS];
    let mut count = 0;
    let control = space.as_ptr() as *const u8;
    let mut offset = 0usize;
    while offset + 16 <= msg.controllen {
        // SAFETY: within the control buffer the kernel filled (`controllen` bytes of it).
        let (len, level, kind) = unsafe {
            (
                core::ptr::read_unaligned(control.add(offset) as *const usize),
                core::ptr::read_unaligned(control.add(offset + 8) as *const i32),
                core::ptr::read_unaligned(control.add(offset + 12) as *const i32),
            )
        };
        if len < 16 || offset + len > msg.controllen {
            break;
        }
        if level == SOL_SOCKET && kind == SCM_RIGHTS {
            for k in 0..(len - 16) / 4 {
                // SAFETY: as above.
                let fd = unsafe { core::ptr::read_unaligned(control.add(offset + 16 + 4 * k) as *const i32) };
                if count < received.len() {
                    received[count] = fd;
                    count += 1;
                } else {
                    close(fd);
                }
            }
        }
        offset += (len + 7) & !7;
    }
    let fds = received.get(..count).unwrap_or(&[]);
    let moves = words[W_MOVES] as usize;
    let well_formed = got as usize == REQUEST_WORDS * 4
        && words[W_MAGIC] == MAGIC
        && msg.flags & MSG_CTRUNC == 0
        && moves <= MAX_MOVES
        && count == FIXED_FDS + moves;
    let free = table.iter().position(Option::is_none);
    let refused = match (well_formed, free) {
        (false, _) => Some((STEP_JOIN_SESSION, EINVAL)),
        // The session has ended (its pid namespace takes no new process): said as such.
        _ if session_ended() => Some((STEP_JOIN_SESSION, ESRCH)),
        (true, None) => Some((STEP_FORK, EAGAIN)),
        (true, Some(_)) => None,
    };
    if let (Some((step, errno)), Some(&control)) = (refused, fds.first()) {
        record(control, step, errno, 0);
    }
    let Some(slot) = free.filter(|_| refused.is_none()) else {
        fds.iter().for_each(|&fd| close(fd));
        return true;
    };
    let (control, status) = (fds[0], fds[1]);
    let mut pidfd: i32 = -1;
    // A command the library changes before its exec (its cgroup, its OOM score: with shared
    // memory the kernel would apply those to this process too) is a fork; others share this
    // memory when a slot is free, and their strings are mapped here first (a command killed
    // between its own mapping and noting it would leave the mapping here for good).
    let shared = if words[W_FLAGS] & GO == 0 {
        free_slot().and_then(|slot| {
            let len = words[W_STRINGS_LEN] as usize;
            let base = map(fds[2], len)?;
            // SAFETY: a free slot, which only this thread hands out.
            unsafe { (*slot).mapped = (base, len) };
            Some(slot)
        })
    } else {
        None
    };
    let pid = match shared {
        // Sharing this memory, on a slot of its own, as `posix_spawn`'s child does: no copy.
        // This process goes on meanwhile (one that waited for the exec, as vfork's parent,
        // would wait for ever on a command a process of the session stopped first).
        Some(slot) => {
            // SAFETY: the slot is free (no command uses it: its word is 0) and only this
            // thread hands slots out; the command started on it reads only its own slot.
            unsafe {
                (*slot).words = words;
                for (to, &fd) in (*slot).fds.iter_mut().zip(fds) {
                    *to = fd;
                }
                (*slot).count = fds.len();
                (*slot).server = server;
                (*slot).busy.store(-1, Relaxed);
            }
            // SAFETY: as above; `clone_on` returns in this process only.
            let pid = unsafe { clone_on(slot, &mut pidfd) };
            if pid < 0 {
                // SAFETY: no command started on it.
                unsafe {
                    (*slot).busy.store(0, Relaxed);
                    unmap(slot);
                }
            }
            pid
        }
        // Every slot in use (commands stopped before their exec, say): a fork, with a copy of
        // this memory (the request included). CLONE_PIDFD stores the pidfd through the third
        // argument on every architecture.
        None => {
            let pid = call(nr::CLONE, CLONE_PIDFD | SIGCHLD, 0, &mut pidfd as *mut i32 as usize, 0);
            if pid == 0 {
                command(&words, fds, server, None);
            }
            pid
        }
    };
    if pid < 0 {
        let (step, errno) = if session_ended() { (STEP_JOIN_SESSION, ESRCH) } else { (STEP_FORK, -pid) };
        record(control, step, errno, 0);
        fds.iter().for_each(|&fd| close(fd));
        return true;
    }
    // The library learns the command's pidfd and pid first (its setup may wait for "go" until
    // then; without "go" it may have ended before the library asks a pidfd for its pid). This
    // process is in the library's pid namespace: so is the pid.
    let p = (pid as i32).to_ne_bytes();
    if send_fd(control, pidfd, &[b'p', p[0], p[1], p[2], p[3]]) < 0 {
        // The library gave up on it: it ends, and is reaped like any other.
        call(nr::KILL, pid as usize, SIGKILL, 0, 0);
    }
    for &fd in fds.iter().filter(|&&fd| fd != status) {
        close(fd);
    }
    let wall_ms = words[W_WALL_MS] as i32;
    let deadline = if wall_ms >= 0 { mono_now() + wall_ms as i128 * 1_000_000 + 1 } else { 0 };
    table[slot] =
        Some(Running { pid: pid as i32, pidfd, status, deadline, timed_out: false, stuck: false });
    true
}

/// How many commands may share the server's memory at once (more: forks).
const SLOTS: usize = 32;
/// The stack of a command on a slot.
const SLOT_STACK: usize = 64 * 1024;

/// What a command started in the server's memory has of its own there.
#[repr(C, align(16))]
struct Slot {
    /// Its stack (first: its end, the stack's top, is 16-aligned).
    stack: [u8; SLOT_STACK],
    /// Its copy of the request (the server's is the next request's).
    words: [u32; REQUEST_WORDS],
    fds: [i32; MAX_FDS],
    count: usize,
    /// A pidfd of the server.
    server: i32,
    /// Non-zero while a command has the slot: the kernel clears it when the command leaves
    /// this memory, at its exec or its end (`CLONE_CHILD_CLEARTID`).
    busy: AtomicI32,
    /// The mapping of its strings (address, length), which the server unmaps after.
    mapped: (usize, usize),
}

// All zero: in .bss, not in the program's file.
static mut SLOTS_AREA: [Slot; SLOTS] = [const {
    Slot {
        stack: [0; SLOT_STACK],
        words: [0; REQUEST_WORDS],
        fds: [0; MAX_FDS],
        count: 0,
        server: 0,
        busy: AtomicI32::new(0),
        mapped: (0, 0),
    }
}; SLOTS];

/// Unmaps the strings of the command that had `slot`, once it has left this memory.
///
/// # Safety
/// `slot` is one of `SLOTS_AREA`, and this is the server's thread.
unsafe fn unmap(slot: *mut Slot) {
    // SAFETY: the caller's contract; the word is read atomically.
    unsafe {
        let (at, len) = (*slot).mapped;
        if at != 0 && (*slot).busy.load(Acquire) == 0 {
            call(nr::MUNMAP, at, len, 0, 0);
            (*slot).mapped = (0, 0);
        }
    }
}

/// Unmaps what commands that have left this memory had mapped (none is kept longer than a
/// pass of the server's loop).
fn unmap_left() {
    for i in 0..SLOTS {
        // SAFETY: a slot of the area, on the server's thread.
        unsafe { unmap((&raw mut SLOTS_AREA).cast::<Slot>().add(i)) };
    }
}

/// A slot no command uses, its last command's mapping unmapped.
fn free_slot() -> Option<*mut Slot> {
    for i in 0..SLOTS {
        // SAFETY: only this thread hands slots out; a command uses its slot until the kernel
        // clears its word, which is read atomically, and nothing else.
        unsafe {
            let slot = (&raw mut SLOTS_AREA).cast::<Slot>().add(i);
            if (*slot).busy.load(Acquire) == 0 {
                unmap(slot);
                return Some(slot);
            }
        }
    }
    None
}

/// The entry of a command started on a slot, on the slot's stack.
///
/// # Safety
/// `slot` is the command's own, filled in by the server.
unsafe extern "C" fn slot_entry(slot: *mut Slot) -> ! {
    // SAFETY: the caller's contract.
    let (words, fds, server) = unsafe {
        (&(*slot).words, core::slice::from_raw_parts((*slot).fds.as_ptr(), (*slot).count.min(MAX_FDS)), (*slot).server)
    };
    command(words, fds, server, Some(slot))
}

/// Starts [`slot_entry`] on `slot` in a child sharing this memory (`CLONE_VM`, and
/// `CLONE_CHILD_CLEARTID` on the slot's word); its pidfd goes to `pidfd`. Returns its pid or
/// -errno, in this process only.
///
/// # Safety
/// `slot` is free and filled in; nothing else uses it until its word is cleared.
#[cfg(target_arch = "x86_64")]
unsafe fn clone_on(slot: *mut Slot, pidfd: &mut i32) -> isize {
    let top = slot as usize + SLOT_STACK;
    // SAFETY: the slot's word, for the kernel to clear.
    let word = unsafe { &raw mut (*slot).busy } as usize;
    let ret: isize;
    // SAFETY: the child runs `slot_entry` on the slot's stack (16-aligned: the call leaves it
    // as a function expects) and never returns here; the parent sees a plain system call.
    unsafe {
        asm!(
            "syscall",
            "test rax, rax",
            "jnz 2f",
            "mov rdi, r12",
            "call r13",
            "ud2",
            "2:",
            inlateout("rax") nr::CLONE as isize => ret,
            in("rdi") CLONE_VM | CLONE_CHILD_CLEARTID | CLONE_PIDFD | SIGCHLD,
            in("rsi") top,
            in("rdx") pidfd as *mut i32,
            in("r10") word,
            in("r8") 0usize,
            in("r12") slot,
            in("r13") slot_entry as unsafe extern "C" fn(*mut Slot) -> !,
            out("rcx") _,
            out("r11") _,
        );
    }
    ret
}

/// See the x86_64 version (the kernel takes the child's word fifth here).
///
/// # Safety
/// As there.
#[cfg(target_arch = "aarch64")]
unsafe fn clone_on(slot: *mut Slot, pidfd: &mut i32) -> isize {
    let top = slot as usize + SLOT_STACK;
    // SAFETY: the slot's word, for the kernel to clear.
    let word = unsafe { &raw mut (*slot).busy } as usize;
    let ret: isize;
    // SAFETY: as for x86_64 (the stack stays 16-aligned throughout on aarch64).
    unsafe {
        asm!(
            "svc 0",
            "cbnz x0, 2f",
            "mov x0, x9",
            "blr x10",
            "brk #1",
            "2:",
            in("x8") nr::CLONE,
            inlateout("x0") CLONE_VM | CLONE_CHILD_CLEARTID | CLONE_PIDFD | SIGCHLD => ret,
            in("x1") top,
            in("x2") pidfd as *mut i32,
            in("x3") 0usize,
            in("x4") word,
            in("x9") slot,
            in("x10") slot_entry as unsafe extern "C" fn(*mut Slot) -> !,
        );
    }
    ret
}

/// Whether the session's holder has ended (its pidfd is readable).
fn session_ended() -> bool {
    let mut fd = PollFd { fd: HOLDER_FD, events: POLLIN, revents: 0 };
    let zero = [0usize; 2];
    call(nr::PPOLL, &mut fd as *mut PollFd as usize, 1, zero.as_ptr() as usize, 0) != 0
}

/// Writes a failure record on `control` (SIGPIPE is blocked: a library gone gives EPIPE).
fn record(control: i32, step: u32, errno: isize, index: u32) {
    let mut rec = [0u8; FAILURE_LEN];
    rec[0..4].copy_from_slice(&step.to_ne_bytes());
    rec[4..8].copy_from_slice(&(errno as u32).to_ne_bytes());
    rec[8..12].copy_from_slice(&index.to_ne_bytes());
    call(nr::WRITE, control as usize, rec.as_ptr() as usize, FAILURE_LEN, 0);
}

/// Reports a failed step of a command on `control` and ends the command.
fn fail(control: i32, step: u32, errno: isize, index: u32) -> ! {
    record(control, step, errno, index);
    exit(EXIT_SETUP_FAILED)
}

/// The command, started by the server (on a slot of the server's memory, or a fork): the request's descriptors are `fds` (control,
/// status, strings, then the moves). Never returns: it execs, or reports and exits.
fn command(words: &[u32; REQUEST_WORDS], fds: &[i32], server: i32, slot: Option<*mut Slot>) -> ! {
    let control = fds[0];
    // It ends with its server (which ends with the session and with the library): armed, then
    // checked through the server's pidfd, as the server may have gone in between.
    if call(nr::PRCTL, PR_SET_PDEATHSIG, SIGKILL, 0, 0) < 0 {
        fail(control, STEP_DEATH_SIGNAL, EINVAL, 0);
    }
    let mut watch = PollFd { fd: server, events: POLLIN, revents: 0 };
    let zero = [0usize; 2];
    if call(nr::PPOLL, &mut watch as *mut PollFd as usize, 1, zero.as_ptr() as usize, 0) != 0 {
        exit(EXIT_ABANDONED);
    }
    let flags = words[W_FLAGS];
    let moves = (words[W_MOVES] as usize).min(MAX_MOVES);
    let targets = words.get(W_TARGETS..W_TARGETS + moves).unwrap_or(&[]);
    let Some(strings) = map_strings(fds[2], words[W_STRINGS_LEN] as usize, slot) else {
        fail(control, STEP_JOIN_SESSION, EINVAL, 0)
    };
    // Every source above the highest target first, then each onto its target, so no move
    // overwrites a source another move still needs.
    let floor = targets.iter().map(|&t| t as usize + 1).max().unwrap_or(0).max(3);
    let dup_above = |fd: i32| call(nr::FCNTL, fd as usize, F_DUPFD_CLOEXEC, floor, 0);
    let c = dup_above(control);
    if c < 0 {
        fail(control, STEP_FDS, -c, u32::MAX);
    }
    let c = c as i32;
    // The ruleset, until the command restricts itself with it (close-on-exec).
    let ruleset = if flags & LANDLOCK != 0 {
        let copy = dup_above(LANDLOCK_FD);
        if copy < 0 {
            fail(c, STEP_LANDLOCK, -copy, u32::MAX);
        }
        copy as i32
    } else {
        -1
    };
    let mut high = [0i32; MAX_MOVES];
    for (i, &fd) in fds.iter().skip(FIXED_FDS).enumerate().take(moves) {
        let copy = dup_above(fd);
        if copy < 0 {
            fail(c, STEP_FDS, -copy, i as u32);
        }
        high[i] = copy as i32;
    }
    for (i, &target) in targets.iter().enumerate() {
        let done = call(nr::DUP3, high[i] as usize, target as usize, 0, 0);
        if done < 0 {
            fail(c, STEP_FDS, -done, i as u32);
        }
    }
    // Everything else closes: the server's descriptors, the request's, the copies.
    let mut keep = [0u32; MAX_MOVES + 2];
    for (slot, &target) in keep.iter_mut().zip(targets) {
        *slot = target;
    }
    keep[moves] = c as u32;
    // (-1 when there is none: kept as the largest number, which closes nothing more.)
    keep[moves + 1] = ruleset as u32;
    let keep = keep.get_mut(..=moves + 1).unwrap_or(&mut []);
    // Insertion sort (few entries; the library's sort would bring in unwinding code).
    for i in 1..keep.len() {
        let mut j = i;
        while j > 0 && keep[j - 1] > keep[j] {
            keep.swap(j - 1, j);
            j -= 1;
        }
    }
    let mut next = 0u32;
    for &fd in keep.iter() {
        if fd > next {
            call(nr::CLOSE_RANGE, next as usize, fd as usize - 1, 0, 0);
        }
        next = next.max(fd.saturating_add(1));
    }
    call(nr::CLOSE_RANGE, next as usize, u32::MAX as usize, 0, 0);
    if flags & GO != 0 {
        let mut byte = [0u8; 1];
        if call(nr::READ, c as usize, byte.as_mut_ptr() as usize, 1, 0) != 1 || byte[0] != b'g' {
            exit(EXIT_ABANDONED);
        }
    }
    if flags & KEYRING != 0 {
        // EDQUOT: the user's key quota full of ended commands' keyrings the kernel's collector
        // has not freed yet; tried again every millisecond for up to a second (as the library
        // does for a sandbox's own payload).
        let millisecond = Timespec { sec: 0, nsec: 1_000_000 };
        let mut tries = 0;
        let joined = loop {
            let joined = call(nr::KEYCTL, KEYCTL_JOIN_SESSION_KEYRING, 0, 0, 0);
            if joined != -EDQUOT || tries >= 1000 {
                break joined;
            }
            tries += 1;
            call(nr::NANOSLEEP, &millisecond as *const Timespec as usize, 0, 0, 0);
        };
        if joined < 0 {
            fail(c, STEP_SESSION_KEYRING, -joined, 0);
        }
    }
    let leader = call(nr::SETSID, 0, 0, 0, 0);
    if leader < 0 {
        fail(c, STEP_NEW_SESSION, -leader, 0);
    }
    if flags & TERMINAL != 0 {
        if let Err(errno) = terminal(c, words[W_SIZE], words[W_TERMINAL_FDS]) {
            fail(c, STEP_TERMINAL, errno, 0);
        }
    }
    let mut i = 0;
    loop {
        // SAFETY: a triple array `map_strings` checked, in the mapping, ended by u64::MAX.
        let (resource, limits) = unsafe { (*strings.rlimits.add(3 * i), strings.rlimits.add(3 * i + 1)) };
        if resource == u64::MAX {
            break;
        }
        // Lowered from the server's, which are at least these (only raised when it started).
        let set = call(nr::PRLIMIT64, 0, resource as usize, limits as usize, 0);
        if set < 0 {
            fail(c, STEP_RLIMITS, -set, i as u32);
        }
        i += 1;
    }
    if ruleset >= 0 {
        // The payload's rules, in a domain of the command's own (the server has none).
        let restricted = call(nr::LANDLOCK_RESTRICT_SELF, ruleset as usize, 0, 0, 0);
        if restricted < 0 {
            fail(c, STEP_LANDLOCK, -restricted, u32::MAX);
        }
        close(ruleset);
    }
    if !strings.cwd.is_null() {
        let mut changed = call(nr::CHDIR, strings.cwd as usize, 0, 0, 0);
        if changed == -(ENOENT) && flags & CREATE_CWD != 0 {
            // Under the command's own rules already: it makes only what it could make itself.
            if let Err(errno) = make_dirs(strings.cwd) {
                fail(c, STEP_CREATE_CWD, errno, 0);
            }
            changed = call(nr::CHDIR, strings.cwd as usize, 0, 0, 0);
        }
        if changed < 0 {
            fail(c, STEP_CHDIR, -changed, 0);
        }
    }
    let none = [0u64];
    call(nr::RT_SIGPROCMASK, SIG_SETMASK, none.as_ptr() as usize, 0, 8);
    // Like execvp: each path in turn; EACCES is remembered but the search goes on.
    let (mut errno, mut at) = (ENOENT, 0u32);
    let mut i = 0;
    loop {
        // SAFETY: a 0-terminated array `map_strings` checked, in the mapping.
        let path = unsafe { *strings.candidates.add(i) };
        if path == 0 {
            break;
        }
        let e = -call(nr::EXECVE, path as usize, strings.argv as usize, strings.envp as usize, 0);
        match e {
            2 | 20 | 116 | 19 | 110 => {} // ENOENT ENOTDIR ESTALE ENODEV ETIMEDOUT
            EACCES => (errno, at) = (e, i as u32),
            _ => fail(c, STEP_EXEC, e, i as u32),
        }
        i += 1;
    }
    fail(c, STEP_EXEC, errno, at)
}

/// Makes the directory `path` (absolute, NUL-terminated) and its missing parents, mode 0755
/// whatever the umask (as runc does for an image's working directory). Called with the
/// command's own credentials, root and Landlock rules: it makes nothing the payload could not
/// make itself.
fn make_dirs(path: *const u8) -> Result<(), isize> {
    let old = call(nr::UMASK, 0, 0, 0, 0);
    let mut buf = [0u8; 4096];
    let mut result = Ok(());
    let mut i = 0;
    loop {
        // SAFETY: `path` is NUL-terminated inside the strings' mapping.
        let b = unsafe { *path.add(i) };
        if i >= buf.len() - 1 {
            result = Err(36); // ENAMETOOLONG
            break;
        }
        if (b == b'/' || b == 0) && i > 0 {
            buf[i] = 0;
            let made = call(nr::MKDIRAT, AT_FDCWD as usize, buf.as_ptr() as usize, 0o755, 0);
            if made < 0 && made != -17 {
                // Not EEXIST.
                result = Err(-made);
                break;
            }
        }
        if b == 0 {
            break;
        }
        buf[i] = b;
        i += 1;
    }
    call(nr::UMASK, old as usize, 0, 0, 0);
    result
}

/// A private, writable mapping of the strings memfd `fd` (`len` bytes), or `None`.
fn map(fd: i32, len: usize) -> Option<usize> {
    if len < S_HEADER * 8 || len > 1 << 30 {
        return None;
    }
    // SAFETY: a fresh private mapping of the memfd; nothing else uses that address range.
    let base = unsafe { syscall6(nr::MMAP, 0, len, PROT_READ | PROT_WRITE, MAP_PRIVATE, fd as usize, 0) };
    (!(-4095..0).contains(&base)).then_some(base as usize)
}

/// The command's strings, from its memfd (see `wire::S_ARGV`), as `execve` takes them.
struct Strings {
    argv: *const u64,
    envp: *const u64,
    candidates: *const u64,
    cwd: *const u8,
    /// (resource, soft, hard) triples, ended by a resource of `u64::MAX`.
    rlimits: *const u64,
}

/// Maps the strings memfd `fd` (`len` bytes) privately and turns its offsets into pointers;
/// `None` if it is malformed.
fn map_strings(fd: i32, len: usize, slot: Option<*mut Slot>) -> Option<Strings> {
    let (base, len) = match slot {
        // Mapped by the server, in its memory (see `request`).
        // SAFETY: the command's own slot.
        Some(slot) => unsafe { (*slot).mapped },
        None => (map(fd, len)?, len),
    };
    if base == 0 || len < S_HEADER * 8 {
        return None;
    }
    let base = base as *mut u8;
    // SAFETY: `len` bytes are mapped at `base`; every offset below is checked against `len`.
    unsafe {
        // Every string ends inside the mapping.
        if *base.add(len - 1) != 0 {
            return None;
        }
        let header = base as *const u64;
        let array = |k: usize| -> Option<*const u64> {
            let off = *header.add(k) as usize;
            if off % 8 != 0 || off >= len {
                return None;
            }
            let mut p = base.add(off) as *mut u64;
            loop {
                if (p as usize - base as usize) + 8 > len {
                    return None;
                }
                let v = *p as usize;
                if v == 0 {
                    return Some(base.add(off) as *const u64);
                }
                if v >= len {
                    return None;
                }
                *p = base.add(v) as u64;
                p = p.add(1);
            }
        };
        let cwd = *header.add(S_CWD) as usize;
        if cwd >= len {
            return None;
        }
        let rlimits = *header.add(S_RLIMITS) as usize;
        if rlimits % 8 != 0 || rlimits >= len {
            return None;
        }
        // Whole triples up to the end marker, inside the mapping.
        let mut k = 0;
        loop {
            let at = rlimits + 24 * k;
            if at + 8 > len {
                return None;
            }
            if *(base.add(at) as *const u64) == u64::MAX {
                break;
            }
            if at + 24 > len {
                return None;
            }
            k += 1;
        }
        Some(Strings {
            argv: array(S_ARGV)?,
            envp: array(S_ENVP)?,
            candidates: array(S_CANDIDATES)?,
            cwd: if cwd == 0 { core::ptr::null() } else { base.add(cwd) },
            rlimits: base.add(rlimits) as *const u64,
        })
    }
}

/// Opens a terminal of the session's devpts (`size`: rows in the high 16 bits), sends its
/// master on `control`, makes it this process's controlling terminal and puts it on the
/// descriptors of `on` (bit n: descriptor n). The error number on failure.
fn terminal(control: i32, size: u32, on: u32) -> Result<(), isize> {
    let check = |r: isize| if r < 0 { Err(-r) } else { Ok(r) };
    let path = b"/dev/pts/ptmx\0";
    // SAFETY: a NUL-terminated path; integer flags.
    let master = check(unsafe {
        syscall6(nr::OPENAT, AT_FDCWD as usize, path.as_ptr() as usize, O_RDWR | O_NOCTTY | O_CLOEXEC, 0, 0, 0)
    })? as i32;
    let opened = (|| -> Result<i32, isize> {
        let unlock: i32 = 0;
        check(call(nr::IOCTL, master as usize, TIOCSPTLCK, &unlock as *const i32 as usize, 0))?;
        let winsize: [u16; 4] = [(size >> 16) as u16, size as u16, 0, 0];
        check(call(nr::IOCTL, master as usize, TIOCSWINSZ, winsize.as_ptr() as usize, 0))?;
        let slave = check(call(nr::IOCTL, master as usize, TIOCGPTPEER, O_RDWR | O_NOCTTY | O_CLOEXEC, 0))?;
        check(send_fd(control, master, b"t"))?;
        Ok(slave as i32)
    })();
    close(master);
    let slave = opened?;
    check(call(nr::IOCTL, slave as usize, TIOCSCTTY, 0, 0))?;
    let on = |fd: usize| on & (1 << fd) != 0;
    for fd in (0..3).filter(|&fd| on(fd)) {
        if fd == slave as usize {
            // Opened at a descriptor it goes on (stdio left free for it): kept across exec.
            check(call(nr::FCNTL, fd, F_SETFD, 0, 0))?;
        } else {
            check(call(nr::DUP3, slave as usize, fd, 0, 0))?;
        }
    }
    if slave > 2 || !on(slave as usize) {
        close(slave);
    }
    Ok(())
}

/// Sends `fd` with `data` on `socket`.
fn send_fd(socket: i32, fd: i32, data: &[u8]) -> isize {
    let mut iov = Iovec { base: data.as_ptr() as *mut u8, len: data.len() };
    // cmsghdr: len 20, SOL_SOCKET, SCM_RIGHTS, the descriptor; padded to 24.
    let mut space = [0u64; 3];
    let cmsg = space.as_mut_ptr() as *mut u8;
    // SAFETY: 24 writable bytes.
    unsafe {
        core::ptr::write_unaligned(cmsg as *mut usize, 20);
        core::ptr::write_unaligned(cmsg.add(8) as *mut i32, SOL_SOCKET);
        core::ptr::write_unaligned(cmsg.add(12) as *mut i32, SCM_RIGHTS);
        core::ptr::write_unaligned(cmsg.add(16) as *mut i32, fd);
    }
    let msg = MsgHdr {
        name: core::ptr::null_mut(),
        namelen: 0,
        iov: &mut iov,
        iovlen: 1,
        control: cmsg,
        controllen: 24,
        flags: 0,
    };
    call(nr::SENDMSG, socket as usize, &msg as *const MsgHdr as usize, MSG_NOSIGNAL, 0)
}
