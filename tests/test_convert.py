"""convert: a new version in another format, proved against the source's stored example
before it is published; and the automatic choice of a class-free format for a network whose
class cannot be imported."""

from __future__ import annotations

import hashlib
import json
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

import persistkit
from persistkit.cli import main
from persistkit.errors import CannotSaveError, InputError, VerificationError
from persistkit.store import Store
from sklearn_helpers import digits_model


def test_convert_writes_a_new_version_that_names_its_source(store_dir: Path) -> None:
    store = Store(store_dir)
    model, X, _ = digits_model()
    store.save(model, "digits", example=X[:5], metadata={"team": "a"}, tags={"stage": "dev"})
    converted = persistkit.convert("digits", "pickle", store=store)
    assert (converted.name, converted.version, converted.backend) == ("digits", 2, "pickle")
    assert converted.manifest.metadata == {"team": "a", "converted_from": "digits:1"}
    assert converted.manifest.tags == {"stage": "dev"}
    assert converted.manifest.outputs == {"kind": "labels", "labels": list(range(10))}
    assert (persistkit.predict(store.load("digits:2"), X[:20]) == model.predict(X[:20])).all()


def test_convert_refuses_a_source_that_no_longer_reproduces_its_example(
    store_dir: Path,
) -> None:
    store = Store(store_dir)
    model, X, _ = digits_model()
    art = store.save(model, "digits", example=X[:5])
    outputs = art.path / "example" / "outputs.npy"
    changed = np.load(outputs)
    changed[0] = (changed[0] + 1) % 10
    outputs.chmod(0o644)
    np.save(outputs, changed)  # the stored answer is no longer what the model says
    manifest_path = art.path / "persistkit.json"
    manifest_path.chmod(0o644)
    manifest = json.loads(manifest_path.read_text())
    for entry in manifest["files"]:  # re-recorded, as someone editing the artifact would
        if entry["path"] == "example/outputs.npy":
            entry.pop("blake3", None)  # re-recorded as sha256 (a manifest may mix them)
            entry["sha256"] = hashlib.sha256(outputs.read_bytes()).hexdigest()
            entry["size"] = outputs.stat().st_size
    manifest_path.write_text(json.dumps(manifest))
    with pytest.raises(VerificationError, match="no longer reproduces"):
        persistkit.convert("digits", "pickle", store=store, trusted=True)


def test_convert_without_any_example_says_how_to_give_one(store_dir: Path) -> None:
    store = Store(store_dir)
    model, X, _ = digits_model()
    store.save(model, "digits")
    with pytest.raises(InputError, match="no stored example") as caught:
        persistkit.convert("digits", "pickle", store=store)
    assert "example=" in (caught.value.hint or "")
    converted = persistkit.convert("digits", "pickle", store=store, example=X[:3])
    assert converted.manifest.example is not None


def test_convert_of_a_folder_needs_a_target(tmp_path: Path) -> None:
    model, X, _ = digits_model()
    persistkit.save(model, tmp_path / "art", example=X[:5])
    with pytest.raises(InputError, match="not in a store"):
        persistkit.convert(tmp_path / "art", "pickle")
    out = persistkit.convert(tmp_path / "art", "pickle", target=tmp_path / "art-pickle")
    assert out.path == tmp_path / "art-pickle"
    assert out.manifest.metadata["converted_from"] == str(tmp_path / "art")


def test_cli_convert_reports_the_new_version_and_the_check(store_dir: Path) -> None:
    store = Store(store_dir)
    model, X, _ = digits_model()
    store.save(model, "digits", example=X[:5])
    done = CliRunner().invoke(
        main, ["convert", "digits", "--to", "pickle", "--store", str(store_dir), "--json"]
    )
    assert done.exit_code == 0, done.output
    report = json.loads(done.stdout)
    assert report["name"] == "digits" and report["version"] == 2
    assert report["backend"] == "pickle" and report["converted_from"] == "digits:1"


def test_cli_convert_takes_an_example_file(store_dir: Path, tmp_path: Path) -> None:
    store = Store(store_dir)
    model, X, _ = digits_model()
    store.save(model, "digits")
    np.save(tmp_path / "batch.npy", X[:4])
    done = CliRunner().invoke(
        main,
        ["convert", "digits", "--to", "pickle", "--store", str(store_dir),
         "--example", str(tmp_path / "batch.npy")],
    )
    assert done.exit_code == 0, done.output
    assert "digits:2: pickle, converted from digits:1" in done.stdout
    assert store.manifest("digits:2").example is not None


