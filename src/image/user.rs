//! Resolves an image's `User` against the image's own `/etc/passwd` and `/etc/group` (never
//! the host's), found in the merged view of its layers, as the sandbox will see them.

use std::collections::VecDeque;
use std::io::Read;
use std::os::fd::{AsFd, OwnedFd};
use std::path::PathBuf;

use nix::errno::Errno;
use nix::fcntl::{OFlag, OpenHow, ResolveFlag};
use nix::sys::stat::Mode;

use super::{ImageError, ImageUser};

/// The largest passwd or group file read.
const MAX_DB: u64 = 4 << 20;
/// Symlinks followed in one lookup at most, as the kernel does (`MAXSYMLINKS`).
const MAX_LINKS: usize = 40;

/// Resolves `user` (`name`, `uid`, `name:group`, `uid:gid`, ...) inside the image.
pub(crate) fn resolve(layers: &[PathBuf], user: &str) -> Result<ImageUser, ImageError> {
    let err = |reason: String| ImageError::User { user: user.to_owned(), reason };
    let (u, g) = match user.split_once(':') {
        Some((u, g)) => (u, Some(g)),
        None => (user, None),
    };
    let passwd = read_db(layers, "etc/passwd")?;
    let group = read_db(layers, "etc/group")?;
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
        (Err(_), None) => return Err(err(format!("no user {u:?} in the image's /etc/passwd"))),
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
                    .ok_or_else(|| err(format!("no group {g:?} in the image's /etc/group")))?,
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
    Ok(ImageUser { uid, gid, groups })
}

/// The lines of a colon-separated database at `path` in the image's merged view; empty if it is
/// missing, not a regular file, or unreadable.
fn read_db(layers: &[PathBuf], path: &str) -> Result<Vec<Vec<String>>, ImageError> {
    let dirs = layers
        .iter()
        .map(|layer| {
            nix::fcntl::open(layer, OFlag::O_PATH | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC, Mode::empty())
                .map_err(|e| ImageError::io("open layer", layer, e))
        })
        .collect::<Result<Vec<_>, _>>()?;
    let Ok(Some((layer, found))) = Merged { layers: &dirs }.find(path) else {
        return Ok(Vec::new());
    };
    // Never opened unless it is a regular file (a device, a FIFO: never).
    let scope = ResolveFlag::RESOLVE_BENEATH | ResolveFlag::RESOLVE_NO_SYMLINKS;
    let Ok(Some(file)) = super::open_regular(&dirs[layer], &found, scope) else {
        return Ok(Vec::new());
    };
    let mut bytes = Vec::new();
    file.take(MAX_DB)
        .read_to_end(&mut bytes)
        .map_err(|e| ImageError::io("read", layers[layer].join(&found), e))?;
    // Latin-1 GECOS fields and the like must not make the whole file unusable.
    let text = String::from_utf8_lossy(&bytes);
    Ok(text
        .lines()
        .filter(|l| !l.starts_with('#'))
        .map(|l| l.split(':').map(str::to_owned).collect())
        .collect())
}

/// The view overlayfs gives of layer directories in its format (bottom first), for lookups:
/// the topmost entry of a name wins; a whiteout (a 0/0 character device) hides lower entries; a
/// directory merges with the directories below it, down to an opaque one; symlinks resolve in
/// the merged view. A flattened rootfs is the one-layer case.
struct Merged<'a> {
    layers: &'a [OwnedFd],
}

/// The topmost entry of a name in the merged view.
enum Entry {
    /// A directory, and the layers (top first) whose directories merge into it.
    Dir(Vec<usize>),
    Symlink(String),
    /// Anything else, in this layer.
    Other(usize),
}

