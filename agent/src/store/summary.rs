//! Eviction and refusal summaries: a store at its budget may evict on every append, so
//! what it gives up is logged as one line per interval, not one line per eviction.

use std::collections::BTreeMap;
use std::fmt;

/// One line at most per this interval while the store is evicting or refusing.
pub const SUMMARY_INTERVAL_MS: u64 = 10_000;

/// What one stream gave up since the last line.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Tally {
    /// Records evicted.
    pub evicted: u64,
    /// Accounted bytes evicted.
    pub bytes: u64,
    /// Lowest and highest sequence evicted.
    pub seqs: Option<(u64, u64)>,
    /// Records refused.
    pub refused: u64,
}

/// The per-stream figures of one summary line.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Summary(pub BTreeMap<String, Tally>);

impl Summary {
    /// Records evicted, across streams.
    pub fn evicted(&self) -> u64 {
        self.0.values().map(|t| t.evicted).sum()
    }
    /// Bytes evicted, across streams.
    pub fn bytes(&self) -> u64 {
        self.0.values().map(|t| t.bytes).sum()
    }
    /// Records refused, across streams.
    pub fn refused(&self) -> u64 {
        self.0.values().map(|t| t.refused).sum()
    }
}

impl fmt::Display for Summary {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, (stream, t)) in self.0.iter().enumerate() {
            if i > 0 {
                f.write_str("; ")?;
            }
            write!(f, "{stream}: {} evicted ({} B", t.evicted, t.bytes)?;
            if let Some((a, b)) = t.seqs {
                write!(f, ", seq {a}..={b}")?;
            }
            write!(f, "), {} refused", t.refused)?;
        }
        Ok(())
    }
}

/// Accumulates evictions and refusals; hands out a summary when one is due. Sans-IO: the
/// caller passes the time and logs what it gets.
#[derive(Debug)]
pub struct SummaryLog {
    interval_ms: u64,
    last_line_ms: Option<u64>,
    pending: Summary,
}

impl SummaryLog {
    /// A log that emits at most one summary per `interval_ms`.
    pub fn new(interval_ms: u64) -> Self {
        Self {
            interval_ms,
            last_line_ms: None,
            pending: Summary::default(),
        }
    }

    /// Notes an eviction run.
    pub fn evicted(&mut self, stream: &str, records: u64, bytes: u64, first: u64, last: u64) {
        let t = self.tally(stream);
        t.evicted += records;
        t.bytes += bytes;
        t.seqs = Some(match t.seqs {
            Some((a, b)) => (a.min(first), b.max(last)),
            None => (first, last),
        });
    }

    /// Notes `n` refused records.
    pub fn refused(&mut self, stream: &str, n: u64) {
        self.tally(stream).refused += n;
    }

    fn tally(&mut self, stream: &str) -> &mut Tally {
        if !self.pending.0.contains_key(stream) {
            self.pending.0.insert(stream.to_owned(), Tally::default());
        }
        self.pending.0.get_mut(stream).expect("inserted above")
    }

    /// The summary to log at `now_ms`, if any: the first eviction or refusal after a
    /// quiet interval at once, then whatever accumulated, once per interval.
    pub fn due(&mut self, now_ms: u64) -> Option<Summary> {
        if self.pending.0.is_empty() {
            return None;
        }
        if let Some(last) = self.last_line_ms
            && now_ms.saturating_sub(last) < self.interval_ms
        {
            return None;
        }
        self.last_line_ms = Some(now_ms);
        Some(std::mem::take(&mut self.pending))
    }

    /// Whatever accumulated, regardless of the interval (the store is closing).
    pub fn take(&mut self) -> Option<Summary> {
        (!self.pending.0.is_empty()).then(|| std::mem::take(&mut self.pending))
    }
}

/// Logs a summary at WARN (records were given up, by policy).
pub fn log(s: &Summary) {
    tracing::warn!(
        evicted = s.evicted(),
        evicted_bytes = s.bytes(),
        refused = s.refused(),
        streams = %s,
        "store full: records evicted or refused to stay within the budget (one line per {} s at most)",
        SUMMARY_INTERVAL_MS / 1000
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn first_line_at_once_then_one_per_interval() {
        let mut l = SummaryLog::new(10_000);
        assert_eq!(l.due(0), None, "nothing to say");
        l.evicted("captures", 2, 200, 5, 6);
        let first = l.due(1).expect("first eviction is logged at once");
        assert_eq!(first.evicted(), 2);
        l.evicted("captures", 1, 100, 9, 9);
        l.evicted("captures", 1, 100, 7, 7);
        l.refused("events", 3);
        assert_eq!(l.due(5_000), None, "within the interval");
        let s = l.due(10_001).expect("due after the interval");
        assert_eq!((s.evicted(), s.bytes(), s.refused()), (2, 200, 3));
        assert_eq!(s.0["captures"].seqs, Some((7, 9)));
        assert_eq!(
            s.to_string(),
            "captures: 2 evicted (200 B, seq 7..=9), 0 refused; events: 0 evicted (0 B), 3 refused"
        );
        assert_eq!(l.due(30_000), None, "quiet");
        l.refused("events", 1);
        assert!(l.take().is_some());
        assert!(l.take().is_none());
    }
}
