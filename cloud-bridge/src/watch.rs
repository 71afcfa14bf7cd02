//! Following a deployment from the CLI (`deploy watch ID`, `deploy create --wait`): its
//! progress in one line (waves numbered 1..N of N, devices converged and failed, the
//! canary gate's latest verdict) and the exit code that says how it ended.
//!
//! The CLI reads the bridge's database, which the running bridge's engine updates; this
//! module only reads.

use std::time::Duration;

use crate::fleet::machine::{DeviceStatus, State};
use crate::fleet::{DeploymentRecord, FleetError, FleetHandle};

/// How a watched deployment stopped, as a process exit code.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ending {
    /// Every wave passed (exit 0).
    Succeeded = 0,
    /// Rolled back, by a trip or an operator (exit 3).
    RolledBack = 3,
    /// Aborted by an operator (exit 4).
    Aborted = 4,
    /// Paused, by a trip or an operator: someone must decide (exit 5).
    Paused = 5,
}

/// Where the deployment stands.
#[derive(Debug, Clone, PartialEq)]
pub struct Progress {
    /// Current wave, 1-based.
    pub wave: usize,
    /// Waves in all.
    pub waves: usize,
    /// Devices on the new model.
    pub succeeded: usize,
    /// Devices that failed or timed out.
    pub failed: usize,
    /// Devices sent back.
    pub rolled_back: usize,
    /// Devices in the deployment.
    pub devices: usize,
    /// State name.
    pub state: String,
    /// The canary gate's latest measurements, if any.
    pub gate: Option<String>,
}

impl Progress {
    /// Reads a deployment record.
    pub fn of(d: &DeploymentRecord) -> Self {
        let count = |f: fn(&DeviceStatus) -> bool| d.devices.iter().filter(|x| f(&x.2)).count();
        let gate = d.observation.as_ref().map(|o| {
            let mut s = format!(
                "canary {} predictions, error rate {:.3}",
                o.samples, o.error_rate
            );
            if let Some(p) = o.p99_us {
                s += &format!(", p99 {p} µs");
            }
            if let Some(x) = o.output_shift {
                s += &format!(", output shift {x:.3}");
            }
            s
        });
        Self {
            wave: d.wave + 1,
            waves: d.strategy.waves.len(),
            succeeded: count(|s| *s == DeviceStatus::Succeeded),
            failed: count(|s| matches!(s, DeviceStatus::Failed { .. })),
            rolled_back: count(|s| matches!(s, DeviceStatus::RolledBack { .. })),
            devices: d.devices.len(),
            state: d.state.clone(),
            gate,
        }
    }

    /// One line for people.
    pub fn line(&self) -> String {
        let mut s = format!(
            "{}: wave {}/{} — {}/{} devices on the new model",
            self.state, self.wave, self.waves, self.succeeded, self.devices
        );
        if self.failed > 0 {
            s += &format!(", {} failed", self.failed);
        }
        if self.rolled_back > 0 {
            s += &format!(", {} rolled back", self.rolled_back);
        }
        if let Some(g) = &self.gate {
            s += &format!(" — {g}");
        }
        s
    }
}

/// How `d` ended, or `None` while it still runs (or rolls back).
pub fn ending(d: &DeploymentRecord) -> Option<Ending> {
    match d.detail {
        State::Succeeded => Some(Ending::Succeeded),
        State::RolledBack { .. } => Some(Ending::RolledBack),
        State::Aborted { .. } => Some(Ending::Aborted),
        State::Paused { .. } => Some(Ending::Paused),
        State::Running | State::RollingBack { .. } => None,
    }
}

/// Reads deployment `id` every `poll` and hands each record to `on` until it ends (see
/// [`ending`]); returns the last record.
///
/// # Errors
/// The deployment does not exist, or the database cannot be read.
pub fn watch(
    fleet: &FleetHandle,
    id: &str,
    poll: Duration,
    mut on: impl FnMut(&DeploymentRecord),
) -> Result<(DeploymentRecord, Ending), FleetError> {
    loop {
        let d = fleet.show(id)?;
        on(&d);
        if let Some(e) = ending(&d) {
            return Ok((d, e));
        }
        std::thread::sleep(poll);
    }
}
