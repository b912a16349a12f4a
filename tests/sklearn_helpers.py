"""Small fitted scikit-learn models shared by tests."""

from __future__ import annotations

import numpy as np


def digits_model():  # type: ignore[no-untyped-def]
    from sklearn.datasets import load_digits
    from sklearn.linear_model import LogisticRegression

    X, y = load_digits(return_X_y=True)
    model = LogisticRegression(max_iter=200).fit(X[:300], y[:300])
    return model, X, y


def tiny_forest():  # type: ignore[no-untyped-def]
    from sklearn.ensemble import RandomForestClassifier

    rng = np.random.default_rng(0)
    X = rng.normal(size=(60, 4))
    y = (X[:, 0] > 0).astype(int)
    return RandomForestClassifier(n_estimators=5, random_state=0).fit(X, y), X


def double(x):  # type: ignore[no-untyped-def]
    """An importable function: pickles by reference."""
    return np.asarray(x) * 2
