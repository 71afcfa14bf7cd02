//! The chunk-request retransmission timer, computed as TCP computes its own: RFC 6298,
//! "Computing TCP's Retransmission Timer".
//!
//! A fixed request timeout re-asks for every part that waited longer than it, and a part
//! waits long exactly when the bridge is busy (a thousand devices fetching one bundle, its
//! per-device pacing): the re-asks double the traffic at the worst moment. Measuring the
//! round trip of each answered request and timing out after a smoothed estimate plus four
//! deviations keeps re-asks for parts that were really lost; doubling the timeout on every
//! expiry (back-off) stops a congested bridge from being asked ever faster.
//!
//! Karn's algorithm (RFC 6298 §3): a part that was asked for more than once gives no
//! sample, since its answer cannot be matched to one of the requests.

/// The smallest timeout, ms (RFC 6298 §2.4 rounds up to 1 s), unless the configured
/// initial timeout is smaller (tests and fast local links ask for that explicitly).
pub const MIN_RTO_MS: u64 = 1_000;
/// The largest timeout, ms (RFC 6298 §2.5: at least 60 s).
pub const MAX_RTO_MS: u64 = 60_000;
/// Clock granularity G, ms: the update loop ticks every 200 ms, so a timer cannot fire
/// more precisely than that (and a timeout of RTT + 10 ms would expire on any jitter).
pub const GRANULARITY_MS: u64 = 200;

/// The estimator: SRTT, RTTVAR and RTO in milliseconds. Sans-IO: fed samples and
/// expiries, read with [`Rto::timeout_ms`].
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Rto {
    initial: u64,
    min: u64,
    /// (SRTT, RTTVAR) once a sample arrived.
    estimate: Option<(f64, f64)>,
    rto: u64,
}

impl Rto {
    /// Before any sample the timeout is `initial_ms` (RFC 6298 §2.1; our configured
    /// `[update] request_timeout_ms`).
    pub fn new(initial_ms: u64) -> Self {
        let initial = initial_ms.clamp(1, MAX_RTO_MS);
        Self {
            initial,
            min: MIN_RTO_MS.min(initial),
            estimate: None,
            rto: initial,
        }
    }

    /// The current timeout, ms.
    pub fn timeout_ms(&self) -> u64 {
        self.rto
    }

    /// Smoothed round-trip time, ms, once measured.
    pub fn srtt_ms(&self) -> Option<f64> {
        self.estimate.map(|(s, _)| s)
    }

    /// A round trip of `rtt_ms` was measured (a part asked for once and answered).
    /// RFC 6298 §2.2/§2.3 with α = 1/8, β = 1/4, K = 4; also undoes any back-off (§5.7).
    pub fn sample(&mut self, rtt_ms: u64) {
        let r = rtt_ms as f64;
        let (srtt, rttvar) = match self.estimate {
            None => (r, r / 2.0),
            Some((srtt, rttvar)) => {
                let rttvar = 0.75 * rttvar + 0.25 * (srtt - r).abs();
                (0.875 * srtt + 0.125 * r, rttvar)
            }
        };
        self.estimate = Some((srtt, rttvar));
        self.restore();
    }

    /// A request timed out: double the timeout (RFC 6298 §5.5), up to [`MAX_RTO_MS`].
    pub fn back_off(&mut self) {
        self.rto = self.rto.saturating_mul(2).min(MAX_RTO_MS);
    }

    /// Undo any back-off without a new sample: the timeout computed from the estimate
    /// (RFC 6298 §2.3), or the initial one before any sample. For a new session: the
    /// round trip measured so far still holds, the old session's congestion does not.
    pub fn restore(&mut self) {
        self.rto = match self.estimate {
            None => self.initial,
            Some((srtt, rttvar)) => {
                let rto = srtt + (GRANULARITY_MS as f64).max(4.0 * rttvar);
                (rto.ceil() as u64).clamp(self.min, MAX_RTO_MS)
            }
        };
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn first_sample_then_smoothing_as_in_rfc_6298() {
        let mut r = Rto::new(5_000);
        assert_eq!(r.timeout_ms(), 5_000);
        // First sample R: SRTT = R, RTTVAR = R/2, RTO = R + 4·R/2 = 3R.
        r.sample(400);
        assert_eq!(r.srtt_ms(), Some(400.0));
        assert_eq!(r.timeout_ms(), 1_200);
        // Second, R' = 800: RTTVAR = 3/4·200 + 1/4·400 = 250; SRTT = 7/8·400 + 1/8·800 = 450.
        r.sample(800);
        assert_eq!(r.srtt_ms(), Some(450.0));
        assert_eq!(r.timeout_ms(), 450 + 1_000);
    }

    #[test]
    fn back_off_doubles_to_the_cap_and_a_sample_undoes_it() {
        let mut r = Rto::new(5_000);
        r.back_off();
        assert_eq!(r.timeout_ms(), 10_000);
        for _ in 0..10 {
            r.back_off();
        }
        assert_eq!(r.timeout_ms(), MAX_RTO_MS);
        r.sample(100);
        // 100 + 4·50 = 300, rounded up to the 1 s floor.
        assert_eq!(r.timeout_ms(), MIN_RTO_MS);
        // Backed off, then restored without a sample: the estimate's timeout again.
        r.back_off();
        r.back_off();
        assert_eq!(r.timeout_ms(), 4 * MIN_RTO_MS);
        r.restore();
        assert_eq!(r.timeout_ms(), MIN_RTO_MS);
        assert_eq!(r.srtt_ms(), Some(100.0));
        // Before any sample, restoring gives the initial timeout.
        let mut r = Rto::new(5_000);
        r.back_off();
        r.restore();
        assert_eq!(r.timeout_ms(), 5_000);
    }

    #[test]
    fn a_small_configured_timeout_is_its_own_floor() {
        let mut r = Rto::new(100);
        r.sample(5);
        // 5 + max(G, 4·2.5) = 205: above the 100 ms floor, by the tick's granularity.
        assert_eq!(r.timeout_ms(), 5 + GRANULARITY_MS);
    }

    proptest! {
        /// Whatever the samples and expiries, the timeout stays within its bounds, and a
        /// steady round trip ends up covered by the timeout (no spurious re-asks).
        #[test]
        fn bounded_and_covers_a_steady_rtt(
            initial in 1u64..100_000,
            noise in proptest::collection::vec((0u64..120_000, any::<bool>()), 0..64),
            steady in 1u64..30_000,
        ) {
            let mut r = Rto::new(initial);
            let floor = MIN_RTO_MS.min(initial.min(MAX_RTO_MS));
            for (s, expire) in noise {
                if expire { r.back_off() } else { r.sample(s) }
                prop_assert!((floor..=MAX_RTO_MS).contains(&r.timeout_ms()));
            }
            for _ in 0..64 {
                r.sample(steady);
            }
            prop_assert!(r.timeout_ms() > steady.min(MAX_RTO_MS - 1));
        }
    }
}
