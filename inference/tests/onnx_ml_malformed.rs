//! Malformed ONNX-ML attributes: every op registered by `outpost_inference::onnx_ml`
//! turns a crafted model into an error (at load, optimisation or run), never a panic,
//! an out-of-bounds read or an endless loop. Each op also has a valid baseline built with
//! the same helpers, so that the errors below come from the op, not from the harness.

use std::panic::{AssertUnwindSafe, catch_unwind};

use proptest::prelude::*;
use tract_onnx::pb::attribute_proto::AttributeType;
use tract_onnx::pb::tensor_shape_proto::{Dimension, dimension};
use tract_onnx::pb::{
    AttributeProto, GraphProto, ModelProto, NodeProto, OperatorSetIdProto, TensorProto,
    TensorShapeProto, TypeProto, ValueInfoProto, type_proto,
};
use tract_onnx::prelude::*;

const FLOAT: i32 = 1;
const INT64: i32 = 7;

fn attr(name: &str, ty: AttributeType) -> AttributeProto {
    AttributeProto {
        name: name.into(),
        r#type: ty as i32,
        ..Default::default()
    }
}
fn ints(name: &str, v: &[i64]) -> AttributeProto {
    AttributeProto {
        ints: v.to_vec(),
        ..attr(name, AttributeType::Ints)
    }
}
fn floats(name: &str, v: &[f32]) -> AttributeProto {
    AttributeProto {
        floats: v.to_vec(),
        ..attr(name, AttributeType::Floats)
    }
}
fn int(name: &str, v: i64) -> AttributeProto {
    AttributeProto {
        i: v,
        ..attr(name, AttributeType::Int)
    }
}
fn float(name: &str, v: f32) -> AttributeProto {
    AttributeProto {
        f: v,
        ..attr(name, AttributeType::Float)
    }
}
fn string(name: &str, v: &str) -> AttributeProto {
    AttributeProto {
        s: v.as_bytes().to_vec(),
        ..attr(name, AttributeType::String)
    }
}
fn strings(name: &str, v: &[&str]) -> AttributeProto {
    AttributeProto {
        strings: v.iter().map(|s| s.as_bytes().to_vec()).collect(),
        ..attr(name, AttributeType::Strings)
    }
}

/// Replaces (or adds) attributes by name; an attribute named `-x` removes `x`.
fn with(mut attrs: Vec<AttributeProto>, changes: Vec<AttributeProto>) -> Vec<AttributeProto> {
    for c in changes {
        if let Some(name) = c.name.strip_prefix('-') {
            attrs.retain(|a| a.name != name);
        } else if let Some(a) = attrs.iter_mut().find(|a| a.name == c.name) {
            *a = c;
        } else {
            attrs.push(c);
        }
    }
    attrs
}

fn input(name: &str, elem_type: i32, width: i64) -> ValueInfoProto {
    let dim = |v| Dimension {
        value: Some(v),
        ..Default::default()
    };
    ValueInfoProto {
        name: name.into(),
        r#type: Some(TypeProto {
            value: Some(type_proto::Value::TensorType(type_proto::Tensor {
                elem_type,
                shape: Some(TensorShapeProto {
                    dim: vec![
                        dim(dimension::Value::DimParam("N".into())),
                        dim(dimension::Value::DimValue(width)),
                    ],
                }),
            })),
            ..Default::default()
        }),
        ..Default::default()
    }
}

/// A one-node ai.onnx.ml model.
fn model(
    op: &str,
    attrs: Vec<AttributeProto>,
    inputs: &[(&str, i32, i64)],
    initializers: Vec<TensorProto>,
    n_outputs: usize,
) -> ModelProto {
    let outputs: Vec<String> = (0..n_outputs).map(|i| format!("Y{i}")).collect();
    let mut input_names: Vec<String> = inputs.iter().map(|i| i.0.to_string()).collect();
    input_names.extend(initializers.iter().map(|t| t.name.clone()));
    let node = NodeProto {
        name: "n".into(),
        op_type: op.into(),
        domain: "ai.onnx.ml".into(),
        input: input_names,
        output: outputs.clone(),
        attribute: attrs,
        ..Default::default()
    };
    ModelProto {
        ir_version: 8,
        opset_import: vec![
            OperatorSetIdProto {
                domain: "".into(),
                version: 17,
            },
            OperatorSetIdProto {
                domain: "ai.onnx.ml".into(),
                version: 3,
            },
        ],
        graph: Some(GraphProto {
            node: vec![node],
            name: "g".into(),
            input: inputs.iter().map(|(n, t, w)| input(n, *t, *w)).collect(),
            initializer: initializers,
            output: outputs
                .iter()
                .map(|o| ValueInfoProto {
                    name: o.clone(),
                    ..Default::default()
                })
                .collect(),
            ..Default::default()
        }),
        ..Default::default()
    }
}

