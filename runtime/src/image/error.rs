//! Errors of image pulling, storing and unpacking.

use std::path::PathBuf;

/// Everything that can go wrong between a reference and an unpacked image.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("invalid image reference {reference:?}: {reason}")]
    InvalidReference { reference: String, reason: String },
    #[error("invalid digest {digest:?}: {reason}")]
    InvalidDigest { digest: String, reason: String },
    #[error("invalid platform {value:?}: {reason}")]
    InvalidPlatform { value: String, reason: String },
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("registry config {path}: {reason}")]
    Config { path: PathBuf, reason: String },
    #[error("credentials file {path}: {reason}")]
    Credentials { path: PathBuf, reason: String },
    #[error("credential helper {helper} for {server}: {reason}")]
    CredentialHelper {
        helper: String,
        server: String,
        reason: String,
    },
    #[error("{url}: {reason}")]
    Transport { url: String, reason: String },
    #[error("{url}: registry answered HTTP {status}: {message}")]
    Registry {
        url: String,
        status: u16,
        message: String,
    },
    #[error("{url}: authentication failed: {reason}")]
    Unauthorized { url: String, reason: String },
    #[error("{what}: digest mismatch: expected {expected}, got {actual}")]
    DigestMismatch {
        what: String,
        expected: String,
        actual: String,
    },
    #[error("{what}: size mismatch: descriptor says {expected} bytes, got {actual}")]
    SizeMismatch {
        what: String,
        expected: u64,
        actual: u64,
    },
    #[error("{what}: larger than the limit of {limit} bytes")]
    TooLarge { what: String, limit: u64 },
    #[error("{what}: unsupported media type {media_type:?}")]
    UnsupportedMediaType { what: String, media_type: String },
    #[error("{what}: malformed: {reason}")]
    Malformed { what: String, reason: String },
    #[error("no image for platform {wanted} in index (available: {available})")]
    NoMatchingPlatform { wanted: String, available: String },
    #[error("layer {layer}: entry {path:?}: {reason}")]
    UnsafeEntry {
        layer: String,
        path: String,
        reason: String,
    },
    #[error("layer {layer}: {reason}")]
    Tar { layer: String, reason: String },
    #[error("image {image} is in use by container(s) {containers}: delete them first (or remove the name with --force; its layers stay while they are used)")]
    ImageInUse { image: String, containers: String },
    #[error("image {0:?} not found in the store")]
    ImageNotFound(String),
    #[error("store {path}: {reason}")]
    Store { path: PathBuf, reason: String },
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Attach a path to an io::Error.
pub(crate) trait IoContext<T> {
    fn at(self, path: impl Into<PathBuf>) -> Result<T>;
}

impl<T> IoContext<T> for std::io::Result<T> {
    fn at(self, path: impl Into<PathBuf>) -> Result<T> {
        self.map_err(|source| Error::Io {
            path: path.into(),
            source,
        })
    }
}
