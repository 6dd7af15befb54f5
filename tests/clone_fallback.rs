//! When a seccomp profile refuses `clone3` (ENOSYS or EPERM, as container runtimes' default
//! profiles do), stockade still spawns, through legacy `clone` with `CLONE_PIDFD`. The embedding
//! program here is the `run` example, started under such a filter.

mod common;

use std::os::unix::process::CommandExt;

use common::*;

const AUDIT_ARCH_X86_64: u32 = 0xC000_003E;
const SECCOMP_RET_ALLOW: u32 = 0x7fff_0000;
const SECCOMP_RET_ERRNO: u32 = 0x0005_0000;
const BPF_LD_W_ABS: u16 = 0x20;
const BPF_JEQ_K: u16 = 0x15;
const BPF_RET_K: u16 = 0x06;
const SYS_CLONE3: u32 = 435;

/// A filter that makes `clone3` fail with `errno` and allows everything else.
fn refuse_clone3(errno: i32) -> Vec<libc::sock_filter> {
    let op = |code, jt, jf, k| libc::sock_filter { code, jt, jf, k };
    vec![
        op(BPF_LD_W_ABS, 0, 0, 4), // seccomp_data.arch
        op(BPF_JEQ_K, 1, 0, AUDIT_ARCH_X86_64),
        op(BPF_RET_K, 0, 0, SECCOMP_RET_ALLOW),
        op(BPF_LD_W_ABS, 0, 0, 0), // seccomp_data.nr
        op(BPF_JEQ_K, 0, 1, SYS_CLONE3),
        op(BPF_RET_K, 0, 0, SECCOMP_RET_ERRNO | errno as u32),
        op(BPF_RET_K, 0, 0, SECCOMP_RET_ALLOW),
    ]
}

/// Runs `program args` with the filter installed (no_new_privs first, so it works unprivileged).
fn run_filtered(errno: i32, program: &std::path::Path, args: &[&str]) -> std::process::Output {
    let filter = refuse_clone3(errno);
    // The hook must be Send + Sync: carry the filter's address as an integer.
    let (addr, len) = (filter.as_ptr() as usize, filter.len() as u16);
    let mut cmd = std::process::Command::new(program);
    cmd.args(args);
    // SAFETY: between fork and exec the hook only makes two prctl calls on data prepared before
    // the fork (`addr` points into `filter`, alive until output() returns).
    unsafe {
        cmd.pre_exec(move || {
            let prog = libc::sock_fprog { len, filter: addr as *mut libc::sock_filter };
            if libc::prctl(libc::PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0
                || libc::prctl(libc::PR_SET_SECCOMP, libc::SECCOMP_MODE_FILTER, &prog as *const _) != 0
            {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    let out = cmd.output().unwrap();
    drop(filter);
    out
}

#[test]
fn sandboxes_spawn_when_seccomp_refuses_clone3() {
    if !cfg!(target_arch = "x86_64") {
        return skip("sandboxes_spawn_when_seccomp_refuses_clone3", "the filter is written for x86_64");
    }
    for errno in [libc::ENOSYS, libc::EPERM] {
        // Control: the filter really refuses clone3 (probe it directly when python is there).
        if have("/usr/bin/python3") {
            let probe = run_filtered(
                errno,
                std::path::Path::new("/usr/bin/python3"),
                &[
                    "-c",
                    "import ctypes; l = ctypes.CDLL(None, use_errno=True); print(l.syscall(435, None, 0), ctypes.get_errno())",
                ],
            );
            assert_eq!(
                String::from_utf8_lossy(&probe.stdout),
                format!("-1 {errno}\n"),
                "filter not effective"
            );
        }
        for ns in ["all", "none"] {
            let out = run_filtered(
                errno,
                &run_example(),
                &["--ns", ns, "--", "/bin/sh", "-c", "echo spawned $$; exit 3"],
            );
            let stdout = String::from_utf8_lossy(&out.stdout);
            let stderr = String::from_utf8_lossy(&out.stderr);
            assert_eq!(out.status.code(), Some(3), "errno {errno}, ns {ns}: {stdout} {stderr}");
            assert!(stdout.starts_with("spawned "), "{stdout}");
            if ns == "all" {
                assert_eq!(stdout, "spawned 2\n", "payload under an init");
            }
            assert!(stderr.contains("exit status: 3"), "{stderr}");
        }
    }
}
