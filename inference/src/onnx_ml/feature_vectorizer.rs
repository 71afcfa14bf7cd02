//! `FeatureVectorizer` (ai.onnx.ml): concatenates its inputs (rank 2, any numeric type,
//! cast to float) along the feature axis, input `i` contributing `inputdimensions[i]`
//! columns: extra columns are dropped, missing ones are zero-filled (onnxruntime's
//! behaviour). Wired as core ops (cast, slice, pad, concat).

use tract_onnx::model::{OnnxOpRegister, ParsingContext};
use tract_onnx::pb::NodeProto;
use tract_onnx::tract_core::ops::array::{Pad, PadMode, Slice, TypedConcat};
use tract_onnx::tract_hir::internal::*;

use super::MAX_ATTR_ELEMENTS;
use super::attrs::{ints, size};
use super::wiring::{wire_cast, wire_int64};

pub fn register(reg: &mut OnnxOpRegister) {
    reg.insert("FeatureVectorizer", feature_vectorizer);
}

#[derive(Debug, Clone)]
pub struct FeatureVectorizer {
    dims: Vec<usize>,
}

fn feature_vectorizer(
    _ctx: &ParsingContext,
    node: &NodeProto,
) -> TractResult<(Box<dyn InferenceOp>, Vec<String>)> {
    let raw = ints(node, "inputdimensions")?;
    let inputs = node.input.iter().filter(|i| !i.is_empty()).count();
    node.expect_attr("inputdimensions", raw.len() == inputs && inputs > 0, || {
        format!("one value per input ({inputs}), got {}", raw.len())
    })?;
    let dims = raw
        .iter()
        .map(|&d| size(node, "inputdimensions", d))
        .collect::<TractResult<Vec<_>>>()?;
    let total: usize = dims.iter().sum();
    node.expect_attr("inputdimensions", total <= MAX_ATTR_ELEMENTS, || {
        format!("at most {MAX_ATTR_ELEMENTS} features in all, got {total}")
    })?;
    Ok((expand(FeatureVectorizer { dims }), vec![]))
}

impl Expansion for FeatureVectorizer {
    fn name(&self) -> StaticName {
        "FeatureVectorizer".into()
    }

    fn rules<'r, 'p: 'r, 's: 'r>(
        &'s self,
        s: &mut Solver<'r>,
        inputs: &'p [TensorProxy],
        outputs: &'p [TensorProxy],
    ) -> InferenceResult {
        check_input_arity(inputs, self.dims.len())?;
        check_output_arity(outputs, 1)?;
        s.equals(&outputs[0].datum_type, f32::datum_type())?;
        s.equals(&outputs[0].rank, 2)?;
        s.equals(
            &outputs[0].shape[1],
            self.dims.iter().sum::<usize>().to_dim(),
        )?;
        for input in inputs {
            s.equals(&input.rank, 2)?;
            s.equals(&input.shape[0], &outputs[0].shape[0])?;
        }
        Ok(())
    }

    fn wire(
        &self,
        prefix: &str,
        model: &mut TypedModel,
        inputs: &[OutletId],
    ) -> TractResult<TVec<OutletId>> {
        let mut parts = tvec![];
        for (i, (&input, &want)) in inputs.iter().zip(self.dims.iter()).enumerate() {
            let x = wire_int64(model, format!("{prefix}.{i}.as_i64"), input)?;
            let x = wire_cast(model, format!("{prefix}.{i}.cast"), x, f32::datum_type())?;
            let fact = model.outlet_fact(x)?.clone();
            ensure!(
                fact.rank() == 2,
                "FeatureVectorizer: input {i} must have rank 2, got {fact:?}"
            );
            let have = fact.shape[1].to_usize().map_err(|_| {
                format_err!("FeatureVectorizer: input {i} needs a known number of features")
            })?;
            let x = if have > want {
                model.wire_node(format!("{prefix}.{i}.slice"), Slice::new(1, 0, want), &[x])?[0]
            } else if have < want {
                let pad = Pad::new(
                    vec![(0, 0), (0, want - have)],
                    PadMode::Constant(rctensor0(0f32)),
                );
                model.wire_node(format!("{prefix}.{i}.pad"), pad, &[x])?[0]
            } else {
                x
            };
            parts.push(x);
        }
        if parts.len() == 1 {
            return Ok(parts);
        }
        model.wire_node(prefix, TypedConcat::new(1), &parts)
    }
}
