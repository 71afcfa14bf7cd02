//! Per-model counters: requests, samples, errors and a latency histogram. Lock-free
//! (atomics), so the inference paths never wait on telemetry.

use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::time::Duration;

use serde::{Deserialize, Serialize};

/// Upper bounds of the latency buckets, microseconds (the last bucket is unbounded).
pub const BUCKETS_US: [u64; 15] = [
    50,
    100,
    200,
    500,
    1_000,
    2_000,
    5_000,
    10_000,
    20_000,
    50_000,
    100_000,
    200_000,
    500_000,
    1_000_000,
    u64::MAX,
];

/// Live counters of one model.
#[derive(Debug, Default)]
pub struct ModelStats {
    requests: AtomicU64,
    samples: AtomicU64,
    errors: AtomicU64,
    rejected: AtomicU64,
    latency_sum_us: AtomicU64,
    buckets: [AtomicU64; BUCKETS_US.len()],
}

/// A copy of the counters.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct StatsSnapshot {
    /// Inference calls that ran the model.
    pub requests: u64,
    /// Samples scored.
    pub samples: u64,
    /// Calls where the model failed (run error, non-finite output).
    pub errors: u64,
    /// Calls refused before the model ran (bad input): client errors, not model errors.
    pub rejected: u64,
    /// Sum of latencies, µs.
    pub latency_sum_us: u64,
    /// Counts per bucket of [`BUCKETS_US`].
    pub buckets: Vec<u64>,
}

impl ModelStats {
    /// Records a model run.
    pub fn record(&self, ok: bool, samples: u64, latency: Duration) {
        self.requests.fetch_add(1, Relaxed);
        if ok {
            self.samples.fetch_add(samples, Relaxed);
        } else {
            self.errors.fetch_add(1, Relaxed);
        }
        let us = latency.as_micros().min(u128::from(u64::MAX)) as u64;
        self.latency_sum_us.fetch_add(us, Relaxed);
        let i = BUCKETS_US
            .iter()
            .position(|b| us <= *b)
            .unwrap_or(BUCKETS_US.len() - 1);
        self.buckets[i].fetch_add(1, Relaxed);
    }

    /// Records a request refused for bad input.
    pub fn record_rejected(&self) {
        self.rejected.fetch_add(1, Relaxed);
    }

    /// (successful calls, failed calls).
    pub fn outcomes(&self) -> (u64, u64) {
        let r = self.requests.load(Relaxed);
        let e = self.errors.load(Relaxed);
        (r - e.min(r), e)
    }

    /// Mean run time per scored sample so far, µs (`None` before the first success).
    pub fn mean_sample_us(&self) -> Option<f64> {
        let samples = self.samples.load(Relaxed);
        (samples > 0).then(|| self.latency_sum_us.load(Relaxed) as f64 / samples as f64)
    }

    /// Copies the counters.
    pub fn snapshot(&self) -> StatsSnapshot {
        StatsSnapshot {
            requests: self.requests.load(Relaxed),
            samples: self.samples.load(Relaxed),
            errors: self.errors.load(Relaxed),
            rejected: self.rejected.load(Relaxed),
            latency_sum_us: self.latency_sum_us.load(Relaxed),
            buckets: self.buckets.iter().map(|b| b.load(Relaxed)).collect(),
        }
    }
}

impl StatsSnapshot {
    /// Latency quantile `q` (0..=1) estimated as the upper bound of the bucket holding it.
    pub fn quantile_us(&self, q: f64) -> Option<u64> {
        let total: u64 = self.buckets.iter().sum();
        if total == 0 {
            return None;
        }
        let rank = ((q.clamp(0.0, 1.0) * total as f64).ceil() as u64).max(1);
        let mut seen = 0;
        for (i, c) in self.buckets.iter().enumerate() {
            seen += c;
            if seen >= rank {
                return Some(BUCKETS_US[i]);
            }
        }
        None
    }

    /// Counters accumulated since `earlier`.
    pub fn since(&self, earlier: &StatsSnapshot) -> StatsSnapshot {
        StatsSnapshot {
            requests: self.requests.saturating_sub(earlier.requests),
            samples: self.samples.saturating_sub(earlier.samples),
            errors: self.errors.saturating_sub(earlier.errors),
            rejected: self.rejected.saturating_sub(earlier.rejected),
            latency_sum_us: self.latency_sum_us.saturating_sub(earlier.latency_sum_us),
            buckets: self
                .buckets
                .iter()
                .zip(earlier.buckets.iter().chain(std::iter::repeat(&0)))
                .map(|(a, b)| a.saturating_sub(*b))
                .collect(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn histogram_quantiles_and_deltas() {
        let s = ModelStats::default();
        for us in [10, 20, 30, 40, 60, 70, 80, 90, 150, 3000] {
            s.record(true, 1, Duration::from_micros(us));
        }
        s.record(false, 1, Duration::from_micros(10));
        let snap = s.snapshot();
        assert_eq!((snap.requests, snap.errors, snap.samples), (11, 1, 10));
        assert_eq!(snap.quantile_us(0.5), Some(100));
        assert_eq!(snap.quantile_us(0.99), Some(5_000));
        assert_eq!(s.outcomes(), (10, 1));
        let later = {
            s.record(true, 4, Duration::from_micros(10));
            s.snapshot()
        };
        assert_eq!(later.since(&snap).samples, 4);
    }
}
