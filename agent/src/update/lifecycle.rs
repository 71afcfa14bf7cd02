//! The update lifecycle of one model slot, as a sans-IO state machine.
//!
//! Inputs are what the IO loop observed — a new desired target (from an accepted
//! directive; `None`: the model was removed from the set), a download finished or failed,
//! an install finished, a slot loaded, time and the model's counters — with the current
//! monotonic time. Outputs are [`Action`]s for the loop to carry out. It never touches
//! disk, network or models, so every interleaving is tested deterministically
//! (`lifecycle_tests.rs`).
//!
//! ```text
//!            desired(t) ─┬─ t is active ──────────────────────────────► Idle (succeeded)
//!                        ├─ t is in the other slot ─► Switching ─► Probation
//!                        └─ else ─► Fetching ─► Installing ─► Probation ─► Idle
//!   Probation ─ model fails ─► RollingBack ─► Idle (rolled back, other slot active)
//!   desired(None) ─► Removing (cancel, unload, free slots)
//! ```
//!
//! Guarantees (checked by the property test):
//! - a newer desired target cancels whatever is in flight for an older one;
//! - nothing is activated unless it is the current target: an install or slot load that
//!   finishes after the target changed is recorded (the slot holds it) but not switched to;
//! - the active slot is never the one being written;
//! - every failure leaves the previous model serving and says why.

use outpost_protocol::Digest;
use outpost_protocol::directive::ModelTarget;
use outpost_protocol::records::AgentEventKind;
use outpost_protocol::wire::{Health, InstalledModel, ModelState, UpdatePhase};
use serde::{Deserialize, Serialize};

pub use super::disk::Slot;
use super::probation::{Probation, Verdict};

/// Probation settings.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LifecycleConfig {
    /// A switched model passes after this long without an error, ms.
    pub health_window_ms: u64,
    /// …or after this many successful inferences.
    pub health_inferences: u64,
    /// Agent restarts during probation tolerated before rolling back.
    pub max_probation_boots: u32,
}

/// A desired target with the sequence of the directive that asked for it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Target {
    /// The directive's entry.
    pub entry: ModelTarget,
    /// The directive's sequence.
    pub sequence: u64,
}

impl Target {
    /// The bundle.
    pub fn digest(&self) -> Digest {
        self.entry.digest
    }
    /// What the slot will hold once installed.
    pub fn installed(&self) -> InstalledModel {
        InstalledModel {
            bundle: self.entry.digest,
            model: self.entry.model_ref(),
        }
    }
}

/// Where the slot is.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "phase", rename_all = "snake_case")]
pub enum Phase {
    /// Nothing in flight.
    Idle,
    /// Downloading the target.
    Fetching,
    /// Assembling, self-testing and writing the target into `slot`.
    Installing {
        /// The slot being written (never the active one).
        slot: Slot,
        /// The install job's ticket.
        ticket: u64,
    },
    /// Loading `slot`, which already holds the target.
    Switching {
        /// The slot.
        slot: Slot,
        /// The load job's ticket.
        ticket: u64,
    },
    /// Switched to the target; watching its health.
    Probation {
        /// Monotonic start, ms.
        started_ms: u64,
        /// The model's counters at the switch.
        base_ok: u64,
        /// The model's error count at the switch.
        base_errors: u64,
        /// Agent starts since the switch.
        boots: u32,
    },
    /// Loading the other slot after a failed health window.
    RollingBack {
        /// The slot going back to.
        slot: Slot,
        /// Why.
        reason: String,
        /// The load job's ticket.
        ticket: u64,
    },
    /// Removed from the desired set; unloading.
    Removing,
}

