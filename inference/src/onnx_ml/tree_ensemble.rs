//! The decision forest shared by `TreeEnsembleRegressor` and `TreeEnsembleClassifier`:
//! parsed from the ONNX-ML attribute lists, validated (every child exists in the same
//! tree and is not the node itself, no tree has a cycle, every leaf has a weight, every
//! target/class id is in range), and evaluated with safe indexing only.
//!
//! Evaluation follows onnxruntime's `TreeEnsembleCommon`: trees are visited in the order
//! their first node appears in the attributes (that node is the tree's root), a branch
//! goes to its true child when `x <cmp> threshold`, or when `x` is NaN and the node's
//! `nodes_missing_value_tracks_true` is 1, and scores are accumulated in single precision
//! in tree order, so sums match onnxruntime bit for bit.

use std::collections::HashMap;

use tract_onnx::pb::NodeProto;
use tract_onnx::tract_hir::internal::*;

use super::MAX_ATTR_ELEMENTS;
use super::attrs::{describe, expect_len, floats, index, ints, string_or};

/// Node comparison (`nodes_modes`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    Leaf,
    Leq,
    Lt,
    Gte,
    Gt,
    Eq,
    Neq,
}

impl Mode {
    fn parse(node: &NodeProto, s: &str) -> TractResult<Mode> {
        Ok(match s {
            "LEAF" => Mode::Leaf,
            "BRANCH_LEQ" => Mode::Leq,
            "BRANCH_LT" => Mode::Lt,
            "BRANCH_GTE" => Mode::Gte,
            "BRANCH_GT" => Mode::Gt,
            "BRANCH_EQ" => Mode::Eq,
            "BRANCH_NEQ" => Mode::Neq,
            other => return node.bail_attr("nodes_modes", &format!("unknown node mode {other:?}")),
        })
    }
}

/// `aggregate_function` (regressors; classifiers always sum).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Aggregate {
    Sum,
    Average,
    Min,
    Max,
}

impl Aggregate {
    pub fn parse(node: &NodeProto) -> TractResult<Aggregate> {
        Ok(
            match string_or(node, "aggregate_function", "SUM")?.as_str() {
                "SUM" => Aggregate::Sum,
                "AVERAGE" => Aggregate::Average,
                "MIN" => Aggregate::Min,
                "MAX" => Aggregate::Max,
                other => {
                    return node.bail_attr(
                        "aggregate_function",
                        &format!("expected SUM, AVERAGE, MIN or MAX, got {other:?}"),
                    );
                }
            },
        )
    }
}

/// One node: a branch (`true_or_first`/`false_or_end` are node indices) or a leaf
/// (`true_or_first..false_or_end` is its range in [`Forest::weights`]).
#[derive(Debug, Clone, Copy)]
struct Node {
    mode: Mode,
    missing_true: bool,
    feature: u32,
    threshold: f32,
    true_or_first: u32,
    false_or_end: u32,
}

/// A validated forest.
#[derive(Debug, Clone)]
pub struct Forest {
    nodes: Vec<Node>,
    roots: Vec<u32>,
    /// (target or class id, weight), grouped by leaf.
    weights: Vec<(u32, f32)>,
    /// Number of targets (regressor) or classes (classifier).
    pub n_targets: usize,
    /// Features the input must have at least (1 + largest feature id of a branch).
    pub n_features: usize,
}

/// Per-target accumulator: onnxruntime's `ScoreValue` (a score and whether any leaf
/// contributed to it).
#[derive(Debug, Clone, Copy, Default)]
pub struct Score {
    pub score: f32,
    pub has: bool,
}

