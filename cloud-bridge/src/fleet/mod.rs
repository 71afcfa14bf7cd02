//! Fleet deployments: the IO around [`machine::Rollout`].
//!
//! A deployment targets a fixed set of devices (chosen by ids and/or tags at creation) with
//! one model version. Its rollout machine is stored as JSON in `deployments.machine`; the
//! engine loop (every tick, or when a device reports) feeds it device reports and canary
//! observations read from the database, persists it, and carries out its actions: each
//! directive is signed with a per-device sequence above anything the device has reported,
//! recorded in `directives`, then published retained. Every state change is audited and
//! published as an event.

pub mod machine;
mod observe;

use std::sync::Arc;
use std::time::Duration;

use outpost_protocol::directive::{BundleTarget, DIRECTIVE_FORMAT, Directive};
use outpost_protocol::manifest::ModelRef;
use outpost_protocol::serve::ServedBundle;
use outpost_protocol::wire::EventKind;
use outpost_protocol::{Digest, SigningKey, topics};
use rusqlite::{Connection, OptionalExtension, TransactionBehavior, params};
use serde::Serialize;
use tokio::sync::{Notify, watch};

use crate::audit::Audit;
use crate::bundles::BundleStore;
use crate::db::{Db, now, now_ms};
use crate::events::{EventBus, MqttOut, NewEvent};
use machine::{Action, Command, DeviceStatus, Rollout, State, Strategy};

pub use observe::tvd;

/// Directives expire after this long (a device offline for longer gets a fresh one when
/// the bridge re-publishes).
pub const DIRECTIVE_TTL_SECS: u64 = 7 * 86_400;

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
    /// Devices already in another deployment.
    #[error("devices already in active deployments: {0}")]
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
}

/// A deployment as shown to operators.
#[derive(Debug, Clone, PartialEq, Serialize)]
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
    /// State details (reason).
    pub detail: State,
    /// Current wave.
    pub wave: usize,
    /// Created, unix seconds.
    pub created_at: u64,
    /// Who.
    pub created_by: String,
    /// Why.
    pub reason: String,
    /// Per-device wave and status.
    pub devices: Vec<(String, usize, DeviceStatus)>,
    /// Latest canary observation.
    pub observation: Option<machine::Observation>,
    /// Strategy.
    pub strategy: Strategy,
}

/// Search filters.
#[derive(Debug, Clone, Default)]
pub struct DeploymentFilter {
    /// Model name.
    pub model: Option<String>,
    /// Version.
    pub version: Option<u32>,
    /// State name.
    pub state: Option<String>,
    /// Contains this device.
    pub device: Option<String>,
}

/// The engine's handle.
#[derive(Clone)]
pub struct FleetHandle {
    db: Db,
    audit: Audit,
    events: EventBus,
    key: Arc<SigningKey>,
    bundles: Arc<dyn BundleStore>,
    out: MqttOut,
    wake: Arc<Notify>,
}

/// (device, sequence, signed directive).
type Outgoing = (String, u64, Vec<u8>);

struct Bundle {
    model: ModelRef,
    head: u32,
    size: u64,
}

impl FleetHandle {
    /// A handle over the bridge's parts.
    pub fn new(
        db: Db,
        audit: Audit,
        events: EventBus,
        key: Arc<SigningKey>,
        bundles: Arc<dyn BundleStore>,
        out: MqttOut,
        wake: Arc<Notify>,
    ) -> Self {
        Self {
            db,
            audit,
            events,
            key,
            bundles,
            out,
            wake,
        }
    }

