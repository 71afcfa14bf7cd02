//! Every scikit-learn fixture (models/sklearn/<name>/, written by
//! models/generate_sklearn.py with skl2onnx's default options) loads through
//! `outpost_inference::onnx()` with a symbolic batch, optimises, runs, and matches
//! onnxruntime: float outputs within 1e-5 absolute, int64 and string labels exactly.

mod common;

use common::{Reference, check_fixture, fixture_names};

macro_rules! fixtures {
    ($($name:ident),* $(,)?) => {
        /// The fixtures with a test below (kept in sync with the directory by `all_fixtures_have_a_test`).
        const TESTED: &[&str] = &[$(stringify!($name)),*];
        $(
            #[test]
            fn $name() {
                let (abs, rel) = check_fixture(stringify!($name));
                eprintln!("{}: max abs diff {:e}, max rel diff {:e}", stringify!($name), abs, rel);
            }
        )*
    };
}

fixtures!(
    column_transformer_logreg,
    decision_tree_classifier,
    decision_tree_classifier_strings,
    decision_tree_regressor,
    extra_trees_classifier,
    gaussian_nb,
    gradient_boosting_classifier_binary,
    gradient_boosting_classifier_multiclass,
    gradient_boosting_regressor,
    hist_gradient_boosting_classifier,
    hist_gradient_boosting_classifier_binary,
    hist_gradient_boosting_regressor,
    isolation_forest_mlopset3,
    kneighbors_classifier,
    kneighbors_regressor,
    linear_regression,
    linear_svc,
    linear_svc_binary,
    local_outlier_factor,
    logistic_regression_binary,
    logistic_regression_multiclass,
    mlp_classifier,
    one_class_svm,
    pipeline_imputer_binarizer_logreg,
    pipeline_scaler_mlp,
    pipeline_two_inputs_scaler_logreg,
    random_forest_classifier,
    random_forest_classifier_binary,
    random_forest_regressor,
    random_forest_regressor_multioutput,
    ridge,
    sgd_classifier,
    svc,
    svc_binary,
    svc_binary_probability,
    svc_probability,
    svr,
);

#[test]
fn all_fixtures_have_a_test() {
    let names = fixture_names();
    assert!(names.len() >= 30, "fixtures found: {names:?}");
    for name in &names {
        assert!(
            TESTED.contains(&name.as_str()),
            "fixture {name} has no test in tests/sklearn.rs"
        );
    }
    for name in TESTED {
        assert!(
            names.iter().any(|n| n == name),
            "test {name} has no fixture"
        );
    }
}

#[test]
fn zipmap_labels_name_the_probability_columns() {
    for name in fixture_names() {
        let reference = Reference::load(&name);
        let zipmap = reference.outputs().iter().any(|o| o["kind"] == "zipmap");
        let path = common::fixtures_dir().join(&name).join("model.onnx");
        let bytes = std::fs::read(&path).unwrap();
        let labels = outpost_inference::onnx_ml::zipmap_labels_from_bytes(&bytes).unwrap();
        if zipmap {
            assert_eq!(labels, reference.class_labels(), "{name}");
        } else {
            assert_eq!(labels, None, "{name}");
        }
    }
}
