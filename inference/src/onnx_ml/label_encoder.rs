//! `LabelEncoder` (ai.onnx.ml opsets 2-4): maps each input element through
//! `keys_*` -> `values_*` (int64, float or string lists, or opset 4's `keys_tensor` /
//! `values_tensor` of those types), elements without a key getting the default
//! (`default_int64` -1, `default_float` -0.0, `default_string` "_Unused", or
//! `default_tensor`). Output: the input's shape, the values' type. Float keys match NaN to
//! NaN and 0.0 to -0.0; a key listed twice keeps its first value (onnxruntime's
//! behaviour). The opset-1 form (`classes_strings`) is refused.

use std::collections::HashMap;
use std::sync::Arc;

use tract_onnx::model::{OnnxOpRegister, ParsingContext};
use tract_onnx::pb::{NodeProto, TensorProto};
use tract_onnx::tract_hir::internal::*;

use super::attrs::describe;
use super::wiring::wire_int64;

pub fn register(reg: &mut OnnxOpRegister) {
    reg.insert("LabelEncoder", label_encoder);
}

/// A typed list read from `<prefix>_int64s` / `_floats` / `_strings` or `<prefix>_tensor`.
#[derive(Debug, Clone)]
enum List {
    Ints(Vec<i64>),
    Floats(Vec<f32>),
    Strings(Vec<String>),
}

impl List {
    fn len(&self) -> usize {
        match self {
            List::Ints(v) => v.len(),
            List::Floats(v) => v.len(),
            List::Strings(v) => v.len(),
        }
    }

    fn datum_type(&self) -> DatumType {
        match self {
            List::Ints(_) => i64::datum_type(),
            List::Floats(_) => f32::datum_type(),
            List::Strings(_) => String::datum_type(),
        }
    }

    fn from_tensor(node: &NodeProto, attr: &str, t: Tensor) -> TractResult<List> {
        let plain = t.try_as_plain_ram()?;
        Ok(match t.datum_type() {
            DatumType::I64 => List::Ints(plain.as_slice::<i64>()?.to_vec()),
            DatumType::F32 => List::Floats(plain.as_slice::<f32>()?.to_vec()),
            DatumType::String => List::Strings(plain.as_slice::<String>()?.to_vec()),
            dt => {
                return node.bail_attr(
                    attr,
                    &format!("unsupported type {dt:?} (int64, float, string)"),
                );
            }
        })
    }

    fn parse(ctx: &ParsingContext, node: &NodeProto, prefix: &str) -> TractResult<List> {
        let ints = node.get_attr_opt_vec::<i64>(&format!("{prefix}_int64s"))?;
        let floats = node.get_attr_opt_vec::<f32>(&format!("{prefix}_floats"))?;
        let strings = node.get_attr_opt_vec::<String>(&format!("{prefix}_strings"))?;
        let tensor_attr = format!("{prefix}_tensor");
        let tensor = node.get_attr_opt::<&TensorProto>(&tensor_attr)?;
        let mut found: Vec<List> = vec![];
        found.extend(ints.map(List::Ints));
        found.extend(floats.map(List::Floats));
        found.extend(strings.map(List::Strings));
        if let Some(t) = tensor {
            found.push(List::from_tensor(node, &tensor_attr, ctx.load_tensor(t)?)?);
        }
        match found.len() {
            1 => Ok(found.pop().unwrap()),
            0 => bail!(
                "{}: needs one of {prefix}_int64s, _floats, _strings, _tensor",
                describe(node)
            ),
            _ => bail!(
                "{}: only one of {prefix}_int64s, _floats, _strings, _tensor may be set",
                describe(node)
            ),
        }
    }
}

/// Float keys hashed by bits, NaN and zero canonicalised.
fn float_key(v: f32) -> u32 {
    if v.is_nan() {
        f32::NAN.to_bits()
    } else if v == 0.0 {
        0
    } else {
        v.to_bits()
    }
}

#[derive(Debug)]
enum Keys {
    Ints(HashMap<i64, usize>),
    Floats(HashMap<u32, usize>),
    Strings(HashMap<String, usize>),
}

#[derive(Debug)]
pub struct Encoder {
    keys: Keys,
    key_type: DatumType,
    values: List,
    /// One-element list of the default value.
    default: List,
}

