//! The content-addressed layer store.
//!
//! ```text
//! <store>/            mode 0700
//!   lock              shared while preparing, exclusive while collecting garbage
//!   layers/<hex>/     one unpacked layer per diff_id, in overlayfs format, never changed
//!   locks/<hex>       shared by every Rootfs using that layer (gc skips layers it finds held)
//!   locks/<hex>.unpack  exclusive while that layer is being unpacked
//!   tmp/<hex>.<pid>.<n>  a layer being unpacked; renamed into layers/ once verified
//!   images/<hex>      per image id: the diff_ids it uses (the garbage collector's roots)
//! ```
//!
//! Two processes (or threads) preparing images that share layers take the layer's unpack lock
//! in turn: the first unpacks it, the second finds it in place. The unpack lock is not the lease
//! lock: a preparer must never wait for a `Rootfs` that uses the layer to be dropped. A layer appears in `layers/` only
//! by an atomic rename after its blob, size and diff_id checked out.
//!
//! An unpacker holds the layer's unpack lock for as long as its `tmp/` entry exists, so a
//! process killed mid-unpack leaves an entry whose lock nobody holds: the next
//! [`prepare`](LayerStore::prepare) takes that lock without waiting and removes the entry.

use std::collections::HashSet;
use std::fs::{self, File, OpenOptions};
use std::io::Write;
use std::os::unix::fs::DirBuilderExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use nix::fcntl::{Flock, FlockArg};

use super::apply::{Applier, Format};
use super::{Digest, Image, ImageError, Rootfs, UnpackLimits, UnpackReport, blob, remove_dir_all};

/// overlayfs stacks at most this many lower layers (`OVL_MAX_STACK`).
const MAX_LAYERS: usize = 500;
/// Layers of one image unpacked at the same time (each also uses a decompressing thread).
const WORKERS: usize = 2;

/// Shared locks on layers, held by a [`Rootfs`] and the sandboxes built from it.
#[derive(Debug)]
pub(crate) struct Lease {
    _locks: Vec<Flock<File>>,
}

/// A directory of unpacked layers shared by any number of images and processes.
#[derive(Clone, Debug)]
pub struct LayerStore {
    root: PathBuf,
    limits: UnpackLimits,
    sync: bool,
}

/// What [`LayerStore::gc`] removed.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct GcReport {
    /// Layers no recorded image uses any more, removed.
    pub layers_removed: usize,
    /// Leftovers of interrupted unpacks and image records, removed (a [`prepare`]
    /// removes those of unpacks too).
    ///
    /// [`prepare`]: LayerStore::prepare
    pub temporaries_removed: usize,
    /// Layers a recorded image uses, kept.
    pub layers_kept: usize,
    /// Layers no recorded image uses but a live [`Rootfs`] holds, kept for now.
    pub layers_in_use: usize,
}

impl LayerStore {
    /// Opens (creating if needed, mode 0700) a store at `dir`, a location of the caller's
    /// choice on a file system that overlayfs accepts as a lower layer.
    ///
    /// # Errors
    /// [`ImageError::Io`] if the directories cannot be created, [`ImageError::Unsupported`] on
    /// a host without `openat2`.
    pub fn open(dir: impl AsRef<Path>) -> Result<LayerStore, ImageError> {
        ImageError::require_openat2()?;
        let root = dir.as_ref().to_owned();
        let mut builder = fs::DirBuilder::new();
        builder.mode(0o700).recursive(true);
        for sub in ["", "layers", "locks", "tmp", "images"] {
            let p = root.join(sub);
            builder.create(&p).map_err(|e| ImageError::io("create store directory", &p, e))?;
        }
        // Layer paths become overlay lower directories, which must be absolute.
        let root =
            fs::canonicalize(&root).map_err(|e| ImageError::io("resolve store directory", &root, e))?;
        // Everything below is trusted as verified content: it must be ours alone.
        let me = nix::unistd::geteuid().as_raw();
        for sub in ["", "layers", "locks", "tmp", "images"] {
            use std::os::unix::fs::MetadataExt;
            let p = root.join(sub);
            let meta =
                fs::symlink_metadata(&p).map_err(|e| ImageError::io("inspect store directory", &p, e))?;
            let problem = if !meta.is_dir() {
                Some("not a directory (a symlink?)".to_owned())
            } else if meta.uid() != me {
                Some(format!("owned by uid {}, not by this process's uid {me}", meta.uid()))
            } else if meta.mode() & 0o022 != 0 {
                Some(format!("writable by others (mode {:o})", meta.mode() & 0o7777))
            } else {
                None
            };
            if let Some(reason) = problem {
                return Err(ImageError::format(format!("layer store directory {}", p.display()), reason));
            }
        }
        Ok(LayerStore { root, limits: UnpackLimits::default(), sync: false })
    }

