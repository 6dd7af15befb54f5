//! Spawn → exit of `/bin/true` in configurations A–F, measured side by side in one process,
//! interleaved round by round (see ../shared/docs/benchmarks.md): the raw limit of each
//! configuration ([`raw`]), stockade in-process, and `std::process::Command` once per round.
//! Prints p50 and p99 of each and the ratios stockade/raw and stockade/std.
//!
//! - A: no namespaces
//! - B: user+pid+mount+uts+ipc, a fresh /proc (with the default masks and the mount lock)
//! - C: B + tmpfs root, read-only system binds, minimal /dev
//! - D: C + net (loopback up)
//! - E: D + cgroup memory and pids limits
//! - F: E + the default syscall filter (A–E run without one, as their raw limits do)
//!
//! Run as root (the raw limits write cgroup v1 groups and maps): `cargo bench --bench compare`,
//! or `benches/compare/run.sh`, which adds the command-line peers (bwrap, runc, unshare) through
//! hyperfine. `COMPARE_ROUNDS` (default 300) sets the rounds; `COMPARE_OUT=FILE` also writes
//! the figures as tab-separated lines for the script.

#[path = "compare/raw.rs"]
mod raw;

use std::time::{Duration, Instant};

use stockade::{Mount, Namespaces, Root, Sandbox, SandboxBuilder, Stdio};

struct Case {
    name: &'static str,
    raw: raw::Raw,
    sandbox: Sandbox,
    raw_times: Vec<Duration>,
    ours: Vec<Duration>,
}

fn stockade(config: raw::Config) -> SandboxBuilder {
    let mut b = Sandbox::builder();
    if config.namespaces {
        let mut ns =
            Namespaces::USER | Namespaces::PID | Namespaces::MOUNT | Namespaces::UTS | Namespaces::IPC;
        if config.net {
            ns |= Namespaces::NET;
        }
        b.namespaces(ns);
    }
    if config.root {
        b.root(Root::tmpfs()).mounts(Mount::host_system());
    }
    if config.cgroup {
        b.memory_limit(256 << 20).pids_limit(64);
    }
    if !config.filter {
        b.no_syscall_filter();
    }
    b
}

fn percentile(times: &mut [Duration], p: f64) -> Duration {
    times.sort();
    times[((times.len() - 1) as f64 * p).round() as usize]
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

fn main() {
    if !nix::unistd::geteuid().is_root() {
        eprintln!(
            "benches/compare: run as root (the raw limits write cgroup v1 groups and id maps directly)"
        );
        return;
    }
    let rounds: usize = std::env::var("COMPARE_ROUNDS").ok().and_then(|s| s.parse().ok()).unwrap_or(300);
    let configs = [
        ("A", raw::Config { namespaces: false, root: false, net: false, cgroup: false, filter: false }),
        ("B", raw::Config { namespaces: true, root: false, net: false, cgroup: false, filter: false }),
        ("C", raw::Config { namespaces: true, root: true, net: false, cgroup: false, filter: false }),
        ("D", raw::Config { namespaces: true, root: true, net: true, cgroup: false, filter: false }),
        ("E", raw::Config { namespaces: true, root: true, net: true, cgroup: true, filter: false }),
        ("F", raw::Config { namespaces: true, root: true, net: true, cgroup: true, filter: true }),
    ];
    let mut cases: Vec<Case> = configs
        .into_iter()
        .map(|(name, config)| Case {
            name,
            raw: raw::Raw::new(config),
            sandbox: stockade(config).build().expect("build sandbox"),
            raw_times: Vec::with_capacity(rounds),
            ours: Vec::with_capacity(rounds),
        })
        .collect();
    let mut std_times = Vec::with_capacity(rounds);
    // Warm up (page cache, first-use costs), then measure, interleaved.
    for round in 0..rounds + 10 {
        let t = Instant::now();
        let status = std::process::Command::new("/bin/true").stdin(std::process::Stdio::null()).status();
        assert!(status.expect("std spawn").success());
        if round >= 10 {
            std_times.push(t.elapsed());
        }
        for case in &mut cases {
            let t = Instant::now();
            let code = case.raw.run().unwrap_or_else(|e| panic!("raw {}: {e}", case.name));
            let raw_time = t.elapsed();
            assert_eq!(code, 0, "raw {} exited {code}", case.name);
            let t = Instant::now();
            let status = case.sandbox.command("/bin/true").stdin(Stdio::null()).status();
            let ours = t.elapsed();
            assert!(status.unwrap_or_else(|e| panic!("stockade {}: {e}", case.name)).success());
            if round >= 10 {
                case.raw_times.push(raw_time);
                case.ours.push(ours);
            }
        }
    }
    let std50 = percentile(&mut std_times, 0.5);
    let std99 = percentile(&mut std_times, 0.99);
    let mut out = String::new();
    println!("in-process, {rounds} rounds, interleaved; times in ms (p50 / p99)");
    println!("config | raw limit | stockade | stockade/raw p50 | stockade p99/p50 | stockade/std p50");
    println!("std::process::Command | | {:.3} / {:.3} | | |", ms(std50), ms(std99));
    out.push_str(&format!("std\t{:.4}\t{:.4}\n", ms(std50), ms(std99)));
    for case in &mut cases {
        let (r50, r99) = (percentile(&mut case.raw_times, 0.5), percentile(&mut case.raw_times, 0.99));
        let (o50, o99) = (percentile(&mut case.ours, 0.5), percentile(&mut case.ours, 0.99));
        println!(
            "{} | {:.3} / {:.3} | {:.3} / {:.3} | {:.2} | {:.2} | {:.2}",
            case.name,
            ms(r50),
            ms(r99),
            ms(o50),
            ms(o99),
            o50.as_secs_f64() / r50.as_secs_f64(),
            o99.as_secs_f64() / o50.as_secs_f64(),
            o50.as_secs_f64() / std50.as_secs_f64(),
        );
        out.push_str(&format!(
            "{}\t{:.4}\t{:.4}\t{:.4}\t{:.4}\n",
            case.name,
            ms(r50),
            ms(r99),
            ms(o50),
            ms(o99)
        ));
    }
    if let Ok(path) = std::env::var("COMPARE_OUT") {
        std::fs::write(path, out).expect("write COMPARE_OUT");
    }
}
