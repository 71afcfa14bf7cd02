"""Drives an Outpost agent with the real Triton HTTP client (tritonclient[http]).

    python tritonclient_check.py HOST:PORT MODEL REFERENCE.json

REFERENCE.json is a models/sklearn/*/reference.json (inputs, cases with onnxruntime's
outputs). Checks server live/ready, server and model metadata, then runs every case with
binary tensors (the client's default) and with JSON tensors, FP32 and INT64 inputs, and
compares every output with onnxruntime's. Exits non-zero on any difference.
"""

import json
import sys

import numpy as np
import tritonclient.http as httpclient
from tritonclient.utils import InferenceServerException

DTYPES = {"float32": (np.float32, "FP32"), "int64": (np.int64, "INT64")}


def main():
    url, model, ref_path = sys.argv[1:4]
    c = httpclient.InferenceServerClient(url=url)
    assert c.is_server_live(), "server not live"
    assert c.is_server_ready(), "server not ready"
    assert c.is_model_ready(model), "model not ready"
    server = c.get_server_metadata()
    assert "binary_tensor_data" in server["extensions"], server
    ref = json.load(open(ref_path))
    meta = c.get_model_metadata(model)
    assert meta["name"] == model, meta
    declared = {i["name"]: i for i in meta["inputs"]}
    for i in ref["inputs"]:
        assert declared[i["name"]]["datatype"] == DTYPES[i["dtype"]][1], meta
        assert declared[i["name"]]["shape"][0] == -1, meta
    runs = 0
    for binary in (True, False):
        for case in ref["cases"]:
            inputs = []
            for i in ref["inputs"]:
                v = case["inputs"][i["name"]]
                np_type, oip = DTYPES[i["dtype"]]
                arr = np.array(v["data"], dtype=np_type).reshape(v["shape"])
                t = httpclient.InferInput(i["name"], list(arr.shape), oip)
                t.set_data_from_numpy(arr, binary_data=binary)
                inputs.append(t)
            outputs = [httpclient.InferRequestedOutput(o["name"], binary_data=binary)
                       for o in ref["outputs"]]
            r = c.infer(model, inputs, outputs=outputs, request_id=f"case-{runs}")
            assert r.get_response()["id"] == f"case-{runs}", r.get_response()
            for o in ref["outputs"]:
                want = case["outputs"][o["name"]]
                got = r.as_numpy(o["name"])
                assert list(got.shape) == want["shape"], (o["name"], got.shape, want["shape"])
                w = np.array(want["data"]).reshape(want["shape"])
                if got.dtype.kind == "f":
                    np.testing.assert_allclose(got, w, atol=1e-4, rtol=1e-5)
                else:
                    np.testing.assert_array_equal(got, w)
            runs += 1
    # A request the contract refuses is an error from the server, not a crash.
    bad = httpclient.InferInput(ref["inputs"][0]["name"], [1, 3], "FP64")
    bad.set_data_from_numpy(np.zeros((1, 3), dtype=np.float64))
    try:
        c.infer(model, [bad])
        raise AssertionError("a wrong datatype was accepted")
    except InferenceServerException as e:
        assert e.status() in (None, "400") or "400" in str(e.status()), e
    print(f"ok: {runs} inferences (binary and JSON) match onnxruntime")


if __name__ == "__main__":
    main()