    fn bundle_info(&self, c: &Connection, digest: &str) -> Result<Bundle, FleetError> {
        let (name, version): (String, u32) = c
            .query_row(
                "SELECT name, version FROM models WHERE digest = ?1 ORDER BY version DESC LIMIT 1",
                [digest],
                |r| Ok((r.get(0)?, r.get(1)?)),
            )
            .optional()?
            .ok_or_else(|| FleetError::NotFound(format!("bundle {digest}")))?;
        let d: Digest = digest
            .parse()
            .map_err(|_| FleetError::Invalid(format!("bad digest {digest}")))?;
        let served = ServedBundle::new(self.bundles.get(d)?)
            .map_err(|e| FleetError::Invalid(e.to_string()))?;
        Ok(Bundle {
            model: ModelRef { name, version },
            head: served.head_len() as u32,
            size: served.bytes().len() as u64,
        })
    }

    /// Signs and records a directive; returns what to publish after the commit.
    fn directive(
        &self,
        c: &Connection,
        deployment: &str,
        device: &str,
        digest: &str,
    ) -> Result<Outgoing, FleetError> {
        let b = self.bundle_info(c, digest)?;
        // Above both what we issued and what the device says it accepted (a restored
        // bridge database must not issue sequences the device would call replays).
        let issued: i64 = c.query_row(
            "SELECT directive_seq FROM devices WHERE id = ?1",
            [device],
            |r| r.get(0),
        )?;
        let reported = crate::devices::show(c, device)
            .ok()
            .and_then(|d| d.state)
            .and_then(|s| s.directive_sequence)
            .unwrap_or(0);
        let seq = (issued as u64).max(reported) + 1;
        c.execute(
            "UPDATE devices SET directive_seq = ?2 WHERE id = ?1",
            params![device, seq as i64],
        )?;
        let t = now();
        let bytes = Directive {
            format: DIRECTIVE_FORMAT,
            deployment_id: deployment.into(),
            device_id: device.into(),
            sequence: seq,
            issued_at: t,
            expires_at: t + DIRECTIVE_TTL_SECS,
            bundle: BundleTarget {
                digest: digest
                    .parse()
                    .map_err(|_| FleetError::Invalid(format!("bad digest {digest}")))?,
                model: b.model,
                head_size: b.head,
                size: b.size,
            },
        }
        .sign(&self.key);
        c.execute(
            "INSERT INTO directives (device, sequence, deployment, digest, issued_at, body) VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
            params![device, seq as i64, deployment, digest, t as i64, bytes],
        )?;
        Ok((device.to_owned(), seq, bytes))
    }

