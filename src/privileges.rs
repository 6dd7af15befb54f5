//! What the payload may do as a process: its capabilities (exactly the requested sets) and
//! `no_new_privs`. Applied in the child right before exec, after the credentials.

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

/// The five capability sets of the payload, each given on its own, as an OCI runtime spec
/// gives them (`process.capabilities`). [`SandboxBuilder::capabilities`] sets all five to one
/// set; [`SandboxBuilder::capability_sets`] takes these.
///
/// After exec the kernel computes the payload's sets from these as for any exec: a root
/// payload's permitted set becomes `bounding | inheritable` (and its effective set the same),
/// any other payload's becomes its `ambient` set.
///
/// [`SandboxBuilder::capabilities`]: crate::SandboxBuilder::capabilities
/// [`SandboxBuilder::capability_sets`]: crate::SandboxBuilder::capability_sets
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct CapabilitySets {
    /// The most the payload and its descendants can ever hold.
    pub bounding: Vec<Capability>,
    /// In force until exec; a subset of `permitted`.
    pub effective: Vec<Capability>,
    /// Held until exec.
    pub permitted: Vec<Capability>,
    /// Kept across exec for programs with matching file capabilities.
    pub inheritable: Vec<Capability>,
    /// Kept across exec for any program; a subset of both `permitted` and `inheritable`.
    pub ambient: Vec<Capability>,
}

impl CapabilitySets {
    /// All five sets equal to `set`.
    pub fn all(set: &[Capability]) -> CapabilitySets {
        CapabilitySets {
            bounding: set.to_vec(),
            effective: set.to_vec(),
            permitted: set.to_vec(),
            inheritable: set.to_vec(),
            ambient: set.to_vec(),
        }
    }
}

/// The capability step as the child performs it: bit `n` of each set is capability `n`.
#[derive(Clone, Copy, Debug)]
pub(crate) struct CapPlan {
    /// The bounding set. Without an explicit request, for a payload switched to another uid,
    /// [`DEFAULT_CAPABILITIES`] (as Docker and runc keep it) while it holds none: programs
    /// with file capabilities (`ping`) still run, without the extra privilege under
    /// `no_new_privs`, and with at most these without it.
    pub(crate) bounding: u64,
    pub(crate) effective: u64,
    pub(crate) permitted: u64,
    pub(crate) inheritable: u64,
    pub(crate) ambient: u64,
    /// Highest capability number the kernel knows.
    pub(crate) last: u32,
}

/// Decides the capability step at build time. `None`: leave capabilities alone, because the
/// payload cannot have any to shed (an unprivileged caller without a user namespace).
/// Without an explicit request, a root payload gets [`DEFAULT_CAPABILITIES`] and a payload
/// switched to another uid gets none (but keeps them as its bounding set), as with container
/// runtimes.
pub(crate) fn plan(
    requested: Option<&CapabilitySets>,
    user_ns: bool,
    non_root_user: bool,
) -> Result<Option<CapPlan>, Error> {
    let can_change =
        user_ns || caps::has_cap(None, caps::CapSet::Effective, Capability::CAP_SETPCAP).unwrap_or(false);
    if !can_change {
        let grants = requested.is_some_and(|r| {
            [&r.effective, &r.permitted, &r.inheritable, &r.ambient].iter().any(|s| !s.is_empty())
        });
        return match requested {
            Some(sets) if grants => Err(Error::NotPermitted {
                what: format!("granting capabilities {:?}", sets.permitted),
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
    let plan = match requested {
        Some(sets) => CapPlan {
            bounding: bits(&sets.bounding)?,
            effective: bits(&sets.effective)?,
            permitted: bits(&sets.permitted)?,
            inheritable: bits(&sets.inheritable)?,
            ambient: bits(&sets.ambient)?,
            last,
        },
        None => {
            let defaults = bits(DEFAULT_CAPABILITIES)?;
            let held = if non_root_user { 0 } else { defaults };
            CapPlan {
                bounding: defaults,
                effective: held,
                permitted: held,
                inheritable: held,
                ambient: held,
                last,
            }
        }
    };
    let names = |mask: u64| {
        (0..=last).filter(|b| mask & (1 << b) != 0).map(|b| format!("{b}")).collect::<Vec<_>>().join(",")
    };
    let outside = |what: &'static str, set: u64, within: u64, of: &str| {
        if set & !within == 0 {
            return Ok(());
        }
        Err(Error::invalid(
            what,
            format!("capabilities numbered {}", names(set & !within)),
            format!("must also be in the {of} set (the kernel refuses anything else)"),
        ))
    };
    outside("effective capabilities", plan.effective, plan.permitted, "permitted")?;
    outside(
        "ambient capabilities",
        plan.ambient,
        plan.permitted & plan.inheritable,
        "permitted and inheritable",
    )?;
    Ok(Some(plan))
}
