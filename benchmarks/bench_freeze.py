"""The four torch backends (torch, safetensors, export, onnx) on a small CNN, and onnxruntime
against scikit-learn on a 200-tree forest, side by side with ``persistkit.bench`` (the
machinery of ``persistkit bench``): save, load, size, peak load memory, single-input predict
latency, and whether predictions are identical (or within the onnx tolerance).

Run:  .venv/bin/python benchmarks/bench_freeze.py [--repeat N] [--json FILE]
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).parent))  # freeze_models: importable classes

import persistkit


def cnn() -> tuple[object, np.ndarray]:
    import freeze_models
    import torch

    torch.manual_seed(0)
    model = freeze_models.DigitCNN().eval()
    example = np.random.default_rng(0).standard_normal((8, 1, 28, 28)).astype(np.float32)
    return model, example


def forest() -> tuple[object, np.ndarray]:
    from sklearn.datasets import load_digits
    from sklearn.ensemble import RandomForestClassifier

    X, y = load_digits(return_X_y=True)
    model = RandomForestClassifier(n_estimators=200, random_state=0).fit(X[:1200], y[:1200])
    return model, X[1200:]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--json", dest="json_path", default=None)
    args = parser.parse_args()
    reports = []
    for label, build, backends in (
        ("small CNN (2 conv blocks, 1x28x28, 52k parameters)", cnn,
         ["torch", "safetensors", "export", "onnx"]),
        ("RandomForest, 200 trees, digits", forest, ["joblib", "pickle", "onnx"]),
    ):
        model, example = build()
        report = persistkit.bench(model, backends=backends, repeat=args.repeat, example=example)
        report.model = label
        print(report.table(), end="\n\n", flush=True)
        reports.append(report.to_dict())
    if args.json_path:
        Path(args.json_path).write_text(json.dumps(reports, indent=2))


if __name__ == "__main__":
    main()
