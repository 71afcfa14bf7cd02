//! Scenarios in TOML: a fleet, then steps. Every random choice (machine modes, which
//! devices a step picks, sensor noise, capture sampling, link drops) comes from the
//! scenario's seed, so a run is reproducible: the same seed gives the same outcome list.
//!
//! ```toml
//! seed = 11
//! devices = 6
//! [modes]                       # shares of machine modes (the first device is normal)
//! normal = 0.7
//! imbalance = 0.15
//! bearing_fault = 0.15
//! [options]                     # optional: interval_ms, telemetry_secs, sample_rate, health_secs
//! interval_ms = 250
//!
//! [[steps]]
//! register = "vibration-anomaly"          # a built-in fixture
//! [[steps]]
//! deploy = "latest"                       # or a version number
//! expect = "succeeded"                    # optional: the deployment's final state
//! waves = [0.0, 0.5, 1.0]                 # optional
//! timeout_secs = 30                       # optional
//! [[steps]]
//! cut = 2                                 # cut this many random devices' links
//! [[steps]]
//! faults = { delay_ms = 100, throttle_bps = 50000, drop_per_min = 2.0 }
//! pick = 3                                # random devices (default: all)
//! [[steps]]
//! sleep_secs = 5
//! [[steps]]
//! restore = true                          # every link back to normal
//! [[steps]]
//! drift = 0.6                             # drift the machines of `pick` random devices
//! pick = 2
//! [[steps]]
//! mode = "bearing_fault"                  # change machine mode of `pick` devices
//! pick = 1
//! ```

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::time::Duration;

use outpost_agent::sensors::vibration::MachineMode;
use outpost_bridge::fleet::{CreateDeployment, GateSpec, Selector, StrategySpec};
use outpost_bridge::registry::{self, RegisterRequest};
use outpost_bridge::server::{self, BrokerChoice, ServeConfig};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use serde::Deserialize;

use crate::fleet::{DeviceOptions, DeviceSpec, SimFleet, device_seed};
use crate::proxy::Faults;

/// A scenario file.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Scenario {
    /// Seed.
    pub seed: u64,
    /// Fleet size.
    pub devices: usize,
    /// Machine mode shares.
    #[serde(default)]
    pub modes: BTreeMap<String, f64>,
    /// Device options.
    #[serde(default)]
    pub options: ScenarioOptions,
    /// Steps.
    pub steps: Vec<Step>,
}

/// Device options.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ScenarioOptions {
    /// Sensor window period.
    pub interval_ms: Option<u64>,
    /// Telemetry period.
    pub telemetry_secs: Option<u64>,
    /// Capture sampling.
    pub sample_rate: Option<f64>,
    /// Health window.
    pub health_secs: Option<u64>,
}

/// Link faults in a step.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FaultSpec {
    /// Added latency.
    #[serde(default)]
    pub delay_ms: u64,
    /// Throttle.
    pub throttle_bps: Option<u64>,
    /// Random drops per minute.
    #[serde(default)]
    pub drop_per_min: f64,
}

/// One step (exactly one action key).
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Step {
    /// Register a built-in fixture.
    pub register: Option<String>,
    /// Deploy a version (`latest` or a number) to the whole fleet.
    pub deploy: Option<toml::Value>,
    /// Expected final deployment state.
    pub expect: Option<String>,
    /// Waves.
    pub waves: Option<Vec<f64>>,
    /// Wave timeout.
    pub timeout_secs: Option<u64>,
    /// Cut N random links.
    pub cut: Option<usize>,
    /// Restore every link.
    pub restore: Option<bool>,
    /// Apply faults.
    pub faults: Option<FaultSpec>,
    /// Sleep.
    pub sleep_secs: Option<u64>,
    /// Drift machines.
    pub drift: Option<f64>,
    /// Change machine mode.
    pub mode: Option<String>,
    /// How many random devices a fault/drift/mode step affects (default: all).
    pub pick: Option<usize>,
}

/// Scenario errors.
#[derive(Debug, thiserror::Error)]
#[error("scenario: {0}")]
pub struct ScenarioError(pub String);

fn err(e: impl std::fmt::Display) -> ScenarioError {
    ScenarioError(e.to_string())
}

/// Result of a run.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct Outcome {
    /// One line per step, in order.
    pub steps: Vec<String>,
    /// Deployment state changes at the bridge, in order (kind + state).
    pub deployment_events: Vec<String>,
    /// Expectations that failed.
    pub failed: Vec<String>,
}

