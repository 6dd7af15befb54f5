//! Image sources: an OCI image layout (a directory, or the same packed in a tar archive) and
//! `docker save` archives. Selects one image by reference and platform, and reads its blobs
//! verified against their descriptors.
//!
//! No name taken from the image becomes a host path: blobs of a layout directory are found by
//! validated digest only, and members of an archive are looked up in an index of the archive.

use std::collections::{HashMap, HashSet};
use std::fmt;
use std::fs::File;
use std::io::{self, Read};
use std::os::fd::OwnedFd;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use nix::fcntl::{OFlag, ResolveFlag};
use nix::sys::stat::Mode;
use oci_spec::image::{Descriptor, ImageConfiguration, ImageIndex, ImageManifest, MediaType};
use sha2::{Digest as _, Sha256};

use super::{Compression, Digest, ImageConfig, ImageError};

/// The largest index, manifest or config accepted (they are JSON documents of a few KiB).
const MAX_JSON: u64 = 4 << 20;
/// Index nesting deeper than this is refused (real images nest once).
const MAX_INDEX_DEPTH: usize = 4;
/// Manifests and indexes looked at while selecting one image (each read once at most).
const MAX_DESCRIPTORS: usize = 1024;
/// Members of an archive source; `docker save` archives hold a handful per layer.
const MAX_ARCHIVE_MEMBERS: usize = 100_000;

const DOCKER_MANIFEST: &str = "application/vnd.docker.distribution.manifest.v2+json";
const DOCKER_MANIFEST_LIST: &str = "application/vnd.docker.distribution.manifest.list.v2+json";
const DOCKER_CONFIG: &str = "application/vnd.docker.container.image.v1+json";
const DOCKER_LAYER_GZIP: &str = "application/vnd.docker.image.rootfs.diff.tar.gzip";
const DOCKER_FOREIGN_LAYER_GZIP: &str = "application/vnd.docker.image.rootfs.foreign.diff.tar.gzip";

/// An operating system and CPU architecture (and optional variant) to select an image for.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Platform {
    os: String,
    architecture: String,
    variant: Option<String>,
}

impl Platform {
    /// A platform by OCI names, e.g. `Platform::new("linux", "arm64")`.
    pub fn new(os: impl Into<String>, architecture: impl Into<String>) -> Platform {
        Platform { os: os.into(), architecture: architecture.into(), variant: None }
    }

    /// Also requires this CPU variant (e.g. `"v8"`); without it any variant matches.
    pub fn variant(mut self, variant: impl Into<String>) -> Platform {
        self.variant = Some(variant.into());
        self
    }

    /// The platform this program runs on, in OCI names (`linux/amd64`, `linux/arm64`, ...).
    pub fn host() -> Platform {
        let architecture = match std::env::consts::ARCH {
            "x86_64" => "amd64",
            "aarch64" => "arm64",
            "x86" => "386",
            "powerpc64" => "ppc64le",
            "arm" => "arm",
            "s390x" => "s390x",
            "riscv64" => "riscv64",
            other => other,
        };
        Platform::new("linux", architecture)
    }

    /// The platform an index entry names.
    fn of_descriptor(p: &oci_spec::image::Platform) -> Platform {
        Platform {
            os: p.os().to_string(),
            architecture: p.architecture().to_string(),
            variant: p.variant().clone(),
        }
    }

    /// The platform an image config names.
    fn of_config(c: &ImageConfiguration) -> Platform {
        Platform {
            os: c.os().to_string(),
            architecture: c.architecture().to_string(),
            variant: c.variant().clone(),
        }
    }

    /// Whether an image for `p` will do when `self` is asked for.
    fn accepts(&self, p: &Platform) -> bool {
        self.os == p.os
            && self.architecture == p.architecture
            && self.variant.as_ref().is_none_or(|want| p.variant.as_ref() == Some(want))
    }
}

impl fmt::Display for Platform {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.os, self.architecture)?;
        if let Some(v) = &self.variant {
            write!(f, "/{v}")?;
        }
        Ok(())
    }
}

