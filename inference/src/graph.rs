//! Reading a model's interface from the ONNX graph, and deriving a contract from it.
//!
//! Inputs come from the graph's declared inputs (initializers excluded): element type and
//! dimensions, `dim_param` names kept as symbols. Outputs come from tract's type
//! inference with those inputs — not the declared output types, which exporters often
//! leave incomplete or declare as sequences of maps (scikit-learn's `ZipMap`, which Outpost
//! serves as the probability tensor, columns in class-label order). A classifier's labels
//! come from its `ZipMap` or classifier node, so a classifier registered without any spec
//! is served as a classification. Inputs accept NaN only when the graph handles missing
//! values itself (an `Imputer`, or trees that route NaN down a branch).

use std::collections::BTreeMap;

use outpost_protocol::contract::{
    ClassificationTask, InputSpec, ModelContract, Normalization, OutputSpec, ScoreKind, Task,
};
use outpost_protocol::tensor::{DataType, Dim, TensorSpec};
use serde::Serialize;
use tract_onnx::pb;
use tract_onnx::prelude::*;

use crate::convert::{data_type, datum_type};
use crate::error::InferenceError;
use crate::load::guarded;

/// An operator the loader does not know.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct UnsupportedOp {
    /// `op_type`.
    pub op: String,
    /// Operator domain (`ai.onnx.ml`, …; empty for the default).
    pub domain: String,
    /// Node name (or its first output when unnamed).
    pub node: String,
}

/// What the graph declares and what tract makes of it.
#[derive(Debug, Clone, Serialize)]
pub struct GraphInfo {
    /// Exporter (`producer_name producer_version`).
    pub producer: String,
    /// Operator sets imported (domain, version).
    pub opsets: Vec<(String, i64)>,
    /// Declared inputs.
    pub inputs: Vec<TensorSpec>,
    /// Declared outputs (name, and the declared tensor type when it is a tensor).
    pub outputs: Vec<(String, Option<TensorSpec>)>,
    /// Operator counts by type.
    pub ops: BTreeMap<String, usize>,
    /// Operators tract cannot load, with the nodes using them.
    pub unsupported: Vec<UnsupportedOp>,
    /// Class labels found on a `ZipMap` or classifier node.
    pub class_labels: Option<Vec<String>>,
    /// The contract derived from the graph, or why none could be.
    #[serde(skip)]
    pub contract: Result<ModelContract, String>,
}

fn proto(onnx: &[u8]) -> Result<pb::ModelProto, InferenceError> {
    guarded("reading the ONNX protobuf", || {
        crate::onnx().proto_model_for_read(&mut &onnx[..])
    })
    .map_err(InferenceError::Load)
}

fn onnx_type(elem: i32) -> Option<DataType> {
    Some(match elem {
        1 => DataType::Fp32,
        2 => DataType::Uint8,
        3 => DataType::Int8,
        4 => DataType::Uint16,
        5 => DataType::Int16,
        6 => DataType::Int32,
        7 => DataType::Int64,
        8 => DataType::Bytes,
        9 => DataType::Bool,
        10 => DataType::Fp16,
        11 => DataType::Fp64,
        12 => DataType::Uint32,
        13 => DataType::Uint64,
        _ => return None,
    })
}

fn symbol(s: &str) -> Option<String> {
    let clean: String = s
        .chars()
        .map(|c| if c.is_ascii_alphanumeric() { c } else { '_' })
        .take(32)
        .collect();
    (!clean.is_empty() && clean.chars().any(|c| c.is_ascii_alphabetic())).then_some(clean)
}

