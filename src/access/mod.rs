//! Landlock: what the payload may reach of its own filesystem and network, enforced by the
//! kernel on top of the mounts and the syscall filter. Rules are given with the `landlock`
//! crate's types, checked against the running kernel's ABI at
//! [`build`](crate::SandboxBuilder::build), and applied by the child right before it execs
//! (after `no_new_privs`), allocation-free.
//!
//! ```no_run
//! use stockade::{Landlock, Sandbox};
//! # fn main() -> Result<(), stockade::Error> {
//! let sandbox = Sandbox::untrusted()
//!     .landlock(Landlock::new().read_exec("/usr").read_write("/tmp").restrict_tcp())
//!     .build()?;
//! # Ok(()) }
//! ```

use std::ffi::CString;
use std::path::PathBuf;

pub use landlock::{ABI, AccessFs, AccessNet, BitFlags, Scope};

use landlock::Access;

use crate::sys::landlock::RulesetAttr;
use crate::{Compat, Error};

/// How [`Child::unenforced`](crate::Child::unenforced) names the parts of a [`Landlock`] a
/// kernel could not enforce under [`Compat::BestEffort`].
pub const LANDLOCK: &str = "landlock";
/// See [`LANDLOCK`]: TCP rules need Landlock ABI 4 (Linux 6.7).
pub const LANDLOCK_NETWORK: &str = "landlock network";
/// See [`LANDLOCK`]: scoping needs Landlock ABI 6 (Linux 6.12).
pub const LANDLOCK_SCOPES: &str = "landlock scopes";
/// See [`LANDLOCK`]: restricting `truncate` needs Landlock ABI 3 (Linux 6.2) and device
/// `ioctl`s ABI 5 (Linux 6.10); before, paths given without write access can still be
/// truncated and their devices' `ioctl`s used.
pub const LANDLOCK_FILE_RIGHTS: &str = "landlock truncate and device ioctl rights";

/// Landlock rules for the payload. Once any is given, the filesystem is restricted: the payload
/// can reach only the paths listed, each with the rights given (every right the running
/// kernel knows is handled, so what is not allowed is refused with `EACCES`). TCP is restricted
/// when a port rule or [`restrict_tcp`](Self::restrict_tcp) is given. Paths are inside the
/// sandbox, resolved in its final root through no symlink (as host paths are: a link a
/// payload planted must not widen a rule); a path that does not exist there, or leads through
/// a symlink, fails the spawn with [`Stage::Landlock`](crate::Stage::Landlock) (`ENOENT`,
/// `ELOOP`). Rights only add up down the tree (Landlock has no deny rules): a path below one
/// given write access is writable whatever its own rule says.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Landlock {
    /// Also a rule per mount of the sandbox (see [`Landlock::from_mounts`]).
    follow_mounts: bool,
    paths: Vec<(PathBuf, BitFlags<AccessFs>)>,
    tcp: Option<Vec<(BitFlags<AccessNet>, u16)>>,
    scopes: BitFlags<Scope>,
    compat: Compat,
}

impl Default for Landlock {
    fn default() -> Self {
        Landlock::new()
    }
}

impl Landlock {
    /// Rules that allow nothing yet: add paths, ports and scopes.
    pub fn new() -> Landlock {
        Landlock {
            follow_mounts: false,
            paths: Vec::new(),
            tcp: None,
            scopes: BitFlags::empty(),
            compat: Compat::Enforce,
        }
    }

    /// Rules that mirror the sandbox's filesystem, computed at build from its root and
    /// mounts: read and execute beneath the root and every read-only mount, everything beneath
    /// writable ones (a writable root, `/tmp`, a writable bind), `/dev` and `/proc`. Nothing
    /// else is reachable, whatever a payload manages to do to its mount namespace. Rights add
    /// up: a read-only mount below a writable one (a read-only bind in a writable root) is
    /// writable as far as Landlock goes, and only its mount keeps it read-only. Like every
    /// rule, each mount point is found through no symlink: a mount whose target path leads
    /// through one (in a caller's root directory) fails the spawn with
    /// [`Stage::Landlock`](crate::Stage::Landlock). Add more with the other methods.
    pub fn from_mounts() -> Landlock {
        Landlock { follow_mounts: true, ..Landlock::new() }
    }

    /// Allows `access` beneath `path` (the path itself and, for a directory, everything below).
    pub fn allow(mut self, path: impl Into<PathBuf>, access: impl Into<BitFlags<AccessFs>>) -> Landlock {
        self.paths.push((path.into(), access.into()));
        self
    }

    /// Allows reading files and listing directories beneath `path`.
    pub fn read(self, path: impl Into<PathBuf>) -> Landlock {
        self.allow(path, AccessFs::ReadFile | AccessFs::ReadDir)
    }

    /// Allows reading and executing beneath `path`.
    pub fn read_exec(self, path: impl Into<PathBuf>) -> Landlock {
        self.allow(path, AccessFs::ReadFile | AccessFs::ReadDir | AccessFs::Execute)
    }

    /// Allows everything beneath `path`: reading, writing, creating, removing, executing.
    pub fn read_write(self, path: impl Into<PathBuf>) -> Landlock {
        self.allow(path, BitFlags::<AccessFs>::all())
    }

    /// Restricts TCP: only the ports given with [`tcp_bind`](Self::tcp_bind) and
    /// [`tcp_connect`](Self::tcp_connect) can be bound or connected to.
    pub fn restrict_tcp(mut self) -> Landlock {
        self.tcp.get_or_insert_with(Vec::new);
        self
    }

    /// Allows binding TCP `port` (and restricts TCP).
    pub fn tcp_bind(mut self, port: u16) -> Landlock {
        self.tcp.get_or_insert_with(Vec::new).push((AccessNet::BindTcp.into(), port));
        self
    }

