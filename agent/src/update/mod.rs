//! Updates: accept signed directives, pull bundles chunk by chunk, install into the
//! inactive A/B slot, self-test, switch atomically, watch a health window, roll back.
//!
//! The decisions live in two sans-IO machines ([`fetch::Fetcher`] for the download,
//! [`probation::Probation`] for the health window); this module is the small IO loop
//! around them: disk ([`disk::UpdateDisk`]), the link, the model handle, the clock.
//!
//! Guarantees:
//! - only a [`VerifiedBundle`] reaches [`disk::UpdateDisk::install`], and a model is loaded
//!   and self-tested from it *before* its slot is written, so a bundle that fails its
//!   self-test never touches a slot;
//! - a rejected directive or bundle leaves the running model untouched and is reported
//!   (`last_error`, phase `failed`);
//! - the accepted sequence is persisted before acting on a directive, so neither a replay
//!   nor a restart can apply an older directive;
//! - a restart resumes a download with only the missing chunks, resumes probation, and
//!   rolls back if the agent keeps restarting during probation.

pub mod disk;
pub mod fetch;
pub mod probation;

use std::sync::Arc;
use std::time::Duration;

use outpost_protocol::bundle::{VerifiedBundle, VerifiedManifest, Verifier};
use outpost_protocol::directive::{self, DirectiveContext, DirectiveError, VerifiedDirective};
use outpost_protocol::wire::{
    ChunkFrame, Health, InstalledModel, ReportedState, UpdatePhase, UpdateStatus,
};
use outpost_protocol::{Digest, Limits, TrustStore, topics};
use tokio::sync::{mpsc, watch};

use crate::clock::{mono_ms, unix_now};
use crate::config::UpdateConfig;
use crate::link::{LinkHandle, UpdateInbound};
use crate::models::{ActiveModel, ModelHandle};
use disk::{ProbationState, Slot, UpdateDisk, UpdateState};
use fetch::{Action, FetchConfig, Fetcher};
use outpost_inference::Model;
use probation::{Probation, Verdict};

/// Largest bundle file read from a slot.
const MAX_SLOT_BYTES: u64 = 600 * 1024 * 1024;

impl UpdateDisk {
    /// Writes a verified bundle into a slot. Taking [`VerifiedBundle`] is the point: no
    /// other type of bytes can be installed.
    pub fn install(&self, slot: Slot, bundle: &VerifiedBundle) -> std::io::Result<()> {
        self.write_slot(slot, &bundle.to_bytes())
    }
}

/// Everything the updater needs.
pub struct UpdaterParts {
    /// Device id.
    pub device_id: String,
    /// Tags reported with the state.
    pub tags: std::collections::BTreeMap<String, String>,
    /// Tuning.
    pub cfg: UpdateConfig,
    /// Trusted keys.
    pub trust: TrustStore,
    /// On-disk state.
    pub disk: UpdateDisk,
    /// Where the active model lives.
    pub models: ModelHandle,
    /// Reported state for the link to publish.
    pub report: watch::Sender<Option<ReportedState>>,
    /// Where update failures and rollbacks are recorded as events.
    pub events: Option<mpsc::Sender<crate::recorder::AgentEvent>>,
}

/// The updater.
pub struct Updater {
    p: UpdaterParts,
    limits: Limits,
    state: UpdateState,
    fetcher: Fetcher,
    current: Option<VerifiedDirective>,
    phase: UpdatePhase,
    probation: Option<Probation>,
    link: Option<LinkHandle>,
}

fn load_slot(
    disk: &UpdateDisk,
    trust: &TrustStore,
    slot: Slot,
) -> Result<Arc<ActiveModel>, String> {
    let bytes = disk
        .read_slot(slot, MAX_SLOT_BYTES)
        .map_err(|e| e.to_string())?;
    let bundle = Verifier::new(trust)
        .verify_bundle(&bytes)
        .map_err(|e| e.to_string())?;
    activate(&bundle)
}

fn activate(bundle: &VerifiedBundle) -> Result<Arc<ActiveModel>, String> {
    let m = bundle.manifest();
    let model = Model::load(bundle.model_bytes(), &m.contract).map_err(|e| e.to_string())?;
    Ok(Arc::new(ActiveModel::new(
        model,
        InstalledModel {
            bundle: bundle.digest(),
            model: m.model.clone(),
        },
        bundle.baseline_bytes().map(<[u8]>::to_vec),
    )))
}

