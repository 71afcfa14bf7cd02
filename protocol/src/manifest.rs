//! The bundle manifest: what a bundle contains, signed as a whole.
//!
//! The manifest lists every file (name, role, size, SHA-256), the compressed payload's
//! size and per-chunk SHA-256 digests, the scoring spec, self-test samples, a reference to
//! the baseline profile and the model's lineage. Its SHA-256 is the bundle's content
//! address (the "bundle digest"): it pins every byte of the payload through the chunk
//! digests, so signing the manifest signs the bundle.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::Digest;
use crate::limits::{Limits, MAX_CHUNK_SIZE};
use crate::spec::{ScoringSpec, SpecError};

/// Current manifest format number.
pub const MANIFEST_FORMAT: u32 = 1;
/// Longest model name.
pub const MAX_NAME_LEN: usize = 128;

/// A model name and registry version.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct ModelRef {
    /// Model name (`[A-Za-z0-9._-]`, 1..=128).
    pub name: String,
    /// Registry version (1, 2, …).
    pub version: u32,
}

impl std::fmt::Display for ModelRef {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} v{}", self.name, self.version)
    }
}

/// What a bundled file is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FileRole {
    /// The ONNX model (exactly one per bundle).
    Model,
    /// The training-data baseline profile (JSON).
    Baseline,
    /// Any other file the model needs (external weights, vocabularies, …).
    Extra,
}

/// One file in the payload. Files are stored back to back in manifest order.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FileEntry {
    /// File name (`[A-Za-z0-9._-]`, no path separators).
    pub name: String,
    /// Its role.
    pub role: FileRole,
    /// Size in bytes.
    pub size: u64,
    /// SHA-256 of the content.
    pub sha256: Digest,
}

/// One self-test sample: a raw input (before normalisation) and the expected output.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SelfTestSample {
    /// Raw input values, in feature order.
    pub input: Vec<f32>,
    /// Expected output values.
    pub expected: Vec<f32>,
    /// Largest absolute difference allowed per value.
    pub tolerance: f32,
}

/// Where the model came from.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct Lineage {
    /// Source code commit the model was trained from.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source_commit: Option<String>,
    /// Training dataset id.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dataset_id: Option<String>,
    /// Training dataset content hash.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dataset_sha256: Option<String>,
    /// Training run id or URL.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub training_run: Option<String>,
    /// Training metrics (accuracy, loss, …).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub metrics: BTreeMap<String, f64>,
    /// Who registered / packed the model.
    pub created_by: String,
    /// When (unix seconds).
    pub created_at: u64,
    /// Why.
    #[serde(default)]
    pub reason: String,
}

/// Payload compression.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Compression {
    /// zstd, a single stream over all files.
    Zstd,
}

/// The compressed payload and its chunking.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PayloadInfo {
    /// Compression of the payload stream.
    pub compression: Compression,
    /// Sum of all file sizes.
    pub uncompressed_size: u64,
    /// Compressed stream length.
    pub compressed_size: u64,
    /// Chunk size (the last chunk may be shorter), 1..=128 KiB.
    pub chunk_size: u32,
    /// SHA-256 of each chunk, in order.
    pub chunks: Vec<Digest>,
}

/// The signed description of a bundle.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Manifest {
    /// Format number ([`MANIFEST_FORMAT`]).
    pub format: u32,
    /// Model name and version.
    pub model: ModelRef,
    /// Free-text description.
    #[serde(default)]
    pub description: String,
    /// Search tags.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub tags: BTreeMap<String, String>,
    /// Files in the payload, in payload order.
    pub files: Vec<FileEntry>,
    /// Scoring spec.
    pub spec: ScoringSpec,
    /// Self-test samples the agent runs before activating the model.
    #[serde(default)]
    pub self_test: Vec<SelfTestSample>,
    /// The baseline profile file, if any (name and digest of a `baseline` file).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub baseline: Option<BaselineRef>,
    /// Provenance.
    pub lineage: Lineage,
    /// Payload layout.
    pub payload: PayloadInfo,
}

/// Reference to the baseline profile file inside the payload.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BaselineRef {
    /// File name in `files`.
    pub file: String,
    /// Its SHA-256 (repeats the file entry, so readers need not search).
    pub sha256: Digest,
}

/// Why a (correctly signed) manifest is unacceptable.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum ManifestError {
    /// Unknown format number.
    #[error("manifest format {0} is not supported (this build reads format {MANIFEST_FORMAT})")]
    Format(u32),
    /// Name is empty, too long or has forbidden characters.
    #[error("invalid {what} name {name:?}: use 1..=128 of [A-Za-z0-9._-]")]
    BadName {
        /// Which name.
        what: &'static str,
        /// The name.
        name: String,
    },
    /// Version 0.
    #[error("model version must be >= 1")]
    ZeroVersion,
    /// Files are not exactly one model plus others, or names repeat, or too many.
    #[error("invalid file list: {0}")]
    Files(String),
    /// Sizes do not add up or exceed limits.
    #[error("invalid payload: {0}")]
    Payload(String),
    /// The scoring spec is inconsistent.
    #[error("invalid scoring spec: {0}")]
    Spec(#[from] SpecError),
    /// A self-test sample does not fit the spec.
    #[error("self-test sample {index}: {reason}")]
    SelfTest {
        /// Sample index.
        index: usize,
        /// What is wrong.
        reason: String,
    },
}

