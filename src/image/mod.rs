//! Container images (feature `image`): OCI image layouts and `docker save` archives, unpacked
//! into verified, shared layers and run in a sandbox.
//!
//! - [`ImageSource`] opens a layout directory or archive; [`ImageSource::image`] selects an
//!   [`Image`] by reference and [`Platform`], verifying the index, manifest and config.
//! - [`LayerStore`] unpacks each layer once into a content-addressed directory (named by its
//!   `diff_id`), in overlayfs's format, so images that share a base share its files;
//!   [`LayerStore::prepare`] returns a [`Rootfs`] stacking them.
//! - [`Image::unpack`] instead flattens all layers into one directory, like `umoci unpack`.
//! - [`SandboxBuilder::image`](crate::SandboxBuilder::image) runs a [`Rootfs`] with the
//!   image's `Env`, `Entrypoint` + `Cmd`, `WorkingDir` and `User`, each overridable.
//!
//! Every layer blob is checked against its size and digest and every uncompressed layer
//! against its `diff_id`, over the whole stream; a failed layer leaves nothing behind. Layers
//! are changesets applied through directory fds resolved inside the target
//! (`openat2(RESOLVE_IN_ROOT)`), so no entry, link or racing rename can write outside it.
//!
//! ```no_run
//! use stockade::image::{ImageSource, LayerStore, Platform};
//! use stockade::{Namespaces, Sandbox};
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let image = ImageSource::open("alpine-oci")?.image(Some("latest"), &Platform::host())?;
//! let rootfs = LayerStore::open("/var/tmp/stockade-layers")?.prepare(&image)?;
//! let sandbox = Sandbox::builder().namespaces(Namespaces::all()).image(&rootfs).build()?;
//! let out = sandbox.image_command().output()?;
//! # Ok(()) }
//! ```

mod apply;
mod blob;
mod digest;
mod error;
mod guard;
mod source;
mod store;

use std::ffi::OsString;
use std::path::{Path, PathBuf};

pub use digest::Digest;
pub use error::ImageError;
pub use source::{Image, ImageSource, Layer, Platform};
pub use store::{GcReport, LayerStore};

use apply::{Applier, Format};

/// Layer compression.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Compression {
    None,
    Gzip,
    Zstd,
}

/// Bounds on what one image may make the unpacker do (decompression bombs, hostile archives).
/// A layer that exceeds one fails with [`ImageError::Limit`] and leaves nothing behind.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct UnpackLimits {
    /// Uncompressed bytes of one layer (default 32 GiB).
    pub max_bytes: u64,
    /// Entries (files, directories, links, ...) of one unpack, directories created for
    /// entries whose parents have none included (default 2,000,000).
    pub max_entries: u64,
    /// Bytes of an entry name or link target (default 4096, the kernel's `PATH_MAX`).
    pub max_path: usize,
    /// Bytes of one entry's extension headers: PAX records, GNU long names (default 1 MiB).
    pub max_header: usize,
    /// Depth of directories below the root, counted on disk, so symlinks cannot deepen it
    /// (default 256; real images stay under 50). Keeps removal of a failed unpack bounded.
    pub max_depth: usize,
    /// Bytes of entry names the unpacker remembers for one layer, to apply whiteouts and
    /// directory metadata correctly (default 512 MiB).
    pub max_tracked_bytes: usize,
}

impl Default for UnpackLimits {
    fn default() -> Self {
        UnpackLimits {
            max_bytes: 32 << 30,
            max_entries: 2_000_000,
            max_path: 4096,
            max_header: 1 << 20,
            max_depth: 256,
            max_tracked_bytes: 512 << 20,
        }
    }
}