/// What the IO loop must do.
#[derive(Debug, Clone, PartialEq)]
pub enum Action {
    /// Start downloading `target` (resuming what is on disk).
    Fetch(ModelTarget),
    /// Stop any download in flight for this model.
    CancelFetch,
    /// Assemble, self-test and write the downloaded target into `slot`; report with
    /// [`Lifecycle::on_installed`] and the ticket. Only the install holding the latest
    /// ticket may write (an older one was superseded).
    Install {
        /// What.
        target: ModelTarget,
        /// Where (the inactive slot).
        slot: Slot,
        /// Identifies this job's result.
        ticket: u64,
    },
    /// Load `slot` from disk (verify, load); report with [`Lifecycle::on_slot_loaded`].
    LoadSlot {
        /// The slot.
        slot: Slot,
        /// Identifies this job's result.
        ticket: u64,
    },
    /// Serve the model loaded for `slot` (from the install or the slot load just done).
    Activate(Slot),
    /// Stop serving this model.
    Unload,
    /// Delete the model's slots and downloads.
    FreeSlots,
    /// Persist the state.
    Persist,
    /// Record an agent event.
    Event {
        /// Kind (`UpdateFailed`, `RolledBack`, `ModelRemoved`).
        kind: AgentEventKind,
        /// Message.
        message: String,
    },
}

/// The persisted and reported state of one model slot.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Lifecycle {
    /// Model name.
    pub name: String,
    /// What each slot holds.
    pub slots: [Option<InstalledModel>; 2],
    /// The serving slot.
    pub active: Option<Slot>,
    /// The current target (last accepted directive's entry for this model).
    pub target: Option<Target>,
    /// Where the update is.
    pub phase: Phase,
    /// How the last update ended (reported while idle).
    pub outcome: UpdatePhase,
    /// Most recent error.
    pub last_error: Option<String>,
    /// Last job ticket issued: a job's result counts only if its ticket is the one the
    /// phase waits for, so a late result of a superseded job is never mistaken for the
    /// current one's.
    #[serde(default)]
    pub ticket: u64,
}

fn idx(s: Slot) -> usize {
    match s {
        Slot::A => 0,
        Slot::B => 1,
    }
}

impl Lifecycle {
    /// A model slot that holds nothing yet.
    pub fn new(name: &str) -> Self {
        Self {
            name: name.to_owned(),
            slots: [None, None],
            active: None,
            target: None,
            phase: Phase::Idle,
            outcome: UpdatePhase::Idle,
            last_error: None,
            ticket: 0,
        }
    }

    fn next_ticket(&mut self) -> u64 {
        self.ticket += 1;
        self.ticket
    }

    /// What `s` holds.
    pub fn slot(&self, s: Slot) -> Option<&InstalledModel> {
        self.slots[idx(s)].as_ref()
    }

    /// The model being served.
    pub fn active_model(&self) -> Option<&InstalledModel> {
        self.active.and_then(|s| self.slot(s))
    }

    /// The other slot's model (the rollback target).
    pub fn previous_model(&self) -> Option<&InstalledModel> {
        self.active.and_then(|s| self.slot(s.other()))
    }

    fn inactive(&self) -> Slot {
        self.active.map(Slot::other).unwrap_or(Slot::A)
    }

    /// The phase to report.
    pub fn reported_phase(&self) -> UpdatePhase {
        match &self.phase {
            Phase::Idle => self.outcome,
            Phase::Fetching => UpdatePhase::Downloading,
            Phase::Installing { .. } | Phase::Switching { .. } => UpdatePhase::Installing,
            Phase::Probation { .. } => UpdatePhase::Probation,
            Phase::RollingBack { .. } => UpdatePhase::Installing,
            Phase::Removing => UpdatePhase::Removing,
        }
    }

