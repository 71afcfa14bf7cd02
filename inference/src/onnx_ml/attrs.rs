//! Attribute helpers shared by the ONNX-ML builders: typed getters that check lengths and
//! ranges and fail with the node and attribute named.

use tract_onnx::pb::NodeProto;
use tract_onnx::tract_hir::internal::*;

use super::MAX_ATTR_ELEMENTS;

/// Class labels of a classifier: `<prefix>_int64s`/`<prefix>_ints` or `<prefix>_strings`,
/// exactly one of them, non-empty.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Labels {
    Ints(Vec<i64>),
    Strings(Vec<String>),
}

impl Labels {
    pub fn len(&self) -> usize {
        match self {
            Labels::Ints(v) => v.len(),
            Labels::Strings(v) => v.len(),
        }
    }

    pub fn datum_type(&self) -> DatumType {
        match self {
            Labels::Ints(_) => i64::datum_type(),
            Labels::Strings(_) => String::datum_type(),
        }
    }

    pub fn as_strings(&self) -> Vec<String> {
        match self {
            Labels::Ints(v) => v.iter().map(|i| i.to_string()).collect(),
            Labels::Strings(v) => v.clone(),
        }
    }

    /// A rank-1 tensor of the labels at the given class indices (all `< len()`).
    pub fn pick(&self, classes: &[usize]) -> Tensor {
        match self {
            Labels::Ints(v) => tensor1(&classes.iter().map(|&c| v[c]).collect::<Vec<_>>()),
            Labels::Strings(v) => {
                tensor1(&classes.iter().map(|&c| v[c].clone()).collect::<Vec<_>>())
            }
        }
    }

    /// Reads `ints_name` or `strings_name` (exactly one must be present).
    pub fn parse(node: &NodeProto, ints_name: &str, strings_name: &str) -> TractResult<Labels> {
        let ints = node.get_attr_opt_vec::<i64>(ints_name)?;
        let strings = node.get_attr_opt_vec::<String>(strings_name)?;
        let labels = match (ints, strings) {
            (Some(i), None) => Labels::Ints(i),
            (None, Some(s)) => Labels::Strings(s),
            (None, None) => {
                bail!(
                    "{}: needs '{ints_name}' or '{strings_name}'",
                    describe(node)
                )
            }
            (Some(_), Some(_)) => {
                bail!(
                    "{}: only one of '{ints_name}' and '{strings_name}' may be set",
                    describe(node)
                )
            }
        };
        ensure!(
            labels.len() > 0,
            "{}: the class label list is empty",
            describe(node)
        );
        Ok(labels)
    }
}

/// "Node <name> (<op>)" for error messages.
pub fn describe(node: &NodeProto) -> String {
    format!("Node {} ({})", node.name, node.op_type)
}

/// A float list attribute, or `None` when absent.
pub fn floats_opt(node: &NodeProto, name: &str) -> TractResult<Option<Vec<f32>>> {
    node.get_attr_opt_vec::<f32>(name)
}

/// A float list attribute, empty when absent.
pub fn floats(node: &NodeProto, name: &str) -> TractResult<Vec<f32>> {
    Ok(floats_opt(node, name)?.unwrap_or_default())
}

/// An int list attribute, empty when absent.
pub fn ints(node: &NodeProto, name: &str) -> TractResult<Vec<i64>> {
    Ok(node.get_attr_opt_vec::<i64>(name)?.unwrap_or_default())
}

/// A string attribute with a default.
pub fn string_or(node: &NodeProto, name: &str, default: &str) -> TractResult<String> {
    Ok(node
        .get_attr_opt::<String>(name)?
        .unwrap_or_else(|| default.to_string()))
}

/// Checks that an attribute list has `expected` elements.
pub fn expect_len(node: &NodeProto, name: &str, len: usize, expected: usize) -> TractResult<()> {
    node.expect_attr(name, len == expected, || {
        format!("{expected} elements, got {len}")
    })
}

/// Converts an int attribute element to an index `< bound` (and `<= MAX_ATTR_ELEMENTS`).
pub fn index(node: &NodeProto, name: &str, value: i64, bound: usize) -> TractResult<usize> {
    let bound = bound.min(MAX_ATTR_ELEMENTS);
    if value < 0 || value as u64 >= bound as u64 {
        node.bail_attr(name, &format!("expected values in 0..{bound}, got {value}"))
    } else {
        Ok(value as usize)
    }
}

/// A positive size taken from an attribute value, capped by [`MAX_ATTR_ELEMENTS`].
pub fn size(node: &NodeProto, name: &str, value: i64) -> TractResult<usize> {
    if value <= 0 || value as u64 > MAX_ATTR_ELEMENTS as u64 {
        node.bail_attr(
            name,
            &format!("expected a size in 1..={MAX_ATTR_ELEMENTS}, got {value}"),
        )
    } else {
        Ok(value as usize)
    }
}
