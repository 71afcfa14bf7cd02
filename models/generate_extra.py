#!/usr/bin/env python3
"""Generates the contract fixtures that need graph shapes our other generators do not make.

    /work/venv/bin/python models/generate_extra.py   (numpy, onnx, onnxruntime; pinned in
                                                      requirements.txt)

Outputs (committed; `cargo test` never needs Python):
  cnn-dynamic/model.onnx      a small CNN whose input is [batch, 3, height, width] with
                              symbolic batch, height and width (Conv, Relu, MaxPool,
                              GlobalAveragePool, Gemm, Softmax; 4 classes), as vision
                              exporters write for fully convolutional nets
  cnn-dynamic/reference.json  onnxruntime outputs for several batch sizes and image sizes
  fixed-batch/model.onnx      an MLP whose input declares a symbolic batch but whose graph
                              reshapes to a hard-coded [1, 16] (as some exporters trace a
                              batch-1 example): tract cannot optimise it with a symbolic
                              batch, so Outpost serves it one sample per run
  fixed-batch/reference.json  onnxruntime outputs for single samples
  unsupported-op/model.onnx   a graph with an operator nobody implements (com.example
                              FancyNorm), for `model inspect`
Seeded: re-running reproduces the files on the pinned versions.
"""

import json
import os

import numpy as np
import onnx
import onnxruntime as ort
from onnx import TensorProto, helper, numpy_helper

HERE = os.path.dirname(os.path.abspath(__file__))
SEED = 20261129
OPSET = 17


def save(model, name):
    onnx.checker.check_model(model)
    os.makedirs(os.path.join(HERE, name), exist_ok=True)
    path = os.path.join(HERE, name, "model.onnx")
    onnx.save(model, path)
    return path


def reference(path, name, cases, input_name, output_name):
    sess = ort.InferenceSession(path, providers=["CPUExecutionProvider"])
    out = []
    for x in cases:
        y = sess.run([output_name], {input_name: x})[0]
        out.append({"shape": list(x.shape), "input": x.flatten().tolist(),
                    "output_shape": list(y.shape), "output": y.flatten().tolist()})
    with open(os.path.join(HERE, name, "reference.json"), "w") as f:
        json.dump({"runtime": f"onnxruntime {ort.__version__}", "input_name": input_name,
                   "output_name": output_name, "cases": out}, f, indent=1)


def cnn_dynamic(rng):
    w1 = numpy_helper.from_array(rng.normal(0, 0.3, (8, 3, 3, 3)).astype(np.float32), "w1")
    b1 = numpy_helper.from_array(rng.normal(0, 0.1, (8,)).astype(np.float32), "b1")
    w2 = numpy_helper.from_array(rng.normal(0, 0.2, (16, 8, 3, 3)).astype(np.float32), "w2")
    b2 = numpy_helper.from_array(rng.normal(0, 0.1, (16,)).astype(np.float32), "b2")
    wf = numpy_helper.from_array(rng.normal(0, 0.3, (4, 16)).astype(np.float32), "wf")
    bf = numpy_helper.from_array(rng.normal(0, 0.1, (4,)).astype(np.float32), "bf")
    shape2 = numpy_helper.from_array(np.array([0, -1], dtype=np.int64), "flat")
    nodes = [
        helper.make_node("Conv", ["image", "w1", "b1"], ["c1"], pads=[1, 1, 1, 1], name="conv1"),
        helper.make_node("Relu", ["c1"], ["r1"], name="relu1"),
        helper.make_node("MaxPool", ["r1"], ["p1"], kernel_shape=[2, 2], strides=[2, 2], name="pool1"),
        helper.make_node("Conv", ["p1", "w2", "b2"], ["c2"], pads=[1, 1, 1, 1], name="conv2"),
        helper.make_node("Relu", ["c2"], ["r2"], name="relu2"),
        helper.make_node("GlobalAveragePool", ["r2"], ["g"], name="gap"),
        helper.make_node("Reshape", ["g", "flat"], ["f"], name="flatten"),
        helper.make_node("Gemm", ["f", "wf", "bf"], ["logits"], transB=1, name="fc"),
        helper.make_node("Softmax", ["logits"], ["probabilities"], axis=1, name="softmax"),
    ]
    graph = helper.make_graph(
        nodes, "cnn_dynamic",
        [helper.make_tensor_value_info("image", TensorProto.FLOAT, ["batch", 3, "height", "width"])],
        [helper.make_tensor_value_info("probabilities", TensorProto.FLOAT, ["batch", 4])],
        [w1, b1, w2, b2, wf, bf, shape2])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)],
                              producer_name="outpost-generate-extra")
    model.ir_version = 8
    path = save(model, "cnn-dynamic")
    cases = [rng.random((n, 3, h, w), dtype=np.float32)
             for n, h, w in [(1, 32, 32), (2, 16, 24), (3, 8, 8), (1, 24, 16)]]
    reference(path, "cnn-dynamic", cases, "image", "probabilities")


