//! `[sync]`: how the store is drained to the bridge.
//!
//! ```toml
//! [sync]
//! batch_records = 500
//! batch_bytes = 98304       # raw bytes; must fit broker.max_packet_bytes - 4 KiB
//! linger_ms = 500
//! window = 4                 # batches in flight per stream
//! ack_timeout_ms = 10000
//! zstd_level = 3
//! ```

use serde::Deserialize;

use crate::settings::InvalidSetting;

/// zstd level of uplink batches unless `zstd_level` says otherwise (zstd's own default:
/// most of the ratio at a fraction of the CPU of higher levels).
pub const DEFAULT_ZSTD_LEVEL: i32 = 3;

/// Room a batch needs beyond its raw bytes, bytes: zstd never grows data by more than a
/// few hundred bytes, plus the frame, the seal and the MQTT header.
pub const BATCH_OVERHEAD: usize = 4096;

/// Batching and acknowledgement tuning of the uplink.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct SyncConfig {
    /// Most records per batch.
    pub max_records: usize,
    /// Most raw bytes per batch.
    pub max_bytes: usize,
    /// A batch that is not full waits until its oldest record is this old (ms).
    pub linger_ms: u64,
    /// Batches in flight per stream.
    pub window: usize,
    /// Resend when an ack has not come within this (ms).
    pub ack_timeout_ms: u64,
}

impl Default for SyncConfig {
    fn default() -> Self {
        Self {
            max_records: 500,
            // Fits the default broker.max_packet_bytes (128 KiB) less 4 KiB of framing.
            max_bytes: 96 * 1024,
            linger_ms: 500,
            window: 4,
            ack_timeout_ms: 10_000,
        }
    }
}

impl SyncConfig {
    /// Checks ranges; a batch is sent whole, so its raw bytes plus [`BATCH_OVERHEAD`] must
    /// fit `max_packet_bytes` (`broker.max_packet_bytes`). The error names the file key.
    pub fn validate(&self, max_packet_bytes: usize) -> Result<(), InvalidSetting> {
        let most = max_packet_bytes.saturating_sub(BATCH_OVERHEAD);
        if !(1..=10_000).contains(&self.max_records) || !(1024..=most).contains(&self.max_bytes) {
            return Err(InvalidSetting::new(
                "sync.batch_records",
                format!(
                    "batch_records must be 1..=10000 and batch_bytes 1 KiB..={most} (broker.max_packet_bytes - 4 KiB)"
                ),
            ));
        }
        if !(1..=64).contains(&self.window) || self.ack_timeout_ms < 100 {
            return Err(InvalidSetting::new(
                "sync.window",
                "window must be 1..=64 and ack_timeout_ms >= 100",
            ));
        }
        Ok(())
    }
}

/// `[sync]` as written in the file: absent keys take [`SyncConfig::default`] and
/// [`DEFAULT_ZSTD_LEVEL`].
#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct SyncSection {
    batch_records: Option<usize>,
    batch_bytes: Option<usize>,
    linger_ms: Option<u64>,
    window: Option<usize>,
    ack_timeout_ms: Option<u64>,
    zstd_level: Option<i32>,
}

impl SyncSection {
    /// The validated batching settings and zstd level (1..=19), for a broker whose
    /// packets are at most `max_packet_bytes`.
    pub fn resolve(self, max_packet_bytes: usize) -> Result<(SyncConfig, i32), InvalidSetting> {
        let d = SyncConfig::default();
        let c = SyncConfig {
            max_records: self.batch_records.unwrap_or(d.max_records),
            max_bytes: self.batch_bytes.unwrap_or(d.max_bytes),
            linger_ms: self.linger_ms.unwrap_or(d.linger_ms),
            window: self.window.unwrap_or(d.window),
            ack_timeout_ms: self.ack_timeout_ms.unwrap_or(d.ack_timeout_ms),
        };
        c.validate(max_packet_bytes)?;
        let level = self.zstd_level.unwrap_or(DEFAULT_ZSTD_LEVEL);
        if !(1..=19).contains(&level) {
            return Err(InvalidSetting::new(
                "sync.zstd_level",
                "must be within 1..=19",
            ));
        }
        Ok((c, level))
    }
}