impl Forest {
    /// Parses the node and leaf attributes; `leaf_prefix` is `target` (regressor) or
    /// `class` (classifier).
    pub fn parse(node: &NodeProto, leaf_prefix: &str, n_targets: usize) -> TractResult<Forest> {
        for unsupported in [
            "nodes_values_as_tensor",
            "base_values_as_tensor",
            "target_weights_as_tensor",
            "class_weights_as_tensor",
        ] {
            if node.attribute.iter().any(|a| a.name == unsupported) {
                return node.bail_attr(
                    unsupported,
                    "double-precision tree ensembles (*_as_tensor) are not supported",
                );
            }
        }
        ensure!(
            n_targets > 0 && n_targets <= MAX_ATTR_ELEMENTS,
            "{}: number of targets/classes {n_targets} out of range",
            describe(node)
        );
        let tree_ids = ints(node, "nodes_treeids")?;
        let n = tree_ids.len();
        node.expect_attr("nodes_treeids", n > 0, "at least one node")?;
        node.expect_attr(
            "nodes_treeids",
            n < u32::MAX as usize,
            "fewer than 2^32 nodes",
        )?;
        let node_ids = ints(node, "nodes_nodeids")?;
        let feature_ids = ints(node, "nodes_featureids")?;
        let true_ids = ints(node, "nodes_truenodeids")?;
        let false_ids = ints(node, "nodes_falsenodeids")?;
        let values = floats(node, "nodes_values")?;
        let modes = node
            .get_attr_opt_vec::<String>("nodes_modes")?
            .unwrap_or_default();
        let missing = ints(node, "nodes_missing_value_tracks_true")?;
        expect_len(node, "nodes_nodeids", node_ids.len(), n)?;
        expect_len(node, "nodes_featureids", feature_ids.len(), n)?;
        expect_len(node, "nodes_truenodeids", true_ids.len(), n)?;
        expect_len(node, "nodes_falsenodeids", false_ids.len(), n)?;
        expect_len(node, "nodes_values", values.len(), n)?;
        expect_len(node, "nodes_modes", modes.len(), n)?;
        if !missing.is_empty() {
            expect_len(node, "nodes_missing_value_tracks_true", missing.len(), n)?;
        }

        // (tree id, node id) -> index; trees are contiguous runs, rooted at their first node.
        let mut by_id: HashMap<(i64, i64), u32> = HashMap::with_capacity(n);
        let mut roots: Vec<u32> = vec![];
        let mut seen_trees: HashMap<i64, ()> = HashMap::new();
        for i in 0..n {
            if i == 0 || tree_ids[i] != tree_ids[i - 1] {
                if seen_trees.insert(tree_ids[i], ()).is_some() {
                    return node.bail_attr(
                        "nodes_treeids",
                        &format!("the nodes of tree {} are not contiguous", tree_ids[i]),
                    );
                }
                roots.push(i as u32);
            }
            if by_id.insert((tree_ids[i], node_ids[i]), i as u32).is_some() {
                return node.bail_attr(
                    "nodes_nodeids",
                    &format!(
                        "node {} of tree {} is defined twice",
                        node_ids[i], tree_ids[i]
                    ),
                );
            }
        }

        let mut nodes = Vec::with_capacity(n);
        let mut n_features = 0usize;
        for i in 0..n {
            let mode = Mode::parse(node, &modes[i])?;
            let missing_true = match missing.get(i) {
                None | Some(0) => false,
                Some(1) => true,
                Some(v) => {
                    return node.bail_attr(
                        "nodes_missing_value_tracks_true",
                        &format!("expected 0 or 1, got {v}"),
                    );
                }
            };
            let mut n_ = Node {
                mode,
                missing_true,
                feature: 0,
                threshold: values[i],
                true_or_first: 0,
                false_or_end: 0,
            };
            if mode != Mode::Leaf {
                let feature = index(node, "nodes_featureids", feature_ids[i], MAX_ATTR_ELEMENTS)?;
                n_features = n_features.max(feature + 1);
                n_.feature = feature as u32;
                let child = |attr: &str, id: i64| -> TractResult<u32> {
                    match by_id.get(&(tree_ids[i], id)) {
                        Some(&c) if c as usize != i => Ok(c),
                        Some(_) => node.bail_attr(
                            attr,
                            &format!(
                                "node {} of tree {} points to itself",
                                node_ids[i], tree_ids[i]
                            ),
                        ),
                        None => node.bail_attr(
                            attr,
                            &format!("node {id} of tree {} does not exist", tree_ids[i]),
                        ),
                    }
                };
                n_.true_or_first = child("nodes_truenodeids", true_ids[i])?;
                n_.false_or_end = child("nodes_falsenodeids", false_ids[i])?;
            }
            nodes.push(n_);
        }

        // Leaf weights, grouped by leaf (stable: attribute order within a leaf).
        let w_ids = ints(node, &format!("{leaf_prefix}_ids"))?;
        let w_nodes = ints(node, &format!("{leaf_prefix}_nodeids"))?;
        let w_trees = ints(node, &format!("{leaf_prefix}_treeids"))?;
        let w_values = floats(node, &format!("{leaf_prefix}_weights"))?;
        let m = w_ids.len();
        expect_len(node, &format!("{leaf_prefix}_nodeids"), w_nodes.len(), m)?;
        expect_len(node, &format!("{leaf_prefix}_treeids"), w_trees.len(), m)?;
        expect_len(node, &format!("{leaf_prefix}_weights"), w_values.len(), m)?;
        let mut per_leaf: Vec<(u32, u32, f32)> = Vec::with_capacity(m);
        for k in 0..m {
            let Some(&leaf) = by_id.get(&(w_trees[k], w_nodes[k])) else {
                return node.bail_attr(
                    &format!("{leaf_prefix}_nodeids"),
                    &format!("node {} of tree {} does not exist", w_nodes[k], w_trees[k]),
                );
            };
            // onnxruntime ignores weights attached to branch nodes (old converters).
            if nodes[leaf as usize].mode != Mode::Leaf {
                continue;
            }
            let target = index(node, &format!("{leaf_prefix}_ids"), w_ids[k], n_targets)?;
            per_leaf.push((leaf, target as u32, w_values[k]));
        }
        per_leaf.sort_by_key(|w| w.0);
        let mut weights = Vec::with_capacity(per_leaf.len());
        let mut k = 0;
        while k < per_leaf.len() {
            let leaf = per_leaf[k].0 as usize;
            let first = weights.len() as u32;
            while k < per_leaf.len() && per_leaf[k].0 as usize == leaf {
                weights.push((per_leaf[k].1, per_leaf[k].2));
                k += 1;
            }
            nodes[leaf].true_or_first = first;
            nodes[leaf].false_or_end = weights.len() as u32;
        }
        for (i, n_) in nodes.iter().enumerate() {
            if n_.mode == Mode::Leaf && n_.true_or_first == n_.false_or_end {
                return node.bail_attr(
                    &format!("{leaf_prefix}_nodeids"),
                    &format!("leaf {} of tree {} has no weight", node_ids[i], tree_ids[i]),
                );
            }
        }

        let forest = Forest {
            nodes,
            roots,
            weights,
            n_targets,
            n_features,
        };
        forest
            .check_acyclic()
            .map_err(|e| format_err!("{}: {e}", describe(node)))?;
        Ok(forest)
    }

