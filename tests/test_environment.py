"""Longevity: what an artifact needs is recorded, compared at load, and a difference is never
silent: a warning, a drift warning (or error), or an IncompatibleEnvironmentError with the
exact install line. And the seal says whose an artifact is, or that it changed."""

from __future__ import annotations

import hashlib
import json
import pickle
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from click.testing import CliRunner
from hypothesis import given, settings
from hypothesis import strategies as st

import persistkit
from persistkit.cli import main
from persistkit.errors import (
    DriftWarning,
    EnvironmentMismatchWarning,
    IncompatibleEnvironmentError,
    SealBrokenError,
    UntrustedArtifactError,
    VerificationError,
)
from sklearn_helpers import digits_model


def edit_manifest(artifact: Path, change: Any) -> None:
    path = artifact / "persistkit.json"
    path.chmod(0o644)
    data = json.loads(path.read_text())
    change(data)
    path.write_text(json.dumps(data))


def claim_version(artifact: Path, distribution: str, version: str) -> None:
    def change(data: dict) -> None:
        data["environment"]["requirements"][distribution] = version

    edit_manifest(artifact, change)


def resave_file(artifact: Path, name: str, array: np.ndarray) -> None:
    """Change an example file and record its new hash (as an editor would)."""
    path = artifact / name
    path.chmod(0o644)
    np.save(path, array)
    digest = hashlib.sha256(path.read_bytes()).hexdigest()

    def change(data: dict) -> None:
        for entry in data["files"]:
            if entry["path"] == name:
                entry.pop("blake3", None)  # re-recorded as sha256 (a manifest may mix them)
                entry["sha256"], entry["size"] = digest, path.stat().st_size

    edit_manifest(artifact, change)


@pytest.fixture
def saved(tmp_path: Path) -> Path:
    model, X, _ = digits_model()
    return persistkit.save(model, tmp_path / "digits", example=X[:6]).path


# --- capture ---------------------------------------------------------------------------------


def test_the_payloads_distributions_are_recorded_and_written_as_requirements(saved: Path) -> None:
    manifest = persistkit.inspect(str(saved))
    needed = manifest.environment["requirements"]
    assert {"scikit-learn", "numpy", "scipy"} <= set(needed)
    text = (saved / "requirements.txt").read_text()
    assert f"scikit-learn=={needed['scikit-learn']}" in text
    assert "requirements.txt" in [f.path for f in manifest.files]  # hashed like the payload


def test_the_distribution_that_owns_the_models_class_is_recorded(tmp_path: Path) -> None:
    torch = pytest.importorskip("torch")
    transformers = pytest.importorskip("transformers")
    config = transformers.BertConfig(
        vocab_size=30, hidden_size=8, num_hidden_layers=1, num_attention_heads=2,
        intermediate_size=16,
    )
    model = transformers.BertForSequenceClassification(config).eval()
    art = persistkit.save(model, tmp_path / "bert", backend="torch")
    needed = art.manifest.environment["requirements"]
    assert needed["transformers"] == transformers.__version__
    assert needed["torch"] == torch.__version__


def test_a_classifiers_example_keeps_its_probabilities(saved: Path) -> None:
    manifest = persistkit.inspect(str(saved))
    assert manifest.example is not None
    assert manifest.example["predict_proba"] == "example/predict_proba.npy"
    assert np.load(saved / "example/predict_proba.npy").shape == (6, 10)


# --- check at load ---------------------------------------------------------------------------


def test_same_versions_load_without_a_word(saved: Path) -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        persistkit.load(saved)


def test_a_recorded_minor_version_that_differs_is_a_warning_naming_both(saved: Path) -> None:
    claim_version(saved, "scikit-learn", "0.24.2")
    mismatch = r"scikit-learn \(saved with 0.24.2, running"
    with pytest.warns(EnvironmentMismatchWarning, match=mismatch):
        persistkit.load(saved, trusted=True)


def test_a_patch_release_is_no_mismatch(saved: Path) -> None:
    running = persistkit.inspect(str(saved)).environment["requirements"]["numpy"]
    major, minor, *_ = running.split(".")
    claim_version(saved, "numpy", f"{major}.{minor}.999")
    with warnings.catch_warnings():
        warnings.simplefilter("error", EnvironmentMismatchWarning)
        persistkit.load(saved, trusted=True)


