//! Compact strategy descriptions (API bodies, CLI flags) and their defaults.

use serde::Serialize;

use super::FleetError;
use super::machine::{self, Strategy};

/// A compact strategy description (API bodies, CLI flags) → [`Strategy`].
#[derive(Debug, Clone, PartialEq, serde::Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct StrategySpec {
    /// Cumulative fractions per wave (first wave: at least one device).
    #[serde(default = "default_waves")]
    pub waves: Vec<f64>,
    /// Share of a wave that must succeed.
    #[serde(default = "default_success")]
    pub success_threshold: f64,
    /// Share of a wave that may fail.
    #[serde(default = "default_error")]
    pub error_threshold: f64,
    /// Per-wave timeout, seconds.
    #[serde(default = "default_timeout")]
    pub timeout_secs: u64,
    /// What a trip does.
    #[serde(default = "default_on_trip")]
    pub on_trip: machine::OnTrip,
    /// Canary gates.
    #[serde(default)]
    pub gates: GateSpec,
}

/// Canary gates, compact.
#[derive(Debug, Clone, PartialEq, serde::Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct GateSpec {
    /// Largest error rate (null: no gate).
    #[serde(default = "default_max_error_rate")]
    pub max_error_rate: Option<f64>,
    /// Largest p99 latency, µs (null: no gate).
    #[serde(default)]
    pub max_p99_us: Option<u64>,
    /// Largest output shift (total-variation distance; null: no gate).
    #[serde(default = "default_max_shift")]
    pub max_output_shift: Option<f64>,
    /// Predictions needed.
    #[serde(default = "default_min_samples")]
    pub min_samples: u64,
    /// Observation period, seconds.
    #[serde(default = "default_observe")]
    pub observe_secs: u64,
}

fn default_waves() -> Vec<f64> {
    vec![0.0, 0.1, 0.5, 1.0]
}
fn default_success() -> f64 {
    0.9
}
fn default_error() -> f64 {
    0.1
}
fn default_timeout() -> u64 {
    120
}
fn default_on_trip() -> machine::OnTrip {
    machine::OnTrip::Rollback
}
fn default_max_error_rate() -> Option<f64> {
    Some(0.01)
}
fn default_max_shift() -> Option<f64> {
    Some(0.3)
}
fn default_min_samples() -> u64 {
    20
}
fn default_observe() -> u64 {
    10
}

impl Default for GateSpec {
    fn default() -> Self {
        Self {
            max_error_rate: default_max_error_rate(),
            max_p99_us: None,
            max_output_shift: default_max_shift(),
            min_samples: default_min_samples(),
            observe_secs: default_observe(),
        }
    }
}

impl Default for StrategySpec {
    fn default() -> Self {
        Self {
            waves: default_waves(),
            success_threshold: default_success(),
            error_threshold: default_error(),
            timeout_secs: default_timeout(),
            on_trip: default_on_trip(),
            gates: GateSpec::default(),
        }
    }
}

impl StrategySpec {
    /// The full strategy.
    pub fn build(&self) -> Result<Strategy, FleetError> {
        let s = Strategy {
            waves: self
                .waves
                .iter()
                .map(|f| machine::Wave {
                    fraction: *f,
                    success_threshold: self.success_threshold,
                    error_threshold: self.error_threshold,
                    timeout_ms: self.timeout_secs * 1000,
                })
                .collect(),
            gates: machine::Gates {
                max_error_rate: self.gates.max_error_rate,
                max_p99_us: self.gates.max_p99_us,
                max_output_shift: self.gates.max_output_shift,
                min_samples: self.gates.min_samples,
                observe_ms: self.gates.observe_secs * 1000,
            },
            on_trip: self.on_trip,
        };
        s.validate().map_err(FleetError::Invalid)?;
        Ok(s)
    }
}
