"""Fit the golden-matrix estimators in *this* environment and write their files.

Run by ``tools/make_golden.py`` inside a throwaway virtual environment that holds one old
scikit-learn (and persistkit from the checkout, installed with ``--no-deps -e``)::

    python tools/golden_worker.py OUT_DIR

For each estimator it writes ``OUT_DIR/<estimator>/``: ``model.joblib`` (``joblib.dump``),
``model.pkl`` (``pickle`` protocol 5), the test inputs ``X.npy`` (``X.json`` for text), one
``<method>.npy`` per output method the model has (computed here, by the old version), and
``artifact/`` (``persistkit.save(model, path, example=X[:20])``). It prints one JSON object
describing every cell on its last line of stdout. Everything is deterministic: bundled
datasets, fixed seeds, generated sentences; nothing is downloaded.
"""

from __future__ import annotations

import json
import pickle
import platform
import sys
import traceback
from collections.abc import Callable
from pathlib import Path
from typing import Any

import joblib
import numpy as np
import sklearn
from sklearn import datasets
from sklearn.cluster import KMeans
from sklearn.decomposition import PCA
from sklearn.ensemble import (
    GradientBoostingClassifier,
    GradientBoostingRegressor,
    HistGradientBoostingClassifier,
    RandomForestClassifier,
    RandomForestRegressor,
)
from sklearn.feature_extraction.text import TfidfVectorizer
from sklearn.linear_model import LogisticRegression, Ridge
from sklearn.neighbors import KNeighborsClassifier
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler
from sklearn.svm import SVC, LinearSVC
from sklearn.tree import DecisionTreeClassifier

METHODS = ("predict", "predict_proba", "decision_function", "transform")
EXAMPLE_ROWS = 20

# one string per topic (split where used): ten words each
_WORDS = {
    "sport": "match goal team coach league score season player referee stadium",
    "science": "atom cell energy theory experiment molecule orbit physics genome data",
    "food": "bread cheese soup recipe oven spice flavour kitchen salad dessert",
}
_FILLER = "the a of and with on in very today new old"


def sentences(count: int, seed: int) -> tuple[list[str], np.ndarray]:
    """Deterministic short sentences, each mostly about one of three topics."""
    rng = np.random.RandomState(seed)
    topics = sorted(_WORDS)
    texts, labels = [], []
    for _ in range(count):
        label = int(rng.randint(len(topics)))
        words = list(rng.choice(_WORDS[topics[label]].split(), 5))
        words += list(rng.choice(_WORDS[topics[(label + 1) % 3]].split(), 1))
        words += list(rng.choice(_FILLER.split(), 3))
        rng.shuffle(words)
        texts.append(" ".join(str(w) for w in words))
        labels.append(label)
    return texts, np.array(labels)