/// Loads, optimises and runs the model on a batch of two rows (one with a NaN where
/// floats are involved); `Err` carries the first error. Panics are test failures.
fn try_model(proto: &ModelProto, feed: &[Tensor]) -> Result<(), String> {
    let result = catch_unwind(AssertUnwindSafe(|| -> TractResult<()> {
        let model = outpost_inference::onnx().model_for_proto_model(proto)?;
        let plan = model.into_optimized()?.into_runnable()?;
        plan.run(feed.iter().cloned().map(|t| t.into_tvalue()).collect())?;
        Ok(())
    }));
    match result {
        Ok(r) => r.map_err(|e| format!("{e:#}")),
        Err(_) => panic!("tract or onnx_ml panicked on {proto:?}"),
    }
}

fn rows(width: usize) -> Tensor {
    let mut v: Vec<f32> = (0..2 * width).map(|i| i as f32 * 0.25 - 0.5).collect();
    v[width] = f32::NAN;
    Tensor::from_shape(&[2, width], &v).unwrap()
}

/// Runs the baseline (must succeed) and every mutation (must fail, without panicking).
fn check(
    op: &str,
    valid: Vec<AttributeProto>,
    n_outputs: usize,
    width: i64,
    cases: Vec<(&str, Vec<AttributeProto>)>,
) {
    let feed = [rows(width as usize)];
    let base = model(op, valid.clone(), &[("X", FLOAT, width)], vec![], n_outputs);
    try_model(&base, &feed).unwrap_or_else(|e| panic!("{op}: valid baseline fails: {e}"));
    for (what, changes) in cases {
        let m = model(
            op,
            with(valid.clone(), changes),
            &[("X", FLOAT, width)],
            vec![],
            n_outputs,
        );
        match try_model(&m, &feed) {
            Ok(()) => panic!("{op}: {what}: accepted"),
            Err(e) => eprintln!("{op}: {what}: {e}"),
        }
    }
}

/// One tree: `x0 <= 0.5 ? leaf 1 : leaf 2`.
fn tree_attrs(leaf: &str) -> Vec<AttributeProto> {
    vec![
        ints("nodes_treeids", &[0, 0, 0]),
        ints("nodes_nodeids", &[0, 1, 2]),
        ints("nodes_featureids", &[0, 0, 0]),
        floats("nodes_values", &[0.5, 0.0, 0.0]),
        strings("nodes_modes", &["BRANCH_LEQ", "LEAF", "LEAF"]),
        ints("nodes_truenodeids", &[1, 0, 0]),
        ints("nodes_falsenodeids", &[2, 0, 0]),
        ints("nodes_missing_value_tracks_true", &[1, 0, 0]),
        ints(&format!("{leaf}_treeids"), &[0, 0]),
        ints(&format!("{leaf}_nodeids"), &[1, 2]),
        ints(&format!("{leaf}_ids"), &[0, 0]),
        floats(&format!("{leaf}_weights"), &[1.5, -2.0]),
    ]
}

