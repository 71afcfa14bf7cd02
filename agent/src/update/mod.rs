//! Updates: accept signed directives that list every model the device should run, and
//! reconcile each model slot on its own — pull its bundle chunk by chunk, install into its
//! inactive A/B slot, self-test, switch atomically, watch a health window, roll back,
//! unload when it leaves the set.
//!
//! The decisions live in sans-IO machines: [`lifecycle::Lifecycle`] per model (what to do
//! next), [`fetch::Fetcher`] per download (its request timeout from [`rto::Rto`]),
//! [`probation::Probation`] for the health window.
//! This module is the IO loop around them: the disk ([`disk::UpdateDisk`]), the link
//! (behind [`Publish`]), the model handle, the clock, and background jobs for the slow
//! parts (install, slot load, slot removal).
//!
//! Guarantees:
//! - only a [`VerifiedBundle`] reaches [`disk::UpdateDisk::install`], and a model is loaded
//!   and self-tested from it *before* its slot is written;
//! - a newer accepted directive cancels what is in flight for an older one, and a model is
//!   switched to only if it is still the latest accepted directive's target for its slot
//!   (the lifecycle checks on completion; a slot load checks the bundle digest);
//! - every slot write, load and removal of a model runs under that model's lock and a
//!   superseded write is abandoned, so the active slot is never written;
//! - the accepted sequence is persisted before acting on a directive, so neither a replay
//!   nor a restart can apply an older directive;
//! - a directive that is refused (signature, expiry, clock skew, budget) leaves the running
//!   models untouched and is reported with its reason (`directive_rejected`);
//! - updating one model never unloads or pauses another.

pub mod admit;
pub mod config;
pub mod disk;
pub mod fetch;
mod jobs;
pub mod lifecycle;
pub mod probation;
mod report;
pub mod rto;
pub mod trust;

#[cfg(test)]
mod lifecycle_tests;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use outpost_protocol::bundle::{VerifiedBundle, VerifiedManifest, Verifier};
use outpost_protocol::directive::{DirectiveContext, ModelTarget};
use outpost_protocol::records::AgentEventKind;
use outpost_protocol::wire::{ChunkFrame, DirectiveRejection, ReportedState};
use outpost_protocol::{Limits, TrustStore, topics};
use serde::Serialize;
use tokio::sync::{mpsc, watch};

use crate::clock::{mono_ms, unix_now};
use crate::link::{Publish, UpdateInbound};
use crate::models::{ActiveModel, ModelHandle};
use admit::Admission;
pub use config::{ModelsConfig, ModelsSection, UpdateConfig, UpdateSection};
use disk::{Slot, UpdateDisk, UpdateState};
use fetch::{FetchConfig, Fetcher};
use jobs::{Job, JobDone};
use lifecycle::{Action, LifecycleConfig};

impl UpdateDisk {
    /// Writes a verified bundle into a model's slot. Taking [`VerifiedBundle`] is the
    /// point: no other type of bytes can be installed.
    pub fn install(&self, name: &str, slot: Slot, bundle: &VerifiedBundle) -> std::io::Result<()> {
        self.write_slot(name, slot, &bundle.to_bytes())
    }
}

/// Everything the updater needs.
pub struct UpdaterParts {
    /// Device id.
    pub device_id: String,
    /// Tags reported with the state.
    pub tags: BTreeMap<String, String>,
    /// Tuning.
    pub cfg: UpdateConfig,
    /// Memory and disk budgets for the model set.
    pub budget: ModelsConfig,
    /// Trusted keys (loaded from `trust_dir`).
    pub trust: TrustStore,
    /// The trust directory, which directives may change (key rotation); `None` keeps such
    /// changes in memory only.
    pub trust_dir: Option<std::path::PathBuf>,
    /// On-disk state.
    pub disk: UpdateDisk,
    /// Where the active models live.
    pub models: ModelHandle,
    /// Reported state for the link to publish.
    pub report: watch::Sender<Option<ReportedState>>,
    /// Where update failures, rollbacks and refusals are recorded as events.
    pub events: Option<mpsc::Sender<crate::recorder::AgentEvent>>,
}

/// Details of an update event (the `details` of an agent event).
#[derive(Debug, Serialize)]
struct EventDetails<'a> {
    model: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    deployment_id: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    sequence: Option<u64>,
}

