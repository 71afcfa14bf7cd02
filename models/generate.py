#!/usr/bin/env python3
"""Generates the committed model fixtures (run from anywhere; writes next to this file).

    python3 -m pip install -r models/requirements.txt
    python3 models/generate.py

Outputs (all committed, so `cargo test` never needs Python):
  vibration-anomaly/model.onnx       MLP 16 -> 32 -> 16 -> 3 (softmax), trained here on
                                     synthetic windows from vibration.py
  vibration-anomaly/spec.toml        scoring spec: feature order, z-score normalisation,
                                     labels, thresholds, inline self-test samples
  vibration-anomaly/reference.json   onnxruntime outputs for fixed inputs
  vibration-anomaly/training-sample.csv  raw features + label (the baseline sample)
  vibration-anomaly-swapped/, vibration-anomaly-fragile/
                                     faulty variants for failure-path tests: permuted
                                     outputs; NaN on live normal data (self-test passes)
  vibration-cnn/model.onnx           1-D CNN over a raw 3 x 1024 window (~2.2 MB weights;
                                     random weights: a benchmark workload, not a classifier)
  vibration-cnn/spec.toml, selftest.json, reference.json
  features-reference.json            raw windows and their 16 features (Rust cross-check)

Everything is seeded; re-running reproduces the same files byte for byte on the same
numpy/onnx/onnxruntime versions (pinned in requirements.txt).
"""

import json
import os

import numpy as np
import onnx
import onnxruntime as ort
from onnx import TensorProto, helper, numpy_helper

import vibration as vib

HERE = os.path.dirname(os.path.abspath(__file__))
SEED = 20261121
PER_CLASS = 2000
OPSET = 17


def dataset(rng, per_class, drift=0.0):
    xs, ys = [], []
    for label, mode in enumerate(vib.MODES):
        for _ in range(per_class):
            xs.append(vib.features(vib.window_lsb(rng, mode, drift)))
            ys.append(label)
    return np.array(xs), np.array(ys)


def train_mlp(x, y, rng, hidden=(32, 16), epochs=600, lr=0.01):
    """Full-batch Adam on softmax cross-entropy; returns [(W, b), ...] with W as (in, out)."""
    sizes = [x.shape[1], *hidden, len(vib.MODES)]
    params = []
    for i, o in zip(sizes[:-1], sizes[1:]):
        params.append([rng.normal(0, np.sqrt(2.0 / i), (i, o)), np.zeros(o)])
    m = [[np.zeros_like(w), np.zeros_like(b)] for w, b in params]
    v = [[np.zeros_like(w), np.zeros_like(b)] for w, b in params]
    onehot = np.eye(len(vib.MODES))[y]
    for step in range(1, epochs + 1):
        acts = [x]
        for li, (w, b) in enumerate(params):
            z = acts[-1] @ w + b
            acts.append(np.maximum(z, 0) if li < len(params) - 1 else z)
        logits = acts[-1]
        e = np.exp(logits - logits.max(axis=1, keepdims=True))
        prob = e / e.sum(axis=1, keepdims=True)
        grad = (prob - onehot) / len(x)
        for li in reversed(range(len(params))):
            w, b = params[li]
            gw = acts[li].T @ grad
            gb = grad.sum(axis=0)
            if li > 0:
                grad = (grad @ w.T) * (acts[li] > 0)
            for k, g in enumerate((gw, gb)):
                m[li][k] = 0.9 * m[li][k] + 0.1 * g
                v[li][k] = 0.999 * v[li][k] + 0.001 * g * g
                mh = m[li][k] / (1 - 0.9 ** step)
                vh = v[li][k] / (1 - 0.999 ** step)
                params[li][k] = params[li][k] - lr * mh / (np.sqrt(vh) + 1e-8)
    return params


