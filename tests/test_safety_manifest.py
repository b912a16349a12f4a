"""Manifests are untrusted input: each kind of tampering gets its own clear error."""

from __future__ import annotations

import json
import re
from pathlib import Path, PurePosixPath
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import persistkit
from persistkit import manifest as manifest_module
from persistkit.errors import IntegrityError, ManifestError


@pytest.fixture
def artifact(tmp_path: Path) -> Path:
    persistkit.save({"w": [1.0, 2.0]}, tmp_path / "art", backend="pickle")
    return tmp_path / "art"


def _edit(artifact: Path, change: Any) -> None:
    """Edit the manifest and drop its seal (an edit under a seal is a SealBrokenError)."""
    path = artifact / "persistkit.json"
    manifest = json.loads(path.read_text())
    change(manifest)
    manifest.pop("seal", None)
    path.write_text(json.dumps(manifest))


def _first_file(manifest: dict[str, Any]) -> dict[str, Any]:
    return manifest["files"][0]


@pytest.mark.parametrize(
    "bad_path", ["../outside.pkl", "/etc/passwd", "a/../../b", "a\\b", "./model.pkl", ""]
)
def test_file_path_escaping_the_artifact_is_refused(artifact: Path, bad_path: str) -> None:
    _edit(artifact, lambda m: _first_file(m).update(path=bad_path))
    with pytest.raises(ManifestError, match="not allowed|escapes"):
        persistkit.load(artifact)


# the paths manifest.check_relative_path accepts without pathlib: dot-free segment starts
_PLAIN_SPEC = re.compile(r"[A-Za-z0-9_\-][A-Za-z0-9_.\-]*(?:/[A-Za-z0-9_\-][A-Za-z0-9_.\-]*)*")


@settings(max_examples=400, deadline=None)
@given(st.text(alphabet="aZ09_-./\\\x00 é", max_size=12))
def test_the_plain_path_shortcut_is_exactly_the_plain_path_rule(path: str) -> None:
    assert manifest_module._is_plain(path) == bool(_PLAIN_SPEC.fullmatch(path))
    try:
        accepted = manifest_module.check_relative_path(path) == path
    except ManifestError:
        accepted = False
    # whatever is accepted stays inside the artifact
    pure = PurePosixPath(path)
    assert not accepted or (path and not pure.is_absolute() and ".." not in pure.parts)


def test_missing_digest_is_refused(artifact: Path) -> None:
    _edit(artifact, lambda m: [_first_file(m).pop(k, None) for k in ("sha256", "blake3")])
    with pytest.raises(ManifestError, match="missing files.sha256"):
        persistkit.load(artifact)


@pytest.mark.parametrize(
    "digest",
    ["d41d8cd98f00b204e9800998ecf8427e", "0" * 63, "Z" * 64, "A" * 64, "0" * 65, "0" * 64 + "\n"],
)
def test_weak_or_malformed_digest_is_refused(artifact: Path, digest: str) -> None:
    _edit(artifact, lambda m: _first_file(m).pop("blake3", None))
    _edit(artifact, lambda m: _first_file(m).update(sha256=digest))
    with pytest.raises(ManifestError, match="no valid sha256"):
        persistkit.load(artifact)


def test_duplicate_json_keys_are_refused(artifact: Path) -> None:
    path = artifact / "persistkit.json"
    text = path.read_text()
    path.write_text(text.replace('"backend":', '"backend": {"name": "dill"}, "backend":', 1))
    with pytest.raises(ManifestError, match="repeats the key 'backend'"):
        persistkit.load(artifact)


def test_newer_format_version_is_refused_with_upgrade_hint(artifact: Path) -> None:
    _edit(artifact, lambda m: m.update(format="persistkit/99"))
    with pytest.raises(ManifestError, match="newer") as info:
        persistkit.load(artifact)
    assert "upgrade" in (info.value.hint or "")


def test_unknown_format_is_refused(artifact: Path) -> None:
    _edit(artifact, lambda m: m.update(format="something-else/1"))
    with pytest.raises(ManifestError, match="unknown manifest format"):
        persistkit.load(artifact)


def test_size_that_disagrees_with_the_file_is_refused(artifact: Path) -> None:
    _edit(artifact, lambda m: _first_file(m).update(size=_first_file(m)["size"] + 1))
    with pytest.raises(IntegrityError, match="truncated or was modified"):
        persistkit.load(artifact)


@pytest.mark.parametrize("size", [-1, True, "12"])
def test_invalid_size_is_refused(artifact: Path, size: object) -> None:
    _edit(artifact, lambda m: _first_file(m).update(size=size))
    with pytest.raises(ManifestError):
        persistkit.load(artifact)


def test_file_listed_twice_is_refused(artifact: Path) -> None:
    _edit(artifact, lambda m: m["files"].append(dict(_first_file(m))))
    with pytest.raises(ManifestError, match="twice"):
        persistkit.load(artifact)


def test_example_pointing_outside_the_file_list_is_refused(artifact: Path) -> None:
    _edit(artifact, lambda m: m.update(example={"inputs": "elsewhere.npy"}))
    with pytest.raises(ManifestError, match="not a listed file"):
        persistkit.load(artifact)


def test_missing_payload_file_is_an_integrity_error(artifact: Path) -> None:
    (artifact / persistkit.inspect(artifact).primary_file).unlink()
    with pytest.raises(IntegrityError, match="missing"):
        persistkit.load(artifact)


def test_manifest_that_is_not_an_object_is_refused(artifact: Path) -> None:
    (artifact / "persistkit.json").write_text("[1, 2, 3]")
    with pytest.raises(ManifestError, match="JSON object"):
        persistkit.inspect(artifact)


def test_oversized_manifest_is_refused_without_parsing(artifact: Path) -> None:
    from persistkit.manifest import MAX_MANIFEST_BYTES

    (artifact / "persistkit.json").write_bytes(b" " * (MAX_MANIFEST_BYTES + 10))
    with pytest.raises(ManifestError, match="limit"):
        persistkit.inspect(artifact)
