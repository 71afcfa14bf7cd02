//! Devices cannot speak for each other. Device A, holding its own valid credentials and
//! key, attacks device B: on the embedded broker the gate refuses every attempt; on an
//! open broker (no ACL — the embedded one without auth, and mosquitto when installed) the
//! bridge's end-to-end device authentication refuses what A forges, counts it, and B loses
//! nothing: B's records at the bridge are exactly the records B produced.

mod common;

use std::path::{Path, PathBuf};
use std::time::Duration;

use common::harness::*;
use outpost_agent::config::AgentConfig;
use outpost_agent::runtime::{self, RunningAgent};
use outpost_bridge::server::{Bridge, BrokerChoice};
use outpost_protocol::topics;
use outpost_protocol::uplink::{Record, UplinkBatch};
use rumqttc::{AsyncClient, Event, MqttOptions, Packet, QoS};

/// Provisions `id` through the bridge (credentials, key, trust) into `dir/id`.
fn provision(b: &Bridge, dir: &Path, id: &str) -> PathBuf {
    let out = dir.join(id);
    let url = format!("mqtt://{}:{}", b.broker.0, b.broker.1);
    outpost_bridge::devices::add(
        &b.db.lock(),
        &b.audit,
        id,
        &[],
        "x86_64-unknown-linux-gnu",
        &url,
        &b.key.public_key(),
        &out,
        "test",
    )
    .unwrap();
    out
}

async fn start_agent(out: &Path, data: &Path) -> RunningAgent {
    let text = std::fs::read_to_string(out.join("agent.toml"))
        .unwrap()
        .replace("kind = \"adxl345\"", "kind = \"none\"")
        + "\n[telemetry]\ninterval_secs = 1\n[sync]\nlinger_ms = 100\n";
    std::fs::write(out.join("agent.toml"), text).unwrap();
    let env = vec![
        ("OUTPOST_DATA_DIR".to_string(), data.display().to_string()),
        ("OUTPOST_API_HTTP".to_string(), String::new()),
    ];
    let cfg = AgentConfig::load(Some(&out.join("agent.toml")), env).unwrap();
    runtime::start(cfg, Vec::new()).await.unwrap()
}

/// A raw MQTT client as `client_id` with `user`'s password; returns whether it got
/// connected and the client.
async fn raw_client(
    host: &str,
    port: u16,
    client_id: &str,
    creds: Option<(&str, &str)>,
) -> (bool, AsyncClient, rumqttc::EventLoop) {
    let mut o = MqttOptions::new(client_id, host, port);
    o.set_max_packet_size(1 << 20, 1 << 20);
    if let Some((u, p)) = creds {
        o.set_credentials(u, p);
    }
    let (c, mut el) = AsyncClient::new(o, 64);
    let ok = matches!(
        tokio::time::timeout(Duration::from_secs(5), el.poll()).await,
        Ok(Ok(Event::Incoming(Packet::ConnAck(a)))) if a.code == rumqttc::ConnectReturnCode::Success
    );
    (ok, c, el)
}

/// Polls until the connection ends (the gate closes it) or `secs` pass; returns whether
/// it ended.
async fn closed_within(el: &mut rumqttc::EventLoop, secs: u64) -> bool {
    tokio::time::timeout(Duration::from_secs(secs), async {
        loop {
            if el.poll().await.is_err() {
                return;
            }
        }
    })
    .await
    .is_ok()
}

/// A forged telemetry batch for `victim` at far-future sequences (what used to make the
/// bridge ack B's real records as duplicates).
fn forged_batch() -> Vec<u8> {
    UplinkBatch {
        stream: "telemetry".into(),
        batch_id: 1,
        records: (1_000_000..1_000_100)
            .map(|s| Record {
                seq: s,
                ts_ms: s,
                body: br#"{"kind":"agent","forged":true}"#.to_vec(),
            })
            .collect(),
    }
    .encode(3)
    .unwrap()
}

