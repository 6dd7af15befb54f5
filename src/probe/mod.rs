//! What this host can do for sandboxes, and why not where it cannot: [`probe`] asks the kernel
//! about each feature stockade uses, and [`SandboxBuilder::build`](crate::SandboxBuilder::build)
//! checks what a configuration needs against the same answers, so a missing feature is an
//! [`Error::Unsupported`] naming it, its reason and what to change — before any process exists.
//! User namespaces are the exception where nothing hints they may be refused: making one is
//! their only sure test, so the sandbox's own clone is it, and a refusal there gets the same
//! error from the spawn.
//!
//! Nothing is chosen behind the caller's back: where a weaker mechanism exists
//! ([`SandboxBuilder::use_chroot`](crate::SandboxBuilder::use_chroot) for `pivot_root`,
//! [`Compat::BestEffort`](crate::Compat) for cgroup limits and Landlock), the caller opts in.
//! Only where the fallback is as strong does stockade take it itself: legacy `clone` where
//! `clone3` is refused (the child then joins its cgroup before it runs anything, as it would
//! have at birth).

use std::fmt;
use std::sync::OnceLock;

use crate::sys::Errno;
use crate::{Error, Namespaces};

/// One feature of the host: whether stockade can use it, what was found, and what to change
/// when it is missing.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Feature {
    /// Which feature: `"user namespaces"`, `"openat2"`, `"cgroup delegation"`, ... (see
    /// [`probe`] for the list).
    pub name: &'static str,
    /// Whether it can be used by this process.
    pub available: bool,
    /// What was found: the version, the layout, or why it is missing.
    pub detail: String,
    /// When missing: what to change.
    pub hint: Option<String>,
}

impl Feature {
    fn yes(name: &'static str, detail: impl Into<String>) -> Feature {
        Feature { name, available: true, detail: detail.into(), hint: None }
    }

    fn no(name: &'static str, reason: impl Into<String>, hint: impl Into<String>) -> Feature {
        Feature { name, available: false, detail: reason.into(), hint: Some(hint.into()) }
    }

    /// `Ok` when available, else the [`Error::Unsupported`] a configuration needing it gets.
    fn required(&self) -> Result<(), Error> {
        if self.available {
            return Ok(());
        }
        Err(Error::Unsupported {
            feature: self.name.to_owned(),
            reason: self.detail.clone(),
            hint: self.hint.clone().unwrap_or_default(),
        })
    }
}

/// What [`probe`] found: the kernel and each feature.
#[derive(Clone, Debug)]
pub struct HostReport {
    /// The running kernel's release (`/proc/sys/kernel/osrelease`).
    pub kernel: String,
    /// Every feature, in a fixed order.
    pub features: Vec<Feature>,
}

impl HostReport {
    /// The feature called `name`, if probed.
    pub fn feature(&self, name: &str) -> Option<&Feature> {
        self.features.iter().find(|f| f.name == name)
    }

    /// The features that are missing.
    pub fn missing(&self) -> impl Iterator<Item = &Feature> {
        self.features.iter().filter(|f| !f.available)
    }
}

impl fmt::Display for HostReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(f, "kernel {}", self.kernel)?;
        for feature in &self.features {
            let mark = if feature.available { "yes" } else { "NO " };
            writeln!(f, "{mark} {:<28} {}", feature.name, feature.detail)?;
            if let Some(hint) = &feature.hint {
                writeln!(f, "    {:<28} -> {hint}", "")?;
            }
        }
        Ok(())
    }
}

/// The features, in report order. Each is probed at most once per process for
/// [`SandboxBuilder::build`](crate::SandboxBuilder::build) (the cached answers); [`probe`]
/// asks again.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Check {
    Namespace(usize),
    UserNamespaces,
    UnprivilegedUserNamespaces,
    IdMapHelpers,
    Cgroups,
    CgroupDelegation,
    Clone3,
    Pidfd,
    Openat2,
    MountApi,
    OverlayLowerdirPlus,
    PivotRoot,
    Seccomp,
    Landlock,
}

