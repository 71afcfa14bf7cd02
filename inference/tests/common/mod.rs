//! Shared helpers for the scikit-learn fixture tests (`models/sklearn/<name>/`).
//!
//! A fixture is `model.onnx` (exactly what skl2onnx wrote with default options) and
//! `reference.json` (inputs and onnxruntime's outputs; see `models/generate_sklearn.py`).

#![allow(dead_code)]

use std::fs;
use std::path::PathBuf;

use serde_json::Value;
use tract_onnx::prelude::*;

/// Tolerance for float outputs: 1e-5 absolute for values up to 1 in magnitude
/// (probabilities, scores), 1e-5 relative beyond (regression targets in the hundreds,
/// where one float32 ulp is already 1.5e-5 and onnxruntime's own single-row and batched
/// results differ by that much).
pub const ABS_TOL: f32 = 1e-5;

/// Fixtures compared with a wider absolute tolerance, and why.
pub const WIDER_TOLERANCE: &[(&str, f32, &str)] = &[(
    "one_class_svm",
    2e-5,
    "scores = sum(alpha * K) - rho with rho = 44.5: onnxruntime's float32 SGEMM loses ~1e-5 \
     to cancellation and returns values 1.1e-5 apart for the same row in a batch of 1 and \
     of 24; Outpost accumulates in double",
)];

/// The tolerance for one reference value of a fixture.
pub fn tolerance(fixture: &str, want: f32) -> f32 {
    let base = ABS_TOL * want.abs().max(1.0);
    match WIDER_TOLERANCE.iter().find(|w| w.0 == fixture) {
        Some(w) => base.max(w.1),
        None => base,
    }
}

/// `models/sklearn/`.
pub fn fixtures_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../models/sklearn")
}

/// The fixture names (sub-directories with a model.onnx).
pub fn fixture_names() -> Vec<String> {
    let mut names: Vec<String> = fs::read_dir(fixtures_dir())
        .expect("models/sklearn exists")
        .filter_map(|e| e.ok())
        .filter(|e| e.path().join("model.onnx").is_file())
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    names
}

/// Parsed `reference.json`.
pub struct Reference {
    pub json: Value,
}

impl Reference {
    pub fn load(name: &str) -> Reference {
        let path = fixtures_dir().join(name).join("reference.json");
        let text = fs::read_to_string(&path).unwrap_or_else(|e| panic!("{path:?}: {e}"));
        Reference {
            json: serde_json::from_str(&text).expect("reference.json parses"),
        }
    }

    pub fn inputs(&self) -> &Vec<Value> {
        self.json["inputs"].as_array().expect("inputs")
    }

    pub fn outputs(&self) -> &Vec<Value> {
        self.json["outputs"].as_array().expect("outputs")
    }

    pub fn cases(&self) -> &Vec<Value> {
        self.json["cases"].as_array().expect("cases")
    }

    pub fn class_labels(&self) -> Option<Vec<String>> {
        self.json["class_labels"].as_array().map(|a| {
            a.iter()
                .map(|v| v.as_str().expect("label is a string").to_string())
                .collect()
        })
    }
}

/// Loads a fixture through Outpost's ONNX loader with input facts taken from the declared
/// input types and a symbolic batch dimension `N`, optimised and runnable.
pub fn load_runnable(name: &str, reference: &Reference) -> TractResult<Arc<TypedRunnableModel>> {
    let bytes = fs::read(fixtures_dir().join(name).join("model.onnx"))?;
    let mut model = outpost_inference::onnx().model_for_read(&mut &bytes[..])?;
    let n = model.symbols.sym("N");
    for (ix, input) in reference.inputs().iter().enumerate() {
        let width = input["shape"][1].as_u64().expect("declared feature count") as usize;
        let dt = datum_type(input["dtype"].as_str().expect("dtype"));
        let fact = InferenceFact::dt_shape(dt, tvec!(n.to_dim(), width.to_dim()));
        model.set_input_fact(ix, fact)?;
    }
    model.into_optimized()?.into_runnable()
}

pub fn datum_type(name: &str) -> DatumType {
    match name {
        "float32" => f32::datum_type(),
        "float64" => f64::datum_type(),
        "int64" => i64::datum_type(),
        "int32" => i32::datum_type(),
        "object" | "str" | "string" => String::datum_type(),
        other => panic!("unexpected dtype {other}"),
    }
}

