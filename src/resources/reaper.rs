//! A watchdog process that removes this program's sandbox cgroups once it is gone.
//!
//! Sandbox cgroups are made and removed by the embedding process itself ([`super::cgroup`]).
//! When it is SIGKILLed, crashes or execs, its destructors never run: the sandboxes' own
//! processes die with it (parent-death signals), but the group directories stay forever, and
//! so would any process that escaped the parent-death signal (a payload's descendants without
//! a pid namespace). Nobody else knows they are orphans: the names carry no owner, by design.
//!
//! So, before the first group is created, the embedding process starts one reaper, a copy of
//! itself that never execs ([`crate::sys::reaper`]), and hands it every parent directory it
//! creates groups in. The reaper only waits; when the embedding process is gone (its end of
//! their channel closes, whatever the cause), it kills every process in this process's groups
//! under those parents, removes the groups, and exits: within milliseconds, or a few seconds
//! while the kernel still tears killed processes down. A forked copy of the embedding process
//! gets a prefix and a reaper of its own on first use; a reaper that was itself killed is
//! replaced, and told everything again, on the next [`watch`].
//!
//! The price is one sleeping process per embedding process, which keeps the pages the embedder
//! had when it started alive (copy-on-write) until both are gone.
//!
//! To observe it (as root on this project's hybrid hosts; on cgroup v2 the groups are under the
//! caller's own group in `/sys/fs/cgroup`):
//!
//! ```text
//! cargo run --example run -- --pids 64 -- /bin/sleep 1000 &
//! ps -eo pid,ppid,sid,comm,args | grep stockade-reaper    # its own session, argv overwritten
//! ls -d /sys/fs/cgroup/pids/stockade/sb-*                 # sb-<16 hex>-0 (and its payload leaf)
//! kill -9 <pid of the run example>    # the example itself, not cargo
//! ls -d /sys/fs/cgroup/pids/stockade/sb-*                 # gone within a second;
//! pgrep -x sleep; pgrep -x stockade-reaper                # and so are the sleep and the reaper
//! ```

use std::fs::{File, OpenOptions};
use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::sync::{Mutex, PoisonError};

use crate::Error;
use crate::sys::reaper as sys;
use crate::sys::{Errno, random_u32};

/// The prefix every sandbox cgroup name of this embedding process starts with: "sb-" followed by
/// 16 random lowercase hex digits, chosen once per process (a forked copy chooses its own).
/// Random rather than the pid, so a name reveals nothing of the host. Sandbox groups are named
/// "{prefix}-{n}".
pub(crate) fn prefix() -> &'static str {
    static PREFIX: Mutex<Option<(u32, &'static str)>> = Mutex::new(None);
    let me = std::process::id();
    let mut prefix = PREFIX.lock().unwrap_or_else(PoisonError::into_inner);
    match *prefix {
        Some((owner, p)) if owner == me => p,
        _ => {
            let p: &'static str =
                Box::leak(format!("sb-{:08x}{:08x}", random_u32(), random_u32()).into_boxed_str());
            *prefix = Some((me, p));
            p
        }
    }
}

/// Makes sure the reaper runs and watches `parent` (a cgroup directory under which this process
/// will create groups named "{prefix}-..."): from when this returns, the groups made there are
/// removed even if this process is killed the next instant. Idempotent per directory (by device
/// and inode: a parent removed and made again is watched again). Starts the reaper on first use.
pub(crate) fn watch(parent: &Path) -> Result<(), Error> {
    let error = |source| Error::Cgroup { op: "open for the reaper".into(), path: parent.to_owned(), source };
    // On the spawn path: a directory already watched costs a stat, not an open.
    let meta = std::fs::metadata(parent).map_err(error)?;
    let known = (meta.dev(), meta.ino());
    let mut guard = STATE.lock().unwrap_or_else(PoisonError::into_inner);
    let state = &mut *guard;
    state.ensure_running()?;
    if state.watched.iter().any(|w| w.id == known) {
        return Ok(());
    }
    if state.watched.len() >= sys::MAX_DIRS {
        // The reaper would not keep it: refuse rather than leave groups it will not remove.
        return Err(Error::Cgroup {
            op: format!("hand to the reaper (it watches at most {} cgroup parents)", sys::MAX_DIRS),
            path: parent.to_owned(),
            source: std::io::Error::from_raw_os_error(libc::ENOSPC),
        });
    }
    let (dir, id) = open_dir(parent).map_err(error)?;
    for attempt in 0..2 {
        state.ensure_running()?;
        if state.watched.iter().any(|w| w.id == id) {
            return Ok(());
        }
        let Some(reaper) = &state.reaper else { break };
        match sys::send_dir(reaper.channel.as_fd(), dir.as_fd()) {
            Ok(()) => {
                state.watched.push(Watched { id, path: parent.to_owned() });
                return Ok(());
            }
            // It died since `ensure_running` looked: once more, with a new one.
            Err(Errno(libc::EPIPE | libc::ECONNRESET)) if attempt == 0 => state.bury(),
            Err(e) => {
                return Err(Error::Cgroup {
                    op: "hand to the reaper".into(),
                    path: parent.to_owned(),
                    source: e.into(),
                });
            }
        }
    }
    Err(Error::spawn("start the cgroup reaper", Errno(libc::EPIPE)))
}

