//! The rollout engine for one deployment, as a sans-IO state machine.
//!
//! Inputs: device reports, gate observations, ticks (time), operator commands. Outputs:
//! [`Action`]s — send a directive (the new model, or a device's previous model), or record
//! a state change. It never reads the clock, the database or the network.
//!
//! Waves are cumulative fractions of the target devices (e.g. 1 canary → 10 % → 50 % →
//! 100 %). A wave is *resolved* when every device in it succeeded, failed or timed out —
//! a device that never reports counts as failed when the wave's timeout passes, never
//! "in progress" forever. Then:
//! - failures above the wave's error threshold, or successes below its success threshold,
//!   trip the deployment;
//! - on the canary wave, the behaviour gates must also pass (error rate, p99 latency,
//!   output-distribution shift against the previous model on the same devices) once the
//!   observation period has passed with enough samples; not enough data by the wave's
//!   timeout trips as well;
//! - otherwise the next wave starts, or the deployment succeeds.
//!
//! A trip pauses or rolls back, per policy. Rolling back sends every device that received
//! the new model a directive for its previous model (a *new* directive: devices only
//! accept increasing sequences); a device that had no previous model has the model
//! removed. Aborting pins every device that has not finished to what it runs, so nothing
//! of an aborted deployment is installed after the abort (a device still downloading gets
//! a directive without the new bundle and cancels).
//!
//! The machine decides per device *what* it should run for the deployment's model; the IO
//! layer turns that into the device's complete desired set and a signed directive.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// One wave.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Wave {
    /// Cumulative share of the target devices, (0, 1]; the first wave is at least one
    /// device (the canary).
    pub fraction: f64,
    /// Share of the wave that must succeed to advance.
    pub success_threshold: f64,
    /// Share of the wave that may fail before tripping.
    pub error_threshold: f64,
    /// A device that has not succeeded this long after its directive has failed (ms).
    pub timeout_ms: u64,
}

/// Behaviour gates checked on the canary wave.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Gates {
    /// Largest inference error rate.
    pub max_error_rate: Option<f64>,
    /// Largest p99 latency, µs.
    pub max_p99_us: Option<u64>,
    /// Largest total-variation distance between the new and previous label mix.
    pub max_output_shift: Option<f64>,
    /// Predictions needed before judging.
    pub min_samples: u64,
    /// How long to observe the canary after it switched (ms).
    pub observe_ms: u64,
}

impl Default for Gates {
    fn default() -> Self {
        Self {
            max_error_rate: Some(0.01),
            max_p99_us: None,
            max_output_shift: Some(0.3),
            min_samples: 20,
            observe_ms: 10_000,
        }
    }
}

/// What a trip does.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "snake_case")]
pub enum OnTrip {
    /// Stop advancing; an operator decides.
    Pause,
    /// Send every switched device back to its previous model.
    Rollback,
}

/// Every [`State::name`], in lifecycle order (what a list can be filtered by).
pub const STATE_NAMES: [&str; 6] = [
    "running",
    "paused",
    "succeeded",
    "aborted",
    "rolling_back",
    "rolled_back",
];

/// The strategy.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Strategy {
    /// Waves, in order; the last has fraction 1.
    pub waves: Vec<Wave>,
    /// Canary gates.
    pub gates: Gates,
    /// What a tripped gate or threshold does.
    pub on_trip: OnTrip,
}

impl Strategy {
    /// 1 canary → 10 % → 50 % → 100 %, thresholds 90 % / 10 %, 2-minute timeouts,
    /// default gates, roll back on trip.
    pub fn standard() -> Self {
        let wave = |f| Wave {
            fraction: f,
            success_threshold: 0.9,
            error_threshold: 0.1,
            timeout_ms: 120_000,
        };
        Self {
            waves: vec![wave(0.0), wave(0.1), wave(0.5), wave(1.0)],
            gates: Gates::default(),
            on_trip: OnTrip::Rollback,
        }
    }

    /// Checks the strategy is usable.
    pub fn validate(&self) -> Result<(), String> {
        if self.waves.is_empty() {
            return Err("at least one wave".into());
        }
        let mut last = -1.0;
        for (i, w) in self.waves.iter().enumerate() {
            if !(0.0..=1.0).contains(&w.fraction) || w.fraction < last {
                return Err(format!(
                    "wave {i}: fractions must be non-decreasing within 0..=1"
                ));
            }
            if !(0.0..=1.0).contains(&w.success_threshold)
                || !(0.0..=1.0).contains(&w.error_threshold)
            {
                return Err(format!("wave {i}: thresholds must be within 0..=1"));
            }
            if w.timeout_ms == 0 {
                return Err(format!("wave {i}: timeout must be positive"));
            }
            last = w.fraction;
        }
        if (self.waves.last().map(|w| w.fraction).unwrap_or(0.0) - 1.0).abs() > 1e-9 {
            return Err("the last wave must cover 100% of the devices".into());
        }
        Ok(())
    }
}

