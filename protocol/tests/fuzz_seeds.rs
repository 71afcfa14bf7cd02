//! The fuzz targets' seed corpora (`fuzz/seeds/TARGET/NAME`), made with the real encoders.
//!
//! `OUTPOST_WRITE_FUZZ_SEEDS=1 cargo test -p outpost-protocol --test fuzz_seeds` rewrites
//! them. Without it, the test checks that every seed this file makes is committed and still
//! decodes with today's decoders, so a format change cannot silently leave the fuzzers
//! starting from inputs that no longer get past the first check.

#[path = "../../fuzz/src/fixture.rs"]
mod fixture;

use std::path::{Path, PathBuf};

use outpost_protocol::Limits;
use outpost_protocol::bundle::{Verifier, parse_head};
use outpost_protocol::device_auth;
use outpost_protocol::directive::{self, Directive, DirectiveContext, ModelTarget};
use outpost_protocol::manifest::{Manifest, ModelRef};
use outpost_protocol::oip::parse_infer_request;
use outpost_protocol::serve::{ServedBundle, error_frame};
use outpost_protocol::tensor::{DataType, Tensor, TensorData};
use outpost_protocol::uplink::{Record, UplinkBatch};
use outpost_protocol::wire::{
    BatchAck, BudgetState, ChunkFrame, ChunkRequest, Event, EventKind, Health, InstalledModel,
    ModelState, Presence, ReportedState, UpdatePhase,
};

/// One seed: its target, file name and bytes, and whether today's decoder accepts it.
struct Seed {
    target: &'static str,
    name: &'static str,
    bytes: Vec<u8>,
}

fn seed(target: &'static str, name: &'static str, bytes: Vec<u8>) -> Seed {
    Seed {
        target,
        name,
        bytes,
    }
}

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

fn directive(sequence: u64) -> Directive {
    Directive {
        format: directive::DIRECTIVE_FORMAT,
        device_id: fixture::DEVICE.into(),
        sequence,
        issued_at: fixture::NOW - 60,
        expires_at: fixture::NOW + 7 * 86_400,
        models: vec![ModelTarget {
            name: "vibration-anomaly".into(),
            digest: outpost_protocol::Digest::of(b"bundle"),
            version: 3,
            head_size: 2310,
            size: 7579,
            memory_bytes: Some(4_202_496),
            deployment_id: "dep-7".into(),
        }],
        trust: None,
    }
}

fn state() -> ReportedState {
    let installed = |v: u32| InstalledModel {
        bundle: outpost_protocol::Digest::of(&v.to_le_bytes()),
        model: ModelRef {
            name: "vibration-anomaly".into(),
            version: v,
        },
    };
    ReportedState {
        device_id: fixture::DEVICE.into(),
        agent_version: "0.1.0".into(),
        at: fixture::NOW,
        directive_sequence: Some(fixture::LAST_SEQUENCE),
        directive_rejected: None,
        models: vec![ModelState {
            name: "vibration-anomaly".into(),
            phase: UpdatePhase::Downloading,
            active: Some(installed(2)),
            previous: Some(installed(1)),
            target: Some(installed(3)),
            deployment_id: Some("dep-7".into()),
            sequence: Some(6),
            chunks_done: 3,
            chunks_total: 9,
            health: Health::Ok,
            last_error: None,
        }],
        health: Health::Ok,
        last_error: None,
        budget: BudgetState {
            memory_budget: Some(64 << 20),
            memory_used: 4_202_496,
            disk_budget: None,
            disk_used: 15_158,
        },
        tags: [("site".to_owned(), "plant-a".to_owned())].into(),
        trusted_keys: Vec::new(),
    }
}

fn batch(stream: &str, first: u64, bodies: &[serde_json::Value]) -> Vec<u8> {
    UplinkBatch {
        stream: stream.into(),
        batch_id: first,
        records: bodies
            .iter()
            .enumerate()
            .map(|(i, b)| Record {
                seq: first + i as u64,
                ts_ms: fixture::NOW * 1000 + i as u64,
                body: serde_json::to_vec(b).unwrap(),
            })
            .collect(),
    }
    .encode(3)
    .unwrap()
}