/// Where an image's files are: a layout directory, or members of an archive file.
#[derive(Debug)]
enum Container {
    /// An OCI layout directory, opened `O_PATH`; blobs are looked up beneath it.
    Dir(OwnedFd),
    /// An uncompressed tar archive with an index of its regular members.
    Tar { file: File, members: HashMap<String, Member> },
}

#[derive(Clone, Copy, Debug)]
struct Member {
    offset: u64,
    size: u64,
}

#[derive(Debug)]
pub(crate) struct SourceInner {
    path: PathBuf,
    container: Container,
}

/// Where a blob lives inside a source.
#[derive(Clone, Debug)]
pub(crate) enum BlobLoc {
    /// `blobs/sha256/<hex>` of a layout.
    Digest(Digest),
    /// A member of a `docker save` archive, by cleaned name.
    Member(String),
}

/// A stream of one blob's bytes, readable from another thread.
pub(crate) struct BlobReader {
    inner: BlobInner,
}

enum BlobInner {
    File(File),
    Region { source: Arc<SourceInner>, pos: u64, end: u64 },
}

impl BlobReader {
    /// The blob's length in bytes.
    fn len(&self) -> io::Result<u64> {
        match &self.inner {
            BlobInner::File(f) => f.metadata().map(|m| m.len()),
            BlobInner::Region { pos, end, .. } => Ok(end - pos),
        }
    }
}

impl Read for BlobReader {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        match &mut self.inner {
            BlobInner::File(f) => f.read(buf),
            BlobInner::Region { source, pos, end } => {
                let Container::Tar { file, .. } = &source.container else { return Ok(0) };
                let want = buf.len().min(usize::try_from(*end - *pos).unwrap_or(usize::MAX));
                if want == 0 {
                    return Ok(0);
                }
                let n = file.read_at(&mut buf[..want], *pos)?;
                *pos += n as u64;
                Ok(n)
            }
        }
    }
}

/// An opened image source: an OCI layout directory, an OCI layout in a tar archive, or a
/// `docker save` archive (the classic `manifest.json` form, or the newer OCI-in-tar form).
///
/// ```no_run
/// use stockade::image::{ImageSource, Platform};
/// # fn main() -> Result<(), stockade::image::ImageError> {
/// let source = ImageSource::open("alpine.tar")?;
/// let image = source.image(Some("latest"), &Platform::host())?;
/// println!("{} layers", image.layers().len());
/// # Ok(()) }
/// ```
#[derive(Clone, Debug)]
pub struct ImageSource {
    inner: Arc<SourceInner>,
}

/// One layer of an image, as its manifest describes it.
#[derive(Clone, Debug)]
pub struct Layer {
    pub(crate) loc: BlobLoc,
    pub(crate) digest: Option<Digest>,
    pub(crate) size: Option<u64>,
    pub(crate) compression: Option<Compression>,
    pub(crate) media_type: String,
    pub(crate) diff_id: Digest,
}

impl Layer {
    /// The digest of the uncompressed layer (its `diff_id`), which names it in a store.
    pub fn diff_id(&self) -> &Digest {
        &self.diff_id
    }

    /// The digest of the blob as stored (compressed), when the source records one.
    pub fn digest(&self) -> Option<&Digest> {
        self.digest.as_ref()
    }

    /// The media type from the manifest (empty for `docker save` layers, which have none).
    pub fn media_type(&self) -> &str {
        &self.media_type
    }

    /// How errors name the blob: `layer <digest>`, or `layer <diff_id>` when the source
    /// records no digest.
    pub(crate) fn blob_name(&self) -> String {
        format!("layer {}", self.digest.as_ref().unwrap_or(&self.diff_id))
    }
}

/// A selected image: its verified manifest and config and the list of its layers.
#[derive(Clone, Debug)]
pub struct Image {
    pub(crate) source: Arc<SourceInner>,
    pub(crate) id: Digest,
    pub(crate) config: ImageConfig,
    pub(crate) layers: Vec<Layer>,
}

