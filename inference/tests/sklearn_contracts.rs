//! Every scikit-learn fixture, registered the way a user would — no spec at all — gets a
//! contract from its graph, loads through it, serves named OIP tensors matching
//! onnxruntime, is classified as what it is (classifiers with their labels), and passes
//! self-test samples synthesised for it.

mod common;

use common::{Reference, fixture_names, fixtures_dir, tolerance};
use outpost_inference::{Model, contract_from_graph, selftest};
use outpost_protocol::contract::{Interpretation, Task};
use outpost_protocol::tensor::{DataType, Tensor, TensorData};
use serde_json::Value;

/// Models whose outputs are NaN on inputs far from their training data (Gaussian naive
/// Bayes: every class likelihood underflows to 0, and 0/0 is NaN, in onnxruntime too).
const NEEDS_TRAINING_ROWS: &[&str] = &["gaussian_nb"];

/// Binary classifiers whose exported "probabilities" are one decision score per sample
/// (not one score per label): served as raw tensors; the `label` output names the class.
const ONE_SCORE: &[&str] = &["linear_svc_binary"];

fn shape_of(v: &Value) -> Vec<usize> {
    v["shape"]
        .as_array()
        .expect("shape")
        .iter()
        .map(|d| d.as_u64().unwrap() as usize)
        .collect()
}

fn inputs(reference: &Reference, case: &Value) -> Vec<Tensor> {
    reference
        .inputs()
        .iter()
        .map(|input| {
            let name = input["name"].as_str().unwrap();
            let v = &case["inputs"][name];
            let data = v["data"].as_array().expect("data");
            let d = match input["dtype"].as_str().unwrap() {
                "float32" => TensorData::Fp32(
                    data.iter()
                        .map(|x| x.as_f64().map(|f| f as f32).unwrap_or(f32::NAN))
                        .collect(),
                ),
                "int64" => TensorData::Int64(data.iter().map(|x| x.as_i64().unwrap()).collect()),
                other => panic!("unexpected input dtype {other}"),
            };
            Tensor::new(name, shape_of(v), d).unwrap()
        })
        .collect()
}

fn compare(fixture: &str, what: &str, got: &Tensor, want: &Value) {
    assert_eq!(got.shape, shape_of(want), "{what}: shape");
    let data = want["data"].as_array().expect("data");
    match &got.data {
        TensorData::Fp32(g) => {
            for (i, (g, w)) in g.iter().zip(data).enumerate() {
                let w = w.as_f64().expect("float") as f32;
                let tol = tolerance(fixture, w);
                assert!((g - w).abs() <= tol, "{what}[{i}]: {g} vs onnxruntime {w}");
            }
        }
        TensorData::Int64(g) => {
            let w: Vec<i64> = data.iter().map(|w| w.as_i64().unwrap()).collect();
            assert_eq!(g, &w, "{what}");
        }
        TensorData::Bytes(g) => {
            let w: Vec<Vec<u8>> = data
                .iter()
                .map(|w| w.as_str().unwrap().as_bytes().to_vec())
                .collect();
            assert_eq!(g, &w, "{what}");
        }
        other => panic!("{what}: unexpected output {:?}", other.datatype()),
    }
}

fn check(name: &str) {
    let reference = Reference::load(name);
    let onnx = std::fs::read(fixtures_dir().join(name).join("model.onnx")).unwrap();
    let c = contract_from_graph(&onnx).unwrap_or_else(|e| panic!("{name}: contract: {e}"));
    assert!(c.batched(), "{name}: the batch dimension is variable");
    for i in reference.inputs() {
        let spec = c
            .input(i["name"].as_str().unwrap())
            .expect("declared input");
        let dt = match i["dtype"].as_str().unwrap() {
            "int64" => DataType::Int64,
            _ => DataType::Fp32,
        };
        assert_eq!(spec.datatype, dt, "{name}: input datatype");
    }
    match (reference.class_labels(), &c.task) {
        (Some(labels), Task::Classification(t)) => assert_eq!(t.labels, labels, "{name}: labels"),
        (Some(_), Task::Raw) if ONE_SCORE.contains(&name) => {}
        (Some(_), t) => panic!("{name}: a classifier served as {}", t.name()),
        (None, t) => assert_eq!(t, &Task::Raw, "{name}: not a classifier"),
    }
    let model = Model::load(&onnx, &c).unwrap_or_else(|e| panic!("{name}: load: {e}"));
    for (k, case) in reference.cases().iter().enumerate() {
        let out = model
            .infer(&inputs(&reference, case), None)
            .unwrap_or_else(|e| panic!("{name}: case {k}: {e}"));
        for spec in reference.outputs() {
            let oname = spec["name"].as_str().unwrap();
            let got = out
                .iter()
                .find(|t| t.name == oname)
                .unwrap_or_else(|| panic!("{name}: no output {oname}"));
            compare(
                name,
                &format!("{name}: case {k}: {oname}"),
                got,
                &case["outputs"][oname],
            );
        }
        let answers = model.interpret(&out).unwrap();
        if matches!(c.task, Task::Classification(_)) {
            assert_eq!(answers.len(), out[0].rows(), "{name}: one answer per row");
            assert!(
                answers
                    .iter()
                    .all(|a| matches!(a, Interpretation::Classification(_)))
            );
        }
    }
    // Generated inputs (zeros, ones, small random values) suit most models; a model whose
    // outputs are NaN away from its training data needs the training sample's rows.
    let samples = match selftest::synthesize(&model, &[], 3, 1) {
        Ok(s) => s,
        Err(e) => {
            assert!(NEEDS_TRAINING_ROWS.contains(&name), "{name}: {e}");
            let rows: Vec<Vec<f64>> = reference
                .cases()
                .iter()
                .map(|case| inputs(&reference, case)[0].data.to_f64())
                .filter(|r| r.len() == c.inputs[0].tensor().sample_len().unwrap_or(0))
                .collect();
            selftest::synthesize(&model, &rows, 3, 1).unwrap_or_else(|e| panic!("{name}: {e}"))
        }
    };
    model.self_test(&samples).unwrap();
}

#[test]
fn every_fixture_serves_through_its_derived_contract() {
    let names = fixture_names();
    assert!(names.len() >= 30, "{} fixtures", names.len());
    for n in names {
        check(&n);
    }
}
