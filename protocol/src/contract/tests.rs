//! Unit tests of the model contract: validation, sample preparation and interpretation.

use super::*;
use serde_json::json;

fn contract() -> ModelContract {
    serde_json::from_value(json!({
        "inputs": [{"name": "x", "datatype": "FP32", "shape": [-1, 2], "features": ["a", "b"],
                    "normalization": {"kind": "zscore", "mean": [1.0, 2.0], "std": [2.0, 4.0]}}],
        "outputs": [{"name": "y", "datatype": "FP32", "shape": [-1, 2]},
                    {"name": "label", "datatype": "INT64", "shape": [-1]}],
        "task": {"kind": "classification", "output": "y", "scores": "logits",
                 "labels": ["ok", "bad"], "anomaly_labels": ["bad"], "min_confidence": 0.9}
    }))
    .unwrap()
}

#[test]
fn prepare_interpret_and_errors() {
    let c = contract();
    c.validate().unwrap();
    let x = c.feature_input().unwrap();
    assert_eq!(prepare(x, &[3.0, 6.0]).unwrap(), vec![1.0, 1.0]);
    assert!(matches!(
        prepare(x, &[1.0]),
        Err(InputError::WrongLength { .. })
    ));
    let e = prepare(x, &[1.0, f64::NAN]).unwrap_err();
    assert!(e.to_string().contains("(b)"), "{e}");
    assert_eq!(
        c.order_named([("b", 2.0), ("a", 1.0)]).unwrap(),
        vec![1.0, 2.0]
    );
    assert_eq!(
        c.order_named([("a", 1.0)]),
        Err(InputError::MissingFeature("b".into()))
    );
    let p = c.interpret(&[0.0, 1.0]).unwrap();
    assert_eq!(p.label().as_deref(), Some("bad"));
    let Interpretation::Classification(p) = p else {
        panic!("classification")
    };
    assert!(p.anomaly && p.low_confidence);
    assert!((p.probabilities.iter().sum::<f32>() - 1.0).abs() < 1e-6);
    assert!(c.interpret(&[0.0]).is_err());
    assert!(matches!(
        c.interpret(&[0.0, f64::INFINITY]),
        Err(OutputError::NotFinite { index: 1, .. })
    ));
}

#[test]
fn regression_and_scores() {
    let mut c = contract();
    c.task = Task::Regression(RegressionTask {
        output: "y".into(),
        unit: Some("kPa".into()),
        range: Some([0.0, 10.0]),
        names: vec![],
    });
    c.validate().unwrap();
    assert_eq!(
        c.interpret(&[1.0, 11.0]).unwrap(),
        Interpretation::Regression {
            values: vec![1.0, 11.0],
            out_of_range: true
        }
    );
    c.outputs[0].shape = vec![Dim::any(), Dim::Fixed(1)];
    c.task = Task::AnomalyScore(AnomalyScoreTask {
        output: "y".into(),
        threshold: 0.0,
        direction: Direction::Below,
    });
    c.validate().unwrap();
    assert!(c.interpret(&[-0.2]).unwrap().anomaly());
    assert!(!c.interpret(&[0.2]).unwrap().anomaly());
    c.task = Task::Raw;
    assert_eq!(c.interpret(&[]).unwrap(), Interpretation::Raw);
}

#[test]
fn invalid_contracts_are_refused() {
    let mut c = contract();
    if let Task::Classification(t) = &mut c.task {
        t.anomaly_labels = vec!["nope".into()];
    }
    assert!(matches!(c.validate(), Err(ContractError::BadTask { .. })));
    let mut c = contract();
    c.inputs[0].normalization = Normalization::Zscore {
        mean: vec![0.0, 0.0],
        std: vec![1.0, 0.0],
    };
    assert!(matches!(
        c.validate(),
        Err(ContractError::BadNormalization { .. })
    ));
    let mut c = contract();
    c.inputs[0].shape = vec![Dim::any(), Dim::Fixed(u64::MAX), Dim::Fixed(2)];
    assert!(matches!(c.validate(), Err(ContractError::BadShape { .. })));
    let mut c = contract();
    c.inputs[0].shape = vec![Dim::any(), Dim::Var(Some("n".into()))];
    assert!(
        matches!(c.validate(), Err(ContractError::FeatureCount { .. })),
        "feature names need a fixed sample"
    );
    let mut c = contract();
    c.task = Task::Classification(ClassificationTask {
        label_output: None,
        output: "missing".into(),
        scores: ScoreKind::Probabilities,
        labels: vec!["a".into()],
        anomaly_labels: vec![],
        min_confidence: None,
    });
    assert!(c.validate().unwrap_err().to_string().contains("missing"));
    let mut c = contract();
    c.outputs.push(c.outputs[0].clone());
    assert!(matches!(c.validate(), Err(ContractError::BadName(_))));
    let mut c = contract();
    c.inputs.push(InputSpec {
        name: "fixed".into(),
        datatype: DataType::Int64,
        shape: vec![Dim::Fixed(1), Dim::Fixed(3)],
        features: vec![],
        normalization: Normalization::None,
        max_abs: None,
        allow_nan: false,
    });
    assert_eq!(c.validate(), Err(ContractError::MixedBatch));
}

#[test]
fn unknown_fields_are_refused_and_defaults_apply() {
    let e = serde_json::from_value::<ModelContract>(json!({
        "inputs": [{"name": "x", "datatype": "FP32", "shape": [-1, 2], "typo": 1}],
        "outputs": [{"name": "y", "datatype": "FP32", "shape": [-1, 2]}]
    }))
    .unwrap_err();
    assert!(e.to_string().contains("typo"), "{e}");
    let c: ModelContract = serde_json::from_value(json!({
        "inputs": [{"name": "x", "datatype": "INT64", "shape": [-1, 2]}],
        "outputs": [{"name": "y", "datatype": "FP32", "shape": [-1, 2]}]
    }))
    .unwrap();
    assert_eq!(c.task, Task::Raw);
    assert_eq!(c.inputs[0].domain(), DEFAULT_MAX_ABS);
    c.validate().unwrap();
}