def fixed_batch(rng):
    w1 = numpy_helper.from_array(rng.normal(0, 0.4, (16, 8)).astype(np.float32), "w1")
    b1 = numpy_helper.from_array(rng.normal(0, 0.1, (8,)).astype(np.float32), "b1")
    w2 = numpy_helper.from_array(rng.normal(0, 0.4, (8, 3)).astype(np.float32), "w2")
    b2 = numpy_helper.from_array(rng.normal(0, 0.1, (3,)).astype(np.float32), "b2")
    one = numpy_helper.from_array(np.array([1, 16], dtype=np.int64), "one_by_16")
    nodes = [
        helper.make_node("Reshape", ["features", "one_by_16"], ["x"], name="traced_reshape"),
        helper.make_node("MatMul", ["x", "w1"], ["h0"], name="mm1"),
        helper.make_node("Add", ["h0", "b1"], ["h1"], name="add1"),
        helper.make_node("Relu", ["h1"], ["h"], name="relu"),
        helper.make_node("MatMul", ["h", "w2"], ["o0"], name="mm2"),
        helper.make_node("Add", ["o0", "b2"], ["o1"], name="add2"),
        helper.make_node("Softmax", ["o1"], ["probabilities"], axis=1, name="softmax"),
    ]
    graph = helper.make_graph(
        nodes, "fixed_batch",
        [helper.make_tensor_value_info("features", TensorProto.FLOAT, ["N", 16])],
        [helper.make_tensor_value_info("probabilities", TensorProto.FLOAT, ["N", 3])],
        [w1, b1, w2, b2, one])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)],
                              producer_name="outpost-generate-extra")
    model.ir_version = 8
    path = save(model, "fixed-batch")
    cases = [rng.normal(0, 1, (1, 16)).astype(np.float32) for _ in range(4)]
    reference(path, "fixed-batch", cases, "features", "probabilities")


def unsupported_op():
    """A graph using an operator no runtime here knows, to show `model inspect` naming it."""
    nodes = [
        helper.make_node("Relu", ["x"], ["r"], name="relu"),
        helper.make_node("FancyNorm", ["r"], ["y"], name="fancy_norm_1", domain="com.example"),
    ]
    graph = helper.make_graph(
        nodes, "unsupported_op",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 4])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 4])])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET),
                                                    helper.make_opsetid("com.example", 1)],
                              producer_name="outpost-generate-extra")
    model.ir_version = 8
    os.makedirs(os.path.join(HERE, "unsupported-op"), exist_ok=True)
    onnx.save(model, os.path.join(HERE, "unsupported-op", "model.onnx"))


if __name__ == "__main__":
    rng = np.random.default_rng(SEED)
    cnn_dynamic(rng)
    fixed_batch(rng)
    unsupported_op()
    print("wrote cnn-dynamic/, fixed-batch/ and unsupported-op/")