fn label_encoder(
    ctx: &ParsingContext,
    node: &NodeProto,
) -> TractResult<(Box<dyn InferenceOp>, Vec<String>)> {
    if node.attribute.iter().any(|a| a.name == "classes_strings") {
        return node.bail_attr(
            "classes_strings",
            "the opset-1 LabelEncoder is not supported",
        );
    }
    let keys = List::parse(ctx, node, "keys")?;
    let values = List::parse(ctx, node, "values")?;
    node.expect_attr("values", keys.len() == values.len(), || {
        format!(
            "as many values as keys ({}), got {}",
            keys.len(),
            values.len()
        )
    })?;
    let key_type = keys.datum_type();
    let keys = match keys {
        List::Ints(v) => {
            let mut m = HashMap::with_capacity(v.len());
            v.into_iter().enumerate().for_each(|(i, k)| {
                m.entry(k).or_insert(i);
            });
            Keys::Ints(m)
        }
        List::Floats(v) => {
            let mut m = HashMap::with_capacity(v.len());
            v.into_iter().enumerate().for_each(|(i, k)| {
                m.entry(float_key(k)).or_insert(i);
            });
            Keys::Floats(m)
        }
        List::Strings(v) => {
            let mut m = HashMap::with_capacity(v.len());
            v.into_iter().enumerate().for_each(|(i, k)| {
                m.entry(k).or_insert(i);
            });
            Keys::Strings(m)
        }
    };
    let default = match node.get_attr_opt::<&TensorProto>("default_tensor")? {
        Some(t) => {
            let d = List::from_tensor(node, "default_tensor", ctx.load_tensor(t)?)?;
            node.expect_attr("default_tensor", d.len() == 1, "a single value")?;
            node.expect_attr(
                "default_tensor",
                d.datum_type() == values.datum_type(),
                "the values' type",
            )?;
            d
        }
        None => match values {
            List::Ints(_) => List::Ints(vec![
                node.get_attr_opt::<i64>("default_int64")?.unwrap_or(-1),
            ]),
            List::Floats(_) => List::Floats(vec![
                node.get_attr_opt::<f32>("default_float")?.unwrap_or(-0.0),
            ]),
            List::Strings(_) => List::Strings(vec![
                node.get_attr_opt::<String>("default_string")?
                    .unwrap_or_else(|| "_Unused".into()),
            ]),
        },
    };
    Ok((
        expand(LabelEncoder(Arc::new(Encoder {
            keys,
            key_type,
            values,
            default,
        }))),
        vec![],
    ))
}

#[derive(Debug, Clone)]
pub struct LabelEncoder(Arc<Encoder>);

impl Expansion for LabelEncoder {
    fn name(&self) -> StaticName {
        "LabelEncoder".into()
    }

    fn rules<'r, 'p: 'r, 's: 'r>(
        &'s self,
        s: &mut Solver<'r>,
        inputs: &'p [TensorProxy],
        outputs: &'p [TensorProxy],
    ) -> InferenceResult {
        check_input_arity(inputs, 1)?;
        check_output_arity(outputs, 1)?;
        s.equals(&outputs[0].datum_type, self.0.values.datum_type())?;
        s.equals(&inputs[0].shape, &outputs[0].shape)?;
        Ok(())
    }

    fn wire(
        &self,
        prefix: &str,
        model: &mut TypedModel,
        inputs: &[OutletId],
    ) -> TractResult<TVec<OutletId>> {
        let x = wire_int64(model, format!("{prefix}.as_i64"), inputs[0])?;
        let dt = model.outlet_fact(x)?.datum_type;
        ensure!(
            dt == self.0.key_type,
            "LabelEncoder: the keys are {:?}, the input is {dt:?}",
            self.0.key_type
        );
        model.wire_node(prefix, LabelEncoderOp(self.0.clone()), &[x])
    }
}

#[derive(Debug, Clone)]
pub struct LabelEncoderOp(Arc<Encoder>);

impl PartialEq for LabelEncoderOp {
    fn eq(&self, other: &Self) -> bool {
        Arc::ptr_eq(&self.0, &other.0)
    }
}
impl Eq for LabelEncoderOp {}

impl Op for LabelEncoderOp {
    fn name(&self) -> StaticName {
        "LabelEncoder".into()
    }

    op_as_typed_op!();
}

impl Encoder {
    fn lookup(&self, x: &Tensor) -> TractResult<Vec<Option<usize>>> {
        let plain = x.try_as_plain_ram()?;
        Ok(match &self.keys {
            Keys::Ints(m) => plain
                .as_slice::<i64>()?
                .iter()
                .map(|k| m.get(k).copied())
                .collect(),
            Keys::Floats(m) => plain
                .as_slice::<f32>()?
                .iter()
                .map(|&k| m.get(&float_key(k)).copied())
                .collect(),
            Keys::Strings(m) => plain
                .as_slice::<String>()?
                .iter()
                .map(|k| m.get(k).copied())
                .collect(),
        })
    }
}

impl EvalOp for LabelEncoderOp {
    fn eval(&self, _ctx: &EvalContext, inputs: TVec<TValue>) -> TractResult<TVec<TValue>> {
        let x = &inputs[0];
        let found = self.0.lookup(x)?;
        let out = match (&self.0.values, &self.0.default) {
            (List::Ints(v), List::Ints(d)) => {
                let o: Vec<i64> = found
                    .iter()
                    .map(|f| f.map(|i| v[i]).unwrap_or(d[0]))
                    .collect();
                Tensor::from_shape(x.shape(), &o)?
            }
            (List::Floats(v), List::Floats(d)) => {
                let o: Vec<f32> = found
                    .iter()
                    .map(|f| f.map(|i| v[i]).unwrap_or(d[0]))
                    .collect();
                Tensor::from_shape(x.shape(), &o)?
            }
            (List::Strings(v), List::Strings(d)) => {
                let o: Vec<String> = found
                    .iter()
                    .map(|f| f.map(|i| &v[i]).unwrap_or(&d[0]).clone())
                    .collect();
                tensor1(&o).into_shape(x.shape())?
            }
            _ => bail!("LabelEncoder: default and values types differ"),
        };
        Ok(tvec!(out.into_tvalue()))
    }

    op_out_of_plan!();
}

impl TypedOp for LabelEncoderOp {
    fn output_facts(&self, inputs: &[&TypedFact]) -> TractResult<TVec<TypedFact>> {
        Ok(tvec!(TypedFact::dt_shape(
            self.0.values.datum_type(),
            inputs[0].shape.clone()
        )))
    }

    as_op!();
}
