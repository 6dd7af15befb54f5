//! [`Command`]: one program to run in a [`Sandbox`], configured like `std::process::Command`.
//! Setters never fail; problems surface once, at [`Command::spawn`].

use std::collections::BTreeMap;
use std::ffi::{OsStr, OsString};
use std::fs::File;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd, RawFd};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

use crate::plan::WorkingDir;
use crate::{Child, Error, ExitStatus, Output, Sandbox};

/// A program to run in a sandbox, with its arguments, environment, working directory, stdio and
/// extra descriptors.
///
/// Unlike `std::process::Command`, the environment starts **empty**: the payload sees exactly
/// the variables set here (and the image's), unless [`inherit_env`](Command::inherit_env) is
/// called, plus `PATH` and `HOME` defaults when none is set (see [`env`](Command::env)).
///
/// ```no_run
/// use stockade::{Namespaces, Sandbox};
/// # fn main() -> Result<(), stockade::Error> {
/// let sandbox = Sandbox::builder().namespaces(Namespaces::USER | Namespaces::PID).build()?;
/// let out = sandbox
///     .command("/bin/sh")
///     .args(["-c", "echo $GREETING"])
///     .env("GREETING", "hello")
///     .output()?;
/// assert_eq!(out.stdout, b"hello\n");
/// # Ok(()) }
/// ```
#[derive(Debug)]
pub struct Command {
    sandbox: Sandbox,
    /// The session this command runs in, if any.
    session: Option<std::sync::Arc<crate::session::Target>>,
    program: OsString,
    /// The payload's `argv[0]` when not the program (see [`Command::arg0`]).
    arg0: Option<OsString>,
    args: Vec<OsString>,
    inherit_env: bool,
    env: BTreeMap<OsString, Option<OsString>>,
    cwd: Option<PathBuf>,
    /// `cwd` is the image's `WorkingDir`, created at spawn if missing.
    cwd_from_image: bool,
    pub(crate) stdin: Option<Stdio>,
    pub(crate) stdout: Option<Stdio>,
    pub(crate) stderr: Option<Stdio>,
    /// `(target, descriptor, passed as it is)`; see [`Command::fd_unrestricted`].
    fds: Vec<(RawFd, OwnedFd, bool)>,
    /// A pseudo-terminal for the payload, of this size.
    terminal: Option<crate::sys::pty::Size>,
    /// Called once the sandbox's namespaces exist, before its setup (see `on_created`).
    on_created: Option<CreatedHook>,
}

/// The hook of [`Command::on_created`].
pub(crate) struct CreatedHook(pub(crate) Box<dyn FnMut(u32) -> std::io::Result<()> + Send>);

impl std::fmt::Debug for CreatedHook {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("CreatedHook")
    }
}

impl Command {
    pub(crate) fn new(sandbox: Sandbox, program: &OsStr) -> Command {
        let (env, cwd) = match &sandbox.config.run_defaults {
            Some(d) => (d.env.iter().map(|(k, v)| (k.clone(), Some(v.clone()))).collect(), d.cwd.clone()),
            None => (BTreeMap::new(), None),
        };
        Command {
            sandbox,
            session: None,
            program: program.to_owned(),
            arg0: None,
            args: Vec::new(),
            inherit_env: false,
            env,
            cwd_from_image: cwd.is_some(),
            cwd,
            stdin: None,
            stdout: None,
            stderr: None,
            fds: Vec::new(),
            terminal: None,
            on_created: None,
        }
    }

    /// Adds an argument.
    pub fn arg(&mut self, arg: impl AsRef<OsStr>) -> &mut Self {
        self.args.push(arg.as_ref().to_owned());
        self
    }

    /// Adds several arguments.
    pub fn args<I, S>(&mut self, args: I) -> &mut Self
    where
        I: IntoIterator<Item = S>,
        S: AsRef<OsStr>,
    {
        self.args.extend(args.into_iter().map(|a| a.as_ref().to_owned()));
        self
    }

    /// Sets the payload's `argv[0]` (default: the program as given), as
    /// [`std::os::unix::process::CommandExt::arg0`] does.
    pub fn arg0(&mut self, arg: impl AsRef<OsStr>) -> &mut Self {
        self.arg0 = Some(arg.as_ref().to_owned());
        self
    }

