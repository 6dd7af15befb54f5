//! Planning: turns a [`Sandbox`](crate::Sandbox) and a [`Command`](crate::Command) into a
//! [`Plan`], the complete list of what the child will do, with every string already a `CString`
//! and every array already allocated. All validation that can happen without a process happens
//! here, so bad input becomes a typed error before anything is cloned.
//!
//! The child reads the plan (it shares the parent's memory until it execs) and writes only into
//! the scratch arrays sized for it here.

use std::ffi::{CStr, CString, OsStr, OsString};
use std::os::fd::RawFd;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

use crate::fs::plan::{FsPlan, Target, target};
use crate::privileges::CapPlan;
use crate::sandbox::Config;
use crate::{Error, Stage};

/// A setup step as the child reports it: a number that crosses the error pipe, plus an index
/// into the plan for steps that work on one of several values.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u32)]
pub(crate) enum Step {
    Signals = 1,
    DeathSignal,
    Fds,
    BecomeRoot,
    CgroupNamespace,
    SessionKeyring,
    NonDumpable,
    NewSession,
    Hostname,
    Domainname,
    TimeNamespace,
    MountPropagation,
    Root,
    Mount,
    PivotRoot,
    LockMounts,
    Loopback,
    ForkPayload,
    SetGroups,
    SetGid,
    SetUid,
    Rlimits,
    Capabilities,
    NoNewPrivs,
    CreateWorkingDir,
    Chdir,
    Exec,
    Landlock,
    SyscallFilter,
    Init,
    JoinSession,
    Terminal,
    Gate,
    Sysctl,
    JoinNamespace,
    JoinCgroup,
}

impl Step {
    const ALL: [Step; 36] = [
        Step::Signals,
        Step::DeathSignal,
        Step::Fds,
        Step::BecomeRoot,
        Step::CgroupNamespace,
        Step::SessionKeyring,
        Step::NonDumpable,
        Step::NewSession,
        Step::Hostname,
        Step::Domainname,
        Step::TimeNamespace,
        Step::MountPropagation,
        Step::Root,
        Step::Mount,
        Step::PivotRoot,
        Step::LockMounts,
        Step::Loopback,
        Step::ForkPayload,
        Step::SetGroups,
        Step::SetGid,
        Step::SetUid,
        Step::Rlimits,
        Step::Capabilities,
        Step::NoNewPrivs,
        Step::CreateWorkingDir,
        Step::Chdir,
        Step::Exec,
        Step::Landlock,
        Step::SyscallFilter,
        Step::Init,
        Step::JoinSession,
        Step::Terminal,
        Step::Gate,
        Step::Sysctl,
        Step::JoinNamespace,
        Step::JoinCgroup,
    ];

    fn from_u32(n: u32) -> Option<Step> {
        Step::ALL.into_iter().find(|s| *s as u32 == n)
    }
}

/// The record a failing child sends to the parent: `{step, errno, index}`, native-endian u32s.
pub(crate) const FAILURE_LEN: usize = 12;

/// Encodes a failure record (allocation-free; used by the child).
pub(crate) fn encode_failure(step: Step, errno: i32, index: u32) -> [u8; FAILURE_LEN] {
    let mut rec = [0u8; FAILURE_LEN];
    let parts = [step as u32, errno as u32, index];
    for (chunk, part) in rec.chunks_exact_mut(4).zip(parts) {
        chunk.copy_from_slice(&part.to_ne_bytes());
    }
    rec
}

/// Where stdio and passed descriptors go.
pub(crate) struct FdPlan {
    /// `(descriptor in the parent, descriptor number in the payload)`.
    pub(crate) moves: Vec<(RawFd, RawFd)>,
    /// The child's high copies of each source, same length as `moves`.
    pub(crate) scratch: Vec<RawFd>,
    /// Descriptors the payload keeps: 0, 1, 2 and every target, sorted, then `INTERNAL_SLOTS`
    /// slots the child fills with its own (close-on-exec) channel descriptors and re-sorts.
    pub(crate) keep: Vec<RawFd>,
    /// A number above every descriptor in `moves`, so copies made there collide with nothing.
    pub(crate) base: RawFd,
}

