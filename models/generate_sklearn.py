#!/usr/bin/env python3
"""Generates the scikit-learn ONNX fixtures under models/sklearn/ (run from anywhere).

    /work/venv/bin/python models/generate_sklearn.py        # or any venv with requirements.txt

For every estimator below it writes

  sklearn/<name>/model.onnx       exactly what skl2onnx writes with default options:
                                  `skl2onnx.to_onnx(est, X[:1].astype(np.float32))` (or
                                  `to_onnx(est, initial_types=...)` for the multi-input
                                  models). Never edited: no zipmap=False, no
                                  target_opset, no post-processing. (One exception is named
                                  `*_mlopset3` and says so: the default conversion fails.)
  sklearn/<name>/reference.json   inputs (name, dtype, shape), eight single rows and one
                                  batch of up to 24 rows (including the single ones), and
                                  onnxruntime's outputs for each case.
  sklearn/unconverted.json        the estimators skl2onnx cannot convert at default options,
                                  with the converter's error (also printed).

reference.json layout:
  {"name", "estimator", "dataset", "converter", "runtime", "versions",
   "inputs":  [{"name", "dtype", "shape": [null, k]}],
   "outputs": [{"name", "dtype", "kind": "tensor" | "zipmap"}],
   "class_labels": ["0", "1", ...] or null,
   "cases": [{"rows": n,
              "inputs":  {name: {"shape": [...], "data": [flat, NaN written as null]}},
              "outputs": {name: {"shape": [...], "data": [flat]}}}]}
A ZipMap output (onnxruntime returns a list of {label: probability} maps) is recorded as a
float32 [N, n_classes] array whose columns follow `class_labels` (the classifier's
`classes_`, which is also the ZipMap's classlabels order). Float values are float32 values
written as the shortest decimal that round-trips through float64, hence exact.

Everything is seeded; re-running reproduces the same files on the versions pinned in
requirements.txt (scikit-learn, skl2onnx, onnxruntime, numpy, protobuf).
"""

import json
import os
import shutil
import sys
import warnings

# skl2onnx writes opset imports in set-iteration order: fix string hashing so that
# re-running reproduces the same bytes.
if os.environ.get("PYTHONHASHSEED") != "0":
    os.environ["PYTHONHASHSEED"] = "0"
    os.execv(sys.executable, [sys.executable, *sys.argv])

import numpy as np
import onnx
import onnxruntime as ort
import sklearn
import skl2onnx
from skl2onnx import to_onnx
from skl2onnx.common.data_types import FloatTensorType, Int64TensorType
from sklearn.compose import ColumnTransformer
from sklearn.datasets import load_breast_cancer, load_diabetes, load_iris, load_linnerud, load_wine
from sklearn.ensemble import (
    ExtraTreesClassifier,
    GradientBoostingClassifier,
    GradientBoostingRegressor,
    HistGradientBoostingClassifier,
    HistGradientBoostingRegressor,
    IsolationForest,
    RandomForestClassifier,
    RandomForestRegressor,
)
from sklearn.exceptions import ConvergenceWarning
from sklearn.impute import SimpleImputer
from sklearn.linear_model import LinearRegression, LogisticRegression, Ridge, SGDClassifier
from sklearn.naive_bayes import GaussianNB
from sklearn.neighbors import KNeighborsClassifier, KNeighborsRegressor, LocalOutlierFactor
from sklearn.neural_network import MLPClassifier
from sklearn.pipeline import Pipeline, make_pipeline
from sklearn.preprocessing import Binarizer, OneHotEncoder, StandardScaler
from sklearn.svm import SVC, SVR, LinearSVC, OneClassSVM
from sklearn.tree import DecisionTreeClassifier, DecisionTreeRegressor

HERE = os.path.dirname(os.path.abspath(__file__))
OUT = os.path.join(HERE, "sklearn")
SEED = 0
MAX_MODEL_BYTES = 300 * 1024


# ---------------------------------------------------------------------------------------
# Datasets (all bundled with scikit-learn: no download)