    /// Sets an environment variable of the payload. The environment starts empty; when neither
    /// the caller nor the image sets them, the payload gets `PATH` (the usual system
    /// directories) and `HOME` (its user's home directory from the sandbox's `/etc/passwd`,
    /// else `/`), as Docker gives them.
    pub fn env(&mut self, key: impl AsRef<OsStr>, value: impl AsRef<OsStr>) -> &mut Self {
        self.env.insert(key.as_ref().to_owned(), Some(value.as_ref().to_owned()));
        self
    }

    /// Sets several environment variables.
    pub fn envs<I, K, V>(&mut self, vars: I) -> &mut Self
    where
        I: IntoIterator<Item = (K, V)>,
        K: AsRef<OsStr>,
        V: AsRef<OsStr>,
    {
        for (k, v) in vars {
            self.env(k, v);
        }
        self
    }

    /// Removes a variable (set here, or inherited with [`inherit_env`](Self::inherit_env)).
    /// Removing `PATH` or `HOME` also keeps out their defaults (see [`env`](Self::env)).
    pub fn env_remove(&mut self, key: impl AsRef<OsStr>) -> &mut Self {
        self.env.insert(key.as_ref().to_owned(), None);
        self
    }

    /// Removes every variable set so far and stops inheriting the host's environment.
    pub fn env_clear(&mut self) -> &mut Self {
        self.env.clear();
        self.inherit_env = false;
        self
    }

    /// Starts the payload's environment from the embedding program's (read at spawn time);
    /// variables set or removed here still apply on top. Off by default: nothing of the host's
    /// environment leaks into a sandbox unless asked.
    pub fn inherit_env(&mut self) -> &mut Self {
        self.inherit_env = true;
        self
    }

    /// Like [`current_dir`](Self::current_dir), creating the directory (as root of the sandbox,
    /// before its ids change; a session command, with its own ids and rules) when it is missing,
    /// as an image's or an OCI spec's is.
    #[cfg(feature = "oci")]
    pub(crate) fn current_dir_creating(&mut self, dir: impl AsRef<Path>) -> &mut Self {
        self.cwd = Some(dir.as_ref().to_owned());
        self.cwd_from_image = true;
        self
    }

    /// The payload's working directory, as seen inside the sandbox (default: the embedding
    /// program's).
    pub fn current_dir(&mut self, dir: impl AsRef<Path>) -> &mut Self {
        self.cwd = Some(dir.as_ref().to_owned());
        self.cwd_from_image = false;
        self
    }

    /// The payload's standard input (default: inherit for `spawn`/`status`, null for `output`).
    pub fn stdin(&mut self, cfg: impl Into<Stdio>) -> &mut Self {
        self.stdin = Some(cfg.into());
        self
    }

    /// The payload's standard output (default: inherit for `spawn`/`status`, piped for
    /// `output`).
    pub fn stdout(&mut self, cfg: impl Into<Stdio>) -> &mut Self {
        self.stdout = Some(cfg.into());
        self
    }

    /// The payload's standard error (default: inherit for `spawn`/`status`, piped for
    /// `output`).
    pub fn stderr(&mut self, cfg: impl Into<Stdio>) -> &mut Self {
        self.stderr = Some(cfg.into());
        self
    }