impl Scenario {
    /// Parses TOML.
    pub fn parse(text: &str) -> Result<Self, ScenarioError> {
        let s: Self = toml::from_str(text).map_err(err)?;
        if s.devices == 0 {
            return Err(ScenarioError("devices must be at least 1".into()));
        }
        for (i, st) in s.steps.iter().enumerate() {
            let n = [
                st.register.is_some(),
                st.deploy.is_some(),
                st.cut.is_some(),
                st.restore.is_some(),
                st.faults.is_some(),
                st.sleep_secs.is_some(),
                st.drift.is_some(),
                st.mode.is_some(),
            ]
            .iter()
            .filter(|x| **x)
            .count();
            if n != 1 {
                return Err(ScenarioError(format!(
                    "step {}: exactly one action (register, deploy, cut, restore, faults, sleep_secs, drift, mode)",
                    i + 1
                )));
            }
        }
        Ok(s)
    }
}

fn pick(rng: &mut ChaCha8Rng, ids: &[String], n: Option<usize>) -> Vec<String> {
    let Some(n) = n else { return ids.to_vec() };
    let mut pool = ids.to_vec();
    let mut out = Vec::new();
    for _ in 0..n.min(pool.len()) {
        out.push(pool.remove(rng.random_range(0..pool.len())));
    }
    out.sort();
    out
}