fn tree_cases(leaf: &str) -> Vec<(&'static str, Vec<AttributeProto>)> {
    let l = |s: &str| format!("{leaf}_{s}");
    vec![
        (
            "child does not exist",
            vec![ints("nodes_truenodeids", &[99, 0, 0])],
        ),
        (
            "negative child id",
            vec![ints("nodes_falsenodeids", &[-1, 0, 0])],
        ),
        (
            "node points to itself",
            vec![ints("nodes_truenodeids", &[0, 0, 0])],
        ),
        (
            "cycle between two branches",
            vec![
                strings("nodes_modes", &["BRANCH_LEQ", "BRANCH_LT", "LEAF"]),
                ints("nodes_truenodeids", &[1, 0, 0]),
                ints("nodes_falsenodeids", &[2, 2, 0]),
            ],
        ),
        (
            "negative feature id",
            vec![ints("nodes_featureids", &[-3, 0, 0])],
        ),
        (
            "huge feature id",
            vec![ints("nodes_featureids", &[1 << 40, 0, 0])],
        ),
        (
            "feature beyond the input width",
            vec![ints("nodes_featureids", &[7, 0, 0])],
        ),
        (
            "nodes_values too short",
            vec![floats("nodes_values", &[0.5])],
        ),
        (
            "nodes_modes missing",
            vec![attr("-nodes_modes", AttributeType::Strings)],
        ),
        (
            "unknown node mode",
            vec![strings("nodes_modes", &["BRANCH_FOO", "LEAF", "LEAF"])],
        ),
        (
            "missing-value flag not 0/1",
            vec![ints("nodes_missing_value_tracks_true", &[2, 0, 0])],
        ),
        (
            "missing-value flags too short",
            vec![ints("nodes_missing_value_tracks_true", &[1])],
        ),
        ("duplicate node id", vec![ints("nodes_nodeids", &[0, 1, 1])]),
        (
            "trees not contiguous",
            vec![ints("nodes_treeids", &[0, 1, 0])],
        ),
        (
            "no nodes",
            vec![
                ints("nodes_treeids", &[]),
                ints("nodes_nodeids", &[]),
                ints("nodes_featureids", &[]),
                floats("nodes_values", &[]),
                strings("nodes_modes", &[]),
                ints("nodes_truenodeids", &[]),
                ints("nodes_falsenodeids", &[]),
                ints("nodes_missing_value_tracks_true", &[]),
            ],
        ),
        (
            "leaf without a weight",
            vec![
                ints(&l("treeids"), &[0]),
                ints(&l("nodeids"), &[1]),
                ints(&l("ids"), &[0]),
                floats(&l("weights"), &[1.0]),
            ],
        ),
        (
            "weight on a missing node",
            vec![ints(&l("nodeids"), &[1, 9])],
        ),
        (
            "weight lists of different lengths",
            vec![floats(&l("weights"), &[1.0])],
        ),
        (
            "target/class id out of range",
            vec![ints(&l("ids"), &[0, 5])],
        ),
        ("negative target/class id", vec![ints(&l("ids"), &[0, -1])]),
        (
            "double-precision attributes",
            vec![AttributeProto {
                t: Some(TensorProto {
                    data_type: 11,
                    dims: vec![3],
                    double_data: vec![0.5, 0.0, 0.0],
                    ..Default::default()
                }),
                ..attr("nodes_values_as_tensor", AttributeType::Tensor)
            }],
        ),
        (
            "attribute of the wrong type",
            vec![ints("nodes_values", &[1, 2, 3])],
        ),
        (
            "unknown post_transform",
            vec![string("post_transform", "CUBE")],
        ),
    ]
}

#[test]
fn tree_ensemble_regressor_rejects_malformed_attributes() {
    let mut valid = tree_attrs("target");
    valid.push(int("n_targets", 1));
    let mut cases = tree_cases("target");
    cases.extend([
        ("n_targets = 0", vec![int("n_targets", 0)]),
        ("negative n_targets", vec![int("n_targets", -4)]),
        ("huge n_targets", vec![int("n_targets", 1 << 40)]),
        (
            "base_values of the wrong length",
            vec![floats("base_values", &[1.0, 2.0])],
        ),
        (
            "unknown aggregate_function",
            vec![string("aggregate_function", "MEDIAN")],
        ),
    ]);
    check("TreeEnsembleRegressor", valid, 1, 2, cases);
}