/// The child's own channels to the parent: the control socket and, with an init, the status
/// pipe and the init program. These are the raw numbers in the parent; the child moves them
/// above `FdPlan::base`.
pub(crate) struct Channels {
    /// Child end of the control socket: "go" arrives here, failures leave here.
    pub(crate) control: RawFd,
    /// Write end of the init's status pipe, or -1 without an init.
    pub(crate) status: RawFd,
    /// A pidfd of the embedding process: with it the child can tell, once its parent-death
    /// signal is armed (and again after a credential change cleared and it re-armed it), whether
    /// the parent died before (inside a pid namespace `getppid` cannot say).
    pub(crate) parent: RawFd,
    /// The init program's sealed memfd ([`crate::sys::init_program_fd`]), or -1 without an init.
    pub(crate) init_program: RawFd,
    /// A listening socket the payload waits on, once set up, before its last steps and exec
    /// ([`crate::StartGate`]), or -1.
    pub(crate) gate: RawFd,
    /// The parent's ends, which the child closes at once.
    pub(crate) parent_ends: [RawFd; 2],
}

pub(crate) const INTERNAL_SLOTS: usize = 5;

/// Credentials the payload takes, as seen inside its user namespace.
pub(crate) struct Creds<'a> {
    pub(crate) groups: Option<&'a [libc::gid_t]>,
    pub(crate) gid: Option<libc::gid_t>,
    pub(crate) uid: Option<libc::uid_t>,
    pub(crate) caps: Option<CapPlan>,
    pub(crate) no_new_privs: bool,
    /// The file mode creation mask.
    pub(crate) umask: u32,
    /// Landlock rules, applied after `no_new_privs`.
    pub(crate) landlock: Option<&'a crate::access::LandlockPlan>,
    /// The syscall filter, installed right before exec.
    pub(crate) seccomp: Option<&'a [crate::seccomp::SockFilter]>,
    /// `(resource, soft, hard)` for `prlimit`.
    pub(crate) rlimits: &'a [(libc::__rlimit_resource_t, u64, u64)],
}

/// Everything the child does, prepared.
pub(crate) struct Plan<'a> {
    /// `clone3` flags (namespaces; the pidfd flag is added by `sys::clone`).
    pub(crate) clone_flags: u64,
    /// With a pid namespace: run an init as pid 1 and the payload as its child.
    pub(crate) use_init: bool,
    /// The first process shares the embedder's memory (`CLONE_VM`); false for sandboxes whose
    /// processes change ids, which would make that memory non-dumpable (see `sys::child`).
    pub(crate) share_memory: bool,
    /// After "go", switch to uid and gid 0 of the new user namespace: the caller's own ids are
    /// not what the map makes root (e.g. root mapped to an unprivileged range), and files the
    /// child creates while building the filesystem must belong to a mapped id.
    pub(crate) become_root: bool,
    /// Enter a new cgroup namespace after "go" (by then the child is in all its cgroups).
    pub(crate) cgroup_ns: bool,
    /// With an init: the payload's stack (it shares the embedder's memory until its exec).
    pub(crate) payload_stack: Option<crate::sys::clone::Stack>,
    /// A session's holder: instead of a program, the payload sends a pidfd of itself over the
    /// control socket and execs the init program in its holding mode (see
    /// [`crate::Session`]).
    pub(crate) hold: bool,
    /// A command in a started session: the process joins the holder's namespaces.
    pub(crate) join: Option<Join>,
    /// A session's reset ([`crate::Session::reset`]): a new holder in the session's namespaces.
    pub(crate) renew: Option<Renew>,
    /// Existing namespaces the child joins first thing: `(namespace file, CLONE_NEW* type,
    /// its path for errors)`, without the pid namespace (which the spawning thread joins around
    /// the clone).
    pub(crate) join_ns: Vec<(RawFd, libc::c_int, PathBuf)>,
    /// The cgroup v1 `tasks` files the first process (a session command: the command) writes
    /// `0` to first thing, joining its groups itself: a process moving itself skips the global
    /// lock that moving another takes, which waits out an RCU grace period (milliseconds, on
    /// every spawn where spawns are not back to back). With the hierarchy's label and the
    /// leaf, for errors.
    pub(crate) cgroup_tasks: Vec<(RawFd, String, PathBuf)>,
    /// The parent seals the sandbox's cgroup while the child is made and sets itself up (see
    /// [`crate::resources::cgroup::SandboxCgroup::start_sealing`]) and, after "go", sends one
    /// more byte once that is done, which the payload waits for before its last steps.
    pub(crate) await_seal: bool,
    /// The embedding process, to detect its death before the parent-death signal was re-armed.
    pub(crate) parent_pid: libc::pid_t,
    /// The sandbox outlives the embedding process: no parent-death signal anywhere
    /// ([`crate::SandboxBuilder::outlive_parent`]).
    pub(crate) detached: bool,
    /// The wall-clock limit in milliseconds, which the init (or a joined command's relay)
    /// enforces itself; -1 for none (or one too long to say in an `i32`, which only the
    /// embedding program's supervision then enforces).
    pub(crate) wall_limit_ms: i32,
    /// A terminal for the payload: its size, and which of stdin, stdout and stderr it is.
    pub(crate) terminal: Option<(crate::sys::pty::Size, [bool; 3])>,
    pub(crate) fds: FdPlan,
    pub(crate) channels: Channels,
    pub(crate) hostname: Option<&'a [u8]>,
    /// Kernel parameters to set: `(/proc/sys path, value)`.
    pub(crate) sysctls: &'a [(CString, Vec<u8>)],
    pub(crate) domainname: Option<&'a [u8]>,
    /// Text for `/proc/self/timens_offsets`, when a time namespace is wanted.
    pub(crate) time_offsets: Option<&'a [u8]>,
    /// The sandbox's filesystem operations (prepared once, at build).
    pub(crate) fs: &'a FsPlan,
    /// Scratch for the child: a descriptor (or `-errno`) per `fs.host_sources()`.
    pub(crate) host_fds: Vec<RawFd>,
    pub(crate) loopback: bool,
    pub(crate) creds: Creds<'a>,
    pub(crate) cwd: Option<CString>,
    /// The working directory to create first when missing (an image's `WorkingDir`).
    pub(crate) create_cwd: Option<Target>,
    pub(crate) exec: Exec,
}

