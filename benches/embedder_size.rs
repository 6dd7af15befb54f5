//! Spawn cost against the embedding program's size, side by side with `std::process::Command`
//! in one run (see ../shared/docs/benchmarks.md): the process grows to 50 MiB, 4 GiB and 8 GiB
//! resident (touched pages), and at each size spawns `/bin/true` interleaved — std, then a
//! stockade sandbox of configuration C (user+pid+mount+uts+ipc, tmpfs root with read-only system
//! binds, /proc, minimal /dev) — printing p50 and p99 of each and their growth over the 50 MiB
//! figures. A fork-like spawn copies the page tables (tens of milliseconds at 8 GiB); std's and
//! stockade's (`CLONE_VM` on a private stack) should not grow. A third column: `/bin/true` in a
//! started session of C, a fork of the session's server, not of the embedder (see `src/session`).
//!
//! Run: `cargo bench --bench embedder_size` (needs about 8.5 GiB of free memory; as root or
//! unprivileged). `EMBEDDER_SIZES_MIB=50,1024` and `EMBEDDER_ROUNDS=200` change the defaults.

use std::time::{Duration, Instant};

use stockade::{Mount, Namespaces, Root, Sandbox, Stdio};

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    sorted[((sorted.len() - 1) as f64 * p).round() as usize]
}

fn main() {
    let sizes: Vec<usize> = std::env::var("EMBEDDER_SIZES_MIB")
        .unwrap_or_else(|_| "50,4096,8192".into())
        .split(',')
        .map(|s| s.trim().parse().expect("EMBEDDER_SIZES_MIB: comma-separated MiB"))
        .collect();
    let rounds: usize = std::env::var("EMBEDDER_ROUNDS").ok().and_then(|s| s.parse().ok()).unwrap_or(300);
    let ns = Namespaces::USER | Namespaces::PID | Namespaces::MOUNT | Namespaces::UTS | Namespaces::IPC;
    let sandbox = Sandbox::builder()
        .namespaces(ns)
        .root(Root::tmpfs())
        .mounts(Mount::host_system())
        .build()
        .expect("build sandbox C");
    let session = sandbox.start().expect("start a session of C");

    let mut ballast: Vec<Vec<u8>> = Vec::new();
    let mut held = 0usize;
    let mut base: Option<(Duration, Duration, Duration)> = None;
    println!(
        "embedder resident | std p50 / p99 | stockade C p50 / p99 | session command p50 / p99 | growth over \
         the first size: std, stockade, session"
    );
    for mib in sizes {
        // Grow to `mib` MiB of touched memory (in 64 MiB pieces, each page written).
        while held < mib << 20 {
            let piece = (64usize << 20).min((mib << 20) - held);
            ballast.push(vec![1u8; piece]);
            held += piece;
        }
        let mut std_times = Vec::with_capacity(rounds);
        let (mut ours, mut in_session) = (Vec::with_capacity(rounds), Vec::with_capacity(rounds));
        for _ in 0..rounds {
            let t = Instant::now();
            let status = std::process::Command::new("/bin/true")
                .env_clear()
                .stdin(std::process::Stdio::null())
                .status();
            assert!(status.expect("std spawn").success());
            std_times.push(t.elapsed());
            let t = Instant::now();
            let status = sandbox.command("/bin/true").stdin(Stdio::null()).status();
            assert!(status.expect("stockade spawn").success());
            ours.push(t.elapsed());
            let t = Instant::now();
            let status = session.command("/bin/true").stdin(Stdio::null()).status();
            assert!(status.expect("session command").success());
            in_session.push(t.elapsed());
        }
        std_times.sort();
        ours.sort();
        in_session.sort();
        let (s50, o50, i50) =
            (percentile(&std_times, 0.5), percentile(&ours, 0.5), percentile(&in_session, 0.5));
        let (b_std, b_ours, b_session) = *base.get_or_insert((s50, o50, i50));
        let ms = |d: Duration| d.as_secs_f64() * 1e3;
        println!(
            "{mib:>6} MiB | {:>8.3} / {:>8.3} ms | {:>8.3} / {:>8.3} ms | {:>8.3} / {:>8.3} ms | {:.2}x, {:.2}x, {:.2}x",
            ms(s50),
            ms(percentile(&std_times, 0.99)),
            ms(o50),
            ms(percentile(&ours, 0.99)),
            ms(i50),
            ms(percentile(&in_session, 0.99)),
            s50.as_secs_f64() / b_std.as_secs_f64(),
            o50.as_secs_f64() / b_ours.as_secs_f64(),
            i50.as_secs_f64() / b_session.as_secs_f64(),
        );
    }
    drop(session);
    drop(ballast);
}
