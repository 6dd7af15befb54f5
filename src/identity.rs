//! Identity by name: resolves a user spec (`name`, `uid`, `name:group`, `uid:gid`, ...)
//! against the sandbox's own `/etc/passwd` and `/etc/group` (an image's, a root directory's;
//! never the host's unless the sandbox's root is the host's), found in the merged view of its
//! layers, as the sandbox will see them.

use std::collections::VecDeque;
use std::ffi::OsStr;
use std::io::Read;
use std::os::fd::{AsFd, OwnedFd};
use std::os::unix::ffi::{OsStrExt, OsStringExt};
use std::path::PathBuf;

use nix::errno::Errno;
use nix::fcntl::{OFlag, OpenHow, ResolveFlag};

/// A user resolved inside the sandbox's root.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Identity {
    pub(crate) uid: u32,
    pub(crate) gid: u32,
    /// Supplementary groups from `/etc/group` (empty when the spec names a group).
    pub(crate) groups: Vec<u32>,
    /// The home directory from `/etc/passwd`, if the user has an entry.
    pub(crate) home: Option<PathBuf>,
}

/// Why a spec could not be resolved.
#[derive(Debug)]
pub(crate) enum LookupFailure {
    /// A layer or database could not be opened or read.
    Io { op: &'static str, path: PathBuf, errno: Errno },
    /// The layers were built to make lookups endless.
    Limit { what: String, limit: u64 },
    /// The spec names no user or group there, or a bad id.
    User { reason: String },
}

impl LookupFailure {
    fn io(op: &'static str, path: impl Into<PathBuf>, errno: impl Into<Errno>) -> LookupFailure {
        LookupFailure::Io { op, path: path.into(), errno: errno.into() }
    }
}

/// The largest passwd or group file read.
const MAX_DB: u64 = 4 << 20;
/// Symlinks followed in one lookup at most, as the kernel does (`MAXSYMLINKS`).
const MAX_LINKS: usize = 40;
/// Layer entries examined in one lookup at most: a normal image needs a few per layer.
const MAX_STEPS: usize = 16384;

/// Where the sandbox's `/etc/passwd` or `/etc/group` comes from.
#[derive(Clone, Debug)]
pub(crate) enum Db {
    /// `path` in the merged view of layer directories (bottom first).
    Layers(Vec<PathBuf>, String),
    /// A host file bound at the database's path.
    File(PathBuf),
    /// Contents given by the caller (`Mount::file`).
    Text(Vec<u8>),
    /// None: an empty directory or a mask covers it.
    Empty,
}

impl Db {
    fn read(&self) -> Result<Vec<Vec<String>>, LookupFailure> {
        match self {
            Db::Layers(layers, path) => read_db(layers, path),
            Db::Text(bytes) => Ok(parse_db(bytes)),
            Db::Empty => Ok(Vec::new()),
            Db::File(path) => {
                let c = std::ffi::CString::new(path.as_os_str().as_bytes())
                    .map_err(|_| LookupFailure::io("open", path, Errno::EINVAL))?;
                let fd = crate::sys::open_host(&c, libc::O_PATH)
                    .map(crate::sys::owned)
                    .map_err(|e| LookupFailure::io("open", path, Errno::from_raw(e.0)))?;
                let file = reopen_regular(fd).map_err(|e| LookupFailure::io("open", path, e))?;
                let mut bytes = Vec::new();
                if let Some(file) = file {
                    file.take(MAX_DB).read_to_end(&mut bytes).map_err(|e| {
                        LookupFailure::io(
                            "read",
                            path,
                            Errno::from_raw(e.raw_os_error().unwrap_or(libc::EIO)),
                        )
                    })?;
                }
                Ok(parse_db(&bytes))
            }
        }
    }
}

/// Resolves `user` (`name`, `uid`, `name:group`, `uid:gid`, ...) inside the image.
#[cfg(feature = "image")]
pub(crate) fn resolve(layers: &[PathBuf], user: &str) -> Result<Identity, LookupFailure> {
    let db = |name: &str| Db::Layers(layers.to_vec(), format!("etc/{name}"));
    resolve_in(&db("passwd"), &db("group"), user)
}

/// Resolves `user` against the databases `passwd` and `group`.
pub(crate) fn resolve_in(passwd: &Db, group: &Db, user: &str) -> Result<Identity, LookupFailure> {
    let err = |reason: String| LookupFailure::User { reason };
    let (u, g) = match user.split_once(':') {
        Some((u, g)) => (u, Some(g)),
        None => (user, None),
    };
    let passwd = passwd.read()?;
    let group = group.read()?;
    // passwd: name:x:uid:gid:gecos:home:shell
    let entry = passwd.iter().find(|f| match u.parse::<u32>() {
        Ok(uid) => f.get(2).and_then(|v| v.parse::<u32>().ok()) == Some(uid),
        Err(_) => f.first().map(String::as_str) == Some(u),
    });
    let uid = match (u.parse::<u32>(), entry) {
        (Ok(uid), _) => uid,
        (Err(_), Some(e)) => e
            .get(2)
            .and_then(|v| v.parse().ok())
            .ok_or_else(|| err(format!("bad uid for {u} in /etc/passwd")))?,
        (Err(_), None) => return Err(err(format!("no user {u:?} in the sandbox's /etc/passwd"))),
    };
    let name = entry.and_then(|e| e.first().cloned());
    let (gid, groups) = match g {
        Some(g) => {
            let gid = match g.parse::<u32>() {
                Ok(gid) => gid,
                Err(_) => group
                    .iter()
                    .find(|f| f.first().map(String::as_str) == Some(g))
                    .and_then(|f| f.get(2).and_then(|v| v.parse().ok()))
                    .ok_or_else(|| err(format!("no group {g:?} in the sandbox's /etc/group")))?,
            };
            (gid, Vec::new())
        }
        None => {
            let gid = entry.and_then(|e| e.get(3).and_then(|v| v.parse().ok())).unwrap_or(0);
            // group: name:x:gid:member,member
            let groups = name
                .as_deref()
                .map(|n| {
                    group
                        .iter()
                        .filter(|f| f.get(3).is_some_and(|m| m.split(',').any(|m| m == n)))
                        .filter_map(|f| f.get(2).and_then(|v| v.parse::<u32>().ok()))
                        .filter(|&g| g != gid)
                        .collect()
                })
                .unwrap_or_default();
            (gid, groups)
        }
    };
    if uid == u32::MAX || gid == u32::MAX {
        return Err(err("id out of range".into()));
    }
    let home = entry.and_then(|e| e.get(5)).filter(|h| h.starts_with('/')).map(PathBuf::from);
    Ok(Identity { uid, gid, groups, home })
}

/// The lines of a colon-separated database at `path` in the image's merged view; empty if it is
/// missing or not a regular file.
fn read_db(layers: &[PathBuf], path: &str) -> Result<Vec<Vec<String>>, LookupFailure> {
    let dirs = layers
        .iter()
        .map(|layer| {
            // Through no symlink, as every host path of a sandbox is opened.
            let path = std::ffi::CString::new(layer.as_os_str().as_bytes())
                .map_err(|_| LookupFailure::io("open layer", layer, Errno::EINVAL))?;
            crate::sys::open_host(&path, libc::O_PATH | libc::O_DIRECTORY)
                .map(crate::sys::owned)
                .map_err(|e| LookupFailure::io("open layer", layer, Errno::from_raw(e.0)))
        })
        .collect::<Result<Vec<_>, _>>()?;
    let mut merged = Merged { layers: &dirs, steps: 0 };
    let found = merged.find(path.as_bytes()).map_err(|e| match e {
        LookupError::Steps => LookupFailure::Limit {
            what: format!("lookups in the sandbox's layers while looking for /{path}"),
            limit: MAX_STEPS as u64,
        },
        LookupError::Sys { layer, rel, errno } => {
            LookupFailure::io("look up", layers[layer].join(OsStr::from_bytes(&rel)), errno)
        }
    })?;
    let Some((layer, found)) = found else { return Ok(Vec::new()) };
    let at = layers[layer].join(OsStr::from_bytes(&found));
    // Never opened unless it is a regular file (a device, a FIFO: never).
    let scope = ResolveFlag::RESOLVE_BENEATH | ResolveFlag::RESOLVE_NO_SYMLINKS;
    let file = match open_regular(&dirs[layer], OsStr::from_bytes(&found), scope) {
        Ok(Some(file)) => file,
        Ok(None) => return Ok(Vec::new()),
        Err(e) => return Err(LookupFailure::io("open", at, e)),
    };
    let mut bytes = Vec::new();
    file.take(MAX_DB).read_to_end(&mut bytes).map_err(|e| {
        LookupFailure::io("read", &at, Errno::from_raw(e.raw_os_error().unwrap_or(libc::EIO)))
    })?;
    Ok(parse_db(&bytes))
}

/// The lines of a colon-separated database, split into fields.
fn parse_db(bytes: &[u8]) -> Vec<Vec<String>> {
    // Latin-1 GECOS fields and the like must not make the whole file unusable.
    let text = String::from_utf8_lossy(&bytes[..bytes.len().min(MAX_DB as usize)]);
    text.lines().filter(|l| !l.starts_with('#')).map(|l| l.split(':').map(str::to_owned).collect()).collect()
}

/// Why a merged lookup stopped.
enum LookupError {
    /// More than [`MAX_STEPS`] entries were examined (an image built to make lookups slow).
    Steps,
    /// Examining `rel` in layer `layer` failed.
    Sys { layer: usize, rel: Vec<u8>, errno: Errno },
}

/// The view overlayfs gives of layer directories in its format (bottom first), for lookups:
/// the topmost entry of a name wins; a whiteout (a 0/0 character device) hides lower entries; a
/// directory merges with the directories below it, down to an opaque one; symlinks resolve in
/// the merged view, inside the image. A flattened rootfs is the one-layer case.
struct Merged<'a> {
    layers: &'a [OwnedFd],
    /// Entries examined so far, against [`MAX_STEPS`].
    steps: usize,
}

