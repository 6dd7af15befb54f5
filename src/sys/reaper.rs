//! The reaper process: a copy of the embedding program that outlives it by a moment, to remove
//! the sandbox cgroups it leaves behind when it dies without running its destructors.
//!
//! It is forked from the embedding program (a raw `clone`, like [`super::fork_raw`]) and never
//! execs, so everything reachable from [`run`] follows the rules of [`super::child`]: no
//! allocation, no locks, no formatting, no panics (no indexing that can fail, no arithmetic that
//! can overflow), only the allocation-free wrappers of [`crate::sys`] and raw system calls here.
//! What it needs — the group-name prefix, its end of the channel — is prepared before the fork;
//! its buffers live on its own stack.
//!
//! It starts with no exit signal (`exit_signal` 0): while the embedding program lives, the reaper
//! is a "clone child" that `wait()`, `waitpid(-1, ..)` and `waitid(P_ALL, ..)` without `__WALL`
//! neither report nor count, and its death sends no SIGCHLD. So it never steals a status from,
//! nor blocks, an embedder that waits for "all children" or reaps whatever exits; waits on
//! specific pids are untouched either way. When the embedding program dies, the kernel resets
//! the exit signal to SIGCHLD as it hands the reaper to its new parent (init or a subreaper),
//! which reaps it normally. The only one who can collect it early is the embedding program, by
//! its pidfd ([`reap`]), when the reaper died before it.
//!
//! It holds no descriptor of the embedding program but the channel and the directories it is
//! handed, sits in a session of its own (a signal to the embedder's process group or terminal
//! does not reach it), blocks every signal (only SIGKILL ends it early), has no parent-death
//! signal (it must outlive its parent), and is non-dumpable: it is a copy of the embedder's
//! memory.

use std::ffi::CStr;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, FromRawFd, OwnedFd, RawFd};

use libc::{c_int, c_long, c_ulong};

use super::{Errno, SysResult, check, check_int, retry};

/// How many parent directories one reaper watches; more are closed unwatched.
pub(crate) const MAX_DIRS: usize = 256;
/// How deep under a sandbox group nested groups are removed (a sandbox group holds a leaf).
const MAX_DEPTH: u32 = 4;
/// Per watched directory: how long groups that stay busy are retried, in nanoseconds.
const REMOVE_BUDGET_NS: u64 = 5_000_000_000;
/// First and longest pause between removal attempts, in nanoseconds.
const FIRST_PAUSE_NS: u64 = 1_000_000;
const MAX_PAUSE_NS: u64 = 100_000_000;
/// The longest group-name prefix (including its trailing `-`).
pub(crate) const MAX_PREFIX: usize = 32;

/// The name prefix of this process's sandbox groups, including the `-` that ends it, by value so
/// that the reaper gets its own copy on its own stack.
#[derive(Clone, Copy)]
pub(crate) struct Prefix {
    bytes: [u8; MAX_PREFIX],
    len: usize,
}

impl Prefix {
    /// `None` unless `prefix` is 4 to [`MAX_PREFIX`] bytes ending in `-`: a short prefix would
    /// match other programs' groups.
    pub(crate) fn new(prefix: &str) -> Option<Prefix> {
        let len = prefix.len();
        if !(4..=MAX_PREFIX).contains(&len) || !prefix.ends_with('-') {
            return None;
        }
        let mut bytes = [0u8; MAX_PREFIX];
        bytes.get_mut(..len)?.copy_from_slice(prefix.as_bytes());
        Some(Prefix { bytes, len })
    }

    fn matches(&self, name: &[u8]) -> bool {
        match self.bytes.get(..self.len) {
            Some(prefix) if !prefix.is_empty() => name.starts_with(prefix),
            _ => false,
        }
    }
}

/// A `SOCK_SEQPACKET` socket pair, both ends close-on-exec: (embedder's end, reaper's end).
pub(crate) fn channel() -> SysResult<(OwnedFd, OwnedFd)> {
    let mut fds = [-1 as c_int; 2];
    // SAFETY: `fds` is a valid array of two ints for the kernel to fill.
    check_int(unsafe {
        libc::socketpair(libc::AF_UNIX, libc::SOCK_SEQPACKET | libc::SOCK_CLOEXEC, 0, fds.as_mut_ptr())
    })?;
    let [ours, theirs] = fds;
    // SAFETY: socketpair just returned two fresh descriptors that nothing else owns.
    Ok(unsafe { (OwnedFd::from_raw_fd(ours), OwnedFd::from_raw_fd(theirs)) })
}

