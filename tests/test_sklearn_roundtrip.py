"""Property: for every scikit-learn family, random hyper-parameters and random data, every
backend that claims the model reloads it with bitwise-identical predictions."""

from __future__ import annotations

import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import persistkit
from persistkit.arrays import arrays_identical
from persistkit.errors import CannotSaveError

pytest.importorskip("sklearn")

PICKLE_FAMILY = ["pickle", "joblib", "cloudpickle", "dill"]
Builder = Callable[[st.DrawFn], Any]


def _linear(draw: st.DrawFn) -> Any:
    from sklearn.linear_model import LogisticRegression, Ridge

    if draw(st.booleans()):
        return LogisticRegression(C=draw(st.floats(0.01, 10)), max_iter=300), "classify"
    return Ridge(alpha=draw(st.floats(0.01, 10))), "regress"


def _tree(draw: st.DrawFn) -> Any:
    from sklearn.tree import DecisionTreeClassifier

    return DecisionTreeClassifier(max_depth=draw(st.integers(1, 8)), random_state=0), "classify"


def _forest(draw: st.DrawFn) -> Any:
    from sklearn.ensemble import ExtraTreesRegressor, RandomForestClassifier

    n = draw(st.integers(1, 15))
    if draw(st.booleans()):
        return RandomForestClassifier(n_estimators=n, random_state=0), "classify"
    return ExtraTreesRegressor(n_estimators=n, random_state=0), "regress"


def _boosting(draw: st.DrawFn) -> Any:
    from sklearn.ensemble import GradientBoostingClassifier, HistGradientBoostingRegressor

    if draw(st.booleans()):
        return GradientBoostingClassifier(
            n_estimators=draw(st.integers(1, 15)), max_depth=draw(st.integers(1, 4)), random_state=0
        ), "classify"
    return HistGradientBoostingRegressor(
        max_iter=draw(st.integers(2, 20)), random_state=0
    ), "regress"


def _knn(draw: st.DrawFn) -> Any:
    from sklearn.neighbors import KNeighborsClassifier

    return KNeighborsClassifier(
        n_neighbors=draw(st.integers(1, 5)), weights=draw(st.sampled_from(["uniform", "distance"]))
    ), "classify"


def _svm(draw: st.DrawFn) -> Any:
    from sklearn.svm import SVC, SVR

    kernel = draw(st.sampled_from(["linear", "rbf", "poly"]))
    if draw(st.booleans()):
        return SVC(kernel=kernel, C=draw(st.floats(0.1, 10))), "classify"
    return SVR(kernel=kernel), "regress"


def _naive_bayes(draw: st.DrawFn) -> Any:
    from sklearn.naive_bayes import GaussianNB

    return GaussianNB(var_smoothing=draw(st.floats(1e-10, 1e-6))), "classify"


def _clustering(draw: st.DrawFn) -> Any:
    from sklearn.cluster import KMeans

    return KMeans(n_clusters=draw(st.integers(2, 4)), n_init=2, random_state=0), "cluster"


def _pipeline(draw: st.DrawFn) -> Any:
    from sklearn.decomposition import PCA
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import MinMaxScaler, StandardScaler

    scaler = draw(st.sampled_from([StandardScaler, MinMaxScaler]))()
    steps = [scaler]
    if draw(st.booleans()):
        steps.append(PCA(n_components=draw(st.integers(1, 3))))
    return make_pipeline(*steps, LogisticRegression(max_iter=300)), "classify"


FAMILIES: dict[str, Builder] = {
    "linear": _linear,
    "tree": _tree,
    "forest": _forest,
    "boosting": _boosting,
    "knn": _knn,
    "svm": _svm,
    "naive_bayes": _naive_bayes,
    "clustering": _clustering,
    "pipeline": _pipeline,
}


@st.composite
def fitted_models(draw: st.DrawFn, family: str) -> tuple[Any, np.ndarray]:
    model, task = FAMILIES[family](draw)
    seed = draw(st.integers(0, 2**32 - 1))
    rng = np.random.default_rng(seed)
    n_samples = draw(st.integers(30, 80))
    n_features = draw(st.integers(3, 6))
    X = rng.normal(size=(n_samples, n_features)) * draw(st.floats(0.1, 100))
    if task == "classify":
        y = (X[:, 0] + rng.normal(size=n_samples) > 0).astype(int)
        y[:2] = [0, 1]
    else:
        y = X @ rng.normal(size=n_features) + rng.normal(size=n_samples)
    model.fit(X, None if task == "cluster" else y)
    X_new = rng.normal(size=(20, n_features)) * X.std()
    return model, X_new


@pytest.mark.parametrize("family", sorted(FAMILIES))
@settings(max_examples=12, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data())
def test_every_backend_reloads_identical_predictions(family: str, data: st.DataObject) -> None:
    model, X_new = data.draw(fitted_models(family))
    expected = persistkit.predict(model, X_new)
    with tempfile.TemporaryDirectory() as tmp:
        for backend in PICKLE_FAMILY:
            art = persistkit.save(model, Path(tmp) / backend, backend=backend, example=X_new)
            reloaded = persistkit.load(art.path)
            actual = persistkit.predict(reloaded, X_new)
            assert arrays_identical(expected, actual), (family, backend)
            assert persistkit.verify(art.path).identical


@settings(max_examples=10, deadline=None)
@given(
    st.recursive(
        st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(),
        lambda children: (
            st.lists(children, max_size=4)
            | st.dictionaries(st.text(max_size=5), children, max_size=4)
        ),
        max_leaves=10,
    ).filter(lambda v: v is not None)
)
def test_plain_python_data_round_trips_through_every_pickle_backend(value: Any) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        for backend in PICKLE_FAMILY:
            art = persistkit.save(value, Path(tmp) / backend, backend=backend)
            assert persistkit.load(art.path) == value


def test_none_is_not_a_model(tmp_path: Path) -> None:
    with pytest.raises(CannotSaveError, match="None"):
        persistkit.save(None, tmp_path / "none", backend="pickle")
