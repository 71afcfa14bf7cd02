//! `[sensor]`: which sensor feeds the pipeline, and how often.
//!
//! ```toml
//! [sensor]
//! kind = "simulated"         # none | adxl345 | simulated
//! i2c_bus = "/dev/i2c-1"
//! address = 0x53
//! interval_ms = 1000         # one window every interval
//! # model = "vibration"      # the model it feeds (default: the only active one)
//! seed = 1                   # simulated only
//! mode = "normal"            # simulated only: normal | imbalance | bearing_fault
//! drift = 0.0                # simulated only
//! ```

use std::path::PathBuf;
use std::time::Duration;

use serde::Deserialize;

use crate::sensors::vibration::MachineMode;
use crate::settings::InvalidSetting;

/// The I2C bus an ADXL345 is on unless `i2c_bus` says otherwise.
pub const DEFAULT_I2C_BUS: &str = "/dev/i2c-1";
/// The ADXL345's address with its ALT pin high (the common breakout boards).
pub const DEFAULT_ADXL345_ADDRESS: u8 = 0x53;

/// Which sensor feeds the pipeline.
#[derive(Debug, Clone, PartialEq)]
pub enum SensorKind {
    /// No sensor; the agent serves the API only.
    None,
    /// An ADXL345 on a Linux I2C bus.
    Adxl345 {
        /// `/dev/i2c-N`.
        bus: PathBuf,
        /// 7-bit address (0x53 or 0x1D).
        address: u8,
    },
    /// The register-level simulated ADXL345.
    Simulated {
        /// RNG seed.
        seed: u64,
        /// Machine behaviour.
        mode: MachineMode,
        /// Drift, 0..=1.
        drift: f64,
    },
}

/// Sensor pipeline.
#[derive(Debug, Clone, PartialEq)]
pub struct SensorConfig {
    /// Sensor.
    pub kind: SensorKind,
    /// Time between the starts of two windows (at least 10 ms).
    pub interval: Duration,
    /// The model the pipeline feeds (None: the only active model).
    pub model: Option<String>,
}

impl Default for SensorConfig {
    fn default() -> Self {
        Self {
            kind: SensorKind::None,
            interval: Duration::from_secs(1),
            model: None,
        }
    }
}

impl SensorConfig {
    /// Checks ranges and the model name; the error names the file key.
    pub fn validate(&self) -> Result<(), InvalidSetting> {
        if let SensorKind::Simulated { drift, .. } = self.kind
            && !(0.0..=1.0).contains(&drift)
        {
            return Err(InvalidSetting::new("sensor.drift", "must be within 0..=1"));
        }
        if self.interval < Duration::from_millis(10) {
            return Err(InvalidSetting::new(
                "sensor.interval_ms",
                "must be at least 10",
            ));
        }
        if let Some(m) = &self.model
            && !outpost_protocol::manifest::valid_name(m)
        {
            return Err(InvalidSetting::new(
                "sensor.model",
                format!("{m:?} is not a model name ([A-Za-z0-9._-], 1..=128)"),
            ));
        }
        Ok(())
    }
}

/// `[sensor]` as written in the file: absent keys take [`SensorConfig::default`] and the
/// defaults above; the simulated-only keys are ignored for other kinds.
#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct SensorSection {
    kind: Option<String>,
    i2c_bus: Option<PathBuf>,
    address: Option<u8>,
    interval_ms: Option<u64>,
    model: Option<String>,
    seed: Option<u64>,
    mode: Option<String>,
    drift: Option<f64>,
}

impl SensorSection {
    /// The validated settings.
    pub fn resolve(self) -> Result<SensorConfig, InvalidSetting> {
        let d = SensorConfig::default();
        let kind = match self.kind.as_deref() {
            None | Some("none") => SensorKind::None,
            Some("adxl345") => SensorKind::Adxl345 {
                bus: self.i2c_bus.unwrap_or_else(|| DEFAULT_I2C_BUS.into()),
                address: self.address.unwrap_or(DEFAULT_ADXL345_ADDRESS),
            },
            Some("simulated") => SensorKind::Simulated {
                seed: self.seed.unwrap_or(1),
                mode: self
                    .mode
                    .as_deref()
                    .unwrap_or("normal")
                    .parse()
                    .map_err(|e: String| InvalidSetting::new("sensor.mode", e))?,
                drift: self.drift.unwrap_or(0.0),
            },
            Some(k) => {
                return Err(InvalidSetting::new(
                    "sensor.kind",
                    format!("{k:?} is not one of none, adxl345, simulated"),
                ));
            }
        };
        let c = SensorConfig {
            kind,
            interval: self.interval_ms.map_or(d.interval, Duration::from_millis),
            model: self.model,
        };
        c.validate()?;
        Ok(c)
    }
}
