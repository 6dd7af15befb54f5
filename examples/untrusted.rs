//! The recommended configuration for code you do not trust, line by line: what
//! `Sandbox::untrusted()` sets, written out with the builder, then run on a command.
//!
//! ```text
//! cargo run --example untrusted -- [CMD [ARGS...]]     (default: a look around inside)
//! ```
//!
//! Works as root and as any user; without cgroup delegation (most unprivileged users) the
//! memory and process limits cannot be enforced, so this example then runs without them and
//! prints what was left out.

use std::time::Duration;

use stockade::{
    Compat, IdMap, Landlock, Mount, Namespaces, Root, Sandbox, Scope, SyscallFilter, UNTRUSTED_IDS,
};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args: Vec<String> = std::env::args().skip(1).collect();
    if args.is_empty() {
        let look = "id; hostname; echo pid $$; ls /; grep -E '^(Cap|Seccomp|NoNewPrivs)' /proc/self/status; \
                    unshare -U true 2>&1; mount -t tmpfs x /tmp 2>&1; touch /usr/x 2>&1; true";
        args = vec!["/bin/sh".into(), "-c".into(), look.into()];
    }
    let mut b = Sandbox::builder();
    // Every namespace: its own processes (an init as pid 1), mounts, hostname, IPC objects,
    // cgroups, clocks, and a network holding only `lo`.
    b.namespaces(Namespaces::all()).hostname("sandbox");
    // Ids of its own: as root, the payload's ids 0-65535 are host ids no user or file has, so
    // its root is nobody on the host. Unprivileged, the default map (the caller's own uid as
    // root inside) is the only one there is.
    if nix::unistd::geteuid().is_root() {
        b.uid_map([IdMap::new(0, UNTRUSTED_IDS, 65536)]).gid_map([IdMap::new(0, UNTRUSTED_IDS, 65536)]);
    }
    // An empty root, read-only once built, with the host's system directories read-only and a
    // private /tmp of 64 MiB; a fresh /proc (sensitive paths masked) and a minimal /dev come
    // with the root.
    b.root(Root::tmpfs()).mounts(Mount::host_system()).mount(Mount::tmpfs("/tmp").size(64 << 20));
    // No capabilities in any of the five sets, and no_new_privs (the default): setuid
    // programs and file capabilities gain nothing.
    b.capabilities([]);
    // The default syscall filter (what every sandbox gets unless told otherwise): Docker's
    // allow-list without io_uring; no new user namespaces, mounts, keyrings, bpf,
    // perf_event_open, userfaultfd, kexec, modules, TIOCSTI; i386 and x32 calls refused.
    b.syscall_filter(SyscallFilter::default_profile());
    // Landlock mirroring the mounts (read-only where they are), no signals and no abstract
    // unix sockets beyond the sandbox. Best effort: a kernel without it says so below.
    b.landlock(
        Landlock::from_mounts().scope(Scope::AbstractUnixSocket | Scope::Signal).compat(Compat::BestEffort),
    );
    // Limits on the whole tree: memory (OOM-killed beyond), processes (fork bombs stop),
    // wall-clock time.
    b.memory_limit(512 << 20).pids_limit(128).timeout(Duration::from_secs(60));
    // Without cgroup delegation (most unprivileged users) the limits cannot be had: say so and
    // run without them, the way `resource_compat(Compat::BestEffort)` does.
    let spawn = |sandbox: stockade::Sandbox| sandbox.command(&args[0]).args(&args[1..]).spawn();
    let mut child = match b.build().and_then(spawn) {
        Ok(child) => child,
        Err(e @ (stockade::Error::Unsupported { .. } | stockade::Error::Cgroup { .. })) => {
            eprintln!("untrusted: {e}; running without the cgroup limits");
            spawn(b.resource_compat(Compat::BestEffort).build()?)?
        }
        Err(e) => return Err(e.into()),
    };
    if !child.unenforced().is_empty() {
        eprintln!("untrusted: not enforced on this host: {:?}", child.unenforced());
    }
    let status = child.wait()?;
    eprintln!("untrusted: {status}");
    std::process::exit(status.code().unwrap_or(1));
}
