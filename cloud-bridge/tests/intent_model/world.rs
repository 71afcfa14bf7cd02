//! The world the intent model drives: a bridge (its fleet engine over a copy of a
//! template database with three registered versions) and three simulated agents (directive
//! admission, lifecycles, IO jobs the test completes one at a time), and how each [`Op`]
//! is applied to them.

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::path::Path;
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use outpost_agent::config::ModelsConfig;
use outpost_agent::update::admit::{self, Admission};
use outpost_agent::update::lifecycle::{Action, Lifecycle, Slot};
use outpost_bridge::audit::Audit;
use outpost_bridge::bundles::{BundleStore, FsBundleStore};
use outpost_bridge::clock::Clock;
use outpost_bridge::db::Db;
use outpost_bridge::events::EventBus;
use outpost_bridge::fleet::machine::{Command, OnTrip};
use outpost_bridge::fleet::{
    CreateDeployment, FleetHandle, GateSpec, RemoveModel, RollbackRequest, Selector, StrategySpec,
    desired,
};
use outpost_bridge::mqtt::{MqttOut, MqttOutRx, Publish};
use outpost_bridge::registry::{self, RegisterRequest};
use outpost_protocol::directive::DirectiveContext;
use outpost_protocol::wire::{BudgetState, DirectiveRejection, Health, ReportedState};
use outpost_protocol::{Digest, Limits, SigningKey, TrustStore, topics};
use proptest::prelude::*;
use tokio::sync::Notify;

use crate::{CFG, DEVICES, MODEL, Op};

#[path = "checks.rs"]
mod checks;

/// A bridge data directory with three registered versions of `m`, made once and copied
/// per case (registration validates and profiles with tract: seconds, not microseconds).
fn template() -> &'static (tempfile::TempDir, String) {
    static T: OnceLock<(tempfile::TempDir, String)> = OnceLock::new();
    T.get_or_init(|| {
        let dir = tempfile::tempdir().unwrap();
        let key = SigningKey::generate().unwrap();
        let db = Db::open(dir.path()).unwrap();
        let audit = Audit::new(dir.path());
        let bundles = FsBundleStore::new(dir.path()).unwrap();
        for fixture in [
            "vibration-anomaly",
            "vibration-anomaly-swapped",
            "vibration-anomaly",
        ] {
            let d = outpost_testkit::models_dir().join(fixture);
            let req = RegisterRequest {
                name: MODEL.into(),
                files: vec![d.join("model.onnx")],
                spec: Some(d.join("spec.toml")),
                created_by: "test".into(),
                reason: "intent model".into(),
                ..Default::default()
            };
            registry::register(&mut db.lock(), &audit, &bundles, &key, req).unwrap();
        }
        drop(db);
        (dir, key.to_file_contents())
    })
}

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for e in std::fs::read_dir(from).unwrap() {
        let e = e.unwrap();
        let dest = to.join(e.file_name());
        if e.file_type().unwrap().is_dir() {
            copy_dir(&e.path(), &dest);
        } else {
            std::fs::copy(e.path(), dest).unwrap();
        }
    }
}

/// IO the agent's loop has started and the test completes later.
#[derive(Debug, Clone)]
enum Job {
    Fetch(Digest),
    Install {
        digest: Digest,
        slot: Slot,
        ticket: u64,
    },
    Load {
        slot: Slot,
        ticket: u64,
    },
}

/// One device: the agent's admission state, its lifecycles and what it serves.
#[derive(Default)]
pub(super) struct Device {
    online: bool,
    skew: i64,
    last_sequence: Option<u64>,
    /// The latest accepted directive's targets, by model.
    accepted: BTreeMap<String, Digest>,
    pub(super) rejected: Option<DirectiveRejection>,
    pub(super) models: BTreeMap<String, Lifecycle>,
    pub(super) serving: BTreeMap<String, Digest>,
    jobs: VecDeque<(String, Job)>,
    /// The retained directive last delivered (delivery happens once per change).
    delivered: Option<Vec<u8>>,
    inferences: u64,
}