/// Starts the reaper on `theirs` (its end of [`channel`]; closed here in the caller), waits
/// until it has set itself apart (its own session, signals blocked, descriptors closed) and
/// returns its pid and pidfd. `ours` is the other end. `arg_area` is this process's argument
/// area (see [`super::overwrite_arg_area`]), which the reaper overwrites with its name.
pub(crate) fn start(
    prefix: &Prefix,
    ours: BorrowedFd<'_>,
    theirs: OwnedFd,
    arg_area: Option<(usize, usize)>,
) -> SysResult<(libc::pid_t, OwnedFd)> {
    let prefix = *prefix;
    let fd = theirs.as_raw_fd();
    // As around a spawn: no handler of the embedding program may run in the copy before it has
    // reset its dispositions.
    let old_mask = super::block_all_signals();
    let mut pidfd: c_int = -1;
    // Exit signal 0 (the low byte of the flags): see the module docs.
    let flags = super::clone::flags::CLONE_PIDFD as c_ulong;
    // SAFETY: clone without CLONE_VM behaves like fork (no stack or TLS argument needed): the
    // child runs on a copy-on-write copy of this stack and never returns from `run`. With
    // CLONE_PIDFD the kernel stores the pidfd through the `parent_tid` argument, a valid int.
    let ret =
        unsafe { libc::syscall(libc::SYS_clone, flags, 0usize, &mut pidfd as *mut c_int, 0usize, 0usize) };
    if ret == 0 {
        run(&prefix, fd, arg_area);
    }
    let result = check(ret);
    let _ = super::set_sigmask(&old_mask);
    drop(theirs);
    let pid = result?;
    // SAFETY: the kernel returned a fresh pidfd that nothing else owns.
    let pidfd = unsafe { OwnedFd::from_raw_fd(pidfd) };
    // Until it is in a session of its own, a SIGKILL to our process group would take it along.
    let mut ready = [0u8; 1];
    match super::read(ours.as_raw_fd(), &mut ready) {
        Ok(1) => Ok((pid as libc::pid_t, pidfd)),
        other => {
            reap(pidfd.as_fd());
            Err(other.err().unwrap_or(Errno(libc::EPIPE)))
        }
    }
}

/// One message's control data: a single descriptor passed with `SCM_RIGHTS`.
#[repr(C)]
struct FdMessage {
    header: libc::cmsghdr,
    fd: c_int,
}

// SAFETY: CMSG_SPACE is plain arithmetic on its argument.
const _: () = assert!(std::mem::size_of::<FdMessage>() == unsafe { libc::CMSG_SPACE(4) } as usize);
// SAFETY: as above.
const FD_CMSG_LEN: usize = unsafe { libc::CMSG_LEN(4) } as usize;

/// Hands directory `dir` to the reaper behind `channel` (a duplicate travels; the caller still
/// owns `dir`). `EPIPE` means the reaper is gone.
pub(crate) fn send_dir(channel: BorrowedFd<'_>, dir: BorrowedFd<'_>) -> SysResult<()> {
    let byte = [1u8];
    let mut iov = libc::iovec { iov_base: byte.as_ptr() as *mut libc::c_void, iov_len: byte.len() };
    // SAFETY: cmsghdr and msghdr are plain data (some targets have private padding fields,
    // hence zeroed() rather than literals); every field that matters is set below.
    let mut control: FdMessage = unsafe { std::mem::zeroed() };
    control.header.cmsg_len = FD_CMSG_LEN as _;
    control.header.cmsg_level = libc::SOL_SOCKET;
    control.header.cmsg_type = libc::SCM_RIGHTS;
    control.fd = dir.as_raw_fd();
    // SAFETY: as above.
    let mut msg: libc::msghdr = unsafe { std::mem::zeroed() };
    msg.msg_iov = &mut iov;
    msg.msg_iovlen = 1;
    msg.msg_control = (&mut control as *mut FdMessage).cast();
    msg.msg_controllen = std::mem::size_of::<FdMessage>() as _;
    // SAFETY: `msg` points at live buffers of the lengths given; the kernel only reads them.
    // MSG_NOSIGNAL: a dead reaper gives EPIPE, not a SIGPIPE to the embedding program.
    retry(|| check(unsafe { libc::sendmsg(channel.as_raw_fd(), &msg, libc::MSG_NOSIGNAL) } as c_long))
        .map(drop)
}