fn shape_of(v: &Value) -> Vec<usize> {
    v["shape"]
        .as_array()
        .expect("shape")
        .iter()
        .map(|d| d.as_u64().unwrap() as usize)
        .collect()
}

/// Builds the input tensors of one case, in declared input order.
pub fn case_inputs(reference: &Reference, case: &Value) -> TVec<TValue> {
    reference
        .inputs()
        .iter()
        .map(|input| {
            let name = input["name"].as_str().unwrap();
            let v = &case["inputs"][name];
            let shape = shape_of(v);
            let data = v["data"].as_array().expect("data");
            let t = match input["dtype"].as_str().unwrap() {
                "float32" => {
                    let d: Vec<f32> = data
                        .iter()
                        .map(|x| x.as_f64().map(|f| f as f32).unwrap_or(f32::NAN))
                        .collect();
                    Tensor::from_shape(&shape, &d)
                }
                "int64" => {
                    let d: Vec<i64> = data.iter().map(|x| x.as_i64().unwrap()).collect();
                    Tensor::from_shape(&shape, &d)
                }
                other => panic!("unexpected input dtype {other}"),
            };
            t.expect("input tensor").into_tvalue()
        })
        .collect()
}

/// Compares one output to the reference; returns the largest absolute float difference
/// and the largest difference relative to max(1, |reference|).
pub fn compare(fixture: &str, what: &str, got: &Tensor, want: &Value) -> (f32, f32) {
    let shape = shape_of(want);
    assert_eq!(got.shape(), &shape[..], "{what}: shape");
    let data = want["data"].as_array().expect("data");
    let mut max = 0f32;
    let mut max_rel = 0f32;
    match got.datum_type() {
        DatumType::F32 => {
            let got = got
                .try_as_plain_ram()
                .unwrap()
                .as_slice::<f32>()
                .unwrap()
                .to_vec();
            for (i, (g, w)) in got.iter().zip(data).enumerate() {
                let w = w.as_f64().expect("float") as f32;
                let d = (g - w).abs();
                let tol = tolerance(fixture, w);
                assert!(
                    d <= tol,
                    "{what}[{i}]: got {g}, onnxruntime {w} (|diff| {d} > {tol})"
                );
                max = max.max(d);
                max_rel = max_rel.max(d / w.abs().max(1.0));
            }
        }
        // tract's ONNX `Cast(to=INT64)` yields TDim tensors: integers, compared as i64.
        DatumType::I64 | DatumType::TDim => {
            let got = got.cast_to::<i64>().expect("integer labels");
            let got = got
                .try_as_plain_ram()
                .unwrap()
                .as_slice::<i64>()
                .unwrap()
                .to_vec();
            let want: Vec<i64> = data.iter().map(|w| w.as_i64().expect("int")).collect();
            assert_eq!(got, want, "{what}");
        }
        DatumType::String => {
            let got = got
                .try_as_plain_ram()
                .unwrap()
                .as_slice::<String>()
                .unwrap()
                .to_vec();
            let want: Vec<String> = data
                .iter()
                .map(|w| w.as_str().unwrap().to_string())
                .collect();
            assert_eq!(got, want, "{what}");
        }
        dt => panic!("{what}: unexpected output type {dt:?}"),
    }
    (max, max_rel)
}

/// Runs every case of a fixture (8 single rows, one batch) and compares every output;
/// returns the largest absolute and relative differences seen on float outputs.
pub fn check_fixture(name: &str) -> (f32, f32) {
    let reference = Reference::load(name);
    let plan = load_runnable(name, &reference).unwrap_or_else(|e| panic!("{name}: load: {e:?}"));
    let (mut max, mut max_rel) = (0f32, 0f32);
    for (c, case) in reference.cases().iter().enumerate() {
        let outputs = plan
            .run(case_inputs(&reference, case))
            .unwrap_or_else(|e| panic!("{name}: case {c}: run: {e:?}"));
        assert_eq!(
            outputs.len(),
            reference.outputs().len(),
            "{name}: number of outputs"
        );
        for (o, spec) in reference.outputs().iter().enumerate() {
            let oname = spec["name"].as_str().unwrap();
            let what = format!("{name}: case {c} ({} rows): {oname}", case["rows"]);
            let (d, r) = compare(name, &what, &outputs[o], &case["outputs"][oname]);
            max = max.max(d);
            max_rel = max_rel.max(r);
        }
    }
    (max, max_rel)
}
