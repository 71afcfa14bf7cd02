//! The scoring spec: how raw inputs become model inputs and model outputs become answers.
//!
//! It travels signed inside the bundle manifest, so the agent applies exactly the
//! pre-/post-processing the model was validated with. Pure functions only; running the
//! model itself is the agent's job.

use serde::{Deserialize, Serialize};

/// Largest number of values in one sample (guards allocation on untrusted specs).
pub const MAX_SAMPLE_LEN: usize = 1 << 22;

/// Tensor element type of the model input. Only `f32` is supported today; the field
/// exists so a spec asking for something else is refused clearly rather than misread.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum DType {
    /// 32-bit float.
    F32,
}

/// Input normalisation applied per value, in feature order.
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

/// The model input.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct InputSpec {
    /// Input tensor name in the graph.
    pub name: String,
    /// Element type.
    pub dtype: DType,
    /// Shape of one sample, without the batch dimension (`[16]`, `[3, 1024]`).
    pub shape: Vec<usize>,
    /// Feature names in the order the model expects them (optional; when present its
    /// length equals the sample length and callers may send named features).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub features: Vec<String>,
    /// Normalisation applied before inference.
    #[serde(default)]
    pub normalization: Normalization,
}

/// What the output values mean.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum OutputKind {
    /// Class probabilities (already softmaxed).
    Probabilities,
    /// Class logits (softmax applied by the agent).
    Logits,
}

/// Decision thresholds.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct Thresholds {
    /// Labels that count as anomalies (drive capture and alerts).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub anomaly_labels: Vec<String>,
    /// A prediction below this confidence is flagged low-confidence.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub min_confidence: Option<f32>,
}

/// The model output.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OutputSpec {
    /// Output tensor name in the graph.
    pub name: String,
    /// How to read the values.
    pub kind: OutputKind,
    /// One label per output value.
    pub labels: Vec<String>,
    /// Decision thresholds.
    #[serde(default)]
    pub thresholds: Thresholds,
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

/// The complete scoring spec.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ScoringSpec {
    /// Model input.
    pub input: InputSpec,
    /// Model output.
    pub output: OutputSpec,
    /// Drift thresholds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub drift: Option<DriftSpec>,
}

/// Why a spec is unusable.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum SpecError {
    /// Shape is empty, has a zero dimension, or is too large.
    #[error("input shape {0:?} is invalid (empty, zero-sized or over {MAX_SAMPLE_LEN} values)")]
    BadShape(Vec<usize>),
    /// Feature list length differs from the sample length.
    #[error("{features} feature names listed but one sample has {sample_len} values")]
    FeatureCount {
        /// Names listed.
        features: usize,
        /// Values per sample.
        sample_len: usize,
    },
    /// Normalisation vectors have the wrong length or invalid values.
    #[error("normalisation is invalid: {0}")]
    BadNormalization(String),
    /// No output labels.
    #[error("output has no labels")]
    NoLabels,
    /// A threshold names a label that does not exist.
    #[error("anomaly label {0:?} is not one of the output labels")]
    UnknownLabel(String),
    /// `min_confidence` out of range.
    #[error("min_confidence {0} must be within [0, 1]")]
    BadConfidence(f32),
}

/// Why an input sample was refused.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum InputError {
    /// Wrong number of values.
    #[error("expected {expected} values (shape {shape:?}), got {got}")]
    WrongLength {
        /// Expected count.
        expected: usize,
        /// Received count.
        got: usize,
        /// Sample shape.
        shape: Vec<usize>,
    },
    /// A value is NaN or infinite.
    #[error("value {index} ({name}) is not finite: {value}")]
    NotFinite {
        /// Position in feature order.
        index: usize,
        /// Feature name, or the index when unnamed.
        name: String,
        /// The value.
        value: f32,
    },
    /// A named feature is missing.
    #[error("feature {0:?} is missing")]
    MissingFeature(String),
    /// A named feature is not part of the spec.
    #[error("feature {0:?} is not an input of this model")]
    UnknownFeature(String),
    /// Named features were sent to a model without feature names.
    #[error("this model takes an array of {0} values, not named features")]
    NotNamed(usize),
}

