//! Which model inputs and outputs to keep for retraining.
//!
//! Per model: always capture anomalies (an anomaly label, a regression value out of its
//! expected range, an anomalous score — if enabled) and low-confidence classifications
//! (below a threshold; defaults to the contract's `min_confidence`), and sample the rest
//! (raw models included) at a rate. An
//! hourly cap bounds everything, so a machine stuck in a fault state cannot flood the
//! store; captures skipped by the cap are counted and reported in telemetry.

use std::collections::{BTreeMap, HashMap};

use outpost_protocol::contract::Interpretation;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use serde::Deserialize;

use crate::settings::InvalidSetting;

/// A capture policy.
#[derive(Debug, Clone, PartialEq)]
pub struct CapturePolicy {
    /// Fraction of ordinary predictions kept, 0..=1.
    pub sample_rate: f64,
    /// Keep every anomaly.
    pub on_anomaly: bool,
    /// Keep predictions with confidence below this (None: the spec's `min_confidence`).
    pub low_confidence: Option<f32>,
    /// At most this many captures per model per hour.
    pub max_per_hour: u32,
}

impl Default for CapturePolicy {
    fn default() -> Self {
        Self {
            sample_rate: 0.01,
            on_anomaly: true,
            low_confidence: None,
            max_per_hour: 600,
        }
    }
}

impl CapturePolicy {
    /// Checks ranges; `field` is the section the policy came from (`capture`,
    /// `capture.models`), which the error names.
    pub fn validate(&self, field: &'static str) -> Result<(), InvalidSetting> {
        if !(0.0..=1.0).contains(&self.sample_rate) {
            return Err(InvalidSetting::new(
                field,
                "sample_rate must be within 0..=1",
            ));
        }
        if self
            .low_confidence
            .is_some_and(|c| !(0.0..=1.0).contains(&c))
        {
            return Err(InvalidSetting::new(
                field,
                "low_confidence must be within 0..=1",
            ));
        }
        Ok(())
    }
}

/// One policy as written in the file: absent keys take the enclosing policy's values.
#[derive(Deserialize, Default, Clone)]
#[serde(deny_unknown_fields)]
struct PolicySection {
    sample_rate: Option<f64>,
    on_anomaly: Option<bool>,
    low_confidence: Option<f32>,
    max_per_hour: Option<u32>,
}

impl PolicySection {
    fn resolve(
        &self,
        base: &CapturePolicy,
        field: &'static str,
    ) -> Result<CapturePolicy, InvalidSetting> {
        let p = CapturePolicy {
            sample_rate: self.sample_rate.unwrap_or(base.sample_rate),
            on_anomaly: self.on_anomaly.unwrap_or(base.on_anomaly),
            low_confidence: self.low_confidence.or(base.low_confidence),
            max_per_hour: self.max_per_hour.unwrap_or(base.max_per_hour),
        };
        p.validate(field)?;
        Ok(p)
    }
}

/// `[capture]` as written in the file: the default policy over
/// [`CapturePolicy::default`], and `[capture.models.NAME]` tables over that default.
///
/// ```toml
/// [capture]                  # default policy; [capture.models.NAME] overrides per model
/// sample_rate = 0.01
/// on_anomaly = true
/// # low_confidence = 0.6     # default: the spec's min_confidence
/// max_per_hour = 600
/// ```
#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct CaptureSection {
    #[serde(flatten)]
    default: PolicySection,
    #[serde(default)]
    models: BTreeMap<String, PolicySection>,
}

impl CaptureSection {
    /// The validated default policy and the per-model ones.
    pub fn resolve(
        &self,
    ) -> Result<(CapturePolicy, HashMap<String, CapturePolicy>), InvalidSetting> {
        let default = self.default.resolve(&CapturePolicy::default(), "capture")?;
        let mut models = HashMap::new();
        for (name, p) in &self.models {
            models.insert(name.clone(), p.resolve(&default, "capture.models")?);
        }
        Ok((default, models))
    }
}

