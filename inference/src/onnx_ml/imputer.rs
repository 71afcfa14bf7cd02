//! `Imputer` (ai.onnx.ml): replaces the entries equal to `replaced_value_float` (any NaN
//! when it is NaN) or `replaced_value_int64` by `imputed_value_floats` /
//! `imputed_value_int64s` (one value for all features, or one per feature). float and
//! int64 inputs, as onnxruntime. Wired as core ops (IsNaN or Equal, then Iff).

use tract_onnx::model::{OnnxOpRegister, ParsingContext};
use tract_onnx::pb::NodeProto;
use tract_onnx::tract_core::ops::binary::TypedBinOp;
use tract_onnx::tract_core::ops::logic::{Iff, comp_eq};
use tract_onnx::tract_core::ops::math::is_nan;
use tract_onnx::tract_hir::internal::*;

use super::attrs::{floats_opt, ints};
use super::wiring::{check_feature_len, feature_const, wire_int64};

pub fn register(reg: &mut OnnxOpRegister) {
    reg.insert("Imputer", imputer);
}

#[derive(Debug, Clone)]
pub enum Imputer {
    Float { replaced: f32, imputed: Vec<f32> },
    Int { replaced: i64, imputed: Vec<i64> },
}

fn imputer(
    _ctx: &ParsingContext,
    node: &NodeProto,
) -> TractResult<(Box<dyn InferenceOp>, Vec<String>)> {
    let floats = floats_opt(node, "imputed_value_floats")?.filter(|v| !v.is_empty());
    let int64s = Some(ints(node, "imputed_value_int64s")?).filter(|v| !v.is_empty());
    let op = match (floats, int64s) {
        (Some(imputed), None) => {
            let replaced = node
                .get_attr_opt::<f32>("replaced_value_float")?
                .unwrap_or(0.0);
            Imputer::Float { replaced, imputed }
        }
        (None, Some(imputed)) => {
            let replaced = node
                .get_attr_opt::<i64>("replaced_value_int64")?
                .unwrap_or(0);
            Imputer::Int { replaced, imputed }
        }
        _ => {
            return node
                .bail("expected exactly one of 'imputed_value_floats' and 'imputed_value_int64s'");
        }
    };
    Ok((expand(op), vec![]))
}

impl Expansion for Imputer {
    fn name(&self) -> StaticName {
        "Imputer".into()
    }

    fn rules<'r, 'p: 'r, 's: 'r>(
        &'s self,
        s: &mut Solver<'r>,
        inputs: &'p [TensorProxy],
        outputs: &'p [TensorProxy],
    ) -> InferenceResult {
        check_input_arity(inputs, 1)?;
        check_output_arity(outputs, 1)?;
        let dt = match self {
            Imputer::Float { .. } => f32::datum_type(),
            Imputer::Int { .. } => i64::datum_type(),
        };
        s.equals(&outputs[0].datum_type, dt)?;
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
        let rank = fact.rank();
        let (x, mask, imputed) = match self {
            Imputer::Float { replaced, imputed } => {
                ensure!(
                    fact.datum_type == f32::datum_type(),
                    "Imputer: float imputed values need a float input, got {:?}",
                    fact.datum_type
                );
                check_feature_len("Imputer", "imputed_value_floats", &fact, imputed.len())?;
                let x = inputs[0];
                let mask = if replaced.is_nan() {
                    model.wire_node(format!("{prefix}.is_nan"), is_nan(), &[x])?[0]
                } else {
                    let r = model.add_const(
                        format!("{prefix}.replaced"),
                        feature_const(tensor1(&[*replaced]), rank)?,
                    )?;
                    model.wire_node(format!("{prefix}.eq"), TypedBinOp(comp_eq(), None), &[x, r])?
                        [0]
                };
                (x, mask, feature_const(tensor1(imputed), rank)?)
            }
            Imputer::Int { replaced, imputed } => {
                let x = wire_int64(model, format!("{prefix}.as_i64"), inputs[0])?;
                ensure!(
                    model.outlet_fact(x)?.datum_type == i64::datum_type(),
                    "Imputer: int64 imputed values need an int64 input, got {:?}",
                    fact.datum_type
                );
                check_feature_len("Imputer", "imputed_value_int64s", &fact, imputed.len())?;
                let r = model.add_const(
                    format!("{prefix}.replaced"),
                    feature_const(tensor1(&[*replaced]), rank)?,
                )?;
                let mask = model.wire_node(
                    format!("{prefix}.eq"),
                    TypedBinOp(comp_eq(), None),
                    &[x, r],
                )?[0];
                (x, mask, feature_const(tensor1(imputed), rank)?)
            }
        };
        let imputed = model.add_const(format!("{prefix}.imputed"), imputed)?;
        model.wire_node(prefix, Iff, &[mask, imputed, x])
    }
}