/// Assembles from disk, loads and self-tests, then writes the slot (blocking work).
fn install_job(
    disk: &UpdateDisk,
    manifest: VerifiedManifest,
    slot: Slot,
) -> Result<Arc<ActiveModel>, String> {
    let digest = manifest.digest();
    let mut chunks = Vec::with_capacity(manifest.chunk_count() as usize);
    for i in 0..manifest.chunk_count() {
        chunks.push(
            disk.read_chunk(digest, i)
                .ok_or_else(|| format!("chunk {i} missing on disk"))?,
        );
    }
    let bundle = manifest
        .assemble(chunks.iter().map(Vec::as_slice))
        .map_err(|e| format!("bundle rejected: {e}"))?;
    let m = bundle.manifest();
    let model = Model::load(bundle.model_bytes(), &m.contract)
        .map_err(|e| format!("model rejected: {e}"))?;
    let samples = bundle
        .self_tests()
        .map_err(|e| format!("self-test samples rejected: {e}"))?;
    model
        .self_test(&samples)
        .map_err(|e| format!("self-test failed: {e}"))?;
    disk.install(slot, &bundle)
        .map_err(|e| format!("writing slot {slot:?}: {e}"))?;
    Ok(Arc::new(ActiveModel::new(
        model,
        InstalledModel {
            bundle: bundle.digest(),
            model: m.model.clone(),
        },
        bundle.baseline_bytes().map(<[u8]>::to_vec),
    )))
}

impl Updater {
    /// Restores state from disk: loads (re-verifies) the active slot, handles interrupted
    /// probation, and prepares to resume a pending download.
    pub fn boot(p: UpdaterParts) -> Self {
        let (mut state, load_err) = p.disk.load_state();
        let fetch_cfg = FetchConfig {
            window: p.cfg.window,
            request_timeout_ms: p.cfg.request_timeout.as_millis() as u64,
        };
        let mut u = Self {
            fetcher: Fetcher::new(fetch_cfg, p.trust.clone()),
            limits: Limits::default(),
            current: None,
            phase: state.last_outcome.unwrap_or(UpdatePhase::Idle),
            probation: None,
            link: None,
            state: UpdateState::default(),
            p,
        };
        if let Some(e) = load_err {
            tracing::error!("{e}");
            state.last_error = Some(e);
        }
        // Bring up the active slot, falling back to the other one.
        let mut active = None;
        if let Some(slot) = state.active {
            for s in [slot, slot.other()] {
                match load_slot(&u.p.disk, &u.p.trust, s) {
                    Ok(m) => {
                        if s != slot {
                            state.last_error = Some(format!(
                                "slot {slot:?} failed verification; serving slot {s:?}"
                            ));
                            state.active = Some(s);
                            state.probation = None;
                        }
                        active = Some(m);
                        break;
                    }
                    Err(e) if s == slot => tracing::error!(?s, error = %e, "active slot unusable"),
                    Err(_) => {}
                }
            }
            if active.is_none() {
                state.active = None;
            }
        }
        u.p.models.set_only(active);
        u.state = state;
        if let Some(pr) = u.state.probation.clone() {
            let boots = pr.boots + 1;
            if boots > u.p.cfg.max_probation_boots {
                let reason = format!("agent restarted {boots} times during the health window");
                u.rollback(&reason);
            } else {
                u.state.probation = Some(ProbationState { boots, ..pr });
                u.start_probation();
            }
        }
        u.save();
        u
    }

    /// Runs until `shutdown`.
    pub async fn run(
        mut self,
        link: LinkHandle,
        mut inbound: mpsc::Receiver<UpdateInbound>,
        mut shutdown: watch::Receiver<bool>,
    ) {
        self.link = Some(link);
        self.resume_pending().await;
        self.report();
        let mut tick = tokio::time::interval(Duration::from_millis(200));
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let models = self.p.models.clone();
        loop {
            tokio::select! {
                _ = shutdown.changed() => break,
                ev = inbound.recv() => match ev {
                    None => break,
                    Some(UpdateInbound::Directive(b)) => self.on_directive(&b).await,
                    Some(UpdateInbound::Frame(b)) => match ChunkFrame::decode(&b) {
                        Ok(f) => {
                            let acts = self.fetcher.on_frame(f, mono_ms());
                            self.execute(acts).await;
                        }
                        Err(e) => tracing::debug!(error = %e, "bad chunk frame dropped"),
                    },
                    Some(UpdateInbound::Connected) => {
                        let acts = self.fetcher.on_connected(mono_ms());
                        self.execute(acts).await;
                        self.report();
                    }
                    Some(UpdateInbound::Disconnected) => self.fetcher.on_disconnected(),
                },
                _ = tick.tick() => {
                    let acts = self.fetcher.on_tick(mono_ms());
                    self.execute(acts).await;
                    self.check_probation();
                }
                _ = models.activity(), if self.probation.is_some() => self.check_probation(),
            }
        }
        self.save();
    }

