"""A safetensors torch model loads memory-mapped: its weights are pages of the stored file
(shared between processes, resident only once touched), and stay valid when the file goes."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

import persistkit

torch = pytest.importorskip("torch")
pytest.importorskip("safetensors")
if not Path("/proc/self/maps").exists():
    pytest.skip("needs /proc/self/maps (Linux)", allow_module_level=True)

from torch_models import MLP  # noqa: E402


def _mapped_file_of(address: int) -> str | None:
    """The file behind the mapping that holds ``address`` in this process, if any."""
    for line in Path("/proc/self/maps").read_text().splitlines():
        fields = line.split(maxsplit=5)
        start, end = (int(x, 16) for x in fields[0].split("-"))
        if start <= address < end:
            return fields[5].strip() if len(fields) == 6 else None
    return None


def _saved(tmp_path: Path) -> tuple[torch.nn.Module, Path]:
    model = MLP([64, 256, 8]).eval()
    art = persistkit.save(model, tmp_path / "a", backend="safetensors")
    return model, art.path


def test_a_loaded_module_s_weights_are_pages_of_the_stored_file(tmp_path: Path) -> None:
    _model, path = _saved(tmp_path)
    loaded = persistkit.load(path)
    for tensor in loaded.state_dict().values():
        assert _mapped_file_of(tensor.data_ptr()) == str(path / "model.safetensors")


def test_a_loaded_module_keeps_working_after_its_files_are_deleted(tmp_path: Path) -> None:
    model, path = _saved(tmp_path)
    loaded = persistkit.load(path)
    shutil.rmtree(path)
    x = torch.randn(3, 64)
    with torch.no_grad():
        assert torch.equal(loaded(x), model(x))
