//! Syscall filtering: which system calls the payload may make, as a seccomp BPF program built
//! once per [`Sandbox`](crate::Sandbox) and installed by the child as its last step before
//! `execve` (allocation-free: the program is already in memory).
//!
//! Every sandbox gets [`SyscallFilter::default_profile`] unless the builder is given another
//! filter or, explicitly, [`no_syscall_filter`](crate::SandboxBuilder::no_syscall_filter).
//!
//! ```no_run
//! use stockade::{Action, ArgCmp, Cmp, Sandbox, SyscallFilter, SyscallRule};
//! # fn main() -> Result<(), stockade::Error> {
//! let filter = SyscallFilter::default_profile()
//!     // No new sockets at all, but the rest of the default profile.
//!     .refuse("socket")
//!     // kill(2) only towards the payload's own process group.
//!     .rule(SyscallRule::new("kill", Action::Allow).when(ArgCmp::new(0, Cmp::Eq(0))))
//!     .rule(SyscallRule::new("kill", Action::Errno(libc::EPERM)));
//! let sandbox = Sandbox::untrusted().syscall_filter(filter).build()?;
//! # Ok(()) }
//! ```

mod bpf;
#[cfg(feature = "oci")]
mod oci;
mod profile;

use std::collections::BTreeMap;
use std::str::FromStr;

use syscalls::Sysno;

use crate::{Capability, Error};
use bpf::Entry;
pub(crate) use bpf::SockFilter;

/// Whether `program` lets this machine's system call `nr` through (allowed, or allowed and
/// logged) with these first two arguments (the others 0).
pub(crate) fn allows(program: &[SockFilter], nr: libc::c_long, [a, b]: [u64; 2]) -> bool {
    const SECCOMP_RET_ACTION_FULL: u32 = 0xffff_0000;
    const SECCOMP_RET_ALLOW: u32 = 0x7fff_0000;
    const SECCOMP_RET_LOG: u32 = 0x7ffc_0000;
    let action =
        bpf::evaluate(program, nr as u32, bpf::NATIVE_ARCH, [a, b, 0, 0, 0, 0]) & SECCOMP_RET_ACTION_FULL;
    action == SECCOMP_RET_ALLOW || action == SECCOMP_RET_LOG
}

/// What the kernel does with a system call a rule matches.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Action {
    /// The call runs.
    Allow,
    /// The call fails with this `errno` (1 to 4095) without running.
    Errno(i32),
    /// The whole process is killed, as by `SIGSYS`, dumping core.
    KillProcess,
    /// The calling thread is killed.
    KillThread,
    /// The call does not run; the thread gets `SIGSYS`, which it may catch.
    Trap,
    /// The call runs and is logged by the kernel's audit log.
    Log,
}

impl Action {
    fn ret(self) -> u32 {
        match self {
            Action::Allow => 0x7fff_0000,
            Action::Errno(e) => 0x0005_0000 | (e as u32 & 0xffff),
            Action::KillProcess => bpf::RET_KILL_PROCESS,
            Action::KillThread => 0,
            Action::Trap => 0x0003_0000,
            Action::Log => 0x7ffc_0000,
        }
    }

    fn check(self) -> Result<(), Error> {
        match self {
            Action::Errno(e) if !(1..=4095).contains(&e) => {
                Err(Error::invalid("syscall filter errno", e, "must be between 1 and 4095"))
            }
            _ => Ok(()),
        }
    }
}

/// A comparison of one argument against a value (see [`ArgCmp`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Cmp {
    /// Equal to the value.
    Eq(u64),
    /// Not equal to the value.
    Ne(u64),
    /// Less than the value (unsigned).
    Lt(u64),
    /// Less than or equal to the value (unsigned).
    Le(u64),
    /// Greater than the value (unsigned).
    Gt(u64),
    /// Greater than or equal to the value (unsigned).
    Ge(u64),
    /// `argument & mask == value & mask`.
    MaskedEq {
        /// The bits compared.
        mask: u64,
        /// Their expected values.
        value: u64,
    },
}

/// A condition on one argument of a system call: `index` 0 to 5.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct ArgCmp {
    pub(crate) index: u8,
    pub(crate) cmp: Cmp,
    pub(crate) low32: bool,
}

impl ArgCmp {
    /// Compares the whole 64-bit argument.
    pub fn new(index: u8, cmp: Cmp) -> ArgCmp {
        ArgCmp { index, cmp, low32: false }
    }