    fn save(&mut self) {
        self.state.last_outcome = Some(self.phase);
        if let Err(e) = self.p.disk.save_state(&self.state) {
            // The disk refused the write; the in-memory state still drives this run, and
            // the previous file remains valid (atomic replace).
            tracing::error!(error = %e, "cannot persist update state");
        }
    }

    fn event(&self, kind: &str, message: &str) {
        if let Some(tx) = &self.p.events {
            let target = self.current.as_ref().map(|d| {
                serde_json::json!({"deployment_id": d.directive().deployment_id, "sequence": d.sequence(), "model": d.directive().bundle.model})
            });
            let _ = tx.try_send(crate::recorder::AgentEvent {
                kind: kind.into(),
                message: message.into(),
                details: target.unwrap_or_default(),
            });
        }
    }

    fn fail(&mut self, reason: String) {
        tracing::warn!(device = %self.p.device_id, %reason, "update failed");
        self.event("update_failed", &reason);
        self.phase = UpdatePhase::Failed;
        self.state.last_error = Some(reason);
        self.state.pending = None;
        self.current = None;
        self.fetcher.cancel();
        self.p.disk.clear_downloads(None);
        self.save();
        self.report();
    }

    async fn on_directive(&mut self, bytes: &[u8]) {
        let ctx = DirectiveContext {
            device_id: &self.p.device_id,
            last_sequence: self.state.last_sequence,
            now: unix_now(),
        };
        match directive::verify(bytes, &self.p.trust, ctx, &self.limits) {
            // The retained directive comes back on every reconnect; nothing to do.
            Err(DirectiveError::Replayed(_)) => {}
            Err(e) => {
                tracing::warn!(device = %self.p.device_id, error = %e, "directive rejected");
                self.state.last_error = Some(format!("directive rejected: {e}"));
                self.save();
                self.report();
            }
            Ok(vd) => {
                let d = vd.directive();
                tracing::info!(device = %self.p.device_id, seq = d.sequence, model = %d.bundle.model, "directive accepted");
                // Persist the sequence before acting: a crash from here on can never
                // accept this directive (or an older one) again.
                self.state.last_sequence = Some(d.sequence);
                self.state.last_deployment = Some(d.deployment_id.clone());
                self.state.last_directive_sequence = Some(d.sequence);
                self.state.pending = Some(String::from_utf8_lossy(bytes).into_owned());
                self.state.last_error = None;
                self.save();
                self.apply(vd).await;
            }
        }
    }

    async fn resume_pending(&mut self) {
        let Some(raw) = self.state.pending.clone() else {
            return;
        };
        match directive::reverify_accepted(
            raw.as_bytes(),
            &self.p.trust,
            &self.p.device_id,
            &self.limits,
        ) {
            Ok(vd) => self.apply(vd).await,
            Err(e) => self.fail(format!("persisted directive no longer verifies: {e}")),
        }
    }

