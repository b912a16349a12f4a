"""The onnx backend against the incumbents, side by side, and how its tolerance was measured.

    .venv/bin/python benchmarks/bench_onnx.py speed [--repeats 7] [--json]
    .venv/bin/python benchmarks/bench_onnx.py tolerance [--mlps 30] [--cnns 15]

``speed``: save, load and predict seconds (medians) of a small CNN (two convolutions on 28x28
pictures) with the ``onnx``, ``torch`` and ``safetensors`` backends, and of a 200-tree
RandomForest on digits with ``onnx`` (onnxruntime) against ``joblib`` (scikit-learn). Variants
run interleaved, in a shuffled order each round; predictions on a warm, loaded model.

``tolerance``: converts random trained MLPs and CNNs (BatchNorm with moved statistics,
Dropout, pooling, several activations) and float32 scikit-learn models, compares
onnxruntime's answers with the model's on fresh inputs, and prints the worst absolute and
relative differences and how much of ``persistkit_onnx.TOLERANCE`` they use (``numpy.allclose``
passes while ``max |a - e| / (atol + rtol |e|)`` stays at most 1).
"""

from __future__ import annotations

import argparse
import functools
import json
import random
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

import persistkit


class BenchCNN(nn.Module):
    """Two convolutions on (N, 1, 28, 28) pictures, ten classes (about 26k parameters)."""

    def __init__(self, channels: int = 16) -> None:
        super().__init__()
        self.channels = channels
        self.features = nn.Sequential(
            nn.Conv2d(1, channels, 3, padding=1),
            nn.ReLU(),
            nn.MaxPool2d(2),
            nn.Conv2d(channels, 2 * channels, 3, padding=1),
            nn.ReLU(),
            nn.MaxPool2d(2),
        )
        self.head = nn.Linear(2 * channels * 7 * 7, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x).flatten(1))


def _median_seconds(action: Callable[[], Any], repeats: int) -> float:
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        action()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def _interleaved(variants: dict[str, Callable[[], Any]], rounds: int) -> dict[str, float]:
    """Median seconds of each variant, one run per round in a shuffled order."""
    times: dict[str, list[float]] = {name: [] for name in variants}
    names = list(variants)
    for _ in range(rounds):
        random.shuffle(names)
        for name in names:
            start = time.perf_counter()
            variants[name]()
            times[name].append(time.perf_counter() - start)
    return {name: statistics.median(t) for name, t in times.items()}


def bench_cnn(folder: Path, repeats: int) -> dict[str, dict[str, float]]:
    # the class must be importable by name for safetensors: import it from this file as a module
    sys.path.insert(0, str(Path(__file__).parent))
    from bench_onnx import BenchCNN as ImportableCNN

    torch.manual_seed(0)
    model = ImportableCNN().eval()
    example = np.random.default_rng(0).standard_normal((8, 1, 28, 28)).astype(np.float32)
    one, batch = (
        example[:1],
        np.random.default_rng(1).standard_normal((64, 1, 28, 28)).astype(np.float32),
    )
    backends = ("onnx", "torch", "safetensors")
    counter = iter(range(10**6))

    def saver(backend: str) -> Callable[[], Any]:
        return lambda: persistkit.save(
            model, folder / f"{backend}-{next(counter)}", backend=backend, example=example
        )

    saves = _interleaved({b: saver(b) for b in backends}, repeats)
    paths = {
        b: persistkit.save(model, folder / b, backend=b, example=example).path for b in backends
    }
    loads = _interleaved(
        {b: functools.partial(persistkit.load, paths[b]) for b in backends}, repeats
    )
    loaded = {b: persistkit.load(paths[b]) for b in backends}
    results: dict[str, dict[str, float]] = {}
    for b in backends:
        predict_one = _median_seconds(functools.partial(persistkit.predict, loaded[b], one), 50)
        predict_64 = _median_seconds(functools.partial(persistkit.predict, loaded[b], batch), 20)
        results[f"cnn/{b}"] = {
            "save_s": saves[b],
            "load_s": loads[b],
            "predict_1_ms": predict_one * 1e3,
            "predict_64_ms": predict_64 * 1e3,
            "bytes": sum(f.stat().st_size for f in paths[b].rglob("*") if f.is_file()),
        }
    return results


