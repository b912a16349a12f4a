"""The ``onnx`` backend: torch modules and scikit-learn models converted to ONNX and run with
onnxruntime, within the stated tolerance (labels identical); foreign ``.onnx`` files load as
data; damaged files, weights kept in other files and custom operators are refused; a load
imports neither torch nor scikit-learn."""

from __future__ import annotations

import contextlib
import json
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

pytest.importorskip("onnxruntime")
pytest.importorskip("skl2onnx")
torch = pytest.importorskip("torch")

import onnx  # noqa: E402
import onnxruntime  # noqa: E402
from onnx import TensorProto, helper  # noqa: E402
from sklearn.base import BaseEstimator, ClassifierMixin  # noqa: E402
from sklearn.datasets import load_diabetes, load_digits, load_iris  # noqa: E402
from sklearn.ensemble import RandomForestClassifier, RandomForestRegressor  # noqa: E402
from sklearn.linear_model import LogisticRegression, Ridge  # noqa: E402
from sklearn.model_selection import train_test_split  # noqa: E402
from sklearn.pipeline import make_pipeline  # noqa: E402
from sklearn.preprocessing import StandardScaler  # noqa: E402
from torch import Tensor, nn  # noqa: E402

import persistkit  # noqa: E402
import persistkit_onnx  # noqa: E402
from persistkit.errors import (  # noqa: E402
    CannotSaveError,
    FormatError,
    InputError,
    PersistkitWarning,
)
from persistkit_onnx import TOLERANCE, OnnxModel, checks  # noqa: E402

RTOL, ATOL = TOLERANCE


def assert_within_tolerance(actual: Any, expected: Any) -> None:
    actual, expected = np.asarray(actual), np.asarray(expected)
    assert actual.shape == expected.shape
    np.testing.assert_allclose(actual, expected, rtol=RTOL, atol=ATOL)


class CNN(nn.Module):
    """Two convolutions on 28x28 pictures, BatchNorm, pooling and Dropout."""

    def __init__(self) -> None:
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(1, 8, 3, padding=1),
            nn.BatchNorm2d(8),
            nn.ReLU(),
            nn.MaxPool2d(2),
            nn.Conv2d(8, 16, 3, padding=1),
            nn.ReLU(),
            nn.AvgPool2d(2),
        )
        self.head = nn.Sequential(nn.Dropout(0.3), nn.Linear(16 * 7 * 7, 10))

    def forward(self, x: Tensor) -> Tensor:
        return self.head(self.features(x).flatten(1))


def trained_cnn() -> CNN:
    torch.manual_seed(0)
    model = CNN()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.05)
    for _ in range(3):  # moves weights and BatchNorm statistics away from their init
        x, y = torch.randn(16, 1, 28, 28), torch.randint(0, 10, (16,))
        optimizer.zero_grad()
        nn.functional.cross_entropy(model(x), y).backward()
        optimizer.step()
    return model.eval()


@pytest.fixture(scope="module")
def cnn_artifact(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[CNN, Path]]:
    """One CNN saved once for the tests that read it (the exporter takes seconds)."""
    home = tmp_path_factory.mktemp("cnn_home")
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("PERSISTKIT_HOME", str(home))
        model = trained_cnn()
        example = np.random.default_rng(0).standard_normal((4, 1, 28, 28)).astype(np.float32)
        art = persistkit.save(model, home / "cnn", backend="onnx", example=example)
        yield model, art.path


def cnn_inputs(n: int, seed: int = 1) -> np.ndarray:
    return np.random.default_rng(seed).standard_normal((n, 1, 28, 28)).astype(np.float32)


def manifest_options(path: Path) -> dict[str, Any]:
    options: dict[str, Any] = json.loads((path / "persistkit.json").read_text())["backend"][
        "options"
    ]
    return options


# -- torch --------------------------------------------------------------------------------------


@pytest.mark.parametrize("batch", [1, 4, 33])
def test_torch_cnn_reloads_within_tolerance_at_any_batch_size(
    cnn_artifact: tuple[CNN, Path], batch: int
) -> None:
    model, path = cnn_artifact
    loaded = persistkit.load(path)
    assert isinstance(loaded, OnnxModel)
    x = cnn_inputs(batch)
    assert_within_tolerance(persistkit.predict(loaded, x), persistkit.predict(model, x))