/// The topmost entry of a name in the merged view.
enum Entry {
    /// A directory, and the layers (top first) whose directories merge into it.
    Dir(Vec<usize>),
    Symlink(Vec<u8>),
    /// Anything else, in this layer.
    Other(usize),
}

impl Merged<'_> {
    /// Finds `path` and returns the layer holding it and its symlink-free path there; `None` if
    /// it does not exist or is a directory.
    fn find(&mut self, path: &[u8]) -> Result<Option<(usize, Vec<u8>)>, LookupError> {
        let all: Vec<usize> = (0..self.layers.len()).rev().collect();
        // The current directory: its symlink-free path, and per level the merging layers.
        let mut dir: Vec<u8> = Vec::new();
        let mut levels: Vec<(usize, Vec<usize>)> = Vec::new();
        let mut todo: VecDeque<Vec<u8>> = path.split(|&b| b == b'/').map(<[u8]>::to_vec).collect();
        let mut links = 0;
        while let Some(name) = todo.pop_front() {
            match name.as_slice() {
                b"" | b"." => continue,
                b".." => {
                    if let Some((len, _)) = levels.pop() {
                        dir.truncate(len);
                    }
                    continue;
                }
                _ => {}
            }
            let visible = levels.last().map_or(&all, |(_, v)| v);
            let mut rel = dir.clone();
            if !rel.is_empty() {
                rel.push(b'/');
            }
            rel.extend_from_slice(&name);
            if rel.len() >= libc::PATH_MAX as usize {
                return Err(LookupError::Sys { layer: 0, rel, errno: Errno::ENAMETOOLONG });
            }
            match self.entry(visible, &rel)? {
                None => return Ok(None),
                Some(Entry::Dir(merging)) => {
                    levels.push((dir.len(), merging));
                    dir = rel;
                }
                Some(Entry::Symlink(target)) => {
                    links += 1;
                    if links > MAX_LINKS {
                        return Ok(None);
                    }
                    if target.starts_with(b"/") {
                        dir.clear();
                        levels.clear();
                    }
                    for part in target.split(|&b| b == b'/').rev() {
                        todo.push_front(part.to_vec());
                    }
                }
                Some(Entry::Other(layer)) => {
                    let last = todo.iter().all(|n| n.is_empty() || n == b".");
                    return Ok(last.then_some((layer, rel)));
                }
            }
        }
        Ok(None)
    }

    /// The topmost entry at `rel` among the `visible` layers (top first).
    fn entry(&mut self, visible: &[usize], rel: &[u8]) -> Result<Option<Entry>, LookupError> {
        let mut merging: Vec<usize> = Vec::new();
        for &layer in visible {
            self.steps += 1;
            if self.steps > MAX_STEPS {
                return Err(LookupError::Steps);
            }
            let fail = |errno| LookupError::Sys { layer, rel: rel.to_vec(), errno };
            let Some((fd, st)) = self.stat(layer, rel).map_err(fail)? else { continue };
            let kind = st.st_mode & libc::S_IFMT;
            if kind != libc::S_IFDIR {
                if !merging.is_empty() {
                    break; // a non-directory below a directory is hidden by it
                }
                return Ok(match kind {
                    libc::S_IFCHR if st.st_rdev == 0 => None, // whiteout
                    libc::S_IFLNK => {
                        let target = nix::fcntl::readlinkat(&fd, "").map_err(fail)?;
                        Some(Entry::Symlink(target.into_vec()))
                    }
                    _ => Some(Entry::Other(layer)),
                });
            }
            merging.push(layer);
            if is_opaque(&fd).map_err(fail)? {
                break;
            }
        }
        Ok((!merging.is_empty()).then_some(Entry::Dir(merging)))
    }

    /// `rel` in one layer, without following any symlink: an `O_PATH` descriptor and its stat.
    fn stat(&self, layer: usize, rel: &[u8]) -> nix::Result<Option<(OwnedFd, libc::stat)>> {
        let how = OpenHow::new()
            .flags(OFlag::O_PATH | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC)
            .resolve(ResolveFlag::RESOLVE_BENEATH | ResolveFlag::RESOLVE_NO_SYMLINKS);
        match nix::fcntl::openat2(&self.layers[layer], OsStr::from_bytes(rel), how) {
            Ok(fd) => {
                let st = nix::sys::stat::fstat(&fd)?;
                Ok(Some((fd, st)))
            }
            Err(Errno::ENOENT | Errno::ENOTDIR) => Ok(None),
            Err(e) => Err(e),
        }
    }
}