fn seeds() -> Vec<Seed> {
    let key = fixture::signing_key();
    let bundle = fixture::small_bundle(&key);
    let mut v = vec![
        seed("bundle_head", "bundle", bundle.bytes.clone()),
        seed(
            "bundle_head",
            "head",
            bundle.bytes[..bundle.head_len].to_vec(),
        ),
    ];
    let manifest = parse_head(&bundle.bytes, &Limits::default())
        .unwrap()
        .0
        .manifest;
    let payload = &bundle.bytes[bundle.head_len..];
    v.push(seed(
        "bundle_manifest",
        "manifest",
        fixture::pair(manifest, payload),
    ));

    let served = ServedBundle::new(bundle.bytes.clone()).unwrap();
    let req = ChunkRequest {
        bundle: bundle.digest,
        head: vec![0],
        chunks: vec![0, served.chunk_count() - 1],
    };
    for (name, f) in ["head_piece", "first_chunk", "last_chunk"]
        .into_iter()
        .zip(served.respond(&req))
    {
        v.push(seed("chunk_frame", name, f.encode()));
    }
    v.push(seed(
        "chunk_frame",
        "error",
        error_frame(bundle.digest, 7, "rate limited").encode(),
    ));
    v.push(seed("chunk_request", "mixed", req.encode()));
    v.push(seed(
        "chunk_request",
        "window",
        ChunkRequest {
            bundle: bundle.digest,
            head: vec![],
            chunks: (0..8).collect(),
        }
        .encode(),
    ));

    let mut signed = vec![0];
    signed.extend(directive(fixture::LAST_SEQUENCE + 1).sign(&key));
    v.push(seed("directive", "signed", signed));
    let mut body = vec![1];
    body.extend(serde_json::to_vec(&directive(fixture::LAST_SEQUENCE + 2)).unwrap());
    v.push(seed("directive", "body", body));
    // A key rotation under way: the next key to trust and a retired key to drop.
    let mut rotation = vec![1];
    let mut d = directive(fixture::LAST_SEQUENCE + 3);
    d.trust = Some(outpost_protocol::rotation::TrustUpdate {
        add: vec![outpost_protocol::rotation::TrustedKey::of(
            &outpost_protocol::PublicKey::from_bytes([7; 32]),
        )],
        remove: vec![
            outpost_protocol::PublicKey::from_bytes([9; 32])
                .id()
                .clone(),
        ],
    });
    rotation.extend(serde_json::to_vec(&d).unwrap());
    v.push(seed("directive", "rotation", rotation));

    let telemetry = serde_json::json!({"kind": "inference",
        "model": {"name": "vibration-anomaly", "version": 3},
        "requests": 120, "errors": 0, "p99_us": 410, "labels": {"normal": 118, "imbalance": 2}});
    let capture = serde_json::json!({"ts_ms": 1, "model": {"name": "vibration-anomaly", "version": 3},
        "bundle": "00", "reason": "anomaly", "source": "api",
        "inputs": [{"name": "features", "datatype": "FP32", "shape": [1, 2], "data": [0.31, 0.2]}],
        "outputs": [{"name": "probabilities", "datatype": "FP32", "shape": [1, 3], "data": [0.05, 0.93, 0.02]}],
        "label": "imbalance", "confidence": 0.93});
    let event = serde_json::json!({"kind": "drift_detected", "message": "rms_x drifted"});
    v.push(seed(
        "uplink_batch",
        "telemetry",
        batch("telemetry", 1200, &[telemetry.clone(), telemetry]),
    ));
    v.push(seed(
        "uplink_batch",
        "captures",
        batch("captures", 7, &[capture]),
    ));
    v.push(seed(
        "uplink_batch",
        "events",
        batch("events", 42, &[event]),
    ));

    v.push(seed("reported_state", "state", state().encode()));
    v.push(seed(
        "reported_state",
        "presence",
        Presence {
            online: true,
            since: Some(fixture::NOW),
        }
        .encode(),
    ));
    v.push(seed(
        "reported_state",
        "ack",
        BatchAck {
            stream: "telemetry".into(),
            batch_id: 1200,
            first_seq: 1200,
            last_seq: 1299,
            stored: 97,
            duplicates: 3,
        }
        .encode(),
    ));
    v.push(seed(
        "reported_state",
        "event",
        Event {
            id: "ev-1".into(),
            kind: EventKind::DriftDetected,
            at: fixture::NOW,
            message: "drift".into(),
            device_id: Some(fixture::DEVICE.into()),
            model: None,
            deployment_id: Some("dep-7".into()),
            details: serde_json::json!({"features": ["rms_x"], "psi": 0.4}),
        }
        .encode(),
    ));

    v.push(seed(
        "device_seal",
        "state",
        device_auth::seal(
            &key,
            fixture::DEVICE,
            fixture::SEAL_KIND,
            7 << 32 | 1,
            &state().encode(),
        ),
    ));

    let json = |v: serde_json::Value| serde_json::to_vec(&v).unwrap();
    for (name, dt, count, data) in [
        (
            "fp32_nested",
            DataType::Fp32,
            6,
            json(serde_json::json!([[1.5, -2.0, 3.25], [0, 1e-3, 7]])),
        ),
        (
            "int64",
            DataType::Int64,
            3,
            json(serde_json::json!([-9007199254740993i64, 0, 42])),
        ),
        (
            "bool",
            DataType::Bool,
            2,
            json(serde_json::json!([true, false])),
        ),
        (
            "bytes",
            DataType::Bytes,
            2,
            json(serde_json::json!(["abc", ""])),
        ),
        (
            "fp16",
            DataType::Fp16,
            2,
            json(serde_json::json!([0.5, 65504.0])),
        ),
    ] {
        v.push(seed(
            "tensor_json",
            name,
            fixture::tensor_input(dt, count, &data),
        ));
    }
    let tensor = Tensor::new(
        "probabilities",
        vec![1, 3],
        TensorData::Fp32(vec![0.05, 0.93, 0.02]),
    )
    .unwrap();
    v.push(seed(
        "tensor_json",
        "tensor",
        fixture::tensor_input(DataType::Fp32, 0, &serde_json::to_vec(&tensor).unwrap()),
    ));
    for (name, data) in [
        ("fp32", TensorData::Fp32(vec![1.5, f32::NAN, -0.0])),
        ("uint16", TensorData::Uint16(vec![1, 65535])),
        ("int8", TensorData::Int8(vec![-128, 127, 0])),
        (
            "fp16",
            TensorData::Fp16(vec![half::f16::from_f32(0.5).to_bits()]),
        ),
        ("bytes", TensorData::Bytes(vec![b"ab".to_vec(), vec![]])),
        ("bool", TensorData::Bool(vec![true, false, true])),
    ] {
        v.push(seed(
            "tensor_binary",
            name,
            fixture::tensor_input(data.datatype(), data.len(), &data.to_le_bytes()),
        ));
    }

    let request = serde_json::json!({"id": "r1", "inputs": [
        {"name": "features", "datatype": "FP32", "shape": [1, 4], "data": [[5.1, 3.5, 1.4, 0.2]]}],
        "outputs": [{"name": "output_label"}]});
    v.push(seed(
        "oip_request",
        "json",
        fixture::oip_input(None, &json(request)),
    ));
    let head = json(serde_json::json!({"inputs": [
        {"name": "X", "datatype": "FP32", "shape": [1, 2], "parameters": {"binary_data_size": 8}},
        {"name": "s", "datatype": "BYTES", "shape": [1], "parameters": {"binary_data_size": 7}}],
        "parameters": {"binary_data_output": true}}));
    let mut body = head.clone();
    body.extend(TensorData::Fp32(vec![1.0, -1.0]).to_le_bytes());
    body.extend(TensorData::Bytes(vec![b"abc".to_vec()]).to_le_bytes());
    v.push(seed(
        "oip_request",
        "binary",
        fixture::oip_input(Some(head.len() as u16), &body),
    ));

    for (name, dir) in [
        ("vibration_anomaly", "vibration-anomaly"),
        ("vibration_cnn", "vibration-cnn"),
        ("fragile", "vibration-anomaly-fragile"),
        ("swapped", "vibration-anomaly-swapped"),
    ] {
        let text = std::fs::read(root().join("models").join(dir).join("spec.toml")).unwrap();
        v.push(seed("spec_toml", name, text));
    }
    v
}

