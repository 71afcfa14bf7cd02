//! Building and signing bundles (the bridge's side).

use std::collections::BTreeMap;

use crate::Digest;
use crate::keys::SigningKey;
use crate::limits::{DEFAULT_CHUNK_SIZE, Limits};
use crate::manifest::{
    BaselineRef, Compression, FileEntry, FileRole, Lineage, MANIFEST_FORMAT, Manifest,
    ManifestError, ModelRef, PayloadInfo, SelfTestSample,
};
use crate::spec::ScoringSpec;

use super::format::{BUNDLE_DOMAIN, write_head};

/// Why a bundle could not be built.
#[derive(Debug, thiserror::Error)]
pub enum BuildError {
    /// The described bundle would not pass verification.
    #[error("bundle would be invalid: {0}")]
    Invalid(#[from] ManifestError),
    /// Compression failed.
    #[error("compressing the payload failed: {0}")]
    Compress(std::io::Error),
}

/// A built, signed bundle.
#[derive(Debug, Clone)]
pub struct BuiltBundle {
    /// The bundle file's bytes.
    pub bytes: Vec<u8>,
    /// Its digest (SHA-256 of the manifest).
    pub digest: Digest,
    /// Length of the head (where the payload starts).
    pub head_len: usize,
    /// The manifest that was signed.
    pub manifest: Manifest,
}

/// Assembles files, spec and metadata into a signed bundle.
#[derive(Debug, Clone)]
pub struct BundleBuilder {
    model: ModelRef,
    spec: ScoringSpec,
    lineage: Lineage,
    description: String,
    tags: BTreeMap<String, String>,
    self_test: Vec<SelfTestSample>,
    files: Vec<(String, FileRole, Vec<u8>)>,
    chunk_size: u32,
    level: i32,
    limits: Limits,
}

impl BundleBuilder {
    /// Starts a bundle for `model` with its ONNX bytes (stored as `model.onnx`).
    pub fn new(model: ModelRef, onnx: Vec<u8>, spec: ScoringSpec, lineage: Lineage) -> Self {
        Self {
            model,
            spec,
            lineage,
            description: String::new(),
            tags: BTreeMap::new(),
            self_test: Vec::new(),
            files: vec![("model.onnx".into(), FileRole::Model, onnx)],
            chunk_size: DEFAULT_CHUNK_SIZE,
            level: 19,
            limits: Limits::default(),
        }
    }

    /// Sets the description.
    pub fn description(mut self, d: impl Into<String>) -> Self {
        self.description = d.into();
        self
    }

    /// Adds a search tag.
    pub fn tag(mut self, k: impl Into<String>, v: impl Into<String>) -> Self {
        self.tags.insert(k.into(), v.into());
        self
    }

    /// Adds self-test samples.
    pub fn self_test(mut self, samples: impl IntoIterator<Item = SelfTestSample>) -> Self {
        self.self_test.extend(samples);
        self
    }

    /// Adds the baseline profile (JSON bytes), stored as `baseline.json`.
    pub fn baseline(mut self, json: Vec<u8>) -> Self {
        self.files
            .push(("baseline.json".into(), FileRole::Baseline, json));
        self
    }

    /// Adds another file.
    pub fn file(mut self, name: impl Into<String>, bytes: Vec<u8>) -> Self {
        self.files.push((name.into(), FileRole::Extra, bytes));
        self
    }

    /// Sets the chunk size (default 64 KiB, at most 128 KiB).
    pub fn chunk_size(mut self, size: u32) -> Self {
        self.chunk_size = size;
        self
    }

    /// Sets the zstd level (default 19: bundles are built once and fetched many times).
    pub fn level(mut self, level: i32) -> Self {
        self.level = level;
        self
    }

    /// Compresses, chunks, validates and signs.
    pub fn build(self, key: &SigningKey) -> Result<BuiltBundle, BuildError> {
        let mut raw = Vec::new();
        let mut files = Vec::new();
        for (name, role, bytes) in &self.files {
            files.push(FileEntry {
                name: name.clone(),
                role: *role,
                size: bytes.len() as u64,
                sha256: Digest::of(bytes),
            });
            raw.extend_from_slice(bytes);
        }
        let baseline = files
            .iter()
            .find(|f| f.role == FileRole::Baseline)
            .map(|f| BaselineRef {
                file: f.name.clone(),
                sha256: f.sha256,
            });
        let payload = crate::capped::compress(&raw, self.level).map_err(BuildError::Compress)?;
        let cs = self.chunk_size.max(1) as usize;
        let manifest = Manifest {
            format: MANIFEST_FORMAT,
            model: self.model,
            description: self.description,
            tags: self.tags,
            files,
            spec: self.spec,
            self_test: self.self_test,
            baseline,
            lineage: self.lineage,
            payload: PayloadInfo {
                compression: Compression::Zstd,
                uncompressed_size: raw.len() as u64,
                compressed_size: payload.len() as u64,
                chunk_size: self.chunk_size,
                chunks: payload.chunks(cs).map(Digest::of).collect(),
            },
        };
        manifest.validate(&self.limits)?;
        Ok(encode_signed(key, &manifest, &payload))
    }
}

/// Serialises and signs `manifest` and lays out head + `payload` *without validating*
/// either. The builder validates first; tests use this directly to craft bundles that are
/// correctly signed yet lie (the verifier must still refuse them).
pub fn encode_signed(key: &SigningKey, manifest: &Manifest, payload: &[u8]) -> BuiltBundle {
    let mjson = serde_json::to_vec(manifest).expect("manifest serialises");
    let sig = key.sign(BUNDLE_DOMAIN, &mjson);
    let mut bytes = write_head(key.id(), &sig, &mjson);
    let head_len = bytes.len();
    bytes.extend_from_slice(payload);
    BuiltBundle {
        bytes,
        digest: Digest::of(&mjson),
        head_len,
        manifest: manifest.clone(),
    }
}