/// The updater: one [`Lifecycle`] and at most one [`Fetcher`] per model.
pub struct Updater {
    p: UpdaterParts,
    limits: Limits,
    lcfg: LifecycleConfig,
    fcfg: FetchConfig,
    state: UpdateState,
    fetchers: BTreeMap<String, Fetcher>,
    /// Verified manifests of completed downloads, waiting for their install.
    manifests: BTreeMap<String, Box<VerifiedManifest>>,
    /// Per-model slot lock and write generation (see [`jobs`]).
    guards: BTreeMap<String, Arc<jobs::SlotGuard>>,
    jobs_tx: mpsc::UnboundedSender<JobDone>,
    jobs_rx: Option<mpsc::UnboundedReceiver<JobDone>>,
    link: Option<Arc<dyn Publish>>,
    connected: bool,
    /// Actions decided at boot, carried out when the loop starts (they spawn jobs).
    boot_actions: Vec<(String, Vec<Action>)>,
    /// A device-level error (unreadable state file), reported.
    last_error: Option<String>,
    dirty: bool,
    disk_used: u64,
    /// Keys a directive retired: only for reloading slots installed while they were
    /// trusted (see [`trust`]).
    retired: TrustStore,
}

impl Updater {
    /// Restores state from disk: loads (re-verifies) each model's active slot, falling
    /// back to its other slot, removes leftovers of models no longer known, and decides
    /// what each model resumes (download, install, probation, rollback, removal).
    pub fn boot(p: UpdaterParts) -> Self {
        let (state, load_err) = p.disk.load_state();
        let (jobs_tx, jobs_rx) = mpsc::unbounded_channel();
        let mut u = Self {
            limits: Limits::default(),
            lcfg: LifecycleConfig {
                health_window_ms: p.cfg.health_window.as_millis() as u64,
                health_inferences: u64::from(p.cfg.health_inferences),
                max_probation_boots: p.cfg.max_probation_boots,
            },
            fcfg: FetchConfig {
                window: p.cfg.window,
                request_timeout_ms: p.cfg.request_timeout.as_millis() as u64,
            },
            state,
            fetchers: BTreeMap::new(),
            manifests: BTreeMap::new(),
            guards: BTreeMap::new(),
            jobs_tx,
            jobs_rx: Some(jobs_rx),
            link: None,
            connected: false,
            boot_actions: Vec::new(),
            last_error: None,
            dirty: true,
            disk_used: 0,
            retired: p
                .trust_dir
                .as_deref()
                .map(trust::load_retired)
                .unwrap_or_default(),
            p,
        };
        if let Some(e) = load_err {
            tracing::error!("{e}");
            u.last_error = Some(e);
        }
        for dir in u.p.disk.model_dirs() {
            if !u.state.models.contains_key(&dir) && outpost_protocol::manifest::valid_name(&dir) {
                tracing::info!(model = %dir, "removing the slots of a model no longer in the state");
                if let Err(e) = u.p.disk.remove_model(&dir) {
                    tracing::warn!(model = %dir, error = %e, "cannot remove leftover model slots");
                }
            }
        }
        let names: Vec<String> = u.state.models.keys().cloned().collect();
        for name in names {
            let mut acts = u.boot_model(&name);
            let l = u.state.models.get_mut(&name).expect("known name");
            acts.extend(l.on_boot(&u.lcfg, mono_ms()));
            u.boot_actions.push((name, acts));
        }
        u.flush();
        u
    }

    /// Loads the active slot of `name` (or the other one) into the model handle.
    fn boot_model(&mut self, name: &str) -> Vec<Action> {
        let l = &self.state.models[name];
        let Some(a) = l.active else {
            return Vec::new();
        };
        let expect = |s: Slot| l.slot(s).map(|m| m.bundle);
        let bundle_trust = self.bundle_trust();
        match jobs::load_slot(&self.p.disk, &bundle_trust, name, a, expect(a)) {
            Ok(m) => {
                self.p.models.insert(m);
                Vec::new()
            }
            Err(e) => {
                tracing::error!(model = %name, slot = ?a, error = %e, "active slot unusable");
                let other = expect(a.other()).and_then(|d| {
                    jobs::load_slot(&self.p.disk, &bundle_trust, name, a.other(), Some(d)).ok()
                });
                let loaded = other.is_some();
                if let Some(m) = other {
                    self.p.models.insert(m);
                }
                let l = self.state.models.get_mut(name).expect("known name");
                l.on_active_unusable(e, loaded)
            }
        }
    }

