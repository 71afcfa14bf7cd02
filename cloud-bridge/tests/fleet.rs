//! Deployments through the CLI and the engine: a wave that never reports fails by timeout;
//! pause / resume / abort from the CLI reach the running bridge.

mod common;

use common::harness::*;
use common::{run, text};
use outpost_bridge::fleet::machine::DeviceStatus;

fn cli(data: &std::path::Path, args: &[&str]) -> std::process::Output {
    run(common::bridge()
        .arg("--data-dir")
        .arg(data)
        .arg("--actor")
        .arg("ops")
        .args(args))
}

fn state(data: &std::path::Path, id: &str) -> String {
    let o = cli(data, &["deploy", "show", id, "--json"]);
    assert!(o.status.success(), "{}", text(&o));
    serde_json::from_slice::<serde_json::Value>(&o.stdout).unwrap()["state"]
        .as_str()
        .unwrap()
        .to_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wave_whose_devices_never_report_fails_by_timeout() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let b = bridge(&data, embedded(false)).await;
    register(&b, "vibration-anomaly", "vib");
    for d in ["gw-silent-1", "gw-silent-2"] {
        outpost_bridge::devices::ensure(&b.db.lock(), &b.audit, d, &Default::default()).unwrap();
    }
    let o = cli(
        &data,
        &[
            "deploy",
            "create",
            "--model",
            "vib",
            "--device",
            "gw-silent-1",
            "--device",
            "gw-silent-2",
            "--waves",
            "0,1",
            "--timeout-secs",
            "2",
            "--on-trip",
            "pause",
            "--wait",
            "--json",
        ],
    );
    // --wait follows it until the trip pauses it: exit code 5, the final record (pure
    // JSON) on stdout, progress with waves numbered 1..N on stderr.
    assert_eq!(o.status.code(), Some(5), "{}", text(&o));
    let rec: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(rec["state"], "paused", "{rec}");
    let progress = String::from_utf8_lossy(&o.stderr);
    assert!(
        progress.contains("wave 1/2") && progress.contains("paused: wave 1/2"),
        "{progress}"
    );
    let id = rec["id"].as_str().unwrap().to_owned();
    // Watching a deployment that already ended returns at once with the same ending.
    let o = cli(&data, &["deploy", "watch", &id]);
    assert_eq!(o.status.code(), Some(5), "{}", text(&o));
    assert!(text(&o).contains("paused"), "{}", text(&o));
    assert!(
        wait_until(20, || b.fleet.show(&id).unwrap().state == "paused").await,
        "{:?}",
        b.fleet.show(&id).unwrap()
    );
    let d = b.fleet.show(&id).unwrap();
    let canary = d.devices.iter().find(|x| x.1 == 0).unwrap();
    assert!(
        matches!(&canary.2, DeviceStatus::Failed { reason } if reason.contains("did not report success within 2 s")),
        "{:?}",
        canary.2
    );
    assert!(
        d.devices
            .iter()
            .filter(|x| x.1 == 1)
            .all(|x| x.2 == DeviceStatus::Pending),
        "the next wave never started"
    );
    let audit = b.audit.list(&b.db.lock(), None).unwrap();
    assert!(
        audit.iter().any(|e| e.action == "deployment.paused"
            && e.actor == "system"
            && e.reason.contains("failed")),
        "{audit:#?}"
    );
    b.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pause_resume_and_abort_from_the_cli_reach_the_running_bridge() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let b = bridge(&data, embedded(false)).await;
    register(&b, "vibration-anomaly", "vib");
    let trust = trust_dir(&b, dir.path());
    let a = agent(&agent_toml(&b, "gw-cli", &dir.path().join("a"), &trust, "")).await;
    assert!(
        wait_until(20, || outpost_bridge::devices::show(&b.db.lock(), "gw-cli")
            .is_ok())
        .await
    );
    // Created from the CLI: the running bridge publishes its directive.
    let o = cli(
        &data,
        &[
            "deploy",
            "create",
            "--model",
            "vib",
            "--tag",
            "target=x86",
            "--json",
        ],
    );
    assert!(
        !o.status.success() && text(&o).contains("no device matches"),
        "{}",
        text(&o)
    );
    let o = cli(
        &data,
        &[
            "deploy",
            "create",
            "--model",
            "vib",
            "--device",
            "gw-cli",
            "--timeout-secs",
            "120",
            "--reason",
            "cli test",
            "--json",
        ],
    );
    assert!(o.status.success(), "{}", text(&o));
    let id = serde_json::from_slice::<serde_json::Value>(&o.stdout).unwrap()["id"]
        .as_str()
        .unwrap()
        .to_owned();
    assert!(
        wait_until(30, || a.models.only().is_some()).await,
        "the bridge published the CLI's directive"
    );
    assert!(
        cli(&data, &["deploy", "pause", &id, "--reason", "hold on"])
            .status
            .success()
    );
    assert_eq!(state(&data, &id), "paused");
    let o = cli(&data, &["deploy", "pause", &id]);
    assert!(
        !o.status.success() && text(&o).contains("already paused"),
        "{}",
        text(&o)
    );
    assert!(cli(&data, &["deploy", "resume", &id]).status.success());
    assert_eq!(state(&data, &id), "running");
    assert!(
        cli(&data, &["deploy", "abort", &id, "--reason", "enough"])
            .status
            .success()
    );
    assert_eq!(state(&data, &id), "aborted");
    let o = cli(&data, &["deploy", "watch", &id, "--json"]);
    assert_eq!(o.status.code(), Some(4), "aborted: {}", text(&o));
    // Deployed again and followed to the end: exit 0.
    let o = cli(
        &data,
        &[
            "deploy",
            "create",
            "--model",
            "vib",
            "--device",
            "gw-cli",
            "--skip-gates",
            "--reason",
            "again",
            "--wait",
            "--json",
        ],
    );
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    let rec: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(rec["state"], "succeeded", "{rec}");
    let v1 = a.models.only().unwrap().info.bundle;

    // v2 to gw-cli (the canary) and a device that never reports (so the deployment is
    // still running), then `abort --rollback`: gw-cli goes back to v1.
    register(&b, "vibration-anomaly", "vib");
    outpost_bridge::devices::ensure(&b.db.lock(), &b.audit, "gw-silent", &Default::default())
        .unwrap();
    let o = cli(
        &data,
        &[
            "deploy",
            "create",
            "--model",
            "vib:2",
            "--device",
            "gw-cli",
            "--device",
            "gw-silent",
            "--waves",
            "0,1",
            "--timeout-secs",
            "120",
            "--skip-gates",
            "--reason",
            "v2",
            "--json",
        ],
    );
    assert!(o.status.success(), "{}", text(&o));
    let id2 = serde_json::from_slice::<serde_json::Value>(&o.stdout).unwrap()["id"]
        .as_str()
        .unwrap()
        .to_owned();
    assert!(
        wait_until(30, || a.models.only().is_some_and(|m| m.info.bundle != v1)).await,
        "gw-cli switched to v2"
    );
    let o = cli(
        &data,
        &[
            "deploy",
            "abort",
            &id2,
            "--rollback",
            "--reason",
            "changed my mind",
        ],
    );
    assert!(o.status.success(), "{}", text(&o));
    assert!(
        wait_until(30, || a.models.only().is_some_and(|m| m.info.bundle == v1)).await,
        "abort --rollback sent gw-cli back to v1"
    );
    // gw-silent never confirms, so the rollback may still be waiting for it.
    let st = b.fleet.show(&id2).unwrap().state;
    assert!(st == "rolling_back" || st == "rolled_back", "{st}");
    let o = cli(&data, &["deploy", "list", "--state", "aborted", "--json"]);
    assert_eq!(
        serde_json::from_slice::<serde_json::Value>(&o.stdout).unwrap()[0]["id"],
        id.as_str()
    );
    let o = cli(&data, &["audit", "--json", "--limit", "100"]);
    let log: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    for action in [
        "deployment.create",
        "deployment.paused",
        "deployment.running",
        "deployment.aborted",
    ] {
        assert!(
            log.as_array()
                .unwrap()
                .iter()
                .any(|e| e["action"] == action && e["actor"] == "cli:ops"),
            "{action} missing"
        );
    }
    a.shutdown(std::time::Duration::from_secs(3)).await;
    b.shutdown().await;
}