/// Whether the other end of `channel` is closed: the reaper died.
pub(crate) fn hung_up(channel: BorrowedFd<'_>) -> bool {
    // No events asked for: POLLHUP and POLLERR are always reported.
    let mut fd = libc::pollfd { fd: channel.as_raw_fd(), events: 0, revents: 0 };
    // SAFETY: `fd` is a valid pollfd, an array of one; a zero timeout never blocks.
    let ready = retry(|| check_int(unsafe { libc::poll(&mut fd, 1, 0) }));
    matches!(ready, Ok(n) if n > 0) && fd.revents & (libc::POLLHUP | libc::POLLERR) != 0
}

/// Collects a reaper that has died (its channel hung up), so no zombie stays behind. `__WALL`:
/// without an exit signal it is a clone child, which a plain wait does not see.
pub(crate) fn reap(pidfd: BorrowedFd<'_>) {
    const P_PIDFD: libc::idtype_t = 3;
    // SAFETY: siginfo_t is plain data; all-zero is valid.
    let mut info: libc::siginfo_t = unsafe { std::mem::zeroed() };
    let _ = retry(|| {
        // SAFETY: `info` is valid and writable; the other arguments are integers.
        check_int(unsafe {
            libc::waitid(P_PIDFD, pidfd.as_raw_fd() as libc::id_t, &mut info, libc::WEXITED | libc::__WALL)
        })
    });
}

/// The (device, inode) of the file open at descriptor number `fd`, if one is (parent side):
/// lets a forked copy of the embedding program tell whether a number it inherited still holds
/// the same file before it closes it.
pub(crate) fn identity(fd: RawFd) -> Option<(u64, u64)> {
    // SAFETY: stat is plain data; all-zero is valid.
    let mut st: libc::stat = unsafe { std::mem::zeroed() };
    // SAFETY: `st` is valid and writable; fstat on a number that is not open fails with EBADF.
    check_int(unsafe { libc::fstat(fd, &mut st) }).ok()?;
    Some((st.st_dev, st.st_ino))
}

/// A pidfd of process `pid` (tests observe the reaper through it).
#[cfg(test)]
pub(crate) fn pidfd_open(pid: libc::pid_t) -> SysResult<OwnedFd> {
    // SAFETY: integer arguments; a non-negative result is a fresh descriptor nobody else owns.
    let fd = check(unsafe { libc::syscall(libc::SYS_pidfd_open, pid, 0) })?;
    // SAFETY: as above.
    Ok(unsafe { OwnedFd::from_raw_fd(fd as RawFd) })
}

// ---- Everything below runs in the reaper. ----

/// The reaper's life: set itself apart, collect directories until the embedding program is
/// gone, then remove its groups from each of them.
fn run(prefix: &Prefix, channel: RawFd, arg_area: Option<(usize, usize)>) -> ! {
    // Its memory is the embedding program's: unreadable by ptrace or /proc before anything else.
    let _ = super::prctl(libc::PR_SET_DUMPABLE, 0);
    super::reset_signal_dispositions();
    let _ = super::set_sigmask(&super::sigset(true));
    let _ = super::setsid();
    super::set_name(c"stockade-reaper");
    if let Some(area) = arg_area {
        // SAFETY: this is the reaper's own copy of the embedding program's memory, and it never
        // reads its argv; the area is its initial stack's argument strings.
        unsafe { super::overwrite_arg_area(area, b"stockade-reaper") };
    }
    if channel > 0 {
        super::close_range(0, channel as u32 - 1);
    }
    super::close_range((channel as u32).saturating_add(1), u32::MAX);
    let _ = super::chdir(c"/");
    // Ready: the embedding program may rely on it from here on.
    let _ = super::write_all(channel, b"r");

    let mut dirs = [-1 as RawFd; MAX_DIRS];
    let mut count = 0usize;
    while let Some(received) = receive(channel) {
        let Some(fd) = received else { continue };
        match dirs.get_mut(count) {
            Some(slot) => {
                *slot = fd;
                count += 1;
            }
            None => super::close(fd),
        }
    }
    let dirs = dirs.get(..count).unwrap_or(&[]);
    // Everything dies first, in every hierarchy at once; then the directories go.
    for &dir in dirs {
        for_each_group(dir, prefix, |group| kill_tree(group, 0));
    }
    for &dir in dirs {
        remove_groups(dir, prefix);
    }
    super::exit(0)
}

