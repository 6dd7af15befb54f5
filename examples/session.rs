//! A warm session, as a judge or a code runner uses one: start a sandbox once, run several
//! commands in it (they share its filesystem), each with its own limits and its own usage.
//!
//! `cargo run --example session -- 'echo hi > /work/a' 'cat /work/a' 'head -c 50000000 /dev/zero | tail -c1'`
//!
//! Every argument is a shell script run as one command; each prints its exit status, time and
//! peak memory. The sandbox: every namespace (as root without a user namespace, so it also runs
//! where user namespaces are off), a tmpfs root with the host's system directories, a writable
//! /work, and per command 256 MiB, 64 processes and 10 s.

use std::process::ExitCode;
use std::time::Duration;

use stockade::{Compat, Mount, Namespaces, Root, Sandbox, Stdio};

fn main() -> ExitCode {
    let scripts: Vec<String> = std::env::args().skip(1).collect();
    if scripts.is_empty() {
        eprintln!("usage: session SCRIPT [SCRIPT...]");
        return ExitCode::from(2);
    }
    let root = nix::unistd::geteuid().is_root();
    let namespaces = if root { Namespaces::all() - Namespaces::USER } else { Namespaces::all() };
    let mut builder = Sandbox::builder();
    builder
        .namespaces(namespaces)
        .root(Root::tmpfs())
        .mounts(Mount::host_system())
        .mount(Mount::tmpfs("/work"))
        .memory_limit(256 << 20)
        .pids_limit(64)
        .timeout(Duration::from_secs(10));
    if !root {
        // Without cgroup delegation the memory and process limits cannot be had: say so below.
        builder.resource_compat(Compat::BestEffort);
    }
    let session = match builder.build().and_then(|sandbox| sandbox.start()) {
        Ok(session) => session,
        Err(e) => {
            eprintln!("session: {e}");
            return ExitCode::FAILURE;
        }
    };
    for script in &scripts {
        let child = session
            .command("/bin/sh")
            .args(["-c", script])
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn();
        let unenforced = child.as_ref().map(|c| c.unenforced().to_vec()).unwrap_or_default();
        match child.and_then(|c| c.wait_with_output()) {
            Ok(out) => {
                print!("{}", String::from_utf8_lossy(&out.stdout));
                eprint!("{}", String::from_utf8_lossy(&out.stderr));
                let usage = out.status.usage();
                eprintln!(
                    "[{script}] {} in {:?}, peak memory {:?} bytes{}",
                    out.status,
                    usage.wall_time,
                    usage.peak_memory,
                    if unenforced.is_empty() {
                        String::new()
                    } else {
                        format!(", not enforced: {unenforced:?}")
                    }
                );
            }
            Err(e) => {
                eprintln!("[{script}] {e}");
                return ExitCode::FAILURE;
            }
        }
    }
    match session.stop() {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("session: {e}");
            ExitCode::FAILURE
        }
    }
}
