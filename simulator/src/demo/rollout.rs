//! What the demo registers and rolls out: the built-in model fixtures, registration, the
//! two rollout strategies (gated waves for the vibration model, everyone at once for
//! ridge), creating a deployment and following it to its end.

use std::path::{Path, PathBuf};
use std::time::Duration;

use outpost_bridge::fleet::{
    self, CreateDeployment, DeploymentRecord, GateSpec, Selector, StrategySpec,
};
use outpost_bridge::registry::{self, ModelRecord, RegisterRequest};
use outpost_bridge::server::Bridge;

use crate::fleet::SimFleet;

use super::{Ctx, DemoError, RIDGE, VIBRATION, err};

/// Fixtures compiled in, so the demo needs nothing on disk.
const FIXTURES: &[(&str, &[u8])] = &[
    (
        "vibration-anomaly/model.onnx",
        include_bytes!("../../../models/vibration-anomaly/model.onnx"),
    ),
    (
        "vibration-anomaly/spec.toml",
        include_bytes!("../../../models/vibration-anomaly/spec.toml"),
    ),
    (
        "vibration-anomaly/training-sample.csv",
        include_bytes!("../../../models/vibration-anomaly/training-sample.csv"),
    ),
    (
        "vibration-anomaly-swapped/model.onnx",
        include_bytes!("../../../models/vibration-anomaly-swapped/model.onnx"),
    ),
    (
        "vibration-anomaly-swapped/spec.toml",
        include_bytes!("../../../models/vibration-anomaly-swapped/spec.toml"),
    ),
    (
        "sklearn/ridge/model.onnx",
        include_bytes!("../../../models/sklearn/ridge/model.onnx"),
    ),
];

/// Writes the built-in fixtures under `dir/models`.
pub fn write_fixtures(dir: &Path) -> std::io::Result<PathBuf> {
    let root = dir.join("models");
    for (name, bytes) in FIXTURES {
        let p = root.join(name);
        std::fs::create_dir_all(p.parent().unwrap_or(&root))?;
        std::fs::write(p, bytes)?;
    }
    Ok(root)
}

pub(super) fn register(
    b: &Bridge,
    models: &Path,
    fixture: &str,
    reason: &str,
    baseline: bool,
) -> Result<ModelRecord, DemoError> {
    let dir = models.join(fixture);
    let spec = dir.join("spec.toml");
    let req = RegisterRequest {
        name: if fixture.starts_with("sklearn/") {
            RIDGE
        } else {
            VIBRATION
        }
        .into(),
        files: vec![dir.join("model.onnx")],
        // The ridge export has no spec file: its contract comes from the graph.
        spec: spec.exists().then_some(spec),
        tags: vec!["use=demo".into()],
        reason: reason.into(),
        created_by: "demo".into(),
        baseline_csv: baseline.then(|| models.join("vibration-anomaly/training-sample.csv")),
        ..Default::default()
    };
    let (rec, _) = registry::register(&mut b.db.lock(), &b.audit, b.bundles.as_ref(), &b.key, req)
        .map_err(err)?;
    Ok(rec)
}

pub(super) fn strategy() -> fleet::machine::Strategy {
    StrategySpec {
        waves: vec![0.0, 0.25, 1.0],
        success_threshold: 0.9,
        error_threshold: 0.1,
        timeout_secs: 60,
        on_trip: fleet::machine::OnTrip::Rollback,
        gates: GateSpec {
            max_error_rate: Some(0.05),
            max_p99_us: None,
            max_output_shift: Some(0.25),
            min_samples: 10,
            observe_secs: 3,
        },
    }
    .build()
    .expect("static strategy is valid")
}

/// Waits for a deployment to end, printing its progress.
pub(super) async fn follow(ctx: &Ctx, b: &Bridge, id: &str, label: &str) -> DeploymentRecord {
    let mut last = String::new();
    loop {
        let d = b.fleet.show(id).expect("deployment exists");
        let done = d
            .devices
            .iter()
            .filter(|x| x.2 == fleet::machine::DeviceStatus::Succeeded)
            .count();
        let line = format!(
            "{label}: {} wave {}/{} — {done}/{} devices on the new model",
            d.state,
            d.wave + 1,
            d.strategy.waves.len(),
            d.devices.len()
        );
        if line != last {
            ctx.say(&line);
            last = line;
        }
        if matches!(
            d.state.as_str(),
            "succeeded" | "rolled_back" | "aborted" | "paused"
        ) {
            if let fleet::machine::State::RolledBack { reason }
            | fleet::machine::State::Paused { reason } = &d.detail
            {
                ctx.say(format!("{label}: {reason}"));
            }
            return d;
        }
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
}

/// The ridge rollout: everyone at once, no gates (nothing drives regression traffic in the
/// simulator, so error-rate gates would have nothing to judge).
pub(super) fn ridge_strategy() -> fleet::machine::Strategy {
    StrategySpec {
        waves: vec![1.0],
        success_threshold: 1.0,
        error_threshold: 0.1,
        timeout_secs: 60,
        on_trip: fleet::machine::OnTrip::Pause,
        gates: GateSpec {
            max_error_rate: None,
            max_p99_us: None,
            max_output_shift: None,
            min_samples: 0,
            observe_secs: 1,
        },
    }
    .build()
    .expect("static strategy is valid")
}

pub(super) fn deploy(
    b: &Bridge,
    fleet: &SimFleet,
    version: u32,
    reason: &str,
) -> Result<String, DemoError> {
    deploy_model(b, fleet, VIBRATION, version, strategy(), reason)
}

pub(super) fn deploy_model(
    b: &Bridge,
    fleet: &SimFleet,
    model: &str,
    version: u32,
    strategy: fleet::machine::Strategy,
    reason: &str,
) -> Result<String, DemoError> {
    Ok(b.fleet
        .create(CreateDeployment {
            model: model.into(),
            version: Some(version),
            selector: Selector {
                ids: fleet.devices.iter().map(|d| d.id.clone()).collect(),
                tags: vec![],
            },
            strategy,
            actor: "demo".into(),
            reason: reason.into(),
            skip_gates: false,
        })
        .map_err(err)?
        .id)
}