    /// Runs until `shutdown`.
    pub async fn run(
        mut self,
        link: Arc<dyn Publish>,
        mut inbound: mpsc::Receiver<UpdateInbound>,
        mut shutdown: watch::Receiver<bool>,
    ) {
        self.link = Some(link);
        let mut jobs_rx = self.jobs_rx.take().expect("run once");
        for (name, acts) in std::mem::take(&mut self.boot_actions) {
            self.run_actions(&name, acts, None);
        }
        self.flush();
        let mut tick = tokio::time::interval(Duration::from_millis(200));
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let models = self.p.models.clone();
        loop {
            tokio::select! {
                _ = shutdown.changed() => break,
                ev = inbound.recv() => match ev {
                    None => break,
                    Some(UpdateInbound::Directive(b)) => self.on_directive(&b),
                    Some(UpdateInbound::Frame(b)) => match ChunkFrame::decode(&b) {
                        Ok(f) => self.on_frame(f).await,
                        Err(e) => tracing::debug!(error = %e, "bad chunk frame dropped"),
                    },
                    Some(UpdateInbound::Connected) => {
                        self.connected = true;
                        let now = mono_ms();
                        for name in self.fetch_names() {
                            let acts = self.fetcher(&name).on_connected(now);
                            self.fetch_actions(&name, acts).await;
                        }
                        self.dirty = true;
                    }
                    Some(UpdateInbound::Disconnected) => {
                        self.connected = false;
                        self.fetchers.values_mut().for_each(Fetcher::on_disconnected);
                    }
                },
                Some(done) = jobs_rx.recv() => self.on_job(done),
                _ = tick.tick() => {
                    let now = mono_ms();
                    for name in self.fetch_names() {
                        let acts = self.fetcher(&name).on_tick(now);
                        self.fetch_actions(&name, acts).await;
                    }
                    self.check_probation();
                }
                _ = models.activity(), if self.in_probation() => self.check_probation(),
            }
            self.flush();
        }
        self.dirty = true;
        self.flush();
    }

    /// Saves and reports if anything changed.
    fn flush(&mut self) {
        if !self.dirty {
            return;
        }
        self.dirty = false;
        if let Err(e) = self.p.disk.save_state(&self.state) {
            // The disk refused the write; the in-memory state still drives this run, and
            // the previous file remains valid (atomic replace).
            tracing::error!(error = %e, "cannot persist update state");
        }
        self.disk_used = self
            .state
            .models
            .keys()
            .map(|n| self.p.disk.model_bytes(n))
            .sum();
        self.report();
    }

    fn event(&self, kind: AgentEventKind, message: &str, model: &str) {
        let Some(tx) = &self.p.events else {
            return;
        };
        let target = self.state.models.get(model).and_then(|l| l.target.as_ref());
        let details = EventDetails {
            model,
            deployment_id: target.map(|t| t.entry.deployment_id.as_str()),
            sequence: target.map(|t| t.sequence),
        };
        let _ = tx.try_send(crate::recorder::AgentEvent {
            kind,
            message: message.into(),
            details: serde_json::to_value(details).unwrap_or_default(),
        });
    }

    fn on_directive(&mut self, bytes: &[u8]) {
        let now = unix_now();
        let ctx = DirectiveContext {
            device_id: &self.p.device_id,
            last_sequence: self.state.last_sequence,
            now,
            max_skew: self.p.cfg.max_clock_skew_secs,
        };
        let vd = match admit::admit(bytes, &self.p.trust, ctx, &self.limits, &self.p.budget) {
            Admission::Replay => return,
            Admission::Refused(r) => return self.reject(r),
            Admission::Accepted(vd) => vd,
        };
        let d = vd.directive();
        tracing::info!(device = %self.p.device_id, seq = d.sequence, models = d.models.len(), "directive accepted");
        // Trust first: applying it is idempotent, so a crash before the sequence is saved
        // only means the (retained) directive applies it again.
        self.apply_trust(&vd);
        // Persist the sequence before acting: a crash from here on can never accept this
        // directive (or an older one) again.
        self.state.last_sequence = Some(d.sequence);
        self.state.directive = Some(String::from_utf8_lossy(bytes).into_owned());
        self.state.rejected = None;
        self.dirty = true;
        self.flush();
        for (name, acts) in admit::dispatch(&mut self.state.models, d) {
            self.run_actions(&name, acts, None);
        }
    }

