"""Load time of persistkit's restricted readers against plain pickle.load / joblib.load.

A 200-tree random forest, pickled (protocol 5) and joblib-dumped (uncompressed and zlib-3);
each file is loaded REPEAT times by each reader; medians are printed (and --json).

    .venv/bin/python benchmarks/bench_safe_load.py [--samples 20000] [--repeat 7] [--json]
"""

from __future__ import annotations

import argparse
import json
import pickle
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np


def median_seconds(load: Callable[[], Any], repeat: int) -> float:
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        load()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--samples", type=int, default=20000)
    parser.add_argument("--repeat", type=int, default=7)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()

    import joblib
    from sklearn.ensemble import RandomForestClassifier

    from persistkit.safety import TrustPolicy

    rng = np.random.default_rng(0)
    X = rng.normal(size=(args.samples, 10))
    y = (X[:, 0] + rng.normal(scale=0.5, size=args.samples) > 0).astype(int)
    forest = RandomForestClassifier(n_estimators=200, random_state=0, n_jobs=2).fit(X, y)
    folder = Path(tempfile.mkdtemp())
    pkl = folder / "forest.pkl"
    pkl.write_bytes(pickle.dumps(forest, protocol=5))
    plain_jl = folder / "forest.joblib"
    joblib.dump(forest, plain_jl)
    zlib_jl = folder / "forest-z3.joblib"
    joblib.dump(forest, zlib_jl, compress=3)
    policy = TrustPolicy()

    def restricted_pickle() -> Any:
        with open(pkl, "rb") as fh:
            return policy.unpickle(fh)

    def plain_pickle() -> Any:
        with open(pkl, "rb") as fh:
            return pickle.load(fh)

    cases = {
        "pickle.load": (plain_pickle, pkl),
        "persistkit restricted pickle": (restricted_pickle, pkl),
        "joblib.load": (lambda: joblib.load(plain_jl), plain_jl),
        "persistkit restricted joblib": (lambda: policy.load_joblib(plain_jl), plain_jl),
        "joblib.load (zlib 3)": (lambda: joblib.load(zlib_jl), zlib_jl),
        "persistkit restricted joblib (zlib 3)": (lambda: policy.load_joblib(zlib_jl), zlib_jl),
    }
    expected = forest.predict(X[:1000])
    results = []
    for name, (load, path) in cases.items():
        identical = bool(np.array_equal(load().predict(X[:1000]), expected))
        seconds = median_seconds(load, args.repeat)
        results.append(
            {
                "reader": name,
                "load_s": seconds,
                "size_bytes": path.stat().st_size,
                "identical": identical,
            }
        )
    if args.json:
        print(json.dumps({"model": "RandomForestClassifier(200 trees)", "results": results}))
        return
    print(f"200-tree forest, {args.samples} samples; median of {args.repeat} loads")
    for r in results:
        print(
            f"  {r['reader']:40s} {r['load_s'] * 1000:8.1f} ms  "
            f"{r['size_bytes'] / 1e6:6.1f} MB  identical={r['identical']}"
        )


if __name__ == "__main__":
    main()
