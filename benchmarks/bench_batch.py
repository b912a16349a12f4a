"""Batch predictions (issue 14, item 8b): ``predict_many`` on each engine beside the raw floor.

    .venv/bin/python benchmarks/bench_batch.py                       # 2,000 .npy files, 3 rounds
    .venv/bin/python benchmarks/bench_batch.py --files 5000 --pictures --rounds 5 --json b.json

One LogisticRegression on scikit-learn's digits, saved in a temporary store; ``--files`` inputs
of one digit each (``.npy`` rows, or 8x8 PNG pictures with ``--pictures``). Each round runs,
in an order that rotates every round (medians [min-max] printed):

- ``raw``: the floor: one process, ``joblib.load`` of the model once, then for each partition
  ``np.load`` (or Pillow) of its files, ``predict`` and ``predict_proba``; no table written;
- ``local``: ``predict_many(engine="local")``: the same work through persistkit in this
  process, with the Parquet parts and the merged table;
- ``dask``: ``predict_many(engine="dask")`` starting (and closing) a local cluster of
  ``--workers`` processes: what the command line pays;
- ``dask-warm``: ``run_batch`` on a cluster started before the round whose workers already hold
  the model: the marginal cost of a run on a running cluster.

Ratios are each mode's files/s over ``raw``'s. On a 2-core machine the worker processes share
the cores with the driver, so dask cannot beat local by much there; the figure to watch is the
overhead per partition (``dask-warm`` against ``local``) and the fixed start (``dask`` against
``dask-warm``).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np


def make_inputs(folder: Path, count: int, pictures: bool) -> tuple[Any, list[Path]]:
    from sklearn.datasets import load_digits
    from sklearn.linear_model import LogisticRegression

    X, y = load_digits(return_X_y=True)
    X = X * 15  # 0-240, the values a picture reader gives
    model = LogisticRegression(max_iter=300).fit(X, y)
    paths = []
    for i in range(count):
        row = X[i % len(X)]
        if pictures:
            from PIL import Image

            path = folder / f"{i:06d}.png"
            Image.fromarray(row.reshape(8, 8).astype(np.uint8)).save(path)
        else:
            path = folder / f"{i:06d}.npy"
            np.save(path, row[np.newaxis])
        paths.append(path)
    return model, paths


def raw_floor(model_file: Path, paths: list[Path], size: int, pictures: bool) -> None:
    import joblib

    model = joblib.load(model_file)
    for start in range(0, len(paths), size):
        chunk = paths[start : start + size]
        if pictures:
            from PIL import Image

            rows = [np.asarray(Image.open(p).convert("L"), dtype=np.float64).reshape(1, -1)
                    for p in chunk]  # fmt: skip
        else:
            rows = [np.load(p) for p in chunk]
        batch = np.concatenate(rows)
        model.predict(batch)
        model.predict_proba(batch)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--files", type=int, default=2000)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--partition-size", type=int, default=64)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--pictures", action="store_true")
    parser.add_argument("--json", metavar="FILE")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="bench-batch-") as tmp:
        root = Path(tmp)
        os.environ["PERSISTKIT_HOME"] = str(root / "home")
        os.environ.pop("PERSISTKIT_STORE", None)
        run(root, args)


def run(root: Path, args: argparse.Namespace) -> None:
    import joblib

    import persistkit
    from persistkit.batch import BatchJob, expand_inputs, pin_model, run_batch
    from persistkit.engines import open_engine

    (root / "in").mkdir()
    model, paths = make_inputs(root / "in", args.files, args.pictures)
    store = str(root / "store")
    persistkit.Store(store).save(model, "digits", example=np.zeros((2, 64)))
    joblib.dump(model, root / "model.joblib")
    size = args.partition_size
    common: dict[str, Any] = {"store": store, "partition_size": size}
    warm = open_engine("dask", workers=args.workers)
    pin, _ = pin_model("digits", store, remote=True)
    files = expand_inputs([root / "in"])
    run_batch(BatchJob(pin), files[:size], root / "w.parquet", warm, partition_size=1)

    modes: dict[str, Callable[[int], Any]] = {
        "raw": lambda r: raw_floor(root / "model.joblib", paths, size, args.pictures),
        "local": lambda r: persistkit.predict_many(
            "digits", root / "in", output=root / f"l{r}.parquet", engine="local", **common
        ),
        "dask": lambda r: persistkit.predict_many(
            "digits",
            root / "in",
            output=root / f"d{r}.parquet",
            engine="dask",
            workers=args.workers,
            **common,
        ),
        "dask-warm": lambda r: run_batch(
            BatchJob(pin), files, root / f"w{r}.parquet", warm, partition_size=size
        ),
    }
    times: dict[str, list[float]] = {name: [] for name in modes}
    names = list(modes)
    try:
        for r in range(args.rounds):
            order = names[r % len(names) :] + names[: r % len(names)]
            for name in order:
                started = time.perf_counter()
                modes[name](r)
                times[name].append(time.perf_counter() - started)
    finally:
        warm.close()
    floor = statistics.median(times["raw"])
    kind = "pictures" if args.pictures else ".npy files"
    print(f"{args.files} {kind}, partitions of {size}, {args.workers} dask workers, "
          f"{args.rounds} rounds")  # fmt: skip
    results = {}
    for name, seconds in times.items():
        median = statistics.median(seconds)
        results[name] = {"median_s": median, "files_per_s": args.files / median,
                         "vs_raw": floor / median}  # fmt: skip
        print(f"  {name:10s} {median:7.2f} s [{min(seconds):.2f}-{max(seconds):.2f}]  "
              f"{args.files / median:8.0f} files/s  {floor / median:5.2f}x raw")  # fmt: skip
    if args.json:
        Path(args.json).write_text(json.dumps({"args": vars(args), "results": results}, indent=2))


if __name__ == "__main__":
    main()