/// How a command enters a running sandbox ([`crate::Child::join`]): a joiner process, with a
/// non-dumpable copy of this process's memory, joins the holder's namespaces and root, starts
/// the command sharing that copy (which joins its cgroup v1 groups itself), sends the parent its
/// pidfd, waits until the parent says the command is in its cgroup (on v2, the parent puts it
/// there), and becomes its relay: the init program, reporting its status and forwarding
/// signals. With `serve`, the joiner becomes a session's server itself.
pub(crate) struct Join {
    /// A pidfd of the session's holder.
    pub(crate) holder: RawFd,
    /// The holder's root directory (`/proc/<holder>/root`, opened at the session's start): the
    /// command's root, which need not be its mount namespace's (a sandbox that had to chroot).
    pub(crate) root: RawFd,
    /// The namespaces to join (`CLONE_NEW*`).
    pub(crate) flags: libc::c_int,
    /// The joiner becomes the session's server itself (the init program in its serve mode,
    /// see `src/sys/init/serve.rs`) rather than start a command.
    pub(crate) serve: bool,
    /// The command's stack (the joiner runs on the spawn's own).
    pub(crate) stack: crate::sys::clone::Stack,
    /// A pidfd of the joiner (the command's relay), for the command's parent-death check.
    pub(crate) relay: std::sync::atomic::AtomicI32,
    /// The embedding program's argument area, which the joiner overwrites in its copy.
    pub(crate) arg_area: Option<(usize, usize)>,
}

/// How a session's holder is made again ([`crate::Session::reset`]), once the session's init
/// has killed every other process of the session. The first process, the *renewer*, joins the
/// user, pid, network and cgroup namespaces of the init and starts, in new mount, ipc and uts
/// namespaces (`Plan::clone_flags`), a child that runs as a sandbox's first process would, with
/// two differences: it takes none of the namespaces' one-time steps (the network's loopback,
/// the cgroup namespace: they are the session's still); and once its payload, the new holder,
/// is started, it exits instead of becoming an init: the session's init, which outlives its
/// holders, takes the holder as its orphan. The renewer waits for its child and exits.
pub(crate) struct Renew {
    /// A pidfd of the session's init.
    pub(crate) init: RawFd,
    /// The namespaces of the init joined (`CLONE_NEW*`).
    pub(crate) flags: libc::c_int,
    /// The renewer's child's stack (the renewer runs on the spawn's own).
    pub(crate) stack: crate::sys::clone::Stack,
    /// Set by the renewer, which arranges the descriptors (then opens the host paths, which its
    /// child inherits): the status, parent, init program and gate descriptors, and the control
    /// socket, where they are now.
    pub(crate) arranged: Option<([RawFd; 4], RawFd)>,
}

/// The payload's working directory, as seen inside the sandbox.
#[derive(Clone, Copy, Debug)]
pub(crate) struct WorkingDir<'a> {
    pub(crate) path: &'a Path,
    /// Create it, and missing parents, when it does not exist (an image's `WorkingDir`, as runc
    /// does); otherwise a missing directory fails the spawn, as with `std::process`.
    pub(crate) create: bool,
}