    /// This model's entry in the reported state: `loaded` is whether the model handle
    /// serves it, `chunks` the download's (done, total).
    pub fn model_state(&self, loaded: bool, chunks: (u32, u32)) -> ModelState {
        let phase = self.reported_phase();
        ModelState {
            name: self.name.clone(),
            phase,
            active: self.active_model().cloned(),
            previous: self.previous_model().cloned(),
            target: self.target.as_ref().map(Target::installed),
            deployment_id: self.target.as_ref().map(|t| t.entry.deployment_id.clone()),
            sequence: self.target.as_ref().map(|t| t.sequence),
            chunks_done: chunks.0,
            chunks_total: chunks.1,
            health: match (loaded, phase) {
                (false, _) => Health::NoModel,
                (true, UpdatePhase::Failed | UpdatePhase::RolledBack) => Health::Degraded,
                (true, _) => Health::Ok,
            },
            last_error: self.last_error.clone(),
        }
    }

    /// Whether the model is being removed.
    pub fn removing(&self) -> bool {
        self.phase == Phase::Removing
    }

    fn fail(&mut self, reason: String, out: &mut Vec<Action>) {
        self.phase = Phase::Idle;
        self.outcome = UpdatePhase::Failed;
        out.push(Action::Event {
            kind: AgentEventKind::UpdateFailed,
            message: format!("{}: {reason}", self.name),
        });
        self.last_error = Some(reason);
        out.push(Action::Persist);
    }

    fn leave_in_flight(&mut self, out: &mut Vec<Action>) {
        if matches!(self.phase, Phase::Fetching | Phase::Installing { .. }) {
            out.push(Action::CancelFetch);
        }
    }

    /// A newly accepted directive's entry for this model (`None`: the model is no longer
    /// in the desired set).
    pub fn on_desired(&mut self, target: Option<Target>) -> Vec<Action> {
        let mut out = Vec::new();
        let Some(t) = target else {
            if self.removing() {
                return out;
            }
            self.leave_in_flight(&mut out);
            self.phase = Phase::Removing;
            self.target = None;
            self.active = None;
            self.slots = [None, None];
            out.push(Action::Unload);
            out.push(Action::FreeSlots);
            out.push(Action::Event {
                kind: AgentEventKind::ModelRemoved,
                message: format!("{} removed from the desired set", self.name),
            });
            out.push(Action::Persist);
            return out;
        };
        let same_target = self.target.as_ref().map(Target::digest) == Some(t.digest());
        self.target = Some(t.clone());
        if same_target && !matches!(self.phase, Phase::Idle | Phase::Removing) {
            // The same bundle asked again (a re-issued directive): keep going.
            out.push(Action::Persist);
            return out;
        }
        self.leave_in_flight(&mut out);
        self.last_error = None;
        let d = t.digest();
        if self.active_model().map(|m| m.bundle) == Some(d) && !self.removing() {
            if !matches!(self.phase, Phase::Probation { .. }) {
                self.phase = Phase::Idle;
                self.outcome = UpdatePhase::Succeeded;
            }
        } else if let Some(slot) = [Slot::A, Slot::B]
            .into_iter()
            .find(|s| Some(*s) != self.active && self.slot(*s).map(|m| m.bundle) == Some(d))
        {
            // Already on disk (a rollback to the previous model): no download.
            let ticket = self.next_ticket();
            self.phase = Phase::Switching { slot, ticket };
            out.push(Action::LoadSlot { slot, ticket });
        } else {
            self.phase = Phase::Fetching;
            out.push(Action::Fetch(t.entry.clone()));
        }
        out.push(Action::Persist);
        out
    }

    /// The download of `digest` is complete (every chunk verified and on disk).
    pub fn on_fetched(&mut self, digest: Digest) -> Vec<Action> {
        match (&self.phase, &self.target) {
            (Phase::Fetching, Some(t)) if t.digest() == digest => {
                let (slot, entry) = (self.inactive(), t.entry.clone());
                let ticket = self.next_ticket();
                self.phase = Phase::Installing { slot, ticket };
                vec![
                    Action::Install {
                        target: entry,
                        slot,
                        ticket,
                    },
                    Action::Persist,
                ]
            }
            // Superseded while it downloaded.
            _ => Vec::new(),
        }
    }

