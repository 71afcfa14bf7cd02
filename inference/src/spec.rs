//! The user's spec: what a data scientist adds to what the graph already says.
//!
//! A model's contract is derived from its graph ([`crate::graph`]); a spec file (TOML)
//! only adds what the graph cannot know — feature names, normalisation, the validated
//! input domain, what the outputs mean (labels, thresholds, units, ranges) — and may give
//! self-test samples. Every key is optional; a classifier exported with its labels needs
//! no spec at all.
//!
//! ```toml
//! [[input]]                     # or [input] for a single-input model
//! name = "features"             # optional when the model has one input
//! features = ["rms_x", "rms_y"] # names of one sample's values
//! normalization = { kind = "zscore", mean = [..], std = [..] }
//! max_abs = 1e6                 # validated input domain (default 1e9)
//! allow_nan = false
//!
//! [task]
//! kind = "classification"       # classification | regression | anomaly_score | raw
//! output = "probabilities"      # optional: a classifier's scores output is found
//! labels = ["normal", "fault"]  # scores = "probabilities" | "logits"
//! anomaly_labels = ["fault"]
//! min_confidence = 0.6
//! # regression: unit, range = [lo, hi], names; anomaly_score: threshold, direction
//!
//! [[self_test]]                 # flat values; shapes come from the contract
//! input = [..]                  # or inputs = { name = [..] }
//! expected = [..]               # the task output, or outputs = { name = [..] }
//! tolerance = 1e-4
//! ```
//!
//! The spec format of Outpost 0.1 (`[input]` with `dtype`/per-sample `shape`, `[output]`
//! with `kind`/`labels`/`thresholds`) is read too: its `[output]` is a classification
//! task.

use std::collections::BTreeMap;

use outpost_protocol::contract::{
    AnomalyScoreTask, ClassificationTask, Direction, DriftSpec, ModelContract, Normalization,
    RegressionTask, ScoreKind, Task,
};
use outpost_protocol::manifest::SelfTestSample;
use outpost_protocol::tensor::{Dim, Tensor};
use serde::Deserialize;

use crate::model::{Model, cast};

/// Why a spec cannot be applied.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum SpecError {
    /// Not valid TOML / not the schema.
    #[error("{0}")]
    Parse(String),
    /// The spec and the graph disagree.
    #[error("{0}")]
    Conflict(String),
    /// A self-test sample does not fit the model.
    #[error("self-test sample {index}: {reason}")]
    SelfTest {
        /// Sample index.
        index: usize,
        /// What is wrong.
        reason: String,
    },
}

/// `[input]` or `[[input]]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(untagged)]
pub enum Inputs {
    /// One table.
    One(InputOverlay),
    /// An array of tables.
    Many(Vec<InputOverlay>),
}

/// What a spec says about one input.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct InputOverlay {
    /// Input name (optional for a single-input model).
    pub name: Option<String>,
    /// Names of one sample's values.
    #[serde(default)]
    pub features: Vec<String>,
    /// Normalisation.
    #[serde(default)]
    pub normalization: Option<Normalization>,
    /// Validated input domain.
    pub max_abs: Option<f64>,
    /// Whether NaN is a valid value.
    pub allow_nan: Option<bool>,
    /// Outpost 0.1: element type (`f32`), checked against the graph.
    pub dtype: Option<String>,
    /// Outpost 0.1: the per-sample shape, checked against the graph.
    pub shape: Option<Vec<u64>>,
}

/// Outpost 0.1's `[output]` (a classification).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LegacyOutput {
    /// Output tensor.
    pub name: String,
    /// `probabilities` or `logits`.
    pub kind: ScoreKind,
    /// Labels.
    pub labels: Vec<String>,
    /// Thresholds.
    #[serde(default)]
    pub thresholds: LegacyThresholds,
}

/// Outpost 0.1's `[output.thresholds]`.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LegacyThresholds {
    /// Anomaly labels.
    #[serde(default)]
    pub anomaly_labels: Vec<String>,
    /// Minimum confidence.
    pub min_confidence: Option<f32>,
}

