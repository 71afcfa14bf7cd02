//! End to end against a real broker (rumqttd): signed directive → pull → verify →
//! self-test → switch → health window, and every way that must fail safely.

mod common;

use std::time::Duration;

use common::http::{request, request_unix};
use common::mqtt::{BrokerProcess, Peer, embedded_broker};
use common::*;
use outpost_agent::config::AgentConfig;
use outpost_agent::runtime::{self, RunningAgent};
use outpost_protocol::bundle::{BuiltBundle, BundleBuilder};
use outpost_protocol::manifest::{Lineage, ModelRef};
use outpost_protocol::wire::{ReportedState, UpdatePhase};
use outpost_protocol::{Digest, SigningKey};
use serde_json::{Value, json};

struct Env {
    _dir: tempfile::TempDir,
    key: SigningKey,
    peer: Peer,
    agent: RunningAgent,
    device: String,
}

async fn start_agent(
    device: &str,
    port: u16,
    dir: &std::path::Path,
    trust: &std::path::Path,
    extra: &str,
) -> RunningAgent {
    let toml = agent_toml(device, port, &dir.join("data"), trust, extra);
    runtime::start(AgentConfig::from_toml(&toml).unwrap(), Vec::new())
        .await
        .unwrap()
}

/// Broker, peer, keys, and an agent with `bundle` installed and its health window passed.
async fn env_with_v1(device: &str, extra: &str) -> (Env, BuiltBundle) {
    let port = embedded_broker();
    let dir = tempfile::tempdir().unwrap();
    let (key, trust) = keys(dir.path());
    let peer = Peer::connect(port).await;
    let v1 = fixture_bundle(&key, "vibration-anomaly", 1, 1024);
    peer.serve(v1.bytes.clone());
    let agent = start_agent(device, port, dir.path(), &trust, extra).await;
    peer.publish_directive(device, directive(&key, device, 1, &v1))
        .await;
    let env = Env {
        _dir: dir,
        key,
        peer,
        agent,
        device: device.into(),
    };
    env.wait_phase(UpdatePhase::Succeeded, 1, 30).await;
    (env, v1)
}

const MODEL: &str = "vibration-anomaly";

/// Every error the state reports: the device's, the last refused directive's, each model's.
fn all_errors(s: &ReportedState) -> String {
    s.last_error
        .iter()
        .chain(s.directive_rejected.as_ref().map(|r| &r.reason))
        .chain(s.models.iter().filter_map(|m| m.last_error.as_ref()))
        .cloned()
        .collect::<Vec<_>>()
        .join("; ")
}

impl Env {
    async fn wait_phase(&self, phase: UpdatePhase, seq: u64, secs: u64) {
        let ok = wait_until(secs, || {
            self.peer.state(&self.device).is_some_and(|s| {
                s.model(MODEL)
                    .is_some_and(|m| m.phase == phase && m.sequence == Some(seq))
            })
        })
        .await;
        assert!(
            ok,
            "waited for {phase:?} of seq {seq}; last state: {:#?}",
            self.peer.state(&self.device)
        );
    }

    fn active(&self) -> Option<Digest> {
        self.agent.models.only().map(|m| m.info.bundle)
    }

    async fn predict(&self, body: Value) -> (u16, Value) {
        let (s, b) = request(
            self.agent.http_addr.unwrap(),
            "POST",
            "/v1/predict",
            body.to_string().as_bytes(),
        )
        .await;
        (s, serde_json::from_str(&b).unwrap_or(Value::String(b)))
    }
}

#[derive(serde::Deserialize)]
struct Reference {
    cases: Vec<Case>,
}
#[derive(serde::Deserialize)]
struct Case {
    label: Option<String>,
    shape: Vec<usize>,
    raw_features: Vec<f32>,
    output: Vec<f32>,
}

fn reference() -> Reference {
    serde_json::from_slice(
        &std::fs::read(models_dir().join("vibration-anomaly/reference.json")).unwrap(),
    )
    .unwrap()
}

