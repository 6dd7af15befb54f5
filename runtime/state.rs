//! A container's state under `--root`: `<root>/<id>/state.json` (written whole to a temporary
//! file and renamed over the old one), the start gate `<root>/<id>/gate` while the container is
//! created, and a lock (`flock` on the directory) held by every command that changes it.

use std::collections::HashMap;
use std::fs;
use std::io::Write;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::time::SystemTime;

use serde::{Deserialize, Serialize};

use crate::Failure;

/// What the runtime remembers of a container between its commands.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Saved {
    pub id: String,
    /// The container's init (pid 1 inside), as the host sees it.
    pub pid: u32,
    /// The init's start time (`/proc/<pid>/stat`, field 22): a pid reused by another process
    /// after the init is gone does not pass for it.
    pub start_time: u64,
    pub bundle: PathBuf,
    pub rootfs: PathBuf,
    /// RFC 3339, UTC.
    pub created: String,
    /// "created" until `start` succeeds, then "running"; what the init's liveness says wins.
    pub status: String,
    /// The container's cgroup directories.
    pub cgroups: Vec<PathBuf>,
    /// The directory the runtime made for the container's groups (one per hierarchy), removed
    /// with them.
    pub cgroup_parents: Vec<PathBuf>,
    #[serde(default)]
    pub annotations: HashMap<String, String>,
}

/// A container's status, as the runtime spec names them.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Status {
    Created,
    Running,
    /// Running, its processes frozen (runc's status for it).
    Paused,
    Stopped,
}

impl Status {
    pub fn as_str(self) -> &'static str {
        match self {
            Status::Created => "created",
            Status::Running => "running",
            Status::Paused => "paused",
            Status::Stopped => "stopped",
        }
    }
}

impl Saved {
    /// Where the container is now: its init alive (the same process, not a zombie) or not.
    pub fn status(&self) -> Status {
        match process_start(self.pid) {
            Some((start, alive)) if start == self.start_time && alive => {
                if self.status == "created" {
                    Status::Created
                } else if self.detached().is_frozen() {
                    Status::Paused
                } else {
                    Status::Running
                }
            }
            _ => Status::Stopped,
        }
    }

    /// The library's handle on the container's sandbox.
    pub fn detached(&self) -> stockade::Detached {
        stockade::Detached { pid: self.pid, cgroups: self.cgroups.clone(), start_time: Some(self.start_time) }
    }

    /// The state JSON of the runtime spec (and runc's `rootfs` and `owner`).
    pub fn spec_state(&self) -> serde_json::Value {
        let status = self.status();
        let pid = if status == Status::Stopped { 0 } else { self.pid };
        serde_json::json!({
            "ociVersion": "1.2.0",
            "id": self.id,
            "pid": pid,
            "status": status.as_str(),
            "bundle": self.bundle,
            "rootfs": self.rootfs,
            "created": self.created,
            "owner": "",
            "annotations": self.annotations,
        })
    }
}

/// The runtime's root directory and one container in it.
pub struct Store {
    root: PathBuf,
}

impl Store {
    pub fn new(root: &Path) -> Store {
        Store { root: root.to_owned() }
    }

    pub fn dir(&self, id: &str) -> PathBuf {
        self.root.join(id)
    }

    pub fn gate(&self, id: &str) -> PathBuf {
        self.dir(id).join("gate")
    }

