"""The skops backend: scikit-learn models without pickle, and bare ``.skops`` files loaded
through skops' audit with persistkit's policy deciding which types may be built."""

from __future__ import annotations

import io
import json
import math
import zipfile
from pathlib import Path
from typing import Any

import numpy as np
import pytest

import persistkit
from persistkit.errors import CannotSaveError, FormatError, UntrustedArtifactError
from persistkit.manager import build_plugins, reset_plugins
from persistkit.safety import TrustPolicy

pytest.importorskip("sklearn")
sio = pytest.importorskip("skops.io")

from sklearn.ensemble import HistGradientBoostingClassifier, RandomForestClassifier  # noqa: E402
from sklearn.linear_model import LogisticRegression  # noqa: E402
from sklearn.pipeline import make_pipeline  # noqa: E402
from sklearn.preprocessing import FunctionTransformer, StandardScaler  # noqa: E402
from sklearn.tree import DecisionTreeClassifier  # noqa: E402

import persistkit_skops  # noqa: E402


class Custom:
    """A class only this test module defines: no allow-list knows it."""

    def __init__(self) -> None:
        self.weight = 2


@pytest.fixture(autouse=True)
def skops_plugin() -> None:
    """The installed plugins, plus this one until its entry point is installed."""
    plugins = build_plugins()
    if "skops" not in plugins.backends:
        plugins = build_plugins(persistkit_skops.plugin)
    reset_plugins(plugins)


@pytest.fixture(scope="module")
def data() -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(0)
    X = rng.normal(size=(120, 5))
    return X, (X[:, 0] + X[:, 1] > 0).astype(int)


def _forest(data: tuple[np.ndarray, np.ndarray]) -> RandomForestClassifier:
    return RandomForestClassifier(n_estimators=4, max_depth=4, random_state=0).fit(*data)


ESTIMATORS = {
    "logistic": lambda: LogisticRegression(),
    "forest": lambda: RandomForestClassifier(n_estimators=4, max_depth=4, random_state=0),
    "hist-gradient-boosting": lambda: HistGradientBoostingClassifier(max_iter=5),
    "pipeline": lambda: make_pipeline(
        StandardScaler(), FunctionTransformer(np.tanh), DecisionTreeClassifier(max_depth=3)
    ),
}


@pytest.mark.parametrize("kind", sorted(ESTIMATORS))
def test_estimators_round_trip_with_identical_predictions(
    kind: str, data: tuple[np.ndarray, np.ndarray], tmp_path: Path
) -> None:
    X, y = data
    model = ESTIMATORS[kind]().fit(X, y)
    art = persistkit.save(model, tmp_path / "m", backend="skops")
    assert art.backend == "skops"
    assert (art.path / "model.skops").is_file()
    loaded = persistkit.load(art.path)
    assert type(loaded) is type(model)
    np.testing.assert_array_equal(loaded.predict(X), model.predict(X))
    np.testing.assert_array_equal(loaded.predict_proba(X), model.predict_proba(X))
    bare = persistkit.load(art.path / "model.skops")  # no seal: the default policy decides
    np.testing.assert_array_equal(bare.predict(X), model.predict(X))


def test_saving_something_other_than_a_sklearn_model_is_refused(tmp_path: Path) -> None:
    with pytest.raises(CannotSaveError, match="scikit-learn"):
        persistkit.save({"a": 1}, tmp_path / "d", backend="skops")


def test_a_bare_skops_file_of_allowed_types_loads_under_the_default_policy(
    data: tuple[np.ndarray, np.ndarray], tmp_path: Path
) -> None:
    model = _forest(data)
    path = tmp_path / "forest.skops"
    sio.dump(model, path)
    # skops alone would want sklearn.tree._tree.Tree trusted; persistkit checked its arguments
    assert sio.get_untrusted_types(file=path) == ["sklearn.tree._tree.Tree"]
    loaded = persistkit.load(path)
    np.testing.assert_array_equal(persistkit.predict(loaded, data[0]), model.predict(data[0]))
    assert persistkit.inspect(str(path)).backend == "skops"


def test_a_skops_zip_under_another_name_is_recognised_as_skops(
    data: tuple[np.ndarray, np.ndarray], tmp_path: Path
) -> None:
    path = tmp_path / "forest.bin"  # its first member is an .npy array, like an .npz
    sio.dump(_forest(data), path)
    assert persistkit.inspect(str(path)).backend == "skops"


def test_a_function_outside_the_allow_list_is_refused_naming_it(tmp_path: Path) -> None:
    path = tmp_path / "sqrt.skops"
    sio.dump(make_pipeline(FunctionTransformer(math.sqrt)), path)
    with pytest.raises(UntrustedArtifactError, match=r"math\.sqrt") as info:
        persistkit.load(path)
    assert info.value.globals_needed == ["math.sqrt"]
    assert "trusted=['math.sqrt']" in (info.value.hint or "")
    loaded = persistkit.load(path, trusted=["math.sqrt"])
    assert loaded.steps[0][1].func is math.sqrt


def test_a_custom_class_is_refused_and_loads_when_named(tmp_path: Path) -> None:
    name = f"{Custom.__module__}.Custom"
    path = tmp_path / "custom.skops"
    sio.dump({"part": Custom()}, path)
    with pytest.raises(UntrustedArtifactError) as info:
        persistkit.load(path)
    assert info.value.globals_needed == [name]
    assert persistkit.load(path, trusted=[name])["part"].weight == 2
    assert persistkit.load(path, trusted=True)["part"].weight == 2