impl Image {
    /// The image's identity: its manifest digest (OCI), or its config digest (`docker save`).
    pub fn id(&self) -> &Digest {
        &self.id
    }

    /// The run settings from the image config.
    pub fn config(&self) -> &ImageConfig {
        &self.config
    }

    /// The layers, bottom first.
    pub fn layers(&self) -> &[Layer] {
        &self.layers
    }

    /// Opens layer `layer`'s blob for reading.
    pub(crate) fn open_layer(&self, layer: &Layer) -> Result<BlobReader, ImageError> {
        open_blob(&self.source, &layer.loc)
    }

    /// Checks, before any of them is unpacked, that the blobs of `layers` are there: regular
    /// files (or archive members) of the size their descriptors give. A missing blob would
    /// otherwise be found only after the layers below it were unpacked.
    ///
    /// # Errors
    /// [`ImageError::Io`] naming the missing blob's path, [`ImageError::Format`] for one that
    /// is no regular file, [`ImageError::Size`] for one of another size.
    pub(crate) fn check_blobs<'a>(
        &self,
        layers: impl IntoIterator<Item = &'a Layer>,
    ) -> Result<(), ImageError> {
        for layer in layers {
            let blob = self.open_layer(layer)?;
            let actual = blob.len().map_err(|e| {
                ImageError::io(format!("inspect {}", layer.blob_name()), &self.source.path, e)
            })?;
            if let Some(expected) = layer.size
                && actual != expected
            {
                return Err(ImageError::Size { what: layer.blob_name(), expected, actual });
            }
        }
        Ok(())
    }
}

impl ImageSource {
    /// Opens an image source: a directory holding `oci-layout` and `index.json`, or a tar
    /// archive holding either those or a `docker save` `manifest.json`.
    ///
    /// # Errors
    /// [`ImageError::Io`] if the path cannot be read, [`ImageError::Format`] if it is neither
    /// kind of source, [`ImageError::Unsupported`] on a host without `openat2`.
    pub fn open(path: impl AsRef<Path>) -> Result<ImageSource, ImageError> {
        ImageError::require_openat2()?;
        let path = path.as_ref();
        let meta = std::fs::metadata(path).map_err(|e| ImageError::io("open image source", path, e))?;
        let container = if meta.is_dir() {
            let fd =
                nix::fcntl::open(path, OFlag::O_PATH | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC, Mode::empty())
                    .map_err(|e| ImageError::io("open image layout", path, e))?;
            Container::Dir(fd)
        } else {
            let file = File::open(path).map_err(|e| ImageError::io("open image archive", path, e))?;
            let members = index_archive(&file, path)?;
            Container::Tar { file, members }
        };
        Ok(ImageSource { inner: Arc::new(SourceInner { path: path.to_owned(), container }) })
    }

    /// Selects one image: by `reference` (an OCI `org.opencontainers.image.ref.name`, a
    /// `docker save` repo tag such as `name:tag`, or only its tag), or the only image when
    /// `None`; then, through nested indexes, the manifest for `platform`. Blobs read on the way
    /// are checked against their descriptors' size and digest.
    ///
    /// # Errors
    /// [`ImageError::NotFound`] listing the images the source has, or
    /// [`ImageError::PlatformNotFound`] listing the platforms the image is built for;
    /// [`ImageError::Digest`],
    /// [`ImageError::Size`], [`ImageError::Mismatch`], [`ImageError::Format`] or
    /// [`ImageError::MediaType`] for a malformed or tampered image.
    pub fn image(&self, reference: Option<&str>, platform: &Platform) -> Result<Image, ImageError> {
        if self.has("oci-layout") && self.has("index.json") {
            self.oci_image(reference, platform)
        } else if self.has("manifest.json") {
            self.docker_image(reference, platform)
        } else {
            Err(ImageError::format(
                self.inner.path.display().to_string(),
                "neither an OCI image layout (oci-layout, index.json) nor a docker save archive (manifest.json)",
            ))
        }
    }

    fn has(&self, name: &str) -> bool {
        match &self.inner.container {
            Container::Dir(fd) => nix::sys::stat::fstatat(fd, name, nix::fcntl::AtFlags::empty()).is_ok(),
            Container::Tar { members, .. } => members.contains_key(name),
        }
    }