    /// Makes the container's directory (owner only); an existing one is a container of that id.
    pub fn make(&self, id: &str) -> Result<Lock, Failure> {
        check_id(id)?;
        fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(&self.root)
            .map_err(|e| Failure::io("create the runtime's root", &self.root, e))?;
        self.check_root()?;
        let dir = self.dir(id);
        match fs::DirBuilder::new().mode(0o700).create(&dir) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
                return Err(Failure::State(format!("container with id {id:?} already exists")));
            }
            Err(e) => return Err(Failure::io("create the container's state directory", &dir, e)),
        }
        self.lock(id)
    }

    /// The root must be a directory of this user's that nobody else may write (what is in it
    /// says which processes to kill and which cgroups to remove), not a symbolic link.
    fn check_root(&self) -> Result<(), Failure> {
        use std::os::unix::fs::MetadataExt;
        let meta = match fs::symlink_metadata(&self.root) {
            Ok(meta) => meta,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
            Err(e) => return Err(Failure::io("inspect the runtime's root", &self.root, e)),
        };
        let me = nix::unistd::geteuid().as_raw();
        if !meta.is_dir() || meta.uid() != me || meta.mode() & 0o022 != 0 {
            let kind = if meta.is_dir() {
                "a directory"
            } else if meta.is_symlink() {
                "a symbolic link"
            } else {
                "not a directory"
            };
            return Err(Failure::State(format!(
                "{}: the runtime's root must be a directory owned by uid {me} that no one else may write \
                 (it is {kind}, uid {}, mode {:o})",
                self.root.display(),
                meta.uid(),
                meta.mode() & 0o7777
            )));
        }
        Ok(())
    }

    /// Takes the container's lock (blocking while another command holds it).
    pub fn lock(&self, id: &str) -> Result<Lock, Failure> {
        check_id(id)?;
        self.check_root()?;
        let dir = self.dir(id);
        let file = fs::OpenOptions::new()
            .read(true)
            .custom_flags(libc::O_DIRECTORY | libc::O_NOFOLLOW)
            .open(&dir)
            .map_err(|e| match e.kind() {
                std::io::ErrorKind::NotFound => Failure::NotFound(id.to_owned()),
                _ => Failure::io("open the container's state directory", &dir, e),
            })?;
        let lock = nix::fcntl::Flock::lock(file, nix::fcntl::FlockArg::LockExclusive)
            .map_err(|(_, e)| Failure::io("lock the container's state", &dir, e.into()))?;
        Ok(Lock { _lock: lock })
    }

    pub fn load(&self, id: &str) -> Result<Saved, Failure> {
        check_id(id)?;
        self.check_root()?;
        let path = self.dir(id).join("state.json");
        let text = fs::read_to_string(&path).map_err(|e| match e.kind() {
            std::io::ErrorKind::NotFound => Failure::NotFound(id.to_owned()),
            _ => Failure::io("read the container's state", &path, e),
        })?;
        serde_json::from_str(&text)
            .map_err(|e| Failure::State(format!("{}: not a state this runtime wrote: {e}", path.display())))
    }

    /// Writes the state whole: a temporary file, synced, renamed over the old one.
    pub fn save(&self, saved: &Saved) -> Result<(), Failure> {
        let dir = self.dir(&saved.id);
        let text = serde_json::to_vec_pretty(saved).map_err(|e| Failure::State(e.to_string()))?;
        write_atomically(&dir.join("state.json"), &text)
    }

    /// Keeps the container's spec as it was created (`<root>/<id>/config.json`).
    pub fn save_spec(&self, id: &str, spec: &oci_spec::runtime::Spec) -> Result<(), Failure> {
        let text = serde_json::to_vec(spec).map_err(|e| Failure::State(e.to_string()))?;
        write_atomically(&self.dir(id).join("config.json"), &text)
    }

    /// The container's spec as it was created.
    pub fn spec(&self, id: &str) -> Result<oci_spec::runtime::Spec, Failure> {
        let path = self.dir(id).join("config.json");
        let text =
            fs::read_to_string(&path).map_err(|e| Failure::io("read the container's spec", &path, e))?;
        serde_json::from_str(&text)
            .map_err(|e| Failure::State(format!("{}: not a spec this runtime wrote: {e}", path.display())))
    }

    /// Removes the container's state (the directory and everything in it).
    pub fn remove(&self, id: &str) -> Result<(), Failure> {
        let dir = self.dir(id);
        match fs::remove_dir_all(&dir) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(Failure::io("remove the container's state", &dir, e)),
        }
    }

    /// The ids of every container with state here.
    pub fn ids(&self) -> Result<Vec<String>, Failure> {
        let entries = match fs::read_dir(&self.root) {
            Ok(entries) => entries,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(e) => return Err(Failure::io("list the runtime's root", &self.root, e)),
        };
        let mut ids: Vec<String> = entries
            .flatten()
            .filter(|e| e.path().join("state.json").exists())
            .filter_map(|e| e.file_name().into_string().ok())
            .collect();
        ids.sort();
        Ok(ids)
    }
}

/// The container's lock, released when dropped.
pub struct Lock {
    _lock: nix::fcntl::Flock<fs::File>,
}

/// A container id as runc accepts them: letters, digits, `_`, `+`, `-`, `.`; not `.` or `..`.
pub fn check_id(id: &str) -> Result<(), Failure> {
    let ok = !id.is_empty()
        && id != "."
        && id != ".."
        && id.len() <= 1024
        && id.bytes().all(|b| b.is_ascii_alphanumeric() || b"_+-.".contains(&b));
    if ok {
        Ok(())
    } else {
        Err(Failure::Usage(format!(
            "invalid container id {id:?}: letters, digits, '_', '+', '-' and '.' only, not \".\" or \"..\""
        )))
    }
}

/// Writes `path` whole or not at all (temporary file in the same directory, renamed).
pub fn write_atomically(path: &Path, data: &[u8]) -> Result<(), Failure> {
    let dir = path.parent().unwrap_or(Path::new("."));
    let name = path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
    let tmp = dir.join(format!(".{name}.{}", std::process::id()));
    let written = (|| {
        let mut file = fs::OpenOptions::new().write(true).create_new(true).mode(0o600).open(&tmp)?;
        file.write_all(data)?;
        file.sync_all()?;
        fs::rename(&tmp, path)
    })();
    written.map_err(|e| {
        let _ = fs::remove_file(&tmp);
        Failure::io("write", path, e)
    })
}

/// A process's start time (clock ticks since boot) and whether it is alive (not a zombie).
pub fn process_start(pid: u32) -> Option<(u64, bool)> {
    let stat = fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // After the command name, which is in parentheses and may hold anything.
    let rest = stat.get(stat.rfind(')')? + 2..)?;
    let fields: Vec<&str> = rest.split(' ').collect();
    // `rest` starts at field 3 (state); the start time is field 22.
    let state = fields.first()?;
    let start = fields.get(22 - 3)?.parse().ok()?;
    Some((start, !matches!(*state, "Z" | "X" | "x")))
}

/// `time` as RFC 3339 in UTC, with nanoseconds.
pub fn rfc3339(time: SystemTime) -> String {
    let since = time.duration_since(SystemTime::UNIX_EPOCH).unwrap_or_default();
    let secs = since.as_secs();
    let (days, rest) = ((secs / 86_400) as i64, secs % 86_400);
    // Howard Hinnant's civil_from_days.
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}.{:09}Z",
        rest / 3600,
        rest / 60 % 60,
        rest % 60,
        since.subsec_nanos()
    )
}
