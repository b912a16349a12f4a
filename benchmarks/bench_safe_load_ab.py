"""The restricted readers of two persistkit versions side by side, interleaved, on one model.

Two worker processes — one importing this checkout's ``persistkit``, one importing the
``src`` folder given by ``--baseline`` (e.g. a ``git worktree`` of an older commit) — load the
same files in alternation, round after round, so machine noise falls on both alike. Plain
``pickle.load`` / ``joblib.load`` run in the same rounds as the reference.

    git worktree add /tmp/base <commit>
    .venv/bin/python benchmarks/bench_safe_load_ab.py --baseline /tmp/base/src [--rounds 15]
"""

from __future__ import annotations

import argparse
import json
import os
import pickle
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

WORKER = r"""
import io, json, pickle, sys, time
import joblib
from persistkit.safety import TrustPolicy
policy = TrustPolicy()
readers = {
    "pickle.load": lambda p: pickle.load(open(p, "rb")),
    "joblib.load": lambda p: joblib.load(p),
    "restricted pickle": lambda p: policy.unpickle(open(p, "rb")),
    "restricted joblib": lambda p: policy.load_joblib(p),
}
for line in sys.stdin:
    reader, path = json.loads(line)
    start = time.perf_counter()
    readers[reader](path)
    print(json.dumps(time.perf_counter() - start), flush=True)
"""


class Worker:
    """A process that loads files on request and answers with the seconds it took."""

    def __init__(self, pythonpath: str | None) -> None:
        env = dict(os.environ)
        if pythonpath:
            env["PYTHONPATH"] = pythonpath + os.pathsep + env.get("PYTHONPATH", "")
        self.proc = subprocess.Popen(
            [sys.executable, "-c", WORKER],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
            env=env,
        )

    def load(self, reader: str, path: Path) -> float:
        assert self.proc.stdin is not None and self.proc.stdout is not None
        self.proc.stdin.write(json.dumps([reader, str(path)]) + "\n")
        self.proc.stdin.flush()
        return float(json.loads(self.proc.stdout.readline()))

    def close(self) -> None:
        if self.proc.stdin is not None:
            self.proc.stdin.close()
        self.proc.wait()


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--baseline", required=True, help="src folder of the other version")
    parser.add_argument("--rounds", type=int, default=15)
    parser.add_argument("--samples", type=int, default=20000)
    args = parser.parse_args()

    import joblib
    import numpy as np
    from sklearn.ensemble import RandomForestClassifier

    rng = np.random.default_rng(0)
    X = rng.normal(size=(args.samples, 10))
    y = (X[:, 0] + rng.normal(scale=0.5, size=args.samples) > 0).astype(int)
    forest = RandomForestClassifier(n_estimators=200, random_state=0, n_jobs=2).fit(X, y)
    folder = Path(tempfile.mkdtemp())
    pkl, jl = folder / "forest.pkl", folder / "forest.joblib"
    pkl.write_bytes(pickle.dumps(forest, protocol=5))
    joblib.dump(forest, jl)

    workers = {"this checkout": Worker(None), "baseline": Worker(args.baseline)}
    cases = [
        ("this checkout", "pickle.load", pkl),
        ("this checkout", "restricted pickle", pkl),
        ("baseline", "restricted pickle", pkl),
        ("this checkout", "joblib.load", jl),
        ("this checkout", "restricted joblib", jl),
        ("baseline", "restricted joblib", jl),
    ]
    times: dict[tuple[str, str], list[float]] = {(w, r): [] for w, r, _ in cases}
    for who, reader, path in cases:  # warm both workers' imports and caches
        workers[who].load(reader, path)
    for _ in range(args.rounds):
        for who, reader, path in cases:
            times[(who, reader)].append(workers[who].load(reader, path))
    for worker in workers.values():
        worker.close()
    size = pkl.stat().st_size / 1e6
    print(f"200-tree forest ({size:.1f} MB), {args.rounds} interleaved rounds, median (min-max)")
    for (who, reader), values in times.items():
        ms = [v * 1000 for v in values]
        print(
            f"  {reader:18s} {who:14s} {statistics.median(ms):7.1f} ms "
            f"({min(ms):.1f}-{max(ms):.1f})"
        )


if __name__ == "__main__":
    main()
