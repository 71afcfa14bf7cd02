//! Builders of one-node ai.onnx.ml models (attributes, inputs, the model) and the check
//! shared by the malformed-attribute tests (`onnx_ml_malformed_*.rs`): the valid baseline
//! must load and run, every mutation must fail without panicking.

// Each test file uses a subset of the builders.
#![allow(dead_code)]

use std::panic::{AssertUnwindSafe, catch_unwind};

use tract_onnx::pb::attribute_proto::AttributeType;
use tract_onnx::pb::tensor_shape_proto::{Dimension, dimension};
use tract_onnx::pb::{
    AttributeProto, GraphProto, ModelProto, NodeProto, OperatorSetIdProto, TensorProto,
    TensorShapeProto, TypeProto, ValueInfoProto, type_proto,
};
use tract_onnx::prelude::*;

pub const FLOAT: i32 = 1;
pub const INT64: i32 = 7;

pub fn attr(name: &str, ty: AttributeType) -> AttributeProto {
    AttributeProto {
        name: name.into(),
        r#type: ty as i32,
        ..Default::default()
    }
}
pub fn ints(name: &str, v: &[i64]) -> AttributeProto {
    AttributeProto {
        ints: v.to_vec(),
        ..attr(name, AttributeType::Ints)
    }
}
pub fn floats(name: &str, v: &[f32]) -> AttributeProto {
    AttributeProto {
        floats: v.to_vec(),
        ..attr(name, AttributeType::Floats)
    }
}
pub fn int(name: &str, v: i64) -> AttributeProto {
    AttributeProto {
        i: v,
        ..attr(name, AttributeType::Int)
    }
}
pub fn float(name: &str, v: f32) -> AttributeProto {
    AttributeProto {
        f: v,
        ..attr(name, AttributeType::Float)
    }
}
pub fn string(name: &str, v: &str) -> AttributeProto {
    AttributeProto {
        s: v.as_bytes().to_vec(),
        ..attr(name, AttributeType::String)
    }
}
pub fn strings(name: &str, v: &[&str]) -> AttributeProto {
    AttributeProto {
        strings: v.iter().map(|s| s.as_bytes().to_vec()).collect(),
        ..attr(name, AttributeType::Strings)
    }
}

/// Replaces (or adds) attributes by name; an attribute named `-x` removes `x`.
pub fn with(mut attrs: Vec<AttributeProto>, changes: Vec<AttributeProto>) -> Vec<AttributeProto> {
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

pub fn input(name: &str, elem_type: i32, width: i64) -> ValueInfoProto {
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
pub fn model(
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
pub fn try_model(proto: &ModelProto, feed: &[Tensor]) -> Result<(), String> {
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

pub fn rows(width: usize) -> Tensor {
    let mut v: Vec<f32> = (0..2 * width).map(|i| i as f32 * 0.25 - 0.5).collect();
    v[width] = f32::NAN;
    Tensor::from_shape(&[2, width], &v).unwrap()
}

/// Runs the baseline (must succeed) and every mutation (must fail, without panicking).
pub fn check(
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
