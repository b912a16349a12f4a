"""The public API: save, load, predict, freeze, inspect, verify and how refs resolve."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

import persistkit
from persistkit.errors import (
    BackendNotFoundError,
    CannotSaveError,
    NotFittedError,
    RefError,
    VersionNotFoundError,
)
from sklearn_helpers import digits_model, double, tiny_forest


def test_save_then_load_gives_identical_predictions(tmp_path: Path) -> None:
    model, X, _ = digits_model()
    art = persistkit.save(model, tmp_path / "digits")
    again = persistkit.load(art.path)
    assert np.array_equal(again.predict(X), model.predict(X))


def test_sklearn_models_get_joblib_automatically(tmp_path: Path) -> None:
    model, _X = tiny_forest()
    art = persistkit.save(model, tmp_path / "m")
    assert art.backend == "joblib"
    assert any("chosen automatically" in note for note in art.manifest.notes)


def test_lambdas_get_cloudpickle_automatically(tmp_path: Path) -> None:
    art = persistkit.save(lambda x: x + 1, tmp_path / "f")
    assert art.backend == "cloudpickle"
    assert persistkit.predict(art.path, 41) == 42


def test_importable_functions_get_plain_pickle(tmp_path: Path) -> None:
    art = persistkit.save(double, tmp_path / "f")
    assert art.backend == "pickle"


def test_saving_a_lambda_with_pickle_suggests_cloudpickle(tmp_path: Path) -> None:
    with pytest.raises(CannotSaveError, match="cloudpickle"):
        persistkit.save(lambda x: x, tmp_path / "f", backend="pickle")
    assert list(tmp_path.iterdir()) == []  # no half-written artifact, no staging left


def test_unknown_backend_lists_available_ones(tmp_path: Path) -> None:
    model, _X = tiny_forest()
    with pytest.raises(BackendNotFoundError, match="joblib"):
        persistkit.save(model, tmp_path / "m", backend="parquet")


def test_unfitted_estimator_is_refused_with_a_hint() -> None:
    from sklearn.linear_model import LogisticRegression

    with pytest.raises(NotFittedError) as err:
        persistkit.save(LogisticRegression(), "unfitted")
    assert "fit" in (err.value.hint or "")


def test_unfitted_pipeline_is_refused() -> None:
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    with pytest.raises(NotFittedError):
        persistkit.freeze(make_pipeline(StandardScaler(), LogisticRegression()))


def test_bare_name_saves_into_the_store_with_increasing_versions() -> None:
    model, _X = tiny_forest()
    first = persistkit.save(model, "forest")
    second = persistkit.save(model, "forest")
    assert (first.name, first.version, second.version) == ("forest", 1, 2)
    assert first.uri == "forest:1"


def test_no_target_names_the_model_after_its_class() -> None:
    model, _X = tiny_forest()
    art = persistkit.save(model)
    assert art.name == "randomforestclassifier"


def test_store_comes_from_the_environment(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PERSISTKIT_STORE", str(tmp_path / "team-store"))
    model, _X = tiny_forest()
    art = persistkit.save(model, "forest")
    assert art.path.is_relative_to(tmp_path / "team-store")
    assert persistkit.load("forest").n_estimators == 5


def test_store_argument_overrides_the_default(tmp_path: Path) -> None:
    model, _X = tiny_forest()
    art = persistkit.save(model, "forest", store=str(tmp_path / "s"))
    assert art.path.is_relative_to(tmp_path / "s")
    with pytest.raises(VersionNotFoundError):
        persistkit.load("forest")  # not in the default store
    assert persistkit.load("forest:1", store=str(tmp_path / "s")) is not None


def test_relative_paths_are_locations_not_refs(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    model, _X = tiny_forest()
    persistkit.save(model, "./here")
    assert (tmp_path / "here" / "persistkit.json").is_file()


def test_saving_straight_to_a_url_is_refused_without_writing_locally(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    with pytest.raises(CannotSaveError, match="not supported"):
        persistkit.save(double, "memory://bucket/double")
    assert list(tmp_path.iterdir()) == []


def test_invalid_names_are_refused() -> None:
    with pytest.raises(RefError):
        persistkit.save(double, "Bad Name!")


def test_saving_over_an_existing_path_is_refused(tmp_path: Path) -> None:
    persistkit.save(double, tmp_path / "f")
    with pytest.raises(persistkit.errors.ArtifactError, match="never overwrites"):
        persistkit.save(double, tmp_path / "f")


def test_predict_loads_with_load_options_and_picks_a_method(tmp_path: Path) -> None:
    model, X, _ = digits_model()
    art = persistkit.save(model, tmp_path / "m")
    proba = persistkit.predict(art.path, X[:3], method="predict_proba", verify=False)
    assert proba.shape == (3, 10)
    assert np.array_equal(proba, model.predict_proba(X[:3]))


def test_predict_accepts_the_artifact_save_returned(tmp_path: Path) -> None:
    art = persistkit.save(double, tmp_path / "d")
    assert np.array_equal(persistkit.predict(art, [1, 2]), [2, 4])


def test_example_is_stored_with_its_predictions_and_signature(tmp_path: Path) -> None:
    model, X, _ = digits_model()
    art = persistkit.save(model, tmp_path / "m", example=X[:4])
    sig = art.manifest.signature
    assert sig is not None
    assert sig["inputs"] == [{"name": "input-0", "datatype": "FP64", "shape": [-1, 64]}]
    assert sig["outputs"][0]["datatype"] == "INT64"
    stored = np.load(art.path / "example" / "outputs.npy")
    assert np.array_equal(stored, model.predict(X[:4]))


def test_verify_proves_identical_predictions(tmp_path: Path) -> None:
    model, X, _ = digits_model()
    art = persistkit.save(model, tmp_path / "m", example=X[:4])
    report = persistkit.verify(art.path)
    assert report.example_checked and report.identical


def test_check_true_verifies_while_saving(tmp_path: Path) -> None:
    model, X, _ = digits_model()
    art = persistkit.save(model, tmp_path / "m", example=X[:4], check=True)
    assert art.path.is_dir()


def test_inspect_reads_the_manifest_without_loading(tmp_path: Path) -> None:
    model, _X, _ = digits_model()
    art = persistkit.save(
        model, tmp_path / "m", metadata={"accuracy": 0.97}, tags={"team": "vision"}
    )
    (art.path / "model.joblib").write_bytes(b"garbage that would not load")
    manifest = persistkit.inspect(art.path)
    assert manifest.metadata == {"accuracy": 0.97}
    assert manifest.tags == {"team": "vision"}
    assert manifest.model_class == "sklearn.linear_model._logistic.LogisticRegression"


def test_manifest_records_environment_and_libraries(tmp_path: Path) -> None:
    model, _X = tiny_forest()
    manifest = persistkit.save(model, tmp_path / "m").manifest
    libs = manifest.environment["libraries"]
    assert {"scikit-learn", "numpy", "scipy"} <= set(libs)
    assert manifest.environment["persistkit"] == persistkit.__version__
    assert manifest.family == "sklearn"


def test_backend_options_pass_through(tmp_path: Path) -> None:
    model, X = tiny_forest()
    plain = persistkit.save(model, tmp_path / "a", backend="joblib")
    packed = persistkit.save(model, tmp_path / "b", backend="joblib", compress=3)
    assert packed.manifest.backend_options == {"compress": 3}
    assert packed.manifest.total_size < plain.manifest.total_size
    assert np.array_equal(persistkit.load(packed.path).predict(X), model.predict(X))


def test_plain_data_round_trips_with_pickle(tmp_path: Path) -> None:
    data = {"weights": np.arange(5.0), "labels": ["a", "b"]}
    art = persistkit.save(data, tmp_path / "d", backend="pickle")
    again = persistkit.load(art.path)
    assert np.array_equal(again["weights"], data["weights"]) and again["labels"] == ["a", "b"]


def test_freeze_leaves_unknown_objects_alone() -> None:
    thing = object()
    assert persistkit.freeze(thing) is thing


def test_store_object_saves_and_loads_by_name(tmp_path: Path) -> None:
    store = persistkit.Store(str(tmp_path / "s"))
    model, X = tiny_forest()
    art = store.save(model, "forest", example=X[:2])
    assert art.version == 1
    assert np.array_equal(store.load("forest").predict(X), model.predict(X))


def test_a_pkl_written_by_joblib_loads_when_trusted(tmp_path: Path) -> None:
    import joblib

    model, X = tiny_forest()
    for compress in (0, 3):
        path = tmp_path / f"model-{compress}.pkl"
        joblib.dump(model, path, compress=compress)
        again = persistkit.load(path, trusted=True)
        assert np.array_equal(again.predict(X), model.predict(X))


def test_a_truncated_trusted_pickle_is_a_format_error(tmp_path: Path) -> None:
    import pickle

    path = tmp_path / "cut.pkl"
    path.write_bytes(pickle.dumps({"a": list(range(100))}, protocol=5)[:40])
    with pytest.raises(persistkit.errors.FormatError):
        persistkit.load(path, trusted=True)


def test_verifying_a_bare_file_says_there_is_nothing_recorded_to_verify(tmp_path: Path) -> None:
    import pickle

    path = tmp_path / "plain.pkl"
    path.write_bytes(pickle.dumps({"a": 1}))
    with pytest.raises(persistkit.errors.VerificationError, match="bare model file"):
        persistkit.verify(path)


def test_saving_over_an_existing_path_is_refused_before_serializing(tmp_path: Path) -> None:
    calls = []

    def model(x):  # type: ignore[no-untyped-def]
        return x

    class Watched(persistkit.Backend):
        info = persistkit.BackendInfo("watched", safe=True)

        def save(self, model: object, path: Path, options: dict) -> None:
            calls.append(path)
            path.write_text("x")

    from persistkit.manager import build_plugins, reset_plugins

    reset_plugins(build_plugins(Watched()))
    (tmp_path / "taken").mkdir()
    with pytest.raises(persistkit.errors.ArtifactError, match="never overwrites"):
        persistkit.save(model, tmp_path / "taken", backend="watched")
    assert calls == []
