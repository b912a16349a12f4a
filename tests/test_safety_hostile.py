"""The hostile corpus: every payload is refused by default and no marker file ever appears."""

from __future__ import annotations

import io
import pickle
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import persistkit
from hostile.corpus import (
    HAND_BUILT,
    NOT_LIVE,
    REDUCE_PAYLOADS,
    Call,
    Evil,
    liveness_script,
    recompute_payload,
    reduce_payload,
)
from persistkit.errors import PersistkitError, UntrustedArtifactError
from persistkit.safety import TrustPolicy, scan_globals

PROTOCOLS = range(6)


@pytest.fixture
def marker(tmp_path: Path) -> Path:
    return tmp_path / "PWNED"


def _refused(data: bytes) -> PersistkitError:
    with pytest.raises(PersistkitError) as info:
        TrustPolicy().unpickle(io.BytesIO(data))
    return info.value


@pytest.mark.parametrize("protocol", PROTOCOLS)
@pytest.mark.parametrize("name", sorted(REDUCE_PAYLOADS))
def test_reduce_payload_is_refused_and_never_runs(name: str, protocol: int, marker: Path) -> None:
    error = _refused(reduce_payload(name, marker, protocol))
    assert isinstance(error, UntrustedArtifactError)
    assert not marker.exists()


@pytest.mark.parametrize("name", sorted(HAND_BUILT))
def test_hand_built_stream_is_refused_and_never_runs(name: str, marker: Path) -> None:
    _refused(HAND_BUILT[name](marker))
    assert not marker.exists()


def test_every_corpus_payload_is_live_under_plain_pickle(tmp_path: Path) -> None:
    # proves the corpus is not made of duds: plain pickle.loads runs each payload
    cases = {}
    for name in REDUCE_PAYLOADS:
        if name in NOT_LIVE:
            continue
        marker = tmp_path / f"live-{len(cases)}"
        cases[name] = (reduce_payload(name, marker, 4), str(marker))
    for name, build in HAND_BUILT.items():
        if name in NOT_LIVE:
            continue
        marker = tmp_path / f"live-{len(cases)}"
        cases[name] = (build(marker), str(marker))
    result = subprocess.run(
        [sys.executable, "-c", liveness_script(cases)],
        capture_output=True,
        text=True,
        timeout=120,
        stdin=subprocess.DEVNULL,
        cwd=tmp_path,
    )
    ran = {line[4:] for line in result.stdout.splitlines() if line.startswith("RAN:")}
    assert ran == set(cases), f"payloads that did not run: {sorted(set(cases) - ran)}"


def test_refusal_lists_every_global_the_payload_would_import(marker: Path) -> None:
    payload = {"a": Call(subprocess.call, ["true"]), "b": Evil(str(marker))}
    error = _refused(pickle.dumps(payload, protocol=4))
    assert isinstance(error, UntrustedArtifactError)
    assert error.globals_needed == ["posix.system", "subprocess.call"]
    assert "trusted=['posix.system', 'subprocess.call']" in str(error)


def test_memo_indirection_names_the_real_global(marker: Path) -> None:
    assert scan_globals(HAND_BUILT["memo-STACK_GLOBAL"](marker)) == ["posix.system"]


def test_allowed_class_called_directly_with_a_huge_shape_is_refused() -> None:
    error = _refused(pickle.dumps(Call(np.ndarray, (10**12,)), protocol=4))
    assert isinstance(error, UntrustedArtifactError)


def test_trusted_names_let_exactly_those_globals_through(marker: Path) -> None:
    data = pickle.dumps({"x": Call(subprocess.call, ["true"])}, protocol=4)
    with pytest.raises(UntrustedArtifactError):
        TrustPolicy.from_argument(["subprocess.check_call"]).unpickle(io.BytesIO(data))
    loaded = TrustPolicy.from_argument(["subprocess.call"]).unpickle(io.BytesIO(data))
    assert loaded == {"x": 0}


# -- containers -------------------------------------------------------------------------------


@pytest.mark.parametrize("compress", [0, 3, ("gzip", 3), ("bz2", 3), ("xz", 3), ("lzma", 3)])
def test_joblib_file_with_payload_is_refused(
    compress: object, tmp_path: Path, marker: Path
) -> None:
    import joblib

    path = tmp_path / "model.joblib"
    joblib.dump({"weights": np.zeros(5), "evil": Evil(str(marker))}, path, compress=compress)
    with pytest.raises(UntrustedArtifactError):
        TrustPolicy().load_joblib(path)
    assert not marker.exists()


def test_joblib_object_array_with_payload_is_refused(tmp_path: Path, marker: Path) -> None:
    import joblib

    path = tmp_path / "model.joblib"
    joblib.dump({"objects": np.array([1, Evil(str(marker))], dtype=object)}, path)
    with pytest.raises(UntrustedArtifactError) as info:
        TrustPolicy().load_joblib(path)
    assert "posix.system" in info.value.globals_needed
    assert not marker.exists()


def test_torch_zip_with_payload_is_refused(tmp_path: Path, marker: Path) -> None:
    torch = pytest.importorskip("torch")
    path = tmp_path / "model.pt"
    torch.save({"w": torch.zeros(2), "evil": Evil(str(marker))}, path)
    with pytest.raises(UntrustedArtifactError):
        TrustPolicy().load_torch(path)
    assert not marker.exists()


@pytest.mark.parametrize("backend", ["pickle", "joblib"])
def test_artifact_with_recomputed_hashes_is_refused(
    backend: str, tmp_path: Path, marker: Path
) -> None:
    artifact = tmp_path / "art"
    saved = persistkit.save({"w": [1.0, 2.0]}, artifact, backend=backend)
    evil = pickle.dumps({"w": Evil(str(marker))}, protocol=4)
    recompute_payload(artifact, saved.manifest.primary_file, evil)
    with pytest.raises(UntrustedArtifactError):
        persistkit.load(artifact)
    assert not marker.exists()


def test_bare_pickle_file_with_payload_is_refused(tmp_path: Path, marker: Path) -> None:
    path = tmp_path / "model.pkl"
    path.write_bytes(reduce_payload("os.system", marker, 5))
    with pytest.raises(UntrustedArtifactError):
        persistkit.load(path)
    assert not marker.exists()


def test_bare_joblib_file_with_payload_is_refused(tmp_path: Path, marker: Path) -> None:
    import joblib

    path = tmp_path / "model.joblib"
    joblib.dump([np.ones(3), Evil(str(marker))], path)
    with pytest.raises(UntrustedArtifactError):
        persistkit.load(path)
    assert not marker.exists()


def test_torch_artifact_with_recomputed_hashes_is_refused(tmp_path: Path, marker: Path) -> None:
    torch = pytest.importorskip("torch")
    artifact = tmp_path / "art"
    saved = persistkit.save(torch.nn.Linear(2, 2), artifact, backend="torch")
    evil = io.BytesIO()
    torch.save({"w": torch.zeros(2), "evil": Evil(str(marker))}, evil)
    recompute_payload(artifact, saved.manifest.primary_file, evil.getvalue())
    with pytest.raises(UntrustedArtifactError):
        persistkit.load(artifact)
    assert not marker.exists()
