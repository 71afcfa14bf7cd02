//! The simulator: reproducible scenarios, the canary gate catching a bad model, and the
//! full demo.

use std::time::Duration;

use outpost_sim::demo::{self, DemoOptions};
use outpost_sim::scenario::{self, Scenario};

const SCENARIO: &str = r#"
seed = 5
devices = 4
[modes]
normal = 0.6
imbalance = 0.2
bearing_fault = 0.2
[options]
health_secs = 1
[[steps]]
register = "vibration-anomaly"
[[steps]]
deploy = "latest"
waves = [0.0, 1.0]
expect = "succeeded"
[[steps]]
cut = 1
[[steps]]
mode = "bearing_fault"
pick = 1
[[steps]]
restore = true
[[steps]]
register = "vibration-anomaly-swapped"
[[steps]]
deploy = "latest"
waves = [0.0, 1.0]
expect = "rolled_back"
"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn same_seed_same_outcome_and_a_tripped_gate_rolls_back_with_an_audit_entry() {
    let s = Scenario::parse(SCENARIO).unwrap();
    let a = scenario::run(&s, false).await.unwrap();
    let b = scenario::run(&s, false).await.unwrap();
    assert!(a.failed.is_empty(), "{:?}", a.failed);
    assert_eq!(a, b, "same seed, same outcome");
    assert!(
        a.deployment_events
            .iter()
            .any(|e| e == "deployment.rolling_back dep-2"),
        "{:?}",
        a.deployment_events
    );
    assert!(
        a.deployment_events
            .iter()
            .any(|e| e == "deployment.rolled_back dep-2")
    );
    // A different seed picks differently (here: which device loses its link).
    let mut s2 = s.clone();
    s2.seed = 99;
    let c = scenario::run(&s2, false).await.unwrap();
    assert_ne!(a.steps, c.steps);
}

#[test]
fn malformed_scenarios_are_refused_clearly() {
    assert!(
        Scenario::parse("seed = 1\ndevices = 0\nsteps = []")
            .unwrap_err()
            .to_string()
            .contains("at least 1")
    );
    let two = "seed = 1\ndevices = 2\n[[steps]]\ncut = 1\nsleep_secs = 2\n";
    assert!(
        Scenario::parse(two)
            .unwrap_err()
            .to_string()
            .contains("exactly one action")
    );
    assert!(Scenario::parse("seed = 1\ndevices = 2\nsteps = []\nbogus = 3").is_err());
}

fn bridge_bin() -> std::path::PathBuf {
    let exe = std::env::current_exe().unwrap();
    let bin = exe
        .parent()
        .unwrap()
        .parent()
        .unwrap()
        .join("outpost-bridge");
    if !bin.exists() {
        let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
        assert!(
            std::process::Command::new(cargo)
                .args(["build", "-p", "outpost-bridge", "--bin", "outpost-bridge"])
                .status()
                .unwrap()
                .success()
        );
    }
    bin
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_demo_loses_nothing_rolls_back_v2_catches_drift_and_ends_with_v3_everywhere() {
    let dir = tempfile::tempdir().unwrap();
    let o = DemoOptions {
        verbose: false,
        offline_for: Duration::from_secs(6),
        data_dir: Some(dir.path().to_path_buf()),
        ..DemoOptions::default()
    };
    let r = demo::run(o).await.unwrap();
    assert!(r.ok(), "{r:#?}");
    assert_eq!(r.lost, 0);
    assert_eq!(r.on_v3, 20);
    assert!(
        r.v2_state.starts_with("rolled_back") && r.v2_state.contains("output shift"),
        "{}",
        r.v2_state
    );
    assert_eq!(
        r.v2_devices,
        vec!["gw-01".to_string()],
        "only the canary ever got the bad model"
    );
    assert_eq!(r.offline.len(), 5);

    // Two models per gateway: the ridge regression arrived by its own deployment beside
    // vibration v1, stayed on its version through v2's rollback and v3, and answered on
    // every gateway after each of those phases.
    assert_eq!(r.ridge_state, "succeeded");
    assert_eq!(r.min_models_per_gateway, 2);
    assert_eq!(r.ridge_unchanged, 20);
    assert_eq!(r.ridge_served.len(), 3, "{:?}", r.ridge_served);
    assert!(
        r.ridge_served.iter().all(|(_, k)| *k == 20),
        "{:?}",
        r.ridge_served
    );
    let produced: u64 = r.rows.iter().map(|x| x.produced).sum();
    assert!(produced > 1000, "{produced}");

    // Drift: a third of the fleet drifted; those and only those raised drift events, the
    // fleet alert names exactly them, and its export command works as printed.
    assert_eq!(r.drifted.len(), 6);
    assert_eq!(
        r.device_drift_events, r.drifted,
        "only the drifting devices raised drift events"
    );
    assert_eq!(r.drift_alert, r.drifted);
    let cmd = r
        .drift_export
        .clone()
        .expect("the alert carries an export command");
    let args: Vec<String> = cmd.split_whitespace().skip(1).map(str::to_owned).collect();
    let out = dir.path().join("retrain.parquet");
    let mut args: Vec<String> = args.into_iter().take_while(|a| a != "-o").collect();
    args.extend(["-o".into(), out.display().to_string()]);
    // The printed command names the data directory itself (run as printed).
    assert!(cmd.contains("--data-dir"), "{cmd}");
    let o = std::process::Command::new(bridge_bin())
        .args(&args)
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let file = std::fs::File::open(&out).unwrap();
    let rows: usize = parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder::try_new(file)
        .unwrap()
        .build()
        .unwrap()
        .map(|b| b.unwrap().num_rows())
        .sum();
    assert!(rows > 0, "the export returned nothing");
}