/// `[task]`: every field optional but `kind`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TaskOverlay {
    /// `classification`, `regression`, `anomaly_score` or `raw`.
    pub kind: String,
    /// The output the task reads.
    pub output: Option<String>,
    /// Classification: score kind.
    pub scores: Option<ScoreKind>,
    /// Classification: the output with the model's own predicted label.
    pub label_output: Option<String>,
    /// Classification: labels.
    #[serde(default)]
    pub labels: Vec<String>,
    /// Classification: anomaly labels.
    #[serde(default)]
    pub anomaly_labels: Vec<String>,
    /// Classification: minimum confidence.
    pub min_confidence: Option<f32>,
    /// Regression: unit.
    pub unit: Option<String>,
    /// Regression: expected range.
    pub range: Option<[f64; 2]>,
    /// Regression: target names.
    #[serde(default)]
    pub names: Vec<String>,
    /// Anomaly score: threshold.
    pub threshold: Option<f64>,
    /// Anomaly score: which side is anomalous.
    pub direction: Option<Direction>,
}

/// A self-test sample as written in a spec: flat values, shapes from the contract.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SelfTestEntry {
    /// The only input's values.
    pub input: Option<Vec<f64>>,
    /// Values per input.
    pub inputs: Option<BTreeMap<String, Vec<f64>>>,
    /// The task output's (or only output's) expected values.
    pub expected: Option<Vec<f64>>,
    /// Expected values per output.
    pub outputs: Option<BTreeMap<String, Vec<f64>>>,
    /// Tolerance (relative above magnitude 1).
    pub tolerance: f64,
}

/// Everything a spec adds to the graph.
#[derive(Debug, Clone, Default)]
pub struct SpecOverlay {
    /// Per-input additions.
    pub inputs: Vec<InputOverlay>,
    /// The task.
    pub task: Option<TaskOverlay>,
    /// Drift thresholds.
    pub drift: Option<DriftSpec>,
    /// Self-test samples.
    pub self_test: Vec<SelfTestEntry>,
}

impl SpecOverlay {
    /// Assembles an overlay from a spec's sections (`[input]`, Outpost 0.1 `[output]`,
    /// `[task]`, `[drift]`, `[[self_test]]`).
    pub fn new(
        input: Option<Inputs>,
        output: Option<LegacyOutput>,
        task: Option<TaskOverlay>,
        drift: Option<DriftSpec>,
        self_test: Vec<SelfTestEntry>,
    ) -> Result<Self, SpecError> {
        let inputs = match input {
            None => Vec::new(),
            Some(Inputs::One(i)) => vec![i],
            Some(Inputs::Many(v)) => v,
        };
        let task = match (task, output) {
            (Some(_), Some(_)) => {
                return Err(SpecError::Parse(
                    "give [task] or the older [output], not both".into(),
                ));
            }
            (t, None) => t,
            (None, Some(o)) => Some(TaskOverlay {
                kind: "classification".into(),
                output: Some(o.name),
                scores: Some(o.kind),
                label_output: None,
                labels: o.labels,
                anomaly_labels: o.thresholds.anomaly_labels,
                min_confidence: o.thresholds.min_confidence,
                unit: None,
                range: None,
                names: Vec::new(),
                threshold: None,
                direction: None,
            }),
        };
        Ok(Self {
            inputs,
            task,
            drift,
            self_test,
        })
    }

