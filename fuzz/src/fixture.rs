//! What the fuzz targets and the seed-corpus writer share: a fixed test key (so committed
//! seeds signed with it stay valid), the device and clock the targets check against, the
//! contracts specs are applied to, and how a target's input bytes are framed.
//!
//! This file is compiled twice: as a module of the fuzz crate (`fuzz/src/lib.rs`) and,
//! through `#[path]`, by `protocol/tests/fuzz_seeds.rs`, which writes the seeds with the
//! real encoders and checks the committed ones still decode. It depends only on
//! `outpost_protocol` and `serde_json`.
#![allow(dead_code)]

use outpost_protocol::bundle::BUNDLE_DOMAIN;
use outpost_protocol::contract::ModelContract;
use outpost_protocol::tensor::DataType;
use outpost_protocol::{SigningKey, TrustStore};

/// The device every directive and sealed message is checked for.
pub const DEVICE: &str = "gw-0001";
/// The device clock, unix seconds.
pub const NOW: u64 = 1_800_000_000;
/// The highest directive sequence the device has accepted.
pub const LAST_SEQUENCE: u64 = 5;
/// The message kind sealed messages are opened as (the reported-state topic tail).
pub const SEAL_KIND: &str = "state";

/// The fixed test key: PKCS#8 v1 for Ed25519 around a constant seed. A generated key would
/// make every committed signed seed fail its signature on the next run.
pub fn signing_key() -> SigningKey {
    let mut pkcs8 = vec![
        0x30, 0x2e, 0x02, 0x01, 0x00, 0x30, 0x05, 0x06, 0x03, 0x2b, 0x65, 0x70, 0x04, 0x22, 0x04,
        0x20,
    ];
    pkcs8.extend_from_slice(&[0x5a; 32]);
    SigningKey::from_pkcs8(&pkcs8).expect("fixed Ed25519 test key")
}

/// A trust store holding only the test key.
pub fn trust() -> TrustStore {
    let mut t = TrustStore::new();
    t.add(signing_key().public_key());
    t
}

/// The test key, made once: deriving it costs more than most decoders under test.
pub fn key() -> &'static SigningKey {
    static K: std::sync::OnceLock<SigningKey> = std::sync::OnceLock::new();
    K.get_or_init(signing_key)
}

/// [`trust`], made once.
pub fn trusted() -> &'static TrustStore {
    static T: std::sync::OnceLock<TrustStore> = std::sync::OnceLock::new();
    T.get_or_init(trust)
}

/// A bundle head around `manifest`, signed with `key` (the layout of
/// `outpost_protocol::bundle`; written here because the crate's writer is private and the
/// targets need heads for manifests the builder would refuse to sign).
pub fn signed_head(key: &SigningKey, manifest: &[u8]) -> Vec<u8> {
    let sig = key.sign(BUNDLE_DOMAIN, manifest);
    let k = key.id().as_str().as_bytes();
    let h = 1 + k.len() + sig.len() + 4 + manifest.len();
    let mut out = Vec::with_capacity(14 + h);
    out.extend_from_slice(b"OUTPOSTB");
    out.extend_from_slice(&1u16.to_le_bytes());
    out.extend_from_slice(&(h as u32).to_le_bytes());
    out.push(k.len() as u8);
    out.extend_from_slice(k);
    out.extend_from_slice(&sig);
    out.extend_from_slice(&(manifest.len() as u32).to_le_bytes());
    out.extend_from_slice(manifest);
    out
}

/// Contracts spec files are applied to: the shapes registration meets (a feature vector
/// classifier, a raw-window model with a symbolic batch, two inputs and a regression).
pub fn contracts() -> Vec<ModelContract> {
    [
        serde_json::json!({
            "inputs": [{"name": "features", "datatype": "FP32", "shape": [-1, 16]}],
            "outputs": [{"name": "probabilities", "datatype": "FP32", "shape": [-1, 3]}]
        }),
        serde_json::json!({
            "inputs": [{"name": "window", "datatype": "FP32", "shape": ["batch", 3, 1024]}],
            "outputs": [{"name": "logits", "datatype": "FP32", "shape": ["batch", 3]}]
        }),
        serde_json::json!({
            "inputs": [{"name": "a", "datatype": "FP32", "shape": [-1, 4]},
                       {"name": "b", "datatype": "INT64", "shape": [-1, 2]}],
            "outputs": [{"name": "label", "datatype": "INT64", "shape": [-1]},
                        {"name": "value", "datatype": "FP64", "shape": [-1, 1]}]
        }),
    ]
    .into_iter()
    .map(|v| serde_json::from_value(v).expect("fixture contract parses"))
    .collect()
}

/// Splits `u32 LE length || first || second`; a length past the end takes everything.
pub fn split_pair(data: &[u8]) -> (&[u8], &[u8]) {
    let Some((len, rest)) = data.split_first_chunk::<4>() else {
        return (data, &[]);
    };
    let n = (u32::from_le_bytes(*len) as usize).min(rest.len());
    rest.split_at(n)
}

/// Frames two byte strings for [`split_pair`].
pub fn pair(first: &[u8], second: &[u8]) -> Vec<u8> {
    let mut v = (first.len() as u32).to_le_bytes().to_vec();
    v.extend_from_slice(first);
    v.extend_from_slice(second);
    v
}