def dataset(name):
    if name == "iris":
        return load_iris(return_X_y=True)
    if name == "wine":
        return load_wine(return_X_y=True)
    if name == "breast_cancer":
        return load_breast_cancer(return_X_y=True)
    if name == "diabetes":
        return load_diabetes(return_X_y=True)
    if name == "linnerud":  # 3 targets: multi-output regression
        return load_linnerud(return_X_y=True)
    if name == "iris_strings":  # string class labels
        x, y = load_iris(return_X_y=True)
        return x, np.array(["setosa", "versicolor", "virginica"])[y]
    if name == "wine_nan":  # ~10% missing values in three columns (seeded)
        x, y = load_wine(return_X_y=True)
        x = x.copy()
        rng = np.random.default_rng(SEED)
        for col in (0, 3, 9):
            x[rng.random(len(x)) < 0.1, col] = np.nan
        return x, y
    if name == "breast_cancer_nan":
        x, y = load_breast_cancer(return_X_y=True)
        x = x.copy()
        rng = np.random.default_rng(SEED + 1)
        for col in (0, 7, 20, 27):
            x[rng.random(len(x)) < 0.1, col] = np.nan
        return x, y
    raise ValueError(name)


def test_rows(n, count):
    """Indices spread over the dataset (datasets are sorted by class: this hits each)."""
    return np.unique(np.linspace(0, n - 1, count).round().astype(int))


# ---------------------------------------------------------------------------------------
# Fixtures: (name, dataset, estimator factory, notes). Forests stay small (10-20 trees,
# depth-limited) so that every model.onnx stays well under MAX_MODEL_BYTES.


def single_input_fixtures():
    return [
        # classifiers
        ("logistic_regression_multiclass", "iris", lambda: LogisticRegression(max_iter=1000)),
        ("logistic_regression_binary", "breast_cancer",
         lambda: LogisticRegression(max_iter=5000)),
        ("random_forest_classifier", "wine",
         lambda: RandomForestClassifier(n_estimators=10, max_depth=5, random_state=SEED)),
        ("random_forest_classifier_binary", "breast_cancer",
         lambda: RandomForestClassifier(n_estimators=10, max_depth=5, random_state=SEED)),
        ("gradient_boosting_classifier_binary", "breast_cancer",
         lambda: GradientBoostingClassifier(n_estimators=15, max_depth=3, random_state=SEED)),
        ("gradient_boosting_classifier_multiclass", "wine",
         lambda: GradientBoostingClassifier(n_estimators=10, max_depth=3, random_state=SEED)),
        ("decision_tree_classifier", "wine",
         lambda: DecisionTreeClassifier(max_depth=6, random_state=SEED)),
        ("decision_tree_classifier_strings", "iris_strings",
         lambda: DecisionTreeClassifier(max_depth=4, random_state=SEED)),
        ("extra_trees_classifier", "iris",
         lambda: ExtraTreesClassifier(n_estimators=10, max_depth=5, random_state=SEED)),
        ("hist_gradient_boosting_classifier", "wine_nan",
         lambda: HistGradientBoostingClassifier(max_iter=10, max_depth=3, random_state=SEED)),
        ("hist_gradient_boosting_classifier_binary", "breast_cancer_nan",
         lambda: HistGradientBoostingClassifier(max_iter=15, max_depth=3, random_state=SEED)),
        ("svc_probability", "iris", lambda: SVC(probability=True, random_state=SEED)),
        ("svc", "iris", lambda: SVC()),
        ("svc_binary", "breast_cancer", lambda: SVC()),
        ("svc_binary_probability", "breast_cancer",
         lambda: SVC(probability=True, random_state=SEED)),
        ("linear_svc", "iris", lambda: LinearSVC(random_state=SEED)),
        ("linear_svc_binary", "breast_cancer", lambda: LinearSVC(random_state=SEED)),
        ("kneighbors_classifier", "iris", lambda: KNeighborsClassifier()),
        ("gaussian_nb", "wine", lambda: GaussianNB()),
        ("sgd_classifier", "iris", lambda: SGDClassifier(random_state=SEED)),
        ("mlp_classifier", "iris", lambda: MLPClassifier(max_iter=300, random_state=SEED)),
        ("pipeline_scaler_mlp", "wine",
         lambda: make_pipeline(StandardScaler(), MLPClassifier(max_iter=300, random_state=SEED))),
        ("pipeline_imputer_binarizer_logreg", "wine_nan",
         lambda: make_pipeline(SimpleImputer(), StandardScaler(), Binarizer(threshold=0.0),
                               LogisticRegression(max_iter=1000))),
        # regressors
        ("random_forest_regressor", "diabetes",
         lambda: RandomForestRegressor(n_estimators=10, max_depth=5, random_state=SEED)),
        ("random_forest_regressor_multioutput", "linnerud",
         lambda: RandomForestRegressor(n_estimators=10, max_depth=4, random_state=SEED)),
        ("gradient_boosting_regressor", "diabetes",
         lambda: GradientBoostingRegressor(n_estimators=20, max_depth=3, random_state=SEED)),
        ("decision_tree_regressor", "diabetes",
         lambda: DecisionTreeRegressor(max_depth=6, random_state=SEED)),
        ("hist_gradient_boosting_regressor", "diabetes",
         lambda: HistGradientBoostingRegressor(max_iter=20, max_depth=3, random_state=SEED)),
        ("linear_regression", "diabetes", lambda: LinearRegression()),
        ("ridge", "diabetes", lambda: Ridge()),
        ("svr", "diabetes", lambda: SVR()),
        ("kneighbors_regressor", "diabetes", lambda: KNeighborsRegressor()),
        # outlier detectors (fit on X only)
        ("isolation_forest", "iris",
         lambda: IsolationForest(n_estimators=10, random_state=SEED)),
        ("one_class_svm", "iris", lambda: OneClassSVM()),
        ("local_outlier_factor", "iris", lambda: LocalOutlierFactor(novelty=True)),
    ]