#[test]
fn tree_ensemble_regressor_aggregates() {
    // Tree 0: x0 <= 0.5 ? 1.5 : -2.0; tree 1: a single leaf 4.0; base value 10.
    let attrs = with(
        tree_attrs("target"),
        vec![
            int("n_targets", 1),
            floats("base_values", &[10.0]),
            ints("nodes_treeids", &[0, 0, 0, 1]),
            ints("nodes_nodeids", &[0, 1, 2, 0]),
            ints("nodes_featureids", &[0, 0, 0, 0]),
            floats("nodes_values", &[0.5, 0.0, 0.0, 0.0]),
            strings("nodes_modes", &["BRANCH_LEQ", "LEAF", "LEAF", "LEAF"]),
            ints("nodes_truenodeids", &[1, 0, 0, 0]),
            ints("nodes_falsenodeids", &[2, 0, 0, 0]),
            ints("nodes_missing_value_tracks_true", &[1, 0, 0, 0]),
            ints("target_treeids", &[0, 0, 1]),
            ints("target_nodeids", &[1, 2, 0]),
            ints("target_ids", &[0, 0, 0]),
            floats("target_weights", &[1.5, -2.0, 4.0]),
        ],
    );
    for (agg, want) in [
        ("SUM", [15.5f32, 12.0, 15.5]),
        ("AVERAGE", [12.75, 11.0, 12.75]),
        ("MIN", [11.5, 8.0, 11.5]),
        ("MAX", [14.0, 14.0, 14.0]),
    ] {
        let m = model(
            "TreeEnsembleRegressor",
            with(attrs.clone(), vec![string("aggregate_function", agg)]),
            &[("X", FLOAT, 1)],
            vec![],
            1,
        );
        let plan = outpost_inference::onnx()
            .model_for_proto_model(&m)
            .unwrap()
            .into_optimized()
            .unwrap()
            .into_runnable()
            .unwrap();
        // The NaN row goes to the true branch: nodes_missing_value_tracks_true.
        let x = Tensor::from_shape(&[3, 1], &[0.0f32, 1.0, f32::NAN]).unwrap();
        let y = plan.run(tvec!(x.into_tvalue())).unwrap();
        let y = y[0]
            .try_as_plain_ram()
            .unwrap()
            .as_slice::<f32>()
            .unwrap()
            .to_vec();
        assert_eq!(y, want, "{agg}");
    }
}

#[test]
fn tree_ensemble_classifier_rejects_malformed_attributes() {
    let valid = with(
        tree_attrs("class"),
        vec![ints("classlabels_int64s", &[0, 1])],
    );
    let mut cases = tree_cases("class");
    cases.extend([
        (
            "no class labels",
            vec![attr("-classlabels_int64s", AttributeType::Ints)],
        ),
        (
            "both label kinds",
            vec![strings("classlabels_strings", &["a", "b"])],
        ),
        ("a single class", vec![ints("classlabels_int64s", &[0])]),
        (
            "base_values of the wrong length",
            vec![floats("base_values", &[1.0, 2.0, 3.0])],
        ),
        (
            "PROBIT on one binary score",
            vec![string("post_transform", "PROBIT")],
        ),
    ]);
    check("TreeEnsembleClassifier", valid, 2, 2, cases);
}

fn svc_attrs() -> Vec<AttributeProto> {
    // Two classes, one support vector each, two features.
    vec![
        string("kernel_type", "RBF"),
        floats("kernel_params", &[0.5, 0.0, 3.0]),
        ints("vectors_per_class", &[1, 1]),
        floats("support_vectors", &[0.0, 0.0, 1.0, 1.0]),
        floats("coefficients", &[1.0, -1.0]),
        floats("rho", &[0.1]),
        ints("classlabels_ints", &[3, 7]),
    ]
}

#[test]
fn svm_classifier_rejects_malformed_attributes() {
    check(
        "SVMClassifier",
        svc_attrs(),
        2,
        2,
        vec![
            ("unknown kernel", vec![string("kernel_type", "QUARTIC")]),
            (
                "kernel_params of two values",
                vec![floats("kernel_params", &[0.5, 0.0])],
            ),
            (
                "vectors_per_class of the wrong length",
                vec![ints("vectors_per_class", &[1, 1, 0])],
            ),
            (
                "negative vector count",
                vec![ints("vectors_per_class", &[-1, 3])],
            ),
            (
                "huge vector count",
                vec![ints("vectors_per_class", &[1 << 40, 1])],
            ),
            (
                "support vectors not a multiple",
                vec![floats("support_vectors", &[0.0, 0.0, 1.0])],
            ),
            (
                "coefficients of the wrong length",
                vec![floats("coefficients", &[1.0])],
            ),
            ("no rho", vec![attr("-rho", AttributeType::Floats)]),
            ("prob_a without prob_b", vec![floats("prob_a", &[1.0])]),
            (
                "one class",
                vec![
                    ints("classlabels_ints", &[3]),
                    ints("vectors_per_class", &[2]),
                ],
            ),
            (
                "input width differs from the support vectors",
                vec![floats("support_vectors", &[0.0, 0.0, 0.0, 1.0, 1.0, 1.0])],
            ),
            (
                "linear mode, coefficients not a multiple",
                vec![
                    attr("-vectors_per_class", AttributeType::Ints),
                    floats("coefficients", &[1.0, 2.0, 3.0]),
                ],
            ),
        ],
    );
}