def test_torch_cnn_manifest_records_converter_opsets_versions_and_outputs(
    cnn_artifact: tuple[CNN, Path],
) -> None:
    options = manifest_options(cnn_artifact[1])
    assert options["converter"] == {
        "name": "torch.onnx.export(dynamo=True)",
        "version": torch.__version__,
    }
    assert options["opsets"]["ai.onnx"] >= 18
    assert options["libraries"]["onnx"] == onnx.__version__
    assert options["libraries"]["onnxruntime"] == onnxruntime.__version__
    assert options["inputs"] == [
        {"name": "input", "type": "tensor(float)", "shape": ["batch", 1, 28, 28]}
    ]
    assert list(options["roles"]) == ["predict"]
    assert options["roles"]["predict"]["dtype"] == "<f4"


def test_torch_artifact_verifies_bitwise(cnn_artifact: tuple[CNN, Path]) -> None:
    report = persistkit.verify(cnn_artifact[1])
    assert report.example_checked


def test_wrong_input_shape_names_the_shape_expected(cnn_artifact: tuple[CNN, Path]) -> None:
    loaded = persistkit.load(cnn_artifact[1])
    with pytest.raises(InputError, match=r"\(batch, 1, 28, 28\)") as err:
        persistkit.predict(loaded, np.zeros((2, 1, 14, 14), np.float32))
    assert "(2, 1, 14, 14)" in str(err.value)


def test_float64_and_list_inputs_are_cast_to_the_graph_input_dtype(
    cnn_artifact: tuple[CNN, Path],
) -> None:
    model, path = cnn_artifact
    x = cnn_inputs(2)
    loaded = persistkit.load(path)
    assert_within_tolerance(
        persistkit.predict(loaded, x.astype(np.float64).tolist()), persistkit.predict(model, x)
    )


def test_unknown_method_lists_the_methods_the_graph_answers(
    cnn_artifact: tuple[CNN, Path],
) -> None:
    loaded = persistkit.load(cnn_artifact[1])
    with pytest.raises(InputError, match="no method 'predict_proba'") as err:
        persistkit.predict(loaded, cnn_inputs(1), method="predict_proba")
    assert "predict" in (err.value.hint or "")


def test_unavailable_provider_is_named_with_those_available(
    cnn_artifact: tuple[CNN, Path],
) -> None:
    with pytest.raises(InputError, match="NoSuchExecutionProvider") as err:
        persistkit.load(cnn_artifact[1], providers=["NoSuchExecutionProvider"])
    assert "CPUExecutionProvider" in (err.value.hint or "")


def test_dynamic_option_makes_more_axes_free(tmp_path: Path) -> None:
    torch.manual_seed(0)
    model = nn.Sequential(
        nn.Conv1d(3, 5, 3, padding=1), nn.ReLU(), nn.AdaptiveAvgPool1d(1), nn.Flatten()
    ).eval()
    example = np.random.default_rng(0).standard_normal((2, 3, 12)).astype(np.float32)
    art = persistkit.save(
        model, tmp_path / "seq", backend="onnx", example=example, dynamic={2: "seq"}
    )
    assert manifest_options(art.path)["inputs"][0]["shape"] == ["batch", 3, "seq"]
    longer = np.random.default_rng(1).standard_normal((3, 3, 40)).astype(np.float32)
    assert_within_tolerance(persistkit.predict(art.path, longer), persistkit.predict(model, longer))


def test_bad_dynamic_option_is_refused_before_exporting(tmp_path: Path) -> None:
    model = nn.Linear(3, 2)
    with pytest.raises(CannotSaveError, match="axis") as err:
        persistkit.save(
            model,
            tmp_path / "m",
            backend="onnx",
            example=np.zeros((2, 3), np.float32),
            dynamic={5: "seq"},
        )
    assert "dynamic=" in (err.value.hint or "")


def test_module_the_exporter_cannot_trace_is_cannot_save_with_other_backends(
    tmp_path: Path,
) -> None:
    class DataDependent(nn.Module):
        def forward(self, x: Tensor) -> Tensor:
            if x.sum() > 0:  # Python control flow on the values: nothing to trace
                return x * 2
            return x

    with pytest.raises(CannotSaveError, match="cannot convert this DataDependent") as err:
        persistkit.save(
            DataDependent(), tmp_path / "m", backend="onnx", example=np.ones((2, 3), np.float32)
        )
    assert "data-dependent" in str(err.value)
    assert 'backend="safetensors"' in (err.value.hint or "")
    assert not (tmp_path / "m").exists()


# -- scikit-learn -------------------------------------------------------------------------------


def digits_split() -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    X, y = load_digits(return_X_y=True)
    parts = train_test_split(X, y, test_size=0.3, random_state=0)
    return parts[0], parts[1], parts[2], parts[3]


