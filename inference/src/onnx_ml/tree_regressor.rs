//! `TreeEnsembleRegressor` (ai.onnx.ml, opsets 1 and 3 with float attributes): tract
//! 0.23 has no builder for it.
//!
//! Output `Y`: float `[N, n_targets]`. Semantics as onnxruntime computes them:
//! - one target: the trees' leaf weights are summed in tree order (`SUM`), averaged over
//!   the number of trees (`AVERAGE`), or reduced (`MIN`/`MAX`), then `base_values[0]` is
//!   added; only `PROBIT` of the post-transforms changes a single-target output (as in
//!   onnxruntime);
//! - several targets: per target the same aggregation, `base_values` (one per target) added,
//!   then the post-transform (`NONE`, `LOGISTIC`, `SOFTMAX`, `SOFTMAX_ZERO`, `PROBIT`) is
//!   applied to the row.
//!
//! Limits: float attributes only (`*_as_tensor` double models are refused); inputs of
//! rank 2 (f32, f64, i64, i32; compared as f32); `n_targets <= 65536`.

use std::sync::Arc;

use tract_onnx::model::{OnnxOpRegister, ParsingContext};
use tract_onnx::pb::NodeProto;
use tract_onnx::tract_hir::internal::*;

use super::MAX_OUTPUT_WIDTH;
use super::attrs::{floats, size};
use super::post_transform::{PostTransform, probit};
use super::tree_ensemble::{Aggregate, Forest, Score, check_width};

pub fn register(reg: &mut OnnxOpRegister) {
    reg.insert("TreeEnsembleRegressor", tree_ensemble_regressor);
}

/// The parsed model (shared by the expansion and the typed op).
#[derive(Debug)]
pub struct RegressorModel {
    forest: Forest,
    aggregate: Aggregate,
    base_values: Vec<f32>,
    post_transform: PostTransform,
}

fn tree_ensemble_regressor(
    _ctx: &ParsingContext,
    node: &NodeProto,
) -> TractResult<(Box<dyn InferenceOp>, Vec<String>)> {
    let n_targets = size(
        node,
        "n_targets",
        node.get_attr_opt::<i64>("n_targets")?.unwrap_or(1),
    )?;
    node.expect_attr("n_targets", n_targets <= MAX_OUTPUT_WIDTH, || {
        format!("at most {MAX_OUTPUT_WIDTH} targets, got {n_targets}")
    })?;
    let forest = Forest::parse(node, "target", n_targets)?;
    let aggregate = Aggregate::parse(node)?;
    let post_transform = PostTransform::parse(node)?;
    let base_values = floats(node, "base_values")?;
    node.expect_attr(
        "base_values",
        base_values.is_empty() || base_values.len() == n_targets,
        || {
            format!(
                "none or one per target ({n_targets}), got {}",
                base_values.len()
            )
        },
    )?;
    let model = RegressorModel {
        forest,
        aggregate,
        base_values,
        post_transform,
    };
    Ok((expand(TreeEnsembleRegressor(Arc::new(model))), vec![]))
}

impl RegressorModel {
    /// One row: scores into `out` (`n_targets` values).
    fn predict(&self, x: &[f32], scratch: &mut [Score], out: &mut [f32]) {
        let n_trees = self.forest.n_trees() as f32;
        if self.forest.n_targets == 1 {
            // onnxruntime's single-target path (`FinalizeScores1`).
            let origin = self.base_values.first().copied().unwrap_or(0.0);
            let mut s = Score::default();
            self.forest.for_each_leaf(x, |weights| {
                for &(_, w) in weights {
                    match self.aggregate {
                        Aggregate::Sum | Aggregate::Average => s.score += w,
                        Aggregate::Min => {
                            s.score = if !s.has || w < s.score { w } else { s.score };
                            s.has = true;
                        }
                        Aggregate::Max => {
                            s.score = if !s.has || w > s.score { w } else { s.score };
                            s.has = true;
                        }
                    }
                }
            });
            let v = match self.aggregate {
                Aggregate::Sum => s.score + origin,
                Aggregate::Average => s.score / n_trees + origin,
                Aggregate::Min | Aggregate::Max => {
                    if s.has {
                        s.score + origin
                    } else {
                        origin
                    }
                }
            };
            out[0] = if self.post_transform == PostTransform::Probit {
                probit(v)
            } else {
                v
            };
            return;
        }
        scratch.iter_mut().for_each(|s| *s = Score::default());
        self.forest.for_each_leaf(x, |weights| {
            for &(t, w) in weights {
                let s = &mut scratch[t as usize];
                match self.aggregate {
                    Aggregate::Sum | Aggregate::Average => s.score += w,
                    Aggregate::Min => s.score = if !s.has || w < s.score { w } else { s.score },
                    Aggregate::Max => s.score = if !s.has || w > s.score { w } else { s.score },
                }
                s.has = true;
            }
        });
        let base = |t: usize| self.base_values.get(t).copied();
        for (t, (o, s)) in out.iter_mut().zip(scratch.iter()).enumerate() {
            *o = match self.aggregate {
                Aggregate::Sum => base(t).map(|b| s.score + b).unwrap_or(s.score),
                Aggregate::Average => base(t)
                    .map(|b| s.score / n_trees + b)
                    .unwrap_or(s.score / n_trees),
                Aggregate::Min | Aggregate::Max => {
                    base(t).unwrap_or(0.0) + if s.has { s.score } else { 0.0 }
                }
            };
        }
        self.post_transform.apply(out);
    }
}

