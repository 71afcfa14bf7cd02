//! The model contract (format 2): what a model takes and gives, and what its outputs mean.
//!
//! It travels signed inside the bundle manifest, so the agent serves and interprets the
//! model exactly as it was validated. Two layers:
//!
//! - **Tensors**: every graph input and output by name, with its OIP datatype and shape
//!   (variable dimensions as `-1` or a symbol; the first dimension is the batch when it is
//!   variable). Per input, optional feature names for the values of one sample,
//!   normalisation (z-score or min-max, applied by the agent), and the validated input
//!   domain `max_abs` (see [`InputSpec::max_abs`]).
//! - **Task** (optional): how to read one output per sample — `classification` (scores →
//!   label, confidence, anomaly and low-confidence flags), `regression` (values, expected
//!   range), `anomaly_score` (score against a threshold) or `raw` (no interpretation).
//!
//! Pure data and pure functions; running the model is the inference crate's job.

use serde::{Deserialize, Serialize};

use crate::tensor::{DataType, Dim, MAX_ELEMENTS, MAX_RANK, TensorSpec};

mod interpret;
pub use interpret::{InputError, Interpretation, OutputError, Prediction, prepare};

/// Most inputs or outputs a contract may list.
pub const MAX_TENSORS: usize = 64;
/// Longest tensor or feature name.
pub const MAX_TENSOR_NAME: usize = 256;
/// Default validated input domain for float inputs: a finite input beyond ±1e9 that drives
/// a model's output non-finite is the caller's fault, not the model's.
pub const DEFAULT_MAX_ABS: f64 = 1e9;

/// Input normalisation applied per value of one sample, in order.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Normalization {
    /// Values pass through unchanged.
    #[default]
    None,
    /// `(x - mean[i]) / std[i]`.
    Zscore {
        /// Per-value means.
        mean: Vec<f32>,
        /// Per-value standard deviations (> 0).
        std: Vec<f32>,
    },
    /// `(x - min[i]) / (max[i] - min[i])`.
    MinMax {
        /// Per-value minimums.
        min: Vec<f32>,
        /// Per-value maximums (> min).
        max: Vec<f32>,
    },
}

/// One graph input.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct InputSpec {
    /// Tensor name in the graph.
    pub name: String,
    /// Element type.
    pub datatype: DataType,
    /// Full shape, batch dimension first.
    pub shape: Vec<Dim>,
    /// Names of the values of one sample, in order (optional; needs a fixed sample size).
    /// Named inputs feed `/v1/predict` with `{"features": {..}}`, the sensor pipeline and
    /// drift monitoring.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub features: Vec<String>,
    /// Normalisation applied by the agent before inference (float inputs with a fixed
    /// sample size).
    #[serde(default, skip_serializing_if = "is_none_norm")]
    pub normalization: Normalization,
    /// The validated input domain: when a finite input with a magnitude above this drives
    /// an output non-finite, the request is refused as the caller's error (HTTP 400 on the
    /// OIP routes, 422 on `/v1`) and does not count against the model. Default
    /// [`DEFAULT_MAX_ABS`].
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_abs: Option<f64>,
    /// Whether NaN and infinities are valid values (e.g. a graph with an imputer);
    /// otherwise a request carrying one is refused as the caller's error. When the output
    /// of such a request is not finite, the non-finite input is blamed, not the model.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub allow_nan: bool,
}

fn is_none_norm(n: &Normalization) -> bool {
    *n == Normalization::None
}

impl InputSpec {
    /// The tensor declaration.
    pub fn tensor(&self) -> TensorSpec {
        TensorSpec {
            name: self.name.clone(),
            datatype: self.datatype,
            shape: self.shape.clone(),
        }
    }

    /// The effective domain bound.
    pub fn domain(&self) -> f64 {
        self.max_abs.unwrap_or(DEFAULT_MAX_ABS)
    }
}

/// One graph output.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OutputSpec {
    /// Tensor name in the graph.
    pub name: String,
    /// Element type.
    pub datatype: DataType,
    /// Full shape, batch dimension first.
    pub shape: Vec<Dim>,
}

impl OutputSpec {
    /// The tensor declaration.
    pub fn tensor(&self) -> TensorSpec {
        TensorSpec {
            name: self.name.clone(),
            datatype: self.datatype,
            shape: self.shape.clone(),
        }
    }
}

/// How classification scores are given.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum ScoreKind {
    /// Class probabilities (already normalised).
    #[default]
    Probabilities,
    /// Logits (softmax applied by the agent).
    Logits,
    /// Uncalibrated scores (decision values of a support-vector or linear classifier):
    /// the predicted label is the label output's (else the highest score), its score is
    /// reported as the confidence, and `min_confidence` does not apply.
    Scores,
}