/// Whether today's decoder takes the seed past its parsing (the target-specific check).
fn accepted(s: &Seed) -> Result<(), String> {
    let limits = Limits::default();
    let trust = fixture::trust();
    let e = |e: &dyn std::fmt::Display| e.to_string();
    match s.target {
        "bundle_head" if s.name == "head" => {
            parse_head(&s.bytes, &limits).map(drop).map_err(|x| e(&x))
        }
        "bundle_head" => Verifier::new(&trust)
            .verify_bundle(&s.bytes)
            .map(drop)
            .map_err(|x| e(&x)),
        "bundle_manifest" => {
            let (m, _) = fixture::split_pair(&s.bytes);
            let m: Manifest = serde_json::from_slice(m).map_err(|x| e(&x))?;
            m.validate(&limits).map_err(|x| e(&x))
        }
        "chunk_frame" => ChunkFrame::decode(&s.bytes).map(drop).map_err(|x| e(&x)),
        "chunk_request" => ChunkRequest::decode(&s.bytes, &limits)
            .map(drop)
            .map_err(|x| e(&x)),
        "directive" => {
            let (sign, b) = fixture::split_directive(&s.bytes).ok_or("empty")?;
            let msg = if sign {
                fixture::sign_directive_body(
                    &fixture::signing_key(),
                    std::str::from_utf8(b).map_err(|x| e(&x))?,
                )
            } else {
                b.to_vec()
            };
            let ctx = DirectiveContext {
                device_id: fixture::DEVICE,
                last_sequence: Some(fixture::LAST_SEQUENCE),
                now: fixture::NOW,
                max_skew: 300,
            };
            directive::verify(&msg, &trust, ctx, &limits)
                .map(drop)
                .map_err(|x| e(&x))
        }
        "uplink_batch" => UplinkBatch::decode(&s.bytes, &limits)
            .map(drop)
            .map_err(|x| e(&x)),
        "reported_state" => {
            let ok = ReportedState::decode(&s.bytes, &limits).is_ok()
                || Presence::decode(&s.bytes, &limits).is_ok()
                || BatchAck::decode(&s.bytes, &limits).is_ok()
                || Event::decode(&s.bytes, &limits).is_ok();
            ok.then_some(())
                .ok_or_else(|| "no control message decoder takes it".into())
        }
        "device_seal" => device_auth::open(
            &s.bytes,
            fixture::DEVICE,
            fixture::SEAL_KIND,
            &trust,
            64 << 10,
        )
        .map(drop)
        .map_err(|x| e(&x)),
        "tensor_json" => {
            let (dt, n, b) = fixture::split_tensor(&s.bytes).ok_or("short")?;
            let v: serde_json::Value = serde_json::from_slice(b).map_err(|x| e(&x))?;
            if TensorData::from_json(dt, &v, n).is_ok()
                || serde_json::from_value::<Tensor>(v).is_ok()
            {
                Ok(())
            } else {
                Err("neither data nor a tensor".into())
            }
        }
        "tensor_binary" => {
            let (dt, n, b) = fixture::split_tensor(&s.bytes).ok_or("short")?;
            TensorData::from_le_bytes(dt, b, n)
                .map(drop)
                .map_err(|x| e(&x))
        }
        "oip_request" => {
            let (h, b) = fixture::split_oip(&s.bytes).ok_or("short")?;
            parse_infer_request(h.as_deref(), b)
                .map(drop)
                .map_err(|x| e(&x))
        }
        // Checked where specs are read (the inference crate's tests register these files).
        "spec_toml" => std::str::from_utf8(&s.bytes).map(drop).map_err(|x| e(&x)),
        t => Err(format!("no check for target {t}")),
    }
}

