//! The committed ONNX fixtures, loaded through contracts derived from their graphs, match
//! onnxruntime's reference outputs; bad requests are the caller's errors, never panics.

use std::path::PathBuf;

use outpost_inference::{Batching, InferenceError, Model, RequestError, contract_from_graph};
use outpost_protocol::contract::{
    ClassificationTask, Interpretation, ModelContract, Normalization, ScoreKind, Task,
};
use outpost_protocol::tensor::{DataType, Dim, Tensor, TensorData};
use serde::Deserialize;

fn models() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../models")
}

fn onnx(name: &str) -> Vec<u8> {
    std::fs::read(models().join(name).join("model.onnx")).unwrap()
}

#[derive(Deserialize)]
struct VibrationReference {
    tolerance: f64,
    cases: Vec<VibrationCase>,
}

#[derive(Deserialize)]
struct VibrationCase {
    label: Option<String>,
    shape: Vec<usize>,
    input: Vec<f32>,
    output: Vec<f32>,
    #[serde(default)]
    raw_features: Vec<f64>,
}

#[derive(Deserialize)]
struct SimpleReference {
    cases: Vec<SimpleCase>,
}

#[derive(Deserialize)]
struct SimpleCase {
    shape: Vec<usize>,
    input: Vec<f32>,
    output_shape: Vec<usize>,
    output: Vec<f32>,
}

fn read<T: for<'de> Deserialize<'de>>(name: &str) -> T {
    serde_json::from_slice(&std::fs::read(models().join(name).join("reference.json")).unwrap())
        .unwrap()
}

#[derive(Deserialize)]
struct SpecToml {
    input: SpecInput,
    output: SpecOutput,
}
#[derive(Deserialize)]
struct SpecInput {
    features: Vec<String>,
    normalization: Normalization,
}
#[derive(Deserialize)]
struct SpecOutput {
    labels: Vec<String>,
}

/// The vibration MLP's contract: from the graph, plus the spec file's features,
/// normalisation and labels (what registration does).
fn vibration() -> (Model, ModelContract) {
    let mut c = contract_from_graph(&onnx("vibration-anomaly")).unwrap();
    assert_eq!(c.inputs.len(), 1);
    assert_eq!(c.inputs[0].name, "features");
    assert_eq!(c.inputs[0].datatype, DataType::Fp32);
    assert_eq!(c.inputs[0].shape, vec![Dim::any(), Dim::Fixed(16)]);
    assert_eq!(c.outputs[0].name, "probabilities");
    assert_eq!(c.outputs[0].shape, vec![Dim::any(), Dim::Fixed(3)]);
    let spec: SpecToml = toml::from_str(
        &std::fs::read_to_string(models().join("vibration-anomaly/spec.toml")).unwrap(),
    )
    .unwrap();
    c.inputs[0].features = spec.input.features;
    c.inputs[0].normalization = spec.input.normalization;
    c.task = Task::Classification(ClassificationTask {
        label_output: None,
        output: "probabilities".into(),
        scores: ScoreKind::Probabilities,
        labels: spec.output.labels,
        anomaly_labels: vec!["imbalance".into(), "bearing_fault".into()],
        min_confidence: Some(0.6),
    });
    (Model::load(&onnx("vibration-anomaly"), &c).unwrap(), c)
}

fn fp32(name: &str, shape: Vec<usize>, v: Vec<f32>) -> Tensor {
    Tensor::new(name, shape, TensorData::Fp32(v)).unwrap()
}

fn assert_close(got: &Tensor, want: &[f32], tol: f64, what: &str) {
    let TensorData::Fp32(g) = &got.data else {
        panic!("{what}: not FP32")
    };
    assert_eq!(g.len(), want.len(), "{what}: length");
    for (i, (g, w)) in g.iter().zip(want).enumerate() {
        assert!(
            f64::from((g - w).abs()) <= tol,
            "{what}: value {i}: tract {g} vs onnxruntime {w}"
        );
    }
}

