"""A training script's loader reads the `--baseline` training CSV and the bridge's capture
exports (CSV, Parquet, JSONL) with the same code: the features by the baseline's column
names, the ground truth from `label`.

usage: export_check.py BASELINE.csv EXPORT.csv EXPORT.parquet EXPORT.jsonl ROWS
"""

import sys

import pandas as pd


def load(df, features):
    """The part a training script shares between its training data and an export."""
    return df[features].astype("float64"), df["label"]


baseline, csv, parquet, jsonl, rows = sys.argv[1:6]
train = pd.read_csv(baseline)
features = [c for c in train.columns if c != "label"]
x_train, y_train = load(train, features)
assert y_train.notna().all(), "the training sample is labelled"

frames = {
    # round_trip / precise_float: the exports print each double exactly; pandas' fast
    # parsers may land one ulp off.
    "csv": pd.read_csv(csv, parse_dates=["ts"], float_precision="round_trip"),
    "parquet": pd.read_parquet(parquet),
    "jsonl": pd.read_json(jsonl, lines=True, convert_dates=False, precise_float=True),
}
frames["jsonl"]["ts"] = pd.to_datetime(frames["jsonl"]["ts"], utc=True)
loaded = {}
for name, df in frames.items():
    x, y = load(df, features)
    assert list(x.columns) == list(x_train.columns), name
    assert len(x) == int(rows), (name, len(x))
    assert y.isna().all(), f"{name}: label is for ground truth, empty on export"
    assert str(df["ts"].dt.tz) == "UTC", (name, df["ts"].dtype)
    loaded[name] = (x, df["ts"])
for name in ("parquet", "jsonl"):
    assert (loaded[name][0].values == loaded["csv"][0].values).all(), name
    assert (loaded[name][1].values == loaded["csv"][1].values).all(), name
print("ok", len(features), "features")
