//! Model loading and scoring with tract.
//!
//! A [`Model`] is an ONNX graph optimised once at load, plus the scoring spec that drives
//! pre- and post-processing. Loading checks the spec against the graph (input and output
//! names, element type, per-sample shape), so a bundle whose spec and model disagree is
//! refused at install time, not at the first request.
//!
//! tract returns errors for nearly everything, but a malformed graph could still reach
//! an internal assertion; load and run are wrapped in `catch_unwind` so a bad model is an
//! error, never a crashed agent.

mod active;
mod stats;

pub use active::{ActiveModel, ModelHandle};
pub use stats::{BUCKETS_US, ModelStats, StatsSnapshot};

use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::Arc;
use std::time::{Duration, Instant};

use outpost_protocol::manifest::SelfTestSample;
use outpost_protocol::spec::{InputError, OutputError, Prediction, ScoringSpec, SpecError};
use tract_onnx::prelude::*;
use tract_onnx::tract_hir::infer::Factoid;

/// Largest batch one call may run (bounds memory per request).
pub const MAX_BATCH: usize = 1024;

/// Why a model could not be loaded or run.
#[derive(Debug, thiserror::Error)]
pub enum InferenceError {
    /// The spec itself is inconsistent.
    #[error("invalid scoring spec: {0}")]
    Spec(#[from] SpecError),
    /// tract could not load or optimise the graph.
    #[error("model does not load: {0}")]
    Load(String),
    /// The graph does not match the spec.
    #[error("model does not match its scoring spec: {0}")]
    SpecMismatch(String),
    /// A sample was refused.
    #[error(transparent)]
    Input(#[from] InputError),
    /// The output could not be interpreted.
    #[error(transparent)]
    Output(#[from] OutputError),
    /// tract failed while running.
    #[error("inference failed: {0}")]
    Run(String),
    /// Empty or oversize batch.
    #[error("batch of {0} samples is outside 1..={MAX_BATCH}")]
    BatchSize(usize),
    /// A self-test sample gave the wrong answer.
    #[error("self-test sample {index} failed: {reason}")]
    SelfTest {
        /// Sample index.
        index: usize,
        /// What differed.
        reason: String,
    },
}

/// A loaded, optimised model with its scoring spec.
#[derive(Clone)]
pub struct Model {
    plan: Arc<TypedRunnableModel>,
    spec: ScoringSpec,
    sample_len: usize,
}

impl std::fmt::Debug for Model {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Model")
            .field("input", &self.spec.input.name)
            .field("sample_len", &self.sample_len)
            .finish_non_exhaustive()
    }
}

/// Result of a self-test run.
#[derive(Debug, Clone, PartialEq)]
pub struct SelfTestReport {
    /// Samples run.
    pub samples: usize,
    /// Largest absolute difference seen.
    pub max_abs_diff: f32,
    /// Time to run them all.
    pub elapsed: Duration,
}

fn guarded<T>(what: &str, f: impl FnOnce() -> TractResult<T>) -> Result<T, String> {
    match catch_unwind(AssertUnwindSafe(f)) {
        Ok(Ok(v)) => Ok(v),
        Ok(Err(e)) => Err(format!("{e:#}")),
        Err(_) => Err(format!("tract panicked during {what}")),
    }
}

impl Model {
    /// Loads ONNX bytes and checks them against `spec`.
    pub fn load(onnx: &[u8], spec: &ScoringSpec) -> Result<Self, InferenceError> {
        spec.validate()?;
        let sample_len = spec
            .sample_len()
            .expect("validated spec has a sample length");
        let model = guarded("load", || tract_onnx::onnx().model_for_read(&mut &onnx[..]))
            .map_err(InferenceError::Load)?;
        check_graph(&model, spec)?;
        let plan = guarded("optimisation", || model.into_optimized()?.into_runnable())
            .map_err(InferenceError::Load)?;
        Ok(Self {
            plan,
            spec: spec.clone(),
            sample_len,
        })
    }

    /// The scoring spec.
    pub fn spec(&self) -> &ScoringSpec {
        &self.spec
    }

    /// Runs already-prepared (normalised) inputs, `batch` samples back to back; returns
    /// the raw outputs, `batch × labels` values.
    pub fn run_prepared(&self, input: Vec<f32>, batch: usize) -> Result<Vec<f32>, InferenceError> {
        if batch == 0 || batch > MAX_BATCH {
            return Err(InferenceError::BatchSize(batch));
        }
        if input.len() != batch * self.sample_len {
            return Err(InferenceError::Input(InputError::WrongLength {
                expected: batch * self.sample_len,
                got: input.len(),
                shape: self.spec.input.shape.clone(),
            }));
        }
        let mut shape = vec![batch];
        shape.extend_from_slice(&self.spec.input.shape);
        let labels = self.spec.output.labels.len();
        let out = guarded("inference", || {
            let t = tract_ndarray::ArrayD::from_shape_vec(shape, input)?;
            let mut outs = self.plan.run(tvec![Tensor::from(t).into()])?;
            let o = outs.remove(0);
            Ok(o.to_plain_array_view::<f32>()?
                .iter()
                .copied()
                .collect::<Vec<f32>>())
        })
        .map_err(InferenceError::Run)?;
        if out.len() != batch * labels {
            return Err(InferenceError::Output(OutputError::WrongLength {
                expected: batch * labels,
                got: out.len(),
            }));
        }
        Ok(out)
    }

    /// Scores one raw sample (spec normalisation, model, interpretation).
    pub fn predict(&self, raw: &[f32]) -> Result<Prediction, InferenceError> {
        let out = self.run_prepared(self.spec.prepare(raw)?, 1)?;
        Ok(self.spec.interpret(&out)?)
    }

    /// Scores a batch of raw samples in one model run.
    pub fn predict_batch(&self, raws: &[Vec<f32>]) -> Result<Vec<Prediction>, InferenceError> {
        if raws.is_empty() || raws.len() > MAX_BATCH {
            return Err(InferenceError::BatchSize(raws.len()));
        }
        let mut input = Vec::with_capacity(raws.len() * self.sample_len);
        for r in raws {
            input.extend(self.spec.prepare(r)?);
        }
        let out = self.run_prepared(input, raws.len())?;
        let labels = self.spec.output.labels.len();
        out.chunks(labels)
            .map(|o| self.spec.interpret(o).map_err(InferenceError::from))
            .collect()
    }

    /// Runs self-test samples; fails on the first output outside its tolerance.
    pub fn self_test(&self, samples: &[SelfTestSample]) -> Result<SelfTestReport, InferenceError> {
        let start = Instant::now();
        let mut max_abs_diff = 0f32;
        for (index, s) in samples.iter().enumerate() {
            let fail = |reason: String| InferenceError::SelfTest { index, reason };
            let input = self
                .spec
                .prepare(&s.input)
                .map_err(|e| fail(e.to_string()))?;
            let out = self
                .run_prepared(input, 1)
                .map_err(|e| fail(e.to_string()))?;
            if out.len() != s.expected.len() {
                return Err(fail(format!(
                    "{} outputs, {} expected",
                    out.len(),
                    s.expected.len()
                )));
            }
            for (i, (got, want)) in out.iter().zip(&s.expected).enumerate() {
                let d = (got - want).abs();
                // NaN fails this comparison too.
                if d.is_nan() || d > s.tolerance {
                    return Err(fail(format!(
                        "output {i} is {got}, expected {want} ± {}",
                        s.tolerance
                    )));
                }
                max_abs_diff = max_abs_diff.max(d);
            }
        }
        Ok(SelfTestReport {
            samples: samples.len(),
            max_abs_diff,
            elapsed: start.elapsed(),
        })
    }
}

fn check_graph(model: &InferenceModel, spec: &ScoringSpec) -> Result<(), InferenceError> {
    let mismatch = |m: String| InferenceError::SpecMismatch(m);
    let inputs = model.input_outlets().map_err(|e| mismatch(e.to_string()))?;
    if inputs.len() != 1 {
        return Err(mismatch(format!(
            "graph has {} inputs, exactly 1 is supported",
            inputs.len()
        )));
    }
    let in_name = &model.node(inputs[0].node).name;
    if in_name != &spec.input.name {
        return Err(mismatch(format!(
            "spec input is {:?}, the graph's input is {in_name:?}",
            spec.input.name
        )));
    }
    let outputs = model
        .output_outlets()
        .map_err(|e| mismatch(e.to_string()))?;
    let names: Vec<String> = outputs
        .iter()
        .map(|o| {
            model
                .outlet_label(*o)
                .map(str::to_owned)
                .unwrap_or_else(|| model.node(o.node).name.clone())
        })
        .collect();
    if names.first() != Some(&spec.output.name) {
        return Err(mismatch(format!(
            "spec output is {:?}, the graph's outputs are {names:?}",
            spec.output.name
        )));
    }
    // Compare declared per-sample dims where the graph states them concretely.
    let fact = model.input_fact(0).map_err(|e| mismatch(e.to_string()))?;
    if let Some(dt) = fact.datum_type.concretize()
        && dt != f32::datum_type()
    {
        return Err(mismatch(format!(
            "graph input is {dt:?}, the spec says f32"
        )));
    }
    if let Some(shape) = fact.shape.concretize() {
        let dims: Vec<Option<i64>> = shape.iter().map(|d| d.to_i64().ok()).collect();
        let ok = dims.len() == spec.input.shape.len() + 1
            && dims[1..]
                .iter()
                .zip(&spec.input.shape)
                .all(|(g, s)| g.is_none_or(|g| g == *s as i64));
        if !ok {
            return Err(mismatch(format!(
                "graph input shape is {shape:?}, the spec's per-sample shape is {:?}",
                spec.input.shape
            )));
        }
    }
    Ok(())
}
