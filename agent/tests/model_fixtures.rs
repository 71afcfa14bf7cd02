//! The committed ONNX fixtures, run through tract, match onnxruntime's reference outputs.

use std::path::PathBuf;

use outpost_agent::inference::{InferenceError, Model};
use outpost_protocol::manifest::SelfTestSample;
use outpost_protocol::spec::{InputSpec, OutputSpec, ScoringSpec};
use serde::Deserialize;

#[derive(Deserialize)]
struct SpecToml {
    input: InputSpec,
    output: OutputSpec,
    #[serde(default)]
    self_test: Vec<SelfTestSample>,
}

#[derive(Deserialize)]
struct Reference {
    tolerance: f32,
    cases: Vec<Case>,
}

#[derive(Deserialize)]
struct Case {
    label: Option<String>,
    shape: Vec<usize>,
    input: Vec<f32>,
    output: Vec<f32>,
    #[serde(default)]
    raw_features: Vec<f32>,
}

fn models_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../models")
}

fn load(name: &str) -> (Model, SpecToml, Reference) {
    let dir = models_dir().join(name);
    let spec: SpecToml =
        toml::from_str(&std::fs::read_to_string(dir.join("spec.toml")).unwrap()).unwrap();
    let reference: Reference =
        serde_json::from_slice(&std::fs::read(dir.join("reference.json")).unwrap()).unwrap();
    let scoring = ScoringSpec {
        input: spec.input.clone(),
        output: spec.output.clone(),
        drift: None,
    };
    let model = Model::load(&std::fs::read(dir.join("model.onnx")).unwrap(), &scoring).unwrap();
    (model, spec, reference)
}

fn assert_close(got: &[f32], want: &[f32], tol: f32, what: &str) {
    assert_eq!(got.len(), want.len(), "{what}: length");
    for (i, (g, w)) in got.iter().zip(want).enumerate() {
        assert!(
            (g - w).abs() <= tol,
            "{what}: value {i}: tract {g} vs onnxruntime {w}"
        );
    }
}

#[test]
fn tract_matches_onnxruntime_on_both_fixtures() {
    for name in ["vibration-anomaly", "vibration-cnn"] {
        let (model, _, reference) = load(name);
        assert!(
            reference.cases.len() >= 4,
            "{name}: reference has too few cases"
        );
        for (i, c) in reference.cases.iter().enumerate() {
            let out = model.run_prepared(c.input.clone(), c.shape[0]).unwrap();
            assert_close(
                &out,
                &c.output,
                reference.tolerance,
                &format!("{name} case {i}"),
            );
        }
    }
}

#[test]
fn anomaly_model_classifies_reference_windows_through_its_spec() {
    let (model, spec, reference) = load("vibration-anomaly");
    let mut checked = 0;
    for c in reference.cases.iter().filter(|c| c.shape[0] == 1) {
        let p = model.predict(&c.raw_features).unwrap();
        assert_close(
            &p.probabilities,
            &c.output,
            1e-4,
            "spec-normalised prediction",
        );
        assert_eq!(Some(&p.label), c.label.as_ref());
        assert_eq!(p.anomaly, p.label != "normal");
        checked += 1;
    }
    assert_eq!(checked, 12);
    let report = model.self_test(&spec.self_test).unwrap();
    assert_eq!(report.samples, 6);
}

#[test]
fn batch_prediction_equals_single_predictions() {
    let (model, _, reference) = load("vibration-anomaly");
    let raws: Vec<Vec<f32>> = reference.cases[..5]
        .iter()
        .map(|c| c.raw_features.clone())
        .collect();
    let batch = model.predict_batch(&raws).unwrap();
    for (r, b) in raws.iter().zip(&batch) {
        let single = model.predict(r).unwrap();
        assert_close(
            &b.probabilities,
            &single.probabilities,
            1e-6,
            "batch vs single",
        );
    }
}

#[test]
fn bad_models_and_bad_inputs_are_errors_not_panics() {
    let (model, spec, _) = load("vibration-anomaly");
    let scoring = ScoringSpec {
        input: spec.input.clone(),
        output: spec.output.clone(),
        drift: None,
    };
    let onnx = std::fs::read(models_dir().join("vibration-anomaly/model.onnx")).unwrap();

    for cut in [0, 10, onnx.len() / 2, onnx.len() - 1] {
        let e = Model::load(&onnx[..cut], &scoring).unwrap_err();
        assert!(matches!(e, InferenceError::Load(_)), "cut {cut}: {e}");
    }
    let mut wrong_name = scoring.clone();
    wrong_name.input.name = "nope".into();
    let e = Model::load(&onnx, &wrong_name).unwrap_err();
    assert!(e.to_string().contains("\"features\""), "{e}");

    let mut wrong_shape = scoring.clone();
    wrong_shape.input.shape = vec![15];
    wrong_shape.input.features.pop();
    if let outpost_protocol::spec::Normalization::Zscore { mean, std } =
        &mut wrong_shape.input.normalization
    {
        mean.pop();
        std.pop();
    }
    assert!(matches!(
        Model::load(&onnx, &wrong_shape),
        Err(InferenceError::SpecMismatch(_))
    ));

    let mut nan = vec![0.5f32; 16];
    nan[3] = f32::NAN;
    let e = model.predict(&nan).unwrap_err();
    assert!(e.to_string().contains("peak_x"), "{e}");
    assert!(model.predict(&[1.0; 3]).is_err());
    assert!(matches!(
        model.predict_batch(&[]),
        Err(InferenceError::BatchSize(0))
    ));

    let mut bad = spec.self_test.clone();
    bad[0].expected[0] += 0.5;
    let e = model.self_test(&bad).unwrap_err();
    assert!(
        matches!(e, InferenceError::SelfTest { index: 0, .. }),
        "{e}"
    );
}