pub use outpost_protocol::records::CaptureReason;

/// Applies policies; seeded so simulated fleets are reproducible.
pub struct Capturer {
    default: CapturePolicy,
    per_model: HashMap<String, CapturePolicy>,
    rng: ChaCha8Rng,
    hours: HashMap<String, (u64, u32)>,
    /// Captures skipped because of the hourly cap.
    pub skipped_by_cap: u64,
}

impl Capturer {
    /// A capturer with a default policy and per-model overrides.
    pub fn new(
        default: CapturePolicy,
        per_model: HashMap<String, CapturePolicy>,
        seed: u64,
    ) -> Self {
        Self {
            default,
            per_model,
            rng: ChaCha8Rng::seed_from_u64(seed),
            hours: HashMap::new(),
            skipped_by_cap: 0,
        }
    }

    /// Decides for one answer (`None` for a raw model) at `now_ms`.
    pub fn decide(
        &mut self,
        model: &str,
        p: Option<&Interpretation>,
        spec_min_confidence: Option<f32>,
        now_ms: u64,
    ) -> Option<CaptureReason> {
        let pol = self.per_model.get(model).unwrap_or(&self.default);
        let threshold = pol.low_confidence.or(spec_min_confidence);
        let confidence = p.and_then(Interpretation::prediction).map(|p| p.confidence);
        let reason = if pol.on_anomaly && p.is_some_and(Interpretation::anomaly) {
            Some(CaptureReason::Anomaly)
        } else if let (Some(t), Some(c)) = (threshold, confidence)
            && c < t
        {
            Some(CaptureReason::LowConfidence)
        } else if pol.sample_rate > 0.0 && self.rng.random::<f64>() < pol.sample_rate {
            Some(CaptureReason::Sampled)
        } else {
            None
        }?;
        let cap = pol.max_per_hour;
        let hour = now_ms / 3_600_000;
        let slot = self.hours.entry(model.to_owned()).or_insert((hour, 0));
        if slot.0 != hour {
            *slot = (hour, 0);
        }
        if slot.1 >= cap {
            self.skipped_by_cap += 1;
            return None;
        }
        slot.1 += 1;
        Some(reason)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pred(anomaly: bool, confidence: f32) -> Interpretation {
        Interpretation::Classification(outpost_protocol::contract::Prediction {
            label: if anomaly { "bearing_fault" } else { "normal" }.into(),
            index: 0,
            confidence,
            probabilities: vec![confidence],
            anomaly,
            low_confidence: false,
        })
    }

    #[test]
    fn anomalies_low_confidence_sampling_and_the_hourly_cap() {
        let pol = CapturePolicy {
            sample_rate: 0.1,
            on_anomaly: true,
            low_confidence: None,
            max_per_hour: 50,
        };
        let mut c = Capturer::new(pol, HashMap::new(), 7);
        assert_eq!(
            c.decide("m", Some(&pred(true, 0.99)), None, 0),
            Some(CaptureReason::Anomaly)
        );
        assert_eq!(
            c.decide("m", Some(&pred(false, 0.5)), Some(0.6), 0),
            Some(CaptureReason::LowConfidence)
        );
        let sampled = (0..400)
            .filter(|_| {
                c.decide("m", Some(&pred(false, 0.99)), Some(0.6), 1000)
                    .is_some()
            })
            .count();
        assert!(
            (20..=48).contains(&sampled),
            "~10% of 400 sampled, got {sampled}"
        );
        // The cap: 50 per hour, all reasons together.
        let more = (0..100)
            .filter(|_| c.decide("m", Some(&pred(true, 0.99)), None, 2000).is_some())
            .count();
        assert_eq!(more + sampled + 2, 50);
        assert!(c.skipped_by_cap > 0);
        // Next hour, capturing resumes.
        assert!(
            c.decide("m", Some(&pred(true, 0.99)), None, 3_600_000)
                .is_some()
        );
    }
}
