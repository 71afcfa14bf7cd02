//! The contract at run time: preparing a sample for the model (feature order,
//! normalisation, checks) and reading the model's outputs (softmax, label, confidence,
//! anomaly and range flags) into an [`Interpretation`].

use serde::{Deserialize, Serialize};

use super::{Direction, InputSpec, ModelContract, Normalization, ScoreKind, Task};

/// Why a sample was refused before the model ran.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum InputError {
    /// Wrong number of values.
    #[error("{input}: expected {expected} values per sample, got {got}")]
    WrongLength {
        /// Input.
        input: String,
        /// Expected count.
        expected: usize,
        /// Received count.
        got: usize,
    },
    /// A value is NaN or infinite.
    #[error("{input}: value {index} ({name}) is not finite: {value}")]
    NotFinite {
        /// Input.
        input: String,
        /// Position in the sample.
        index: usize,
        /// Feature name, or the index when unnamed.
        name: String,
        /// The value.
        value: f64,
    },
    /// A named feature is missing.
    #[error("feature {0:?} is missing")]
    MissingFeature(String),
    /// A named feature is not part of the contract.
    #[error("unknown feature {0:?}: not an input of this model")]
    UnknownFeature(String),
    /// Named features were sent to a model without feature names.
    #[error("this model has no named feature input; send tensors to /v2/models/{{name}}/infer")]
    NotNamed,
}

/// Why model output could not be interpreted.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum OutputError {
    /// Wrong number of output values.
    #[error("output {output}: {got} values per sample, the task needs {expected}")]
    WrongLength {
        /// Output.
        output: String,
        /// Expected count.
        expected: usize,
        /// Produced count.
        got: usize,
    },
    /// The model produced NaN or infinity.
    #[error("output {output}: non-finite value at {index}")]
    NotFinite {
        /// Output.
        output: String,
        /// Flat index.
        index: usize,
    },
}

/// A classification of one sample.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Prediction {
    /// Winning label.
    pub label: String,
    /// Its index.
    pub index: usize,
    /// Its probability.
    pub confidence: f32,
    /// Probabilities for all labels, in label order.
    pub probabilities: Vec<f32>,
    /// Whether the label is an anomaly label.
    pub anomaly: bool,
    /// Whether confidence is under `min_confidence`.
    pub low_confidence: bool,
}

/// The task's reading of one sample.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Interpretation {
    /// A classification.
    Classification(Prediction),
    /// Regression values.
    Regression {
        /// Values of the sample.
        values: Vec<f64>,
        /// Whether a value is outside the expected range.
        out_of_range: bool,
    },
    /// An anomaly score.
    AnomalyScore {
        /// The score.
        score: f64,
        /// Whether it is on the anomalous side of the threshold.
        anomaly: bool,
    },
    /// No task.
    Raw,
}

impl Interpretation {
    /// Whether the sample is flagged (anomaly label, out of range, anomalous score).
    pub fn anomaly(&self) -> bool {
        match self {
            Self::Classification(p) => p.anomaly,
            Self::Regression { out_of_range, .. } => *out_of_range,
            Self::AnomalyScore { anomaly, .. } => *anomaly,
            Self::Raw => false,
        }
    }

    /// A short label for mixes and captures: the class, or `anomaly` / `normal`,
    /// `out_of_range` / `in_range`; `None` for raw.
    pub fn label(&self) -> Option<String> {
        match self {
            Self::Classification(p) => Some(p.label.clone()),
            Self::Regression { out_of_range, .. } => Some(
                if *out_of_range {
                    "out_of_range"
                } else {
                    "in_range"
                }
                .into(),
            ),
            Self::AnomalyScore { anomaly, .. } => {
                Some(if *anomaly { "anomaly" } else { "normal" }.into())
            }
            Self::Raw => None,
        }
    }

    /// The value output drift watches: the confidence, the first regression value or the
    /// score.
    pub fn value(&self) -> Option<f64> {
        match self {
            Self::Classification(p) => Some(f64::from(p.confidence)),
            Self::Regression { values, .. } => values.first().copied(),
            Self::AnomalyScore { score, .. } => Some(*score),
            Self::Raw => None,
        }
    }

    /// The classification, if this is one.
    pub fn prediction(&self) -> Option<&Prediction> {
        match self {
            Self::Classification(p) => Some(p),
            _ => None,
        }
    }
}

