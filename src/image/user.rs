//! Resolves an image's `User` against the image's own `/etc/passwd` and `/etc/group` (never
//! the host's), looking through the layers from the top.

use std::io::Read;
use std::path::PathBuf;

use nix::fcntl::{OFlag, ResolveFlag};
use nix::sys::stat::Mode;

use super::{ImageError, ImageUser};

/// The largest passwd or group file read.
const MAX_DB: u64 = 4 << 20;

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

/// The lines of a colon-separated database, from the topmost layer that has the file (a
/// whiteout or non-regular file there hides lower ones).
fn read_db(layers: &[PathBuf], path: &str) -> Result<Vec<Vec<String>>, ImageError> {
    for layer in layers.iter().rev() {
        let dir =
            nix::fcntl::open(layer, OFlag::O_PATH | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC, Mode::empty())
                .map_err(|e| ImageError::io("open layer", layer, e))?;
        let file = match super::open_regular(&dir, path, ResolveFlag::RESOLVE_IN_ROOT) {
            Ok(Some(file)) => file,
            Err(nix::errno::Errno::ENOENT | nix::errno::Errno::ENOTDIR) => continue,
            // Not a regular file (a whiteout, a device: never opened), or unreadable.
            Ok(None) | Err(_) => return Ok(Vec::new()),
        };
        let mut bytes = Vec::new();
        file.take(MAX_DB).read_to_end(&mut bytes).map_err(|e| ImageError::io("read", layer.join(path), e))?;
        // Latin-1 GECOS fields and the like must not make the whole file unusable.
        let text = String::from_utf8_lossy(&bytes);
        return Ok(text
            .lines()
            .filter(|l| !l.starts_with('#'))
            .map(|l| l.split(':').map(str::to_owned).collect())
            .collect());
    }
    Ok(Vec::new())
}