/// What an unpack did not apply exactly, and how much it did.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct UnpackReport {
    /// Layers unpacked by this call.
    pub layers_unpacked: usize,
    /// Layers found already unpacked in the store and reused.
    pub layers_reused: usize,
    /// Tar entries processed.
    pub entries: u64,
    /// Whether file owners were applied (only as root; rootless unpacks leave the caller as
    /// owner, and the sandbox's user namespace maps it to root).
    pub ownership: bool,
    /// Owners that could not be applied, with the reason (at most 1000 listed).
    pub ownership_errors: Vec<(PathBuf, String)>,
    /// Device nodes not created because the unpacker is not root. Their paths are left empty
    /// (what lower layers had there is gone, as the device would have replaced it).
    pub skipped_devices: u64,
    /// The first 1000 of them.
    pub skipped_device_list: Vec<PathBuf>,
    /// Extended attributes not applied (overlayfs attributes from the image, or refused by
    /// the file system or for lack of privilege).
    pub skipped_xattrs: u64,
    /// The first 1000 of them: path and `name: reason`.
    pub skipped_xattr_list: Vec<(PathBuf, String)>,
}

impl UnpackReport {
    fn merge(&mut self, other: UnpackReport) {
        self.layers_unpacked += other.layers_unpacked;
        self.layers_reused += other.layers_reused;
        self.entries += other.entries;
        self.ownership &= other.ownership;
        self.ownership_errors.extend(other.ownership_errors);
        self.skipped_devices += other.skipped_devices;
        self.skipped_device_list.extend(other.skipped_device_list);
        self.skipped_xattrs += other.skipped_xattrs;
        self.skipped_xattr_list.extend(other.skipped_xattr_list);
    }
}

/// The run settings of an image config.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct ImageConfig {
    /// `Env`: `NAME=value` strings.
    pub env: Vec<String>,
    /// `Entrypoint`.
    pub entrypoint: Vec<String>,
    /// `Cmd`: arguments to the entrypoint, or the command when there is none.
    pub cmd: Vec<String>,
    /// `WorkingDir`, if set.
    pub working_dir: Option<String>,
    /// `User` (`user`, `uid`, `user:group`, `uid:gid`), if set.
    pub user: Option<String>,
}

impl ImageConfig {
    fn from_oci(config: &oci_spec::image::ImageConfiguration) -> ImageConfig {
        let Some(c) = config.config() else { return ImageConfig::default() };
        let nonempty = |s: &Option<String>| s.clone().filter(|s| !s.is_empty());
        ImageConfig {
            env: c.env().clone().unwrap_or_default(),
            entrypoint: c.entrypoint().clone().unwrap_or_default(),
            cmd: c.cmd().clone().unwrap_or_default(),
            working_dir: nonempty(c.working_dir()),
            user: nonempty(c.user()),
        }
    }
}

/// A user resolved inside an image: uid, primary gid and supplementary groups.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ImageUser {
    /// The user id.
    pub uid: u32,
    /// The primary group id.
    pub gid: u32,
    /// Supplementary groups from the image's `/etc/group`.
    pub groups: Vec<u32>,
    /// The home directory from the image's `/etc/passwd`, if the user has an entry.
    pub home: Option<PathBuf>,
}

/// An image's root file system, ready to run: its layer directories (bottom first) and its
/// config, with the `User` resolved against the image's own `/etc/passwd` and `/etc/group`.
#[derive(Clone, Debug)]
pub struct Rootfs {
    layers: Vec<PathBuf>,
    config: ImageConfig,
    user: Option<ImageUser>,
    report: UnpackReport,
    /// Shared locks on the store's layers: [`LayerStore::gc`] leaves them alone while any
    /// clone of this (or a sandbox built from it) lives.
    pub(crate) lease: Option<std::sync::Arc<store::Lease>>,
}

impl Rootfs {
    fn new(layers: Vec<PathBuf>, config: ImageConfig, report: UnpackReport) -> Result<Rootfs, ImageError> {
        let user = config
            .user
            .as_deref()
            .map(|u| {
                crate::identity::resolve(&layers, u)
                    .map(|id| ImageUser { uid: id.uid, gid: id.gid, groups: id.groups, home: id.home })
                    .map_err(|e| ImageError::from_lookup(u, e))
            })
            .transpose()?;
        Ok(Rootfs { layers, config, user, report, lease: None })
    }

    /// The layer directories, bottom first (one directory for a flattened image).
    pub fn layers(&self) -> &[PathBuf] {
        &self.layers
    }

    /// The image's run settings.
    pub fn config(&self) -> &ImageConfig {
        &self.config
    }

    /// The image's `User`, resolved inside the image (`None` when the image sets none).
    pub fn user(&self) -> Option<&ImageUser> {
        self.user.as_ref()
    }

