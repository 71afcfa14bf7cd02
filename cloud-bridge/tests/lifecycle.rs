//! Deployments mean what they say, end to end over a real broker with real agents: abort
//! mid-download, a device offline through an abort, delete guarded by what still needs a
//! version, rollback of a finished deployment, and a broker with a 128 KB packet limit.

mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use common::harness::*;
use outpost_bridge::fleet::RollbackRequest;
use outpost_bridge::fleet::machine::{Command, DeviceStatus};
use outpost_protocol::wire::UpdatePhase;

/// Watches an in-process agent's model handle for `version` of `model` being served.
fn watch_for(
    models: outpost_agent::models::ModelHandle,
    model: &'static str,
    version: u32,
) -> (Arc<AtomicBool>, Arc<AtomicBool>) {
    let (seen, stop) = (
        Arc::new(AtomicBool::new(false)),
        Arc::new(AtomicBool::new(false)),
    );
    let (s, st) = (seen.clone(), stop.clone());
    tokio::spawn(async move {
        while !st.load(Ordering::Relaxed) {
            if models
                .get(model)
                .is_some_and(|m| m.info.model.version == version)
            {
                s.store(true, Ordering::Relaxed);
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    });
    (seen, stop)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn aborting_mid_download_pins_the_device_and_the_aborted_bundle_never_activates() {
    let dir = tempfile::tempdir().unwrap();
    // Slow chunk serving: the download of v2 takes several seconds.
    let b = bridge_with(&dir.path().join("bridge"), embedded(false), |c| {
        c.chunk_rate = 20.0;
    })
    .await;
    register(&b, "vibration-anomaly", "vib");
    register(&b, "vibration-cnn", "vib");
    let trust = trust_dir(&b, dir.path());
    let data = dir.path().join("gw-1");
    let a = agent(&agent_toml(&b, "gw-1", &data, &trust, "")).await;
    let d1 = deploy_known(&b, "vib", 1, &["gw-1"]).await;
    assert!(
        settled(&b, "gw-1", "vib", 1, 30).await,
        "{:?}",
        b.fleet.show(&d1)
    );

    let (seen_v2, stop) = watch_for(a.models.clone(), "vib", 2);
    let d2 = deploy_known(&b, "vib", 2, &["gw-1"]).await;
    assert!(
        wait_until(30, || model_state(&b, "gw-1", "vib")
            .is_some_and(
                |m| m.phase == UpdatePhase::Downloading && m.chunks_done > 0
            ))
        .await,
        "{:?}",
        model_state(&b, "gw-1", "vib")
    );
    let rec = b
        .fleet
        .command(&d2, Command::Abort("wrong model".into()), "ops")
        .unwrap();
    assert_eq!(rec.state, "aborted");
    // The device is pinned to what it runs: its download is cancelled, v1 keeps serving.
    assert!(settled(&b, "gw-1", "vib", 1, 30).await);
    let m = model_state(&b, "gw-1", "vib").unwrap();
    assert_eq!(m.target.unwrap().model.version, 1);
    assert_eq!(m.deployment_id.as_deref(), Some(d2.as_str()));
    // Long after the download would have finished, v2 never served.
    tokio::time::sleep(Duration::from_secs(8)).await;
    stop.store(true, Ordering::Relaxed);
    assert!(
        !seen_v2.load(Ordering::Relaxed),
        "the aborted bundle was activated"
    );
    assert_eq!(a.models.get("vib").unwrap().info.model.version, 1);
    assert!(
        !data
            .join("update/models/vib/download")
            .read_dir()
            .is_ok_and(|mut d| d.next().is_some()),
        "the aborted download's chunks were kept"
    );
    // Deploying v1 again is a no-op for the device and succeeds.
    let d3 = deploy_known(&b, "vib", 1, &["gw-1"]).await;
    assert!(wait_until(30, || b.fleet.show(&d3).unwrap().state == "succeeded").await);
    a.shutdown(Duration::from_secs(5)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_device_offline_through_an_abort_never_installs_the_aborted_bundle() {
    let dir = tempfile::tempdir().unwrap();
    let b = bridge(&dir.path().join("bridge"), embedded(false)).await;
    register(&b, "vibration-anomaly", "vib");
    register(&b, "vibration-anomaly-swapped", "vib");
    let trust = trust_dir(&b, dir.path());
    let data = dir.path().join("gw-off");
    let toml = agent_toml(&b, "gw-off", &data, &trust, "");
    let a = agent(&toml).await;
    deploy_known(&b, "vib", 1, &["gw-off"]).await;
    assert!(settled(&b, "gw-off", "vib", 1, 30).await);
    a.shutdown(Duration::from_secs(5)).await;

    let d2 = deploy_known(&b, "vib", 2, &["gw-off"]).await;
    b.fleet
        .command(&d2, Command::Abort("not now".into()), "ops")
        .unwrap();
    let a = agent(&toml).await;
    let (seen_v2, stop) = watch_for(a.models.clone(), "vib", 2);
    // It comes back, reads its retained directive (the pin, not v2) and stays on v1.
    assert!(
        wait_until(30, || model_state(&b, "gw-off", "vib")
            .is_some_and(|m| m.deployment_id.as_deref() == Some(d2.as_str())))
        .await
    );
    tokio::time::sleep(Duration::from_secs(3)).await;
    stop.store(true, Ordering::Relaxed);
    assert!(
        !seen_v2.load(Ordering::Relaxed),
        "the aborted bundle was installed"
    );
    assert!(settled(&b, "gw-off", "vib", 1, 10).await);
    a.shutdown(Duration::from_secs(5)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_version_still_needed_cannot_be_deleted_and_rollback_still_works() {
    let dir = tempfile::tempdir().unwrap();
    let b = bridge(&dir.path().join("bridge"), embedded(false)).await;
    register(&b, "vibration-anomaly", "vib");
    register(&b, "vibration-anomaly-swapped", "vib");
    let trust = trust_dir(&b, dir.path());
    let a = agent(&agent_toml(
        &b,
        "gw-d",
        &dir.path().join("gw-d"),
        &trust,
        "",
    ))
    .await;
    deploy_known(&b, "vib", 1, &["gw-d"]).await;
    assert!(settled(&b, "gw-d", "vib", 1, 30).await);
    let d2 = deploy_known(&b, "vib", 2, &["gw-d"]).await;
    assert!(settled(&b, "gw-d", "vib", 2, 30).await);
    assert!(
        finished(&b, &d2, 30).await,
        "{:?}",
        b.fleet.show(&d2).unwrap()
    );
    // A paused deployment whose rollback target is v1 (here it finished; pause a new one).
    let delete = |v: u32| {
        outpost_bridge::registry::delete(
            &mut b.db.lock(),
            &b.audit,
            b.bundles.as_ref(),
            "vib",
            v,
            "ops",
            "cleanup",
        )
    };
    let e = delete(1).unwrap_err().to_string();
    assert!(e.contains("rollback version") && e.contains("gw-d"), "{e}");
    let e = delete(2).unwrap_err().to_string();
    assert!(e.contains("active") && e.contains("gw-d"), "{e}");

    // Rolling back the finished deployment: a new deployment back to v1.
    let rb = b
        .fleet
        .rollback(RollbackRequest {
            id: d2.clone(),
            to: None,
            actor: "ops".into(),
            reason: "v2 misbehaves".into(),
        })
        .unwrap();
    assert_eq!(rb.rollback_of.as_deref(), Some(d2.as_str()));
    assert_eq!(rb.version, 1);
    assert!(settled(&b, "gw-d", "vib", 1, 30).await);
    assert!(wait_until(30, || b.fleet.show(&rb.id).unwrap().state == "succeeded").await);
    // …and forward again with --to.
    let fwd = b
        .fleet
        .rollback(RollbackRequest {
            id: rb.id.clone(),
            to: Some(2),
            actor: "ops".into(),
            reason: "fixed upstream".into(),
        })
        .unwrap();
    assert!(settled(&b, "gw-d", "vib", 2, 30).await);
    assert!(wait_until(30, || b.fleet.show(&fwd.id).unwrap().state == "succeeded").await);
    // Commands on finished deployments say what to do instead.
    let e = b
        .fleet
        .command(&d2, Command::Pause("x".into()), "ops")
        .unwrap_err()
        .to_string();
    assert!(e.contains("finished"), "{e}");
    a.shutdown(Duration::from_secs(5)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_paused_deployment_keeps_its_rollback_target_from_deletion() {
    let dir = tempfile::tempdir().unwrap();
    let b = bridge(&dir.path().join("bridge"), embedded(false)).await;
    register(&b, "vibration-anomaly", "vib");
    register(&b, "vibration-anomaly-swapped", "vib");
    let trust = trust_dir(&b, dir.path());
    let a = agent(&agent_toml(
        &b,
        "gw-p",
        &dir.path().join("gw-p"),
        &trust,
        "",
    ))
    .await;
    deploy_known(&b, "vib", 1, &["gw-p"]).await;
    assert!(settled(&b, "gw-p", "vib", 1, 30).await);
    let d2 = deploy_known(&b, "vib", 2, &["gw-p"]).await;
    b.fleet
        .command(&d2, Command::Pause("look first".into()), "ops")
        .unwrap();
    let e = outpost_bridge::registry::delete(
        &mut b.db.lock(),
        &b.audit,
        b.bundles.as_ref(),
        "vib",
        1,
        "ops",
        "cleanup",
    )
    .unwrap_err()
    .to_string();
    assert!(e.contains(&d2) && e.contains("roll back to it"), "{e}");
    let rec = b
        .fleet
        .command(&d2, Command::Rollback("bad".into()), "ops")
        .unwrap();
    assert_eq!(rec.state, "rolling_back");
    assert!(settled(&b, "gw-p", "vib", 1, 30).await);
    assert!(wait_until(30, || b.fleet.show(&d2).unwrap().state == "rolled_back").await);
    a.shutdown(Duration::from_secs(5)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn behind_a_128_kb_broker_oversize_chunks_are_refused_and_the_bridge_stays_connected() {
    let Some(bin) = mosquitto() else {
        eprintln!("skipped: mosquitto is not installed");
        return;
    };
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let _m = Mosquitto::start_conf(&bin, port, "max_packet_size 131072\n");
    let dir = tempfile::tempdir().unwrap();
    let b = bridge_with(
        &dir.path().join("bridge"),
        outpost_bridge::server::BrokerChoice::External {
            host: "127.0.0.1".into(),
            port,
            credentials: None,
        },
        |c| c.gate.max_packet_bytes = 131_072,
    )
    .await;
    // Registration refuses chunks whose messages would not fit, naming the size that does.
    let e = register_with(&b, "vibration-anomaly", "vib", 131_072)
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("131072-byte packet limit") && e.contains("--chunk-size"),
        "{e}"
    );
    register_with(&b, "vibration-anomaly", "vib", 64 * 1024).unwrap();
    // A bundle registered under a laxer limit (an older bridge): served chunks that do
    // not fit become error frames, the device fails with the reason, nothing drops.
    outpost_bridge::db::set_max_packet_bytes(&b.db.lock(), 1 << 20).unwrap();
    register_with(&b, "vibration-cnn", "vib", 128 * 1024).unwrap();
    outpost_bridge::db::set_max_packet_bytes(&b.db.lock(), 131_072).unwrap();

    let drops = Arc::new(std::sync::atomic::AtomicU32::new(0));
    {
        let (mut conn, drops) = (b.connected.clone(), drops.clone());
        tokio::spawn(async move {
            while conn.changed().await.is_ok() {
                if !*conn.borrow() {
                    drops.fetch_add(1, Ordering::Relaxed);
                }
            }
        });
    }
    let trust = trust_dir(&b, dir.path());
    let a = agent(&agent_toml(
        &b,
        "gw-m",
        &dir.path().join("gw-m"),
        &trust,
        "",
    ))
    .await;
    deploy_known(&b, "vib", 1, &["gw-m"]).await;
    assert!(settled(&b, "gw-m", "vib", 1, 30).await);
    let d2 = deploy_known(&b, "vib", 2, &["gw-m"]).await;
    assert!(
        wait_until(30, || model_state(&b, "gw-m", "vib").is_some_and(|m| m
            .phase
            == UpdatePhase::Failed
            && m.last_error
                .as_deref()
                .is_some_and(|e| e.contains("packet limit"))))
        .await,
        "{:?}",
        model_state(&b, "gw-m", "vib")
    );
    assert_eq!(a.models.get("vib").unwrap().info.model.version, 1);
    // Commands still reach the device: the deployment trips (rollback) and settles.
    assert!(
        wait_until(30, || b
            .fleet
            .show(&d2)
            .unwrap()
            .state
            .starts_with("rolled"))
        .await,
        "{:?}",
        b.fleet.show(&d2).unwrap()
    );
    assert!(matches!(
        b.fleet.show(&d2).unwrap().devices[0].2,
        DeviceStatus::RolledBack { .. }
    ));
    assert_eq!(
        drops.load(Ordering::Relaxed),
        0,
        "the bridge lost its broker connection"
    );
    assert!(*b.connected.borrow());
    a.shutdown(Duration::from_secs(5)).await;
}
