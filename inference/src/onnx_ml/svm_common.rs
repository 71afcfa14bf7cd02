//! What `SVMClassifier` and `SVMRegressor` share: the kernel and the input rows.
//!
//! `RBF` is computed as onnxruntime does (single-precision sum of squared differences,
//! then `exp(-gamma * sum)`), so it matches bit for bit; the dot-product kernels
//! (`LINEAR`, `POLY`, `SIGMOID`) accumulate in double precision where onnxruntime uses
//! an SGEMM, so they agree to within float rounding.

use tract_onnx::pb::NodeProto;
use tract_onnx::tract_hir::internal::*;

use super::attrs::{floats, string_or};

#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Kernel {
    Linear,
    Poly { gamma: f32, coef0: f32, degree: f32 },
    Rbf { gamma: f32 },
    Sigmoid { gamma: f32, coef0: f32 },
}

impl Kernel {
    /// `kernel_type` (default `LINEAR`) and `kernel_params` (`[gamma, coef0, degree]`, or
    /// absent for zeros).
    pub fn parse(node: &NodeProto) -> TractResult<Kernel> {
        let params = floats(node, "kernel_params")?;
        node.expect_attr(
            "kernel_params",
            params.is_empty() || params.len() == 3,
            || {
                format!(
                    "[gamma, coef0, degree] or nothing, got {} values",
                    params.len()
                )
            },
        )?;
        let p = |i: usize| params.get(i).copied().unwrap_or(0.0);
        let (gamma, coef0, degree) = (p(0), p(1), p(2));
        Ok(match string_or(node, "kernel_type", "LINEAR")?.as_str() {
            "LINEAR" => Kernel::Linear,
            "POLY" => Kernel::Poly {
                gamma,
                coef0,
                degree,
            },
            "RBF" => Kernel::Rbf { gamma },
            "SIGMOID" => Kernel::Sigmoid { gamma, coef0 },
            other => {
                return node.bail_attr(
                    "kernel_type",
                    &format!("expected LINEAR, POLY, RBF or SIGMOID, got {other:?}"),
                );
            }
        })
    }

    /// k(x, v) for one row and one support vector of the same length.
    pub fn eval(&self, x: &[f32], v: &[f32]) -> f32 {
        let dot = || {
            x.iter()
                .zip(v)
                .map(|(&a, &b)| a as f64 * b as f64)
                .sum::<f64>()
        };
        match *self {
            Kernel::Linear => dot() as f32,
            Kernel::Rbf { gamma } => {
                let mut sum = 0f32;
                for (&a, &b) in x.iter().zip(v) {
                    let d = a - b;
                    sum += d * d;
                }
                (-gamma * sum).exp()
            }
            Kernel::Poly {
                gamma,
                coef0,
                degree,
            } => {
                let base = (gamma as f64 * dot() + coef0 as f64) as f32;
                if degree == 2.0 {
                    base * base
                } else if degree == 3.0 {
                    base * base * base
                } else {
                    base.powf(degree)
                }
            }
            Kernel::Sigmoid { gamma, coef0 } => {
                ((gamma as f64 * dot() + coef0 as f64) as f32).tanh()
            }
        }
    }
}

/// Input rows as f32 `[n, width]` (rank 1 = one row), `width` must be `n_features`.
pub fn rows(op: &str, input: &Tensor, n_features: usize) -> TractResult<(Vec<f32>, usize)> {
    let (n, width) = match input.shape() {
        [w] => (1, *w),
        [n, w] => (*n, *w),
        shape => bail!("{op}: expected a rank 1 or 2 input, got shape {shape:?}"),
    };
    ensure!(
        width == n_features,
        "{op}: input has {width} features, the model expects {n_features}"
    );
    let x = input.cast_to::<f32>()?;
    Ok((x.try_as_plain_ram()?.as_slice::<f32>()?.to_vec(), n))
}

/// Load-time check of the feature axis when it is known.
pub fn check_features(op: &str, fact: &TypedFact, n_features: usize) -> TractResult<()> {
    ensure!(
        fact.rank() == 2,
        "{op}: expected a rank 2 input, got {fact:?}"
    );
    if let Ok(width) = fact.shape[1].to_usize() {
        ensure!(
            width == n_features,
            "{op}: input has {width} features, the model expects {n_features}"
        );
    }
    Ok(())
}

/// `vector_count x n_features` support vectors from a flat list.
pub fn support_vectors(node: &NodeProto, n_vectors: usize) -> TractResult<(Vec<f32>, usize)> {
    let sv = floats(node, "support_vectors")?;
    node.expect_attr(
        "support_vectors",
        !sv.is_empty() && sv.len() % n_vectors == 0,
        || {
            format!(
                "a non-empty multiple of the number of support vectors ({n_vectors}), got {}",
                sv.len()
            )
        },
    )?;
    let n_features = sv.len() / n_vectors;
    Ok((sv, n_features))
}