    /// The contract: `derived` (from the graph) with this spec's additions, validated.
    pub fn apply(&self, mut c: ModelContract) -> Result<ModelContract, SpecError> {
        let conflict = |m: String| SpecError::Conflict(m);
        for o in &self.inputs {
            let name = match (&o.name, c.inputs.len()) {
                (Some(n), _) => n.clone(),
                (None, 1) => c.inputs[0].name.clone(),
                (None, _) => {
                    return Err(conflict(format!(
                        "the model has {} inputs; name the input ({})",
                        c.inputs.len(),
                        c.inputs
                            .iter()
                            .map(|i| i.name.as_str())
                            .collect::<Vec<_>>()
                            .join(", ")
                    )));
                }
            };
            let i = c
                .inputs
                .iter_mut()
                .find(|i| i.name == name)
                .ok_or_else(|| {
                    conflict(format!("spec input {name:?} is not an input of the model"))
                })?;
            if let Some(dt) = &o.dtype
                && !(dt == "f32" && i.datatype == outpost_protocol::tensor::DataType::Fp32)
            {
                return Err(conflict(format!(
                    "spec says input {name:?} is {dt}, the graph says {}",
                    i.datatype
                )));
            }
            if let Some(shape) = &o.shape {
                let graph: Vec<Option<u64>> = i.shape.iter().skip(1).map(Dim::fixed).collect();
                let ok = graph.len() == shape.len()
                    && graph
                        .iter()
                        .zip(shape)
                        .all(|(g, s)| g.is_none_or(|g| g == *s));
                if !ok {
                    return Err(conflict(format!(
                        "spec says one sample of {name:?} is {shape:?}, the graph says {}",
                        i.tensor()
                            .shape
                            .iter()
                            .skip(1)
                            .map(ToString::to_string)
                            .collect::<Vec<_>>()
                            .join(" x ")
                    )));
                }
                // The spec pins dimensions the graph left open.
                for (d, s) in i.shape.iter_mut().skip(1).zip(shape) {
                    *d = Dim::Fixed(*s);
                }
            }
            if !o.features.is_empty() {
                i.features = o.features.clone();
            }
            if let Some(n) = &o.normalization {
                i.normalization = n.clone();
            }
            if o.max_abs.is_some() {
                i.max_abs = o.max_abs;
            }
            if let Some(a) = o.allow_nan {
                i.allow_nan = a;
            }
        }
        if let Some(t) = &self.task {
            c.task = task(&c, t)?;
        }
        if self.drift.is_some() {
            c.drift = self.drift.clone();
        }
        c.validate().map_err(|e| conflict(e.to_string()))?;
        Ok(c)
    }

    /// The spec's self-test samples as named tensors for `model` (input shapes from the
    /// contract, expected shapes from what the model produces).
    pub fn self_tests(&self, model: &Model) -> Result<Vec<SelfTestSample>, SpecError> {
        self.self_test
            .iter()
            .enumerate()
            .map(|(index, e)| {
                entry(model, e).map_err(|reason| SpecError::SelfTest { index, reason })
            })
            .collect()
    }
}

fn task(c: &ModelContract, t: &TaskOverlay) -> Result<Task, SpecError> {
    let conflict = |m: String| SpecError::Conflict(m);
    let output = || -> Result<String, SpecError> {
        if let Some(o) = &t.output {
            return Ok(o.clone());
        }
        if let Some(o) = c.task.output() {
            return Ok(o.to_owned());
        }
        match c.outputs.as_slice() {
            [o] => Ok(o.name.clone()),
            _ => Err(conflict(format!(
                "the model has several outputs; name the one the task reads ({})",
                c.outputs
                    .iter()
                    .map(|o| o.name.as_str())
                    .collect::<Vec<_>>()
                    .join(", ")
            ))),
        }
    };
    Ok(match t.kind.as_str() {
        "classification" => {
            let derived = match &c.task {
                Task::Classification(d) => Some(d),
                _ => None,
            };
            let labels = if t.labels.is_empty() {
                derived.map(|d| d.labels.clone()).unwrap_or_default()
            } else {
                t.labels.clone()
            };
            Task::Classification(ClassificationTask {
                output: output()?,
                label_output: t
                    .label_output
                    .clone()
                    .or_else(|| derived.and_then(|d| d.label_output.clone())),
                scores: t.scores.or(derived.map(|d| d.scores)).unwrap_or_default(),
                labels,
                anomaly_labels: t.anomaly_labels.clone(),
                min_confidence: t.min_confidence,
            })
        }
        "regression" => Task::Regression(RegressionTask {
            output: output()?,
            unit: t.unit.clone(),
            range: t.range,
            names: t.names.clone(),
        }),
        "anomaly_score" => Task::AnomalyScore(AnomalyScoreTask {
            output: output()?,
            threshold: t
                .threshold
                .ok_or_else(|| conflict("task anomaly_score needs a threshold".into()))?,
            direction: t.direction.ok_or_else(|| {
                conflict("task anomaly_score needs direction = \"above\" or \"below\"".into())
            })?,
        }),
        "raw" => Task::Raw,
        k => {
            return Err(SpecError::Parse(format!(
                "task kind {k:?} is not classification, regression, anomaly_score or raw"
            )));
        }
    })
}

