//! Spawn → exit of `/bin/true` in configurations A–F, measured side by side in one process,
//! interleaved round by round (see ../shared/docs/benchmarks.md): the raw limit of each
//! configuration ([`raw`]), stockade in-process, and `std::process::Command` once per round.
//! Prints p50 and p99 of each and the ratios stockade/raw and stockade/std.
//!
//! Every `/bin/true` runs with an empty environment (std's with `env_clear`; stockade's
//! payloads get `PATH` and `HOME` only): run by `cargo bench`, this process's environment
//! holds cargo's `LD_LIBRARY_PATH`, through whose five directories the dynamic loader of an
//! inheriting `/bin/true` looks for libc first (0.69 against 0.57 ms per std spawn).
//!
//! - A: no namespaces
//! - B: user+pid+mount+uts+ipc, a fresh /proc (with the default masks and the mount lock)
//! - C: B + tmpfs root, read-only system binds, minimal /dev
//! - D: C + net (loopback up)
//! - E: D + cgroup memory and pids limits
//! - F: E + the default syscall filter (A–E run without one, as their raw limits do)
//!
//! Then, spaced: E again, raw limit and stockade interleaved, each spawn `COMPARE_GAP_MS`
//! (default 20; 0 skips it) after the last, as spawns come in a judge or a CI runner: whatever
//! the kernel does lazily between spawns (an RCU grace period a cgroup migration waits for)
//! shows here and not in back-to-back rounds.
//!
//! Then, warm: `/bin/true` in a started session of configuration C, and a pool checkout +
//! command + return, each against std in the same rounds; a used session's stop and a new
//! one's start against a reset (`Session::reset`, what a pool does with a session that comes
//! back instead), in C and E. Then throughput: 16 threads spawning
//! configuration C for `COMPARE_SECONDS` (default 10; 0 skips it) against 16 threads running
//! bwrap with the same isolation, with the process's descriptors, threads, zombies, the mount
//! table and stockade's cgroup directories counted before and after.
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