/// The ONNX node: checks types and shapes, then wires [`TreeEnsembleRegressorOp`].
#[derive(Debug, Clone)]
pub struct TreeEnsembleRegressor(pub Arc<RegressorModel>);

impl Expansion for TreeEnsembleRegressor {
    fn name(&self) -> StaticName {
        "TreeEnsembleRegressor".into()
    }

    fn rules<'r, 'p: 'r, 's: 'r>(
        &'s self,
        s: &mut Solver<'r>,
        inputs: &'p [TensorProxy],
        outputs: &'p [TensorProxy],
    ) -> InferenceResult {
        check_input_arity(inputs, 1)?;
        check_output_arity(outputs, 1)?;
        s.equals(&inputs[0].rank, 2)?;
        s.equals(&outputs[0].datum_type, f32::datum_type())?;
        s.equals(&outputs[0].rank, 2)?;
        s.equals(&outputs[0].shape[0], &inputs[0].shape[0])?;
        s.equals(&outputs[0].shape[1], self.0.forest.n_targets.to_dim())?;
        Ok(())
    }

    fn wire(
        &self,
        prefix: &str,
        model: &mut TypedModel,
        inputs: &[OutletId],
    ) -> TractResult<TVec<OutletId>> {
        check_width(
            "TreeEnsembleRegressor",
            model.outlet_fact(inputs[0])?,
            self.0.forest.n_features,
        )?;
        model.wire_node(prefix, TreeEnsembleRegressorOp(self.0.clone()), inputs)
    }
}

/// The typed op evaluating the forest.
#[derive(Debug, Clone)]
pub struct TreeEnsembleRegressorOp(pub Arc<RegressorModel>);

impl PartialEq for TreeEnsembleRegressorOp {
    fn eq(&self, other: &Self) -> bool {
        Arc::ptr_eq(&self.0, &other.0)
    }
}
impl Eq for TreeEnsembleRegressorOp {}

impl Op for TreeEnsembleRegressorOp {
    fn name(&self) -> StaticName {
        "TreeEnsembleRegressor".into()
    }

    fn info(&self) -> TractResult<Vec<String>> {
        let m = &self.0;
        Ok(vec![format!(
            "{} trees, {} targets, {:?}, {:?}",
            m.forest.n_trees(),
            m.forest.n_targets,
            m.aggregate,
            m.post_transform
        )])
    }

    op_as_typed_op!();
}

impl EvalOp for TreeEnsembleRegressorOp {
    fn eval(&self, _ctx: &EvalContext, inputs: TVec<TValue>) -> TractResult<TVec<TValue>> {
        let m = &self.0;
        let (x, n, width) = m.forest.rows("TreeEnsembleRegressor", &inputs[0])?;
        let x = x.try_as_plain_ram()?.as_slice::<f32>()?.to_vec();
        let t = m.forest.n_targets;
        let mut out = vec![0f32; n * t];
        let mut scratch = vec![Score::default(); t];
        for (i, o) in out.chunks_mut(t).enumerate() {
            m.predict(&x[i * width..(i + 1) * width], &mut scratch, o);
        }
        Ok(tvec!(Tensor::from_shape(&[n, t], &out)?.into_tvalue()))
    }

    op_out_of_plan!();
}

impl TypedOp for TreeEnsembleRegressorOp {
    fn output_facts(&self, inputs: &[&TypedFact]) -> TractResult<TVec<TypedFact>> {
        ensure!(
            inputs.len() == 1 && inputs[0].rank() == 2,
            "TreeEnsembleRegressor: expected one rank 2 input"
        );
        Ok(tvec!(f32::fact([
            inputs[0].shape[0].clone(),
            self.0.forest.n_targets.to_dim()
        ])))
    }

    as_op!();
}
