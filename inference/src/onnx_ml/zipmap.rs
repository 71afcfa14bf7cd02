//! `ZipMap`: turns a float tensor `[N, C]` of class scores into a sequence of N maps
//! `{class label: score}`. tract has no map or sequence values, so Outpost's `ZipMap`
//! passes the tensor through unchanged: the output is the float `[N, C]` tensor whose
//! column `j` is the score of the `j`-th label of the node's `classlabels_int64s` /
//! `classlabels_strings` (the classifier's `classes_` order for skl2onnx models).
//! [`zipmap_labels`] returns those labels so callers can name the columns.

use tract_onnx::model::{OnnxOpRegister, ParsingContext};
use tract_onnx::pb::{ModelProto, NodeProto};
use tract_onnx::prelude::*;
use tract_onnx::tract_hir::internal::*;

use super::attrs::Labels;

pub fn register(reg: &mut OnnxOpRegister) {
    reg.insert("ZipMap", zipmap);
}

#[derive(Debug, Clone, Hash, PartialEq, Eq)]
pub struct ZipMap {
    pub n_labels: usize,
}

fn zipmap(
    _ctx: &ParsingContext,
    node: &NodeProto,
) -> TractResult<(Box<dyn InferenceOp>, Vec<String>)> {
    let labels = Labels::parse(node, "classlabels_int64s", "classlabels_strings")?;
    Ok((
        expand(ZipMap {
            n_labels: labels.len(),
        }),
        vec![],
    ))
}

impl Expansion for ZipMap {
    fn name(&self) -> StaticName {
        "ZipMap".into()
    }

    fn rules<'r, 'p: 'r, 's: 'r>(
        &'s self,
        s: &mut Solver<'r>,
        inputs: &'p [TensorProxy],
        outputs: &'p [TensorProxy],
    ) -> InferenceResult {
        check_input_arity(inputs, 1)?;
        check_output_arity(outputs, 1)?;
        s.equals(&inputs[0].datum_type, f32::datum_type())?;
        s.equals(&outputs[0].datum_type, f32::datum_type())?;
        s.equals(&inputs[0].rank, 2)?;
        s.equals(&inputs[0].shape[1], self.n_labels.to_dim())?;
        s.equals(&inputs[0].shape, &outputs[0].shape)?;
        Ok(())
    }

    fn wire(
        &self,
        _prefix: &str,
        _model: &mut TypedModel,
        inputs: &[OutletId],
    ) -> TractResult<TVec<OutletId>> {
        Ok(tvec!(inputs[0]))
    }
}

/// The class labels of the model's `ZipMap` (the first one feeding a graph output, else
/// the first one), as strings: the names of the columns of its probability tensor.
/// `None` when the model has no `ZipMap` or its labels are malformed.
pub fn zipmap_labels(proto: &ModelProto) -> Option<Vec<String>> {
    let graph = proto.graph.as_ref()?;
    let zipmaps: Vec<&NodeProto> = graph
        .node
        .iter()
        .filter(|n| n.op_type == "ZipMap")
        .collect();
    let feeds_output = |n: &&&NodeProto| {
        n.output
            .iter()
            .any(|o| graph.output.iter().any(|g| &g.name == o))
    };
    let node = zipmaps.iter().find(feeds_output).or(zipmaps.first())?;
    Labels::parse(node, "classlabels_int64s", "classlabels_strings")
        .ok()
        .map(|l| l.as_strings())
}

/// [`zipmap_labels`] from the bytes of an ONNX model.
pub fn zipmap_labels_from_bytes(onnx: &[u8]) -> TractResult<Option<Vec<String>>> {
    let proto = tract_onnx::onnx().proto_model_for_read(&mut &onnx[..])?;
    Ok(zipmap_labels(&proto))
}