def test_outputs_that_moved_with_other_versions_are_a_drift_warning(saved: Path) -> None:
    """Labels alone would hide it: the stored probabilities moved, the labels did not."""
    claim_version(saved, "scikit-learn", "0.24.2")
    proba = np.load(saved / "example/predict_proba.npy")
    resave_file(saved, "example/predict_proba.npy", proba * 0.9)
    with pytest.warns(DriftWarning, match="predict_proba moved by up to"):
        persistkit.load(saved, trusted=True)
    with pytest.raises(VerificationError, match="predict_proba moved") as caught:
        persistkit.load(saved, trusted=True, strict=True)
    assert 'pip install "scikit-learn==0.24.2"' in (caught.value.hint or "")


def test_an_unknown_library_name_in_an_old_file_is_incompatible_not_untrusted(
    tmp_path: Path,
) -> None:
    """A class that no longer exists is a version problem, with the install line."""
    model, _, _ = digits_model()
    data = pickle.dumps(model, protocol=4)
    data = data.replace(b"sklearn.linear_model._logistic", b"sklearn.linear_model.logistic_")
    data = data.replace(b"1.9.1", b"1.0.2")  # the version the file says it was made with
    (tmp_path / "old.pkl").write_bytes(data)
    with pytest.raises(IncompatibleEnvironmentError) as caught:
        persistkit.load(tmp_path / "old.pkl")
    assert "sklearn.linear_model.logistic_.LogisticRegression" in caught.value.message
    assert caught.value.install_line == 'pip install "scikit-learn==1.0.2"'
    with pytest.raises(IncompatibleEnvironmentError):  # trusted: no raw ModuleNotFoundError
        persistkit.load(tmp_path / "old.pkl", trusted=True)


