"""MLflow model folders: read without MLflow's loader (sklearn and pytorch flavors through
persistkit's restricted readers), refused when only custom code could load them, and their
pinned requirements read for the environment check."""

from __future__ import annotations

import os
import pickle
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import pytest

import persistkit
from persistkit.api import locate, open_located
from persistkit.errors import CannotSaveError, FormatError, UntrustedArtifactError
from persistkit.manager import build_plugins, reset_plugins

pytest.importorskip("yaml")
pytest.importorskip("sklearn")
mlflow_sklearn = pytest.importorskip("mlflow.sklearn")

from sklearn.ensemble import RandomForestClassifier  # noqa: E402
from sklearn.linear_model import LogisticRegression  # noqa: E402
from sklearn.pipeline import make_pipeline  # noqa: E402
from sklearn.preprocessing import StandardScaler  # noqa: E402

import persistkit_mlflow  # noqa: E402
import persistkit_skops  # noqa: E402

SKLEARN_PINS = ["scikit-learn==1.9.1", "numpy==2.4.6", "cloudpickle==3.1.3"]


@pytest.fixture(autouse=True)
def mlflow_plugin() -> None:
    """The installed plugins, plus these until their entry points are installed."""
    plugins = build_plugins()
    missing = [
        plugin
        for name, plugin in (
            ("skops", persistkit_skops.plugin),
            ("mlflow", persistkit_mlflow.plugin),
        )
        if name not in plugins.backends
    ]
    reset_plugins(build_plugins(*missing) if missing else plugins)


@pytest.fixture(scope="module")
def data() -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(0)
    X = rng.normal(size=(80, 4))
    return X, (X[:, 0] - X[:, 2] > 0).astype(int)


@pytest.fixture(scope="module")
def models(data: tuple[np.ndarray, np.ndarray]) -> dict[str, Any]:
    return {
        "pipeline": make_pipeline(StandardScaler(), LogisticRegression()).fit(*data),
        "forest": RandomForestClassifier(n_estimators=3, max_depth=3, random_state=0).fit(*data),
    }


@pytest.fixture(scope="module")
def folders(tmp_path_factory: pytest.TempPathFactory, models: dict[str, Any]) -> Path:
    """MLflow folders written by mlflow itself, once for the module."""
    root = tmp_path_factory.mktemp("mlflow")
    for fmt in ("pickle", "cloudpickle", "skops"):
        for kind, model in models.items():
            # mlflow checks a skops file loads with what the folder says it trusts
            trusted = ["sklearn.tree._tree.Tree"] if (kind, fmt) == ("forest", "skops") else None
            mlflow_sklearn.save_model(
                model,
                root / f"{kind}-{fmt}",
                serialization_format=fmt,
                pip_requirements=SKLEARN_PINS,
                skops_trusted_types=trusted,
            )
    return root


def _copy(folders: Path, name: str, tmp_path: Path) -> Path:
    target = tmp_path / name
    shutil.copytree(folders / name, target)
    return target


def _set_mlmodel(folder: Path, change: Any) -> None:
    import yaml

    mlmodel = yaml.safe_load((folder / "MLmodel").read_text())
    change(mlmodel)
    (folder / "MLmodel").write_text(yaml.safe_dump(mlmodel))


@pytest.mark.parametrize("fmt", ["pickle", "cloudpickle", "skops"])
@pytest.mark.parametrize("kind", ["pipeline", "forest"])
def test_sklearn_flavor_loads_under_the_default_policy(
    kind: str, fmt: str, folders: Path, models: dict[str, Any], data: Any
) -> None:
    X = data[0]
    folder = folders / f"{kind}-{fmt}"
    assert persistkit.inspect(str(folder)).backend == "mlflow"
    loaded = persistkit.load(folder)
    assert type(loaded) is type(models[kind])
    np.testing.assert_array_equal(loaded.predict_proba(X), models[kind].predict_proba(X))
    np.testing.assert_array_equal(persistkit.predict(folder, X), models[kind].predict(X))


def test_pytorch_flavor_loads_a_pickled_module_and_an_exported_program(tmp_path: Path) -> None:
    torch = pytest.importorskip("torch")
    mlflow_pytorch = pytest.importorskip("mlflow.pytorch")
    net = torch.nn.Sequential(torch.nn.Linear(3, 4), torch.nn.ReLU(), torch.nn.Linear(4, 2))
    x = np.random.default_rng(1).normal(size=(5, 3)).astype(np.float32)
    expected = net(torch.from_numpy(x)).detach().numpy()
    mlflow_pytorch.save_model(
        net, tmp_path / "pickled", serialization_format="pickle", pip_requirements=["torch"]
    )
    loaded = persistkit.load(tmp_path / "pickled")
    assert isinstance(loaded, torch.nn.Sequential)
    np.testing.assert_array_equal(persistkit.predict(loaded, x), expected)
    mlflow_pytorch.save_model(
        net, tmp_path / "exported", serialization_format="pt2", input_example=x,
        pip_requirements=["torch"],
    )  # fmt: skip
    np.testing.assert_allclose(
        persistkit.predict(tmp_path / "exported", x), expected, rtol=1e-6, atol=1e-6
    )


