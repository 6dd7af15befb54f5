//! Sandboxes awaited from async code (feature `tokio`): many at once on one thread, time limits
//! on timers, streamed stdio, session commands, and nothing left behind by a cancelled future.
//! Every test runs as root and as uid 65534 (with a user namespace); they count this process's
//! descriptors, threads and children, so they run one at a time.

mod common;

use std::os::fd::AsFd;
use std::time::Duration;

use common::*;
use stockade::{Limit, Namespaces, Root, Stdio};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// A current-thread runtime: everything below runs on the test's own thread.
fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread().enable_all().build().expect("tokio runtime")
}

#[test]
fn a_dropped_future_kills_its_sandbox_and_leaves_no_process() {
    let _serial = serial();
    let (fds, children) = (fd_count(), own_children());
    let sandbox = builder(Namespaces::PID | Namespaces::MOUNT).build().unwrap();
    runtime().block_on(async {
        // The output future spawns its sandbox on the first poll, then is cancelled.
        let mut command = sandbox.command("/bin/sleep");
        command.arg("1000");
        let output = command.output_async();
        tokio::pin!(output);
        let alive = tokio::select! {
            biased;
            _ = &mut output => panic!("sleep 1000 ended"),
            () = std::future::ready(()) => own_children().len(),
        };
        assert_eq!(alive, children.len() + 1, "the sandbox was running when the future was dropped");
    });
    assert_eq!(own_children(), children, "the cancelled future left a process");

    // And a child dropped while its wait is pending.
    runtime().block_on(async {
        let mut child = sandbox.command("/bin/sleep").arg("1000").spawn_async().unwrap();
        // Held across the drop: a pidfd names the process even if its pid is reused.
        let init = pidfd_open(child.id() as i32).expect("the sandbox's init");
        tokio::select! {
            biased;
            _ = child.wait() => panic!("sleep 1000 ended"),
            () = std::future::ready(()) => {}
        }
        drop(child);
        let mut fds = [nix::poll::PollFd::new(init.as_fd(), nix::poll::PollFlags::POLLIN)];
        let exited = nix::poll::poll(&mut fds, nix::poll::PollTimeout::ZERO).unwrap();
        assert_eq!(exited, 1, "the dropped sandbox's init still runs");
        drop(init);
    });
    drop(sandbox);
    assert_eq!(own_children(), children);
    assert_eq!(fd_count(), fds);
}

#[test]
fn waiting_blocks_no_thread_and_time_limits_fire_on_timers() {
    let _serial = serial();
    let sandbox = builder(Namespaces::PID | Namespaces::MOUNT).build().unwrap();
    runtime().block_on(async {
        // Waiting blocks nothing: while `wait` is pending, another task on the same thread
        // talks to the sandbox through its pipes, and only that ends it. Were the thread
        // blocked in `wait`, this would never finish (the outer timeout turns that into a
        // failure).
        let mut cat =
            sandbox.command("/bin/cat").stdin(Stdio::piped()).stdout(Stdio::piped()).spawn_async().unwrap();
        let (mut stdin, mut stdout) = (cat.stdin.take().unwrap(), cat.stdout.take().unwrap());
        let talk = async move {
            stdin.write_all(b"ping\n").await.unwrap();
            let mut back = [0u8; 5];
            stdout.read_exact(&mut back).await.unwrap();
            drop(stdin); // cat ends
            back
        };
        let both = async { tokio::join!(cat.wait(), talk) };
        let (status, back) =
            tokio::time::timeout(Duration::from_secs(120), both).await.expect("wait blocked the thread");
        assert_eq!(&back, b"ping\n");
        assert!(status.unwrap().success());

        // No time limit of the sandbox's own (so its init kills nothing): only the timer of
        // wait_timeout can end this.
        let mut sleeper = sandbox.command("/bin/sleep").arg("1000").spawn_async().unwrap();
        let started = std::time::Instant::now();
        let status = sleeper.wait_timeout(Duration::from_millis(300)).await.unwrap();
        assert!(status.timed_out(), "{status}");
        assert_eq!(status.limit(), Some(Limit::WallClock));
        assert!(started.elapsed() >= Duration::from_millis(300));
    });

    // The CPU-time check reads the sandbox's cgroup: it needs cgroups this user may make.
    if !is_root() {
        skip(
            "waiting_blocks_no_thread_and_time_limits_fire_on_timers (CPU part)",
            "no cgroup delegation for this user: CPU time is then only RLIMIT_CPU's, per process",
        );
        return;
    }
    let cpu_limited = builder(Namespaces::PID | Namespaces::MOUNT)
        .cpu_time_limit(Duration::from_millis(300))
        .build()
        .unwrap();
    runtime().block_on(async {
        let status =
            cpu_limited.command("/bin/sh").args(["-c", "while :; do :; done"]).status_async().await.unwrap();
        assert_eq!(status.limit(), Some(Limit::CpuTime), "{status}");
        // Ended by the timer-driven check, before RLIMIT_CPU's backstop (a whole second).
        assert_eq!(status.signal(), Some(libc::SIGKILL), "{status}");
    });
}

