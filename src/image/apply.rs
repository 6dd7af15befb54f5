//! Applies layer tar streams to a directory as changesets.
//!
//! Every write goes through directory fds found with `openat2(RESOLVE_IN_ROOT |
//! RESOLVE_NO_MAGICLINKS)`, and the last component of every name is created, replaced or
//! removed with `*at` calls that never follow it. So an absolute or `../..` symlink in the
//! image, a chain of them, or a directory swapped for a symlink by a racing process resolves
//! inside the root: nothing outside the target directory can change.
//!
//! Two formats:
//! - [`Format::Flat`]: all layers into one tree; whiteouts delete from lower layers.
//! - [`Format::Overlay`]: one layer per directory, for overlayfs; whiteouts become 0/0
//!   character devices and opaque directories get the `overlay.opaque` xattr.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::ffi::CString;
use std::fs::File;
use std::io::{Read, Write};
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::rc::Rc;

use nix::errno::Errno;
use nix::fcntl::{AtFlags, OFlag, OpenHow, ResolveFlag, openat, openat2};
use nix::sys::stat::{
    FchmodatFlags, FileStat, Mode, SFlag, UtimensatFlags, fchmod, fchmodat, fstat, fstatat, futimens,
    mkdirat, mknodat, utimensat,
};
use nix::sys::time::TimeSpec;
use nix::unistd::{Gid, Uid, UnlinkatFlags, fchown, fchownat, linkat, symlinkat, unlinkat};

use super::guard::{Refusal, TarGuard};
use super::{ImageError, UnpackLimits, UnpackReport};

/// How layers are laid out on disk.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Format {
    /// Every layer applied onto one tree.
    Flat,
    /// Each layer in its own directory, in overlayfs's format.
    Overlay,
}

/// Final metadata of a directory, applied after all of its children are written.
#[derive(Clone, Debug)]
struct DirMeta {
    mode: u32,
    owner: Option<(u32, u32)>,
    mtime: i64,
    xattrs: Vec<(Vec<u8>, Vec<u8>)>,
}

/// What an entry asks for, decoded from its header.
struct Meta {
    mode: u32,
    uid: u32,
    gid: u32,
    mtime: i64,
    xattrs: Vec<(Vec<u8>, Vec<u8>)>,
}

/// Applies layers to the tree under one root directory.
pub(crate) struct Applier {
    root: Rc<OwnedFd>,
    root_path: PathBuf,
    format: Format,
    /// Running as root: owners, devices and `trusted.*` xattrs are applied.
    privileged: bool,
    /// Our effective uid and gid: files are born with them, so a chown to them is skipped.
    ids: (u32, u32),
    /// The process umask, when known: permission bits it does not mask are set at creation.
    umask: Option<u32>,
    limits: UnpackLimits,
    layer: String,
    /// Paths written by the current layer (whiteouts and opaque markers keep these).
    written: HashSet<Vec<u8>>,
    /// Directories holding something the current layer wrote (an opaque marker keeps them).
    holding: HashSet<Vec<u8>>,
    deferred: BTreeMap<Vec<u8>, DirMeta>,
    /// Depth below the root of each directory made, by (device, inode): bounds the real
    /// depth (which symlinks can make differ from the name's) so removal stays bounded.
    depths: HashMap<(u64, u64), usize>,
    /// Bytes of names held in `written`, `holding` and `deferred`.
    tracked: usize,
    /// Directory fds by path; emptied whenever anything is removed or replaced.
    cache: HashMap<Vec<u8>, Rc<OwnedFd>>,
    buf: Vec<u8>,
    pub(crate) report: UnpackReport,
}

const CACHE_MAX: usize = 512;
const NAME_MAX: usize = 255;
/// Reports list at most this many paths of each kind (the counts are exact).
const REPORT_MAX: usize = 1000;

impl Applier {
    /// An applier writing beneath `root`, which must be an existing directory.
    pub(crate) fn new(root: &Path, format: Format, limits: UnpackLimits) -> Result<Applier, ImageError> {
        let fd = nix::fcntl::open(root, OFlag::O_PATH | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC, Mode::empty())
            .map_err(|e| ImageError::io("open unpack root", root, e))?;
        let privileged = nix::unistd::geteuid().is_root();
        // A set-gid root (inherited from where the caller put it) would hand its group to
        // every new file; entries' own owners are applied, so it is cleared.
        let dir = File::open(root).map_err(|e| ImageError::io("open unpack root", root, e))?;
        let mode = dir.metadata().map_err(|e| ImageError::io("stat unpack root", root, e))?.permissions();
        if std::os::unix::fs::PermissionsExt::mode(&mode) & libc::S_ISGID != 0 {
            fchmod(&dir, Mode::from_bits_truncate(0o755))
                .map_err(|e| ImageError::io("chmod unpack root", root, e))?;
        }
        Ok(Applier {
            root: Rc::new(fd),
            root_path: root.to_owned(),
            format,
            privileged,
            ids: (nix::unistd::geteuid().as_raw(), nix::unistd::getegid().as_raw()),
            umask: read_umask(),
            limits,
            layer: String::new(),
            written: HashSet::new(),
            holding: HashSet::new(),
            deferred: BTreeMap::new(),
            depths: HashMap::new(),
            tracked: 0,
            cache: HashMap::new(),
            buf: vec![0; 256 << 10],
            report: UnpackReport { ownership: privileged, ..UnpackReport::default() },
        })
    }

