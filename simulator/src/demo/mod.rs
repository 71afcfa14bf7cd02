//! `outpost-sim demo`: the whole loop on one machine, in a few minutes.
//!
//! A bridge (embedded broker with per-device credentials, SQLite in a temporary
//! directory) and 20 simulated gateways. v1 of the vibration model is registered and
//! rolled out in waves; the gateways classify their (simulated) machines; five lose their
//! link for a while and catch up; a bad v2 (its outputs permuted) trips the canary's
//! output-shift gate and is rolled back automatically; a good v3 reaches everyone. Then
//! everything produced is drained and accounted for, per phase.
//!
//! Every gateway runs a second model beside the vibration classifier: a scikit-learn ridge
//! regression (exported by skl2onnx, registered unmodified) rolled out by its own deployment
//! at the same time as vibration v1. It must stay on its version and keep answering through
//! every vibration rollout and rollback.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use outpost_agent::sensors::vibration::MachineMode;
use outpost_bridge::fleet;
use outpost_bridge::server::{self, Bridge, BrokerChoice, ServeConfig};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

use crate::fleet::{DeviceOptions, DeviceSpec, SimFleet, device_seed};
use crate::report::{self, Mark, Phase, Row};

mod observe;
mod rollout;

use observe::{on_model, on_named, ridge_answers, wait_for};
pub use rollout::write_fixtures;
use rollout::{deploy, deploy_model, follow, register, ridge_strategy};

/// The vibration classifier's model name (the sensor pipeline is bound to it).
pub const VIBRATION: &str = "vibration-anomaly";
/// The second model on every gateway.
pub const RIDGE: &str = "ridge-regression";

/// Demo settings.
#[derive(Debug, Clone)]
pub struct DemoOptions {
    /// Gateways.
    pub devices: usize,
    /// Seed for everything random.
    pub seed: u64,
    /// Gateways that go offline.
    pub offline: usize,
    /// How long they stay offline.
    pub offline_for: Duration,
    /// Keep the bridge up after the summary.
    pub keep_running: bool,
    /// Print progress.
    pub verbose: bool,
    /// People's output (progress, the table, how to explore) goes to stderr, so stdout
    /// carries only the JSON report (`demo --json`).
    pub human_on_stderr: bool,
    /// Keep the bridge's and gateways' data here instead of a temporary directory.
    pub data_dir: Option<PathBuf>,
}

impl Default for DemoOptions {
    fn default() -> Self {
        Self {
            devices: 20,
            seed: 7,
            offline: 5,
            offline_for: Duration::from_secs(12),
            keep_running: false,
            verbose: true,
            human_on_stderr: false,
            data_dir: None,
        }
    }
}

/// What the demo found.
#[derive(Debug, Clone, serde::Serialize)]
pub struct DemoReport {
    /// Per-phase rows.
    pub rows: Vec<Row>,
    /// Records lost in all (must be 0).
    pub lost: u64,
    /// v1 deployment final state.
    pub v1_state: String,
    /// v2 deployment final state and reason.
    pub v2_state: String,
    /// Devices on v3 at the end.
    pub on_v3: usize,
    /// Devices that ever ran v2.
    pub v2_devices: Vec<String>,
    /// Which devices went offline.
    pub offline: Vec<String>,
    /// Which devices were made to drift.
    pub drifted: Vec<String>,
    /// Devices named by the last fleet drift alert.
    pub drift_alert: Vec<String>,
    /// The export command the alert carried.
    pub drift_export: Option<String>,
    /// Captures that export returned.
    pub drift_exported: usize,
    /// Devices that raised device-level drift events.
    pub device_drift_events: Vec<String>,
    /// The bridge's data directory.
    pub bridge_dir: PathBuf,
    /// The outcome sequence (for reproducibility checks).
    pub outcomes: Vec<String>,
    /// Bridge API address.
    pub api: Option<SocketAddr>,
    /// The ridge deployment's final state.
    pub ridge_state: String,
    /// Fewest models any gateway ran at the end.
    pub min_models_per_gateway: usize,
    /// Gateways that answered a ridge regression request after each vibration phase
    /// (phase name, gateways).
    pub ridge_served: Vec<(String, usize)>,
    /// Gateways still on ridge v1 at the end.
    pub ridge_unchanged: usize,
}

