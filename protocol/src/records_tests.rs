use proptest::prelude::*;

use super::*;
use crate::tensor::TensorData;

fn model() -> impl Strategy<Value = ModelRef> {
    ("[a-z][a-z0-9-]{0,12}", 1u32..100).prop_map(|(name, version)| ModelRef { name, version })
}

fn counts() -> impl Strategy<Value = BTreeMap<String, u64>> {
    proptest::collection::btree_map("[a-z_]{1,8}", 0u64..1_000_000, 0..4)
}

fn drift() -> impl Strategy<Value = DriftSummary> {
    (
        any::<bool>(),
        0u64..1 << 40,
        0.0f64..10.0,
        0.0f64..1.0,
        proptest::option::of(0.0f64..1.0),
        proptest::collection::vec(
            (
                "[a-z]{1,6}",
                "[a-z_]{1,8}",
                0.0f64..5.0,
                0.0f64..1.0,
                0.0f64..0.1,
            ),
            0..5,
        ),
        0u64..1 << 50,
    )
        .prop_map(
            |(drifting, samples, psi_max, ks_max, output_shift, top, since_ms)| DriftSummary {
                drifting,
                samples,
                psi_max,
                ks_max,
                output_shift,
                top: top
                    .into_iter()
                    .map(|(class, feature, psi, ks, ks_error)| FeatureDrift {
                        class,
                        feature,
                        psi,
                        ks,
                        ks_error,
                    })
                    .collect(),
                reasons: vec!["psi".into()],
                since_ms,
                window_start_ms: since_ms / 2,
            },
        )
}

fn inference() -> impl Strategy<Value = Telemetry> {
    (
        model(),
        0u64..1 << 50,
        (0u64..1 << 30, 0u64..1 << 30, 0u64..1 << 20, 0u64..1 << 20),
        proptest::collection::vec(0u64..1000, 0..12),
        counts(),
        proptest::option::of(drift()),
    )
        .prop_map(
            |(model, ts_ms, (requests, samples, errors, rejected), lat, labels, drift)| {
                let mut bounds: Vec<Option<u64>> =
                    (0..lat.len() as u64).map(|i| Some(1 << i)).collect();
                if let Some(last) = bounds.last_mut() {
                    *last = None;
                }
                Telemetry::Inference(InferenceReport {
                    ts_ms,
                    window_s: 1.5,
                    model,
                    bundle: Digest::of(&ts_ms.to_le_bytes()),
                    requests,
                    samples,
                    errors,
                    rejected,
                    latency_sum_us: lat.iter().sum(),
                    latency_buckets_us: bounds,
                    latency_counts: lat,
                    p50_us: Some(7),
                    p99_us: None,
                    labels,
                    drift,
                })
            },
        )
}

fn agent_report() -> impl Strategy<Value = Telemetry> {
    (
        0u64..1 << 50,
        counts(),
        counts(),
        any::<bool>(),
        proptest::option::of(0u64..9),
    )
        .prop_map(|(ts_ms, backlog, evicted, connected, windows)| {
            Telemetry::Agent(AgentReport {
                ts_ms,
                store_bytes: 10,
                store_budget: 20,
                backlog,
                evicted,
                connected,
                pipeline_windows: windows,
                ..AgentReport::default()
            })
        })
}

proptest! {
    #[test]
    fn telemetry_round_trips(t in prop_oneof![inference(), agent_report()]) {
        let back: Telemetry = decode(&encode(&t)).unwrap();
        prop_assert_eq!(back, t);
    }

    #[test]
    fn captures_round_trip(m in model(), x in proptest::collection::vec(-1e6f32..1e6, 1..20), label in "[a-z]{0,8}") {
        let input = Tensor::new("features", vec![1, x.len()], TensorData::Fp32(x.clone())).unwrap();
        let c = CaptureRecord {
            ts_ms: 5,
            model: m,
            bundle: Digest::of(b"b"),
            reason: CaptureReason::LowConfidence,
            source: Source::Api,
            inputs: vec![input.clone()],
            outputs: vec![input],
            interpretation: Some(Interpretation::AnomalyScore { score: 0.5, anomaly: false }),
            features: Some(x.iter().enumerate().map(|(i, v)| (format!("f{i}"), f64::from(*v))).collect()),
            label,
            confidence: Some(0.25),
        };
        let back: CaptureRecord = decode(&encode(&c)).unwrap();
        prop_assert_eq!(back, c);
    }

    #[test]
    fn events_round_trip(k in prop_oneof![
        Just(AgentEventKind::StoreReset), Just(AgentEventKind::UpdateFailed),
        Just(AgentEventKind::RolledBack), Just(AgentEventKind::ModelRemoved),
        Just(AgentEventKind::DirectiveRejected), Just(AgentEventKind::DriftDetected),
        Just(AgentEventKind::DriftCleared)], message in ".{0,40}") {
        let e = EventRecord { ts_ms: 1, kind: k.clone(), message, details: serde_json::json!({"model": {"name": "m", "version": 2}}) };
        let back: EventRecord = decode(&encode(&e)).unwrap();
        prop_assert_eq!(back.model(), Some(ModelRef { name: "m".into(), version: 2 }));
        prop_assert_eq!(serde_json::to_value(&k).unwrap(), serde_json::Value::from(k.as_str()));
        prop_assert_eq!(back, e);
    }

    #[test]
    fn arbitrary_bytes_never_panic(b in proptest::collection::vec(any::<u8>(), 0..256)) {
        let _ = decode::<Telemetry>(&b);
        let _ = decode::<CaptureRecord>(&b);
        let _ = decode::<EventRecord>(&b);
    }
}

#[test]
fn newer_agents_decode_forward_compatibly() {
    let t: Telemetry = decode(br#"{"kind":"gpu","ts_ms":1,"util":0.5}"#).unwrap();
    assert_eq!(t, Telemetry::Unknown);
    let e: EventRecord =
        decode(br#"{"ts_ms":1,"kind":"battery_low","message":"12%","extra":true}"#).unwrap();
    assert_eq!(e.kind, AgentEventKind::Other);
    let a: Telemetry = decode(
        br#"{"kind":"agent","ts_ms":1,"store_bytes":1,"store_budget":2,"backlog":{},"evicted":{},
            "rejected":{},"connected":true,"reconnects":0,"pipeline_windows":null,"sensor_errors":null,
            "inference_errors":null,"captures":0,"captures_skipped_by_cap":0,"new_counter":9}"#,
    )
    .unwrap();
    assert!(matches!(a, Telemetry::Agent(_)));
}

#[test]
fn oversized_and_malformed_bodies_are_errors() {
    let big = vec![b' '; MAX_RECORD_BODY + 1];
    assert!(matches!(
        decode::<Telemetry>(&big),
        Err(RecordError::TooLarge { .. })
    ));
    assert!(matches!(
        decode::<EventRecord>(b"{\"ts_ms\":\"x\"}"),
        Err(RecordError::Malformed(_))
    ));
}
