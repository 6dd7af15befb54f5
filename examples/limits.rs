//! Runs three unruly payloads under limits and prints how each ended and what it used: a fork
//! bomb (held by the pids limit, ended by the wall-clock limit), a memory hog (OOM-killed by the
//! memory limit) and a CPU spinner (ended by the CPU-time limit).
//!
//! `cargo run --example limits` (as root, or with a delegated cgroup subtree; otherwise it runs
//! best effort and says which limits it could not enforce).

use std::time::Duration;

use stockade::{Compat, Namespaces, Rlimit, Sandbox};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let root = nix::unistd::geteuid().is_root();
    // As root, no user namespace is needed (cgroups do not care); otherwise add one.
    let ns = if root { Namespaces::all() - Namespaces::USER } else { Namespaces::all() };
    let payloads = [
        ("fork bomb", "bomb() { bomb | bomb & }; bomb; sleep 100"),
        ("memory hog", "exec tail /dev/zero"),
        ("cpu spinner", "while :; do :; done"),
    ];
    for (name, script) in payloads {
        let sandbox = Sandbox::builder()
            .namespaces(ns)
            .pids_limit(64)
            .memory_limit(64 << 20)
            .cpu_time_limit(Duration::from_secs(1))
            .timeout(Duration::from_secs(3))
            .resource_compat(Compat::BestEffort)
            // A backstop when cgroups are not available: processes per user (per user
            // namespace on current kernels).
            .rlimit(Rlimit::Processes, 128, 128)
            .build()?;
        let mut child =
            sandbox.command("/bin/sh").args(["-c", script]).stderr(stockade::Stdio::null()).spawn()?;
        let status = child.wait()?;
        let u = status.usage();
        println!("{name}: {status}");
        println!(
            "  wall {:.2?}, cpu {:.2?} user + {:.2?} system, peak memory {} KiB, peak processes {}, OOM-killed: {}",
            u.wall_time,
            u.user_time,
            u.system_time,
            u.peak_memory.map_or("?".into(), |m| (m / 1024).to_string()),
            u.peak_pids.map_or("?".into(), |p| p.to_string()),
            u.oom_killed
        );
        if !child.unenforced().is_empty() {
            println!("  not enforced on this host: {:?}", child.unenforced());
        }
    }
    Ok(())
}