    /// Passes `fd` to the payload as descriptor number `target` (3 or above; 0-2 are set with
    /// [`stdin`](Self::stdin) and friends). The command keeps `fd` and passes it again on every
    /// spawn. No other descriptor of the embedding program reaches the payload.
    ///
    /// The payload can do no more with it than `fd` allows, although a descriptor is also a way
    /// to its file (`/proc/self/fd/N` reopens it with any mode the file's permissions give the
    /// payload's ids, and lets an owner chmod it). The same holds for stdio given as a file or
    /// inherited:
    /// - a regular file opened read-only (or `O_PATH`) is passed as a new descriptor of the same
    ///   file on a read-only mount, so reopening it writable (or chmod) fails with `EROFS`; the
    ///   payload's descriptor has its own offset, starting at `fd`'s. A device node (not a
    ///   terminal) likewise, on a read-only and nodev mount: it cannot be reopened at all nor its
    ///   host node changed. This needs root (`CAP_SYS_ADMIN`); without it the spawn fails with
    ///   [`Error::NotPermitted`] if the file is writable by, or belongs to, the embedding
    ///   program's user (and so a payload running as it), and passes it as it is otherwise;
    /// - a named FIFO opened read-only cannot be pinned (a FIFO opens for writing on any mount):
    ///   refused like such a file when this user may write it or owns it;
    /// - a directory is refused ([`Error::InvalidValue`]): `openat(fd, "../..")` reaches the whole
    ///   filesystem it is on;
    /// - pipes, sockets and files opened for writing pass as they are.
    ///
    /// [`fd_unrestricted`](Self::fd_unrestricted) passes any of them as it is.
    ///
    /// ```no_run
    /// # use stockade::{Namespaces, Sandbox};
    /// # fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// # let sandbox = Sandbox::builder().build()?;
    /// let config = std::fs::File::open("/etc/hostname")?;
    /// sandbox.command("/bin/cat").arg("/dev/fd/3").fd(3, config).status()?;
    /// # Ok(()) }
    /// ```
    pub fn fd(&mut self, target: RawFd, fd: impl Into<OwnedFd>) -> &mut Self {
        self.fds.push((target, fd.into(), false));
        self
    }

    /// Like [`fd`](Self::fd), but passes `fd` exactly as it is, with everything it reaches: a
    /// directory's whole filesystem (through `..`), and its file reopened with any mode the
    /// payload's ids are allowed (through `/proc/self/fd/N`). For directories and files the
    /// payload may fully use.
    pub fn fd_unrestricted(&mut self, target: RawFd, fd: impl Into<OwnedFd>) -> &mut Self {
        self.fds.push((target, fd.into(), true));
        self
    }

    /// The program, as given.
    pub fn get_program(&self) -> &OsStr {
        &self.program
    }

    /// The arguments (without the program).
    pub fn get_args(&self) -> impl Iterator<Item = &OsStr> {
        self.args.iter().map(OsString::as_os_str)
    }

    /// The sandbox this command runs in.
    pub fn get_sandbox(&self) -> &Sandbox {
        &self.sandbox
    }

    /// Starts the payload and returns a handle to it once it has been exec'd.
    ///
    /// The sandbox is tied to the thread that spawns it: its first process gets `SIGKILL` when
    /// that thread exits (the parent-death signal follows the spawning thread). Spawn from a
    /// thread that outlives the sandbox, as with any `PR_SET_PDEATHSIG` user.
    ///
    /// # Errors
    /// Invalid command settings ([`Error::NulByte`], [`Error::InvalidValue`]) before any process
    /// exists; [`Error::Exec`] when the program cannot be executed inside the sandbox (as
    /// `std`, `source.kind()` is `NotFound` for a missing program); [`Error::Setup`] when a
    /// setup step fails in the child; [`Error::Unsupported`] when the host refuses the
    /// sandbox's user namespaces (tried at build only where a sign says it may, see
    /// [`crate::probe`]); [`Error::Cgroup`] when it cannot join its cgroup; [`Error::Spawn`] /
    /// [`Error::IdMapHelper`] for failures in the embedding process. On error no process or
    /// descriptor is left behind.
    pub fn spawn(&mut self) -> Result<Child, Error> {
        self.spawn_with_defaults(StdioKind::Inherit, StdioKind::Inherit, None)
    }

