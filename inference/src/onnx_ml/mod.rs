//! ONNX-ML (`ai.onnx.ml`) operators that tract 0.23 lacks or gets wrong for the models
//! scikit-learn + skl2onnx write with default options. See `README.md` next to this file
//! for the operator list, their semantics and limits, and the estimators that load.
//!
//! Every builder validates its attributes when the model is parsed and returns an error
//! naming the node and attribute (never panics); sizes derived from attribute *values*
//! (not just their lengths) are capped by [`MAX_ATTR_ELEMENTS`].

use tract_onnx::model::OnnxOpRegister;

mod array_feature_extractor;
mod attrs;
mod binarizer;
mod feature_vectorizer;
mod imputer;
mod label_encoder;
mod one_hot_encoder;
mod post_transform;
mod scaler;
mod svm_classifier;
mod svm_common;
mod svm_regressor;
mod tree_classifier;
mod tree_ensemble;
mod tree_regressor;
mod wiring;
mod zipmap;

pub use zipmap::{zipmap_labels, zipmap_labels_from_bytes};

/// Upper bound on any size taken from an attribute's value (number of targets, of
/// features, of categories, ...): a crafted model cannot make an op allocate more.
pub const MAX_ATTR_ELEMENTS: usize = 1 << 24;

/// Upper bound on an op's output width taken from attributes (targets, classes): the
/// output buffer is `batch x width`.
pub const MAX_OUTPUT_WIDTH: usize = 1 << 16;

/// Registers the extra operators with the ONNX loader (overriding tract's own builder
/// where tract has one with different semantics).
pub fn register(reg: &mut OnnxOpRegister) {
    array_feature_extractor::register(reg);
    binarizer::register(reg);
    feature_vectorizer::register(reg);
    imputer::register(reg);
    label_encoder::register(reg);
    one_hot_encoder::register(reg);
    scaler::register(reg);
    svm_classifier::register(reg);
    svm_regressor::register(reg);
    tree_classifier::register(reg);
    tree_regressor::register(reg);
    zipmap::register(reg);
}