/// Deployment state.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "state", rename_all = "snake_case")]
pub enum State {
    /// Advancing through waves.
    Running,
    /// Held (by an operator or a trip).
    Paused {
        /// Why.
        reason: String,
    },
    /// Every wave passed.
    Succeeded,
    /// Stopped by an operator.
    Aborted {
        /// Why.
        reason: String,
    },
    /// Sending devices back to their previous models.
    RollingBack {
        /// Why.
        reason: String,
    },
    /// Rolled back.
    RolledBack {
        /// Why.
        reason: String,
    },
}

impl State {
    /// Short name (for search and display).
    pub fn name(&self) -> &'static str {
        // Keep in step with STATE_NAMES.
        match self {
            State::Running => "running",
            State::Paused { .. } => "paused",
            State::Succeeded => "succeeded",
            State::Aborted { .. } => "aborted",
            State::RollingBack { .. } => "rolling_back",
            State::RolledBack { .. } => "rolled_back",
        }
    }
    /// Whether nothing more will happen.
    pub fn terminal(&self) -> bool {
        matches!(
            self,
            State::Succeeded | State::Aborted { .. } | State::RolledBack { .. }
        )
    }
}

/// Per-device progress.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "status", rename_all = "snake_case")]
pub enum DeviceStatus {
    /// Its wave has not started.
    Pending,
    /// Directive sent at `since` (ms).
    Targeted {
        /// When.
        since: u64,
    },
    /// Running the new model.
    Succeeded,
    /// Failed or timed out.
    Failed {
        /// Why.
        reason: String,
    },
    /// Sent back to its previous model (`confirmed` once it reports it).
    RolledBack {
        /// Reported back on the previous model.
        confirmed: bool,
    },
}

/// A device in the deployment.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DeviceEntry {
    /// Wave index.
    pub wave: usize,
    /// Progress.
    pub status: DeviceStatus,
    /// Bundle digest it ran before (rollback target), if any.
    pub previous: Option<String>,
    /// Its own target, when it differs from the deployment's (a rollback deployment sends
    /// each device back to its own previous version).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub target: Option<String>,
}

/// What a device reported about the deployment's model (derived from its retained state).
#[derive(Debug, Clone, PartialEq)]
pub struct Report {
    /// The device has accepted the bridge's latest directive (the report is about it).
    pub current: bool,
    /// What it runs for the model (`None`: the model is not on the device).
    pub active: Option<String>,
    /// Its update of the model is finished (not downloading, installing, in probation).
    pub settled: bool,
    /// The update failed or was rolled back on the device, with the error.
    pub failed: Option<String>,
}

/// Canary behaviour, as measured.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct Observation {
    /// Predictions by the new model on canary devices.
    pub samples: u64,
    /// Inference errors / calls.
    pub error_rate: f64,
    /// p99 latency, µs.
    pub p99_us: Option<u64>,
    /// Total-variation distance of label mixes (new vs previous on the same devices).
    pub output_shift: Option<f64>,
}

/// Operator commands.
#[derive(Debug, Clone, PartialEq)]
pub enum Command {
    /// Hold.
    Pause(String),
    /// Continue.
    Resume,
    /// Stop: devices that finished keep the new model; the others are pinned to what
    /// they run.
    Abort(String),
    /// Send switched devices back.
    Rollback(String),
}

impl Command {
    fn verb(&self) -> &'static str {
        match self {
            Command::Pause(_) => "pause",
            Command::Resume => "resume",
            Command::Abort(_) => "abort",
            Command::Rollback(_) => "roll back",
        }
    }
}

/// What the IO loop must do.
#[derive(Debug, Clone, PartialEq)]
pub enum Action {
    /// Make `digest` the device's bundle for the deployment's model.
    Target {
        /// Device.
        device: String,
        /// Bundle digest.
        digest: String,
    },
    /// Send `device` back to `digest`, its previous model (`None`: it had none; remove
    /// the model).
    Restore {
        /// Device.
        device: String,
        /// Previous bundle digest.
        digest: Option<String>,
    },
    /// Keep `device` on what it runs for the model now (its latest report), or on
    /// `fallback` (what it ran before the deployment) when it has not said; no report and
    /// no fallback removes the model.
    Pin {
        /// Device.
        device: String,
        /// What it ran before the deployment.
        fallback: Option<String>,
    },
    /// The state changed (audit + event).
    Changed {
        /// New state.
        state: State,
    },
}

