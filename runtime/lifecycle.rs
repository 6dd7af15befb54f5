//! The container lifecycle of the runtime spec: create, start, kill, delete (and run, which is
//! create then start), with the queries on it: list, ps, features, spec.

use std::io::IoSlice;
use std::os::fd::{AsRawFd, OwnedFd, RawFd};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::SystemTime;

use nix::sys::signal::Signal;
use stockade::oci::Bundle;
use stockade::{StartGate, Stdio};

use crate::state::{Saved, Status, Store, process_start, rfc3339, write_atomically};
use crate::{CreateArgs, ExecArgs, Failure};

/// Where a container's groups go when its spec names no `linux.cgroupsPath`.
const DEFAULT_CGROUP_PARENT: &str = "/stockade-runtime";

/// Where the container's groups go: `linux.cgroupsPath` when absolute, else under
/// [`DEFAULT_CGROUP_PARENT`].
fn cgroup_parent(path: Option<&Path>, id: &str) -> PathBuf {
    match path {
        Some(path) if path.is_absolute() => path.to_owned(),
        Some(path) => Path::new(DEFAULT_CGROUP_PARENT).join(path),
        None => Path::new(DEFAULT_CGROUP_PARENT).join(id),
    }
}

/// `create`: the container set up and waiting at its start gate, its state saved, its init's
/// pid written; the container outlives this process.
pub fn create(store: &Store, args: &CreateArgs) -> Result<(), Failure> {
    let lock = store.make(&args.id)?;
    let made = create_locked(store, args);
    if made.is_err() {
        // Nothing of a container that failed to be created stays: its process and cgroups are
        // gone with the library's error (or the Child dropped below), its state here, and the
        // directory made for its groups.
        let _ = store.remove(&args.id);
        if let Ok(bundle) = Bundle::open(&args.bundle) {
            let path = bundle.spec().linux().as_ref().and_then(|l| l.cgroups_path().clone());
            remove_cgroup_parent(&cgroup_parent(path.as_deref(), &args.id));
            // The runtime spec goes on to delete, and its poststop hooks, when a create with
            // hooks fails (what a prestart hook set up is undone there).
            if let Ok(phases) = crate::hooks::take(&mut bundle.spec().clone())
                && !phases.created.is_empty()
            {
                let state = hook_state(&args.id, 0, "stopped", bundle.dir(), &Default::default());
                for warning in crate::hooks::run_all(&phases.poststop, &state) {
                    crate::warn(&warning);
                }
            }
        }
    }
    drop(lock);
    made.map(drop)
}