impl ModelContract {
    /// Orders named features into a raw sample for the feature input.
    pub fn order_named<'a>(
        &self,
        named: impl IntoIterator<Item = (&'a str, f64)>,
    ) -> Result<Vec<f64>, InputError> {
        let names = &self.feature_input().ok_or(InputError::NotNamed)?.features;
        let mut out = vec![None; names.len()];
        for (k, v) in named {
            let i = names
                .iter()
                .position(|n| n == k)
                .ok_or_else(|| InputError::UnknownFeature(k.to_owned()))?;
            out[i] = Some(v);
        }
        out.iter()
            .zip(names)
            .map(|(v, n)| v.ok_or_else(|| InputError::MissingFeature(n.clone())))
            .collect()
    }

    /// Interprets the task output's values for one sample.
    pub fn interpret(&self, values: &[f64]) -> Result<Interpretation, OutputError> {
        self.interpret_with_label(values, None)
    }

    /// Interprets one sample, with the model's own predicted label (the classification
    /// task's `label_output` value) when it has one.
    pub fn interpret_with_label(
        &self,
        values: &[f64],
        predicted: Option<&str>,
    ) -> Result<Interpretation, OutputError> {
        let Some(out) = self.task.output() else {
            return Ok(Interpretation::Raw);
        };
        if let Some(index) = values.iter().position(|v| !v.is_finite()) {
            return Err(OutputError::NotFinite {
                output: out.into(),
                index,
            });
        }
        let want = |expected: usize| {
            if values.len() == expected {
                Ok(())
            } else {
                Err(OutputError::WrongLength {
                    output: out.into(),
                    expected,
                    got: values.len(),
                })
            }
        };
        Ok(match &self.task {
            Task::Classification(c) => {
                want(c.labels.len())?;
                let scores: Vec<f32> = values.iter().map(|v| *v as f32).collect();
                let probabilities = match c.scores {
                    ScoreKind::Probabilities | ScoreKind::Scores => scores,
                    ScoreKind::Logits => softmax(&scores),
                };
                let argmax = probabilities.iter().copied().enumerate().fold(
                    (0, f32::NEG_INFINITY),
                    |b, (i, p)| if p > b.1 { (i, p) } else { b },
                );
                let index = predicted
                    .and_then(|l| c.labels.iter().position(|x| x == l))
                    .unwrap_or(argmax.0);
                let confidence = probabilities[index];
                let label = c.labels[index].clone();
                let calibrated = c.scores != ScoreKind::Scores;
                Interpretation::Classification(Prediction {
                    anomaly: c.anomaly_labels.contains(&label),
                    low_confidence: calibrated && c.min_confidence.is_some_and(|m| confidence < m),
                    label,
                    index,
                    confidence,
                    probabilities,
                })
            }
            Task::Regression(r) => {
                if !r.names.is_empty() {
                    want(r.names.len())?;
                }
                Interpretation::Regression {
                    out_of_range: r
                        .range
                        .is_some_and(|[lo, hi]| values.iter().any(|v| *v < lo || *v > hi)),
                    values: values.to_vec(),
                }
            }
            Task::AnomalyScore(a) => {
                want(1)?;
                let score = values[0];
                Interpretation::AnomalyScore {
                    score,
                    anomaly: match a.direction {
                        Direction::Above => score > a.threshold,
                        Direction::Below => score < a.threshold,
                    },
                }
            }
            Task::Raw => Interpretation::Raw,
        })
    }
}

/// Normalises one sample of `input` (values in order); checks the count and finiteness.
pub fn prepare(input: &InputSpec, raw: &[f64]) -> Result<Vec<f64>, InputError> {
    if let Some(n) = input.tensor().sample_len()
        && raw.len() != n
    {
        return Err(InputError::WrongLength {
            input: input.name.clone(),
            expected: n,
            got: raw.len(),
        });
    }
    if let Some(i) = raw.iter().position(|v| !v.is_finite()) {
        return Err(InputError::NotFinite {
            input: input.name.clone(),
            index: i,
            name: input
                .features
                .get(i)
                .cloned()
                .unwrap_or_else(|| i.to_string()),
            value: raw[i],
        });
    }
    Ok(match &input.normalization {
        Normalization::None => raw.to_vec(),
        Normalization::Zscore { mean, std } => raw
            .iter()
            .zip(mean)
            .zip(std)
            .map(|((x, m), s)| (x - f64::from(*m)) / f64::from(*s))
            .collect(),
        Normalization::MinMax { min, max } => raw
            .iter()
            .zip(min)
            .zip(max)
            .map(|((x, lo), hi)| (x - f64::from(*lo)) / (f64::from(*hi) - f64::from(*lo)))
            .collect(),
    })
}

fn softmax(x: &[f32]) -> Vec<f32> {
    let m = x.iter().copied().fold(f32::NEG_INFINITY, f32::max);
    let e: Vec<f32> = x.iter().map(|v| (v - m).exp()).collect();
    let s: f32 = e.iter().sum();
    e.into_iter().map(|v| v / s).collect()
}