def _rewrite_schema(source: bytes, change: Any) -> bytes:
    """``source`` (a skops file) with ``change(schema)`` applied to its schema.json."""
    out = io.BytesIO()
    with zipfile.ZipFile(io.BytesIO(source)) as old, zipfile.ZipFile(out, "w") as new:
        for info in old.infolist():
            raw = old.read(info)
            if info.filename == "schema.json":
                schema = json.loads(raw)
                change(schema)
                raw = json.dumps(schema).encode()
            new.writestr(info.filename, raw)
    return out.getvalue()


def _tree_nodes(node: Any) -> list[dict[str, Any]]:
    if isinstance(node, dict):
        found = [node] if node.get("__loader__") == "TreeNode" else []
        return found + [n for v in node.values() for n in _tree_nodes(v)]
    if isinstance(node, list):
        return [n for v in node for n in _tree_nodes(v)]
    return []


def test_a_tree_claiming_more_outputs_than_class_counts_is_refused(
    data: tuple[np.ndarray, np.ndarray], tmp_path: Path
) -> None:
    # Tree(n_features, n_classes, n_outputs) would read 50 counts from a 1-entry array
    def more_outputs(schema: dict[str, Any]) -> None:
        for tree in _tree_nodes(schema):
            tree["__reduce__"]["args"]["content"][2]["content"] = "50"

    path = tmp_path / "lying.skops"
    path.write_bytes(_rewrite_schema(sio.dumps(DecisionTreeClassifier().fit(*data)), more_outputs))
    with pytest.raises(UntrustedArtifactError) as info:
        persistkit.load(path)
    assert info.value.globals_needed == ["sklearn.tree._tree.Tree"]


def test_a_tree_argument_whose_id_is_described_two_ways_is_refused(
    data: tuple[np.ndarray, np.ndarray], tmp_path: Path
) -> None:
    # skops builds the first node of an __id__ for every later one: the checked description
    # must be the one that is built
    def shadowed(schema: dict[str, Any]) -> None:
        [tree] = _tree_nodes(schema)
        outputs = tree["__reduce__"]["args"]["content"][2]
        decoy = dict(outputs, content="50")
        schema["content"]["decoy"] = decoy
        schema["content"]["decoy"]["__id__"] = outputs["__id__"]

    path = tmp_path / "shadow.skops"
    path.write_bytes(_rewrite_schema(sio.dumps(DecisionTreeClassifier().fit(*data)), shadowed))
    with pytest.raises(UntrustedArtifactError, match="Tree"):
        persistkit.load(path)


@pytest.mark.parametrize("damage", ["truncated", "not a zip", "no schema", "bad json"])
def test_a_damaged_skops_file_is_a_format_error(
    damage: str, data: tuple[np.ndarray, np.ndarray], tmp_path: Path
) -> None:
    good = sio.dumps(LogisticRegression().fit(*data))
    if damage == "truncated":
        raw = good[: len(good) // 2]
    elif damage == "not a zip":
        raw = b"definitely not a zip file"
    else:
        out = io.BytesIO()
        with zipfile.ZipFile(out, "w") as archive:
            if damage == "bad json":
                archive.writestr("schema.json", b"{not json")
            else:
                archive.writestr("other.json", b"{}")
        raw = out.getvalue()
    path = tmp_path / "bad.skops"
    path.write_bytes(raw)
    with pytest.raises(FormatError, match=r"bad\.skops"):
        persistkit.load(path)


def test_a_file_unpacking_beyond_the_policys_limit_is_refused(
    data: tuple[np.ndarray, np.ndarray],
) -> None:
    raw = sio.dumps(LogisticRegression().fit(*data))
    small = TrustPolicy(max_decompressed_bytes=1000)
    with pytest.raises(FormatError, match="decompression bomb"):
        persistkit_skops.load_skops_bytes(raw, small, name="m.skops")


def test_scan_gives_the_loads_verdict(tmp_path: Path) -> None:
    from persistkit.cli.scan import scan_report

    path = tmp_path / "sqrt.skops"
    sio.dump(make_pipeline(FunctionTransformer(math.sqrt)), path)
    report = scan_report(str(path))
    assert not report["loads_by_default"]
    assert report["untrusted_globals"] == ["math.sqrt"]
    assert report["files"][0]["format"] == "skops"


def test_a_tree_whose_children_point_outside_its_nodes_is_refused(
    data: tuple[np.ndarray, np.ndarray], tmp_path: Path
) -> None:
    # skops builds it (its arguments are fine); predict would read out of bounds: the
    # checks persistkit runs after every untrusted load refuse it
    source = sio.dumps(DecisionTreeClassifier(max_depth=2).fit(*data))
    out = io.BytesIO()
    with zipfile.ZipFile(io.BytesIO(source)) as old, zipfile.ZipFile(out, "w") as new:
        for info in old.infolist():
            raw = old.read(info)
            if info.filename.endswith(".npy"):
                array = np.load(io.BytesIO(raw), allow_pickle=False)
                if array.dtype.names and "left_child" in array.dtype.names:
                    array["left_child"][0] = 10**6
                    buffer = io.BytesIO()
                    np.save(buffer, array, allow_pickle=False)
                    raw = buffer.getvalue()
            new.writestr(info.filename, raw)
    path = tmp_path / "wild.skops"
    path.write_bytes(out.getvalue())
    with pytest.raises(FormatError, match="wild.skops"):
        persistkit.load(path)