/// Waits for the next message: `Some(Some(fd))` a directory to watch, `Some(None)` a message
/// without one, `None` end of file or an error (the embedding program is gone).
fn receive(channel: RawFd) -> Option<Option<RawFd>> {
    let mut byte = [0u8; 1];
    let mut iov = libc::iovec { iov_base: byte.as_mut_ptr().cast(), iov_len: byte.len() };
    // SAFETY: plain data, all-zero is valid; the kernel fills it.
    let mut control: FdMessage = unsafe { std::mem::zeroed() };
    // SAFETY: as above.
    let mut msg: libc::msghdr = unsafe { std::mem::zeroed() };
    msg.msg_iov = &mut iov;
    msg.msg_iovlen = 1;
    msg.msg_control = (&mut control as *mut FdMessage).cast();
    msg.msg_controllen = std::mem::size_of::<FdMessage>() as _;
    // SAFETY: `msg` points at live, writable buffers of the lengths given.
    let n = retry(|| check(unsafe { libc::recvmsg(channel, &mut msg, libc::MSG_CMSG_CLOEXEC) } as c_long));
    match n {
        Ok(0) | Err(_) => return None,
        Ok(_) => {}
    }
    let header = &control.header;
    let one_fd = msg.msg_controllen as usize >= FD_CMSG_LEN
        && header.cmsg_level == libc::SOL_SOCKET
        && header.cmsg_type == libc::SCM_RIGHTS
        && header.cmsg_len as usize == FD_CMSG_LEN;
    Some(if one_fd && control.fd >= 0 { Some(control.fd) } else { None })
}

/// Calls `f` with a descriptor of every directory in `dir` whose name starts with the prefix.
fn for_each_group(dir: RawFd, prefix: &Prefix, mut f: impl FnMut(RawFd)) {
    for_each_subdir(dir, |name| {
        if prefix.matches(name)
            && let Some(group) = open_dir(dir, name)
        {
            f(group);
            super::close(group);
        }
    });
}

/// Kills every process in the group at `group` and in the groups nested in it (down to
/// [`MAX_DEPTH`]), innermost first.
fn kill_tree(group: RawFd, depth: u32) {
    if depth < MAX_DEPTH {
        for_each_subdir(group, |name| {
            if let Some(nested) = open_dir(group, name) {
                kill_tree(nested, depth + 1);
                super::close(nested);
            }
        });
    }
    // cgroup v2 (5.14+): every process, forks included, at once.
    let _ = super::write_file_at(group, c"cgroup.kill", b"1");
    kill_listed(group);
    // cgroup v1: a frozen task cannot die; thawed, it takes the SIGKILL it already has pending.
    let _ = super::write_file_at(group, c"freezer.state", b"THAWED");
}

/// SIGKILL to every pid in `group`'s `cgroup.procs`, read in pieces and parsed in place.
fn kill_listed(group: RawFd) {
    // SAFETY: the name is NUL-terminated; the mode is unused without O_CREAT.
    let fd = unsafe { libc::openat(group, c"cgroup.procs".as_ptr(), libc::O_RDONLY | libc::O_CLOEXEC, 0) };
    if fd < 0 {
        return;
    }
    // SAFETY: getpid has no preconditions.
    let me = unsafe { libc::getpid() };
    let mut pid: libc::pid_t = 0;
    let mut digits = false;
    let mut buf = [0u8; 512];
    let kill = |pid: libc::pid_t| {
        // Never a process group (0, negative) nor init; the reaper is not in a sandbox group.
        if pid > 1 && pid != me {
            let _ = super::kill(pid, libc::SIGKILL);
        }
    };
    while let Ok(n @ 1..) = super::read(fd, &mut buf) {
        for &b in buf.get(..n).unwrap_or(&[]) {
            if b.is_ascii_digit() {
                pid = pid.saturating_mul(10).saturating_add(c_int::from(b - b'0'));
                digits = true;
            } else if digits {
                kill(pid);
                (pid, digits) = (0, false);
            }
        }
    }
    if digits {
        kill(pid);
    }
    super::close(fd);
}

/// Removes every group of ours in `dir`, with the groups nested in them, retrying busy ones
/// (killed processes leave a group only once the kernel has torn them down) with growing
/// pauses for up to [`REMOVE_BUDGET_NS`].
fn remove_groups(dir: RawFd, prefix: &Prefix) {
    let mut slept = 0u64;
    let mut pause = FIRST_PAUSE_NS;
    loop {
        let mut busy = false;
        for_each_subdir(dir, |name| {
            if prefix.matches(name) && matches!(remove_tree(dir, name, 0), Err(Errno(libc::EBUSY))) {
                busy = true;
            }
        });
        if !busy || slept >= REMOVE_BUDGET_NS {
            return;
        }
        // Whatever is still there may have forked after the first round.
        for_each_group(dir, prefix, |group| kill_tree(group, 0));
        sleep_ns(pause);
        slept = slept.saturating_add(pause);
        pause = pause.saturating_mul(2).min(MAX_PAUSE_NS);
    }
}

