//! Shared helpers for the agent's integration tests.
#![allow(dead_code)]

use std::path::PathBuf;
use std::sync::Arc;

use outpost_agent::models::{ActiveModel, ModelHandle};
use outpost_inference::Model;
use outpost_inference::spec::{self, SelfTestEntry};
use outpost_protocol::Digest;
use outpost_protocol::contract::ModelContract;
use outpost_protocol::manifest::{ModelRef, SelfTestSample};
use outpost_protocol::wire::InstalledModel;

pub fn models_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../models")
}

/// The fixture's contract (from its graph plus its spec.toml) and its self-test samples
/// (inline and from `selftest.json`).
pub fn fixture_spec(name: &str) -> (ModelContract, Vec<SelfTestSample>) {
    let dir = models_dir().join(name);
    let text = std::fs::read_to_string(dir.join("spec.toml")).unwrap();
    let (mut overlay, _) = spec::from_toml(&text).unwrap();
    let st = dir.join("selftest.json");
    if st.exists() {
        overlay.self_test.extend(
            serde_json::from_slice::<Vec<SelfTestEntry>>(&std::fs::read(st).unwrap()).unwrap(),
        );
    }
    let onnx = fixture_onnx(name);
    let c = overlay
        .apply(outpost_inference::contract_from_graph(&onnx).unwrap())
        .unwrap();
    let model = Model::load(&onnx, &c).unwrap();
    let samples = overlay.self_tests(&model).unwrap();
    (c, samples)
}

pub fn fixture_onnx(name: &str) -> Vec<u8> {
    std::fs::read(models_dir().join(name).join("model.onnx")).unwrap()
}

/// A model handle with the fixture model active.
pub fn handle_with(name: &str) -> ModelHandle {
    let (spec, _) = fixture_spec(name);
    let model = Model::load(&fixture_onnx(name), &spec).unwrap();
    let h = ModelHandle::default();
    h.insert(Arc::new(ActiveModel::new(
        model,
        InstalledModel {
            bundle: Digest::of(name.as_bytes()),
            model: ModelRef {
                name: name.into(),
                version: 1,
            },
        },
        None,
    )));
    h
}

pub mod http;
pub mod mqtt;

/// A command for a test binary; under cross-testing (`cross/test`) the binary runs through
/// the emulator named in `OUTPOST_TEST_RUNNER` (e.g. `qemu-aarch64-static -L /usr/aarch64-linux-gnu`).
pub fn command(bin: impl AsRef<std::ffi::OsStr>) -> std::process::Command {
    match std::env::var("OUTPOST_TEST_RUNNER")
        .ok()
        .filter(|r| !r.trim().is_empty())
    {
        Some(r) => {
            let mut parts = r.split_whitespace();
            let mut c = std::process::Command::new(parts.next().expect("runner"));
            c.args(parts).arg(bin);
            c
        }
        None => std::process::Command::new(bin),
    }
}

/// Seconds to allow for something that takes `secs` natively (more under emulation).
pub fn slack(secs: u64) -> u64 {
    if std::env::var("OUTPOST_TEST_SLOW").is_ok_and(|v| v == "1") {
        secs * 6
    } else {
        secs
    }
}

use std::path::Path;
use std::time::Duration;

use outpost_protocol::SigningKey;
use outpost_protocol::bundle::{BuiltBundle, BundleBuilder};
use outpost_protocol::directive::{BundleTarget, DIRECTIVE_FORMAT, Directive};
use outpost_protocol::manifest::Lineage;

/// A signing key and a trust directory holding its public key.
pub fn keys(dir: &Path) -> (SigningKey, PathBuf) {
    let key = SigningKey::generate().unwrap();
    let trust = dir.join("trust");
    std::fs::create_dir_all(&trust).unwrap();
    std::fs::write(
        trust.join(format!("{}.pub", key.id())),
        key.public_key().to_file_contents(),
    )
    .unwrap();
    (key, trust)
}

/// A signed bundle of a fixture directory (`vibration-anomaly`, `vibration-cnn`, …).
pub fn fixture_bundle(
    key: &SigningKey,
    fixture: &str,
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
            name: "vibration-anomaly".into(),
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
    .unwrap()
}

/// A signed directive for `bundle`.
pub fn directive(key: &SigningKey, device: &str, seq: u64, bundle: &BuiltBundle) -> Vec<u8> {
    let now = outpost_agent::clock::unix_now();
    Directive {
        format: DIRECTIVE_FORMAT,
        deployment_id: format!("dep-{seq}"),
        device_id: device.into(),
        sequence: seq,
        issued_at: now,
        expires_at: now + 3600,
        bundle: BundleTarget {
            digest: bundle.digest,
            model: bundle.manifest.model.clone(),
            head_size: bundle.head_len as u32,
            size: bundle.bytes.len() as u64,
        },
    }
    .sign(key)
}

/// Agent config text for tests: loopback broker, API on a free port, short timeouts.
pub fn agent_toml(device: &str, port: u16, data: &Path, trust: &Path, extra: &str) -> String {
    format!(
        "device_id = \"{device}\"\ndata_dir = \"{}\"\ntrust_dir = \"{}\"\n\
         [broker]\nurl = \"mqtt://127.0.0.1:{port}\"\nreconnect_min_ms = 50\nreconnect_max_ms = 500\n\
         [api]\nhttp = \"127.0.0.1:0\"\n[update]\nrequest_timeout_ms = 1000\nhealth_secs = 2\nhealth_inferences = 5\n{extra}",
        data.display(),
        trust.display()
    )
}

/// Polls `f` every 20 ms until it holds or `secs` pass.
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