    /// Compares only the low 32 bits, for arguments the kernel reads as `int` or `unsigned
    /// int` (an `ioctl` request, a socket family): a caller can set the upper bits of the
    /// register to anything, which a 64-bit comparison would see and the kernel ignores.
    pub fn low32(index: u8, cmp: Cmp) -> ArgCmp {
        ArgCmp { index, cmp, low32: true }
    }
}

/// One rule: what happens to a system call, by name, when all its argument comparisons hold.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SyscallRule {
    name: String,
    action: Action,
    args: Vec<ArgCmp>,
    /// Applies only when the payload holds all of these (a Docker profile's `includes`).
    needs: Vec<Capability>,
    /// Applies only when the payload holds none of these (its `excludes`).
    unless: Vec<Capability>,
}

impl SyscallRule {
    /// A rule for the system call `name` (as in `man 2`, e.g. `"openat"`), applying `action`.
    pub fn new(name: impl Into<String>, action: Action) -> SyscallRule {
        SyscallRule { name: name.into(), action, args: Vec::new(), needs: Vec::new(), unless: Vec::new() }
    }

    /// Adds a condition: the rule applies only when it holds too (up to six).
    pub fn when(mut self, arg: ArgCmp) -> SyscallRule {
        self.args.push(arg);
        self
    }
}

/// Where a filter starts from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Base {
    /// [`SyscallFilter::default_profile`].
    Default,
    /// Nothing: every call the rules do not name gets this action.
    Empty(Action),
}

/// A syscall filter: a base ([`default_profile`](Self::default_profile) or
/// [`empty`](Self::empty)) and rules by system call name on top.
///
/// Rules with argument conditions are tried in the order given, before the base's own rules
/// for that call; a rule without conditions replaces whatever the base does with the call. Unknown names, two fallbacks with different actions for one call, a
/// condition on an argument past the sixth, or an `errno` out of range are typed errors at
/// [`build`](crate::SandboxBuilder::build).
///
/// Calls from another ABI of the machine (i386 programs on x86_64) kill the process; x32
/// calls and numbers the filter does not know fail with `ENOSYS`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SyscallFilter {
    base: Base,
    rules: Vec<SyscallRule>,
    /// Names unknown on this machine are skipped, not errors (an OCI profile lists the calls
    /// of every architecture).
    skip_unknown: bool,
}

impl Default for SyscallFilter {
    fn default() -> Self {
        SyscallFilter::default_profile()
    }
}

impl SyscallFilter {
    /// The default profile, what every sandbox gets: the system calls Docker's default
    /// profile allows, minus `io_uring_*`, `modify_ldt` and the calls that change or query
    /// mounts; refused with `EPERM` is every other call the kernel has, among them:
    ///
    /// - new namespaces: `unshare`, `clone` with a namespace flag, `setns`; `clone3` fails
    ///   with `ENOSYS`, so libcs fall back to `clone`, whose flags the filter can see;
    /// - the mount family (`mount`, `umount2`, `fsopen`, `fsconfig`, `fsmount`, `fspick`,
    ///   `move_mount`, `open_tree`, `mount_setattr`), `pivot_root`, `chroot` without
    ///   `CAP_SYS_CHROOT`;
    /// - `keyctl`, `add_key`, `request_key`; `bpf`, `perf_event_open`, `userfaultfd`,
    ///   `io_uring_setup`/`enter`/`register`; `open_by_handle_at` without
    ///   `CAP_DAC_READ_SEARCH`;
    /// - `kexec_load`, `kexec_file_load`, `init_module`, `finit_module`, `delete_module`,
    ///   `reboot`, `swapon`, `swapoff`, `acct`, `quotactl`, `quotactl_fd`, `syslog`,
    ///   `lookup_dcookie`, `vhangup`, clock and time setting, `iopl`, `ioperm`;
    /// - `personality` with anything but the values programs use (`PER_LINUX`,
    ///   `PER_LINUX32`, `UNAME26`, a query): no `ADDR_NO_RANDOMIZE`, no `READ_IMPLIES_EXEC`;
    /// - `ioctl` `TIOCSTI` (typing into a terminal) and `TIOCLINUX`.
    ///
    /// `socket` of a family other than `AF_UNIX`, `AF_INET`, `AF_INET6`, `AF_NETLINK` and
    /// `AF_PACKET`, and `socketpair` of any but `AF_UNIX`, fail with `EAFNOSUPPORT` (no
    /// `AF_VSOCK`, `AF_ALG`, `AF_TIPC`, `AF_BLUETOOTH`, ...).
    /// System calls newer than the filter knows fail with `ENOSYS`.
    ///
    /// As with Docker, capabilities given to the payload open the calls they are for:
    /// `CAP_SYS_ADMIN` the mount family, `setns`, `sethostname` and new namespaces other than
    /// user namespaces; `CAP_SYS_PTRACE` `kcmp`, `pidfd_getfd` and `process_madvise`;
    /// `CAP_SYS_TIME`, `CAP_SYS_NICE`, `CAP_SYS_BOOT`, `CAP_SYS_CHROOT`, `CAP_SYS_PACCT`,
    /// `CAP_DAC_READ_SEARCH` theirs.
    pub fn default_profile() -> SyscallFilter {
        SyscallFilter { base: Base::Default, rules: Vec::new(), skip_unknown: false }
    }