/// What this process has told its reaper.
struct State {
    /// The process the fields belong to: a forked copy inherits them but not the reaper.
    owner: u32,
    reaper: Option<Reaper>,
    /// Every directory the running reaper watches (and a new one must be told).
    watched: Vec<Watched>,
}

static STATE: Mutex<State> = Mutex::new(State { owner: 0, reaper: None, watched: Vec::new() });

struct Watched {
    /// (device, inode) of the directory.
    id: (u64, u64),
    path: PathBuf,
}

/// A running reaper, from the embedding process's side.
struct Reaper {
    pidfd: OwnedFd,
    /// Our end of the channel, open for the rest of our life: its closing is the signal.
    channel: OwnedFd,
    /// (device, inode) of `channel`.
    channel_id: Option<(u64, u64)>,
}

impl State {
    /// Makes sure a reaper of this process runs: starts one (or replaces a dead one, and tells
    /// it every watched directory) when there is none alive.
    fn ensure_running(&mut self) -> Result<(), Error> {
        let me = std::process::id();
        if self.owner != me {
            if let Some(inherited) = self.reaper.take() {
                inherited.abandon();
            }
            self.watched.clear();
            self.owner = me;
        }
        if self.reaper.as_ref().is_some_and(|r| sys::hung_up(r.channel.as_fd())) {
            self.bury();
        }
        if self.reaper.is_none() {
            let reaper = Reaper::start()?;
            // Whatever still is the directory it was goes to the new reaper; the rest is gone,
            // and so are our groups in it.
            self.watched.retain(|w| match open_dir(&w.path) {
                Ok((dir, id)) => id == w.id && sys::send_dir(reaper.channel.as_fd(), dir.as_fd()).is_ok(),
                Err(_) => false,
            });
            self.reaper = Some(reaper);
        }
        Ok(())
    }

    /// Forgets a reaper that died, after collecting it.
    fn bury(&mut self) {
        if let Some(dead) = self.reaper.take() {
            sys::reap(dead.pidfd.as_fd());
        }
    }
}

impl Reaper {
    fn start() -> Result<Reaper, Error> {
        let name = format!("{}-", prefix());
        let prefix = sys::Prefix::new(&name).ok_or_else(|| {
            Error::spawn(format!("start the cgroup reaper for {name:?}"), Errno(libc::ENAMETOOLONG))
        })?;
        let (channel, theirs) =
            sys::channel().map_err(|e| Error::spawn("start the cgroup reaper (socketpair)", e))?;
        let channel_id = sys::identity(channel.as_raw_fd());
        let (_pid, pidfd) = sys::start(&prefix, channel.as_fd(), theirs, crate::plan::arg_area())
            .map_err(|e| Error::spawn("start the cgroup reaper (clone)", e))?;
        Ok(Reaper { pidfd, channel, channel_id })
    }

    /// In a forked copy of the embedding process: the reaper belongs to the original. Our copy
    /// of the channel is closed, so that the original's reaper still sees the original's death,
    /// unless the copy has closed that number already (daemons close everything) and it now
    /// holds something else. The pidfd is left alone for the same reason (nothing waits on it).
    fn abandon(self) {
        if self.channel_id.is_some() && sys::identity(self.channel.as_raw_fd()) == self.channel_id {
            drop(self.channel);
        } else {
            std::mem::forget(self.channel);
        }
        std::mem::forget(self.pidfd);
    }
}

/// Opens `path` as a directory, with its (device, inode).
fn open_dir(path: &Path) -> std::io::Result<(File, (u64, u64))> {
    let dir = OpenOptions::new().read(true).custom_flags(libc::O_DIRECTORY | libc::O_CLOEXEC).open(path)?;
    let meta = dir.metadata()?;
    Ok((dir, (meta.dev(), meta.ino())))
}