/// Classification: one score per label per sample.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ClassificationTask {
    /// The scores output.
    pub output: String,
    /// What the scores are.
    #[serde(default)]
    pub scores: ScoreKind,
    /// The output holding the model's own predicted label per sample (int64 or BYTES),
    /// when it has one: the prediction is that label, not the arg-max of the scores.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub label_output: Option<String>,
    /// One label per score.
    pub labels: Vec<String>,
    /// Labels that count as anomalies (drive capture and alerts).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub anomaly_labels: Vec<String>,
    /// A prediction below this confidence is flagged low-confidence.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub min_confidence: Option<f32>,
}

/// Regression: one or more values per sample.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RegressionTask {
    /// The values output.
    pub output: String,
    /// Unit of the values (display only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub unit: Option<String>,
    /// Expected range `[low, high]`; a value outside is flagged (and captured).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub range: Option<[f64; 2]>,
    /// Target names, one per value of a sample (optional).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub names: Vec<String>,
}

/// Which side of the threshold is anomalous.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Direction {
    /// Scores above the threshold are anomalies.
    Above,
    /// Scores below the threshold are anomalies (e.g. scikit-learn's `decision_function`).
    Below,
}

/// Anomaly score: one score per sample against a threshold.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AnomalyScoreTask {
    /// The score output.
    pub output: String,
    /// Threshold.
    pub threshold: f64,
    /// Which side is anomalous.
    pub direction: Direction,
}

/// What the outputs mean.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Task {
    /// Scores per label.
    Classification(ClassificationTask),
    /// Values.
    Regression(RegressionTask),
    /// A score and a threshold.
    AnomalyScore(AnomalyScoreTask),
    /// No interpretation: tensors in, tensors out.
    #[default]
    Raw,
}

impl Task {
    /// The output the task reads, if any.
    pub fn output(&self) -> Option<&str> {
        match self {
            Self::Classification(c) => Some(&c.output),
            Self::Regression(r) => Some(&r.output),
            Self::AnomalyScore(a) => Some(&a.output),
            Self::Raw => None,
        }
    }

    /// Short name.
    pub fn name(&self) -> &'static str {
        match self {
            Self::Classification(_) => "classification",
            Self::Regression(_) => "regression",
            Self::AnomalyScore(_) => "anomaly_score",
            Self::Raw => "raw",
        }
    }
}

/// Drift thresholds shipped with the model (the agent's config may override them).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct DriftSpec {
    /// Largest per-feature PSI before drift is raised.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub psi: Option<f64>,
    /// Largest per-feature KS statistic before drift is raised.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ks: Option<f64>,
    /// Largest total-variation distance of the output label mix from the training mix
    /// (off unless set: a device's label mix legitimately differs from the training mix).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub output_shift: Option<f64>,
}

/// The complete contract.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ModelContract {
    /// Graph inputs.
    pub inputs: Vec<InputSpec>,
    /// Graph outputs.
    pub outputs: Vec<OutputSpec>,
    /// How to read the outputs.
    #[serde(default)]
    pub task: Task,
    /// Drift thresholds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub drift: Option<DriftSpec>,
}

/// Why a contract is unusable.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum ContractError {
    /// No inputs or outputs, or too many.
    #[error("{what}: {count} listed (allowed 1..={MAX_TENSORS})")]
    Count {
        /// `inputs` or `outputs`.
        what: &'static str,
        /// How many.
        count: usize,
    },
    /// Empty, too long or repeated name.
    #[error("tensor name {0:?} is empty, longer than {MAX_TENSOR_NAME} bytes, or repeated")]
    BadName(String),
    /// Shape is empty, too deep, or too large.
    #[error(
        "{name}: shape {shape} is invalid (1..={MAX_RANK} dimensions, fixed dimensions >= 1, at most {MAX_ELEMENTS} values per sample)"
    )]
    BadShape {
        /// Tensor.
        name: String,
        /// The shape, displayed.
        shape: String,
    },
    /// Inputs disagree about batching.
    #[error("either every input has a variable first (batch) dimension or none has")]
    MixedBatch,
    /// Feature names need a fixed sample size of the same length.
    #[error("{name}: {features} feature names listed but one sample has {sample} values")]
    FeatureCount {
        /// Input.
        name: String,
        /// Names listed.
        features: usize,
        /// Values per sample (None: variable).
        sample: String,
    },
    /// Preprocessing on an input that cannot take it.
    #[error("{name}: normalisation is invalid: {message}")]
    BadNormalization {
        /// Input.
        name: String,
        /// What is wrong.
        message: String,
    },
    /// `max_abs` not positive and finite.
    #[error("{name}: max_abs {value} must be finite and > 0")]
    BadDomain {
        /// Input.
        name: String,
        /// Value.
        value: f64,
    },
    /// The task names an output that does not exist or cannot carry it.
    #[error("task {task}: {message}")]
    BadTask {
        /// Task kind.
        task: &'static str,
        /// What is wrong.
        message: String,
    },
}

