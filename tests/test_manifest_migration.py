"""The manifest format's migration table, tested for real: a format-1 artifact (tests/golden)
and one this release writes, read by a persistkit one format newer, go through every
migration, still verify, and are still their owner's (the seal covers what was written, not
this version's reading of it)."""

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


NEXT = manifest_module.FORMAT_VERSION + 1


@pytest.fixture
def next_format(monkeypatch: pytest.MonkeyPatch) -> list[dict[str, Any]]:
    """This persistkit reads format NEXT (one newer than the real one), which renamed
    ``notes`` to ``remarks``; reading an older manifest migrates it. Returns the dicts the
    last migration saw."""
    seen: list[dict[str, Any]] = []

    def to_next(data: dict[str, Any]) -> dict[str, Any]:
        seen.append(dict(data))
        data = dict(data)
        data["remarks"] = data.pop("notes", [])
        data["format"] = f"persistkit/{NEXT}"
        return data

    monkeypatch.setattr(manifest_module, "FORMAT_VERSION", NEXT)
    monkeypatch.setattr(manifest_module, "FORMAT", f"persistkit/{NEXT}")
    monkeypatch.setitem(manifest_module.MIGRATIONS, NEXT - 1, to_next)
    return seen


def test_a_golden_format_one_artifact_migrates_once_and_still_verifies(
    next_format: list[dict[str, Any]], tmp_path: Path
) -> None:
    artifact = tmp_path / "a"
    shutil.copytree(GOLDEN, artifact)
    before = (artifact / "persistkit.json").read_bytes()
    report = persistkit.verify(artifact, trusted=True)
    assert report.identical and report.example_checked
    assert json.loads(before)["format"] == "persistkit/1"
    assert next_format and next_format[0]["format"] == f"persistkit/{NEXT - 1}"
    assert (artifact / "persistkit.json").read_bytes() == before  # read, never rewritten


def test_a_migrated_manifest_is_still_sealed_by_its_owner(
    next_format: list[dict[str, Any]], tmp_path: Path
) -> None:
    """Sealed by this release by this user; read by the next: still theirs, not 'modified'."""
    art = persistkit.save({"w": [1.0, 2.0]}, tmp_path / "mine", backend="pickle")
    written = json.loads((art.path / "persistkit.json").read_text())
    assert written["format"] in (f"persistkit/{v}" for v in range(1, NEXT))
    read = manifest_module.Manifest.from_dict(written)
    assert next_format  # the migration ran
    assert read.format == f"persistkit/{NEXT}"
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
