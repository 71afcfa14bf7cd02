//! `SVMClassifier` (ai.onnx.ml), computed as onnxruntime's CPU kernel does.
//!
//! SVC mode (`vectors_per_class` given, libsvm one-vs-one): for each class pair
//! `(i, j)`, `i < j`, the decision value is
//! `sum_{v in i} coef[j-1][v] k(x, v) + sum_{v in j} coef[i][v] k(x, v) + rho[pair]`
//! (products in float, sum in double, as onnxruntime); a positive value is a vote for
//! `i`, otherwise for `j`; the label is the class with the most votes (first on ties).
//! - without `prob_a`/`prob_b`: `Z` holds the pair decision values (`[N, C(C-1)/2]`),
//!   for two classes `[-d, d]` (`[1 - d, d]` when a post-transform is set, as
//!   onnxruntime);
//! - with them: Platt-scaled pair probabilities coupled into class probabilities
//!   (libsvm's `multiclass_probability`), `Z` is `[N, C]`.
//!
//! Linear mode (no support vectors, liblinear): `Z = x . coefficients[c] + rho[0]` per
//! class, the label the first largest score (two classes: onnxruntime's thresholds).
//! The post-transform then applies to the rows of `Z` (`NONE`, `LOGISTIC`, `SOFTMAX`,
//! `SOFTMAX_ZERO`, `PROBIT`; PROBIT is refused for two-class SVC decision values).

use std::sync::Arc;

use tract_onnx::model::{OnnxOpRegister, ParsingContext};
use tract_onnx::pb::NodeProto;
use tract_onnx::tract_hir::internal::*;

use super::attrs::{Labels, floats, ints};
use super::post_transform::{PostTransform, logistic};
use super::svm_common::{Kernel, check_features, rows, support_vectors};
use super::{MAX_ATTR_ELEMENTS, MAX_OUTPUT_WIDTH};

pub fn register(reg: &mut OnnxOpRegister) {
    reg.insert("SVMClassifier", svm_classifier);
}

#[derive(Debug)]
enum Mode {
    Svc {
        /// First support vector of each class, and one past the last.
        starts: Vec<usize>,
        n_vectors: usize,
        support_vectors: Vec<f32>,
        /// `[C - 1, n_vectors]`.
        coefficients: Vec<f32>,
        rho: Vec<f32>,
        /// Platt scaling (`prob_a`, `prob_b`), one pair per class pair.
        proba: Option<(Vec<f32>, Vec<f32>)>,
    },
    Linear {
        /// `[C, n_features]`.
        coefficients: Vec<f32>,
        rho: f32,
    },
}

#[derive(Debug)]
pub struct ClassifierModel {
    kernel: Kernel,
    labels: Labels,
    mode: Mode,
    n_features: usize,
    post_transform: PostTransform,
    weights_all_positive: bool,
}

fn svm_classifier(
    _ctx: &ParsingContext,
    node: &NodeProto,
) -> TractResult<(Box<dyn InferenceOp>, Vec<String>)> {
    let kernel = Kernel::parse(node)?;
    let post_transform = PostTransform::parse(node)?;
    let labels = Labels::parse(node, "classlabels_ints", "classlabels_strings")?;
    let c = labels.len();
    node.expect_attr(
        "classlabels_ints",
        (2..=MAX_OUTPUT_WIDTH).contains(&c),
        || format!("between 2 and {MAX_OUTPUT_WIDTH} class labels, got {c}"),
    )?;
    let pairs = c * (c - 1) / 2;
    let coefficients = floats(node, "coefficients")?;
    node.expect_attr(
        "coefficients",
        !coefficients.is_empty(),
        "at least one value",
    )?;
    let rho = floats(node, "rho")?;
    node.expect_attr("rho", !rho.is_empty(), "at least one value")?;
    let weights_all_positive = coefficients.iter().all(|&w| w >= 0.0);
    let per_class = ints(node, "vectors_per_class")?;
    let mut starts = vec![0usize];
    for &v in &per_class {
        node.expect_attr(
            "vectors_per_class",
            v >= 0 && v <= MAX_ATTR_ELEMENTS as i64,
            "counts in 0..=2^24",
        )?;
        let next = starts.last().unwrap() + v as usize;
        node.expect_attr(
            "vectors_per_class",
            next <= MAX_ATTR_ELEMENTS,
            "at most 2^24 vectors in all",
        )?;
        starts.push(next);
    }
    let n_vectors = *starts.last().unwrap();
    let (mode, n_features, kernel) = if n_vectors > 0 {
        node.expect_attr("vectors_per_class", per_class.len() == c, || {
            format!("one count per class ({c}), got {}", per_class.len())
        })?;
        let (support_vectors, n_features) = support_vectors(node, n_vectors)?;
        node.expect_attr(
            "coefficients",
            coefficients.len() == (c - 1) * n_vectors,
            || {
                format!(
                    "(classes - 1) x vectors = {} values, got {}",
                    (c - 1) * n_vectors,
                    coefficients.len()
                )
            },
        )?;
        node.expect_attr("rho", rho.len() >= pairs, || {
            format!("one value per class pair ({pairs}), got {}", rho.len())
        })?;
        let prob_a = floats(node, "prob_a")?;
        let prob_b = floats(node, "prob_b")?;
        node.expect_attr(
            "prob_b",
            prob_a.len() == prob_b.len(),
            "as many values as prob_a",
        )?;
        let proba = if prob_a.is_empty() {
            if c == 2 && post_transform == PostTransform::Probit {
                return node.bail_attr(
                    "post_transform",
                    "PROBIT is not supported for two-class decision values",
                );
            }
            None
        } else {
            node.expect_attr("prob_a", prob_a.len() >= pairs, || {
                format!("one value per class pair ({pairs}), got {}", prob_a.len())
            })?;
            Some((prob_a, prob_b))
        };
        let mode = Mode::Svc {
            starts,
            n_vectors,
            support_vectors,
            coefficients,
            rho,
            proba,
        };
        (mode, n_features, kernel)
    } else {
        node.expect_attr("coefficients", coefficients.len() % c == 0, || {
            format!(
                "a multiple of the number of classes ({c}), got {}",
                coefficients.len()
            )
        })?;
        let n_features = coefficients.len() / c;
        (
            Mode::Linear {
                coefficients,
                rho: rho[0],
            },
            n_features,
            Kernel::Linear,
        )
    };
    let model = ClassifierModel {
        kernel,
        labels,
        mode,
        n_features,
        post_transform,
        weights_all_positive,
    };
    Ok((expand(SvmClassifier(Arc::new(model))), vec![]))
}

