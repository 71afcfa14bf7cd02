//! Helpers for the bridge's black-box tests.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

/// Path of a workspace binary. `cargo test --workspace` builds every member's binaries
/// before running tests; when this crate is tested alone the agent may be missing, so
/// build it on demand.
pub fn workspace_bin(name: &str, package: &str) -> PathBuf {
    let exe = std::env::current_exe().expect("test exe path");
    let dir = exe
        .parent()
        .and_then(Path::parent)
        .expect("target/<profile>");
    let bin = dir.join(name);
    if !bin.exists() {
        let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
        let st = Command::new(cargo)
            .args(["build", "-p", package, "--bin", name])
            .status()
            .expect("run cargo build");
        assert!(st.success(), "building {name} failed");
    }
    bin
}

pub fn bridge() -> Command {
    Command::new(env!("CARGO_BIN_EXE_outpost-bridge"))
}

pub fn agent() -> Command {
    Command::new(workspace_bin("outpost-agent", "outpost-agent"))
}

pub fn models() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../models")
}

pub fn run(cmd: &mut Command) -> Output {
    cmd.output().expect("spawn")
}

pub fn text(o: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

/// `keys init` into `dir/keys` (the data directory `dir/data`); returns the private key
/// path.
pub fn init_keys(dir: &Path) -> PathBuf {
    let keys = dir.join("keys");
    let o = run(bridge()
        .arg("--data-dir")
        .arg(dir.join("data"))
        .args(["keys", "init", "--out"])
        .arg(&keys));
    assert!(o.status.success(), "{}", text(&o));
    keys.join("signing.key")
}

/// `bundle pack` of the vibration-anomaly fixture.
pub fn pack_anomaly(key: &Path, out: &Path, extra: &[&str]) -> Output {
    let m = models().join("vibration-anomaly");
    run(bridge()
        .args(["bundle", "pack", "--model"])
        .arg(m.join("model.onnx"))
        .arg("--spec")
        .arg(m.join("spec.toml"))
        .arg("--key")
        .arg(key)
        .arg("-o")
        .arg(out)
        .args(extra))
}

pub mod harness;
pub mod http;
pub mod probe;
pub mod python;
pub mod webhook;