def split(data: Any, test: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """A fixed shuffle of a bundled dataset: train inputs, train targets, test inputs."""
    order = np.random.RandomState(0).permutation(len(data.target))
    x, y = data.data[order], data.target[order]
    return x[test:], y[test:], x[:test]


def _iris() -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    return split(datasets.load_iris(), 30)


def _cancer() -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    return split(datasets.load_breast_cancer(), 40)


def _digits() -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    return split(datasets.load_digits(), 30)


def _diabetes() -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    return split(datasets.load_diabetes(), 40)


def _text() -> tuple[list[str], np.ndarray, list[str]]:
    train, labels = sentences(150, seed=1)
    test, _ = sentences(30, seed=2)
    return train, labels, test


# name -> (data, estimator factory); small settings keep every file a few kB
ESTIMATORS: dict[str, tuple[Callable[[], Any], Callable[[], Any]]] = {
    "logistic_regression": (_iris, lambda: LogisticRegression(max_iter=1000)),
    "random_forest_classifier": (
        _cancer,
        lambda: RandomForestClassifier(n_estimators=6, max_depth=5, random_state=0),
    ),
    "gradient_boosting_classifier": (
        _iris,
        lambda: GradientBoostingClassifier(n_estimators=8, max_depth=2, random_state=0),
    ),
    "hist_gradient_boosting_classifier": (
        _cancer,
        lambda: HistGradientBoostingClassifier(
            max_iter=10, max_leaf_nodes=8, max_bins=16, random_state=0
        ),
    ),
    "svc": (_iris, lambda: SVC(probability=True, random_state=0)),
    "linear_svc": (_iris, lambda: LinearSVC(dual=True, max_iter=10000, random_state=0)),
    "kneighbors_classifier": (_iris, lambda: KNeighborsClassifier(n_neighbors=5)),
    "decision_tree_classifier": (
        _digits,
        lambda: DecisionTreeClassifier(max_depth=6, random_state=0),
    ),
    "pipeline_scaler_logreg": (
        _cancer,
        lambda: make_pipeline(StandardScaler(), LogisticRegression(max_iter=1000)),
    ),
    "pipeline_tfidf_linearsvc": (
        _text,
        lambda: make_pipeline(TfidfVectorizer(), LinearSVC(dual=True, max_iter=5000)),
    ),
    "ridge": (_diabetes, lambda: Ridge(alpha=1.0)),
    "random_forest_regressor": (
        _diabetes,
        lambda: RandomForestRegressor(n_estimators=6, max_depth=5, random_state=0),
    ),
    "gradient_boosting_regressor": (
        _diabetes,
        lambda: GradientBoostingRegressor(n_estimators=12, max_depth=2, random_state=0),
    ),
    "kmeans": (_iris, lambda: KMeans(n_clusters=3, n_init=10, random_state=0)),
    "pca": (_digits, lambda: PCA(n_components=8, random_state=0)),
}


def write_cell(name: str, folder: Path) -> dict[str, Any]:
    """Fit one estimator and write its files into ``folder``; describe what was written."""
    data, factory = ESTIMATORS[name]
    x_train, y_train, x_test = data()
    model = factory()
    if name == "pca" or name == "kmeans":
        model.fit(x_train)
    else:
        model.fit(x_train, y_train)
    folder.mkdir(parents=True, exist_ok=True)
    text = isinstance(x_test, list)
    if text:
        (folder / "X.json").write_text(json.dumps(x_test, indent=0) + "\n")
    else:
        np.save(folder / "X.npy", x_test, allow_pickle=False)
    methods = []
    for method in METHODS:
        if not hasattr(model, method):
            continue
        np.save(folder / f"{method}.npy", getattr(model, method)(x_test), allow_pickle=False)
        methods.append(method)
    joblib.dump(model, folder / "model.joblib")
    (folder / "model.pkl").write_bytes(pickle.dumps(model, protocol=5))
    cell: dict[str, Any] = {
        "estimator": name,
        "class": f"{type(model).__module__}.{type(model).__qualname__}",
        "inputs": "X.json" if text else "X.npy",
        "methods": methods,
        "files": ["model.joblib", "model.pkl"],
    }
    try:
        import persistkit

        example = x_test[:EXAMPLE_ROWS]
        artifact = persistkit.save(model, folder / "artifact", example=example)
        cell["files"].append("artifact")
        cell["artifact_backend"] = artifact.backend
    except Exception as exc:  # recorded: the test then skips the artifact of this cell
        cell["artifact_error"] = f"{type(exc).__name__}: {exc}".splitlines()[0]
        traceback.print_exc(file=sys.stderr)
    return cell


def main(argv: list[str]) -> int:
    out = Path(argv[0])
    cells = [write_cell(name, out / name) for name in ESTIMATORS]
    libraries = {"scikit-learn": sklearn.__version__, "numpy": np.__version__}
    import scipy

    libraries["scipy"] = scipy.__version__
    libraries["joblib"] = joblib.__version__
    report = {"python": platform.python_version(), "libraries": libraries, "cells": cells}
    print(json.dumps(report))
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
