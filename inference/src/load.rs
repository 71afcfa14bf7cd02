//! Loading: ONNX bytes + contract → an optimised tract plan.
//!
//! One code path for the bridge's validation and the agent: the graph's input facts are
//! set from the contract (datatype; each dimension concrete where fixed, a symbol where
//! variable — the batch dimension shares the symbol `batch` across inputs), the outputs
//! are selected by name in contract order, and the graph is optimised. tract cannot
//! optimise every graph with a symbolic batch (some recurrent ops and Reshapes need a
//! concrete size); then the batch is fixed to 1 and callers' batches are split
//! ([`Batching::Fixed`]).
//!
//! tract returns errors for nearly everything, but a malformed graph could still reach an
//! internal assertion; every call into tract is wrapped in `catch_unwind`, so a bad model
//! is an error, never a crashed agent.

use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::Arc;

use outpost_protocol::contract::ModelContract;
use outpost_protocol::tensor::Dim;
use tract_onnx::prelude::*;

use crate::convert::datum_type;
use crate::error::InferenceError;

/// How the plan takes batches.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Batching {
    /// Any batch in one run (symbolic first dimension).
    Symbolic,
    /// Runs take exactly this many samples; larger batches are split, the last run
    /// padded.
    Fixed(usize),
    /// The model has no batch dimension; inputs must match the contract exactly.
    Unbatched,
}

/// An optimised, runnable graph.
#[derive(Clone)]
pub struct Plan {
    /// The runnable plan.
    pub runnable: Arc<TypedRunnableModel>,
    /// Input names in the graph's order (the order `run` takes them in).
    pub inputs: Vec<String>,
    /// Output names in the plan's order (the contract's).
    pub outputs: Vec<String>,
    /// Batch handling.
    pub batching: Batching,
}

impl std::fmt::Debug for Plan {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Plan")
            .field("inputs", &self.inputs)
            .field("outputs", &self.outputs)
            .field("batching", &self.batching)
            .finish_non_exhaustive()
    }
}

/// Runs `f`, turning a tract error or panic into a message.
pub fn guarded<T>(what: &str, f: impl FnOnce() -> TractResult<T>) -> Result<T, String> {
    match catch_unwind(AssertUnwindSafe(f)) {
        Ok(Ok(v)) => Ok(v),
        Ok(Err(e)) => Err(format!("{e:#}")),
        Err(_) => Err(format!("tract panicked during {what}")),
    }
}

/// Parses ONNX bytes into tract's inference model (with Outpost's extra operators).
pub fn parse(onnx: &[u8]) -> Result<InferenceModel, InferenceError> {
    guarded("load", || crate::onnx().model_for_read(&mut &onnx[..])).map_err(InferenceError::Load)
}

/// Names of the graph's inputs, in order.
pub fn input_names(model: &InferenceModel) -> Result<Vec<String>, InferenceError> {
    Ok(model
        .input_outlets()
        .map_err(|e| InferenceError::Load(e.to_string()))?
        .iter()
        .map(|o| model.node(o.node).name.clone())
        .collect())
}

/// Names of the graph's outputs, in order.
pub fn output_names(model: &InferenceModel) -> Result<Vec<String>, InferenceError> {
    Ok(model
        .output_outlets()
        .map_err(|e| InferenceError::Load(e.to_string()))?
        .iter()
        .map(|o| {
            model
                .outlet_label(*o)
                .map(str::to_owned)
                .unwrap_or_else(|| model.node(o.node).name.clone())
        })
        .collect())
}

/// Sets input facts and selects outputs; `batch` fixes the batch dimension.
fn prepare(
    mut model: InferenceModel,
    contract: &ModelContract,
    batch: Option<usize>,
) -> Result<InferenceModel, InferenceError> {
    let mismatch = InferenceError::Mismatch;
    let names = input_names(&model)?;
    for n in &names {
        if contract.input(n).is_none() {
            return Err(mismatch(format!(
                "the graph's input {n:?} is not in the contract (contract inputs: {:?})",
                contract.inputs.iter().map(|i| &i.name).collect::<Vec<_>>()
            )));
        }
    }
    if let Some(i) = contract.inputs.iter().find(|i| !names.contains(&i.name)) {
        return Err(mismatch(format!(
            "contract input {:?} is not an input of the graph (graph inputs: {names:?})",
            i.name
        )));
    }
    let batch_sym = model.sym("batch");
    for (ix, n) in names.iter().enumerate() {
        let spec = contract.input(n).expect("checked above");
        let dims: TVec<TDim> = spec
            .shape
            .iter()
            .enumerate()
            .map(|(axis, d)| match (axis, d, batch) {
                (_, Dim::Fixed(v), _) => TDim::Val(*v as i64),
                (0, Dim::Var(_), Some(b)) => TDim::Val(b as i64),
                (0, Dim::Var(_), None) => TDim::Sym(batch_sym.clone()),
                (_, Dim::Var(Some(s)), _) => TDim::Sym(model.sym(s)),
                (_, Dim::Var(None), _) => TDim::Sym(model.new_sym_with_prefix("d")),
            })
            .collect();
        let fact = TypedFact::dt_shape(datum_type(spec.datatype), dims);
        guarded("setting input facts", || {
            model.set_input_fact(ix, fact.into())
        })
        .map_err(InferenceError::Load)?;
    }
    let outputs: Vec<&str> = contract.outputs.iter().map(|o| o.name.as_str()).collect();
    let known = output_names(&model)?;
    let mut outlets = Vec::new();
    for o in &outputs {
        let outlet = model
            .find_outlet_label(o)
            .or_else(|| {
                model
                    .nodes()
                    .iter()
                    .find(|n| n.name == *o)
                    .map(|n| OutletId::new(n.id, 0))
            })
            .ok_or_else(|| {
                mismatch(format!(
                    "contract output {o:?} is not in the graph (graph outputs: {known:?})"
                ))
            })?;
        outlets.push(outlet);
    }
    guarded("selecting outputs", || {
        model.select_output_outlets(&outlets)
    })
    .map_err(InferenceError::Load)?;
    Ok(model)
}

fn optimise(model: InferenceModel) -> Result<Arc<TypedRunnableModel>, String> {
    guarded("optimisation", || model.into_optimized()?.into_runnable())
}

/// Loads and optimises `onnx` for `contract` (the contract must be valid).
pub fn build(onnx: &[u8], contract: &ModelContract) -> Result<Plan, InferenceError> {
    let model = parse(onnx)?;
    let inputs = input_names(&model)?;
    let outputs = contract.outputs.iter().map(|o| o.name.clone()).collect();
    let batched = contract.batched();
    let symbolic = prepare(model.clone(), contract, None)?;
    let (runnable, batching) = match optimise(symbolic) {
        Ok(r) if batched => (r, Batching::Symbolic),
        Ok(r) => (r, Batching::Unbatched),
        Err(first) if batched => {
            // Some graphs only optimise with a concrete batch; serve them one sample at a
            // time rather than not at all.
            let fixed = prepare(model, contract, Some(1))?;
            let r = optimise(fixed).map_err(|e| {
                InferenceError::Load(format!("{first} (and with the batch fixed to 1: {e})"))
            })?;
            (r, Batching::Fixed(1))
        }
        Err(e) => return Err(InferenceError::Load(e)),
    };
    Ok(Plan {
        runnable,
        inputs,
        outputs,
        batching,
    })
}
