//! ONNX models through tract, driven by the model contract.
//!
//! The bridge validates and profiles models with this crate and the agent serves them with
//! it, so a model is checked at registration by exactly the code that runs it on the
//! gateway. Depends on the protocol crate and tract only.
//!
//! | module | what |
//! |---|---|
//! | [`model`] | [`Model`]: load for a contract, `infer` (named OIP tensors), feature rows, self-test |
//! | [`load`] | ONNX bytes + contract → optimised plan (input facts, symbolic or fixed batch) |
//! | [`graph`] | read a graph's interface, unsupported operators, derive a contract |
//! | [`selftest`] | self-test samples for models registered without any |
//! | [`spec`] | the user's spec: what it adds to the graph (features, normalisation, task, self-tests) |
//! | [`convert`] | OIP tensors ↔ tract tensors |
//! | [`onnx_ml`] | ONNX-ML operators tract does not ship (scikit-learn exports) |
//! | [`error`] | errors, split into the caller's and the model's |
#![forbid(unsafe_code)]
#![warn(missing_docs)]

pub mod convert;
pub mod error;
pub mod graph;
pub mod load;
pub mod model;
pub mod onnx_ml;
pub mod selftest;
pub mod spec;

pub use error::{InferenceError, MAX_BATCH, RequestError};
pub use graph::{GraphInfo, contract_from_graph, inspect};
pub use load::Batching;
pub use model::{Model, Scored, SelfTestReport};

/// The ONNX loader with Outpost's extra operators registered (see [`onnx_ml`]).
pub fn onnx() -> tract_onnx::Onnx {
    let mut o = tract_onnx::onnx();
    onnx_ml::register(&mut o.op_register);
    o
}
