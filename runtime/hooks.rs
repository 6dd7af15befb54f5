//! The runtime spec's hooks, which the runtime runs itself: `prestart` and `createRuntime`
//! once the container's namespaces exist (in this order, before anything is set up inside),
//! `poststart` after `start`, `poststop` after `delete`. Each gets the container's state on its
//! stdin, the environment and arguments its entry gives (`args[0]` is its argv\[0\]), and is
//! killed at its `timeout`. `createContainer` and `startContainer`, which run inside the
//! container, are refused naming the field.

use std::io::Write;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::process::CommandExt;
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use oci_spec::runtime::{Hook, Hooks, Spec};

use crate::Failure;

/// The hooks of one spec, by when they run.
#[derive(Clone, Debug, Default)]
pub struct Phases {
    /// `prestart` then `createRuntime`: the runtime's namespace, the container's namespaces
    /// created.
    pub created: Vec<(String, Hook)>,
    pub poststart: Vec<(String, Hook)>,
    pub poststop: Vec<(String, Hook)>,
}

/// Takes the hooks out of `spec` (the library's mapping refuses hooks: they are the runtime's
/// to run); the ones run inside the container stay, to be refused by name.
pub fn take(spec: &mut Spec) -> Phases {
    let Some(hooks) = spec.hooks().clone() else { return Phases::default() };
    let named = |field: &str, list: &Option<Vec<Hook>>| -> Vec<(String, Hook)> {
        list.iter().flatten().enumerate().map(|(i, h)| (format!("hooks.{field}[{i}]"), h.clone())).collect()
    };
    #[allow(deprecated)]
    let mut created = named("prestart", hooks.prestart());
    created.extend(named("createRuntime", hooks.create_runtime()));
    let phases = Phases {
        created,
        poststart: named("poststart", hooks.poststart()),
        poststop: named("poststop", hooks.poststop()),
    };
    let mut inside = Hooks::default();
    inside.set_create_container(hooks.create_container().clone());
    inside.set_start_container(hooks.start_container().clone());
    let any_inside = inside.create_container().as_ref().is_some_and(|l| !l.is_empty())
        || inside.start_container().as_ref().is_some_and(|l| !l.is_empty());
    spec.set_hooks(any_inside.then_some(inside));
    phases
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
    // A process group of its own: at its timeout the hook goes with whatever it started.
    command.stdin(Stdio::piped()).stdout(Stdio::piped()).stderr(Stdio::piped()).process_group(0);
    let mut child = command.spawn().map_err(|e| fail(format!("cannot run it: {e}")))?;
    let pid = child.id();
    // A pidfd, so the kill at the timeout can never reach a recycled pid.
    // SAFETY: pidfd_open takes a pid and flags.
    let raw = unsafe { libc::syscall(libc::SYS_pidfd_open, pid as libc::pid_t, 0) };
    // SAFETY: a descriptor pidfd_open just returned (checked non-negative), owned by nobody else.
    let pidfd = (raw >= 0).then(|| unsafe { OwnedFd::from_raw_fd(raw as i32) });
    if let Some(mut stdin) = child.stdin.take() {
        // A hook that does not read its stdin may close it: not an error.
        let _ = stdin.write_all(state.to_string().as_bytes());
    }
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(
            child.wait_with_output().map(|o| (o.status, String::from_utf8_lossy(&o.stderr).into_owned())),
        );
    });
    let timeout = hook.timeout().map(|t| Duration::from_secs(t.max(1) as u64));
    let outcome = match timeout {
        Some(t) => rx.recv_timeout(t).ok(),
        None => rx.recv().ok(),
    };
    let Some(outcome) = outcome else {
        if let Some(fd) = &pidfd {
            // Its group first (it leads it; the pidfd pins the number), then the hook itself.
            // SAFETY: kill and pidfd_send_signal with integer arguments and a live pidfd.
            unsafe {
                libc::kill(-(pid as libc::pid_t), libc::SIGKILL);
                libc::syscall(libc::SYS_pidfd_send_signal, fd.as_raw_fd(), libc::SIGKILL, 0usize, 0);
            }
        }
        // Not waiting for its output: a process it moved out of its group may hold the pipes.
        return Err(fail(format!("timed out after {} s", timeout.unwrap_or_default().as_secs())));
    };
    let (status, stderr) = outcome.map_err(|e| fail(format!("wait: {e}")))?;
    if !status.success() {
        return Err(fail(format!("{status}: {}", stderr.trim())));
    }
    Ok(())
}
