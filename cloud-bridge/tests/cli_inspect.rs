//! `outpost-bridge model inspect`: what a graph declares and what tract can run, through
//! the real binary.

mod common;

use common::{bridge, models, run, text};

#[test]
fn inspect_reports_the_contract_the_batching_and_unsupported_operators() {
    let o = run(bridge()
        .args(["model", "inspect", "--json"])
        .arg(models().join("sklearn/random_forest_classifier/model.onnx")));
    assert!(o.status.success(), "{}", text(&o));
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(v["contract"]["task"]["kind"], "classification");
    assert_eq!(v["contract"]["inputs"][0]["shape"][0], -1);
    assert_eq!(v["batching"], "symbolic");
    assert!(v["graph"]["ops"]["ZipMap"].as_u64() == Some(1), "{v}");
    assert!(
        v["graph"]["producer"]
            .as_str()
            .unwrap()
            .contains("skl2onnx")
    );

    // Human output for a graph tract only runs with a fixed batch.
    let o = run(bridge()
        .args(["model", "inspect"])
        .arg(models().join("fixed-batch/model.onnx")));
    assert!(o.status.success(), "{}", text(&o));
    assert!(text(&o).contains("batch: fixed 1"), "{}", text(&o));

    // An operator nobody implements: named with its node, exit 1.
    let o = run(bridge()
        .args(["model", "inspect"])
        .arg(models().join("unsupported-op/model.onnx")));
    assert_eq!(o.status.code(), Some(1), "{}", text(&o));
    assert!(
        text(&o).contains("FancyNorm (com.example) at node \"fancy_norm_1\""),
        "{}",
        text(&o)
    );

    // A spec that contradicts the graph is reported, not applied.
    let d = tempfile::tempdir().unwrap();
    let spec = d.path().join("spec.toml");
    std::fs::write(&spec, "[input]\nshape = [7]\n").unwrap();
    let o = run(bridge()
        .args(["model", "inspect", "--spec"])
        .arg(&spec)
        .arg(models().join("vibration-anomaly/model.onnx")));
    assert_eq!(o.status.code(), Some(1), "{}", text(&o));
    assert!(text(&o).contains("the graph says 16"), "{}", text(&o));

    // Not ONNX at all.
    let junk = d.path().join("junk.onnx");
    std::fs::write(&junk, b"not a model").unwrap();
    let o = run(bridge().args(["model", "inspect"]).arg(&junk));
    assert!(!o.status.success());
    assert!(text(&o).contains("junk.onnx"), "{}", text(&o));
}
