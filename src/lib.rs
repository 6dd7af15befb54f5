//! # stockade
//!
//! Run untrusted or unruly programs in Linux sandboxes from Rust, the way
//! `std::process::Command` runs ordinary ones.
//!
//! A [`Sandbox`] is an immutable template built once with [`Sandbox::builder`]: which
//! [`Namespaces`] to create, uid/gid maps, hostname, clock offsets. Each
//! [`Sandbox::command`] then runs a program in fresh namespaces built from it and returns a
//! [`Child`] to wait for or signal, or an [`Output`].
//!
//! ```no_run
//! use stockade::{Namespaces, Sandbox};
//!
//! # fn main() -> Result<(), stockade::Error> {
//! let sandbox = Sandbox::builder()
//!     .namespaces(Namespaces::all())
//!     .hostname("box")
//!     .build()?; // validates everything; typed errors, no panics
//!
//! let out = sandbox.command("/bin/sh").args(["-c", "echo $$; hostname"]).output()?;
//! assert_eq!(out.stdout, b"2\nbox\n"); // pid 1 is the sandbox's init
//! # Ok(()) }
//! ```
//!
//! ## How a spawn works
//! Everything the new process needs (argv and environment arrays, id maps, descriptor moves) is
//! prepared in the embedding process first (a private `plan`), so that after `clone3` the child only
//! makes raw system calls: it allocates nothing and takes no locks, which keeps spawning safe
//! from multi-threaded programs. The child waits on a "go" message while the parent writes its
//! id maps, then sets itself up and execs the payload; a setup failure comes back as
//! [`Error::Setup`] naming the step. With a pid namespace a small init runs as pid 1, reaps
//! orphans, forwards signals and takes the tree down with the payload. All `unsafe` code lives
//! in one private module, `sys`.
//!
//! ## Privileges
//! As root every namespace is available. Unprivileged programs add [`Namespaces::USER`]; the
//! payload is then root inside a user namespace that maps only the caller's own ids (or more,
//! through `newuidmap`/`newgidmap`).
//!
//! ## Least privilege by default
//! Every payload runs under a syscall filter ([`SyscallFilter::default_profile`]: Docker's
//! allow-list, narrowed) with `no_new_privs` and exactly the capabilities asked for; weakening
//! either is explicit ([`SandboxBuilder::no_syscall_filter`],
//! [`SandboxBuilder::allow_new_privileges`]). [`Landlock`] rules and identity by name
//! ([`SandboxBuilder::user_name`]) are there when wanted, and [`Sandbox::untrusted`] is the
//! recommended configuration with all of it.

#![deny(unsafe_code)]
#![warn(missing_docs)]

mod access;
#[cfg(feature = "tokio")]
mod asynchronous;
mod child;
mod command;
mod error;
mod fs;
mod gate;
mod identity;
#[cfg(feature = "image")]
pub mod image;
mod namespaces;
#[cfg(feature = "oci")]
pub mod oci;
mod plan;
mod privileges;
mod probe;
mod resources;
mod sandbox;
mod seccomp;
mod session;
mod spawn;
mod sys;
mod terminal;
mod userns;

pub use access::{
    ABI, AccessFs, AccessNet, BitFlags, LANDLOCK, LANDLOCK_FILE_RIGHTS, LANDLOCK_NETWORK, LANDLOCK_SCOPES,
    Landlock, Scope,
};
#[cfg(feature = "tokio")]
pub use asynchronous::{AsyncChild, AsyncChildStderr, AsyncChildStdin, AsyncChildStdout, AsyncTerminal};
pub use child::{Child, ChildStderr, ChildStdin, ChildStdout, Detached, ExitStatus, Output};
pub use command::{Command, Stdio};
pub use error::{Error, Stage};
pub use fs::{Mount, Root};
pub use gate::StartGate;
pub use namespaces::{ClockOffsets, Namespaces};
pub use privileges::{Capability, CapabilitySets, DEFAULT_CAPABILITIES};
pub use probe::{Feature, HostReport, probe};
pub use resources::{CgroupStats, Compat, IoLimit, Limit, ResourceUsage, Rlimit};
pub use sandbox::{Sandbox, SandboxBuilder, UNTRUSTED_IDS};
pub use seccomp::{Action, ArgCmp, Cmp, SyscallFilter, SyscallRule};
pub use session::{Pool, Pooled, Session};
pub use terminal::Terminal;
pub use userns::IdMap;
