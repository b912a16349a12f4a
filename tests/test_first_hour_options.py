"""The first hour, item 3: an option either does what it says or is an error naming the options
that apply, at save and at load.

A new user saved ``torch.save(net.state_dict(), "sd.pt")`` and loaded it with
``persistkit.load("sd.pt", model_class=Net)``: they got an ``OrderedDict`` back, and
``bogus_option=1`` passed without a word.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

import persistkit
from persistkit.errors import ArtifactError, InputError, OptionError


def test_unknown_option_at_save_names_the_options_that_apply(tmp_path: Path) -> None:
    with pytest.raises(OptionError) as caught:
        persistkit.save({"a": 1}, tmp_path / "m", backend="pickle", bogus_option=1)
    message = str(caught.value)
    assert "bogus_option=" in message and "'pickle'" in message
    assert "protocol=" in message  # what pickle does take at save
    assert not (tmp_path / "m").exists()
    assert list(tmp_path.iterdir()) == []  # refused before any work: no staging left


def test_unknown_option_at_load_names_the_options_that_apply(tmp_path: Path) -> None:
    artifact = persistkit.save({"a": 1}, tmp_path / "m", backend="pickle")
    with pytest.raises(OptionError) as caught:
        persistkit.load(artifact.path, bogus_option=1)
    message = str(caught.value)
    assert "bogus_option=" in message and "at load" in message and "takes none" in message
    assert "trusted=" in message  # load's own arguments, in the hint


def test_a_misspelt_option_gets_a_suggestion(tmp_path: Path) -> None:
    with pytest.raises(OptionError) as caught:
        persistkit.save({"a": 1}, tmp_path / "m", backend="joblib", compres=3)
    assert "did you mean compress=" in str(caught.value)


def test_options_the_backend_takes_still_work(tmp_path: Path) -> None:
    artifact = persistkit.save({"a": 1}, tmp_path / "m", backend="joblib", compress=3)
    assert persistkit.load(artifact.path) == {"a": 1}
    artifact = persistkit.save({"a": 1}, tmp_path / "p", backend="pickle", protocol=4)
    assert artifact.manifest.backend_options == {"protocol": 4}


def test_predict_from_a_path_checks_load_options_too(tmp_path: Path) -> None:
    artifact = persistkit.save(np.ones(3), tmp_path / "m", backend="numpy")
    with pytest.raises(OptionError):
        persistkit.predict(artifact.path, np.ones(3), bogus_option=1)


def test_an_undeclared_backend_passes_options_through(tmp_path: Path) -> None:
    """A third-party backend that predates the declarations is not broken by them."""
    info = persistkit.BackendInfo("pickle")
    assert info.save_options is None and info.load_options is None
    from persistkit.api import check_options

    check_options(info, {"anything": 1}, when="save")  # no error


# --- torch: model_class= on a bare state dict -----------------------------------------------

torch = pytest.importorskip("torch")

from torch_models import MLP, Opaque  # noqa: E402


class Net(torch.nn.Module):
    """What the new user wrote: a no-argument constructor."""

    def __init__(self) -> None:
        super().__init__()
        self.fc = torch.nn.Linear(4, 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(x)


def _state_dict_file(tmp_path: Path, module: torch.nn.Module) -> Path:
    path = tmp_path / "sd.pt"
    torch.save(module.state_dict(), path)
    return path


def test_model_class_builds_the_module_from_a_bare_state_dict(tmp_path: Path) -> None:
    net = Net()
    path = _state_dict_file(tmp_path, net)
    loaded = persistkit.load(path, model_class=Net)
    assert isinstance(loaded, Net) and not loaded.training
    for name, tensor in net.state_dict().items():
        assert torch.equal(loaded.state_dict()[name], tensor)


def test_model_class_with_init_kwargs(tmp_path: Path) -> None:
    path = _state_dict_file(tmp_path, Opaque(3, 2))
    loaded = persistkit.load(path, model_class=Opaque, init_kwargs={"n_in": 3, "n_out": 2})
    assert isinstance(loaded, Opaque)


def test_a_class_that_needs_arguments_asks_for_init_kwargs(tmp_path: Path) -> None:
    path = _state_dict_file(tmp_path, Opaque(3, 2))
    with pytest.raises(ArtifactError) as caught:
        persistkit.load(path, model_class=Opaque)
    assert "init_kwargs=" in (caught.value.hint or "")


def test_mismatched_keys_are_listed(tmp_path: Path) -> None:
    path = _state_dict_file(tmp_path, MLP([4, 3, 2]))
    with pytest.raises(ArtifactError) as caught:
        persistkit.load(path, model_class=Net)
    message = str(caught.value)
    assert "Missing key" in message and "fc.weight" in message
    assert "Unexpected key" in message and "net.0.weight" in message


def test_model_class_on_a_saved_state_dict_artifact(tmp_path: Path) -> None:
    artifact = persistkit.save(Net().state_dict(), tmp_path / "m", backend="torch")
    assert isinstance(persistkit.load(artifact.path, model_class=Net), Net)
    plain = persistkit.load(artifact.path)
    assert isinstance(plain, dict)


def test_model_class_on_a_bare_safetensors_file(tmp_path: Path) -> None:
    from safetensors.torch import save_file

    path = tmp_path / "w.safetensors"
    save_file(Net().state_dict(), str(path))
    assert isinstance(persistkit.load(path, model_class=Net), Net)
    artifact = persistkit.save(Net().state_dict(), tmp_path / "m", backend="safetensors")
    assert isinstance(persistkit.load(artifact.path, model_class=Net), Net)


def test_model_class_of_another_class_on_a_whole_module_is_an_error(tmp_path: Path) -> None:
    artifact = persistkit.save(MLP([4, 2]), tmp_path / "m", backend="torch")
    with pytest.raises(InputError) as caught:
        persistkit.load(artifact.path, model_class=Net)
    assert "whole MLP" in str(caught.value)
    assert isinstance(persistkit.load(artifact.path, model_class=MLP), MLP)


def test_init_kwargs_alone_is_an_error_not_ignored(tmp_path: Path) -> None:
    path = _state_dict_file(tmp_path, Net())
    with pytest.raises(InputError, match="without model_class="):
        persistkit.load(path, init_kwargs={"n": 1})


def test_module_options_on_a_dict_of_tensors_at_save_are_refused(tmp_path: Path) -> None:
    for backend in ("torch", "safetensors"):
        with pytest.raises(OptionError, match="only apply to an nn.Module"):
            persistkit.save(Net().state_dict(), tmp_path / backend, backend=backend, init_kwargs={})


def test_torch_unknown_load_option_names_map_location(tmp_path: Path) -> None:
    path = _state_dict_file(tmp_path, Net())
    with pytest.raises(OptionError) as caught:
        persistkit.load(path, model_klass=Net)
    message = str(caught.value)
    assert "map_location=" in message and "model_class=" in message
    assert "did you mean model_class=" in message


def test_backends_command_lists_the_options_each_backend_takes() -> None:
    import json as json_module

    from click.testing import CliRunner

    from persistkit.cli import main

    text = CliRunner().invoke(main, ["backends"])
    assert text.exit_code == 0
    joblib_row = next(line for line in text.output.splitlines() if line.startswith("joblib"))
    assert "save: compress; load: none" in joblib_row
    listed = json_module.loads(CliRunner().invoke(main, ["backends", "--json"]).stdout)
    torch_entry = next(b for b in listed if b["name"] == "torch")
    assert "model_class" in torch_entry["load_options"]
    assert "mode" in torch_entry["save_options"]