    /// Applies the key rotation a verified directive carries to the trust directory and to
    /// every download in progress.
    fn apply_trust(&mut self, vd: &outpost_protocol::directive::VerifiedDirective) {
        let changes = vd.trust_changes();
        if changes.is_empty() {
            return;
        }
        let (done, errors) = trust::apply(
            self.p.trust_dir.as_deref(),
            &mut self.p.trust,
            &mut self.retired,
            changes,
        );
        for e in &errors {
            tracing::warn!(device = %self.p.device_id, error = %e, "trust change not applied");
        }
        if let Some(e) = errors.first() {
            self.last_error = Some(e.to_string());
        }
        if done.is_empty() {
            return;
        }
        tracing::info!(device = %self.p.device_id, added = ?done.added, removed = ?done.removed, "bridge signing keys trusted changed");
        let bundle_trust = self.bundle_trust();
        for f in self.fetchers.values_mut() {
            f.set_trust(bundle_trust.clone());
        }
        self.dirty = true;
    }

    /// Keys a bundle's head may be signed with: the trusted ones and the retired ones.
    /// Sound because every bundle is fetched, installed and re-loaded only as the digest
    /// (SHA-256 of its manifest, which pins every byte) a directive verified with a
    /// *trusted* key names (`expect_digest`); a retired key alone gets nothing accepted,
    /// and bundles registered before a rotation stay deployable. Directives verify with
    /// the trusted keys only.
    fn bundle_trust(&self) -> TrustStore {
        let mut t = self.retired.clone();
        for id in self.p.trust.ids() {
            if let Some(k) = self.p.trust.get(id) {
                t.add(k.clone());
            }
        }
        t
    }

    /// Records a refused directive (once per distinct refusal: the retained directive is
    /// delivered again on every reconnect).
    fn reject(&mut self, r: DirectiveRejection) {
        let repeat = self
            .state
            .rejected
            .as_ref()
            .is_some_and(|old| old.sequence == r.sequence && old.kind == r.kind);
        if !repeat {
            tracing::warn!(device = %self.p.device_id, kind = %r.kind, reason = %r.reason, "directive rejected");
            if let Some(tx) = &self.p.events {
                let _ = tx.try_send(crate::recorder::AgentEvent {
                    kind: AgentEventKind::DirectiveRejected,
                    message: r.reason.clone(),
                    details: serde_json::to_value(&r).unwrap_or_default(),
                });
            }
        }
        self.state.rejected = Some(r);
        self.dirty = true;
    }

    fn fetch_names(&self) -> Vec<String> {
        self.fetchers.keys().cloned().collect()
    }

    fn fetcher(&mut self, name: &str) -> &mut Fetcher {
        let cfg = self.fcfg;
        if !self.fetchers.contains_key(name) {
            let f = Fetcher::new(cfg, self.bundle_trust());
            self.fetchers.insert(name.to_owned(), f);
        }
        self.fetchers.get_mut(name).expect("inserted above")
    }

    fn guard(&mut self, name: &str) -> Arc<jobs::SlotGuard> {
        self.guards.entry(name.to_owned()).or_default().clone()
    }

    /// Carries out a model's lifecycle actions. `ready` is the model just loaded by the job
    /// whose completion produced them (what `Activate` switches to).
    fn run_actions(
        &mut self,
        name: &str,
        acts: Vec<Action>,
        mut ready: Option<(Slot, Arc<ActiveModel>)>,
    ) {
        for a in acts {
            match a {
                Action::Fetch(t) => self.start_fetch(name, t),
                Action::CancelFetch => {
                    if let Some(f) = self.fetchers.get_mut(name) {
                        f.cancel();
                    }
                    self.manifests.remove(name);
                    // Abandon any install still queued or running for the old target.
                    self.guard(name).supersede();
                    self.p.disk.clear_downloads(name, None);
                }
                Action::Install {
                    target,
                    slot,
                    ticket,
                } => {
                    let manifest = self.manifests.remove(name);
                    self.guard(name).allow(ticket);
                    let job = Job::Install {
                        target,
                        slot,
                        manifest,
                        ticket,
                    };
                    self.spawn(name, job);
                }
                Action::LoadSlot { slot, ticket } => {
                    let expect = self
                        .state
                        .models
                        .get(name)
                        .and_then(|l| l.slot(slot))
                        .map(|m| m.bundle);
                    self.spawn(
                        name,
                        Job::Load {
                            slot,
                            ticket,
                            expect,
                        },
                    );
                }
                Action::Activate(slot) => match ready.take() {
                    Some((s, m)) if s == slot => {
                        tracing::info!(device = %self.p.device_id, model = %name, version = m.info.model.version, ?slot, "switched");
                        self.p.models.insert(m);
                    }
                    _ => tracing::error!(model = %name, ?slot, "no loaded model to activate"),
                },
                Action::Unload => self.p.models.remove(name),
                Action::FreeSlots => {
                    self.fetchers.remove(name);
                    self.manifests.remove(name);
                    self.guard(name).supersede();
                    self.spawn(name, Job::Free);
                }
                Action::Persist => self.dirty = true,
                Action::Event { kind, message } => {
                    tracing::warn!(device = %self.p.device_id, model = %name, kind = kind.as_str(), %message, "update event");
                    self.event(kind, &message, name);
                }
            }
        }
    }

