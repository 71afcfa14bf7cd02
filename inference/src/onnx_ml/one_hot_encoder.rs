//! `OneHotEncoder` (ai.onnx.ml): `Y[..., j] = 1.0` where `X[...]` is the `j`-th category
//! of `cats_int64s` / `cats_strings`, else 0; `Y` has `X`'s shape plus one axis of
//! `len(cats)`. An unknown value gives a row of zeros when `zeros = 1` (the default), and
//! fails the run when `zeros = 0` (what skl2onnx writes for `handle_unknown='error'`),
//! as in onnxruntime. Inputs: int64 (tract's TDim too), int32, float/double (truncated
//! to int64; NaN and infinities are unknown categories) with `cats_int64s`; strings with
//! `cats_strings`. Rank 1 or 2, as onnxruntime. A category listed twice maps to its last
//! position (onnxruntime's behaviour).

use std::collections::HashMap;
use std::sync::Arc;

use tract_onnx::model::{OnnxOpRegister, ParsingContext};
use tract_onnx::pb::NodeProto;
use tract_onnx::tract_hir::internal::*;

use super::attrs::Labels;
use super::wiring::wire_int64;

pub fn register(reg: &mut OnnxOpRegister) {
    reg.insert("OneHotEncoder", one_hot_encoder);
}

#[derive(Debug)]
enum Categories {
    Ints(HashMap<i64, usize>),
    Strings(HashMap<String, usize>),
}

#[derive(Debug)]
pub struct Encoder {
    categories: Categories,
    n: usize,
    zeros: bool,
}

fn one_hot_encoder(
    _ctx: &ParsingContext,
    node: &NodeProto,
) -> TractResult<(Box<dyn InferenceOp>, Vec<String>)> {
    let cats = Labels::parse(node, "cats_int64s", "cats_strings")?;
    let n = cats.len();
    let categories = match cats {
        Labels::Ints(v) => {
            Categories::Ints(v.into_iter().enumerate().map(|(i, c)| (c, i)).collect())
        }
        Labels::Strings(v) => {
            Categories::Strings(v.into_iter().enumerate().map(|(i, c)| (c, i)).collect())
        }
    };
    let zeros = match node.get_attr_opt::<i64>("zeros")?.unwrap_or(1) {
        0 => false,
        1 => true,
        other => return node.bail_attr("zeros", &format!("expected 0 or 1, got {other}")),
    };
    Ok((
        expand(OneHotEncoder(Arc::new(Encoder {
            categories,
            n,
            zeros,
        }))),
        vec![],
    ))
}

#[derive(Debug, Clone)]
pub struct OneHotEncoder(Arc<Encoder>);

impl Expansion for OneHotEncoder {
    fn name(&self) -> StaticName {
        "OneHotEncoder".into()
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
        s.equals(&outputs[0].rank, inputs[0].rank.bex() + 1)?;
        let n = self.0.n;
        s.given(&inputs[0].rank, move |s, rank| {
            let rank = rank as usize;
            for axis in 0..rank {
                s.equals(&outputs[0].shape[axis], &inputs[0].shape[axis])?;
            }
            s.equals(&outputs[0].shape[rank], n.to_dim())
        })
    }

    fn wire(
        &self,
        prefix: &str,
        model: &mut TypedModel,
        inputs: &[OutletId],
    ) -> TractResult<TVec<OutletId>> {
        let x = wire_int64(model, format!("{prefix}.as_i64"), inputs[0])?;
        let fact = model.outlet_fact(x)?;
        ensure!(
            (1..=2).contains(&fact.rank()),
            "OneHotEncoder: expected an input of rank 1 or 2, got {fact:?}"
        );
        let dt = fact.datum_type;
        match self.0.categories {
            Categories::Ints(_) => ensure!(
                [i64::datum_type(), f32::datum_type(), f64::datum_type()].contains(&dt),
                "OneHotEncoder: integer categories need a numeric input, got {dt:?}"
            ),
            Categories::Strings(_) => ensure!(
                dt == String::datum_type(),
                "OneHotEncoder: string categories need a string input, got {dt:?}"
            ),
        }
        model.wire_node(prefix, OneHotEncoderOp(self.0.clone()), &[x])
    }
}

#[derive(Debug, Clone)]
pub struct OneHotEncoderOp(Arc<Encoder>);

impl PartialEq for OneHotEncoderOp {
    fn eq(&self, other: &Self) -> bool {
        Arc::ptr_eq(&self.0, &other.0)
    }
}
impl Eq for OneHotEncoderOp {}

impl Op for OneHotEncoderOp {
    fn name(&self) -> StaticName {
        "OneHotEncoder".into()
    }

    fn info(&self) -> TractResult<Vec<String>> {
        Ok(vec![format!(
            "{} categories, zeros: {}",
            self.0.n, self.0.zeros
        )])
    }

    op_as_typed_op!();
}

impl Encoder {
    fn index_of_int(&self, v: i64) -> Option<usize> {
        match &self.categories {
            Categories::Ints(map) => map.get(&v).copied(),
            Categories::Strings(_) => None,
        }
    }

    fn indices(&self, x: &Tensor) -> TractResult<Vec<Option<usize>>> {
        let plain = x.try_as_plain_ram()?;
        Ok(match x.datum_type() {
            DatumType::I64 => plain
                .as_slice::<i64>()?
                .iter()
                .map(|&v| self.index_of_int(v))
                .collect(),
            DatumType::F32 => plain
                .as_slice::<f32>()?
                .iter()
                .map(|&v| {
                    if v.is_finite() {
                        self.index_of_int(v as i64)
                    } else {
                        None
                    }
                })
                .collect(),
            DatumType::F64 => plain
                .as_slice::<f64>()?
                .iter()
                .map(|&v| {
                    if v.is_finite() {
                        self.index_of_int(v as i64)
                    } else {
                        None
                    }
                })
                .collect(),
            DatumType::String => match &self.categories {
                Categories::Strings(map) => plain
                    .as_slice::<String>()?
                    .iter()
                    .map(|v| map.get(v).copied())
                    .collect(),
                Categories::Ints(_) => bail!("OneHotEncoder: string input for integer categories"),
            },
            dt => bail!("OneHotEncoder: unsupported input type {dt:?}"),
        })
    }
}

impl EvalOp for OneHotEncoderOp {
    fn eval(&self, _ctx: &EvalContext, inputs: TVec<TValue>) -> TractResult<TVec<TValue>> {
        let x = &inputs[0];
        let n = self.0.n;
        let indices = self.0.indices(x)?;
        let mut out = vec![0f32; indices.len() * n];
        for (i, ix) in indices.iter().enumerate() {
            match ix {
                Some(j) => out[i * n + j] = 1.0,
                None if self.0.zeros => {}
                None => bail!("OneHotEncoder: unknown category at index {i} (zeros = 0)"),
            }
        }
        let mut shape: TVec<usize> = x.shape().into();
        shape.push(n);
        Ok(tvec!(Tensor::from_shape(&shape, &out)?.into_tvalue()))
    }

    op_out_of_plan!();
}

impl TypedOp for OneHotEncoderOp {
    fn output_facts(&self, inputs: &[&TypedFact]) -> TractResult<TVec<TypedFact>> {
        let mut shape: TVec<TDim> = inputs[0].shape.iter().cloned().collect();
        shape.push(self.0.n.to_dim());
        Ok(tvec!(f32::fact(shape)))
    }

    as_op!();
}
