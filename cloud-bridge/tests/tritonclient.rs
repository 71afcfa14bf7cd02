//! The real Triton HTTP client (`tritonclient[http]`, Python) against an agent serving a
//! model registered from a scikit-learn export with FP32 and INT64 inputs.
//!
//! Python is a test dependency only: without `tritonclient` this test skips with a
//! message, unless `OUTPOST_REQUIRE_PYTHON=1` (set by `.ci/run`, which installs it into a
//! venv and points `OUTPOST_PYTHON` at it).

mod common;

use std::path::PathBuf;
use std::time::Duration;

use common::harness::*;
use outpost_bridge::fleet::{CreateDeployment, Selector};
use outpost_bridge::registry::{self, RegisterRequest};

fn python() -> Option<String> {
    let py = std::env::var("OUTPOST_PYTHON").unwrap_or_else(|_| "python3".into());
    let ok = std::process::Command::new(&py)
        .args(["-c", "import tritonclient.http, numpy"])
        .output()
        .is_ok_and(|o| o.status.success());
    if ok {
        return Some(py);
    }
    if std::env::var("OUTPOST_REQUIRE_PYTHON").is_ok_and(|v| v == "1") {
        panic!("OUTPOST_REQUIRE_PYTHON=1 but {py} cannot import tritonclient.http");
    }
    eprintln!("skipping: {py} has no tritonclient[http] (pip install 'tritonclient[http]' numpy)");
    None
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn tritonclient_drives_the_agent_unchanged() {
    let Some(py) = python() else { return };
    let models = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../models/sklearn");
    let dir = tempfile::tempdir().unwrap();
    let b = bridge(&dir.path().join("bridge"), embedded(false)).await;
    let trust = trust_dir(&b, dir.path());
    let agent = agent(&agent_toml(
        &b,
        "gw-triton",
        &dir.path().join("gw"),
        &trust,
        "",
    ))
    .await;
    assert!(
        wait_until(30, || outpost_bridge::devices::show(
            &b.db.lock(),
            "gw-triton"
        )
        .is_ok())
        .await
    );
    let req = RegisterRequest {
        name: "wine".into(),
        files: vec![models.join("column_transformer_logreg/model.onnx")],
        created_by: "test".into(),
        chunk_size: Some(16 * 1024),
        ..Default::default()
    };
    registry::register(&mut b.db.lock(), &b.audit, b.bundles.as_ref(), &b.key, req).unwrap();
    b.fleet
        .create(CreateDeployment {
            model: "wine".into(),
            version: None,
            selector: Selector {
                ids: vec!["gw-triton".into()],
                tags: vec![],
            },
            strategy: quick_strategy(),
            actor: "test".into(),
            reason: "tritonclient".into(),
            skip_gates: false,
        })
        .unwrap();
    assert!(wait_until(60, || agent.models.get("wine").is_some()).await);
    let script =
        PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/python/tritonclient_check.py");
    let addr = agent.http_addr.unwrap();
    let out = tokio::task::spawn_blocking(move || {
        std::process::Command::new(py)
            .arg(script)
            .arg(addr.to_string())
            .arg("wine")
            .arg(models.join("column_transformer_logreg/reference.json"))
            .output()
            .unwrap()
    })
    .await
    .unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "{text}");
    assert!(text.contains("ok: 18 inferences"), "{text}");
    agent.shutdown(Duration::from_secs(5)).await;
    b.shutdown().await;
}