fn create_locked(store: &Store, args: &CreateArgs) -> Result<Saved, Failure> {
    let mut bundle = Bundle::open(&args.bundle)?;
    let mut spec = bundle.spec().clone();
    // The container's groups are made in a directory of its own (per hierarchy), which
    // `delete` removes with them.
    let mut linux = spec.linux().clone().unwrap_or_default();
    let parent = cgroup_parent(linux.cgroups_path().as_deref(), &args.id);
    linux.set_cgroups_path(Some(parent.clone()));
    spec.set_linux(Some(linux));
    // Kept as created: exec, poststart and poststop read this, not the bundle's file again.
    store.save_spec(&args.id, &spec)?;
    let hooks = crate::hooks::take(&mut spec)?;
    let terminal = spec.process().as_ref().and_then(|p| p.terminal()).unwrap_or(false);
    if terminal && args.console_socket.is_none() {
        return Err(Failure::Usage(
            "process.terminal is set: the terminal's master goes to --console-socket, which is missing"
                .into(),
        ));
    }
    let dir = bundle.dir().to_owned();
    let rootfs = spec.root().as_ref().map(|r| dir.join(r.path())).unwrap_or_default();
    let annotations: std::collections::HashMap<String, String> =
        spec.annotations().clone().unwrap_or_default().into_iter().collect();
    bundle = Bundle::from_spec(dir.clone(), spec);
    bundle.outlive_parent();
    let mut command = bundle.command()?;
    pass_descriptors(&mut command, terminal, args.preserve_fds)?;
    if !hooks.created.is_empty() {
        // prestart and createRuntime: the container's namespaces exist, nothing is set up in
        // them yet; the state says "creating".
        let (list, id, bundle_dir, notes) =
            (hooks.created.clone(), args.id.clone(), dir.clone(), annotations.clone());
        command.on_created(move |pid| {
            let state = hook_state(&id, pid, "creating", &bundle_dir, &notes);
            crate::hooks::run(&list, &state).map_err(std::io::Error::other)
        });
    }

    let gate = StartGate::bind(store.gate(&args.id))?;
    let mut child = command.spawn_created(gate)?;
    // From here a failure drops `child`, which kills the container.
    if let Some(socket) = &args.console_socket {
        let master = child.terminal.take().map(OwnedFd::from).ok_or_else(|| {
            Failure::State("the container's terminal did not come back from its setup".into())
        })?;
        send_console(socket, &master)?;
    }
    for what in child.unenforced() {
        // Weaker than the config asks (a best-effort limit, a cgroup namespace showing more
        // than the container's groups): said in the log.
        crate::warn(&format!("container {:?}: not enforced on this host: {what}", args.id));
    }
    let pid = child.id();
    let start_time = process_start(pid)
        .map(|(start, _)| start)
        .ok_or_else(|| Failure::State(format!("the container's init (pid {pid}) is gone already")))?;
    let saved = Saved {
        id: args.id.clone(),
        pid,
        start_time,
        bundle: dir,
        rootfs,
        created: rfc3339(SystemTime::now()),
        status: "created".into(),
        cgroup_parents: child.cgroup_dirs().iter().filter_map(|g| g.parent().map(Path::to_owned)).collect(),
        cgroups: child.cgroup_dirs(),
        annotations,
    };
    // Recorded, then let go: until `detach` it ends with this process (and `child`, dropped
    // on an error here, kills it and removes its groups).
    store.save(&saved)?;
    if let Some(path) = &args.pid_file {
        write_atomically(path, pid.to_string().as_bytes())?;
    }
    child.detach();
    Ok(saved)
}

/// Removes the directories made for the container's groups under `parent` (in every
/// hierarchy) that are empty, deepest first: a `create` that failed, or died, after making
/// them. Only empty groups go (`rmdir` refuses the others): nothing running is touched.
fn remove_cgroup_parent(parent: &Path) {
    // Into the library's sandbox groups (`sb-...`) and what is below them only.
    fn remove_empty(dir: &Path, depth: usize) {
        if depth < 8 {
            for entry in std::fs::read_dir(dir).into_iter().flatten().flatten() {
                let ours = depth > 0 || entry.file_name().to_string_lossy().starts_with("sb-");
                if ours && entry.file_type().is_ok_and(|t| t.is_dir()) {
                    remove_empty(&entry.path(), depth + 1);
                }
            }
        }
        let _ = std::fs::remove_dir(dir);
    }
    let relative = parent.strip_prefix("/").unwrap_or(parent);
    let mut mounts = vec![PathBuf::from("/sys/fs/cgroup")];
    mounts.extend(std::fs::read_dir("/sys/fs/cgroup").into_iter().flatten().flatten().map(|e| e.path()));
    for mount in mounts {
        let dir = mount.join(relative);
        if dir != mount && dir.is_dir() {
            remove_empty(&dir, 0);
        }
    }
}

/// pidfd_send_signal.
fn send_signal(pidfd: &OwnedFd, signal: i32) -> i64 {
    // SAFETY: pidfd_send_signal with a live pidfd, a signal number, no siginfo and no flags.
    unsafe {
        libc::syscall(libc::SYS_pidfd_send_signal, pidfd.as_raw_fd(), signal, std::ptr::null::<u8>(), 0)
    }
}

/// The state a hook reads on its stdin.
fn hook_state(
    id: &str,
    pid: u32,
    status: &str,
    bundle: &Path,
    annotations: &std::collections::HashMap<String, String>,
) -> serde_json::Value {
    serde_json::json!({
        "ociVersion": "1.2.0",
        "id": id,
        "status": status,
        "pid": pid,
        "bundle": bundle,
        "annotations": annotations,
    })
}

/// The hooks of the container's bundle (read again: the state keeps only the bundle's path).
fn bundle_hooks(store: &Store, saved: &Saved) -> crate::hooks::Phases {
    match store.spec(&saved.id) {
        Ok(mut spec) => crate::hooks::take(&mut spec).unwrap_or_default(),
        Err(_) => crate::hooks::Phases::default(),
    }
}

