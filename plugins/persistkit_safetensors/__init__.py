"""The ``safetensors`` backend: tensors in a standard ``.safetensors`` file, no pickle at all.

Three layouts, recorded in the manifest's backend options as ``layout``:

* ``module``: an ``nn.Module``'s weights, plus a recipe (class import path, JSON constructor
  arguments or a factory's import path, tied-weight groups) in the manifest. Loading builds the
  module on the ``meta`` device and assigns the memory-mapped tensors: no random init, no copy.
* ``tensors``: a dict of torch tensors (a state dict).
* ``numpy``: a dict of numpy arrays, through ``safetensors.numpy`` (torch not needed).

Every file is checked by persistkit's strict header validator before the library reads it.
"""

from __future__ import annotations

import struct
from pathlib import Path
from typing import Any

from persistkit import Backend, BackendInfo, Recommendation, hookimpl
from persistkit.errors import CannotSaveError, FormatError, InputError
from persistkit.safety import read_safetensors_header

LAYOUTS = ("module", "tensors", "numpy")
_MAX_SNIFFED_HEADER = 100_000_000


def _is_torch_module(model: Any) -> bool:
    from persistkit_torch.detect import is_torch_module

    return is_torch_module(model)


def _is_tensor_dict(model: Any) -> bool:
    from persistkit_torch.detect import is_tensor_dict

    return is_tensor_dict(model)


def is_array_dict(model: Any) -> bool:
    """True for a non-empty dict of string names to numeric numpy arrays."""
    if not isinstance(model, dict) or not model:
        return False
    import numpy as np

    return all(
        isinstance(k, str) and isinstance(v, np.ndarray) and v.dtype.kind in "biuf"
        for k, v in model.items()
    )