/// Each namespace: its flag, the name a report uses, and its file under `/proc/self/ns`.
const NAMESPACES: [(Namespaces, &str, &str); 8] = [
    (Namespaces::USER, "user namespace", "user"),
    (Namespaces::MOUNT, "mount namespace", "mnt"),
    (Namespaces::PID, "pid namespace", "pid"),
    (Namespaces::NET, "network namespace", "net"),
    (Namespaces::UTS, "uts namespace", "uts"),
    (Namespaces::IPC, "ipc namespace", "ipc"),
    (Namespaces::CGROUP, "cgroup namespace", "cgroup"),
    (Namespaces::TIME, "time namespace", "time"),
];

const ALL: [Check; 21] = [
    Check::Namespace(0),
    Check::Namespace(1),
    Check::Namespace(2),
    Check::Namespace(3),
    Check::Namespace(4),
    Check::Namespace(5),
    Check::Namespace(6),
    Check::Namespace(7),
    Check::UserNamespaces,
    Check::UnprivilegedUserNamespaces,
    Check::IdMapHelpers,
    Check::Cgroups,
    Check::CgroupDelegation,
    Check::Clone3,
    Check::Pidfd,
    Check::Openat2,
    Check::MountApi,
    Check::OverlayLowerdirPlus,
    Check::PivotRoot,
    Check::Seccomp,
    Check::Landlock,
];

/// Asks the host about every feature stockade uses, now (nothing is cached): each namespace
/// (`"user namespace"`, `"mount namespace"`, ... `"time namespace"`), `"user namespaces"`
/// (this process makes one, maps its ids, and has capabilities in it), `"unprivileged user
/// namespaces"` (the sysctls `user.max_user_namespaces`, `kernel.unprivileged_userns_clone`,
/// `kernel.apparmor_restrict_unprivileged_userns`), `"id map helpers"` (`newuidmap`,
/// `newgidmap` and this user's subordinate ranges), `"cgroups"` (layout and controllers),
/// `"cgroup delegation"`, `"clone3"`, `"pidfd"`, `"openat2"`, `"new mount API"`, `"overlayfs
/// lowerdir+"`, `"pivot_root"`, `"seccomp"` and `"landlock"` (its ABI). Makes one short-lived
/// child (the user namespace trial) and changes nothing.
///
/// ```no_run
/// let report = stockade::probe();
/// print!("{report}");
/// if let Some(userns) = report.feature("user namespaces").filter(|f| !f.available) {
///     eprintln!("no sandbox without root here: {} ({:?})", userns.detail, userns.hint);
/// }
/// ```
pub fn probe() -> HostReport {
    HostReport { kernel: kernel(), features: ALL.iter().map(|&c| ask(c)).collect() }
}

/// The cached answer for `check` (asked once per process).
pub(crate) fn cached(check: Check) -> &'static Feature {
    static ANSWERS: [OnceLock<Feature>; ALL.len()] = [const { OnceLock::new() }; ALL.len()];
    let index = ALL.iter().position(|&c| c == check).unwrap_or(0);
    ANSWERS[index].get_or_init(|| ask(check))
}

/// `Ok`, or the [`Error::Unsupported`] of a missing feature `check` (cached answers).
pub(crate) fn require(check: Check) -> Result<(), Error> {
    cached(check).required()
}

/// What `build` checks of user namespaces. The only sure test is making one (the trial, a
/// child process: a third of a command-line run's cost), so it is made here only where a sign
/// says they may be refused: a sysctl that limits them, or a seccomp filter around this
/// process. Elsewhere the sandbox's own clone is the trial, and [`user_namespaces_refused`]
/// explains a refusal.
pub(crate) fn user_namespaces_for_build() -> Result<(), Error> {
    if userns_sysctl_block().is_some() || has_seccomp_filter() {
        return require(Check::UserNamespaces);
    }
    Ok(())
}

/// After the clone of a sandbox with a user namespace failed with `errno`: the
/// [`Error::Unsupported`] the trial gives, if user namespaces are refused to this process now
/// (`None`: they are not, or the failure is no refusal — out of memory or processes — and the
/// spawn's own error stands).
pub(crate) fn user_namespaces_refused(errno: i32) -> Option<Error> {
    if !is_refusal(errno) {
        return None;
    }
    // Asked again, not cached: a limit used up now may be free by the next spawn.
    match crate::sys::probe::user_namespace() {
        Err(Errno(e)) if !is_refusal(e) => None,
        trial => user_namespaces_from(trial).required().err(),
    }
}

