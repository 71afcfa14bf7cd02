//! The ONNX-ML score post-transforms, computed the way onnxruntime's CPU kernels do
//! (`ml_common.h`): single-precision, element by element, in the same order, so that
//! tree-ensemble outputs match onnxruntime bit for bit where it uses these scalar paths.

use tract_onnx::pb::NodeProto;
use tract_onnx::prelude::*;

use super::attrs::string_or;

/// `post_transform` attribute of the classifiers and regressors.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum PostTransform {
    None,
    Logistic,
    Softmax,
    SoftmaxZero,
    Probit,
}

impl PostTransform {
    /// Parses the `post_transform` attribute (default `NONE`).
    pub fn parse(node: &NodeProto) -> TractResult<PostTransform> {
        let s = string_or(node, "post_transform", "NONE")?;
        Ok(match s.as_str() {
            "NONE" => PostTransform::None,
            "LOGISTIC" => PostTransform::Logistic,
            "SOFTMAX" => PostTransform::Softmax,
            "SOFTMAX_ZERO" => PostTransform::SoftmaxZero,
            "PROBIT" => PostTransform::Probit,
            other => {
                return node.bail_attr(
                    "post_transform",
                    &format!(
                        "expected NONE, LOGISTIC, SOFTMAX, SOFTMAX_ZERO or PROBIT, got {other:?}"
                    ),
                );
            }
        })
    }

    /// Applies the transform to one row of scores in place (`write_scores` for two or
    /// more scores).
    pub fn apply(self, scores: &mut [f32]) {
        match self {
            PostTransform::None => {}
            PostTransform::Logistic => scores.iter_mut().for_each(|s| *s = logistic(*s)),
            PostTransform::Softmax => softmax(scores),
            PostTransform::SoftmaxZero => softmax_zero(scores),
            PostTransform::Probit => scores.iter_mut().for_each(|s| *s = probit(*s)),
        }
    }
}

/// `ComputeLogistic`: 1 / (1 + exp(-|x|)), mirrored for negative x.
pub fn logistic(x: f32) -> f32 {
    let v = 1.0 / (1.0 + (-x.abs()).exp());
    if x < 0.0 { 1.0 - v } else { v }
}

/// `ComputeSoftmax`.
pub fn softmax(values: &mut [f32]) {
    let mut max = -f32::MAX;
    for &v in values.iter() {
        if v > max {
            max = v;
        }
    }
    let mut sum = 0f32;
    for v in values.iter_mut() {
        *v = (*v - max).exp();
        sum += *v;
    }
    for v in values.iter_mut() {
        *v /= sum;
    }
}

/// `ComputeSoftmaxZero`: a softmax that leaves (near-)zero scores at zero.
pub fn softmax_zero(values: &mut [f32]) {
    let mut max = -f32::MAX;
    for &v in values.iter() {
        if v > max {
            max = v;
        }
    }
    let exp_neg_max = (-max).exp();
    let mut sum = 0f32;
    for v in values.iter_mut() {
        if *v > 0.000_000_1 || *v < -0.000_000_1 {
            *v = (*v - max).exp();
            sum += *v;
        } else {
            *v *= exp_neg_max;
        }
    }
    for v in values.iter_mut() {
        *v /= sum;
    }
}

/// `ErfInv`: Winitzki's approximation, as onnxruntime computes it.
fn erf_inv(x: f32) -> f32 {
    let sgn = if x < 0.0 { -1.0f32 } else { 1.0 };
    let x = (1.0 - x) * (1.0 + x);
    let log = x.ln();
    let v = 2.0 / (std::f32::consts::PI * 0.147) + 0.5 * log;
    let v2 = 1.0 / 0.147 * log;
    let v3 = -v + (v * v - v2).sqrt();
    sgn * v3.sqrt()
}

/// `ComputeProbit`: sqrt(2) * erfinv(2x - 1).
pub fn probit(x: f32) -> f32 {
    std::f32::consts::SQRT_2 * erf_inv(2.0 * x - 1.0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn logistic_is_symmetric_and_bounded() {
        assert_eq!(logistic(0.0), 0.5);
        assert!((logistic(2.0) + logistic(-2.0) - 1.0).abs() < 1e-7);
        assert_eq!(logistic(1000.0), 1.0);
        assert_eq!(logistic(-1000.0), 0.0);
    }

    #[test]
    fn softmax_sums_to_one() {
        let mut v = [1.0f32, 2.0, 3.0];
        softmax(&mut v);
        assert!((v.iter().sum::<f32>() - 1.0).abs() < 1e-6);
        assert!(v[2] > v[1] && v[1] > v[0]);
    }

    #[test]
    fn softmax_zero_keeps_zeros() {
        let mut v = [0.0f32, 2.0, 3.0];
        softmax_zero(&mut v);
        assert_eq!(v[0], 0.0);
        assert!((v[1] + v[2] - 1.0).abs() < 1e-6);
    }

    #[test]
    fn probit_is_the_normal_quantile() {
        assert!(probit(0.5).abs() < 1e-6);
        assert!((probit(0.975) - 1.959_964).abs() < 5e-3);
    }
}