    fn not_found(&self, reference: Option<&str>, platform: &Platform, available: Vec<String>) -> ImageError {
        ImageError::NotFound {
            path: self.inner.path.clone(),
            wanted: format!("{} for {platform}", reference.unwrap_or("(the only image)")),
            available: if available.is_empty() { "nothing".into() } else { available.join(", ") },
        }
    }

    /// The image `reference` is there, but built only for the platforms `found` (listed once
    /// each).
    fn platform_not_found(
        &self,
        reference: Option<&str>,
        platform: &Platform,
        found: Vec<Platform>,
    ) -> ImageError {
        let mut available: Vec<Platform> = Vec::new();
        for p in found {
            if !available.contains(&p) {
                available.push(p);
            }
        }
        ImageError::PlatformNotFound {
            path: self.inner.path.clone(),
            reference: reference.map(str::to_owned),
            wanted: platform.to_string(),
            available,
        }
    }

    fn oci_image(&self, reference: Option<&str>, platform: &Platform) -> Result<Image, ImageError> {
        let bytes = read_all(&self.inner, &BlobLoc::Member("index.json".into()), "index.json", None, None)?;
        let index: ImageIndex = parse_json(&bytes, "index.json")?;
        let names = |d: &Descriptor| -> Vec<String> {
            let Some(a) = d.annotations() else { return Vec::new() };
            ["org.opencontainers.image.ref.name", "io.containerd.image.name"]
                .iter()
                .filter_map(|k| a.get(*k).cloned())
                .collect()
        };
        let available: Vec<String> = index.manifests().iter().flat_map(names).collect();
        let candidates: Vec<&Descriptor> = match reference {
            Some(r) => index
                .manifests()
                .iter()
                .filter(|d| names(d).iter().any(|n| reference_matches(n, r)))
                .collect(),
            None => {
                let mut distinct: Vec<String> =
                    index.manifests().iter().map(|d| d.digest().to_string()).collect();
                distinct.dedup();
                if distinct.len() > 1 {
                    return Err(self.not_found(reference, platform, available));
                }
                index.manifests().iter().collect()
            }
        };
        if candidates.is_empty() {
            return Err(self.not_found(reference, platform, available));
        }
        let mut seen = HashSet::new();
        let mut others = Vec::new();
        for descriptor in candidates {
            if let Some(image) = self.resolve(descriptor, platform, 0, &mut seen, &mut others)? {
                return Ok(image);
            }
        }
        Err(self.platform_not_found(reference, platform, others))
    }

    /// Follows `descriptor` (a manifest or a nested index) to the manifest for `platform`,
    /// adding the platforms passed over to `others`.
    fn resolve(
        &self,
        descriptor: &Descriptor,
        platform: &Platform,
        depth: usize,
        seen: &mut HashSet<Digest>,
        others: &mut Vec<Platform>,
    ) -> Result<Option<Image>, ImageError> {
        let digest = descriptor_digest(descriptor)?;
        // A digest already followed gave nothing (or would loop); a huge fan-out is refused.
        if !seen.insert(digest.clone()) {
            return Ok(None);
        }
        if seen.len() > MAX_DESCRIPTORS {
            return Err(ImageError::Limit {
                what: "manifests and indexes examined".into(),
                limit: MAX_DESCRIPTORS as u64,
            });
        }
        let media_type = descriptor.media_type().to_string();
        match media_type.as_str() {
            "application/vnd.oci.image.index.v1+json" | DOCKER_MANIFEST_LIST => {
                if depth >= MAX_INDEX_DEPTH {
                    return Err(ImageError::Limit {
                        what: "index nesting".into(),
                        limit: MAX_INDEX_DEPTH as u64,
                    });
                }
                let what = format!("index {digest}");
                let index: ImageIndex = self.read_json(&what, &digest, descriptor.size())?;
                for child in index.manifests() {
                    if let Some(p) = child.platform().as_ref().map(Platform::of_descriptor)
                        && !platform.accepts(&p)
                    {
                        others.push(p);
                    } else if let Some(image) = self.resolve(child, platform, depth + 1, seen, others)? {
                        return Ok(Some(image));
                    }
                }
                Ok(None)
            }
            "application/vnd.oci.image.manifest.v1+json" | DOCKER_MANIFEST => {
                if let Some(p) = descriptor.platform().as_ref().map(Platform::of_descriptor)
                    && !platform.accepts(&p)
                {
                    others.push(p);
                    return Ok(None);
                }
                self.manifest(&digest, descriptor.size(), platform, others)
            }
            _ => Err(ImageError::MediaType {
                what: format!("descriptor {digest}"),
                media_type,
                reason: "expected an image manifest or index".into(),
            }),
        }
    }