/// Checks a name against `[A-Za-z0-9._-]{1,128}` and rejects `.`/`..`.
pub fn valid_name(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= MAX_NAME_LEN
        && s != "."
        && s != ".."
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'))
}

impl Manifest {
    /// Checks every invariant the verifier relies on. Run after the signature check, before
    /// the payload is touched.
    pub fn validate(&self, limits: &Limits) -> Result<(), ManifestError> {
        if self.format != MANIFEST_FORMAT {
            return Err(ManifestError::Format(self.format));
        }
        if !valid_name(&self.model.name) {
            return Err(ManifestError::BadName {
                what: "model",
                name: self.model.name.clone(),
            });
        }
        if self.model.version == 0 {
            return Err(ManifestError::ZeroVersion);
        }
        if self.files.is_empty() || self.files.len() > limits.max_files {
            return Err(ManifestError::Files(format!(
                "{} files (allowed 1..={})",
                self.files.len(),
                limits.max_files
            )));
        }
        let mut seen = std::collections::BTreeSet::new();
        for f in &self.files {
            if !valid_name(&f.name) {
                return Err(ManifestError::BadName {
                    what: "file",
                    name: f.name.clone(),
                });
            }
            if !seen.insert(f.name.as_str()) {
                return Err(ManifestError::Files(format!("{} listed twice", f.name)));
            }
        }
        let models = self
            .files
            .iter()
            .filter(|f| f.role == FileRole::Model)
            .count();
        if models != 1 {
            return Err(ManifestError::Files(format!(
                "{models} model files, expected exactly 1"
            )));
        }
        if let Some(b) = &self.baseline {
            let ok = self
                .files
                .iter()
                .any(|f| f.name == b.file && f.role == FileRole::Baseline && f.sha256 == b.sha256);
            if !ok {
                return Err(ManifestError::Files(format!(
                    "baseline {} is not a baseline file with the referenced digest",
                    b.file
                )));
            }
        }
        let p = &self.payload;
        let total = self
            .files
            .iter()
            .try_fold(0u64, |a, f| a.checked_add(f.size))
            .ok_or_else(|| ManifestError::Payload("file sizes overflow".into()))?;
        if total != p.uncompressed_size {
            return Err(ManifestError::Payload(format!(
                "files add up to {total} bytes but uncompressed_size is {}",
                p.uncompressed_size
            )));
        }
        if p.uncompressed_size > limits.max_payload {
            return Err(ManifestError::Payload(format!(
                "uncompressed size {} exceeds the limit of {}",
                p.uncompressed_size, limits.max_payload
            )));
        }
        if p.chunk_size == 0 || p.chunk_size > MAX_CHUNK_SIZE {
            return Err(ManifestError::Payload(format!(
                "chunk size {} outside 1..={MAX_CHUNK_SIZE}",
                p.chunk_size
            )));
        }
        let expect_chunks = p.compressed_size.div_ceil(u64::from(p.chunk_size));
        if p.compressed_size == 0 || p.chunks.len() as u64 != expect_chunks {
            return Err(ManifestError::Payload(format!(
                "{} chunk digests for {} compressed bytes in chunks of {} (expected {expect_chunks})",
                p.chunks.len(),
                p.compressed_size,
                p.chunk_size
            )));
        }
        self.spec.validate()?;
        let n = self.spec.sample_len().unwrap_or(0);
        let labels = self.spec.output.labels.len();
        for (index, s) in self.self_test.iter().enumerate() {
            let reason = if s.input.len() != n {
                format!("input has {} values, the spec needs {n}", s.input.len())
            } else if s.expected.len() != labels {
                format!(
                    "expected has {} values, the spec has {labels} labels",
                    s.expected.len()
                )
            } else if !(s.tolerance.is_finite() && s.tolerance >= 0.0) {
                format!("tolerance {} must be finite and >= 0", s.tolerance)
            } else {
                continue;
            };
            return Err(ManifestError::SelfTest { index, reason });
        }
        Ok(())
    }

    /// Byte range of chunk `index` within the compressed payload.
    pub fn chunk_range(&self, index: u32) -> Option<std::ops::Range<u64>> {
        let p = &self.payload;
        if index as usize >= p.chunks.len() {
            return None;
        }
        let start = u64::from(index) * u64::from(p.chunk_size);
        let end = (start + u64::from(p.chunk_size)).min(p.compressed_size);
        Some(start..end)
    }

    /// The model file entry (always present in a validated manifest).
    pub fn model_file(&self) -> Option<&FileEntry> {
        self.files.iter().find(|f| f.role == FileRole::Model)
    }
}