def test_pipeline_labels_identical_and_probabilities_within_tolerance(tmp_path: Path) -> None:
    X_train, X_test, y_train, _ = digits_split()
    model = make_pipeline(StandardScaler(), LogisticRegression(max_iter=300)).fit(X_train, y_train)
    art = persistkit.save(model, tmp_path / "pipe", backend="onnx", example=X_test[:8])
    loaded = persistkit.load(art.path)
    labels = persistkit.predict(loaded, X_test)
    assert labels.dtype == model.predict(X_test).dtype
    np.testing.assert_array_equal(labels, model.predict(X_test))
    assert_within_tolerance(
        persistkit.predict(loaded, X_test, method="predict_proba"), model.predict_proba(X_test)
    )
    options = manifest_options(art.path)
    assert options["input_type"] == "float64"
    assert options["converter"]["name"] == "skl2onnx"
    assert options["roles"]["predict"]["output"] == "label"
    assert options["roles"]["predict_proba"]["output"] == "probabilities"
    assert "ai.onnx.ml" in options["opsets"]


def test_random_forest_labels_identical_on_the_test_data(tmp_path: Path) -> None:
    X_train, X_test, y_train, _ = digits_split()
    model = RandomForestClassifier(n_estimators=30, random_state=0).fit(X_train, y_train)
    art = persistkit.save(model, tmp_path / "rf", backend="onnx", example=X_test[:8])
    loaded = persistkit.load(art.path)
    np.testing.assert_array_equal(persistkit.predict(loaded, X_test), model.predict(X_test))
    assert_within_tolerance(
        persistkit.predict(loaded, X_test, method="predict_proba"), model.predict_proba(X_test)
    )


def test_string_class_labels_come_back_as_the_same_strings(tmp_path: Path) -> None:
    X, y = load_iris(return_X_y=True)
    names = np.array(["setosa", "versicolor", "virginica"])[y]
    model = LogisticRegression(max_iter=500).fit(X, names)
    art = persistkit.save(model, tmp_path / "iris", backend="onnx", example=X[:5])
    got = persistkit.predict(art.path, X)
    assert got.dtype == model.predict(X).dtype
    np.testing.assert_array_equal(got, model.predict(X))


@pytest.mark.parametrize(
    "regressor",
    [Ridge(), RandomForestRegressor(n_estimators=20, random_state=0)],
    ids=["ridge", "forest"],
)
def test_regressor_answers_in_sklearn_shape_within_tolerance(
    tmp_path: Path, regressor: Any
) -> None:
    X, y = load_diabetes(return_X_y=True)
    model = regressor.fit(X[:300], y[:300])
    art = persistkit.save(model, tmp_path / "reg", backend="onnx", example=X[300:310])
    got = persistkit.predict(art.path, X[300:])
    assert got.shape == (len(X) - 300,) and got.dtype == np.float64
    assert_within_tolerance(got, model.predict(X[300:]))


def test_scaled_forest_scales_in_float64_and_splits_in_float32_like_sklearn(
    tmp_path: Path,
) -> None:
    # found by test_onnx_properties: scaling in float32 moved a sample across a split; the
    # graph now scales in float64 and casts before the trees, as scikit-learn does
    X, y = load_digits(return_X_y=True)
    model = make_pipeline(StandardScaler(), RandomForestRegressor(10, random_state=0))
    model.fit(X[:1000], y[:1000] * 1.5)
    art = persistkit.save(model, tmp_path / "reg", backend="onnx", example=X[:5])
    options = manifest_options(art.path)
    assert options["input_type"] == "float64"
    assert options["float32_from"] == "RandomForestRegressor"
    assert_within_tolerance(persistkit.predict(art.path, X[1000:]), model.predict(X[1000:]))


def test_float32_before_trees_warns_that_splits_can_change(tmp_path: Path) -> None:
    X, y = load_digits(return_X_y=True)
    model = make_pipeline(StandardScaler(), RandomForestRegressor(3, random_state=0))
    model.fit(X[:500], y[:500])
    with pytest.warns(PersistkitWarning, match="before RandomForestRegressor compute in float32"):
        persistkit.save(model, tmp_path / "m", backend="onnx", example=X[:5], dtype="float32")


