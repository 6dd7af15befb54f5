//! `stockade-runtime`: an OCI runtime with runc's command line, on the stockade library.
//!
//! Built with `cargo build --release --features runtime --bin stockade-runtime`. containerd
//! (`ctr run --runc-binary`, or a runtime handler's `BinaryName`) and Docker (`dockerd
//! --add-runtime`) drive it as they drive runc: `create` sets a container up from a bundle and
//! leaves its init waiting at a start gate, then exits (the container outlives it, reparented
//! to the caller's subreaper); `start` opens the gate; `state`, `kill`, `delete`, `list`, `ps`
//! act on the state kept under `--root`. What is not implemented answers with an error and a
//! non-zero exit, never a silent success.

mod hooks;
mod lifecycle;
mod resources;
mod state;

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use clap::{Parser, Subcommand, ValueEnum};

/// Command line, as runc's (global options before the command).
#[derive(Parser, Debug)]
#[command(name = "stockade-runtime", version, about = "An OCI runtime on stockade, with runc's command line")]
struct Cli {
    /// Where containers' state is kept.
    #[arg(long, default_value = "/run/stockade-runtime", global = true)]
    root: PathBuf,
    /// Write errors (and with --debug, progress) to this file instead of stderr.
    #[arg(long, global = true)]
    log: Option<PathBuf>,
    /// The log's format.
    #[arg(long = "log-format", value_enum, default_value = "text", global = true)]
    log_format: LogFormat,
    /// Log progress too.
    #[arg(long, global = true)]
    debug: bool,
    /// Manage cgroups through systemd (not supported: refused).
    #[arg(long = "systemd-cgroup", global = true)]
    systemd_cgroup: bool,
    /// runc's rootless switch ("true", "false", "auto"); stockade decides from the spec.
    #[arg(long = "rootless", id = "global_rootless")]
    rootless: Option<String>,
    /// Path of criu (checkpointing is not supported; the option is accepted and unused).
    #[arg(long, global = true)]
    criu: Option<PathBuf>,
    #[command(subcommand)]
    command: Cmd,
}

#[derive(Clone, Copy, Debug, ValueEnum)]
enum LogFormat {
    Text,
    Json,
}

#[derive(Subcommand, Debug)]
enum Cmd {
    /// Create a container from a bundle; its process waits for `start`.
    Create(CreateArgs),
    /// Start a created container's process.
    Start { id: String },
    /// Create and start a container; wait for it unless --detach.
    Run {
        #[command(flatten)]
        create: CreateArgs,
        /// Leave the container running and exit.
        #[arg(short, long)]
        detach: bool,
        /// Keep the container's state after it exits (foreground only).
        #[arg(long)]
        keep: bool,
    },
    /// Print a container's state (runtime-spec JSON).
    State { id: String },
    /// Send a signal to a container's init (default SIGTERM), or with --all to all its processes.
    Kill {
        id: String,
        signal: Option<String>,
        #[arg(short, long)]
        all: bool,
    },
    /// Delete a stopped (or created) container: its cgroups and state.
    Delete {
        id: String,
        /// Kill it first if it is running.
        #[arg(short, long)]
        force: bool,
    },
    /// List containers.
    List {
        #[arg(short, long, default_value = "table")]
        format: String,
        /// Ids only.
        #[arg(short, long)]
        quiet: bool,
    },
    /// List a container's processes.
    Ps {
        #[arg(short, long, default_value = "table")]
        format: String,
        id: String,
        /// Options for ps(1) (table format).
        #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
        ps_args: Vec<String>,
    },
    /// Print what this runtime supports (runtime-spec features JSON).
    Features,
    /// Write a default config.json into the bundle.
    Spec {
        #[arg(short, long, default_value = ".")]
        bundle: PathBuf,
        /// A spec for an unprivileged user (user namespace, id maps of the caller).
        #[arg(long)]
        rootless: bool,
    },
    /// Run a process in a running container.
    Exec(ExecArgs),
    /// Freeze a running container's processes.
    Pause { id: String },
    /// Thaw a paused container.
    Resume { id: String },
    /// Change a running container's cgroup limits (--resources JSON, or the flags).
    Update(UpdateArgs),
    /// A container's cgroup statistics: once with --stats, else every --interval (with OOM
    /// events) until it stops.
    Events {
        id: String,
        /// Print one statistics event and exit.
        #[arg(long)]
        stats: bool,
        /// Time between statistics events.
        #[arg(long, default_value = "5s")]
        interval: String,
    },
    /// Checkpoint a container (not supported).
    #[command(disable_help_flag = true)]
    Checkpoint {
        #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
        rest: Vec<String>,
    },
    /// Restore a container (not supported).
    #[command(disable_help_flag = true)]
    Restore {
        #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
        rest: Vec<String>,
    },
}

