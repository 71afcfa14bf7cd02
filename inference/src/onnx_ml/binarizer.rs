//! `Binarizer` (ai.onnx.ml): `Y = X > threshold ? 1 : 0`, same type as `X` (threshold
//! default 1.0, cast to the input type). Wired as core ops (comparison, cast).
//! onnxruntime (float only) fails on NaN inputs; here NaN gives 0.

use tract_onnx::model::{OnnxOpRegister, ParsingContext};
use tract_onnx::pb::NodeProto;
use tract_onnx::tract_core::ops::binary::TypedBinOp;
use tract_onnx::tract_core::ops::logic::comp_gt;
use tract_onnx::tract_hir::internal::*;

use super::wiring::{feature_const, wire_cast, wire_int64};

pub fn register(reg: &mut OnnxOpRegister) {
    reg.insert("Binarizer", binarizer);
}

#[derive(Debug, Clone)]
pub struct Binarizer {
    threshold: f32,
}

fn binarizer(
    _ctx: &ParsingContext,
    node: &NodeProto,
) -> TractResult<(Box<dyn InferenceOp>, Vec<String>)> {
    let threshold = node.get_attr_opt::<f32>("threshold")?.unwrap_or(1.0);
    Ok((expand(Binarizer { threshold }), vec![]))
}

impl Expansion for Binarizer {
    fn name(&self) -> StaticName {
        "Binarizer".into()
    }

    fn rules<'r, 'p: 'r, 's: 'r>(
        &'s self,
        s: &mut Solver<'r>,
        inputs: &'p [TensorProxy],
        outputs: &'p [TensorProxy],
    ) -> InferenceResult {
        check_input_arity(inputs, 1)?;
        check_output_arity(outputs, 1)?;
        s.equals(&inputs[0].datum_type, &outputs[0].datum_type)?;
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
        let dt = fact.datum_type;
        ensure!(
            [
                f32::datum_type(),
                f64::datum_type(),
                i64::datum_type(),
                i32::datum_type(),
                TDim::datum_type()
            ]
            .contains(&dt),
            "Binarizer: unsupported input type {dt:?}"
        );
        let x = wire_int64(model, format!("{prefix}.as_i64"), inputs[0])?;
        let xdt = model.outlet_fact(x)?.datum_type;
        let threshold = if xdt.is_float() {
            tensor1(&[self.threshold]).cast_to_dt(xdt)?.into_owned()
        } else {
            // x > t for an integer x is x > floor(t).
            let t = self.threshold.floor();
            let t = if t.is_nan() {
                i64::MAX
            } else {
                t.clamp(i64::MIN as f32, i64::MAX as f32) as i64
            };
            tensor1(&[t]).cast_to_dt(xdt)?.into_owned()
        };
        let threshold = model.add_const(
            format!("{prefix}.threshold"),
            feature_const(threshold, fact.rank())?,
        )?;
        let above = model.wire_node(
            format!("{prefix}.gt"),
            TypedBinOp(comp_gt(), None),
            &[x, threshold],
        )?[0];
        Ok(tvec!(wire_cast(model, prefix.to_string(), above, xdt)?))
    }
}