    /// Reads the JSON blob `digest` of a layout, verified against its size and digest.
    fn read_json<T: serde::de::DeserializeOwned>(
        &self,
        what: &str,
        digest: &Digest,
        size: u64,
    ) -> Result<T, ImageError> {
        let bytes = read_all(&self.inner, &BlobLoc::Digest(digest.clone()), what, Some(digest), Some(size))?;
        parse_json(&bytes, what)
    }

    /// The image of manifest `digest` if its config is for `platform`; otherwise its platform
    /// goes to `others`.
    fn manifest(
        &self,
        digest: &Digest,
        size: u64,
        platform: &Platform,
        others: &mut Vec<Platform>,
    ) -> Result<Option<Image>, ImageError> {
        let what = format!("manifest {digest}");
        let manifest: ImageManifest = self.read_json(&what, digest, size)?;
        let config_desc = manifest.config();
        let config_digest = descriptor_digest(config_desc)?;
        let config_type = config_desc.media_type().to_string();
        if config_type != "application/vnd.oci.image.config.v1+json" && config_type != DOCKER_CONFIG {
            return Err(ImageError::MediaType {
                what: format!("config {config_digest}"),
                media_type: config_type,
                reason: "expected an image config".into(),
            });
        }
        let config_what = format!("config {config_digest}");
        let config: ImageConfiguration = self.read_json(&config_what, &config_digest, config_desc.size())?;
        let built_for = Platform::of_config(&config);
        if !platform.accepts(&built_for) {
            others.push(built_for);
            return Ok(None);
        }
        let diff_ids = diff_ids(&config, &config_what)?;
        if diff_ids.len() != manifest.layers().len() {
            return Err(ImageError::format(
                &config_what,
                format!("{} diff_ids for {} layers in {what}", diff_ids.len(), manifest.layers().len()),
            ));
        }
        let mut layers = Vec::with_capacity(diff_ids.len());
        for (descriptor, diff_id) in manifest.layers().iter().zip(diff_ids) {
            let digest = descriptor_digest(descriptor)?;
            let media_type = descriptor.media_type().to_string();
            let compression = layer_compression(&media_type).ok_or_else(|| ImageError::MediaType {
                what: format!("layer {digest}"),
                media_type: media_type.clone(),
                reason: "not a layer media type (tar, tar+gzip or tar+zstd)".into(),
            })?;
            layers.push(Layer {
                loc: BlobLoc::Digest(digest.clone()),
                digest: Some(digest),
                size: Some(descriptor.size()),
                compression: Some(compression),
                media_type,
                diff_id,
            });
        }
        Ok(Some(Image {
            source: self.inner.clone(),
            id: digest.clone(),
            config: ImageConfig::from_oci(&config),
            layers,
        }))
    }

