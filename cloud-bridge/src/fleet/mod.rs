//! Fleet deployments: the IO around [`machine::Rollout`].
//!
//! A deployment targets one model name on a fixed set of devices (chosen by ids and/or
//! tags at creation) with one version — or, for a rollback deployment, each device's own
//! earlier version. Deployments of *different* models to the same device run at once; two
//! unfinished deployments of the same model may not share a device.
//!
//! The rollout machine is stored as JSON in `deployments.machine`; the engine loop (every
//! tick, or when a device reports) feeds it per-model device reports and canary
//! observations read from the database, persists it, and carries out its actions by
//! changing the devices' desired sets ([`desired`]) and issuing each changed device a new
//! signed directive listing its whole set — recorded, then published retained. Every state
//! change is audited and published as an event.

pub mod desired;
pub mod machine;
mod observe;
mod ops;
mod rows;
mod strategy;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use outpost_protocol::directive::ModelTarget;
use outpost_protocol::manifest::ModelRef;
use outpost_protocol::topics;
use outpost_protocol::wire::EventKind;
use rusqlite::{Connection, TransactionBehavior, params};
use serde::Serialize;
use tokio::sync::{Notify, watch};

use crate::audit::Audit;
use crate::bundles::BundleStore;
use crate::clock::Clock;
use crate::db::Db;
use crate::events::{EventBus, MqttOut, NewEvent};
use desired::Outgoing;
use machine::{Action, Command, DeviceStatus, Rollout, State, Strategy};

pub use desired::DIRECTIVE_TTL_SECS;
pub use observe::tvd;
pub use ops::{RemoveModel, Removed, RollbackRequest, in_use};
pub use rows::{list, show};
use rows::{load, save};
pub use strategy::{GateSpec, StrategySpec};

