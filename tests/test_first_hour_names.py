"""The first hour, items 1 and 5: a file name is a file, and mistakes do not look like
success. Each test does what the new user did: the Python API, the ``persistkit`` command
(click's CliRunner) and the server's model repository."""

from __future__ import annotations

import pickle
from pathlib import Path

import joblib
import numpy as np
import pytest
from click.testing import CliRunner, Result
from sklearn.linear_model import LogisticRegression

import persistkit
from persistkit.cli import main
from persistkit.errors import (
    AmbiguousSourceWarning,
    ArtifactNotFoundError,
    RefError,
    StoreError,
    VersionNotFoundError,
)
from persistkit.server.repository import ModelRepository
from persistkit.store import Store
from s3_server import S3Server, s3_env, s3_server  # noqa: F401  (fixtures)


def cli(*args: str) -> Result:
    return CliRunner().invoke(main, list(args))


@pytest.fixture
def their_model(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A fitted model someone else dumped with joblib, in the current folder, plus x.npy."""
    monkeypatch.chdir(tmp_path)
    rng = np.random.default_rng(0)
    model = LogisticRegression().fit(rng.random((20, 3)), [0, 1] * 10)
    joblib.dump(model, "their_model.joblib")
    np.save("x.npy", rng.random((2, 3)))
    return tmp_path / "their_model.joblib"


# -- item 1: an existing file or folder is a path ---------------------------------------------


def test_load_of_a_file_in_the_current_folder_loads_the_file(their_model: Path) -> None:
    model = persistkit.load("their_model.joblib")
    assert isinstance(model, LogisticRegression)
    assert persistkit.predict("their_model.joblib", np.zeros((1, 3))).shape == (1,)


def test_cli_predict_and_show_take_a_file_in_the_current_folder(their_model: Path) -> None:
    predicted = cli("predict", "their_model.joblib", "x.npy")
    assert predicted.exit_code == 0, predicted.output
    assert "x.npy[0]:" in predicted.output
    shown = cli("show", "their_model.joblib")
    assert shown.exit_code == 0, shown.output
    assert "backend:    joblib" in shown.output


def test_serve_takes_a_file_in_the_current_folder(their_model: Path) -> None:
    repository = ModelRepository(["their_model.joblib"])
    repository.load()
    [served] = repository.models()
    assert isinstance(served.model, LogisticRegression)


def test_serve_takes_a_file_whose_name_is_not_a_model_name(their_model: Path) -> None:
    their_model.rename(their_model.with_name("Their Model.joblib"))
    repository = ModelRepository(["Their Model.joblib"])
    repository.load()
    [served] = repository.models()
    assert isinstance(served.model, LogisticRegression)


def test_a_missing_file_with_a_model_suffix_is_a_missing_file(their_model: Path) -> None:
    with pytest.raises(ArtifactNotFoundError, match="no such file: ther_model.joblib"):
        persistkit.load("ther_model.joblib")
    result = cli("predict", "ther_model.pkl", "x.npy")
    assert result.exit_code == 1
    assert "error: no such file: ther_model.pkl" in result.output
    assert "no model named" not in result.output


def test_a_stored_model_named_like_a_file_still_loads_from_the_store(their_model: Path) -> None:
    with pytest.warns(AmbiguousSourceWarning, match=r"in the store at .*'\./weights\.pkl'"):
        persistkit.save({"w": [1]}, "weights.pkl", backend="pickle")
    assert not Path("weights.pkl").exists()  # it went to the store, and the warning said so
    assert persistkit.load("weights.pkl") == {"w": [1]}


def test_saving_to_a_file_like_path_writes_an_artifact_folder_here(their_model: Path) -> None:
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("error")
        persistkit.save({"w": [1]}, "./weights.pkl", backend="pickle")
    assert (Path("weights.pkl") / "persistkit.json").is_file()
    assert persistkit.load("weights.pkl") == {"w": [1]}


def test_a_file_that_is_also_a_store_name_wins_and_says_so(their_model: Path) -> None:
    with pytest.warns(AmbiguousSourceWarning):
        persistkit.save({"from": "store"}, "twin.pkl", backend="pickle")
    Path("twin.pkl").write_bytes(pickle.dumps({"from": "file"}))
    with pytest.warns(AmbiguousSourceWarning, match="using the file; write 'twin.pkl:latest'"):
        assert persistkit.load("twin.pkl") == {"from": "file"}
    assert persistkit.load("twin.pkl:latest") == {"from": "store"}
    result = cli("show", "twin.pkl")
    assert result.exit_code == 0
    assert "note: 'twin.pkl' is both a file here" in result.output


def test_a_folder_that_is_not_an_artifact_does_not_hide_a_stored_model(
    their_model: Path,
) -> None:
    persistkit.save({"w": [2]}, "project", backend="pickle")
    Path("project").mkdir()
    with pytest.warns(AmbiguousSourceWarning, match="not an artifact: using the model"):
        assert persistkit.load("project") == {"w": [2]}


def test_an_artifact_folder_in_the_current_folder_is_a_path(their_model: Path) -> None:
    persistkit.save({"w": [3]}, "./saved", backend="pickle")
    assert persistkit.load("saved") == {"w": [3]}


# -- item 5: a missing store, an unknown name, a typo of an alias -----------------------------


@pytest.fixture
def store(tmp_path: Path) -> Store:
    store = Store(tmp_path / "store")
    store.save({"w": [1]}, "digits", backend="pickle")
    store.alias("digits:1", "prod")
    return store


def test_ls_of_a_store_that_does_not_exist_is_an_error(tmp_path: Path) -> None:
    result = cli("ls", "--store", str(tmp_path / "typo"))
    assert result.exit_code == 1
    assert f"error: no store at {tmp_path / 'typo'}" in result.output
    assert "--store URL" in result.output


def test_ls_of_the_store_variable_naming_nothing_is_an_error(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("PERSISTKIT_STORE", str(tmp_path / "typo"))
    assert cli("ls").exit_code == 1


def test_ls_of_the_default_store_before_any_save_is_empty_not_an_error() -> None:
    result = cli("ls")
    assert result.exit_code == 0
    assert "no models in" in result.output


def test_a_memory_store_exists_once_something_is_saved() -> None:
    store = Store("memory://first-hour-fresh")
    assert not store.exists()
    store.save({"w": [1]}, "m", backend="pickle")
    assert store.exists()


def test_a_missing_bucket_is_no_store(request: pytest.FixtureRequest) -> None:
    server: S3Server = request.getfixturevalue("s3_env")
    assert Store(server.fresh_url()).exists()  # an empty prefix of a bucket: an empty store
    result = cli("ls", "--store", "s3://no-such-bucket-first-hour/p")
    assert result.exit_code == 1
    assert "no store at s3://no-such-bucket-first-hour/p (the bucket does not exist)" in (
        result.output
    )


def test_loading_from_a_store_that_does_not_exist_says_so(tmp_path: Path) -> None:
    with pytest.raises(VersionNotFoundError, match="no model named 'digits': no store at"):
        persistkit.load("digits", store=str(tmp_path / "typo"))


def test_ls_of_an_unknown_name_is_an_error_with_a_did_you_mean(store: Store) -> None:
    result = cli("ls", "digit", "--store", store.url)
    assert result.exit_code == 1
    assert "no model named 'digit'" in result.output
    assert "did you mean 'digits'?" in result.output
    unrelated = cli("ls", "nosuchname", "--store", store.url)
    assert unrelated.exit_code == 1
    assert "did you mean" not in unrelated.output


def test_an_alias_typo_is_refused_with_a_suggestion(store: Store) -> None:
    result = cli("alias", "digits:1", "prdo", "--store", store.url)
    assert result.exit_code == 1
    assert "did you mean 'prod'?" in result.output and "--new" in result.output
    assert store.aliases("digits") == {"prod": 1}
    with pytest.raises(RefError, match="did you mean 'prod'"):
        store.alias("digits:1", "prdo")
    created = cli("alias", "digits:1", "prdo", "--new", "--store", store.url)
    assert created.exit_code == 0, created.output
    assert store.aliases("digits") == {"prdo": 1, "prod": 1}


def test_deliberately_numbered_aliases_are_not_typos(store: Store) -> None:
    store.alias("digits:1", "v1")
    store.alias("digits:1", "v2")
    store.alias("digits:1", "preprod")
    assert set(store.aliases("digits")) == {"preprod", "prod", "v1", "v2"}


def test_resolving_an_alias_typo_suggests_the_alias(store: Store) -> None:
    with pytest.raises(VersionNotFoundError, match="no alias 'prdo'; did you mean 'prod'?"):
        store.load("digits@prdo")
    result = cli("show", "digits@prdo", "--store", store.url)
    assert result.exit_code == 1
    assert "did you mean 'prod'?" in result.output


def test_a_store_error_is_a_store_error(tmp_path: Path) -> None:
    assert isinstance(Store(tmp_path / "nowhere").missing(), StoreError)
