//! Signed audit checkpoints: the bridge checkpoints its chain and publishes it, and copies
//! kept elsewhere catch an attacker who truncated the log, rebuilt a consistent chain and
//! head file, and deleted the stored checkpoints.

mod common;

use std::path::Path;
use std::time::Duration;

use common::harness::{embedded, wait_until};
use common::{bridge as bridge_cmd, run, text};
use outpost_bridge::audit::{self, Audit, CHECKPOINT_FILE, Checkpoint, CheckpointError};
use outpost_bridge::db::Db;
use outpost_bridge::events::EventBus;
use outpost_bridge::server::{self, ServeConfig};
use outpost_protocol::{SigningKey, TrustStore};
use rumqttc::{AsyncClient, Event, MqttOptions, Packet, QoS};

/// `n` audit rows appended through the library, as commands and the API do (under one
/// lock, so a running bridge checkpoints all of them or none).
fn append(db: &Db, a: &Audit, actor: &str, n: usize) {
    let c = db.lock();
    for i in 0..n {
        a.append(
            &c,
            actor,
            "device.add",
            &format!("gw-{i}"),
            "commissioning",
            &serde_json::json!({ "i": i }),
        )
        .unwrap();
    }
}

/// The attacker's connection: plain SQLite with the append-only triggers dropped.
fn unguarded(data: &Path) -> rusqlite::Connection {
    let c = rusqlite::Connection::open(data.join("bridge.db")).unwrap();
    c.execute_batch(
        "DROP TRIGGER IF EXISTS audit_no_update; DROP TRIGGER IF EXISTS audit_no_delete;
         DROP TRIGGER IF EXISTS audit_checkpoints_no_update;
         DROP TRIGGER IF EXISTS audit_checkpoints_no_delete;",
    )
    .unwrap();
    c
}

fn verify(data: &Path, extra: &[&str]) -> (bool, String) {
    let o = run(bridge_cmd()
        .arg("--data-dir")
        .arg(data)
        .args(["audit", "--verify"])
        .args(extra));
    (o.status.success(), text(&o))
}

fn trust_of(k: &SigningKey) -> TrustStore {
    let mut t = TrustStore::new();
    t.add(k.public_key());
    t
}

#[test]
fn an_external_copy_catches_truncation_that_the_local_checks_no_longer_see() {
    let d = tempfile::tempdir().unwrap();
    let data = d.path().join("data");
    let db = Db::open(&data).unwrap();
    let a = Audit::new(&data);
    let key = server::signing_key(&data).unwrap();
    let events = EventBus::new(db.clone(), None);
    append(&db, &a, "alice", 8);
    let cp = a.checkpoint(&db.lock(), &key, &events).unwrap().unwrap();
    assert_eq!(cp.size, 8);
    // A monitor keeps a copy (here: the latest checkpoint file).
    let saved = d.path().join("saved.json");
    std::fs::copy(data.join(CHECKPOINT_FILE), &saved).unwrap();
    let saved_arg = saved.to_str().unwrap();

    let (ok, out) = verify(&data, &["--checkpoint", saved_arg]);
    assert!(
        ok && out.contains("8 entries verified, 3 checkpoints match"),
        "{out}"
    );

    // A careless attacker truncates to 5 rows and fixes the head file: the stored
    // checkpoint still catches it.
    let c = unguarded(&data);
    c.execute("DELETE FROM audit WHERE id > 5", []).unwrap();
    let h5: String = c
        .query_row("SELECT hash FROM audit WHERE id = 5", [], |r| r.get(0))
        .unwrap();
    std::fs::write(data.join("audit.head"), format!("5 {h5}\n")).unwrap();
    let (ok, out) = verify(&data, &[]);
    assert!(!ok, "{out}");
    assert!(
        out.contains("stored checkpoint #1: checkpoint size 8")
            && out.contains("the log has only 5: entries 6..=8 were deleted"),
        "{out}"
    );

    // A thorough one also deletes the stored checkpoints and the checkpoint file: the
    // local checks pass (the attacker's goal)...
    let c = unguarded(&data);
    c.execute("DELETE FROM audit_checkpoints", []).unwrap();
    std::fs::remove_file(data.join(CHECKPOINT_FILE)).unwrap();
    let (ok, out) = verify(&data, &[]);
    assert!(ok && out.contains("intact: 5 entries verified"), "{out}");
    // ...but the copy held elsewhere does not match, and says why.
    let (ok, out) = verify(&data, &["--checkpoint", saved_arg]);
    assert!(!ok, "{out}");
    assert!(
        out.contains(&format!(
            "checkpoint {saved_arg}: checkpoint size 8 (head {})",
            cp.head
        )) && out.contains("only 5"),
        "{out}"
    );
    let o = run(bridge_cmd().arg("--data-dir").arg(&data).args([
        "audit",
        "--verify",
        "--json",
        "--checkpoint",
        saved_arg,
    ]));
    let j: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(j["ok"], false);
    assert_eq!(j["checkpoints"], 1);

    // Padding the log back past 8 rows with a consistent forged chain, and even re-signing
    // it with the bridge key found in the data directory, does not help: the copy pins
    // the first 8 rows.
    drop(c);
    append(&db, &a, "mallory", 4);
    let forged = a.checkpoint(&db.lock(), &key, &events).unwrap().unwrap();
    assert_eq!(forged.size, 9);
    let (ok, out) = verify(&data, &[]);
    assert!(ok, "{out}");
    let (ok, out) = verify(&data, &["--checkpoint", saved_arg]);
    assert!(!ok, "{out}");
    assert!(
        out.contains(&format!(
            "checkpoint size 8 records head {} but the log's entry 8 now hashes to",
            cp.head
        )) && out.contains("entries at or below 8 were rewritten"),
        "{out}"
    );
}