    /// Applies one layer's tar stream; `layer` names it in errors. The stream is read to its
    /// end so that it can be verified as a whole.
    pub(crate) fn apply_layer(&mut self, layer: &str, stream: &mut dyn Read) -> Result<(), ImageError> {
        self.layer = layer.to_owned();
        self.written.clear();
        self.holding.clear();
        self.tracked = self.deferred.keys().map(Vec::len).sum();
        self.cache.clear();
        {
            let guarded = TarGuard::new(&mut *stream, self.limits.max_header as u64);
            let mut archive = tar::Archive::new(guarded);
            let entries = archive.entries().map_err(|e| self.stream_error(e))?;
            for entry in entries {
                let entry = entry.map_err(|e| self.stream_error(e))?;
                self.count_entry()?;
                self.entry(entry)?;
            }
        }
        std::io::copy(stream, &mut std::io::sink()).map_err(|e| self.stream_error(e))?;
        if self.format == Format::Overlay {
            self.flush()?;
        }
        Ok(())
    }

    /// Sets the deferred directory metadata (modes, owners, times), deepest first.
    pub(crate) fn finish(mut self) -> Result<UnpackReport, ImageError> {
        self.flush()?;
        Ok(self.report)
    }

    fn stream_error(&self, e: std::io::Error) -> ImageError {
        if let Some(Refusal::HeaderTooLarge(_, limit)) = e.get_ref().and_then(|r| r.downcast_ref::<Refusal>())
        {
            return ImageError::Limit {
                what: format!("extension header size in layer {}", self.layer),
                limit: *limit,
            };
        }
        ImageError::format(format!("layer {}", self.layer), format!("malformed tar stream: {e}"))
    }

    fn refuse(&self, raw: &[u8], reason: impl Into<String>) -> ImageError {
        ImageError::Entry {
            layer: self.layer.clone(),
            path: String::from_utf8_lossy(raw).into_owned(),
            reason: reason.into(),
        }
    }

    fn io(&self, op: &str, path: &[u8], e: impl Into<std::io::Error>) -> ImageError {
        ImageError::io(
            format!("layer {}: {op}", self.layer),
            self.root_path.join(Path::new(std::ffi::OsStr::from_bytes(path))),
            e.into(),
        )
    }

    /// Normalises an entry name: no `..`, no NUL, no over-long names; `.`, empty components and
    /// leading or trailing slashes dropped. The root itself is the empty path.
    fn clean(&self, raw: &[u8]) -> Result<Vec<u8>, ImageError> {
        if raw.contains(&0) {
            return Err(self.refuse(raw, "the name contains a NUL byte"));
        }
        if raw.len() > self.limits.max_path {
            return Err(self.refuse(
                &raw[..64.min(raw.len())],
                format!("the name is longer than {} bytes", self.limits.max_path),
            ));
        }
        let mut out = Vec::with_capacity(raw.len());
        for part in raw.split(|&b| b == b'/') {
            match part {
                b"" | b"." => {}
                b".." => return Err(self.refuse(raw, "the name has a `..` component")),
                p if p.len() > NAME_MAX => {
                    return Err(self.refuse(raw, format!("a component is longer than {NAME_MAX} bytes")));
                }
                p => {
                    if !out.is_empty() {
                        out.push(b'/');
                    }
                    out.extend_from_slice(p);
                }
            }
        }
        Ok(out)
    }

    fn entry<R: Read>(&mut self, mut entry: tar::Entry<'_, R>) -> Result<(), ImageError> {
        let raw = entry.path_bytes().into_owned();
        let path = self.clean(&raw)?;
        let kind = entry.header().entry_type();
        if kind == tar::EntryType::XGlobalHeader {
            return Ok(());
        }
        let meta = self.meta(&mut entry, &raw)?;
        if path.is_empty() {
            if kind.is_dir() {
                self.defer(&path, &meta);
                return Ok(());
            }
            // umoci CVE-2021-29136: a root that is a symlink or file would redirect everything.
            return Err(self.refuse(&raw, format!("the root of the image must be a directory, not {kind:?}")));
        }
        if path.starts_with(b".wh..wh.") {
            // aufs bookkeeping at the top (`.wh..wh.aufs`, `.wh..wh.plnk/...`), skipped as
            // Docker does.
            return Ok(());
        }
        let (dir, name) = split(&path);
        if let Some(rest) = name.strip_prefix(b".wh.") {
            return self.whiteout(dir, rest, &raw);
        }
        match kind {
            tar::EntryType::Regular | tar::EntryType::Continuous => self.file(&path, &mut entry, &meta)?,
            tar::EntryType::Directory => self.directory(&path, &meta)?,
            tar::EntryType::Symlink => {
                let target = entry.link_name_bytes().map(|t| t.into_owned()).unwrap_or_default();
                if target.is_empty() || target.contains(&0) {
                    return Err(self.refuse(&raw, "a symlink needs a non-empty target without NUL bytes"));
                }
                self.symlink(&path, &target, &meta)?
            }
            tar::EntryType::Link => {
                let target = entry.link_name_bytes().map(|t| t.into_owned()).unwrap_or_default();
                self.hardlink(&path, &raw, &target)?
            }
            tar::EntryType::Char | tar::EntryType::Block | tar::EntryType::Fifo => {
                self.special(&mut entry, &path, &raw, kind, &meta)?
            }
            other => {
                return Err(
                    self.refuse(&raw, format!("unsupported entry type {:?}", other.as_byte() as char))
                );
            }
        }
        self.mark(&path);
        if self.tracked > self.limits.max_tracked_bytes {
            return Err(ImageError::Limit {
                what: "bytes of entry names remembered for one layer".into(),
                limit: self.limits.max_tracked_bytes as u64,
            });
        }
        Ok(())
    }

