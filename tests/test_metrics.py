"""Metrics, parameters and who saved it: recorded at save, sealed, shown, checked."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

import persistkit
from persistkit.cli import main
from persistkit.errors import ManifestError, RecordError, SealBrokenError
from persistkit.manifest import Manifest
from persistkit.safety import seal_state


def save_into(store: persistkit.Store, **record: object) -> persistkit.Artifact:
    return store.save({"w": 1}, "m", backend="pickle", lineage=False, **record)  # type: ignore[arg-type]


@pytest.fixture
def store(tmp_path: Path) -> persistkit.Store:
    return persistkit.Store(tmp_path / "store")


def test_metrics_and_params_are_recorded_and_read_back(store: persistkit.Store) -> None:
    save_into(store, metrics={"accuracy": 0.97, "loss": 0.1}, params={"C": 1.0, "kernel": "rbf"})

    manifest = store.manifest("m")

    assert manifest.metrics == {"accuracy": 0.97, "loss": 0.1}
    assert manifest.params == {"C": 1.0, "kernel": "rbf"}
    assert persistkit.inspect("m", store=store).metrics == manifest.metrics


def test_numpy_and_torch_numbers_are_recorded_as_plain_numbers(store: persistkit.Store) -> None:
    torch = pytest.importorskip("torch")
    save_into(
        store,
        metrics={"a": np.float32(0.9), "b": torch.tensor(0.85), "n": np.int64(3)},
        params={"seed": np.int32(7), "lr": np.float64(0.01), "flag": np.bool_(True)},
    )

    manifest = store.manifest("m")

    # a float32 0.9 is recorded as 0.9 (not 0.8999999761581421), so >=0.9 finds it
    assert manifest.metrics == {"a": 0.9, "b": 0.85, "n": 3.0}
    assert manifest.params == {"seed": 7, "lr": 0.01, "flag": True}
    assert type(manifest.params["flag"]) is bool


def test_the_os_user_who_saved_is_recorded(
    store: persistkit.Store, monkeypatch: pytest.MonkeyPatch
) -> None:
    for variable in ("LOGNAME", "USER", "LNAME", "USERNAME"):
        monkeypatch.setenv(variable, "alice")

    save_into(store)

    assert store.manifest("m").saved_by == "alice"


def test_metrics_are_sealed_so_editing_one_breaks_the_seal(tmp_path: Path) -> None:
    art = persistkit.save({"w": 1}, tmp_path / "art", backend="pickle", metrics={"acc": 0.5})
    path = art.path / "persistkit.json"
    data = json.loads(path.read_text())
    data["metrics"]["acc"] = 0.99
    path.write_text(json.dumps(data))

    assert seal_state(persistkit.inspect(art.path)) == "modified"
    with pytest.raises(SealBrokenError):
        persistkit.load(art.path)


def test_a_manifest_without_a_record_writes_none_of_its_fields() -> None:
    # old manifests (and their seals and digests) stay byte for byte what they were
    manifest = Manifest(backend="pickle", files=[])

    assert not {"metrics", "params", "lineage", "saved_by"} & set(manifest.to_dict())
    assert Manifest.from_json(manifest.to_json()).metrics == {}


@pytest.mark.parametrize(
    ("metrics", "named"),
    [
        ({"acc": True}, "'acc'"),
        ({"acc": float("nan")}, "'acc'"),
        ({"acc": float("inf")}, "'acc'"),
        ({"acc": "0.9"}, "'acc'"),
        ({"acc": np.zeros(3)}, "'acc'"),
        ({"val acc": 0.9}, "'val acc'"),
        ({"": 0.9}, "empty"),
        ({"a/b": 0.9}, "'a/b'"),
        ([("acc", 0.9)], "mapping"),
    ],
)
def test_a_metric_that_is_not_a_finite_number_under_a_name_is_refused(
    store: persistkit.Store, metrics: object, named: str
) -> None:
    with pytest.raises(RecordError, match=named):
        save_into(store, metrics=metrics)
    assert store.list() == []  # refused before anything was written


@pytest.mark.parametrize(
    ("params", "named"),
    [
        ({"layers": [64, 32]}, "'layers'"),
        ({"opts": {"a": 1}}, "'opts'"),
        ({"lr": float("nan")}, "'lr'"),
        ({"note": "x" * 2000}, "'note'"),
        ({"1st": 1}, "'1st'"),
    ],
)
def test_a_parameter_that_is_not_a_json_scalar_is_refused(
    store: persistkit.Store, params: object, named: str
) -> None:
    with pytest.raises(RecordError, match=named) as caught:
        save_into(store, params=params)
    assert caught.value.hint  # says what to do


def test_params_accept_text_numbers_booleans_and_none(store: persistkit.Store) -> None:
    params = {"kernel": "rbf", "C": 1, "tol": 1e-4, "fit_intercept": False, "seed": None}

    save_into(store, params=params)

    assert store.manifest("m").params == params


@pytest.mark.parametrize(
    ("field", "value"),
    [("metrics", {"acc": "high"}), ("metrics", {"acc": float("nan")}), ("params", {"a": [1]})],
)
def test_a_manifest_with_a_bad_record_is_refused_when_read(field: str, value: object) -> None:
    text = json.dumps({"format": "persistkit/1", "backend": {"name": "pickle"}, "files": []})
    data = {**json.loads(text), field: value}

    with pytest.raises(ManifestError, match=field.rstrip("s")):
        Manifest.from_json(json.dumps(data))


def test_show_lists_who_saved_it_its_metrics_params_and_lineage(
    store: persistkit.Store, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("LOGNAME", "alice")
    store.save(
        {"w": 1},
        "m",
        backend="pickle",
        metrics={"accuracy": 0.97},
        params={"C": 1.0},
        lineage={"data": "sha256:" + "ab" * 32, "git": {"commit": "4be1" * 10, "dirty": False}},
    )

    result = CliRunner().invoke(main, ["show", "m", "--store", store.url])

    assert result.exit_code == 0, result.output
    assert "saved by:   alice" in result.output
    assert "metrics:    accuracy=0.97" in result.output
    assert "params:     C=1.0" in result.output
    assert "lineage:    data: sha256:abab" in result.output
    assert f"lineage:    git: commit {'4be1' * 10}, dirty False" in result.output
    as_json = CliRunner().invoke(main, ["show", "m", "--store", store.url, "--json"])
    shown = json.loads(as_json.output)
    assert shown["metrics"] == {"accuracy": 0.97} and shown["saved_by"] == "alice"


def test_convert_carries_the_training_record_not_the_converters_commit(
    tmp_path: Path,
) -> None:
    from sklearn_helpers import digits_model

    store = persistkit.Store(tmp_path / "store")
    model, X, _ = digits_model()
    lineage = {"data": "sha256:" + "cd" * 32}
    store.save(model, "digits", example=X[:5], metrics={"acc": 0.9}, params={"C": 1.0},
               lineage=lineage)  # fmt: skip

    converted = persistkit.convert("digits", "pickle", store=store)

    assert converted.manifest.metrics == {"acc": 0.9}
    assert converted.manifest.params == {"C": 1.0}
    assert converted.manifest.lineage == store.manifest("digits:1").lineage