fn check_shape(name: &str, shape: &[Dim]) -> Result<(), ContractError> {
    let bad = || ContractError::BadShape {
        name: name.into(),
        shape: format!(
            "[{}]",
            shape
                .iter()
                .map(ToString::to_string)
                .collect::<Vec<_>>()
                .join(", ")
        ),
    };
    if shape.is_empty() || shape.len() > MAX_RANK {
        return Err(bad());
    }
    let mut per_sample = 1u64;
    for d in shape.iter().skip(1) {
        if let Dim::Fixed(n) = d {
            if *n == 0 {
                return Err(bad());
            }
            per_sample = per_sample.checked_mul(*n).ok_or_else(bad)?;
        }
    }
    if shape.first().and_then(Dim::fixed) == Some(0) || per_sample > MAX_ELEMENTS as u64 {
        return Err(bad());
    }
    Ok(())
}

fn check_name(n: &str, seen: &mut Vec<String>) -> Result<(), ContractError> {
    if n.is_empty() || n.len() > MAX_TENSOR_NAME || seen.iter().any(|s| s == n) {
        return Err(ContractError::BadName(n.into()));
    }
    seen.push(n.into());
    Ok(())
}

impl ModelContract {
    /// Checks internal consistency. Call before using a contract from outside.
    pub fn validate(&self) -> Result<(), ContractError> {
        for (what, count) in [
            ("inputs", self.inputs.len()),
            ("outputs", self.outputs.len()),
        ] {
            if count == 0 || count > MAX_TENSORS {
                return Err(ContractError::Count { what, count });
            }
        }
        let mut seen = Vec::new();
        for i in &self.inputs {
            check_name(&i.name, &mut seen)?;
            check_shape(&i.name, &i.shape)?;
            self.check_input(i)?;
        }
        let batched = self.inputs.iter().filter(|i| i.tensor().batched()).count();
        if batched != 0 && batched != self.inputs.len() {
            return Err(ContractError::MixedBatch);
        }
        let mut seen = Vec::new();
        for o in &self.outputs {
            check_name(&o.name, &mut seen)?;
            check_shape(&o.name, &o.shape)?;
        }
        self.check_task()
    }

    fn check_input(&self, i: &InputSpec) -> Result<(), ContractError> {
        let n = i.tensor().sample_len();
        let shown = || {
            n.map(|n| n.to_string())
                .unwrap_or_else(|| "a variable number of".into())
        };
        if !i.features.is_empty() {
            if n != Some(i.features.len()) || !i.datatype.is_numeric() {
                return Err(ContractError::FeatureCount {
                    name: i.name.clone(),
                    features: i.features.len(),
                    sample: shown(),
                });
            }
            let mut seen = Vec::new();
            for f in &i.features {
                check_name(f, &mut seen)?;
            }
        }
        let norm_err = |message: String| ContractError::BadNormalization {
            name: i.name.clone(),
            message,
        };
        let len = |what: &str, v: &[f32], n: usize| {
            if v.len() == n {
                Ok(())
            } else {
                Err(norm_err(format!(
                    "{what} has {} values, one sample has {n}",
                    v.len()
                )))
            }
        };
        match &i.normalization {
            Normalization::None => {}
            norm => {
                let Some(n) = n.filter(|_| i.datatype.is_float()) else {
                    return Err(norm_err(
                        "needs a float input with a fixed sample size".into(),
                    ));
                };
                match norm {
                    Normalization::Zscore { mean, std } => {
                        len("mean", mean, n)?;
                        len("std", std, n)?;
                        if let Some(k) = std.iter().position(|s| !(s.is_finite() && *s > 0.0)) {
                            return Err(norm_err(format!(
                                "std[{k}] = {} must be finite and > 0",
                                std[k]
                            )));
                        }
                        if mean.iter().any(|m| !m.is_finite()) {
                            return Err(norm_err("mean has a non-finite value".into()));
                        }
                    }
                    Normalization::MinMax { min, max } => {
                        len("min", min, n)?;
                        len("max", max, n)?;
                        if let Some(k) =
                            (0..n).find(|&k| !(max[k] - min[k]).is_finite() || max[k] <= min[k])
                        {
                            return Err(norm_err(format!("max[{k}] must be > min[{k}]")));
                        }
                    }
                    Normalization::None => {}
                }
            }
        }
        if let Some(v) = i.max_abs
            && !(v.is_finite() && v > 0.0)
        {
            return Err(ContractError::BadDomain {
                name: i.name.clone(),
                value: v,
            });
        }
        Ok(())
    }

