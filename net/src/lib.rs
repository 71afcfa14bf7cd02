//! Hardened HTTP serving shared by the agent's local API and the bridge's operator API.
//!
//! [`serve`] runs an axum [`Router`](axum::Router) on a TCP or Unix-socket listener with
//! hyper's HTTP/1 server driven directly, because `axum::serve` has no knobs for what a
//! long-running daemon needs against clients that misbehave or vanish (the agent once
//! went unresponsive holding 1 100 half-open connections):
//!
//! - **Connection cap** ([`HttpLimits::max_connections`]). A connection over the cap
//!   takes the slot of the open connection that has waited longest for a request — no
//!   handler running and nothing written for at least [`HttpLimits::evict_after`]: a
//!   half-open socket, a slow or stalled request head, an idle keep-alive. If every open
//!   connection is busy, the new one is accepted and closed at once. The accept loop never
//!   waits for a slot, so the listener never stalls and open descriptors stay bounded.
//! - **Header-read timeout**: a request head (request line and headers) not complete this
//!   long after hyper starts waiting for it closes the connection (slowloris, and
//!   connections that never send anything).
//! - **Idle timeout**: no handler running and no byte moved either way for this long
//!   closes the connection (an idle keep-alive, a client that stopped reading its
//!   response). hyper runs its header timer while a kept-alive connection waits for its
//!   next request too, so such a connection idles at most the shorter of the two.
//! - **Request timeout**: a handler, reading its body included, that takes longer is
//!   answered `503` with a JSON `{"error": ..}` body.
//! - **Graceful shutdown** on the caller's `watch` signal: stop accepting, let requests in
//!   progress finish, close idle connections, and cut whatever is left after
//!   [`HttpLimits::drain_grace`].
//!
//! Every one of these is counted in [`ConnStats`], which the caller owns and may show.
//!
//! | module | what |
//! |---|---|
//! | `conns` | the open-connection table (cap, eviction) and its I/O wrapper |
//! | [`metrics`] | Prometheus exposition shared by both `/metrics` |
//! | `serve` | the accept loop and the per-connection task |
//! | [`testing`] | misbehaving clients and process probes for tests |
#![forbid(unsafe_code)]
#![warn(missing_docs)]

mod conns;
pub mod metrics;
mod serve;
#[cfg(feature = "test-util")]
pub mod testing;

use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::time::Duration;

pub use serve::serve;

/// Limits of one HTTP listener. [`HttpLimits::default`] holds every default.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HttpLimits {
    /// Connections open at once; more are served by evicting the longest-waiting idle
    /// one, or closed at once.
    pub max_connections: usize,
    /// Longest wait for a complete request head.
    pub header_read_timeout: Duration,
    /// Longest time with no handler running and no byte moving (a kept-alive connection
    /// waiting for its next request is also bounded by `header_read_timeout`).
    pub idle_timeout: Duration,
    /// Longest time a handler may take (503 after).
    pub request_timeout: Duration,
    /// After shutdown, how long requests in progress may take to finish.
    pub drain_grace: Duration,
}

impl Default for HttpLimits {
    fn default() -> Self {
        Self {
            max_connections: 256,
            header_read_timeout: Duration::from_secs(10),
            idle_timeout: Duration::from_secs(30),
            request_timeout: Duration::from_secs(60),
            drain_grace: Duration::from_secs(5),
        }
    }
}

/// The accepted range of [`HttpLimits::max_connections`].
pub const MAX_CONNECTIONS: std::ops::RangeInclusive<usize> = 1..=65_536;
/// The accepted range of each timeout.
pub const TIMEOUTS: std::ops::RangeInclusive<Duration> =
    Duration::from_millis(10)..=Duration::from_secs(3600);

/// A limit outside its range.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LimitsError {
    /// `max_connections` outside [`MAX_CONNECTIONS`].
    #[error("max_connections must be within 1..=65536, not {0}")]
    MaxConnections(usize),
    /// A timeout outside [`TIMEOUTS`] (`drain_grace` may also be zero).
    #[error("{field} must be within 10 ms..=1 h, not {value:?}")]
    Timeout {
        /// Which one.
        field: &'static str,
        /// What it was.
        value: Duration,
    },
}