def test_float32_can_be_asked_for(tmp_path: Path) -> None:
    X, y = load_iris(return_X_y=True)
    model = LogisticRegression(max_iter=500).fit(X, y)
    art = persistkit.save(model, tmp_path / "f32", backend="onnx", example=X[:5], dtype="float32")
    options = manifest_options(art.path)
    assert options["input_type"] == "float32"
    assert options["inputs"][0]["type"] == "tensor(float)"


class HandMade(ClassifierMixin, BaseEstimator):
    """An estimator skl2onnx has no converter for."""

    def fit(self, X: Any, y: Any) -> HandMade:
        self.classes_ = np.unique(y)
        return self

    def predict(self, X: Any) -> Any:
        return np.full(len(X), self.classes_[0])


def test_estimator_skl2onnx_cannot_convert_is_named_with_a_joblib_hint(tmp_path: Path) -> None:
    X, y = load_iris(return_X_y=True)
    model = make_pipeline(StandardScaler(), HandMade()).fit(X, y)
    with pytest.raises(CannotSaveError, match="HandMade") as err:
        persistkit.save(model, tmp_path / "m", backend="onnx", example=X[:5])
    assert 'backend="joblib"' in (err.value.hint or "")
    assert not (tmp_path / "m").exists()


def test_model_of_another_family_is_cannot_save(tmp_path: Path) -> None:
    with pytest.raises(CannotSaveError, match="torch modules and scikit-learn"):
        persistkit.save({"a": 1}, tmp_path / "m", backend="onnx", example=np.zeros((1, 2)))


# -- foreign files ------------------------------------------------------------------------------


def foreign_onnx(path: Path) -> Path:
    """A bare ``.onnx`` file another tool wrote: y = 2 * x + 1 on (N, 3) floats."""
    graph = helper.make_graph(
        [
            helper.make_node("Mul", ["x", "two"], ["doubled"]),
            helper.make_node("Add", ["doubled", "one"], ["y"]),
        ],
        "affine",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 3])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 3])],
        initializer=[
            helper.make_tensor("two", TensorProto.FLOAT, [1], [2.0]),
            helper.make_tensor("one", TensorProto.FLOAT, [1], [1.0]),
        ],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)])
    model.ir_version = 9
    path.write_bytes(model.SerializeToString())
    return path


def test_foreign_onnx_file_loads_as_data_under_the_default_policy(tmp_path: Path) -> None:
    path = foreign_onnx(tmp_path / "affine.onnx")
    loaded = persistkit.load(path)
    assert isinstance(loaded, OnnxModel)
    x = np.arange(6, dtype=np.float32).reshape(2, 3)
    np.testing.assert_array_equal(persistkit.predict(loaded, x), 2 * x + 1)


def test_foreign_sklearn_onnx_file_offers_predict_proba(tmp_path: Path) -> None:
    import skl2onnx
    from skl2onnx.common.data_types import FloatTensorType

    X, y = load_iris(return_X_y=True)
    model = LogisticRegression(max_iter=500).fit(X, y)
    proto = skl2onnx.convert_sklearn(
        model, initial_types=[("X", FloatTensorType([None, 4]))], options={"zipmap": False}
    )
    path = tmp_path / "iris.onnx"
    path.write_bytes(proto.SerializeToString())
    loaded = persistkit.load(path)
    np.testing.assert_array_equal(persistkit.predict(loaded, X), model.predict(X))
    assert persistkit.predict(loaded, X, method="predict_proba").shape == (len(X), 3)


@pytest.mark.parametrize("keep", [0.0, 0.1, 0.5, 0.9, 0.99])
def test_truncated_file_is_a_format_error(tmp_path: Path, keep: float) -> None:
    data = foreign_onnx(tmp_path / "whole.onnx").read_bytes()
    cut = tmp_path / "cut.onnx"
    cut.write_bytes(data[: int(len(data) * keep)])
    with pytest.raises(FormatError):
        persistkit.load(cut)


@pytest.mark.parametrize(
    "content", [b"\xff" * 64, b"not an onnx model at all", b"PK\x03\x04garbage"]
)
def test_corrupted_file_is_a_format_error(tmp_path: Path, content: bytes) -> None:
    path = tmp_path / "bad.onnx"
    path.write_bytes(content)
    with pytest.raises(FormatError, match="bad.onnx"):
        persistkit.load(path)


def test_flipped_bytes_in_a_converted_model_are_a_format_error_or_load(tmp_path: Path) -> None:
    # a damaged payload either fails to parse/load (FormatError) or is a different, valid
    # graph; it never escapes as an onnxruntime or protobuf exception
    data = bytearray(foreign_onnx(tmp_path / "whole.onnx").read_bytes())
    rng = np.random.default_rng(0)
    for i in range(20):
        damaged = bytearray(data)
        for at in rng.integers(0, len(data), 3):
            damaged[at] ^= 0xFF
        path = tmp_path / f"flipped{i}.onnx"
        path.write_bytes(bytes(damaged))
        with contextlib.suppress(FormatError):
            persistkit.load(path)