def test_a_folder_with_only_the_python_function_flavor_is_refused(
    folders: Path, tmp_path: Path
) -> None:
    folder = _copy(folders, "pipeline-pickle", tmp_path)
    _set_mlmodel(folder, lambda m: m["flavors"].pop("sklearn"))
    with pytest.raises(FormatError, match="python_function.*mlflow.sklearn"):
        persistkit.load(folder)


def test_a_hostile_pickled_model_is_refused_before_it_runs(folders: Path, tmp_path: Path) -> None:
    class Hostile:
        def __reduce__(self) -> Any:
            return (os.system, (f"touch {tmp_path / 'pwned'}",))

    folder = _copy(folders, "pipeline-cloudpickle", tmp_path)
    (folder / "model.pkl").write_bytes(pickle.dumps(Hostile()))
    with pytest.raises(UntrustedArtifactError, match="system") as info:
        persistkit.load(folder)
    assert any(name.endswith(".system") for name in info.value.globals_needed)
    assert not (tmp_path / "pwned").exists()


@pytest.mark.parametrize("where", ["../outside.pkl", "/etc/passwd", "sub/../../outside.pkl"])
def test_mlmodel_pointing_outside_the_folder_is_refused(
    where: str, folders: Path, tmp_path: Path
) -> None:
    folder = _copy(folders, "pipeline-pickle", tmp_path)
    shutil.copy(folder / "model.pkl", tmp_path / "outside.pkl")

    def point_outside(mlmodel: dict[str, Any]) -> None:
        mlmodel["flavors"]["sklearn"]["pickled_model"] = where

    _set_mlmodel(folder, point_outside)
    with pytest.raises(FormatError, match="outside the model folder"):
        persistkit.load(folder)


def test_an_mlmodel_with_python_tags_is_not_read(folders: Path, tmp_path: Path) -> None:
    folder = _copy(folders, "pipeline-pickle", tmp_path)
    (folder / "MLmodel").write_text(
        f"flavors: !!python/object/apply:os.system ['touch {tmp_path / 'pwned'}']\n"
    )
    with pytest.raises(FormatError, match="not readable YAML"):
        persistkit.load(folder)
    assert not (tmp_path / "pwned").exists()


def test_a_truncated_pickled_model_is_a_format_error(folders: Path, tmp_path: Path) -> None:
    folder = _copy(folders, "pipeline-pickle", tmp_path)
    raw = (folder / "model.pkl").read_bytes()
    (folder / "model.pkl").write_bytes(raw[: len(raw) // 2])
    with pytest.raises(FormatError):
        persistkit.load(folder)


def test_the_folders_own_skops_trusted_types_grant_nothing(folders: Path, tmp_path: Path) -> None:
    import skops.io as sio

    folder = _copy(folders, "pipeline-skops", tmp_path)
    sio.dump({"f": os.system}, folder / "model.skops")
    _set_mlmodel(
        folder, lambda m: m["flavors"]["sklearn"].update(skops_trusted_types=["posix.system"])
    )
    with pytest.raises(UntrustedArtifactError, match="system"):
        persistkit.load(folder)


def test_requirements_are_read_from_the_folder(folders: Path) -> None:
    with open_located(locate(str(folders / "forest-pickle"))) as files:
        pins = persistkit_mlflow.mlflow_requirements(files)
        hook = persistkit_mlflow.plugin.persistkit_requirements(
            backend="mlflow", manifest=None, files=files
        )
    assert pins["scikit-learn"] == "1.9.1"  # the flavor's own sklearn_version
    assert pins["numpy"] == "2.4.6" and pins["cloudpickle"] == "3.1.3"
    assert pins["python"].count(".") == 2
    assert "mlflow" not in pins
    assert hook == pins


def test_requirements_from_conda_and_pip_files_by_hand(tmp_path: Path) -> None:
    folder = tmp_path / "by-hand"
    folder.mkdir()
    (folder / "MLmodel").write_text(
        "flavors:\n  pytorch:\n    model_data: data\n    pytorch_version: 2.13.0+cpu\n"
    )
    (folder / "conda.yaml").write_text(
        "dependencies:\n- python=3.11.7\n- pip\n- pip:\n  - mlflow==3.17.2\n  - Pillow==11.0.0\n"
    )
    (folder / "python_env.yaml").write_text("python: 3.11.7\n")
    (folder / "requirements.txt").write_text(
        "mlflow==3.17.2\n# a comment\ntorch==2.13.0+cpu\nscikit_learn==1.9.1 ; python_version>'3'\n"
        "numpy>=2\n-r other.txt\n"
    )
    with open_located(locate(str(folder))) as files:
        pins = persistkit_mlflow.mlflow_requirements(files)
    assert pins == {
        "python": "3.11.7",
        "pillow": "11.0.0",
        "torch": "2.13.0",
        "scikit-learn": "1.9.1",
    }


def test_saving_with_the_mlflow_backend_is_refused(models: dict[str, Any], tmp_path: Path) -> None:
    with pytest.raises(CannotSaveError, match="does not write") as info:
        persistkit.save(models["pipeline"], tmp_path / "m", backend="mlflow")
    assert 'backend="skops"' in (info.value.hint or "")