    /// Uses `limits` for layers unpacked from now on.
    pub fn with_limits(mut self, limits: UnpackLimits) -> LayerStore {
        self.limits = limits;
        self
    }

    /// With `true`, every layer unpacked from now on is flushed to disk (`syncfs(2)` of the
    /// store's file system) before it is renamed into place, and the rename and the image
    /// records are made durable too. Off by default, as in containerd (`sync_fs`) and
    /// containers/storage: it makes each unpack wait for the write-back. Without it, a power
    /// loss shortly after [`prepare`](Self::prepare) can leave a layer complete in name but
    /// with empty files, which later prepares then reuse.
    pub fn with_sync(mut self, sync: bool) -> LayerStore {
        self.sync = sync;
        self
    }

    /// The directory of the layer with this diff_id (which exists once it is unpacked).
    pub fn layer_path(&self, diff_id: &Digest) -> PathBuf {
        self.root.join("layers").join(diff_id.hex())
    }

    /// Whether the layer with this diff_id is unpacked in the store.
    pub fn contains(&self, diff_id: &Digest) -> bool {
        self.layer_path(diff_id).is_dir()
    }

    /// Unpacks the layers of `image` that the store lacks (up to two at a time), records the
    /// image as a user of its layers, and returns its root file system. First removes what
    /// unpacks killed midway (by any process) left in the store. The [`Rootfs`] (and
    /// every sandbox built from it) holds a shared lock on each of its layers (one open file
    /// each), so that [`gc`](Self::gc) never removes a layer in use.
    ///
    /// # Errors
    /// Any verification, limit or entry error of a layer (the layer is then absent from the
    /// store), [`ImageError::Limit`] for more than 500 layers (overlayfs's maximum), or
    /// [`ImageError::Io`]. A layer blob that is missing (or not of its descriptor's size) is
    /// found before any layer is unpacked.
    pub fn prepare(&self, image: &Image) -> Result<Rootfs, ImageError> {
        if image.layers.len() > MAX_LAYERS {
            return Err(ImageError::Limit {
                what: format!("layers of image {}", image.id),
                limit: MAX_LAYERS as u64,
            });
        }
        let _shared = self.lock_store(FlockArg::LockShared)?;
        self.remove_killed_unpacks();
        let mut seen = HashSet::new();
        let missing: Vec<usize> = (0..image.layers.len())
            .filter(|&i| seen.insert(&image.layers[i].diff_id) && !self.contains(&image.layers[i].diff_id))
            .collect();
        let mut report =
            UnpackReport { ownership: nix::unistd::geteuid().is_root(), ..UnpackReport::default() };
        report.layers_reused = seen.len() - missing.len();
        image.check_blobs(missing.iter().map(|&i| &image.layers[i]))?;

        let queue = Mutex::new(missing.into_iter());
        let results = Mutex::new(Vec::new());
        std::thread::scope(|s| {
            for _ in 0..WORKERS.min(image.layers.len()) {
                s.spawn(|| {
                    loop {
                        let next = queue.lock().map(|mut q| q.next()).unwrap_or(None);
                        let Some(i) = next else { break };
                        let result = self.unpack_layer(image, i);
                        let failed = result.is_err();
                        if let Ok(mut r) = results.lock() {
                            r.push(result);
                        }
                        if failed {
                            // Stop taking new layers; the other worker finishes its own.
                            if let Ok(mut q) = queue.lock() {
                                q.by_ref().for_each(drop);
                            }
                        }
                    }
                });
            }
        });
        for result in results.into_inner().unwrap_or_default() {
            report.merge(result?);
        }

        let record: String = image.layers.iter().map(|l| format!("{}\n", l.diff_id.hex())).collect();
        self.write_atomic(&self.root.join("images").join(image.id.hex()), record.as_bytes())?;
        // overlayfs refuses the same lower directory twice; a repeated layer (the well-known
        // empty one, say) is kept at its topmost place, which gives the same tree.
        let mut layers: Vec<PathBuf> = Vec::with_capacity(image.layers.len());
        for l in image.layers.iter().rev() {
            let path = self.layer_path(&l.diff_id);
            if !layers.contains(&path) {
                layers.push(path);
            }
        }
        layers.reverse();
        let mut rootfs = Rootfs::new(layers, image.config.clone(), report)?;
        rootfs.lease = Some(Arc::new(self.lease(image)?));
        Ok(rootfs)
    }