pub(super) struct World {
    _dir: tempfile::TempDir,
    data: std::path::PathBuf,
    key: Arc<SigningKey>,
    trust: TrustStore,
    clock: Clock,
    pub(super) db: Db,
    audit: Audit,
    bundles: Arc<dyn BundleStore>,
    fleet: FleetHandle,
    out: MqttOutRx,
    /// The broker's retained directives, by device.
    retained: BTreeMap<String, Vec<u8>>,
    pub(super) devices: Vec<Device>,
    deployments: Vec<String>,
    deleted: BTreeSet<String>,
    digests: BTreeMap<u32, String>,
    /// The oracle for abort and rollback: per device, bundles it must not activate once it
    /// has accepted a directive at or after the given sequence (the one issued when the
    /// abort or rollback was recorded), until a later deployment targets it again.
    pub(super) forbidden: Vec<BTreeMap<String, u64>>,
}

fn engine(
    db: &Db,
    data: &Path,
    key: &Arc<SigningKey>,
    bundles: &Arc<dyn BundleStore>,
    clock: &Clock,
) -> (FleetHandle, MqttOutRx) {
    // Large enough that the model's bursts never hit the bound (a refusal would only
    // delay a directive to the next pass, which the model does not drive).
    let (tx, rx) = MqttOut::with_capacity(1 << 16);
    let fleet = FleetHandle::new(
        db.clone(),
        Audit::new(data),
        EventBus::new(db.clone(), None),
        outpost_bridge::keys::Keyring::fixed(key.clone()),
        bundles.clone(),
        tx,
        Arc::new(Notify::new()),
    )
    .with_clock(clock.clone());
    (fleet, rx)
}

fn strategy(rollback: bool) -> outpost_bridge::fleet::machine::Strategy {
    StrategySpec {
        waves: vec![0.0, 1.0],
        success_threshold: 0.5,
        error_threshold: 0.5,
        timeout_secs: 30,
        on_trip: if rollback {
            OnTrip::Rollback
        } else {
            OnTrip::Pause
        },
        gates: GateSpec {
            max_error_rate: None,
            max_p99_us: None,
            max_output_shift: None,
            min_samples: 0,
            observe_secs: 0,
        },
    }
    .build()
    .unwrap()
}

fn ids(mask: u8) -> Vec<String> {
    (0..3)
        .filter(|i| mask & (1 << i) != 0)
        .map(|i| DEVICES[i].to_string())
        .collect()
}

/// A refusal must say why.
fn refused(e: impl std::fmt::Display) -> Result<(), TestCaseError> {
    let m = e.to_string();
    prop_assert!(
        m.split(':')
            .next_back()
            .is_some_and(|t| !t.trim().is_empty()),
        "a refusal without a reason: {m:?}"
    );
    Ok(())
}

impl World {
    pub(super) fn new() -> Self {
        let (tpl, key_text) = template();
        let dir = tempfile::tempdir().unwrap();
        let data = dir.path().join("bridge");
        copy_dir(tpl.path(), &data);
        let key = Arc::new(SigningKey::from_file_contents(key_text, "test").unwrap());
        let mut trust = TrustStore::new();
        trust.add(key.public_key());
        let db = Db::open(&data).unwrap();
        let bundles: Arc<dyn BundleStore> = Arc::new(FsBundleStore::new(&data).unwrap());
        let clock = Clock::system();
        let (fleet, out) = engine(&db, &data, &key, &bundles, &clock);
        let digests = (1..=3)
            .map(|v| {
                let r = registry::show(&db.lock(), MODEL, Some(v)).unwrap();
                (v, r.digest)
            })
            .collect();
        let mut w = World {
            audit: Audit::new(&data),
            _dir: dir,
            data,
            key,
            trust,
            clock,
            db,
            bundles,
            fleet,
            out,
            retained: BTreeMap::new(),
            devices: (0..3)
                .map(|_| Device {
                    online: true,
                    ..Default::default()
                })
                .collect(),
            deployments: Vec::new(),
            deleted: BTreeSet::new(),
            digests,
            forbidden: vec![BTreeMap::new(); 3],
        };
        for i in 0..3 {
            w.report(i);
        }
        w
    }

    fn device_now(&self, i: usize) -> u64 {
        (self.clock.now() as i64 + self.devices[i].skew).max(0) as u64
    }

    /// The device's reported state, built as the agent's `report` does.
    fn report(&mut self, i: usize) {
        let d = &self.devices[i];
        if !d.online {
            return;
        }
        let models = d
            .models
            .iter()
            .map(|(name, l)| l.model_state(d.serving.contains_key(name), (0, 0)))
            .collect();
        let s = ReportedState {
            device_id: DEVICES[i].into(),
            agent_version: "test".into(),
            at: self.device_now(i),
            directive_sequence: d.last_sequence,
            directive_rejected: d.rejected.clone(),
            models,
            health: Health::Ok,
            last_error: None,
            budget: BudgetState::default(),
            tags: BTreeMap::new(),
            trusted_keys: Vec::new(),
        };
        outpost_bridge::devices::on_state(&self.db.lock(), &self.audit, &s, None).unwrap();
    }