/// The errors with which the kernel, a filter or a security module refuses a new user
/// namespace (rather than lacking memory or processes for it).
fn is_refusal(errno: i32) -> bool {
    matches!(errno, libc::EPERM | libc::EACCES | libc::ENOSPC | libc::EINVAL | libc::EUSERS | libc::ENOSYS)
}

/// The [`Error::Unsupported`] of a sandbox whose nested user namespace (the one that locks its
/// mounts) hit the limit of user namespaces: the clone had room for one, the sandbox needs two.
pub(crate) fn user_namespaces_used_up() -> Error {
    let (reason, hint) = limit_used_up(
        ": a sandbox with a mount namespace needs two (its own, and a nested one that locks its mounts)",
    );
    Error::Unsupported { feature: "user namespaces".into(), reason, hint }
}

/// Reason (the limit, then `why`) and hint for a used-up `user.max_user_namespaces`.
fn limit_used_up(why: &str) -> (String, String) {
    let limit = sysctl("/proc/sys/user/max_user_namespaces").unwrap_or_default();
    (
        format!("the limit of user namespaces ({limit}) is used up{why}"),
        "raise user.max_user_namespaces".into(),
    )
}

/// Whether a seccomp filter applies to this process (`Seccomp: 2` in `/proc/self/status`;
/// unknown counts as yes).
fn has_seccomp_filter() -> bool {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    status.lines().find_map(|l| l.strip_prefix("Seccomp:")).is_none_or(|v| v.trim() != "0")
}

/// The checks for the namespaces in `namespaces`.
pub(crate) fn namespace_checks(namespaces: Namespaces) -> impl Iterator<Item = Check> {
    NAMESPACES
        .iter()
        .enumerate()
        .filter(move |(_, (flag, ..))| namespaces.contains(*flag))
        .map(|(i, _)| Check::Namespace(i))
}

fn kernel() -> String {
    std::fs::read_to_string("/proc/sys/kernel/osrelease")
        .map_or_else(|_| "unknown".into(), |s| s.trim().into())
}

/// `Ok` where exec moves a process into the time namespace it made for its children (Linux
/// 6.2): a payload exec'd right after `unshare(CLONE_NEWTIME)`, as without a pid namespace,
/// is then inside it. Before, it stays outside, its clocks unshifted, and the kernel refuses
/// it `vfork` (`posix_spawn`, shells): the configuration needs the init a pid namespace
/// brings, which forks the payload into the time namespace.
pub(crate) fn exec_enters_time_namespace() -> Result<(), Error> {
    if kernel_version().is_none_or(|v| v >= (6, 2)) {
        return Ok(());
    }
    Err(Error::Unsupported {
        feature: "time namespace without a pid namespace".into(),
        reason: format!(
            "Linux {} moves only processes forked after unshare(CLONE_NEWTIME) into the new time \
             namespace, not the payload exec'd from it (exec does from 6.2): it would keep the host's \
             clocks and could not vfork",
            kernel()
        ),
        hint: "add Namespaces::PID (the sandbox's init forks the payload into the time namespace), or \
               Linux 6.2 or newer"
            .into(),
    })
}

/// `(major, minor)` of the running kernel.
fn kernel_version() -> Option<(u32, u32)> {
    let release = kernel();
    let mut parts = release.split(|c: char| !c.is_ascii_digit());
    Some((parts.next()?.parse().ok()?, parts.next()?.parse().ok()?))
}

/// A sysctl's value, trimmed, if the file exists.
fn sysctl(path: &str) -> Option<String> {
    std::fs::read_to_string(path).ok().map(|s| s.trim().to_owned())
}

fn is_root() -> bool {
    nix::unistd::geteuid().is_root()
}

/// The errno as text, e.g. `"ENOSYS (Function not implemented)"`.
fn errno_text(Errno(e): Errno) -> String {
    let name = nix::errno::Errno::from_raw(e);
    format!("{name:?} ({})", name.desc())
}

