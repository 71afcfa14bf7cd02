//! ONNX models through tract, driven by the model contract (skeleton).
#![forbid(unsafe_code)]
#![warn(missing_docs)]

pub mod onnx_ml;

/// The ONNX loader with Outpost's extra operators registered (see [`onnx_ml`]).
pub fn onnx() -> tract_onnx::Onnx {
    let mut o = tract_onnx::onnx();
    onnx_ml::register(&mut o.op_register);
    o
}
