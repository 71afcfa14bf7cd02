//! `SVMRegressor` (ai.onnx.ml): `Y[n, 0] = sum_v coefficients[v] * k(x_n, sv_v) + rho[0]`
//! over `n_supports` support vectors (kernels as in [`super::svm_common`]), or, with
//! `n_supports = 0`, the linear `x . coefficients + rho[0]`; with `one_class = 1` the
//! output is the sign (`1` if > 0 else `-1`), as skl2onnx's OneClassSVM expects. The
//! reduction accumulates in double precision (onnxruntime: SGEMM). `post_transform` is
//! validated and, as in onnxruntime, not applied. Output float `[N, 1]`.

use std::sync::Arc;

use tract_onnx::model::{OnnxOpRegister, ParsingContext};
use tract_onnx::pb::NodeProto;
use tract_onnx::tract_hir::internal::*;

use super::MAX_ATTR_ELEMENTS;
use super::attrs::floats;
use super::post_transform::PostTransform;
use super::svm_common::{Kernel, check_features, rows, support_vectors};

pub fn register(reg: &mut OnnxOpRegister) {
    reg.insert("SVMRegressor", svm_regressor);
}

#[derive(Debug)]
pub struct RegressorModel {
    kernel: Kernel,
    /// Empty in linear mode.
    support_vectors: Vec<f32>,
    n_vectors: usize,
    coefficients: Vec<f32>,
    rho: f32,
    n_features: usize,
    one_class: bool,
}

fn svm_regressor(
    _ctx: &ParsingContext,
    node: &NodeProto,
) -> TractResult<(Box<dyn InferenceOp>, Vec<String>)> {
    let kernel = Kernel::parse(node)?;
    PostTransform::parse(node)?;
    let n_supports = node.get_attr_opt::<i64>("n_supports")?.unwrap_or(0);
    node.expect_attr(
        "n_supports",
        (0..=MAX_ATTR_ELEMENTS as i64).contains(&n_supports),
        || format!("0..={MAX_ATTR_ELEMENTS}, got {n_supports}"),
    )?;
    let n_vectors = n_supports as usize;
    let coefficients = floats(node, "coefficients")?;
    node.expect_attr(
        "coefficients",
        !coefficients.is_empty(),
        "at least one value",
    )?;
    let rho = floats(node, "rho")?;
    node.expect_attr("rho", !rho.is_empty(), "at least one value")?;
    let one_class = match node.get_attr_opt::<i64>("one_class")?.unwrap_or(0) {
        0 => false,
        1 => true,
        other => return node.bail_attr("one_class", &format!("expected 0 or 1, got {other}")),
    };
    let (support_vectors, n_features, kernel) = if n_vectors > 0 {
        let (sv, f) = support_vectors(node, n_vectors)?;
        node.expect_attr("coefficients", coefficients.len() == n_vectors, || {
            format!(
                "one per support vector ({n_vectors}), got {}",
                coefficients.len()
            )
        })?;
        (sv, f, kernel)
    } else {
        // Linear mode: the coefficients are the weights, the kernel is LINEAR.
        (vec![], coefficients.len(), Kernel::Linear)
    };
    let model = RegressorModel {
        kernel,
        support_vectors,
        n_vectors,
        coefficients,
        rho: rho[0],
        n_features,
        one_class,
    };
    Ok((expand(SvmRegressor(Arc::new(model))), vec![]))
}

impl RegressorModel {
    fn predict(&self, x: &[f32]) -> f32 {
        let y = if self.n_vectors > 0 {
            let mut sum = 0f64;
            for (sv, &c) in self
                .support_vectors
                .chunks(self.n_features)
                .zip(&self.coefficients)
            {
                sum += self.kernel.eval(x, sv) as f64 * c as f64;
            }
            (sum + self.rho as f64) as f32
        } else {
            let dot: f64 = x
                .iter()
                .zip(&self.coefficients)
                .map(|(&a, &b)| a as f64 * b as f64)
                .sum();
            (dot + self.rho as f64) as f32
        };
        if self.one_class {
            if y > 0.0 { 1.0 } else { -1.0 }
        } else {
            y
        }
    }
}

#[derive(Debug, Clone)]
pub struct SvmRegressor(Arc<RegressorModel>);

impl Expansion for SvmRegressor {
    fn name(&self) -> StaticName {
        "SVMRegressor".into()
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
        s.equals(&outputs[0].shape[1], 1.to_dim())?;
        Ok(())
    }

    fn wire(
        &self,
        prefix: &str,
        model: &mut TypedModel,
        inputs: &[OutletId],
    ) -> TractResult<TVec<OutletId>> {
        check_features(
            "SVMRegressor",
            model.outlet_fact(inputs[0])?,
            self.0.n_features,
        )?;
        model.wire_node(prefix, SvmRegressorOp(self.0.clone()), inputs)
    }
}

#[derive(Debug, Clone)]
pub struct SvmRegressorOp(Arc<RegressorModel>);

impl PartialEq for SvmRegressorOp {
    fn eq(&self, other: &Self) -> bool {
        Arc::ptr_eq(&self.0, &other.0)
    }
}
impl Eq for SvmRegressorOp {}

impl Op for SvmRegressorOp {
    fn name(&self) -> StaticName {
        "SVMRegressor".into()
    }

    fn info(&self) -> TractResult<Vec<String>> {
        Ok(vec![format!(
            "{:?}, {} support vectors",
            self.0.kernel, self.0.n_vectors
        )])
    }

    op_as_typed_op!();
}

impl EvalOp for SvmRegressorOp {
    fn eval(&self, _ctx: &EvalContext, inputs: TVec<TValue>) -> TractResult<TVec<TValue>> {
        let m = &self.0;
        let (x, n) = rows("SVMRegressor", &inputs[0], m.n_features)?;
        let out: Vec<f32> = (0..n)
            .map(|i| m.predict(&x[i * m.n_features..(i + 1) * m.n_features]))
            .collect();
        Ok(tvec!(Tensor::from_shape(&[n, 1], &out)?.into_tvalue()))
    }

    op_out_of_plan!();
}

impl TypedOp for SvmRegressorOp {
    fn output_facts(&self, inputs: &[&TypedFact]) -> TractResult<TVec<TypedFact>> {
        ensure!(
            inputs.len() == 1 && inputs[0].rank() == 2,
            "SVMRegressor: expected one rank 2 input"
        );
        Ok(tvec!(f32::fact([inputs[0].shape[0].clone(), 1.to_dim()])))
    }

    as_op!();
}
