//! Malformed ONNX-ML attributes, tree ensembles (`TreeEnsembleRegressor`,
//! `TreeEnsembleClassifier`, random forests with arbitrary child pointers): a crafted model
//! is an error (at load, optimisation or run), never a panic, an out-of-bounds read or an
//! endless loop. Each op also has a valid baseline built with the same helpers
//! (`malformed/`), so that the errors below come from the op, not from the harness.

use proptest::prelude::*;
use tract_onnx::pb::attribute_proto::AttributeType;
use tract_onnx::pb::{AttributeProto, TensorProto};
use tract_onnx::prelude::*;

mod malformed;

use malformed::*;

/// One tree: `x0 <= 0.5 ? leaf 1 : leaf 2`.
fn tree_attrs(leaf: &str) -> Vec<AttributeProto> {
    vec![
        ints("nodes_treeids", &[0, 0, 0]),
        ints("nodes_nodeids", &[0, 1, 2]),
        ints("nodes_featureids", &[0, 0, 0]),
        floats("nodes_values", &[0.5, 0.0, 0.0]),
        strings("nodes_modes", &["BRANCH_LEQ", "LEAF", "LEAF"]),
        ints("nodes_truenodeids", &[1, 0, 0]),
        ints("nodes_falsenodeids", &[2, 0, 0]),
        ints("nodes_missing_value_tracks_true", &[1, 0, 0]),
        ints(&format!("{leaf}_treeids"), &[0, 0]),
        ints(&format!("{leaf}_nodeids"), &[1, 2]),
        ints(&format!("{leaf}_ids"), &[0, 0]),
        floats(&format!("{leaf}_weights"), &[1.5, -2.0]),
    ]
}

fn tree_cases(leaf: &str) -> Vec<(&'static str, Vec<AttributeProto>)> {
    let l = |s: &str| format!("{leaf}_{s}");
    vec![
        (
            "child does not exist",
            vec![ints("nodes_truenodeids", &[99, 0, 0])],
        ),
        (
            "negative child id",
            vec![ints("nodes_falsenodeids", &[-1, 0, 0])],
        ),
        (
            "node points to itself",
            vec![ints("nodes_truenodeids", &[0, 0, 0])],
        ),
        (
            "cycle between two branches",
            vec![
                strings("nodes_modes", &["BRANCH_LEQ", "BRANCH_LT", "LEAF"]),
                ints("nodes_truenodeids", &[1, 0, 0]),
                ints("nodes_falsenodeids", &[2, 2, 0]),
            ],
        ),
        (
            "negative feature id",
            vec![ints("nodes_featureids", &[-3, 0, 0])],
        ),
        (
            "huge feature id",
            vec![ints("nodes_featureids", &[1 << 40, 0, 0])],
        ),
        (
            "feature beyond the input width",
            vec![ints("nodes_featureids", &[7, 0, 0])],
        ),
        (
            "nodes_values too short",
            vec![floats("nodes_values", &[0.5])],
        ),
        (
            "nodes_modes missing",
            vec![attr("-nodes_modes", AttributeType::Strings)],
        ),
        (
            "unknown node mode",
            vec![strings("nodes_modes", &["BRANCH_FOO", "LEAF", "LEAF"])],
        ),
        (
            "missing-value flag not 0/1",
            vec![ints("nodes_missing_value_tracks_true", &[2, 0, 0])],
        ),
        (
            "missing-value flags too short",
            vec![ints("nodes_missing_value_tracks_true", &[1])],
        ),
        ("duplicate node id", vec![ints("nodes_nodeids", &[0, 1, 1])]),
        (
            "trees not contiguous",
            vec![ints("nodes_treeids", &[0, 1, 0])],
        ),
        (
            "no nodes",
            vec![
                ints("nodes_treeids", &[]),
                ints("nodes_nodeids", &[]),
                ints("nodes_featureids", &[]),
                floats("nodes_values", &[]),
                strings("nodes_modes", &[]),
                ints("nodes_truenodeids", &[]),
                ints("nodes_falsenodeids", &[]),
                ints("nodes_missing_value_tracks_true", &[]),
            ],
        ),
        (
            "leaf without a weight",
            vec![
                ints(&l("treeids"), &[0]),
                ints(&l("nodeids"), &[1]),
                ints(&l("ids"), &[0]),
                floats(&l("weights"), &[1.0]),
            ],
        ),
        (
            "weight on a missing node",
            vec![ints(&l("nodeids"), &[1, 9])],
        ),
        (
            "weight lists of different lengths",
            vec![floats(&l("weights"), &[1.0])],
        ),
        (
            "target/class id out of range",
            vec![ints(&l("ids"), &[0, 5])],
        ),
        ("negative target/class id", vec![ints(&l("ids"), &[0, -1])]),
        (
            "double-precision attributes",
            vec![AttributeProto {
                t: Some(TensorProto {
                    data_type: 11,
                    dims: vec![3],
                    double_data: vec![0.5, 0.0, 0.0],
                    ..Default::default()
                }),
                ..attr("nodes_values_as_tensor", AttributeType::Tensor)
            }],
        ),
        (
            "attribute of the wrong type",
            vec![ints("nodes_values", &[1, 2, 3])],
        ),
        (
            "unknown post_transform",
            vec![string("post_transform", "CUBE")],
        ),
    ]
}