    fn apply(
        &self,
        c: &Connection,
        id: &str,
        actions: Vec<Action>,
        actor: &str,
        publish: &mut Vec<Outgoing>,
    ) -> Result<(), FleetError> {
        let (target, model, version): (String, String, u32) = c.query_row(
            "SELECT digest, model, version FROM deployments WHERE id = ?1",
            [id],
            |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)),
        )?;
        for a in actions {
            match a {
                Action::Target(d) => publish.push(self.directive(c, id, &d, &target)?),
                Action::Restore { device, digest } => {
                    publish.push(self.directive(c, id, &device, &digest)?)
                }
                Action::Changed { state } => {
                    let reason = match &state {
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
                                name: model.clone(),
                                version,
                            })
                            .details(serde_json::json!({"state": state})),
                    );
                }
            }
        }
        Ok(())
    }

    /// Hands directives to the MQTT client (retained) and marks them published. Without a
    /// running bridge (CLI use) the send fails and they stay unpublished; the bridge's
    /// engine publishes them on its next pass.
    fn publish(&self, msgs: Vec<Outgoing>) {
        for (device, seq, body) in msgs {
            if self
                .out
                .send((topics::directive(&device), body, true))
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
            let mut q = c.prepare("SELECT device, sequence, body FROM directives WHERE published = 0 ORDER BY sequence")?;
            let rows = q.query_map([], |r| {
                Ok((r.get(0)?, r.get::<_, i64>(1)? as u64, r.get(2)?))
            })?;
            rows.collect::<Result<_, _>>()?
        };
        self.publish(pending);
        Ok(())
    }

    /// Creates and starts a deployment.
    pub fn create(&self, req: CreateDeployment) -> Result<DeploymentRecord, FleetError> {
        check_create(&req)?;
        req.strategy.validate().map_err(FleetError::Invalid)?;
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
            devices.push((
                d.clone(),
                dev.state.and_then(|s| s.active).map(|a| a.bundle.to_hex()),
            ));
        }
        if devices.is_empty() {
            return Err(FleetError::Invalid("no device matches the selector".into()));
        }
        let busy: Vec<String> = {
            let mut q = tx.prepare(
                "SELECT dd.device || ' (' || d.id || ')' FROM deployment_devices dd JOIN deployments d ON d.id = dd.deployment
                 WHERE d.state IN ('running', 'paused', 'rolling_back')",
            )?;
            let rows = q.query_map([], |r| r.get::<_, String>(0))?;
            rows.filter_map(Result::ok)
                .filter(|s| ids.iter().any(|i| s.starts_with(&format!("{i} "))))
                .collect()
        };
        if !busy.is_empty() {
            return Err(FleetError::Conflict(busy.join(", ")));
        }
        let n: i64 = tx.query_row(
            "SELECT COALESCE(MAX(CAST(SUBSTR(id, 5) AS INTEGER)), 0) FROM deployments",
            [],
            |r| r.get(0),
        )?;
        let id = format!("dep-{}", n + 1);
        let mut r = Rollout::new(rec.digest.clone(), req.strategy.clone(), devices.clone());
        let acts = r.start(now_ms());
        let previous: Vec<(String, String)> = devices
            .iter()
            .filter_map(|(d, p)| p.clone().map(|p| (d.clone(), p)))
            .collect();
        tx.execute(
            "INSERT INTO deployments (id, model, version, digest, created_at, created_by, reason, selector, strategy, state, machine, previous, updated_at)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13)",
            params![
                id,
                rec.name,
                rec.version,
                rec.digest,
                now_ms() as i64,
                req.actor,
                req.reason,
                serde_json::to_string(&req.selector).unwrap_or_default(),
                serde_json::to_string(&req.strategy).unwrap_or_default(),
                r.state.name(),
                serde_json::to_string(&r).unwrap_or_default(),
                serde_json::to_string(&previous).unwrap_or_default(),
                now_ms() as i64
            ],
        )?;
        for (d, e) in &r.devices {
            tx.execute(
                "INSERT INTO deployment_devices (deployment, device, wave) VALUES (?1, ?2, ?3)",
                params![id, d, e.wave as i64],
            )?;
        }
        self.audit.append(
            &tx,
            &req.actor,
            "deployment.create",
            &id,
            &req.reason,
            &serde_json::json!({"model": rec.name, "version": rec.version, "devices": ids, "strategy": req.strategy}),
        )?;
        self.events.emit_with(
            &tx,
            NewEvent::new(
                EventKind::DeploymentCreated,
                format!(
                    "deployment {id}: {} v{} to {} devices",
                    rec.name,
                    rec.version,
                    ids.len()
                ),
            )
            .deployment(&id)
            .model(ModelRef {
                name: rec.name.clone(),
                version: rec.version,
            }),
        );
        let mut publish = Vec::new();
        self.apply(&tx, &id, acts, &req.actor, &mut publish)?;
        tx.commit()?;
        drop(c);
        self.publish(publish);
        self.wake.notify_one();
        self.show(&id)
    }

    /// Pause / resume / abort / rollback.
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
        let acts = r
            .command(cmd.clone(), now_ms())
            .map_err(FleetError::Refused)?;
        save(&tx, id, &r)?;
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
    /// broker that may have lost its retained messages).
    pub fn republish_directives(&self) {
        let rows: Vec<Outgoing> = {
            let c = self.db.lock();
            let Ok(mut q) = c.prepare(
                "SELECT d.device, d.sequence, d.body FROM directives d
                 WHERE d.sequence = (SELECT MAX(sequence) FROM directives x WHERE x.device = d.device)",
            ) else {
                return;
            };
            q.query_map([], |r| {
                Ok((r.get(0)?, r.get::<_, i64>(1)? as u64, r.get(2)?))
            })
            .map(|rows| rows.filter_map(Result::ok).collect())
            .unwrap_or_default()
        };
        self.publish(rows);
    }

    /// One engine pass over every active deployment.
    pub fn step(&self) -> Result<(), FleetError> {
        self.publish_pending()?;
        let ids: Vec<String> = {
            let c = self.db.lock();
            let mut q = c.prepare(
                "SELECT id FROM deployments WHERE state IN ('running', 'paused', 'rolling_back')",
            )?;
            let rows = q.query_map([], |r| r.get(0))?;
            rows.collect::<Result<_, _>>()?
        };
        for id in ids {
            let mut c = self.db.lock();
            let tx = c.transaction_with_behavior(TransactionBehavior::Immediate)?;
            let mut r = load(&tx, &id)?;
            let before = serde_json::to_string(&r).unwrap_or_default();
            let now = now_ms();
            let mut acts = Vec::new();
            let devices: Vec<String> = r.devices.keys().cloned().collect();
            for d in &devices {
                if let Some(rep) = observe::report(&tx, d)? {
                    acts.extend(r.on_report(d, &rep, now));
                }
            }
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
                    let o = observe::canary(&tx, &canary, &r.target, &previous, since as u64, now)?;
                    acts.extend(r.on_observation(o, now));
                }
            }
            acts.extend(r.on_tick(now));
            if serde_json::to_string(&r).unwrap_or_default() != before {
                save(&tx, &id, &r)?;
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

fn load(c: &Connection, id: &str) -> Result<Rollout, FleetError> {
    let m: String = c
        .query_row("SELECT machine FROM deployments WHERE id = ?1", [id], |r| {
            r.get(0)
        })
        .optional()?
        .ok_or_else(|| FleetError::NotFound(format!("deployment {id}")))?;
    serde_json::from_str(&m)
        .map_err(|e| FleetError::Invalid(format!("deployment {id} state is unreadable: {e}")))
}

fn save(c: &Connection, id: &str, r: &Rollout) -> Result<(), FleetError> {
    c.execute(
        "UPDATE deployments SET machine = ?2, state = ?3, updated_at = ?4 WHERE id = ?1",
        params![
            id,
            serde_json::to_string(r).unwrap_or_default(),
            r.state.name(),
            now_ms() as i64
        ],
    )?;
    Ok(())
}

fn record(c: &Connection, id: &str) -> Result<DeploymentRecord, FleetError> {
    let (model, version, digest, created_at, created_by, reason): (String, u32, String, i64, String, String) = c.query_row(
        "SELECT model, version, digest, created_at, created_by, reason FROM deployments WHERE id = ?1",
        [id],
        |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?, r.get(4)?, r.get(5)?)),
    )
    .optional()?
    .ok_or_else(|| FleetError::NotFound(format!("deployment {id}")))?;
    let r = load(c, id)?;
    Ok(DeploymentRecord {
        id: id.into(),
        model,
        version,
        digest,
        state: r.state.name().into(),
        detail: r.state.clone(),
        wave: r.wave,
        created_at: created_at as u64 / 1000,
        created_by,
        reason,
        devices: r
            .devices
            .iter()
            .map(|(d, e)| (d.clone(), e.wave, e.status.clone()))
            .collect(),
        observation: r.observation.clone(),
        strategy: r.strategy.clone(),
    })
}

