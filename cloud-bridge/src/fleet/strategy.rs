//! Compact strategy descriptions (API bodies, CLI flags) and their defaults.

use serde::Serialize;

use super::FleetError;
use super::machine::{self, Strategy};

/// A compact strategy description → [`Strategy`]: the API's `strategy` body (serde) and
/// `deploy create`'s flags (clap) are this one type, with the same defaults.
#[derive(Debug, Clone, PartialEq, serde::Deserialize, Serialize, clap::Args)]
#[serde(deny_unknown_fields)]
pub struct StrategySpec {
    /// Cumulative wave fractions, e.g. 0,0.1,0.5,1 (first = one canary device).
    #[serde(default = "default_waves")]
    #[arg(long, value_delimiter = ',', default_values_t = default_waves())]
    pub waves: Vec<f64>,
    /// Share of a wave that must succeed.
    #[serde(default = "default_success")]
    #[arg(long, default_value_t = default_success())]
    pub success_threshold: f64,
    /// Share of a wave that may fail.
    #[serde(default = "default_error")]
    #[arg(long, default_value_t = default_error())]
    pub error_threshold: f64,
    /// Per-wave timeout, seconds.
    #[serde(default = "default_timeout")]
    #[arg(long, default_value_t = default_timeout())]
    pub timeout_secs: u64,
    /// What a trip of a threshold or gate does.
    #[serde(default = "default_on_trip")]
    #[arg(long, value_enum, default_value_t = default_on_trip())]
    pub on_trip: machine::OnTrip,
    /// Canary gates.
    #[serde(default)]
    #[command(flatten)]
    pub gates: GateSpec,
}

/// Canary gates, compact (API body and CLI flags alike).
#[derive(Debug, Clone, PartialEq, serde::Deserialize, Serialize, clap::Args)]
#[serde(deny_unknown_fields)]
pub struct GateSpec {
    /// Canary gate: largest error rate (JSON null: no gate).
    #[serde(default = "default_max_error_rate")]
    #[arg(long, default_value = "0.01")]
    pub max_error_rate: Option<f64>,
    /// Canary gate: largest p99 latency, µs (null: no gate).
    #[serde(default)]
    #[arg(long)]
    pub max_p99_us: Option<u64>,
    /// Canary gate: largest output shift, total-variation distance 0..1 (JSON null: no
    /// gate).
    #[serde(default = "default_max_shift")]
    #[arg(long, default_value = "0.3")]
    pub max_output_shift: Option<f64>,
    /// Canary gate: predictions needed before judging.
    #[serde(default = "default_min_samples")]
    #[arg(long, default_value_t = default_min_samples())]
    pub min_samples: u64,
    /// Canary gate: observation period, seconds.
    #[serde(default = "default_observe")]
    #[arg(long, default_value_t = default_observe())]
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

#[cfg(test)]
mod parse_tests {
    use super::*;
    use clap::Parser;

    #[derive(Parser)]
    struct Flags {
        #[command(flatten)]
        s: StrategySpec,
    }

    /// The flags and the JSON body are one type: with nothing given, both are the
    /// defaults (a default changed in one place only would fail here).
    #[test]
    fn flags_and_body_share_their_defaults() {
        let flags = Flags::try_parse_from(["x"]).unwrap().s;
        let body: StrategySpec = serde_json::from_str("{}").unwrap();
        assert_eq!(flags, StrategySpec::default());
        assert_eq!(body, StrategySpec::default());
    }

    #[test]
    fn flags_set_what_the_body_sets() {
        let flags = Flags::try_parse_from([
            "x",
            "--waves",
            "0,1",
            "--on-trip",
            "pause",
            "--max-p99-us",
            "900",
            "--min-samples",
            "5",
        ])
        .unwrap()
        .s;
        let body: StrategySpec = serde_json::from_str(
            r#"{"waves":[0,1],"on_trip":"pause","gates":{"max_p99_us":900,"min_samples":5}}"#,
        )
        .unwrap();
        assert_eq!(flags, body);
        assert!(Flags::try_parse_from(["x", "--on-trip", "explode"]).is_err());
    }
}
