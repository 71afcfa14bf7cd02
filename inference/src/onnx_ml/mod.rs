//! ONNX-ML operators that tract does not ship (skeleton).

use tract_onnx::model::OnnxOpRegister;

/// Registers the extra operators with the ONNX loader.
pub fn register(_reg: &mut OnnxOpRegister) {}