/// One deployment.
pub fn show(c: &Connection, id: &str) -> Result<DeploymentRecord, FleetError> {
    record(c, id)
}

/// Deployments matching `f`, newest first.
pub fn list(c: &Connection, f: &DeploymentFilter) -> Result<Vec<DeploymentRecord>, FleetError> {
    let mut q = c.prepare(
        "SELECT id FROM deployments d WHERE (?1 IS NULL OR model = ?1) AND (?2 IS NULL OR version = ?2) AND (?3 IS NULL OR state = ?3)
         AND (?4 IS NULL OR EXISTS (SELECT 1 FROM deployment_devices x WHERE x.deployment = d.id AND x.device = ?4))
         ORDER BY created_at DESC, id DESC",
    )?;
    let ids: Vec<String> = q
        .query_map(params![f.model, f.version, f.state, f.device], |r| r.get(0))?
        .collect::<Result<_, _>>()?;
    ids.iter().map(|i| record(c, i)).collect()
}

/// A compact strategy description (API bodies, CLI flags) → [`Strategy`].
#[derive(Debug, Clone, PartialEq, serde::Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct StrategySpec {
    /// Cumulative fractions per wave (first wave: at least one device).
    #[serde(default = "default_waves")]
    pub waves: Vec<f64>,
    /// Share of a wave that must succeed.
    #[serde(default = "default_success")]
    pub success_threshold: f64,
    /// Share of a wave that may fail.
    #[serde(default = "default_error")]
    pub error_threshold: f64,
    /// Per-wave timeout, seconds.
    #[serde(default = "default_timeout")]
    pub timeout_secs: u64,
    /// What a trip does.
    #[serde(default = "default_on_trip")]
    pub on_trip: machine::OnTrip,
    /// Canary gates.
    #[serde(default)]
    pub gates: GateSpec,
}