    /// The download of `digest` cannot succeed.
    pub fn on_fetch_failed(&mut self, digest: Digest, reason: String) -> Vec<Action> {
        let mut out = Vec::new();
        if self.phase == Phase::Fetching && self.target.as_ref().map(Target::digest) == Some(digest)
        {
            self.fail(reason, &mut out);
        }
        out
    }

    /// The install job `ticket` of `digest` into `slot` finished (`Ok`: the slot holds it
    /// and its model is loaded and self-tested).
    #[allow(clippy::too_many_arguments)]
    pub fn on_installed(
        &mut self,
        ticket: u64,
        digest: Digest,
        slot: Slot,
        result: Result<InstalledModel, String>,
        now_ms: u64,
        ok: u64,
        errors: u64,
    ) -> Vec<Action> {
        let mut out = Vec::new();
        let current = matches!(self.phase, Phase::Installing { slot: s, ticket: t } if s == slot && t == ticket)
            && self.target.as_ref().map(Target::digest) == Some(digest);
        match result {
            Ok(m) => {
                // The slot holds it now, switched to or not.
                if self.active != Some(slot) {
                    self.slots[idx(slot)] = Some(m);
                }
                if current {
                    self.switch(slot, now_ms, ok, errors, &mut out);
                } else {
                    out.push(Action::Persist);
                }
            }
            Err(reason) if current => self.fail(reason, &mut out),
            Err(_) => {}
        }
        out
    }

    fn switch(&mut self, slot: Slot, now_ms: u64, ok: u64, errors: u64, out: &mut Vec<Action>) {
        self.active = Some(slot);
        self.phase = Phase::Probation {
            started_ms: now_ms,
            base_ok: ok,
            base_errors: errors,
            boots: 0,
        };
        out.push(Action::Activate(slot));
        out.push(Action::Persist);
    }

    /// The load job `ticket` of `slot` finished (`Ok`: its model is loaded and ready to
    /// serve).
    pub fn on_slot_loaded(
        &mut self,
        ticket: u64,
        slot: Slot,
        result: Result<(), String>,
        now_ms: u64,
        ok: u64,
        errors: u64,
    ) -> Vec<Action> {
        let mut out = Vec::new();
        match (&self.phase, result) {
            (Phase::Switching { slot: s, ticket: t }, Ok(())) if *s == slot && *t == ticket => {
                self.switch(slot, now_ms, ok, errors, &mut out);
            }
            (Phase::Switching { slot: s, ticket: t }, Err(e)) if *s == slot && *t == ticket => {
                // The slot is unusable: fetch the target again instead.
                self.slots[idx(slot)] = None;
                self.last_error = Some(format!("slot {slot:?} unusable ({e}); downloading again"));
                if let Some(t) = &self.target {
                    self.phase = Phase::Fetching;
                    out.push(Action::Fetch(t.entry.clone()));
                }
                out.push(Action::Persist);
            }
            (
                Phase::RollingBack {
                    slot: s,
                    reason,
                    ticket: t,
                },
                r,
            ) if *s == slot && *t == ticket => {
                let reason = reason.clone();
                match r {
                    Ok(()) => {
                        self.active = Some(slot);
                        out.push(Action::Activate(slot));
                        self.last_error = Some(format!("rolled back: {reason}"));
                    }
                    Err(e) => {
                        self.active = None;
                        self.slots[idx(slot)] = None;
                        out.push(Action::Unload);
                        self.last_error = Some(format!(
                            "rolled back ({reason}), but the previous slot is unusable ({e}): no model serves"
                        ));
                    }
                }
                self.phase = Phase::Idle;
                self.outcome = UpdatePhase::RolledBack;
                out.push(Action::Persist);
            }
            _ => {}
        }
        out
    }

