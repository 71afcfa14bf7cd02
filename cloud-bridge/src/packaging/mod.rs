//! Packaging: from an ONNX file (and an optional spec) to a signed bundle.
//!
//! [`prepare`] does everything before signing, loading the model exactly once: the
//! contract from the graph plus the spec's additions, the limits a device enforces, the
//! self-test samples (the spec's, else synthesised from the training sample or generated
//! inputs), validation and profiling, the baseline. A model is refused — never signed —
//! if it has operators tract cannot run, does not load, breaks a device limit, or fails a
//! self-test sample.

mod baseline;
mod spec_file;

pub use baseline::{BaselineFileError, TrainingSample};
pub use spec_file::{LineageSection, ModelSection, SpecFile, SpecFileError, read_capped};

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use outpost_inference::spec::SpecError;
use outpost_inference::{InferenceError, contract_from_graph, selftest};
use outpost_protocol::SigningKey;
use outpost_protocol::bundle::{BuildError, BuiltBundle, BundleBuilder};
use outpost_protocol::contract::{ModelContract, ScoreKind, Task};
use outpost_protocol::keys::KeyError;
use outpost_protocol::manifest::{Lineage, ModelRef, Requirements, valid_name};

use crate::profile::{self, Measured};

/// The largest request the agent's local API takes by default (`api.max_body_bytes`):
/// one sample of every fixed-size input must fit in it as binary tensors.
pub const AGENT_MAX_BODY: u64 = 8 << 20;
/// Self-test samples synthesised when the spec gives none.
pub const SYNTH_SAMPLES: usize = 4;