def mlp_onnx(params, variant="ok"):
    """variant "ok": the classifier; "swapped": output columns permuted (wrong answers,
    still self-consistent); "fragile": multiplies by sqrt(x0)/sqrt(x0), which is 1 for a
    positive normalised rms_x and NaN otherwise (passes a self-test on imbalance samples,
    fails on live normal data)."""
    if variant == "swapped":
        w, b = params[-1]
        params = params[:-1] + [(w[:, [2, 1, 0]], b[[2, 1, 0]])]
    nodes, inits = [], []
    prev = "features"
    for i, (w, b) in enumerate(params):
        inits.append(numpy_helper.from_array(w.astype(np.float32), f"w{i}"))
        inits.append(numpy_helper.from_array(b.astype(np.float32), f"b{i}"))
        out = f"h{i}"
        nodes.append(helper.make_node("Gemm", [prev, f"w{i}", f"b{i}"], [out]))
        if i < len(params) - 1:
            nodes.append(helper.make_node("Relu", [out], [out + "r"]))
            out += "r"
        prev = out
    if variant == "fragile":
        inits += [numpy_helper.from_array(np.array([0], dtype=np.int64), "s0"),
                  numpy_helper.from_array(np.array([1], dtype=np.int64), "s1")]
        nodes += [
            helper.make_node("Softmax", [prev], ["soft"], axis=1),
            helper.make_node("Slice", ["features", "s0", "s1", "s1"], ["x0"]),
            helper.make_node("Sqrt", ["x0"], ["rx0"]),
            helper.make_node("Div", ["rx0", "rx0"], ["one"]),
            helper.make_node("Mul", ["soft", "one"], ["probabilities"]),
        ]
    else:
        nodes.append(helper.make_node("Softmax", [prev], ["probabilities"], axis=1))
    graph = helper.make_graph(
        nodes,
        "vibration-anomaly",
        [helper.make_tensor_value_info("features", TensorProto.FLOAT, ["N", 16])],
        [helper.make_tensor_value_info("probabilities", TensorProto.FLOAT, ["N", 3])],
        inits,
    )
    return finish(graph)