#[test]
fn svm_regressor_rejects_malformed_attributes() {
    let valid = vec![
        string("kernel_type", "POLY"),
        floats("kernel_params", &[0.5, 1.0, 2.0]),
        int("n_supports", 2),
        floats("support_vectors", &[0.0, 0.0, 1.0, 1.0]),
        floats("coefficients", &[1.0, -1.0]),
        floats("rho", &[0.1]),
    ];
    check(
        "SVMRegressor",
        valid,
        1,
        2,
        vec![
            ("negative n_supports", vec![int("n_supports", -2)]),
            ("huge n_supports", vec![int("n_supports", 1 << 40)]),
            (
                "support vectors not a multiple",
                vec![floats("support_vectors", &[0.0, 0.0, 1.0])],
            ),
            (
                "coefficients of the wrong length",
                vec![floats("coefficients", &[1.0, 2.0, 3.0])],
            ),
            (
                "no coefficients",
                vec![attr("-coefficients", AttributeType::Floats)],
            ),
            ("no rho", vec![floats("rho", &[])]),
            ("one_class not 0/1", vec![int("one_class", 3)]),
            (
                "linear mode of the wrong width",
                vec![
                    int("n_supports", 0),
                    floats("coefficients", &[1.0, 2.0, 3.0]),
                ],
            ),
        ],
    );
}

#[test]
fn scaler_rejects_malformed_attributes() {
    check(
        "Scaler",
        vec![floats("offset", &[1.0, 2.0]), floats("scale", &[0.5, 0.25])],
        1,
        2,
        vec![
            (
                "offset and scale of different lengths",
                vec![floats("scale", &[0.5])],
            ),
            (
                "neither offset nor scale",
                vec![
                    attr("-offset", AttributeType::Floats),
                    attr("-scale", AttributeType::Floats),
                ],
            ),
            (
                "empty scale",
                vec![floats("offset", &[]), floats("scale", &[])],
            ),
            (
                "not one per feature",
                vec![
                    floats("offset", &[1.0, 2.0, 3.0]),
                    floats("scale", &[1.0, 2.0, 3.0]),
                ],
            ),
        ],
    );
}

#[test]
fn imputer_rejects_malformed_attributes() {
    check(
        "Imputer",
        vec![
            floats("imputed_value_floats", &[1.0, 2.0]),
            float("replaced_value_float", f32::NAN),
        ],
        1,
        2,
        vec![
            (
                "both imputed kinds",
                vec![ints("imputed_value_int64s", &[1, 2])],
            ),
            (
                "no imputed values",
                vec![attr("-imputed_value_floats", AttributeType::Floats)],
            ),
            (
                "int64 values for a float input",
                vec![
                    attr("-imputed_value_floats", AttributeType::Floats),
                    ints("imputed_value_int64s", &[1, 2]),
                ],
            ),
            (
                "not one per feature",
                vec![floats("imputed_value_floats", &[1.0, 2.0, 3.0])],
            ),
        ],
    );
}

#[test]
fn binarizer_baseline_and_nan() {
    check(
        "Binarizer",
        vec![float("threshold", 0.1)],
        1,
        3,
        vec![(
            "threshold of the wrong type",
            vec![string("threshold", "0.1")],
        )],
    );
    check(
        "Binarizer",
        vec![float("threshold", f32::NAN)],
        1,
        3,
        vec![],
    );
}

#[test]
fn feature_vectorizer_rejects_malformed_attributes() {
    let two = |attrs: Vec<AttributeProto>| {
        model(
            "FeatureVectorizer",
            attrs,
            &[("A", FLOAT, 2), ("B", INT64, 1)],
            vec![],
            1,
        )
    };
    let feed = [rows(2), Tensor::from_shape(&[2, 1], &[4i64, 5]).unwrap()];
    try_model(&two(vec![ints("inputdimensions", &[2, 3])]), &feed).expect("valid (pads B)");
    for (what, attrs) in [
        (
            "one dimension for two inputs",
            vec![ints("inputdimensions", &[2])],
        ),
        (
            "negative dimension",
            vec![ints("inputdimensions", &[2, -1])],
        ),
        ("zero dimension", vec![ints("inputdimensions", &[0, 1])]),
        (
            "huge dimensions",
            vec![ints("inputdimensions", &[1 << 40, 1])],
        ),
        ("no inputdimensions", vec![]),
    ] {
        assert!(
            try_model(&two(attrs), &feed).is_err(),
            "FeatureVectorizer: {what}: accepted"
        );
    }
}