    /// Allows connecting to TCP `port` (and restricts TCP).
    pub fn tcp_connect(mut self, port: u16) -> Landlock {
        self.tcp.get_or_insert_with(Vec::new).push((AccessNet::ConnectTcp.into(), port));
        self
    }

    /// Confines the payload to its own Landlock domain for `scopes`:
    /// [`Scope::AbstractUnixSocket`] (no connecting to abstract unix sockets made outside it)
    /// and [`Scope::Signal`] (no signals to processes outside it).
    pub fn scope(mut self, scopes: impl Into<BitFlags<Scope>>) -> Landlock {
        self.scopes |= scopes.into();
        self
    }

    /// What to do on a kernel that lacks Landlock or part of what is asked (default:
    /// [`Compat::Enforce`], a typed error at build). With [`Compat::BestEffort`] the sandbox
    /// runs without the missing parts and [`Child::unenforced`](crate::Child::unenforced)
    /// names them ([`LANDLOCK`], [`LANDLOCK_NETWORK`], [`LANDLOCK_SCOPES`]). Kernels before
    /// 6.10 cannot restrict `truncate` or device `ioctl`s: that is reported as
    /// [`LANDLOCK_FILE_RIGHTS`] under either setting, never an error.
    pub fn compat(mut self, compat: Compat) -> Landlock {
        self.compat = compat;
        self
    }

    /// Checks the rules against the running kernel and prepares them for the child. Returns
    /// the plan (`None`: nothing the kernel can enforce) and what is left unenforced.
    ///
    /// `mounts`: the rules [`from_mounts`](Self::from_mounts) stands for, used when it was.
    pub(crate) fn plan(
        &self,
        mounts: Vec<(PathBuf, BitFlags<AccessFs>)>,
    ) -> Result<(Option<LandlockPlan>, Vec<&'static str>), Error> {
        let abi_number = crate::sys::landlock::abi_version();
        let abi = ABI::from(abi_number);
        let mut unenforced = Vec::new();
        let mut missing = |what: &'static str, reason: String| match self.compat {
            Compat::Enforce => Err(Error::Unsupported {
                feature: what.into(),
                reason,
                hint: "a newer kernel with Landlock in its lsm= boot list, or Compat::BestEffort to run \
                       without what is missing (Child::unenforced names it)"
                    .into(),
            }),
            Compat::BestEffort => {
                unenforced.push(what);
                Ok(())
            }
        };
        if abi_number < 1 {
            missing(
                LANDLOCK,
                "the kernel has no Landlock (not built in, or not in the lsm= boot list)".into(),
            )?;
            return Ok((None, unenforced));
        }
        let handled_fs = AccessFs::from_all(abi);

        let mut attr = RulesetAttr { handled_access_fs: handled_fs.bits(), ..RulesetAttr::default() };
        let mut ports = Vec::new();
        if let Some(tcp) = &self.tcp {
            // TCP only: UDP rights of later ABIs would stay handled with no way to allow them.
            let handled_net = AccessNet::from_all(abi) & (AccessNet::BindTcp | AccessNet::ConnectTcp);
            if handled_net.is_empty() {
                missing(
                    LANDLOCK_NETWORK,
                    format!("TCP rules need Landlock ABI 4 (Linux 6.7); this kernel has {abi_number}"),
                )?;
            } else {
                attr.handled_access_net = handled_net.bits();
                ports = tcp.iter().map(|(access, port)| (access.bits(), *port)).collect();
            }
        }
        if !self.scopes.is_empty() {
            let known = Scope::from_all(abi);
            if !known.contains(self.scopes) {
                missing(
                    LANDLOCK_SCOPES,
                    format!("scopes {:?} need a newer Landlock ABI than {abi_number}", self.scopes & !known),
                )?;
            }
            attr.scoped = (self.scopes & known).bits();
        }
        let from_mounts = if self.follow_mounts { mounts } else { Vec::new() };
        let paths = from_mounts
            .iter()
            .chain(&self.paths)
            .map(|(path, access)| {
                if !path.is_absolute() {
                    return Err(Error::InvalidPath {
                        what: "landlock path",
                        path: path.clone(),
                        reason: "must be absolute (it is resolved inside the sandbox)".into(),
                    });
                }
                let c = crate::plan::cstring("landlock path", path.as_os_str())?;
                Ok((c, (*access & handled_fs).bits()))
            })
            .collect::<Result<Vec<_>, Error>>()?;
        let file_rights = AccessFs::from_file(abi).bits();
        // Reported under either setting, never an error: every kernel before 6.10 lacks them,
        // and the rest of Landlock is worth having there.
        if abi_number < 5 {
            unenforced.push(LANDLOCK_FILE_RIGHTS);
        }
        Ok((Some(LandlockPlan { attr, paths, ports, file_rights }), unenforced))
    }
}

/// Landlock as the child applies it.
#[derive(Debug)]
pub(crate) struct LandlockPlan {
    pub(crate) attr: RulesetAttr,
    /// `(path inside the sandbox, rights)`, each found through no symlink.
    pub(crate) paths: Vec<(CString, u64)>,
    /// `(rights, TCP port)`.
    pub(crate) ports: Vec<(u64, u16)>,
    /// The rights a rule on a file (not a directory) may carry.
    pub(crate) file_rights: u64,
}

impl LandlockPlan {
    /// The path of rule `index`, for errors.
    pub(crate) fn path(&self, index: usize) -> PathBuf {
        self.paths.get(index).map(|(p, _)| crate::plan::path_of(p)).unwrap_or_default()
    }
}
