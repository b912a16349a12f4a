"""What do metrics, lineage and queries cost?

* save:   a small model saved into a local store with the training record
  (``metrics=``, ``params=``, ``lineage={"data": ...}`` plus the git commit found from a
  script in a real git checkout) vs the same save with ``lineage=False`` and no record;
  interleaved, so a noisy machine hits both alike;
* git:    ``lineage.git_lineage`` for a script in a fresh checkout: first call in a process
  (reads ``.git``, runs ``git status`` once) and later calls (``.git`` read only);
* query:  over N versions of one name in a local-folder store and in a SQLite-catalog
  store: ``Store.versions`` (the listing ``ls`` already did), ``Store.find`` with two
  clauses and a sort (the listing plus the query), ``resolve("name@best:acc")`` vs
  ``resolve("name")``; the stores measured in turn within each round.

Run:  .venv/bin/python benchmarks/bench_query.py [--versions 1000] [--repeat 7] [--json]

Medians of --repeat runs, wall-clock seconds.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any


def timed(fn: Callable[[], Any]) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def git_checkout(folder: Path) -> Path:
    """A checkout with one commit holding train.py; returns the script's path."""
    folder.mkdir(parents=True)
    script = folder / "train.py"
    script.write_text("print('train')\n")
    for args in (["init", "-q"], ["add", "."], ["commit", "-q", "-m", "first"]):
        subprocess.run(
            ["git", "-c", "user.name=b", "-c", "user.email=b@example.com", *args],
            cwd=folder,
            check=True,
        )
    return script


def bench_save(root: Path, repeat: int) -> dict[str, float]:
    import persistkit
    import persistkit.lineage as lineage

    script = git_checkout(root / "checkout")
    real_script_path = lineage.script_path
    lineage.script_path = lambda: script  # as if train.py were the running script
    store = persistkit.Store(root / "store")
    model = {"w": list(range(100))}
    record = {
        "metrics": {"accuracy": 0.97, "loss": 0.1},
        "params": {"C": 1.0, "kernel": "rbf"},
        "lineage": {"data": "sha256:" + "ab" * 32},
    }
    store.save(model, "m", backend="pickle", **record)  # warm up (git status runs once)
    plain, recorded = [], []
    try:
        for _ in range(repeat):
            plain.append(timed(lambda: store.save(model, "m", backend="pickle", lineage=False)))
            recorded.append(timed(lambda: store.save(model, "m", backend="pickle", **record)))
    finally:
        lineage.script_path = real_script_path
    return {
        "save_plain_s": statistics.median(plain),
        "save_with_record_s": statistics.median(recorded),
    }


def bench_git(root: Path, repeat: int) -> dict[str, float]:
    from persistkit import lineage

    script = git_checkout(root / "fresh")
    first = timed(lambda: lineage.git_lineage(script))
    later = statistics.median(timed(lambda: lineage.git_lineage(script)) for _ in range(repeat))
    return {"git_first_call_s": first, "git_later_calls_s": later}


def bench_query(root: Path, versions: int, repeat: int) -> dict[str, float]:
    import persistkit

    stores = {
        "folder": persistkit.Store(root / "many"),
        "sqlite": persistkit.Store(f"sqlite:///{root}/many.db"),
    }
    for store in stores.values():
        for i in range(versions):
            store.save(
                {"i": i},
                "m",
                backend="pickle",
                metrics={"acc": (i * 7919 % 1000) / 1000},
                params={"C": i % 10},
                tags={"stage": "prod" if i % 3 == 0 else "dev"},
                lineage=False,
            )
    where = ["tags.stage=prod", "metrics.acc>=0.5"]
    operations: dict[str, Callable[[Any], Any]] = {
        "versions": lambda s: s.versions("m"),
        "find": lambda s: s.find("m", where=where, sort="-metrics.acc", limit=5),
        "best": lambda s: s.resolve("m@best:acc"),
        "latest": lambda s: s.resolve("m"),
    }
    results: dict[str, list[float]] = {}
    for _ in range(repeat):  # interleaved: every store and operation in each round
        for kind, store in stores.items():
            for op, fn in operations.items():
                start = time.perf_counter()
                fn(store)
                results.setdefault(f"{op}_{kind}_s", []).append(time.perf_counter() - start)
    return {key: statistics.median(values) for key, values in results.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--versions", type=int, default=1000)
    parser.add_argument("--repeat", type=int, default=7)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        os.environ["PERSISTKIT_HOME"] = str(Path(tmp) / "home")
        root = Path(tmp)
        figures = {
            **bench_save(root, args.repeat),
            **bench_git(root, args.repeat),
            **bench_query(root, args.versions, args.repeat),
            "versions": args.versions,
        }
    if args.json:
        print(json.dumps(figures, indent=2))
        return
    for key, value in figures.items():
        shown = f"{value * 1000:.2f} ms" if key.endswith("_s") else str(value)
        print(f"{key:24} {shown}")


if __name__ == "__main__":
    main()