#[test]
fn one_hot_encoder_rejects_malformed_attributes_and_unknown_categories() {
    let m =
        |attrs: Vec<AttributeProto>| model("OneHotEncoder", attrs, &[("X", INT64, 1)], vec![], 1);
    let known = [Tensor::from_shape(&[2, 1], &[5i64, 7]).unwrap()];
    let unknown = [Tensor::from_shape(&[2, 1], &[5i64, 6]).unwrap()];
    let valid = vec![ints("cats_int64s", &[5, 7]), int("zeros", 0)];
    try_model(&m(valid.clone()), &known).expect("valid");
    assert!(
        try_model(&m(valid.clone()), &unknown).is_err(),
        "unknown category with zeros = 0"
    );
    try_model(&m(with(valid.clone(), vec![int("zeros", 1)])), &unknown).expect("zeros = 1");
    for (what, attrs) in [
        ("no categories", vec![int("zeros", 1)]),
        (
            "both category kinds",
            with(valid.clone(), vec![strings("cats_strings", &["a"])]),
        ),
        ("empty categories", vec![ints("cats_int64s", &[])]),
        ("zeros not 0/1", with(valid.clone(), vec![int("zeros", 5)])),
        (
            "string categories for an int input",
            vec![strings("cats_strings", &["a", "b"])],
        ),
    ] {
        assert!(
            try_model(&m(attrs), &known).is_err(),
            "OneHotEncoder: {what}: accepted"
        );
    }
}

#[test]
fn label_encoder_rejects_malformed_attributes() {
    let m =
        |attrs: Vec<AttributeProto>| model("LabelEncoder", attrs, &[("X", INT64, 1)], vec![], 1);
    let feed = [Tensor::from_shape(&[2, 1], &[1i64, 9]).unwrap()];
    let valid = vec![
        ints("keys_int64s", &[1, 2]),
        floats("values_floats", &[0.5, 1.5]),
    ];
    try_model(&m(valid.clone()), &feed).expect("valid");
    for (what, attrs) in [
        (
            "keys and values of different lengths",
            with(valid.clone(), vec![floats("values_floats", &[0.5])]),
        ),
        (
            "two key kinds",
            with(valid.clone(), vec![strings("keys_strings", &["a", "b"])]),
        ),
        ("no values", vec![ints("keys_int64s", &[1, 2])]),
        (
            "opset-1 form",
            vec![
                strings("classes_strings", &["a", "b"]),
                int("default_int64", -1),
            ],
        ),
        (
            "string keys for an int input",
            vec![
                strings("keys_strings", &["a", "b"]),
                floats("values_floats", &[0.5, 1.5]),
            ],
        ),
        (
            "default_tensor of another type",
            with(
                valid.clone(),
                vec![AttributeProto {
                    t: Some(TensorProto {
                        data_type: INT64,
                        dims: vec![1],
                        int64_data: vec![3],
                        ..Default::default()
                    }),
                    ..attr("default_tensor", AttributeType::Tensor)
                }],
            ),
        ),
    ] {
        assert!(
            try_model(&m(attrs), &feed).is_err(),
            "LabelEncoder: {what}: accepted"
        );
    }
}

#[test]
fn zipmap_rejects_malformed_attributes() {
    check(
        "ZipMap",
        vec![ints("classlabels_int64s", &[0, 1, 2])],
        1,
        3,
        vec![
            (
                "no labels",
                vec![attr("-classlabels_int64s", AttributeType::Ints)],
            ),
            (
                "both label kinds",
                vec![strings("classlabels_strings", &["a", "b", "c"])],
            ),
            ("empty labels", vec![ints("classlabels_int64s", &[])]),
            (
                "labels do not match the columns",
                vec![ints("classlabels_int64s", &[0, 1])],
            ),
        ],
    );
}