    /// A filter that starts from nothing: every system call the rules do not name gets
    /// `action` (e.g. [`Action::Errno`]`(libc::ENOSYS)` for an allow-list, [`Action::Allow`]
    /// for a deny-list).
    pub fn empty(action: Action) -> SyscallFilter {
        SyscallFilter { base: Base::Empty(action), rules: Vec::new(), skip_unknown: false }
    }

    /// Lets the system call `name` run, whatever the base said.
    pub fn allow(self, name: impl Into<String>) -> SyscallFilter {
        self.rule(SyscallRule::new(name, Action::Allow))
    }

    /// Refuses the system call `name` with `EPERM`, whatever the base said.
    pub fn refuse(self, name: impl Into<String>) -> SyscallFilter {
        self.rule(SyscallRule::new(name, Action::Errno(libc::EPERM)))
    }

    /// Adds a rule (see [`SyscallRule`]).
    pub fn rule(mut self, rule: SyscallRule) -> SyscallFilter {
        self.rules.push(rule);
        self
    }

    /// Compiles the filter for a payload holding the capabilities `caps` (bit `n`: capability
    /// `n`).
    /// `early`: installed before the credential changes (without `no_new_privs`), so those
    /// calls must pass too.
    pub(crate) fn compile(&self, caps: u64, early: bool) -> Result<Vec<SockFilter>, Error> {
        let program = self.compile_table(caps)?;
        // What the child itself calls once the filter is in: refusing it would make every
        // spawn fail, with its report lost if `write` is refused.
        const AFTER: &[&str] = &["rt_sigprocmask", "execve", "write", "exit_group"];
        const EARLY: &[&str] = &[
            "prlimit64",
            "prctl",
            "setgroups",
            "setresgid",
            "setresuid",
            "capset",
            "getppid",
            "chdir",
            "umask",
        ];
        let needed = AFTER.iter().chain(if early { EARLY } else { &[] });
        for name in needed {
            let Some(nr) = number(name, true)? else { continue };
            let verdict = bpf::evaluate(&program, nr, bpf::NATIVE_ARCH, [0; 6]);
            if verdict != Action::Allow.ret() && verdict != Action::Log.ret() {
                return Err(Error::invalid(
                    "syscall filter",
                    format!("refusing {name}"),
                    "the sandbox calls it after installing the filter (rt_sigprocmask, execve, write and exit_group; without no_new_privs also the credential calls): allow it",
                ));
            }
        }
        Ok(program)
    }