#[test]
fn a_row_rewritten_below_a_checkpoint_fails_even_when_the_chain_is_recomputed() {
    let d = tempfile::tempdir().unwrap();
    let data = d.path().join("data");
    let db = Db::open(&data).unwrap();
    let a = Audit::new(&data);
    let key = server::signing_key(&data).unwrap();
    let events = EventBus::new(db.clone(), None);
    append(&db, &a, "alice", 6);
    let cp = a.checkpoint(&db.lock(), &key, &events).unwrap().unwrap();
    let t = trust_of(&key);

    // Rebuild the whole log with row 3 changed: a consistent chain and head file.
    let c = unguarded(&data);
    c.execute("DELETE FROM audit", []).unwrap();
    for i in 0..6 {
        let actor = if i == 2 { "someone-else" } else { "alice" };
        a.append(
            &c,
            actor,
            "device.add",
            &format!("gw-{i}"),
            "commissioning",
            &serde_json::json!({ "i": i }),
        )
        .unwrap();
    }
    assert!(
        a.verify(&c).unwrap().problems.is_empty(),
        "consistent chain"
    );
    match audit::verify_against(&c, &cp, &t) {
        Err(CheckpointError::Rewritten { size: 6, head, .. }) => assert_eq!(head, cp.head),
        other => panic!("{other:?}"),
    }
    // The stored checkpoint is still there, so the plain check fails too.
    let (ok, out) = verify(&data, &[]);
    assert!(
        !ok && out.contains("entries at or below 6 were rewritten"),
        "{out}"
    );
}

