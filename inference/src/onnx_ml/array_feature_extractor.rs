//! `ArrayFeatureExtractor` (ai.onnx.ml): `Z[..., j] = X[..., Y[j]]` over the flattened
//! indices `Y`. Replaces tract's builder, which gathers with `Y`'s own shape: onnxruntime
//! (and skl2onnx's graphs, e.g. the one-vs-one vote of a multi-class SVC) expect
//! `Z = X.shape[:-1] + [len(Y)]`, and `[1, len(Y)]` for a 1-D `X`. Wired as core ops
//! (reshape, `Gather` on the last axis) behind an index check: an index outside
//! `0..X.shape[-1]` fails the run (or the load, when `Y` is a constant) instead of
//! reading another row.

use tract_onnx::model::{OnnxOpRegister, ParsingContext};
use tract_onnx::pb::NodeProto;
use tract_onnx::tract_core::ops::array::Gather;
use tract_onnx::tract_hir::internal::*;

use super::wiring::wire_int64;

pub fn register(reg: &mut OnnxOpRegister) {
    reg.insert("ArrayFeatureExtractor", array_feature_extractor);
}

fn array_feature_extractor(
    _ctx: &ParsingContext,
    _node: &NodeProto,
) -> TractResult<(Box<dyn InferenceOp>, Vec<String>)> {
    Ok((expand(ArrayFeatureExtractor), vec![]))
}

#[derive(Debug, Clone, Hash, PartialEq, Eq)]
pub struct ArrayFeatureExtractor;

impl Expansion for ArrayFeatureExtractor {
    fn name(&self) -> StaticName {
        "ArrayFeatureExtractor".into()
    }

    fn rules<'r, 'p: 'r, 's: 'r>(
        &'s self,
        s: &mut Solver<'r>,
        inputs: &'p [TensorProxy],
        outputs: &'p [TensorProxy],
    ) -> InferenceResult {
        check_input_arity(inputs, 2)?;
        check_output_arity(outputs, 1)?;
        s.equals(&inputs[0].datum_type, &outputs[0].datum_type)?;
        s.given_2(&inputs[0].shape, &inputs[1].shape, move |s, x, y| {
            let n: TDim = y.iter().product();
            let mut shape: TVec<TDim> = if x.len() <= 1 {
                tvec!(1.to_dim())
            } else {
                x[..x.len() - 1].into()
            };
            shape.push(n);
            s.equals(&outputs[0].shape, shape)
        })
    }

    fn wire(
        &self,
        prefix: &str,
        model: &mut TypedModel,
        inputs: &[OutletId],
    ) -> TractResult<TVec<OutletId>> {
        let mut x = inputs[0];
        let rank = model.outlet_fact(x)?.rank();
        ensure!(
            rank >= 1,
            "ArrayFeatureExtractor: X must have rank 1 or more"
        );
        if rank == 1 {
            x = model.wire_node(format!("{prefix}.as_row"), AxisOp::Add(0), &[x])?[0];
        }
        let mut y = wire_int64(model, format!("{prefix}.indices_as_i64"), inputs[1])?;
        ensure!(
            model.outlet_fact(y)?.datum_type == i64::datum_type(),
            "ArrayFeatureExtractor: indices must be int64"
        );
        let y_shape: TVec<TDim> = model.outlet_fact(y)?.shape.iter().cloned().collect();
        if y_shape.len() != 1 {
            let n: TDim = y_shape.iter().product();
            y = model.wire_node(
                format!("{prefix}.flatten_indices"),
                AxisOp::Reshape(0, y_shape, tvec!(n)),
                &[y],
            )?[0];
        }
        let y = model.wire_node(format!("{prefix}.check_indices"), IndexCheck, &[x, y])?[0];
        let axis = model.outlet_fact(x)?.rank() - 1;
        model.wire_node(
            prefix,
            Gather {
                axis,
                output_type: None,
            },
            &[x, y],
        )
    }
}

/// Passes its second input (int64 indices) through after checking that every index
/// is in `0..len` where `len` is the last dimension of the first input, and that there
/// is at least one.
#[derive(Debug, Clone, Hash, PartialEq, Eq)]
pub struct IndexCheck;

impl Op for IndexCheck {
    fn name(&self) -> StaticName {
        "ArrayFeatureExtractorIndexCheck".into()
    }

    op_as_typed_op!();
}

impl EvalOp for IndexCheck {
    fn eval(&self, _ctx: &EvalContext, inputs: TVec<TValue>) -> TractResult<TVec<TValue>> {
        let len = *inputs[0]
            .shape()
            .last()
            .context("ArrayFeatureExtractor: X has rank 0")?;
        let indices = inputs[1].try_as_plain_ram()?;
        let indices = indices.as_slice::<i64>()?;
        ensure!(!indices.is_empty(), "ArrayFeatureExtractor: no indices");
        if let Some(bad) = indices.iter().find(|&&i| i < 0 || i as u64 >= len as u64) {
            bail!("ArrayFeatureExtractor: index {bad} out of range 0..{len}");
        }
        Ok(tvec!(inputs[1].clone()))
    }

    op_out_of_plan!();
}

impl TypedOp for IndexCheck {
    fn output_facts(&self, inputs: &[&TypedFact]) -> TractResult<TVec<TypedFact>> {
        ensure!(inputs.len() == 2 && inputs[1].datum_type == i64::datum_type());
        Ok(tvec!(inputs[1].without_value()))
    }

    as_op!();
}
