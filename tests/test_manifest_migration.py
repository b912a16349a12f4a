"""The manifest format's migration table, tested for real: a format-1 artifact of this
release (tests/golden) read by a persistkit whose format is 2 goes through MIGRATIONS[1],
still verifies, and is still its owner's (the seal covers what was written, not this
version's reading of it)."""

from __future__ import annotations

import hashlib
import hmac
import json
import shutil
from pathlib import Path
from typing import Any

import pytest

import persistkit
from persistkit import manifest as manifest_module
from persistkit.errors import ManifestError
from persistkit.safety import seal_state
from persistkit.safety.signing import user_key

GOLDEN = Path(__file__).parent / "golden" / "persistkit-0.1.0" / "joblib"


@pytest.fixture
def format_two(monkeypatch: pytest.MonkeyPatch) -> list[dict[str, Any]]:
    """This persistkit writes format 2, which renamed ``notes`` to ``remarks``; reading a
    format-1 manifest migrates it. Returns the dicts the migration saw."""
    seen: list[dict[str, Any]] = []

    def one_to_two(data: dict[str, Any]) -> dict[str, Any]:
        seen.append(dict(data))
        data = dict(data)
        data["remarks"] = data.pop("notes", [])
        data["format"] = "persistkit/2"
        return data

    monkeypatch.setattr(manifest_module, "FORMAT_VERSION", 2)
    monkeypatch.setattr(manifest_module, "FORMAT", "persistkit/2")
    monkeypatch.setitem(manifest_module.MIGRATIONS, 1, one_to_two)
    return seen


def test_a_golden_format_one_artifact_migrates_once_and_still_verifies(
    format_two: list[dict[str, Any]], tmp_path: Path
) -> None:
    artifact = tmp_path / "a"
    shutil.copytree(GOLDEN, artifact)
    before = (artifact / "persistkit.json").read_bytes()
    report = persistkit.verify(artifact, trusted=True)
    assert report.identical and report.example_checked
    assert format_two and format_two[0]["format"] == "persistkit/1"
    assert (artifact / "persistkit.json").read_bytes() == before  # read, never rewritten


def test_a_migrated_manifest_is_still_sealed_by_its_owner(
    format_two: list[dict[str, Any]], tmp_path: Path
) -> None:
    """Sealed at format 1 by this user; read at format 2: still theirs, not 'modified'."""
    art = persistkit.save({"w": [1.0, 2.0]}, tmp_path / "mine", backend="pickle")
    written = json.loads((art.path / "persistkit.json").read_text())
    assert written["format"] == "persistkit/1"  # the class default: what 0.1 writes
    read = manifest_module.Manifest.from_dict(written)
    assert format_two  # the migration ran
    assert read.format == "persistkit/2"
    assert seal_state(read) == "yours"
    assert persistkit.load(art.path) == {"w": [1.0, 2.0]}  # no SealBrokenError, no trust


def test_a_newer_format_asks_to_upgrade_and_a_dropped_one_says_so(tmp_path: Path) -> None:
    data = json.loads((GOLDEN / "persistkit.json").read_text())
    data["format"] = "persistkit/9"
    with pytest.raises(ManifestError, match="newer than this persistkit") as caught:
        manifest_module.Manifest.from_dict(data)
    assert "upgrade persistkit" in (caught.value.hint or "")
    data["format"] = "persistkit/0"
    with pytest.raises(ManifestError, match="no longer supported"):
        manifest_module.Manifest.from_dict(data)


def test_a_field_a_newer_writer_added_does_not_look_like_tampering(tmp_path: Path) -> None:
    """A newer release writes a field this one does not know and seals it; this version
    drops the field when it reads the manifest, and the seal still holds."""
    art = persistkit.save({"w": [1.0]}, tmp_path / "a", backend="pickle")
    data = json.loads((art.path / "persistkit.json").read_text())
    data["added_later"] = {"x": 1}
    value = hmac.new(user_key(), manifest_module._canonical(data), hashlib.sha256).hexdigest()
    data["seal"] = {**data["seal"], "value": value}  # sealed by the newer writer, same key
    read = manifest_module.Manifest.from_dict(data)
    assert "added_later" not in read.to_dict()
    assert seal_state(read) == "yours"