def bench_forest(folder: Path, repeats: int) -> dict[str, dict[str, float]]:
    from sklearn.datasets import load_digits
    from sklearn.ensemble import RandomForestClassifier
    from sklearn.model_selection import train_test_split

    X, y = load_digits(return_X_y=True)
    X_train, X_test, y_train, _ = train_test_split(X, y, test_size=0.3, random_state=0)
    model = RandomForestClassifier(n_estimators=200, random_state=0, n_jobs=1).fit(X_train, y_train)
    backends = ("onnx", "joblib")
    counter = iter(range(10**6))

    def saver(backend: str) -> Callable[[], Any]:
        return lambda: persistkit.save(
            model, folder / f"rf-{backend}-{next(counter)}", backend=backend, example=X_test[:8]
        )

    saves = _interleaved(
        {b: saver(b) for b in backends},
        max(3, repeats // 2),
    )
    paths = {
        b: persistkit.save(model, folder / f"rf-{b}", backend=b, example=X_test[:8]).path
        for b in backends
    }
    loads = _interleaved(
        {b: functools.partial(persistkit.load, paths[b]) for b in backends}, repeats
    )
    loaded = {b: persistkit.load(paths[b]) for b in backends}
    results: dict[str, dict[str, float]] = {}
    for b in backends:
        one = _median_seconds(functools.partial(persistkit.predict, loaded[b], X_test[:1]), 30)
        full = _median_seconds(functools.partial(persistkit.predict, loaded[b], X_test), 10)
        results[f"forest200/{b}"] = {
            "save_s": saves[b],
            "load_s": loads[b],
            "predict_1_ms": one * 1e3,
            f"predict_{len(X_test)}_ms": full * 1e3,
            "bytes": sum(f.stat().st_size for f in paths[b].rglob("*") if f.is_file()),
        }
    same = np.array_equal(persistkit.predict(loaded["onnx"], X_test), model.predict(X_test))
    results["forest200/onnx"]["labels_identical"] = float(same)
    return results


def speed(args: argparse.Namespace) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        results = bench_cnn(Path(tmp), args.repeats)
        results.update(bench_forest(Path(tmp), args.repeats))
    if args.json:
        print(json.dumps(results, indent=2))
        return
    print(f"torch {torch.__version__}, threads {torch.get_num_threads()}; medians")
    for name, row in results.items():
        cells = ", ".join(
            f"{k} {v:.4g}" if not k.endswith("bytes") else f"{k} {int(v)}" for k, v in row.items()
        )
        print(f"{name:22s} {cells}")


# -- tolerance ----------------------------------------------------------------------------------


def _random_mlp(rng: random.Random) -> tuple[nn.Module, tuple[int, ...]]:
    width_in = rng.choice([4, 16, 64])
    widths = (
        [width_in]
        + [rng.choice([8, 32, 128, 256]) for _ in range(rng.randint(1, 5))]
        + [rng.choice([1, 3, 10])]
    )
    activation = rng.choice([nn.ReLU, nn.Tanh, nn.GELU, nn.SiLU])
    layers: list[nn.Module] = []
    for i in range(len(widths) - 1):
        layers.append(nn.Linear(widths[i], widths[i + 1]))
        if i < len(widths) - 2:
            if rng.random() < 0.5:
                layers.append(nn.BatchNorm1d(widths[i + 1]))
            layers.append(activation())
            if rng.random() < 0.3:
                layers.append(nn.Dropout(0.2))
    return nn.Sequential(*layers), (width_in,)


def _random_cnn(rng: random.Random) -> tuple[nn.Module, tuple[int, ...]]:
    channels, size = rng.choice([1, 3]), rng.choice([16, 28, 32])
    layers: list[nn.Module] = []
    c = channels
    for _ in range(rng.randint(1, 3)):
        out = rng.choice([4, 8, 16, 32])
        layers += [nn.Conv2d(c, out, 3, padding=1), nn.BatchNorm2d(out), nn.ReLU()]
        layers.append(rng.choice([nn.MaxPool2d(2), nn.AvgPool2d(2), nn.Identity()]))
        c = out
    layers += [nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Dropout(0.1), nn.Linear(c, 10)]
    return nn.Sequential(*layers), (channels, size, size)


def _train(model: nn.Module, shape: tuple[int, ...], seed: int) -> nn.Module:
    """A few SGD steps at a high rate: weights and BatchNorm statistics move from their init."""
    torch.manual_seed(seed)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    for _ in range(5):
        x = torch.randn(32, *shape) * 3
        optimizer.zero_grad()
        model(x).square().mean().backward()
        optimizer.step()
    return model.eval()


def _usage(actual: np.ndarray, expected: np.ndarray) -> dict[str, float]:
    from persistkit_onnx import TOLERANCE

    rtol, atol = TOLERANCE
    a, e = actual.astype(np.float64), expected.astype(np.float64)
    diff = np.abs(a - e)
    return {
        "max_abs": float(diff.max()),
        "max_rel": float((diff / np.maximum(np.abs(e), 1e-6)).max()),
        "usage": float((diff / (atol + rtol * np.abs(e))).max()),
    }


def tolerance(args: argparse.Namespace) -> None:
    rng = random.Random(args.seed)
    rows: list[tuple[str, dict[str, float]]] = []
    with tempfile.TemporaryDirectory() as tmp:
        makers = [("mlp", _random_mlp)] * args.mlps + [("cnn", _random_cnn)] * args.cnns
        for i, (kind, make) in enumerate(makers):
            model, shape = make(rng)
            model = _train(model, shape, seed=i)
            gen = np.random.default_rng(i)
            example = (gen.standard_normal((8, *shape)) * 3).astype(np.float32)
            art = persistkit.save(model, Path(tmp) / f"{kind}{i}", backend="onnx", example=example)
            inputs = (gen.standard_normal((256, *shape)) * 3).astype(np.float32)
            got = persistkit.predict(persistkit.load(art.path), inputs)
            rows.append((kind, _usage(got, persistkit.predict(model, inputs))))
        rows += _sklearn_float32_rows(Path(tmp))
    for kind in dict.fromkeys(k for k, _ in rows):
        found = [r for k, r in rows if k == kind]
        worst = {key: max(r[key] for r in found) for key in found[0]}
        print(
            f"{kind:14s} n={len(found):3d}  worst |diff| {worst['max_abs']:.3g}  "
            f"worst relative {worst['max_rel']:.3g}  worst use of tolerance {worst['usage']:.3g}"
        )


def _sklearn_float32_rows(folder: Path) -> list[tuple[str, dict[str, float]]]:
    """scikit-learn models that convert as float32 (tree ensembles), or forced to float32."""
    from sklearn.datasets import load_diabetes, load_digits
    from sklearn.ensemble import (
        GradientBoostingRegressor,
        RandomForestClassifier,
        RandomForestRegressor,
    )
    from sklearn.linear_model import LogisticRegression, Ridge
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    Xd, yd = load_digits(return_X_y=True)
    Xr, yr = load_diabetes(return_X_y=True)
    cases: list[tuple[str, Any, np.ndarray, np.ndarray, dict[str, Any], str | None]] = [
        ("sk/forest-reg", RandomForestRegressor(100, random_state=0), Xr, yr, {}, None),
        ("sk/gb-reg", GradientBoostingRegressor(random_state=0), Xr, yr, {}, None),
        ("sk/ridge-f32", Ridge(), Xr, yr, {"dtype": "float32"}, None),
        (
            "sk/forest-proba",
            RandomForestClassifier(100, random_state=0),
            Xd,
            yd,
            {},
            "predict_proba",
        ),
        (
            "sk/logreg-f32",
            make_pipeline(StandardScaler(), LogisticRegression(max_iter=500)),
            Xd,
            yd,
            {"dtype": "float32"},
            "predict_proba",
        ),
    ]
    rows = []
    for i, (name, model, X, y, options, method) in enumerate(cases):
        model.fit(X[: len(X) // 2], y[: len(X) // 2])
        art = persistkit.save(model, folder / f"sk{i}", backend="onnx", example=X[:8], **options)
        loaded = persistkit.load(art.path)
        rest = X[len(X) // 2 :]
        kw = {"method": method} if method else {}
        rows.append(
            (
                name,
                _usage(
                    persistkit.predict(loaded, rest, **kw), persistkit.predict(model, rest, **kw)
                ),
            )
        )
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="what", required=True)
    s = sub.add_parser("speed")
    s.add_argument("--repeats", type=int, default=7)
    s.add_argument("--json", action="store_true")
    t = sub.add_parser("tolerance")
    t.add_argument("--mlps", type=int, default=30)
    t.add_argument("--cnns", type=int, default=15)
    t.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    speed(args) if args.what == "speed" else tolerance(args)


if __name__ == "__main__":
    main()