/// One deployment's rollout.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Rollout {
    /// Target digest.
    pub target: String,
    /// Strategy.
    pub strategy: Strategy,
    /// State.
    pub state: State,
    /// Current wave.
    pub wave: usize,
    /// When the current wave's devices were all resolved (ms), for gate observation.
    pub wave_resolved_at: Option<u64>,
    /// Devices.
    pub devices: BTreeMap<String, DeviceEntry>,
    /// Latest canary observation.
    pub observation: Option<Observation>,
    /// When a rollback started (ms).
    #[serde(default)]
    pub rollback_started: Option<u64>,
}

/// Wave index per device: the first wave is one device (the canary), later waves take
/// `ceil(fraction · n)` devices cumulatively.
pub fn assign_waves(devices: &[String], waves: &[Wave]) -> Vec<usize> {
    let n = devices.len();
    let mut out = vec![waves.len().saturating_sub(1); n];
    let mut start = 0;
    for (i, w) in waves.iter().enumerate() {
        let end = if i == 0 {
            ((w.fraction * n as f64).ceil() as usize).max(1)
        } else {
            (w.fraction * n as f64).ceil() as usize
        };
        let end = end.clamp(start, n);
        for slot in out.iter_mut().take(end).skip(start) {
            *slot = i;
        }
        start = end;
    }
    out
}

impl Rollout {
    /// A rollout of `target` to `devices` (with their previous digests).
    pub fn new(target: String, strategy: Strategy, devices: Vec<(String, Option<String>)>) -> Self {
        let ids: Vec<String> = devices.iter().map(|d| d.0.clone()).collect();
        let waves = assign_waves(&ids, &strategy.waves);
        Self {
            target,
            wave: 0,
            wave_resolved_at: None,
            devices: devices
                .into_iter()
                .zip(waves)
                .map(|((id, previous), wave)| {
                    (
                        id,
                        DeviceEntry {
                            wave,
                            status: DeviceStatus::Pending,
                            previous,
                            target: None,
                        },
                    )
                })
                .collect(),
            strategy,
            state: State::Running,
            observation: None,
            rollback_started: None,
        }
    }

    /// A rollout that sends each device to its own target (`(device, previous, target)`).
    pub fn with_targets(
        target: String,
        strategy: Strategy,
        devices: Vec<(String, Option<String>, String)>,
    ) -> Self {
        let own: BTreeMap<String, String> = devices
            .iter()
            .map(|(d, _, t)| (d.clone(), t.clone()))
            .collect();
        let mut r = Self::new(
            target,
            strategy,
            devices.into_iter().map(|(d, p, _)| (d, p)).collect(),
        );
        for (d, e) in r.devices.iter_mut() {
            e.target = own.get(d).filter(|t| **t != r.target).cloned();
        }
        r
    }

    /// What `device` should run for this deployment.
    pub fn target_of(&self, device: &str) -> &str {
        self.devices
            .get(device)
            .and_then(|e| e.target.as_deref())
            .unwrap_or(&self.target)
    }

    /// Starts: targets the first wave.
    pub fn start(&mut self, now: u64) -> Vec<Action> {
        self.start_wave(now)
    }

    fn start_wave(&mut self, now: u64) -> Vec<Action> {
        let w = self.wave;
        self.wave_resolved_at = None;
        let mut out = Vec::new();
        for (id, d) in self.devices.iter_mut() {
            if d.wave == w && d.status == DeviceStatus::Pending {
                d.status = DeviceStatus::Targeted { since: now };
                out.push(Action::Target {
                    device: id.clone(),
                    digest: d.target.clone().unwrap_or_else(|| self.target.clone()),
                });
            }
        }
        if out.is_empty() && self.devices.values().all(|d| d.wave != w) {
            // An empty wave (few devices): move on.
            return self.advance(now);
        }
        out
    }

    fn wave_devices(&self) -> impl Iterator<Item = &DeviceEntry> {
        self.devices.values().filter(move |d| d.wave == self.wave)
    }

    /// A device reported.
    pub fn on_report(&mut self, device: &str, r: &Report, now: u64) -> Vec<Action> {
        self.record_report(device, r);
        self.evaluate(now)
    }