#[test]
fn array_feature_extractor_checks_indices() {
    let idx = |v: &[i64]| TensorProto {
        name: "I".into(),
        data_type: INT64,
        dims: vec![v.len() as i64],
        int64_data: v.to_vec(),
        ..Default::default()
    };
    let feed = [rows(3)];
    let m = |v: &[i64]| {
        model(
            "ArrayFeatureExtractor",
            vec![],
            &[("X", FLOAT, 3)],
            vec![idx(v)],
            1,
        )
    };
    try_model(&m(&[2, 0]), &feed).expect("valid");
    for bad in [&[3i64][..], &[-1], &[0, 1 << 40]] {
        assert!(try_model(&m(bad), &feed).is_err(), "index {bad:?} accepted");
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 512, ..ProptestConfig::default() })]

    /// Random forests with arbitrary child pointers (including missing, self and cyclic
    /// ones), modes, features, weights and NaN inputs: the loader rejects or accepts them
    /// and accepted ones run, but nothing panics or hangs. `wellformed` forests (heap-
    /// numbered binary trees, ids in range) must load and run.
    #[test]
    fn random_trees_never_panic(
        n in 1usize..8,
        trees in prop::collection::vec(0i64..2, 8),
        children in prop::collection::vec(-1i64..9, 16),
        modes in prop::collection::vec(0usize..9, 8),
        features in prop::collection::vec(-1i64..4, 8),
        ids in prop::collection::vec(-1i64..4, 8),
        weights in prop::collection::vec(-2f32..2.0, 8),
        extra in prop::collection::vec((0i64..2, 0i64..9, 0i64..3, -2f32..2.0), 0..3),
        classifier in any::<bool>(),
        wellformed in any::<bool>(),
    ) {
        const MODES: [&str; 9] = ["LEAF", "BRANCH_LEQ", "BRANCH_LT", "BRANCH_GTE", "BRANCH_GT", "BRANCH_EQ", "BRANCH_NEQ", "LEAF", "LEAF"];
        let mut tree_ids: Vec<i64> = trees[..n].to_vec();
        tree_ids.sort();
        let (mut modes, mut children, mut features, mut ids) = (modes, children, features, ids);
        let mut extra = extra;
        if wellformed {
            tree_ids = vec![0; n];
            extra.clear();
            for i in 0..n {
                children[i] = 2 * i as i64 + 1;
                children[8 + i] = 2 * i as i64 + 2;
                if 2 * i + 2 >= n {
                    modes[i] = 0;
                } else if modes[i] % 7 == 0 {
                    modes[i] = 1;
                }
                features[i] = features[i].rem_euclid(3);
                ids[i] = ids[i].rem_euclid(2);
            }
        }
        let leaf = if classifier { "class" } else { "target" };
        // One weight per node (ignored on branches) plus a few random ones.
        let mut w: Vec<(i64, i64, i64, f32)> =
            (0..n).map(|i| (tree_ids[i], i as i64, ids[i], weights[i])).collect();
        w.extend(extra);
        let mut attrs = vec![
            ints("nodes_treeids", &tree_ids),
            ints("nodes_nodeids", &(0..n as i64).collect::<Vec<_>>()),
            ints("nodes_featureids", &features[..n]),
            floats("nodes_values", &vec![0.25; n]),
            strings("nodes_modes", &modes[..n].iter().map(|&m| MODES[m]).collect::<Vec<_>>()),
            ints("nodes_truenodeids", &children[..n]),
            ints("nodes_falsenodeids", &children[8..8 + n]),
            ints("nodes_missing_value_tracks_true", &modes[..n].iter().map(|&m| (m % 2) as i64).collect::<Vec<_>>()),
            ints(&format!("{leaf}_treeids"), &w.iter().map(|l| l.0).collect::<Vec<_>>()),
            ints(&format!("{leaf}_nodeids"), &w.iter().map(|l| l.1).collect::<Vec<_>>()),
            ints(&format!("{leaf}_ids"), &w.iter().map(|l| l.2).collect::<Vec<_>>()),
            floats(&format!("{leaf}_weights"), &w.iter().map(|l| l.3).collect::<Vec<_>>()),
        ];
        let op = if classifier {
            attrs.push(ints("classlabels_int64s", if ids[0] % 2 == 0 { &[0, 1, 2][..] } else { &[0, 1][..] }));
            "TreeEnsembleClassifier"
        } else {
            attrs.push(int("n_targets", 3));
            "TreeEnsembleRegressor"
        };
        let m = model(op, attrs, &[("X", FLOAT, 3)], vec![], if classifier { 2 } else { 1 });
        let result = try_model(&m, &[rows(3)]);
        if wellformed {
            prop_assert!(result.is_ok(), "{op}: {result:?}");
        }
    }
}