/// Why model output could not be interpreted.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum OutputError {
    /// Wrong number of output values.
    #[error("model produced {got} output values, the spec has {expected} labels")]
    WrongLength {
        /// Expected count.
        expected: usize,
        /// Produced count.
        got: usize,
    },
    /// The model produced NaN or infinity.
    #[error("model produced a non-finite output at {0}")]
    NotFinite(usize),
}

/// An interpreted model output for one sample.
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

impl ScoringSpec {
    /// Checks internal consistency. Call before using a spec from outside.
    pub fn validate(&self) -> Result<(), SpecError> {
        let n = self
            .sample_len()
            .ok_or_else(|| SpecError::BadShape(self.input.shape.clone()))?;
        if !self.input.features.is_empty() && self.input.features.len() != n {
            return Err(SpecError::FeatureCount {
                features: self.input.features.len(),
                sample_len: n,
            });
        }
        match &self.input.normalization {
            Normalization::None => {}
            Normalization::Zscore { mean, std } => {
                check_len("mean", mean, n)?;
                check_len("std", std, n)?;
                if let Some(i) = std.iter().position(|s| !(s.is_finite() && *s > 0.0)) {
                    return Err(SpecError::BadNormalization(format!(
                        "std[{i}] = {} must be finite and > 0",
                        std[i]
                    )));
                }
                if mean.iter().any(|m| !m.is_finite()) {
                    return Err(SpecError::BadNormalization(
                        "mean has a non-finite value".into(),
                    ));
                }
            }
            Normalization::MinMax { min, max } => {
                check_len("min", min, n)?;
                check_len("max", max, n)?;
                if let Some(i) =
                    (0..n).find(|&i| !(max[i] - min[i]).is_finite() || max[i] <= min[i])
                {
                    return Err(SpecError::BadNormalization(format!(
                        "max[{i}] must be > min[{i}]"
                    )));
                }
            }
        }
        if self.output.labels.is_empty() {
            return Err(SpecError::NoLabels);
        }
        for l in &self.output.thresholds.anomaly_labels {
            if !self.output.labels.contains(l) {
                return Err(SpecError::UnknownLabel(l.clone()));
            }
        }
        if let Some(c) = self.output.thresholds.min_confidence
            && !(0.0..=1.0).contains(&c)
        {
            return Err(SpecError::BadConfidence(c));
        }
        Ok(())
    }

    /// Values in one sample (product of the shape), if the shape is sane.
    pub fn sample_len(&self) -> Option<usize> {
        let s = &self.input.shape;
        if s.is_empty() || s.contains(&0) {
            return None;
        }
        s.iter()
            .try_fold(1usize, |a, &d| a.checked_mul(d))
            .filter(|&n| n <= MAX_SAMPLE_LEN)
    }

    /// Checks a raw sample and normalises it into model input.
    pub fn prepare(&self, raw: &[f32]) -> Result<Vec<f32>, InputError> {
        let n = self.sample_len().unwrap_or(0);
        if raw.len() != n {
            return Err(InputError::WrongLength {
                expected: n,
                got: raw.len(),
                shape: self.input.shape.clone(),
            });
        }
        if let Some(i) = raw.iter().position(|v| !v.is_finite()) {
            let name = self
                .input
                .features
                .get(i)
                .cloned()
                .unwrap_or_else(|| i.to_string());
            return Err(InputError::NotFinite {
                index: i,
                name,
                value: raw[i],
            });
        }
        Ok(match &self.input.normalization {
            Normalization::None => raw.to_vec(),
            Normalization::Zscore { mean, std } => raw
                .iter()
                .zip(mean)
                .zip(std)
                .map(|((x, m), s)| (x - m) / s)
                .collect(),
            Normalization::MinMax { min, max } => raw
                .iter()
                .zip(min)
                .zip(max)
                .map(|((x, lo), hi)| (x - lo) / (hi - lo))
                .collect(),
        })
    }

