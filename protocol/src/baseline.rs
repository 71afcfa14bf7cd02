//! The training-data baseline profile that ships, signed, inside a bundle, and the drift
//! statistics computed against it (population stability index and the two-sample
//! Kolmogorov–Smirnov statistic).
//!
//! Per feature the profile keeps: `edges` — bin edges at the training sample's deciles
//! (so each bin holds ~10 % of the training data; the outer bins are open-ended), the
//! training proportion per bin, summary statistics, and `reference` — the training sample
//! itself, sorted, subsampled to at most [`MAX_REFERENCE`] values by taking evenly spaced
//! order statistics. KS against the reference is exact when the sample was not
//! subsampled, and within `1 / reference.len()` of the full-sample statistic otherwise.
//! The output class mix (running the model on the sample) is kept for output drift.
//!
//! PSI uses the same bins on both sides, with a floor of [`PSI_EPSILON`] on proportions so
//! empty bins do not produce infinities: `Σ (p_live − p_base) · ln(p_live / p_base)`.

use serde::{Deserialize, Serialize};

/// Reference values kept per feature.
pub const MAX_REFERENCE: usize = 2000;
/// Floor applied to bin proportions in PSI.
pub const PSI_EPSILON: f64 = 1e-4;
/// Bins per feature (deciles).
pub const BINS: usize = 10;
/// Current format.
pub const BASELINE_FORMAT: u32 = 1;
/// Prefix of a profile column that holds the model's task output value (regression value,
/// anomaly score) rather than an input feature: `output:{output name}`.
pub const OUTPUT_PREFIX: &str = "output:";

/// Profile of one feature.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FeatureProfile {
    /// Feature name.
    pub name: String,
    /// Inner bin edges, ascending (`BINS - 1` of them; bins are
    /// (-∞, e0], (e0, e1], …, (e_last, +∞)).
    pub edges: Vec<f64>,
    /// Training proportion per bin (sums to 1).
    pub probs: Vec<f64>,
    /// Mean.
    pub mean: f64,
    /// Standard deviation.
    pub std: f64,
    /// Minimum.
    pub min: f64,
    /// Maximum.
    pub max: f64,
    /// Sorted reference sample (possibly subsampled).
    pub reference: Vec<f64>,
}

/// The whole profile.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct BaselineProfile {
    /// Format ([`BASELINE_FORMAT`]).
    pub format: u32,
    /// Rows in the training sample.
    pub rows: u64,
    /// Per feature, in model input order.
    pub features: Vec<FeatureProfile>,
    /// Output label → proportion of the sample the model assigns to it.
    #[serde(default)]
    pub outputs: std::collections::BTreeMap<String, f64>,
    /// Per predicted label, the features of the rows the model assigns to it (labels with
    /// fewer than [`MIN_CLASS_ROWS`] rows are left out). Live data is compared class by
    /// class: a machine that is always healthy should look like the healthy part of the
    /// training data, not like the whole mixed sample.
    #[serde(default)]
    pub classes: std::collections::BTreeMap<String, Vec<FeatureProfile>>,
}

/// Rows a label needs for its own per-class profile.
pub const MIN_CLASS_ROWS: usize = 30;

/// Why a profile cannot be computed or parsed.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum BaselineError {
    /// Too few rows.
    #[error("baseline needs at least {BINS} rows, got {0}")]
    TooFewRows(usize),
    /// Ragged or non-finite data.
    #[error("baseline data: {0}")]
    BadData(String),
    /// Not a profile.
    #[error("baseline profile is not valid JSON: {0}")]
    Json(String),
}

/// Which bin `x` falls in.
pub fn bin_of(edges: &[f64], x: f64) -> usize {
    edges.partition_point(|e| *e < x)
}

/// Empirical quantile (linear interpolation between order statistics, as numpy's default).
pub fn quantile(sorted: &[f64], q: f64) -> f64 {
    let n = sorted.len();
    if n == 1 {
        return sorted[0];
    }
    let pos = q.clamp(0.0, 1.0) * (n - 1) as f64;
    let lo = pos.floor() as usize;
    let hi = pos.ceil() as usize;
    sorted[lo] + (sorted[hi] - sorted[lo]) * (pos - lo as f64)
}

impl FeatureProfile {
    /// Profiles one column.
    pub fn compute(name: &str, values: &[f64]) -> Result<Self, BaselineError> {
        if values.len() < BINS {
            return Err(BaselineError::TooFewRows(values.len()));
        }
        if values.iter().any(|v| !v.is_finite()) {
            return Err(BaselineError::BadData(format!(
                "{name} has a non-finite value"
            )));
        }
        let mut sorted = values.to_vec();
        sorted.sort_by(f64::total_cmp);
        let mut edges: Vec<f64> = (1..BINS)
            .map(|i| quantile(&sorted, i as f64 / BINS as f64))
            .collect();
        edges.dedup();
        let mut counts = vec![0u64; edges.len() + 1];
        for v in &sorted {
            counts[bin_of(&edges, *v)] += 1;
        }
        let n = sorted.len() as f64;
        let mean = sorted.iter().sum::<f64>() / n;
        let var = sorted.iter().map(|v| (v - mean).powi(2)).sum::<f64>() / n;
        let reference = if sorted.len() <= MAX_REFERENCE {
            sorted.clone()
        } else {
            (0..MAX_REFERENCE)
                .map(|i| sorted[i * (sorted.len() - 1) / (MAX_REFERENCE - 1)])
                .collect()
        };
        Ok(Self {
            name: name.to_owned(),
            probs: counts.iter().map(|c| *c as f64 / n).collect(),
            edges,
            mean,
            std: var.sqrt(),
            min: sorted[0],
            max: sorted[sorted.len() - 1],
            reference,
        })
    }