    /// What the unpack that produced this rootfs skipped or reused.
    pub fn report(&self) -> &UnpackReport {
        &self.report
    }

    /// What keeps the layers from garbage collection while a sandbox uses them.
    pub(crate) fn keep_alive(&self) -> Option<std::sync::Arc<dyn std::any::Any + Send + Sync>> {
        self.lease.clone().map(|l| l as std::sync::Arc<dyn std::any::Any + Send + Sync>)
    }

    /// A sandbox root stacking the layers read-only under a throw-away writable upper layer.
    pub fn root(&self) -> crate::Root {
        crate::Root::overlay(self.layers.iter().cloned())
    }

    /// `Entrypoint` followed by `Cmd` (or by `cmd` when given): the image's command line.
    pub fn argv(&self, cmd: Option<&[OsString]>) -> Vec<OsString> {
        let mut argv: Vec<OsString> = self.config.entrypoint.iter().map(OsString::from).collect();
        match cmd {
            Some(cmd) => argv.extend(cmd.iter().cloned()),
            None => argv.extend(self.config.cmd.iter().map(OsString::from)),
        }
        argv
    }
}

impl Image {
    /// Flattens all layers into `dest/rootfs`, like `umoci unpack`: `dest` is created with
    /// mode 0700 (so set-uid files inside are out of other users' reach) and must not exist.
    ///
    /// # Errors
    /// Any verification, limit or entry error; `dest` is then removed again. A layer blob that
    /// is missing (or not of its descriptor's size) is found before `dest` is created.
    pub fn unpack(&self, dest: impl AsRef<Path>) -> Result<Rootfs, ImageError> {
        self.unpack_with(dest, UnpackLimits::default())
    }

    /// [`Image::unpack`] with explicit limits.
    ///
    /// # Errors
    /// As [`Image::unpack`].
    pub fn unpack_with(&self, dest: impl AsRef<Path>, limits: UnpackLimits) -> Result<Rootfs, ImageError> {
        use std::os::unix::fs::DirBuilderExt;
        let dest = dest.as_ref();
        ImageError::require_openat2()?;
        self.check_blobs(&self.layers)?;
        std::fs::DirBuilder::new()
            .mode(0o700)
            .create(dest)
            .map_err(|e| ImageError::io("create unpack destination", dest, e))?;
        let result =
            std::fs::canonicalize(dest).map_err(|e| ImageError::io("resolve unpack destination", dest, e));
        let result = result.and_then(|dest| self.unpack_into(&dest.join("rootfs"), limits));
        if result.is_err() {
            let _ = remove_dir_all(dest);
        }
        result
    }

    fn unpack_into(&self, rootfs: &Path, limits: UnpackLimits) -> Result<Rootfs, ImageError> {
        use std::os::unix::fs::DirBuilderExt;
        std::fs::DirBuilder::new()
            .mode(0o755)
            .create(rootfs)
            .map_err(|e| ImageError::io("create", rootfs, e))?;
        let mut applier = Applier::new(rootfs, Format::Flat, limits)?;
        for (i, layer) in self.layers.iter().enumerate() {
            let label = format!("{i} ({})", layer.diff_id);
            blob::stream_layer(self, layer, &limits, |r| applier.apply_layer(&label, r))?;
        }
        let mut report = applier.finish()?;
        report.layers_unpacked = self.layers.len();
        Rootfs::new(vec![rootfs.to_owned()], self.config.clone(), report)
    }
}

/// Removes a tree the unpacker made, opening up directories without permissions on the way.
pub(crate) fn remove_dir_all(path: &Path) -> Result<(), ImageError> {
    let parent = path.parent().filter(|p| !p.as_os_str().is_empty()).unwrap_or(Path::new("."));
    let name =
        path.file_name().ok_or_else(|| ImageError::format(path.display().to_string(), "no file name"))?;
    let dir = std::fs::File::open(parent).map_err(|e| ImageError::io("open", parent, e))?;
    apply::remove_tree(&dir, std::os::unix::ffi::OsStrExt::as_bytes(name))
        .map_err(|e| ImageError::io("remove", path, e))
}
