//! Shared helpers for the agent's integration tests.
#![allow(dead_code, unused_imports)]

use std::sync::Arc;

use outpost_agent::models::{ActiveModel, ModelHandle};
use outpost_inference::Model;
use outpost_protocol::Digest;
use outpost_protocol::manifest::ModelRef;
use outpost_protocol::wire::InstalledModel;

pub use outpost_testkit::{fixture_onnx, fixture_spec, models_dir};

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

use outpost_protocol::SigningKey;
use outpost_protocol::bundle::BuiltBundle;
pub use outpost_testkit::{keys, wait_until};

/// A signed bundle of a fixture directory (`vibration-anomaly`, `vibration-cnn`, …) as
/// model `vibration-anomaly`.
pub fn fixture_bundle(
    key: &SigningKey,
    fixture: &str,
    version: u32,
    chunk_size: u32,
) -> BuiltBundle {
    outpost_testkit::bundle(key, fixture, "vibration-anomaly", version, chunk_size)
}

/// A signed directive that makes `bundle` the device's only model.
pub fn directive(key: &SigningKey, device: &str, seq: u64, bundle: &BuiltBundle) -> Vec<u8> {
    outpost_testkit::directive(
        key,
        device,
        seq,
        &[outpost_testkit::target(bundle, &format!("dep-{seq}"))],
    )
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