/// The container's process gets this process's stdio (unless it has a terminal) and, with
/// `--preserve-fds N`, its descriptors 3 to 3 + N - 1, at the same numbers and as they are.
fn pass_descriptors(command: &mut stockade::Command, terminal: bool, preserve: u32) -> Result<(), Failure> {
    if !terminal {
        for fd in 0..3 {
            command_stdio(command, fd)?;
        }
    }
    for n in 0..preserve {
        let fd = 3 + n as RawFd;
        command.fd_unrestricted(fd, dup(fd)?);
    }
    Ok(())
}

/// The container's stdio `fd` is this process's, passed as it is (a shim's pipes or fifos).
/// A closed descriptor is /dev/null there.
fn command_stdio(command: &mut stockade::Command, fd: RawFd) -> Result<(), Failure> {
    let stdio = match dup(fd) {
        Ok(copy) => Stdio::unrestricted(copy),
        Err(Failure::Io { source, .. }) if source.raw_os_error() == Some(libc::EBADF) => Stdio::null(),
        Err(e) => return Err(e),
    };
    match fd {
        0 => command.stdin(stdio),
        1 => command.stdout(stdio),
        _ => command.stderr(stdio),
    };
    Ok(())
}

fn dup(fd: RawFd) -> Result<OwnedFd, Failure> {
    // SAFETY: fcntl(F_DUPFD_CLOEXEC) on a number (EBADF when nothing is open there); a
    // non-negative result is a new descriptor owned here alone.
    let copy = unsafe { libc::fcntl(fd, libc::F_DUPFD_CLOEXEC, 0) };
    if copy < 0 {
        let e = std::io::Error::last_os_error();
        return Err(Failure::io(&format!("pass descriptor {fd} to the container"), Path::new("-"), e));
    }
    // SAFETY: as above.
    Ok(unsafe { <OwnedFd as std::os::fd::FromRawFd>::from_raw_fd(copy) })
}

/// Sends the terminal's master over the console socket (SCM_RIGHTS), as runc does.
fn send_console(socket: &Path, master: &OwnedFd) -> Result<(), Failure> {
    let stream =
        UnixStream::connect(socket).map_err(|e| Failure::io("connect to the console socket", socket, e))?;
    let name = b"/dev/ptmx";
    let fds = [master.as_raw_fd()];
    let control = [nix::sys::socket::ControlMessage::ScmRights(&fds)];
    nix::sys::socket::sendmsg::<()>(
        stream.as_raw_fd(),
        &[IoSlice::new(name)],
        &control,
        nix::sys::socket::MsgFlags::empty(),
        None,
    )
    .map_err(|e| Failure::io("send the terminal to the console socket", socket, e.into()))?;
    Ok(())
}

/// `start`: opens the created container's gate; it runs its process.
pub fn start(store: &Store, id: &str) -> Result<(), Failure> {
    let lock = store.lock(id)?;
    let mut saved = store.load(id)?;
    match saved.status() {
        Status::Created => {}
        Status::Running | Status::Paused => {
            return Err(Failure::State(format!("cannot start container {id:?}: it is running already")));
        }
        Status::Stopped => {
            return Err(Failure::State(format!("cannot start container {id:?}: it has stopped")));
        }
    }
    let hooks = bundle_hooks(store, &saved);
    if !hooks.start_container.is_empty() {
        let state = hook_state(id, saved.pid, "created", &saved.bundle, &saved.annotations);
        for (field, hook) in &hooks.start_container {
            if let Err(e) = run_inside(store, &saved, field, hook, &state) {
                // The runtime spec: an error, and the container stopped.
                let _ = signal_init(&saved, Signal::SIGKILL);
                saved.detached().kill_all();
                return Err(e);
            }
        }
    }
    let started = StartGate::start(store.gate(id));
    let _ = std::fs::remove_file(store.gate(id));
    saved.status = "running".into();
    store.save(&saved)?;
    // Poststart hooks run unlocked: one may act on the container (even delete it).
    drop(lock);
    if started.is_ok() {
        let hooks = bundle_hooks(store, &saved);
        let state = hook_state(id, saved.pid, "running", &saved.bundle, &saved.annotations);
        for warning in crate::hooks::run_all(&hooks.poststart, &state) {
            crate::warn(&warning);
        }
    }
    started.map_err(|e| match e {
        // The gate does not know the program's name; the bundle does.
        stockade::Error::Exec { program, source } if program.as_os_str().is_empty() => {
            let program = store
                .spec(id)
                .ok()
                .and_then(|s| s.process().as_ref()?.args().as_ref()?.first().cloned())
                .unwrap_or_default();
            Failure::Sandbox(stockade::Error::Exec { program: program.into(), source })
        }
        other => Failure::Sandbox(other),
    })
}