/// The payload's program, argv and environment.
pub(crate) struct Exec {
    /// Paths to try in order (the program itself, or one per `PATH` entry), like `execvp`.
    pub(crate) candidates: Vec<CString>,
    /// The program as the caller named it, for errors.
    pub(crate) program: OsString,
    /// Keeps the strings `argv` points into alive.
    _args: Vec<CString>,
    _env: Vec<CString>,
    /// NULL-terminated pointer arrays for `execve`.
    pub(crate) argv: Vec<*const libc::c_char>,
    pub(crate) envp: Vec<*const libc::c_char>,
}

/// `PATH` used to find a program when the payload's environment has none (as `execvp` does).
pub(crate) const DEFAULT_PATH: &[u8] = b"/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

pub(crate) fn cstring(what: &'static str, value: &OsStr) -> Result<CString, Error> {
    CString::new(value.as_bytes()).map_err(|_| Error::NulByte { what, value: value.to_owned() })
}

impl Exec {
    /// The argument and environment strings (`KEY=value`), in order.
    pub(crate) fn strings(&self) -> (&[CString], &[CString]) {
        (&self._args, &self._env)
    }

    pub(crate) fn new(
        program: &OsStr,
        arg0: Option<&OsStr>,
        args: &[OsString],
        env: &[(OsString, OsString)],
    ) -> Result<Exec, Error> {
        if program.is_empty() {
            return Err(Error::invalid("program", "\"\"", "the program name is empty"));
        }
        let mut all_args = Vec::with_capacity(args.len() + 1);
        all_args.push(cstring("program", arg0.unwrap_or(program))?);
        for arg in args {
            all_args.push(cstring("argument", arg)?);
        }
        let mut all_env = Vec::with_capacity(env.len());
        let mut path = None;
        for (key, value) in env {
            if key.is_empty() || key.as_bytes().contains(&b'=') {
                return Err(Error::invalid(
                    "environment variable name",
                    format!("{key:?}"),
                    "names must be non-empty and must not contain '='",
                ));
            }
            let mut pair = key.clone();
            pair.push("=");
            pair.push(value);
            all_env.push(cstring("environment variable", &pair)?);
            if key == "PATH" {
                path = Some(value.as_bytes());
            }
        }
        let candidates = if program.as_bytes().contains(&b'/') {
            vec![cstring("program", program)?]
        } else {
            path.unwrap_or(DEFAULT_PATH)
                .split(|b| *b == b':')
                .map(|dir| {
                    // An empty PATH entry means the current directory.
                    let dir = if dir.is_empty() { b"." as &[u8] } else { dir };
                    let mut full = dir.to_vec();
                    full.push(b'/');
                    full.extend_from_slice(program.as_bytes());
                    cstring("program", OsStr::from_bytes(&full))
                })
                .collect::<Result<_, _>>()?
        };
        let pointers = |strings: &[CString]| {
            strings.iter().map(|s| s.as_ptr()).chain(std::iter::once(std::ptr::null())).collect()
        };
        Ok(Exec {
            candidates,
            program: program.to_owned(),
            argv: pointers(&all_args),
            envp: pointers(&all_env),
            _args: all_args,
            _env: all_env,
        })
    }
}

impl FdPlan {
    /// Plans descriptor moves. `moves` maps parent descriptors to payload numbers; targets must
    /// be distinct (checked by the command).
    pub(crate) fn new(moves: Vec<(RawFd, RawFd)>, channels: &Channels) -> FdPlan {
        let mut keep: Vec<RawFd> = vec![0, 1, 2];
        keep.extend(moves.iter().map(|&(_, dst)| dst).filter(|&dst| dst > 2));
        keep.sort_unstable();
        keep.dedup();
        keep.extend([-1; INTERNAL_SLOTS]);
        let highest = moves
            .iter()
            .flat_map(|&(src, dst)| [src, dst])
            .chain([channels.control, channels.status, channels.parent, channels.init_program, channels.gate])
            .chain(channels.parent_ends)
            .max()
            .unwrap_or(2);
        FdPlan { scratch: vec![-1; moves.len()], moves, keep, base: highest.max(2) + 1 }
    }
}

