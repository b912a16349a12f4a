"""Trust is explicit and narrow: own seals, shared keys, trusted= lists, trusted=True."""

from __future__ import annotations

import collections
import json
import os
from pathlib import Path

import pytest

import persistkit
from hostile.corpus import Evil
from persistkit.errors import SealBrokenError, SigningKeyError, UntrustedArtifactError
from persistkit.manager import reset_plugins
from persistkit.safety import seal_is_valid


def _become_someone_else(monkeypatch: pytest.MonkeyPatch, tmp_path: Path, who: str) -> None:
    """Switch to another user's persistkit home (and so another signing key)."""
    monkeypatch.setenv("PERSISTKIT_HOME", str(tmp_path / f"home-{who}"))
    reset_plugins()


def _counter_artifact(tmp_path: Path) -> Path:
    # collections.Counter is ordinary but not on the allow-list
    persistkit.save(collections.Counter("hello"), tmp_path / "art", backend="pickle")
    return tmp_path / "art"


def test_own_cloudpickle_artifact_loads_without_trusted(tmp_path: Path) -> None:
    pytest.importorskip("cloudpickle")
    persistkit.save(lambda x: x * 2, tmp_path / "fn", backend="cloudpickle")
    assert persistkit.load(tmp_path / "fn")(21) == 42


def test_someone_elses_cloudpickle_artifact_is_refused(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    pytest.importorskip("cloudpickle")
    persistkit.save(lambda x: x * 2, tmp_path / "fn", backend="cloudpickle")
    _become_someone_else(monkeypatch, tmp_path, "bob")
    with pytest.raises(UntrustedArtifactError):
        persistkit.load(tmp_path / "fn")


def test_trusting_a_teammates_key_accepts_their_seals(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    pytest.importorskip("cloudpickle")
    persistkit.save(lambda x: x + 1, tmp_path / "fn", backend="cloudpickle")
    alice_key = persistkit.export_key()
    _become_someone_else(monkeypatch, tmp_path, "bob")
    persistkit.trust_key(alice_key)
    assert persistkit.load(tmp_path / "fn")(1) == 2


def test_hash_match_alone_is_not_trust(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    artifact = _counter_artifact(tmp_path)
    _become_someone_else(monkeypatch, tmp_path, "bob")
    persistkit.verify(artifact, trusted=["collections.Counter"])  # every hash is right
    with pytest.raises(UntrustedArtifactError) as info:
        persistkit.load(artifact)
    assert info.value.globals_needed == ["collections.Counter"]


def test_trusted_list_admits_exactly_the_named_type(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    artifact = _counter_artifact(tmp_path)
    _become_someone_else(monkeypatch, tmp_path, "bob")
    assert persistkit.load(artifact, trusted=["collections.Counter"]) == collections.Counter(
        "hello"
    )
    with pytest.raises(UntrustedArtifactError):
        persistkit.load(artifact, trusted=["collections"])  # a module name trusts nothing


def test_trusted_true_runs_the_files_code(tmp_path: Path) -> None:
    marker = tmp_path / "ran"
    path = tmp_path / "model.pkl"
    import pickle

    path.write_bytes(pickle.dumps(Evil(str(marker))))
    with pytest.raises(UntrustedArtifactError):
        persistkit.load(path)
    assert not marker.exists()
    persistkit.load(path, trusted=True)
    assert marker.exists()  # documented: trusted=True means running this file's code


def test_editing_a_sealed_manifest_breaks_the_seal(tmp_path: Path) -> None:
    artifact = _counter_artifact(tmp_path)
    assert seal_is_valid(persistkit.inspect(artifact))
    manifest_path = artifact / "persistkit.json"
    manifest = json.loads(manifest_path.read_text())
    manifest["metadata"] = {"owner": "mallory"}
    manifest_path.write_text(json.dumps(manifest))
    assert not seal_is_valid(persistkit.inspect(artifact))
    with pytest.raises(SealBrokenError, match="changed after it was sealed"):
        persistkit.load(artifact)
    manifest.pop("seal")  # handed over unsealed: a stranger's file, refused as untrusted
    manifest_path.write_text(json.dumps(manifest))
    with pytest.raises(UntrustedArtifactError):
        persistkit.load(artifact)


def test_seal_with_unknown_key_id_is_not_trusted(tmp_path: Path) -> None:
    artifact = _counter_artifact(tmp_path)
    manifest_path = artifact / "persistkit.json"
    manifest = json.loads(manifest_path.read_text())
    manifest["seal"]["key_id"] = "0" * 16
    manifest_path.write_text(json.dumps(manifest))
    assert not seal_is_valid(persistkit.inspect(artifact))


def test_signing_key_file_is_private(tmp_path: Path) -> None:
    from persistkit.safety.signing import key_path, user_key

    user_key()
    assert os.stat(key_path()).st_mode & 0o077 == 0


@pytest.mark.parametrize("bad", ["not hex", "abcd", ""])
def test_trust_key_rejects_malformed_keys(bad: str) -> None:
    with pytest.raises(SigningKeyError):
        persistkit.trust_key(bad)


def test_a_damaged_signing_key_file_is_a_signing_key_error() -> None:
    from persistkit.safety.signing import key_path, user_key

    user_key()
    key_path().write_text("not hex at all\n")
    with pytest.raises(SigningKeyError, match="damaged"):
        persistkit.export_key()


def test_user_key_is_stable_across_calls() -> None:
    from persistkit.safety.signing import user_key

    assert user_key() == user_key()


def test_verify_false_never_trusts_a_seal_over_a_swapped_payload(tmp_path: Path) -> None:
    import pickle

    marker = tmp_path / "ran"
    artifact = tmp_path / "big"
    persistkit.save(collections.Counter(range(200)), artifact, backend="pickle")
    payload = artifact / persistkit.inspect(artifact).primary_file
    evil = pickle.dumps(Evil(str(marker)))
    size = payload.stat().st_size
    assert len(evil) <= size  # same size, so only the sha256 can tell
    payload.write_bytes(evil.ljust(size, b"\x00"))
    with pytest.raises(persistkit.errors.IntegrityError):
        persistkit.load(artifact, verify=False)
    assert not marker.exists()


def test_threads_creating_the_signing_key_at_once_agree() -> None:
    from concurrent.futures import ThreadPoolExecutor

    from persistkit.safety.signing import user_key

    with ThreadPoolExecutor(8) as pool:
        keys = set(pool.map(lambda _: user_key(), range(16)))
    assert len(keys) == 1