/// Runs a `startContainer` hook inside the created container: its namespaces, root and
/// cgroups, with its process's credentials, capabilities and filter (as runc runs it, in the
/// container's init just before the process), the path resolved there, exactly the entry's
/// environment, the state on stdin, killed at its timeout.
fn run_inside(
    store: &Store,
    saved: &Saved,
    field: &str,
    hook: &oci_spec::runtime::Hook,
    state: &serde_json::Value,
) -> Result<(), Failure> {
    let fail = |reason: String| Failure::Hook { field: field.to_owned(), path: hook.path().clone(), reason };
    let mut spec = store.spec(&saved.id)?;
    let mut process = spec.process().clone().unwrap_or_default();
    let mut args = vec![hook.path().to_string_lossy().into_owned()];
    args.extend(hook.args().iter().flatten().skip(1).cloned());
    process.set_args(Some(args));
    process.set_env(None);
    process.set_cwd("/".into());
    process.set_terminal(Some(false));
    spec.set_process(Some(process));
    spec.set_hooks(None);
    let mut command = Bundle::from_spec(saved.bundle.clone(), spec).command()?;
    if let Some(first) = hook.args().as_ref().and_then(|a| a.first()) {
        command.arg0(first);
    }
    command.env_clear().env_remove("PATH").env_remove("HOME");
    for entry in hook.env().iter().flatten() {
        let (key, value) = entry.split_once('=').unwrap_or((entry, ""));
        command.env(key, value);
    }
    // Its output to an unnamed file, read if it fails (as the runtime's own hooks).
    let output =
        crate::hooks::output_file().map_err(|e| fail(format!("cannot make a file for its output: {e}")))?;
    let copy = || output.try_clone().map_err(|e| fail(format!("cannot make a file for its output: {e}")));
    command.stdin(Stdio::piped()).stdout(copy()?).stderr(copy()?);
    saved.detached().join(&mut command)?;
    let mut child = command.spawn().map_err(|e| fail(format!("cannot run it in the container: {e}")))?;
    if let Some(mut stdin) = child.stdin.take() {
        let text = state.to_string();
        std::thread::spawn(move || {
            let _ = std::io::Write::write_all(&mut stdin, text.as_bytes());
        });
    }
    let timeout = hook.timeout().map(|t| std::time::Duration::from_secs(t.max(1) as u64));
    let status = match timeout {
        Some(t) => child.wait_timeout(t),
        None => child.wait(),
    }
    .map_err(|e| fail(format!("wait: {e}")))?;
    if status.timed_out() {
        return Err(fail(format!("timed out after {} s", timeout.unwrap_or_default().as_secs())));
    }
    if !status.success() {
        return Err(fail(format!("{status}: {}", crate::hooks::read_start(output))));
    }
    Ok(())
}

/// `run`: create, start, and unless detached wait for the container and delete it, exiting
/// with its status.
pub fn run(store: &Store, args: &CreateArgs, detach: bool, keep: bool) -> Result<ExitCode, Failure> {
    create(store, args)?;
    if let Err(e) = start(store, &args.id) {
        let _ = delete(store, &args.id, true);
        return Err(e);
    }
    if detach {
        return Ok(ExitCode::SUCCESS);
    }
    let saved = store.load(&args.id)?;
    // The init is this process's child: wait for it, passing on the signals a terminal sends.
    let pid = nix::unistd::Pid::from_raw(saved.pid as i32);
    forward_signals(pid);
    let code = loop {
        match nix::sys::wait::waitpid(pid, None) {
            Ok(nix::sys::wait::WaitStatus::Exited(_, code)) => break code,
            Ok(nix::sys::wait::WaitStatus::Signaled(_, signal, _)) => break 128 + signal as i32,
            Ok(_) | Err(nix::errno::Errno::EINTR) => continue,
            Err(e) => return Err(Failure::io("wait for the container", &store.dir(&args.id), e.into())),
        }
    };
    if !keep {
        delete(store, &args.id, true)?;
    }
    Ok(ExitCode::from(code as u8))
}

