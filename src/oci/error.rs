//! [`BundleError`]: what is wrong with an OCI bundle, naming the `config.json` field.

use std::path::PathBuf;

use crate::Error;

/// Why an OCI bundle cannot become a sandbox. Every variant names the file or the
/// `config.json` field (as a path: `mounts[3].options`, `linux.namespaces[0].type`).
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum BundleError {
    /// The bundle directory or its `config.json` cannot be read.
    #[error("cannot read {path:?}: {source}")]
    Read {
        /// The file or directory.
        path: PathBuf,
        /// What the kernel said.
        #[source]
        source: std::io::Error,
    },

    /// `config.json` is not JSON, or not a runtime spec (a missing required field, a value of
    /// the wrong type, an unknown enumeration value).
    #[error("{path:?} is not a valid runtime spec: {reason}")]
    Json {
        /// The file.
        path: PathBuf,
        /// What is wrong, with the line and column where the parser knows them.
        reason: String,
    },

    /// A field has a value the runtime spec does not allow, or one that contradicts another
    /// field.
    #[error("config.json {field}: invalid value {value}: {reason}")]
    Invalid {
        /// The field, e.g. `root.path`.
        field: String,
        /// The value, as given.
        value: String,
        /// Why it was refused.
        reason: String,
    },

    /// A field the runtime spec allows, with a value stockade does not carry out. It is
    /// refused rather than ignored: the container would be other than its spec says.
    #[error("config.json {field} = {value} is not supported: {reason}")]
    Unsupported {
        /// The field, e.g. `hooks.prestart`.
        field: String,
        /// The value, as given.
        value: String,
        /// Why, and what would work instead.
        reason: String,
    },

    /// The sandbox the spec describes cannot be built here (the host lacks a feature, the
    /// caller a privilege, or the library refused a value the checks above let through).
    #[error("the sandbox of this bundle: {0}")]
    Sandbox(#[from] Error),
}

impl BundleError {
    pub(crate) fn invalid(
        field: impl Into<String>,
        value: impl std::fmt::Debug,
        reason: impl Into<String>,
    ) -> Self {
        BundleError::Invalid { field: field.into(), value: format!("{value:?}"), reason: reason.into() }
    }

    pub(crate) fn unsupported(
        field: impl Into<String>,
        value: impl std::fmt::Debug,
        reason: impl Into<String>,
    ) -> Self {
        BundleError::Unsupported { field: field.into(), value: format!("{value:?}"), reason: reason.into() }
    }
}