/// Why packing failed.
#[derive(Debug, thiserror::Error)]
pub enum PackError {
    /// Spec file problem.
    #[error(transparent)]
    Spec(#[from] SpecFileError),
    /// The spec does not fit the model.
    #[error("spec: {0}")]
    SpecConflict(#[from] SpecError),
    /// Signing key problem.
    #[error(transparent)]
    Key(#[from] KeyError),
    /// The signing key file (missing, readable by others, not a key).
    #[error(transparent)]
    KeyFile(#[from] crate::keys::KeysError),
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
    /// The model was refused by validation.
    #[error("model refused: {0}")]
    Refused(#[from] InferenceError),
    /// A limit a device enforces.
    #[error("model refused: {what} is {value} bytes, over the device limit of {limit} ({name})")]
    Limit {
        /// What is too large.
        what: String,
        /// Its size.
        value: u64,
        /// The limit.
        limit: u64,
        /// Where the limit is set.
        name: &'static str,
    },
    /// The baseline CSV is unusable.
    #[error(transparent)]
    Baseline(#[from] BaselineFileError),
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

/// Everything that goes into a bundle besides the model and its spec.
#[derive(Debug, Clone, Default)]
pub struct PackInput {
    /// Model name (overrides the spec's `[model] name`).
    pub name: Option<String>,
    /// Version (overrides the spec's; default 1).
    pub version: Option<u32>,
    /// Chunk size (default 64 KiB).
    pub chunk_size: Option<u32>,
    /// Memory the model needs on the device, bytes, as declared (measured on the target
    /// hardware); default: the peak measured here while profiling.
    pub memory_bytes: Option<u64>,
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
    /// Other files the model needs (name, bytes).
    pub extra_files: Vec<(String, Vec<u8>)>,
}

/// A model made ready for signing.
#[derive(Debug)]
pub struct Prepared {
    /// The contract (graph + spec).
    pub contract: ModelContract,
    /// The loaded model, its self-tests and measurements.
    pub measured: Measured,
    /// The baseline profile (JSON), when a training sample was given.
    pub baseline: Option<Vec<u8>>,
}

/// A packed bundle and what validation measured.
#[derive(Debug)]
pub struct Packed {
    /// The signed bundle.
    pub bundle: BuiltBundle,
    /// What validation measured.
    pub profile: profile::ValidationProfile,
}

/// Parses `k=v`.
pub fn parse_tag(s: &str) -> Result<(String, String), PackError> {
    match s.split_once('=') {
        Some((k, v)) if !k.trim().is_empty() => Ok((k.trim().to_owned(), v.trim().to_owned())),
        _ => Err(PackError::BadTag(s.to_owned())),
    }
}

/// Checks the limits a device enforces that the contract determines.
pub fn check_limits(c: &ModelContract) -> Result<(), PackError> {
    let mut per_request = 0u64;
    for i in &c.inputs {
        if let (Some(n), Some(size)) = (i.tensor().sample_len(), i.datatype.size()) {
            per_request = per_request.saturating_add(n as u64 * size as u64);
        }
    }
    if per_request > AGENT_MAX_BODY {
        return Err(PackError::Limit {
            what: "one sample of the model's inputs as binary tensors".into(),
            value: per_request,
            limit: AGENT_MAX_BODY,
            name: "the agent's api.max_body_bytes default",
        });
    }
    Ok(())
}

/// Contract, limits, self-tests, validation, profile and baseline, loading the model
/// once.
pub fn prepare(
    onnx: &[u8],
    spec: &SpecFile,
    baseline_csv: Option<&Path>,
) -> Result<Prepared, PackError> {
    let contract = spec.overlay.apply(contract_from_graph(onnx)?)?;
    check_limits(&contract)?;
    let mut sample: Option<TrainingSample> = None;
    let mut csv_error = None;
    let measured = profile::measure(onnx, &contract, 200, |model| {
        if let Some(p) = baseline_csv {
            match baseline::read(p, model) {
                Ok(s) => sample = Some(s),
                Err(e) => {
                    csv_error = Some(e);
                    return Ok(Vec::new());
                }
            }
        }
        if !spec.overlay.self_test.is_empty() {
            return spec
                .overlay
                .self_tests(model)
                .map_err(|e| InferenceError::SelfTest {
                    index: 0,
                    reason: e.to_string(),
                });
        }
        let rows = sample
            .as_ref()
            .map(|s| s.rows.as_slice())
            .unwrap_or_default();
        selftest::synthesize(model, rows, SYNTH_SAMPLES, 0x7574_706f_7374)
    });
    if let Some(e) = csv_error {
        return Err(e.into());
    }
    let mut measured = measured?;
    let mut contract = contract;
    // A classifier derived as giving probabilities whose outputs are not (a linear or
    // support-vector decision function): read them as uncalibrated scores, unless the
    // spec said what they are.
    let spec_scores = spec.overlay.task.as_ref().and_then(|t| t.scores);
    if let (None, Task::Classification(t)) = (spec_scores, &mut contract.task)
        && t.scores == ScoreKind::Probabilities
        && !outpost_inference::graph::scores_are_probabilities(
            &measured.model.contract().clone(),
            &measured.samples,
        )
    {
        t.scores = ScoreKind::Scores;
        measured.model = measured.model.with_contract(contract.clone())?;
    }
    let baseline = match (baseline_csv, &sample) {
        (Some(p), Some(s)) => Some(baseline::profile(p, s, &measured.model)?),
        _ => None,
    };
    Ok(Prepared {
        contract,
        measured,
        baseline,
    })
}

/// Builds and signs the bundle of a prepared model.
pub fn pack(
    onnx: Vec<u8>,
    spec: &SpecFile,
    prepared: Prepared,
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
    let Prepared {
        contract,
        measured,
        baseline,
    } = prepared;
    let mut b = BundleBuilder::new(ModelRef { name, version }, onnx, contract, lineage)
        .description(spec.model.description.clone().unwrap_or_default())
        .self_test(measured.samples)
        .requirements(Requirements {
            memory_bytes: input.memory_bytes.or(measured.profile.peak_memory_bytes),
        });
    for (k, v) in tags {
        b = b.tag(k, v);
    }
    if let Some(cs) = input.chunk_size {
        b = b.chunk_size(cs);
    }
    if let Some(json) = baseline {
        b = b.baseline(json);
    }
    for (name, bytes) in input.extra_files {
        b = b.file(name, bytes);
    }
    Ok(Packed {
        bundle: b.build(key)?,
        profile: measured.profile,
    })
}

/// `bundle pack`: reads the files, prepares, packs, writes `out` atomically.
pub fn pack_files(
    model: &Path,
    spec: Option<&Path>,
    key: &Path,
    out: &Path,
    input: PackInput,
) -> Result<Packed, PackError> {
    let spec = match spec {
        Some(p) => SpecFile::load(p)?,
        None => SpecFile::default(),
    };
    let key = crate::keys::load_private(key)?;
    let onnx = read_capped(model)?;
    let prepared = prepare(&onnx, &spec, None)?;
    let packed = pack(onnx, &spec, prepared, input, &key)?;
    crate::fsutil::write_atomic(out, &packed.bundle.bytes).map_err(|source| PackError::Write {
        path: out.to_path_buf(),
        source,
    })?;
    Ok(packed)
}
