//! `TreeEnsembleClassifier` (ai.onnx.ml, float attributes). Replaces tract's builder,
//! which rejects skl2onnx's binary models (one `base_values` entry for two classes) and
//! lays binary scores out differently from onnxruntime.
//!
//! Outputs: `Y` the label (int64 or string, `[N]`) and `Z` the scores (float `[N, C]`),
//! computed as onnxruntime's `TreeAggregatorClassifier` does:
//! - every tree's leaf weights are summed per class, in tree order (single precision);
//! - more than two classes: `base_values` (none or one per class) are added, the label is
//!   the first class with the largest raw score, then the post-transform (`NONE`,
//!   `LOGISTIC`, `SOFTMAX`, `SOFTMAX_ZERO`, `PROBIT`) is applied to the scores;
//! - two classes whose weights all target one class id (skl2onnx's binary forests and
//!   boosters, "binary case"): the score `s` (plus `base_values[0]`) is the positive
//!   class's; if all weights are >= 0 (probabilities) the label is positive when
//!   `s > 0.5` and `Z = [1 - s, s]`; otherwise (margins) the label is positive when
//!   `s > 0` and `Z = [logistic(-s), logistic(s)]` with `LOGISTIC`, `[-s, s]` without;
//! - two classes with weights on both: `Z` is the two (post-transformed) scores and the
//!   label is the positive class when class 1's raw score is > 0 (onnxruntime's rule).
//!
//! Limits: at least 2 and at most 65536 classes; `base_values` of length 0 or C (or 1
//! for two classes); `PROBIT` is refused for the binary single-score layout (onnxruntime
//! leaves the second column unwritten there); inputs of rank 2 compared as f32.

use std::sync::Arc;

use tract_onnx::model::{OnnxOpRegister, ParsingContext};
use tract_onnx::pb::NodeProto;
use tract_onnx::tract_hir::internal::*;

use super::MAX_OUTPUT_WIDTH;
use super::attrs::{Labels, floats};
use super::post_transform::{PostTransform, logistic};
use super::tree_ensemble::{Forest, Score, check_width};

pub fn register(reg: &mut OnnxOpRegister) {
    reg.insert("TreeEnsembleClassifier", tree_ensemble_classifier);
}

/// The parsed model (shared by the expansion and the typed op).
#[derive(Debug)]
pub struct ClassifierModel {
    forest: Forest,
    labels: Labels,
    base_values: Vec<f32>,
    post_transform: PostTransform,
    /// Two classes, all weights on one class id.
    binary_case: bool,
    weights_all_positive: bool,
}

fn tree_ensemble_classifier(
    _ctx: &ParsingContext,
    node: &NodeProto,
) -> TractResult<(Box<dyn InferenceOp>, Vec<String>)> {
    let labels = Labels::parse(node, "classlabels_int64s", "classlabels_strings")?;
    let n_classes = labels.len();
    node.expect_attr(
        "classlabels_int64s",
        (2..=MAX_OUTPUT_WIDTH).contains(&n_classes),
        || format!("between 2 and {MAX_OUTPUT_WIDTH} class labels, got {n_classes}"),
    )?;
    let forest = Forest::parse(node, "class", n_classes)?;
    let post_transform = PostTransform::parse(node)?;
    let base_values = floats(node, "base_values")?;
    let ok_base = base_values.is_empty()
        || base_values.len() == n_classes
        || (n_classes == 2 && base_values.len() == 1);
    node.expect_attr("base_values", ok_base, || {
        format!(
            "none or one per class ({n_classes}), got {}",
            base_values.len()
        )
    })?;
    let (weight_classes, weights_all_positive) = forest.weight_summary();
    let binary_case = n_classes == 2 && weight_classes == 1;
    if binary_case && post_transform == PostTransform::Probit {
        return node.bail_attr(
            "post_transform",
            "PROBIT is not supported for a binary ensemble with one score per row",
        );
    }
    let model = ClassifierModel {
        forest,
        labels,
        base_values,
        post_transform,
        binary_case,
        weights_all_positive,
    };
    Ok((expand(TreeEnsembleClassifier(Arc::new(model))), vec![]))
}

impl ClassifierModel {
    /// One row: returns the label's class index and writes the `C` scores.
    fn predict(&self, x: &[f32], preds: &mut [Score], out: &mut [f32]) -> usize {
        self.forest.sum(x, preds);
        let base = &self.base_values;
        if preds.len() > 2 {
            for (p, &b) in preds.iter_mut().zip(base.iter()) {
                if p.has {
                    p.score += b;
                } else {
                    *p = Score {
                        score: b,
                        has: true,
                    };
                }
            }
            let mut best: Option<(usize, f32)> = None;
            for (c, p) in preds.iter().enumerate() {
                if p.has && best.is_none_or(|(_, w)| p.score > w) {
                    best = Some((c, p.score));
                }
            }
            for (o, p) in out.iter_mut().zip(preds.iter()) {
                *o = p.score;
            }
            self.post_transform.apply(out);
            return best.map(|b| b.0).unwrap_or(0);
        }

        // Two classes (onnxruntime's binary branch).
        let (mut p0, mut p1) = (preds[0], preds[1]);
        let mut add_second_class = -1;
        let mut single = false;
        match base.len() {
            2 => {
                if p1.has {
                    p1.score = base[1] + p0.score;
                    p0.score = -p1.score;
                } else {
                    p1.score += base[1];
                    p0.score += base[0];
                }
            }
            1 => {
                p0.score += base[0];
                single = !p1.has;
            }
            _ => {
                add_second_class = 3;
                single = !p1.has;
            }
        }
        let pos_weight = if !single && p1.has {
            p1.score
        } else if p0.has {
            p0.score
        } else {
            0.0
        };
        let label = if self.binary_case {
            if self.weights_all_positive {
                add_second_class = if pos_weight > 0.5 { 0 } else { 1 };
                usize::from(pos_weight > 0.5)
            } else {
                add_second_class = if pos_weight > 0.0 { 2 } else { 3 };
                usize::from(pos_weight > 0.0)
            }
        } else {
            usize::from(pos_weight > 0.0)
        };
        if !single {
            out[0] = p0.score;
            out[1] = p1.score;
            self.post_transform.apply(out);
        } else {
            let s = p0.score;
            let pair = match (self.post_transform, add_second_class) {
                (PostTransform::Probit, _) => [super::post_transform::probit(s), 0.0],
                (_, 0 | 1) => [1.0 - s, s],
                (PostTransform::Logistic, 2 | 3) => [logistic(-s), logistic(s)],
                (_, 2 | 3) => [-s, s],
                _ => [s, 0.0],
            };
            out.copy_from_slice(&pair);
        }
        label
    }
}