    /// Records that the current layer wrote `path` (and so holds each of its parents).
    fn mark(&mut self, path: &[u8]) {
        let mut dir = split(path).0;
        while !dir.is_empty() && self.holding.insert(dir.to_vec()) {
            self.tracked += dir.len();
            dir = split(dir).0;
        }
        if self.written.insert(path.to_vec()) {
            self.tracked += path.len();
        }
    }

    fn meta<R: Read>(&self, entry: &mut tar::Entry<'_, R>, raw: &[u8]) -> Result<Meta, ImageError> {
        let mut xattrs = Vec::new();
        let mut pax_bytes = 0usize;
        if let Some(pax) =
            entry.pax_extensions().map_err(|e| self.refuse(raw, format!("bad PAX header: {e}")))?
        {
            for ext in pax {
                let ext = ext.map_err(|e| self.refuse(raw, format!("bad PAX record: {e}")))?;
                pax_bytes += ext.key_bytes().len() + ext.value_bytes().len();
                if let Some(name) = ext.key_bytes().strip_prefix(b"SCHILY.xattr.") {
                    xattrs.push((name.to_vec(), ext.value_bytes().to_vec()));
                }
            }
        }
        if pax_bytes > self.limits.max_header {
            return Err(ImageError::Limit {
                what: format!("PAX header of {:?}", String::from_utf8_lossy(raw)),
                limit: self.limits.max_header as u64,
            });
        }
        let h = entry.header();
        let bad = |what: &str, e: std::io::Error| self.refuse(raw, format!("bad {what}: {e}"));
        let id = |what: &str, v: u64| {
            u32::try_from(v)
                .ok()
                .filter(|&v| v != u32::MAX)
                .ok_or_else(|| self.refuse(raw, format!("{what} {v} is out of range")))
        };
        Ok(Meta {
            mode: h.mode().map_err(|e| bad("mode", e))? & 0o7777,
            uid: id("uid", h.uid().map_err(|e| bad("uid", e))?)?,
            gid: id("gid", h.gid().map_err(|e| bad("gid", e))?)?,
            mtime: i64::try_from(h.mtime().unwrap_or(0)).unwrap_or(i64::MAX),
            xattrs,
        })
    }

    /// The directory `dir` (a cleaned path, "" for the root), resolved inside the root. With
    /// `create`, missing directories are made (mode 0755).
    fn dir(&mut self, dir: &[u8], create: bool) -> Result<Option<Rc<OwnedFd>>, ImageError> {
        if dir.is_empty() {
            return Ok(Some(self.root.clone()));
        }
        if let Some(fd) = self.cache.get(dir) {
            return Ok(Some(fd.clone()));
        }
        let fd = match self.resolve(dir) {
            Ok(fd) => fd,
            Err(Errno::ENOENT) if create => self.create_dirs(dir)?,
            Err(Errno::ENOENT) => return Ok(None),
            Err(Errno::ENOTDIR) => return Err(self.refuse(dir, "a parent directory is not a directory")),
            Err(e) => return Err(self.io("open directory", dir, e)),
        };
        let fd = Rc::new(fd);
        if self.cache.len() >= CACHE_MAX {
            self.cache.clear();
        }
        self.cache.insert(dir.to_vec(), fd.clone());
        Ok(Some(fd))
    }

    fn parent(&mut self, dir: &[u8]) -> Result<Rc<OwnedFd>, ImageError> {
        self.dir(dir, true)?.ok_or_else(|| self.refuse(dir, "cannot create the parent directory"))
    }

    fn resolve(&self, path: &[u8]) -> nix::Result<OwnedFd> {
        let how = OpenHow::new()
            .flags(OFlag::O_PATH | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC)
            .resolve(ResolveFlag::RESOLVE_IN_ROOT | ResolveFlag::RESOLVE_NO_MAGICLINKS);
        let mut tries = 0;
        loop {
            match openat2(self.root.as_fd(), path, how) {
                Err(Errno::EAGAIN | Errno::EINTR) if tries < 64 => tries += 1,
                other => return other,
            }
        }
    }