/// Forwards SIGINT, SIGTERM, SIGHUP and SIGQUIT sent to this process to the container's init
/// (which passes them on to its process), from a thread of its own.
fn forward_signals(init: nix::unistd::Pid) {
    use nix::sys::signal::SigSet;
    let mut set = SigSet::empty();
    for signal in [Signal::SIGINT, Signal::SIGTERM, Signal::SIGHUP, Signal::SIGQUIT] {
        set.add(signal);
    }
    if set.thread_block().is_err() {
        return;
    }
    std::thread::spawn(move || {
        while let Ok(signal) = set.wait() {
            let _ = nix::sys::signal::kill(init, signal);
        }
    });
}

/// `kill`: a signal to the container's init, or with `all` to every process in its cgroups.
pub fn kill(store: &Store, id: &str, signal: &str, all: bool) -> Result<(), Failure> {
    let signal = parse_signal(signal)?;
    let saved = store.load(id)?;
    if saved.status() == Status::Stopped && !all {
        return Err(Failure::State(format!("cannot kill container {id:?}: it is not running")));
    }
    if all && signal == Signal::SIGKILL {
        // Through the cgroup, at once: no pid read from it can be reused before its signal.
        saved.detached().kill_all();
        return Ok(());
    }
    if all {
        for pid in saved.detached().processes() {
            let _ = nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid as i32), signal);
        }
        return Ok(());
    }
    signal_init(&saved, signal)?;
    if signal == Signal::SIGKILL && shares_pid_namespace(store, id) {
        // In a pid namespace of its own the init's end takes everything with it; in a joined
        // one (a pod's) the init is not its pid 1, and the container's other processes would
        // live on: they go too, as runc's container (whose init is the process) would.
        saved.detached().kill_all();
    }
    Ok(())
}

/// Whether the container joined an existing pid namespace (by path) instead of having its own.
fn shares_pid_namespace(store: &Store, id: &str) -> bool {
    let Ok(spec) = store.spec(id) else { return false };
    let namespaces = spec.linux().as_ref().and_then(|l| l.namespaces().clone()).unwrap_or_default();
    namespaces.iter().any(|n| n.typ() == oci_spec::runtime::LinuxNamespaceType::Pid && n.path().is_some())
}

/// Signals the container's init through a pidfd opened after checking it is the same process.
fn signal_init(saved: &Saved, signal: Signal) -> Result<(), Failure> {
    let pidfd = open_init(saved)?;
    let Some(pidfd) = pidfd else {
        return Err(Failure::State(format!("cannot signal container {:?}: it is not running", saved.id)));
    };
    let sent = send_signal(&pidfd, signal as i32);
    if sent < 0 {
        let e = std::io::Error::last_os_error();
        if e.raw_os_error() != Some(libc::ESRCH) {
            return Err(Failure::io("signal the container's init", &saved.bundle, e));
        }
    }
    Ok(())
}

/// A pidfd of the container's init, if it is still the process that was created.
fn open_init(saved: &Saved) -> Result<Option<OwnedFd>, Failure> {
    // SAFETY: pidfd_open takes a pid and flags.
    let fd = unsafe { libc::syscall(libc::SYS_pidfd_open, saved.pid as libc::pid_t, 0) };
    if fd < 0 {
        return Ok(None);
    }
    // SAFETY: a descriptor pidfd_open just returned, owned by nobody else.
    let fd = unsafe { <OwnedFd as std::os::fd::FromRawFd>::from_raw_fd(fd as RawFd) };
    // Opened first, checked after: a pid reused before the open fails the check.
    match process_start(saved.pid) {
        Some((start, true)) if start == saved.start_time => Ok(Some(fd)),
        _ => Ok(None),
    }
}

fn parse_signal(text: &str) -> Result<Signal, Failure> {
    let bad = || Failure::Usage(format!("unknown signal {text:?}"));
    if let Ok(n) = text.parse::<i32>() {
        return Signal::try_from(n).map_err(|_| bad());
    }
    let upper = text.to_ascii_uppercase();
    let name = if upper.starts_with("SIG") { upper } else { format!("SIG{upper}") };
    name.parse::<Signal>().map_err(|_| bad())
}