#[test]
fn vibration_mlp_matches_onnxruntime_raw_and_through_the_contract() {
    let reference: VibrationReference = read("vibration-anomaly");
    let (_, mut raw) = vibration();
    // Raw tensors: the reference inputs are already normalised.
    raw.inputs[0].normalization = Normalization::None;
    let plain = Model::load(&onnx("vibration-anomaly"), &raw).unwrap();
    assert_eq!(plain.batching(), Batching::Symbolic);
    for (i, c) in reference.cases.iter().enumerate() {
        let out = plain
            .infer(&[fp32("features", c.shape.clone(), c.input.clone())], None)
            .unwrap();
        assert_eq!(out[0].shape, vec![c.shape[0], 3]);
        assert_close(
            &out[0],
            &c.output,
            reference.tolerance,
            &format!("case {i}"),
        );
    }
    let (model, _) = vibration();
    let mut checked = 0;
    for c in reference.cases.iter().filter(|c| c.shape[0] == 1) {
        let Interpretation::Classification(p) = model.predict(&c.raw_features).unwrap() else {
            panic!("classification expected")
        };
        for (g, w) in p.probabilities.iter().zip(&c.output) {
            assert!((g - w).abs() <= 1e-4, "{g} vs {w}");
        }
        assert_eq!(Some(&p.label), c.label.as_ref());
        assert_eq!(p.anomaly, p.label != "normal");
        checked += 1;
    }
    assert_eq!(checked, 12);
}

#[test]
fn batch_rows_equal_single_rows() {
    let reference: VibrationReference = read("vibration-anomaly");
    let (model, _) = vibration();
    let rows: Vec<Vec<f64>> = reference.cases[..5]
        .iter()
        .map(|c| c.raw_features.clone())
        .collect();
    let batch = model.predict_rows(&rows).unwrap();
    for (r, b) in rows.iter().zip(&batch) {
        assert_eq!(&model.predict(r).unwrap(), b);
    }
}

#[test]
fn cnn_with_dynamic_height_and_width_matches_onnxruntime() {
    let c = contract_from_graph(&onnx("cnn-dynamic")).unwrap();
    assert_eq!(
        c.inputs[0].shape,
        vec![
            Dim::any(),
            Dim::Fixed(3),
            Dim::Var(Some("height".into())),
            Dim::Var(Some("width".into()))
        ]
    );
    let model = Model::load(&onnx("cnn-dynamic"), &c).unwrap();
    assert_eq!(model.batching(), Batching::Symbolic);
    let reference: SimpleReference = read("cnn-dynamic");
    for (i, case) in reference.cases.iter().enumerate() {
        let out = model
            .infer(
                &[fp32("image", case.shape.clone(), case.input.clone())],
                None,
            )
            .unwrap();
        assert_eq!(out[0].shape, case.output_shape);
        assert_close(&out[0], &case.output, 1e-4, &format!("cnn case {i}"));
    }
}

#[test]
fn a_graph_with_a_hard_coded_batch_is_served_by_splitting() {
    let c = contract_from_graph(&onnx("fixed-batch")).unwrap();
    assert!(c.batched(), "the declared input has a symbolic batch");
    let model = Model::load(&onnx("fixed-batch"), &c).unwrap();
    assert_eq!(model.batching(), Batching::Fixed(1));
    let reference: SimpleReference = read("fixed-batch");
    // All four samples in one request: split into runs of one, answered in order.
    let input: Vec<f32> = reference
        .cases
        .iter()
        .flat_map(|c| c.input.clone())
        .collect();
    let want: Vec<f32> = reference
        .cases
        .iter()
        .flat_map(|c| c.output.clone())
        .collect();
    let out = model
        .infer(&[fp32("features", vec![4, 16], input)], None)
        .unwrap();
    assert_eq!(out[0].shape, vec![4, 3]);
    assert_close(&out[0], &want, 1e-5, "split batch");
}

