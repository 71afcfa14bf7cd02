//! Signed model bundles: byte layout, building, and verification.
//!
//! A bundle file is a *head* followed by the *payload*:
//!
//! ```text
//! offset  size  field
//! 0       8     magic "OUTPOSTB"
//! 8       2     format, u16 little-endian (1)
//! 10      4     H = length of the rest of the head, u32 LE
//! 14      1     K = key id length (1..=64)
//! 15      K     key id (ASCII)
//! 15+K    64    Ed25519 signature over "outpost/v1/bundle\0" || manifest
//! 79+K    4     M = manifest length, u32 LE (H = 1 + K + 64 + 4 + M)
//! 83+K    M     manifest, UTF-8 JSON (see [`crate::manifest`])
//! 14+H    P     payload: one zstd stream of all files back to back,
//!               P = manifest.payload.compressed_size, cut into chunks of
//!               manifest.payload.chunk_size whose SHA-256s the manifest lists
//! ```
//!
//! Nothing may follow the payload. The bundle digest is SHA-256(manifest bytes).
//!
//! Verification order (each step a distinct [`BundleError`]): magic, format, head length
//! caps, key id known, signature, manifest JSON, manifest invariants, payload length,
//! each chunk's digest, capped inflation (to exactly the declared size), each file's
//! digest. Only then does a [`VerifiedBundle`] exist.

mod build;
mod format;
mod verify;

pub use build::{BuildError, BuiltBundle, BundleBuilder, encode_signed};
pub use format::{BUNDLE_DOMAIN, FORMAT, MAGIC, PREFIX_LEN, RawHead, head_len, parse_head};
pub use verify::{VerifiedBundle, VerifiedFile, VerifiedManifest, Verifier};

use crate::Digest;
use crate::capped::CappedError;
use crate::keys::KeyId;
use crate::manifest::ManifestError;

/// Why bytes are not a valid, trusted bundle.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum BundleError {
    /// Does not start with `OUTPOSTB`.
    #[error("not an Outpost bundle (bad magic)")]
    BadMagic,
    /// Unknown format number.
    #[error("bundle format {0} is not supported (this build reads format 1)")]
    UnsupportedFormat(u16),
    /// Input ends before a field it declares.
    #[error("bundle truncated: {what} needs {needed} bytes, only {available} present")]
    Truncated {
        /// Field being read.
        what: &'static str,
        /// Bytes needed.
        needed: u64,
        /// Bytes present.
        available: u64,
    },
    /// Declared head or manifest is over the cap.
    #[error("{what} of {size} bytes exceeds the limit of {limit}")]
    TooLarge {
        /// Which field.
        what: &'static str,
        /// Declared size.
        size: u64,
        /// Cap.
        limit: u64,
    },
    /// Head fields disagree with each other.
    #[error("malformed bundle head: {0}")]
    MalformedHead(String),
    /// The key id is not valid ASCII.
    #[error("malformed key id in bundle head")]
    BadKeyId,
    /// The signing key is not in the trust store.
    #[error("bundle signed by unknown key {0}")]
    UnknownKey(KeyId),
    /// The signature does not verify.
    #[error("bundle signature does not verify with key {0}")]
    BadSignature(KeyId),
    /// The manifest is not the expected JSON.
    #[error("manifest is not valid JSON: {0}")]
    ManifestJson(String),
    /// The manifest breaks an invariant.
    #[error("manifest rejected: {0}")]
    Manifest(#[from] ManifestError),
    /// The bundle is not the one asked for.
    #[error("bundle digest {actual} does not match the expected {expected}")]
    DigestMismatch {
        /// Expected (from the directive).
        expected: Digest,
        /// Actual.
        actual: Digest,
    },
    /// Bytes follow the payload.
    #[error("{extra} unexpected bytes after the payload")]
    TrailingBytes {
        /// How many.
        extra: u64,
    },
    /// A chunk has the wrong length.
    #[error("chunk {index} is {got} bytes, expected {expected}")]
    ChunkSize {
        /// Chunk index.
        index: u32,
        /// Expected length.
        expected: u64,
        /// Actual length.
        got: u64,
    },
    /// A chunk index beyond the manifest.
    #[error("chunk {index} does not exist (bundle has {count})")]
    NoSuchChunk {
        /// Requested index.
        index: u32,
        /// Chunk count.
        count: usize,
    },
    /// A chunk's SHA-256 differs from the manifest.
    #[error("chunk {index} digest mismatch (corrupted or swapped)")]
    ChunkDigest {
        /// Chunk index.
        index: u32,
    },
    /// Payload inflates past its declared size.
    #[error("payload inflates past its declared {declared} bytes (decompression bomb)")]
    DecompressionBomb {
        /// Declared size.
        declared: u64,
    },
    /// Payload inflates to less than declared.
    #[error("payload inflates to {actual} bytes, manifest declares {declared}")]
    PayloadShort {
        /// Declared.
        declared: u64,
        /// Actual.
        actual: u64,
    },
    /// Payload is not a valid zstd stream.
    #[error("payload is not a valid zstd stream: {0}")]
    PayloadCorrupt(String),
    /// A file's SHA-256 differs from the manifest.
    #[error("file {name} digest mismatch")]
    FileDigest {
        /// File name.
        name: String,
    },
}

impl From<CappedError> for BundleError {
    fn from(e: CappedError) -> Self {
        match e {
            CappedError::DeclaredTooLarge { declared, limit } => BundleError::TooLarge {
                what: "uncompressed payload",
                size: declared,
                limit,
            },
            CappedError::Bomb { declared } => BundleError::DecompressionBomb { declared },
            CappedError::Short { declared, actual } => {
                BundleError::PayloadShort { declared, actual }
            }
            CappedError::Corrupt(m) => BundleError::PayloadCorrupt(m),
        }
    }
}