/// `rmdir` of `dir/name` after the directories nested in it (down to [`MAX_DEPTH`]); the result
/// of the outer `rmdir` (EBUSY while processes or nested groups remain).
fn remove_tree(dir: RawFd, name: &[u8], depth: u32) -> SysResult<()> {
    if depth < MAX_DEPTH
        && let Some(group) = open_dir(dir, name)
    {
        for_each_subdir(group, |nested| {
            let _ = remove_tree(group, nested, depth + 1);
        });
        super::close(group);
    }
    with_name(name, |path| {
        // SAFETY: `path` is NUL-terminated; unlinkat with AT_REMOVEDIR only removes an entry.
        check_int(unsafe { libc::unlinkat(dir, path.as_ptr(), libc::AT_REMOVEDIR) }).map(drop)
    })
    .unwrap_or(Err(Errno(libc::ENAMETOOLONG)))
}

/// Opens directory `dir/name` (never through a symlink), close-on-exec.
fn open_dir(dir: RawFd, name: &[u8]) -> Option<RawFd> {
    let flags = libc::O_RDONLY | libc::O_DIRECTORY | libc::O_NOFOLLOW | libc::O_CLOEXEC;
    with_name(name, |path| {
        // SAFETY: `path` is NUL-terminated; the mode is unused without O_CREAT.
        retry(|| check_int(unsafe { libc::openat(dir, path.as_ptr(), flags, 0) })).ok()
    })
    .flatten()
}

/// Calls `f` with `name` as a NUL-terminated string (names from `getdents64` are at most 255
/// bytes); `None` if it does not fit.
fn with_name<R>(name: &[u8], f: impl FnOnce(&CStr) -> R) -> Option<R> {
    let mut buf = [0u8; 256];
    buf.get_mut(..name.len())?.copy_from_slice(name);
    let path = CStr::from_bytes_until_nul(&buf).ok()?;
    // A name with a NUL inside would name something else.
    (path.to_bytes().len() == name.len()).then(|| f(path))
}

/// A `getdents64` buffer, aligned for its records.
#[repr(C, align(8))]
struct DirBuf([u8; 2048]);

/// Calls `f` with the name of every subdirectory of `dir` (or entry of unknown type: opening it
/// as a directory then decides), from the start of the directory.
fn for_each_subdir(dir: RawFd, mut f: impl FnMut(&[u8])) {
    // Byte offsets in a `struct linux_dirent64`: d_reclen (2 bytes), then d_type, then d_name.
    const RECLEN: usize = 16;
    const NAME: usize = 19;
    // SAFETY: lseek takes integers only.
    if unsafe { libc::lseek(dir, 0, libc::SEEK_SET) } < 0 {
        return;
    }
    let mut buf = DirBuf([0u8; 2048]);
    loop {
        // SAFETY: the buffer is valid and writable for its length.
        let n = unsafe { libc::syscall(libc::SYS_getdents64, dir, buf.0.as_mut_ptr(), buf.0.len()) };
        if n <= 0 {
            return;
        }
        let mut rest = buf.0.get(..n as usize).unwrap_or(&[]);
        while let Some(&[len_lo, len_hi, kind]) = rest.get(RECLEN..NAME) {
            let len = usize::from(u16::from_ne_bytes([len_lo, len_hi]));
            let Some(record) = rest.get(..len).filter(|_| len > NAME) else { return };
            let field = record.get(NAME..).unwrap_or(&[]);
            let name = field.split(|&b| b == 0).next().unwrap_or(&[]);
            let dir_like = kind == libc::DT_DIR || kind == libc::DT_UNKNOWN;
            if dir_like && name != b"." && name != b".." && !name.is_empty() {
                f(name);
            }
            rest = rest.get(len..).unwrap_or(&[]);
        }
    }
}

fn sleep_ns(ns: u64) {
    let ts = libc::timespec { tv_sec: (ns / 1_000_000_000) as _, tv_nsec: (ns % 1_000_000_000) as _ };
    // SAFETY: `ts` is a valid timespec; the remainder is not requested (every signal is blocked,
    // so nothing interrupts the pause but a stop and continue).
    unsafe { libc::nanosleep(&ts, std::ptr::null_mut()) };
}
