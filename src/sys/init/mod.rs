//! The sandbox's pid 1, when it has a pid namespace: the program `stockade-init`
//! ([`program.rs`](program), built by `build.rs`), run from a sealed memfd.
//!
//! A process that is pid 1 of a namespace must reap orphans (or they pile up as zombies), gets no
//! default signal handling (signals it does not handle are dropped), and takes the namespace
//! down when it exits. The init therefore keeps every signal blocked and waits for them; forwards
//! each one except SIGCHLD to the payload; reaps every child on SIGCHLD; and when the payload
//! ends, writes the payload's wait status to the parent and exits.
//!
//! It is a program of its own rather than a copy of the embedding program: the first child
//! shares the embedder's memory (`CLONE_VM`) until it execs this, so spawning never copies the
//! embedder's page tables for it, and the init holds none of the embedder's memory for the
//! sandbox's life.

use std::ffi::CStr;
use std::os::fd::{AsRawFd, OwnedFd, RawFd};

use super::{Errno, SysResult};

pub(crate) mod wire;

/// The init program's bytes.
static PROGRAM: &[u8] = include_bytes!(concat!(env!("OUT_DIR"), "/stockade-init"));

/// A sealed, close-on-exec memfd holding the init program (parent side, once per sandbox).
/// Sealed against writes, so a payload that reaches the init's `/proc/<pid>/exe` cannot change
/// what later inits run.
pub(crate) fn program() -> std::io::Result<OwnedFd> {
    make_program().map_err(Into::into)
}

fn make_program() -> SysResult<OwnedFd> {
    const MFD_CLOEXEC: u32 = 0x1;
    const MFD_ALLOW_SEALING: u32 = 0x2;
    const MFD_EXEC: u32 = 0x10;
    const F_ADD_SEALS: i32 = 1033;
    const SEALS: i32 = 0x1 | 0x2 | 0x4 | 0x8; // SEAL, SHRINK, GROW, WRITE
    let name = c"stockade-init";
    // MFD_EXEC (Linux 6.3+) asks for an executable memfd where vm.memfd_noexec would otherwise
    // make it non-executable; older kernels refuse the flag (EINVAL) and make it executable.
    // SAFETY: `name` is NUL-terminated; flags are integers.
    let fd = match unsafe {
        raw!(libc::SYS_memfd_create, name.as_ptr(), MFD_CLOEXEC | MFD_ALLOW_SEALING | MFD_EXEC)
    } {
        Err(Errno(libc::EINVAL)) => {
            // SAFETY: as above.
            unsafe { raw!(libc::SYS_memfd_create, name.as_ptr(), MFD_CLOEXEC | MFD_ALLOW_SEALING) }?
        }
        other => other?,
    };
    let fd = super::owned(fd as RawFd);
    super::write_all(fd.as_raw_fd(), PROGRAM)?;
    // F_SEAL_EXEC (Linux 6.3+) also keeps its mode from changing (a payload that reached it
    // through /proc/1/exe could otherwise make it non-executable for later spawns).
    const F_SEAL_EXEC: i32 = 0x20;
    // SAFETY: integer arguments.
    match unsafe { raw!(libc::SYS_fcntl, fd.as_raw_fd(), F_ADD_SEALS, SEALS | F_SEAL_EXEC) } {
        // SAFETY: as above.
        Err(Errno(libc::EINVAL)) => unsafe { raw!(libc::SYS_fcntl, fd.as_raw_fd(), F_ADD_SEALS, SEALS) }?,
        other => other?,
    };
    Ok(fd)
}

/// The `STOCKADE_INIT=...` environment entry for the init: payload pid, three descriptors,
/// the wall-clock limit in milliseconds (each -1 when absent) and 1 when the init outlives its
/// payload (a session's, see `program.rs`). Written into `buf` without allocating; returns it
/// NUL-terminated.
pub(super) fn environment(buf: &mut [u8; 96], values: [i32; 6]) -> &CStr {
    let mut len = 0;
    let mut push = |bytes: &[u8]| {
        for &b in bytes {
            if let Some(slot) = buf.get_mut(len) {
                *slot = b;
                len += 1;
            }
        }
    };
    push(b"STOCKADE_INIT=");
    for (i, value) in values.into_iter().enumerate() {
        push(if i == 0 { b"" } else { b"," });
        push(if value < 0 { b"-" } else { b"" });
        // At most 10 digits, written from the right.
        let (mut digits, mut start, mut n) = ([0u8; 10], 10usize, value.unsigned_abs());
        while let Some(d) = start.checked_sub(1).and_then(|i| digits.get_mut(i)) {
            *d = b'0' + (n % 10) as u8;
            start -= 1;
            n /= 10;
            if n == 0 {
                break;
            }
        }
        push(digits.get(start..).unwrap_or(&[]));
    }
    push(b"\0");
    // 14 + 6 × 11 + 5 + 1 = 86 bytes at most.
    CStr::from_bytes_until_nul(&buf[..]).unwrap_or(c"STOCKADE_INIT=")
}

/// Execs the init program in its holding mode (a session's holder, see [`crate::Session`]):
/// it only waits, until it is killed. Returns only on failure.
pub(super) fn exec_holder(program: RawFd) -> Errno {
    exec_as(program, c"stockade-hold", c"STOCKADE_INIT=hold")
}

/// Execs the init program in its serving mode (a session's server, see `serve.rs`), with the
/// session socket at [`wire::SERVER_FD`] and the holder's pidfd at [`wire::HOLDER_FD`].
/// Returns only on failure.
pub(super) fn exec_server(program: RawFd) -> Errno {
    exec_as(program, c"stockade-serve", c"STOCKADE_INIT=serve")
}

/// Execs the init program (`program`, a descriptor of the memfd) with `environment`; returns
/// only on failure.
pub(super) fn exec(program: RawFd, environment: &CStr) -> Errno {
    exec_as(program, c"stockade-init", environment)
}

fn exec_as(program: RawFd, name: &CStr, environment: &CStr) -> Errno {
    if program < 0 {
        return Errno(libc::EBADF);
    }
    let argv = [name.as_ptr(), std::ptr::null()];
    let envp = [environment.as_ptr(), std::ptr::null()];
    // SAFETY: both arrays are NULL-terminated and point at NUL-terminated strings that live on
    // this stack frame; the path is empty with AT_EMPTY_PATH.
    match unsafe {
        raw!(libc::SYS_execveat, program, c"".as_ptr(), argv.as_ptr(), envp.as_ptr(), libc::AT_EMPTY_PATH)
    } {
        Err(e) => e,
        Ok(_) => Errno(libc::EINVAL),
    }
}