    fn create_dirs(&mut self, dir: &[u8]) -> Result<OwnedFd, ImageError> {
        let mut parent: Option<OwnedFd> = None;
        let mut end = 0;
        for part in dir.split(|&b| b == b'/') {
            end += part.len();
            let prefix = &dir[..end];
            let fd = match self.resolve(prefix) {
                Ok(fd) => fd,
                Err(Errno::ENOENT) => {
                    let at = parent.as_ref().map_or(self.root.as_fd(), |p| p.as_fd());
                    match mkdirat(at, part, Mode::from_bits_truncate(0o755)) {
                        Ok(()) => match parent.as_ref() {
                            Some(p) => self.made_dir(p.as_fd(), part, prefix)?,
                            None => {
                                let root = self.root.clone();
                                self.made_dir(root.as_fd(), part, prefix)?;
                            }
                        },
                        Err(Errno::EEXIST) => {}
                        Err(e) => return Err(self.io("create directory", prefix, e)),
                    }
                    self.mark(prefix);
                    match self.resolve(prefix) {
                        Ok(fd) => fd,
                        Err(Errno::ENOENT) => {
                            return Err(self.refuse(prefix, "a parent directory is a dangling symlink"));
                        }
                        Err(e) => return Err(self.io("open directory", prefix, e)),
                    }
                }
                Err(Errno::ENOTDIR) => {
                    return Err(self.refuse(prefix, "a parent directory is not a directory"));
                }
                Err(e) => return Err(self.io("open directory", prefix, e)),
            };
            parent = Some(fd);
            end += 1;
        }
        parent.ok_or_else(|| self.refuse(dir, "empty directory path"))
    }

    /// Counts one more entry against [`UnpackLimits::max_entries`].
    fn count_entry(&mut self) -> Result<(), ImageError> {
        self.report.entries += 1;
        if self.report.entries > self.limits.max_entries {
            return Err(ImageError::Limit {
                what: "entries of the image".into(),
                limit: self.limits.max_entries,
            });
        }
        Ok(())
    }

    /// Accounts for a directory just made as `name` in `parent`: one more entry, and a depth
    /// within [`UnpackLimits::max_depth`].
    fn made_dir(&mut self, parent: BorrowedFd<'_>, name: &[u8], path: &[u8]) -> Result<(), ImageError> {
        self.count_entry()?;
        let key = |st: FileStat| (st.st_dev, st.st_ino);
        let up = fstat(parent).map_err(|e| self.io("inspect", path, e))?;
        let depth = self.depths.get(&key(up)).copied().unwrap_or(0) + 1;
        if depth > self.limits.max_depth {
            return Err(self.refuse(path, format!("directories nest deeper than {}", self.limits.max_depth)));
        }
        let st =
            fstatat(parent, name, AtFlags::AT_SYMLINK_NOFOLLOW).map_err(|e| self.io("inspect", path, e))?;
        self.depths.insert(key(st), depth);
        Ok(())
    }

    /// Creates `name` in `parent` with `create`; if the name is taken, clears it first (only a
    /// directory asked for over a directory stays, and `create` then reports `EEXIST`).
    fn place(
        &mut self,
        parent: &OwnedFd,
        name: &[u8],
        path: &[u8],
        mut create: impl FnMut(&OwnedFd) -> nix::Result<()>,
    ) -> Result<bool, ImageError> {
        match create(parent) {
            Ok(()) => return Ok(false),
            Err(Errno::EEXIST) => {}
            Err(e) => return Err(self.io("create", path, e)),
        }
        let st = match fstatat(parent, name, AtFlags::AT_SYMLINK_NOFOLLOW) {
            Ok(st) => Some(st),
            Err(Errno::ENOENT) => None,
            Err(e) => return Err(self.io("inspect", path, e)),
        };
        if let Some(st) = st {
            self.cache.clear();
            if is_dir(&st) {
                self.remove_tree(parent, name, path)?;
            } else {
                unlinkat(parent, name, UnlinkatFlags::NoRemoveDir)
                    .map_err(|e| self.io("replace", path, e))?;
            }
        }
        create(parent).map_err(|e| self.io("create", path, e))?;
        Ok(st.is_some())
    }

    fn file<R: Read>(
        &mut self,
        path: &[u8],
        entry: &mut tar::Entry<'_, R>,
        meta: &Meta,
    ) -> Result<(), ImageError> {
        let (dir, name) = split(path);
        let parent = self.parent(dir)?;
        let mut fd = None;
        self.place(&parent, name, path, |p| {
            let flags =
                OFlag::O_WRONLY | OFlag::O_CREAT | OFlag::O_EXCL | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC;
            fd = Some(openat(p, name, flags, Mode::from_bits_truncate(meta.mode & 0o777))?);
            Ok(())
        })?;
        let Some(fd) = fd else { return Err(self.io("create", path, Errno::EEXIST)) };
        let mut file = File::from(fd);
        loop {
            let n = entry.read(&mut self.buf).map_err(|e| self.stream_error(e))?;
            if n == 0 {
                break;
            }
            file.write_all(&self.buf[..n]).map_err(|e| self.io("write", path, e))?;
        }
        self.set_owner(&file, path, meta);
        // Directories stay private (0700, never set-gid) until the end, so a new file's mode
        // is exactly what it was created with unless the umask cut it or it has special bits.
        if self.umask.is_none_or(|umask| meta.mode & (umask | 0o7000) != 0) {
            fchmod(&file, Mode::from_bits_retain(meta.mode)).map_err(|e| self.io("chmod", path, e))?;
        }
        self.set_xattrs(&file, path, &meta.xattrs);
        futimens(&file, &time(meta.mtime), &time(meta.mtime)).map_err(|e| self.io("set times", path, e))?;
        Ok(())
    }

