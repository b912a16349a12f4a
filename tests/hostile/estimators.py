"""Every scikit-learn estimator, fitted on small random data (for allow-list property tests)."""

from __future__ import annotations

import warnings
from typing import Any

import numpy as np


def estimator_names() -> list[str]:
    from sklearn.utils import all_estimators

    return [name for name, _cls in all_estimators()]


def fitted(name: str, seed: int = 0, n_classes: int = 3) -> Any | None:
    """The first test instance of estimator ``name`` fitted on random data, or ``None`` if it
    cannot be fitted on plain numeric data (text vectorizers, estimators needing groups...)."""
    from sklearn.utils import all_estimators
    from sklearn.utils._test_common.instance_generator import _construct_instances

    cls = dict(all_estimators())[name]
    X, y_class, y_reg = data(seed, n_classes)
    try:
        estimator = next(iter(_construct_instances(cls)))
    except Exception:
        return None
    y_multi = np.c_[y_reg, y_reg[::-1]]
    y_multi_class = np.c_[y_class, y_class[::-1]]
    for args in (
        (X, y_class),
        (X, y_reg),
        (X,),
        (X, y_multi),
        (X, y_multi_class),
        (X[:, 0], y_reg),
    ):
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                estimator.fit(*args)
        except Exception:
            continue
        return estimator
    return None


def data(seed: int = 0, n_classes: int = 3) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    X = np.abs(rng.normal(size=(60, 5)))
    return X, rng.integers(0, n_classes, size=60), rng.normal(size=60)


def outputs(estimator: Any, X: np.ndarray) -> list[np.ndarray]:
    """What the estimator computes on ``X``: predictions, probabilities, transforms, labels."""
    results = []
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for method in ("predict", "predict_proba", "decision_function", "transform"):
            if not hasattr(estimator, method):
                continue
            try:
                value = getattr(estimator, method)(X)
            except Exception:
                continue
            if hasattr(value, "toarray"):
                value = value.toarray()
            results.append(np.asarray(value))
    if hasattr(estimator, "labels_"):
        results.append(np.asarray(estimator.labels_))
    return results


def identical(a: list[np.ndarray], b: list[np.ndarray]) -> bool:
    return len(a) == len(b) and all(
        x.shape == y.shape and x.dtype == y.dtype and x.tobytes() == y.tobytes()
        for x, y in zip(a, b)
    )