/// `delete`: a stopped or created container's cgroups and state go (a running one only with
/// `force`, which kills it first).
pub fn delete(store: &Store, id: &str, force: bool) -> Result<(), Failure> {
    let lock = match store.lock(id) {
        Ok(lock) => lock,
        Err(Failure::NotFound(_)) if force => return Ok(()),
        Err(e) => return Err(e),
    };
    let saved = match store.load(id) {
        Ok(saved) => saved,
        // A directory without state: a create that died half-way. Nothing runs for it (its
        // container ended when the create did); empty groups it made may be left.
        Err(Failure::NotFound(_)) => {
            if let Some(path) = store.spec(id).ok().and_then(|s| s.linux().as_ref()?.cgroups_path().clone()) {
                remove_cgroup_parent(&path);
            }
            return store.remove(id);
        }
        Err(e) => return Err(e),
    };
    match saved.status() {
        status @ (Status::Running | Status::Paused) if !force => {
            return Err(Failure::State(format!(
                "cannot delete container {id:?}: it is {} (stop it first, or --force)",
                status.as_str()
            )));
        }
        status @ (Status::Running | Status::Paused | Status::Created) => {
            if let Some(pidfd) = open_init(&saved)? {
                send_signal(&pidfd, libc::SIGKILL);
                if status == Status::Paused {
                    // A frozen process dies only once thawed.
                    let _ = saved.detached().thaw();
                }
                // Readable once the init has exited (reaped or not: its parent reaps it).
                let mut fds =
                    [nix::poll::PollFd::new(std::os::fd::AsFd::as_fd(&pidfd), nix::poll::PollFlags::POLLIN)];
                while let Err(nix::errno::Errno::EINTR) =
                    nix::poll::poll(&mut fds, nix::poll::PollTimeout::NONE)
                {}
            }
        }
        Status::Stopped => {}
    }
    let detached = saved.detached();
    detached.remove_cgroups();
    for parent in &saved.cgroup_parents {
        let _ = std::fs::remove_dir(parent);
    }
    let left: Vec<_> = saved.cgroups.iter().filter(|g| g.exists()).collect();
    if !left.is_empty() {
        return Err(Failure::State(format!(
            "cannot delete container {id:?}: its cgroups {left:?} stay busy"
        )));
    }
    let hooks = bundle_hooks(store, &saved);
    store.remove(id)?;
    drop(lock);
    let state = hook_state(id, saved.pid, "stopped", &saved.bundle, &saved.annotations);
    for warning in crate::hooks::run_all(&hooks.poststop, &state) {
        crate::warn(&warning);
    }
    Ok(())
}

/// `list`: every container, as a table or JSON.
pub fn list(store: &Store, format: &str, quiet: bool) -> Result<(), Failure> {
    let states: Vec<Saved> = store.ids()?.iter().filter_map(|id| store.load(id).ok()).collect();
    if quiet {
        for s in &states {
            println!("{}", s.id);
        }
        return Ok(());
    }
    match format {
        "json" => {
            let all: Vec<_> = states.iter().map(Saved::spec_state).collect();
            println!("{}", serde_json::Value::Array(all));
        }
        "table" => {
            println!("{:<20} {:<10} {:<10} {:<40} {:<32} OWNER", "ID", "PID", "STATUS", "BUNDLE", "CREATED");
            for s in &states {
                let status = s.status();
                let pid = if status == Status::Stopped { 0 } else { s.pid };
                println!(
                    "{:<20} {:<10} {:<10} {:<40} {:<32} root",
                    s.id,
                    pid,
                    status.as_str(),
                    s.bundle.display(),
                    s.created
                );
            }
        }
        other => return Err(Failure::Usage(format!("unknown format {other:?}: table or json"))),
    }
    Ok(())
}

