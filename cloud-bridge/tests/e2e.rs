//! End to end: the real agent library against the real bridge, over the embedded broker
//! (with provisioned credentials) and over mosquitto.

mod common;

use std::time::Duration;

use common::harness::*;
use outpost_agent::config::AgentConfig;
use outpost_agent::runtime;
use outpost_bridge::fleet::CreateDeployment;
use outpost_bridge::fleet::Selector;
use outpost_bridge::server::BrokerChoice;
use outpost_protocol::topics;
use outpost_protocol::uplink::{Record, UplinkBatch};
use outpost_protocol::wire::BatchAck;
use rumqttc::{AsyncClient, Event, MqttOptions, Packet, QoS};

fn deploy(b: &outpost_bridge::server::Bridge, model: &str, devices: &[&str]) -> String {
    b.fleet
        .create(CreateDeployment {
            model: model.into(),
            version: None,
            selector: Selector {
                ids: devices.iter().map(|s| s.to_string()).collect(),
                tags: vec![],
            },
            strategy: quick_strategy(),
            actor: "test".into(),
            reason: "e2e".into(),
            skip_gates: false,
        })
        .unwrap()
        .id
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn provisioned_agent_pulls_a_bundle_through_the_bridge_with_broker_auth() {
    let dir = tempfile::tempdir().unwrap();
    let b = bridge(&dir.path().join("bridge"), embedded(true)).await;
    let rec = register(&b, "vibration-anomaly", "vib");
    let out = dir.path().join("gw-prov");
    let url = format!("mqtt://{}:{}", b.broker.0, b.broker.1);
    outpost_bridge::devices::add(
        &b.db.lock(),
        &b.audit,
        "gw-prov",
        &["site=a".into()],
        "x86_64-unknown-linux-gnu",
        &url,
        &b.key.public_key(),
        &out,
        "test",
    )
    .unwrap();
    // The issued config, as a device would use it (data dir and API moved for the test).
    let text = std::fs::read_to_string(out.join("agent.toml"))
        .unwrap()
        .replace("kind = \"adxl345\"", "kind = \"none\"")
        + "\n[update]\nhealth_secs = 1\n";
    std::fs::write(out.join("agent.toml"), text).unwrap();
    let env = vec![
        (
            "OUTPOST_DATA_DIR".to_string(),
            dir.path().join("agent-data").display().to_string(),
        ),
        ("OUTPOST_API_HTTP".to_string(), "127.0.0.1:0".to_string()),
    ];
    let cfg = AgentConfig::load(Some(&out.join("agent.toml")), env.clone()).unwrap();
    let agent = runtime::start(cfg, Vec::new()).await.unwrap();

    // A device with a wrong password never gets on.
    std::fs::write(out.join("password"), "not-the-password").unwrap();
    let mut bad = AgentConfig::load(Some(&out.join("agent.toml")), env).unwrap();
    bad.data_dir = dir.path().join("intruder");
    bad.device_id = "gw-prov".into();
    let intruder = runtime::start(bad, Vec::new()).await.unwrap();

    assert!(
        wait_until(20, || agent.link.is_connected()).await,
        "provisioned device connects"
    );
    let dep = deploy(&b, "vib", &["gw-prov"]);
    assert!(
        wait_until(60, || agent.models.only().is_some_and(|m| m
            .info
            .bundle
            .to_hex()
            == rec.digest))
        .await,
        "model never activated"
    );
    assert!(
        wait_until(30, || b.fleet.show(&dep).unwrap().state == "succeeded").await,
        "{:?}",
        b.fleet.show(&dep).unwrap()
    );
    assert!(
        !intruder.link.is_connected(),
        "wrong credentials were accepted"
    );
    assert!(
        intruder
            .link
            .stats
            .connect_failures
            .load(std::sync::atomic::Ordering::Relaxed)
            > 0
    );
    let shown = || outpost_bridge::devices::show(&b.db.lock(), "gw-prov").unwrap();
    assert!(
        wait_until(10, || {
            let d = shown();
            d.online
                && d.state.is_some_and(|s| {
                    s.models
                        .iter()
                        .any(|m| m.active.as_ref().is_some_and(|a| a.model.version == 1))
                })
        })
        .await,
        "{:?}",
        shown()
    );
    assert!(
        b.server
            .stats
            .disk_reads
            .load(std::sync::atomic::Ordering::Relaxed)
            >= 1
    );
    intruder.shutdown(Duration::from_secs(2)).await;
    agent.shutdown(Duration::from_secs(5)).await;
    b.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn agent_pulls_a_bundle_through_the_bridge_on_mosquitto() {
    let Some(bin) = mosquitto() else {
        eprintln!("skipped: mosquitto is not installed (.ci/run installs it)");
        return;
    };
    let m = Mosquitto::start(&bin);
    let dir = tempfile::tempdir().unwrap();
    let b = bridge(
        &dir.path().join("bridge"),
        BrokerChoice::External {
            host: "127.0.0.1".into(),
            port: m.port,
            credentials: None,
        },
    )
    .await;
    let rec = register(&b, "vibration-cnn", "cnn");
    let trust = trust_dir(&b, dir.path());
    let agent = agent(&agent_toml(
        &b,
        "gw-mosq",
        &dir.path().join("a"),
        &trust,
        "",
    ))
    .await;
    assert!(wait_until(20, || agent.link.is_connected()).await);
    assert!(
        wait_until(20, || outpost_bridge::devices::show(
            &b.db.lock(),
            "gw-mosq"
        )
        .is_ok())
        .await,
        "device discovered"
    );
    let dep = deploy(&b, "cnn", &["gw-mosq"]);
    assert!(
        wait_until(90, || agent.models.only().is_some_and(|m| m
            .info
            .bundle
            .to_hex()
            == rec.digest))
        .await,
        "model never activated over mosquitto"
    );
    assert!(wait_until(30, || b.fleet.show(&dep).unwrap().state == "succeeded").await);
    assert!(
        rec.chunks > 100,
        "a multi-chunk transfer: {} chunks",
        rec.chunks
    );
    agent.shutdown(Duration::from_secs(5)).await;
    b.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn captures_and_telemetry_flow_to_the_bridge_and_are_deleted_only_after_acks() {
    let dir = tempfile::tempdir().unwrap();
    let b = bridge(&dir.path().join("bridge"), embedded(false)).await;
    register(&b, "vibration-anomaly", "vib");
    let trust = trust_dir(&b, dir.path());
    let extra = "[sensor]\nkind = \"simulated\"\nmode = \"bearing_fault\"\ninterval_ms = 20\n[capture]\nsample_rate = 1.0\nmax_per_hour = 100000\n";
    let agent = agent(&agent_toml(
        &b,
        "gw-up",
        &dir.path().join("a"),
        &trust,
        extra,
    ))
    .await;
    assert!(
        wait_until(20, || outpost_bridge::devices::show(&b.db.lock(), "gw-up")
            .is_ok())
        .await
    );
    deploy(&b, "vib", &["gw-up"]);
    let count = |sql: &str| -> i64 { b.db.lock().query_row(sql, [], |r| r.get(0)).unwrap() };
    assert!(
        wait_until(60, || count(
            "SELECT COUNT(*) FROM captures WHERE device = 'gw-up'"
        ) >= 50)
        .await,
        "captures never arrived"
    );
    assert!(
        wait_until(20, || count(
            "SELECT COUNT(*) FROM telemetry WHERE device = 'gw-up' AND kind = 'inference'"
        ) >= 1)
        .await
    );
    // Captured windows of a bearing-faulted machine are classified as such, inputs intact.
    let (label, input): (String, String) =
        b.db.lock()
            .query_row(
                "SELECT label, input FROM captures WHERE device = 'gw-up' LIMIT 1",
                [],
                |r| Ok((r.get(0)?, r.get(1)?)),
            )
            .unwrap();
    assert_eq!(label, "bearing_fault");
    let inputs: Vec<outpost_protocol::tensor::Tensor> = serde_json::from_str(&input).unwrap();
    assert_eq!(inputs[0].name, "features");
    assert_eq!(inputs[0].shape, vec![1, 16]);
    // Acked records are gone from the device; nothing stored twice at the bridge.
    let store = agent.store.clone().unwrap();
    let acked = || outpost_agent::sync::lock(&store).stats()["captures"].acked;
    assert!(wait_until(20, || acked() >= 50).await);
    assert_eq!(
        count("SELECT COUNT(*) FROM records"),
        count("SELECT COUNT(*) FROM (SELECT DISTINCT device, stream, seq FROM records)")
    );
    agent.shutdown(Duration::from_secs(5)).await;
    b.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_same_batch_sent_three_times_is_stored_once_and_acked_each_time() {
    let dir = tempfile::tempdir().unwrap();
    let b = bridge(&dir.path().join("bridge"), embedded(false)).await;
    let mut o = MqttOptions::new("gw-raw", b.broker.0.clone(), b.broker.1);
    o.set_max_packet_size(1 << 20, 1 << 20);
    let (client, mut el) = AsyncClient::new(o, 64);
    client
        .subscribe(topics::ack("gw-raw"), QoS::AtLeastOnce)
        .await
        .unwrap();
    let batch = UplinkBatch {
        stream: "telemetry".into(),
        batch_id: 100,
        records: (100..110)
            .map(|s| Record {
                seq: s,
                ts_ms: s,
                body: br#"{"kind":"agent"}"#.to_vec(),
            })
            .collect(),
    };
    // Sealed with a key the bridge knows for gw-raw (as the agent's link does).
    let key = outpost_protocol::SigningKey::generate().unwrap();
    outpost_bridge::device_auth::add_key(&b.db.lock(), "gw-raw", &key.public_key()).unwrap();
    let frame = outpost_protocol::device_auth::seal(
        &key,
        "gw-raw",
        "up/telemetry",
        1,
        &batch.encode(3).unwrap(),
    );
    for _ in 0..3 {
        client
            .publish(
                topics::uplink("gw-raw", "telemetry"),
                QoS::AtLeastOnce,
                false,
                frame.clone(),
            )
            .await
            .unwrap();
    }
    let mut acks = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(20), async {
        while acks.len() < 3 {
            if let Ok(Event::Incoming(Packet::Publish(p))) = el.poll().await {
                acks.push(BatchAck::decode(&p.payload, &Default::default()).unwrap());
            }
        }
    })
    .await;
    assert_eq!(acks.len(), 3, "acked each time");
    assert_eq!(
        acks.iter().map(|a| a.stored).sum::<u32>(),
        10,
        "stored once"
    );
    assert_eq!(acks.iter().map(|a| a.duplicates).sum::<u32>(), 20);
    let n: i64 =
        b.db.lock()
            .query_row(
                "SELECT COUNT(*) FROM records WHERE device = 'gw-raw'",
                [],
                |r| r.get(0),
            )
            .unwrap();
    assert_eq!(n, 10);
    b.shutdown().await;
}