fn close(got: &Value, want: &[f32]) -> bool {
    let g: Vec<f64> = serde_json::from_value(got.clone()).unwrap();
    g.len() == want.len()
        && g.iter()
            .zip(want)
            .all(|(a, b)| (a - f64::from(*b)).abs() <= 1e-4)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn directive_to_active_model_answering_like_onnxruntime() {
    let (env, v1) = env_with_v1("gw-e2e", "").await;
    assert_eq!(env.active(), Some(v1.digest));
    let st = env.peer.state(&env.device).unwrap();
    assert_eq!(
        st.model(MODEL)
            .unwrap()
            .active
            .as_ref()
            .unwrap()
            .model
            .version,
        1
    );
    assert!(env.peer.log.lock().unwrap().presence.get(&env.device) == Some(&true));

    // Every reference window, one request each, matches onnxruntime within 1e-4.
    let r = reference();
    for c in r.cases.iter().filter(|c| c.shape[0] == 1) {
        let (s, body) = env.predict(json!({ "inputs": c.raw_features })).await;
        assert_eq!(s, 200, "{body}");
        assert!(
            close(&body["prediction"]["probabilities"], &c.output),
            "{body} vs {:?}",
            c.output
        );
        assert_eq!(body["prediction"]["label"], json!(c.label));
        assert_eq!(body["bundle"], json!(v1.digest.to_hex()));
    }
    // The batch case in one request.
    let batch = r.cases.iter().find(|c| c.shape[0] == 4).unwrap();
    let rows: Vec<&[f32]> = batch.raw_features.chunks(16).collect();
    let (s, body) = env.predict(json!({ "inputs": rows })).await;
    assert_eq!(s, 200, "{body}");
    for (i, want) in batch.output.chunks(3).enumerate() {
        assert!(
            close(&body["predictions"][i]["probabilities"], want),
            "{body}"
        );
    }
    // Named features.
    let c = &r.cases[0];
    let names = outpost_agent::sensors::features::FEATURE_NAMES;
    let named: serde_json::Map<String, Value> = names
        .iter()
        .zip(&c.raw_features)
        .map(|(n, v)| ((*n).to_owned(), json!(v)))
        .collect();
    let (s, body) = env.predict(json!({ "features": named })).await;
    assert_eq!(s, 200, "{body}");
    assert!(close(&body["prediction"]["probabilities"], &c.output));

    // Bad requests: precise 4xx, never a crash.
    let cases: Vec<(&[u8], u16, &str)> = vec![
        (br#"{"inputs": [1, 2, 3]}"#, 422, "expected 16 values"),
        (br#"{"inputs": [1, "x"]}"#, 400, "inputs[1] is a string"),
        (br#"{"inputs": [NaN]}"#, 400, "invalid JSON"),
        (
            br#"{"inputs": [1e39, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0]}"#,
            422,
            "not finite",
        ),
        (br#"{"inputz": []}"#, 400, "unknown field"),
        (br#"{"features": {"rms_x": 1}}"#, 422, "is missing"),
        (br#"{"features": {"bogus": 1}}"#, 422, "unknown feature"),
        (br#"[1, 2]"#, 400, "expected an object"),
        (br#"{"inputs": []}"#, 422, "expected 16 values"),
    ];
    for (body, status, msg) in cases {
        let (s, b) = request(env.agent.http_addr.unwrap(), "POST", "/v1/predict", body).await;
        assert_eq!(s, status, "{}: {b}", String::from_utf8_lossy(body));
        assert!(b.contains(msg), "{}: {b}", String::from_utf8_lossy(body));
    }
    let huge = vec![b' '; 9 << 20];
    let (s, b) = request(env.agent.http_addr.unwrap(), "POST", "/v1/predict", &huge).await;
    assert_eq!(s, 413, "{b}");
    let (s, b) = request(env.agent.http_addr.unwrap(), "GET", "/v1/metrics", b"").await;
    assert_eq!(s, 200);
    let m: Value = serde_json::from_str(&b).unwrap();
    assert!(
        m["requests"].as_u64().unwrap() >= 14
            && m["errors"] == json!(0)
            && m["rejected"] == json!(3),
        "{m}"
    );
    env.agent.shutdown(Duration::from_secs(5)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn local_api_also_answers_on_the_unix_socket() {
    let port = embedded_broker();
    let dir = tempfile::tempdir().unwrap();
    let (key, trust) = keys(dir.path());
    let peer = Peer::connect(port).await;
    let v1 = fixture_bundle(&key, "vibration-anomaly", 1, 65536);
    peer.serve(v1.bytes.clone());
    let sock = dir.path().join("run/agent.sock");
    let mut toml = agent_toml("gw-uds", port, &dir.path().join("data"), &trust, "");
    toml = toml.replace(
        "[api]\n",
        &format!("[api]\nunix_socket = \"{}\"\n", sock.display()),
    );
    let agent = runtime::start(AgentConfig::from_toml(&toml).unwrap(), Vec::new())
        .await
        .unwrap();
    let (s, _) = request_unix(&sock, "GET", "/v1/health", b"").await;
    assert_eq!(s, 503, "no model yet");
    peer.publish_directive("gw-uds", directive(&key, "gw-uds", 1, &v1))
        .await;
    assert!(wait_until(30, || agent.models.only().is_some()).await);
    let c = &reference().cases[5];
    let (s, b) = request_unix(
        &sock,
        "POST",
        "/v1/predict",
        json!({"inputs": c.raw_features}).to_string().as_bytes(),
    )
    .await;
    assert_eq!(s, 200, "{b}");
    let v: Value = serde_json::from_str(&b).unwrap();
    assert!(close(&v["prediction"]["probabilities"], &c.output));
    agent.shutdown(Duration::from_secs(5)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rejected_directives_and_bundles_leave_the_old_model_serving() {
    let (env, v1) = env_with_v1("gw-reject", "").await;
    let dev = env.device.clone();
    let last_error = || {
        env.peer
            .state(&dev)
            .map(|s| all_errors(&s))
            .unwrap_or_default()
    };
    let still_v1 = |env: &Env| assert_eq!(env.active(), Some(v1.digest));

    // Signed by a key the device does not trust.
    let stranger = SigningKey::generate().unwrap();
    let v2 = fixture_bundle(&env.key, "vibration-anomaly-swapped", 2, 1024);
    env.peer.serve(v2.bytes.clone());
    env.peer
        .publish_directive(&dev, directive(&stranger, &dev, 2, &v2))
        .await;
    assert!(
        wait_until(10, || last_error().contains("unknown key")).await,
        "{}",
        last_error()
    );
    still_v1(&env);

    // An older sequence (rollback attack / stale retained message).
    env.peer
        .publish_directive(&dev, directive(&env.key, &dev, 5, &v1))
        .await;
    env.wait_phase(UpdatePhase::Succeeded, 5, 10).await;
    env.peer
        .publish_directive(&dev, directive(&env.key, &dev, 4, &v2))
        .await;
    assert!(
        wait_until(10, || last_error()
            .contains("older than the last accepted 5"))
        .await,
        "{}",
        last_error()
    );
    still_v1(&env);

    // A bundle whose head was tampered (signature bytes flipped, same digest).
    let mut tampered = v2.bytes.clone();
    let sig_at = 14 + 1 + tampered[14] as usize;
    tampered[sig_at + 3] ^= 0x40;
    env.peer.serve(tampered);
    env.peer
        .publish_directive(&dev, directive(&env.key, &dev, 6, &v2))
        .await;
    env.wait_phase(UpdatePhase::Failed, 6, 20).await;
    assert!(
        last_error().contains("signature does not verify"),
        "{}",
        last_error()
    );
    still_v1(&env);

    // A bundle with a corrupted payload chunk: rejected chunk by chunk, then failed.
    let v3 = fixture_bundle(&env.key, "vibration-anomaly-swapped", 3, 1024);
    let mut bad = v3.bytes.clone();
    let last = bad.len() - 10;
    bad[last] ^= 1;
    env.peer.serve(bad);
    env.peer
        .publish_directive(&dev, directive(&env.key, &dev, 7, &v3))
        .await;
    env.wait_phase(UpdatePhase::Failed, 7, 30).await;
    assert!(
        last_error().contains("serving bad data"),
        "{}",
        last_error()
    );
    still_v1(&env);

    // Throughout, the old model kept answering.
    let c = &reference().cases[0];
    let (s, body) = env.predict(json!({ "inputs": c.raw_features })).await;
    assert_eq!(s, 200);
    assert!(close(&body["prediction"]["probabilities"], &c.output));
    env.agent.shutdown(Duration::from_secs(5)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bundle_failing_its_self_test_is_never_activated() {
    let (env, v1) = env_with_v1("gw-selftest", "").await;
    // Correctly signed, but its self-test expectations are wrong for this model (a bridge
    // that skipped validation): the device must catch it before switching.
    let (spec, mut samples) = fixture_spec("vibration-anomaly");
    samples[0].outputs[0].data = outpost_protocol::tensor::TensorData::Fp32(vec![0.0, 0.0, 1.0]);
    let lineage = Lineage {
        created_by: "t".into(),
        ..Default::default()
    };
    let bad = BundleBuilder::new(
        ModelRef {
            name: "vibration-anomaly".into(),
            version: 2,
        },
        fixture_onnx("vibration-anomaly"),
        spec,
        lineage,
    )
    .self_test(samples)
    .chunk_size(2048)
    .build(&env.key)
    .unwrap();
    env.peer.serve(bad.bytes.clone());
    env.peer
        .publish_directive(&env.device, directive(&env.key, &env.device, 2, &bad))
        .await;
    env.wait_phase(UpdatePhase::Failed, 2, 30).await;
    let st = env.peer.state(&env.device).unwrap();
    assert!(all_errors(&st).contains("self-test failed"), "{st:?}");
    assert_eq!(env.active(), Some(v1.digest));
    assert_eq!(
        st.model(MODEL).unwrap().active.as_ref().unwrap().bundle,
        v1.digest
    );
    env.agent.shutdown(Duration::from_secs(5)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_model_failing_in_its_health_window_is_rolled_back() {
    let (env, v1) = env_with_v1("gw-health", "").await;
    let fragile = fixture_bundle(&env.key, "vibration-anomaly-fragile", 2, 1024);
    env.peer.serve(fragile.bytes.clone());
    env.peer
        .publish_directive(&env.device, directive(&env.key, &env.device, 2, &fragile))
        .await;
    assert!(
        wait_until(30, || env.active() == Some(fragile.digest)).await,
        "fragile model never activated"
    );
    // Live data from a healthy machine makes the fragile model produce NaN.
    let normal = reference()
        .cases
        .into_iter()
        .find(|c| c.label.as_deref() == Some("normal"))
        .unwrap();
    let (s, body) = env.predict(json!({ "inputs": normal.raw_features })).await;
    assert_eq!(s, 500, "{body}");
    env.wait_phase(UpdatePhase::RolledBack, 2, 10).await;
    assert_eq!(env.active(), Some(v1.digest));
    let st = env.peer.state(&env.device).unwrap();
    assert!(
        all_errors(&st).contains("rolled back: 1 inference error"),
        ""
    );
    let (s, _) = env.predict(json!({ "inputs": normal.raw_features })).await;
    assert_eq!(s, 200, "the previous model serves again");
    env.agent.shutdown(Duration::from_secs(5)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn broker_killed_mid_transfer_then_restarted_completes_the_transfer() {
    let mut broker = BrokerProcess::start();
    let dir = tempfile::tempdir().unwrap();
    let (key, trust) = keys(dir.path());
    let peer = Peer::connect(broker.port).await;
    let cnn = fixture_bundle(&key, "vibration-cnn", 1, 16 * 1024);
    let served = peer.serve(cnn.bytes.clone());
    let n = served.chunk_count() as usize;
    assert!(n > 100, "{n} chunks");
    *peer.frame_delay.lock().unwrap() = Duration::from_millis(40);
    let agent = start_agent("gw-broker", broker.port, dir.path(), &trust, "").await;
    peer.publish_directive("gw-broker", directive(&key, "gw-broker", 1, &cnn))
        .await;
    assert!(wait_until(30, || peer.served("gw-broker").len() >= n / 4).await);
    broker.kill();
    assert!(wait_until(10, || !agent.link.is_connected()).await);
    let at_kill = peer.served("gw-broker").len();
    tokio::time::sleep(Duration::from_millis(500)).await;
    broker.restart();
    *peer.frame_delay.lock().unwrap() = Duration::ZERO;
    assert!(
        wait_until(60, || agent
            .models
            .only()
            .is_some_and(|m| m.info.bundle == cnn.digest))
        .await,
        "transfer did not complete"
    );
    let total = peer.served("gw-broker").len();
    assert!(
        at_kill < n && total < n + n / 4,
        "resumed rather than restarted: {at_kill} before the kill, {total} in all, {n} chunks"
    );
    assert!(
        agent
            .link
            .stats
            .reconnects
            .load(std::sync::atomic::Ordering::Relaxed)
            >= 1
    );
    agent.shutdown(Duration::from_secs(5)).await;
}