/// Fleet errors.
#[derive(Debug, thiserror::Error)]
pub enum FleetError {
    /// Bad request.
    #[error("{0}")]
    Invalid(String),
    /// Not found.
    #[error("{0} not found")]
    NotFound(String),
    /// Input over a cap or not of its form (model, devices, tags, reason).
    #[error(transparent)]
    Input(#[from] crate::input::InputError),
    /// Devices already in another unfinished deployment of the same model.
    #[error("devices already in unfinished deployments of this model: {0}")]
    Conflict(String),
    /// The command does not apply.
    #[error("{0}")]
    Refused(String),
    /// Database.
    #[error("fleet database: {0}")]
    Db(#[from] rusqlite::Error),
    /// Bundle storage.
    #[error("bundle storage: {0}")]
    Storage(#[from] std::io::Error),
    /// The signing key.
    #[error(transparent)]
    Keys(#[from] crate::keys::KeysError),
}

/// Which devices.
#[derive(Debug, Clone, Default, PartialEq, Serialize, serde::Deserialize)]
pub struct Selector {
    /// Explicit ids.
    #[serde(default)]
    pub ids: Vec<String>,
    /// Tags `k=v`, all must match.
    #[serde(default)]
    pub tags: Vec<(String, String)>,
}

/// A deployment request.
#[derive(Debug, Clone)]
pub struct CreateDeployment {
    /// Model name.
    pub model: String,
    /// Version (None: latest).
    pub version: Option<u32>,
    /// Devices.
    pub selector: Selector,
    /// Strategy.
    pub strategy: Strategy,
    /// Who.
    pub actor: String,
    /// Why.
    pub reason: String,
    /// Roll out without the canary behaviour gates (audited with the reason).
    pub skip_gates: bool,
}

/// A deployment as shown to operators.
#[derive(Debug, Clone, PartialEq, Serialize, utoipa::ToSchema)]
pub struct DeploymentRecord {
    /// Id.
    pub id: String,
    /// Model.
    pub model: String,
    /// Version.
    pub version: u32,
    /// Bundle digest.
    pub digest: String,
    /// State name.
    pub state: String,
    /// State details (reason): `fleet::machine::State`, tagged by state.
    #[schema(value_type = Object)]
    pub detail: State,
    /// Current wave.
    pub wave: usize,
    /// Created, unix seconds.
    pub created_at: u64,
    /// Who.
    pub created_by: String,
    /// Why.
    pub reason: String,
    /// Per-device `[device, wave, status]`.
    #[schema(value_type = Vec<Vec<Object>>)]
    pub devices: Vec<(String, usize, DeviceStatus)>,
    /// Latest canary observation (`fleet::machine::Observation`).
    #[schema(value_type = Option<Object>)]
    pub observation: Option<machine::Observation>,
    /// Waves and gates (`fleet::machine::Strategy`).
    #[schema(value_type = Object)]
    pub strategy: Strategy,
    /// The deployment this one rolls back, if it is a rollback.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub rollback_of: Option<String>,
    /// Whether the canary gates were skipped.
    pub gates_skipped: bool,
}

/// A device with the bridge's intent for it: what it reports, and the model set the
/// bridge wants it to run.
#[derive(Debug, Clone, PartialEq, Serialize, utoipa::ToSchema)]
pub struct DeviceView {
    /// The device and its reported state (every model with its phase and versions).
    #[serde(flatten)]
    pub device: crate::devices::DeviceRecord,
    /// The desired set, by model name.
    pub desired: Vec<ModelTarget>,
}

/// Deployment search filters: `deploy list`'s flags (clap) and `GET /v1/deployments`'s
/// query are this one type.
#[derive(Debug, Clone, Default, PartialEq, serde::Deserialize, clap::Args, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct DeploymentFilter {
    /// Model name.
    #[arg(long)]
    pub model: Option<String>,
    /// Model version.
    #[arg(long)]
    pub version: Option<u32>,
    /// State (running, paused, succeeded, aborted, rolling_back, rolled_back).
    #[arg(long)]
    pub state: Option<String>,
    /// Containing this device.
    #[arg(long)]
    pub device: Option<String>,
}

impl DeploymentFilter {
    /// Every field within [`crate::input`]'s caps (the filter arrives from outside).
    pub fn check(&self) -> Result<(), crate::input::InputError> {
        use crate::input;
        if let Some(m) = &self.model {
            input::bounded("model", m, input::MAX_NAME)?;
        }
        if let Some(s) = self
            .state
            .as_deref()
            .filter(|s| !machine::STATE_NAMES.contains(s))
        {
            return Err(input::InputError::NotOneOf {
                field: "state",
                value: input::preview(s),
                allowed: "running, paused, succeeded, aborted, rolling_back, rolled_back",
            });
        }
        if let Some(d) = &self.device {
            input::bounded("device", d, input::MAX_DEVICE_ID)?;
        }
        Ok(())
    }
}

/// The engine's handle.
#[derive(Clone)]
pub struct FleetHandle {
    db: Db,
    audit: Audit,
    events: EventBus,
    keys: crate::keys::Keyring,
    bundles: Arc<dyn BundleStore>,
    out: MqttOut,
    wake: Arc<Notify>,
    /// Next time (unix seconds) the engine looks for directives due for a refresh.
    refresh_at: Arc<AtomicU64>,
    clock: Clock,
}

/// A deployment about to be inserted.
struct NewDeployment {
    model: String,
    version: u32,
    digest: String,
    /// (device, previous digest, its own target)
    devices: Vec<(String, Option<String>, String)>,
    strategy: Strategy,
    actor: String,
    reason: String,
    rollback_of: Option<String>,
    gates_skipped: bool,
    selector: Selector,
}

const ACTIVE: &str = "('running', 'paused', 'rolling_back')";

impl FleetHandle {
    /// A handle over the bridge's parts.
    pub fn new(
        db: Db,
        audit: Audit,
        events: EventBus,
        keys: crate::keys::Keyring,
        bundles: Arc<dyn BundleStore>,
        out: MqttOut,
        wake: Arc<Notify>,
    ) -> Self {
        Self {
            db,
            audit,
            events,
            keys,
            bundles,
            out,
            wake,
            refresh_at: Arc::new(AtomicU64::new(0)),
            clock: Clock::system(),
        }
    }

    /// The same handle on `clock` (tests make days pass with [`Clock::advance`]).
    pub fn with_clock(mut self, clock: Clock) -> Self {
        self.clock = clock;
        self
    }

    /// Carries out a deployment's actions: desired-set changes and one new directive per
    /// changed device, audit and events for state changes.
    fn apply(
        &self,
        c: &Connection,
        id: &str,
        actions: Vec<Action>,
        actor: &str,
        publish: &mut Vec<Outgoing>,
    ) -> Result<(), FleetError> {
        let (model, version): (String, u32) = c.query_row(
            "SELECT model, version FROM deployments WHERE id = ?1",
            [id],
            |r| Ok((r.get(0)?, r.get(1)?)),
        )?;
        // Entries by digest: reading a stored bundle once per deployment pass, not once
        // per device.
        let mut entries: BTreeMap<String, ModelTarget> = BTreeMap::new();
        let mut target = |c: &Connection, digest: &str| -> Result<ModelTarget, FleetError> {
            if let Some(t) = entries.get(digest) {
                return Ok(t.clone());
            }
            let t = desired::entry(c, self.bundles.as_ref(), &model, digest, id)?;
            entries.insert(digest.to_owned(), t.clone());
            Ok(t)
        };
        for a in actions {
            let device = match a {
                Action::Target { device, digest }
                | Action::Restore {
                    device,
                    digest: Some(digest),
                } => {
                    desired::set(c, &device, &target(c, &digest)?)?;
                    device
                }
                Action::Restore {
                    device,
                    digest: None,
                } => {
                    desired::remove(c, &device, &model)?;
                    device
                }
                Action::Pin { device, fallback } => {
                    // What it runs now, by its latest report; else what it ran before.
                    let runs = desired::reported(c, &device)?
                        .and_then(|s| s.model(&model).and_then(|m| m.active.clone()))
                        .map(|a| a.bundle.to_hex());
                    match runs.or(fallback) {
                        Some(d) => match target(c, &d) {
                            Ok(t) => desired::set(c, &device, &t)?,
                            // Not a registered bundle of this model: nothing to pin to.
                            Err(FleetError::NotFound(_)) => desired::remove(c, &device, &model)?,
                            Err(e) => return Err(e),
                        },
                        None => desired::remove(c, &device, &model)?,
                    }
                    device
                }
                Action::Changed { state } => {
                    self.changed(c, id, &model, version, &state, actor)?;
                    continue;
                }
            };
            let signer = self.keys.signer(c)?;
            publish.push(desired::issue(c, &signer, &device, id, self.clock.now())?);
        }
        Ok(())
    }

    fn changed(
        &self,
        c: &Connection,
        id: &str,
        model: &str,
        version: u32,
        state: &State,
        actor: &str,
    ) -> Result<(), FleetError> {
        let reason = match state {
            State::Paused { reason }
            | State::Aborted { reason }
            | State::RollingBack { reason }
            | State::RolledBack { reason } => reason.clone(),
            _ => String::new(),
        };
        self.audit.append(
            c,
            actor,
            &format!("deployment.{}", state.name()),
            id,
            &reason,
            &serde_json::json!({"model": model, "version": version}),
        )?;
        let kind = if matches!(state, State::RollingBack { .. }) {
            EventKind::RolledBack
        } else {
            EventKind::DeploymentChanged
        };
        let msg = format!(
            "deployment {id} of {model} v{version} is {}{}",
            state.name(),
            if reason.is_empty() {
                String::new()
            } else {
                format!(": {reason}")
            }
        );
        self.events.emit_with(
            c,
            NewEvent::new(kind, msg)
                .deployment(id)
                .model(ModelRef {
                    name: model.into(),
                    version,
                })
                .details(serde_json::json!({"state": state})),
        );
        Ok(())
    }

    /// Hands directives to the MQTT client (retained) and marks them published. Without a
    /// running bridge (CLI use) the send fails and they stay unpublished; the bridge's
    /// engine publishes them on its next pass.
    fn publish(&self, msgs: Vec<Outgoing>) {
        for (device, seq, body) in msgs {
            if self
                .out
                .try_publish(topics::directive(&device), body, true)
                .is_ok()
            {
                let _ = self.db.lock().execute(
                    "UPDATE directives SET published = 1 WHERE device = ?1 AND sequence = ?2",
                    params![device, seq as i64],
                );
            }
        }
    }

    fn publish_pending(&self) -> Result<(), FleetError> {
        let pending: Vec<Outgoing> = {
            let c = self.db.lock();
            // Only each device's latest: an older unpublished one is superseded.
            let mut q = c.prepare(
                "SELECT d.device, d.sequence, d.body FROM directives d WHERE d.published = 0
                 AND d.sequence = (SELECT MAX(sequence) FROM directives x WHERE x.device = d.device)
                 ORDER BY d.sequence",
            )?;
            let rows = q.query_map([], |r| {
                Ok((r.get(0)?, r.get::<_, i64>(1)? as u64, r.get(2)?))
            })?;
            rows.collect::<Result<_, _>>()?
        };
        self.publish(pending);
        Ok(())
    }

    /// Re-issues every device's set with a fresh sequence before its directive expires
    /// (and at start), so a device coming back after a long time is never told to refuse
    /// what the bridge intends.
    fn refresh_directives(&self) -> Result<(), FleetError> {
        let t = self.clock.now();
        if t < self.refresh_at.load(Ordering::Relaxed) {
            return Ok(());
        }
        self.refresh_at.store(t + 30, Ordering::Relaxed);
        let mut c = self.db.lock();
        let tx = c.transaction_with_behavior(TransactionBehavior::Immediate)?;
        let mut publish = Vec::new();
        let signer = self.keys.signer(&tx)?;
        for device in desired::due_for_refresh(&tx, t)? {
            publish.push(desired::issue(&tx, &signer, &device, "refresh", t)?);
        }
        tx.commit()?;
        drop(c);
        if !publish.is_empty() {
            tracing::info!(
                devices = publish.len(),
                "directives refreshed before expiry"
            );
        }
        self.publish(publish);
        Ok(())
    }

    /// Creates and starts a deployment.
    pub fn create(&self, req: CreateDeployment) -> Result<DeploymentRecord, FleetError> {
        check_create(&req)?;
        req.strategy.validate().map_err(FleetError::Invalid)?;
        if req.skip_gates && req.reason.trim().is_empty() {
            return Err(FleetError::Invalid(
                "skipping the gates needs a reason (--reason)".into(),
            ));
        }
        let mut c = self.db.lock();
        let tx = c.transaction_with_behavior(TransactionBehavior::Immediate)?;
        let rec = crate::registry::show(&tx, &req.model, req.version).map_err(|e| match e {
            crate::registry::RegistryError::Db(e) => FleetError::Db(e),
            e => FleetError::NotFound(e.to_string().replace(" not found", "")),
        })?;
        let mut ids: Vec<String> = req.selector.ids.clone();
        if !req.selector.tags.is_empty() {
            ids.extend(
                crate::devices::list(&tx, &req.selector.tags)?
                    .into_iter()
                    .map(|d| d.id),
            );
        } else if ids.is_empty() {
            return Err(FleetError::Invalid("select devices by id or tag".into()));
        }
        ids.sort();
        ids.dedup();
        let mut devices = Vec::new();
        for d in &ids {
            let dev = crate::devices::show(&tx, d).map_err(|e| match e {
                crate::devices::DeviceError::Db(e) => FleetError::Db(e),
                _ => FleetError::NotFound(format!("device {d}")),
            })?;
            let previous = dev
                .state
                .as_ref()
                .and_then(|s| s.model(&rec.name))
                .and_then(|m| m.active.as_ref())
                .map(|a| a.bundle.to_hex());
            devices.push((d.clone(), previous, rec.digest.clone()));
        }
        if devices.is_empty() {
            return Err(FleetError::Invalid("no device matches the selector".into()));
        }
        let mut strategy = req.strategy.clone();
        if req.skip_gates {
            strategy.gates = machine::Gates {
                max_error_rate: None,
                max_p99_us: None,
                max_output_shift: None,
                min_samples: 0,
                observe_ms: 0,
            };
        }
        let new = NewDeployment {
            model: rec.name.clone(),
            version: rec.version,
            digest: rec.digest.clone(),
            devices,
            strategy,
            actor: req.actor.clone(),
            reason: req.reason.clone(),
            rollback_of: None,
            gates_skipped: req.skip_gates,
            selector: req.selector.clone(),
        };
        let (id, publish) = self.insert(&tx, new)?;
        tx.commit()?;
        drop(c);
        self.publish(publish);
        self.wake.notify_one();
        self.show(&id)
    }

    /// Inserts and starts a deployment (in the caller's transaction).
    fn insert(
        &self,
        tx: &Connection,
        new: NewDeployment,
    ) -> Result<(String, Vec<Outgoing>), FleetError> {
        let ids: Vec<&String> = new.devices.iter().map(|d| &d.0).collect();
        let busy: Vec<String> = {
            let mut q = tx.prepare(&format!(
                "SELECT dd.device, d.id FROM deployment_devices dd JOIN deployments d ON d.id = dd.deployment
                 WHERE d.state IN {ACTIVE} AND d.model = ?1"
            ))?;
            let rows = q.query_map([&new.model], |r| {
                Ok((r.get::<_, String>(0)?, r.get::<_, String>(1)?))
            })?;
            rows.filter_map(Result::ok)
                .filter(|(dev, _)| ids.contains(&dev))
                .map(|(dev, dep)| format!("{dev} ({dep})"))
                .collect()
        };
        if !busy.is_empty() {
            return Err(FleetError::Conflict(format!(
                "{} — pause, abort or finish those first",
                busy.join(", ")
            )));
        }
        let n: i64 = tx.query_row(
            "SELECT COALESCE(MAX(CAST(SUBSTR(id, 5) AS INTEGER)), 0) FROM deployments",
            [],
            |r| r.get(0),
        )?;
        let id = format!("dep-{}", n + 1);
        let mut r = Rollout::with_targets(
            new.digest.clone(),
            new.strategy.clone(),
            new.devices.clone(),
        );
        let now = self.clock.now_ms();
        let acts = r.start(now);
        tx.execute(
            "INSERT INTO deployments (id, model, version, digest, created_at, created_by, reason, selector, strategy, state, machine, previous, updated_at, rollback_of, gates_skipped)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, NULL, ?12, ?13, ?14)",
            params![
                id,
                new.model,
                new.version,
                new.digest,
                now as i64,
                new.actor,
                new.reason,
                serde_json::to_string(&new.selector).unwrap_or_default(),
                serde_json::to_string(&new.strategy).unwrap_or_default(),
                r.state.name(),
                serde_json::to_string(&r).unwrap_or_default(),
                now as i64,
                new.rollback_of,
                new.gates_skipped
            ],
        )?;
        for (d, e) in &r.devices {
            tx.execute(
                "INSERT INTO deployment_devices (deployment, device, wave) VALUES (?1, ?2, ?3)",
                params![id, d, e.wave as i64],
            )?;
        }
        self.audit.append(
            tx,
            &new.actor,
            "deployment.create",
            &id,
            &new.reason,
            &serde_json::json!({
                "model": new.model, "version": new.version, "devices": ids,
                "strategy": new.strategy, "rollback_of": new.rollback_of,
                "gates_skipped": new.gates_skipped,
            }),
        )?;
        let what = match &new.rollback_of {
            Some(of) => format!("rollback of {of}"),
            None => format!("v{}", new.version),
        };
        self.events.emit_with(
            tx,
            NewEvent::new(
                EventKind::DeploymentCreated,
                format!(
                    "deployment {id}: {} {what} to {} devices{}",
                    new.model,
                    ids.len(),
                    if new.gates_skipped {
                        " (gates skipped)"
                    } else {
                        ""
                    }
                ),
            )
            .deployment(&id)
            .model(ModelRef {
                name: new.model.clone(),
                version: new.version,
            }),
        );
        let mut publish = Vec::new();
        self.apply(tx, &id, acts, &new.actor, &mut publish)?;
        Ok((id, publish))
    }

    /// Pause / resume / abort / rollback of an unfinished deployment.
    pub fn command(
        &self,
        id: &str,
        cmd: Command,
        actor: &str,
    ) -> Result<DeploymentRecord, FleetError> {
        if let Command::Pause(r) | Command::Abort(r) | Command::Rollback(r) = &cmd {
            crate::input::text("reason", r)?;
        }
        let mut c = self.db.lock();
        let tx = c.transaction_with_behavior(TransactionBehavior::Immediate)?;
        let mut r = load(&tx, id)?;
        let now = self.clock.now_ms();
        let acts = r
            .command(cmd.clone(), now)
            .map_err(|e| FleetError::Refused(format!("deployment {id}: {e}")))?;
        save(&tx, id, &r, now)?;
        let mut publish = Vec::new();
        self.apply(&tx, id, acts, actor, &mut publish)?;
        tx.commit()?;
        drop(c);
        self.publish(publish);
        self.wake.notify_one();
        self.show(id)
    }

    /// One deployment.
    pub fn show(&self, id: &str) -> Result<DeploymentRecord, FleetError> {
        show(&self.db.lock(), id)
    }

    /// Deployments matching `f`, newest first.
    pub fn list(&self, f: &DeploymentFilter) -> Result<Vec<DeploymentRecord>, FleetError> {
        list(&self.db.lock(), f)
    }

    /// Publishes every device's latest directive again (after the bridge reconnects to a
    /// broker that may have lost its retained messages): marks them unpublished and sends
    /// what the outgoing queue takes now; the engine's passes send the rest. Blocking
    /// (database): call it off the async workers.
    pub fn republish_directives(&self) {
        let marked = self.db.lock().execute(
            "UPDATE directives SET published = 0 WHERE sequence =
             (SELECT MAX(sequence) FROM directives x WHERE x.device = directives.device)",
            [],
        );
        if let Err(e) = marked
            .map_err(FleetError::from)
            .and_then(|_| self.publish_pending())
        {
            tracing::error!(error = %e, "cannot republish directives");
        }
        self.wake.notify_one();
    }

    /// One engine pass: publish what is pending, refresh directives due, then feed every
    /// unfinished deployment its devices' reports, canary observations and the time.
    pub fn step(&self) -> Result<(), FleetError> {
        self.publish_pending()?;
        self.refresh_directives()?;
        let ids: Vec<(String, String)> = {
            let c = self.db.lock();
            let mut q = c.prepare(&format!(
                "SELECT id, model FROM deployments WHERE state IN {ACTIVE}"
            ))?;
            let rows = q.query_map([], |r| Ok((r.get(0)?, r.get(1)?)))?;
            rows.collect::<Result<_, _>>()?
        };
        for (id, model) in ids {
            let mut c = self.db.lock();
            let tx = c.transaction_with_behavior(TransactionBehavior::Immediate)?;
            let mut r = load(&tx, &id)?;
            let before = serde_json::to_string(&r).unwrap_or_default();
            let now = self.clock.now_ms();
            let mut acts = Vec::new();
            // Only devices whose report can change something are read (a settled device
            // costs nothing per pass), and the rollout is evaluated once per pass.
            let mut reports = Vec::new();
            for d in r.devices.keys().filter(|d| r.awaits_report(d)) {
                if let Some(rep) = observe::report(&tx, d, &model, r.target_of(d))? {
                    reports.push((d.clone(), rep));
                }
            }
            acts.extend(r.on_reports(reports.iter().map(|(d, rep)| (d.as_str(), rep)), now));
            if r.wave == 0 && r.state == State::Running {
                let canary: Vec<String> = r
                    .devices
                    .iter()
                    .filter(|(_, e)| e.wave == 0 && e.status == DeviceStatus::Succeeded)
                    .map(|(d, _)| d.clone())
                    .collect();
                if !canary.is_empty() {
                    let since: i64 = tx.query_row(
                        "SELECT created_at FROM deployments WHERE id = ?1",
                        [&id],
                        |row| row.get(0),
                    )?;
                    let previous: Vec<(String, String)> = canary
                        .iter()
                        .filter_map(|d| r.devices[d].previous.clone().map(|p| (d.clone(), p)))
                        .collect();
                    let o = observe::canary(
                        &tx,
                        &model,
                        &canary,
                        &r.target,
                        &previous,
                        since as u64,
                        now,
                    )?;
                    acts.extend(r.on_observation(o, now));
                }
            }
            acts.extend(r.on_tick(now));
            if serde_json::to_string(&r).unwrap_or_default() != before {
                save(&tx, &id, &r, now)?;
            }
            let mut publish = Vec::new();
            self.apply(&tx, &id, acts, "system", &mut publish)?;
            tx.commit()?;
            drop(c);
            self.publish(publish);
        }
        Ok(())
    }

    /// Runs the engine until shutdown.
    pub async fn run(self, tick: Duration, mut shutdown: watch::Receiver<bool>) {
        let mut t = tokio::time::interval(tick);
        t.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = shutdown.changed() => break,
                _ = t.tick() => {}
                _ = self.wake.notified() => {}
            }
            let me = self.clone();
            match tokio::task::spawn_blocking(move || me.step()).await {
                Ok(Ok(())) => {}
                Ok(Err(e)) => tracing::error!(error = %e, "rollout engine step failed"),
                Err(e) => tracing::error!(error = %e, "rollout engine task failed"),
            }
        }
    }
}

/// A request's strings within [`crate::input`]'s caps.
fn check_create(req: &CreateDeployment) -> Result<(), crate::input::InputError> {
    use crate::input;
    // References to things that exist: an odd one is simply not found (404).
    input::bounded("model", &req.model, input::MAX_NAME)?;
    for d in &req.selector.ids {
        input::bounded("device", d, input::MAX_DEVICE_ID)?;
    }
    input::tag_list("tags", &req.selector.tags)?;
    input::text("reason", &req.reason)
}