    /// PSI of a live sample against this feature's bins.
    pub fn psi(&self, live: &[f64]) -> f64 {
        let mut counts = vec![0u64; self.probs.len()];
        for v in live {
            counts[bin_of(&self.edges, *v)] += 1;
        }
        psi_counts(&self.probs, &counts)
    }

    /// Two-sample KS statistic of a live sample against the reference.
    pub fn ks(&self, live: &[f64]) -> f64 {
        let mut l = live.to_vec();
        l.sort_by(f64::total_cmp);
        ks_sorted(&self.reference, &l)
    }
}

/// PSI of live bin counts against baseline proportions.
pub fn psi_counts(base: &[f64], live_counts: &[u64]) -> f64 {
    let n: u64 = live_counts.iter().sum();
    if n == 0 {
        return 0.0;
    }
    base.iter()
        .zip(live_counts)
        .map(|(b, c)| {
            let p = (*c as f64 / n as f64).max(PSI_EPSILON);
            let q = b.max(PSI_EPSILON);
            (p - q) * (p / q).ln()
        })
        .sum()
}

/// Two-sample KS statistic of two sorted samples: `max |F_a(x) − F_b(x)|` over all x
/// (as `scipy.stats.ks_2samp(a, b).statistic`).
pub fn ks_sorted(a: &[f64], b: &[f64]) -> f64 {
    if a.is_empty() || b.is_empty() {
        return 0.0;
    }
    let (na, nb) = (a.len() as f64, b.len() as f64);
    let (mut i, mut j) = (0usize, 0usize);
    let mut d = 0f64;
    while i < a.len() && j < b.len() {
        let x = a[i].min(b[j]);
        while i < a.len() && a[i] <= x {
            i += 1;
        }
        while j < b.len() && b[j] <= x {
            j += 1;
        }
        d = d.max((i as f64 / na - j as f64 / nb).abs());
    }
    d
}

impl BaselineProfile {
    /// Profiles `rows` (each in feature order); `outputs` is the model's label per row.
    pub fn compute(
        names: &[String],
        rows: &[Vec<f64>],
        outputs: &[String],
    ) -> Result<Self, BaselineError> {
        if let Some((i, r)) = rows
            .iter()
            .enumerate()
            .find(|(_, r)| r.len() != names.len())
        {
            return Err(BaselineError::BadData(format!(
                "row {i} has {} values, expected {}",
                r.len(),
                names.len()
            )));
        }
        let features = names
            .iter()
            .enumerate()
            .map(|(c, n)| {
                FeatureProfile::compute(n, &rows.iter().map(|r| r[c]).collect::<Vec<_>>())
            })
            .collect::<Result<Vec<_>, _>>()?;
        let mut mix = std::collections::BTreeMap::new();
        for o in outputs {
            *mix.entry(o.clone()).or_insert(0.0) += 1.0 / outputs.len() as f64;
        }
        let mut classes = std::collections::BTreeMap::new();
        for label in mix.keys() {
            let idx: Vec<usize> = (0..rows.len())
                .filter(|i| outputs.get(*i) == Some(label))
                .collect();
            if idx.len() < MIN_CLASS_ROWS {
                continue;
            }
            let profiles = names
                .iter()
                .enumerate()
                .map(|(c, n)| {
                    FeatureProfile::compute(n, &idx.iter().map(|i| rows[*i][c]).collect::<Vec<_>>())
                })
                .collect::<Result<Vec<_>, _>>()?;
            classes.insert(label.clone(), profiles);
        }
        Ok(Self {
            format: BASELINE_FORMAT,
            rows: rows.len() as u64,
            features,
            outputs: mix,
            classes,
        })
    }

    /// Parses a profile (size-capped by the bundle it came in).
    pub fn from_json(bytes: &[u8]) -> Result<Self, BaselineError> {
        serde_json::from_slice(bytes).map_err(|e| BaselineError::Json(e.to_string()))
    }

    /// Serialises.
    pub fn to_json(&self) -> Vec<u8> {
        serde_json::to_vec(self).expect("profile serialises")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bins_psi_and_ks_basics() {
        let v: Vec<f64> = (0..1000).map(|i| i as f64).collect();
        let f = FeatureProfile::compute("x", &v).unwrap();
        assert_eq!(f.edges.len(), 9);
        assert!(
            f.probs.iter().all(|p| (p - 0.1).abs() < 0.002),
            "{:?}",
            f.probs
        );
        assert!(f.psi(&v) < 1e-9);
        assert_eq!(f.ks(&v), 0.0);
        let shifted: Vec<f64> = v.iter().map(|x| x + 500.0).collect();
        assert!(f.psi(&shifted) > 1.0);
        assert!((f.ks(&shifted) - 0.5).abs() < 1e-9);
        assert_eq!(ks_sorted(&[1.0, 2.0], &[3.0, 4.0]), 1.0);
    }
}
