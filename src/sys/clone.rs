//! Creating the sandbox's processes: `clone3` with `CLONE_PIDFD`, or legacy `clone` when a
//! seccomp profile or an old kernel refuses `clone3` (ENOSYS / EPERM).
//!
//! Every process is created vfork-style, as `posix_spawn` does: `CLONE_VM` on a private
//! [`Stack`], running a function that never returns (it execs or exits). Nothing of the
//! embedding program's memory is copied, so a spawn costs the same from an embedder of 50 MiB or
//! of 8 GiB. Unlike vfork the caller keeps running (it writes the child's id maps while the
//! child waits for "go"), so the child shares the caller's memory *and* the calling thread's
//! `errno`: it uses only the C-library-free wrappers of [`super`], and the caller keeps the
//! stacks and the plan alive until the child has exec'd or died.

use std::os::fd::{FromRawFd, OwnedFd, RawFd};
use std::sync::atomic::{AtomicBool, Ordering};

use libc::{c_ulong, c_void};

use super::{Errno, SysResult};

/// Namespace and process flags, as the `u64` that `clone3` takes. Defined here rather than taken
/// from libc because libc's values are `c_int` and some (e.g. `CLONE_INTO_CGROUP`) are 0 there.
pub(crate) mod flags {
    pub(crate) const CLONE_NEWTIME: u64 = 0x0000_0080;
    pub(crate) const CLONE_VM: u64 = 0x0000_0100;
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

/// A child process just created: its pid (in the caller's pid namespace), its pidfd, and
/// whether it was started in the requested cgroup (legacy clone cannot do that; the caller must
/// move it).
pub(crate) struct Forked {
    pub(crate) pid: libc::pid_t,
    pub(crate) pidfd: OwnedFd,
    pub(crate) in_cgroup: bool,
}

/// What a child runs: a function that never returns, and its argument.
pub(crate) type Entry = unsafe extern "C" fn(*mut c_void) -> !;

/// A private stack for a process that shares the caller's memory until it execs: an anonymous
/// mapping with a guard page below it, unmapped on drop. The owner must keep it until that
/// process has exec'd or died.
pub(crate) struct Stack {
    base: *mut c_void,
    len: usize,
}

// SAFETY: the mapping is owned by this value alone; moving it between threads is harmless.
unsafe impl Send for Stack {}
// SAFETY: shared references only read `base` and `len`.
unsafe impl Sync for Stack {}

impl Stack {
    /// Stack size: the child's deepest path (building a mount tree, with 4 KiB path buffers)
    /// needs a few tens of KiB; only touched pages cost anything.
    pub(crate) const SIZE: usize = 256 * 1024;

    /// Maps a stack of [`Stack::SIZE`] bytes plus a guard page (parent side).
    pub(crate) fn new() -> std::io::Result<Stack> {
        let page = 4096;
        let len = Self::SIZE + page;
        // SAFETY: an anonymous private mapping at an address of the kernel's choosing.
        let base = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                len,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_NORESERVE | libc::MAP_STACK,
                -1,
                0,
            )
        };
        if base == libc::MAP_FAILED {
            return Err(std::io::Error::last_os_error());
        }
        let stack = Stack { base, len };
        // SAFETY: the lowest page of the mapping just made: an overflow faults instead of
        // writing into whatever lies below.
        if unsafe { libc::mprotect(base, page, libc::PROT_NONE) } != 0 {
            return Err(std::io::Error::last_os_error());
        }
        Ok(stack)
    }

    /// The initial stack pointer: the (16-byte aligned) top of the mapping.
    pub(crate) fn top(&self) -> usize {
        (self.base as usize + self.len) & !15
    }
}

impl Drop for Stack {
    fn drop(&mut self) {
        // SAFETY: the mapping made in `new`, which nothing uses any more (see the type's rule).
        unsafe { libc::munmap(self.base, self.len) };
    }
}

/// Set once `clone3` has been refused, so later spawns go straight to `clone`.
static CLONE3_REFUSED: AtomicBool = AtomicBool::new(false);