/// `ps`: the container's processes (pids as the host sees them).
pub fn ps(store: &Store, id: &str, format: &str, ps_args: &[String]) -> Result<(), Failure> {
    let saved = store.load(id)?;
    let detached = saved.detached();
    let mut pids = detached.processes();
    if pids.is_empty() && saved.status() != Status::Stopped {
        pids.push(saved.pid);
    }
    match format {
        "json" => println!("{}", serde_json::json!(pids)),
        "table" => {
            let args: Vec<&str> =
                if ps_args.is_empty() { vec!["-ef"] } else { ps_args.iter().map(String::as_str).collect() };
            let out = std::process::Command::new("ps")
                .args(&args)
                .output()
                .map_err(|e| Failure::io("run ps", Path::new("ps"), e))?;
            let text = String::from_utf8_lossy(&out.stdout);
            let mut lines = text.lines();
            let header = lines.next().unwrap_or_default();
            let column = header.split_whitespace().position(|h| h == "PID").ok_or_else(|| {
                Failure::Usage("ps's output has no PID column (pass options that print one)".into())
            })?;
            println!("{header}");
            for line in lines {
                let pid = line.split_whitespace().nth(column).and_then(|p| p.parse::<u32>().ok());
                if pid.is_some_and(|p| pids.contains(&p)) {
                    println!("{line}");
                }
            }
        }
        other => return Err(Failure::Usage(format!("unknown format {other:?}: table or json"))),
    }
    Ok(())
}

/// `features`: what this runtime carries out (runtime-spec `features.md`).
pub fn features() -> serde_json::Value {
    let seccomp_actions = [
        "SCMP_ACT_ALLOW",
        "SCMP_ACT_ERRNO",
        "SCMP_ACT_KILL",
        "SCMP_ACT_KILL_PROCESS",
        "SCMP_ACT_KILL_THREAD",
        "SCMP_ACT_LOG",
        "SCMP_ACT_TRAP",
    ];
    let operators = [
        "SCMP_CMP_EQ",
        "SCMP_CMP_GE",
        "SCMP_CMP_GT",
        "SCMP_CMP_LE",
        "SCMP_CMP_LT",
        "SCMP_CMP_MASKED_EQ",
        "SCMP_CMP_NE",
    ];
    let capabilities: Vec<String> = caps::all().iter().map(|c| c.to_string()).collect();
    serde_json::json!({
        "ociVersionMin": "1.0.0",
        "ociVersionMax": "1.2.0",
        "hooks": ["prestart", "createRuntime", "poststart", "poststop"],
        "mountOptions": [
            "bind", "rbind", "ro", "rw", "nosuid", "suid", "noexec", "exec", "nodev",
            "private", "rprivate", "newinstance", "ptmxmode", "gid", "mode", "size", "nr_inodes",
            "relatime", "norelatime", "strictatime", "nostrictatime", "noatime", "atime"
        ],
        "linux": {
            "namespaces": ["cgroup", "ipc", "mount", "network", "pid", "time", "user", "uts"],
            "capabilities": capabilities,
            "cgroup": { "v1": true, "v2": true, "systemd": false, "systemdUser": false, "rdma": false },
            "seccomp": {
                "enabled": true,
                "actions": seccomp_actions,
                "operators": operators,
                "archs": [std::env::consts::ARCH],
                "knownFlags": [],
                "supportedFlags": []
            },
            "apparmor": { "enabled": false },
            "selinux": { "enabled": false },
            "intelRdt": { "enabled": false },
            "mountExtensions": { "idmap": { "enabled": false } }
        },
        "annotations": { "io.github.stockade.runtime": env!("CARGO_PKG_VERSION") }
    })
}

/// `spec`: a default config.json in `bundle` (which must not have one).
pub fn spec(bundle: &Path, rootless: bool) -> Result<(), Failure> {
    let path: PathBuf = bundle.join("config.json");
    if path.exists() {
        return Err(Failure::State(format!("{} exists already", path.display())));
    }
    let spec = if rootless {
        oci_spec::runtime::Spec::rootless(nix::unistd::geteuid().as_raw(), nix::unistd::getegid().as_raw())
    } else {
        oci_spec::runtime::Spec::default()
    };
    let text = serde_json::to_vec_pretty(&spec).map_err(|e| Failure::State(e.to_string()))?;
    write_atomically(&path, &text)
}