/// Runs a scenario.
pub async fn run(s: &Scenario, verbose: bool) -> Result<Outcome, ScenarioError> {
    let tmp = tempfile::Builder::new()
        .prefix("outpost-scenario-")
        .tempdir()
        .map_err(err)?;
    let models = crate::demo::write_fixtures(tmp.path()).map_err(err)?;
    let mut cfg = ServeConfig::new(tmp.path().join("bridge"));
    cfg.broker = BrokerChoice::Embedded {
        listen: SocketAddr::from(([127, 0, 0, 1], 0)),
        auth: true,
    };
    cfg.http = None;
    cfg.fleet_tick = Duration::from_millis(200);
    let bridge = server::start(cfg).await.map_err(err)?;
    let mut rng = ChaCha8Rng::seed_from_u64(s.seed);
    let share = |k: &str| s.modes.get(k).copied().unwrap_or(0.0);
    let specs: Vec<DeviceSpec> = (0..s.devices)
        .map(|i| {
            let r: f64 = rng.random();
            let mode = if i == 0 || r < share("normal") || s.modes.is_empty() {
                MachineMode::Normal
            } else if r < share("normal") + share("imbalance") {
                MachineMode::Imbalance
            } else {
                MachineMode::BearingFault
            };
            DeviceSpec {
                id: format!("gw-{:02}", i + 1),
                seed: device_seed(s.seed, i as u64),
                mode,
                tags: [("site".to_string(), format!("s{}", i % 3))].into(),
            }
        })
        .collect();
    let d = DeviceOptions::default();
    let o = DeviceOptions {
        interval_ms: s.options.interval_ms.unwrap_or(d.interval_ms),
        telemetry_secs: s.options.telemetry_secs.unwrap_or(d.telemetry_secs),
        sample_rate: s.options.sample_rate.unwrap_or(d.sample_rate),
        health_secs: s.options.health_secs.unwrap_or(d.health_secs),
        ..d
    };
    let fleet = SimFleet::start(&bridge, &tmp.path().join("fleet"), &specs, &o, true)
        .await
        .map_err(err)?;
    let ids: Vec<String> = fleet.devices.iter().map(|d| d.id.clone()).collect();
    let mut out = Outcome {
        steps: Vec::new(),
        deployment_events: Vec::new(),
        failed: Vec::new(),
    };
    let say = |line: String, out: &mut Outcome| {
        if verbose {
            println!("{line}");
        }
        out.steps.push(line);
    };
    for (i, st) in s.steps.iter().enumerate() {
        let n = i + 1;
        if let Some(fixture) = &st.register {
            let dir = models.join(fixture);
            if !dir.exists() {
                return Err(ScenarioError(format!(
                    "step {n}: no built-in fixture {fixture:?}"
                )));
            }
            let req = RegisterRequest {
                name: "vibration-anomaly".into(),
                files: vec![dir.join("model.onnx")],
                spec: Some(dir.join("spec.toml")),
                created_by: "scenario".into(),
                reason: format!("step {n}"),
                baseline_csv: (fixture == "vibration-anomaly")
                    .then(|| models.join("vibration-anomaly/training-sample.csv")),
                ..Default::default()
            };
            let (rec, _) = registry::register(
                &mut bridge.db.lock(),
                &bridge.audit,
                bridge.bundles.as_ref(),
                &bridge.key,
                req,
            )
            .map_err(err)?;
            say(
                format!("{n}: registered {fixture} as v{}", rec.version),
                &mut out,
            );
        } else if let Some(v) = &st.deploy {
            let version = match v {
                toml::Value::Integer(x) => Some(*x as u32),
                _ => None,
            };
            let mut spec = StrategySpec {
                gates: GateSpec {
                    min_samples: 10,
                    observe_secs: 3,
                    max_output_shift: Some(0.25),
                    max_error_rate: Some(0.05),
                    max_p99_us: None,
                },
                ..Default::default()
            };
            if let Some(w) = &st.waves {
                spec.waves = w.clone();
            }
            spec.timeout_secs = st.timeout_secs.unwrap_or(60);
            let dep = bridge
                .fleet
                .create(CreateDeployment {
                    model: "vibration-anomaly".into(),
                    version,
                    selector: Selector {
                        ids: ids.clone(),
                        tags: vec![],
                    },
                    strategy: spec.build().map_err(err)?,
                    actor: "scenario".into(),
                    reason: format!("step {n}"),
                    skip_gates: false,
                })
                .map_err(err)?;
            let end = tokio::time::Instant::now()
                + Duration::from_secs(spec.timeout_secs * spec.waves.len() as u64 + 60);
            let rec = loop {
                let r = bridge.fleet.show(&dep.id).map_err(err)?;
                if matches!(
                    r.state.as_str(),
                    "succeeded" | "rolled_back" | "aborted" | "paused"
                ) || tokio::time::Instant::now() > end
                {
                    break r;
                }
                tokio::time::sleep(Duration::from_millis(250)).await;
            };
            say(
                format!("{n}: deployment of v{} {}", rec.version, rec.state),
                &mut out,
            );
            if let Some(e) = &st.expect
                && &rec.state != e
            {
                out.failed
                    .push(format!("step {n}: expected {e}, got {}", rec.state));
            }
        } else if let Some(k) = st.cut {
            let chosen = pick(&mut rng, &ids[1..], Some(k));
            for id in &chosen {
                fleet.get(id).expect("device").proxy.cut(true);
            }
            say(format!("{n}: cut {}", chosen.join(",")), &mut out);
        } else if st.restore == Some(true) {
            for d in &fleet.devices {
                d.proxy.set(Faults::default());
            }
            say(format!("{n}: links restored"), &mut out);
        } else if let Some(f) = &st.faults {
            let chosen = pick(&mut rng, &ids, st.pick);
            for id in &chosen {
                fleet.get(id).expect("device").proxy.set(Faults {
                    cut: false,
                    delay: Duration::from_millis(f.delay_ms),
                    throttle: f.throttle_bps,
                    drop_per_min: f.drop_per_min,
                });
            }
            say(format!("{n}: faults on {}", chosen.join(",")), &mut out);
        } else if let Some(secs) = st.sleep_secs {
            tokio::time::sleep(Duration::from_secs(secs)).await;
            say(format!("{n}: slept {secs}s"), &mut out);
        } else if let Some(drift) = st.drift {
            let chosen = pick(&mut rng, &ids, st.pick);
            for id in &chosen {
                if let Some(sim) = &fleet.get(id).expect("device").sim {
                    sim.set_drift(drift);
                }
            }
            say(
                format!("{n}: drift {drift} on {}", chosen.join(",")),
                &mut out,
            );
        } else if let Some(m) = &st.mode {
            let mode: MachineMode = m.parse().map_err(ScenarioError)?;
            let chosen = pick(&mut rng, &ids, st.pick);
            for id in &chosen {
                if let Some(sim) = &fleet.get(id).expect("device").sim {
                    sim.set_mode(mode);
                }
            }
            say(format!("{n}: mode {m} on {}", chosen.join(",")), &mut out);
        }
    }
    out.deployment_events = {
        let c = bridge.db.lock();
        let mut q = c
            .prepare(
                "SELECT action, target FROM audit WHERE action LIKE 'deployment.%' ORDER BY id",
            )
            .map_err(err)?;
        q.query_map([], |r| {
            Ok(format!(
                "{} {}",
                r.get::<_, String>(0)?,
                r.get::<_, String>(1)?
            ))
        })
        .map_err(err)?
        .filter_map(Result::ok)
        .collect()
    };
    fleet.shutdown(Duration::from_secs(3)).await;
    bridge.shutdown().await;
    Ok(out)
}
