//! Time sources. Wall-clock seconds for the protocol (directive expiry, reports);
//! tokio's monotonic clock for timeouts, so tests can pause and advance it.

use std::sync::OnceLock;
use std::time::{SystemTime, UNIX_EPOCH};

/// Unix seconds (0 if the clock is before 1970, as on a gateway without an RTC at boot).
pub fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

/// Unix milliseconds.
pub fn unix_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

/// Monotonic milliseconds since the first call (tokio's clock: pausable in tests).
pub fn mono_ms() -> u64 {
    static START: OnceLock<tokio::time::Instant> = OnceLock::new();
    let start = *START.get_or_init(tokio::time::Instant::now);
    tokio::time::Instant::now()
        .saturating_duration_since(start)
        .as_millis() as u64
}