/// `create` and `run`'s options.
#[derive(clap::Args, Debug)]
pub struct CreateArgs {
    /// The container's id.
    pub id: String,
    /// The bundle directory (holding config.json).
    #[arg(short, long, default_value = ".")]
    pub bundle: PathBuf,
    /// Write the container's init pid here.
    #[arg(long = "pid-file")]
    pub pid_file: Option<PathBuf>,
    /// A Unix socket to send the terminal's master to (SCM_RIGHTS), when process.terminal.
    #[arg(long = "console-socket")]
    pub console_socket: Option<PathBuf>,
    /// Pass this many descriptors after stdio (3, 4, ...) to the container.
    #[arg(long = "preserve-fds", default_value_t = 0)]
    pub preserve_fds: u32,
    /// runc's switch to use chroot (MS_MOVE) over pivot_root: stockade always pivots.
    #[arg(long = "no-pivot")]
    pub no_pivot: bool,
    /// runc's switch to keep the caller's session keyring: stockade always makes a new one.
    #[arg(long = "no-new-keyring")]
    pub no_new_keyring: bool,
}

/// `exec`'s options, as runc's.
#[derive(clap::Args, Debug)]
pub struct ExecArgs {
    /// The process to run, as a runtime-spec `process` object in a JSON file (its `args`
    /// replace the command line's).
    #[arg(short, long)]
    pub process: Option<PathBuf>,
    /// Give the process a terminal (its master goes to --console-socket).
    #[arg(short, long)]
    pub tty: bool,
    #[arg(long = "console-socket")]
    pub console_socket: Option<PathBuf>,
    /// Leave the process running and exit (its relay is reaped by the caller's subreaper).
    #[arg(short, long)]
    pub detach: bool,
    /// Write the pid of the process's relay here.
    #[arg(long = "pid-file")]
    pub pid_file: Option<PathBuf>,
    /// The working directory.
    #[arg(long)]
    pub cwd: Option<PathBuf>,
    /// KEY=VALUE added to the environment.
    #[arg(short, long)]
    pub env: Vec<String>,
    /// `UID[:GID]`.
    #[arg(short, long)]
    pub user: Option<String>,
    /// Supplementary group ids.
    #[arg(short = 'g', long = "additional-gids")]
    pub additional_gids: Vec<u32>,
    /// Set no_new_privileges.
    #[arg(long = "no-new-privs")]
    pub no_new_privs: bool,
    #[arg(long = "preserve-fds", default_value_t = 0)]
    pub preserve_fds: u32,
    /// The container and, without --process, the command line.
    #[arg(required = true, trailing_var_arg = true, allow_hyphen_values = true)]
    pub rest: Vec<String>,
}

