//! Malformed ONNX-ML attributes, every op but the tree ensembles (SVM classifier and
//! regressor, Scaler, Imputer, Binarizer, FeatureVectorizer, OneHotEncoder, LabelEncoder,
//! ZipMap, ArrayFeatureExtractor): a crafted model is an error (at load, optimisation or
//! run), never a panic, an out-of-bounds read or an endless loop. Each op also has a valid
//! baseline built with the same helpers (`malformed/`), so that the errors below come from
//! the op, not from the harness.

use tract_onnx::pb::attribute_proto::AttributeType;
use tract_onnx::pb::{AttributeProto, TensorProto};
use tract_onnx::prelude::*;

mod malformed;

use malformed::*;

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
