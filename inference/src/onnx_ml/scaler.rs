//! `Scaler` (ai.onnx.ml): `Y = (X - offset) * scale`, float output, `offset`/`scale`
//! of one value or one per feature (last axis). Wired as core ops (cast, sub, mul), so it
//! optimises with the rest of the graph and keeps a symbolic batch. f32, i64 and i32
//! inputs are computed in f32, f64 inputs in f64 then rounded, as onnxruntime does.
//! An absent `offset` is 0, an absent `scale` 1 (onnxruntime requires both).

use tract_onnx::model::{OnnxOpRegister, ParsingContext};
use tract_onnx::pb::NodeProto;
use tract_onnx::tract_core::ops::math::{mul, sub};
use tract_onnx::tract_hir::internal::*;

use super::attrs::floats_opt;
use super::wiring::{check_feature_len, feature_const, wire_cast, wire_int64};

pub fn register(reg: &mut OnnxOpRegister) {
    reg.insert("Scaler", scaler);
}

#[derive(Debug, Clone)]
pub struct Scaler {
    offset: Vec<f32>,
    scale: Vec<f32>,
}

fn scaler(
    _ctx: &ParsingContext,
    node: &NodeProto,
) -> TractResult<(Box<dyn InferenceOp>, Vec<String>)> {
    let offset = floats_opt(node, "offset")?;
    let scale = floats_opt(node, "scale")?;
    let (offset, scale) = match (offset, scale) {
        (Some(o), Some(s)) => {
            node.expect_attr("scale", o.len() == s.len(), || {
                format!("as many values as 'offset' ({}), got {}", o.len(), s.len())
            })?;
            (o, s)
        }
        (Some(o), None) => (o.clone(), vec![1.0; o.len()]),
        (None, Some(s)) => (vec![0.0; s.len()], s),
        (None, None) => return node.bail("expected 'offset' or 'scale'"),
    };
    node.expect_attr("scale", !scale.is_empty(), "at least one value")?;
    Ok((expand(Scaler { offset, scale }), vec![]))
}

impl Expansion for Scaler {
    fn name(&self) -> StaticName {
        "Scaler".into()
    }

    fn rules<'r, 'p: 'r, 's: 'r>(
        &'s self,
        s: &mut Solver<'r>,
        inputs: &'p [TensorProxy],
        outputs: &'p [TensorProxy],
    ) -> InferenceResult {
        check_input_arity(inputs, 1)?;
        check_output_arity(outputs, 1)?;
        s.equals(&outputs[0].datum_type, f32::datum_type())?;
        s.equals(&inputs[0].shape, &outputs[0].shape)?;
        Ok(())
    }

    fn wire(
        &self,
        prefix: &str,
        model: &mut TypedModel,
        inputs: &[OutletId],
    ) -> TractResult<TVec<OutletId>> {
        let fact = model.outlet_fact(inputs[0])?.clone();
        check_feature_len("Scaler", "scale", &fact, self.scale.len())?;
        let dt = if fact.datum_type == f64::datum_type() {
            f64::datum_type()
        } else {
            f32::datum_type()
        };
        let x = wire_int64(model, format!("{prefix}.as_i64"), inputs[0])?;
        let x = wire_cast(model, format!("{prefix}.cast"), x, dt)?;
        let rank = fact.rank();
        let offset = feature_const(tensor1(&self.offset).cast_to_dt(dt)?.into_owned(), rank)?;
        let scale = feature_const(tensor1(&self.scale).cast_to_dt(dt)?.into_owned(), rank)?;
        let offset = model.add_const(format!("{prefix}.offset"), offset)?;
        let scale = model.add_const(format!("{prefix}.scale"), scale)?;
        let y = model.wire_node(format!("{prefix}.sub"), sub(), &[x, offset])?[0];
        let y = model.wire_node(format!("{prefix}.mul"), mul(), &[y, scale])?[0];
        Ok(tvec!(wire_cast(
            model,
            prefix.to_string(),
            y,
            f32::datum_type()
        )?))
    }
}