/// `exec`: a process joining a running container (its namespaces, root and cgroups), with the
/// credentials, capabilities and filter its process object and the container's config give.
pub fn exec(store: &Store, args: &ExecArgs) -> Result<ExitCode, Failure> {
    let (id, command_line) =
        args.rest.split_first().ok_or_else(|| Failure::Usage("exec needs a container id".into()))?;
    let saved = store.load(id)?;
    if matches!(saved.status(), Status::Stopped | Status::Paused) {
        return Err(Failure::State(format!("cannot exec in container {id:?}: it is not running")));
    }
    // The spec as it was created (the bundle's config.json may have changed since).
    let mut spec = store.spec(id)?;
    let mut process = match &args.process {
        Some(path) => {
            let text = std::fs::read_to_string(path).map_err(|e| Failure::io("read the process", path, e))?;
            serde_json::from_str::<oci_spec::runtime::Process>(&text)
                .map_err(|e| Failure::Usage(format!("{}: not a runtime-spec process: {e}", path.display())))?
        }
        None => {
            if command_line.is_empty() {
                return Err(Failure::Usage("exec needs --process or a command line".into()));
            }
            let mut p = spec.process().clone().unwrap_or_default();
            p.set_args(Some(command_line.to_vec()));
            p.set_terminal(Some(args.tty));
            p
        }
    };
    if let Some(cwd) = &args.cwd {
        process.set_cwd(cwd.clone());
    }
    if !args.env.is_empty() {
        let mut env = process.env().clone().unwrap_or_default();
        env.extend(args.env.iter().cloned());
        process.set_env(Some(env));
    }
    if let Some(user) = &args.user {
        let (uid, gid) = user.split_once(':').unwrap_or((user, "0"));
        let parse = |v: &str| {
            v.parse::<u32>().map_err(|_| Failure::Usage(format!("--user {user:?}: numeric UID[:GID] only")))
        };
        let mut u = process.user().clone();
        u.set_uid(parse(uid)?);
        u.set_gid(parse(gid)?);
        process.set_user(u);
    }
    if !args.additional_gids.is_empty() {
        let mut u = process.user().clone();
        u.set_additional_gids(Some(args.additional_gids.clone()));
        process.set_user(u);
    }
    if args.no_new_privs {
        process.set_no_new_privileges(Some(true));
    }
    let terminal = process.terminal().unwrap_or(false);
    if terminal && args.console_socket.is_none() {
        return Err(Failure::Usage(
            "the process has a terminal: its master goes to --console-socket, which is missing".into(),
        ));
    }
    spec.set_process(Some(process));
    // The container's hooks ran at its creation: none for its exec'd processes.
    spec.set_hooks(None);
    let mut bundle = Bundle::from_spec(saved.bundle.clone(), spec);
    if args.detach {
        bundle.outlive_parent();
    }
    let mut command = bundle.command()?;
    pass_descriptors(&mut command, terminal, args.preserve_fds)?;
    // The init is still the container's (its start time), and the pidfd `join` opens pins it.
    if open_init(&saved)?.is_none() {
        return Err(Failure::State(format!("cannot exec in container {id:?}: it is not running")));
    }
    saved.detached().join(&mut command)?;
    let mut child = command.spawn().map_err(|e| match e {
        stockade::Error::Exec { program, source } => {
            Failure::Sandbox(stockade::Error::Exec { program, source })
        }
        other => Failure::Sandbox(other),
    })?;
    if let Some(socket) = &args.console_socket
        && let Some(master) = child.terminal.take().map(OwnedFd::from)
    {
        send_console(socket, &master)?;
    }
    if let Some(path) = &args.pid_file {
        write_atomically(path, child.id().to_string().as_bytes())?;
    }
    if args.detach {
        child.detach();
        return Ok(ExitCode::SUCCESS);
    }
    let pid = nix::unistd::Pid::from_raw(child.id() as i32);
    forward_signals(pid);
    let status = child.wait().map_err(|e| Failure::io("wait for the process", &saved.bundle, e))?;
    let code = status.code().unwrap_or_else(|| 128 + status.signal().unwrap_or(0));
    Ok(ExitCode::from(code as u8))
}

/// `pause` (`freeze`) a running container, or `resume` a paused one.
pub fn pause(store: &Store, id: &str, freeze: bool) -> Result<(), Failure> {
    let _lock = store.lock(id)?;
    let saved = store.load(id)?;
    match (saved.status(), freeze) {
        (Status::Running, true) => saved.detached().freeze()?,
        (Status::Paused, false) => saved.detached().thaw()?,
        (status, true) => {
            return Err(Failure::State(format!("cannot pause container {id:?}: it is {}", status.as_str())));
        }
        (status, false) => {
            return Err(Failure::State(format!("cannot resume container {id:?}: it is {}", status.as_str())));
        }
    }
    Ok(())
}