fn ask(check: Check) -> Feature {
    match check {
        Check::Namespace(i) => namespace(i),
        Check::UserNamespaces => user_namespaces(),
        Check::UnprivilegedUserNamespaces => unprivileged_user_namespaces(),
        Check::IdMapHelpers => id_map_helpers(),
        Check::Cgroups => match crate::resources::cgroup::host_report().0 {
            Ok(layout) => Feature::yes("cgroups", layout),
            Err(reason) => Feature::no("cgroups", reason, "mount cgroup2 at /sys/fs/cgroup"),
        },
        Check::CgroupDelegation => match crate::resources::cgroup::host_report().1 {
            Ok(detail) => Feature::yes("cgroup delegation", detail),
            Err((reason, hint)) => Feature::no("cgroup delegation", reason, hint),
        },
        Check::Clone3 => match crate::sys::probe::clone3() {
            Ok(()) => Feature::yes("clone3", "available"),
            Err(e) => Feature::no(
                "clone3",
                format!("refused with {} (Linux before 5.3, or a seccomp filter)", errno_text(e)),
                "nothing to do: stockade uses clone instead, and the child joins its cgroup before \
                 it runs anything",
            ),
        },
        Check::Pidfd => match crate::sys::probe::pidfd_open() {
            Ok(()) => Feature::yes("pidfd", "available"),
            Err(e) => Feature::no(
                "pidfd",
                format!("pidfd_open refused with {}", errno_text(e)),
                "Linux 5.3 or newer, outside any seccomp filter refusing pidfd_open: stockade \
                 supervises every sandbox through a pidfd",
            ),
        },
        Check::Openat2 => match crate::sys::probe::openat2() {
            Ok(()) => Feature::yes("openat2", "available"),
            Err(e) => Feature::no(
                "openat2",
                format!(
                    "refused with {} (Linux before 5.6, or a seccomp filter such as the default profile of Docker before 20.10)",
                    errno_text(e)
                ),
                "Linux 5.6 or newer, outside any filter refusing openat2: stockade resolves every \
                 mount target, Landlock path and image entry with it so that no symlink can redirect them",
            ),
        },
        Check::MountApi => match crate::sys::probe::mount_api() {
            Ok(()) => Feature::yes("new mount API", "open_tree, mount_setattr, fsopen available"),
            Err(e) => Feature::no(
                "new mount API",
                format!("refused with {} (Linux before 5.12, or a seccomp filter)", errno_text(e)),
                "Linux 5.12 or newer: stockade builds a sandbox's filesystem with fsopen, open_tree, \
                 move_mount and mount_setattr",
            ),
        },
        Check::OverlayLowerdirPlus => overlay_lowerdir_plus(),
        Check::PivotRoot => match crate::sys::probe::root_is_mount_root() {
            Ok(true) => Feature::yes("pivot_root", "this process's root is the root of a mount"),
            Ok(false) => Feature::no(
                "pivot_root",
                "this process's root directory is not the root of a mount (it runs in a chroot)",
                "SandboxBuilder::use_chroot() switches root with chroot instead (weaker: the old \
                 root stays mounted beneath), or run this program outside the chroot",
            ),
            Err(_) => Feature::yes("pivot_root", "assumed (statx cannot say on Linux before 5.8)"),
        },
        Check::Seccomp => {
            // The mode this process runs in, as /proc says.
            let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
            let mode = status.lines().find_map(|l| l.strip_prefix("Seccomp:")).map(str::trim);
            match mode {
                Some("0") => Feature::yes("seccomp", "available"),
                Some("2") => Feature::yes(
                    "seccomp",
                    "available; this process already runs under a filter, which also applies to its sandboxes",
                ),
                Some(other) => Feature::yes("seccomp", format!("available (mode {other})")),
                None => Feature::no(
                    "seccomp",
                    "this kernel reports no Seccomp mode",
                    "a kernel built with CONFIG_SECCOMP_FILTER, or SandboxBuilder::no_syscall_filter()",
                ),
            }
        }
        Check::Landlock => match crate::sys::landlock::abi_version() {
            abi if abi > 0 => Feature::yes("landlock", format!("ABI {abi}")),
            _ => Feature::no(
                "landlock",
                "not enabled (Linux before 5.13, or landlock missing from the lsm= boot list)",
                "boot with landlock in lsm=, or leave Landlock rules out (Compat::BestEffort runs \
                 without them and says so)",
            ),
        },
    }
}