UNSUPERVISED = {IsolationForest, OneClassSVM, LocalOutlierFactor}


def two_input_fixtures():
    """Models with several named inputs: converted with to_onnx(est, initial_types=...)."""
    fixtures = []

    # ColumnTransformer: 12 float columns -> StandardScaler, one int64 categorical column
    # (wine's proline binned into quartiles coded 1/2/5/7) -> OneHotEncoder; then
    # LogisticRegression. Inputs "num" float32 [N, 12] and "cat" int64 [N, 1].
    def column_transformer():
        x, y = load_wine(return_X_y=True)
        q = np.quantile(x[:, 12], [0.25, 0.5, 0.75])
        cat = np.array([1, 2, 5, 7], dtype=np.int64)[np.searchsorted(q, x[:, 12])]
        k = 12
        xall = np.hstack([x[:, :k], cat[:, None].astype(np.float64)])
        est = Pipeline([
            ("columns", ColumnTransformer([
                ("num", StandardScaler(), list(range(k))),
                ("cat", OneHotEncoder(), [k]),
            ])),
            ("clf", LogisticRegression(max_iter=2000)),
        ]).fit(xall, y)
        types = [("num", FloatTensorType([None, k])), ("cat", Int64TensorType([None, 1]))]
        feeds = lambda idx: {"num": x[idx, :k].astype(np.float32), "cat": cat[idx, None]}
        return est, types, feeds, len(x)

    fixtures.append(("column_transformer_logreg", "wine (+ binned proline as int64)",
                     column_transformer))

    # Several float inputs into a scaler: skl2onnx joins them with a FeatureVectorizer.
    def feature_vectorizer():
        x, y = load_iris(return_X_y=True)
        est = make_pipeline(StandardScaler(), LogisticRegression(max_iter=1000)).fit(x, y)
        types = [("sepal", FloatTensorType([None, 2])), ("petal", FloatTensorType([None, 2]))]
        feeds = lambda idx: {"sepal": x[idx, :2].astype(np.float32),
                             "petal": x[idx, 2:].astype(np.float32)}
        return est, types, feeds, len(x)

    fixtures.append(("pipeline_two_inputs_scaler_logreg", "iris (sepal, petal)",
                     feature_vectorizer))
    return fixtures