def cnn_onnx(rng):
    """Conv stack 3->32->64->128->256->256 (stride 2), global average pool, 256->512->3."""
    convs = [(3, 32, 7), (32, 64, 5), (64, 128, 5), (128, 256, 5), (256, 256, 3)]
    nodes, inits = [], []
    prev = "window"
    for i, (cin, cout, k) in enumerate(convs):
        w = rng.normal(0, np.sqrt(2.0 / (cin * k)), (cout, cin, k)).astype(np.float32)
        b = rng.normal(0, 0.01, cout).astype(np.float32)
        inits += [numpy_helper.from_array(w, f"cw{i}"), numpy_helper.from_array(b, f"cb{i}")]
        nodes.append(helper.make_node(
            "Conv", [prev, f"cw{i}", f"cb{i}"], [f"c{i}"],
            kernel_shape=[k], strides=[2], pads=[k // 2, k // 2]))
        nodes.append(helper.make_node("Relu", [f"c{i}"], [f"r{i}"]))
        prev = f"r{i}"
    nodes.append(helper.make_node("GlobalAveragePool", [prev], ["gap"]))
    nodes.append(helper.make_node("Flatten", ["gap"], ["flat"], axis=1))
    dense = [(256, 512), (512, 3)]
    prev = "flat"
    for i, (cin, cout) in enumerate(dense):
        w = rng.normal(0, np.sqrt(2.0 / cin), (cin, cout)).astype(np.float32)
        b = np.zeros(cout, dtype=np.float32)
        inits += [numpy_helper.from_array(w, f"dw{i}"), numpy_helper.from_array(b, f"db{i}")]
        nodes.append(helper.make_node("Gemm", [prev, f"dw{i}", f"db{i}"], [f"d{i}"]))
        prev = f"d{i}"
        if i == 0:
            nodes.append(helper.make_node("Relu", [prev], ["dr0"]))
            prev = "dr0"
    nodes.append(helper.make_node("Softmax", [prev], ["probabilities"], axis=1))
    graph = helper.make_graph(
        nodes,
        "vibration-cnn",
        [helper.make_tensor_value_info("window", TensorProto.FLOAT, ["N", 3, vib.WINDOW])],
        [helper.make_tensor_value_info("probabilities", TensorProto.FLOAT, ["N", 3])],
        inits,
    )
    return finish(graph)


def finish(graph):
    model = helper.make_model(
        graph, opset_imports=[helper.make_opsetid("", OPSET)], producer_name="outpost-models")
    model.ir_version = 8
    onnx.checker.check_model(model)
    return model


def save(model, path):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "wb") as f:
        f.write(model.SerializeToString())


def run_ort(path, name, x):
    sess = ort.InferenceSession(path, providers=["CPUExecutionProvider"])
    return sess.run(None, {name: x.astype(np.float32)})[0]


def f32list(a):
    return [float(v) for v in np.asarray(a, dtype=np.float32).ravel()]


def write_json(path, obj):
    with open(path, "w") as f:
        json.dump(obj, f, indent=1)
        f.write("\n")


def toml_floats(a):
    return "[" + ", ".join(repr(float(v)) for v in np.asarray(a, dtype=np.float32)) + "]"


def main():
    rng = np.random.default_rng(SEED)

    # --- vibration-anomaly: train on synthetic windows --------------------------------
    x, y = dataset(rng, PER_CLASS)
    perm = rng.permutation(len(x))
    x, y = x[perm], y[perm]
    split = int(0.8 * len(x))
    mean = x[:split].mean(axis=0)
    std = np.maximum(x[:split].std(axis=0), 1e-6)
    # Normalisation lives in the scoring spec, not in the graph, so the agent can apply
    # the same spec to any model; fit in float32 exactly as the agent will compute it.
    mean32, std32 = mean.astype(np.float32), std.astype(np.float32)

    def norm(a):
        return ((a.astype(np.float32) - mean32) / std32).astype(np.float32)

    params = train_mlp(norm(x[:split]).astype(np.float64), y[:split], rng)
    mdir = os.path.join(HERE, "vibration-anomaly")
    mpath = os.path.join(mdir, "model.onnx")
    save(mlp_onnx(params), mpath)
    test_prob = run_ort(mpath, "features", norm(x[split:]))
    accuracy = float((test_prob.argmax(axis=1) == y[split:]).mean())
    print(f"vibration-anomaly: held-out accuracy {accuracy:.4f}")

    # Fixed reference inputs: four held-out windows per class, plus one batch of 4.
    cases, selftest = [], []
    for label in range(len(vib.MODES)):
        idx = np.where(y[split:] == label)[0][:4]
        for j in idx:
            raw = x[split + j].astype(np.float32)
            out = run_ort(mpath, "features", norm(raw[None, :]))
            cases.append({"label": vib.MODES[label], "raw_features": f32list(raw),
                          "shape": [1, 16], "input": f32list(norm(raw[None, :])),
                          "output": f32list(out)})
            if len(selftest) < 2 * (label + 1):
                selftest.append((raw, out[0]))
    batch_raw = x[split:split + 4].astype(np.float32)
    cases.append({"label": None, "raw_features": f32list(batch_raw), "shape": [4, 16],
                  "input": f32list(norm(batch_raw)),
                  "output": f32list(run_ort(mpath, "features", norm(batch_raw)))})
    write_json(os.path.join(mdir, "reference.json"), {
        "model": "model.onnx", "input_name": "features", "output_name": "probabilities",
        "runtime": f"onnxruntime {ort.__version__}", "tolerance": 1e-4, "cases": cases})

    def spec_text(title, samples):
        lines = [
            f"# Scoring spec for {title} (written by models/generate.py).",
            "[model]",
            'name = "vibration-anomaly"',
            'description = "Classifies 16 vibration features into normal / imbalance / bearing fault"',
            "",
            "[input]",
            'name = "features"',
            'dtype = "f32"',
            "shape = [16]",
            "features = [" + ", ".join(f'"{n}"' for n in vib.FEATURE_NAMES) + "]",
            "",
            "[input.normalization]",
            'kind = "zscore"',
            "mean = " + toml_floats(mean32),
            "std = " + toml_floats(std32),
            "",
            "[output]",
            'name = "probabilities"',
            'kind = "probabilities"',
            'labels = ["normal", "imbalance", "bearing_fault"]',
            "",
            "[output.thresholds]",
            'anomaly_labels = ["imbalance", "bearing_fault"]',
            "min_confidence = 0.6",
            "",
            "[lineage]",
            f'dataset_id = "synthetic-vibration-seed-{SEED}"',
            'training_run = "models/generate.py"',
            "",
            "[lineage.metrics]",
            f"heldout_accuracy = {accuracy:.6f}",
            "",
        ]
        for raw, out in samples:
            lines += ["[[self_test]]", "input = " + toml_floats(raw),
                      "expected = " + toml_floats(out), "tolerance = 0.0001", ""]
        return "\n".join(lines)

    with open(os.path.join(mdir, "spec.toml"), "w") as f:
        f.write(spec_text("vibration-anomaly", selftest))

    # Faulty variants (same name, later versions) for failure-path tests and the
    # demo's bad release. "fragile" self-tests on imbalance samples only.
    for variant, note in [("swapped", "wrong outputs: labels permuted"),
                          ("fragile", "NaN on live normal data")]:
        vdir = os.path.join(HERE, f"vibration-anomaly-{variant}")
        vpath = os.path.join(vdir, "model.onnx")
        save(mlp_onnx(params, variant), vpath)
        raws = [r for r, _ in (selftest if variant == "swapped" else selftest[2:4])]
        samples = [(r, run_ort(vpath, "features", norm(r[None, :]))[0]) for r in raws]
        with open(os.path.join(vdir, "spec.toml"), "w") as f:
            f.write(spec_text(f"vibration-anomaly ({note})", samples))

    # Baseline training sample: raw features + label, 1000 rows from the training split.
    with open(os.path.join(mdir, "training-sample.csv"), "w") as f:
        f.write(",".join(vib.FEATURE_NAMES + ["label"]) + "\n")
        for i in range(1000):
            f.write(",".join(repr(float(np.float32(v))) for v in x[i]) + f",{vib.MODES[y[i]]}\n")

    # --- vibration-cnn: random weights, benchmark workload ----------------------------
    cdir = os.path.join(HERE, "vibration-cnn")
    cpath = os.path.join(cdir, "model.onnx")
    save(cnn_onnx(rng), cpath)
    ccases, cself = [], []
    for label, mode in enumerate(vib.MODES):
        win = (vib.window_lsb(rng, mode).astype(np.float32) * np.float32(vib.LSB_G))[None]
        out = run_ort(cpath, "window", win)
        ccases.append({"label": mode, "shape": [1, 3, vib.WINDOW], "input": f32list(win),
                       "output": f32list(out)})
        cself.append({"input": f32list(win), "expected": f32list(out), "tolerance": 1e-4})
    batch = np.concatenate([np.array(c["input"], dtype=np.float32).reshape(1, 3, -1)
                            for c in ccases[:2]])
    ccases.append({"label": None, "shape": [2, 3, vib.WINDOW], "input": f32list(batch),
                   "output": f32list(run_ort(cpath, "window", batch))})
    write_json(os.path.join(cdir, "reference.json"), {
        "model": "model.onnx", "input_name": "window", "output_name": "probabilities",
        "runtime": f"onnxruntime {ort.__version__}", "tolerance": 1e-4, "cases": ccases})
    write_json(os.path.join(cdir, "selftest.json"), cself)
    with open(os.path.join(cdir, "spec.toml"), "w") as f:
        f.write("\n".join([
            "# Scoring spec for vibration-cnn (written by models/generate.py).",
            'self_test_file = "selftest.json"',
            "",
            "[model]",
            'name = "vibration-cnn"',
            'description = "1-D CNN over a raw 3-axis 1024-sample window (benchmark workload)"',
            "",
            "[input]",
            'name = "window"',
            'dtype = "f32"',
            f"shape = [3, {vib.WINDOW}]",
            "",
            "[output]",
            'name = "probabilities"',
            'kind = "probabilities"',
            'labels = ["normal", "imbalance", "bearing_fault"]',
            "",
        ]))

    # --- feature cross-check fixture --------------------------------------------------
    fx = []
    for mode in vib.MODES:
        for drift in (0.0, 0.5):
            win = vib.window_lsb(rng, mode, drift)
            fx.append({"mode": mode, "drift": drift, "lsb": win.astype(int).tolist(),
                       "features": [float(v) for v in vib.features(win)]})
    write_json(os.path.join(HERE, "features-reference.json"), {
        "fs_hz": vib.FS, "window": vib.WINDOW, "lsb_g": vib.LSB_G,
        "feature_names": vib.FEATURE_NAMES, "windows": fx})
    print("wrote fixtures under", HERE)


if __name__ == "__main__":
    main()