    fn directory(&mut self, path: &[u8], meta: &Meta) -> Result<(), ImageError> {
        let (dir, name) = split(path);
        let parent = self.parent(dir)?;
        match mkdirat(&*parent, name, Mode::from_bits_truncate(0o700)) {
            Ok(()) => {}
            Err(Errno::EEXIST) => match fstatat(&*parent, name, AtFlags::AT_SYMLINK_NOFOLLOW) {
                Ok(st) if is_dir(&st) => {
                    // dir over dir: merge
                    self.defer(path, meta);
                    return Ok(());
                }
                st => {
                    self.place(&parent, name, path, |p| mkdirat(p, name, Mode::from_bits_truncate(0o700)))?;
                    if self.format == Format::Overlay && st.is_ok_and(|st| is_whiteout(&st)) {
                        // A directory replacing its own whiteout hides everything below it.
                        self.opaque(path)?;
                    }
                }
            },
            Err(e) => return Err(self.io("create directory", path, e)),
        }
        self.made_dir(parent.as_fd(), name, path)?;
        self.defer(path, meta);
        Ok(())
    }

    fn defer(&mut self, path: &[u8], meta: &Meta) {
        let owner = self.privileged.then_some((meta.uid, meta.gid));
        self.tracked += path.len();
        self.deferred.insert(
            path.to_vec(),
            DirMeta { mode: meta.mode, owner, mtime: meta.mtime, xattrs: meta.xattrs.clone() },
        );
    }

    fn symlink(&mut self, path: &[u8], target: &[u8], meta: &Meta) -> Result<(), ImageError> {
        let (dir, name) = split(path);
        let parent = self.parent(dir)?;
        self.place(&parent, name, path, |p| symlinkat(target, p, name))?;
        if !meta.xattrs.is_empty() {
            self.note_xattr(path, b"(all)", "xattrs on symlinks are not applied");
        }
        self.finish_at(&parent, name, path, meta, false)
    }

    fn hardlink(&mut self, path: &[u8], raw: &[u8], target: &[u8]) -> Result<(), ImageError> {
        let target = self.clean(target)?;
        if target.is_empty() || target == path {
            return Err(self.refuse(raw, "a hardlink must name another entry"));
        }
        let (tdir, tname) = split(&target);
        let where_ = if self.format == Format::Overlay { "in this layer" } else { "yet" };
        let why = format!("hardlink target {:?} does not exist {where_}", String::from_utf8_lossy(&target));
        let missing = |me: &Self| me.refuse(raw, why.clone());
        let Some(tparent) = self.dir(tdir, false)? else { return Err(missing(self)) };
        match fstatat(&*tparent, tname, AtFlags::AT_SYMLINK_NOFOLLOW) {
            Ok(st) if is_dir(&st) => return Err(self.refuse(raw, "a hardlink cannot point to a directory")),
            Ok(st) if self.format == Format::Overlay && is_whiteout(&st) => return Err(missing(self)),
            Ok(_) => {}
            Err(Errno::ENOENT) => return Err(missing(self)),
            Err(e) => return Err(self.io("inspect hardlink target", &target, e)),
        }
        let (dir, name) = split(path);
        let parent = self.parent(dir)?;
        // The link shares the target's inode: its owner and mode are never touched here.
        self.place(&parent, name, path, |p| linkat(&*tparent, tname, p, name, AtFlags::empty()))?;
        Ok(())
    }

    fn special<R: Read>(
        &mut self,
        entry: &mut tar::Entry<'_, R>,
        path: &[u8],
        raw: &[u8],
        kind: tar::EntryType,
        meta: &Meta,
    ) -> Result<(), ImageError> {
        let (sflag, dev) = if kind == tar::EntryType::Fifo {
            (SFlag::S_IFIFO, 0)
        } else {
            let h = entry.header();
            let bad = |e: std::io::Error| self.refuse(raw, format!("bad device number: {e}"));
            let major = h.device_major().map_err(bad)?.unwrap_or(0);
            let minor = h.device_minor().map_err(bad)?.unwrap_or(0);
            // The kernel's dev_t holds a 12-bit major and a 20-bit minor.
            if major >= 1 << 12 || minor >= 1 << 20 {
                return Err(self.refuse(raw, format!("device number {major}:{minor} is out of range")));
            }
            let sflag = if kind == tar::EntryType::Char { SFlag::S_IFCHR } else { SFlag::S_IFBLK };
            (sflag, nix::sys::stat::makedev(u64::from(major), u64::from(minor)))
        };
        let (dir, name) = split(path);
        let parent = self.parent(dir)?;
        if sflag != SFlag::S_IFIFO && !self.privileged {
            return self.skip_device(&parent, name, path);
        }
        let perm = Mode::from_bits_truncate(meta.mode & 0o777);
        match self.place(&parent, name, path, |p| mknodat(p, name, sflag, perm, dev)) {
            Err(ImageError::Io { source, .. })
                if source.raw_os_error() == Some(libc::EPERM) && sflag != SFlag::S_IFIFO =>
            {
                // Root without CAP_MKNOD in the initial namespace (e.g. in a user namespace).
                return self.skip_device(&parent, name, path);
            }
            other => other?,
        };
        self.finish_at(&parent, name, path, meta, true)
    }