    async fn apply(&mut self, vd: VerifiedDirective) {
        let target = vd.directive().bundle.digest;
        let active = self.state.active;
        // A new directive supersedes probation of the previous one.
        self.probation = None;
        self.state.probation = None;
        if active.and_then(|s| self.state.slot(s)).map(|m| m.bundle) == Some(target) {
            self.current = Some(vd);
            self.finish(UpdatePhase::Succeeded);
            return;
        }
        let inactive = active.map(Slot::other).unwrap_or(Slot::A);
        if self.state.slot(inactive).map(|m| m.bundle) == Some(target) {
            // Already installed in the other slot (a rollback): switch without fetching.
            let disk = self.p.disk.clone();
            let trust = self.p.trust.clone();
            match tokio::task::spawn_blocking(move || load_slot(&disk, &trust, inactive)).await {
                Ok(Ok(m)) => {
                    self.current = Some(vd);
                    self.switch_to(inactive, m);
                    return;
                }
                Ok(Err(e)) => tracing::warn!(error = %e, "inactive slot unusable; fetching again"),
                Err(e) => tracing::error!(error = %e, "slot load task failed"),
            }
        }
        self.fetcher.cancel();
        self.p.disk.clear_downloads(Some(target));
        self.phase = UpdatePhase::Downloading;
        // Resume from disk if the head (and maybe chunks) are already there.
        let resumed = self.p.disk.read_head(target).and_then(|head| {
            let m = Verifier::new(&self.p.trust)
                .verify_head(&head)
                .ok()?
                .expect_digest(target)
                .ok()?;
            let have = (0..m.chunk_count())
                .map(|i| {
                    self.p
                        .disk
                        .read_chunk(target, i)
                        .is_some_and(|c| m.check_chunk(i, &c).is_ok())
                })
                .collect::<Vec<bool>>();
            Some((m, have))
        });
        let acts = match resumed {
            Some((m, have)) => {
                let held = have.iter().filter(|h| **h).count();
                tracing::info!(device = %self.p.device_id, held, total = have.len(), "resuming download");
                self.fetcher.resume(vd.clone(), m, have, mono_ms())
            }
            None => self.fetcher.begin(vd.clone(), mono_ms()),
        };
        self.current = Some(vd);
        self.report();
        self.execute(acts).await;
    }

    async fn execute(&mut self, actions: Vec<Action>) {
        for a in actions {
            match a {
                Action::Request(r) => {
                    if let Some(l) = &self.link {
                        let _ =
                            l.publish(topics::chunk_request(&self.p.device_id), r.encode(), false);
                    }
                }
                Action::PersistHead { digest, head } => {
                    let disk = self.p.disk.clone();
                    if let Err(e) = blocking(move || disk.write_head(digest, &head)).await {
                        tracing::error!(error = %e, "cannot persist bundle head");
                    }
                }
                Action::PersistChunk {
                    digest,
                    index,
                    data,
                } => {
                    let disk = self.p.disk.clone();
                    // A chunk that fails to persist is re-fetched after a restart; the
                    // in-memory download still completes from the copy on disk or not at
                    // all (install reads from disk), so report rather than pretend.
                    if let Err(e) = blocking(move || disk.write_chunk(digest, index, &data)).await {
                        tracing::error!(error = %e, index, "cannot persist chunk");
                    }
                    let (done, total) = self.fetcher.progress();
                    if done == total || done % 8 == 0 {
                        self.report();
                    }
                }
                Action::Install {
                    directive: _,
                    manifest,
                } => self.install(*manifest).await,
                Action::Fail {
                    directive: _,
                    reason,
                } => self.fail(reason),
            }
        }
    }

    async fn install(&mut self, manifest: VerifiedManifest) {
        self.phase = UpdatePhase::Installing;
        self.report();
        // Installing holds a few copies of the bundle in memory at once; one install per
        // CPU at a time. On a gateway (one agent per process) this never waits; in the
        // simulator it keeps a thousand agents from assembling a thousand bundles at once.
        let _permit = install_permits().acquire().await;
        let slot = self.state.active.map(Slot::other).unwrap_or(Slot::A);
        let disk = self.p.disk.clone();
        let r = tokio::task::spawn_blocking(move || install_job(&disk, manifest, slot)).await;
        match r {
            Ok(Ok(model)) => {
                self.p.disk.clear_downloads(None);
                self.switch_to(slot, model);
            }
            Ok(Err(reason)) => self.fail(reason),
            Err(e) => self.fail(format!("install task failed: {e}")),
        }
    }

    /// Makes `slot` active (one atomic state write), swaps the model in, starts probation.
    fn switch_to(&mut self, slot: Slot, model: Arc<ActiveModel>) {
        let (dep, seq) = self
            .current
            .as_ref()
            .map(|d| (d.directive().deployment_id.clone(), d.sequence()))
            .unwrap_or_default();
        self.state.set_slot(slot, Some(model.info.clone()));
        self.state.active = Some(slot);
        self.state.pending = None;
        self.state.probation = Some(ProbationState {
            deployment_id: dep,
            sequence: seq,
            boots: 0,
        });
        self.phase = UpdatePhase::Probation;
        self.save();
        tracing::info!(device = %self.p.device_id, model = %model.info.model, ?slot, "switched; health window started");
        self.p.models.set_only(Some(model));
        self.start_probation();
        self.report();
    }