/// Every OIP datatype, indexed by the first byte of a tensor target's input.
pub const DATATYPES: [DataType; 13] = [
    DataType::Bool,
    DataType::Uint8,
    DataType::Uint16,
    DataType::Uint32,
    DataType::Uint64,
    DataType::Int8,
    DataType::Int16,
    DataType::Int32,
    DataType::Int64,
    DataType::Fp16,
    DataType::Fp32,
    DataType::Fp64,
    DataType::Bytes,
];

/// A tensor target's input: `datatype index u8 || element count u32 LE || bytes`. The count
/// is taken modulo 2^20 + 1 so the fuzzer also reaches counts just past the cap without
/// spending its time on absurd ones.
pub fn split_tensor(data: &[u8]) -> Option<(DataType, usize, &[u8])> {
    let (&dt, rest) = data.split_first()?;
    let (count, rest) = rest.split_first_chunk::<4>()?;
    let count = u32::from_le_bytes(*count) as usize % ((1 << 20) + 1);
    Some((DATATYPES[dt as usize % DATATYPES.len()], count, rest))
}

/// Frames a tensor target's input.
pub fn tensor_input(dt: DataType, count: usize, bytes: &[u8]) -> Vec<u8> {
    let i = DATATYPES
        .iter()
        .position(|d| *d == dt)
        .expect("known datatype") as u8;
    let mut v = vec![i];
    v.extend_from_slice(&(count as u32).to_le_bytes());
    v.extend_from_slice(bytes);
    v
}

/// An OIP target's input: `mode u8 || ...`. Mode 0: no header, the rest is the body.
/// Mode 1: `u16 LE || body`, the header is that number in decimal (the binary extension).
/// Mode 2: `n u8 || n header bytes || body` (raw header values).
pub fn split_oip(data: &[u8]) -> Option<(Option<Vec<u8>>, &[u8])> {
    let (&mode, rest) = data.split_first()?;
    match mode % 3 {
        0 => Some((None, rest)),
        1 => {
            let (n, body) = rest.split_first_chunk::<2>()?;
            Some((Some(u16::from_le_bytes(*n).to_string().into_bytes()), body))
        }
        _ => {
            let (&n, rest) = rest.split_first()?;
            let (h, body) = rest.split_at_checked(n as usize)?;
            Some((Some(h.to_vec()), body))
        }
    }
}

/// Frames an OIP target's input (mode 0 or 1).
pub fn oip_input(json_len: Option<u16>, body: &[u8]) -> Vec<u8> {
    let mut v = match json_len {
        None => vec![0],
        Some(n) => {
            let mut v = vec![1];
            v.extend_from_slice(&n.to_le_bytes());
            v
        }
    };
    v.extend_from_slice(body);
    v
}

/// A directive target's input: `mode u8 || bytes`. Even mode: the bytes are a whole
/// directive message. Odd mode: they are a directive *body*, which the target signs with
/// the test key so the fuzzer reaches the checks behind the signature.
pub fn split_directive(data: &[u8]) -> Option<(bool, &[u8])> {
    let (&mode, rest) = data.split_first()?;
    Some((mode % 2 == 1, rest))
}

/// Signs a directive body into the message the bridge publishes (`directive::verify`'s
/// envelope), without checking the body.
pub fn sign_directive_body(key: &SigningKey, body: &str) -> Vec<u8> {
    let sig = key.sign(
        outpost_protocol::directive::DIRECTIVE_DOMAIN,
        body.as_bytes(),
    );
    let hex: String = sig.iter().map(|b| format!("{b:02x}")).collect();
    serde_json::to_vec(&serde_json::json!({
        "key_id": key.id().as_str(), "signature": hex, "body": body
    }))
    .expect("envelope serialises")
}

/// A small valid bundle built by the real builder: the first fixture contract, a
/// classification task, one self-test sample, an incompressible extra file so the payload
/// spans several 256-byte chunks.
pub fn small_bundle(key: &SigningKey) -> outpost_protocol::bundle::BuiltBundle {
    use outpost_protocol::bundle::BundleBuilder;
    use outpost_protocol::manifest::{Lineage, ModelRef, SelfTestSample};
    use outpost_protocol::tensor::{Tensor, TensorData};

    let mut contract = contracts().remove(0);
    contract.task = serde_json::from_value(serde_json::json!({
        "kind": "classification", "output": "probabilities",
        "labels": ["normal", "imbalance", "bearing_fault"]
    }))
    .expect("fixture task parses");
    let mut x = 0x9e37_79b9_u32;
    let noise: Vec<u8> = (0..1500)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 17;
            x ^= x << 5;
            x as u8
        })
        .collect();
    let sample = SelfTestSample {
        inputs: vec![
            Tensor::new("features", vec![1, 16], TensorData::Fp32(vec![0.5; 16]))
                .expect("fixture tensor"),
        ],
        outputs: vec![
            Tensor::new(
                "probabilities",
                vec![1, 3],
                TensorData::Fp32(vec![0.8, 0.15, 0.05]),
            )
            .expect("fixture tensor"),
        ],
        tolerance: 1e-4,
    };
    BundleBuilder::new(
        ModelRef {
            name: "vibration-anomaly".into(),
            version: 3,
        },
        b"not really onnx: bundles do not parse their model".to_vec(),
        contract,
        Lineage {
            created_by: "fuzz-seeds".into(),
            created_at: NOW,
            reason: "seed corpus".into(),
            ..Default::default()
        },
    )
    .self_test([sample])
    .file("extra.bin", noise)
    .chunk_size(256)
    .build(key)
    .expect("fixture bundle builds")
}