    /// Spawns the sandbox up to its start: namespaces, filesystem, cgroups, terminal and
    /// credentials are set up, and the payload waits at `gate` before its last steps
    /// (capabilities, `no_new_privs`, Landlock, working directory, syscall filter) and its exec,
    /// until [`StartGate::start`](crate::StartGate::start) opens it — from this process or
    /// another one. No code of the payload's has run when this returns. This is OCI's
    /// `create`; with [`SandboxBuilder::outlive_parent`](crate::SandboxBuilder::outlive_parent)
    /// and [`Child::detach`] the sandbox is left to wait for a later `start`. The gate goes to
    /// the sandbox: this process closes its copy, so once the payload has taken its one
    /// connection nothing listens there any more. A sandbox that outlives this process waits
    /// for [`Child::detach`] before it takes a start (see there).
    ///
    /// While it waits, its signals take their default actions (a fatal one ends it there),
    /// and its syscall filter is in place already when the payload keeps
    /// `allow_new_privileges` (it needs `sendto`, `rt_sigprocmask`, `read`, `accept4`, `dup3`
    /// and `close`);
    /// time limits count from the spawn.
    ///
    /// # Errors
    /// As [`spawn`](Command::spawn), for every step up to the gate; a session command cannot
    /// wait at one ([`Error::InvalidValue`]).
    pub fn spawn_created(&mut self, gate: crate::StartGate) -> Result<Child, Error> {
        if self.session.is_some() {
            return Err(Error::invalid(
                "spawn_created",
                "a session command",
                "only a sandbox's own payload waits at a start gate",
            ));
        }
        self.spawn_with_defaults(StdioKind::Inherit, StdioKind::Inherit, Some(gate.as_fd()))
    }

    /// Runs the payload to completion, with stdin inherited unless set.
    pub fn status(&mut self) -> Result<ExitStatus, Error> {
        let mut child = self.spawn()?;
        child.wait().map_err(|source| Error::Io { op: "wait for sandbox", source })
    }

    /// Runs the payload to completion and collects its output: stdout and stderr are piped
    /// and stdin is null unless set.
    pub fn output(&mut self) -> Result<Output, Error> {
        let child = self.spawn_with_defaults(StdioKind::Null, StdioKind::Piped, None)?;
        child.wait_with_output()
    }

    /// [`spawn`](Command::spawn) for async code (feature `tokio`): the sandbox is registered
    /// with the current tokio runtime, to be awaited without blocking a thread. Spawning itself
    /// runs on the calling thread (the few milliseconds of setup, as `tokio::process` does for
    /// fork and exec).
    ///
    /// # Errors
    /// As [`spawn`](Command::spawn); [`Error::Io`] when not called from within a tokio runtime
    /// (the sandbox is then killed and reaped).
    ///
    /// # Panics
    /// If the current tokio runtime was built without its I/O driver (`enable_io`), as tokio's
    /// own I/O types do.
    #[cfg(feature = "tokio")]
    pub fn spawn_async(&mut self) -> Result<crate::AsyncChild, Error> {
        crate::AsyncChild::new(self.spawn()?)
    }

    /// [`status`](Command::status) for async code (feature `tokio`).
    #[cfg(feature = "tokio")]
    pub async fn status_async(&mut self) -> Result<ExitStatus, Error> {
        let mut child = self.spawn_async()?;
        child.wait().await.map_err(|source| Error::Io { op: "wait for sandbox", source })
    }

    /// [`output`](Command::output) for async code (feature `tokio`): stdout and stderr are
    /// piped and stdin is null unless set.
    #[cfg(feature = "tokio")]
    pub async fn output_async(&mut self) -> Result<Output, Error> {
        let child = self.spawn_with_defaults(StdioKind::Null, StdioKind::Piped, None)?;
        crate::AsyncChild::new(child)?.wait_with_output().await
    }

    /// Calls `hook` in this process with the pid of the sandbox's first process (its init
    /// with a pid namespace) once its namespaces exist and it has its cgroups and id maps, but
    /// before it sets anything up inside: no mount is made and nothing of the payload's has run.
    /// What OCI's `createRuntime` and `prestart` hooks see (a network namespace to configure
    /// through `/proc/<pid>/ns/net`). An error from the hook ends the spawn
    /// ([`Error::Hook`]); the sandbox is killed and nothing is left behind. Not for session
    /// commands (which make no namespaces): ignored there.
    pub fn on_created(&mut self, hook: impl FnMut(u32) -> std::io::Result<()> + Send + 'static) -> &mut Self {
        self.on_created = Some(CreatedHook(Box::new(hook)));
        self
    }