    /// Every tree is a DAG (shared subtrees are fine): evaluation always reaches a leaf.
    fn check_acyclic(&self) -> TractResult<()> {
        // 0: not visited, 1: on the current path, 2: done.
        let mut state = vec![0u8; self.nodes.len()];
        let mut stack: Vec<(u32, u8)> = vec![];
        for &root in &self.roots {
            if state[root as usize] == 2 {
                continue;
            }
            state[root as usize] = 1;
            stack.push((root, 0));
            while let Some(top) = stack.last_mut() {
                let node = self.nodes[top.0 as usize];
                if node.mode == Mode::Leaf || top.1 == 2 {
                    state[top.0 as usize] = 2;
                    stack.pop();
                    continue;
                }
                let child = if top.1 == 0 {
                    node.true_or_first
                } else {
                    node.false_or_end
                };
                top.1 += 1;
                match state[child as usize] {
                    0 => {
                        state[child as usize] = 1;
                        stack.push((child, 0));
                    }
                    1 => bail!("a tree has a cycle (through node index {child})"),
                    _ => {}
                }
            }
        }
        Ok(())
    }

    pub fn n_trees(&self) -> usize {
        self.roots.len()
    }

    /// Distinct target/class ids carrying a weight, and whether all weights are >= 0.
    pub fn weight_summary(&self) -> (usize, bool) {
        let mut ids: Vec<u32> = self.weights.iter().map(|w| w.0).collect();
        ids.sort_unstable();
        ids.dedup();
        (ids.len(), self.weights.iter().all(|w| w.1 >= 0.0))
    }