#[test]
fn piped_stdin_and_stdout_stream_while_the_sandbox_runs() {
    let _serial = serial();
    let sandbox = builder(Namespaces::PID | Namespaces::MOUNT | Namespaces::NET).build().unwrap();
    runtime().block_on(async {
        let mut child =
            sandbox.command("/bin/cat").stdin(Stdio::piped()).stdout(Stdio::piped()).spawn_async().unwrap();
        let mut stdin = child.stdin.take().unwrap();
        let mut stdout = child.stdout.take().unwrap();
        // Each line comes back before the next is sent: a real conversation, not a batch.
        for line in ["one\n", "two\n", "three\n"] {
            stdin.write_all(line.as_bytes()).await.unwrap();
            let mut back = vec![0u8; line.len()];
            stdout.read_exact(&mut back).await.unwrap();
            assert_eq!(back, line.as_bytes());
        }
        drop(stdin);
        let mut rest = Vec::new();
        stdout.read_to_end(&mut rest).await.unwrap();
        assert!(rest.is_empty());
        assert!(child.wait().await.unwrap().success());
    });
}

#[test]
fn session_commands_are_awaited_like_any_sandbox() {
    let _serial = serial();
    let children = own_children();
    let mut b = rooted(Namespaces::MOUNT | Namespaces::PID, Root::tmpfs());
    b.mount(stockade::Mount::tmpfs("/work"));
    let sandbox = b.build().unwrap();
    let session = sandbox.start().unwrap();
    runtime().block_on(async {
        let first =
            session.command("/bin/sh").args(["-c", "echo kept > /work/note"]).status_async().await.unwrap();
        assert!(first.success());
        let out = session.command("/bin/cat").arg("/work/note").output_async().await.unwrap();
        assert_eq!(out.stdout, b"kept\n");
        let mut killed = session.command("/bin/sleep").arg("1000").spawn_async().unwrap();
        killed.start_kill().unwrap();
        let status = killed.wait().await.unwrap();
        assert_eq!(status.signal(), Some(libc::SIGKILL));
    });
    session.stop().unwrap();
    assert_eq!(own_children(), children);
}

#[test]
fn spawning_async_outside_a_runtime_is_a_typed_error_and_leaves_no_process() {
    let _serial = serial();
    let (fds, children) = (fd_count(), own_children());
    let sandbox = builder(Namespaces::PID | Namespaces::MOUNT).build().unwrap();
    let err = sandbox.command("/bin/sleep").arg("1000").spawn_async().unwrap_err();
    assert!(
        matches!(&err, stockade::Error::Io { op, .. } if op.contains("tokio")),
        "unexpected error: {err:?}"
    );
    assert!(err.to_string().contains("tokio runtime"), "{err}");
    drop(sandbox);
    assert_eq!(own_children(), children);
    assert_eq!(fd_count(), fds);
}

#[test]
fn a_terminal_is_read_and_written_asynchronously() {
    let _serial = serial();
    let sandbox = rooted(Namespaces::PID | Namespaces::IPC | Namespaces::UTS, Root::tmpfs()).build().unwrap();
    runtime().block_on(async {
        let mut child = sandbox.command("/bin/sh").arg("-i").terminal(24, 80).spawn_async().unwrap();
        let mut terminal = child.terminal.take().expect("a terminal");
        assert_eq!(terminal.size().unwrap(), (24, 80));
        terminal.write_all(b"echo answer $((6*7))\n").await.unwrap();
        let mut screen = Vec::new();
        let mut chunk = [0u8; 256];
        // The echo of the line shows "$((6*7))"; the answer only in the output.
        while !String::from_utf8_lossy(&screen).contains("answer 42") {
            let n = terminal.read(&mut chunk).await.unwrap();
            assert!(n > 0, "the terminal ended early: {}", String::from_utf8_lossy(&screen));
            screen.extend_from_slice(&chunk[..n]);
        }
        terminal.resize(50, 120).unwrap();
        terminal.write_all(b"stty size; exit 3\n").await.unwrap();
        let mut rest = Vec::new();
        terminal.read_to_end(&mut rest).await.unwrap(); // end of file once the shell is gone
        assert!(String::from_utf8_lossy(&rest).contains("50 120"), "{}", String::from_utf8_lossy(&rest));
        assert_eq!(child.wait().await.unwrap().code(), Some(3));
    });
}
