#!/usr/bin/env python3
"""Reference PSI and KS values for the Rust drift code (writes drift-reference.json).

    python3 models/drift_reference.py

PSI: bins with inner edges at the reference sample's deciles (numpy.quantile, linear
interpolation); a value goes to bin searchsorted(edges, x, side="left"); proportions are
floored at 1e-4; PSI = sum((p_live - p_ref) * ln(p_live / p_ref)).
KS: scipy.stats.ks_2samp(reference, live).statistic (two-sample, exact D statistic).
"""

import json
import os

import numpy as np
from scipy import stats

HERE = os.path.dirname(os.path.abspath(__file__))
EPS = 1e-4


def psi(ref, live):
    edges = np.unique(np.quantile(ref, [i / 10 for i in range(1, 10)]))
    r = np.bincount(np.searchsorted(edges, ref, side="left"), minlength=len(edges) + 1) / len(ref)
    l = np.bincount(np.searchsorted(edges, live, side="left"), minlength=len(edges) + 1) / len(live)
    r = np.maximum(r, EPS)
    l = np.maximum(l, EPS)
    return float(np.sum((l - r) * np.log(l / r))), [float(e) for e in edges]


def main():
    rng = np.random.default_rng(20261121)
    ref = rng.normal(0.0, 1.0, 1500)
    cases = []
    for name, live in [
        ("same distribution", rng.normal(0.0, 1.0, 512)),
        ("mean shift 0.5", rng.normal(0.5, 1.0, 512)),
        ("scale x2", rng.normal(0.0, 2.0, 512)),
        ("heavy tail", rng.standard_t(2, 512)),
        ("ties and small n", np.round(rng.normal(0.0, 1.0, 40), 1)),
        ("disjoint", rng.uniform(10.0, 11.0, 256)),
    ]:
        p, edges = psi(ref, live)
        cases.append({
            "name": name,
            "live": [float(v) for v in live],
            "psi": p,
            "ks": float(stats.ks_2samp(ref, live).statistic),
        })
    with open(os.path.join(HERE, "drift-reference.json"), "w") as f:
        json.dump({"epsilon": EPS, "reference": [float(v) for v in ref], "edges": edges, "cases": cases}, f)
        f.write("\n")
    print("wrote drift-reference.json:", [(c["name"], round(c["psi"], 4), round(c["ks"], 4)) for c in cases])


if __name__ == "__main__":
    main()