impl<'a> Plan<'a> {
    pub(crate) fn new(
        config: &'a Config,
        exec: Exec,
        cwd: Option<WorkingDir<'_>>,
        moves: Vec<(RawFd, RawFd)>,
        channels: Channels,
    ) -> Result<Plan<'a>, Error> {
        let create_cwd = cwd.filter(|dir| dir.create);
        let cwd = cwd.map(|dir| cstring("working directory", dir.path.as_os_str())).transpose()?;
        // (After the check above, which names a bad path as the working directory.)
        let create_cwd = create_cwd.map(|dir| target(dir.path)).transpose()?;
        Ok(Plan {
            clone_flags: config.namespaces.clone_flags(),
            use_init: config.use_init(),
            share_memory: !config.changes_ids(),
            become_root: config.become_root,
            cgroup_ns: config.namespaces.contains(crate::Namespaces::CGROUP),
            payload_stack: None,
            hold: false,
            await_seal: false,
            join: None,
            renew: None,
            join_ns: Vec::new(),
            cgroup_tasks: Vec::new(),
            parent_pid: nix::unistd::getpid().as_raw(),
            detached: config.detached,
            // Rounded up: the init's deadline must not come before the embedder's.
            wall_limit_ms: config
                .limits
                .wall_time
                .and_then(|w| i32::try_from(w.as_micros().div_ceil(1000).max(1)).ok())
                .unwrap_or(-1),
            terminal: None,
            fds: FdPlan::new(moves, &channels),
            channels,
            hostname: config.hostname.as_deref(),
            sysctls: &config.sysctls,
            domainname: config.domainname.as_deref(),
            time_offsets: config.time_offsets.as_deref(),
            fs: &config.fs,
            host_fds: vec![-1; config.fs.host_sources().count()],
            loopback: config.loopback(),
            creds: Creds {
                groups: config.groups.as_deref(),
                gid: config.user.map(|(_, gid)| gid),
                uid: config.user.map(|(uid, _)| uid),
                caps: config.caps,
                no_new_privs: config.no_new_privs,
                umask: config.umask,
                landlock: config.landlock.as_ref(),
                seccomp: config.seccomp.as_deref(),
                rlimits: &config.rlimits,
            },
            cwd,
            create_cwd,
            exec,
        })
    }

    /// Turns a failure record from the child into the error the caller sees.
    pub(crate) fn failure_to_error(&self, record: &[u8; FAILURE_LEN]) -> Error {
        decode_failure(record, Some(self))
    }
}