fn declared(v: &pb::ValueInfoProto) -> Option<TensorSpec> {
    let Some(pb::type_proto::Value::TensorType(t)) = v.r#type.as_ref()?.value.as_ref() else {
        return None;
    };
    let datatype = onnx_type(t.elem_type)?;
    let shape = t
        .shape
        .as_ref()?
        .dim
        .iter()
        .enumerate()
        .map(|(axis, d)| {
            use pb::tensor_shape_proto::dimension::Value;
            match &d.value {
                Some(Value::DimValue(n)) if *n > 0 => Dim::Fixed(*n as u64),
                // The batch dimension stays anonymous: the loader names it.
                Some(Value::DimParam(p)) if axis > 0 => Dim::Var(symbol(p)),
                _ => Dim::any(),
            }
        })
        .collect();
    Some(TensorSpec {
        name: v.name.clone(),
        datatype,
        shape,
    })
}

fn attr_labels(n: &pb::NodeProto) -> Option<Vec<String>> {
    for a in &n.attribute {
        match a.name.as_str() {
            "classlabels_strings" if !a.strings.is_empty() => {
                return Some(
                    a.strings
                        .iter()
                        .map(|s| String::from_utf8_lossy(s).into_owned())
                        .collect(),
                );
            }
            "classlabels_int64s" | "classlabels_ints" if !a.ints.is_empty() => {
                return Some(a.ints.iter().map(ToString::to_string).collect());
            }
            _ => {}
        }
    }
    None
}

/// Whether a classifier's scores are uncalibrated decision values: a support-vector
/// classifier without Platt scaling (`prob_a`), or a linear classifier without a
/// post-transform, when nothing normalises them afterwards.
fn decision_scores(g: &pb::GraphProto) -> bool {
    let post_none = |n: &pb::NodeProto| {
        n.attribute
            .iter()
            .find(|a| a.name == "post_transform")
            .is_none_or(|a| a.s == b"NONE")
    };
    let normalised = g
        .node
        .iter()
        .any(|n| matches!(n.op_type.as_str(), "Softmax" | "Normalizer"));
    g.node.iter().any(|n| match n.op_type.as_str() {
        "SVMClassifier" => post_none(n) && !n.attribute.iter().any(|a| a.name == "prob_a"),
        "LinearClassifier" => post_none(n) && !normalised,
        _ => false,
    })
}

/// The scores output of a classifier and its labels: a `ZipMap` feeding a graph output,
/// else a classifier node whose scores output is a graph output.
fn classifier(g: &pb::GraphProto) -> Option<(String, Vec<String>)> {
    let is_output = |name: &str| g.output.iter().any(|o| o.name == name);
    if let Some(z) = g
        .node
        .iter()
        .find(|n| n.op_type == "ZipMap" && n.output.first().is_some_and(|o| is_output(o)))
    {
        return Some((z.output[0].clone(), attr_labels(z)?));
    }
    g.node.iter().find_map(|n| {
        let classifier = matches!(
            n.op_type.as_str(),
            "TreeEnsembleClassifier" | "LinearClassifier" | "SVMClassifier"
        );
        let scores = n.output.get(1)?;
        (classifier && is_output(scores)).then(|| Some((scores.clone(), attr_labels(n)?)))?
    })
}

/// Whether the graph handles missing values itself (an `Imputer`, or trees that route NaN
/// down a branch), so NaN inputs are valid and not refused.
fn handles_missing(g: &pb::GraphProto) -> bool {
    g.node.iter().any(|n| {
        n.op_type == "Imputer"
            || (n.op_type.starts_with("TreeEnsemble")
                && n.attribute.iter().any(|a| {
                    a.name == "nodes_missing_value_tracks_true" && a.ints.iter().any(|v| *v != 0)
                }))
    })
}

