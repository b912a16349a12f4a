"""The ``torch`` and ``safetensors`` backends: round trips, recorded recipes, trust, bad input."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import numpy as np
import pytest

torch = pytest.importorskip("torch")
safetensors_torch = pytest.importorskip("safetensors.torch")

import persistkit  # noqa: E402
from persistkit.errors import (  # noqa: E402
    ArtifactError,
    CannotSaveError,
    FormatError,
    IntegrityError,
    PersistkitError,
    UntrustedArtifactError,
)
from torch_helpers import (  # noqa: E402
    as_stranger,
    edit_manifest,
    mlp_inputs,
    outputs,
    trained_mlp,
    trained_tied,
)
from torch_models import (  # noqa: E402
    MLP,
    Opaque,
    WithDerivedBuffer,
    WithTransposedView,
    make_opaque,
)

pytestmark = pytest.mark.torch

BACKENDS = [
    pytest.param("safetensors", {}, id="safetensors"),
    pytest.param("torch", {}, id="torch-module"),
    pytest.param("torch", {"mode": "state_dict"}, id="torch-state_dict"),
]


def save(model: Any, path: Path, **kwargs: Any) -> Path:
    return persistkit.save(model, path, **kwargs).path


# --- round trips -------------------------------------------------------------------------


@pytest.mark.parametrize(("backend", "options"), BACKENDS)
def test_a_trained_model_round_trips_with_bitwise_identical_outputs(
    tmp_path: Path, backend: str, options: dict[str, Any]
) -> None:
    model = trained_mlp()
    x = mlp_inputs()
    loaded = persistkit.load(save(model, tmp_path / "m", backend=backend, **options))
    assert type(loaded) is MLP
    assert outputs(loaded, x).tobytes() == outputs(model, x).tobytes()


@pytest.mark.parametrize(("backend", "options"), BACKENDS)
def test_a_loaded_module_comes_back_frozen(
    tmp_path: Path, backend: str, options: dict[str, Any]
) -> None:
    path = save(trained_mlp(), tmp_path / "m", backend=backend, freeze=False, **options)
    loaded = persistkit.load(path)
    assert loaded.training is False
    assert not any(p.requires_grad for p in loaded.parameters())


@pytest.mark.parametrize(("backend", "options"), BACKENDS)
def test_verify_proves_the_stored_example_reproduces(
    tmp_path: Path, backend: str, options: dict[str, Any]
) -> None:
    path = save(trained_mlp(), tmp_path / "m", backend=backend, example=mlp_inputs(), **options)
    assert persistkit.verify(path).identical


def test_an_importable_module_is_saved_with_safetensors_by_default(tmp_path: Path) -> None:
    artifact = persistkit.save(trained_mlp(), tmp_path / "m")
    assert artifact.backend == "safetensors"
    assert any("safetensors" in note for note in artifact.manifest.notes)


def test_the_safetensors_payload_is_a_standard_file_with_no_pickle(tmp_path: Path) -> None:
    model = trained_mlp()
    path = save(model, tmp_path / "m", backend="safetensors")
    payload_files = {p.name for p in path.iterdir()} - {"persistkit.json", "requirements.txt"}
    assert payload_files == {"model.safetensors"}
    tensors = safetensors_torch.load_file(str(path / "model.safetensors"))
    assert set(tensors) == set(model.state_dict())
    for name, value in model.state_dict().items():
        assert torch.equal(tensors[name], value)


def test_safetensors_records_class_and_recovered_constructor_arguments(tmp_path: Path) -> None:
    model = trained_mlp(widths=[4, 6, 5, 3], activation="gelu")
    manifest = persistkit.save(model, tmp_path / "m", backend="safetensors").manifest
    recipe = manifest.backend_options["module"]
    assert recipe["class"] == {"module": "torch_models", "qualname": "MLP"}
    assert recipe["init_kwargs"] == {
        "widths": [4, 6, 5, 3],
        "activation": "gelu",
        "dropout": 0.2,
        "batchnorm": True,
    }


def test_recorded_arguments_rebuild_the_same_architecture(tmp_path: Path) -> None:
    model = trained_mlp(widths=[4, 6, 5, 3], activation="gelu", dropout=0.0, batchnorm=False)
    loaded = persistkit.load(save(model, tmp_path / "m", backend="safetensors"))
    assert repr(loaded) == repr(model)


@pytest.mark.parametrize("dtype", ["float64", "float16", "bfloat16"])
@pytest.mark.parametrize(("backend", "options"), BACKENDS)
def test_weights_keep_their_dtype_through_a_round_trip(
    tmp_path: Path, backend: str, options: dict[str, Any], dtype: str
) -> None:
    model = trained_mlp().to(getattr(torch, dtype))
    loaded = persistkit.load(save(model, tmp_path / "m", backend=backend, **options))
    assert {p.dtype for p in loaded.parameters()} == {getattr(torch, dtype)}
    x = mlp_inputs()
    assert outputs(loaded, x).tobytes() == outputs(model, x).tobytes()


# --- constructor arguments: init_kwargs=, factory=, clear failures --------------------------


def test_a_module_whose_arguments_cannot_be_recovered_names_init_kwargs_and_factory(
    tmp_path: Path,
) -> None:
    with pytest.raises(CannotSaveError) as caught:
        persistkit.save(Opaque(3, 2), tmp_path / "m", backend="safetensors")
    assert "init_kwargs=" in str(caught.value)
    assert "factory=" in str(caught.value)


def test_init_kwargs_rebuild_a_module_that_does_not_keep_its_arguments(tmp_path: Path) -> None:
    model = Opaque(3, 2)
    path = save(model, tmp_path / "m", backend="safetensors", init_kwargs={"n_in": 3, "n_out": 2})
    x = np.ones((2, 3), np.float32)
    assert outputs(persistkit.load(path), x).tobytes() == outputs(model, x).tobytes()


def test_a_factory_is_recorded_by_import_path_and_used_to_rebuild(tmp_path: Path) -> None:
    model = make_opaque()
    artifact = persistkit.save(model, tmp_path / "m", backend="safetensors", factory=make_opaque)
    assert artifact.manifest.backend_options["module"]["factory"] == "torch_models.make_opaque"
    x = np.ones((2, 3), np.float32)
    assert outputs(persistkit.load(artifact.path), x).tobytes() == outputs(model, x).tobytes()


def test_a_factory_that_cannot_be_imported_is_refused_at_save(tmp_path: Path) -> None:
    def local_factory() -> Opaque:
        return Opaque(3, 2)

    with pytest.raises(CannotSaveError, match="factory"):
        persistkit.save(
            local_factory(), tmp_path / "m", backend="safetensors", factory=local_factory
        )


def test_init_kwargs_that_build_other_shapes_are_refused_at_save(tmp_path: Path) -> None:
    with pytest.raises(CannotSaveError, match="shape"):
        persistkit.save(
            Opaque(3, 2), tmp_path / "m", backend="safetensors", init_kwargs={"n_in": 3, "n_out": 4}
        )


def test_init_kwargs_that_are_not_json_are_refused_at_save(tmp_path: Path) -> None:
    with pytest.raises(CannotSaveError, match="JSON"):
        persistkit.save(
            Opaque(3, 2), tmp_path / "m", backend="safetensors", init_kwargs={"n_in": object()}
        )


def test_a_module_safetensors_cannot_rebuild_is_saved_with_torch_automatically(
    tmp_path: Path,
) -> None:
    artifact = persistkit.save(Opaque(3, 2), tmp_path / "m")
    assert artifact.backend == "torch"


def test_torch_state_dict_mode_records_the_same_recipe(tmp_path: Path) -> None:
    manifest = persistkit.save(trained_mlp(), tmp_path / "m", backend="torch", mode="state_dict")
    assert manifest.manifest.backend_options["mode"] == "state_dict"
    assert manifest.manifest.backend_options["module"]["class"]["qualname"] == "MLP"


def test_an_unknown_torch_mode_is_refused(tmp_path: Path) -> None:
    with pytest.raises(CannotSaveError, match="mode"):
        persistkit.save(trained_mlp(), tmp_path / "m", backend="torch", mode="onnx")


# --- tied, non-contiguous and derived tensors ----------------------------------------------


@pytest.mark.parametrize(("backend", "options"), BACKENDS)
def test_tied_weights_stay_tied_after_loading(
    tmp_path: Path, backend: str, options: dict[str, Any]
) -> None:
    model = trained_tied()
    loaded = persistkit.load(save(model, tmp_path / "m", backend=backend, **options))
    assert loaded.out.weight is loaded.embed.weight
    tokens = np.array([[1, 2, 3], [4, 5, 9]])
    assert outputs(loaded, tokens).tobytes() == outputs(model, tokens).tobytes()


def test_safetensors_stores_a_tied_weight_once(tmp_path: Path) -> None:
    path = save(trained_tied(), tmp_path / "m", backend="safetensors")
    stored = safetensors_torch.load_file(str(path / "model.safetensors"))
    assert "embed.weight" in stored
    assert "out.weight" not in stored


def test_non_contiguous_tensors_round_trip(tmp_path: Path) -> None:
    torch.manual_seed(0)
    model = WithTransposedView(3)
    assert not model.mixer.is_contiguous()
    x = np.ones((2, 3), np.float32)
    loaded = persistkit.load(save(model, tmp_path / "m", backend="safetensors"))
    assert outputs(loaded, x).tobytes() == outputs(model, x).tobytes()


def test_a_buffer_outside_the_state_dict_is_computed_again_on_load(tmp_path: Path) -> None:
    torch.manual_seed(0)
    model = WithDerivedBuffer(3)
    loaded = persistkit.load(save(model, tmp_path / "m", backend="safetensors"))
    assert not loaded.scale.is_meta
    x = np.ones((2, 3), np.float32)
    assert outputs(loaded, x).tobytes() == outputs(model, x).tobytes()


def test_tensors_sharing_one_storage_as_different_views_are_stored_separately(
    tmp_path: Path,
) -> None:
    base = torch.arange(6, dtype=torch.float32)
    tensors = {"first": base[:3], "second": base[3:]}
    loaded = persistkit.load(save(tensors, tmp_path / "m", backend="safetensors"))
    assert torch.equal(loaded["first"], tensors["first"])
    assert torch.equal(loaded["second"], tensors["second"])


# --- dicts of arrays ---------------------------------------------------------------------


def test_a_dict_of_numpy_arrays_round_trips_through_safetensors_numpy(tmp_path: Path) -> None:
    arrays = {
        "w": np.arange(6, dtype=np.float64).reshape(2, 3),
        "ids": np.arange(4, dtype=np.int32),
    }
    artifact = persistkit.save(arrays, tmp_path / "m")
    assert artifact.backend == "safetensors"
    assert artifact.manifest.backend_options["layout"] == "numpy"
    loaded = persistkit.load(artifact.path)
    assert set(loaded) == set(arrays)
    for key, value in arrays.items():
        assert isinstance(loaded[key], np.ndarray)
        assert loaded[key].dtype == value.dtype
        assert np.array_equal(loaded[key], value)


@pytest.mark.parametrize("backend", ["safetensors", "torch"])
def test_a_state_dict_of_tensors_round_trips_as_a_dict(tmp_path: Path, backend: str) -> None:
    state = trained_mlp().state_dict()
    loaded = persistkit.load(save(state, tmp_path / "m", backend=backend))
    assert set(loaded) == set(state)
    assert all(torch.equal(loaded[k], v) for k, v in state.items())


def test_a_tied_state_dict_keeps_its_keys_sharing_one_tensor(tmp_path: Path) -> None:
    state = trained_tied().state_dict()
    loaded = persistkit.load(save(state, tmp_path / "m", backend="safetensors"))
    assert loaded["out.weight"] is loaded["embed.weight"]


# --- trust ---------------------------------------------------------------------------------


def test_someone_elses_safetensors_artifact_needs_the_class_named(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = save(trained_mlp(), tmp_path / "m", backend="safetensors")
    as_stranger(monkeypatch, tmp_path)
    with pytest.raises(UntrustedArtifactError) as caught:
        persistkit.load(path)
    assert caught.value.globals_needed == ["torch_models.MLP"]
    assert 'trusted=["torch_models.MLP"]' in str(caught.value)
    assert "model_class=" in str(caught.value)


@pytest.mark.parametrize(
    "how",
    [{"model_class": MLP}, {"trusted": ["torch_models.MLP"]}],
    ids=["model_class", "trusted-list"],
)
def test_someone_elses_safetensors_artifact_loads_once_the_class_is_named(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, how: dict[str, Any]
) -> None:
    model = trained_mlp()
    path = save(model, tmp_path / "m", backend="safetensors")
    as_stranger(monkeypatch, tmp_path)
    x = mlp_inputs()
    assert outputs(persistkit.load(path, **how), x).tobytes() == outputs(model, x).tobytes()


def test_someone_elses_factory_artifact_needs_the_factory_named(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    model = make_opaque()
    path = save(model, tmp_path / "m", backend="safetensors", factory=make_opaque)
    as_stranger(monkeypatch, tmp_path)
    with pytest.raises(UntrustedArtifactError) as caught:
        persistkit.load(path)
    assert caught.value.globals_needed == ["torch_models.make_opaque"]
    x = np.ones((2, 3), np.float32)
    loaded = persistkit.load(path, factory=make_opaque)
    assert outputs(loaded, x).tobytes() == outputs(model, x).tobytes()


def test_an_untrusted_recipe_never_imports_the_module_it_names(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    module_dir = tmp_path / "mods"
    module_dir.mkdir()
    (module_dir / "pk_evil_module.py").write_text(
        "import os\nopen(os.environ['PK_FLAG'], 'w').write('imported')\nclass Thing: pass\n"
    )
    flag = tmp_path / "flag"
    monkeypatch.setenv("PK_FLAG", str(flag))
    monkeypatch.syspath_prepend(str(module_dir))
    path = save(trained_mlp(), tmp_path / "m", backend="safetensors")

    def point_at_evil(data: dict[str, Any]) -> None:
        data["backend"]["options"]["module"]["class"] = {
            "module": "pk_evil_module",
            "qualname": "Thing",
        }

    edit_manifest(path, point_at_evil)
    with pytest.raises(UntrustedArtifactError, match=r"pk_evil_module\.Thing"):
        persistkit.load(path)
    assert not flag.exists()
    assert "pk_evil_module" not in sys.modules


def test_a_trusted_recipe_naming_something_that_is_not_a_module_is_refused(
    tmp_path: Path,
) -> None:
    path = save(trained_mlp(), tmp_path / "m", backend="safetensors")
    edit_manifest(
        path,
        lambda d: d["backend"]["options"]["module"].update(
            {"class": {"module": "os", "qualname": "system"}}
        ),
    )
    with pytest.raises(UntrustedArtifactError, match=r"not a torch\.nn\.Module"):
        persistkit.load(path, trusted=["os.system"])


def test_someone_elses_whole_module_torch_file_is_refused(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = save(trained_mlp(), tmp_path / "m", backend="torch")
    as_stranger(monkeypatch, tmp_path)
    with pytest.raises(UntrustedArtifactError) as caught:
        persistkit.load(path)
    assert "trusted=" in str(caught.value)


def test_someone_elses_whole_module_torch_file_loads_with_trusted_true(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    model = trained_mlp()
    path = save(model, tmp_path / "m", backend="torch")
    as_stranger(monkeypatch, tmp_path)
    x = mlp_inputs()
    loaded = persistkit.load(path, trusted=True)
    assert outputs(loaded, x).tobytes() == outputs(model, x).tobytes()


def test_someone_elses_torch_state_dict_artifact_loads_with_the_class_named(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    model = trained_mlp()
    path = save(model, tmp_path / "m", backend="torch", mode="state_dict")
    as_stranger(monkeypatch, tmp_path)
    with pytest.raises(UntrustedArtifactError):
        persistkit.load(path)
    x = mlp_inputs()
    loaded = persistkit.load(path, model_class=MLP)
    assert outputs(loaded, x).tobytes() == outputs(model, x).tobytes()


def test_a_state_dict_artifact_whose_file_holds_a_pickled_module_is_refused(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    model = trained_mlp()
    path = save(model, tmp_path / "m", backend="torch", mode="state_dict")
    torch.save(model, path / "model.pt")  # swapped for a whole pickled module
    as_stranger(monkeypatch, tmp_path)
    with pytest.raises(UntrustedArtifactError, match="more than tensors"):
        persistkit.load(path, verify=False, model_class=MLP)


def test_model_class_must_be_a_module_class(tmp_path: Path) -> None:
    path = save(trained_mlp(), tmp_path / "m", backend="safetensors")
    with pytest.raises(PersistkitError, match="model_class"):
        persistkit.load(path, model_class="torch_models.MLP")


# --- bad input: clear persistkit errors, never raw torch tracebacks -------------------------


def test_a_class_that_cannot_be_imported_is_a_clear_error(tmp_path: Path) -> None:
    path = save(trained_mlp(), tmp_path / "m", backend="safetensors")
    edit_manifest(
        path,
        lambda d: d["backend"]["options"]["module"].update(
            {"class": {"module": "pk_no_such_module", "qualname": "MLP"}}
        ),
    )
    with pytest.raises(ArtifactError, match=r"cannot import pk_no_such_module\.MLP") as caught:
        persistkit.load(path, trusted=True)
    assert "model_class=" in (caught.value.hint or "")


def test_constructor_arguments_that_do_not_fit_the_weights_are_a_clear_error(
    tmp_path: Path,
) -> None:
    path = save(trained_mlp(), tmp_path / "m", backend="safetensors")
    edit_manifest(
        path,
        lambda d: d["backend"]["options"]["module"]["init_kwargs"].update({"widths": [4, 9, 3]}),
    )
    with pytest.raises(ArtifactError, match="do not fit"):
        persistkit.load(path, model_class=MLP)


def test_constructor_arguments_the_class_rejects_are_a_clear_error(tmp_path: Path) -> None:
    path = save(trained_mlp(), tmp_path / "m", backend="safetensors")
    edit_manifest(
        path, lambda d: d["backend"]["options"]["module"]["init_kwargs"].update({"bogus": 1})
    )
    with pytest.raises(ArtifactError, match="cannot construct"):
        persistkit.load(path, model_class=MLP)


def test_a_malformed_recipe_is_a_manifest_error(tmp_path: Path) -> None:
    path = save(trained_mlp(), tmp_path / "m", backend="safetensors")
    edit_manifest(path, lambda d: d["backend"]["options"].update({"module": {"class": "x; rm"}}))
    with pytest.raises(PersistkitError, match="recipe"):
        persistkit.load(path, trusted=True)


def test_a_truncated_safetensors_payload_is_an_integrity_error(tmp_path: Path) -> None:
    path = save(trained_mlp(), tmp_path / "m", backend="safetensors")
    payload = path / "model.safetensors"
    payload.write_bytes(payload.read_bytes()[:-7])
    with pytest.raises(IntegrityError):
        persistkit.load(path)


def test_a_truncated_safetensors_payload_unchecked_is_a_format_error(tmp_path: Path) -> None:
    path = save(trained_mlp(), tmp_path / "m", backend="safetensors")
    payload = path / "model.safetensors"
    payload.write_bytes(payload.read_bytes()[:-7])
    with pytest.raises(FormatError, match="truncated"):
        persistkit.load(path, verify=False)


@pytest.mark.parametrize("keep", [0, 5, 40, -1])
def test_a_truncated_bare_safetensors_file_is_a_format_error(tmp_path: Path, keep: int) -> None:
    full = tmp_path / "full.safetensors"
    safetensors_torch.save_file(trained_mlp().state_dict(), str(full))
    data = full.read_bytes()
    cut = tmp_path / "cut.safetensors"
    cut.write_bytes(data[:keep] if keep >= 0 else data[:-1])
    with pytest.raises(FormatError):
        persistkit.load(cut)


@pytest.mark.parametrize("keep", [0, 30, 200, -10])
def test_a_truncated_bare_torch_file_is_a_format_error(tmp_path: Path, keep: int) -> None:
    full = tmp_path / "full.pt"
    torch.save(trained_mlp().state_dict(), full)
    data = full.read_bytes()
    cut = tmp_path / "cut.pt"
    cut.write_bytes(data[:keep])
    with pytest.raises(FormatError):
        persistkit.load(cut)


# --- bare files made by other tools ---------------------------------------------------------


def test_a_bare_safetensors_file_loads_as_a_dict_of_tensors(tmp_path: Path) -> None:
    state = trained_mlp().state_dict()
    path = tmp_path / "weights.safetensors"
    safetensors_torch.save_file(state, str(path))
    loaded = persistkit.load(path)
    assert all(torch.equal(loaded[k], v) for k, v in state.items())


def test_a_bare_safetensors_file_builds_a_module_when_the_class_is_given(tmp_path: Path) -> None:
    model = trained_mlp()
    path = tmp_path / "weights.safetensors"
    safetensors_torch.save_file(model.state_dict(), str(path))
    loaded = persistkit.load(
        path,
        model_class=MLP,
        init_kwargs={"widths": [4, 8, 3], "activation": "tanh", "dropout": 0.2, "batchnorm": True},
    )
    x = mlp_inputs()
    assert outputs(loaded, x).tobytes() == outputs(model, x).tobytes()


def test_a_bare_safetensors_file_without_suffix_is_recognised_by_its_header(
    tmp_path: Path,
) -> None:
    path = tmp_path / "weights"
    safetensors_torch.save_file({"a": torch.ones(2)}, str(path))
    assert torch.equal(persistkit.load(path)["a"], torch.ones(2))


def test_a_bare_weights_only_torch_file_loads_without_trust(tmp_path: Path) -> None:
    state = trained_mlp().state_dict()
    path = tmp_path / "weights.pt"
    torch.save(state, path)
    loaded = persistkit.load(path)
    assert all(torch.equal(loaded[k], v) for k, v in state.items())


def test_a_bare_torch_zip_without_suffix_is_recognised(tmp_path: Path) -> None:
    path = tmp_path / "weights"
    torch.save({"a": torch.ones(2)}, path)
    assert torch.equal(persistkit.load(path)["a"], torch.ones(2))


def test_a_bare_pickled_module_torch_file_is_refused_without_trust(tmp_path: Path) -> None:
    path = tmp_path / "model.pt"
    torch.save(trained_mlp(), path)
    with pytest.raises(UntrustedArtifactError):
        persistkit.load(path)


def test_a_bare_pickled_module_torch_file_loads_with_trusted_true(tmp_path: Path) -> None:
    model = trained_mlp()
    path = tmp_path / "model.pt"
    torch.save(model, path)
    x = mlp_inputs()
    assert outputs(persistkit.load(path, trusted=True), x).tobytes() == outputs(model, x).tobytes()


# --- map_location, __main__ classes ----------------------------------------------------------


def test_map_location_passes_through_to_torch_load(tmp_path: Path) -> None:
    path = save(trained_mlp(), tmp_path / "m", backend="torch")
    loaded = persistkit.load(path, map_location="meta")
    assert all(p.is_meta for p in loaded.parameters())


def test_map_location_passes_through_to_safetensors(tmp_path: Path) -> None:
    seen: list[Any] = []
    real = safetensors_torch.load_file

    def spy(filename: Any, device: Any = "cpu", **kw: Any) -> Any:
        seen.append(device)
        return real(filename, device=device, **kw)

    path = save(trained_mlp(), tmp_path / "m", backend="safetensors")
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(safetensors_torch, "load_file", spy)
        persistkit.load(path, map_location="cpu")
        persistkit.load(path)
    assert seen == ["cpu", "cpu"]


@pytest.fixture
def main_net(monkeypatch: pytest.MonkeyPatch) -> Any:
    """A network whose class is defined in ``__main__``, as in a notebook or a script."""

    class MainNet(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.layer = torch.nn.Linear(2, 2)

        def forward(self, x: Any) -> Any:
            return self.layer(x)

    MainNet.__module__ = "__main__"
    MainNet.__qualname__ = "MainNet"
    monkeypatch.setattr(sys.modules["__main__"], "MainNet", MainNet, raising=False)
    return MainNet()


def test_a_class_defined_in_main_is_frozen_with_export_given_an_example(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, main_net: Any
) -> None:
    model = main_net
    x = np.ones((3, 2), np.float32)
    with pytest.raises(CannotSaveError, match="needs example="):
        persistkit.save(model, tmp_path / "refused")
    artifact = persistkit.save(model, tmp_path / "m", example=x)
    assert artifact.backend == "export"
    assert any("chosen automatically" in note for note in artifact.manifest.notes)
    assert not any("torch.save" in note for note in artifact.manifest.notes[:-1])
    monkeypatch.delattr(sys.modules["__main__"], "MainNet")  # a process without the class
    assert outputs(persistkit.load(artifact.path), x).tobytes() == outputs(model, x).tobytes()


def test_a_class_defined_in_main_is_saved_with_torch_when_asked_and_a_note_why(
    tmp_path: Path, main_net: Any
) -> None:
    model = main_net
    artifact = persistkit.save(model, tmp_path / "m", backend="torch")
    assert artifact.backend == "torch"
    assert any("__main__" in note for note in artifact.manifest.notes)
    x = np.ones((1, 2), np.float32)
    assert outputs(persistkit.load(artifact.path), x).tobytes() == outputs(model, x).tobytes()


def test_safetensors_refuses_a_class_defined_in_main_naming_the_torch_backend(
    tmp_path: Path,
) -> None:
    class Local(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.layer = torch.nn.Linear(2, 2)

    with pytest.raises(CannotSaveError, match="backend='torch'"):
        persistkit.save(Local(), tmp_path / "m", backend="safetensors")


# --- registration and import cost --------------------------------------------------------------


def test_backends_are_honest_about_safety() -> None:
    infos = {b.name: b for b in persistkit.backends()}
    assert infos["safetensors"].safe is True
    assert infos["torch"].safe is False
    assert infos["torch"].restricted is True


def test_importing_the_plugins_and_listing_backends_imports_neither_torch_nor_safetensors() -> None:
    code = textwrap.dedent(
        """
        import sys, persistkit, persistkit_torch, persistkit_safetensors
        persistkit.backends()
        heavy = [m for m in ("torch", "safetensors", "numpy") if m in sys.modules]
        assert heavy in ([], ["numpy"]), heavy
        assert "torch" not in sys.modules and "safetensors" not in sys.modules
        """
    )
    subprocess.run([sys.executable, "-c", code], check=True, timeout=60)


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
@pytest.mark.parametrize(("backend", "options"), BACKENDS)
def test_a_model_saved_from_cuda_loads_on_cpu_and_back_onto_cuda(
    tmp_path: Path, backend: str, options: dict[str, Any]
) -> None:
    model = trained_mlp().cuda()
    x = mlp_inputs()
    expected = outputs(model, x)
    path = save(model, tmp_path / "m", backend=backend, **options)
    on_cpu = persistkit.load(path)
    assert {p.device.type for p in on_cpu.parameters()} == {"cpu"}
    on_gpu = persistkit.load(path, map_location="cuda")
    assert {p.device.type for p in on_gpu.parameters()} == {"cuda"}
    assert np.array_equal(outputs(on_gpu, x), expected)
    assert np.allclose(outputs(on_cpu, x), expected, rtol=1e-4, atol=1e-5)