fn entry(model: &Model, e: &SelfTestEntry) -> Result<SelfTestSample, String> {
    let c = model.contract();
    let given: BTreeMap<String, Vec<f64>> = match (&e.input, &e.inputs) {
        (Some(v), None) if c.inputs.len() == 1 => [(c.inputs[0].name.clone(), v.clone())].into(),
        (Some(_), None) => {
            return Err("the model has several inputs: use inputs = { name = [..] }".into());
        }
        (None, Some(m)) => m.clone(),
        _ => return Err("give input = [..] or inputs = { .. }".into()),
    };
    let mut inputs = Vec::new();
    for i in &c.inputs {
        let v = given
            .get(&i.name)
            .ok_or_else(|| format!("no values for input {:?}", i.name))?;
        let w = i.tensor().sample_len().ok_or_else(|| {
            format!(
                "input {:?} has a variable sample size; give self-tests as tensors",
                i.name
            )
        })?;
        if w == 0 || v.len() % w != 0 {
            return Err(format!(
                "input {:?}: {} values do not make whole samples of {w}",
                i.name,
                v.len()
            ));
        }
        let mut shape: Vec<usize> = i
            .shape
            .iter()
            .map(|d| d.fixed().unwrap_or(1) as usize)
            .collect();
        if c.batched() {
            shape[0] = v.len() / w;
        }
        let data = cast(v, i.datatype).map_err(|e| format!("input {:?}: {e}", i.name))?;
        inputs.push(Tensor::new(i.name.clone(), shape, data).map_err(|e| e.to_string())?);
    }
    if let Some(k) = given.keys().find(|k| c.input(k).is_none()) {
        return Err(format!("{k:?} is not an input of the model"));
    }
    let produced = model.infer(&inputs, None).map_err(|e| e.to_string())?;
    let expected: BTreeMap<String, Vec<f64>> = match (&e.expected, &e.outputs) {
        (Some(v), None) => {
            let name = c
                .task
                .output()
                .map(str::to_owned)
                .or_else(|| (c.outputs.len() == 1).then(|| c.outputs[0].name.clone()))
                .ok_or("the model has several outputs: use outputs = { name = [..] }")?;
            [(name, v.clone())].into()
        }
        (None, Some(m)) => m.clone(),
        _ => return Err("give expected = [..] or outputs = { .. }".into()),
    };
    let mut outputs = Vec::new();
    for (name, v) in expected {
        let p = produced
            .iter()
            .find(|t| t.name == name)
            .ok_or_else(|| format!("{name:?} is not an output of the model"))?;
        if p.data.len() != v.len() {
            return Err(format!(
                "output {name:?} has {} values (shape {:?}), the sample expects {}",
                p.data.len(),
                p.shape,
                v.len()
            ));
        }
        let data = cast(&v, p.datatype()).map_err(|e| format!("output {name:?}: {e}"))?;
        outputs.push(Tensor::new(name, p.shape.clone(), data).map_err(|e| e.to_string())?);
    }
    Ok(SelfTestSample {
        inputs,
        outputs,
        tolerance: e.tolerance,
    })
}

/// The overlay sections of a spec file written as TOML, and the remaining table (the
/// caller's own sections: `[model]`, `[lineage]`, `[tags]`, …).
pub fn from_toml(text: &str) -> Result<(SpecOverlay, toml::Table), SpecError> {
    let mut t: toml::Table = toml::from_str(text).map_err(|e| SpecError::Parse(e.to_string()))?;
    fn take<T: for<'de> Deserialize<'de>>(
        t: &mut toml::Table,
        key: &str,
    ) -> Result<Option<T>, SpecError> {
        t.remove(key)
            .map(|v| {
                v.try_into()
                    .map_err(|e: toml::de::Error| SpecError::Parse(format!("[{key}]: {e}")))
            })
            .transpose()
    }
    let overlay = SpecOverlay::new(
        take(&mut t, "input")?,
        take(&mut t, "output")?,
        take(&mut t, "task")?,
        take(&mut t, "drift")?,
        take(&mut t, "self_test")?.unwrap_or_default(),
    )?;
    Ok((overlay, t))
}