    /// Gives the payload a pseudo-terminal of `rows` × `cols`, as `docker run -t` does: the
    /// terminal is made inside the sandbox, in its own `/dev/pts` (which a `/dev` of stockade's
    /// has: [`Mount::dev`](crate::Mount::dev), [`Root::tmpfs`](crate::Root::tmpfs) with the
    /// system directories, an image), and is the payload's controlling terminal, with the
    /// payload leading a session of its own: job control works (a `^C` written to the terminal
    /// interrupts the foreground job), and no terminal of the host's is ever the payload's, so
    /// `TIOCSTI`-style input injection into the host stays impossible.
    ///
    /// It becomes the payload's stdin, stdout and stderr, except those set with
    /// [`stdin`](Command::stdin) / [`stdout`](Command::stdout) / [`stderr`](Command::stderr)
    /// (and, with [`output`](Command::output), stdout and stderr, which it collects). The
    /// sandbox needs a `/dev/pts` of its own: a spawn without one is [`Error::InvalidValue`].
    /// The caller's end is [`Child::terminal`](crate::Child::terminal): read what the payload
    /// prints, write what it reads, [`resize`](crate::Terminal::resize) it (the payload gets
    /// `SIGWINCH`).
    pub fn terminal(&mut self, rows: u16, cols: u16) -> &mut Self {
        self.terminal = Some(crate::sys::pty::Size { rows, cols });
        self
    }