/// Canary gates, compact.
#[derive(Debug, Clone, PartialEq, serde::Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct GateSpec {
    /// Largest error rate (null: no gate).
    #[serde(default = "default_max_error_rate")]
    pub max_error_rate: Option<f64>,
    /// Largest p99 latency, µs (null: no gate).
    #[serde(default)]
    pub max_p99_us: Option<u64>,
    /// Largest output shift (total-variation distance; null: no gate).
    #[serde(default = "default_max_shift")]
    pub max_output_shift: Option<f64>,
    /// Predictions needed.
    #[serde(default = "default_min_samples")]
    pub min_samples: u64,
    /// Observation period, seconds.
    #[serde(default = "default_observe")]
    pub observe_secs: u64,
}

fn default_waves() -> Vec<f64> {
    vec![0.0, 0.1, 0.5, 1.0]
}
fn default_success() -> f64 {
    0.9
}
fn default_error() -> f64 {
    0.1
}
fn default_timeout() -> u64 {
    120
}
fn default_on_trip() -> machine::OnTrip {
    machine::OnTrip::Rollback
}
fn default_max_error_rate() -> Option<f64> {
    Some(0.01)
}
fn default_max_shift() -> Option<f64> {
    Some(0.3)
}
fn default_min_samples() -> u64 {
    20
}
fn default_observe() -> u64 {
    10
}

impl Default for GateSpec {
    fn default() -> Self {
        Self {
            max_error_rate: default_max_error_rate(),
            max_p99_us: None,
            max_output_shift: default_max_shift(),
            min_samples: default_min_samples(),
            observe_secs: default_observe(),
        }
    }
}

impl Default for StrategySpec {
    fn default() -> Self {
        Self {
            waves: default_waves(),
            success_threshold: default_success(),
            error_threshold: default_error(),
            timeout_secs: default_timeout(),
            on_trip: default_on_trip(),
            gates: GateSpec::default(),
        }
    }
}

impl StrategySpec {
    /// The full strategy.
    pub fn build(&self) -> Result<Strategy, FleetError> {
        let s = Strategy {
            waves: self
                .waves
                .iter()
                .map(|f| machine::Wave {
                    fraction: *f,
                    success_threshold: self.success_threshold,
                    error_threshold: self.error_threshold,
                    timeout_ms: self.timeout_secs * 1000,
                })
                .collect(),
            gates: machine::Gates {
                max_error_rate: self.gates.max_error_rate,
                max_p99_us: self.gates.max_p99_us,
                max_output_shift: self.gates.max_output_shift,
                min_samples: self.gates.min_samples,
                observe_ms: self.gates.observe_secs * 1000,
            },
            on_trip: self.on_trip,
        };
        s.validate().map_err(FleetError::Invalid)?;
        Ok(s)
    }
}
