//! Shared fixtures for the protocol's integration tests.
#![allow(dead_code)]

use outpost_protocol::bundle::{BuiltBundle, BundleBuilder};
use outpost_protocol::manifest::{Lineage, ModelRef, SelfTestSample};
use outpost_protocol::spec::{
    DType, InputSpec, Normalization, OutputKind, OutputSpec, ScoringSpec, Thresholds,
};
use outpost_protocol::{SigningKey, TrustStore};

/// The real MLP fixture, so the payload has realistic content.
pub const ONNX: &[u8] = include_bytes!("../../../models/vibration-anomaly/model.onnx");

pub fn spec() -> ScoringSpec {
    ScoringSpec {
        input: InputSpec {
            name: "features".into(),
            dtype: DType::F32,
            shape: vec![16],
            features: vec![],
            normalization: Normalization::None,
        },
        output: OutputSpec {
            name: "probabilities".into(),
            kind: OutputKind::Probabilities,
            labels: vec!["normal".into(), "imbalance".into(), "bearing_fault".into()],
            thresholds: Thresholds::default(),
        },
        drift: None,
    }
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
        input: vec![0.0; 16],
        expected: vec![1.0, 0.0, 0.0],
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
