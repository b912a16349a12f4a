"""Streams that break the restricted machine's invariants using *only allowed globals* are
refused in every container the default policy reads — bare pickle, zlib joblib, torch zip, an
unsealed artifact whose hashes were recomputed, a store ref — and through every interface —
``load``, ``persistkit predict``, ``persistkit scan``, the server's model repository."""

from __future__ import annotations

import struct
import zipfile
import zlib
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

import persistkit
from hostile.corpus import recompute_payload
from persistkit.cli import main
from persistkit.errors import PersistkitError


def _g(module: str, name: str) -> bytes:
    return f"c{module}\n{name}\n".encode()


def _s(text: str) -> bytes:
    raw = text.encode()
    return b"X" + struct.pack("<I", len(raw)) + raw


STREAMS = {
    # an instance the stream made (a kernel: callable) is called
    "computed-callable": b"\x80\x02"
    + _g("sklearn.gaussian_process.kernels", "RBF")
    + b")\x81"
    + b"("
    + _s("x")
    + b"tR.",
    # BUILD onto an allowed class itself: would patch scipy for the whole process
    "build-onto-a-class": b"\x80\x02"
    + _g("scipy.interpolate._bsplines", "BSpline")
    + b"("
    + _s("__call__")
    + b"Nd"
    + b"b.",
    # a structured dtype whose object field overlaps raw bytes (pointer forging)
    "overlapping-object-field": b"\x80\x02"
    + _g("numpy", "dtype")
    + b"("
    + _s("V16")
    + b"\x89\x88tR"
    + b"(K\x03"
    + _s("|")
    + b"N("
    + _s("a")
    + _s("b")
    + b"t"
    + b"("
    + _s("a")
    + b"("
    + _g("numpy", "dtype")
    + b"("
    + _s("i8")
    + b"\x89\x88tRK\x00t"
    + _s("b")
    + b"("
    + _g("numpy", "dtype")
    + b"("
    + _s("O8")
    + b"\x89\x88tRK\x00t"
    + b"dK\x10K\x01K\x3ftb.",
}


@pytest.fixture(params=sorted(STREAMS))
def stream(request: pytest.FixtureRequest) -> bytes:
    return STREAMS[request.param]


def test_the_streams_are_well_formed_pickles() -> None:
    import pickletools

    for data in STREAMS.values():
        list(pickletools.genops(data))  # the refusals below are not parse errors


def test_bare_files(stream: bytes, tmp_path: Path) -> None:
    pkl = tmp_path / "model.pkl"
    pkl.write_bytes(stream)
    jl = tmp_path / "model.joblib"
    jl.write_bytes(zlib.compress(stream))
    for path in (pkl, jl):
        with pytest.raises(PersistkitError):
            persistkit.load(path)
        assert CliRunner().invoke(main, ["scan", str(path)]).exit_code == 1


def test_torch_zip(stream: bytes, tmp_path: Path) -> None:
    torch = pytest.importorskip("torch")
    torch.save({"w": torch.zeros(2)}, tmp_path / "m.pt")
    with zipfile.ZipFile(tmp_path / "m.pt") as zin, zipfile.ZipFile(tmp_path / "x.pt", "w") as out:
        for info in zin.infolist():
            data = stream if info.filename.endswith("/data.pkl") else zin.read(info.filename)
            out.writestr(info.filename, data)
    with pytest.raises(PersistkitError):
        persistkit.load(tmp_path / "x.pt")
    assert CliRunner().invoke(main, ["scan", str(tmp_path / "x.pt")]).exit_code == 1


def test_artifact_store_ref_predict_and_serve(
    stream: bytes, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from persistkit.server import ModelRepository

    monkeypatch.setenv("PERSISTKIT_HOME", str(tmp_path / "home"))
    art = tmp_path / "art"
    saved = persistkit.save(np.mean, art, backend="pickle")
    recompute_payload(art, saved.manifest.primary_file, stream)
    with pytest.raises(PersistkitError):
        persistkit.load(art)

    store_dir = tmp_path / "store"
    version = persistkit.Store(store_dir).save(np.mean, "m", backend="pickle")
    recompute_payload(version.path, version.manifest.primary_file, stream)
    with pytest.raises(PersistkitError):
        persistkit.load("m", store=str(store_dir))
    np.save(tmp_path / "x.npy", np.zeros((1, 3)))
    runner = CliRunner()
    for args in (
        ["predict", "m", str(tmp_path / "x.npy"), "--store", str(store_dir)],
        ["predict", str(art), str(tmp_path / "x.npy")],
        ["scan", "m", "--store", str(store_dir)],
        ["scan", str(art)],
    ):
        result = runner.invoke(main, args)
        assert result.exit_code == 1, (args, result.output)
    with pytest.raises(PersistkitError):
        ModelRepository(["m"], store=str(store_dir)).load()
    assert not list(tmp_path.rglob("PWNED*"))


def test_a_plain_estimator_still_loads_through_each_container(tmp_path: Path) -> None:
    # the control: the same containers with an honest stream load
    import pickle

    from sklearn.linear_model import LinearRegression

    model = LinearRegression().fit(np.arange(6.0).reshape(3, 2), [1.0, 2.0, 3.0])
    data = pickle.dumps(model, protocol=4)
    (tmp_path / "m.pkl").write_bytes(data)
    (tmp_path / "m.joblib").write_bytes(zlib.compress(data))
    for name in ("m.pkl", "m.joblib"):
        loaded = persistkit.load(tmp_path / name)
        assert np.array_equal(loaded.coef_, model.coef_)
        assert CliRunner().invoke(main, ["scan", str(tmp_path / name)]).exit_code == 0