    /// Sets the owner (as root), the mode (with `chmod`) and the times of `name` in `parent`,
    /// never following it: for entries without an open fd (symlinks, devices, FIFOs).
    fn finish_at(
        &mut self,
        parent: &OwnedFd,
        name: &[u8],
        path: &[u8],
        meta: &Meta,
        chmod: bool,
    ) -> Result<(), ImageError> {
        if self.privileged
            && let Err(e) = fchownat(
                parent,
                name,
                Some(Uid::from_raw(meta.uid)),
                Some(Gid::from_raw(meta.gid)),
                AtFlags::AT_SYMLINK_NOFOLLOW,
            )
        {
            self.ownership_failed(path, e);
        }
        if chmod {
            fchmodat(parent, name, Mode::from_bits_retain(meta.mode), FchmodatFlags::NoFollowSymlink)
                .map_err(|e| self.io("chmod", path, e))?;
        }
        utimensat(parent, name, &time(meta.mtime), &time(meta.mtime), UtimensatFlags::NoFollowSymlink)
            .map_err(|e| self.io("set times", path, e))
    }

    fn whiteout(&mut self, dir: &[u8], rest: &[u8], raw: &[u8]) -> Result<(), ImageError> {
        let opaque = rest == b".wh..opq";
        if !opaque && (rest.is_empty() || rest == b"." || rest == b".." || rest.starts_with(b".wh.")) {
            return Err(self.refuse(raw, "malformed whiteout"));
        }
        if !dir.is_empty() && self.resolve(dir).err() == Some(Errno::ENOTDIR) {
            // Nothing is below a non-directory: umoci, for one, lists the children of a
            // directory it replaced by a file as whiteouts below that file.
            return Ok(());
        }
        if opaque {
            return self.opaque(dir);
        }
        let path = join(dir, rest);
        if self.written.contains(&path) || self.holding.contains(&path) {
            // Added earlier in this same layer: the whiteout only hides lower layers. What
            // this layer wrote stays; below a real directory, lower content goes.
            let parent = self.dir(dir, false)?;
            let is_real_dir = parent.is_some_and(|p| {
                fstatat(&*p, rest, AtFlags::AT_SYMLINK_NOFOLLOW).is_ok_and(|st| is_dir(&st))
            });
            return if is_real_dir { self.opaque(&path) } else { Ok(()) };
        }
        match self.format {
            Format::Flat => {
                let Some(parent) = self.dir(dir, false)? else { return Ok(()) };
                match fstatat(&*parent, rest, AtFlags::AT_SYMLINK_NOFOLLOW) {
                    Err(Errno::ENOENT) => Ok(()),
                    Err(e) => Err(self.io("inspect", &path, e)),
                    Ok(st) => {
                        self.cache.clear();
                        if is_dir(&st) {
                            self.remove_tree(&parent, rest, &path)
                        } else {
                            // Removes the link itself, never what a symlink points to.
                            unlinkat(&*parent, rest, UnlinkatFlags::NoRemoveDir)
                                .map_err(|e| self.io("remove", &path, e))
                        }
                    }
                }
            }
            Format::Overlay => {
                let parent = self.parent(dir)?;
                let whiteout = |p: &OwnedFd| mknodat(p, rest, SFlag::S_IFCHR, Mode::empty(), 0);
                self.place(&parent, rest, &path, whiteout).map(drop)
            }
        }
    }

    fn opaque(&mut self, dir: &[u8]) -> Result<(), ImageError> {
        match self.format {
            Format::Flat => {
                let Some(fd) = self.dir(dir, false)? else { return Ok(()) };
                self.cache.clear();
                self.clear_lower(&fd, dir)
            }
            Format::Overlay => {
                let parent = self.parent(dir)?;
                self.mark(dir);
                let fd = openat(
                    &*parent,
                    ".",
                    OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC,
                    Mode::empty(),
                )
                .map_err(|e| self.io("open directory", dir, e))?;
                let mut names = vec![c"user.overlay.opaque"];
                if self.privileged {
                    names.push(c"trusted.overlay.opaque");
                }
                for name in names {
                    match crate::sys::fsetxattr(fd.as_fd(), name, b"y") {
                        // Root in a user namespace may not set trusted.*; user.* is there.
                        Err(e) if e.raw_os_error() == Some(libc::EPERM) && name != c"user.overlay.opaque" => {
                        }
                        other => other.map_err(|e| self.io("mark opaque", dir, e))?,
                    }
                }
                Ok(())
            }
        }
    }

