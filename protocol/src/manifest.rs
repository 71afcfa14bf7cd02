//! The bundle manifest: what a bundle contains, signed as a whole.
//!
//! The manifest lists every file (name, role, size, SHA-256), the compressed payload's
//! size and per-chunk SHA-256 digests, the model contract, references to the self-test
//! samples and the baseline profile (both files in the payload, so the manifest stays
//! small whatever their size), what the model needs to run, and the model's lineage. Its
//! SHA-256 is the bundle's content address (the "bundle digest"): it pins every byte of
//! the payload through the chunk digests, so signing the manifest signs the bundle.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::Digest;
use crate::contract::{ContractError, ModelContract};
use crate::limits::{Limits, MAX_CHUNK_SIZE};
use crate::tensor::Tensor;

/// Current manifest format number (2: model contract with named tensors, self-test samples
/// in the payload).
pub const MANIFEST_FORMAT: u32 = 2;
/// Format of the self-test file.
pub const SELF_TEST_FORMAT: u32 = 1;
/// Longest model name.
pub const MAX_NAME_LEN: usize = 128;

/// A model name and registry version.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
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
    /// Self-test samples ([`SelfTests`], JSON).
    SelfTest,
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

/// One self-test sample: named input tensors (before normalisation) and the outputs the
/// model must produce from them.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SelfTestSample {
    /// Inputs, one per model input.
    pub inputs: Vec<Tensor>,
    /// Expected outputs (any subset of the model's outputs).
    pub outputs: Vec<Tensor>,
    /// Tolerance per float value: `|got − want| ≤ tolerance · max(1, |want|)` (absolute up
    /// to magnitude 1, relative above); integers and strings must match exactly.
    pub tolerance: f64,
}

/// The self-test file (`self_test.json`, role `self_test`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SelfTests {
    /// [`SELF_TEST_FORMAT`].
    pub format: u32,
    /// Samples, run in order.
    pub samples: Vec<SelfTestSample>,
}

impl SelfTests {
    /// Checks every sample against the contract: each input present once with its
    /// datatype and an accepted shape, each output known with its datatype, tolerances
    /// finite and non-negative.
    pub fn validate(&self, c: &ModelContract) -> Result<(), ManifestError> {
        if self.format != SELF_TEST_FORMAT {
            return Err(ManifestError::SelfTest {
                index: 0,
                reason: format!("self-test format {} is not supported", self.format),
            });
        }
        for (index, s) in self.samples.iter().enumerate() {
            let fail = |reason: String| ManifestError::SelfTest { index, reason };
            if !(s.tolerance.is_finite() && s.tolerance >= 0.0) {
                return Err(fail(format!(
                    "tolerance {} must be finite and >= 0",
                    s.tolerance
                )));
            }
            for i in &c.inputs {
                let t = match s.inputs.iter().filter(|t| t.name == i.name).count() {
                    1 => s.inputs.iter().find(|t| t.name == i.name).expect("counted"),
                    n => return Err(fail(format!("input {:?} given {n} times", i.name))),
                };
                if t.datatype() != i.datatype || !i.tensor().accepts(&t.shape) {
                    return Err(fail(format!(
                        "input {:?} is {} {:?}, the contract says {} {:?}",
                        i.name,
                        t.datatype(),
                        t.shape,
                        i.datatype,
                        i.tensor().oip_shape()
                    )));
                }
            }
            if let Some(t) = s.inputs.iter().find(|t| c.input(&t.name).is_none()) {
                return Err(fail(format!("{:?} is not an input of the model", t.name)));
            }
            if s.outputs.is_empty() {
                return Err(fail("no expected outputs".into()));
            }
            for t in &s.outputs {
                match c.output(&t.name) {
                    Some(o) if o.datatype == t.datatype() => {}
                    Some(o) => {
                        return Err(fail(format!(
                            "output {:?} is {}, the contract says {}",
                            t.name,
                            t.datatype(),
                            o.datatype
                        )));
                    }
                    None => {
                        return Err(fail(format!("{:?} is not an output of the model", t.name)));
                    }
                }
            }
        }
        Ok(())
    }
}

/// What the model needs on the device (measured by the bridge at registration).
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct Requirements {
    /// Peak resident memory while loading and running it, bytes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub memory_bytes: Option<u64>,
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
    /// The model contract.
    pub contract: ModelContract,
    /// The self-test file (name and digest of the `self_test` file); the agent runs its
    /// samples before activating the model.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub self_test: Option<FileRef>,
    /// The baseline profile file, if any (name and digest of a `baseline` file).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub baseline: Option<FileRef>,
    /// What the model needs to run.
    #[serde(default)]
    pub requirements: Requirements,
    /// Provenance.
    pub lineage: Lineage,
    /// Payload layout.
    pub payload: PayloadInfo,
}

/// Reference to a file inside the payload (the baseline profile, the self-tests).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FileRef {
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
    /// The model contract is inconsistent.
    #[error("invalid model contract: {0}")]
    Contract(#[from] ContractError),
    /// A self-test sample does not fit the contract.
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
        for (what, role, r) in [
            ("baseline", FileRole::Baseline, &self.baseline),
            ("self-test", FileRole::SelfTest, &self.self_test),
        ] {
            if let Some(b) = r {
                let ok = self
                    .files
                    .iter()
                    .any(|f| f.name == b.file && f.role == role && f.sha256 == b.sha256);
                if !ok {
                    return Err(ManifestError::Files(format!(
                        "{what} {} is not a {what} file with the referenced digest",
                        b.file
                    )));
                }
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
        self.contract.validate()?;
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