/// Configurations A to F, as their raw limits take them.
fn configs() -> [(&'static str, raw::Config); 6] {
    [
        ("A", raw::Config { namespaces: false, root: false, net: false, cgroup: false, filter: false }),
        ("B", raw::Config { namespaces: true, root: false, net: false, cgroup: false, filter: false }),
        ("C", raw::Config { namespaces: true, root: true, net: false, cgroup: false, filter: false }),
        ("D", raw::Config { namespaces: true, root: true, net: true, cgroup: false, filter: false }),
        ("E", raw::Config { namespaces: true, root: true, net: true, cgroup: true, filter: false }),
        ("F", raw::Config { namespaces: true, root: true, net: true, cgroup: true, filter: true }),
    ]
}

fn main() {
    if !nix::unistd::geteuid().is_root() {
        eprintln!(
            "benches/compare: run as root (the raw limits write cgroup v1 groups and id maps directly)"
        );
        return;
    }
    // `--raw-once X`: one spawn of configuration X's raw limit, then exit with its status: the
    // raw limit as a whole process, which run.sh times beside the `run` example and bwrap.
    let args: Vec<String> = std::env::args().collect();
    if let Some(name) = args.iter().position(|a| a == "--raw-once").and_then(|i| args.get(i + 1)) {
        let (_, config) = configs().into_iter().find(|(n, _)| n == name).expect("--raw-once takes A to F");
        let code = raw::Raw::new(config).run().unwrap_or_else(|e| panic!("raw {name}: {e}"));
        std::process::exit(code);
    }
    let rounds: usize = std::env::var("COMPARE_ROUNDS").ok().and_then(|s| s.parse().ok()).unwrap_or(300);
    let configs = configs();
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
        let status =
            std::process::Command::new("/bin/true").env_clear().stdin(std::process::Stdio::null()).status();
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
    let gap: u64 = std::env::var("COMPARE_GAP_MS").ok().and_then(|s| s.parse().ok()).unwrap_or(20);
    if gap > 0
        && let Some(e) = cases.iter_mut().find(|c| c.name == "E")
    {
        let line = spaced(e, (rounds / 3).max(20), Duration::from_millis(gap));
        println!("{line}");
        out.push_str(&format!("{line}\n"));
    }
    let config_c = raw::Config { namespaces: true, root: true, net: false, cgroup: false, filter: false };
    let c = stockade(config_c).build().expect("build sandbox C");
    let (session_line, pool_line) = warm(&c, rounds);
    println!("{session_line}\n{pool_line}");
    out.push_str(&format!("{session_line}\n{pool_line}\n"));
    for case in cases.iter().filter(|c| c.name == "C" || c.name == "E") {
        let (start_line, reset_line) = renewals(case, (rounds / 3).max(20));
        println!("{start_line}\n{reset_line}");
        out.push_str(&format!("{start_line}\n{reset_line}\n"));
    }
    let seconds: u64 = std::env::var("COMPARE_SECONDS").ok().and_then(|s| s.parse().ok()).unwrap_or(10);
    if seconds > 0 {
        let line = throughput(&c, Duration::from_secs(seconds));
        println!("{line}");
        out.push_str(&format!("{line}\n"));
    }
    if let Ok(path) = std::env::var("COMPARE_OUT") {
        std::fs::write(path, out).expect("write COMPARE_OUT");
    }
}

/// `case`'s raw limit and stockade, interleaved, each spawn `gap` after the one before;
/// returns the table line.
fn spaced(case: &mut Case, rounds: usize, gap: Duration) -> String {
    let (mut raw_times, mut ours) = (Vec::with_capacity(rounds), Vec::with_capacity(rounds));
    for _ in 0..rounds {
        std::thread::sleep(gap);
        let t = Instant::now();
        let code = case.raw.run().unwrap_or_else(|e| panic!("raw {}: {e}", case.name));
        raw_times.push(t.elapsed());
        assert_eq!(code, 0, "raw {} exited {code}", case.name);
        std::thread::sleep(gap);
        let t = Instant::now();
        let status = case.sandbox.command("/bin/true").stdin(Stdio::null()).status();
        ours.push(t.elapsed());
        assert!(status.unwrap_or_else(|e| panic!("stockade {}: {e}", case.name)).success());
    }
    let (r50, r99) = (percentile(&mut raw_times, 0.5), percentile(&mut raw_times, 0.99));
    let (o50, o99) = (percentile(&mut ours, 0.5), percentile(&mut ours, 0.99));
    format!(
        "{} spaced {} ms, {rounds} rounds\t{:.4}\t{:.4}\traw limit p50 {:.4} p99 {:.4}: stockade/raw {:.2}x, p99/p50 {:.2}",
        case.name,
        gap.as_millis(),
        ms(o50),
        ms(o99),
        ms(r50),
        ms(r99),
        o50.as_secs_f64() / r50.as_secs_f64(),
        o99.as_secs_f64() / o50.as_secs_f64(),
    )
}

/// Sessions a pool keeps started in [`warm`].
const POOL_SIZE: usize = 4;

/// A started session's command and a pool's checkout + command + return, each interleaved with
/// std; returns the two table lines.
fn warm(sandbox: &Sandbox, rounds: usize) -> (String, String) {
    let session = sandbox.start().expect("start session");
    let pool = stockade::Pool::new(sandbox, POOL_SIZE);
    // The pool starts its sessions in the background, as a server would have them between
    // requests.
    let wait_full = |pool: &stockade::Pool| {
        let since = Instant::now();
        while pool.ready() < POOL_SIZE {
            assert!(since.elapsed() < Duration::from_secs(60), "the pool did not refill in 60 s");
            std::thread::sleep(Duration::from_millis(1));
        }
    };
    wait_full(&pool);
    let (mut std_times, mut in_session, mut pooled) = (Vec::new(), Vec::new(), Vec::new());
    for round in 0..rounds + 10 {
        let t = Instant::now();
        assert!(
            std::process::Command::new("/bin/true")
                .env_clear()
                .stdin(std::process::Stdio::null())
                .status()
                .unwrap()
                .success()
        );
        let std_time = t.elapsed();
        let t = Instant::now();
        assert!(session.command("/bin/true").stdin(Stdio::null()).status().unwrap().success());
        let session_time = t.elapsed();
        let t = Instant::now();
        {
            let fresh = pool.get().expect("pool checkout");
            assert!(fresh.command("/bin/true").stdin(Stdio::null()).status().unwrap().success());
        }
        let pool_time = t.elapsed();
        // Its replacement is started in the background: let that finish before the next
        // round, whose rows would otherwise share the machine with it.
        wait_full(&pool);
        if round >= 10 {
            std_times.push(std_time);
            in_session.push(session_time);
            pooled.push(pool_time);
        }
    }
    let std50 = percentile(&mut std_times, 0.5);
    let line = |name: &str, times: &mut Vec<Duration>| {
        let (p50, p99) = (percentile(times, 0.5), percentile(times, 0.99));
        format!(
            "{name}\t{:.4}\t{:.4}\tvs std p50 {:.4}: {:.2}x",
            ms(p50),
            ms(p99),
            ms(std50),
            p50.as_secs_f64() / std50.as_secs_f64()
        )
    };
    (line("session command (C)", &mut in_session), line("pool checkout + command + return (C)", &mut pooled))
}

/// A session's start, reset and stop, interleaved (each session started, reset once, run a
/// command in, stopped); returns the two table lines: a new session in place of a used one
/// (the used one's stop and the new one's start, summed per round), and a reset, with
/// reset/(stop + start).
fn renewals(case: &Case, rounds: usize) -> (String, String) {
    let (mut anew, mut resets) = (Vec::with_capacity(rounds), Vec::with_capacity(rounds));
    for round in 0..rounds + 3 {
        let t = Instant::now();
        let mut session = case.sandbox.start().expect("start session");
        let start = t.elapsed();
        let t = Instant::now();
        session.reset().expect("reset session");
        let reset = t.elapsed();
        assert!(session.command("/bin/true").stdin(Stdio::null()).status().unwrap().success());
        let t = Instant::now();
        session.stop().expect("stop session");
        let stop = t.elapsed();
        if round >= 3 {
            anew.push(stop + start);
            resets.push(reset);
        }
    }
    let (n50, n99) = (percentile(&mut anew, 0.5), percentile(&mut anew, 0.99));
    let (r50, r99) = (percentile(&mut resets, 0.5), percentile(&mut resets, 0.99));
    (
        format!("session stop + start ({})\t{:.4}\t{:.4}\t", case.name, ms(n50), ms(n99)),
        format!(
            "session reset ({})\t{:.4}\t{:.4}\tvs stop + start p50 {:.4}: {:.2}x",
            case.name,
            ms(r50),
            ms(r99),
            ms(n50),
            r50.as_secs_f64() / n50.as_secs_f64()
        ),
    )
}

/// Counts of what a spawning process must give back: descriptors, threads, zombie children,
/// mount table lines, stockade cgroup directories.
fn leak_counts() -> [usize; 5] {
    let count = |dir: &str| std::fs::read_dir(dir).map_or(0, |d| d.count());
    let me = std::process::id();
    let zombies = std::fs::read_dir("/proc")
        .map(|d| {
            d.flatten()
                .filter_map(|e| std::fs::read_to_string(e.path().join("stat")).ok())
                .filter(|stat| {
                    let rest = stat.rsplit_once(')').map_or("", |(_, r)| r);
                    let fields: Vec<&str> = rest.split_whitespace().collect();
                    fields.first() == Some(&"Z") && fields.get(1) == Some(&me.to_string().as_str())
                })
                .count()
        })
        .unwrap_or(0);
    let mounts = std::fs::read_to_string("/proc/self/mountinfo").map_or(0, |m| m.lines().count());
    let groups = std::process::Command::new("sh")
        .args(["-c", "find /sys/fs/cgroup -maxdepth 6 -type d -name 'sb-*' 2>/dev/null | wc -l"])
        .output()
        .ok()
        .and_then(|o| String::from_utf8(o.stdout).ok()?.trim().parse().ok())
        .unwrap_or(0);
    [count("/proc/self/fd"), count("/proc/self/task"), zombies, mounts, groups]
}

/// 16 threads spawning in `sandbox` for `length`, then 16 threads running bwrap with the same
/// isolation; sandboxes per second of each and the leak counts.
fn throughput(sandbox: &Sandbox, length: Duration) -> String {
    let before = leak_counts();
    let run = |work: &(dyn Fn() + Sync)| -> f64 {
        let done = std::sync::atomic::AtomicUsize::new(0);
        let start = Instant::now();
        std::thread::scope(|s| {
            for _ in 0..16 {
                s.spawn(|| {
                    while start.elapsed() < length {
                        work();
                        done.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                    }
                });
            }
        });
        done.into_inner() as f64 / start.elapsed().as_secs_f64()
    };
    let ours =
        run(&|| assert!(sandbox.command("/bin/true").stdin(Stdio::null()).status().unwrap().success()));
    let after = leak_counts();
    let mut bwrap = std::process::Command::new("bwrap");
    bwrap.args(["--unshare-user", "--unshare-pid", "--unshare-ipc", "--unshare-uts", "--tmpfs", "/"]);
    bwrap.args(["--ro-bind", "/usr", "/usr"]);
    for p in ["/bin", "/sbin", "/lib", "/lib32", "/lib64", "/libx32"] {
        match std::fs::read_link(p) {
            Ok(to) => drop(bwrap.arg("--symlink").arg(to).arg(p)),
            Err(_) if std::path::Path::new(p).is_dir() => drop(bwrap.args(["--ro-bind", p, p])),
            Err(_) => {}
        }
    }
    bwrap.args(["--proc", "/proc", "--dev", "/dev", "--remount-ro", "/", "/bin/true"]);
    let args: Vec<std::ffi::OsString> = bwrap.get_args().map(|a| a.to_owned()).collect();
    let theirs = run(&|| {
        let status = std::process::Command::new("bwrap").args(&args).status().expect("run bwrap");
        assert!(status.success());
    });
    format!(
        "throughput C, 16 threads, {}s\tstockade {ours:.0}/s\tbwrap {theirs:.0}/s\tratio {:.2}\t\
         fds/threads/zombies/mounts/cgroups before {before:?} after {after:?}",
        length.as_secs(),
        ours / theirs
    )
}
