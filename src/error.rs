//! Errors: one enum for building and spawning, each variant naming the value, path or step that
//! failed and why.

use std::ffi::OsString;
use std::fmt;
use std::io;
use std::path::PathBuf;

/// Why building a sandbox or spawning a command failed.
///
/// Every variant names the offending value (or the setup step and path) and, where the kernel
/// said no, carries its [`io::Error`] as the source.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// A string handed to the builder or command contains a NUL byte, which no system call can
    /// carry.
    #[error("{what} contains a NUL byte: {value:?}")]
    NulByte {
        /// Which setting held the string, e.g. `"argument"` or `"hostname"`.
        what: &'static str,
        /// The offending value.
        value: OsString,
    },

    /// A setting has a value the sandbox cannot use.
    #[error("invalid {what} {value}: {reason}")]
    InvalidValue {
        /// Which setting, e.g. `"hostname"` or `"fd"`.
        what: &'static str,
        /// The offending value, as given.
        value: String,
        /// Why it was refused.
        reason: String,
    },

    /// A setting needs a namespace that the sandbox does not create.
    #[error("{what} needs the {needs} namespace, which this sandbox does not create")]
    NamespaceRequired {
        /// The setting, e.g. `"hostname"`.
        what: &'static str,
        /// The namespace it needs, e.g. `"uts"`.
        needs: &'static str,
    },

    /// The caller lacks the privilege for what was asked (e.g. namespaces without a user
    /// namespace when not root).
    #[error("{what}: {reason}")]
    NotPermitted {
        /// What was asked.
        what: String,
        /// Why it cannot be done with the caller's privileges, and what would work.
        reason: String,
    },

    /// A path given to the builder is unusable: relative where it must be absolute, containing
    /// `..`, clashing with another mount, or of the wrong type.
    #[error("{what} {path:?}: {reason}")]
    InvalidPath {
        /// Which setting, e.g. `"mount target"` or `"bind source"`.
        what: &'static str,
        /// The path, as given.
        path: PathBuf,
        /// Why it was refused.
        reason: String,
    },

    /// A host path given to the builder cannot be used (missing, unreadable).
    #[error("{what} {path:?}: {source}")]
    PathAccess {
        /// Which setting, e.g. `"bind source"` or `"root directory"`.
        what: &'static str,
        /// The path, as given.
        path: PathBuf,
        /// What the kernel said when it was looked up.
        #[source]
        source: io::Error,
    },

    /// The host cannot provide something the sandbox needs or asked for (a namespace, user
    /// namespaces for this caller, a system call, a cgroup controller, swap accounting,
    /// Landlock under [`Compat::Enforce`](crate::Compat)). [`probe`](crate::probe) reports
    /// the same for the whole host.
    #[error("{feature} is not available: {reason}; {hint}")]
    Unsupported {
        /// What is missing, e.g. `"the memory cgroup controller"` or `"user namespaces"`.
        feature: String,
        /// Why, as far as the host says, e.g. `"kernel.apparmor_restrict_unprivileged_userns
        /// is 1"`.
        reason: String,
        /// What to change, e.g. `"set kernel.apparmor_restrict_unprivileged_userns=0 or add an
        /// AppArmor profile"`.
        hint: String,
    },

    /// Creating, configuring or joining the sandbox's cgroup failed.
    #[error("cgroup {op} at {path:?} failed: {source}")]
    Cgroup {
        /// The operation, e.g. `"create"` or `"apply memory limits"`.
        op: String,
        /// The cgroup directory.
        path: PathBuf,
        /// The kernel's answer (EACCES: not delegated to this user).
        #[source]
        source: io::Error,
    },

    /// A uid or gid map is malformed (overlapping ranges, zero count, overflow, too many ranges)
    /// or does not map the id the payload should run as.
    #[error("invalid {kind} map {map}: {reason}")]
    IdMap {
        /// `"uid"` or `"gid"`.
        kind: &'static str,
        /// The map, as `inside:outside:count` ranges.
        map: String,
        /// What is wrong with it.
        reason: String,
    },

    /// Writing a uid/gid map through `newuidmap`/`newgidmap` failed: the helper is missing, or
    /// it refused the map (usually: no matching range in `/etc/subuid` or `/etc/subgid`).
    #[error("{helper}: cannot write {kind} map {map}: {reason}")]
    IdMapHelper {
        /// The helper that was run (or looked for).
        helper: PathBuf,
        /// `"uid"` or `"gid"`.
        kind: &'static str,
        /// The map it was asked to write.
        map: String,
        /// The helper's own message, or why it could not run.
        reason: String,
    },

    /// The sandbox's first process failed in one of its setup steps, before running the payload.
    #[error("sandbox setup failed at {stage}: {source}")]
    Setup {
        /// The step that failed, with the path or value it was working on.
        stage: Stage,
        /// The kernel's answer.
        #[source]
        source: io::Error,
    },

    /// The program could not be executed inside the sandbox (not found, not executable, ...).
    #[error("cannot execute {program:?} in the sandbox: {source}")]
    Exec {
        /// The program as given to [`crate::Sandbox::command`] (or the path tried last).
        program: PathBuf,
        /// The error from `execve`; `source.kind()` is e.g. [`io::ErrorKind::NotFound`].
        #[source]
        source: io::Error,
    },

    /// A system call made by the embedding process while spawning failed (pipe, clone, writing
    /// a map, ...).
    #[error("{op} failed while spawning: {source}")]
    Spawn {
        /// The operation, e.g. `"clone3"` or `"write /proc/<pid>/uid_map"`.
        op: String,
        /// The kernel's answer.
        #[source]
        source: io::Error,
    },

    /// The caller's [`Command::on_created`](crate::Command::on_created) hook failed; the
    /// sandbox was killed.
    #[error("the hook run as the sandbox was created failed: {source}")]
    Hook {
        /// What the hook returned.
        #[source]
        source: io::Error,
    },
    /// Talking to a running sandbox failed (reading its output, waiting for it).
    #[error("{op}: {source}")]
    Io {
        /// The operation, e.g. `"read stdout"`.
        op: &'static str,
        /// The underlying error.
        #[source]
        source: io::Error,
    },
}

