//! Helpers shared by Outpost's tests (dev-only; never a dependency of a shipped binary):
//! signing keys with a trust directory, signed bundles of the committed model fixtures,
//! signed directives, and polling.
//!
//! | module | what |
//! |---|---|
//! | [`logs`] | what the code under test logged (an in-memory tracing subscriber) |
//! | [`mosquitto`] | a real mosquitto for tests (found, started on a free port, killed on drop) |
//! | [`prom`] | reading and validating Prometheus text exposition |

pub mod logs;
pub mod mosquitto;
pub mod prom;

use std::path::{Path, PathBuf};
use std::time::Duration;

use outpost_inference::Model;
use outpost_inference::spec::{self, SelfTestEntry, SpecOverlay};
use outpost_protocol::SigningKey;
use outpost_protocol::bundle::{BuiltBundle, BundleBuilder};
use outpost_protocol::contract::ModelContract;
use outpost_protocol::directive::{DIRECTIVE_FORMAT, Directive, ModelTarget};
use outpost_protocol::manifest::{Lineage, ModelRef, SelfTestSample};

/// The committed model fixtures (`models/` at the workspace root).
pub fn models_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../models")
}

/// A fixture's ONNX bytes (`vibration-anomaly`, `sklearn/ridge`, …).
pub fn fixture_onnx(name: &str) -> Vec<u8> {
    std::fs::read(models_dir().join(name).join("model.onnx"))
        .unwrap_or_else(|e| panic!("fixture {name}: {e}"))
}

/// A fixture's contract (from its graph plus its `spec.toml`, if any) and its self-test
/// samples (inline and from `selftest.json`; synthesised when it has none, as registration
/// does).
pub fn fixture_spec(name: &str) -> (ModelContract, Vec<SelfTestSample>) {
    let dir = models_dir().join(name);
    let mut overlay = match std::fs::read_to_string(dir.join("spec.toml")) {
        Ok(text) => spec::from_toml(&text).expect("fixture spec parses").0,
        Err(_) => SpecOverlay::default(),
    };
    let st = dir.join("selftest.json");
    if st.exists() {
        overlay.self_test.extend(
            serde_json::from_slice::<Vec<SelfTestEntry>>(&std::fs::read(st).unwrap()).unwrap(),
        );
    }
    let onnx = fixture_onnx(name);
    let c = overlay
        .apply(outpost_inference::contract_from_graph(&onnx).expect("fixture graph"))
        .expect("fixture contract");
    let model = Model::load(&onnx, &c).expect("fixture loads");
    let samples = if overlay.self_test.is_empty() {
        outpost_inference::selftest::synthesize(&model, &[], 4, 7).expect("self-tests synthesise")
    } else {
        overlay.self_tests(&model).expect("fixture self-tests")
    };
    (c, samples)
}

/// A signing key and a trust directory (`{dir}/trust`) holding its public key.
pub fn keys(dir: &Path) -> (SigningKey, PathBuf) {
    let key = SigningKey::generate().expect("key generation");
    let trust = dir.join("trust");
    std::fs::create_dir_all(&trust).unwrap();
    std::fs::write(
        trust.join(format!("{}.pub", key.id())),
        key.public_key().to_file_contents(),
    )
    .unwrap();
    (key, trust)
}

/// A signed bundle of fixture directory `fixture`, registered as model `model` version
/// `version`, cut into `chunk_size`-byte chunks.
pub fn bundle(
    key: &SigningKey,
    fixture: &str,
    model: &str,
    version: u32,
    chunk_size: u32,
) -> BuiltBundle {
    let (spec, self_test) = fixture_spec(fixture);
    let lineage = Lineage {
        created_by: "test".into(),
        created_at: 1,
        ..Default::default()
    };
    BundleBuilder::new(
        ModelRef {
            name: model.into(),
            version,
        },
        fixture_onnx(fixture),
        spec,
        lineage,
    )
    .self_test(self_test)
    .chunk_size(chunk_size)
    .level(3)
    .build(key)
    .expect("fixture bundle builds")
}

/// The directive entry for `bundle`, put there by deployment `deployment`.
pub fn target(bundle: &BuiltBundle, deployment: &str) -> ModelTarget {
    ModelTarget {
        name: bundle.manifest.model.name.clone(),
        digest: bundle.digest,
        version: bundle.manifest.model.version,
        head_size: bundle.head_len as u32,
        size: bundle.bytes.len() as u64,
        memory_bytes: bundle.manifest.requirements.memory_bytes,
        deployment_id: deployment.into(),
    }
}

/// Wall-clock unix seconds.
pub fn unix_now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// A signed directive for `device` listing `models`, valid for an hour from now.
pub fn directive(key: &SigningKey, device: &str, seq: u64, models: &[ModelTarget]) -> Vec<u8> {
    let now = unix_now();
    directive_at(key, device, seq, now, now + 3600, models)
}

/// A signed directive with an explicit validity window (clock-skew and expiry tests).
pub fn directive_at(
    key: &SigningKey,
    device: &str,
    seq: u64,
    issued_at: u64,
    expires_at: u64,
    models: &[ModelTarget],
) -> Vec<u8> {
    Directive {
        format: DIRECTIVE_FORMAT,
        device_id: device.into(),
        sequence: seq,
        issued_at,
        expires_at,
        models: models.to_vec(),
        trust: None,
    }
    .sign(key)
}

/// Polls `f` every 20 ms until it holds or `secs` pass; returns whether it held.
pub async fn wait_until(secs: u64, mut f: impl FnMut() -> bool) -> bool {
    let end = tokio::time::Instant::now() + Duration::from_secs(secs);
    while tokio::time::Instant::now() < end {
        if f() {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    f()
}
