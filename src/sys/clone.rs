//! Creating the sandbox's first process: `clone3` with `CLONE_PIDFD`, or legacy `clone` when a
//! seccomp profile or an old kernel refuses `clone3` (ENOSYS / EPERM).

use std::os::fd::{FromRawFd, OwnedFd, RawFd};
use std::sync::atomic::{AtomicBool, Ordering};

use libc::c_ulong;

use super::{Errno, SysResult};

/// Namespace and process flags, as the `u64` that `clone3` takes. Defined here rather than taken
/// from libc because libc's values are `c_int` and some (e.g. `CLONE_INTO_CGROUP`) are 0 there.
pub(crate) mod flags {
    pub(crate) const CLONE_NEWTIME: u64 = 0x0000_0080;
    pub(crate) const CLONE_PIDFD: u64 = 0x0000_1000;
    pub(crate) const CLONE_NEWCGROUP: u64 = 0x0200_0000;
    pub(crate) const CLONE_NEWUTS: u64 = 0x0400_0000;
    pub(crate) const CLONE_NEWIPC: u64 = 0x0800_0000;
    pub(crate) const CLONE_NEWUSER: u64 = 0x1000_0000;
    pub(crate) const CLONE_NEWPID: u64 = 0x2000_0000;
    pub(crate) const CLONE_NEWNET: u64 = 0x4000_0000;
    pub(crate) const CLONE_NEWNS: u64 = 0x0002_0000;
    /// Start the child in the cgroup whose directory descriptor is given (clone3 only).
    pub(crate) const CLONE_INTO_CGROUP: u64 = 0x2_0000_0000;
}

/// `struct clone_args` of `<linux/sched.h>` (version 2, 88 bytes).
#[repr(C)]
#[derive(Default)]
struct CloneArgs {
    flags: u64,
    pidfd: u64,
    child_tid: u64,
    parent_tid: u64,
    exit_signal: u64,
    stack: u64,
    stack_size: u64,
    tls: u64,
    set_tid: u64,
    set_tid_size: u64,
    cgroup: u64,
}

/// Which side of the clone we are on.
pub(crate) enum Forked {
    /// In the new process. Only allocation-free code may run from here on.
    Child,
    /// In the caller: the child's pid (in the caller's pid namespace), its pidfd, and whether
    /// it was started in the requested cgroup (legacy clone cannot do that; the caller must
    /// move it).
    Parent { pid: libc::pid_t, pidfd: OwnedFd, in_cgroup: bool },
}

/// Set once `clone3` has been refused, so later spawns go straight to `clone`.
static CLONE3_REFUSED: AtomicBool = AtomicBool::new(false);

/// Creates a child process in new namespaces (`flags`, without `CLONE_PIDFD`, which is added),
/// delivering SIGCHLD to the parent on exit, and started in the cgroup `cgroup` (a directory
/// descriptor) when clone3 is available.
pub(crate) fn clone_with_pidfd(flags: u64, cgroup: Option<RawFd>) -> SysResult<Forked> {
    if !CLONE3_REFUSED.load(Ordering::Relaxed) {
        match clone3(flags, cgroup) {
            Err(Errno(libc::ENOSYS)) | Err(Errno(libc::EPERM)) if flags_fit_legacy_clone(flags) => {
                // EPERM may also be a real permission problem with the namespaces; legacy clone
                // will report that again, and only a successful clone proves clone3 is filtered.
                match clone_legacy(flags) {
                    Ok(forked) => {
                        if matches!(forked, Forked::Parent { .. }) {
                            CLONE3_REFUSED.store(true, Ordering::Relaxed);
                        }
                        Ok(forked)
                    }
                    Err(e) => Err(e),
                }
            }
            other => other,
        }
    } else {
        clone_legacy(flags)
    }
}

fn flags_fit_legacy_clone(flags: u64) -> bool {
    // Legacy clone takes a 32-bit flag word whose low byte is the exit signal.
    flags & !0xffff_ff00 == 0
}

fn clone3(flags: u64, cgroup: Option<RawFd>) -> SysResult<Forked> {
    let mut pidfd: libc::c_int = -1;
    let args = CloneArgs {
        flags: flags | flags::CLONE_PIDFD | if cgroup.is_some() { flags::CLONE_INTO_CGROUP } else { 0 },
        pidfd: &mut pidfd as *mut libc::c_int as u64,
        exit_signal: libc::SIGCHLD as u64,
        cgroup: cgroup.map_or(0, |fd| fd as u64),
        ..CloneArgs::default()
    };
    // SAFETY: without CLONE_VM the child runs on a copy-on-write copy of this stack, like fork;
    // `args` and `pidfd` are valid for the duration of the call.
    let ret = unsafe {
        libc::syscall(libc::SYS_clone3, &args as *const CloneArgs, std::mem::size_of::<CloneArgs>())
    };
    finish(ret, pidfd, cgroup.is_some())
}

fn clone_legacy(flags: u64) -> SysResult<Forked> {
    let mut pidfd: libc::c_int = -1;
    let word = (flags | flags::CLONE_PIDFD) as c_ulong | libc::SIGCHLD as c_ulong;
    // SAFETY: as for clone3. With CLONE_PIDFD the kernel stores the pidfd through the
    // `parent_tid` argument (x86_64 order: flags, stack, parent_tid, child_tid, tls).
    let ret = unsafe {
        libc::syscall(libc::SYS_clone, word, 0usize, &mut pidfd as *mut libc::c_int, 0usize, 0usize)
    };
    finish(ret, pidfd, false)
}

fn finish(ret: libc::c_long, pidfd: libc::c_int, in_cgroup: bool) -> SysResult<Forked> {
    match ret {
        -1 => Err(Errno::last()),
        0 => Ok(Forked::Child),
        pid => Ok(Forked::Parent {
            pid: pid as libc::pid_t,
            // SAFETY: the kernel returned a fresh pidfd that nothing else owns.
            pidfd: unsafe { OwnedFd::from_raw_fd(pidfd) },
            in_cgroup,
        }),
    }
}