    fn spawn(&mut self, name: &str, job: Job) {
        let trust = self.bundle_trust();
        let ctx = jobs::JobContext {
            name: name.to_owned(),
            disk: self.p.disk.clone(),
            trust,
            guard: self.guard(name),
            done: self.jobs_tx.clone(),
        };
        jobs::spawn(ctx, job);
    }

    fn on_job(&mut self, done: JobDone) {
        let name = done.name;
        let now = mono_ms();
        let (ok, errors) = (0, 0); // a newly activated model starts with fresh counters
        let Some(l) = self.state.models.get_mut(&name) else {
            return;
        };
        match done.outcome {
            jobs::Outcome::Installed {
                ticket,
                digest,
                slot,
                result,
            } => {
                let (info, ready) = match result {
                    Ok(m) => (Ok(m.info.clone()), Some((slot, m))),
                    Err(e) => (Err(e), None),
                };
                let acts = l.on_installed(ticket, digest, slot, info, now, ok, errors);
                self.run_actions(&name, acts, ready);
            }
            jobs::Outcome::Loaded {
                ticket,
                slot,
                result,
            } => {
                let (r, ready) = match result {
                    Ok(m) => (Ok(()), Some((slot, m))),
                    Err(e) => (Err(e), None),
                };
                let acts = l.on_slot_loaded(ticket, slot, r, now, ok, errors);
                self.run_actions(&name, acts, ready);
            }
            jobs::Outcome::Freed(r) => match r {
                Ok(()) if l.removing() => {
                    tracing::info!(device = %self.p.device_id, model = %name, "model removed");
                    self.state.models.remove(&name);
                    self.fetchers.remove(&name);
                    self.dirty = true;
                }
                Ok(()) => {}
                Err(e) => {
                    // Left in `Removing`: the removal is retried at the next start.
                    l.last_error = Some(format!("removing its slots: {e}"));
                    self.dirty = true;
                }
            },
        }
    }

    /// Starts (or resumes from disk) the download of `t` for model `name`.
    fn start_fetch(&mut self, name: &str, t: ModelTarget) {
        let digest = t.digest;
        self.p.disk.clear_downloads(name, Some(digest));
        let resumed = self.p.disk.read_head(name, digest).and_then(|head| {
            let m = Verifier::new(&self.bundle_trust())
                .verify_head(&head)
                .ok()?
                .expect_digest(digest)
                .ok()?;
            let have = (0..m.chunk_count())
                .map(|i| {
                    self.p
                        .disk
                        .read_chunk(name, digest, i)
                        .is_some_and(|c| m.check_chunk(i, &c).is_ok())
                })
                .collect::<Vec<bool>>();
            Some((m, have))
        });
        let now = mono_ms();
        let connected = self.connected;
        let f = self.fetcher(name);
        if connected {
            f.on_connected(now);
        }
        let acts = match resumed {
            Some((m, have)) => {
                let held = have.iter().filter(|h| **h).count();
                tracing::info!(model = %name, held, total = have.len(), "resuming download");
                f.resume(t, m, have, now)
            }
            None => f.begin(t, now),
        };
        // Requests only (nothing is persisted or finished before a frame arrives), except a
        // resumed download that already holds every chunk, which installs at once.
        self.sync_fetch_actions(name, acts);
    }