def test_weights_in_another_file_are_refused_naming_the_location(tmp_path: Path) -> None:
    secret = tmp_path / "secret.bin"
    secret.write_bytes(b"\x00" * 12)
    model = onnx.load_from_string(foreign_onnx(tmp_path / "whole.onnx").read_bytes())
    tensor = model.graph.initializer[0]
    tensor.ClearField("float_data")
    tensor.data_location = TensorProto.EXTERNAL
    entry = tensor.external_data.add()
    entry.key, entry.value = "location", "../secret.bin"
    path = tmp_path / "models" / "external.onnx"
    path.parent.mkdir()
    path.write_bytes(model.SerializeToString())
    with pytest.raises(FormatError, match=r"'\.\./secret\.bin'") as err:
        persistkit.load(path)
    assert "save_as_external_data=False" in (err.value.hint or "")


def custom_op_model() -> bytes:
    graph = helper.make_graph(
        [helper.make_node("Exfiltrate", ["x"], ["y"], domain="com.example.native")],
        "custom",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N"])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N"])],
    )
    model = helper.make_model(
        graph,
        opset_imports=[helper.make_opsetid("", 18), helper.make_opsetid("com.example.native", 1)],
    )
    model.ir_version = 9
    return bytes(model.SerializeToString())


def test_custom_operator_domain_is_refused_by_name(tmp_path: Path) -> None:
    path = tmp_path / "custom.onnx"
    path.write_bytes(custom_op_model())
    with pytest.raises(FormatError, match="com.example.native, which onnxruntime runs only"):
        persistkit.load(path)


def test_onnxruntime_itself_cannot_run_an_unregistered_custom_domain() -> None:
    # the refusal above gives a clear message; it does not stand between the user and a
    # model onnxruntime could have run without registering a native library
    with pytest.raises(Exception, match="(?i)com.example.native|Exfiltrate"):
        onnxruntime.InferenceSession(custom_op_model(), providers=["CPUExecutionProvider"])


def test_file_larger_than_the_bound_is_refused_before_reading(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = foreign_onnx(tmp_path / "affine.onnx")
    monkeypatch.setattr(checks, "MAX_ONNX_BYTES", 16)
    with pytest.raises(FormatError, match="more than a self-contained ONNX model"):
        persistkit.load(path)


# -- what a load imports ------------------------------------------------------------------------


def modules_after(code: str) -> set[str]:
    probe = textwrap.dedent(code) + "\nimport sys\nprint(' '.join(sys.modules))"
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    return {name.split(".")[0] for name in out.stdout.split()}


def test_loading_and_predicting_imports_neither_torch_nor_sklearn(
    cnn_artifact: tuple[CNN, Path], tmp_path: Path
) -> None:
    X, y = load_iris(return_X_y=True)
    model = make_pipeline(StandardScaler(), LogisticRegression(max_iter=500)).fit(X, y)
    pipe = persistkit.save(model, tmp_path / "pipe", backend="onnx", example=X[:4]).path
    loaded = modules_after(
        f"""
        import numpy as np, persistkit
        print(persistkit.predict({str(pipe)!r}, np.ones((2, 4)), method="predict_proba"))
        print(persistkit.predict({str(cnn_artifact[1])!r}, np.ones((2, 1, 28, 28))))
        """
    )
    assert "onnxruntime" in loaded
    assert "torch" not in loaded and "sklearn" not in loaded and "skl2onnx" not in loaded


def test_importing_the_plugin_imports_no_framework() -> None:
    loaded = modules_after("import persistkit_onnx; persistkit_onnx.plugin.info")
    assert loaded.isdisjoint({"onnx", "onnxruntime", "torch", "sklearn", "skl2onnx"})


def test_describe_of_a_loaded_model_names_family_runtime_and_opsets(
    cnn_artifact: tuple[CNN, Path],
) -> None:
    facts = persistkit_onnx.plugin.persistkit_describe(persistkit.load(cnn_artifact[1]))
    assert facts is not None
    assert facts["family"] == "onnx"
    assert facts["libraries"]["onnxruntime"] == onnxruntime.__version__
    assert facts["opsets"]["ai.onnx"] >= 18
