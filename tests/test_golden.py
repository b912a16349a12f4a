"""Golden files, loaded by every release forever (issue #12: format versioning tested forever).

``tests/golden/`` holds files written once and never regenerated (``tools/make_golden.py``):

* ``persistkit-<release>/<case>/``: one artifact per backend, written by that release. Each
  must load under the default policy as *another user* (no seal of theirs is trusted) — or
  trusted, for the backends that run code — and ``verify`` must prove its example identical.
* ``sklearn-<version>/<estimator>/``: bare ``model.joblib`` and ``model.pkl`` files and a
  persistkit ``artifact/`` written by an old scikit-learn, with that version's outputs on
  ``X``. Loaded with today's scikit-learn under the default policy, each file must end in one
  of three outcomes, and nothing else:

  ``identical``     it loads and every output equals the stored one, bit for bit;
  ``warned``        it loads, outputs moved, and the load warned: an
                    ``EnvironmentMismatchWarning`` naming the saved and the running version
                    and, for an artifact whose stored example moved, a ``DriftWarning``;
  ``incompatible``  ``IncompatibleEnvironmentError`` whose ``install_line`` pins
                    ``scikit-learn==<version>``.

  A silent change, a refusal as untrusted (a class that merely moved between versions) or
  any other exception fails. ``python tests/test_golden.py`` prints the matrix (version ×
  outcome) and every failure's reason.
"""

from __future__ import annotations

import json
import os
import shutil
import sys
import tempfile
import warnings
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pytest

import persistkit
from persistkit.errors import (
    DriftWarning,
    EnvironmentMismatchWarning,
    IncompatibleEnvironmentError,
    PersistkitError,
    UntrustedArtifactError,
)

pytest.importorskip("sklearn")
pytest.importorskip("joblib")

GOLDEN = Path(__file__).resolve().parent / "golden"
INDEX: dict[str, Any] = json.loads((GOLDEN / "INDEX.json").read_text())
EXAMPLE_ROWS = 20  # tools/golden_worker.py saves artifacts with example=X[:20]
# backends whose payload runs code when it loads: their golden artifacts load trusted
NEEDS_TRUST = {"dill"}
OUTCOMES = ("identical", "warned", "incompatible", "FAIL")


# --- this release's artifacts, one per backend ------------------------------------------------

CURRENT = [
    pytest.param(release, case, id=f"{release}-{case['case']}")
    for release, written in INDEX["persistkit"].items()
    for case in written["cases"]
]


