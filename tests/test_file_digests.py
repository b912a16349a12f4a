"""File digests: saves record BLAKE3 (manifest format 2) when the blake3 module is there,
sha256 (format 1, byte for byte what earlier releases wrote) when it is not or when
``PERSISTKIT_FILE_DIGEST=sha256`` asks for it; every check uses the entry's own algorithm."""

from __future__ import annotations

import json
import os
import shutil
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from click.testing import CliRunner

import persistkit
from persistkit import manifest as manifest_module
from persistkit.artifact import PayloadHasher
from persistkit.cli import main
from persistkit.digests import ENV_VAR, hexdigest_of, save_algorithm
from persistkit.errors import IntegrityError, ManifestError, MissingExtraError, OptionError
from persistkit.manifest import FileEntry, Manifest

torch = pytest.importorskip("torch")
pytest.importorskip("safetensors")
pytest.importorskip("joblib")

from torch_models import MLP  # noqa: E402

GOLDEN = Path(__file__).parent / "golden" / "persistkit-0.1.0"
BACKENDS = ["safetensors", "torch", "joblib", "pickle"]


def _model(backend: str) -> Any:
    if backend in ("safetensors", "torch"):
        torch.manual_seed(0)
        return MLP([20, 16, 3]).eval()
    return {"w": np.arange(300_000, dtype=np.float64), "label": "x"}


def _written(path: Path) -> dict[str, Any]:
    data: dict[str, Any] = json.loads((path / "persistkit.json").read_text())
    return data


def _flip_a_byte(path: Path) -> None:
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0x01
    path.chmod(0o644)
    path.write_bytes(bytes(data))


@pytest.mark.parametrize("backend", BACKENDS)
def test_a_save_records_blake3_in_format_two_and_loads_and_verifies(
    tmp_path: Path, backend: str
) -> None:
    art = persistkit.save(_model(backend), tmp_path / "a", backend=backend)
    written = _written(art.path)
    assert written["format"] == "persistkit/2"
    for entry in written["files"]:
        assert set(entry) == {"path", "size", "blake3"}
        assert entry["blake3"] == hexdigest_of("blake3", (art.path / entry["path"]).read_bytes())
    assert persistkit.load(art.path, trusted=True) is not None
    assert persistkit.verify(art.path, trusted=True)


@pytest.mark.parametrize("backend", BACKENDS)
def test_a_flipped_byte_in_a_blake3_payload_is_caught(tmp_path: Path, backend: str) -> None:
    art = persistkit.save(_model(backend), tmp_path / "a", backend=backend)
    _flip_a_byte(art.path / art.manifest.primary_file)
    with pytest.raises(IntegrityError, match="does not match its blake3"):
        persistkit.load(art.path, trusted=True)