    fn docker_image(&self, reference: Option<&str>, platform: &Platform) -> Result<Image, ImageError> {
        #[derive(serde::Deserialize)]
        #[serde(rename_all = "PascalCase")]
        struct Entry {
            config: String,
            #[serde(default)]
            repo_tags: Option<Vec<String>>,
            layers: Vec<String>,
        }
        let bytes =
            read_all(&self.inner, &BlobLoc::Member("manifest.json".into()), "manifest.json", None, None)?;
        let entries: Vec<Entry> = parse_json(&bytes, "manifest.json")?;
        let available: Vec<String> =
            entries.iter().flat_map(|e| e.repo_tags.clone().unwrap_or_default()).collect();
        let chosen = match reference {
            Some(r) => entries.iter().find(|e| e.repo_tags.iter().flatten().any(|t| reference_matches(t, r))),
            None if entries.len() == 1 => entries.first(),
            None => None,
        };
        let Some(entry) = chosen else { return Err(self.not_found(reference, platform, available)) };

        let config_name = clean_member(&entry.config).ok_or_else(|| {
            ImageError::format("manifest.json", format!("bad config name {:?}", entry.config))
        })?;
        let config_digest = member_digest(&config_name).ok_or_else(|| {
            ImageError::format("manifest.json", format!("config {config_name:?} is not named by its digest"))
        })??;
        let config_what = format!("config {config_digest}");
        let config_bytes =
            read_all(&self.inner, &BlobLoc::Member(config_name), &config_what, Some(&config_digest), None)?;
        let config: ImageConfiguration = parse_json(&config_bytes, &config_what)?;
        let built_for = Platform::of_config(&config);
        if !platform.accepts(&built_for) {
            return Err(self.platform_not_found(reference, platform, vec![built_for]));
        }
        let diff_ids = diff_ids(&config, &config_what)?;
        if diff_ids.len() != entry.layers.len() {
            return Err(ImageError::format(
                "manifest.json",
                format!("{} layers but {} diff_ids in {config_what}", entry.layers.len(), diff_ids.len()),
            ));
        }
        let mut layers = Vec::with_capacity(diff_ids.len());
        for (name, diff_id) in entry.layers.iter().zip(diff_ids) {
            let member = clean_member(name)
                .ok_or_else(|| ImageError::format("manifest.json", format!("bad layer name {name:?}")))?;
            let digest = member_digest(&member).transpose()?;
            layers.push(Layer {
                loc: BlobLoc::Member(member),
                digest,
                size: None,
                compression: None,
                media_type: String::new(),
                diff_id,
            });
        }
        Ok(Image {
            source: self.inner.clone(),
            id: config_digest,
            config: ImageConfig::from_oci(&config),
            layers,
        })
    }
}

/// Whether an image name `name` answers to `reference`: the same string, the same name in
/// Docker's normal form, or the same tag.
fn reference_matches(name: &str, reference: &str) -> bool {
    if name == reference || docker_normal(name) == docker_normal(reference) {
        return true;
    }
    // `docker.io/library/alpine:3` answers to `3` when only a tag is given.
    !reference.contains(['/', ':'])
        && name
            .rsplit_once(':')
            .is_some_and(|(repo, tag)| !tag.contains('/') && !repo.is_empty() && tag == reference)
}

/// Docker's normal form of an image name: the default registry and namespace and the `latest`
/// tag filled in (`alpine` → `docker.io/library/alpine:latest`, `example/app:v3` →
/// `docker.io/example/app:v3`). A first component with a `.` or `:`, or `localhost`, is a
/// registry and stays.
fn docker_normal(name: &str) -> String {
    let name =
        name.strip_prefix("index.docker.io/").map_or(name.to_owned(), |rest| format!("docker.io/{rest}"));
    let full = match name.split_once('/') {
        None => format!("docker.io/library/{name}"),
        // Official images keep their `library/` namespace even with the registry spelled out.
        Some(("docker.io", rest)) if !rest.contains('/') => format!("docker.io/library/{rest}"),
        Some((first, _)) if first.contains(['.', ':']) || first == "localhost" => name,
        Some(_) => format!("docker.io/{name}"),
    };
    let last = full.rsplit('/').next().unwrap_or_default();
    if last.contains(':') || full.contains('@') { full } else { format!("{full}:latest") }
}

fn descriptor_digest(d: &Descriptor) -> Result<Digest, ImageError> {
    Digest::parse(d.digest().as_ref())
}

