//! The image feature's error: what went wrong, with the blob, entry or path it concerns.

use std::io;
use std::path::PathBuf;

use super::{Digest, Platform};

/// Why opening, verifying, unpacking or running an image failed.
///
/// Every variant names the blob, layer entry, path or value concerned. After an error nothing
/// is left behind: no partial layer in the store, no partial tree at a flattened destination.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ImageError {
    /// A digest string is malformed; it was refused before being used in any path.
    #[error("malformed digest {value:?}: {reason}")]
    Digest {
        /// The digest as found.
        value: String,
        /// What is wrong with it.
        reason: String,
    },

    /// A blob is longer or shorter than its descriptor says (truncated, or trailing data).
    #[error("{what}: the descriptor says {expected} bytes, the blob has {actual}")]
    Size {
        /// Which blob, e.g. `"layer sha256:…"`.
        what: String,
        /// The size in the descriptor.
        expected: u64,
        /// The blob's length, or the bytes read from it (reading stops just past the expected
        /// size).
        actual: u64,
    },

    /// Content does not hash to the digest that names it (a blob digest or a layer's diff_id).
    #[error("{what}: expected {expected}, the content hashes to {actual}")]
    Mismatch {
        /// What was checked, e.g. `"layer 2 diff_id"`.
        what: String,
        /// The digest it should have.
        expected: Digest,
        /// The digest it has.
        actual: Digest,
    },

    /// A file of the image (index, manifest, config, archive) is malformed.
    #[error("{what}: {reason}")]
    Format {
        /// Which file or field.
        what: String,
        /// What is wrong.
        reason: String,
    },

    /// A descriptor's media type is unknown, or does not fit where it is used (a manifest
    /// where a layer belongs), or the content's magic bytes contradict it.
    #[error("{what} has media type {media_type:?}: {reason}")]
    MediaType {
        /// The descriptor concerned.
        what: String,
        /// Its media type.
        media_type: String,
        /// Why it was refused.
        reason: String,
    },

    /// No image in the source answers to the reference asked for (or, when none is given,
    /// the source holds several).
    #[error("no image {wanted} in {path:?} (it has: {available})")]
    NotFound {
        /// The image source.
        path: PathBuf,
        /// The reference and platform asked for.
        wanted: String,
        /// What the source offers.
        available: String,
    },

    /// The image asked for is in the source, but not for the platform asked for.
    #[error(
        "image {} in {path:?} is not built for {wanted} (only for: {})",
        .reference.as_deref().unwrap_or("(the only one)"),
        list(.available)
    )]
    PlatformNotFound {
        /// The image source.
        path: PathBuf,
        /// The reference asked for (`None`: the only image of the source).
        reference: Option<String>,
        /// The platform asked for, e.g. `linux/arm64/v8`.
        wanted: String,
        /// The platforms the image is built for, as its indexes and configs say, in the order
        /// found.
        available: Vec<Platform>,
    },

    /// A layer entry was refused: an unsafe or malformed name, link or type.
    #[error("layer {layer}: entry {path:?}: {reason}")]
    Entry {
        /// The layer's diff_id (or position).
        layer: String,
        /// The entry's name as found in the archive (lossy UTF-8).
        path: String,
        /// Why it was refused.
        reason: String,
    },

    /// A limit against decompression bombs and hostile archives was exceeded.
    #[error("{what} exceeds the limit of {limit}")]
    Limit {
        /// What was counted, e.g. `"uncompressed bytes of layer sha256:…"`.
        what: String,
        /// The limit in force (see [`UnpackLimits`](super::UnpackLimits)).
        limit: u64,
    },

    /// The image's `User` cannot be resolved inside the image.
    #[error("image user {user:?}: {reason}")]
    User {
        /// The `User` field of the image config.
        user: String,
        /// Why it cannot be used.
        reason: String,
    },

    /// The host lacks what images need: every image file is read and written through
    /// `openat2(RESOLVE_IN_ROOT | RESOLVE_BENEATH)` (Linux 5.6), without which no symlink in
    /// an image or a store could be kept from redirecting a read or a write.
    #[error("{feature} is not available: {reason}; {hint}")]
    Unsupported {
        /// What is missing, e.g. `"openat2"`.
        feature: String,
        /// Why, as far as the host says.
        reason: String,
        /// What to change.
        hint: String,
    },

    /// A file system operation failed.
    #[error("{op} {path:?}: {source}")]
    Io {
        /// What was being done, e.g. `"create file"`.
        op: String,
        /// The path concerned (inside the rootfs for layer entries).
        path: PathBuf,
        /// The kernel's answer.
        #[source]
        source: io::Error,
    },
}

impl ImageError {
    /// `Ok`, or [`ImageError::Unsupported`] where this host has no `openat2` (cached answer).
    pub(crate) fn require_openat2() -> Result<(), ImageError> {
        let found = crate::probe::cached(crate::probe::Check::Openat2);
        if found.available {
            return Ok(());
        }
        Err(ImageError::Unsupported {
            feature: found.name.to_owned(),
            reason: found.detail.clone(),
            hint: found.hint.clone().unwrap_or_default(),
        })
    }

    /// The image's `User` could not be resolved (see [`crate::identity`]).
    pub(crate) fn from_lookup(user: &str, e: crate::identity::LookupFailure) -> ImageError {
        use crate::identity::LookupFailure;
        match e {
            LookupFailure::Io { op, path, errno } => ImageError::io(op, path, errno),
            LookupFailure::Limit { what, limit } => ImageError::Limit { what, limit },
            LookupFailure::User { reason } => ImageError::User { user: user.to_owned(), reason },
        }
    }

    pub(crate) fn io(
        op: impl Into<String>,
        path: impl Into<PathBuf>,
        source: impl Into<io::Error>,
    ) -> ImageError {
        ImageError::Io { op: op.into(), path: path.into(), source: source.into() }
    }

    pub(crate) fn format(what: impl Into<String>, reason: impl Into<String>) -> ImageError {
        ImageError::Format { what: what.into(), reason: reason.into() }
    }
}

/// `linux/amd64, linux/arm64/v8`, or `nothing`.
fn list(platforms: &[Platform]) -> String {
    if platforms.is_empty() {
        return "nothing".into();
    }
    platforms.iter().map(Platform::to_string).collect::<Vec<_>>().join(", ")
}