/// The pid of this process's reaper, if one runs (from its pidfd's fdinfo).
#[cfg(test)]
fn reaper_pid() -> Option<libc::pid_t> {
    let state = STATE.lock().unwrap_or_else(PoisonError::into_inner);
    let reaper = state.reaper.as_ref().filter(|_| state.owner == std::process::id())?;
    let info = std::fs::read_to_string(format!("/proc/self/fdinfo/{}", reaper.pidfd.as_raw_fd())).ok()?;
    info.lines().find_map(|l| l.strip_prefix("Pid:")?.trim().parse().ok())
}

#[cfg(test)]
mod tests {
    use std::io::{BufRead, BufReader};
    use std::os::fd::AsFd;
    use std::process::{Command, Stdio};

    use nix::poll::{PollFd, PollFlags, PollTimeout, poll};

    const EMBEDDER: &str = "STOCKADE_TEST_REAPER_EMBEDDER";
    const NAME: &str = "resources::reaper::tests::groups_go_when_the_embedding_process_is_killed";
    const REPORT: &str = "embedder's reaper: ";

    /// Plain directories stand in for a cgroup parent (so this runs as any user): the reaper
    /// knows groups only by name and removes them with `rmdir`, which takes empty directories
    /// alone. The embedding process is this test binary run again, which watches the parent,
    /// makes groups, reports its reaper and blocks until it is SIGKILLed.
    #[test]
    fn groups_go_when_the_embedding_process_is_killed() {
        if let Some(parent) = std::env::var_os(EMBEDDER) {
            return embed(parent.as_ref());
        }
        let tmp = tempfile::tempdir().unwrap();
        let parent = tmp.path();
        let mut embedder = Command::new(std::env::current_exe().unwrap())
            .args(["--exact", NAME, "--nocapture", "--test-threads=1"])
            .env(EMBEDDER, parent)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .unwrap();
        let mut lines = BufReader::new(embedder.stdout.take().unwrap()).lines();
        let (pid, prefix) = loop {
            let line = lines.next().expect("the embedder ended before reporting its reaper").unwrap();
            // libtest's "test ... " precedes it on the same line.
            if let Some((_, report)) = line.split_once(REPORT) {
                let (pid, prefix) = report.split_once(' ').unwrap();
                break (pid.parse::<libc::pid_t>().unwrap(), prefix.to_owned());
            }
        };
        // The embedder is alive and has not waited for its reaper: `pid` is the reaper.
        let reaper = crate::sys::reaper::pidfd_open(pid).unwrap();
        let comm = std::fs::read_to_string(format!("/proc/{pid}/comm")).unwrap();
        assert_eq!(comm, "stockade-reaper\n");
        let ours = [format!("{prefix}-1"), format!("{prefix}-1/payload"), format!("{prefix}-2")];
        for dir in &ours {
            assert!(parent.join(dir).is_dir(), "{dir} was made");
        }

        embedder.kill().unwrap(); // SIGKILL: no destructor, no exit handler runs
        embedder.wait().unwrap();
        let mut fds = [PollFd::new(reaper.as_fd(), PollFlags::POLLIN)];
        let ready = poll(&mut fds, PollTimeout::from(10_000u16)).unwrap();
        assert_eq!(ready, 1, "the reaper still runs 10 s after the embedder died");

        for dir in &ours {
            assert!(!parent.join(dir).exists(), "{dir} is still there");
        }
        // Another process's groups, other names, and a file with our prefix are left alone.
        for other in ["sb-0123456789abcdef-1", "sb-0123456789abcdef-1/payload", "unrelated"] {
            assert!(parent.join(other).is_dir(), "{other} was removed");
        }
        assert!(parent.join(format!("{prefix}-3")).is_file(), "a file was removed");
    }

    /// The embedding process's side of the test above.
    fn embed(parent: &std::path::Path) {
        let prefix = super::prefix();
        assert!(prefix.len() == 19 && prefix.starts_with("sb-"), "{prefix}");
        assert!(prefix[3..].bytes().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b)), "{prefix}");
        super::watch(parent).unwrap();
        super::watch(parent).unwrap(); // idempotent
        for dir in
            [format!("{prefix}-1/payload"), format!("{prefix}-2"), "sb-0123456789abcdef-1/payload".into()]
        {
            std::fs::create_dir_all(parent.join(dir)).unwrap();
        }
        std::fs::create_dir(parent.join("unrelated")).unwrap();
        std::fs::write(parent.join(format!("{prefix}-3")), "").unwrap();
        println!("{REPORT}{} {prefix}", super::reaper_pid().unwrap());
        // Until the test kills us.
        let mut line = String::new();
        let _ = std::io::stdin().read_line(&mut line);
        panic!("stdin closed before the test killed the embedder");
    }
}