/// Output facts from tract's type inference; `batch_size` fixes the batch dimension.
fn typed_outputs(
    onnx: &[u8],
    inputs: &[InputSpec],
    batch_size: Option<usize>,
) -> Result<Vec<OutputSpec>, InferenceError> {
    let mut model = crate::load::parse(onnx)?;
    let names = crate::load::input_names(&model)?;
    let batch = model.sym("batch");
    for (ix, n) in names.iter().enumerate() {
        let spec = inputs
            .iter()
            .find(|i| &i.name == n)
            .ok_or_else(|| InferenceError::Mismatch(format!("input {n:?} is not declared")))?;
        let dims: TVec<TDim> = spec
            .shape
            .iter()
            .enumerate()
            .map(|(axis, d)| match d {
                Dim::Fixed(v) => TDim::Val(*v as i64),
                Dim::Var(_) if axis == 0 => match batch_size {
                    Some(b) => TDim::Val(b as i64),
                    None => TDim::Sym(batch.clone()),
                },
                Dim::Var(Some(s)) => TDim::Sym(model.sym(s)),
                Dim::Var(None) => TDim::Sym(model.new_sym_with_prefix("d")),
            })
            .collect();
        let fact = TypedFact::dt_shape(datum_type(spec.datatype), dims);
        guarded("setting input facts", || {
            model.set_input_fact(ix, fact.into())
        })
        .map_err(InferenceError::Load)?;
    }
    let typed = guarded("type inference", || model.into_typed()).map_err(InferenceError::Load)?;
    let outlets = typed
        .output_outlets()
        .map_err(|e| InferenceError::Load(e.to_string()))?
        .to_vec();
    outlets
        .iter()
        .map(|o| {
            let name = typed
                .outlet_label(*o)
                .map(str::to_owned)
                .unwrap_or_else(|| typed.node(o.node).name.clone());
            let fact = typed
                .outlet_fact(*o)
                .map_err(|e| InferenceError::Load(e.to_string()))?;
            let datatype = data_type(fact.datum_type).ok_or_else(|| {
                InferenceError::Load(format!(
                    "output {name:?} has type {:?}, which the Open Inference Protocol cannot carry",
                    fact.datum_type
                ))
            })?;
            let shape = fact
                .shape
                .iter()
                .map(|d| match d.to_i64() {
                    Ok(v) if v > 0 => Dim::Fixed(v as u64),
                    _ => match d {
                        TDim::Sym(s) if s.to_string() != "batch" => {
                            Dim::Var(symbol(&s.to_string()))
                        }
                        _ => Dim::any(),
                    },
                })
                .collect();
            Ok(OutputSpec {
                name,
                datatype,
                shape,
            })
        })
        .collect()
}

/// Reads the graph's interface, the operators it uses and what tract makes of it.
pub fn inspect(onnx: &[u8]) -> Result<GraphInfo, InferenceError> {
    let p = proto(onnx)?;
    let g = p
        .graph
        .as_ref()
        .ok_or_else(|| InferenceError::Load("the ONNX file has no graph".into()))?;
    let init: std::collections::HashSet<&str> =
        g.initializer.iter().map(|t| t.name.as_str()).collect();
    let inputs: Vec<TensorSpec> = g
        .input
        .iter()
        .filter(|i| !init.contains(i.name.as_str()))
        .map(|i| {
            declared(i).ok_or_else(|| {
                InferenceError::Load(format!(
                    "input {:?} is not a tensor of a supported element type",
                    i.name
                ))
            })
        })
        .collect::<Result<_, _>>()?;
    let known = crate::onnx().op_register;
    let mut ops = BTreeMap::new();
    let mut unsupported = Vec::new();
    for n in &g.node {
        *ops.entry(n.op_type.clone()).or_insert(0) += 1;
        if !known.0.contains_key(&n.op_type) {
            unsupported.push(UnsupportedOp {
                op: n.op_type.clone(),
                domain: n.domain.clone(),
                node: if n.name.is_empty() {
                    n.output.first().cloned().unwrap_or_default()
                } else {
                    n.name.clone()
                },
            });
        }
    }
    let class = classifier(g);
    let nan = handles_missing(g);
    let scores = if decision_scores(g) {
        ScoreKind::Scores
    } else {
        ScoreKind::Probabilities
    };
    let contract = if unsupported.is_empty() {
        derive(
            onnx,
            &inputs,
            class.clone().map(|(o, l)| (o, l, scores)),
            nan,
        )
        .map_err(|e| e.to_string())
    } else {
        Err(format!(
            "unsupported operators: {}",
            unsupported
                .iter()
                .map(|u| format!("{} (node {:?})", u.op, u.node))
                .collect::<Vec<_>>()
                .join(", ")
        ))
    };
    Ok(GraphInfo {
        producer: format!("{} {}", p.producer_name, p.producer_version)
            .trim()
            .to_owned(),
        opsets: p
            .opset_import
            .iter()
            .map(|o| (o.domain.clone(), o.version))
            .collect(),
        inputs,
        outputs: g
            .output
            .iter()
            .map(|o| (o.name.clone(), declared(o)))
            .collect(),
        ops,
        unsupported,
        class_labels: class.map(|c| c.1),
        contract,
    })
}

