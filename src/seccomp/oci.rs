//! OCI and Docker seccomp profiles in: `linux.seccomp` of a bundle's `config.json`, or a Docker
//! profile file (the same object, whose rules may carry `includes` / `excludes` by
//! capability, architecture and kernel version, evaluated here as Docker does).

use oci_spec::runtime::{LinuxSeccomp, LinuxSeccompAction, LinuxSeccompOperator, LinuxSyscall};
use serde_json::Value;

use super::{Action, ArgCmp, Base, Cmp, SyscallFilter, SyscallRule};
use crate::{Capability, Error};

impl SyscallFilter {
    /// The filter an OCI runtime would install for `seccomp`: its default action for every
    /// call it does not name, its rules on top. Names unknown on this machine (the profile
    /// lists every architecture's) are skipped; only this machine's architecture is filtered,
    /// other ABIs are killed.
    ///
    /// # Errors
    /// An action stockade cannot carry out ([`Error::Unsupported`]: `SCMP_ACT_NOTIFY`,
    /// `SCMP_ACT_TRACE`), an argument index past 5, or a masked comparison without its
    /// second value ([`Error::InvalidValue`]).
    pub fn from_oci(seccomp: &LinuxSeccomp) -> Result<SyscallFilter, Error> {
        gated(seccomp, &[])
    }

    /// Like [`from_oci`](Self::from_oci), from JSON text: an OCI `linux.seccomp` object or a
    /// Docker seccomp profile file. A Docker rule's `includes` and `excludes` are evaluated
    /// against this machine's architecture and kernel now and against the payload's
    /// capabilities at [`build`](crate::SandboxBuilder::build), as Docker evaluates them
    /// against the container's.
    ///
    /// # Errors
    /// Malformed JSON or an unknown action or operator name ([`Error::InvalidValue`]), or any
    /// error of [`from_oci`](Self::from_oci).
    pub fn from_oci_json(json: &str) -> Result<SyscallFilter, Error> {
        let bad = |e: serde_json::Error| Error::invalid("seccomp profile", "JSON", e.to_string());
        let value: Value = serde_json::from_str(json).map_err(bad)?;
        let entries = value.get("syscalls").and_then(Value::as_array).cloned().unwrap_or_default();
        let seccomp: LinuxSeccomp = serde_json::from_value(value).map_err(bad)?;
        gated(&seccomp, &entries)
    }
}

/// The filter for `seccomp` whose `i`th rule carries the Docker gates (`includes`, `excludes`)
/// of `entries[i]`, if any.
fn gated(seccomp: &LinuxSeccomp, entries: &[Value]) -> Result<SyscallFilter, Error> {
    let default = action(seccomp.default_action(), seccomp.default_errno_ret())?;
    let mut filter = SyscallFilter { base: Base::Empty(default), rules: Vec::new(), skip_unknown: true };
    for (i, syscall) in seccomp.syscalls().iter().flatten().enumerate() {
        let gate = |key: &str| entries.get(i).and_then(|e| e.get(key)).cloned().unwrap_or(Value::Null);
        let (includes, excludes) = (gate("includes"), gate("excludes"));
        if !applies_here(&includes) || excludes_here(&excludes) {
            continue;
        }
        filter.rules.extend(rules(syscall, caps(&includes)?, caps(&excludes)?)?);
    }
    Ok(filter)
}

/// The rules of one profile entry. Comparisons of distinct arguments must all hold (one
/// rule); several comparisons of the same argument are alternatives (one rule each), as runc
/// reads them.
fn rules(
    syscall: &LinuxSyscall,
    needs: Vec<Capability>,
    unless: Vec<Capability>,
) -> Result<Vec<SyscallRule>, Error> {
    let action = action(syscall.action(), syscall.errno_ret())?;
    let args = syscall
        .args()
        .iter()
        .flatten()
        .map(|a| {
            let index = u8::try_from(a.index()).ok().filter(|i| *i < 6).ok_or_else(|| {
                Error::invalid("seccomp argument index", a.index(), "system calls have arguments 0 to 5")
            })?;
            let cmp = match a.op() {
                LinuxSeccompOperator::ScmpCmpNe => Cmp::Ne(a.value()),
                LinuxSeccompOperator::ScmpCmpLt => Cmp::Lt(a.value()),
                LinuxSeccompOperator::ScmpCmpLe => Cmp::Le(a.value()),
                LinuxSeccompOperator::ScmpCmpEq => Cmp::Eq(a.value()),
                LinuxSeccompOperator::ScmpCmpGe => Cmp::Ge(a.value()),
                LinuxSeccompOperator::ScmpCmpGt => Cmp::Gt(a.value()),
                // The runtime spec's Go types omit a zero valueTwo (`omitempty`): absent is 0,
                // which is how Docker's profile says "these clone flags all clear".
                LinuxSeccompOperator::ScmpCmpMaskedEq => {
                    Cmp::MaskedEq { mask: a.value(), value: a.value_two().unwrap_or(0) }
                }
            };
            Ok(ArgCmp::new(index, cmp))
        })
        .collect::<Result<Vec<_>, Error>>()?;
    let mut indices: Vec<u8> = args.iter().map(|a| a.index).collect();
    indices.sort_unstable();
    let repeated = indices.windows(2).any(|w| w[0] == w[1]);
    let groups: Vec<Vec<ArgCmp>> =
        if repeated { args.into_iter().map(|a| vec![a]).collect() } else { vec![args] };
    Ok(syscall
        .names()
        .iter()
        .flat_map(|name| {
            groups.iter().map(|args| SyscallRule {
                name: name.clone(),
                action,
                // Arguments the kernel reads as 32-bit are compared on their low half: a
                // payload can set the upper half of the register to anything (libseccomp
                // compares all 64 bits, which a 0x1_0000_0028 "family" slips past).
                args: args.iter().map(|a| ArgCmp { low32: int_argument(name, a.index), ..*a }).collect(),
                needs: needs.clone(),
                unless: unless.clone(),
            })
        })
        .collect())
}