def test_a_raw_library_error_with_other_versions_is_incompatible(
    saved: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import persistkit_joblib

    def broken(*args: Any, **kwargs: Any) -> Any:
        raise ValueError("buffer dtype mismatch, expected 'intp_t' but got 'long'")

    claim_version(saved, "scikit-learn", "0.24.2")
    monkeypatch.setattr(persistkit_joblib.plugin, "load_payload", broken)
    with (
        pytest.raises(IncompatibleEnvironmentError, match="buffer dtype mismatch") as caught,
        warnings.catch_warnings(),
    ):
        warnings.simplefilter("ignore", EnvironmentMismatchWarning)
        persistkit.load(saved, trusted=True)
    assert caught.value.requirements["scikit-learn"] == "0.24.2"


def test_a_bare_file_says_the_version_it_carries(tmp_path: Path) -> None:
    model, _, _ = digits_model()
    data = pickle.dumps(model, protocol=4).replace(b"1.9.1", b"1.3.2")
    (tmp_path / "theirs.pkl").write_bytes(data)
    with pytest.warns(EnvironmentMismatchWarning, match=r"saved with 1.3.2"):
        persistkit.load(tmp_path / "theirs.pkl")


# --- seal states -----------------------------------------------------------------------------


def test_show_verify_and_scan_say_whose_an_artifact_is(saved: Path, tmp_path: Path) -> None:
    runner = CliRunner()
    assert "seal:       sealed by you" in runner.invoke(main, ["show", str(saved)]).output
    assert "sealed by you" in runner.invoke(main, ["verify", str(saved)]).output
    report = json.loads(runner.invoke(main, ["scan", str(saved), "--json"]).output)
    assert report["seal"] == "yours"


def test_a_sealed_manifest_changed_since_is_its_own_error(saved: Path) -> None:
    def change(data: dict) -> None:
        data["backend"]["options"]["compress"] = 9

    edit_manifest(saved, change)
    with pytest.raises(SealBrokenError, match="changed after it was sealed"):
        persistkit.load(saved)
    persistkit.load(saved, trusted=True)  # the owner may still decide to load it
    shown = CliRunner().invoke(main, ["show", str(saved)]).output
    assert "CHANGED SINCE IT WAS SEALED" in shown
    report = json.loads(CliRunner().invoke(main, ["scan", str(saved), "--json"]).output)
    assert report["seal"] == "modified"


def test_another_users_artifact_is_sealed_by_a_key_you_do_not_trust(
    saved: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("PERSISTKIT_HOME", str(tmp_path / "someone-else"))
    assert persistkit.verify(saved).seal == "foreign"
    assert "sealed by a key you do not trust" in CliRunner().invoke(
        main, ["show", str(saved)]
    ).output


# --- regressions found in review ---------------------------------------------------------------


def test_an_untrusted_file_never_chooses_a_module_to_import(tmp_path: Path) -> None:
    """Telling a gone library name from an untrusted one must not import what the file
    names: numpy.f2py.__main__ would run f2py's command line and exit."""
    import sys

    (tmp_path / "evil.pkl").write_bytes(b"cnumpy.f2py.__main__\nfoo\n.")
    with pytest.raises(UntrustedArtifactError, match=r"numpy\.f2py\.__main__\.foo"):
        persistkit.load(tmp_path / "evil.pkl")
    assert "numpy.f2py.__main__" not in sys.modules


def test_metadata_with_number_keys_keeps_its_seal(tmp_path: Path) -> None:
    """JSON writes {9: ..} as {"9": ..}: the seal covers what is written."""
    model, X, _ = digits_model()
    persistkit.save(model, tmp_path / "m", metadata={9: "a", 10: "b"}, example=X[:2])
    assert persistkit.verify(tmp_path / "m").seal == "yours"


def test_predict_and_answer_take_strict(saved: Path) -> None:
    X = np.load(saved / "example/inputs.npy")
    assert persistkit.predict(saved, X, strict=True).shape == (6,)
    assert len(persistkit.answer(saved, X, strict=True)) == 6


def test_a_converted_artifact_needs_its_runtime_not_the_original_library(
    tmp_path: Path,
) -> None:
    pytest.importorskip("onnxruntime")
    model, X, _ = digits_model()
    art = persistkit.save(model, tmp_path / "o", backend="onnx", example=X[:5])
    needed = art.manifest.environment["requirements"]
    assert "onnxruntime" in needed and "scikit-learn" not in needed
    [answer] = persistkit.answer(art.path, X[:1])  # the ONNX payload's probabilities
    assert answer.score is not None


@pytest.mark.parametrize(
    ("version", "expected"),
    [("2.0rc1", ("2", "0")), ("2.0.0+cpu", ("2", "0")), ("1.9.1", ("1", "9")), ("3", ("3", "0"))],
)
def test_versions_compare_by_release_numbers(version: str, expected: tuple[str, str]) -> None:
    from persistkit.environment import _major_minor

    assert _major_minor(version) == expected


def test_a_compressed_bare_file_is_told_as_it_loads_and_sklearns_warnings_become_one(
    tmp_path: Path,
) -> None:
    """A compressed file's version is not searched before the load (that would cost a
    second decompression): scikit-learn's own per-estimator warnings say it, once, as ours."""
    import zlib

    model, _, _ = digits_model()
    data = pickle.dumps(model, protocol=4).replace(b"1.9.1", b"1.3.2")
    (tmp_path / "theirs.joblib").write_bytes(zlib.compress(data))
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        persistkit.load(tmp_path / "theirs.joblib")
    ours = [w for w in caught if issubclass(w.category, EnvironmentMismatchWarning)]
    assert len(ours) == 1 and "saved with 1.3.2" in str(ours[0].message)
    assert not [w for w in caught if w.category.__name__ == "InconsistentVersionWarning"]


def _major_minor_spec(version: str) -> tuple[str, ...]:
    """The rule as a pattern: leading space, an optional v, then major and minor numbers."""
    import re

    found = re.match(r"\s*v?(\d+)(?:\.(\d+))?", version)
    if found is None:
        return (version.strip(),)
    return (found.group(1), found.group(2) or "0")


@settings(max_examples=500)
@given(st.text(alphabet=" \tv.0123456789+rcab٣", max_size=12))
def test_release_numbers_are_read_as_the_pattern_reads_them(version: str) -> None:
    from persistkit.environment import _major_minor

    assert _major_minor(version) == _major_minor_spec(version)