    fn spawn_with_defaults(
        &mut self,
        stdin: StdioKind,
        out: StdioKind,
        gate: Option<BorrowedFd<'_>>,
    ) -> Result<Child, Error> {
        if self.terminal.is_some() && !self.sandbox.config.fs.own_devpts() {
            return Err(Error::invalid(
                "terminal",
                "a pseudo-terminal for the payload",
                "the sandbox has no /dev/pts of its own (a terminal is never made in the host's): give \
                 it a Root, whose /dev comes with one, or Mount::dev(\"/dev\")",
            ));
        }
        // With a terminal, whatever stdio the caller did not set is the terminal; but what
        // `output` collects stays piped.
        let (stdin, out) = match (&self.terminal, out) {
            (None, out) => (stdin, out),
            (Some(_), StdioKind::Piped) => (StdioKind::Terminal, StdioKind::Piped),
            (Some(_), _) => (StdioKind::Terminal, StdioKind::Terminal),
        };
        let stdio = [
            (0, self.stdin.as_ref().map_or(&stdin, |s| &s.0)),
            (1, self.stdout.as_ref().map_or(&out, |s| &s.0)),
            (2, self.stderr.as_ref().map_or(&out, |s| &s.0)),
        ];
        let mut seen = Vec::with_capacity(self.fds.len());
        let limit = if self.fds.is_empty() {
            0
        } else {
            nix::sys::resource::getrlimit(nix::sys::resource::Resource::RLIMIT_NOFILE)
                .map_or(1024, |(soft, _)| soft.min(i32::MAX as u64 / 2) as RawFd)
        };
        for (target, ..) in &self.fds {
            if *target >= limit {
                return Err(Error::invalid(
                    "fd",
                    target,
                    format!("at or above the descriptor limit {limit} (RLIMIT_NOFILE)"),
                ));
            }
            if *target < 3 {
                return Err(Error::invalid(
                    "fd",
                    target,
                    "descriptors 0-2 are the payload's stdio; set them with stdin/stdout/stderr",
                ));
            }
            if seen.contains(target) {
                return Err(Error::invalid("fd", target, "passed twice to the same command"));
            }
            seen.push(*target);
        }
        // Descriptors made for this spawn only (read-only reopenings), kept until it is done.
        let mut made: Vec<(RawFd, StdioKind)> = Vec::new();
        let mut passed: Vec<(RawFd, RawFd)> = Vec::with_capacity(self.fds.len());
        for (target, fd, unrestricted) in &self.fds {
            let pinned = if *unrestricted { None } else { restrict(*target, fd.as_fd(), &self.sandbox)? };
            let raw = pinned.as_ref().map_or(fd.as_raw_fd(), AsRawFd::as_raw_fd);
            passed.push((raw, *target));
            made.extend(pinned.map(|p| (*target, StdioKind::Fd(p))));
        }
        // Stdio follows the same rule: a file given (or inherited) read-only stays read-only, and
        // no device node (/dev/null included) can be changed through it.
        for (target, kind) in stdio {
            // On a read-only mount already: nothing more to pin. (Otherwise, as for any file.)
            // (Made once per sandbox rather than on every spawn: a mount clone and two attribute
            // changes, each under the kernel's global mount lock.)
            let pinned_null = match kind {
                StdioKind::Null => self
                    .sandbox
                    .config
                    .null_device
                    .get_or_init(|| crate::sys::null_device().ok())
                    .as_ref()
                    .and_then(|pinned| crate::sys::open_null(pinned.as_fd()).ok()),
                _ => None,
            };
            if let Some(null) = pinned_null {
                made.push((target, StdioKind::Fd(null)));
                continue;
            }
            let null = match kind {
                StdioKind::Null => Some(OwnedFd::from(
                    std::fs::OpenOptions::new()
                        .read(true)
                        .write(true)
                        .open("/dev/null")
                        .map_err(|e| Error::spawn("open /dev/null", e))?,
                )),
                _ => None,
            };
            let fd = match (kind, &null) {
                (_, Some(null)) => Some(null.as_fd()),
                (StdioKind::Fd(fd), _) => Some(fd.as_fd()),
                (StdioKind::Inherit, _) => crate::sys::borrow_std(target),
                _ => None,
            };
            match (fd.map(|fd| restrict(target, fd, &self.sandbox)).transpose()?.flatten(), null) {
                (Some(pinned), _) => made.push((target, StdioKind::Fd(pinned))),
                (None, Some(null)) => made.push((target, StdioKind::Fd(null))),
                (None, None) => {}
            }
        }
        let stdio = stdio.map(|(target, kind)| {
            (target, made.iter().find(|(t, _)| *t == target && target < 3).map_or(kind, |(_, k)| k))
        });
        let cwd = self.cwd.as_deref().map(|path| WorkingDir { path, create: self.cwd_from_image });
        if let Some(session) = &self.session
            && let Some(server) = &session.server
        {
            return crate::session::serve::spawn(
                &self.sandbox.config,
                server.as_fd(),
                session.keyring,
                &self.program,
                self.arg0.as_deref(),
                &self.args,
                &self.environment(),
                cwd,
                stdio,
                passed,
                self.terminal,
            );
        }
        crate::spawn::spawn(
            &self.sandbox.config,
            &self.program,
            self.arg0.as_deref(),
            &self.args,
            &self.environment(),
            cwd,
            stdio,
            passed,
            self.terminal,
            self.on_created
                .as_mut()
                .filter(|_| self.session.is_none())
                .map(|h| &mut *h.0 as &mut crate::spawn::Hook),
            match &self.session {
                Some(s) => crate::spawn::Mode::Join {
                    holder: s.holder.as_fd(),
                    root: s.root.as_fd(),
                    flags: s.flags,
                    program: s.program(),
                    cgroups: s.cgroups.as_deref(),
                    serve: false,
                },
                None => match gate {
                    Some(gate) => crate::spawn::Mode::Gated { gate },
                    None => crate::spawn::Mode::Run,
                },
            },
        )
        .map(|spawned| spawned.child)
    }

    /// Makes this command join the running sandbox `target` (see [`crate::Detached::join`]).
    pub(crate) fn join_target(&mut self, target: crate::session::Target) {
        self.session = Some(std::sync::Arc::new(target));
    }

    /// A command that runs in a started session.
    pub(crate) fn in_session(session: std::sync::Arc<crate::session::Target>, program: &OsStr) -> Command {
        let mut command = Command::new(session.sandbox.clone(), program);
        command.session = Some(session);
        command
    }

    /// The payload's final environment, sorted by name.
    fn environment(&self) -> Vec<(OsString, OsString)> {
        let mut vars: BTreeMap<OsString, OsString> =
            if self.inherit_env { std::env::vars_os().collect() } else { BTreeMap::new() };
        for (k, v) in &self.env {
            match v {
                Some(v) => vars.insert(k.clone(), v.clone()),
                None => vars.remove(k),
            };
        }
        // As Docker does when neither the caller nor the image sets them (nor removed them).
        let home = self.sandbox.config.home.as_deref().unwrap_or(Path::new("/"));
        let defaults = [("PATH", OsStr::from_bytes(crate::plan::DEFAULT_PATH)), ("HOME", home.as_os_str())];
        for (key, value) in defaults {
            if !self.env.contains_key(OsStr::new(key)) {
                vars.entry(key.into()).or_insert_with(|| value.to_owned());
            }
        }
        vars.into_iter().collect()
    }
}