# ---------------------------------------------------------------------------------------
# Reference outputs


def to_list(a):
    a = np.asarray(a)
    if a.dtype.kind == "f":
        return [None if np.isnan(v) else float(v) for v in a.astype(np.float32).ravel()]
    if a.dtype.kind in "iu":
        return [int(v) for v in a.ravel()]
    return [str(v) for v in a.ravel()]


def dtype_name(elem_type):
    return onnx.helper.tensor_dtype_to_np_dtype(elem_type).name if elem_type else None


def zipmap_labels(model):
    for node in model.graph.node:
        if node.op_type == "ZipMap":
            for a in node.attribute:
                if a.name == "classlabels_int64s":
                    return [str(v) for v in a.ints]
                if a.name == "classlabels_strings":
                    return [v.decode() for v in a.strings]
    return None


def output_specs(model):
    specs = []
    for o in model.graph.output:
        kind = o.type.WhichOneof("value")
        if kind == "tensor_type":
            specs.append({"name": o.name, "dtype": dtype_name(o.type.tensor_type.elem_type),
                          "kind": "tensor"})
        elif kind == "sequence_type":  # ZipMap: seq(map(label, float))
            specs.append({"name": o.name, "dtype": "float32", "kind": "zipmap"})
        else:
            raise RuntimeError(f"unexpected output type {kind} for {o.name}")
    return specs


def run_cases(model, specs, labels, feeds_for, n):
    opts = ort.SessionOptions()
    opts.log_severity_level = 3  # the multi-output regressor declares [N, 1] but returns [N, 3]
    sess = ort.InferenceSession(model.SerializeToString(), opts,
                                providers=["CPUExecutionProvider"])
    singles = test_rows(n, 8)
    # The batch holds the single rows too (onnxruntime's own batch-size dependence shows),
    # and stays under 50 rows: above that onnxruntime sums tree ensembles in parallel
    # chunks (another order of float additions).
    batch = np.union1d(singles, test_rows(n, 16))
    cases = []
    for idx in [singles[i:i + 1] for i in range(len(singles))] + [batch]:
        feeds = feeds_for(idx)
        results = sess.run(None, feeds)
        outputs = {}
        for spec, value in zip(specs, results):
            if spec["kind"] == "zipmap":
                rows = [{str(k): v for k, v in row.items()} for row in value]
                value = np.array([[row[lab] for lab in labels] for row in rows],
                                 dtype=np.float32)
            value = np.asarray(value)
            outputs[spec["name"]] = {"shape": list(value.shape), "data": to_list(value)}
        cases.append({
            "rows": int(len(idx)),
            "inputs": {k: {"shape": list(v.shape), "data": to_list(v)} for k, v in feeds.items()},
            "outputs": outputs,
        })
    return cases