/// B's records at the bridge must be exactly what B produced: drain B, then compare.
async fn assert_b_lost_nothing(b: &Bridge, agent: RunningAgent) {
    let store = agent.store.clone().unwrap();
    let drained = || {
        let s = outpost_agent::sync::lock(&store);
        s.stats().values().all(|v| v.records == 0) && s.stats()["telemetry"].appended >= 3
    };
    assert!(wait_until(60, drained).await, "B's backlog never drained");
    let (appended, evicted) = {
        let s = outpost_agent::sync::lock(&store);
        let t = &s.stats()["telemetry"];
        (t.appended, t.evicted)
    };
    assert_eq!(evicted, 0);
    let at_bridge = bridge_seqs(b, "gw-b");
    let telemetry = at_bridge.get("telemetry").cloned().unwrap_or_default();
    assert_eq!(telemetry.len() as u64, appended, "lost or forged telemetry");
    let forged: i64 =
        b.db.lock()
            .query_row(
                "SELECT COUNT(*) FROM records WHERE device = 'gw-b' AND seq >= 1000000",
                [],
                |r| r.get(0),
            )
            .unwrap();
    assert_eq!(forged, 0, "forged records stored under B");
    agent.shutdown(Duration::from_secs(5)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn on_the_embedded_broker_a_device_cannot_act_as_another() {
    let dir = tempfile::tempdir().unwrap();
    let b = bridge(&dir.path().join("bridge"), embedded(true)).await;
    let a_files = provision(&b, dir.path(), "gw-a");
    let b_files = provision(&b, dir.path(), "gw-b");
    let agent_b = start_agent(&b_files, &dir.path().join("b-data")).await;
    assert!(wait_until(20, || agent_b.link.is_connected()).await);
    let pw = std::fs::read_to_string(a_files.join("password")).unwrap();
    let host = b.broker.0.clone();
    let port = b.broker.1;

    // A connecting as B with A's password: refused at CONNECT.
    let (ok, _, _) = raw_client(&host, port, "gw-b", Some(("gw-a", &pw))).await;
    assert!(!ok, "A connected with B's client id");

    // A publishing on each of B's topics, or subscribing beyond its own: closed.
    for topic in [
        topics::uplink("gw-b", "telemetry"),
        topics::state("gw-b"),
        topics::presence("gw-b"),
        topics::directive("gw-b"),
        topics::chunk_request("gw-b"),
    ] {
        let (ok, c, mut el) = raw_client(&host, port, "gw-a", Some(("gw-a", &pw))).await;
        assert!(ok, "A's own credentials work");
        c.publish(&topic, QoS::AtLeastOnce, false, forged_batch())
            .await
            .unwrap();
        assert!(
            closed_within(&mut el, 10).await,
            "publish on {topic} not refused"
        );
    }
    for filter in ["#", "outpost/v1/dev/+/state", "outpost/v1/dev/gw-b/#"] {
        let (ok, c, mut el) = raw_client(&host, port, "gw-a", Some(("gw-a", &pw))).await;
        assert!(ok);
        c.subscribe(filter, QoS::AtLeastOnce).await.unwrap();
        assert!(
            closed_within(&mut el, 10).await,
            "subscribe {filter} not refused"
        );
    }
    // B kept working throughout.
    assert!(agent_b.link.is_connected());
    assert_b_lost_nothing(&b, agent_b).await;
    b.shutdown().await;
}

/// The attacks through an open broker: only the bridge's device authentication stands.
async fn open_broker_attack(b: Bridge, dir: &Path, host: &str, port: u16) {
    provision(&b, dir, "gw-a");
    let b_files = provision(&b, dir, "gw-b");
    let agent_b = start_agent(&b_files, &dir.join("b-data")).await;
    assert!(wait_until(20, || agent_b.link.is_connected()).await);
    let key_a = outpost_protocol::SigningKey::load(&dir.join("gw-a").join("device.key")).unwrap();

    // The attacker listens to everything (confidentiality is what an open broker costs).
    let (ok, c, mut el) = raw_client(host, port, "gw-a", None).await;
    assert!(ok);
    c.subscribe(topics::state("gw-b"), QoS::AtLeastOnce)
        .await
        .unwrap();
    let mut b_state = None;
    let _ = tokio::time::timeout(Duration::from_secs(10), async {
        while b_state.is_none() {
            if let Ok(Event::Incoming(Packet::Publish(p))) = el.poll().await {
                b_state = Some(p.payload.to_vec());
            }
        }
    })
    .await;
    // Replaying B's own state (even the latest) is refused: its counter is not newer.
    let old_state = b_state.expect("B's retained state seen on the open broker");
    let before = b.device_auth.stats.rejected();

    let forged = forged_batch();
    let attempts: Vec<(String, Vec<u8>)> = vec![
        // Sealed with A's own key, claiming B.
        (
            topics::uplink("gw-b", "telemetry"),
            outpost_protocol::device_auth::seal(&key_a, "gw-b", "up/telemetry", u64::MAX / 2, &forged),
        ),
        // Not sealed at all.
        (topics::uplink("gw-b", "telemetry"), forged.clone()),
        // A's own genuine batch moved to B's topic.
        (
            topics::uplink("gw-b", "telemetry"),
            outpost_protocol::device_auth::seal(&key_a, "gw-a", "up/telemetry", 7, &forged),
        ),
        // A state for B sealed by A.
        (
            topics::state("gw-b"),
            outpost_protocol::device_auth::seal(&key_a, "gw-b", "state", u64::MAX / 2, b"{}"),
        ),
        // Chunk requests under B's and under made-up ids.
        (
            topics::chunk_request("gw-b"),
            br#"{"bundle":"0000000000000000000000000000000000000000000000000000000000000000","chunks":[0]}"#.to_vec(),
        ),
        (
            topics::chunk_request("made-up-1"),
            br#"{"bundle":"0000000000000000000000000000000000000000000000000000000000000000","chunks":[0]}"#.to_vec(),
        ),
    ];
    let n = attempts.len() as u64;
    for (topic, payload) in attempts {
        c.publish(topic, QoS::AtLeastOnce, false, payload)
            .await
            .unwrap();
    }
    c.publish(topics::state("gw-b"), QoS::AtLeastOnce, true, old_state)
        .await
        .unwrap();
    let _ = tokio::time::timeout(Duration::from_secs(3), async {
        loop {
            let _ = el.poll().await;
        }
    })
    .await;
    assert!(
        wait_until(20, || b.device_auth.stats.rejected() > before + n).await,
        "rejected {} of {n}",
        b.device_auth.stats.rejected() - before
    );
    let counted: i64 =
        b.db.lock()
            .query_row(
                "SELECT auth_rejected FROM devices WHERE id = 'gw-b'",
                [],
                |r| r.get(0),
            )
            .unwrap();
    assert!(counted >= 1, "rejections are counted on B");
    let events: i64 =
        b.db.lock()
            .query_row(
                "SELECT COUNT(*) FROM events WHERE kind = 'device_auth_failed'",
                [],
                |r| r.get(0),
            )
            .unwrap();
    assert!(events >= 1, "rejections are reported");
    assert_b_lost_nothing(&b, agent_b).await;
    b.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn through_an_open_embedded_broker_forgeries_are_rejected_and_counted() {
    let dir = tempfile::tempdir().unwrap();
    let b = bridge(&dir.path().join("bridge"), embedded(false)).await;
    let (host, port) = b.broker.clone();
    open_broker_attack(b, dir.path(), &host, port).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn through_an_open_mosquitto_forgeries_are_rejected_and_counted() {
    let Some(bin) = mosquitto() else {
        eprintln!("skipping: mosquitto is not installed");
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
    open_broker_attack(b, dir.path(), "127.0.0.1", m.port).await;
}

fn rss_bytes() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmRSS:"))?
                .split_whitespace()
                .nth(1)?
                .parse::<u64>()
                .ok()
        })
        .unwrap_or(0)
        * 1024
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_chunk_request_flood_costs_bounded_memory_and_others_still_download() {
    let dir = tempfile::tempdir().unwrap();
    let b = bridge(&dir.path().join("bridge"), embedded(false)).await;
    let rec = register(&b, "vibration-cnn", "cnn");
    let digest = rec.digest.clone();
    provision(&b, dir.path(), "gw-flood");
    let key = outpost_protocol::SigningKey::load(&dir.path().join("gw-flood/device.key")).unwrap();
    let (host, port) = b.broker.clone();
    let (ok, c, mut el) = raw_client(&host, port, "gw-flood", None).await;
    assert!(ok);
    let drain = tokio::spawn(async move { while el.poll().await.is_ok() {} });
    let rss_before = rss_bytes();
    // 4 000 requests of 64 chunks each under the flooder's own (valid) identity, and as
    // many under made-up ids: 256 000 parts asked for, ~16 GB if all were answered.
    let chunks: Vec<u32> = (0..64).collect();
    let body =
        serde_json::to_vec(&serde_json::json!({"bundle": digest, "chunks": chunks})).unwrap();
    for i in 0..4_000u64 {
        let sealed =
            outpost_protocol::device_auth::seal(&key, "gw-flood", "bundle/req", i + 1, &body);
        c.publish(
            topics::chunk_request("gw-flood"),
            QoS::AtMostOnce,
            false,
            sealed,
        )
        .await
        .unwrap();
        c.publish(
            topics::chunk_request(&format!("made-up-{i}")),
            QoS::AtMostOnce,
            false,
            body.clone(),
        )
        .await
        .unwrap();
    }
    // Meanwhile a real device downloads the same bundle through the flood.
    let trust = trust_dir(&b, dir.path());
    let agent = agent(&agent_toml(
        &b,
        "gw-victim",
        &dir.path().join("victim"),
        &trust,
        "",
    ))
    .await;
    assert!(
        wait_until(20, || outpost_bridge::devices::show(
            &b.db.lock(),
            "gw-victim"
        )
        .is_ok())
        .await
    );
    b.fleet
        .create(outpost_bridge::fleet::CreateDeployment {
            model: "cnn".into(),
            version: None,
            selector: outpost_bridge::fleet::Selector {
                ids: vec!["gw-victim".into()],
                tags: vec![],
            },
            strategy: quick_strategy(),
            actor: "test".into(),
            reason: "flood".into(),
            skip_gates: false,
        })
        .unwrap();
    let mut peak_queued = 0;
    let done = wait_until(120, || {
        peak_queued = peak_queued.max(
            b.server
                .stats
                .queued
                .load(std::sync::atomic::Ordering::Relaxed),
        );
        agent
            .models
            .get("cnn")
            .is_some_and(|m| m.info.bundle.to_hex() == digest)
    })
    .await;
    assert!(
        done,
        "the victim's download did not complete during the flood"
    );
    let st = &b.server.stats;
    let dropped = st.dropped_busy.load(std::sync::atomic::Ordering::Relaxed)
        + st.deduplicated.load(std::sync::atomic::Ordering::Relaxed);
    assert!(
        dropped > 100_000,
        "the flood was not dropped at the budget ({dropped})"
    );
    assert!(peak_queued <= 50_000, "queued parts {peak_queued}");
    // Unsealed requests under made-up ids never reach the server (QoS 0: the broker may
    // shed some of the flood itself).
    assert!(
        b.device_auth
            .stats
            .malformed
            .load(std::sync::atomic::Ordering::Relaxed)
            >= 1_000
    );
    let grown = rss_bytes().saturating_sub(rss_before);
    assert!(
        grown < 256 << 20,
        "memory grew by {} MB during the flood",
        grown >> 20
    );
    agent.shutdown(Duration::from_secs(5)).await;
    drain.abort();
    b.shutdown().await;
}