#[test]
fn seed_corpora_are_committed_and_still_decode() {
    let dir = root().join("fuzz").join("seeds");
    let write = std::env::var_os("OUTPOST_WRITE_FUZZ_SEEDS").is_some_and(|v| v == "1");
    let mut total = 0;
    for s in seeds() {
        accepted(&s).unwrap_or_else(|e| panic!("seed {}/{} is refused: {e}", s.target, s.name));
        let path = dir.join(s.target).join(s.name);
        if write {
            std::fs::create_dir_all(path.parent().unwrap()).unwrap();
            std::fs::write(&path, &s.bytes).unwrap();
        }
        let committed = std::fs::read(&path).unwrap_or_else(|e| {
            panic!(
                "{} missing ({e}); run with OUTPOST_WRITE_FUZZ_SEEDS=1",
                path.display()
            )
        });
        let c = Seed {
            bytes: committed,
            ..s
        };
        accepted(&c).unwrap_or_else(|e| {
            panic!(
                "committed seed {} no longer decodes ({e}); run with OUTPOST_WRITE_FUZZ_SEEDS=1",
                path.display()
            )
        });
        total += c.bytes.len();
    }
    // The corpora are committed: keep them small.
    assert!(total < 256 << 10, "seed corpora are {total} bytes");
}
