//! The sandbox's pid 1, when it has a pid namespace.
//!
//! A process that is pid 1 of a namespace must reap orphans (or they pile up as zombies), gets no
//! default signal handling (signals it does not handle are dropped), and takes the namespace
//! down when it exits. The init therefore: keeps every signal blocked and waits for them
//! synchronously; forwards each one except SIGCHLD to the payload; reaps every child on
//! SIGCHLD; and when the payload ends, writes the payload's wait status to the parent and exits,
//! which makes the kernel kill whatever else is left in the namespace.
//!
//! It is a copy of the embedding program that never execs, so it stays non-dumpable and holds
//! no descriptor but its status pipe. Same allocation-free rules as [`super::child`].

use std::os::fd::RawFd;

/// Runs as the init until the payload (`payload`, a pid in the new namespace) exits.
pub(super) fn run(payload: libc::pid_t, status: RawFd) -> ! {
    // Nothing of the host (stdio, the embedding program's descriptors) stays open in a process
    // that lives as long as the sandbox.
    if status >= 0 {
        super::close_range(0, status as u32 - 1);
        super::close_range(status as u32 + 1, u32::MAX);
    } else {
        super::close_range(0, u32::MAX);
    }
    let all = super::sigset(true);
    loop {
        match super::sigwait(&all) {
            Ok(libc::SIGCHLD) => reap(payload, status),
            // The payload may be gone already (ESRCH); nothing to do then.
            Ok(signal) => drop(super::kill(payload, signal)),
            Err(_) => super::exit(super::child::EXIT_SETUP_FAILED),
        }
    }
}

/// Reaps every exited child; if one of them is the payload, reports its status and exits.
fn reap(payload: libc::pid_t, status: RawFd) {
    while let Ok(Some((pid, wait_status))) = super::waitpid_nohang(-1) {
        if pid == payload {
            if status >= 0 {
                let _ = super::write_all(status, &wait_status.to_ne_bytes());
            }
            let code = if libc::WIFEXITED(wait_status) {
                libc::WEXITSTATUS(wait_status)
            } else {
                128 + libc::WTERMSIG(wait_status)
            };
            super::exit(code);
        }
    }
}