    /// Shared locks on the layers of `image`, taken while the store-wide lock keeps gc out.
    fn lease(&self, image: &Image) -> Result<Lease, ImageError> {
        let mut locks = Vec::new();
        let mut seen = HashSet::new();
        for layer in &image.layers {
            if !seen.insert(&layer.diff_id) {
                continue;
            }
            locks.push(lock(&self.root.join("locks").join(layer.diff_id.hex()), FlockArg::LockShared)?);
        }
        Ok(Lease { _locks: locks })
    }

    /// Removes what unpacks killed midway left in `tmp/`, while the store is held shared (so no
    /// gc is running).
    ///
    /// An entry `<hex>.…` belongs to an unpack of layer `<hex>` (or to a gc removal of it,
    /// which cannot be running). Its unpacker takes `locks/<hex>.unpack` before creating the
    /// entry and keeps it until the entry is renamed into `layers/` or removed; a killed
    /// unpacker's lock went with its process. So whoever holds that lock knows that no live
    /// process or thread owns any `<hex>.…` entry: taken without waiting, the entries are
    /// removed under it; held by another, they stay (they may be its live unpack) for a later
    /// prepare or [`gc`](Self::gc). Unlike a pid in the name, this cannot mistake a reused pid
    /// or another pid namespace's process for the owner. Image records being written
    /// (`record.…`, a few bytes, no lock) are left to gc.
    ///
    /// Best effort: an entry that cannot be removed now is gc's to remove or report.
    fn remove_killed_unpacks(&self) {
        let Ok(entries) = self.read_dir("tmp") else { return };
        for entry in entries {
            let name = entry.file_name();
            let Some((hex, _)) = name.to_str().and_then(|n| n.split_once('.')) else { continue };
            if Digest::parse(&format!("sha256:{hex}")).is_err() {
                continue;
            }
            let Ok(file) = lock_file(&self.root.join("locks").join(format!("{hex}.unpack"))) else {
                continue;
            };
            if let Ok(_no_unpacker) = Flock::lock(file, FlockArg::LockExclusiveNonblock) {
                let _ = remove_dir_all(&entry.path());
            }
        }
    }

    /// Unpacks layer `i` unless another process did meanwhile.
    fn unpack_layer(&self, image: &Image, i: usize) -> Result<UnpackReport, ImageError> {
        let layer = &image.layers[i];
        let hex = layer.diff_id.hex();
        let _lock = lock(&self.root.join("locks").join(format!("{hex}.unpack")), FlockArg::LockExclusive)?;
        let final_path = self.layer_path(&layer.diff_id);
        // Found in place: unpacked by someone else meanwhile.
        let reused = UnpackReport { layers_reused: 1, ownership: true, ..UnpackReport::default() };
        if final_path.is_dir() {
            return Ok(reused);
        }
        let tmp =
            self.root.join("tmp").join(format!("{hex}.{}.{}", std::process::id(), crate::sys::random_u32()));
        fs::DirBuilder::new().mode(0o755).create(&tmp).map_err(|e| ImageError::io("create", &tmp, e))?;
        let result = (|| {
            let mut applier = Applier::new(&tmp, Format::Overlay, self.limits)?;
            let label = format!("{i} ({})", layer.diff_id);
            blob::stream_layer(image, layer, &self.limits, |r| applier.apply_layer(&label, r))?;
            let mut report = applier.finish()?;
            report.layers_unpacked = 1;
            if self.sync {
                let dir = File::open(&tmp).map_err(|e| ImageError::io("open", &tmp, e))?;
                nix::unistd::syncfs(&dir).map_err(|e| ImageError::io("sync the file system of", &tmp, e))?;
            }
            if let Err(e) = fs::rename(&tmp, &final_path) {
                // Put in place meanwhile by a writer that did not share our lock (an older
                // stockade, or a filesystem without working flock): the same verified content.
                if final_path.is_dir() {
                    let _ = remove_dir_all(&tmp);
                    return Ok(reused);
                }
                return Err(ImageError::io("move layer into place", &final_path, e));
            }
            if self.sync {
                self.sync_dir("layers")?;
            }
            Ok(report)
        })();
        if result.is_err() {
            let _ = remove_dir_all(&tmp);
        }
        result
    }