    /// Moves what the engine published into the broker's retained store, and delivers
    /// each device's retained directive once to an online device.
    fn broker(&mut self) -> Result<(), TestCaseError> {
        while let Ok(Publish {
            topic,
            payload: body,
            retain,
        }) = self.out.try_recv()
        {
            if let Some(dev) = DEVICES.iter().find(|d| topics::directive(d) == topic) {
                prop_assert!(retain, "directives are retained");
                self.retained.insert(dev.to_string(), body);
            }
        }
        for (i, dev) in DEVICES.iter().enumerate() {
            if !self.devices[i].online {
                continue;
            }
            let Some(body) = self.retained.get(*dev).cloned() else {
                continue;
            };
            if self.devices[i].delivered.as_ref() == Some(&body) {
                continue;
            }
            self.devices[i].delivered = Some(body.clone());
            self.on_directive(i, &body)?;
        }
        Ok(())
    }

    fn on_directive(&mut self, i: usize, body: &[u8]) -> Result<(), TestCaseError> {
        let now = self.device_now(i);
        let d = &mut self.devices[i];
        let ctx = DirectiveContext {
            device_id: DEVICES[i],
            last_sequence: d.last_sequence,
            now,
            max_skew: 86_400,
        };
        let budget = ModelsConfig::default();
        match admit::admit(body, &self.trust, ctx, &Limits::default(), &budget) {
            Admission::Replay => {}
            Admission::Refused(r) => {
                prop_assert!(!r.reason.trim().is_empty() && !r.kind.is_empty(), "{r:?}");
                d.rejected = Some(r);
            }
            Admission::Accepted(vd) => {
                let dir = vd.directive();
                d.last_sequence = Some(dir.sequence);
                d.rejected = None;
                d.accepted = dir
                    .models
                    .iter()
                    .map(|m| (m.name.clone(), m.digest))
                    .collect();
                for (name, acts) in admit::dispatch(&mut d.models, dir) {
                    self.run(i, &name, acts)?;
                }
            }
        }
        self.report(i);
        Ok(())
    }

    /// The agent's IO loop for one model's actions: jobs are queued, the rest happen now.
    fn run(&mut self, i: usize, name: &str, acts: Vec<Action>) -> Result<(), TestCaseError> {
        for a in acts {
            let d = &mut self.devices[i];
            match a {
                Action::Fetch(t) => d.jobs.push_back((name.into(), Job::Fetch(t.digest))),
                Action::CancelFetch => d
                    .jobs
                    .retain(|(n, j)| !(n == name && matches!(j, Job::Fetch(_)))),
                Action::Install {
                    target,
                    slot,
                    ticket,
                } => d.jobs.push_back((
                    name.into(),
                    Job::Install {
                        digest: target.digest,
                        slot,
                        ticket,
                    },
                )),
                Action::LoadSlot { slot, ticket } => {
                    d.jobs.push_back((name.into(), Job::Load { slot, ticket }))
                }
                Action::Activate(slot) => {
                    let l = &d.models[name];
                    let digest = l.slot(slot).map(|m| m.bundle);
                    prop_assert!(digest.is_some(), "{name}: activated an empty slot");
                    let digest = digest.unwrap();
                    // The agent half: only the latest accepted directive's target.
                    prop_assert_eq!(
                        d.accepted.get(name),
                        Some(&digest),
                        "{} switched {} to a bundle its latest accepted directive does not name",
                        DEVICES[i],
                        name
                    );
                    // The bridge half, composed: holding the bridge's latest directive, the
                    // device never activates what the bridge no longer intends.
                    if self.retained.get(DEVICES[i]) == d.delivered.as_ref() && d.rejected.is_none()
                    {
                        let intended = desired::entries(&self.db.lock(), DEVICES[i])
                            .unwrap()
                            .into_iter()
                            .find(|m| m.name == name)
                            .map(|m| m.digest);
                        prop_assert_eq!(
                            intended,
                            Some(digest),
                            "{} activated {} of {}, which the bridge no longer intends",
                            DEVICES[i],
                            digest.to_hex(),
                            name
                        );
                    }
                    if let Some(seq) = self.forbidden[i].get(&digest.to_hex()) {
                        prop_assert!(
                            d.last_sequence < Some(*seq),
                            "{} activated {}, taken back by an abort or rollback it has heard of",
                            DEVICES[i],
                            digest.to_hex()
                        );
                    }
                    d.serving.insert(name.into(), digest);
                }
                Action::Unload => {
                    d.serving.remove(name);
                }
                Action::FreeSlots | Action::Persist => {}
                Action::Event { message, .. } => {
                    prop_assert!(!message.trim().is_empty());
                }
            }
        }
        Ok(())
    }