impl HttpLimits {
    /// Checks every limit is within its range.
    pub fn validate(&self) -> Result<(), LimitsError> {
        if !MAX_CONNECTIONS.contains(&self.max_connections) {
            return Err(LimitsError::MaxConnections(self.max_connections));
        }
        for (field, value) in [
            ("header_read_timeout", self.header_read_timeout),
            ("idle_timeout", self.idle_timeout),
            ("request_timeout", self.request_timeout),
        ] {
            if !TIMEOUTS.contains(&value) {
                return Err(LimitsError::Timeout { field, value });
            }
        }
        if !self.drain_grace.is_zero() && !TIMEOUTS.contains(&self.drain_grace) {
            return Err(LimitsError::Timeout {
                field: "drain_grace",
                value: self.drain_grace,
            });
        }
        Ok(())
    }

    /// How long a connection must have waited for a request before a new connection over
    /// the cap may take its slot: a tenth of the header-read timeout, within 10 ms..=1 s.
    /// Long enough that a client that has just connected gets to send its request, short
    /// enough that a flood of silent connections cannot lock well-behaved clients out.
    pub fn evict_after(&self) -> Duration {
        (self.header_read_timeout / 10).clamp(Duration::from_millis(10), Duration::from_secs(1))
    }
}

/// Connection counters of one listener (shared with the caller; all monotonic but
/// `open`).
#[derive(Debug, Default)]
pub struct ConnStats {
    accepted: AtomicU64,
    open: AtomicU64,
    refused: AtomicU64,
    evicted: AtomicU64,
    header_timeouts: AtomicU64,
    idle_timeouts: AtomicU64,
    request_timeouts: AtomicU64,
}

/// A copy of [`ConnStats`] at one moment.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ConnCounts {
    /// Connections taken in (evicting another or under the cap).
    pub accepted: u64,
    /// Connections open now.
    pub open: u64,
    /// Connections closed at once: over the cap with every open one busy.
    pub refused: u64,
    /// Waiting connections closed to make room for a new one.
    pub evicted: u64,
    /// Connections closed for not sending a complete request head in time.
    pub header_timeouts: u64,
    /// Connections closed for being idle.
    pub idle_timeouts: u64,
    /// Requests answered 503 for taking too long.
    pub request_timeouts: u64,
}

impl ConnCounts {
    /// Connections closed by a timeout (header or idle).
    pub fn timed_out(&self) -> u64 {
        self.header_timeouts + self.idle_timeouts
    }
}

impl ConnStats {
    /// The counters now.
    pub fn snapshot(&self) -> ConnCounts {
        ConnCounts {
            accepted: self.accepted.load(Relaxed),
            open: self.open.load(Relaxed),
            refused: self.refused.load(Relaxed),
            evicted: self.evicted.load(Relaxed),
            header_timeouts: self.header_timeouts.load(Relaxed),
            idle_timeouts: self.idle_timeouts.load(Relaxed),
            request_timeouts: self.request_timeouts.load(Relaxed),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_valid_and_bad_limits_are_named() {
        assert_eq!(HttpLimits::default().validate(), Ok(()));
        let l = HttpLimits {
            max_connections: 0,
            ..Default::default()
        };
        assert_eq!(l.validate(), Err(LimitsError::MaxConnections(0)));
        let l = HttpLimits {
            idle_timeout: Duration::ZERO,
            ..Default::default()
        };
        assert!(
            l.validate()
                .unwrap_err()
                .to_string()
                .contains("idle_timeout")
        );
        let l = HttpLimits {
            drain_grace: Duration::ZERO,
            ..Default::default()
        };
        assert_eq!(l.validate(), Ok(()));
    }

    #[test]
    fn eviction_wait_follows_the_header_timeout_within_bounds() {
        let with = |ms| HttpLimits {
            header_read_timeout: Duration::from_millis(ms),
            ..Default::default()
        };
        assert_eq!(with(10_000).evict_after(), Duration::from_secs(1));
        assert_eq!(with(60_000).evict_after(), Duration::from_secs(1));
        assert_eq!(with(2_000).evict_after(), Duration::from_millis(200));
        assert_eq!(with(20).evict_after(), Duration::from_millis(10));
    }
}