def write_fixture(name, est, dataset_name, converter, model, feeds_for, n, class_labels):
    size = len(model.SerializeToString())
    if size > MAX_MODEL_BYTES:
        raise RuntimeError(f"{name}: model.onnx is {size} bytes (> {MAX_MODEL_BYTES})")
    specs = output_specs(model)
    labels = zipmap_labels(model)
    if class_labels is not None and labels is not None and labels != class_labels:
        raise RuntimeError(f"{name}: ZipMap labels {labels} != classes_ {class_labels}")
    if labels is None:
        labels = class_labels
    inputs = []
    for i in model.graph.input:
        t = i.type.tensor_type
        dims = [d.dim_value if d.HasField("dim_value") else None for d in t.shape.dim]
        inputs.append({"name": i.name, "dtype": dtype_name(t.elem_type), "shape": dims})
    ref = {
        "name": name,
        "estimator": repr(est),
        "dataset": dataset_name,
        "converter": converter,
        "runtime": f"onnxruntime {ort.__version__}",
        "versions": {"scikit-learn": sklearn.__version__, "skl2onnx": skl2onnx.__version__,
                     "onnx": onnx.__version__, "numpy": np.__version__},
        "inputs": inputs,
        "outputs": specs,
        "class_labels": labels,
        "cases": run_cases(model, specs, labels, feeds_for, n),
    }
    d = os.path.join(OUT, name)
    os.makedirs(d, exist_ok=True)
    with open(os.path.join(d, "model.onnx"), "wb") as f:
        f.write(model.SerializeToString())
    with open(os.path.join(d, "reference.json"), "w") as f:
        json.dump(ref, f, indent=1)
        f.write("\n")
    ops = sorted({(n.domain + ":" if n.domain else "") + n.op_type for n in model.graph.node})
    print(f"  {name:44s} {size:7d} B  {', '.join(ops)}")


def main():
    warnings.simplefilter("ignore", ConvergenceWarning)
    warnings.simplefilter("ignore", FutureWarning)
    warnings.simplefilter("ignore", DeprecationWarning)
    if os.path.isdir(OUT):
        shutil.rmtree(OUT)
    os.makedirs(OUT)
    unconverted = []
    print(f"scikit-learn {sklearn.__version__}, skl2onnx {skl2onnx.__version__}, "
          f"onnxruntime {ort.__version__}, onnx {onnx.__version__}")

    for name, ds, factory in single_input_fixtures():
        x, y = dataset(ds)
        est = factory()
        if type(est) in UNSUPERVISED:
            est.fit(x)
        else:
            est.fit(x, y)
        converter = "skl2onnx.to_onnx(est, X[:1].astype(np.float32))"
        try:
            model = to_onnx(est, x[:1].astype(np.float32))
        except Exception as e:  # noqa: BLE001 -- recorded, not hidden
            msg = f"{type(e).__name__}: {str(e).splitlines()[0][:300]}"
            unconverted.append({"name": name, "estimator": repr(est), "error": msg})
            print(f"  {name:44s} NOT CONVERTED at default options: {msg}")
            if isinstance(est, IsolationForest):
                # The converter itself asks for ai.onnx.ml opset 3; keep that model as a
                # separate, clearly named fixture (the only non-default conversion here).
                name3 = name + "_mlopset3"
                converter = ("skl2onnx.to_onnx(est, X[:1].astype(np.float32), "
                             "target_opset={'': 21, 'ai.onnx.ml': 3})")
                model = to_onnx(est, x[:1].astype(np.float32),
                                target_opset={"": 21, "ai.onnx.ml": 3})
                write_fixture(name3, est, ds, converter, model,
                              lambda idx: {"X": x[idx].astype(np.float32)}, len(x), None)
            continue
        classes = getattr(est, "classes_", None)
        class_labels = [str(c) for c in classes] if classes is not None else None
        in_name = model.graph.input[0].name
        write_fixture(name, est, ds, converter, model,
                      lambda idx: {in_name: x[idx].astype(np.float32)}, len(x), class_labels)

    for name, ds, build in two_input_fixtures():
        est, types, feeds_for, n = build()
        # to_onnx with initial_types = convert_sklearn with default options, but with a
        # deterministic graph name ("ONNX(<class>)") instead of a random uuid.
        converter = f"skl2onnx.to_onnx(est, initial_types={types!r})"
        model = to_onnx(est, initial_types=types)
        classes = getattr(est, "classes_", None)
        class_labels = [str(c) for c in classes] if classes is not None else None
        write_fixture(name, est, ds, converter, model, feeds_for, n, class_labels)

    with open(os.path.join(OUT, "unconverted.json"), "w") as f:
        json.dump(unconverted, f, indent=1)
        f.write("\n")
    print("\nNot convertible with skl2onnx default options:")
    for u in unconverted or [{"name": "(none)", "error": ""}]:
        print(f"  {u['name']}: {u['error']}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
