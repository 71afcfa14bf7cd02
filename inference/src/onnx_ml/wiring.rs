//! Small helpers for wiring typed graphs from the expansions.

use tract_onnx::tract_core::ops::cast::cast;
use tract_onnx::tract_hir::internal::*;

/// Casts `x` to `dt` unless it already is.
pub fn wire_cast(
    model: &mut TypedModel,
    name: String,
    x: OutletId,
    dt: DatumType,
) -> TractResult<OutletId> {
    if model.outlet_fact(x)?.datum_type == dt {
        return Ok(x);
    }
    Ok(model.wire_node(name, cast(dt), &[x])?[0])
}

/// An integer input as i64: tract's ONNX `Cast(to=INT64)` yields TDim tensors.
pub fn wire_int64(model: &mut TypedModel, name: String, x: OutletId) -> TractResult<OutletId> {
    let dt = model.outlet_fact(x)?.datum_type;
    if dt == TDim::datum_type() || dt == i32::datum_type() {
        wire_cast(model, name, x, i64::datum_type())
    } else {
        Ok(x)
    }
}

/// A per-feature constant for an input of `rank` (>= 1): shape `[1, .., 1, len]`.
pub fn feature_const(values: Tensor, rank: usize) -> TractResult<Tensor> {
    let len = values.len();
    let mut shape = vec![1usize; rank.max(1)];
    *shape.last_mut().unwrap() = len;
    values.into_shape(&shape)
}

/// Checks that a per-feature attribute of `len` values fits the input's feature axis:
/// one value for all, or one per feature.
pub fn check_feature_len(op: &str, attr: &str, fact: &TypedFact, len: usize) -> TractResult<()> {
    ensure!(
        fact.rank() >= 1,
        "{op}: expected an input of rank 1 or more, got {fact:?}"
    );
    if len != 1
        && let Ok(width) = fact.shape[fact.rank() - 1].to_usize()
    {
        ensure!(
            width == len,
            "{op}: '{attr}' has {len} values, expected 1 or one per feature ({width})"
        );
    }
    Ok(())
}