fn diff_ids(config: &ImageConfiguration, what: &str) -> Result<Vec<Digest>, ImageError> {
    if config.rootfs().typ() != "layers" {
        return Err(ImageError::format(
            what,
            format!("rootfs type {:?} (expected \"layers\")", config.rootfs().typ()),
        ));
    }
    config.rootfs().diff_ids().iter().map(|d| Digest::parse(d)).collect()
}

/// The compression a layer media type declares (`None` for a media type that is no layer).
pub(crate) fn layer_compression(media_type: &str) -> Option<Compression> {
    let mt = MediaType::from(media_type);
    Some(match mt {
        MediaType::ImageLayer | MediaType::ImageLayerNonDistributable => Compression::None,
        MediaType::ImageLayerGzip | MediaType::ImageLayerNonDistributableGzip => Compression::Gzip,
        MediaType::ImageLayerZstd | MediaType::ImageLayerNonDistributableZstd => Compression::Zstd,
        _ if media_type == DOCKER_LAYER_GZIP || media_type == DOCKER_FOREIGN_LAYER_GZIP => Compression::Gzip,
        _ => return None,
    })
}

fn parse_json<T: serde::de::DeserializeOwned>(bytes: &[u8], what: &str) -> Result<T, ImageError> {
    serde_json::from_slice(bytes).map_err(|e| ImageError::format(what, e.to_string()))
}

/// A member name of an archive, cleaned (`./a//b` → `a/b`); `None` if it leaves the archive.
fn clean_member(name: &str) -> Option<String> {
    let mut parts: Vec<&str> = Vec::new();
    for part in name.split('/') {
        match part {
            "" | "." => {}
            ".." => return None,
            p => parts.push(p),
        }
    }
    (!parts.is_empty()).then(|| parts.join("/"))
}

/// The digest a member's name states (`blobs/sha256/<hex>`, `<hex>.json`, `<hex>.tar`), if any.
fn member_digest(name: &str) -> Option<Result<Digest, ImageError>> {
    let hex = if let Some(hex) = name.strip_prefix("blobs/sha256/") {
        hex
    } else {
        let stem = name.strip_suffix(".json").or_else(|| name.strip_suffix(".tar"))?;
        if stem.contains('/') || stem.len() != 64 {
            return None;
        }
        stem
    };
    Some(Digest::parse(&format!("sha256:{hex}")))
}

/// Indexes the regular members of an archive source (symlinked members, which old `docker
/// save` archives use for repeated layers, point at their target's data).
fn index_archive(file: &File, path: &Path) -> Result<HashMap<String, Member>, ImageError> {
    let bad = |e: io::Error| {
        ImageError::format(path.display().to_string(), format!("not a readable tar archive: {e}"))
    };
    let mut archive = tar::Archive::new(file);
    let mut members = HashMap::new();
    let mut links = Vec::new();
    for (n, entry) in archive.entries_with_seek().map_err(bad)?.enumerate() {
        if n >= MAX_ARCHIVE_MEMBERS {
            return Err(ImageError::Limit {
                what: format!("members of archive {path:?}"),
                limit: MAX_ARCHIVE_MEMBERS as u64,
            });
        }
        let entry = entry.map_err(bad)?;
        let Ok(name) = std::str::from_utf8(&entry.path_bytes()).map(str::to_owned) else { continue };
        let Some(name) = clean_member(&name) else { continue };
        match entry.header().entry_type() {
            tar::EntryType::Regular | tar::EntryType::Continuous => {
                members.insert(name, Member { offset: entry.raw_file_position(), size: entry.size() });
            }
            tar::EntryType::Symlink => {
                if let Some(target) = entry.link_name_bytes().map(|t| t.into_owned())
                    && let Ok(target) = String::from_utf8(target)
                {
                    let base = name.rsplit_once('/').map_or("", |(dir, _)| dir);
                    if let Some(t) = clean_member(&format!("{base}/{target}")) {
                        links.push((name, t));
                    }
                }
            }
            _ => {}
        }
    }
    // Links to links resolve over a few rounds; anything left dangling is simply absent.
    for _ in 0..8 {
        for (name, target) in &links {
            if let Some(m) = members.get(target).copied() {
                members.entry(name.clone()).or_insert(m);
            }
        }
    }
    Ok(members)
}

