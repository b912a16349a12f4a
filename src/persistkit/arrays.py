"""Conversions between what users pass as inputs and numpy arrays (numpy only, no frameworks)."""

from __future__ import annotations

from typing import Any

import numpy as np


def to_numpy(value: Any) -> np.ndarray:
    """Turn arrays, array-likes, nested lists and framework tensors into a numpy array.

    Tensors from frameworks that expose ``.numpy()`` (torch, after ``.detach().cpu()``) or the
    ``__array__`` protocol convert without importing the framework here.
    """
    if isinstance(value, np.ndarray):
        return value
    if hasattr(value, "detach") and hasattr(value, "cpu") and hasattr(value, "numpy"):
        return np.asarray(value.detach().cpu().numpy())
    if hasattr(value, "to_numpy") and callable(value.to_numpy):  # pandas
        return np.asarray(value.to_numpy())
    return np.asarray(value)


def arrays_identical(a: Any, b: Any) -> bool:
    """Bitwise equality of two predictions: same dtype, shape and bytes (NaNs compare equal)."""
    x, y = to_numpy(a), to_numpy(b)
    if x.dtype != y.dtype or x.shape != y.shape:
        return False
    if x.dtype == object:
        return bool(all(_same(p, q) for p, q in zip(x.ravel(), y.ravel())))
    return x.tobytes() == y.tobytes()


def _same(p: Any, q: Any) -> bool:
    if isinstance(p, float) and isinstance(q, float):
        return p == q or (p != p and q != q)
    return bool(p == q)