#[test]
fn tree_ensemble_regressor_rejects_malformed_attributes() {
    let mut valid = tree_attrs("target");
    valid.push(int("n_targets", 1));
    let mut cases = tree_cases("target");
    cases.extend([
        ("n_targets = 0", vec![int("n_targets", 0)]),
        ("negative n_targets", vec![int("n_targets", -4)]),
        ("huge n_targets", vec![int("n_targets", 1 << 40)]),
        (
            "base_values of the wrong length",
            vec![floats("base_values", &[1.0, 2.0])],
        ),
        (
            "unknown aggregate_function",
            vec![string("aggregate_function", "MEDIAN")],
        ),
    ]);
    check("TreeEnsembleRegressor", valid, 1, 2, cases);
}

#[test]
fn tree_ensemble_regressor_aggregates() {
    // Tree 0: x0 <= 0.5 ? 1.5 : -2.0; tree 1: a single leaf 4.0; base value 10.
    let attrs = with(
        tree_attrs("target"),
        vec![
            int("n_targets", 1),
            floats("base_values", &[10.0]),
            ints("nodes_treeids", &[0, 0, 0, 1]),
            ints("nodes_nodeids", &[0, 1, 2, 0]),
            ints("nodes_featureids", &[0, 0, 0, 0]),
            floats("nodes_values", &[0.5, 0.0, 0.0, 0.0]),
            strings("nodes_modes", &["BRANCH_LEQ", "LEAF", "LEAF", "LEAF"]),
            ints("nodes_truenodeids", &[1, 0, 0, 0]),
            ints("nodes_falsenodeids", &[2, 0, 0, 0]),
            ints("nodes_missing_value_tracks_true", &[1, 0, 0, 0]),
            ints("target_treeids", &[0, 0, 1]),
            ints("target_nodeids", &[1, 2, 0]),
            ints("target_ids", &[0, 0, 0]),
            floats("target_weights", &[1.5, -2.0, 4.0]),
        ],
    );
    for (agg, want) in [
        ("SUM", [15.5f32, 12.0, 15.5]),
        ("AVERAGE", [12.75, 11.0, 12.75]),
        ("MIN", [11.5, 8.0, 11.5]),
        ("MAX", [14.0, 14.0, 14.0]),
    ] {
        let m = model(
            "TreeEnsembleRegressor",
            with(attrs.clone(), vec![string("aggregate_function", agg)]),
            &[("X", FLOAT, 1)],
            vec![],
            1,
        );
        let plan = outpost_inference::onnx()
            .model_for_proto_model(&m)
            .unwrap()
            .into_optimized()
            .unwrap()
            .into_runnable()
            .unwrap();
        // The NaN row goes to the true branch: nodes_missing_value_tracks_true.
        let x = Tensor::from_shape(&[3, 1], &[0.0f32, 1.0, f32::NAN]).unwrap();
        let y = plan.run(tvec!(x.into_tvalue())).unwrap();
        let y = y[0]
            .try_as_plain_ram()
            .unwrap()
            .as_slice::<f32>()
            .unwrap()
            .to_vec();
        assert_eq!(y, want, "{agg}");
    }
}

