//! `process`: the credentials the sandbox gives its payload, and the command itself.

use std::path::Path;
use std::str::FromStr;

use oci_spec::runtime::{Capabilities, PosixRlimitType, Process};

use super::BundleError;
use crate::{Capability, CapabilitySets, Command, Namespaces, Rlimit, Sandbox, SandboxBuilder};

/// `user`, `capabilities`, `rlimits`, `noNewPrivileges`, and the fields refused for now.
pub(super) fn credentials(p: &Process, ns: Namespaces, b: &mut SandboxBuilder) -> Result<(), BundleError> {
    let refused = [
        ("process.apparmorProfile", p.apparmor_profile().as_deref().is_some_and(|s| !s.is_empty())),
        ("process.selinuxLabel", p.selinux_label().as_deref().is_some_and(|s| !s.is_empty())),
        ("process.ioPriority", p.io_priority().is_some()),
        ("process.scheduler", p.scheduler().is_some()),
        ("process.execCPUAffinity", p.exec_cpu_affinity().is_some()),
        ("process.commandLine", p.command_line().is_some()),
        ("process.user.username", p.user().username().is_some()),
    ];
    if let Some((field, _)) = refused.iter().find(|(_, present)| *present) {
        return Err(BundleError::unsupported(*field, "present", "not implemented"));
    }

    if let Some(adj) = p.oom_score_adj() {
        b.oom_score_adj(adj);
    }
    let user = p.user();
    b.user(user.uid(), user.gid());
    // Exactly these (none when absent), not the caller's. In a user namespace stockade drops
    // the caller's groups itself where setgroups is allowed; where it is not (a rootless
    // caller's own single map) no list can be set, and the caller's groups stay, unmapped,
    // as with runc.
    let groups = user.additional_gids().clone().unwrap_or_default();
    if !groups.is_empty() || !ns.contains(Namespaces::USER) {
        b.groups(groups);
    }
    b.umask(user.umask().unwrap_or(0o022));

    let caps = p.capabilities().as_ref();
    let set = |field: &str, set: Option<&Capabilities>| -> Result<Vec<Capability>, BundleError> {
        let mut out = Vec::new();
        for cap in set.into_iter().flatten() {
            // The spec's name ("CAP_CHOWN") is what serde writes.
            let name = serde_json::to_value(cap)
                .ok()
                .and_then(|v| v.as_str().map(str::to_owned))
                .unwrap_or_default();
            out.push(Capability::from_str(&name).map_err(|_| {
                BundleError::unsupported(
                    format!("process.capabilities.{field}"),
                    &name,
                    "unknown to this build",
                )
            })?);
        }
        out.sort_by_key(|c| c.index());
        Ok(out)
    };
    let permitted = set("permitted", caps.and_then(|c| c.permitted().as_ref()))?;
    let inheritable = set("inheritable", caps.and_then(|c| c.inheritable().as_ref()))?;
    // The kernel keeps a capability ambient only while it is permitted and inheritable; runc
    // leaves out the others (with a warning), and `runc spec` writes ambient capabilities
    // without inheritable ones. Leaving them out grants less, never more.
    let mut ambient = set("ambient", caps.and_then(|c| c.ambient().as_ref()))?;
    ambient.retain(|c| permitted.contains(c) && inheritable.contains(c));
    b.capability_sets(CapabilitySets {
        bounding: set("bounding", caps.and_then(|c| c.bounding().as_ref()))?,
        effective: set("effective", caps.and_then(|c| c.effective().as_ref()))?,
        permitted,
        inheritable,
        ambient,
    });

    for (i, r) in p.rlimits().iter().flatten().enumerate() {
        if r.soft() > r.hard() {
            return Err(BundleError::invalid(
                format!("process.rlimits[{i}]"),
                (r.soft(), r.hard()),
                "the soft limit exceeds the hard one",
            ));
        }
        b.rlimit(rlimit(r.typ()), r.soft(), r.hard());
    }
    if p.no_new_privileges() != Some(true) {
        b.allow_new_privileges();
    }
    Ok(())
}

