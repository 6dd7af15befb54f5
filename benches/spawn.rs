//! Spawn → exit of `/bin/true`, side by side in one run (see ../shared/docs/benchmarks.md):
//! `std::process::Command` as the baseline, stockade without namespaces (the engine's own
//! overhead), and stockade with every namespace (the full isolation cost, including the kernel's
//! namespace teardown on exit). Compare ratios, not absolute times.
//!
//! Run: `cargo bench --bench spawn` (as root; unprivileged runs add a user namespace to the
//! namespaced cases, which is what an unprivileged caller pays).

use std::time::Duration;

use criterion::{Criterion, criterion_group, criterion_main};
use stockade::{Landlock, Mount, Namespaces, Root, Sandbox, SandboxBuilder, Scope, Stdio};

fn builder(ns: Namespaces) -> SandboxBuilder {
    let ns = if nix::unistd::geteuid().is_root() || ns.is_empty() { ns } else { ns | Namespaces::USER };
    let mut b = Sandbox::builder();
    b.namespaces(ns);
    b
}

fn spawn(c: &mut Criterion) {
    let mut group = c.benchmark_group("spawn_true");
    group.sample_size(60).measurement_time(Duration::from_secs(8)).warm_up_time(Duration::from_secs(2));

    group.bench_function("std_command", |b| {
        b.iter(|| {
            let status = std::process::Command::new("/bin/true")
                .env_clear()
                .stdin(std::process::Stdio::null())
                .status()
                .unwrap();
            assert!(status.success());
        })
    });

    let ns5 = Namespaces::USER | Namespaces::PID | Namespaces::MOUNT | Namespaces::UTS | Namespaces::IPC;
    // A tmpfs root holding read-only binds of the host's /usr, /bin, /lib*, a fresh /proc and
    // a minimal /dev, in every namespace but net: the bubblewrap-style sandbox.
    let mut tmpfs_root = builder(Namespaces::all() - Namespaces::NET);
    tmpfs_root.root(Root::tmpfs()).mounts(Mount::host_system());
    // The same without the default syscall filter, which every other case installs: the
    // filter's cost is the ratio of the two.
    let mut unfiltered = tmpfs_root.clone();
    unfiltered.no_syscall_filter();
    // Without the cgroup namespace (whose per-hierarchy group migrations dominate and vary),
    // with and without the filter: the filter's cost on a spawn of about 2 ms.
    let mut lean = builder(Namespaces::all() - Namespaces::NET - Namespaces::CGROUP);
    lean.root(Root::tmpfs()).mounts(Mount::host_system());
    let mut lean_unfiltered = lean.clone();
    lean_unfiltered.no_syscall_filter();
    // The same with Landlock rules mirroring its mounts, as the untrusted preset has.
    let mut landlocked = tmpfs_root.clone();
    landlocked.landlock(Landlock::from_mounts().scope(Scope::AbstractUnixSocket | Scope::Signal));
    // The same plus a cgroup with memory and pids limits (created, joined, read and removed
    // per spawn).
    let mut limited = builder(ns5);
    limited.memory_limit(256 << 20).pids_limit(64);
    let cases = [
        ("stockade_no_namespaces", builder(Namespaces::empty())),
        ("stockade_user_pid_mount_uts_ipc", builder(ns5)),
        ("stockade_user_pid_mount_uts_ipc_memory_pids", limited),
        ("stockade_all_namespaces", builder(Namespaces::all())),
        // Without the cgroup namespace, and so without a group in every hierarchy.
        ("stockade_all_namespaces_but_cgroup", builder(Namespaces::all() - Namespaces::CGROUP)),
        ("stockade_tmpfs_root_all_but_net", tmpfs_root),
        ("stockade_tmpfs_root_all_but_net_no_filter", unfiltered),
        ("stockade_tmpfs_root_all_but_net_landlock", landlocked),
        ("stockade_tmpfs_root_all_but_net_cgroup", lean),
        ("stockade_tmpfs_root_all_but_net_cgroup_no_filter", lean_unfiltered),
    ];
    for (name, builder) in cases {
        let sandbox = builder.build().expect("build sandbox");
        group.bench_function(name, |b| {
            b.iter(|| {
                let status = sandbox.command("/bin/true").stdin(Stdio::null()).status().unwrap();
                assert!(status.success());
            })
        });
    }
    group.finish();

    // Building a sandbox compiles its filter (once; every spawn reuses it).
    let mut group = c.benchmark_group("build");
    group.bench_function("untrusted_preset", |b| b.iter(|| Sandbox::untrusted().build().expect("build")));
    group.finish();
}

criterion_group!(benches, spawn);
criterion_main!(benches);
