//! The fleet engine's clock: the system clock plus an offset.
//!
//! In service the offset is zero. It exists so tests can make days pass — directives
//! expiring, deployments timing out — without waiting, while every timestamp the engine
//! writes (directive issue and expiry times, deployment times, timeouts) still comes from
//! one place.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

/// A clock shared by clones (advancing one advances all).
#[derive(Debug, Clone, Default)]
pub struct Clock {
    offset_ms: Arc<AtomicU64>,
}

impl Clock {
    /// The system clock.
    pub fn system() -> Self {
        Self::default()
    }

    /// Unix time, milliseconds.
    pub fn now_ms(&self) -> u64 {
        crate::db::now_ms().saturating_add(self.offset_ms.load(Ordering::Relaxed))
    }

    /// Unix time, seconds.
    pub fn now(&self) -> u64 {
        self.now_ms() / 1000
    }

    /// Moves this clock (and every clone) forward by `d`.
    pub fn advance(&self, d: Duration) {
        self.offset_ms
            .fetch_add(d.as_millis() as u64, Ordering::Relaxed);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn clones_share_the_offset() {
        let a = Clock::system();
        let b = a.clone();
        let before = b.now();
        a.advance(Duration::from_secs(86_400));
        assert!(b.now() >= before + 86_400);
    }
}