/// libsvm's pairwise coupling (`multiclass_probability`), in single precision and in
/// onnxruntime's order of operations. `r` is the `c x c` matrix of pair probabilities.
fn multiclass_probability(c: usize, r: &[f32], p: &mut [f32]) {
    let mut q = vec![0f32; c * c];
    let mut qp = vec![0f32; c];
    let eps = 0.005f32 / c as f32;
    for i in 0..c {
        p[i] = 1.0 / c as f32;
        for j in 0..i {
            q[i * c + i] += r[j * c + i] * r[j * c + i];
            q[i * c + j] = q[j * c + i];
        }
        for j in i + 1..c {
            q[i * c + i] += r[j * c + i] * r[j * c + i];
            q[i * c + j] = -r[j * c + i] * r[i * c + j];
        }
    }
    for _ in 0..100 {
        let mut pqp = 0f32;
        for i in 0..c {
            qp[i] = 0.0;
            for j in 0..c {
                qp[i] += q[i * c + j] * p[j];
            }
            pqp += p[i] * qp[i];
        }
        let mut max_error = 0f32;
        for &v in qp.iter() {
            let error = (v - pqp).abs();
            if error > max_error {
                max_error = error;
            }
        }
        if max_error < eps {
            break;
        }
        for i in 0..c {
            let diff = (-qp[i] + pqp) / q[i * c + i];
            p[i] += diff;
            pqp = (pqp + diff * (diff * q[i * c + i] + 2.0 * qp[i])) / (1.0 + diff) / (1.0 + diff);
            for j in 0..c {
                qp[j] = (qp[j] + diff * q[i * c + j]) / (1.0 + diff);
                p[j] /= 1.0 + diff;
            }
        }
    }
}

impl ClassifierModel {
    fn classes(&self) -> usize {
        self.labels.len()
    }

    /// Width of `Z`.
    fn n_scores(&self) -> usize {
        let c = self.classes();
        match &self.mode {
            Mode::Svc { proba: None, .. } if c > 2 => c * (c - 1) / 2,
            Mode::Svc { proba: None, .. } => 2,
            _ => c,
        }
    }