    /// Removes everything under `dir` that the current layer did not write.
    fn clear_lower(&mut self, fd: &OwnedFd, dir: &[u8]) -> Result<(), ImageError> {
        for (name, is_directory) in self.list(fd, dir)? {
            let path = join(dir, &name);
            if self.written.contains(&path) || self.holding.contains(&path) {
                if is_directory {
                    let child = openat(
                        fd,
                        name.as_slice(),
                        OFlag::O_PATH | OFlag::O_DIRECTORY | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC,
                        Mode::empty(),
                    )
                    .map_err(|e| self.io("open directory", &path, e))?;
                    self.clear_lower(&child, &path)?;
                }
            } else if is_directory {
                self.remove_tree(fd, &name, &path)?;
            } else {
                unlinkat(fd, name.as_slice(), UnlinkatFlags::NoRemoveDir)
                    .map_err(|e| self.io("remove", &path, e))?;
            }
        }
        Ok(())
    }

    /// The entries of directory `fd` with whether each is a directory (not following links).
    fn list(&self, fd: &OwnedFd, path: &[u8]) -> Result<Vec<(Vec<u8>, bool)>, ImageError> {
        list(fd).map_err(|e| self.io("list directory", path, e))
    }

    /// Removes directory `name` of `parent` and everything in it, never following a link.
    fn remove_tree(&mut self, parent: &OwnedFd, name: &[u8], path: &[u8]) -> Result<(), ImageError> {
        // What was deferred for the removed directories must not land on a later namesake.
        let below: Vec<Vec<u8>> = self
            .deferred
            .range(path.to_vec()..)
            .map(|(k, _)| k)
            .take_while(|k| k.starts_with(path))
            .filter(|k| k.len() == path.len() || k[path.len()] == b'/')
            .cloned()
            .collect();
        for k in below {
            self.deferred.remove(&k);
        }
        remove_tree(parent, name).map_err(|e| self.io("remove directory", path, e))
    }

    /// Sets the deferred directory metadata, deepest directories first; a directory replaced
    /// since (by a file or symlink) is skipped.
    fn flush(&mut self) -> Result<(), ImageError> {
        let mut dirs: Vec<(Vec<u8>, DirMeta)> = std::mem::take(&mut self.deferred).into_iter().collect();
        dirs.sort_by_key(|(p, _)| {
            std::cmp::Reverse(p.iter().filter(|&&b| b == b'/').count() + usize::from(!p.is_empty()))
        });
        self.cache.clear();
        for (path, meta) in dirs {
            let (dir, name) = split(&path);
            let fd = if path.is_empty() {
                openat(
                    &*self.root,
                    ".",
                    OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC,
                    Mode::empty(),
                )
            } else {
                let parent =
                    if dir.is_empty() { Ok(self.root.clone()) } else { self.resolve(dir).map(Rc::new) };
                let Ok(parent) = parent else { continue };
                openat(
                    &*parent,
                    name,
                    OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC,
                    Mode::empty(),
                )
            };
            let fd = match fd {
                Ok(fd) => File::from(fd),
                Err(Errno::ENOENT | Errno::ELOOP | Errno::ENOTDIR) => continue,
                Err(e) => return Err(self.io("open directory", &path, e)),
            };
            if let Some((uid, gid)) = meta.owner
                && let Err(e) = fchown(&fd, Some(Uid::from_raw(uid)), Some(Gid::from_raw(gid)))
            {
                self.ownership_failed(&path, e);
            }
            fchmod(&fd, Mode::from_bits_retain(meta.mode)).map_err(|e| self.io("chmod", &path, e))?;
            self.set_xattrs(&fd, &path, &meta.xattrs);
            futimens(&fd, &time(meta.mtime), &time(meta.mtime))
                .map_err(|e| self.io("set times", &path, e))?;
        }
        Ok(())
    }

    fn set_owner(&mut self, file: &File, path: &[u8], meta: &Meta) {
        if self.privileged
            && (meta.uid, meta.gid) != self.ids
            && let Err(e) = fchown(file, Some(Uid::from_raw(meta.uid)), Some(Gid::from_raw(meta.gid)))
        {
            self.ownership_failed(path, e);
        }
    }

    fn set_xattrs(&mut self, file: &File, path: &[u8], xattrs: &[(Vec<u8>, Vec<u8>)]) {
        for (name, value) in xattrs {
            if name.starts_with(b"trusted.overlay.") || name.starts_with(b"user.overlay.") {
                // Applied raw these would redirect or hide lower layers under overlayfs.
                self.note_xattr(path, name, "overlayfs xattrs from an image are never applied");
                continue;
            }
            let Ok(cname) = CString::new(name.clone()) else {
                self.note_xattr(path, name, "the name contains a NUL byte");
                continue;
            };
            if let Err(e) = crate::sys::fsetxattr(file.as_fd(), &cname, value) {
                self.note_xattr(path, name, &e.to_string());
            }
        }
    }

