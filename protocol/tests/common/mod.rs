//! Shared fixtures for the protocol's integration tests.
#![allow(dead_code)]

use outpost_protocol::bundle::{BuiltBundle, BundleBuilder};
use outpost_protocol::contract::ModelContract;
use outpost_protocol::manifest::{Lineage, ModelRef, SelfTestSample};
use outpost_protocol::tensor::{Tensor, TensorData};
use outpost_protocol::{SigningKey, TrustStore};

/// The real MLP fixture, so the payload has realistic content.
pub const ONNX: &[u8] = include_bytes!("../../../models/vibration-anomaly/model.onnx");

pub fn spec() -> ModelContract {
    serde_json::from_value(serde_json::json!({
        "inputs": [{"name": "features", "datatype": "FP32", "shape": [-1, 16]}],
        "outputs": [{"name": "probabilities", "datatype": "FP32", "shape": [-1, 3]}],
        "task": {"kind": "classification", "output": "probabilities",
                 "labels": ["normal", "imbalance", "bearing_fault"]}
    }))
    .expect("contract parses")
}

pub fn lineage() -> Lineage {
    Lineage {
        source_commit: Some("abc123".into()),
        dataset_id: Some("ds-1".into()),
        created_by: "test".into(),
        created_at: 1_800_000_000,
        reason: "tamper suite".into(),
        ..Default::default()
    }
}

/// A deterministic pseudo-random, incompressible extra file so the payload spans
/// several chunks even at small chunk sizes.
pub fn noise(len: usize, seed: u64) -> Vec<u8> {
    let mut x = seed | 1;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect()
}

/// A valid bundle with ~6 chunks of 1 KiB.
pub fn bundle(key: &SigningKey) -> BuiltBundle {
    BundleBuilder::new(
        ModelRef {
            name: "vibration-anomaly".into(),
            version: 3,
        },
        ONNX.to_vec(),
        spec(),
        lineage(),
    )
    .self_test([SelfTestSample {
        inputs: vec![
            Tensor::new("features", vec![1, 16], TensorData::Fp32(vec![0.0; 16])).unwrap(),
        ],
        outputs: vec![
            Tensor::new(
                "probabilities",
                vec![1, 3],
                TensorData::Fp32(vec![1.0, 0.0, 0.0]),
            )
            .unwrap(),
        ],
        tolerance: 1e-4,
    }])
    .file("extra.bin", noise(2000, 7))
    .chunk_size(1024)
    .build(key)
    .expect("valid bundle builds")
}

pub fn trust(keys: &[&SigningKey]) -> TrustStore {
    let mut t = TrustStore::new();
    for k in keys {
        t.add(k.public_key());
    }
    t
}