    fn compile_table(&self, caps: u64) -> Result<Vec<SockFilter>, Error> {
        let enosys = Action::Errno(libc::ENOSYS).ret();
        let (mut table, default) = match self.base {
            Base::Default => (profile::table(caps), enosys),
            Base::Empty(action) => {
                action.check()?;
                (BTreeMap::new(), action.ret())
            }
        };
        // Per call: its conditional rules (with their return values) and its rule for every call.
        type Rules = (Vec<(Vec<ArgCmp>, u32)>, Option<Action>);
        let mut by_nr: BTreeMap<u32, Rules> = BTreeMap::new();
        let holds = |cap: &Capability| holds(caps, *cap);
        for rule in &self.rules {
            rule.action.check()?;
            if !rule.needs.iter().all(holds) || rule.unless.iter().any(holds) {
                continue;
            }
            let Some(nr) = number(&rule.name, self.skip_unknown)? else { continue };
            if rule.args.len() > 6 {
                return Err(Error::invalid(
                    "syscall rule",
                    &rule.name,
                    format!("{} argument conditions; a rule holds at most 6", rule.args.len()),
                ));
            }
            if let Some(arg) = rule.args.iter().find(|a| a.index > 5) {
                return Err(Error::invalid(
                    "syscall rule",
                    &rule.name,
                    format!("argument index {} (system calls have arguments 0 to 5)", arg.index),
                ));
            }
            let (conditional, fallback) = by_nr.entry(nr).or_default();
            if rule.args.is_empty() {
                match fallback {
                    Some(action) if *action != rule.action => {
                        return Err(Error::invalid(
                            "syscall rule",
                            &rule.name,
                            format!("conflicting actions {action:?} and {:?} for every call", rule.action),
                        ));
                    }
                    _ => *fallback = Some(rule.action),
                }
            } else if let Some((_, other)) = conditional.iter().find(|(args, _)| *args == rule.args) {
                if *other != rule.action.ret() {
                    return Err(Error::invalid(
                        "syscall rule",
                        &rule.name,
                        format!("conflicting actions for the same conditions {:?}", rule.args),
                    ));
                }
            } else {
                conditional.push((rule.args.clone(), rule.action.ret()));
            }
        }
        for (nr, (mut rules, fallback)) in by_nr {
            let base = table.remove(&nr).unwrap_or(Entry { rules: Vec::new(), fallback: default });
            let fallback = match fallback {
                // A rule for every call replaces what the base did with it.
                Some(action) => action.ret(),
                // Conditional rules alone go first; the base's rules and action still follow.
                None => {
                    rules.extend(base.rules);
                    base.fallback
                }
            };
            table.insert(nr, Entry { rules, fallback });
        }
        bpf::compile(&table, default, enosys).map_err(|len| {
            Error::invalid(
                "syscall filter",
                format!("of {len} instructions or more"),
                format!(
                    "the kernel runs at most {}, and a rule must fit in a 255-instruction jump",
                    bpf::MAX_INSTRUCTIONS
                ),
            )
        })
    }
}

/// The number of system call `name` on this machine; `None` for an unknown name when those are
/// skipped.
fn number(name: &str, skip_unknown: bool) -> Result<Option<u32>, Error> {
    match Sysno::from_str(name) {
        Ok(sysno) => Ok(Some(sysno.id() as u32)),
        Err(_) if skip_unknown => Ok(None),
        Err(_) => Err(Error::invalid(
            "syscall name",
            name,
            format!("not a system call of {}", std::env::consts::ARCH),
        )),
    }
}

/// Whether `cap` is among `caps` (bit `n`: capability `n`).
fn holds(caps: u64, cap: Capability) -> bool {
    cap.index() < 64 && caps & (1 << cap.index()) != 0
}

#[cfg(test)]
mod tests {
    //! The default profile, compiled and run through the interpreter of `bpf::tests`.
    use super::*;

    fn verdict(filter: &SyscallFilter, caps: u64, name: &str, args: [u64; 6]) -> u32 {
        let prog = filter.compile(caps, false).unwrap();
        let nr = Sysno::from_str(name).unwrap().id() as u32;
        bpf::evaluate(&prog, nr, bpf::NATIVE_ARCH, args)
    }