/// What the payload gets as descriptor `target` for `fd` (a passed descriptor or stdio; see
/// [`Command::fd`]): `None` to pass `fd` as it is, or a new descriptor of the same file that
/// cannot be reopened with more access, nor have its mode changed, through `/proc/self/fd`.
fn restrict(target: RawFd, fd: BorrowedFd<'_>, sandbox: &Sandbox) -> Result<Option<OwnedFd>, Error> {
    use nix::fcntl::{FcntlArg, OFlag, fcntl};
    use nix::sys::stat::SFlag;
    const PIPEFS_MAGIC: i64 = 0x5049_5045;
    let what = |op: &str| format!("{op} of the descriptor passed as fd {target}");
    let st = nix::sys::stat::fstat(fd).map_err(|e| Error::spawn(what("fstat"), e))?;
    let kind = SFlag::from_bits_truncate(st.st_mode) & SFlag::S_IFMT;
    if kind == SFlag::S_IFDIR {
        return Err(Error::invalid(
            "fd",
            target,
            "is a directory, which reaches its whole filesystem through `..` (openat(fd, \"../..\")); \
             pass it with Command::fd_unrestricted if that is meant",
        ));
    }
    let flags = OFlag::from_bits_truncate(
        fcntl(fd, FcntlArg::F_GETFL).map_err(|e| Error::spawn(what("F_GETFL"), e))?,
    );
    let path_only = flags.contains(OFlag::O_PATH);
    let read_only = path_only || flags & OFlag::O_ACCMODE == OFlag::O_RDONLY;
    let device = kind == SFlag::S_IFCHR || kind == SFlag::S_IFBLK;
    let named_fifo = kind == SFlag::S_IFIFO
        && nix::sys::statfs::fstatfs(fd).is_ok_and(|f| f.filesystem_type().0 != PIPEFS_MAGIC);
    // What can be reopened with more access: files and named FIFOs handed over for reading, and
    // devices (whose node a payload that owns it could also chmod on the host) — a terminal
    // excepted: whoever may read it may write it. Sockets cannot be reopened; a pipe's end can be
    // reopened as its other end, which reaches nothing beyond the pipe itself.
    // Only nodes without state of their own are reopened: a fresh open of /dev/fuse or
    // /dev/net/tun would lose the session the caller set up. The memory devices (major 1:
    // null, zero, full, random, ...) are what stdio uses.
    let stateless = libc::major(st.st_rdev) == 1;
    let device = device && !nix::unistd::isatty(fd).unwrap_or(false) && (read_only || stateless);
    if !(device || (read_only && (kind == SFlag::S_IFREG || named_fifo))) {
        return Ok(None);
    }
    // A FIFO opens for writing whatever mount it is on: only a caller that could not write it
    // either may pass it read-only.
    let access = if read_only { libc::O_RDONLY } else { (flags & OFlag::O_ACCMODE).bits() };
    let mode =
        if path_only { libc::O_PATH } else { access | libc::O_NOCTTY | (flags & OFlag::O_NONBLOCK).bits() };
    let pinned = if named_fifo { None } else { crate::sys::reopen_read_only(fd.as_raw_fd(), mode).ok() };
    if let Some(pinned) = pinned {
        if kind == SFlag::S_IFREG && !path_only {
            let offset = nix::unistd::lseek(fd, 0, nix::unistd::Whence::SeekCur).unwrap_or(0);
            nix::unistd::lseek(&pinned, offset, nix::unistd::Whence::SeekSet)
                .map_err(|e| Error::spawn(what("lseek"), e))?;
        }
        return Ok(Some(pinned));
    }
    // Not pinned (no privilege for a read-only mount, or a FIFO): safe only if the payload, whose
    // ids are at most this process's, could neither write the file nor, as its owner, chmod it.
    let owned = st.st_uid == nix::unistd::geteuid().as_raw();
    // Writable by everyone already (/dev/null), or handed over writable: nothing more to gain.
    if !read_only || (st.st_mode & 0o002 != 0 && !owned) {
        return Ok(None);
    }
    let link = format!("/proc/self/fd/{}", fd.as_raw_fd());
    // Only a clear "no" means not writable; anything else (no /proc to ask) counts as yes.
    let writable = !matches!(
        nix::unistd::faccessat(
            nix::fcntl::AT_FDCWD,
            link.as_str(),
            nix::unistd::AccessFlags::W_OK,
            nix::fcntl::AtFlags::AT_EACCESS,
        ),
        Err(nix::errno::Errno::EACCES | nix::errno::Errno::EROFS)
    );
    // The payload's ids may be more than this user's (a range through newuidmap): a file one of
    // them owns, or may write as its group, is as good as writable to it.
    let payload_owned = sandbox.config.user_ns.as_ref().is_some_and(|u| {
        let mapped = |map: &[crate::IdMap], id: u32| {
            map.iter().any(|r| id >= r.outside && u64::from(id) < u64::from(r.outside) + u64::from(r.count))
        };
        mapped(&u.uid_map, st.st_uid) || (st.st_mode & 0o020 != 0 && mapped(&u.gid_map, st.st_gid))
    });
    if writable || owned || payload_owned {
        return Err(Error::NotPermitted {
            what: format!("passing a read-only descriptor as fd {target} of a file this user may write or owns"),
            reason: "the payload, with this user's ids, could reopen it writable (or chmod it) through \
                     /proc/self/fd; pinning a file or device read-only needs CAP_SYS_ADMIN, and a FIFO cannot \
                     be pinned. Pass one it may not write, a copy, or use Command::fd_unrestricted (Stdio::unrestricted)"
                .into(),
        });
    }
    Ok(None)
}

