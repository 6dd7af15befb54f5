//! What the payload may do as a process: its capabilities (exactly the requested set, in all
//! five sets) and `no_new_privs`. Applied in the child right before exec, after the credentials.

use crate::Error;

pub use caps::Capability;

/// The capabilities a payload gets unless [`SandboxBuilder::capabilities`] says otherwise: the
/// set container runtimes grant by default. Enough for a root payload to install packages and
/// manage files it owns; no `CAP_SYS_ADMIN` (no mounting), no `CAP_SYS_PTRACE`, no
/// `CAP_NET_ADMIN`, no `CAP_SYS_MODULE`.
///
/// [`SandboxBuilder::capabilities`]: crate::SandboxBuilder::capabilities
pub const DEFAULT_CAPABILITIES: &[Capability] = &[
    Capability::CAP_CHOWN,
    Capability::CAP_DAC_OVERRIDE,
    Capability::CAP_FSETID,
    Capability::CAP_FOWNER,
    Capability::CAP_MKNOD,
    Capability::CAP_NET_RAW,
    Capability::CAP_SETGID,
    Capability::CAP_SETUID,
    Capability::CAP_SETFCAP,
    Capability::CAP_SETPCAP,
    Capability::CAP_NET_BIND_SERVICE,
    Capability::CAP_SYS_CHROOT,
    Capability::CAP_KILL,
    Capability::CAP_AUDIT_WRITE,
];

/// The capability step as the child performs it.
#[derive(Clone, Copy, Debug)]
pub(crate) struct CapPlan {
    /// Bit `n` set: capability `n` is kept in the permitted, effective, inheritable and ambient
    /// sets.
    pub(crate) mask: u64,
    /// The bounding set: `mask`, or for a payload switched to another uid without an explicit
    /// request, [`DEFAULT_CAPABILITIES`], as Docker and runc keep it. Holding nothing, such a
    /// payload can still run programs with file capabilities (`ping`); under `no_new_privs` they
    /// run without the extra privilege, and without it they get at most these.
    pub(crate) bounding: u64,
    /// Highest capability number the kernel knows.
    pub(crate) last: u32,
}

/// Decides the capability step at build time. `None`: leave capabilities alone, because the
/// payload cannot have any to shed (an unprivileged caller without a user namespace).
/// Without an explicit request, a root payload gets [`DEFAULT_CAPABILITIES`] and a payload
/// switched to another uid gets none (but keeps them as its bounding set), as with container
/// runtimes.
pub(crate) fn plan(
    requested: Option<&[Capability]>,
    user_ns: bool,
    non_root_user: bool,
) -> Result<Option<CapPlan>, Error> {
    let can_change =
        user_ns || caps::has_cap(None, caps::CapSet::Effective, Capability::CAP_SETPCAP).unwrap_or(false);
    if !can_change {
        return match requested {
            Some(set) if !set.is_empty() => Err(Error::NotPermitted {
                what: format!("granting capabilities {set:?}"),
                reason:
                    "an unprivileged caller has none to give without a user namespace; add Namespaces::USER"
                        .into(),
            }),
            _ => Ok(None),
        };
    }
    let last = std::fs::read_to_string("/proc/sys/kernel/cap_last_cap")
        .ok()
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or(40u32)
        .min(63);
    let bits = |set: &[Capability]| {
        set.iter().try_fold(0u64, |mask, cap| {
            let bit = cap.index() as u32;
            if bit > last {
                return Err(Error::invalid(
                    "capability",
                    cap,
                    format!("this kernel knows capabilities up to {last}"),
                ));
            }
            Ok(mask | 1 << bit)
        })
    };
    let (mask, bounding) = match requested {
        Some(set) => (bits(set)?, bits(set)?),
        None if non_root_user => (0, bits(DEFAULT_CAPABILITIES)?),
        None => (bits(DEFAULT_CAPABILITIES)?, bits(DEFAULT_CAPABILITIES)?),
    };
    Ok(Some(CapPlan { mask, bounding, last }))
}