    /// Stops recording `image` as a user of its layers (they go at the next [`gc`](Self::gc)
    /// unless another image uses them).
    ///
    /// # Errors
    /// [`ImageError::Io`] if the record cannot be removed.
    pub fn forget(&self, image: &Image) -> Result<(), ImageError> {
        let path = self.root.join("images").join(image.id.hex());
        match fs::remove_file(&path) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
                Err(ImageError::io("remove image record", path, e))
            }
            _ => Ok(()),
        }
    }

    /// Removes layers that no recorded image uses and no live [`Rootfs`] holds, and leftovers
    /// of interrupted unpacks. Waits for running [`prepare`](Self::prepare) calls (of any
    /// process) to finish first.
    ///
    /// # Errors
    /// [`ImageError::Io`] if the store cannot be read or a layer cannot be removed.
    pub fn gc(&self) -> Result<GcReport, ImageError> {
        let _exclusive = self.lock_store(FlockArg::LockExclusive)?;
        let mut used = HashSet::new();
        for entry in self.read_dir("images")? {
            let path = entry.path();
            let text =
                fs::read_to_string(&path).map_err(|e| ImageError::io("read image record", &path, e))?;
            used.extend(text.lines().map(str::to_owned));
        }
        let mut report = GcReport::default();
        for entry in self.read_dir("layers")? {
            let name = entry.file_name().to_string_lossy().into_owned();
            if used.contains(&name) {
                report.layers_kept += 1;
                continue;
            }
            // A layer some Rootfs (in any process) still holds stays, recorded or not.
            let lock_path = self.root.join("locks").join(&name);
            let _exclusive_layer = match Flock::lock(lock_file(&lock_path)?, FlockArg::LockExclusiveNonblock)
            {
                Ok(lock) => lock,
                Err((_, nix::errno::Errno::EWOULDBLOCK)) => {
                    report.layers_in_use += 1;
                    continue;
                }
                Err((_, e)) => return Err(ImageError::io("lock layer", &lock_path, e)),
            };
            // Out of layers/ first, so that a removal cut short never leaves a partial layer
            // that a later prepare would take for a complete one.
            let doomed = self.root.join("tmp").join(format!("{name}.gc.{}", crate::sys::random_u32()));
            fs::rename(entry.path(), &doomed)
                .map_err(|e| ImageError::io("move unused layer out", entry.path(), e))?;
            remove_dir_all(&doomed)?;
            let _ = fs::remove_file(self.root.join("locks").join(&name));
            report.layers_removed += 1;
        }
        // No layer is being unpacked while gc holds the store exclusively: unpack locks can go.
        for entry in self.read_dir("locks")? {
            if entry.file_name().as_encoded_bytes().ends_with(b".unpack") {
                let _ = fs::remove_file(entry.path());
            }
        }
        for entry in self.read_dir("tmp")? {
            remove_dir_all(&entry.path())?;
            report.temporaries_removed += 1;
        }
        Ok(report)
    }

    fn read_dir(&self, sub: &str) -> Result<Vec<fs::DirEntry>, ImageError> {
        let dir = self.root.join(sub);
        fs::read_dir(&dir)
            .and_then(|it| it.collect::<Result<Vec<_>, _>>())
            .map_err(|e| ImageError::io("read store directory", dir, e))
    }

    fn lock_store(&self, how: FlockArg) -> Result<Flock<File>, ImageError> {
        lock(&self.root.join("lock"), how)
    }

    fn write_atomic(&self, path: &Path, data: &[u8]) -> Result<(), ImageError> {
        let tmp =
            self.root.join("tmp").join(format!("record.{}.{}", std::process::id(), crate::sys::random_u32()));
        let write = || -> std::io::Result<()> {
            let mut f = File::create(&tmp)?;
            f.write_all(data)?;
            if self.sync {
                f.sync_all()?;
            }
            fs::rename(&tmp, path)
        };
        write().map_err(|e| {
            let _ = fs::remove_file(&tmp);
            ImageError::io("write image record", path, e)
        })?;
        if self.sync {
            self.sync_dir("images")?;
        }
        Ok(())
    }

    /// `fsync(2)` of the store's directory `sub`, making renames into it durable.
    fn sync_dir(&self, sub: &str) -> Result<(), ImageError> {
        let dir = self.root.join(sub);
        File::open(&dir).and_then(|d| d.sync_all()).map_err(|e| ImageError::io("sync directory", dir, e))
    }
}

/// Opens (creating it) the lock file `path`.
fn lock_file(path: &Path) -> Result<File, ImageError> {
    OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(path)
        .map_err(|e| ImageError::io("open lock file", path, e))
}

/// Takes the flock `how` on the lock file `path`, waiting for it.
fn lock(path: &Path, how: FlockArg) -> Result<Flock<File>, ImageError> {
    Flock::lock(lock_file(path)?, how).map_err(|(_, e)| ImageError::io("lock", path, e))
}