/// Whether directory `dir` is marked opaque for overlayfs (either xattr namespace).
fn is_opaque(dir: &OwnedFd) -> nix::Result<bool> {
    for name in [c"trusted.overlay.opaque", c"user.overlay.opaque"] {
        let mut value = [0u8; 2];
        match crate::sys::fd_getxattr(dir.as_fd(), name, &mut value) {
            Ok(1) if value[0] == b'y' => return Ok(true),
            Ok(_) => {}
            // Absent, unsupported here, or longer than "y": not opaque by this name.
            Err(e) if matches!(e.raw_os_error(), Some(libc::ENODATA | libc::ENOTSUP | libc::ERANGE)) => {}
            Err(e) => return Err(Errno::from_raw(e.raw_os_error().unwrap_or(libc::EIO))),
        }
    }
    Ok(false)
}

/// Opens `path` beneath `dir` for reading if it is a regular file (`Ok(None)` otherwise),
/// without ever opening anything else: a device node in an image or layout must not be
/// opened on the host (opening some devices has effects: a watchdog arms, a tape rewinds).
/// It is found with `O_PATH`, checked, then reopened through `/proc/self/fd`.
pub(crate) fn open_regular<P: ?Sized + nix::NixPath>(
    dir: &std::os::fd::OwnedFd,
    path: &P,
    scope: nix::fcntl::ResolveFlag,
) -> nix::Result<Option<std::fs::File>> {
    use nix::fcntl::{OFlag, OpenHow, ResolveFlag};
    let how = OpenHow::new()
        .flags(OFlag::O_PATH | OFlag::O_CLOEXEC)
        .resolve(scope | ResolveFlag::RESOLVE_NO_MAGICLINKS);
    reopen_regular(nix::fcntl::openat2(dir, path, how)?)
}

/// Reopens the `O_PATH` descriptor `handle` for reading if it is a regular file (`Ok(None)`
/// otherwise), through `/proc/self/fd`.
fn reopen_regular(handle: std::os::fd::OwnedFd) -> nix::Result<Option<std::fs::File>> {
    use nix::fcntl::OFlag;
    use std::os::fd::AsRawFd;
    if nix::sys::stat::fstat(&handle)?.st_mode & libc::S_IFMT != libc::S_IFREG {
        return Ok(None);
    }
    let reopen = format!("/proc/self/fd/{}", handle.as_raw_fd());
    let flags = OFlag::O_RDONLY | OFlag::O_CLOEXEC | OFlag::O_NOCTTY;
    let fd = nix::fcntl::open(reopen.as_str(), flags, nix::sys::stat::Mode::empty())?;
    Ok(Some(std::fs::File::from(fd)))
}