/// `update`'s arguments, as runc takes them.
#[derive(clap::Args, Debug)]
pub struct UpdateArgs {
    pub id: String,
    /// A LinuxResources JSON file, or "-" for stdin.
    #[arg(short, long)]
    pub resources: Option<String>,
    /// Memory limit (bytes, or with k, m, g).
    #[arg(long, allow_negative_numbers = true)]
    pub memory: Option<String>,
    /// Memory plus swap limit.
    #[arg(long, allow_negative_numbers = true)]
    pub memory_swap: Option<String>,
    /// Memory reservation (not supported).
    #[arg(long)]
    pub memory_reservation: Option<String>,
    /// Process limit.
    #[arg(long, allow_negative_numbers = true)]
    pub pids_limit: Option<String>,
    /// CPU CFS quota in microseconds.
    #[arg(long, allow_negative_numbers = true)]
    pub cpu_quota: Option<String>,
    /// CPU CFS period in microseconds.
    #[arg(long)]
    pub cpu_period: Option<String>,
    /// CPU shares.
    #[arg(long)]
    pub cpu_share: Option<String>,
    /// CPUs the container may use.
    #[arg(long)]
    pub cpuset_cpus: Option<String>,
    /// Memory nodes the container may use.
    #[arg(long)]
    pub cpuset_mems: Option<String>,
    /// Block I/O weight (10 to 1000).
    #[arg(long)]
    pub blkio_weight: Option<String>,
    /// Real-time CPU period (not supported).
    #[arg(long)]
    pub cpu_rt_period: Option<String>,
    /// Real-time CPU runtime (not supported).
    #[arg(long)]
    pub cpu_rt_runtime: Option<String>,
}