/// The user's home directory in the container's `/etc/passwd` (read inside its root, with
/// `b`'s root and mounts), for `HOME` when the spec's `env` has none, as runc sets it.
pub(super) fn home(p: &Process, b: &SandboxBuilder) -> Result<Option<std::path::PathBuf>, BundleError> {
    if p.env().iter().flatten().any(|e| e.starts_with("HOME=")) {
        return Ok(None);
    }
    // The container's files are read through openat2 only.
    crate::probe::require(crate::probe::Check::Openat2)?;
    let user = p.user();
    Ok(b.resolve_user(&format!("{}:{}", user.uid(), user.gid()))?.home)
}

/// The command of `process` in `sandbox`: `args`, exactly `env`, `cwd` (created when missing),
/// and a terminal of `consoleSize` when `terminal` is set.
pub(super) fn command(p: &Process, sandbox: &Sandbox, home: Option<&Path>) -> Result<Command, BundleError> {
    let args = p.args().as_deref().unwrap_or_default();
    let program = args
        .first()
        .filter(|a| !a.is_empty())
        .ok_or_else(|| BundleError::invalid("process.args", args, "needs at least the program"))?;
    let mut command = sandbox.command(program);
    command.args(&args[1..]).env_clear();
    let (mut has_path, mut has_home) = (false, false);
    for (i, entry) in p.env().iter().flatten().enumerate() {
        let (key, value) = entry
            .split_once('=')
            .filter(|(k, _)| !k.is_empty())
            .ok_or_else(|| BundleError::invalid(format!("process.env[{i}]"), entry, "not KEY=VALUE"))?;
        has_path |= key == "PATH";
        has_home |= key == "HOME";
        command.env(key, value);
    }
    if !has_home {
        command.env("HOME", home.unwrap_or(Path::new("/")));
    }
    if !has_path {
        // Exactly the spec's environment (and HOME, above, as runc sets it): no PATH of
        // stockade's.
        command.env_remove("PATH");
    }
    let cwd = p.cwd();
    if !cwd.is_absolute() {
        return Err(BundleError::invalid("process.cwd", cwd, "must be an absolute path"));
    }
    command.current_dir_creating(cwd);
    if p.terminal() == Some(true) {
        let size = p.console_size();
        let dim = |v: Option<u64>, default: u16| v.map_or(Ok(default), u16::try_from);
        let rows = dim(size.map(|s| s.height()), 24);
        let cols = dim(size.map(|s| s.width()), 80);
        let (Ok(rows), Ok(cols)) = (rows, cols) else {
            return Err(BundleError::invalid("process.consoleSize", size, "rows and columns up to 65535"));
        };
        command.terminal(rows, cols);
    }
    Ok(command)
}

/// The rlimit named by `typ`.
fn rlimit(typ: PosixRlimitType) -> Rlimit {
    match typ {
        PosixRlimitType::RlimitCpu => Rlimit::Cpu,
        PosixRlimitType::RlimitFsize => Rlimit::FileSize,
        PosixRlimitType::RlimitData => Rlimit::Data,
        PosixRlimitType::RlimitStack => Rlimit::Stack,
        PosixRlimitType::RlimitCore => Rlimit::Core,
        PosixRlimitType::RlimitRss => Rlimit::Rss,
        PosixRlimitType::RlimitNproc => Rlimit::Processes,
        PosixRlimitType::RlimitNofile => Rlimit::OpenFiles,
        PosixRlimitType::RlimitMemlock => Rlimit::LockedMemory,
        PosixRlimitType::RlimitAs => Rlimit::AddressSpace,
        PosixRlimitType::RlimitLocks => Rlimit::FileLocks,
        PosixRlimitType::RlimitSigpending => Rlimit::PendingSignals,
        PosixRlimitType::RlimitMsgqueue => Rlimit::MessageQueue,
        PosixRlimitType::RlimitNice => Rlimit::Nice,
        PosixRlimitType::RlimitRtprio => Rlimit::RealtimePriority,
        PosixRlimitType::RlimitRttime => Rlimit::RealtimeTime,
    }
}