/// Turns a failure record into an error; without the plan (a [`crate::StartGate`] opened by
/// another process), the paths and values a step works on are not known and are left empty.
pub(crate) fn decode_failure(record: &[u8; FAILURE_LEN], plan: Option<&Plan<'_>>) -> Error {
    let word = |i: usize| {
        let mut b = [0u8; 4];
        b.copy_from_slice(&record[i * 4..i * 4 + 4]);
        u32::from_ne_bytes(b)
    };
    let (step, errno, index) = (word(0), word(1) as i32, word(2) as usize);
    let source = std::io::Error::from_raw_os_error(errno);
    let Some(step) = Step::from_u32(step) else {
        return Error::spawn(format!("sandbox setup (unknown step {step})"), source);
    };
    let cwd = || plan.and_then(|p| p.cwd.as_deref()).map(path_of).unwrap_or_default();
    let stage = match step {
        Step::Signals => Stage::Signals,
        Step::DeathSignal => Stage::DeathSignal,
        Step::Fds => Stage::Fds { fd: plan.and_then(|p| p.fds.moves.get(index)).map_or(-1, |m| m.1) },
        Step::BecomeRoot => Stage::BecomeRoot,
        Step::CgroupNamespace => Stage::CgroupNamespace,
        Step::SessionKeyring => Stage::SessionKeyring,
        Step::NonDumpable => Stage::NonDumpable,
        Step::NewSession => Stage::NewSession,
        Step::Terminal => Stage::Terminal,
        Step::Hostname => Stage::Hostname,
        Step::Domainname => Stage::Domainname,
        Step::TimeNamespace => Stage::TimeNamespace,
        Step::MountPropagation => Stage::MountPropagation,
        // The clone had room for the sandbox's user namespace, not for the nested one.
        Step::LockMounts if errno == libc::ENOSPC => return crate::probe::user_namespaces_used_up(),
        Step::Root | Step::Mount | Step::PivotRoot | Step::LockMounts => match plan {
            Some(plan) => plan.fs.stage(step, index),
            None => Stage::Mount { what: String::new(), target: PathBuf::new() },
        },
        Step::Loopback => Stage::Loopback,
        Step::ForkPayload => Stage::ForkPayload,
        Step::SetGroups => Stage::SetGroups,
        Step::SetGid => Stage::SetGid { gid: plan.and_then(|p| p.creds.gid).unwrap_or(u32::MAX) },
        Step::SetUid => Stage::SetUid { uid: plan.and_then(|p| p.creds.uid).unwrap_or(u32::MAX) },
        Step::Rlimits => Stage::Rlimits,
        Step::Capabilities => Stage::Capabilities,
        Step::NoNewPrivs => Stage::NoNewPrivs,
        Step::CreateWorkingDir => Stage::CreateWorkingDir { dir: cwd() },
        Step::Chdir => Stage::Chdir { dir: cwd() },
        Step::Landlock => Stage::Landlock {
            path: plan.and_then(|p| p.creds.landlock).map(|l| l.path(index)).unwrap_or_default(),
        },
        Step::SyscallFilter => Stage::SyscallFilter,
        Step::Init => Stage::Init,
        Step::JoinSession => Stage::JoinSession,
        Step::Gate => Stage::Gate,
        // As the parent's attach would have said it.
        Step::JoinCgroup => {
            let (label, leaf) = plan
                .and_then(|p| p.cgroup_tasks.get(index))
                .map(|t| (t.1.as_str(), t.2.clone()))
                .unwrap_or_default();
            return Error::Cgroup { op: format!("join {label} cgroup"), path: leaf, source };
        }
        Step::JoinNamespace => Stage::JoinNamespace {
            path: plan.and_then(|p| p.join_ns.get(index)).map(|j| j.2.clone()).unwrap_or_default(),
        },
        Step::Sysctl => Stage::Sysctl {
            key: plan
                .and_then(|p| p.sysctls.get(index))
                .map(|(path, _)| {
                    path_of(path)
                        .strip_prefix("/proc/sys")
                        .map(|k| k.to_string_lossy().trim_start_matches('/').replace('/', "."))
                        .unwrap_or_default()
                })
                .unwrap_or_default(),
        },
        Step::Exec => {
            let program = match plan {
                Some(plan) => match plan.exec.candidates.get(index) {
                    Some(path) if source.kind() != std::io::ErrorKind::NotFound => path_of(path),
                    _ => PathBuf::from(&plan.exec.program),
                },
                None => PathBuf::new(),
            };
            return Error::Exec { program, source };
        }
    };
    Error::Setup { stage, source }
}

/// The embedding process's argument area (`arg_start`, `arg_end` of `/proc/self/stat`), read
/// once; `None` if /proc is not there to say. The cgroup reaper overwrites its copy of it with
/// its name.
pub(crate) fn arg_area() -> Option<(usize, usize)> {
    static AREA: std::sync::OnceLock<Option<(usize, usize)>> = std::sync::OnceLock::new();
    *AREA.get_or_init(|| {
        let stat = std::fs::read_to_string("/proc/self/stat").ok()?;
        // Fields after the command name, which is in parentheses and may hold anything.
        let rest = stat.get(stat.rfind(')')? + 2..)?;
        let field = |n: usize| rest.split(' ').nth(n - 3)?.trim().parse::<usize>().ok();
        let (start, end) = (field(48)?, field(49)?);
        (start > 0 && end > start).then_some((start, end))
    })
}

pub(crate) fn path_of(s: &CStr) -> PathBuf {
    PathBuf::from(OsStr::from_bytes(s.to_bytes()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sys::wire;

    #[test]
    fn the_steps_a_sessions_server_reports_are_the_librarys_steps() {
        let pairs = [
            (wire::STEP_DEATH_SIGNAL, Step::DeathSignal),
            (wire::STEP_FDS, Step::Fds),
            (wire::STEP_SESSION_KEYRING, Step::SessionKeyring),
            (wire::STEP_NEW_SESSION, Step::NewSession),
            (wire::STEP_FORK, Step::ForkPayload),
            (wire::STEP_RLIMITS, Step::Rlimits),
            (wire::STEP_CREATE_CWD, Step::CreateWorkingDir),
            (wire::STEP_LANDLOCK, Step::Landlock),
            (wire::STEP_CHDIR, Step::Chdir),
            (wire::STEP_EXEC, Step::Exec),
            (wire::STEP_JOIN_SESSION, Step::JoinSession),
            (wire::STEP_TERMINAL, Step::Terminal),
        ];
        for (number, step) in pairs {
            assert_eq!(number, step as u32, "{step:?}");
        }
        assert_eq!(wire::FAILURE_LEN, FAILURE_LEN);
    }
}