#[test]
fn tree_ensemble_classifier_rejects_malformed_attributes() {
    let valid = with(
        tree_attrs("class"),
        vec![ints("classlabels_int64s", &[0, 1])],
    );
    let mut cases = tree_cases("class");
    cases.extend([
        (
            "no class labels",
            vec![attr("-classlabels_int64s", AttributeType::Ints)],
        ),
        (
            "both label kinds",
            vec![strings("classlabels_strings", &["a", "b"])],
        ),
        ("a single class", vec![ints("classlabels_int64s", &[0])]),
        (
            "base_values of the wrong length",
            vec![floats("base_values", &[1.0, 2.0, 3.0])],
        ),
        (
            "PROBIT on one binary score",
            vec![string("post_transform", "PROBIT")],
        ),
    ]);
    check("TreeEnsembleClassifier", valid, 2, 2, cases);
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 512, ..ProptestConfig::default() })]

    /// Random forests with arbitrary child pointers (including missing, self and cyclic
    /// ones), modes, features, weights and NaN inputs: the loader rejects or accepts them
    /// and accepted ones run, but nothing panics or hangs. `wellformed` forests (heap-
    /// numbered binary trees, ids in range) must load and run.
    #[test]
    fn random_trees_never_panic(
        n in 1usize..8,
        trees in prop::collection::vec(0i64..2, 8),
        children in prop::collection::vec(-1i64..9, 16),
        modes in prop::collection::vec(0usize..9, 8),
        features in prop::collection::vec(-1i64..4, 8),
        ids in prop::collection::vec(-1i64..4, 8),
        weights in prop::collection::vec(-2f32..2.0, 8),
        extra in prop::collection::vec((0i64..2, 0i64..9, 0i64..3, -2f32..2.0), 0..3),
        classifier in any::<bool>(),
        wellformed in any::<bool>(),
    ) {
        const MODES: [&str; 9] = ["LEAF", "BRANCH_LEQ", "BRANCH_LT", "BRANCH_GTE", "BRANCH_GT", "BRANCH_EQ", "BRANCH_NEQ", "LEAF", "LEAF"];
        let mut tree_ids: Vec<i64> = trees[..n].to_vec();
        tree_ids.sort();
        let (mut modes, mut children, mut features, mut ids) = (modes, children, features, ids);
        let mut extra = extra;
        if wellformed {
            tree_ids = vec![0; n];
            extra.clear();
            for i in 0..n {
                children[i] = 2 * i as i64 + 1;
                children[8 + i] = 2 * i as i64 + 2;
                if 2 * i + 2 >= n {
                    modes[i] = 0;
                } else if modes[i] % 7 == 0 {
                    modes[i] = 1;
                }
                features[i] = features[i].rem_euclid(3);
                ids[i] = ids[i].rem_euclid(2);
            }
        }
        let leaf = if classifier { "class" } else { "target" };
        // One weight per node (ignored on branches) plus a few random ones.
        let mut w: Vec<(i64, i64, i64, f32)> =
            (0..n).map(|i| (tree_ids[i], i as i64, ids[i], weights[i])).collect();
        w.extend(extra);
        let mut attrs = vec![
            ints("nodes_treeids", &tree_ids),
            ints("nodes_nodeids", &(0..n as i64).collect::<Vec<_>>()),
            ints("nodes_featureids", &features[..n]),
            floats("nodes_values", &vec![0.25; n]),
            strings("nodes_modes", &modes[..n].iter().map(|&m| MODES[m]).collect::<Vec<_>>()),
            ints("nodes_truenodeids", &children[..n]),
            ints("nodes_falsenodeids", &children[8..8 + n]),
            ints("nodes_missing_value_tracks_true", &modes[..n].iter().map(|&m| (m % 2) as i64).collect::<Vec<_>>()),
            ints(&format!("{leaf}_treeids"), &w.iter().map(|l| l.0).collect::<Vec<_>>()),
            ints(&format!("{leaf}_nodeids"), &w.iter().map(|l| l.1).collect::<Vec<_>>()),
            ints(&format!("{leaf}_ids"), &w.iter().map(|l| l.2).collect::<Vec<_>>()),
            floats(&format!("{leaf}_weights"), &w.iter().map(|l| l.3).collect::<Vec<_>>()),
        ];
        let op = if classifier {
            attrs.push(ints("classlabels_int64s", if ids[0] % 2 == 0 { &[0, 1, 2][..] } else { &[0, 1][..] }));
            "TreeEnsembleClassifier"
        } else {
            attrs.push(int("n_targets", 3));
            "TreeEnsembleRegressor"
        };
        let m = model(op, attrs, &[("X", FLOAT, 3)], vec![], if classifier { 2 } else { 1 });
        let result = try_model(&m, &[rows(3)]);
        if wellformed {
            prop_assert!(result.is_ok(), "{op}: {result:?}");
        }
    }
}