/// Creates a child process in new namespaces (`flags`, without `CLONE_PIDFD`, which is added),
/// sharing this process's memory (`share_memory`; otherwise with a copy of it, as `fork`) and
/// running `entry(arg)` on `stack`, delivering SIGCHLD to the parent on exit, and started in
/// the cgroup `cgroup` (a directory descriptor) when clone3 is available.
///
/// # Safety
/// `entry` must follow the post-clone rules (see [`super::child`]) and never return; `arg` and
/// everything it reaches, and `stack`, must stay valid until the child has exec'd or died.
pub(crate) unsafe fn clone_with_pidfd(
    flags: u64,
    cgroup: Option<RawFd>,
    share_memory: bool,
    stack: &Stack,
    entry: Entry,
    arg: *mut c_void,
) -> SysResult<Forked> {
    let flags = flags | if share_memory { flags::CLONE_VM } else { 0 };
    if !CLONE3_REFUSED.load(Ordering::Relaxed) {
        // SAFETY: the caller's contract.
        match unsafe { clone3(flags, cgroup, stack, entry, arg) } {
            Err(Errno(libc::ENOSYS)) | Err(Errno(libc::EPERM)) if flags_fit_legacy_clone(flags) => {
                // EPERM may also be a real permission problem with the namespaces; legacy clone
                // will report that again, and only a successful clone proves clone3 is filtered.
                // SAFETY: the caller's contract.
                let forked = unsafe { clone_legacy(flags, stack, entry, arg) }?;
                CLONE3_REFUSED.store(true, Ordering::Relaxed);
                Ok(forked)
            }
            other => other,
        }
    } else {
        // SAFETY: the caller's contract.
        unsafe { clone_legacy(flags, stack, entry, arg) }
    }
}

/// Creates a child of the calling process that shares its memory and runs `entry(arg)` on
/// `stack` (the init's payload); returns its pid. Allocation-free, for the child.
///
/// # Safety
/// As for [`clone_with_pidfd`].
pub(crate) unsafe fn clone_on_stack(stack: &Stack, entry: Entry, arg: *mut c_void) -> SysResult<libc::pid_t> {
    let word = flags::CLONE_VM as usize | libc::SIGCHLD as usize;
    // SAFETY: legacy clone with a stack and no pointers for the kernel to write; the caller's
    // contract covers `entry`, `arg` and `stack`.
    match unsafe { trampoline(libc::SYS_clone, [word, stack.top(), 0, 0, 0], entry, arg) } {
        // Kernels before 6.0 refuse CLONE_VM once the caller has a time namespace for its
        // children: a copy of this memory then, as fork makes.
        Err(Errno(libc::EINVAL)) => {
            let word = libc::SIGCHLD as usize;
            // SAFETY: as above; the child runs on `stack` in its own copy of this memory.
            unsafe { trampoline(libc::SYS_clone, [word, stack.top(), 0, 0, 0], entry, arg) }
        }
        other => other,
    }
    .map(|pid| pid as libc::pid_t)
}

fn flags_fit_legacy_clone(flags: u64) -> bool {
    // Legacy clone takes a 32-bit flag word whose low byte is the exit signal.
    flags & !0xffff_ff00 == 0
}

unsafe fn clone3(
    flags: u64,
    cgroup: Option<RawFd>,
    stack: &Stack,
    entry: Entry,
    arg: *mut c_void,
) -> SysResult<Forked> {
    let mut pidfd: libc::c_int = -1;
    let args = CloneArgs {
        flags: flags | flags::CLONE_PIDFD | if cgroup.is_some() { flags::CLONE_INTO_CGROUP } else { 0 },
        pidfd: &mut pidfd as *mut libc::c_int as u64,
        exit_signal: libc::SIGCHLD as u64,
        stack: stack.base as u64,
        stack_size: stack.top() as u64 - stack.base as u64,
        cgroup: cgroup.map_or(0, |fd| fd as u64),
        ..CloneArgs::default()
    };
    let size = std::mem::size_of::<CloneArgs>();
    // SAFETY: `args` and `pidfd` are valid for the duration of the call; the caller's contract
    // covers the child.
    let ret = unsafe {
        trampoline(libc::SYS_clone3, [&args as *const CloneArgs as usize, size, 0, 0, 0], entry, arg)
    };
    finish(ret, pidfd, cgroup.is_some())
}