impl DemoReport {
    /// Whether the demo showed everything it should.
    pub fn ok(&self) -> bool {
        let n = self.rows.first().map(|r| r.devices).unwrap_or(0);
        self.lost == 0
            && self.v1_state == "succeeded"
            && self.v2_state.starts_with("rolled_back")
            && self.on_v3 == n
            && self.ridge_state == "succeeded"
            && self.min_models_per_gateway == 2
            && self.ridge_unchanged == n
            && !self.ridge_served.is_empty()
            && self.ridge_served.iter().all(|(_, k)| *k == n)
    }
}

/// Errors.
#[derive(Debug, thiserror::Error)]
#[error("demo: {0}")]
pub struct DemoError(pub String);

fn err(e: impl std::fmt::Display) -> DemoError {
    DemoError(e.to_string())
}

struct Ctx {
    started: Instant,
    verbose: bool,
    stderr: bool,
}

impl Ctx {
    fn say(&self, m: impl AsRef<str>) {
        if self.verbose {
            self.human(format!(
                "[{:>6.1}s] {}",
                self.started.elapsed().as_secs_f64(),
                m.as_ref()
            ));
        }
    }

    fn human(&self, line: impl std::fmt::Display) {
        if self.stderr {
            eprintln!("{line}");
        } else {
            println!("{line}");
        }
    }
}

