//! Packaging: validate a model with tract, run its self-test, build and sign a bundle.
//!
//! A model is refused — never signed — if it does not load, does not match its scoring
//! spec, has no self-test samples, or fails one.

mod spec_file;

pub use spec_file::{LineageSection, ModelSection, SpecFile, SpecFileError, read_capped};

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use outpost_agent::inference::{InferenceError, Model, SelfTestReport};
use outpost_protocol::SigningKey;
use outpost_protocol::bundle::{BuildError, BuiltBundle, BundleBuilder};
use outpost_protocol::keys::KeyError;
use outpost_protocol::manifest::{Lineage, ModelRef, valid_name};

/// Why packing failed.
#[derive(Debug, thiserror::Error)]
pub enum PackError {
    /// Spec file problem.
    #[error(transparent)]
    Spec(#[from] SpecFileError),
    /// Signing key problem.
    #[error(transparent)]
    Key(#[from] KeyError),
    /// No model name from flags or spec.
    #[error("no model name: pass --name or set [model] name in the spec")]
    NoName,
    /// Invalid name.
    #[error("invalid model name {0:?}: use 1..=128 of [A-Za-z0-9._-]")]
    BadName(String),
    /// Version 0.
    #[error("model version must be >= 1")]
    BadVersion,
    /// Invalid tag.
    #[error("invalid tag {0:?}: expected k=v")]
    BadTag(String),
    /// No samples to validate with.
    #[error("the spec has no self-test samples; add [[self_test]] entries or self_test_file")]
    NoSelfTest,
    /// The model was refused by validation.
    #[error("model refused: {0}")]
    Refused(#[from] InferenceError),
    /// Bundle construction failed.
    #[error(transparent)]
    Build(#[from] BuildError),
    /// Output could not be written.
    #[error("cannot write {path}: {source}")]
    Write {
        /// Path.
        path: PathBuf,
        /// Cause.
        source: std::io::Error,
    },
}

/// Everything that goes into a bundle besides the spec file.
#[derive(Debug, Clone, Default)]
pub struct PackInput {
    /// Model name (overrides the spec's `[model] name`).
    pub name: Option<String>,
    /// Version (overrides the spec's; default 1).
    pub version: Option<u32>,
    /// Chunk size (default 64 KiB).
    pub chunk_size: Option<u32>,
    /// Who is packing.
    pub created_by: String,
    /// When (unix seconds).
    pub created_at: u64,
    /// Why.
    pub reason: String,
    /// Lineage overrides.
    pub source_commit: Option<String>,
    /// Dataset id override.
    pub dataset_id: Option<String>,
    /// Dataset hash override.
    pub dataset_sha256: Option<String>,
    /// Extra tags (`k=v`).
    pub tags: Vec<String>,
    /// Baseline profile JSON to embed.
    pub baseline: Option<Vec<u8>>,
    /// Other files the model needs (name, bytes).
    pub extra_files: Vec<(String, Vec<u8>)>,
}

/// A packed bundle and what validation measured.
#[derive(Debug)]
pub struct Packed {
    /// The signed bundle.
    pub bundle: BuiltBundle,
    /// Self-test result on this host.
    pub self_test: SelfTestReport,
}

/// Parses `k=v`.
pub fn parse_tag(s: &str) -> Result<(String, String), PackError> {
    match s.split_once('=') {
        Some((k, v)) if !k.trim().is_empty() => Ok((k.trim().to_owned(), v.trim().to_owned())),
        _ => Err(PackError::BadTag(s.to_owned())),
    }
}

/// Validates `onnx` against the spec file and builds a signed bundle.
pub fn pack(
    onnx: Vec<u8>,
    spec: &SpecFile,
    input: PackInput,
    key: &SigningKey,
) -> Result<Packed, PackError> {
    let name = input
        .name
        .or_else(|| spec.model.name.clone())
        .ok_or(PackError::NoName)?;
    if !valid_name(&name) {
        return Err(PackError::BadName(name));
    }
    let version = input.version.or(spec.model.version).unwrap_or(1);
    if version == 0 {
        return Err(PackError::BadVersion);
    }
    if spec.self_test.is_empty() {
        return Err(PackError::NoSelfTest);
    }
    let model = Model::load(&onnx, &spec.spec)?;
    let self_test = model.self_test(&spec.self_test)?;

    let mut tags: BTreeMap<String, String> = spec.tags.clone();
    for t in &input.tags {
        let (k, v) = parse_tag(t)?;
        tags.insert(k, v);
    }
    let l = &spec.lineage;
    let lineage = Lineage {
        source_commit: input.source_commit.or_else(|| l.source_commit.clone()),
        dataset_id: input.dataset_id.or_else(|| l.dataset_id.clone()),
        dataset_sha256: input.dataset_sha256.or_else(|| l.dataset_sha256.clone()),
        training_run: l.training_run.clone(),
        metrics: l.metrics.clone(),
        created_by: input.created_by,
        created_at: input.created_at,
        reason: input.reason,
    };
    let mut b = BundleBuilder::new(ModelRef { name, version }, onnx, spec.spec.clone(), lineage)
        .description(spec.model.description.clone().unwrap_or_default())
        .self_test(spec.self_test.iter().cloned());
    for (k, v) in tags {
        b = b.tag(k, v);
    }
    if let Some(cs) = input.chunk_size {
        b = b.chunk_size(cs);
    }
    if let Some(json) = input.baseline {
        b = b.baseline(json);
    }
    for (name, bytes) in input.extra_files {
        b = b.file(name, bytes);
    }
    Ok(Packed {
        bundle: b.build(key)?,
        self_test,
    })
}

/// `bundle pack`: reads the files, packs, writes `out` atomically.
pub fn pack_files(
    model: &Path,
    spec: &Path,
    key: &Path,
    out: &Path,
    input: PackInput,
) -> Result<Packed, PackError> {
    let spec = SpecFile::load(spec)?;
    let key = SigningKey::load(key)?;
    let onnx = read_capped(model)?;
    let packed = pack(onnx, &spec, input, &key)?;
    crate::fsutil::write_atomic(out, &packed.bundle.bytes).map_err(|source| PackError::Write {
        path: out.to_path_buf(),
        source,
    })?;
    Ok(packed)
}