    /// Orders named features into a raw sample (for callers that send `{"rms_x": …}`).
    pub fn order_named<'a>(
        &self,
        named: impl IntoIterator<Item = (&'a str, f32)>,
    ) -> Result<Vec<f32>, InputError> {
        let names = &self.input.features;
        if names.is_empty() {
            return Err(InputError::NotNamed(self.sample_len().unwrap_or(0)));
        }
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

    /// Interprets one sample's output values.
    pub fn interpret(&self, out: &[f32]) -> Result<Prediction, OutputError> {
        let labels = &self.output.labels;
        if out.len() != labels.len() {
            return Err(OutputError::WrongLength {
                expected: labels.len(),
                got: out.len(),
            });
        }
        if let Some(i) = out.iter().position(|v| !v.is_finite()) {
            return Err(OutputError::NotFinite(i));
        }
        let probabilities = match self.output.kind {
            OutputKind::Probabilities => out.to_vec(),
            OutputKind::Logits => softmax(out),
        };
        let (index, confidence) =
            probabilities
                .iter()
                .copied()
                .enumerate()
                .fold(
                    (0, f32::NEG_INFINITY),
                    |b, (i, p)| if p > b.1 { (i, p) } else { b },
                );
        let label = labels[index].clone();
        let t = &self.output.thresholds;
        Ok(Prediction {
            anomaly: t.anomaly_labels.contains(&label),
            low_confidence: t.min_confidence.is_some_and(|c| confidence < c),
            label,
            index,
            confidence,
            probabilities,
        })
    }
}

fn check_len(what: &str, v: &[f32], n: usize) -> Result<(), SpecError> {
    if v.len() == n {
        Ok(())
    } else {
        Err(SpecError::BadNormalization(format!(
            "{what} has {} values, the sample has {n}",
            v.len()
        )))
    }
}

fn softmax(x: &[f32]) -> Vec<f32> {
    let m = x.iter().copied().fold(f32::NEG_INFINITY, f32::max);
    let e: Vec<f32> = x.iter().map(|v| (v - m).exp()).collect();
    let s: f32 = e.iter().sum();
    e.into_iter().map(|v| v / s).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec() -> ScoringSpec {
        ScoringSpec {
            input: InputSpec {
                name: "x".into(),
                dtype: DType::F32,
                shape: vec![2],
                features: vec!["a".into(), "b".into()],
                normalization: Normalization::Zscore {
                    mean: vec![1.0, 2.0],
                    std: vec![2.0, 4.0],
                },
            },
            output: OutputSpec {
                name: "y".into(),
                kind: OutputKind::Logits,
                labels: vec!["ok".into(), "bad".into()],
                thresholds: Thresholds {
                    anomaly_labels: vec!["bad".into()],
                    min_confidence: Some(0.9),
                },
            },
            drift: None,
        }
    }

    #[test]
    fn prepare_interpret_and_errors() {
        let s = spec();
        s.validate().unwrap();
        assert_eq!(s.prepare(&[3.0, 6.0]).unwrap(), vec![1.0, 1.0]);
        assert!(matches!(
            s.prepare(&[1.0]),
            Err(InputError::WrongLength { .. })
        ));
        let e = s.prepare(&[1.0, f32::NAN]).unwrap_err();
        assert!(e.to_string().contains("(b)"), "{e}");
        assert_eq!(
            s.order_named([("b", 2.0), ("a", 1.0)]).unwrap(),
            vec![1.0, 2.0]
        );
        assert_eq!(
            s.order_named([("a", 1.0)]),
            Err(InputError::MissingFeature("b".into()))
        );
        let p = s.interpret(&[0.0, 1.0]).unwrap();
        assert_eq!(p.label, "bad");
        assert!(p.anomaly && p.low_confidence);
        assert!((p.probabilities.iter().sum::<f32>() - 1.0).abs() < 1e-6);
        assert!(s.interpret(&[0.0]).is_err());
    }

    #[test]
    fn invalid_specs_are_refused() {
        let mut s = spec();
        s.output.thresholds.anomaly_labels = vec!["nope".into()];
        assert_eq!(s.validate(), Err(SpecError::UnknownLabel("nope".into())));
        let mut s = spec();
        s.input.normalization = Normalization::Zscore {
            mean: vec![0.0, 0.0],
            std: vec![1.0, 0.0],
        };
        assert!(matches!(s.validate(), Err(SpecError::BadNormalization(_))));
        let mut s = spec();
        s.input.shape = vec![usize::MAX, 2];
        assert!(matches!(s.validate(), Err(SpecError::BadShape(_))));
    }
}
