//! The runtime spec's hooks, which the runtime runs itself: `prestart` and `createRuntime`
//! once the container's namespaces exist (in this order, before anything is set up inside),
//! `startContainer` at `start` inside the container (its namespaces, root, cgroups and the
//! process's credentials; see `lifecycle`), `poststart` after `start`, `poststop` after
//! `delete`. Each gets the container's state on its stdin, the environment and arguments its
//! entry gives (`args[0]` is its argv\[0\]), and is killed at its `timeout`. `createContainer`,
//! whose path resolves on the host but which runs in the container's mount namespace before
//! its root switch (a moment the runtime does not have: the container's setup runs in the
//! library's child), is refused naming the field.

use std::io::{Read, Seek, Write};
use std::os::fd::{AsFd, FromRawFd, OwnedFd};
use std::os::unix::fs::OpenOptionsExt;
use std::os::unix::process::CommandExt;
use std::process::{Command, Stdio};
use std::time::Duration;

use oci_spec::runtime::{Hook, Hooks, Spec};

use crate::Failure;

/// The hooks of one spec, by when they run.
#[derive(Clone, Debug, Default)]
pub struct Phases {
    /// `prestart` then `createRuntime`: the runtime's namespace, the container's namespaces
    /// created.
    pub created: Vec<(String, Hook)>,
    /// `startContainer`: in the container's namespaces and root, at `start`, before its
    /// process runs.
    pub start_container: Vec<(String, Hook)>,
    pub poststart: Vec<(String, Hook)>,
    pub poststop: Vec<(String, Hook)>,
}

/// Takes the hooks out of `spec` (the library's mapping refuses hooks: they are the runtime's
/// to run); the ones run inside the container stay, to be refused by name. A hook's path must
/// be absolute, as the runtime spec says.
pub fn take(spec: &mut Spec) -> Result<Phases, Failure> {
    let Some(hooks) = spec.hooks().clone() else { return Ok(Phases::default()) };
    let named = |field: &str, list: &Option<Vec<Hook>>| -> Result<Vec<(String, Hook)>, Failure> {
        let mut out = Vec::new();
        for (i, hook) in list.iter().flatten().enumerate() {
            let name = format!("hooks.{field}[{i}]");
            if !hook.path().is_absolute() {
                return Err(Failure::Usage(format!(
                    "{name}.path {:?}: a hook's path must be absolute",
                    hook.path()
                )));
            }
            out.push((name, hook.clone()));
        }
        Ok(out)
    };
    #[allow(deprecated)]
    let mut created = named("prestart", hooks.prestart())?;
    created.extend(named("createRuntime", hooks.create_runtime())?);
    let start_container = named("startContainer", hooks.start_container())?;
    if let Some((field, hook)) = start_container.first() {
        // They run through `Detached::join`, which needs the container's own pid namespace
        // (new or joined) and no user namespace (whose mount lock the init is outside of).
        use oci_spec::runtime::LinuxNamespaceType as Kind;
        let namespaces = spec.linux().as_ref().and_then(|l| l.namespaces().clone()).unwrap_or_default();
        let has = |kind: Kind| namespaces.iter().any(|n| n.typ() == kind);
        if !has(Kind::Pid) || has(Kind::User) {
            return Err(Failure::Hook {
                field: field.clone(),
                path: hook.path().clone(),
                reason:
                    "startContainer hooks run in containers with a pid namespace and no user namespace only"
                        .into(),
            });
        }
    }
    let phases = Phases {
        created,
        start_container,
        poststart: named("poststart", hooks.poststart())?,
        poststop: named("poststop", hooks.poststop())?,
    };
    let mut refused = Hooks::default();
    refused.set_create_container(hooks.create_container().clone());
    let any_refused = refused.create_container().as_ref().is_some_and(|l| !l.is_empty());
    spec.set_hooks(any_refused.then_some(refused));
    Ok(phases)
}

/// Runs `hooks` in order with `state` on their stdin; the first that fails (exit status, a
/// signal, its timeout) is the error, naming it.
pub fn run(hooks: &[(String, Hook)], state: &serde_json::Value) -> Result<(), Failure> {
    for (field, hook) in hooks {
        run_one(field, hook, state)?;
    }
    Ok(())
}