@pytest.fixture
def another_user(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A fresh persistkit home: no key, so no seal on a golden file is trusted."""
    home = tmp_path / "home"
    monkeypatch.setenv("PERSISTKIT_HOME", str(home))
    monkeypatch.setenv("PERSISTKIT_STORE", str(home / "store"))
    return tmp_path


def _copy(source: Path, tmp_path: Path) -> Path:
    """A copy of a golden file or folder: loading must never write into tests/golden."""
    target = tmp_path / "golden" / source.name
    if source.is_dir():
        shutil.copytree(source, target)
    else:
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(source, target)
    return target


@pytest.mark.parametrize(("release", "case"), CURRENT)
def test_a_release_artifact_verifies_as_another_user(
    release: str, case: dict[str, Any], another_user: Path
) -> None:
    if case["backend"] in ("torch", "safetensors", "export"):
        pytest.importorskip("torch")
    if case["backend"] == "onnx":
        pytest.importorskip("onnxruntime")
    path = _copy(GOLDEN / f"persistkit-{release}" / case["case"], another_user)
    trusted = case["backend"] in NEEDS_TRUST
    report = persistkit.verify(path, trusted=trusted)
    assert report.identical
    assert report.example_checked == case["example"]


@pytest.mark.parametrize(
    ("release", "case"),
    [p for p in CURRENT if p.values[1]["backend"] in NEEDS_TRUST],  # type: ignore[index]
)
def test_a_release_artifact_that_runs_code_is_refused_untrusted(
    release: str, case: dict[str, Any], another_user: Path
) -> None:
    path = _copy(GOLDEN / f"persistkit-{release}" / case["case"], another_user)
    with pytest.raises(UntrustedArtifactError):
        persistkit.load(path)


def test_a_release_numpy_artifact_loads_its_array(another_user: Path) -> None:
    for release, written in INDEX["persistkit"].items():
        for case in written["cases"]:
            if case["backend"] == "numpy":
                path = _copy(GOLDEN / f"persistkit-{release}" / case["case"], another_user)
                loaded = persistkit.load(path)
                assert np.array_equal(loaded, np.arange(12.0).reshape(3, 4))
                shutil.rmtree(path)


# --- files written by old scikit-learn versions -----------------------------------------------


@dataclass(frozen=True)
class Outcome:
    """How one golden file fared: one of :data:`OUTCOMES`, and why (for ``FAIL``)."""

    kind: str
    reason: str = ""


def old_cells() -> list[tuple[str, dict[str, Any], str]]:
    return [
        (version, cell, kind)
        for version, report in INDEX["sklearn"].items()
        for cell in report["cells"]
        for kind in cell["files"]
    ]


def _inputs(folder: Path, cell: dict[str, Any]) -> Any:
    if cell["inputs"].endswith(".json"):
        return json.loads((folder / cell["inputs"]).read_text())
    return np.load(folder / cell["inputs"], allow_pickle=False)


def _moved(expected: np.ndarray, actual: Any) -> bool:
    actual = np.asarray(actual)
    if expected.shape != actual.shape:
        return True
    return not np.array_equal(expected, actual, equal_nan=expected.dtype.kind in "fc")


def _describe_move(method: str, expected: np.ndarray, actual: Any) -> str:
    actual = np.asarray(actual)
    if expected.shape != actual.shape:
        return f"{method}: shape {expected.shape} -> {actual.shape}"
    if expected.dtype.kind in "fc":
        return f"{method}: max |diff| {float(np.max(np.abs(expected - actual))):.3g}"
    return f"{method}: {int(np.sum(expected != actual))} of {expected.size} changed"


def _first_line(exc: BaseException) -> str:
    return f"{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}"[:200]


def classify(version: str, cell: dict[str, Any], kind: str, work: Path) -> Outcome:
    """Load one golden file (copied into ``work``) with today's libraries and say how it
    fared. The caller sets a fresh ``PERSISTKIT_HOME``."""
    import sklearn

    folder = GOLDEN / f"sklearn-{version}" / cell["estimator"]
    path = _copy(folder / kind, work)
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            model = persistkit.load(path)
    except IncompatibleEnvironmentError as exc:
        pin = f"scikit-learn=={version}"
        if exc.install_line and pin in exc.install_line:
            return Outcome("incompatible")
        return Outcome(
            "FAIL",
            f"IncompatibleEnvironmentError without {pin} in its "
            f"install_line ({exc.install_line!r})",
        )
    except UntrustedArtifactError as exc:
        what = ", ".join(exc.globals_needed) or exc.message.splitlines()[0][:160]
        return Outcome("FAIL", f"{type(exc).__name__} for {what}")
    except PersistkitError as exc:
        return Outcome("FAIL", f"load raised {_first_line(exc)}")
    except Exception as exc:
        return Outcome("FAIL", f"load raised raw {_first_line(exc)}")

    inputs = _inputs(folder, cell)
    moves, example_moved = [], False
    for method in cell["methods"]:
        expected = np.load(folder / f"{method}.npy", allow_pickle=False)
        try:
            actual = getattr(model, method)(inputs)
        except Exception as exc:
            return Outcome("FAIL", f"loads, but {method} raises raw {_first_line(exc)}")
        if _moved(expected, actual):
            moves.append(_describe_move(method, expected, actual))
            example_moved |= _moved(expected[:EXAMPLE_ROWS], np.asarray(actual)[:EXAMPLE_ROWS])
    if not moves:
        return Outcome("identical")

    said = [str(w.message) for w in caught if issubclass(w.category, EnvironmentMismatchWarning)]
    named = [m for m in said if version in m and sklearn.__version__ in m]
    drift = any(issubclass(w.category, DriftWarning) for w in caught)
    moved = "; ".join(moves)
    if not said:
        return Outcome("FAIL", f"silent change, no EnvironmentMismatchWarning ({moved})")
    if not named:
        return Outcome(
            "FAIL",
            f"EnvironmentMismatchWarning does not name {version} and "
            f"{sklearn.__version__} ({said[0][:120]})",
        )
    if kind == "artifact" and example_moved and not drift:
        return Outcome("FAIL", f"stored example moved but no DriftWarning ({moved})")
    return Outcome("warned")


def _cell_id(version: str, cell: dict[str, Any], kind: str) -> str:
    return f"{version}-{cell['estimator']}-{kind.removeprefix('model.')}"


@pytest.mark.parametrize(
    ("version", "cell", "kind"), [pytest.param(*c, id=_cell_id(*c)) for c in old_cells()]
)
def test_an_old_scikit_learn_file_loads_identical_warned_or_refused_with_its_pins(
    version: str, cell: dict[str, Any], kind: str, another_user: Path
) -> None:
    outcome = classify(version, cell, kind, another_user)
    assert outcome.kind != "FAIL", outcome.reason


def test_every_golden_folder_is_in_the_index() -> None:
    listed = {f"sklearn-{v}" for v in INDEX["sklearn"]}
    listed |= {f"persistkit-{r}" for r in INDEX["persistkit"]}
    # catalog-N: golden database stores, opened by tests/test_catalog_schema.py
    on_disk = {p.name for p in GOLDEN.iterdir() if p.is_dir() and not p.name.startswith("catalog-")}
    assert on_disk == listed
    for version, cell, kind in old_cells():
        folder = GOLDEN / f"sklearn-{version}" / cell["estimator"]
        assert (folder / kind).exists()
        assert (folder / cell["inputs"]).exists()
        assert all((folder / f"{m}.npy").exists() for m in cell["methods"])


def test_the_old_matrix_covers_five_versions_and_fifteen_estimators() -> None:
    assert set(INDEX["sklearn"]) == {"1.2.2", "1.3.2", "1.4.2", "1.5.2", "1.7.2"}
    for report in INDEX["sklearn"].values():
        assert len(report["cells"]) == 15


# --- the matrix table (for the note) ------------------------------------------------


def matrix() -> dict[tuple[str, str], Outcome]:
    """Every old file's outcome, each loaded as a fresh user."""
    results = {}
    saved = {k: os.environ.get(k) for k in ("PERSISTKIT_HOME", "PERSISTKIT_STORE")}
    try:
        for version, cell, kind in old_cells():
            with tempfile.TemporaryDirectory() as work:
                os.environ["PERSISTKIT_HOME"] = str(Path(work) / "home")
                os.environ["PERSISTKIT_STORE"] = str(Path(work) / "home" / "store")
                results[(version, _cell_id(version, cell, kind))] = classify(
                    version, cell, kind, Path(work)
                )
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value
    return results


def print_matrix() -> None:
    import sklearn

    results = matrix()
    print(f"old scikit-learn golden files loaded with scikit-learn {sklearn.__version__}\n")
    print(f"| saved with | {' | '.join(OUTCOMES)} | total |")
    print(f"| --- |{' --- |' * (len(OUTCOMES) + 1)}")
    totals: Counter[str] = Counter()
    for version in INDEX["sklearn"]:
        counts = Counter(o.kind for (v, _), o in results.items() if v == version)
        totals.update(counts)
        row = " | ".join(str(counts[k]) for k in OUTCOMES)
        print(f"| {version} | {row} | {sum(counts.values())} |")
    print(f"| all | {' | '.join(str(totals[k]) for k in OUTCOMES)} | {sum(totals.values())} |")
    by_kind: dict[str, Counter[str]] = {}
    for (_, cell_id), outcome in results.items():
        by_kind.setdefault(cell_id.rsplit("-", 1)[1], Counter())[outcome.kind] += 1
    print(
        "\nby file kind: "
        + "; ".join(
            f"{k}: " + ", ".join(f"{o} {n}" for o, n in sorted(c.items()))
            for k, c in sorted(by_kind.items())
        )
    )
    reasons = Counter(o.reason.split(" (")[0] for o in results.values() if o.kind == "FAIL")
    if reasons:
        print("\nfailures by reason:")
        for reason, count in reasons.most_common():
            print(f"  {count:3d}  {reason}")
        print("\nfailures:")
        for (_, cell_id), outcome in results.items():
            if outcome.kind == "FAIL":
                print(f"  {cell_id}: {outcome.reason}")


if __name__ == "__main__":
    warnings.simplefilter("ignore")
    print_matrix()
    sys.exit(0)
