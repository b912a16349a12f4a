"""Bad artifacts get clear errors: tampered, truncated, missing files; bad manifests;
and a crash during save leaves nothing that loads half-written."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

import persistkit
from persistkit.errors import (
    ArtifactNotFoundError,
    IntegrityError,
    ManifestError,
    PersistkitError,
    UntrustedArtifactError,
    VerificationError,
)
from persistkit.manager import build_plugins, reset_plugins
from sklearn_helpers import tiny_forest


@pytest.fixture
def artifact(tmp_path: Path) -> Path:
    model, X = tiny_forest()
    return persistkit.save(model, tmp_path / "forest", example=X[:3]).path


def _edit_manifest(path: Path, change) -> None:  # type: ignore[no-untyped-def]
    """Edit the manifest and drop its seal (an edit under a seal is a SealBrokenError)."""
    data = json.loads((path / "persistkit.json").read_text())
    change(data)
    data.pop("seal", None)
    (path / "persistkit.json").write_text(json.dumps(data))


def test_tampered_payload_raises_integrity_error_naming_the_file(artifact: Path) -> None:
    payload = artifact / "model.joblib"
    data = bytearray(payload.read_bytes())
    data[len(data) // 2] ^= 0xFF
    payload.write_bytes(bytes(data))
    with pytest.raises(IntegrityError, match="model.joblib"):
        persistkit.load(artifact)


def test_truncated_payload_is_reported_as_truncated(artifact: Path) -> None:
    payload = artifact / "model.joblib"
    payload.write_bytes(payload.read_bytes()[:100])
    with pytest.raises(IntegrityError, match="truncated"):
        persistkit.load(artifact)


def test_missing_payload_file_is_named(artifact: Path) -> None:
    (artifact / "example" / "inputs.npy").unlink()
    with pytest.raises(IntegrityError, match="example/inputs.npy"):
        persistkit.load(artifact)


def test_missing_manifest_says_it_is_not_an_artifact(tmp_path: Path) -> None:
    (tmp_path / "empty").mkdir()
    with pytest.raises(ManifestError, match="not a persistkit artifact"):
        persistkit.load(tmp_path / "empty")


def test_nothing_at_the_path(tmp_path: Path) -> None:
    with pytest.raises(ArtifactNotFoundError):
        persistkit.load(tmp_path / "nope")


def test_newer_manifest_format_asks_to_upgrade(artifact: Path) -> None:
    _edit_manifest(artifact, lambda d: d.update(format="persistkit/99"))
    with pytest.raises(ManifestError) as err:
        persistkit.load(artifact)
    assert "newer" in err.value.message and "upgrade" in (err.value.hint or "")


def test_unknown_manifest_format_is_refused(artifact: Path) -> None:
    _edit_manifest(artifact, lambda d: d.update(format="mlflow/1"))
    with pytest.raises(ManifestError, match="unknown manifest format"):
        persistkit.load(artifact)


def test_duplicate_manifest_keys_are_refused(artifact: Path) -> None:
    text = (artifact / "persistkit.json").read_text()
    (artifact / "persistkit.json").write_text(
        text.replace('"format"', '"backend": {}, "format"', 1)
    )
    with pytest.raises(ManifestError, match="repeats the key"):
        persistkit.load(artifact)


def test_manifest_paths_may_not_escape_the_artifact(artifact: Path) -> None:
    _edit_manifest(artifact, lambda d: d["files"][0].update(path="../../etc/passwd"))
    with pytest.raises(ManifestError, match="escapes"):
        persistkit.load(artifact)


def test_weak_digests_are_refused(artifact: Path) -> None:
    _edit_manifest(artifact, lambda d: d["files"][0].pop("blake3", None))
    _edit_manifest(artifact, lambda d: d["files"][0].update(sha256="abc"))
    with pytest.raises(ManifestError, match="sha256"):
        persistkit.load(artifact)


def test_invalid_json_manifest(artifact: Path) -> None:
    (artifact / "persistkit.json").write_text("{not json")
    with pytest.raises(ManifestError, match="not valid JSON"):
        persistkit.load(artifact)


def test_unknown_backend_in_manifest(artifact: Path) -> None:
    _edit_manifest(artifact, lambda d: d["backend"].update(name="onnx-x"))
    with pytest.raises(PersistkitError, match="unknown backend 'onnx-x'"):
        persistkit.load(artifact)


def test_edited_manifest_breaks_the_seal_so_the_payload_is_no_longer_trusted(
    tmp_path: Path,
) -> None:
    # a forest now loads through the allow-list even unsealed; a Counter needs the seal
    import collections

    artifact = persistkit.save(collections.Counter("abc"), tmp_path / "c", backend="pickle").path
    _edit_manifest(artifact, lambda d: d["metadata"].update(note="edited"))
    with pytest.raises(UntrustedArtifactError):
        persistkit.load(artifact)
    assert persistkit.load(artifact, trusted=True) == collections.Counter("abc")


def test_changed_predictions_fail_verification(artifact: Path) -> None:
    outputs = artifact / "example" / "outputs.npy"
    np.save(outputs, 1 - np.load(outputs))
    import hashlib

    digest = hashlib.sha256(outputs.read_bytes()).hexdigest()

    def fix(d: dict) -> None:
        for f in d["files"]:
            if f["path"] == "example/outputs.npy":
                f.pop("blake3", None)  # re-recorded as sha256 (a manifest may mix them)
                f["sha256"] = digest
                f["size"] = outputs.stat().st_size

    _edit_manifest(artifact, fix)
    with pytest.raises(VerificationError, match="the stored example's outputs changed") as caught:
        persistkit.verify(artifact, trusted=True)
    assert "changed since they were saved" in (caught.value.hint or "")  # same versions


def test_a_crash_during_save_leaves_no_artifact_and_no_staging(tmp_path: Path) -> None:
    class Exploding(persistkit.Backend):
        info = persistkit.BackendInfo("exploding", safe=True)

        def save(self, model: object, path: Path, options: dict) -> None:
            path.write_bytes(b"half")
            raise RuntimeError("disk on fire")

    reset_plugins(build_plugins(Exploding()))
    with pytest.raises(RuntimeError):
        persistkit.save("x", tmp_path / "a", backend="exploding")
    assert list(tmp_path.iterdir()) == []