    /// Time passes: judge probation on the model's counters.
    pub fn on_tick(
        &mut self,
        now_ms: u64,
        cfg: &LifecycleConfig,
        ok: u64,
        errors: u64,
    ) -> Vec<Action> {
        let Phase::Probation {
            started_ms,
            base_ok,
            base_errors,
            ..
        } = self.phase
        else {
            return Vec::new();
        };
        let p = Probation::start(
            started_ms,
            cfg.health_window_ms,
            cfg.health_inferences,
            base_ok,
            base_errors,
        );
        match p.check(now_ms, ok, errors) {
            None => Vec::new(),
            Some(Verdict::Healthy) => {
                self.phase = Phase::Idle;
                self.outcome = UpdatePhase::Succeeded;
                vec![Action::Persist]
            }
            Some(Verdict::Unhealthy(reason)) => self.roll_back(reason),
        }
    }

    fn roll_back(&mut self, reason: String) -> Vec<Action> {
        let mut out = vec![Action::Event {
            kind: AgentEventKind::RolledBack,
            message: format!("{}: {reason}", self.name),
        }];
        let back = self.active.map(Slot::other);
        match back.filter(|b| self.slot(*b).is_some()) {
            Some(b) => {
                let ticket = self.next_ticket();
                self.phase = Phase::RollingBack {
                    slot: b,
                    reason,
                    ticket,
                };
                out.push(Action::LoadSlot { slot: b, ticket });
            }
            None => {
                self.active = None;
                self.phase = Phase::Idle;
                self.outcome = UpdatePhase::RolledBack;
                self.last_error = Some(format!(
                    "rolled back: {reason}; no previous model: none serves"
                ));
                out.push(Action::Unload);
            }
        }
        out.push(Action::Persist);
        out
    }

    /// The agent started: resume what was in flight. `loaded` is whether the active slot
    /// loaded (the loop tried; `None` when there is no active slot).
    pub fn on_boot(&mut self, cfg: &LifecycleConfig, now_ms: u64) -> Vec<Action> {
        let mut out = Vec::new();
        match self.phase.clone() {
            Phase::Probation { boots, .. } => {
                if boots + 1 > cfg.max_probation_boots {
                    return self.roll_back(format!(
                        "agent restarted {} times during the health window",
                        boots + 1
                    ));
                }
                self.phase = Phase::Probation {
                    started_ms: now_ms,
                    base_ok: 0,
                    base_errors: 0,
                    boots: boots + 1,
                };
                out.push(Action::Persist);
            }
            // Anything in flight starts over from the target (a download resumes with
            // the chunks on disk; a half-done install or switch is redone).
            Phase::Fetching | Phase::Installing { .. } | Phase::Switching { .. } => {
                self.phase = Phase::Idle;
                let t = self.target.clone();
                out.extend(self.on_desired(t));
            }
            Phase::RollingBack { slot, reason, .. } => {
                let ticket = self.next_ticket();
                self.phase = Phase::RollingBack {
                    slot,
                    reason,
                    ticket,
                };
                out.push(Action::LoadSlot { slot, ticket });
            }
            Phase::Removing => {
                out.push(Action::FreeSlots);
            }
            Phase::Idle => {}
        }
        out
    }

    /// The active slot failed to load at start: serve the other one if it loads (the loop
    /// tries and reports with `other_loaded`), recorded as an error.
    pub fn on_active_unusable(&mut self, error: String, other_loaded: bool) -> Vec<Action> {
        let Some(a) = self.active else {
            return Vec::new();
        };
        self.slots[idx(a)] = None;
        if other_loaded {
            self.active = Some(a.other());
            self.last_error = Some(format!(
                "slot {a:?} failed verification ({error}); serving slot {:?}",
                a.other()
            ));
            if matches!(self.phase, Phase::Probation { .. }) {
                self.phase = Phase::Idle;
                self.outcome = UpdatePhase::RolledBack;
            }
        } else {
            self.active = None;
            self.last_error = Some(format!("no usable slot ({error})"));
        }
        vec![Action::Persist]
    }
}
