"""`persistkit scan FILE|REF`: the audit, without loading anything."""

from __future__ import annotations

import json
import pickle
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

import persistkit
from hostile.corpus import Evil
from persistkit.cli import main


def _scan(*args: str) -> tuple[int, str]:
    result = CliRunner().invoke(main, ["scan", *args])
    return result.exit_code, result.output


def test_scan_of_a_clean_joblib_file_exits_0(tmp_path: Path) -> None:
    import joblib

    path = tmp_path / "ok.joblib"
    joblib.dump({"w": np.arange(4.0)}, path, compress=3)
    code, out = _scan(str(path))
    assert code == 0
    assert "joblib (zlib)" in out and "verdict: clean" in out


def test_scan_of_a_hostile_pickle_exits_1_and_names_the_global(tmp_path: Path) -> None:
    marker = tmp_path / "ran"
    path = tmp_path / "evil.pkl"
    path.write_bytes(pickle.dumps({"x": Evil(str(marker))}))
    code, out = _scan(str(path))
    assert code == 1
    assert "posix.system" in out and "--trust" in out and "trusted=" not in out
    assert not marker.exists()


def test_scan_json_lists_allowed_and_untrusted_globals(tmp_path: Path) -> None:
    path = tmp_path / "mixed.pkl"
    path.write_bytes(pickle.dumps({"a": np.zeros(2), "b": Evil(str(tmp_path / "m"))}))
    code, out = _scan(str(path), "--json")
    report = json.loads(out)
    assert code == 1
    assert report["untrusted_globals"] == ["posix.system"]
    assert "numpy.dtype" in report["files"][0]["allowed_globals"]
    assert report["files"][0]["format"] == "pickle"
    assert report["files"][0]["size_bytes"] == path.stat().st_size


def test_scan_of_a_store_ref_audits_its_payload(tmp_path: Path) -> None:
    store = tmp_path / "store"
    persistkit.save({"w": [1, 2]}, "weights", store=str(store), backend="joblib")
    code, out = _scan("weights", "--store", str(store), "--json")
    report = json.loads(out)
    assert code == 0
    assert report["backend"] == "joblib" and report["sealed_by_trusted_key"] is True


def test_scan_of_own_sealed_cloudpickle_artifact_exits_0_but_lists_globals(tmp_path: Path) -> None:
    pytest.importorskip("cloudpickle")
    persistkit.save(lambda x: x, tmp_path / "fn", backend="cloudpickle")
    code, out = _scan(str(tmp_path / "fn"), "--json")
    report = json.loads(out)
    assert code == 0
    assert report["clean"] is False and report["untrusted_globals"]


def test_scan_of_a_truncated_file_reports_damage(tmp_path: Path) -> None:
    path = tmp_path / "cut.pkl"
    path.write_bytes(pickle.dumps(list(range(100)), protocol=4)[:-7])
    code, out = _scan(str(path))
    assert code == 1
    assert "DAMAGED" in out


def test_scan_of_a_torch_file_skips_storage_markers(tmp_path: Path) -> None:
    torch = pytest.importorskip("torch")
    path = tmp_path / "m.pt"
    torch.save(torch.nn.Linear(2, 2), path)
    code, out = _scan(str(path), "--json")
    report = json.loads(out)
    assert code == 0
    assert report["files"][0]["format"] == "torch-zip"
    assert "torch.nn.modules.linear.Linear" in report["files"][0]["allowed_globals"]


def test_scan_of_an_object_npy_file_audits_its_pickle(tmp_path: Path) -> None:
    path = tmp_path / "objects.npy"
    np.save(path, np.array([Evil(str(tmp_path / "m"))], dtype=object), allow_pickle=True)
    code, out = _scan(str(path), "--json")
    report = json.loads(out)
    assert code == 1
    assert report["files"][0]["format"] == "npy"
    assert report["untrusted_globals"] == ["posix.system"]


def test_scan_of_someone_elses_safetensors_module_names_the_class_it_rebuilds_with(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # the weights file imports nothing, but loading imports the recorded class: scan must not
    # say "loads by default" when load refuses
    pytest.importorskip("torch")
    from torch_helpers import as_stranger
    from torch_models import MLP

    persistkit.save(MLP([3, 2]), tmp_path / "mlp", backend="safetensors")
    as_stranger(monkeypatch, tmp_path)
    code, out = _scan(str(tmp_path / "mlp"), "--json")
    report = json.loads(out)
    assert code == 1
    assert report["rebuild_imports"] == ["torch_models.MLP"]
    assert report["untrusted_globals"] == ["torch_models.MLP"]
    assert report["loads_by_default"] is False


def test_scan_of_a_stream_that_breaks_a_rule_says_refused(tmp_path: Path) -> None:
    # only allowed globals, but an instance the stream made is called
    path = tmp_path / "m.pkl"
    path.write_bytes(
        b"\x80\x02csklearn.gaussian_process.kernels\nRBF\n)\x81(X\x01\x00\x00\x00xtR."
    )
    code, out = _scan(str(path))
    assert code == 1
    assert "REFUSED" in out and "verdict: refused" in out


def test_scan_of_an_onnx_file_is_its_safe_load(tmp_path: Path) -> None:
    """ONNX carries no code: scan's verdict is the default load's (not a pickle audit)."""
    pytest.importorskip("onnxruntime")
    from click.testing import CliRunner

    from persistkit.cli import main
    from sklearn_helpers import tiny_forest

    model, X = tiny_forest()
    art = persistkit.save(model, tmp_path / "art", example=X[:4], backend="onnx")
    good = tmp_path / "good.onnx"
    good.write_bytes((art.path / "model.onnx").read_bytes())
    bad = tmp_path / "bad.onnx"
    bad.write_bytes(good.read_bytes()[:300])
    clean = CliRunner().invoke(main, ["scan", str(good)])
    assert clean.exit_code == 0, clean.output
    assert "good.onnx: onnx" in clean.output and "verdict: clean" in clean.output
    damaged = CliRunner().invoke(main, ["scan", str(bad)])
    assert damaged.exit_code == 1
    assert "not a readable ONNX model" in damaged.output and "verdict: damaged" in damaged.output