/// The ONNX node: checks types and shapes, then wires [`TreeEnsembleClassifierOp`].
#[derive(Debug, Clone)]
pub struct TreeEnsembleClassifier(pub Arc<ClassifierModel>);

impl Expansion for TreeEnsembleClassifier {
    fn name(&self) -> StaticName {
        "TreeEnsembleClassifier".into()
    }

    fn nboutputs(&self) -> TractResult<usize> {
        Ok(2)
    }

    fn rules<'r, 'p: 'r, 's: 'r>(
        &'s self,
        s: &mut Solver<'r>,
        inputs: &'p [TensorProxy],
        outputs: &'p [TensorProxy],
    ) -> InferenceResult {
        check_input_arity(inputs, 1)?;
        check_output_arity(outputs, 2)?;
        s.equals(&inputs[0].rank, 2)?;
        s.equals(&outputs[0].datum_type, self.0.labels.datum_type())?;
        s.equals(&outputs[0].rank, 1)?;
        s.equals(&outputs[0].shape[0], &inputs[0].shape[0])?;
        s.equals(&outputs[1].datum_type, f32::datum_type())?;
        s.equals(&outputs[1].rank, 2)?;
        s.equals(&outputs[1].shape[0], &inputs[0].shape[0])?;
        s.equals(&outputs[1].shape[1], self.0.labels.len().to_dim())?;
        Ok(())
    }

    fn wire(
        &self,
        prefix: &str,
        model: &mut TypedModel,
        inputs: &[OutletId],
    ) -> TractResult<TVec<OutletId>> {
        check_width(
            "TreeEnsembleClassifier",
            model.outlet_fact(inputs[0])?,
            self.0.forest.n_features,
        )?;
        model.wire_node(prefix, TreeEnsembleClassifierOp(self.0.clone()), inputs)
    }
}

/// The typed op evaluating the forest.
#[derive(Debug, Clone)]
pub struct TreeEnsembleClassifierOp(pub Arc<ClassifierModel>);

impl PartialEq for TreeEnsembleClassifierOp {
    fn eq(&self, other: &Self) -> bool {
        Arc::ptr_eq(&self.0, &other.0)
    }
}
impl Eq for TreeEnsembleClassifierOp {}

impl Op for TreeEnsembleClassifierOp {
    fn name(&self) -> StaticName {
        "TreeEnsembleClassifier".into()
    }

    fn info(&self) -> TractResult<Vec<String>> {
        let m = &self.0;
        Ok(vec![format!(
            "{} trees, {} classes, binary case: {}, {:?}",
            m.forest.n_trees(),
            m.labels.len(),
            m.binary_case,
            m.post_transform
        )])
    }

    op_as_typed_op!();
}

impl EvalOp for TreeEnsembleClassifierOp {
    fn eval(&self, _ctx: &EvalContext, inputs: TVec<TValue>) -> TractResult<TVec<TValue>> {
        let m = &self.0;
        let (x, n, width) = m.forest.rows("TreeEnsembleClassifier", &inputs[0])?;
        let x = x.try_as_plain_ram()?.as_slice::<f32>()?.to_vec();
        let c = m.labels.len();
        let mut scores = vec![0f32; n * c];
        let mut classes = Vec::with_capacity(n);
        let mut preds = vec![Score::default(); c];
        for (i, out) in scores.chunks_mut(c).enumerate() {
            classes.push(m.predict(&x[i * width..(i + 1) * width], &mut preds, out));
        }
        let labels = m.labels.pick(&classes);
        Ok(tvec!(
            labels.into_tvalue(),
            Tensor::from_shape(&[n, c], &scores)?.into_tvalue()
        ))
    }

    op_out_of_plan!();
}

impl TypedOp for TreeEnsembleClassifierOp {
    fn output_facts(&self, inputs: &[&TypedFact]) -> TractResult<TVec<TypedFact>> {
        ensure!(
            inputs.len() == 1 && inputs[0].rank() == 2,
            "TreeEnsembleClassifier: expected one rank 2 input"
        );
        let n = inputs[0].shape[0].clone();
        Ok(tvec!(
            TypedFact::dt_shape(self.0.labels.datum_type(), [n.clone()]),
            f32::fact([n, self.0.labels.len().to_dim()])
        ))
    }

    as_op!();
}
