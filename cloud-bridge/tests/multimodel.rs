//! Several models per gateway, end to end over a real broker with real agents: one model
//! updated, rolled back and removed while a client keeps using its neighbour; concurrent
//! deployments of two models on overlapping devices; a desired set over the device's
//! memory budget.

mod common;

use std::io::{Read, Write};
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use common::harness::*;
use outpost_bridge::fleet::machine::DeviceStatus;
use outpost_bridge::fleet::{CreateDeployment, RemoveModel, RollbackRequest, Selector};

/// One OIP inference request body for the ridge fixture (its first self-test input).
fn ridge_request() -> Vec<u8> {
    let (_, samples) = outpost_testkit::fixture_spec("sklearn/ridge");
    let inputs: Vec<serde_json::Value> = samples[0]
        .inputs
        .iter()
        .map(|t| {
            serde_json::json!({
                "name": t.name, "shape": t.shape,
                "datatype": t.datatype().as_str(), "data": t.data.to_json(),
            })
        })
        .collect();
    serde_json::to_vec(&serde_json::json!({ "inputs": inputs })).unwrap()
}

/// POSTs `body` and returns the status (0: the connection failed).
fn post(addr: SocketAddr, path: &str, body: &[u8]) -> u16 {
    let Ok(mut s) = std::net::TcpStream::connect(addr) else {
        return 0;
    };
    let head = format!(
        "POST {path} HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    );
    if s.write_all(head.as_bytes())
        .and_then(|_| s.write_all(body))
        .is_err()
    {
        return 0;
    }
    let mut buf = Vec::new();
    let _ = s.read_to_end(&mut buf);
    std::str::from_utf8(buf.get(9..12).unwrap_or_default())
        .ok()
        .and_then(|c| c.parse().ok())
        .unwrap_or(0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_model_updates_rolls_back_and_leaves_while_its_neighbour_serves_every_request() {
    let dir = tempfile::tempdir().unwrap();
    let b = bridge(&dir.path().join("bridge"), embedded(false)).await;
    register(&b, "vibration-anomaly", "vib");
    register(&b, "vibration-anomaly-swapped", "vib");
    register_with(&b, "sklearn/ridge", "ridge", 16 * 1024).unwrap();
    let trust = trust_dir(&b, dir.path());
    let a = agent(&agent_toml(
        &b,
        "gw-ab",
        &dir.path().join("gw-ab"),
        &trust,
        "",
    ))
    .await;
    known(&b, "gw-ab").await;
    deploy(&b, "vib", 1, &["gw-ab"]).await;
    deploy(&b, "ridge", 1, &["gw-ab"]).await;
    assert!(settled(&b, "gw-ab", "vib", 1, 45).await);
    assert!(settled(&b, "gw-ab", "ridge", 1, 45).await);
    let ridge_before = a.models.get("ridge").unwrap();

    // A client uses ridge through the local OIP API for the rest of the test.
    let stop = Arc::new(AtomicBool::new(false));
    let (ok, failed) = (Arc::new(AtomicU64::new(0)), Arc::new(AtomicU64::new(0)));
    let client = {
        let (stop, ok, failed) = (stop.clone(), ok.clone(), failed.clone());
        let addr = a.http_addr.unwrap();
        let body = ridge_request();
        std::thread::spawn(move || {
            while !stop.load(Ordering::Relaxed) {
                match post(addr, "/v2/models/ridge/infer", &body) {
                    200 => ok.fetch_add(1, Ordering::Relaxed),
                    s => {
                        eprintln!("ridge request failed: {s}");
                        failed.fetch_add(1, Ordering::Relaxed)
                    }
                };
            }
        })
    };

    let up = deploy(&b, "vib", 2, &["gw-ab"]).await;
    assert!(settled(&b, "gw-ab", "vib", 2, 45).await);
    assert!(wait_until(30, || b.fleet.show(&up).unwrap().state == "succeeded").await);
    let back = b
        .fleet
        .rollback(RollbackRequest {
            id: up,
            to: None,
            actor: "ops".into(),
            reason: "back".into(),
        })
        .unwrap();
    assert!(settled(&b, "gw-ab", "vib", 1, 45).await);
    assert!(wait_until(30, || b.fleet.show(&back.id).unwrap().state == "succeeded").await);
    let removed = b
        .fleet
        .remove_model(RemoveModel {
            model: "vib".into(),
            selector: Selector {
                ids: vec!["gw-ab".into()],
                tags: Vec::new(),
            },
            actor: "ops".into(),
            reason: "not needed here".into(),
        })
        .unwrap();
    assert_eq!(removed.devices, vec!["gw-ab".to_string()]);
    assert!(
        wait_until(30, || a.models.get("vib").is_none()
            && model_state(&b, "gw-ab", "vib").is_none())
        .await,
        "{:?}",
        model_state(&b, "gw-ab", "vib")
    );

    stop.store(true, Ordering::Relaxed);
    client.join().unwrap();
    let (ok, failed) = (ok.load(Ordering::Relaxed), failed.load(Ordering::Relaxed));
    eprintln!("ridge: {ok} requests served, {failed} failed while vib changed");
    assert_eq!(failed, 0, "requests to ridge failed");
    assert!(ok > 100, "the client hardly ran ({ok})");
    assert!(
        Arc::ptr_eq(&ridge_before, &a.models.get("ridge").unwrap()),
        "ridge was reloaded"
    );
    assert_eq!(
        model_state(&b, "gw-ab", "ridge")
            .unwrap()
            .active
            .unwrap()
            .model
            .version,
        1
    );
    a.shutdown(Duration::from_secs(5)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_deployments_of_two_models_on_overlapping_devices_both_converge() {
    let dir = tempfile::tempdir().unwrap();
    let b = bridge(&dir.path().join("bridge"), embedded(false)).await;
    register(&b, "vibration-anomaly", "vib");
    register(&b, "vibration-anomaly-swapped", "vib");
    for v in 1..=3 {
        let _ = v;
        register_with(&b, "sklearn/ridge", "ridge", 16 * 1024).unwrap();
    }
    let trust = trust_dir(&b, dir.path());
    let mut agents = Vec::new();
    for d in ["gw-1", "gw-2", "gw-3"] {
        agents.push(agent(&agent_toml(&b, d, &dir.path().join(d), &trust, "")).await);
        known(&b, d).await;
    }
    let a = deploy(&b, "vib", 2, &["gw-1", "gw-2"]).await;
    let r = deploy(&b, "ridge", 3, &["gw-2", "gw-3"]).await;
    // The same model twice on a device is refused, naming the deployment in the way.
    let e = b
        .fleet
        .create(CreateDeployment {
            model: "vib".into(),
            version: Some(1),
            selector: Selector {
                ids: vec!["gw-2".into()],
                tags: Vec::new(),
            },
            strategy: quick_strategy(),
            actor: "test".into(),
            reason: "clash".into(),
            skip_gates: false,
        })
        .unwrap_err()
        .to_string();
    assert!(e.contains("gw-2") && e.contains(&a), "{e}");
    for (id, model, v, devs) in [
        (&a, "vib", 2, vec!["gw-1", "gw-2"]),
        (&r, "ridge", 3, vec!["gw-2", "gw-3"]),
    ] {
        for d in devs {
            assert!(
                settled(&b, d, model, v, 45).await,
                "{d} {model}: {:?}",
                model_state(&b, d, model)
            );
        }
        assert!(
            wait_until(30, || b.fleet.show(id).unwrap().state == "succeeded").await,
            "{:?}",
            b.fleet.show(id).unwrap()
        );
    }
    // Each device runs exactly what was deployed to it, nothing else.
    assert!(model_state(&b, "gw-1", "ridge").is_none());
    assert!(model_state(&b, "gw-3", "vib").is_none());
    for ag in agents {
        ag.shutdown(Duration::from_secs(5)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_set_over_the_device_memory_budget_is_refused_and_what_runs_is_kept() {
    let dir = tempfile::tempdir().unwrap();
    let b = bridge(&dir.path().join("bridge"), embedded(false)).await;
    // Requirements as declared at registration (as measured on the target hardware).
    let vib = register_req(&b, "vibration-anomaly", "vib", 16 * 1024, Some(4 << 20)).unwrap();
    register_req(&b, "vibration-cnn", "cnn", 64 * 1024, Some(48 << 20)).unwrap();
    // Room for the small model, not for both.
    let budget: u64 = 32 << 20;
    let trust = trust_dir(&b, dir.path());
    let a = agent(&agent_toml(
        &b,
        "gw-mem",
        &dir.path().join("gw-mem"),
        &trust,
        &format!("[models]\nmax_memory_bytes = {budget}\n"),
    ))
    .await;
    known(&b, "gw-mem").await;
    deploy(&b, "vib", vib.version, &["gw-mem"]).await;
    assert!(settled(&b, "gw-mem", "vib", 1, 45).await);
    let d = deploy(&b, "cnn", 1, &["gw-mem"]).await;
    // The device refuses the set with the reason; the deployment fails that device and
    // rolls back (the bridge takes cnn out of the set again); vib never stops.
    assert!(
        wait_until(30, || b.fleet.show(&d).unwrap().state.starts_with("rolled")).await,
        "{:?}",
        b.fleet.show(&d).unwrap()
    );
    let events = b.events.recent(100, Some("directive_rejected")).unwrap();
    assert!(
        events
            .iter()
            .any(|e| e.message.contains("max_memory_bytes")),
        "{events:?}"
    );
    let shown = outpost_bridge::devices::show(&b.db.lock(), "gw-mem").unwrap();
    assert_eq!(
        a.models.get("vib").map(|m| m.info.model.version),
        Some(1),
        "{shown:#?} {:#?}",
        b.events.recent(100, None).unwrap()
    );
    assert!(a.models.get("cnn").is_none());
    assert!(model_state(&b, "gw-mem", "cnn").is_none());
    let s = outpost_bridge::devices::show(&b.db.lock(), "gw-mem")
        .unwrap()
        .state
        .unwrap();
    assert_eq!(s.budget.memory_budget, Some(budget));
    let rec = b.fleet.show(&d).unwrap();
    assert!(
        rec.devices
            .iter()
            .all(|x| matches!(x.2, DeviceStatus::RolledBack { .. })),
        "{rec:?}"
    );
    a.shutdown(Duration::from_secs(5)).await;
}