    fn start_probation(&mut self) {
        let Some(m) = self.p.models.only() else {
            return;
        };
        let (ok, errors) = m.stats.outcomes();
        self.phase = UpdatePhase::Probation;
        self.probation = Some(Probation::start(
            mono_ms(),
            self.p.cfg.health_window.as_millis() as u64,
            u64::from(self.p.cfg.health_inferences),
            ok,
            errors,
        ));
    }

    fn check_probation(&mut self) {
        let (Some(p), Some(m)) = (&self.probation, self.p.models.only()) else {
            return;
        };
        let (ok, errors) = m.stats.outcomes();
        match p.check(mono_ms(), ok, errors) {
            None => {}
            Some(Verdict::Healthy) => {
                tracing::info!(device = %self.p.device_id, model = %m.info.model, "health window passed");
                self.finish(UpdatePhase::Succeeded);
            }
            Some(Verdict::Unhealthy(reason)) => self.rollback(&reason),
        }
    }

    fn finish(&mut self, phase: UpdatePhase) {
        self.phase = phase;
        self.probation = None;
        self.state.probation = None;
        self.state.pending = None;
        self.save();
        self.report();
    }

    /// Switches back to the other slot (loading it from disk) after a failed health window.
    fn rollback(&mut self, reason: &str) {
        tracing::warn!(device = %self.p.device_id, %reason, "rolling back");
        self.event("rolled_back", reason);
        self.probation = None;
        self.state.probation = None;
        let back = self.state.active.map(Slot::other);
        let restored = back.and_then(|s| match load_slot(&self.p.disk, &self.p.trust, s) {
            Ok(m) => Some((s, m)),
            Err(e) => {
                tracing::error!(error = %e, "previous slot unusable; no model will serve");
                None
            }
        });
        match restored {
            Some((s, m)) => {
                self.state.active = Some(s);
                self.p.models.set_only(Some(m));
            }
            None => {
                self.state.active = None;
                self.p.models.set_only(None);
            }
        }
        self.phase = UpdatePhase::RolledBack;
        self.state.last_error = Some(format!("rolled back: {reason}"));
        self.save();
        self.report();
    }

    fn report(&self) {
        let installed = |s: Option<Slot>| s.and_then(|s| self.state.slot(s).cloned());
        let active = self.p.models.only().map(|m| m.info.clone());
        let (done, total) = self.fetcher.progress();
        let target = self.current.as_ref().map(|d| InstalledModel {
            bundle: d.directive().bundle.digest,
            model: d.directive().bundle.model.clone(),
        });
        let s = ReportedState {
            device_id: self.p.device_id.clone(),
            agent_version: crate::VERSION.into(),
            at: unix_now(),
            health: if active.is_some() {
                Health::Ok
            } else {
                Health::NoModel
            },
            active,
            previous: installed(self.state.active.map(Slot::other)),
            directive_sequence: self.state.last_sequence,
            update: UpdateStatus {
                phase: self.phase,
                deployment_id: self.state.last_deployment.clone(),
                sequence: self.state.last_directive_sequence,
                target,
                chunks_done: done,
                chunks_total: total,
            },
            last_error: self.state.last_error.clone(),
            tags: self.p.tags.clone(),
        };
        let _ = self.p.report.send(Some(s));
    }

    /// The digest being downloaded, if any.
    pub fn downloading(&self) -> Option<Digest> {
        self.fetcher.target()
    }
}

fn install_permits() -> &'static tokio::sync::Semaphore {
    static P: std::sync::OnceLock<tokio::sync::Semaphore> = std::sync::OnceLock::new();
    P.get_or_init(|| {
        tokio::sync::Semaphore::new(
            std::thread::available_parallelism()
                .map(|n| n.get())
                .unwrap_or(1),
        )
    })
}

async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> std::io::Result<T> + Send + 'static,
) -> std::io::Result<T> {
    tokio::task::spawn_blocking(f)
        .await
        .unwrap_or_else(|e| Err(std::io::Error::other(e.to_string())))
}
