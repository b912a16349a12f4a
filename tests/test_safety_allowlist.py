"""The default allow-list loads what scikit-learn really pickles, and nothing it should not."""

from __future__ import annotations

import io
import pickle
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import persistkit
from hostile.estimators import data, estimator_names, fitted, identical, outputs
from persistkit.errors import UntrustedArtifactError
from persistkit.safety import TrustPolicy
from persistkit.safety.allowlist import DEFAULT_ALLOWED_PAIRS

NEVER_ALLOWED = [
    ("builtins", "eval"),
    ("builtins", "exec"),
    ("builtins", "getattr"),
    ("builtins", "__import__"),
    ("builtins", "open"),
    ("builtins", "compile"),
    ("builtins", "bytearray"),
    ("operator", "attrgetter"),
    ("operator", "methodcaller"),
    ("operator", "itemgetter"),
    ("functools", "partial"),
    ("functools", "reduce"),
    ("importlib", "import_module"),
    ("pkgutil", "resolve_name"),
    ("pydoc", "locate"),
    ("runpy", "run_path"),
    ("os", "system"),
    ("posix", "system"),
    ("subprocess", "Popen"),
    ("numpy", "load"),
    ("numpy", "fromfile"),
    ("numpy", "memmap"),
    ("numpy.testing._private.utils", "runstring"),
    ("joblib.numpy_pickle", "NumpyArrayWrapper"),
]


@pytest.mark.parametrize("pair", NEVER_ALLOWED, ids=".".join)
def test_allow_list_has_no_code_running_callable(pair: tuple[str, str]) -> None:
    assert pair not in DEFAULT_ALLOWED_PAIRS


def test_allow_list_holds_exact_pairs_never_prefixes() -> None:
    for module, name in DEFAULT_ALLOWED_PAIRS:
        assert module and name and "*" not in module + name and not name.endswith(".")


def _roundtrip_plain(estimator: object, protocol: int) -> object:
    return TrustPolicy().unpickle(io.BytesIO(pickle.dumps(estimator, protocol=protocol)))


def _roundtrip_joblib(estimator: object, path: Path, compress: object = 0) -> object:
    import joblib

    joblib.dump(estimator, path, compress=compress)
    return TrustPolicy().load_joblib(path)


#: Estimators that left the default set in the capability review (docs/security.md, "How the
#: allow-list is reviewed"): a foreign pickle of one is refused, naming this global.
LEFT_DEFAULT_SET = {
    "BisectingKMeans": "sklearn.cluster._kmeans._kmeans_single_lloyd",
    "ClassifierChain": "sklearn.multioutput.ClassifierChain",
    "RegressorChain": "sklearn.multioutput.RegressorChain",
    "SelectFromModel": "sklearn.feature_selection._from_model.SelectFromModel",
    "StackingClassifier": "sklearn.ensemble._stacking.StackingClassifier",
    "StackingRegressor": "sklearn.ensemble._stacking.StackingRegressor",
    "FixedThresholdClassifier": (
        "sklearn.model_selection._classification_threshold.FixedThresholdClassifier"
    ),
    "TunedThresholdClassifierCV": (
        "sklearn.model_selection._classification_threshold.TunedThresholdClassifierCV"
    ),
}


def _deterministic(estimator: object, X: np.ndarray) -> bool:
    return identical(outputs(estimator, X), outputs(estimator, X))


@pytest.mark.parametrize("name", estimator_names())
def test_foreign_pickle_of_every_estimator_loads_with_identical_outputs(
    name: str, tmp_path: Path
) -> None:
    estimator = fitted(name)
    if estimator is None:
        pytest.skip(f"{name} cannot be fitted on plain random numeric data")
    if name in LEFT_DEFAULT_SET:
        # dispatches by a name from state, or keeps a memory-unsafe function: refused
        with pytest.raises(UntrustedArtifactError) as info:
            _roundtrip_plain(estimator, 5)
        assert LEFT_DEFAULT_SET[name] in info.value.globals_needed
        return
    X, _, _ = data(seed=1)
    expected = outputs(estimator, X)
    for loaded in (
        _roundtrip_plain(estimator, 5),
        _roundtrip_plain(estimator, 2),
        _roundtrip_joblib(estimator, tmp_path / "m.joblib"),
    ):
        assert type(loaded) is type(estimator)
        if _deterministic(estimator, X):
            assert identical(outputs(loaded, X), expected)


FAMILIES = [
    "RandomForestClassifier",
    "GradientBoostingClassifier",
    "HistGradientBoostingRegressor",
    "KMeans",
    "LogisticRegression",
    "ExtraTreesRegressor",
]


@settings(
    max_examples=12, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    name=st.sampled_from(FAMILIES),
    seed=st.integers(0, 2**16),
    n_classes=st.integers(2, 4),
    protocol=st.integers(0, 5),
    compress=st.sampled_from([0, 1, 3, ("gzip", 1), ("bz2", 1), ("xz", 1)]),
)
def test_random_fits_load_bitwise_identical_from_pickle_and_joblib(
    name: str, seed: int, n_classes: int, protocol: int, compress: object, tmp_path: Path
) -> None:
    estimator = fitted(name, seed=seed, n_classes=n_classes)
    assert estimator is not None
    X, _, _ = data(seed=seed + 1)
    expected = outputs(estimator, X)
    assert identical(outputs(_roundtrip_plain(estimator, protocol), X), expected)
    path = tmp_path / f"m-{seed}-{protocol}.joblib"
    assert identical(outputs(_roundtrip_joblib(estimator, path, compress), X), expected)


def test_pipeline_joblib_file_loads_through_persistkit_load(tmp_path: Path) -> None:
    import joblib
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    X, y, _ = data()
    model = make_pipeline(StandardScaler(), LogisticRegression()).fit(X, y)
    path = tmp_path / "foreign.joblib"
    joblib.dump(model, path, compress=3)
    loaded = persistkit.load(path)
    assert np.array_equal(loaded.predict_proba(X), model.predict_proba(X))


@pytest.mark.parametrize("compress", [0, 3, ("bz2", 1)])
def test_joblib_dump_named_pkl_loads_through_persistkit_load(
    compress: object, tmp_path: Path
) -> None:
    # joblib.dump(model, "model.pkl") is common; the .pkl suffix picks the pickle backend
    import joblib
    from sklearn.ensemble import RandomForestClassifier

    X, y, _ = data()
    model = RandomForestClassifier(n_estimators=3, random_state=0).fit(X, y)
    path = tmp_path / "model.pkl"
    joblib.dump(model, path, compress=compress)
    assert np.array_equal(persistkit.load(path).predict(X), model.predict(X))