/// What went wrong, for the log and the exit code.
#[derive(Debug, thiserror::Error)]
pub enum Failure {
    #[error("{0}")]
    Bundle(#[from] stockade::oci::BundleError),
    #[error("{0}")]
    Sandbox(#[from] stockade::Error),
    #[error("container {0:?} does not exist")]
    NotFound(String),
    #[error("{0}")]
    State(String),
    #[error("{0}")]
    Usage(String),
    #[error("{0} is not supported by stockade-runtime")]
    Unsupported(String),
    #[error("{field} ({}) failed: {reason}", path.display())]
    Hook { field: String, path: PathBuf, reason: String },
    #[error("{op} {}: {source}", path.display())]
    Io { op: String, path: PathBuf, source: std::io::Error },
}

impl Failure {
    pub fn io(op: &str, path: &Path, source: std::io::Error) -> Failure {
        Failure::Io { op: op.to_owned(), path: path.to_owned(), source }
    }
}

/// Where messages go: the --log file in its format, else stderr as text.
struct Log {
    file: Option<std::fs::File>,
    format: LogFormat,
    debug: bool,
}

impl Log {
    fn open(cli: &Cli) -> Log {
        let file = cli
            .log
            .as_ref()
            .and_then(|path| std::fs::OpenOptions::new().create(true).append(true).open(path).ok());
        Log { file, format: cli.log_format, debug: cli.debug }
    }

    fn write(&mut self, level: &str, message: &str) {
        if level == "debug" && !self.debug {
            return;
        }
        let line = match self.format {
            LogFormat::Json => {
                let time = state::rfc3339(std::time::SystemTime::now());
                format!("{}\n", serde_json::json!({ "level": level, "msg": message, "time": time }))
            }
            LogFormat::Text => format!("{level}: {message}\n"),
        };
        match &mut self.file {
            Some(file) => {
                let _ = file.write_all(line.as_bytes());
            }
            None => {
                let _ = std::io::stderr().write_all(line.as_bytes());
            }
        }
    }
}

/// The log of this invocation (set up first thing in `main`).
static LOG: std::sync::OnceLock<std::sync::Mutex<Log>> = std::sync::OnceLock::new();

fn log(level: &str, message: &str) {
    if let Some(log) = LOG.get() {
        log.lock().unwrap_or_else(std::sync::PoisonError::into_inner).write(level, message);
    }
}

/// A warning for the log: something failed that the runtime spec has the lifecycle go on after
/// (a poststart or poststop hook).
pub fn warn(message: &str) {
    log("warning", message);
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    // Descriptors 3.. passed on with --preserve-fds must be the caller's: checked before this
    // process opens anything (its own would otherwise take a free number there and be passed
    // to the container).
    let preserve = match &cli.command {
        Cmd::Create(a) | Cmd::Run { create: a, .. } => a.preserve_fds,
        Cmd::Exec(a) => a.preserve_fds,
        _ => 0,
    };
    for fd in 3..3 + preserve as i32 {
        // SAFETY: fcntl(F_GETFD) on a number: EBADF when nothing is open there.
        if unsafe { libc::fcntl(fd, libc::F_GETFD) } < 0 {
            eprintln!("stockade-runtime: --preserve-fds {preserve}: descriptor {fd} is not open");
            return ExitCode::FAILURE;
        }
    }
    let _ = LOG.set(std::sync::Mutex::new(Log::open(&cli)));
    log("debug", &format!("{:?}", cli.command));
    match run(&cli) {
        Ok(code) => code,
        Err(failure) => {
            let message = failure.to_string();
            log("error", &message);
            if cli.log.is_some() {
                // Callers that read stderr (people, ctr) see it too.
                eprintln!("stockade-runtime: {message}");
            }
            ExitCode::FAILURE
        }
    }
}

fn run(cli: &Cli) -> Result<ExitCode, Failure> {
    if cli.systemd_cgroup {
        return Err(Failure::Unsupported(
            "--systemd-cgroup (cgroups through systemd); use the cgroupfs driver".into(),
        ));
    }
    let store = state::Store::new(&cli.root);
    match &cli.command {
        Cmd::Create(args) => lifecycle::create(&store, args).map(|()| ExitCode::SUCCESS),
        Cmd::Start { id } => lifecycle::start(&store, id).map(|()| ExitCode::SUCCESS),
        Cmd::Run { create, detach, keep } => lifecycle::run(&store, create, *detach, *keep),
        Cmd::State { id } => {
            let saved = store.load(id)?;
            println!("{}", serde_json::to_string_pretty(&saved.spec_state()).unwrap_or_default());
            Ok(ExitCode::SUCCESS)
        }
        Cmd::Kill { id, signal, all } => {
            lifecycle::kill(&store, id, signal.as_deref().unwrap_or("SIGTERM"), *all)
                .map(|()| ExitCode::SUCCESS)
        }
        Cmd::Delete { id, force } => lifecycle::delete(&store, id, *force).map(|()| ExitCode::SUCCESS),
        Cmd::List { format, quiet } => lifecycle::list(&store, format, *quiet).map(|()| ExitCode::SUCCESS),
        Cmd::Ps { format, id, ps_args } => {
            lifecycle::ps(&store, id, format, ps_args).map(|()| ExitCode::SUCCESS)
        }
        Cmd::Features => {
            println!("{}", serde_json::to_string_pretty(&lifecycle::features()).unwrap_or_default());
            Ok(ExitCode::SUCCESS)
        }
        Cmd::Spec { bundle, rootless } => lifecycle::spec(bundle, *rootless).map(|()| ExitCode::SUCCESS),
        Cmd::Exec(args) => lifecycle::exec(&store, args),
        Cmd::Pause { id } => lifecycle::pause(&store, id, true).map(|()| ExitCode::SUCCESS),
        Cmd::Resume { id } => lifecycle::pause(&store, id, false).map(|()| ExitCode::SUCCESS),
        Cmd::Update(args) => resources::update(&store, args).map(|()| ExitCode::SUCCESS),
        Cmd::Events { id, stats, interval } => {
            resources::events(&store, id, *stats, interval).map(|()| ExitCode::SUCCESS)
        }
        Cmd::Checkpoint { .. } => Err(Failure::Unsupported("checkpoint".into())),
        Cmd::Restore { .. } => Err(Failure::Unsupported("restore".into())),
    }
}