pub(crate) fn open_blob(source: &Arc<SourceInner>, loc: &BlobLoc) -> Result<BlobReader, ImageError> {
    let name = match loc {
        BlobLoc::Digest(d) => format!("blobs/sha256/{}", d.hex()),
        BlobLoc::Member(m) => m.clone(),
    };
    match &source.container {
        Container::Dir(dir) => {
            let file = crate::identity::open_regular(dir, name.as_str(), ResolveFlag::RESOLVE_BENEATH)
                .map_err(|e| ImageError::io("open blob", source.path.join(&name), e))?;
            let Some(file) = file else {
                return Err(ImageError::format(
                    source.path.join(&name).display().to_string(),
                    "not a regular file",
                ));
            };
            Ok(BlobReader { inner: BlobInner::File(file) })
        }
        Container::Tar { members, .. } => {
            let m = members.get(&name).ok_or_else(|| {
                ImageError::io(
                    "find archive member",
                    source.path.join(&name),
                    io::Error::from_raw_os_error(libc::ENOENT),
                )
            })?;
            Ok(BlobReader {
                inner: BlobInner::Region { source: source.clone(), pos: m.offset, end: m.offset + m.size },
            })
        }
    }
}

/// Reads a small blob (JSON) whole, checking size and digest when given.
fn read_all(
    source: &Arc<SourceInner>,
    loc: &BlobLoc,
    what: &str,
    digest: Option<&Digest>,
    size: Option<u64>,
) -> Result<Vec<u8>, ImageError> {
    if let Some(size) = size
        && size > MAX_JSON
    {
        return Err(ImageError::Limit { what: format!("size of {what}"), limit: MAX_JSON });
    }
    let mut bytes = Vec::new();
    let limit = size.map_or(MAX_JSON, |s| s.saturating_add(1));
    open_blob(source, loc)?
        .take(limit + 1)
        .read_to_end(&mut bytes)
        .map_err(|e| ImageError::io(format!("read {what}"), &source.path, e))?;
    if size.is_none() && bytes.len() as u64 > MAX_JSON {
        return Err(ImageError::Limit { what: format!("size of {what}"), limit: MAX_JSON });
    }
    if let Some(size) = size
        && bytes.len() as u64 != size
    {
        return Err(ImageError::Size { what: what.to_owned(), expected: size, actual: bytes.len() as u64 });
    }
    if let Some(digest) = digest {
        let actual = Digest::from_hasher(Sha256::new_with_prefix(&bytes));
        if &actual != digest {
            return Err(ImageError::Mismatch { what: what.to_owned(), expected: digest.clone(), actual });
        }
    }
    Ok(bytes)
}

impl fmt::Debug for BlobReader {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("BlobReader")
    }
}

#[cfg(test)]
mod tests {
    use super::reference_matches;

    #[test]
    fn references_match_in_docker_normal_form_or_by_tag() {
        for (name, reference) in [
            ("docker.io/example/app:v3", "example/app:v3"),
            ("docker.io/library/alpine:3", "alpine:3"),
            ("alpine:latest", "alpine"),
            ("docker.io/library/alpine:3", "3"),
            ("localhost:5000/app:1", "localhost:5000/app:1"),
            ("ghcr.io/o/app:1", "ghcr.io/o/app:1"),
            ("docker.io/alpine:3", "alpine:3"),
            ("index.docker.io/library/alpine:3", "docker.io/alpine:3"),
        ] {
            assert!(reference_matches(name, reference), "{name} should answer to {reference}");
        }
        for (name, reference) in [
            ("example/app:v3", "example/app:v4"),
            ("docker.io/other/app:v3", "example/app:v3"),
            ("localhost:5000/app:1", "app:1"),
            ("ghcr.io/o/app:1", "o/app:1"),
            ("alpine:3", "alpine"),
        ] {
            assert!(!reference_matches(name, reference), "{name} should not answer to {reference}");
        }
    }
}
