"""The standard models of the benchmark suite, built deterministically (seed 0).

Importable by name (``suite_models.WideMLP``) so the safetensors backend can rebuild the torch
models from their recorded class and arguments, and a fresh process can load them.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np


@dataclass(frozen=True)
class SuiteModel:
    """A named model builder; ``family`` picks the raw-library baselines it is compared with."""

    name: str
    description: str
    family: str  # "sklearn" or "torch"
    build: Callable[[], Any]


def logistic_regression() -> Any:
    from sklearn.linear_model import LogisticRegression

    rng = np.random.default_rng(0)
    X = rng.standard_normal((2000, 64))
    y = (X[:, :3].sum(axis=1) > 0).astype(int)
    return LogisticRegression(max_iter=500).fit(X, y)


def random_forest(trees: int) -> Callable[[], Any]:
    def build() -> Any:
        from sklearn.ensemble import RandomForestClassifier

        rng = np.random.default_rng(0)
        X = rng.standard_normal((4000, 20))
        y = (X[:, 0] + 0.5 * rng.standard_normal(4000) > 0).astype(int)
        return RandomForestClassifier(n_estimators=trees, random_state=0, n_jobs=1).fit(X, y)

    return build


def knn(megabytes: int) -> Callable[[], Any]:
    def build() -> Any:
        from sklearn.neighbors import KNeighborsClassifier

        rows = megabytes * 1_000_000 // (50 * 8)
        rng = np.random.default_rng(0)
        X = rng.standard_normal((rows, 50))
        y = rng.integers(0, 5, rows)
        return KNeighborsClassifier(algorithm="brute").fit(X, y)

    return build


def _torch_module_class() -> Any:
    from torch import nn

    class WideMLP(nn.Module):
        """``depth`` square Linear layers of ``width`` (ReLU between), keeping its constructor
        arguments as attributes."""

        def __init__(self, width: int, depth: int, out: int = 10) -> None:
            super().__init__()
            self.width, self.depth, self.out = width, depth, out
            layers: list[nn.Module] = []
            for _ in range(depth):
                layers += [nn.Linear(width, width), nn.ReLU()]
            layers.append(nn.Linear(width, out))
            self.net = nn.Sequential(*layers)

        def forward(self, x: Any) -> Any:
            return self.net(x)

    WideMLP.__module__ = __name__
    WideMLP.__qualname__ = "WideMLP"
    return WideMLP


def __getattr__(name: str) -> Any:
    # the torch class is created on first use, so importing this module does not import torch
    if name == "WideMLP":
        cls = _torch_module_class()
        globals()["WideMLP"] = cls
        return cls
    raise AttributeError(name)


def torch_mlp(width: int, depth: int, out: int = 10) -> Callable[[], Any]:
    def build() -> Any:
        import torch

        torch.manual_seed(0)
        return __getattr__("WideMLP")(width, depth, out).eval()

    return build


def standard_models(quick: bool) -> list[SuiteModel]:
    """The suite: full sizes, or small stand-ins for a smoke run (``quick``)."""
    if quick:
        return [
            SuiteModel(
                "logreg", "logistic regression, 64 features", "sklearn", logistic_regression
            ),
            SuiteModel(
                "forest-20", "random forest, 20 trees (quick)", "sklearn", random_forest(20)
            ),
            SuiteModel("knn-10mb", "kNN over a 10 MB array (quick)", "sklearn", knn(10)),
            SuiteModel("mlp-1m", "torch MLP, ~1M parameters", "torch", torch_mlp(700, 2)),
            SuiteModel("torch-20mb", "torch MLP, ~20 MB (quick)", "torch", torch_mlp(1024, 5)),
        ]
    return [
        SuiteModel("logreg", "logistic regression, 64 features", "sklearn", logistic_regression),
        SuiteModel("forest-200", "random forest, 200 trees", "sklearn", random_forest(200)),
        SuiteModel("knn-100mb", "kNN (brute) over a 100 MB float64 array", "sklearn", knn(100)),
        SuiteModel("mlp-1m", "torch MLP, ~1M parameters", "torch", torch_mlp(700, 2)),
        SuiteModel("torch-200mb", "torch MLP, ~200 MB float32", "torch", torch_mlp(4096, 3)),
        SuiteModel("torch-1gb", "torch MLP, ~1 GB float32", "torch", torch_mlp(4096, 15)),
    ]