/// What a payload's stdin, stdout or stderr is connected to.
///
/// ```
/// use stockade::Stdio;
/// let _ = Stdio::piped();
/// let _ = Stdio::from(std::fs::File::open("/dev/null").unwrap());
/// ```
#[derive(Debug)]
pub struct Stdio(pub(crate) StdioKind);

#[derive(Debug)]
pub(crate) enum StdioKind {
    Inherit,
    Null,
    Piped,
    Fd(OwnedFd),
    /// Passed as it is (see [`Stdio::unrestricted`]).
    Unrestricted(OwnedFd),
    /// The payload's terminal (see [`Command::terminal`]): made in the sandbox.
    Terminal,
}

impl Stdio {
    /// The embedding program's own descriptor.
    pub fn inherit() -> Stdio {
        Stdio(StdioKind::Inherit)
    }

    /// `/dev/null`.
    pub fn null() -> Stdio {
        Stdio(StdioKind::Null)
    }

    /// A new pipe; the other end is available on [`Child`] (`stdin`, `stdout`, `stderr`).
    pub fn piped() -> Stdio {
        Stdio(StdioKind::Piped)
    }

    /// `fd` exactly as it is, like [`Command::fd_unrestricted`]: unlike `Stdio::from(fd)`, a
    /// file opened read-only is not pinned read-only (the payload may reopen it with any mode
    /// its ids allow through `/proc/self/fd/N`). For files the payload may fully use.
    pub fn unrestricted(fd: impl Into<OwnedFd>) -> Stdio {
        Stdio(StdioKind::Unrestricted(fd.into()))
    }
}

impl From<OwnedFd> for Stdio {
    /// Any open descriptor: a file, a socket, one end of a pipe... It allows the payload no more
    /// than it allows, as with [`Command::fd`] (a file opened read-only stays read-only; a
    /// directory is refused); [`Stdio::unrestricted`] passes it as it is.
    fn from(fd: OwnedFd) -> Stdio {
        Stdio(StdioKind::Fd(fd))
    }
}

impl From<File> for Stdio {
    fn from(file: File) -> Stdio {
        Stdio(StdioKind::Fd(file.into()))
    }
}
