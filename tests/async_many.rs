//! 500 sandboxes awaited at once on a current-thread tokio runtime (feature `tokio`): each
//! finishes with its own output, and the process's descriptors, threads, children and cgroups
//! are back to their starting counts afterwards. Alone in its binary, so that the test
//! harness's own threads cannot change the count. As root and as uid 65534.

mod common;

use common::*;
use stockade::{Namespaces, Stdio};
use tokio::io::AsyncWriteExt;

/// A current-thread runtime: everything below runs on the test's own thread.
fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread().enable_all().build().expect("tokio runtime")
}

/// Threads of this process.
fn thread_count() -> usize {
    std::fs::read_dir("/proc/self/task").expect("read /proc/self/task").count()
}

/// Raises the descriptor limit to its hard maximum: 500 sandboxes hold several each.
fn raise_fd_limit() {
    let (_, hard) = nix::sys::resource::getrlimit(nix::sys::resource::Resource::RLIMIT_NOFILE).unwrap();
    nix::sys::resource::setrlimit(nix::sys::resource::Resource::RLIMIT_NOFILE, hard, hard).unwrap();
}

#[test]
fn five_hundred_sandboxes_awaited_on_one_thread_finish_with_their_own_output_and_leave_nothing() {
    let _serial = serial();
    raise_fd_limit();
    let (fds, children, threads) = (fd_count(), own_children(), thread_count());
    // As root each sandbox also gets cgroups of its own (pids and memory limits).
    let groups_before = if is_root() { Some(leftover_cgroups()) } else { None };
    let mut b = builder(Namespaces::PID | Namespaces::MOUNT | Namespaces::IPC | Namespaces::UTS);
    if is_root() {
        b.pids_limit(8).memory_limit(64 << 20);
    } else {
        skip(
            "five_hundred_sandboxes_awaited_on_one_thread (cgroups part)",
            "no cgroup delegation for this user: the sandboxes run without cgroups",
        );
    }
    let sandbox = b.build().unwrap();
    runtime().block_on(async {
        // All 500 are started first, each blocked reading its stdin: they are alive at once.
        let mut started = Vec::new();
        for i in 0..500 {
            let child = sandbox
                .command("/bin/sh")
                .args(["-c", "read line; echo \"$line from $$\""])
                .stdin(Stdio::piped())
                .stdout(Stdio::piped())
                .stderr(Stdio::piped())
                .spawn_async()
                .unwrap_or_else(|e| panic!("spawn {i}: {e}"));
            started.push(child);
        }
        assert_eq!(own_children().len(), children.len() + 500, "500 sandboxes alive at once");
        let mut tasks = tokio::task::JoinSet::new();
        for (i, mut child) in started.into_iter().enumerate() {
            tasks.spawn(async move {
                let mut stdin = child.stdin.take().unwrap();
                stdin.write_all(format!("sandbox {i}\n").as_bytes()).await.unwrap();
                drop(stdin);
                let out = child.wait_with_output().await.unwrap();
                (i, out)
            });
        }
        let mut seen = vec![false; 500];
        while let Some(done) = tasks.join_next().await {
            let (i, out) = done.unwrap();
            assert!(out.status.success(), "sandbox {i}: {} {:?}", out.status, out.stderr);
            // pid 2: the payload under the sandbox's own init.
            assert_eq!(String::from_utf8(out.stdout).unwrap(), format!("sandbox {i} from 2\n"));
            seen[i] = true;
        }
        assert!(seen.iter().all(|&s| s));
    });
    drop(sandbox); // (it holds a descriptor of the init program)
    assert_eq!(fd_count(), fds, "descriptors back to their starting count");
    assert_eq!(own_children(), children, "no process left");
    assert_eq!(thread_count(), threads, "threads back to their starting count");
    if let Some(before) = groups_before {
        assert_eq!(leftover_cgroups(), before, "cgroups back to their starting set");
    }
}
