"""The scikit-learn adapter: freeze (checks the estimator is fitted), predict, describe, and
votes for the backends that suit estimators. scikit-learn is imported only for a sklearn model.
"""

from __future__ import annotations

import functools
from typing import Any

import persistkit
from persistkit import Recommendation
from persistkit.errors import InputError, NotFittedError

LIBRARIES = ("scikit-learn", "numpy", "scipy", "joblib", "threadpoolctl")


def is_sklearn_model(model: Any) -> bool:
    """True for scikit-learn estimators and pipelines (checked without importing sklearn)."""
    if isinstance(model, type):
        return False
    return any(
        cls.__module__.split(".", 1)[0] == "sklearn" for cls in type(model).__mro__[:-1]
    ) and hasattr(model, "get_params")


@persistkit.hookimpl
def persistkit_freeze(model: Any) -> Any | None:
    if not is_sklearn_model(model):
        return None
    from sklearn.exceptions import NotFittedError as SklearnNotFitted
    from sklearn.utils.validation import check_is_fitted

    try:
        check_is_fitted(model[-1] if hasattr(model, "steps") else model)
    except SklearnNotFitted:
        raise NotFittedError(
            f"this {type(model).__name__} is not fitted yet, so there is nothing to save",
            hint="call .fit(X, y) on it first",
        ) from None
    return model


@persistkit.hookimpl
def persistkit_predict(model: Any, inputs: Any, options: dict[str, Any]) -> Any | None:
    if not is_sklearn_model(model):
        return None
    import numpy as np

    method = options.get("method")
    if method is None:
        method = "predict" if hasattr(model, "predict") else "transform"
    func = getattr(model, method, None)
    if func is None:
        available = [
            m
            for m in ("predict", "predict_proba", "decision_function", "transform", "score_samples")
            if hasattr(model, m)
        ]
        raise InputError(
            f"{type(model).__name__} has no method {method!r}",
            hint=f"use one of: {', '.join(available)}",
        )
    try:
        return np.asarray(func(_as_input(inputs)))
    except ValueError as exc:
        raise InputError(
            f"{type(model).__name__}.{method} rejected the inputs: {exc}",
            hint="pass a 2-D array shaped (n_samples, n_features) like the training data",
        ) from None


def _as_input(inputs: Any) -> Any:
    if hasattr(inputs, "iloc"):  # keep DataFrames: column names matter to some pipelines
        return inputs
    return persistkit.to_numpy(inputs)


@functools.lru_cache(maxsize=1)
def _library_versions() -> tuple[tuple[str, str], ...]:
    # reading package metadata costs ~2 ms per package; versions cannot change under a
    # running process that already imported them
    import importlib.metadata  # ~1.3 ms: only when a save describes a model

    found = []
    for dist in LIBRARIES:
        try:
            found.append((dist, importlib.metadata.version(dist)))
        except importlib.metadata.PackageNotFoundError:
            continue
    return tuple(found)


@persistkit.hookimpl
def persistkit_describe(model: Any) -> dict[str, Any] | None:
    if not is_sklearn_model(model):
        return None
    libraries = dict(_library_versions())
    facts: dict[str, Any] = {"family": "sklearn", "libraries": libraries}
    n_features = getattr(model, "n_features_in_", None)
    if n_features is not None:
        facts["n_features_in"] = int(n_features)
    facts["modules"] = sorted(_modules_of(model))
    # continuous outputs stored with the example, so a drift that keeps labels is seen
    facts["score_methods"] = [
        m for m in ("predict_proba", "decision_function") if _has_method(model, m)
    ][:1]
    classes = getattr(model, "classes_", None)
    if _is_label_list(classes):
        # the default labels= of a classifier (answers read "setosa (0.97)")
        facts["classes"] = [c.item() if hasattr(c, "item") else c for c in classes]
    return facts


def _modules_of(model: Any) -> set[str]:
    """The modules of the classes of ``model`` and every estimator nested in its parameters
    (pipeline steps, meta-estimators' estimators): the code its pickle imports."""
    found = {type(model).__module__}
    try:
        params = model.get_params(deep=True)
    except Exception:  # a third-party estimator with an unusual get_params
        return found
    for value in params.values():
        if hasattr(value, "get_params") and not isinstance(value, type):
            found.add(type(value).__module__)
    return found


def _has_method(model: Any, name: str) -> bool:
    try:  # scikit-learn hides methods a fitted model cannot offer (available_if)
        return callable(getattr(model, name, None))
    except Exception:
        return False


def _is_label_list(classes: Any) -> bool:
    """A classifier's ``classes_``: one flat list of strings or numbers (not multi-output)."""
    import numpy as np

    if classes is None or isinstance(classes, list):
        return False
    array = np.asarray(classes)
    return array.ndim == 1 and array.dtype.kind in "iuUOf" and 0 < len(array) <= 100_000


@persistkit.hookimpl
def persistkit_recommend(model: Any) -> list[Recommendation] | None:
    if not is_sklearn_model(model):
        return None
    return [
        Recommendation(
            "joblib",
            50,
            "joblib stores the numpy arrays inside estimators as raw "
            "buffers and is scikit-learn's recommended format",
        ),
        Recommendation("pickle", 40, "plain pickle is as fast and needs no extra package"),
    ]
