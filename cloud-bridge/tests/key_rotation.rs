//! Signing-key rotation end to end: a real bridge (embedded broker) and real agents. The
//! next key reaches devices inside directives signed by the active key; `keys activate`
//! waits for a device that was offline; after activation a deployment signed by the new
//! key installs everywhere and the retired key verifies nothing on the devices.

mod common;

use std::path::{Path, PathBuf};

use common::harness::*;
use outpost_agent::config::AgentConfig;
use outpost_agent::runtime::{self, RunningAgent};
use outpost_bridge::keys::{KeyState, KeysError, ring};
use outpost_bridge::registry::{self, RegisterRequest};
use outpost_bridge::server::Bridge;
use outpost_protocol::bundle::parse_head;
use outpost_protocol::directive::{DIRECTIVE_FORMAT, Directive};
use outpost_protocol::{KeyId, Limits, SigningKey, TrustStore, topics};

const A: &str = "gw-rot-a";
const B: &str = "gw-rot-b";

/// Provisions `id` as `device add` does (trust/ holds what the key ring hands out) and
/// returns its agent configuration.
fn provision(b: &Bridge, dir: &Path, id: &str) -> (String, PathBuf) {
    let out = dir.join(id);
    let trust = b.keyring.signer(&b.db.lock()).unwrap().device_trust();
    outpost_bridge::devices::add_with(
        &b.db.lock(),
        &b.audit,
        id,
        &[],
        "x86_64-unknown-linux-gnu",
        &format!("mqtt://{}:{}", b.broker.0, b.broker.1),
        &trust,
        &out,
        "test",
        outpost_bridge::devices::CertOptions::default(),
    )
    .unwrap();
    let toml = format!(
        "device_id = \"{id}\"\ndata_dir = \"{}\"\ntrust_dir = \"{}\"\nkey_file = \"{}\"\n\
         [broker]\nurl = \"mqtt://{}:{}\"\nreconnect_min_ms = 50\nreconnect_max_ms = 500\n\
         [api]\nhttp = \"127.0.0.1:0\"\n\
         [update]\nrequest_timeout_ms = 2000\nhealth_secs = 1\nhealth_inferences = 3\n\
         [telemetry]\ninterval_secs = 1\n",
        out.join("data").display(),
        out.join("trust").display(),
        out.join("device.key").display(),
        b.broker.0,
        b.broker.1
    );
    (toml, out.join("trust"))
}

async fn start(toml: &str) -> RunningAgent {
    runtime::start(AgentConfig::from_toml(toml).unwrap(), Vec::new())
        .await
        .unwrap()
}

/// The key ids `dev` last reported trusting.
fn trusted(b: &Bridge, dev: &str) -> Vec<KeyId> {
    ring::trust_status(&b.db.lock())
        .unwrap()
        .into_iter()
        .find(|(d, _)| d == dev)
        .map(|(_, k)| k)
        .unwrap_or_default()
}

/// Registers a fixture with the key the ring signs with now (as `model register` does).
fn register_now(b: &Bridge, name: &str) -> registry::ModelRecord {
    let key = b.keyring.active(&b.db.lock()).unwrap();
    let dir = common::models().join("vibration-anomaly");
    let req = RegisterRequest {
        name: name.into(),
        files: vec![dir.join("model.onnx")],
        spec: Some(dir.join("spec.toml")),
        created_by: "test".into(),
        reason: "rotation".into(),
        chunk_size: Some(16 * 1024),
        ..Default::default()
    };
    registry::register(&mut b.db.lock(), &b.audit, b.bundles.as_ref(), &key, req)
        .unwrap()
        .0
}