    /// Completes the device's oldest job (a download only while online).
    fn io(&mut self, i: usize) -> Result<(), TestCaseError> {
        let online = self.devices[i].online;
        let pos = self.devices[i]
            .jobs
            .iter()
            .position(|(_, j)| online || !matches!(j, Job::Fetch(_)));
        let Some(pos) = pos else { return Ok(()) };
        let (name, job) = self.devices[i].jobs.remove(pos).unwrap();
        let now_ms = self.device_now(i) * 1000;
        let ok = self.devices[i].inferences;
        let Some(l) = self.devices[i].models.get_mut(&name) else {
            return Ok(());
        };
        let acts = match job {
            Job::Fetch(digest) => l.on_fetched(digest),
            Job::Install {
                digest,
                slot,
                ticket,
            } => {
                let version = self
                    .digests
                    .iter()
                    .find(|(_, d)| **d == digest.to_hex())
                    .map(|(v, _)| *v)
                    .unwrap_or(0);
                let m = outpost_protocol::wire::InstalledModel {
                    bundle: digest,
                    model: outpost_protocol::manifest::ModelRef {
                        name: name.clone(),
                        version,
                    },
                };
                l.on_installed(ticket, digest, slot, Ok(m), now_ms, ok, 0)
            }
            Job::Load { slot, ticket } => l.on_slot_loaded(ticket, slot, Ok(()), now_ms, ok, 0),
        };
        self.run(i, &name, acts)?;
        self.report(i);
        Ok(())
    }

    /// Time passes on every device: inferences succeed, probation is judged.
    fn tick(&mut self, secs: u64) -> Result<(), TestCaseError> {
        self.clock.advance(Duration::from_secs(secs));
        for i in 0..3 {
            self.devices[i].inferences += 10 * secs;
            let now_ms = self.device_now(i) * 1000;
            let ok = self.devices[i].inferences;
            let names: Vec<String> = self.devices[i].models.keys().cloned().collect();
            for name in names {
                let acts = self.devices[i]
                    .models
                    .get_mut(&name)
                    .unwrap()
                    .on_tick(now_ms, &CFG, ok, 0);
                self.run(i, &name, acts)?;
            }
            self.report(i);
        }
        Ok(())
    }

    fn engine_pass(&mut self) -> Result<(), TestCaseError> {
        if let Err(e) = self.fleet.step() {
            prop_assert!(false, "the engine failed: {e}");
        }
        self.broker()
    }

    /// A new deployment targets these devices: whatever was taken back may be intended again.
    fn retarget(&mut self, d: &outpost_bridge::fleet::DeploymentRecord) {
        for (dev, _, _) in &d.devices {
            if let Some(i) = DEVICES.iter().position(|x| x == dev) {
                self.forbidden[i].clear();
            }
        }
    }

    /// An abort (`rollback == false`) or rollback of `before` was recorded: its target is
    /// taken back from every device that had not finished (abort) or that ran something else
    /// before (rollback), unless the device already reported running it (an abort pins a
    /// device to what it runs).
    fn taken_back(
        &mut self,
        before: &outpost_bridge::fleet::DeploymentRecord,
        after: &outpost_bridge::fleet::DeploymentRecord,
        rollback: bool,
    ) {
        use outpost_bridge::fleet::machine::DeviceStatus;
        let c = self.db.lock();
        for (dev, _, status) in &before.devices {
            let Some(i) = DEVICES.iter().position(|x| x == dev) else {
                continue;
            };
            let runs = desired::reported(&c, dev)
                .unwrap()
                .and_then(|s| s.model(MODEL).and_then(|m| m.active.clone()))
                .map(|a| a.bundle.to_hex());
            if runs.as_deref() == Some(&before.digest) {
                continue;
            }
            let keep = if rollback {
                false
            } else {
                matches!(status, DeviceStatus::Succeeded)
                    || after
                        .devices
                        .iter()
                        .any(|(d, _, s)| d == dev && matches!(s, DeviceStatus::Succeeded))
            };
            if keep {
                continue;
            }
            let seq: i64 = c
                .query_row(
                    "SELECT COALESCE(MAX(sequence), 0) FROM directives WHERE device = ?1",
                    [dev],
                    |r| r.get(0),
                )
                .unwrap();
            self.forbidden[i].insert(before.digest.clone(), seq as u64);
        }
    }