/// Runs the demo.
pub async fn run(o: DemoOptions) -> Result<DemoReport, DemoError> {
    let ctx = Ctx {
        started: Instant::now(),
        verbose: o.verbose,
        stderr: o.human_on_stderr,
    };
    let tmp = tempfile::Builder::new()
        .prefix("outpost-demo-")
        .tempdir()
        .map_err(err)?;
    let root = o
        .data_dir
        .clone()
        .unwrap_or_else(|| tmp.path().to_path_buf());
    std::fs::create_dir_all(&root).map_err(err)?;
    let models = write_fixtures(&root).map_err(err)?;
    let mut cfg = ServeConfig::new(root.join("bridge"));
    cfg.broker = BrokerChoice::Embedded {
        listen: SocketAddr::from(([127, 0, 0, 1], 0)),
        auth: true,
    };
    cfg.http = Some(SocketAddr::from(([127, 0, 0, 1], 0)));
    cfg.fleet_tick = Duration::from_millis(200);
    let bridge = server::start(cfg).await.map_err(err)?;
    let token = outpost_bridge::auth::add_token(
        &bridge.db.lock(),
        "demo-admin",
        outpost_bridge::auth::Role::Admin,
    )
    .map_err(err)?;
    ctx.say(format!(
        "bridge up: embedded MQTT broker on {}:{} (device credentials required), API on http://{}",
        bridge.broker.0,
        bridge.broker.1,
        bridge.http_addr.map(|a| a.to_string()).unwrap_or_default()
    ));

    // The fleet: machine states and everything else drawn from the seed. The canary
    // (the first device) runs a healthy machine.
    let mut rng = ChaCha8Rng::seed_from_u64(o.seed);
    let specs: Vec<DeviceSpec> = (0..o.devices)
        .map(|i| {
            let r: f64 = rng.random();
            let mode = if i == 0 || r < 0.7 {
                MachineMode::Normal
            } else if r < 0.85 {
                MachineMode::Imbalance
            } else {
                MachineMode::BearingFault
            };
            let mut tags = BTreeMap::new();
            tags.insert(
                "site".into(),
                if i % 2 == 0 { "north" } else { "south" }.into(),
            );
            tags.insert("target".into(), "x86_64-unknown-linux-gnu".into());
            DeviceSpec {
                id: format!("gw-{:02}", i + 1),
                seed: device_seed(o.seed, i as u64),
                mode,
                tags,
            }
        })
        .collect();
    let modes: BTreeMap<String, MachineMode> =
        specs.iter().map(|s| (s.id.clone(), s.mode)).collect();
    let fleet = SimFleet::start(
        &bridge,
        &root.join("fleet"),
        &specs,
        &DeviceOptions {
            sensor_model: Some(VIBRATION.into()),
            ..DeviceOptions::default()
        },
        true,
    )
    .await
    .map_err(err)?;
    ctx.say(format!(
        "{} gateways started ({} normal, {} imbalance, {} bearing fault), each behind its own fault proxy",
        fleet.devices.len(),
        modes.values().filter(|m| **m == MachineMode::Normal).count(),
        modes.values().filter(|m| **m == MachineMode::Imbalance).count(),
        modes.values().filter(|m| **m == MachineMode::BearingFault).count()
    ));
    let mut outcomes = Vec::new();
    let mut phases: Vec<Phase> = Vec::new();
    let begin = |name: &str| (name.to_owned(), Instant::now(), report::mark(&fleet));
    let end = |phases: &mut Vec<Phase>,
               (name, t, start): (String, Instant, Mark),
               fleet: &SimFleet,
               converged: usize,
               expect: &str| {
        phases.push(Phase {
            name,
            took: t.elapsed(),
            converged,
            expect: expect.into(),
            start,
            end: report::mark(fleet),
        });
    };

    // Phase 1: v1 in waves.
    let p = begin("1 v1 rollout in waves");
    let v1 = register(&bridge, &models, "vibration-anomaly", "initial model", true)?;
    ctx.say(format!(
        "registered vibration-anomaly v{} (bundle {}, {} bytes), validated with tract",
        v1.version,
        &v1.digest[..12],
        v1.bundle_size
    ));
    let ridge = register(&bridge, &models, "sklearn/ridge", "second model", false)?;
    ctx.say(format!(
        "registered {RIDGE} v{} (scikit-learn ridge via skl2onnx, contract read from the graph)",
        ridge.version
    ));
    let d1 = deploy(&bridge, &fleet, v1.version, "first rollout")?;
    // A deployment of a different model to the same gateways runs at the same time.
    let dr = deploy_model(
        &bridge,
        &fleet,
        RIDGE,
        ridge.version,
        ridge_strategy(),
        "second model on every gateway",
    )?;
    let r1 = follow(&ctx, &bridge, &d1, "v1").await;
    let rr = follow(&ctx, &bridge, &dr, RIDGE).await;
    outcomes.push(format!("v1 {}", r1.state));
    outcomes.push(format!("{RIDGE} {}", rr.state));
    let n = fleet.devices.len();
    wait_for(30, || {
        on_model(&fleet, &v1.digest) == n && on_named(&fleet, RIDGE, &ridge.digest) == n
    })
    .await;
    let mut ridge_served = vec![("1".to_string(), ridge_answers(&fleet, &mut rng))];
    ctx.say(format!(
        "{} gateways run two models: {VIBRATION} v{} (sensor pipeline) and {RIDGE} v{} ({} answer regression requests)",
        on_named(&fleet, RIDGE, &ridge.digest),
        v1.version,
        ridge.version,
        ridge_served[0].1
    ));
    end(&mut phases, p, &fleet, on_model(&fleet, &v1.digest), "v1");

    // Phase 2: classify for a while; check each gateway recognises its machine.
    let p = begin("2 classify vibration");
    tokio::time::sleep(Duration::from_secs(5)).await;
    let correct = fleet
        .devices
        .iter()
        .filter(|d| {
            let label: Option<String> = bridge
                .db
                .lock()
                .query_row(
                    "SELECT label FROM captures WHERE device = ?1 GROUP BY label ORDER BY COUNT(*) DESC LIMIT 1",
                    [&d.id],
                    |r| r.get(0),
                )
                .ok();
            label.as_deref() == Some(modes[&d.id].label()) || (label.is_none() && modes[&d.id] == MachineMode::Normal)
        })
        .count();
    ctx.say(format!(
        "{correct}/{} gateways classify their machine correctly (majority of captured predictions)",
        fleet.devices.len()
    ));
    outcomes.push(format!("classified {correct}"));
    end(&mut phases, p, &fleet, on_model(&fleet, &v1.digest), "v1");

    // Phase 3: five gateways lose their link, keep working offline, and catch up.
    let p = begin("3 5 gateways offline");
    let mut ids: Vec<String> = fleet.devices.iter().skip(1).map(|d| d.id.clone()).collect();
    let mut offline = Vec::new();
    for _ in 0..o.offline.min(ids.len()) {
        offline.push(ids.remove(rng.random_range(0..ids.len())));
    }
    offline.sort();
    for id in &offline {
        fleet.get(id).expect("device").proxy.cut(true);
    }
    ctx.say(format!("links cut: {}", offline.join(", ")));
    tokio::time::sleep(o.offline_for).await;
    let backlog: u64 = offline
        .iter()
        .filter_map(|id| {
            fleet.get(id)?.agent.store.as_ref().map(|s| {
                outpost_agent::sync::lock(s)
                    .stats()
                    .values()
                    .map(|v| v.records)
                    .sum::<u64>()
            })
        })
        .sum();
    ctx.say(format!(
        "after {}s offline they hold {backlog} unsent records; links restored",
        o.offline_for.as_secs()
    ));
    for id in &offline {
        fleet.get(id).expect("device").proxy.cut(false);
    }
    let drained = wait_for(60, || {
        offline.iter().all(|id| {
            fleet
                .get(id)
                .and_then(|d| d.agent.store.as_ref())
                .is_some_and(|s| {
                    outpost_agent::sync::lock(s)
                        .stats()
                        .values()
                        .map(|v| v.records)
                        .sum::<u64>()
                        < 20
                })
        })
    })
    .await;
    ctx.say(if drained {
        "backlogs synced".to_string()
    } else {
        "backlogs still draining".to_string()
    });
    outcomes.push(format!("offline {}", offline.join(",")));
    end(&mut phases, p, &fleet, on_model(&fleet, &v1.digest), "v1");

    // Phase 4: a bad v2 trips the canary gate and is rolled back.
    let p = begin("4 bad v2 (rolled back)");
    let v2 = register(
        &bridge,
        &models,
        "vibration-anomaly-swapped",
        "new training run (outputs silently permuted)",
        false,
    )?;
    ctx.say(format!(
        "registered v{}: it passes its own self-test, but its labels are permuted",
        v2.version
    ));
    let d2 = deploy(&bridge, &fleet, v2.version, "second rollout")?;
    let r2 = follow(&ctx, &bridge, &d2, "v2").await;
    let v2_state = match &r2.detail {
        fleet::machine::State::RolledBack { reason }
        | fleet::machine::State::RollingBack { reason } => format!("{} ({reason})", r2.state),
        _ => r2.state.clone(),
    };
    outcomes.push(format!("v2 {}", r2.state));
    let v2_devices: Vec<String> = {
        let c = bridge.db.lock();
        let mut q = c
            .prepare(
                "SELECT DISTINCT d.device FROM directives d, json_each(d.models) j
                 WHERE json_extract(j.value, '$.digest') = ?1 ORDER BY d.device",
            )
            .map_err(err)?;
        q.query_map([&v2.digest], |r| r.get(0))
            .map_err(err)?
            .filter_map(Result::ok)
            .collect()
    };
    wait_for(30, || on_model(&fleet, &v1.digest) == fleet.devices.len()).await;
    ctx.say(format!(
        "only {} ever received v2; all {} gateways are on v1 again",
        v2_devices.join(", "),
        on_model(&fleet, &v1.digest)
    ));
    ridge_served.push(("4".into(), ridge_answers(&fleet, &mut rng)));
    end(&mut phases, p, &fleet, on_model(&fleet, &v1.digest), "v1");

    // Phase 5: a good v3 for everyone.
    let p = begin("5 good v3 rollout");
    let v3 = register(
        &bridge,
        &models,
        "vibration-anomaly",
        "retrained on captured data",
        true,
    )?;
    let d3 = deploy(&bridge, &fleet, v3.version, "third rollout")?;
    let r3 = follow(&ctx, &bridge, &d3, "v3").await;
    outcomes.push(format!("v3 {}", r3.state));
    wait_for(30, || on_model(&fleet, &v3.digest) == fleet.devices.len()).await;
    let on_v3 = on_model(&fleet, &v3.digest);
    ridge_served.push(("5".into(), ridge_answers(&fleet, &mut rng)));
    end(&mut phases, p, &fleet, on_v3, "v3");

    // Phase 6: a third of the machines drift; the fleet alert must name exactly them and
    // carry the export of their drifting window (the retraining hand-off).
    let p = begin("6 drift on a third");
    let mut pool: Vec<String> = fleet.devices.iter().map(|d| d.id.clone()).collect();
    let mut drifted = Vec::new();
    for _ in 0..(fleet.devices.len() / 3).max(1) {
        drifted.push(pool.remove(rng.random_range(0..pool.len())));
    }
    drifted.sort();
    for id in &drifted {
        if let Some(s) = &fleet.get(id).expect("device").sim {
            s.set_drift(0.8);
        }
    }
    ctx.say(format!(
        "machines drifting (more noise, faster shaft): {}",
        drifted.join(", ")
    ));
    let alert = |b: &Bridge| -> Option<(Vec<String>, Option<String>)> {
        let ev = b.events.recent(50, Some("drift_detected")).ok()?;
        let last = ev
            .iter()
            .rev()
            .find(|e| e.message.starts_with("fleet drift"))?;
        let a: outpost_bridge::drift::FleetDriftAlert =
            serde_json::from_value(last.details.clone()).ok()?;
        Some((a.devices, a.export))
    };
    wait_for(90, || alert(&bridge).is_some_and(|(d, _)| d == drifted)).await;
    let (drift_alert, drift_export) = alert(&bridge).unwrap_or_default();
    let mut drift_exported = 0;
    if let Some(cmd) = &drift_export {
        ctx.say(format!(
            "alert: fleet drift on vibration-anomaly v{} names {}",
            v3.version,
            drift_alert.join(", ")
        ));
        ctx.say(format!("retraining hand-off: {cmd}"));
        let q = outpost_bridge::export::CaptureQuery {
            model: "vibration-anomaly".into(),
            version: Some(v3.version),
            since_ms: None,
            until_ms: None,
            devices: drift_alert.clone(),
        };
        let rows = q.rows(&bridge.db.lock()).map_err(err)?;
        let out = root.join("drifting-window.parquet");
        outpost_bridge::export::write_parquet(&rows, &out).map_err(err)?;
        drift_exported = rows.len();
        ctx.say(format!(
            "exported {} captures of the drifting devices to {}",
            rows.len(),
            out.display()
        ));
    }
    outcomes.push(format!("drift {}", drift_alert.join(",")));
    let device_drift_events: Vec<String> = {
        let c = bridge.db.lock();
        let mut q = c.prepare("SELECT DISTINCT device FROM device_events WHERE kind = 'drift_detected' ORDER BY device").map_err(err)?;
        q.query_map([], |r| r.get(0))
            .map_err(err)?
            .filter_map(Result::ok)
            .collect()
    };
    end(&mut phases, p, &fleet, on_model(&fleet, &v3.digest), "v3");

    // Drain: stop the machines, wait until every phase's records are acked, account.
    ctx.say("stopping sensors and draining every gateway's store");
    for d in &fleet.devices {
        if let Some(s) = &d.sim {
            s.set_paused(true);
        }
    }
    let last = phases
        .last()
        .map(|p| p.end.next_seq.clone())
        .unwrap_or_default();
    let all_acked = wait_for(60, || {
        fleet.devices.iter().all(|d| {
            let bound = last.get(&d.id).copied().unwrap_or(0);
            d.agent.store.as_ref().is_none_or(|s| {
                outpost_agent::sync::lock(s)
                    .oldest_seq()
                    .ok()
                    .flatten()
                    .is_none_or(|o| o >= bound)
            })
        })
    })
    .await;
    if !all_acked {
        ctx.say("warning: some records were still unacknowledged when the drain period ended");
    }
    let ridge_unchanged = on_named(&fleet, RIDGE, &ridge.digest);
    let min_models_per_gateway = fleet
        .devices
        .iter()
        .map(|d| d.agent.models.list().len())
        .min()
        .unwrap_or(0);
    ctx.say(format!(
        "{RIDGE} v{} stayed on {ridge_unchanged}/{} gateways through every vibration rollout and rollback; \
         answered on {} gateways after each phase",
        ridge.version,
        fleet.devices.len(),
        ridge_served
            .iter()
            .map(|(p, k)| format!("{k} (phase {p})"))
            .collect::<Vec<_>>()
            .join(", ")
    ));
    let rows = report::rows(&phases, &bridge, &fleet);
    let lost = rows.iter().map(|r| r.lost).sum();
    ctx.human(format!("\n{}\n", report::table(&rows)));
    let api = bridge.http_addr;
    let rep = DemoReport {
        rows,
        lost,
        v1_state: r1.state,
        v2_state,
        on_v3,
        v2_devices,
        offline,
        drifted,
        drift_alert,
        drift_export,
        drift_exported,
        device_drift_events,
        bridge_dir: root.join("bridge"),
        outcomes,
        api,
        ridge_state: rr.state,
        min_models_per_gateway,
        ridge_served,
        ridge_unchanged,
    };
    if let Some(a) = api {
        ctx.human(format!(
            "Bridge API: http://{a}/openapi.json — admin token: {token}"
        ));
        ctx.human(format!(
            "  curl -H 'Authorization: Bearer {token}' http://{a}/v1/deployments"
        ));
        if !o.keep_running {
            ctx.human("  (the demo's bridge stops now; run with --keep-running to explore it)");
        }
    }
    if o.keep_running {
        ctx.human("Keeping the bridge and the fleet running; press Ctrl-C to stop.");
        let _ = tokio::signal::ctrl_c().await;
    }
    fleet.shutdown(Duration::from_secs(5)).await;
    bridge.shutdown().await;
    Ok(rep)
}
