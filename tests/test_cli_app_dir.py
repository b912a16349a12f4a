"""The CLI imports a model's own code like Python does: a class in ``cnn.py`` next to the user
loads in `persistkit predict`, `bench` and `serve` run in that folder (or given ``--app-dir``),
without ``PYTHONPATH=.``; and that folder never hides an installed package."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest

MODEL_CODE = textwrap.dedent(
    """
    import numpy as np

    class Doubler:
        '''A user's own model, defined in a file next to them.'''

        def __call__(self, X):
            return np.asarray(X) * 2
    """
)

SAVE_SCRIPT = textwrap.dedent(
    """
    import numpy as np
    import persistkit
    from cnn import Doubler

    persistkit.save(Doubler(), "doubler", backend="pickle", example=np.array([[1.0, 2.0]]))
    """
)


def _cli(*args: str, cwd: Path, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    # the installed command, as a user runs it (`python -c` would put the folder first itself)
    command = [str(Path(sys.executable).parent / "persistkit"), *args]
    return subprocess.run(command, cwd=cwd, env=env, capture_output=True, text=True, timeout=120)


@pytest.fixture
def project(tmp_path: Path) -> tuple[Path, dict[str, str]]:
    """A folder with the user's cnn.py, a model saved from a script run there, and x.npy."""
    folder = tmp_path / "project"
    folder.mkdir()
    (folder / "cnn.py").write_text(MODEL_CODE)
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    env["PERSISTKIT_HOME"] = str(tmp_path / "home")
    saved = subprocess.run(
        [sys.executable, "-c", SAVE_SCRIPT], cwd=folder, env=env, capture_output=True, text=True
    )
    assert saved.returncode == 0, saved.stderr
    np.save(folder / "x.npy", np.array([[1.0, 2.0]]))
    return folder, env


def test_predict_in_the_project_folder_imports_the_users_class(
    project: tuple[Path, dict[str, str]],
) -> None:
    folder, env = project
    result = _cli("predict", "doubler", "x.npy", "--json", cwd=folder, env=env)
    assert result.returncode == 0, result.stderr
    assert '"predictions": [[2.0, 4.0]]' in result.stdout


def test_predict_elsewhere_needs_app_dir(project: tuple[Path, dict[str, str]]) -> None:
    folder, env = project
    elsewhere = folder.parent
    x = str(folder / "x.npy")
    without = _cli("predict", "doubler", x, cwd=elsewhere, env=env)
    assert without.returncode == 1
    assert "cnn" in without.stderr
    with_dir = _cli(
        "predict", "doubler", x, "--json", "--app-dir", str(folder), cwd=elsewhere, env=env
    )
    assert with_dir.returncode == 0, with_dir.stderr
    assert '"predictions": [[2.0, 4.0]]' in with_dir.stdout


def test_bench_measures_the_users_class_in_fresh_processes_too(
    project: tuple[Path, dict[str, str]],
) -> None:
    folder, env = project
    result = _cli(
        "bench", "doubler", "--backends", "pickle", "--repeat", "1", "--json", cwd=folder, env=env
    )
    assert result.returncode == 0, result.stderr
    assert '"identical": true' in result.stdout.replace(" ", "").replace(
        '"identical":true', '"identical": true'
    )


def test_app_dir_never_hides_an_installed_package(project: tuple[Path, dict[str, str]]) -> None:
    # a stray numpy.py in the folder (say, a downloaded one) must not replace numpy, in the
    # CLI's process nor in the fresh processes bench starts
    folder, env = project
    (folder / "numpy.py").write_text("raise SystemExit('a stray numpy.py was imported')\n")
    predicted = _cli("predict", "doubler", "x.npy", "--json", cwd=folder, env=env)
    assert predicted.returncode == 0, predicted.stderr
    benched = _cli("bench", "doubler", "--backends", "pickle", "--repeat", "1", cwd=folder, env=env)
    assert benched.returncode == 0, benched.stderr
    assert "stray" not in benched.stdout + benched.stderr


def test_server_workers_import_from_the_app_dir(
    project: tuple[Path, dict[str, str]], monkeypatch: pytest.MonkeyPatch
) -> None:
    import json

    from persistkit.server.app import CONFIG_ENV, app_from_environment

    folder, env = project
    monkeypatch.setattr(sys, "path", [p for p in sys.path if p != str(folder)])
    monkeypatch.setenv("PERSISTKIT_HOME", env["PERSISTKIT_HOME"])
    monkeypatch.setenv(
        CONFIG_ENV,
        json.dumps(
            {"refs": ["doubler"], "max_body_bytes": 1 << 20, "app_dir": str(folder.resolve())}
        ),
    )
    app = app_from_environment()
    app.state.repository.load()
    [served] = app.state.repository.models()
    assert type(served.model).__module__ == "cnn"


def test_a_missing_app_dir_is_one_clear_error(tmp_path: Path) -> None:
    result = _cli(
        "predict",
        "m",
        "x.npy",
        "--app-dir",
        str(tmp_path / "nope"),
        cwd=tmp_path,
        env=dict(os.environ),
    )
    assert result.returncode == 1
    assert "--app-dir" in result.stderr and "no such folder" in result.stderr


def test_code_that_cannot_be_imported_is_named_with_the_fix_for_each_interface(
    project: tuple[Path, dict[str, str]], monkeypatch: pytest.MonkeyPatch
) -> None:
    import persistkit
    from persistkit.errors import ArtifactError

    folder, env = project
    elsewhere = folder.parent
    monkeypatch.setenv("PERSISTKIT_HOME", env["PERSISTKIT_HOME"])
    monkeypatch.chdir(elsewhere)
    monkeypatch.setattr(sys, "path", [p for p in sys.path if p not in ("", str(folder))])
    monkeypatch.delitem(sys.modules, "cnn", raising=False)
    with pytest.raises(ArtifactError, match="needs the module 'cnn'") as info:
        persistkit.load("doubler")  # was a raw ModuleNotFoundError
    assert "sys.path" in (info.value.hint or "")
    assert "model_class" not in (info.value.hint or "")  # a pickle takes no model_class=
    cli = _cli("predict", "doubler", str(folder / "x.npy"), cwd=elsewhere, env=env)
    assert "--app-dir" in cli.stderr and "sys.path" not in cli.stderr