    fn deployment(&self, k: usize) -> Option<String> {
        (!self.deployments.is_empty()).then(|| self.deployments[k % self.deployments.len()].clone())
    }

    pub(super) fn apply(&mut self, op: &Op) -> Result<(), TestCaseError> {
        match op.clone() {
            Op::Create {
                version,
                devices,
                rollback,
            } => match self.fleet.create(CreateDeployment {
                model: MODEL.into(),
                version: Some(version),
                selector: Selector {
                    ids: ids(devices),
                    tags: Vec::new(),
                },
                strategy: strategy(rollback),
                actor: "test".into(),
                reason: "test".into(),
                skip_gates: false,
            }) {
                Ok(d) => {
                    self.retarget(&d);
                    self.deployments.push(d.id)
                }
                Err(e) => refused(e)?,
            },
            Op::Pause(k) | Op::Resume(k) | Op::Abort(k) => {
                if let Some(id) = self.deployment(k) {
                    let cmd = match op {
                        Op::Pause(_) => Command::Pause("hold".into()),
                        Op::Resume(_) => Command::Resume,
                        _ => Command::Abort("stop".into()),
                    };
                    let before = self.fleet.show(&id).unwrap();
                    match self.fleet.command(&id, cmd, "test") {
                        Ok(after) if matches!(op, Op::Abort(_)) => {
                            self.taken_back(&before, &after, false)
                        }
                        Ok(_) => {}
                        Err(e) => refused(e)?,
                    }
                }
            }
            Op::Rollback { deployment, to } => {
                if let Some(id) = self.deployment(deployment) {
                    let before = self.fleet.show(&id).unwrap();
                    match self.fleet.rollback(RollbackRequest {
                        id,
                        to,
                        actor: "test".into(),
                        reason: "back".into(),
                    }) {
                        Ok(d) if !self.deployments.contains(&d.id) => {
                            // A new deployment (of a finished one): new intent.
                            self.retarget(&d);
                            self.deployments.push(d.id)
                        }
                        Ok(after) => self.taken_back(&before, &after, true),
                        Err(e) => refused(e)?,
                    }
                }
            }
            Op::Remove(mask) => {
                if let Err(e) = self.fleet.remove_model(RemoveModel {
                    model: MODEL.into(),
                    selector: Selector {
                        ids: ids(mask),
                        tags: Vec::new(),
                    },
                    actor: "test".into(),
                    reason: "off".into(),
                }) {
                    refused(e)?;
                }
            }
            Op::Delete(v) => {
                let r = registry::delete(
                    &mut self.db.lock(),
                    &self.audit,
                    self.bundles.as_ref(),
                    MODEL,
                    v,
                    "test",
                    "cleanup",
                );
                match r {
                    Ok(()) => {
                        self.deleted.insert(self.digests[&v].clone());
                    }
                    Err(e) => refused(e)?,
                }
            }
            Op::Offline(i) => self.devices[i].online = false,
            Op::Online(i) => {
                self.devices[i].online = true;
                self.report(i);
            }
            Op::Skew(i, s) => self.devices[i].skew = s,
            Op::Io(i) => self.io(i)?,
            Op::Engine => self.engine_pass()?,
            Op::Tick(s) => self.tick(s)?,
            Op::Days(n) => self.tick(n * 86_400)?,
            Op::Restart => {
                // A new engine over the same database; on connecting to the broker it
                // republishes every device's latest directive.
                self.db = Db::open(&self.data).unwrap();
                let (fleet, out) =
                    engine(&self.db, &self.data, &self.key, &self.bundles, &self.clock);
                self.fleet = fleet;
                self.out = out;
                self.fleet.republish_directives();
            }
        }
        self.broker()?;
        self.check()
    }
}