fn bundle_key(b: &Bridge, digest: &str) -> String {
    let bytes = b.bundles.get(digest.parse().unwrap()).unwrap();
    let (head, _) = parse_head(&bytes, &Limits::default()).unwrap();
    head.key_id.as_str().to_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_signing_key_rotates_only_once_every_device_trusts_the_next_one() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("bridge");
    let b = bridge(&data, embedded(false)).await;
    let old = b.keyring.active(&b.db.lock()).unwrap();
    let (toml_a, trust_a) = provision(&b, dir.path(), A);
    let (toml_b, _) = provision(&b, dir.path(), B);
    let a = start(&toml_a).await;
    let agent_b = start(&toml_b).await;
    let v1 = register_now(&b, "vib");
    assert_eq!(bundle_key(&b, &v1.digest), old.id().as_str());
    deploy_known(&b, "vib", 1, &[A, B]).await;
    assert!(settled(&b, A, "vib", 1, 60).await && settled(&b, B, "vib", 1, 60).await);
    assert!(wait_until(10, || trusted(&b, B) == vec![old.id().clone()]).await);

    // B goes offline before the rotation starts.
    agent_b.shutdown(std::time::Duration::from_secs(5)).await;
    let r = ring::rotate(
        &mut b.db.lock(),
        &b.audit,
        &b.keyring,
        &data,
        None,
        "test",
        outpost_bridge::db::now(),
    )
    .unwrap();
    assert_eq!(r.devices, 2);
    let next = KeyId::parse(&r.key_id).unwrap();
    assert!(
        wait_until(30, || trusted(&b, A).contains(&next)).await,
        "A never reported trusting the next key: {:?}",
        trusted(&b, A)
    );
    // A persisted it: a restart would trust it too.
    assert!(TrustStore::load_dir(&trust_a).unwrap().get(&next).is_some());
    // The active key still signs while the rotation waits.
    assert_eq!(b.keyring.active(&b.db.lock()).unwrap().id(), old.id());
    let rows = ring::rows(&b.db.lock()).unwrap();
    let n = rows.iter().find(|r| r.state == KeyState::Next).unwrap();
    assert_eq!((n.trusted_by, n.devices), (1, 2));

    match ring::activate(
        &mut b.db.lock(),
        &b.audit,
        &b.keyring,
        false,
        "test",
        outpost_bridge::db::now(),
    ) {
        Err(KeysError::NotReady { missing, total, .. }) => {
            assert_eq!((missing, total), (vec![B.to_string()], 2));
        }
        other => panic!("activation with B offline: {other:?}"),
    }

    // B comes back, receives its retained directive, and trusts the next key.
    let agent_b = start(&toml_b).await;
    assert!(
        wait_until(30, || trusted(&b, B).contains(&next)).await,
        "B never reported trusting the next key: {:?}",
        trusted(&b, B)
    );
    let done = ring::activate(
        &mut b.db.lock(),
        &b.audit,
        &b.keyring,
        false,
        "test",
        outpost_bridge::db::now(),
    )
    .unwrap();
    assert_eq!((&done.active, &done.retired), (&next, old.id()));
    assert!(done.forced.is_empty());

    // Signed by the new key from now on: a new version installs on both devices.
    let v2 = register_now(&b, "vib");
    assert_eq!(bundle_key(&b, &v2.digest), next.as_str());
    deploy(&b, "vib", 2, &[A, B]).await;
    assert!(
        settled(&b, A, "vib", 2, 60).await && settled(&b, B, "vib", 2, 60).await,
        "v2 (new key) did not install: {:?} / {:?}",
        model_state(&b, A, "vib"),
        model_state(&b, B, "vib")
    );
    // Both applied the retirement carried by directives signed with the new key.
    for d in [A, B] {
        assert!(
            wait_until(20, || trusted(&b, d) == vec![next.clone()]).await,
            "{d} still trusts {:?}",
            trusted(&b, d)
        );
    }
    assert!(
        TrustStore::load_dir(&trust_a)
            .unwrap()
            .get(old.id())
            .is_none()
    );

    // A directive signed by the retired key, with a fresh sequence, is refused.
    let seq = outpost_bridge::devices::show(&b.db.lock(), A)
        .unwrap()
        .state
        .and_then(|s| s.directive_sequence)
        .unwrap();
    let now = outpost_bridge::db::now();
    let forged = Directive {
        format: DIRECTIVE_FORMAT,
        device_id: A.into(),
        sequence: seq + 100,
        issued_at: now,
        expires_at: now + 3600,
        models: vec![],
        trust: None,
    }
    .sign(
        &SigningKey::load(
            &ring::rows(&b.db.lock())
                .unwrap()
                .iter()
                .find(|r| &r.key_id == old.id())
                .unwrap()
                .path,
        )
        .unwrap(),
    );
    b.out
        .try_publish(topics::directive(A), forged, false)
        .unwrap();
    assert!(
        wait_until(20, || outpost_bridge::devices::show(&b.db.lock(), A)
            .unwrap()
            .state
            .and_then(|s| s.directive_rejected)
            .is_some_and(
                |r| r.kind == "unknown_key" && r.sequence == Some(seq + 100)
            ))
        .await,
        "a directive signed by the retired key was not refused as unknown"
    );
    assert!(
        a.models
            .get("vib")
            .is_some_and(|m| m.info.model.version == 2),
        "the refused directive changed the running model"
    );
    assert!(trusted(&b, A) == vec![next.clone()]);

    // A bundle signed before the rotation is still deployable: the directive naming its
    // digest is signed by the trusted key.
    deploy(&b, "vib", 1, &[A]).await;
    assert!(
        settled(&b, A, "vib", 1, 60).await,
        "rolling back to the pre-rotation bundle failed: {:?}",
        model_state(&b, A, "vib")
    );

    // (The first key was made on first use, which is logged, not audited.)
    let audit = b.audit.list(&b.db.lock(), Some(500)).unwrap();
    for action in ["keys.rotate", "keys.activate", "keys.retire"] {
        assert!(
            audit.iter().any(|r| r.action == action),
            "no {action} in the audit trail"
        );
    }
    a.shutdown(std::time::Duration::from_secs(5)).await;
    agent_b.shutdown(std::time::Duration::from_secs(5)).await;
    b.shutdown().await;
}