    /// One row: returns the label's class index, writes `Z`'s row.
    fn predict(&self, x: &[f32], kernels: &mut Vec<f32>, out: &mut [f32]) -> usize {
        let c = self.classes();
        match &self.mode {
            Mode::Linear { coefficients, rho } => {
                for (o, w) in out.iter_mut().zip(coefficients.chunks(self.n_features)) {
                    let dot: f64 = x.iter().zip(w).map(|(&a, &b)| a as f64 * b as f64).sum();
                    *o = (dot + *rho as f64) as f32;
                }
                let mut best = 0;
                for k in 1..c {
                    if out[k] > out[best] {
                        best = k;
                    }
                }
                let max_weight = out[best];
                let label = if c == 2 {
                    if (self.weights_all_positive && max_weight >= 0.5)
                        || (max_weight > 0.0 && !self.weights_all_positive)
                    {
                        1
                    } else {
                        best
                    }
                } else {
                    best
                };
                self.post_transform.apply(out);
                label
            }
            Mode::Svc {
                starts,
                n_vectors,
                support_vectors,
                coefficients,
                rho,
                proba,
            } => {
                kernels.clear();
                kernels.extend(
                    support_vectors
                        .chunks(self.n_features)
                        .map(|v| self.kernel.eval(x, v)),
                );
                let mut votes = vec![0usize; c];
                let mut decisions = Vec::with_capacity(c * (c - 1) / 2);
                for i in 0..c - 1 {
                    for j in i + 1..c {
                        let mut sum = 0f64;
                        for v in starts[i]..starts[i + 1] {
                            sum += (coefficients[(j - 1) * n_vectors + v] * kernels[v]) as f64;
                        }
                        for v in starts[j]..starts[j + 1] {
                            sum += (coefficients[i * n_vectors + v] * kernels[v]) as f64;
                        }
                        sum += rho[decisions.len()] as f64;
                        decisions.push(sum as f32);
                        votes[if sum > 0.0 { i } else { j }] += 1;
                    }
                }
                let mut winner = 0;
                for k in 1..c {
                    if votes[k] > votes[winner] {
                        winner = k;
                    }
                }
                match proba {
                    Some((a, b)) => {
                        let mut r = vec![0f32; c * c];
                        let mut pair = 0;
                        for i in 0..c - 1 {
                            for j in i + 1..c {
                                let p = 1.0 - logistic(decisions[pair] * a[pair] + b[pair]);
                                let p = p.clamp(1.0e-7, 1.0 - 1.0e-7);
                                r[i * c + j] = p;
                                r[j * c + i] = 1.0 - p;
                                pair += 1;
                            }
                        }
                        multiclass_probability(c, &r, out);
                        self.post_transform.apply(out);
                    }
                    None if c == 2 => {
                        let d = decisions[0];
                        out[0] = if self.post_transform == PostTransform::None {
                            -d
                        } else {
                            1.0 - d
                        };
                        out[1] = d;
                    }
                    None => {
                        out.copy_from_slice(&decisions);
                        self.post_transform.apply(out);
                    }
                }
                winner
            }
        }
    }
}

#[derive(Debug, Clone)]
pub struct SvmClassifier(Arc<ClassifierModel>);

impl Expansion for SvmClassifier {
    fn name(&self) -> StaticName {
        "SVMClassifier".into()
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
        s.equals(&outputs[1].shape[1], self.0.n_scores().to_dim())?;
        Ok(())
    }

    fn wire(
        &self,
        prefix: &str,
        model: &mut TypedModel,
        inputs: &[OutletId],
    ) -> TractResult<TVec<OutletId>> {
        check_features(
            "SVMClassifier",
            model.outlet_fact(inputs[0])?,
            self.0.n_features,
        )?;
        model.wire_node(prefix, SvmClassifierOp(self.0.clone()), inputs)
    }
}

#[derive(Debug, Clone)]
pub struct SvmClassifierOp(Arc<ClassifierModel>);

impl PartialEq for SvmClassifierOp {
    fn eq(&self, other: &Self) -> bool {
        Arc::ptr_eq(&self.0, &other.0)
    }
}
impl Eq for SvmClassifierOp {}

impl Op for SvmClassifierOp {
    fn name(&self) -> StaticName {
        "SVMClassifier".into()
    }

    fn info(&self) -> TractResult<Vec<String>> {
        let m = &self.0;
        let mode = match &m.mode {
            Mode::Svc {
                n_vectors, proba, ..
            } => {
                format!(
                    "{n_vectors} support vectors, probabilities: {}",
                    proba.is_some()
                )
            }
            Mode::Linear { .. } => "linear".to_string(),
        };
        Ok(vec![format!(
            "{:?}, {} classes, {mode}",
            m.kernel,
            m.classes()
        )])
    }

    op_as_typed_op!();
}

impl EvalOp for SvmClassifierOp {
    fn eval(&self, _ctx: &EvalContext, inputs: TVec<TValue>) -> TractResult<TVec<TValue>> {
        let m = &self.0;
        let (x, n) = rows("SVMClassifier", &inputs[0], m.n_features)?;
        let w = m.n_scores();
        let mut scores = vec![0f32; n * w];
        let mut classes = Vec::with_capacity(n);
        let mut kernels = vec![];
        for (i, out) in scores.chunks_mut(w).enumerate() {
            classes.push(m.predict(
                &x[i * m.n_features..(i + 1) * m.n_features],
                &mut kernels,
                out,
            ));
        }
        let labels = m.labels.pick(&classes);
        Ok(tvec!(
            labels.into_tvalue(),
            Tensor::from_shape(&[n, w], &scores)?.into_tvalue()
        ))
    }

    op_out_of_plan!();
}

impl TypedOp for SvmClassifierOp {
    fn output_facts(&self, inputs: &[&TypedFact]) -> TractResult<TVec<TypedFact>> {
        ensure!(
            inputs.len() == 1 && inputs[0].rank() == 2,
            "SVMClassifier: expected one rank 2 input"
        );
        let n = inputs[0].shape[0].clone();
        Ok(tvec!(
            TypedFact::dt_shape(self.0.labels.datum_type(), [n.clone()]),
            f32::fact([n, self.0.n_scores().to_dim()])
        ))
    }

    as_op!();
}