def test_forcing_sha256_writes_format_one_shaped_like_before(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(ENV_VAR, "sha256")
    art = persistkit.save(_model("pickle"), tmp_path / "a", backend="pickle")
    written = _written(art.path)
    golden = _written(GOLDEN / "pickle")
    assert written["format"] == golden["format"] == "persistkit/1"
    assert [list(e) for e in written["files"]] == [["path", "size", "sha256"]] * len(
        written["files"]
    )
    assert list(golden["files"][0]) == ["path", "size", "sha256"]
    assert "blake3" not in (art.path / "persistkit.json").read_text()
    assert np.array_equal(persistkit.load(art.path)["w"], _model("pickle")["w"])


@pytest.mark.parametrize("name", sorted(p.name for p in GOLDEN.iterdir()))
def test_a_format_one_manifest_is_written_back_byte_for_byte(name: str) -> None:
    """Reading a 0.1 manifest and writing it again gives the same bytes: its seal and its
    version digest (``name@sha256:...``) do not move."""
    text = (GOLDEN / name / "persistkit.json").read_text()
    read = Manifest.from_json(text)
    assert read.written_format == "persistkit/1"
    assert read.to_json() == text


def test_a_format_one_golden_artifact_still_loads(tmp_path: Path) -> None:
    shutil.copytree(GOLDEN / "joblib", tmp_path / "a")
    assert persistkit.verify(tmp_path / "a", trusted=True).identical


def _format_two(tmp_path: Path) -> dict[str, Any]:
    art = persistkit.save({"w": [1.0]}, tmp_path / "a", backend="pickle")
    return _written(art.path)


def test_a_bad_blake3_hex_is_refused_at_read(tmp_path: Path) -> None:
    data = _format_two(tmp_path)
    for bad in ("ABC", "0" * 63, "Z" * 64, "0" * 65):
        data["files"][0]["blake3"] = bad
        with pytest.raises(ManifestError, match="no valid blake3 digest"):
            Manifest.from_dict(data)


def test_an_entry_with_two_digests_is_refused(tmp_path: Path) -> None:
    data = _format_two(tmp_path)
    data["files"][0]["sha256"] = "0" * 64
    with pytest.raises(ManifestError, match="exactly one"):
        Manifest.from_dict(data)


def test_a_format_one_manifest_cannot_hold_a_blake3_digest(tmp_path: Path) -> None:
    data = _format_two(tmp_path)
    data["format"] = "persistkit/1"
    with pytest.raises(ManifestError, match="format 1 cannot hold"):
        Manifest.from_dict(data)


def test_a_release_that_reads_only_format_one_refuses_format_two_loudly(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The path every earlier release takes (its ``_migrate`` has had this check since 0.1)."""
    data = _format_two(tmp_path)
    monkeypatch.setattr(manifest_module, "FORMAT_VERSION", 1)
    monkeypatch.setattr(manifest_module, "FORMAT", "persistkit/1")
    with pytest.raises(ManifestError, match="newer than this persistkit") as caught:
        Manifest.from_dict(data)
    assert "upgrade persistkit" in (caught.value.hint or "")


def test_a_mixed_manifest_is_format_two_and_an_all_sha256_one_format_one() -> None:
    sha = FileEntry("a", 1, sha256="0" * 64)
    b3 = FileEntry("b", 1, blake3="1" * 64)
    assert Manifest(backend="pickle", files=[sha]).to_dict()["format"] == "persistkit/1"
    assert Manifest(backend="pickle", files=[sha, b3]).to_dict()["format"] == "persistkit/2"
    assert b3.to_dict() == {"path": "b", "size": 1, "blake3": "1" * 64}


def test_without_the_blake3_module_saves_fall_back_to_sha256(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv(ENV_VAR, raising=False)
    monkeypatch.setitem(sys.modules, "blake3", None)
    assert save_algorithm() == "sha256"
    art = persistkit.save(_model("safetensors"), tmp_path / "a", backend="safetensors")
    written = _written(art.path)
    assert written["format"] == "persistkit/1"
    assert all(set(e) == {"path", "size", "sha256"} for e in written["files"])
    assert persistkit.load(art.path, trusted=True) is not None


def test_asking_for_blake3_without_the_module_says_what_to_install(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv(ENV_VAR, "blake3")
    monkeypatch.setitem(sys.modules, "blake3", None)
    with pytest.raises(MissingExtraError) as caught:
        save_algorithm()
    assert "pip install" in (caught.value.hint or "")


def test_checking_a_blake3_file_without_the_module_says_what_to_install(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    art = persistkit.save({"w": [1.0]}, tmp_path / "a", backend="pickle")
    monkeypatch.setenv("PERSISTKIT_REHASH", "1")
    monkeypatch.setitem(sys.modules, "blake3", None)
    with pytest.raises(MissingExtraError, match="blake3"):
        persistkit.load(art.path)


def test_an_unknown_digest_name_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(ENV_VAR, "md5")
    with pytest.raises(OptionError, match="md5"):
        save_algorithm()


def test_a_file_followed_while_written_gets_its_blake3(tmp_path: Path) -> None:
    """The follower (backends that do not write through payload_writer) hashes in BLAKE3."""
    chunks = [os.urandom(300_000 + i) for i in range(10)]

    def write() -> None:
        with open(tmp_path / "m.bin", "wb") as fh:
            for chunk in chunks:
                fh.write(chunk)
                fh.flush()
                time.sleep(0.002)

    with PayloadHasher(tmp_path, follow=True, algorithm="blake3") as hasher:
        write()
    (hashed,) = hasher.entries(["m.bin"])
    assert hashed.entry.blake3 == hexdigest_of("blake3", b"".join(chunks))


def test_show_prints_the_algorithm_of_each_file(tmp_path: Path) -> None:
    art = persistkit.save({"w": [1.0]}, tmp_path / "a", backend="pickle")
    result = CliRunner().invoke(main, ["show", str(art.path)])
    assert result.exit_code == 0, result.output
    assert f"blake3:{art.manifest.files[0].digest[:16]}" in result.output