    fn check_task(&self) -> Result<(), ContractError> {
        let task = self.task.name();
        let bad = |message: String| ContractError::BadTask { task, message };
        let Some(out) = self.task.output() else {
            return Ok(());
        };
        let o = self
            .output(out)
            .ok_or_else(|| bad(format!("output {out:?} is not one of the model's outputs")))?;
        if !o.datatype.is_numeric() {
            return Err(bad(format!(
                "output {out:?} is {}, not numeric",
                o.datatype
            )));
        }
        let n = o.tensor().sample_len();
        match &self.task {
            Task::Classification(c) => {
                if c.labels.is_empty() {
                    return Err(bad("no labels".into()));
                }
                if let Some(n) = n
                    && n != c.labels.len()
                {
                    return Err(bad(format!(
                        "output {out:?} has {n} values per sample but {} labels are listed",
                        c.labels.len()
                    )));
                }
                if let Some(lo) = &c.label_output {
                    let o = self.output(lo).ok_or_else(|| {
                        bad(format!(
                            "label output {lo:?} is not one of the model's outputs"
                        ))
                    })?;
                    if !matches!(
                        o.datatype,
                        DataType::Int64 | DataType::Int32 | DataType::Bytes
                    ) {
                        return Err(bad(format!(
                            "label output {lo:?} is {}, not INT64, INT32 or BYTES",
                            o.datatype
                        )));
                    }
                }
                if let Some(l) = c.anomaly_labels.iter().find(|l| !c.labels.contains(l)) {
                    return Err(bad(format!("anomaly label {l:?} is not one of the labels")));
                }
                if let Some(m) = c.min_confidence
                    && !(0.0..=1.0).contains(&m)
                {
                    return Err(bad(format!("min_confidence {m} must be within [0, 1]")));
                }
            }
            Task::Regression(r) => {
                if let Some([lo, hi]) = r.range
                    && !(lo.is_finite() && hi.is_finite() && lo < hi)
                {
                    return Err(bad(format!(
                        "range [{lo}, {hi}] must be finite with low < high"
                    )));
                }
                if let (Some(n), false) = (n, r.names.is_empty())
                    && n != r.names.len()
                {
                    return Err(bad(format!(
                        "{} names for {n} values per sample",
                        r.names.len()
                    )));
                }
            }
            Task::AnomalyScore(a) => {
                if !a.threshold.is_finite() {
                    return Err(bad("threshold must be finite".into()));
                }
                if n.is_some_and(|n| n != 1) {
                    return Err(bad(format!(
                        "output {out:?} must have one score per sample"
                    )));
                }
            }
            Task::Raw => {}
        }
        Ok(())
    }

    /// An input by name.
    pub fn input(&self, name: &str) -> Option<&InputSpec> {
        self.inputs.iter().find(|i| i.name == name)
    }

    /// An output by name.
    pub fn output(&self, name: &str) -> Option<&OutputSpec> {
        self.outputs.iter().find(|o| o.name == name)
    }

    /// Whether the model takes a batch (variable first dimension on its inputs).
    pub fn batched(&self) -> bool {
        self.inputs.iter().all(|i| i.tensor().batched())
    }

    /// The input with named features (the first one), which `/v1/predict`, the sensor
    /// pipeline and drift monitoring use.
    pub fn feature_input(&self) -> Option<&InputSpec> {
        self.inputs.iter().find(|i| !i.features.is_empty())
    }

    /// The one input of a single-input model with a fixed sample size (arrays sent to
    /// `/v1/predict` go there).
    pub fn sole_input(&self) -> Option<&InputSpec> {
        match self.inputs.as_slice() {
            [i] if i.tensor().sample_len().is_some() => Some(i),
            _ => None,
        }
    }

    /// The classification task's `min_confidence`, if any.
    pub fn min_confidence(&self) -> Option<f32> {
        match &self.task {
            Task::Classification(c) => c.min_confidence,
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests;