# --- onnx (scikit-learn) -------------------------------------------------------------------


def test_convert_to_onnx_keeps_the_labels_and_checks_them_before_publishing(
    store_dir: Path,
) -> None:
    pytest.importorskip("onnxruntime")
    pytest.importorskip("skl2onnx")
    store = Store(store_dir)
    model, X, _ = digits_model()
    store.save(model, "digits", example=X[300:340])
    converted = persistkit.convert("digits", "onnx", store=store)
    assert converted.backend == "onnx"
    conversion = converted.manifest.model["conversion"]
    assert conversion["checked_items"] == 40
    assert conversion["identical"] is True  # labels, not floats: they must be the same
    persistkit.verify("digits:2", store=store)


# --- torch: export and the automatic choice --------------------------------------------------

NOTEBOOK = textwrap.dedent(
    """
    import sys, numpy as np, torch, persistkit
    from torch import nn

    class GnomeNet(nn.Module):  # defined in __main__, as in a notebook
        def __init__(self):
            super().__init__()
            self.conv = nn.Conv2d(3, 4, 3, padding=1)
            self.bn = nn.BatchNorm2d(4)
            self.head = nn.Linear(4, 2)

        def forward(self, x):
            return self.head(torch.relu(self.bn(self.conv(x))).mean(dim=(2, 3)))

    torch.manual_seed(0)
    net = GnomeNet().eval()
    x = np.random.default_rng(0).standard_normal((3, 3, 8, 8)).astype(np.float32)
    art = persistkit.save(net, "gnome", store=sys.argv[1], example=x,
                          labels=["gnome", "not gnome"])
    np.save(sys.argv[2], persistkit.predict(net, x))
    print(art.backend)
    """
)


def test_a_notebook_network_is_frozen_and_answers_in_a_new_process(
    tmp_path: Path,
) -> None:
    pytest.importorskip("torch")
    script = tmp_path / "train.py"
    script.write_text(NOTEBOOK)
    store = tmp_path / "store"
    done = subprocess.run(
        [sys.executable, str(script), str(store), str(tmp_path / "expected.npy")],
        capture_output=True,
        text=True,
        cwd=tmp_path,
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "export"
    # a new process, in another folder, that has never seen GnomeNet
    check = (
        "import sys, numpy as np, persistkit\n"
        "x = np.random.default_rng(0).standard_normal((3, 3, 8, 8)).astype(np.float32)\n"
        "y = persistkit.predict('gnome', x, store=sys.argv[1])\n"
        "assert np.load(sys.argv[2]).tobytes() == np.asarray(y).tobytes()\n"
        "print('identical')\n"
    )
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    again = subprocess.run(
        [sys.executable, "-c", check, str(store), str(tmp_path / "expected.npy")],
        capture_output=True,
        text=True,
        cwd=elsewhere,
    )
    assert again.returncode == 0, again.stderr
    assert again.stdout.strip() == "identical"


def test_convert_a_safetensors_network_to_export_and_onnx(store_dir: Path) -> None:
    pytest.importorskip("torch")
    from torch_helpers import mlp_inputs, trained_mlp

    store = Store(store_dir)
    net = trained_mlp()
    x = mlp_inputs(6)
    store.save(net, "mlp", example=x, backend="safetensors", labels=["a", "b", "c"])
    exported = persistkit.convert("mlp", "export", store=store)
    assert exported.backend == "export"
    assert exported.manifest.model["conversion"]["identical"] is True
    assert exported.manifest.outputs == {"kind": "logits", "labels": ["a", "b", "c"]}
    pytest.importorskip("onnxruntime")
    onnx = persistkit.convert("mlp:1", "onnx", store=store)
    assert onnx.version == 3
    assert "tolerance" in onnx.manifest.model["conversion"] or onnx.manifest.model[
        "conversion"
    ]["identical"]


def test_a_converting_backend_without_an_example_says_to_pass_one(tmp_path: Path) -> None:
    pytest.importorskip("torch")
    from torch_helpers import trained_mlp

    with pytest.raises(CannotSaveError, match="needs an input batch") as caught:
        persistkit.save(trained_mlp(), tmp_path / "m", backend="export")
    assert "example=" in (caught.value.hint or "")