    #[test]
    fn the_default_profile_refuses_each_class_with_its_errno() {
        let f = SyscallFilter::default_profile();
        let (allow, eperm, enosys) =
            (Action::Allow.ret(), Action::Errno(libc::EPERM).ret(), Action::Errno(libc::ENOSYS).ret());
        let prog = f.compile(0, false).unwrap();
        assert!(prog.len() < bpf::MAX_INSTRUCTIONS / 2, "{} instructions", prog.len());
        for name in ["read", "openat", "execve", "mmap", "futex", "rt_sigreturn", "wait4"] {
            assert_eq!(verdict(&f, 0, name, [0; 6]), allow, "{name}");
        }
        for name in [
            "keyctl",
            "add_key",
            "request_key",
            "bpf",
            "perf_event_open",
            "userfaultfd",
            "io_uring_setup",
            "io_uring_enter",
            "mount",
            "umount2",
            "fsopen",
            "fsmount",
            "move_mount",
            "open_tree",
            "mount_setattr",
            "setns",
            "kexec_load",
            "init_module",
            "reboot",
            "swapon",
            "acct",
            "quotactl",
            "open_by_handle_at",
            "chroot",
            "pivot_root",
            "modify_ldt",
        ] {
            assert_eq!(verdict(&f, 0, name, [0; 6]), eperm, "{name}");
        }
        assert_eq!(verdict(&f, 0, "clone3", [0; 6]), enosys);
        let newuser = libc::CLONE_NEWUSER as u64;
        assert_eq!(verdict(&f, 0, "clone", [newuser | libc::SIGCHLD as u64, 0, 0, 0, 0, 0]), eperm);
        assert_eq!(verdict(&f, 0, "clone", [libc::SIGCHLD as u64, 0, 0, 0, 0, 0]), allow);
        let parent = libc::CLONE_PARENT as u64;
        assert_eq!(verdict(&f, 0, "clone", [parent | libc::SIGCHLD as u64, 0, 0, 0, 0, 0]), eperm);
        assert_eq!(verdict(&f, 0, "unshare", [newuser, 0, 0, 0, 0, 0]), eperm);
        assert_eq!(verdict(&f, 0, "unshare", [libc::CLONE_FILES as u64, 0, 0, 0, 0, 0]), eperm);
        let eafnosupport = Action::Errno(libc::EAFNOSUPPORT).ret();
        assert_eq!(verdict(&f, 0, "socketpair", [libc::AF_UNIX as u64, 1, 0, 0, 0, 0]), allow);
        assert_eq!(verdict(&f, 0, "socketpair", [libc::AF_VSOCK as u64, 1, 0, 0, 0, 0]), eafnosupport);
        // Every call the machine's table knows is allowed or refused; none falls to ENOSYS.
        let last = Sysno::last();
        assert_ne!(verdict(&f, 0, last.name(), [0; 6]), enosys, "{last}");
        // The 32-bit request, whatever the register's upper half holds.
        for request in [libc::TIOCSTI, libc::TIOCSTI | 1 << 32, libc::TIOCLINUX] {
            assert_eq!(verdict(&f, 0, "ioctl", [0, request, 0, 0, 0, 0]), eperm, "{request:#x}");
        }
        assert_eq!(verdict(&f, 0, "ioctl", [0, libc::TIOCGWINSZ, 0, 0, 0, 0]), allow);
        assert_eq!(
            verdict(&f, 0, "socket", [libc::AF_VSOCK as u64, 1, 0, 0, 0, 0]),
            Action::Errno(libc::EAFNOSUPPORT).ret()
        );
        assert_eq!(verdict(&f, 0, "socket", [libc::AF_INET as u64 | 1 << 32, 1, 0, 0, 0, 0]), allow);
        assert_eq!(verdict(&f, 0, "personality", [0x0040000, 0, 0, 0, 0, 0]), eperm);
        assert_eq!(verdict(&f, 0, "personality", [0xffff_ffff, 0, 0, 0, 0, 0]), allow);
        assert_eq!(bpf::evaluate(&prog, 1000, bpf::NATIVE_ARCH, [0; 6]), enosys);
        // CAP_SYS_ADMIN opens the mount family and namespaces other than user namespaces.
        let admin = 1 << Capability::CAP_SYS_ADMIN.index();
        assert_eq!(verdict(&f, admin, "mount", [0; 6]), allow);
        assert_eq!(verdict(&f, admin, "unshare", [libc::CLONE_NEWNS as u64, 0, 0, 0, 0, 0]), allow);
        assert_eq!(verdict(&f, admin, "unshare", [newuser, 0, 0, 0, 0, 0]), eperm);
    }

    #[test]
    fn conditional_rules_go_before_the_base_and_a_plain_rule_replaces_it() {
        // A conditional rule on ioctl keeps the base's TIOCSTI refusal behind it.
        let f = SyscallFilter::default_profile().rule(
            SyscallRule::new("ioctl", Action::Errno(libc::ENOTTY)).when(ArgCmp::low32(1, Cmp::Eq(0x5401))),
        );
        assert_eq!(verdict(&f, 0, "ioctl", [0, 0x5401, 0, 0, 0, 0]), Action::Errno(libc::ENOTTY).ret());
        assert_eq!(verdict(&f, 0, "ioctl", [0, libc::TIOCSTI, 0, 0, 0, 0]), Action::Errno(libc::EPERM).ret());
        // A rule for every call replaces the base's handling.
        let f = SyscallFilter::default_profile().allow("ioctl");
        assert_eq!(verdict(&f, 0, "ioctl", [0, libc::TIOCSTI, 0, 0, 0, 0]), Action::Allow.ret());
    }
}