    fn note_xattr(&mut self, path: &[u8], name: &[u8], why: &str) {
        self.report.skipped_xattrs += 1;
        if self.report.skipped_xattr_list.len() < REPORT_MAX {
            self.report
                .skipped_xattr_list
                .push((path_of(path), format!("{}: {why}", String::from_utf8_lossy(name))));
        }
    }

    /// A device this unpack may not create: listed in the report, and nothing left at its path
    /// (in the store, a whiteout), since the device replaces what lower layers had there.
    fn skip_device(&mut self, parent: &OwnedFd, name: &[u8], path: &[u8]) -> Result<(), ImageError> {
        self.report.skipped_devices += 1;
        if self.report.skipped_device_list.len() < REPORT_MAX {
            self.report.skipped_device_list.push(path_of(path));
        }
        match self.format {
            // "Creating" nothing succeeds once the name is free.
            Format::Flat => {
                self.place(parent, name, path, |p| match fstatat(p, name, AtFlags::AT_SYMLINK_NOFOLLOW) {
                    Ok(_) => Err(Errno::EEXIST),
                    Err(Errno::ENOENT) => Ok(()),
                    Err(e) => Err(e),
                })
            }
            Format::Overlay => {
                self.place(parent, name, path, |p| mknodat(p, name, SFlag::S_IFCHR, Mode::empty(), 0))
            }
        }
        .map(drop)
    }

    fn ownership_failed(&mut self, path: &[u8], e: Errno) {
        self.report.ownership = false;
        if self.report.ownership_errors.len() < REPORT_MAX {
            self.report.ownership_errors.push((path_of(path), e.desc().to_owned()));
        }
    }
}

/// Removes directory `name` of `parent` and everything beneath it without following links.
/// Directories without write or search permission (mode 0000) are opened up first.
pub(crate) fn remove_tree(parent: &impl AsFd, name: &[u8]) -> nix::Result<()> {
    let open = || {
        openat(
            parent,
            name,
            OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC,
            Mode::empty(),
        )
    };
    let fd = match open() {
        Err(Errno::EACCES) => {
            fchmodat(parent, name, Mode::from_bits_truncate(0o700), FchmodatFlags::NoFollowSymlink)?;
            open()?
        }
        other => other?,
    };
    // Owner rwx so that entries can be removed even from a mode 0555 directory.
    let _ = fchmod(&fd, Mode::from_bits_truncate(0o700));
    for (child, is_directory) in list(&fd)? {
        if is_directory {
            remove_tree(&fd, &child)?;
        } else {
            unlinkat(&fd, child.as_slice(), UnlinkatFlags::NoRemoveDir)?;
        }
    }
    unlinkat(parent, name, UnlinkatFlags::RemoveDir)
}

/// The process umask, from `/proc/self/status` (reading it with `umask(2)` would change it
/// for a moment under other threads).
fn read_umask() -> Option<u32> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find_map(|l| l.strip_prefix("Umask:"))?;
    u32::from_str_radix(line.trim(), 8).ok()
}

/// The entries of directory `fd` (without `.` and `..`), each with whether it is a directory
/// (not following links).
fn list(fd: &impl AsFd) -> nix::Result<Vec<(Vec<u8>, bool)>> {
    let flags = OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC;
    let mut dir = nix::dir::Dir::openat(fd, ".", flags, Mode::empty())?;
    let mut out = Vec::new();
    for ent in dir.iter() {
        let ent = ent?;
        let name = ent.file_name().to_bytes();
        if name == b"." || name == b".." {
            continue;
        }
        let is_directory = match ent.file_type() {
            Some(t) => t == nix::dir::Type::Directory,
            None => fstatat(fd, name, AtFlags::AT_SYMLINK_NOFOLLOW).is_ok_and(|st| is_dir(&st)),
        };
        out.push((name.to_vec(), is_directory));
    }
    Ok(out)
}

fn split(path: &[u8]) -> (&[u8], &[u8]) {
    match path.iter().rposition(|&b| b == b'/') {
        Some(i) => (&path[..i], &path[i + 1..]),
        None => (&[], path),
    }
}

fn join(dir: &[u8], name: &[u8]) -> Vec<u8> {
    if dir.is_empty() {
        return name.to_vec();
    }
    let mut p = Vec::with_capacity(dir.len() + 1 + name.len());
    p.extend_from_slice(dir);
    p.push(b'/');
    p.extend_from_slice(name);
    p
}

fn path_of(path: &[u8]) -> PathBuf {
    PathBuf::from(std::ffi::OsStr::from_bytes(path))
}

fn is_dir(st: &FileStat) -> bool {
    st.st_mode & libc::S_IFMT == libc::S_IFDIR
}

fn is_whiteout(st: &FileStat) -> bool {
    st.st_mode & libc::S_IFMT == libc::S_IFCHR && st.st_rdev == 0
}

fn time(secs: i64) -> TimeSpec {
    TimeSpec::new(secs, 0)
}
