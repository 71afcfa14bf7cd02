//! The health window after a switch, as a sans-IO machine.
//!
//! Probation passes after `needed_ok` successful inferences or after `window_ms` without an
//! error, whichever comes first (a gateway with no traffic must not stay in probation
//! forever); it fails as soon as more than `max_errors` inferences fail. Counts are read
//! from the new model's own counters, so no event can be lost between the inference
//! paths and this machine.

/// The verdict.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    /// Keep the new model.
    Healthy,
    /// Roll back, with the reason.
    Unhealthy(String),
}

/// Probation state.
#[derive(Debug, Clone)]
pub struct Probation {
    started_ms: u64,
    window_ms: u64,
    needed_ok: u64,
    max_errors: u64,
    base_ok: u64,
    base_errors: u64,
}

impl Probation {
    /// Starts probation at `now_ms`, with the model's counters at that moment.
    pub fn start(
        now_ms: u64,
        window_ms: u64,
        needed_ok: u64,
        base_ok: u64,
        base_errors: u64,
    ) -> Self {
        Self {
            started_ms: now_ms,
            window_ms,
            needed_ok,
            max_errors: 0,
            base_ok,
            base_errors,
        }
    }

    /// Checks the model's current counters at `now_ms`.
    pub fn check(&self, now_ms: u64, ok: u64, errors: u64) -> Option<Verdict> {
        let errs = errors.saturating_sub(self.base_errors);
        let oks = ok.saturating_sub(self.base_ok);
        if errs > self.max_errors {
            return Some(Verdict::Unhealthy(format!(
                "{errs} inference error(s) during the health window ({oks} succeeded)"
            )));
        }
        if (self.needed_ok > 0 && oks >= self.needed_ok)
            || now_ms.saturating_sub(self.started_ms) >= self.window_ms
        {
            return Some(Verdict::Healthy);
        }
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn passes_on_count_or_time_and_fails_on_error() {
        let p = Probation::start(1000, 5000, 3, 10, 2);
        assert_eq!(p.check(1500, 12, 2), None);
        assert_eq!(p.check(1600, 13, 2), Some(Verdict::Healthy));
        assert_eq!(p.check(6000, 10, 2), Some(Verdict::Healthy));
        assert!(
            matches!(p.check(1200, 11, 3), Some(Verdict::Unhealthy(m)) if m.contains("1 inference error"))
        );
    }
}