#[test]
fn forged_or_tampered_copies_are_rejected() {
    let d = tempfile::tempdir().unwrap();
    let data = d.path().join("data");
    let db = Db::open(&data).unwrap();
    let a = Audit::new(&data);
    let key = server::signing_key(&data).unwrap();
    let events = EventBus::new(db.clone(), None);
    append(&db, &a, "alice", 3);
    let cp = a.checkpoint(&db.lock(), &key, &events).unwrap().unwrap();

    // Signed by a key nobody trusts.
    let other = SigningKey::generate().unwrap();
    let stranger = d.path().join("stranger.json");
    std::fs::write(
        &stranger,
        Checkpoint::sign(cp.size, &cp.head, cp.at, &other).encode(),
    )
    .unwrap();
    let (ok, out) = verify(&data, &["--checkpoint", stranger.to_str().unwrap()]);
    assert!(!ok && out.contains("signed by unknown key"), "{out}");

    // The genuine checkpoint with its body edited (a smaller size, to excuse a truncation).
    let mut v: serde_json::Value = serde_json::from_slice(&cp.encode()).unwrap();
    v["size"] = 2.into();
    let edited = d.path().join("edited.json");
    std::fs::write(&edited, v.to_string()).unwrap();
    let (ok, out) = verify(&data, &["--checkpoint", edited.to_str().unwrap()]);
    assert!(!ok && out.contains("signature does not verify"), "{out}");

    // Not a checkpoint at all.
    let junk = d.path().join("junk.json");
    std::fs::write(&junk, "{\"size\": 3}").unwrap();
    let (ok, out) = verify(&data, &["--checkpoint", junk.to_str().unwrap()]);
    assert!(!ok && out.contains("malformed checkpoint"), "{out}");

    // A monitor that trusts only its own key directory: the genuine copy passes with the
    // bridge's public key, and fails with a directory that lacks it.
    let trust = d.path().join("trust");
    std::fs::create_dir_all(&trust).unwrap();
    std::fs::write(
        trust.join(format!("{}.pub", key.id())),
        key.public_key().to_file_contents(),
    )
    .unwrap();
    let genuine = data.join(CHECKPOINT_FILE);
    let (ok, out) = verify(
        &data,
        &[
            "--trust",
            trust.to_str().unwrap(),
            "--checkpoint",
            genuine.to_str().unwrap(),
        ],
    );
    assert!(ok, "{out}");
    let elsewhere = d.path().join("other-trust");
    std::fs::create_dir_all(&elsewhere).unwrap();
    std::fs::write(
        elsewhere.join(format!("{}.pub", other.id())),
        other.public_key().to_file_contents(),
    )
    .unwrap();
    let (ok, out) = verify(&data, &["--trust", elsewhere.to_str().unwrap()]);
    assert!(!ok && out.contains("unknown key"), "{out}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_running_bridge_publishes_signed_checkpoints_to_mqtt_and_webhooks() {
    let (url, got) = common::webhook::receiver(0).await;
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = ServeConfig::new(dir.path().to_path_buf());
    cfg.broker = embedded(false);
    cfg.http = None;
    cfg.webhooks = vec![url];
    cfg.audit_checkpoint = Duration::from_millis(200);
    let b = server::start(cfg).await.unwrap();
    assert!(wait_until(20, || *b.connected.borrow()).await);

    let mut o = MqttOptions::new("monitor", b.broker.0.clone(), b.broker.1);
    o.set_max_packet_size(1 << 20, 1 << 20);
    let (client, mut el) = AsyncClient::new(o, 64);
    client
        .subscribe("outpost/v1/events/audit_checkpoint", QoS::AtLeastOnce)
        .await
        .unwrap();
    let _ = tokio::time::timeout(Duration::from_secs(5), async {
        loop {
            if let Ok(Event::Incoming(Packet::SubAck(_))) = el.poll().await {
                break;
            }
        }
    })
    .await;

    append(&b.db, &b.audit, "alice", 5);
    let trust = trust_of(&b.key);

    // MQTT subscribers get it...
    let payload = tokio::time::timeout(Duration::from_secs(10), async {
        loop {
            if let Ok(Event::Incoming(Packet::Publish(p))) = el.poll().await {
                break p.payload.to_vec();
            }
        }
    })
    .await
    .expect("a checkpoint on the event topic");
    let from_mqtt = Checkpoint::decode_copy(&payload).unwrap();
    assert_eq!(from_mqtt.size, 5);
    from_mqtt.verify(&trust).unwrap();

    // ...and so does every webhook, as the whole event; the copy verifies against the chain.
    assert!(
        wait_until(20, || got
            .lock()
            .unwrap()
            .iter()
            .any(|(_, b)| b.contains("audit_checkpoint")))
        .await,
        "no checkpoint webhook"
    );
    let body = got
        .lock()
        .unwrap()
        .iter()
        .find(|(_, b)| b.contains("audit_checkpoint"))
        .map(|(_, b)| b.clone())
        .unwrap();
    let ev: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(ev["kind"], "audit_checkpoint");
    let from_hook = Checkpoint::decode_copy(body.as_bytes()).unwrap();
    assert_eq!(from_hook, from_mqtt);
    audit::verify_against(&b.db.lock(), &from_hook, &trust).unwrap();

    // No growth, no new checkpoint.
    tokio::time::sleep(Duration::from_millis(600)).await;
    assert_eq!(b.audit.checkpoints(&b.db.lock()).unwrap().len(), 1);
    b.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_makes_a_final_checkpoint() {
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = ServeConfig::new(dir.path().to_path_buf());
    cfg.broker = embedded(false);
    cfg.http = None;
    // Only the start-up tick runs (with nothing to checkpoint) before shutdown.
    cfg.audit_checkpoint = Duration::from_secs(3600);
    let b = server::start(cfg).await.unwrap();
    tokio::time::sleep(Duration::from_millis(200)).await;
    append(&b.db, &b.audit, "alice", 3);
    let (db, a, key) = (b.db.clone(), b.audit.clone(), b.key.clone());
    assert!(a.checkpoints(&db.lock()).unwrap().is_empty());
    b.shutdown().await;

    let all = a.checkpoints(&db.lock()).unwrap();
    assert_eq!(all.len(), 1, "{all:?}");
    let latest = Checkpoint::read_file(&dir.path().join(CHECKPOINT_FILE)).unwrap();
    assert_eq!((latest.size, &latest), (3, &all[0]));
    let t = trust_of(&key);
    audit::verify_against(&db.lock(), &latest, &t).unwrap();
    let r = a.verify_with_checkpoints(&db.lock(), &t, &[]).unwrap();
    assert!(r.problems.is_empty() && r.checkpoints == 2, "{r:?}");
    // Its webhook copies wait in the outbox for the next start (none configured here),
    // and the event is stored for the API.
    let ev = EventBus::new(db.clone(), None)
        .recent(10, Some("audit_checkpoint"))
        .unwrap();
    assert_eq!(ev.len(), 1);
}