    /// Several devices reported (an engine pass): each report is recorded, then the
    /// rollout is evaluated once — evaluating a wave costs one look at every device, so
    /// doing it per report made a pass over N devices cost N².
    pub fn on_reports<'a>(
        &mut self,
        reports: impl IntoIterator<Item = (&'a str, &'a Report)>,
        now: u64,
    ) -> Vec<Action> {
        for (device, r) in reports {
            self.record_report(device, r);
        }
        self.evaluate(now)
    }

    /// Whether a report from `device` can change anything: only a device still being
    /// updated, or rolled back without confirmation, is waiting for one.
    pub fn awaits_report(&self, device: &str) -> bool {
        self.devices.get(device).is_some_and(|d| {
            matches!(
                (&d.status, &self.state),
                (
                    DeviceStatus::Targeted { .. },
                    State::Running | State::Paused { .. }
                ) | (DeviceStatus::RolledBack { confirmed: false }, _)
            )
        })
    }

    fn record_report(&mut self, device: &str, r: &Report) {
        if !r.current {
            // About an older directive: says nothing about this deployment yet.
            return;
        }
        let target = self.target_of(device).to_owned();
        let Some(d) = self.devices.get_mut(device) else {
            return;
        };
        match (&d.status, &self.state) {
            (DeviceStatus::Targeted { .. }, State::Running | State::Paused { .. }) => {
                if let Some(e) = &r.failed {
                    d.status = DeviceStatus::Failed { reason: e.clone() };
                } else if r.settled && r.active.as_deref() == Some(target.as_str()) {
                    d.status = DeviceStatus::Succeeded;
                }
            }
            (DeviceStatus::RolledBack { confirmed: false }, _)
                if r.settled && r.active == d.previous =>
            {
                d.status = DeviceStatus::RolledBack { confirmed: true };
            }
            _ => {}
        }
    }

    /// New canary measurements.
    pub fn on_observation(&mut self, o: Observation, now: u64) -> Vec<Action> {
        self.observation = Some(o);
        self.evaluate(now)
    }

    /// Time passes.
    pub fn on_tick(&mut self, now: u64) -> Vec<Action> {
        if matches!(self.state, State::Running) {
            let timeout = self.strategy.waves[self.wave].timeout_ms;
            for d in self.devices.values_mut() {
                if let DeviceStatus::Targeted { since } = d.status
                    && now.saturating_sub(since) >= timeout
                {
                    d.status = DeviceStatus::Failed {
                        reason: format!("did not report success within {} s", timeout / 1000),
                    };
                }
            }
        }
        if let State::RollingBack { reason } = &self.state {
            // Devices that never confirm are not waited for forever either.
            let timeout = self
                .strategy
                .waves
                .iter()
                .map(|w| w.timeout_ms)
                .max()
                .unwrap_or(60_000);
            let started = self.rollback_started.unwrap_or(now);
            let all = self
                .devices
                .values()
                .all(|d| !matches!(d.status, DeviceStatus::RolledBack { confirmed: false }));
            if all || now.saturating_sub(started) >= timeout {
                let reason = reason.clone();
                return self.set(State::RolledBack { reason });
            }
        }
        self.evaluate(now)
    }

    /// An operator command.
    ///
    /// # Errors
    /// Why the command does not apply in the current state, in words for an operator.
    pub fn command(&mut self, c: Command, now: u64) -> Result<Vec<Action>, String> {
        match (c, &self.state) {
            (Command::Pause(_), State::Paused { .. }) => Err("it is already paused".into()),
            (Command::Resume, State::Running) => Err("it is running, not paused".into()),
            (Command::Rollback(_), State::RollingBack { .. }) => {
                Err("it is already rolling back".into())
            }
            (Command::Rollback(_), s) if s.terminal() => Err(format!(
                "it is {}; `deploy rollback` of a finished deployment creates a new deployment returning each device to its previous version",
                s.name()
            )),
            (_, s) if s.terminal() => Err(format!(
                "it is {} (finished); create a new deployment instead",
                s.name()
            )),
            (Command::Pause(r), State::Running) => Ok(self.set(State::Paused { reason: r })),
            (Command::Resume, State::Paused { .. }) => {
                let mut a = self.set(State::Running);
                // Resuming restarts the clock for devices still waiting.
                for d in self.devices.values_mut() {
                    if let DeviceStatus::Targeted { since } = &mut d.status {
                        *since = now;
                    }
                }
                a.extend(self.evaluate(now));
                Ok(a)
            }
            (Command::Abort(r), State::Running | State::Paused { .. }) => Ok(self.abort(r)),
            (Command::Rollback(r), State::Running | State::Paused { .. }) => {
                Ok(self.rollback(r, now))
            }
            (c, s) => Err(format!("cannot {} it while it is {}", c.verb(), s.name())),
        }
    }

    fn set(&mut self, s: State) -> Vec<Action> {
        self.state = s.clone();
        vec![Action::Changed { state: s }]
    }

    /// Pins every device that was sent the new model but has not finished with it.
    fn abort(&mut self, reason: String) -> Vec<Action> {
        let mut out = self.set(State::Aborted { reason });
        for (id, d) in self.devices.iter_mut() {
            if let DeviceStatus::Targeted { .. } | DeviceStatus::Failed { .. } = d.status {
                out.push(Action::Pin {
                    device: id.clone(),
                    fallback: d.previous.clone(),
                });
                if matches!(d.status, DeviceStatus::Targeted { .. }) {
                    d.status = DeviceStatus::Failed {
                        reason: "aborted before it finished".into(),
                    };
                }
            }
        }
        out
    }

    fn trip(&mut self, reason: String, now: u64) -> Vec<Action> {
        match self.strategy.on_trip {
            OnTrip::Pause => self.set(State::Paused { reason }),
            OnTrip::Rollback => self.rollback(reason, now),
        }
    }

    fn rollback(&mut self, reason: String, now: u64) -> Vec<Action> {
        let mut out = self.set(State::RollingBack { reason });
        self.rollback_started = Some(now);
        for (id, d) in self.devices.iter_mut() {
            let switched = matches!(
                d.status,
                DeviceStatus::Targeted { .. }
                    | DeviceStatus::Succeeded
                    | DeviceStatus::Failed { .. }
            );
            if !switched {
                continue;
            }
            // No previous model: the model is removed from the device.
            out.push(Action::Restore {
                device: id.clone(),
                digest: d.previous.clone(),
            });
            d.status = DeviceStatus::RolledBack { confirmed: false };
        }
        out.extend(self.on_tick(now));
        out
    }

    fn advance(&mut self, now: u64) -> Vec<Action> {
        if self.wave + 1 >= self.strategy.waves.len() {
            return self.set(State::Succeeded);
        }
        self.wave += 1;
        self.start_wave(now)
    }

    fn gates_verdict(&self, now: u64) -> Option<Result<(), String>> {
        let g = &self.strategy.gates;
        let resolved = self.wave_resolved_at?;
        let o = self.observation.clone().unwrap_or_default();
        if o.samples >= g.min_samples
            || now.saturating_sub(resolved) >= self.strategy.waves[0].timeout_ms
        {
            if o.samples < g.min_samples {
                return Some(Err(format!(
                    "gate: only {} canary predictions observed, {} needed",
                    o.samples, g.min_samples
                )));
            }
            if let Some(max) = g.max_error_rate
                && o.error_rate > max
            {
                return Some(Err(format!(
                    "gate: canary error rate {:.3} > {max}",
                    o.error_rate
                )));
            }
            if let (Some(max), Some(p)) = (g.max_p99_us, o.p99_us)
                && p > max
            {
                return Some(Err(format!("gate: canary p99 latency {p} µs > {max} µs")));
            }
            if let (Some(max), Some(s)) = (g.max_output_shift, o.output_shift)
                && s > max
            {
                return Some(Err(format!(
                    "gate: canary output shift {s:.3} vs the previous model > {max}"
                )));
            }
            if now.saturating_sub(resolved) >= g.observe_ms {
                return Some(Ok(()));
            }
        }
        None
    }

    fn evaluate(&mut self, now: u64) -> Vec<Action> {
        if self.state != State::Running {
            return Vec::new();
        }
        let w = &self.strategy.waves[self.wave];
        let total = self.wave_devices().count();
        let failed = self
            .wave_devices()
            .filter(|d| matches!(d.status, DeviceStatus::Failed { .. }))
            .count();
        let ok = self
            .wave_devices()
            .filter(|d| d.status == DeviceStatus::Succeeded)
            .count();
        if total == 0 {
            return self.advance(now);
        }
        let (errors, successes) = (failed as f64 / total as f64, ok as f64 / total as f64);
        if errors > w.error_threshold {
            return self.trip(
                format!("wave {}: {failed} of {total} devices failed", self.wave),
                now,
            );
        }
        if ok + failed < total {
            return Vec::new();
        }
        if successes < w.success_threshold {
            return self.trip(
                format!("wave {}: only {ok} of {total} devices succeeded", self.wave),
                now,
            );
        }
        if self.wave == 0 {
            self.wave_resolved_at.get_or_insert(now);
            match self.gates_verdict(now) {
                None => return Vec::new(),
                Some(Err(reason)) => return self.trip(reason, now),
                Some(Ok(())) => {}
            }
        }
        self.advance(now)
    }
}

#[cfg(test)]
#[path = "machine_tests.rs"]
mod tests;
