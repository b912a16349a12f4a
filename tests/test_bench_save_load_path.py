"""The fast save/load path keeps integrity: files hashed while written get the digest of their
final bytes, and a load skips re-hashing only files verified earlier and unchanged since."""

from __future__ import annotations

import hashlib
import os
import time
from collections.abc import Callable
from pathlib import Path

import pytest

import persistkit
from persistkit import artifact, payload, verified
from persistkit.artifact import HashedFile, PayloadHasher, check_files
from persistkit.errors import ArtifactError, IntegrityError
from persistkit.manifest import read_manifest
from persistkit.verified import FileIdentity
from sklearn_helpers import tiny_forest


@pytest.fixture(autouse=True)
def small_batches(monkeypatch: pytest.MonkeyPatch) -> None:
    """Let the follower hash small increments, so these small files exercise following."""
    monkeypatch.setattr(artifact, "_MIN_BATCH", 1)
    monkeypatch.setattr(artifact, "_PREALLOCATION_LAG", 64 * 1024)


def _sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _write_slowly(path: Path, chunks: list[bytes], pause: float = 0.003) -> None:
    with open(path, "wb") as fh:
        for chunk in chunks:
            fh.write(chunk)
            fh.flush()
            time.sleep(pause)


def _hash_while(
    directory: Path, write: Callable[[], object], names: list[str], follow: bool = True
) -> list[HashedFile]:
    # the follower's mechanics, checked with sha256 (BLAKE3 is tested in test_file_digests)
    with PayloadHasher(directory, follow=follow, algorithm="sha256") as hasher:
        write()
    return hasher.entries(names)


def test_a_file_hashed_while_written_gets_the_digest_of_its_final_bytes(tmp_path: Path) -> None:
    chunks = [os.urandom(200_000 + i) for i in range(20)]
    hashed = _hash_while(tmp_path, lambda: _write_slowly(tmp_path / "m.bin", chunks), ["m.bin"])
    assert hashed[0].entry.sha256 == _sha(tmp_path / "m.bin")
    assert hashed[0].entry.size == sum(len(c) for c in chunks)


def test_several_files_in_subfolders_are_hashed_while_written(tmp_path: Path) -> None:
    def write() -> None:
        (tmp_path / "sub").mkdir()
        _write_slowly(tmp_path / "a.bin", [os.urandom(300_000)] * 3)
        _write_slowly(tmp_path / "sub" / "b.bin", [os.urandom(100_000)] * 5)

    hashed = _hash_while(tmp_path, write, ["a.bin", "sub/b.bin"])
    assert [h.entry.sha256 for h in hashed] == [
        _sha(tmp_path / "a.bin"),
        _sha(tmp_path / "sub" / "b.bin"),
    ]


def test_a_file_truncated_and_rewritten_during_the_save_is_hashed_again(tmp_path: Path) -> None:
    def write() -> None:
        _write_slowly(tmp_path / "m.bin", [os.urandom(500_000)] * 4)
        time.sleep(0.05)  # let the follower read the first version completely
        _write_slowly(tmp_path / "m.bin", [b"short"])

    hashed = _hash_while(tmp_path, write, ["m.bin"])
    assert hashed[0].entry.sha256 == _sha(tmp_path / "m.bin")


def test_a_file_written_under_a_temporary_name_then_renamed_is_hashed(tmp_path: Path) -> None:
    def write() -> None:
        _write_slowly(tmp_path / "m.tmp", [os.urandom(400_000)] * 3)
        os.replace(tmp_path / "m.tmp", tmp_path / "m.bin")

    hashed = _hash_while(tmp_path, write, ["m.bin"])
    assert hashed[0].entry.sha256 == _sha(tmp_path / "m.bin")


def test_a_file_extended_to_its_final_size_first_then_filled_in_order_is_hashed(
    tmp_path: Path,
) -> None:
    chunks = [os.urandom(1_000_000) for _ in range(12)]

    def write() -> None:  # what safetensors does: ftruncate to the full size, then write
        with open(tmp_path / "m.bin", "wb") as fh:
            fh.truncate(sum(len(c) for c in chunks))
            for chunk in chunks:
                fh.write(chunk)
                fh.flush()
                time.sleep(0.004)

    hashed = _hash_while(tmp_path, write, ["m.bin"])
    assert hashed[0].entry.sha256 == _sha(tmp_path / "m.bin")


def test_without_following_files_are_hashed_after_the_write(tmp_path: Path) -> None:
    hashed = _hash_while(
        tmp_path, lambda: (tmp_path / "m.bin").write_bytes(b"abc"), ["m.bin"], follow=False
    )
    assert hashed[0].entry.sha256 == hashlib.sha256(b"abc").hexdigest()


def test_a_reported_file_that_does_not_exist_is_an_artifact_error(tmp_path: Path) -> None:
    with pytest.raises(ArtifactError, match=r"ghost\.bin"):
        _hash_while(tmp_path, lambda: None, ["ghost.bin"])


def test_the_follower_releases_its_files_when_the_backend_fails(tmp_path: Path) -> None:
    def fail() -> None:
        _write_slowly(tmp_path / "m.bin", [b"x" * 100_000] * 5)
        raise RuntimeError("backend broke")

    before = len(os.listdir("/proc/self/fd"))
    with pytest.raises(RuntimeError), PayloadHasher(tmp_path, follow=True):
        fail()
    assert len(os.listdir("/proc/self/fd")) == before


