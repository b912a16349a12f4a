"""Payload files hashed from memory as they are written (persistkit.payload_writer), and the
safetensors layout persistkit writes itself: same bytes as the library, one pass."""

from __future__ import annotations

import json
import os
import struct
from pathlib import Path

import numpy as np
import pytest

import persistkit
from persistkit import artifact
from persistkit.digests import ENV_VAR, hexdigest_of
from persistkit.writer import MAX_QUEUED, SMALL

torch = pytest.importorskip("torch")
safetensors_torch = pytest.importorskip("safetensors.torch")

from persistkit_safetensors.writer import writable_here, write_tensors  # noqa: E402
from torch_models import MLP  # noqa: E402


def _digest(path: Path, algorithm: str) -> str:
    return hexdigest_of(algorithm, path.read_bytes())


@pytest.fixture(params=["blake3", "sha256"])
def algorithm(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
    """Each digest test runs for both file digests (BLAKE3, the default, and sha256)."""
    monkeypatch.setenv(ENV_VAR, request.param)
    return str(request.param)


def test_the_digest_is_that_of_the_bytes_written(tmp_path: Path, algorithm: str) -> None:
    rng = np.random.default_rng(0)
    big = rng.standard_normal(300_000)  # > SMALL, handed over as bytes
    with persistkit.payload_writer(tmp_path / "f") as fh:
        fh.write(b"head")
        fh.write(big.tobytes())
        fh.write(memoryview(b"x" * 10))
        fh.write(bytearray(SMALL + 5))
    assert fh.algorithm == algorithm
    assert fh.digest == _digest(tmp_path / "f", algorithm)
    assert fh.size == (tmp_path / "f").stat().st_size == 4 + big.nbytes + 10 + SMALL + 5


def test_a_buffer_reused_after_write_returns_is_hashed_as_written(
    tmp_path: Path, algorithm: str
) -> None:
    buf = bytearray(b"a" * (SMALL * 4))
    with persistkit.payload_writer(tmp_path / "f") as fh:
        for fill in (b"b", b"c", b"d"):
            fh.write(buf)
            buf[:] = fill * len(buf)  # the writer may not hash this later
    assert fh.digest == _digest(tmp_path / "f", algorithm)


def test_stable_memory_is_hashed_right_even_when_many_writes_wait(
    tmp_path: Path, algorithm: str
) -> None:
    arrays = [np.full(SMALL, i, dtype=np.uint8) for i in range(40)]
    with persistkit.payload_writer(tmp_path / "f", stable=arrays) as fh:
        for a in arrays:
            fh.write(memoryview(a))
    assert fh.digest == _digest(tmp_path / "f", algorithm)


def test_queued_bytes_are_bounded(tmp_path: Path, algorithm: str) -> None:
    chunk = bytes(16 * 1024 * 1024)
    with persistkit.payload_writer(tmp_path / "f") as fh:
        for _ in range(8):
            fh.write(chunk)
            assert fh._queued <= MAX_QUEUED
    assert fh.digest == _digest(tmp_path / "f", algorithm)


def test_a_writer_never_replaces_a_file(tmp_path: Path) -> None:
    (tmp_path / "f").write_bytes(b"old")
    with pytest.raises(FileExistsError):
        persistkit.payload_writer(tmp_path / "f")
    assert (tmp_path / "f").read_bytes() == b"old"


def test_a_failed_write_stops_the_hasher(tmp_path: Path) -> None:
    with pytest.raises(ValueError), persistkit.payload_writer(tmp_path / "f") as fh:
        fh.write(bytes(SMALL * 2))
        raise ValueError("the backend failed")
    assert fh.closed and fh.digest is None


def _state() -> dict[str, object]:
    torch.manual_seed(0)
    return {
        "w": torch.randn(64, 33),
        "b": torch.randn(33).to(torch.float16),
        "steps": torch.arange(7),
        "mask": torch.tensor([True, False]),
        "empty": torch.zeros(0),
        "bf": torch.randn(5).to(torch.bfloat16),
    }


def test_our_safetensors_file_is_byte_identical_to_the_librarys(tmp_path: Path) -> None:
    state = _state()
    assert writable_here(state)
    write_tensors(state, tmp_path / "ours.safetensors", {"format": "pt"})
    safetensors_torch.save_file(state, str(tmp_path / "lib.safetensors"), metadata={"format": "pt"})
    assert (tmp_path / "ours.safetensors").read_bytes() == (
        tmp_path / "lib.safetensors"
    ).read_bytes()


def test_the_library_reads_our_file_with_its_metadata(tmp_path: Path) -> None:
    state = _state()
    write_tensors(state, tmp_path / "ours.safetensors", {"format": "pt", "note": "ü"})
    loaded = safetensors_torch.load_file(str(tmp_path / "ours.safetensors"))
    assert set(loaded) == set(state)
    assert all(torch.equal(loaded[k], state[k]) for k in state)  # type: ignore[call-overload]
    from safetensors import safe_open

    with safe_open(str(tmp_path / "ours.safetensors"), framework="pt") as f:
        assert f.metadata() == {"format": "pt", "note": "ü"}


def test_unusual_tensors_are_left_to_the_library() -> None:
    base = torch.randn(4, 4)
    assert not writable_here({"t": base.t()})  # not contiguous
    assert not writable_here({"a": base, "b": base.view(16)})  # shared memory
    assert not writable_here({})


@pytest.mark.parametrize("backend", ["safetensors", "torch", "joblib"])
def test_a_save_hashes_from_memory_and_never_reads_its_payload_back(
    tmp_path: Path, backend: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    model = MLP([300, 200, 3], batchnorm=True).eval()
    read_back: list[str] = []
    real_hash_file = artifact.hash_file
    real_mapped = artifact._hash_mapped

    def hash_file(path: Path, algorithm: str = "sha256") -> tuple[int, str]:
        read_back.append(Path(path).name)
        return real_hash_file(path, algorithm)

    def hash_mapped(fd: int, digest: object, start: int, stop: int) -> int:
        # by name: the follower may map a small file written later (requirements.txt)
        read_back.append(os.path.basename(os.readlink(f"/proc/self/fd/{fd}")))
        return real_mapped(fd, digest, start, stop)  # type: ignore[arg-type]

    monkeypatch.setattr(artifact, "hash_file", hash_file)
    monkeypatch.setattr(artifact, "_hash_mapped", hash_mapped)
    art = persistkit.save(model, tmp_path / "a", backend=backend)
    payload = art.manifest.files[0]
    assert payload.path.startswith("model.")
    assert payload.path not in read_back
    assert payload.digest == _digest(art.path / payload.path, payload.algorithm)
    assert persistkit.verify(art.path, trusted=True)  # every byte re-hashed by verify
    monkeypatch.undo()
    loaded = persistkit.load(art.path, trusted=True)
    x = torch.randn(2, 300)
    with torch.no_grad():
        assert torch.equal(loaded(x), model(x))


def test_a_saved_safetensors_payload_is_the_librarys_format(tmp_path: Path) -> None:
    model = torch.nn.Linear(5, 3)
    art = persistkit.save(model, tmp_path / "a", backend="safetensors")
    path = art.path / "model.safetensors"
    (length,) = struct.unpack("<Q", path.read_bytes()[:8])
    header = json.loads(path.read_bytes()[8 : 8 + length])
    assert header["__metadata__"] == {"format": "pt"}
    loaded = safetensors_torch.load_file(str(path))
    assert torch.equal(loaded["weight"], model.weight.detach())
