//! Building and signing bundles (the bridge's side).

use std::collections::BTreeMap;

use crate::Digest;
use crate::contract::ModelContract;
use crate::keys::SigningKey;
use crate::limits::{DEFAULT_CHUNK_SIZE, Limits};
use crate::manifest::{
    Compression, FileEntry, FileRef, FileRole, Lineage, MANIFEST_FORMAT, Manifest, ManifestError,
    ModelRef, PayloadInfo, Requirements, SELF_TEST_FORMAT, SelfTestSample, SelfTests,
};

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

/// Assembles files, the model contract and metadata into a signed bundle.
#[derive(Debug, Clone)]
pub struct BundleBuilder {
    model: ModelRef,
    contract: ModelContract,
    lineage: Lineage,
    description: String,
    tags: BTreeMap<String, String>,
    self_test: Vec<SelfTestSample>,
    requirements: Requirements,
    files: Vec<(String, FileRole, Vec<u8>)>,
    chunk_size: u32,
    level: i32,
    limits: Limits,
}

impl BundleBuilder {
    /// Starts a bundle for `model` with its ONNX bytes (stored as `model.onnx`).
    pub fn new(model: ModelRef, onnx: Vec<u8>, contract: ModelContract, lineage: Lineage) -> Self {
        Self {
            model,
            contract,
            lineage,
            description: String::new(),
            tags: BTreeMap::new(),
            self_test: Vec::new(),
            requirements: Requirements::default(),
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

    /// Adds self-test samples (stored as `self_test.json` in the payload).
    pub fn self_test(mut self, samples: impl IntoIterator<Item = SelfTestSample>) -> Self {
        self.self_test.extend(samples);
        self
    }

    /// Records what the model needs to run.
    pub fn requirements(mut self, r: Requirements) -> Self {
        self.requirements = r;
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
    pub fn build(mut self, key: &SigningKey) -> Result<BuiltBundle, BuildError> {
        self.contract.validate().map_err(ManifestError::from)?;
        if !self.self_test.is_empty() {
            let tests = SelfTests {
                format: SELF_TEST_FORMAT,
                samples: std::mem::take(&mut self.self_test),
            };
            tests.validate(&self.contract)?;
            let json = serde_json::to_vec(&tests).expect("self-tests serialise");
            self.files
                .push(("self_test.json".into(), FileRole::SelfTest, json));
        }
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
        let reference = |role: FileRole| {
            files.iter().find(|f| f.role == role).map(|f| FileRef {
                file: f.name.clone(),
                sha256: f.sha256,
            })
        };
        let baseline = reference(FileRole::Baseline);
        let self_test = reference(FileRole::SelfTest);
        let payload = crate::capped::compress(&raw, self.level).map_err(BuildError::Compress)?;
        let cs = self.chunk_size.max(1) as usize;
        let manifest = Manifest {
            format: MANIFEST_FORMAT,
            model: self.model,
            description: self.description,
            tags: self.tags,
            files,
            contract: self.contract,
            self_test,
            baseline,
            requirements: self.requirements,
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
        // The device refuses a head whose manifest is over the cap: so must the builder.
        let size = serde_json::to_vec(&manifest)
            .expect("manifest serialises")
            .len();
        if size > self.limits.max_manifest as usize {
            return Err(ManifestError::Payload(format!(
                "the manifest is {size} bytes, over the device limit of {} (Limits::max_manifest)",
                self.limits.max_manifest
            ))
            .into());
        }
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
