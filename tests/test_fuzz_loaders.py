"""Fuzzing: mutated model files and artifacts give only PersistkitError - no crash, hang or
runaway memory.

The mutation and loading run in a subprocess (tests/hostile/fuzz_worker.py) under an address
space limit and a timeout, so a crash or a memory blow-up fails this test instead of the run.
"""

from __future__ import annotations

import ast
import pickle
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

EXAMPLES = 300


def _seeds(folder: Path) -> Path:
    import joblib
    from sklearn.ensemble import RandomForestClassifier

    folder.mkdir()
    rng = np.random.default_rng(0)
    X = rng.normal(size=(40, 3))
    forest = RandomForestClassifier(n_estimators=2, max_depth=3, random_state=0)
    forest.fit(X, X[:, 0] > 0)
    for protocol in (0, 2, 5):
        (folder / f"forest-p{protocol}.pkl").write_bytes(pickle.dumps(forest, protocol=protocol))
    objects = {"w": np.arange(6.0).reshape(2, 3), "o": np.array([1, "a"], dtype=object)}
    joblib.dump(objects, folder / "arrays.joblib")
    joblib.dump(forest, folder / "forest-zlib.joblib", compress=3)
    import persistkit

    persistkit.save(forest, folder / "artifact-pickle", backend="pickle")
    persistkit.save(objects["w"], folder / "artifact-joblib", backend="joblib")
    try:
        import torch
        from safetensors.torch import save_file

        torch.save(torch.nn.Linear(2, 2), folder / "linear.pt")
        save_file(
            {"w": torch.arange(6.0), "n": torch.ones(2, dtype=torch.int64)},
            str(folder / "weights.safetensors"),
        )
    except ImportError:
        pass
    return folder


def test_mutated_files_only_raise_persistkit_errors(tmp_path: Path) -> None:
    seeds = _seeds(tmp_path / "seeds")
    worker = Path(__file__).parent / "hostile" / "fuzz_worker.py"
    try:
        result = subprocess.run(
            [sys.executable, str(worker), str(seeds), str(EXAMPLES)],
            capture_output=True,
            text=True,
            timeout=240,
            cwd=tmp_path,
        )
    except subprocess.TimeoutExpired:
        pytest.fail("a mutated file made a loader hang")
    assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-4000:]
    assert f"EXAMPLES {EXAMPLES}" in result.stdout
    # artifacts whose payload changed (digest recomputed) must get past the manifest: a
    # manifest the worker wrote wrong would refuse every one and the payload readers go untried
    line = next(x for x in result.stdout.splitlines() if x.startswith("OUTCOMES"))
    payload_outcomes = [k for k, _ in ast.literal_eval(line.removeprefix("OUTCOMES "))]
    payload_outcomes = [k for k in payload_outcomes if k.startswith("payload:")]
    assert set(payload_outcomes) - {"payload:ManifestError"}, line