/// Whether argument `index` of `name` is an `int` (or `unsigned int`) to the kernel, among the
/// calls profiles filter by argument.
fn int_argument(name: &str, index: u8) -> bool {
    matches!(
        (name, index),
        ("socket" | "socketpair" | "setsockopt" | "getsockopt" | "tgkill", 0..=2)
            | ("ioctl" | "fcntl" | "kill" | "tkill" | "setns", 0..=1)
            | ("personality" | "prctl", 0)
    )
}

fn action(action: LinuxSeccompAction, errno: Option<u32>) -> Result<Action, Error> {
    let unsupported = |name: &str| Error::Unsupported {
        feature: format!("seccomp action {name}"),
        reason: "stockade does not hand system calls to a tracer or a listener".into(),
        hint: "use SCMP_ACT_ERRNO, SCMP_ACT_KILL_PROCESS or SCMP_ACT_LOG for that rule".into(),
    };
    Ok(match action {
        LinuxSeccompAction::ScmpActAllow => Action::Allow,
        LinuxSeccompAction::ScmpActErrno => Action::Errno(errno.unwrap_or(libc::EPERM as u32) as i32),
        LinuxSeccompAction::ScmpActKill | LinuxSeccompAction::ScmpActKillThread => Action::KillThread,
        LinuxSeccompAction::ScmpActKillProcess => Action::KillProcess,
        LinuxSeccompAction::ScmpActTrap => Action::Trap,
        LinuxSeccompAction::ScmpActLog => Action::Log,
        LinuxSeccompAction::ScmpActNotify => return Err(unsupported("SCMP_ACT_NOTIFY")),
        LinuxSeccompAction::ScmpActTrace => return Err(unsupported("SCMP_ACT_TRACE")),
    })
}

/// Docker's names for this machine's architecture.
fn arch_names() -> &'static [&'static str] {
    if cfg!(target_arch = "x86_64") { &["amd64", "x86_64"] } else { &["arm64", "aarch64"] }
}

/// Whether an `includes` gate's architecture and kernel conditions hold (an absent one does).
fn applies_here(gate: &Value) -> bool {
    let arches = gate.get("arches").and_then(Value::as_array);
    let arch_ok = match arches {
        Some(list) if !list.is_empty() => {
            list.iter().any(|a| a.as_str().is_some_and(|a| arch_names().contains(&a)))
        }
        _ => true,
    };
    let kernel_ok = gate.get("minKernel").and_then(Value::as_str).is_none_or(kernel_at_least);
    arch_ok && kernel_ok
}

/// Whether an `excludes` gate's architecture or kernel condition holds.
fn excludes_here(gate: &Value) -> bool {
    let arches = gate.get("arches").and_then(Value::as_array);
    let arch =
        arches.is_some_and(|l| l.iter().any(|a| a.as_str().is_some_and(|a| arch_names().contains(&a))));
    let kernel = gate.get("minKernel").and_then(Value::as_str).is_some_and(kernel_at_least);
    arch || kernel
}

fn caps(gate: &Value) -> Result<Vec<Capability>, Error> {
    gate.get("caps")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .map(|c| {
            let name = c.as_str().unwrap_or_default();
            name.parse::<Capability>()
                .map_err(|_| Error::invalid("capability in a seccomp profile", name, "unknown capability"))
        })
        .collect()
}

fn kernel_at_least(min: &str) -> bool {
    let release =
        nix::sys::utsname::uname().map(|u| u.release().to_string_lossy().into_owned()).unwrap_or_default();
    let parse = |s: &str| -> Vec<u32> {
        s.split(|c: char| !c.is_ascii_digit()).take(2).map(|n| n.parse().unwrap_or(0)).collect()
    };
    parse(&release) >= parse(min)
}