fn derive(
    onnx: &[u8],
    inputs: &[TensorSpec],
    class: Option<(String, Vec<String>, ScoreKind)>,
    allow_nan: bool,
) -> Result<ModelContract, InferenceError> {
    let inputs: Vec<InputSpec> = inputs
        .iter()
        .map(|t| InputSpec {
            name: t.name.clone(),
            datatype: t.datatype,
            shape: t.shape.clone(),
            features: Vec::new(),
            normalization: Normalization::None,
            max_abs: None,
            allow_nan: allow_nan && t.datatype.is_float(),
        })
        .collect();
    let outputs = match typed_outputs(onnx, &inputs, None) {
        Ok(o) => o,
        Err(symbolic) => {
            // A graph that only types with a concrete batch (a traced Reshape): type it
            // with one sample; a leading 1 on the outputs is then the batch dimension.
            let batched = inputs.iter().all(|i| i.tensor().batched());
            let mut o = typed_outputs(onnx, &inputs, Some(1)).map_err(|_| symbolic)?;
            if batched {
                for out in &mut o {
                    if out.shape.first() == Some(&Dim::Fixed(1)) {
                        out.shape[0] = Dim::any();
                    }
                }
            }
            o
        }
    };
    let mut c = ModelContract {
        inputs,
        outputs,
        task: Task::Raw,
        drift: None,
    };
    if let Some((output, labels, scores)) = class {
        // The model's own label output, when it has exactly one: an integer or string
        // tensor of one value per sample.
        let label_output = {
            let mut l = c.outputs.iter().filter(|o| {
                o.name != output
                    && o.shape.len() == 1
                    && matches!(
                        o.datatype,
                        DataType::Int64 | DataType::Int32 | DataType::Bytes
                    )
            });
            match (l.next(), l.next()) {
                (Some(o), None) => Some(o.name.clone()),
                _ => None,
            }
        };
        c.task = Task::Classification(ClassificationTask {
            output,
            scores,
            label_output,
            labels,
            anomaly_labels: Vec::new(),
            min_confidence: None,
        });
        if c.validate().is_err() {
            // Labels that do not line up with the scores: serve the tensors uninterpreted.
            c.task = Task::Raw;
        }
    }
    c.validate()?;
    Ok(c)
}

/// The contract the graph implies (see the module doc); errors name unsupported
/// operators or what tract could not infer.
pub fn contract_from_graph(onnx: &[u8]) -> Result<ModelContract, InferenceError> {
    inspect(onnx)?.contract.map_err(InferenceError::Load)
}

/// Whether the classification scores in `samples` (the outputs a model produced) look
/// like probabilities: every row within [0, 1] and summing to 1. A classifier derived as
/// giving probabilities whose outputs are not is serving decision values.
pub fn scores_are_probabilities(
    c: &ModelContract,
    samples: &[outpost_protocol::manifest::SelfTestSample],
) -> bool {
    let Task::Classification(t) = &c.task else {
        return true;
    };
    let n = t.labels.len().max(1);
    samples.iter().all(|s| {
        s.outputs.iter().filter(|o| o.name == t.output).all(|o| {
            let v = o.data.to_f64();
            v.chunks(n).all(|row| {
                row.iter().all(|x| (-1e-4..=1.0 + 1e-4).contains(x))
                    && (row.iter().sum::<f64>() - 1.0).abs() <= 1e-3
            })
        })
    })
}