class SafetensorsBackend(Backend):
    info = BackendInfo(
        "safetensors",
        description="safetensors: weights only, no pickle (safe), memory-mapped; nn.Module "
        "rebuilt from its recorded class and arguments; also dicts of tensors or numpy arrays",
        safe=True,
        requires=("safetensors",),
        extra="safetensors",
        suffixes=(".safetensors",),
        save_options=("init_kwargs", "factory"),
        load_options=("map_location", "model_class", "init_kwargs", "factory"),
        # header, then each tensor in order (into a file first extended to its full size,
        # which the core's hasher handles)
        append_only=True,
    )
    file_name = "model.safetensors"

    def can_save(self, model: Any) -> bool:
        if is_array_dict(model) or _is_tensor_dict(model):
            return True
        if not _is_torch_module(model):
            return False
        from persistkit_torch.rebuild import recipe_for

        try:
            recipe_for(model, {}, backend=self.info.name)
        except CannotSaveError:
            return False
        return True

    def sniff(self, path: Path, head: bytes) -> bool:
        if super().sniff(path, head):  # by suffix
            return True
        if len(head) < 10:
            return False
        (length,) = struct.unpack("<Q", head[:8])
        # the reference reader allows JSON whitespace before the header's opening brace
        return 2 <= length <= _MAX_SNIFFED_HEADER and head[8:].lstrip(b" \t\r\n")[:1] == b"{"

    def save(self, model: Any, path: Path, options: dict[str, Any]) -> None:
        if is_array_dict(model) or _is_tensor_dict(model):
            from persistkit_torch.rebuild import refuse_module_options

            refuse_module_options(options, backend=self.info.name)
        if is_array_dict(model):
            from safetensors.numpy import save_file as save_numpy

            options["layout"] = "numpy"
            _write(lambda: save_numpy(model, str(path)), model)
            return
        if _is_tensor_dict(model):
            layout, state = "tensors", model
        elif _is_torch_module(model):
            layout, state = "module", None
        else:
            raise CannotSaveError(
                f"safetensors stores torch modules and dicts of tensors or numpy arrays, not a "
                f"{type(model).__qualname__}",
                hint="pick another backend (`persistkit backends` lists them)",
            )
        from safetensors.torch import save_file

        from persistkit_safetensors.writer import writable_here, write_tensors
        from persistkit_torch.rebuild import record_recipe, storable_tensors, tied_groups

        if layout == "module":
            tied = record_recipe(model, options, backend=self.info.name).tied
            state = model.state_dict()
        else:
            tied = tied_groups(state)
            options["tied"] = [list(group) for group in tied]
        options["layout"] = layout
        tensors = storable_tensors(state, tied)
        metadata = {"format": "pt"}
        if writable_here(tensors):
            # the same bytes, hashed from the tensors' memory as they are written
            _write(lambda: write_tensors(tensors, path, metadata), model)
        else:
            _write(lambda: save_file(tensors, str(path), metadata=metadata), model)

    def load(self, path: Path, manifest: Any, options: dict[str, Any], policy: Any) -> Any:
        return self.load_path(path, manifest, options, policy)

    def load_payload(
        self, payload: Any, manifest: Any, options: dict[str, Any], policy: Any
    ) -> Any:
        # the header check and safetensors' memory map both read the checked file itself
        # (through the path naming its open descriptor), never the folder entry again
        bound = payload.bound_path()
        path = Path(payload.name)  # for messages
        _check_header(bound, payload.name)  # strict structural check before any tensor is mapped
        layout = options.get("layout")
        if layout is not None and layout not in LAYOUTS:
            raise FormatError(
                f"the manifest records an unknown safetensors layout {layout!r}",
                hint="upgrade persistkit, or check where the artifact came from",
            )
        if layout == "numpy" or (layout is None and not _torch_installed()):
            from safetensors.numpy import load_file as load_numpy

            return _read(lambda: load_numpy(bound), path)
        from safetensors.torch import load_file

        from persistkit_torch.rebuild import (
            RECIPE_KEY,
            ModuleRecipe,
            build_module,
            module_from_weights,
            retie_state,
            wants_module,
        )

        device = options.get("map_location", "cpu")
        tensors = _read(lambda: load_file(bound, device=device), path)
        if layout == "module":
            recipe = ModuleRecipe.from_json(options.get(RECIPE_KEY))
            return build_module(recipe, tensors, policy, options)
        tied = options.get("tied") or []
        state = retie_state(tensors, tuple(tuple(g) for g in tied))
        if wants_module(options):
            # tensors (a bare file, or a saved dict) plus the class the user names
            return module_from_weights(state, policy, options)
        if options.get("init_kwargs") is not None:
            raise InputError(
                "init_kwargs= is for building a module from weights, and was given without "
                "model_class= or factory=",
                hint="pass model_class=<the class> too, or drop init_kwargs=",
            )
        return state

    @hookimpl
    def persistkit_recommend(self, model: Any) -> list[Recommendation] | None:
        if is_array_dict(model) or _is_tensor_dict(model):
            return [
                Recommendation(
                    "safetensors",
                    60,
                    "a dict of arrays is exactly what safetensors stores: no pickle, memory-mapped",
                )
            ]
        return None


def _check_header(bound: str, name: str) -> None:
    """:func:`read_safetensors_header` on the opened file, its errors naming the file."""
    try:
        read_safetensors_header(bound)
    except FormatError as exc:
        shown = Path(bound).name
        message = exc.message
        if message.startswith(f"{shown} "):
            message = name + message[len(shown) :]
        raise FormatError(message, hint=exc.hint) from None


def _torch_installed() -> bool:
    import importlib.util

    return importlib.util.find_spec("torch") is not None


def _write(action: Any, model: Any) -> None:
    try:
        action()
    except (ValueError, TypeError, RuntimeError, KeyError) as exc:
        raise CannotSaveError(
            f"safetensors cannot store this {type(model).__qualname__}: {exc}",
            hint="safetensors stores dense numeric arrays only; pick another backend",
        ) from None


def _read(action: Any, path: Path) -> Any:
    try:
        return action()
    except Exception as exc:
        if type(exc).__name__ == "SafetensorError" or isinstance(exc, (OSError, ValueError)):
            raise FormatError(
                f"{path.name} could not be read as safetensors: {exc}",
                hint="the file is corrupted; restore it or save the model again",
            ) from None
        raise


plugin = SafetensorsBackend()

__all__ = ["LAYOUTS", "SafetensorsBackend", "is_array_dict", "plugin"]