impl Error {
    pub(crate) fn invalid(what: &'static str, value: impl fmt::Display, reason: impl Into<String>) -> Error {
        Error::InvalidValue { what, value: value.to_string(), reason: reason.into() }
    }

    pub(crate) fn spawn(op: impl Into<String>, source: impl Into<io::Error>) -> Error {
        Error::Spawn { op: op.into(), source: source.into() }
    }
}

impl From<Error> for io::Error {
    /// Lets `?` carry a stockade error through code that returns `io::Result`, keeping the
    /// message and (for kernel failures) the error kind.
    fn from(e: Error) -> io::Error {
        let kind = match &e {
            Error::Exec { source, .. } | Error::Setup { source, .. } | Error::Spawn { source, .. } => {
                source.kind()
            }
            Error::Io { source, .. } | Error::PathAccess { source, .. } | Error::Cgroup { source, .. } => {
                source.kind()
            }
            Error::Unsupported { .. } => io::ErrorKind::Unsupported,
            Error::NotPermitted { .. } => io::ErrorKind::PermissionDenied,
            _ => io::ErrorKind::InvalidInput,
        };
        io::Error::new(kind, e)
    }
}

/// A step of the sandbox's setup, in the order the child performs them. Reported by
/// [`Error::Setup`]; steps that work on a path or value name it.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum Stage {
    /// Resetting signal dispositions and the signal mask.
    Signals,
    /// Arming the parent-death signal.
    DeathSignal,
    /// Arranging stdio and passed file descriptors; names the target descriptor.
    Fds {
        /// The descriptor number in the payload.
        fd: i32,
    },
    /// Switching to uid and gid 0 of the sandbox's user namespace (its map makes some id other
    /// than the caller's root).
    BecomeRoot,
    /// Entering the sandbox's cgroup namespace.
    CgroupNamespace,
    /// Giving the sandbox a session keyring of its own (`EDQUOT`: the user's key quota,
    /// `/proc/sys/kernel/keys/maxkeys`, is used up).
    SessionKeyring,
    /// Making the sandbox's processes non-dumpable.
    NonDumpable,
    /// Starting a new session (`setsid`).
    NewSession,
    /// Making the payload's pseudo-terminal (see [`Command::terminal`](crate::Command::terminal))
    /// in the sandbox's `/dev/pts` and making it the controlling terminal.
    Terminal,
    /// Setting the hostname.
    Hostname,
    /// Setting the NIS domain name.
    Domainname,
    /// Entering the time namespace and writing its clock offsets.
    TimeNamespace,
    /// Making all mounts private so nothing propagates to the host.
    MountPropagation,
    /// Making the root filesystem (before mounts are placed in it).
    Root {
        /// Which root, e.g. `"root directory /srv/rootfs"`.
        what: String,
    },
    /// Placing one mount (or directory, file, symlink, mask) in the sandbox's filesystem.
    Mount {
        /// What was being mounted, e.g. `"bind of /usr"` or `"proc"`.
        what: String,
        /// Where, as the payload would see it.
        target: PathBuf,
    },
    /// Switching to the new root (`pivot_root`, or `chroot` when asked) and detaching the old.
    PivotRoot,
    /// Locking the mounts by moving into a nested user and mount namespace.
    LockMounts,
    /// Bringing up the loopback interface.
    Loopback,
    /// Starting the payload process under the sandbox's init.
    ForkPayload,
    /// Running the sandbox's init program (`stockade-init`, from a memfd) as pid 1, or a
    /// session's holder.
    Init,
    /// Joining a started session's namespaces (`setns`), or sending a command to the
    /// session's server: the session has ended (`ESRCH`), or its holder was killed; a request
    /// the server could not take (`EINVAL`).
    JoinSession,
    /// Setting a kernel parameter ([`SandboxBuilder::sysctl`](crate::SandboxBuilder::sysctl)).
    Sysctl {
        /// The parameter, e.g. `net.ipv4.ip_forward`.
        key: String,
    },
    /// Joining an existing namespace
    /// ([`SandboxBuilder::join_namespace`](crate::SandboxBuilder::join_namespace)).
    JoinNamespace {
        /// The namespace file.
        path: PathBuf,
    },
    /// Waiting at the start gate ([`StartGate`](crate::StartGate)): telling the creator that
    /// setup is done, or taking the starter's connection.
    Gate,
    /// Setting supplementary groups.
    SetGroups,
    /// Switching to the payload's gid.
    SetGid {
        /// The gid, as seen inside the sandbox.
        gid: u32,
    },
    /// Switching to the payload's uid.
    SetUid {
        /// The uid, as seen inside the sandbox.
        uid: u32,
    },
    /// Setting the payload's resource limits (rlimits).
    Rlimits,
    /// Setting the payload's capability sets.
    Capabilities,
    /// Setting `no_new_privs`.
    NoNewPrivs,
    /// Creating an image's missing working directory.
    CreateWorkingDir {
        /// The directory, as seen inside the sandbox.
        dir: PathBuf,
    },
    /// Changing to the working directory.
    Chdir {
        /// The directory, as seen inside the sandbox.
        dir: PathBuf,
    },
    /// Applying the Landlock rules: creating the ruleset, adding the rule for `path` (empty
    /// for a port rule or the ruleset itself; `ENOENT`: the path does not exist in the
    /// sandbox), or restricting the payload.
    Landlock {
        /// The rule's path, as seen inside the sandbox.
        path: PathBuf,
    },
    /// Installing the syscall filter.
    SyscallFilter,
}