fn namespace(i: usize) -> Feature {
    let (_, name, file) = NAMESPACES[i];
    if std::path::Path::new("/proc/self/ns").join(file).exists() {
        Feature::yes(name, "available")
    } else {
        let since = if file == "time" { "Linux 5.6 or newer, " } else { "" };
        Feature::no(
            name,
            format!("this kernel has none (/proc/self/ns/{file} is missing)"),
            format!("{since}a kernel built with that namespace, or leave it out of Namespaces"),
        )
    }
}

/// Why unprivileged user namespaces are off, from the sysctls that turn them off; `None`
/// when none does.
fn userns_sysctl_block() -> Option<(String, String)> {
    if sysctl("/proc/sys/user/max_user_namespaces").as_deref() == Some("0") {
        return Some((
            "user.max_user_namespaces is 0".into(),
            "raise it: sysctl -w user.max_user_namespaces=15000".into(),
        ));
    }
    if sysctl("/proc/sys/kernel/unprivileged_userns_clone").as_deref() == Some("0") {
        return Some((
            "kernel.unprivileged_userns_clone is 0".into(),
            "set kernel.unprivileged_userns_clone=1, or run as root".into(),
        ));
    }
    if sysctl("/proc/sys/kernel/apparmor_restrict_unprivileged_userns").as_deref() == Some("1") {
        return Some((
            "kernel.apparmor_restrict_unprivileged_userns is 1: AppArmor gives an unprivileged \
             program's user namespaces no capabilities"
                .into(),
            "set kernel.apparmor_restrict_unprivileged_userns=0 or add an AppArmor profile for this \
             program that allows `userns,`"
                .into(),
        ));
    }
    None
}

fn user_namespaces() -> Feature {
    user_namespaces_from(crate::sys::probe::user_namespace())
}

/// The feature as the trial's outcome `trial` says.
fn user_namespaces_from(trial: Result<Option<crate::sys::probe::UserNsFailure>, Errno>) -> Feature {
    const NAME: &str = "user namespaces";
    let generic = || {
        (
            "refused by a seccomp filter or security module around this process (e.g. Docker's default \
             profile)"
                .to_owned(),
            "run it where user namespaces are allowed (e.g. docker run --security-opt \
             seccomp=unconfined), or as root without Namespaces::USER"
                .to_owned(),
        )
    };
    let (step, errno) = match trial {
        Ok(None) => {
            return Feature::yes(
                NAME,
                format!("this process (uid {}) can make one and map its ids", nix::unistd::geteuid()),
            );
        }
        Ok(Some(failure)) => (failure.step, Errno(failure.errno)),
        Err(e) => (0, e),
    };
    let (reason, hint) = match (step, errno.0) {
        // Only the limit itself says ENOSPC (the other sysctls refuse with EPERM).
        (0, libc::ENOSPC) => match sysctl("/proc/sys/user/max_user_namespaces").as_deref() {
            Some("0") => userns_sysctl_block().unwrap_or_else(generic),
            _ => limit_used_up(""),
        },
        (0, libc::EINVAL) => (
            "the kernel refused (nested too deeply, or built without user namespaces)".into(),
            "a kernel with CONFIG_USER_NS, fewer nesting levels, or leave Namespaces::USER out (as root)"
                .into(),
        ),
        (0, libc::EPERM) if chrooted() => (
            "this process runs in a chroot (its root is not its mount namespace's), where the \
             kernel refuses new user namespaces"
                .into(),
            "run it outside the chroot (pivot_root into that tree instead), or as root without \
             Namespaces::USER"
                .into(),
        ),
        _ => userns_sysctl_block().unwrap_or_else(generic),
    };
    let what = match step {
        0 => "creating one",
        1 => "writing its uid map",
        2 => "denying setgroups in it",
        3 => "writing its gid map",
        _ => "making a mount namespace in it",
    };
    Feature::no(NAME, format!("{what} failed with {}: {reason}", errno_text(errno)), hint)
}