#[test]
fn bad_requests_are_the_callers_errors() {
    let (model, _) = vibration();
    let ok = fp32("features", vec![1, 16], vec![0.1; 16]);
    let err = |inputs: Vec<Tensor>| model.infer(&inputs, None).unwrap_err();
    let e = err(vec![]);
    assert!(
        matches!(&e, InferenceError::Request(RequestError::MissingInput(n, _)) if n == "features"),
        "{e}"
    );
    let e = err(vec![ok.clone(), fp32("other", vec![1], vec![0.0])]);
    assert!(
        matches!(e, InferenceError::Request(RequestError::UnknownInput(..))),
        "{e}"
    );
    let e = err(vec![ok.clone(), ok.clone()]);
    assert!(
        matches!(e, InferenceError::Request(RequestError::DuplicateInput(_))),
        "{e}"
    );
    let e = err(vec![
        Tensor::new("features", vec![1, 16], TensorData::Fp64(vec![0.1; 16])).unwrap(),
    ]);
    assert!(
        matches!(e, InferenceError::Request(RequestError::DataType { .. })),
        "{e}"
    );
    let e = err(vec![fp32("features", vec![1, 15], vec![0.1; 15])]);
    assert!(e.to_string().contains("[-1, 16]"), "{e}");
    let mut nan = vec![0.1f32; 16];
    nan[3] = f32::NAN;
    let e = err(vec![fp32("features", vec![1, 16], nan)]);
    assert!(
        matches!(
            e,
            InferenceError::Request(RequestError::NotFinite { index: 3, .. })
        ),
        "{e}"
    );
    let e = err(vec![fp32("features", vec![0, 16], vec![])]);
    assert!(
        matches!(e, InferenceError::Request(RequestError::BatchSize(0))),
        "{e}"
    );
    let e = model
        .infer(std::slice::from_ref(&ok), Some(&["nope".to_string()]))
        .unwrap_err();
    assert!(
        matches!(e, InferenceError::Request(RequestError::UnknownOutput(..))),
        "{e}"
    );
    // Finite but extreme inputs drive the outputs non-finite: the caller's error.
    let e = err(vec![fp32("features", vec![1, 16], vec![3.4e38; 16])]);
    assert!(
        matches!(e, InferenceError::Request(RequestError::OutOfDomain { .. })),
        "extreme inputs: {e}"
    );
    assert!(e.is_client_error() && !e.is_model_failure());
    // A requested subset of outputs.
    let out = model
        .infer(&[ok], Some(&["probabilities".to_string()]))
        .unwrap();
    assert_eq!(out.len(), 1);
}

#[test]
fn bad_models_are_errors_not_panics() {
    let (_, c) = vibration();
    let bytes = onnx("vibration-anomaly");
    for cut in [0, 10, bytes.len() / 2, bytes.len() - 1] {
        let e = Model::load(&bytes[..cut], &c).unwrap_err();
        assert!(matches!(e, InferenceError::Load(_)), "cut {cut}: {e}");
    }
    let mut wrong_name = c.clone();
    wrong_name.inputs[0].name = "nope".into();
    let e = Model::load(&bytes, &wrong_name).unwrap_err();
    assert!(matches!(e, InferenceError::Mismatch(_)), "{e}");
    assert!(e.to_string().contains("\"features\""), "{e}");
    let mut wrong_output = c.clone();
    wrong_output.outputs[0].name = "scores".into();
    if let Task::Classification(t) = &mut wrong_output.task {
        t.output = "scores".into();
    }
    let e = Model::load(&bytes, &wrong_output).unwrap_err();
    assert!(e.to_string().contains("scores"), "{e}");
    assert!(contract_from_graph(b"not an onnx file").is_err());
}

#[test]
fn synthesized_self_tests_pass_and_catch_a_different_model() {
    let (model, _) = vibration();
    let samples = outpost_inference::selftest::synthesize(&model, &[], 4, 7).unwrap();
    assert_eq!(samples.len(), 4);
    let r = model.self_test(&samples).unwrap();
    assert_eq!(r.samples, 4);
    // The same samples against another model fail.
    let other = contract_from_graph(&onnx("fixed-batch")).unwrap();
    let other = Model::load(&onnx("fixed-batch"), &other).unwrap();
    let e = other.self_test(&samples).unwrap_err();
    assert!(
        matches!(e, InferenceError::SelfTest { index: 0, .. }),
        "{e}"
    );
    // A CNN with variable height and width gets images of a size it runs.
    let cnn = contract_from_graph(&onnx("cnn-dynamic")).unwrap();
    let cnn = Model::load(&onnx("cnn-dynamic"), &cnn).unwrap();
    let s = outpost_inference::selftest::synthesize(&cnn, &[], 2, 7).unwrap();
    assert_eq!(s[0].inputs[0].shape, vec![1, 3, 32, 32]);
    cnn.self_test(&s).unwrap();
}