unsafe fn clone_legacy(flags: u64, stack: &Stack, entry: Entry, arg: *mut c_void) -> SysResult<Forked> {
    let mut pidfd: libc::c_int = -1;
    let word = (flags | flags::CLONE_PIDFD) as c_ulong | libc::SIGCHLD as c_ulong;
    // With CLONE_PIDFD the kernel stores the pidfd through the `parent_tid` argument (third on
    // both x86_64 and aarch64; the child_tid and tls arguments are unused).
    let args = [word as usize, stack.top(), &mut pidfd as *mut libc::c_int as usize, 0, 0];
    // SAFETY: `pidfd` is valid for the duration of the call; the caller's contract covers the
    // child.
    let ret = unsafe { trampoline(libc::SYS_clone, args, entry, arg) };
    finish(ret, pidfd, false)
}

fn finish(ret: SysResult<libc::c_long>, pidfd: libc::c_int, in_cgroup: bool) -> SysResult<Forked> {
    let pid = ret?;
    Ok(Forked {
        pid: pid as libc::pid_t,
        // SAFETY: the kernel returned a fresh pidfd that nothing else owns.
        pidfd: unsafe { OwnedFd::from_raw_fd(pidfd) },
        in_cgroup,
    })
}

/// Makes the clone system call `nr` with `args` (in the kernel's argument order); in the child,
/// which starts on the stack the arguments name, calls `entry(arg)`, which never returns.
/// Returns the child's pid in the parent.
///
/// # Safety
/// `args` must make the kernel switch the child to a valid stack (`CLONE_VM` with a stack);
/// `entry` must never return; see [`clone_with_pidfd`].
#[cfg(target_arch = "x86_64")]
unsafe fn trampoline(
    nr: libc::c_long,
    args: [usize; 5],
    entry: Entry,
    arg: *mut c_void,
) -> SysResult<libc::c_long> {
    let ret: isize;
    // SAFETY: the caller's contract. The parent returns from the system call with the child's
    // pid in rax and jumps over the child's path; the child (rax 0) clears the frame pointer and
    // calls `entry` on its new, 16-byte aligned stack, and never comes back.
    unsafe {
        core::arch::asm!(
            "syscall",
            "test rax, rax",
            "jnz 2f",
            "xor ebp, ebp",
            "mov rdi, r12",
            "call r13",
            "ud2",
            "2:",
            inlateout("rax") nr as isize => ret,
            in("rdi") args[0],
            in("rsi") args[1],
            in("rdx") args[2],
            in("r10") args[3],
            in("r8") args[4],
            in("r12") arg,
            in("r13") entry,
            out("rcx") _,
            out("r11") _,
        );
    }
    super::kernel_result(ret)
}

/// See the x86_64 version.
///
/// # Safety
/// As there.
#[cfg(target_arch = "aarch64")]
unsafe fn trampoline(
    nr: libc::c_long,
    args: [usize; 5],
    entry: Entry,
    arg: *mut c_void,
) -> SysResult<libc::c_long> {
    let ret: isize;
    // SAFETY: as for x86_64; the child calls `entry` with `arg` in x0 on its new stack.
    unsafe {
        core::arch::asm!(
            "svc 0",
            "cbnz x0, 2f",
            "mov x0, x20",
            "blr x21",
            "brk #1",
            "2:",
            in("x8") nr,
            inlateout("x0") args[0] as isize => ret,
            in("x1") args[1],
            in("x2") args[2],
            in("x3") args[3],
            in("x4") args[4],
            in("x20") arg,
            in("x21") entry,
        );
    }
    super::kernel_result(ret)
}