    /// The leaf a row reaches in a tree; `x.len() >= n_features` (checked by callers).
    fn leaf(&self, root: u32, x: &[f32]) -> &Node {
        let mut node = &self.nodes[root as usize];
        loop {
            let go_true = match node.mode {
                Mode::Leaf => return node,
                mode => {
                    let v = x[node.feature as usize];
                    let t = node.threshold;
                    let cmp = match mode {
                        Mode::Leq => v <= t,
                        Mode::Lt => v < t,
                        Mode::Gte => v >= t,
                        Mode::Gt => v > t,
                        Mode::Eq => v == t,
                        Mode::Neq => v != t,
                        Mode::Leaf => unreachable!(),
                    };
                    cmp || (node.missing_true && v.is_nan())
                }
            };
            let next = if go_true {
                node.true_or_first
            } else {
                node.false_or_end
            };
            node = &self.nodes[next as usize];
        }
    }

    /// The weights of the leaf a row reaches in each tree, tree by tree.
    pub fn for_each_leaf(&self, x: &[f32], mut f: impl FnMut(&[(u32, f32)])) {
        for &root in &self.roots {
            let leaf = self.leaf(root, x);
            f(&self.weights[leaf.true_or_first as usize..leaf.false_or_end as usize]);
        }
    }

    /// Sums every tree's leaf weights per target (onnxruntime's `TreeAggregatorSum`).
    pub fn sum(&self, x: &[f32], scores: &mut [Score]) {
        scores.iter_mut().for_each(|s| *s = Score::default());
        self.for_each_leaf(x, |weights| {
            for &(t, w) in weights {
                let s = &mut scores[t as usize];
                s.score += w;
                s.has = true;
            }
        });
    }

    /// Input rows as a contiguous f32 matrix `[n, width]`: f32, f64, i64 and i32 inputs
    /// of rank 1 (one row) or 2, with at least `n_features` columns.
    pub fn rows(&self, op: &str, input: &Tensor) -> TractResult<(Tensor, usize, usize)> {
        input_rows(op, input, self.n_features)
    }
}

/// See [`Forest::rows`].
pub fn input_rows(
    op: &str,
    input: &Tensor,
    min_width: usize,
) -> TractResult<(Tensor, usize, usize)> {
    let (n, width) = match input.shape() {
        [w] => (1, *w),
        [n, w] => (*n, *w),
        shape => bail!("{op}: expected a rank 1 or 2 input, got shape {shape:?}"),
    };
    ensure!(
        width >= min_width,
        "{op}: input has {width} features, the model uses feature #{}",
        min_width.saturating_sub(1)
    );
    let x = input
        .cast_to::<f32>()?
        .into_owned()
        .into_shape(&[n, width])?;
    Ok((x, n, width))
}

/// Checks at load time (when the feature count is known) that it is large enough.
pub fn check_width(op: &str, fact: &TypedFact, min_width: usize) -> TractResult<()> {
    ensure!(
        fact.rank() == 2,
        "{op}: expected a rank 2 input, got {fact:?}"
    );
    if let Ok(width) = fact.shape[1].to_usize() {
        ensure!(
            width >= min_width,
            "{op}: input has {width} features, the model uses feature #{}",
            min_width.saturating_sub(1)
        );
    }
    Ok(())
}
