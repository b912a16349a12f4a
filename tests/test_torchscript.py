"""TorchScript archives (torch.jit.save): sniffed by content, refused without trust (they run
their own code when loaded), loaded and frozen with trust; never written by persistkit."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch")
pytestmark = pytest.mark.filterwarnings("ignore:`torch.jit.*deprecated:DeprecationWarning")

import persistkit  # noqa: E402
from persistkit.errors import CannotSaveError, FormatError, UntrustedArtifactError  # noqa: E402
from torch_helpers import mlp_inputs, outputs, trained_mlp  # noqa: E402


@pytest.fixture
def scripted_file(tmp_path: Path) -> Path:
    path = tmp_path / "model.pt"
    torch.jit.save(torch.jit.script(trained_mlp().eval()), str(path))
    return path


def test_torchscript_file_is_sniffed_as_torchscript_not_torch(scripted_file: Path) -> None:
    assert persistkit.inspect(scripted_file).backend == "torchscript"


def test_torch_save_file_is_still_sniffed_as_torch(tmp_path: Path) -> None:
    path = tmp_path / "weights.pt"
    torch.save(trained_mlp().state_dict(), path)
    assert persistkit.inspect(path).backend == "torch"


def test_untrusted_torchscript_is_refused_naming_the_reason(scripted_file: Path) -> None:
    with pytest.raises(UntrustedArtifactError) as err:
        persistkit.load(scripted_file)
    assert "torchscript" in str(err.value).lower() and "runs code" in str(err.value)
    assert "trusted=True" in (err.value.hint_for("python") or "")


def test_trusted_torchscript_loads_frozen_and_predicts(scripted_file: Path) -> None:
    model = persistkit.load(scripted_file, trusted=True)
    assert not model.training
    assert not any(p.requires_grad for p in model.parameters())
    x = mlp_inputs(6)
    assert np.array_equal(persistkit.predict(model, x), outputs(trained_mlp(), x))


def test_freeze_of_a_script_module_does_not_call_requires_grad_on_it() -> None:
    scripted = torch.jit.script(trained_mlp().train())
    frozen = persistkit.freeze(scripted)
    assert frozen is scripted and not frozen.training
    assert all(not p.requires_grad for p in frozen.parameters())


def test_damaged_torchscript_with_trust_is_a_format_error(scripted_file: Path) -> None:
    data = scripted_file.read_bytes()
    scripted_file.write_bytes(data[: len(data) // 2])
    with pytest.raises(FormatError):
        persistkit.load(scripted_file, trusted=True)


def test_saving_as_torchscript_is_refused_pointing_to_export(tmp_path: Path) -> None:
    with pytest.raises(CannotSaveError) as err:
        persistkit.save(trained_mlp(), tmp_path / "t", backend="torchscript")
    assert 'backend="export"' in (err.value.hint or "")
    assert not (tmp_path / "t").exists()