def _count_hashes(monkeypatch: pytest.MonkeyPatch) -> list[Path]:
    """Record the path of every file a load or verify hashes (through its open descriptor)."""
    calls: list[Path] = []
    real = payload.hash_opened

    def counting(opened: payload.PayloadFile) -> str:
        calls.append(opened.path)
        return real(opened)

    monkeypatch.setattr(payload, "hash_opened", counting)
    return calls


@pytest.fixture
def saved(tmp_path: Path) -> Path:
    model, _X = tiny_forest()
    return persistkit.save(model, tmp_path / "forest").path


def test_loading_twice_hashes_each_file_at_most_once(
    saved: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    calls = _count_hashes(monkeypatch)
    persistkit.load(saved)
    first = len(calls)
    persistkit.load(saved)
    assert len(calls) == first


def test_a_fresh_save_loads_without_hashing_on_a_fine_grained_file_system(
    saved: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    if not verified.fine_ctime_after_stat(saved.parent, os.stat(saved).st_dev):
        pytest.skip("this file system has coarse timestamps: fresh saves are re-hashed once")
    calls = _count_hashes(monkeypatch)
    persistkit.load(saved)
    assert calls == []


def test_a_same_size_change_right_after_saving_is_still_caught(saved: Path) -> None:
    payload = saved / "model.joblib"
    fd = os.open(payload, os.O_RDWR)
    try:
        original = os.pread(fd, 1, 100)
        os.pwrite(fd, bytes([original[0] ^ 0xFF]), 100)
    finally:
        os.close(fd)
    with pytest.raises(IntegrityError, match="model.joblib"):
        persistkit.load(saved)


def test_a_file_replaced_by_another_with_the_same_bytes_count_is_re_hashed(
    saved: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    payload = saved / "model.joblib"
    persistkit.load(saved)
    data = payload.read_bytes()
    (saved / "copy").write_bytes(data)
    os.replace(saved / "copy", payload)  # new inode, same bytes
    calls = _count_hashes(monkeypatch)
    persistkit.load(saved)
    assert calls == [payload]


def test_rehash_environment_variable_hashes_on_every_load(
    saved: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    persistkit.load(saved)
    monkeypatch.setenv("PERSISTKIT_REHASH", "1")
    calls = _count_hashes(monkeypatch)
    persistkit.load(saved)
    persistkit.load(saved)
    assert len(calls) == 2 * len(read_manifest(saved).files)


def test_a_file_changed_while_it_was_hashed_is_not_recorded(tmp_path: Path) -> None:
    path = tmp_path / "m.bin"
    path.write_bytes(b"before")
    started = time.time_ns() - 10**10
    seen = FileIdentity.of(os.stat(path))
    path.write_bytes(b"after!")  # same size, written after the identity was taken
    assert not verified.remember_verified(path, "0" * 64, seen, stat_started_ns=started)
    assert not verified.already_verified(os.stat(path), "0" * 64)


def test_a_file_with_fresh_whole_second_timestamps_is_not_recorded(tmp_path: Path) -> None:
    path = tmp_path / "m.bin"
    path.write_bytes(b"data")
    whole_second = (time.time_ns() // 10**9) * 10**9
    os.utime(path, ns=(whole_second, whole_second))
    st = os.stat(path)
    coarse = FileIdentity(st.st_dev, st.st_ino, st.st_size, whole_second, whole_second)
    assert not verified._settled(coarse, stat_started_ns=whole_second + 10**6)


def test_an_old_unchanged_file_is_recorded_and_then_recognised(tmp_path: Path) -> None:
    path = tmp_path / "m.bin"
    path.write_bytes(b"data")
    st = os.stat(path)
    later = st.st_ctime_ns + 10**10
    assert verified.remember_verified(path, "a" * 64, FileIdentity.of(st), stat_started_ns=later)
    assert verified.already_verified(os.stat(path), "a" * 64)
    assert not verified.already_verified(os.stat(path), "b" * 64)


def test_check_files_forgets_a_record_when_the_file_fails(saved: Path) -> None:
    payload = saved / "model.joblib"
    manifest = read_manifest(saved)
    check_files(saved, manifest)
    data = bytearray(payload.read_bytes())
    data[10] ^= 1
    payload.write_bytes(bytes(data))
    with pytest.raises(IntegrityError):
        check_files(saved, manifest)
    assert not verified.already_verified(os.stat(payload), manifest.files[0].labelled)


def test_verify_always_hashes_every_file(saved: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    persistkit.load(saved)
    calls = _count_hashes(monkeypatch)
    persistkit.verify(saved)
    assert len(calls) == len(read_manifest(saved).files)


def test_the_record_is_pruned_to_half_when_it_grows_past_its_limit(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(verified, "MAX_RECORDS", 10)
    monkeypatch.setattr(verified, "_writes", 0)
    folder = verified.records_dir()
    folder.mkdir(parents=True)
    for i in range(30):
        (folder / f"old-{i}").write_text("x")
    path = tmp_path / "m.bin"
    path.write_bytes(b"data")
    st = os.stat(path)
    for _ in range(256):
        verified.remember_verified(
            path, "a" * 64, FileIdentity.of(st), stat_started_ns=st.st_ctime_ns + 10**10
        )
    assert len(os.listdir(folder)) <= 16