    fn sync_fetch_actions(&mut self, name: &str, acts: Vec<fetch::Action>) {
        for a in acts {
            match a {
                fetch::Action::Request(r) => self.request(r),
                fetch::Action::Install { target, manifest } => self.fetched(name, target, manifest),
                fetch::Action::Fail { target, reason } => self.fetch_failed(name, target, reason),
                fetch::Action::PersistHead { .. } | fetch::Action::PersistChunk { .. } => {
                    tracing::error!(model = %name, "unexpected persist while starting a download")
                }
            }
        }
    }

    fn request(&self, r: outpost_protocol::wire::ChunkRequest) {
        if let Some(l) = &self.link {
            let _ = l.publish(topics::chunk_request(&self.p.device_id), r.encode(), false);
        }
    }

    fn fetched(&mut self, name: &str, target: ModelTarget, manifest: Box<VerifiedManifest>) {
        self.manifests.insert(name.to_owned(), manifest);
        if let Some(l) = self.state.models.get_mut(name) {
            let acts = l.on_fetched(target.digest);
            self.run_actions(name, acts, None);
        }
    }

    fn fetch_failed(&mut self, name: &str, target: ModelTarget, reason: String) {
        self.p.disk.clear_downloads(name, None);
        if let Some(l) = self.state.models.get_mut(name) {
            let acts = l.on_fetch_failed(target.digest, reason);
            self.run_actions(name, acts, None);
        }
    }

    async fn on_frame(&mut self, f: ChunkFrame) {
        let Some(name) = self
            .fetchers
            .iter()
            .find(|(_, fe)| fe.target() == Some(f.bundle))
            .map(|(n, _)| n.clone())
        else {
            tracing::debug!(bundle = %f.bundle, "frame for no download in progress dropped");
            return;
        };
        let acts = self.fetcher(&name).on_frame(f, mono_ms());
        self.fetch_actions(&name, acts).await;
    }

    async fn fetch_actions(&mut self, name: &str, acts: Vec<fetch::Action>) {
        for a in acts {
            match a {
                fetch::Action::Request(r) => self.request(r),
                fetch::Action::PersistHead { digest, head } => {
                    let (disk, n) = (self.p.disk.clone(), name.to_owned());
                    if let Err(e) = blocking(move || disk.write_head(&n, digest, &head)).await {
                        tracing::error!(error = %e, "cannot persist bundle head");
                    }
                }
                fetch::Action::PersistChunk {
                    digest,
                    index,
                    data,
                } => {
                    let (disk, n) = (self.p.disk.clone(), name.to_owned());
                    // A chunk that fails to persist is missing at install, which then fails
                    // with the reason; after a restart it is fetched again.
                    if let Err(e) =
                        blocking(move || disk.write_chunk(&n, digest, index, &data)).await
                    {
                        tracing::error!(error = %e, index, "cannot persist chunk");
                    }
                    let (done, total) = self.fetchers.get(name).map_or((0, 0), Fetcher::progress);
                    if done == total || done % 8 == 0 {
                        self.report();
                    }
                }
                fetch::Action::Install { target, manifest } => self.fetched(name, target, manifest),
                fetch::Action::Fail { target, reason } => self.fetch_failed(name, target, reason),
            }
        }
    }

    fn in_probation(&self) -> bool {
        self.state
            .models
            .values()
            .any(|l| matches!(l.phase, lifecycle::Phase::Probation { .. }))
    }

    /// Judges each model in probation on its own counters.
    fn check_probation(&mut self) {
        let now = mono_ms();
        let names: Vec<String> = self
            .state
            .models
            .iter()
            .filter(|(_, l)| matches!(l.phase, lifecycle::Phase::Probation { .. }))
            .map(|(n, _)| n.clone())
            .collect();
        for name in names {
            let (ok, errors) = self
                .p
                .models
                .get(&name)
                .map_or((0, 0), |m| m.stats.outcomes());
            let l = self.state.models.get_mut(&name).expect("listed");
            let acts = l.on_tick(now, &self.lcfg, ok, errors);
            if !acts.is_empty() && l.phase == lifecycle::Phase::Idle {
                tracing::info!(device = %self.p.device_id, model = %name, "health window passed");
            }
            self.run_actions(&name, acts, None);
        }
    }
}

async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> std::io::Result<T> + Send + 'static,
) -> std::io::Result<T> {
    tokio::task::spawn_blocking(f)
        .await
        .unwrap_or_else(|e| Err(std::io::Error::other(e.to_string())))
}