impl fmt::Display for Stage {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Stage::Signals => f.write_str("reset signals"),
            Stage::Landlock { path } if path.as_os_str().is_empty() => {
                f.write_str("apply the Landlock rules")
            }
            Stage::Landlock { path } => write!(f, "add the Landlock rule for {}", path.display()),
            Stage::SyscallFilter => f.write_str("install the syscall filter"),
            Stage::DeathSignal => f.write_str("arm parent-death signal"),
            Stage::Fds { fd } => write!(f, "set up fd {fd}"),
            Stage::BecomeRoot => f.write_str("switch to root of the user namespace"),
            Stage::CgroupNamespace => f.write_str("enter the cgroup namespace"),
            Stage::SessionKeyring => f.write_str("join a new session keyring"),
            Stage::NonDumpable => f.write_str("make non-dumpable"),
            Stage::NewSession => f.write_str("start new session"),
            Stage::Terminal => f.write_str("make the payload's terminal in /dev/pts"),
            Stage::Hostname => f.write_str("set hostname"),
            Stage::Domainname => f.write_str("set domain name"),
            Stage::TimeNamespace => f.write_str("enter time namespace and set clock offsets"),
            Stage::MountPropagation => f.write_str("make mounts private"),
            Stage::Root { what } => write!(f, "make {what}"),
            Stage::Mount { what, target } => write!(f, "mount {what} at {}", target.display()),
            Stage::PivotRoot => f.write_str("switch to the new root"),
            Stage::LockMounts => f.write_str("lock mounts in a nested user namespace"),
            Stage::Loopback => f.write_str("bring up loopback interface lo"),
            Stage::ForkPayload => f.write_str("start payload under init"),
            Stage::Init => f.write_str("exec the init program stockade-init"),
            Stage::JoinSession => f.write_str("join the session's namespaces"),
            Stage::Gate => f.write_str("wait at the start gate"),
            Stage::JoinNamespace { path } => write!(f, "join the namespace {}", path.display()),
            Stage::Sysctl { key } => write!(f, "set the kernel parameter {key}"),
            Stage::SetGroups => f.write_str("set supplementary groups"),
            Stage::SetGid { gid } => write!(f, "set gid {gid}"),
            Stage::SetUid { uid } => write!(f, "set uid {uid}"),
            Stage::Rlimits => f.write_str("set resource limits"),
            Stage::Capabilities => f.write_str("set capabilities"),
            Stage::NoNewPrivs => f.write_str("set no_new_privs"),
            Stage::CreateWorkingDir { dir } => write!(f, "create working directory {}", dir.display()),
            Stage::Chdir { dir } => write!(f, "change directory to {}", dir.display()),
        }
    }
}