impl Merged<'_> {
    /// Finds `path` (no symlink may lead out of the image) and returns the layer holding it and
    /// its symlink-free path there; `None` if it does not exist or is a directory.
    fn find(&self, path: &str) -> nix::Result<Option<(usize, String)>> {
        let all: Vec<usize> = (0..self.layers.len()).rev().collect();
        let (mut dir, mut visible) = (Vec::<String>::new(), all.clone());
        let mut todo: VecDeque<String> = path.split('/').map(str::to_owned).collect();
        let mut links = 0;
        while let Some(name) = todo.pop_front() {
            match name.as_str() {
                "" | "." => continue,
                ".." => {
                    dir.pop();
                    visible = all.clone();
                    for depth in 1..=dir.len() {
                        match self.entry(&visible, &dir[..depth].join("/"))? {
                            Some(Entry::Dir(layers)) => visible = layers,
                            _ => return Ok(None),
                        }
                    }
                    continue;
                }
                _ => {}
            }
            let rel = if dir.is_empty() { name.clone() } else { format!("{}/{name}", dir.join("/")) };
            match self.entry(&visible, &rel)? {
                None => return Ok(None),
                Some(Entry::Dir(layers)) => {
                    dir.push(name);
                    visible = layers;
                }
                Some(Entry::Symlink(target)) => {
                    links += 1;
                    if links > MAX_LINKS {
                        return Ok(None);
                    }
                    if target.starts_with('/') {
                        (dir, visible) = (Vec::new(), all.clone());
                    }
                    for part in target.split('/').rev() {
                        todo.push_front(part.to_owned());
                    }
                }
                Some(Entry::Other(layer)) => {
                    let last = todo.iter().all(|n| n.is_empty() || n == ".");
                    return Ok(last.then_some((layer, rel)));
                }
            }
        }
        Ok(None)
    }

    /// The topmost entry at `rel` among the `visible` layers (top first).
    fn entry(&self, visible: &[usize], rel: &str) -> nix::Result<Option<Entry>> {
        let mut merged: Vec<usize> = Vec::new();
        for &layer in visible {
            let Some((fd, st)) = self.stat(layer, rel)? else { continue };
            let kind = st.st_mode & libc::S_IFMT;
            if kind != libc::S_IFDIR {
                if !merged.is_empty() {
                    break; // a non-directory below a directory is hidden by it
                }
                return Ok(match kind {
                    libc::S_IFCHR if st.st_rdev == 0 => None, // whiteout
                    libc::S_IFLNK => {
                        let target = nix::fcntl::readlinkat(&fd, "")?;
                        Some(Entry::Symlink(target.to_string_lossy().into_owned()))
                    }
                    _ => Some(Entry::Other(layer)),
                });
            }
            merged.push(layer);
            if is_opaque(&fd) {
                break;
            }
        }
        Ok((!merged.is_empty()).then_some(Entry::Dir(merged)))
    }

    /// `rel` in one layer, without following any symlink: an `O_PATH` descriptor and its stat.
    fn stat(&self, layer: usize, rel: &str) -> nix::Result<Option<(OwnedFd, libc::stat)>> {
        let how = OpenHow::new()
            .flags(OFlag::O_PATH | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC)
            .resolve(ResolveFlag::RESOLVE_BENEATH | ResolveFlag::RESOLVE_NO_SYMLINKS);
        match nix::fcntl::openat2(&self.layers[layer], rel, how) {
            Ok(fd) => {
                let st = nix::sys::stat::fstat(&fd)?;
                Ok(Some((fd, st)))
            }
            Err(Errno::ENOENT | Errno::ENOTDIR) => Ok(None),
            Err(e) => Err(e),
        }
    }
}

/// Whether directory `dir` is marked opaque for overlayfs.
fn is_opaque(dir: &OwnedFd) -> bool {
    [c"trusted.overlay.opaque", c"user.overlay.opaque"].into_iter().any(|name| {
        let mut value = [0u8; 2];
        matches!(crate::sys::fd_getxattr(dir.as_fd(), name, &mut value), Ok(1) if value[0] == b'y')
    })
}