/// Runs `hooks` as `run` does, but a failure is only a warning (poststart, poststop: the
/// runtime spec has the lifecycle go on); returns the warnings.
pub fn run_all(hooks: &[(String, Hook)], state: &serde_json::Value) -> Vec<String> {
    hooks
        .iter()
        .filter_map(|(field, hook)| run_one(field, hook, state).err().map(|e| e.to_string()))
        .collect()
}

fn run_one(field: &str, hook: &Hook, state: &serde_json::Value) -> Result<(), Failure> {
    let fail = |reason: String| Failure::Hook { field: field.to_owned(), path: hook.path().clone(), reason };
    let mut command = Command::new(hook.path());
    if let Some(args) = hook.args() {
        if let Some(first) = args.first() {
            command.arg0(first);
        }
        command.args(args.iter().skip(1));
    }
    command.env_clear();
    for entry in hook.env().iter().flatten() {
        let (key, value) = entry.split_once('=').unwrap_or((entry, ""));
        command.env(key, value);
    }
    // Its output goes to an unnamed file, read once it has exited: a process it leaves behind
    // holding a pipe could keep a reader waiting for ever.
    let output = output_file().map_err(|e| fail(format!("cannot make a file for its output: {e}")))?;
    let copy = || output.try_clone().map_err(|e| fail(format!("cannot make a file for its output: {e}")));
    // A process group of its own: at its timeout the hook goes with whatever it started.
    command.stdin(Stdio::piped()).stdout(copy()?).stderr(copy()?).process_group(0);
    let mut child = command.spawn().map_err(|e| fail(format!("cannot run it: {e}")))?;
    let pid = child.id() as libc::pid_t;
    // SAFETY: pidfd_open takes a pid and flags; the child is not reaped yet, so the pid is its.
    let raw = unsafe { libc::syscall(libc::SYS_pidfd_open, pid, 0) };
    if raw < 0 {
        let e = std::io::Error::last_os_error();
        let _ = child.kill();
        let _ = child.wait();
        return Err(fail(format!("pidfd_open: {e}")));
    }
    // SAFETY: a descriptor pidfd_open just returned, owned by nobody else.
    let pidfd = unsafe { OwnedFd::from_raw_fd(raw as i32) };
    // The state from a thread of its own: a hook that does not read it cannot block this one
    // (the write ends with EPIPE when the hook is gone).
    if let Some(mut stdin) = child.stdin.take() {
        let text = state.to_string();
        std::thread::spawn(move || {
            let _ = stdin.write_all(text.as_bytes());
        });
    }
    // Readable once the hook has exited; it stays unreaped (its pid and group number cannot be
    // reused) until `wait` below.
    let timeout = hook.timeout().map(|t| Duration::from_secs(t.max(1) as u64));
    let poll_timeout = match timeout {
        Some(t) => nix::poll::PollTimeout::try_from(t).unwrap_or(nix::poll::PollTimeout::MAX),
        None => nix::poll::PollTimeout::NONE,
    };
    let exited = loop {
        let mut fds = [nix::poll::PollFd::new(pidfd.as_fd(), nix::poll::PollFlags::POLLIN)];
        match nix::poll::poll(&mut fds, poll_timeout) {
            Err(nix::errno::Errno::EINTR) => continue,
            Ok(n) => break n > 0,
            Err(e) => return Err(fail(format!("poll: {e}"))),
        }
    };
    if !exited {
        // SAFETY: kill with integer arguments: the group the hook leads (its number is held by
        // the unreaped hook).
        unsafe { libc::kill(-pid, libc::SIGKILL) };
        let _ = child.kill();
        let _ = child.wait();
        return Err(fail(format!("timed out after {} s", timeout.unwrap_or_default().as_secs())));
    }
    let status = child.wait().map_err(|e| fail(format!("wait: {e}")))?;
    if !status.success() {
        return Err(fail(format!("{status}: {}", read_start(output))));
    }
    Ok(())
}

/// An unnamed file for a hook's output.
pub fn output_file() -> std::io::Result<std::fs::File> {
    std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .custom_flags(libc::O_TMPFILE)
        .mode(0o600)
        .open(std::env::temp_dir())
}

/// The first 4 KiB of a hook's output, for its error.
pub fn read_start(mut output: std::fs::File) -> String {
    let mut text = String::new();
    let _ = output.seek(std::io::SeekFrom::Start(0));
    let _ = output.take(4096).read_to_string(&mut text);
    text.trim().to_owned()
}
