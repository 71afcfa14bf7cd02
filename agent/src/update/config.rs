//! `[update]` (how bundles are fetched and judged) and `[models]` (what a device may run).
//!
//! ```toml
//! [update]
//! window = 8                 # chunk requests in flight
//! request_timeout_ms = 5000  # first chunk-request timeout; then adapts (update::rto)
//! health_inferences = 20     # probation passes after this many good inferences...
//! health_secs = 60           # ...or this long without an error, whichever first
//! max_probation_boots = 2    # restarts during probation before rolling back
//! # max_clock_skew_secs = 86400
//!
//! [models]
//! # max_memory_bytes = 268435456; max_disk_bytes = 1073741824
//! ```

use std::time::Duration;

use serde::Deserialize;

use crate::settings::InvalidSetting;

/// Update behaviour.
#[derive(Debug, Clone, PartialEq)]
pub struct UpdateConfig {
    /// Chunk requests in flight (1..=64).
    pub window: u32,
    /// The first retransmission timeout of chunk requests (at least 50 ms); it then
    /// follows the measured round trip ([`super::rto::Rto`], RFC 6298).
    pub request_timeout: Duration,
    /// Probation passes after this many successful inferences...
    pub health_inferences: u32,
    /// ...or after this long without an error.
    pub health_window: Duration,
    /// Agent restarts during probation tolerated before rolling back.
    pub max_probation_boots: u32,
    /// How far ahead of the device clock a directive's issue time may be, seconds
    /// (`u64::MAX`: unchecked, for devices without a real-time clock).
    pub max_clock_skew_secs: u64,
}

impl Default for UpdateConfig {
    fn default() -> Self {
        Self {
            window: 8,
            request_timeout: Duration::from_secs(5),
            health_inferences: 20,
            health_window: Duration::from_secs(60),
            max_probation_boots: 2,
            max_clock_skew_secs: 24 * 3600,
        }
    }
}

impl UpdateConfig {
    /// Checks ranges; the error names the file key.
    pub fn validate(&self) -> Result<(), InvalidSetting> {
        if !(1..=64).contains(&self.window) {
            return Err(InvalidSetting::new(
                "update.window",
                "must be within 1..=64",
            ));
        }
        if self.request_timeout < Duration::from_millis(50) {
            return Err(InvalidSetting::new(
                "update.request_timeout_ms",
                "must be at least 50",
            ));
        }
        Ok(())
    }
}

/// Resource budgets for the models a device runs (`[models]`); the default is unlimited.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct ModelsConfig {
    /// Memory the running set may need (sum of each model's peak measured at
    /// registration), bytes; `None`: unlimited.
    pub max_memory_bytes: Option<u64>,
    /// Disk the model slots may use (two slots per model), bytes; `None`: unlimited.
    pub max_disk_bytes: Option<u64>,
}

impl ModelsConfig {
    /// Every value is acceptable (a budget of 0 admits nothing, which is a choice).
    pub fn validate(&self) -> Result<(), InvalidSetting> {
        Ok(())
    }
}

/// `[update]` as written in the file: absent keys take [`UpdateConfig::default`].
#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct UpdateSection {
    window: Option<u32>,
    request_timeout_ms: Option<u64>,
    health_inferences: Option<u32>,
    health_secs: Option<u64>,
    max_probation_boots: Option<u32>,
    max_clock_skew_secs: Option<u64>,
}

impl UpdateSection {
    /// The validated settings.
    pub fn resolve(self) -> Result<UpdateConfig, InvalidSetting> {
        let d = UpdateConfig::default();
        let c = UpdateConfig {
            window: self.window.unwrap_or(d.window),
            request_timeout: self
                .request_timeout_ms
                .map_or(d.request_timeout, Duration::from_millis),
            health_inferences: self.health_inferences.unwrap_or(d.health_inferences),
            health_window: self
                .health_secs
                .map_or(d.health_window, Duration::from_secs),
            max_probation_boots: self.max_probation_boots.unwrap_or(d.max_probation_boots),
            max_clock_skew_secs: self.max_clock_skew_secs.unwrap_or(d.max_clock_skew_secs),
        };
        c.validate()?;
        Ok(c)
    }
}

/// `[models]` as written in the file.
#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct ModelsSection {
    max_memory_bytes: Option<u64>,
    max_disk_bytes: Option<u64>,
}

impl ModelsSection {
    /// The validated budgets.
    pub fn resolve(self) -> Result<ModelsConfig, InvalidSetting> {
        let c = ModelsConfig {
            max_memory_bytes: self.max_memory_bytes,
            max_disk_bytes: self.max_disk_bytes,
        };
        c.validate()?;
        Ok(c)
    }
}