/// Whether this process's root directory differs from its mount namespace's (as pid 1 of its
/// pid namespace sees it; unknown, and so false, where that cannot be read).
fn chrooted() -> bool {
    use std::os::unix::fs::MetadataExt;
    match (std::fs::metadata("/"), std::fs::metadata("/proc/1/root/")) {
        (Ok(mine), Ok(init)) => (mine.dev(), mine.ino()) != (init.dev(), init.ino()),
        _ => false,
    }
}

fn unprivileged_user_namespaces() -> Feature {
    const NAME: &str = "unprivileged user namespaces";
    if !is_root() {
        let mine = cached(Check::UserNamespaces);
        return Feature { name: NAME, ..mine.clone() };
    }
    match userns_sysctl_block() {
        None => Feature::yes(NAME, "no sysctl turns them off"),
        Some((reason, hint)) => Feature::no(NAME, reason, hint),
    }
}

fn id_map_helpers() -> Feature {
    const NAME: &str = "id map helpers";
    let found = |tool: &str| {
        std::env::var_os("PATH")
            .map(|p| std::env::split_paths(&p).map(|d| d.join(tool)).collect::<Vec<_>>())
            .unwrap_or_default()
            .into_iter()
            .chain([std::path::Path::new("/usr/bin").join(tool)])
            .find(|p| p.exists())
    };
    let (Some(uid_tool), Some(gid_tool)) = (found("newuidmap"), found("newgidmap")) else {
        return Feature::no(
            NAME,
            "newuidmap or newgidmap not found",
            "install them (Debian: apt install uidmap) to map more than this user's own ids",
        );
    };
    let uid = nix::unistd::geteuid();
    let user = nix::unistd::User::from_uid(uid).ok().flatten().map(|u| u.name);
    let ranges = |file: &str| -> u64 {
        let text = std::fs::read_to_string(file).unwrap_or_default();
        text.lines()
            .filter_map(|l| {
                let mut f = l.split(':');
                let (who, _, count) = (f.next()?, f.next()?, f.next()?);
                (Some(who) == user.as_deref() || who == uid.to_string())
                    .then(|| count.trim().parse::<u64>().ok())?
            })
            .sum()
    };
    let (subuids, subgids) = (ranges("/etc/subuid"), ranges("/etc/subgid"));
    if subuids == 0 || subgids == 0 {
        return Feature::no(
            NAME,
            format!(
                "{} and {} are there, but uid {uid} has {subuids} subordinate uids and {subgids} subordinate gids",
                uid_tool.display(),
                gid_tool.display()
            ),
            "give this user ranges: usermod --add-subuids 100000-165535 --add-subgids 100000-165535 USER",
        );
    }
    Feature::yes(
        NAME,
        format!("{}, {}; {subuids} subordinate uids, {subgids} gids", uid_tool.display(), gid_tool.display()),
    )
}

fn overlay_lowerdir_plus() -> Feature {
    const NAME: &str = "overlayfs lowerdir+";
    let hint = "Linux 6.8 or newer for overlay roots (Root::overlay, images), or \
                SandboxBuilder::legacy_overlay() (at most 48 layers)";
    match crate::sys::probe::overlay_lowerdir_plus() {
        Ok(()) => Feature::yes(NAME, "available"),
        Err(Errno(libc::EPERM)) => {
            // No privilege to open an overlay context here: go by the version.
            if kernel_version().is_some_and(|v| v >= (6, 8)) {
                Feature::yes(NAME, "available (Linux 6.8 or newer)")
            } else {
                Feature::no(NAME, format!("Linux {} predates it (6.8)", kernel()), hint)
            }
        }
        Err(Errno(libc::ENODEV)) => {
            Feature::no(NAME, "this kernel has no overlayfs", "load the overlay module")
        }
        Err(Errno(libc::EINVAL)) => Feature::no(
            NAME,
            format!("this kernel's overlayfs does not take lowerdir+ (Linux {}; it came with 6.8)", kernel()),
            hint,
        ),
        Err(e) => Feature::no(NAME, format!("overlayfs refused lowerdir+ with {}", errno_text(e)), hint),
    }
}
