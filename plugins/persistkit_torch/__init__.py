"""The ``torch`` backend and the PyTorch adapter.

Backend ``torch``: ``torch.save`` of the whole module (a pickle: loading it runs code, so an
artifact not sealed by your key loads only through ``policy.load_torch``), or with
``mode="state_dict"`` the weights alone, loaded with ``weights_only=True`` and put into a
module rebuilt from the class and constructor arguments recorded in the manifest. Loads map
tensors to the CPU unless ``map_location=`` says otherwise.

Adapter: freeze (eval mode, no gradients), predict (numpy in, numpy out), describe, and votes
(``safetensors`` for importable classes, ``torch`` otherwise). Importing this module does not
import torch, nor :mod:`persistkit_torch.rebuild` (imported by the saves and loads that
record or rebuild a module).
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import persistkit
from persistkit import Backend, BackendInfo, Recommendation
from persistkit.errors import (
    ArtifactError,
    CannotSaveError,
    FormatError,
    ImportCode,
    InputError,
    UntrustedArtifactError,
)
from persistkit_torch import adapter
from persistkit_torch.detect import is_tensor_dict, is_torch_module

MODES = ("module", "state_dict")
#: what ``load`` takes for this backend: where tensors go, and how to rebuild a module from
#: weights alone (a bare state dict names no class, so ``model_class=`` is needed there)
LOAD_OPTIONS = ("map_location", "model_class", "init_kwargs", "factory")
_ZIP_MAGIC = b"PK\x03\x04"


class TorchPlugin(Backend):
    """The ``torch`` backend plus the adapter hooks for ``nn.Module`` models."""

    info = BackendInfo(
        "torch",
        description="torch.save: the whole module (a pickle; untrusted files are read "
        'through the allow-list) or mode="state_dict" (weights only, weights_only=True)',
        restricted=True,
        requires=("torch",),
        extra="torch",
        suffixes=(".pt", ".pth"),
        save_options=("mode", "init_kwargs", "factory"),
        load_options=LOAD_OPTIONS,
        append_only=True,  # torch's zip writer is strictly sequential (it can write to pipes)
    )
    file_name = "model.pt"

    # -- backend ------------------------------------------------------------------------------
    def can_save(self, model: Any) -> bool:
        return is_torch_module(model) or is_tensor_dict(model)

    def sniff(self, path: Path, head: bytes) -> bool:
        """A ``torch.save`` file: by suffix or a zip whose first entry is ``<name>/data.pkl``;
        never a ``.pt2`` archive (``torch.export``) or a TorchScript archive (``torch.jit``),
        which are zips of the same shape that other backends read."""
        if head.startswith(_ZIP_MAGIC):
            import zipfile

            try:
                with zipfile.ZipFile(path) as archive:
                    names = [n.split("/", 1)[-1] for n in archive.namelist()]
            except (zipfile.BadZipFile, OSError, ValueError, EOFError):
                names = []  # damaged: the suffix decides, and the load reports the damage
            if (
                "archive_format" in names
                or "constants.pkl" in names
                or any(n.startswith(("code/", "models/")) for n in names)
            ):
                return False
        return super().sniff(path, head) or (head.startswith(_ZIP_MAGIC) and b"data.pkl" in head)

    def save(self, model: Any, path: Path, options: dict[str, Any]) -> None:
        import torch

        mode = "state_dict" if is_tensor_dict(model) else options.get("mode", "module")
        if mode not in MODES:
            raise CannotSaveError(
                f"unknown torch backend mode {mode!r}",
                hint='pass mode="module" (the default) or mode="state_dict"',
            )
        if not self.can_save(model):
            raise CannotSaveError(
                f"the torch backend saves nn.Module models and dicts of tensors, not a "
                f"{type(model).__qualname__}",
                hint="pick another backend (`persistkit backends` lists them)",
            )
        from persistkit_torch.rebuild import record_recipe, refuse_module_options

        payload = model
        if is_tensor_dict(model):
            refuse_module_options(options, backend=self.info.name)
        if mode == "state_dict" and is_torch_module(model):
            record_recipe(model, options, backend="torch")
            payload = model.state_dict()
        options["mode"] = mode
        try:
            # hashed as torch writes it: from the model's own tensors (declared stable, so
            # hashed after each write returns) and from copies of everything else
            with persistkit.payload_writer(path, stable=_cpu_storages(model)) as fh:
                torch.save(payload, fh)
        except Exception as exc:  # torch.save fails by pickling: lambdas, open files, locks...
            raise CannotSaveError(
                f"torch.save cannot store this {type(model).__qualname__}: "
                f"{type(exc).__name__}: {exc}",
                hint='save it with backend="safetensors" (weights plus the class), or '
                'mode="state_dict"',
            ) from None

    def load(self, path: Path, manifest: Any, options: dict[str, Any], policy: Any) -> Any:
        return self.load_path(path, manifest, options, policy)

    def load_payload(
        self, payload: Any, manifest: Any, options: dict[str, Any], policy: Any
    ) -> Any:
        # every read goes through the checked descriptor: torch.load gets the path naming
        # the opened file (it memory-maps by path), persistkit's reader the descriptor
        mode = options.get("mode")
        map_location = options.get("map_location", "cpu")
        if mode == "state_dict":
            from persistkit_torch.rebuild import RECIPE_KEY, ModuleRecipe, build_module

            state = _weights_only_load(payload, map_location, mmap=True)
            if RECIPE_KEY in options:
                recipe = ModuleRecipe.from_json(options[RECIPE_KEY])
                return build_module(recipe, state, policy, options)
            return _as_asked(state, policy, options)
        if mode == "module":
            if policy.trust_all:
                loaded = _full_load(payload, map_location, mmap=True)
            else:
                loaded = policy.load_torch_payload(payload, map_location=map_location)
            return _as_asked(loaded, policy, options)
        if mode is not None:
            raise FormatError(
                f"the manifest records an unknown torch backend mode {mode!r}",
                hint="upgrade persistkit, or check where the artifact came from",
            )
        # a bare .pt file from another tool goes through persistkit's own reader, the one
        # `scan` uses: state dicts and modules of allowed classes load, the rest is refused
        if policy.trust_all:
            loaded = _full_load(payload, map_location, mmap=False)
        else:
            loaded = policy.load_torch_payload(payload, map_location=map_location)
        return _as_asked(loaded, policy, options)

    # -- adapter ------------------------------------------------------------------------------
    @persistkit.hookimpl
    def persistkit_freeze(self, model: Any) -> Any | None:
        return adapter.freeze(model) if is_torch_module(model) else None

    @persistkit.hookimpl
    def persistkit_predict(self, model: Any, inputs: Any, options: dict[str, Any]) -> Any | None:
        return adapter.predict(model, inputs, options) if is_torch_module(model) else None

    @persistkit.hookimpl
    def persistkit_describe(self, model: Any, backend: str | None) -> dict[str, Any] | None:
        return adapter.describe(model, backend) if is_torch_module(model) else None

    @persistkit.hookimpl
    def persistkit_recommend(self, model: Any) -> list[Recommendation] | None:
        return adapter.recommend(model) if is_torch_module(model) else None


def _cpu_storages(model: Any) -> list[Any]:
    """The storages of a module's parameters and buffers (or a dict's tensors) in CPU memory:
    torch.save writes each of them straight from that memory, which stays alive and unchanged
    while the model is being saved."""
    if is_torch_module(model):
        tensors = [*model.parameters(), *model.buffers()]
    else:
        tensors = list(model.values())
    return [t.untyped_storage() for t in tensors if t.device.type == "cpu"]


def _as_asked(loaded: Any, policy: Any, options: dict[str, Any]) -> Any:
    """What was loaded, turned into what ``model_class=``/``factory=`` ask for: a state dict
    is loaded (strictly) into the module they build; a whole module must already be one."""
    from persistkit_torch.rebuild import module_from_weights, wants_module

    if not wants_module(options):
        if options.get("init_kwargs") is not None:
            raise InputError(
                "init_kwargs= is for building a module from weights, and was given without "
                "model_class= or factory=",
                hint="pass model_class=<the class> too, or drop init_kwargs=",
            )
        return loaded
    if is_tensor_dict(loaded):
        return module_from_weights(dict(loaded), policy, options)
    cls = options.get("model_class")
    if is_torch_module(loaded) and isinstance(cls, type) and isinstance(loaded, cls):
        if options.get("init_kwargs") is not None:
            raise InputError(
                "init_kwargs= applies to weights alone, but this file holds a whole, already "
                f"built {type(loaded).__qualname__}",
                hint="drop init_kwargs=",
            )
        return loaded
    what = type(loaded).__qualname__ if is_torch_module(loaded) else "something else"
    raise InputError(
        f"model_class=/factory= build a module from a state dict, but this file holds "
        f"a whole {what}" + (f", not a {cls.__qualname__}" if isinstance(cls, type) else ""),
        hint="drop model_class=/factory= (the module is stored whole), or pass its own class",
    )


def _refuse_duplicate_members(payload: Any) -> None:
    """A zip naming one entry twice is refused before torch reads it: torch's reader and
    persistkit's could pick different entries (legacy, non-zip files pass)."""
    import zipfile
    from collections import Counter

    if payload.head(len(_ZIP_MAGIC)) != _ZIP_MAGIC:
        return
    try:
        with payload.stream() as fh, zipfile.ZipFile(fh) as archive:
            twice = sorted(n for n, k in Counter(archive.namelist()).items() if k > 1)
    except (zipfile.BadZipFile, OSError, ValueError, EOFError):
        return  # torch reports a damaged file itself
    if twice:
        raise FormatError(
            f"{payload.name} is not a valid torch.save file: entry {twice[0]!r} appears more "
            "than once (readers disagree on which one counts)",
            hint="the file is damaged or was crafted; do not load it",
        )


def _weights_only_load(payload: Any, map_location: Any, *, mmap: bool) -> Any:
    import pickle

    import torch

    path = Path(payload.name)  # for messages
    _refuse_duplicate_members(payload)
    try:
        return torch.load(
            payload.bound_path(), map_location=map_location, weights_only=True, mmap=mmap
        )
    except pickle.UnpicklingError as exc:
        needed = re.findall(r"Unsupported global: GLOBAL ([\w.]+)", str(exc))
        shown = f" (it would import {', '.join(needed)})" if needed else ""
        raise UntrustedArtifactError(
            f"{path.name} holds more than tensors: torch's weights-only reader refused it" + shown,
            hint="if you trust its source, pass trusted=True (that runs this file's code)",
            globals_needed=needed,
        ) from None
    except (RuntimeError, EOFError, OSError, ValueError, TypeError, AttributeError) as exc:
        raise _corrupt(path, exc) from None


def _full_load(payload: Any, map_location: Any, *, mmap: bool) -> Any:
    import pickle

    import torch

    path = Path(payload.name)  # for messages
    _refuse_duplicate_members(payload)
    try:
        return torch.load(
            payload.bound_path(), map_location=map_location, weights_only=False, mmap=mmap
        )
    except (AttributeError, ModuleNotFoundError, ImportError) as exc:
        module = getattr(exc, "name", None) or "the model's module"
        raise ArtifactError(
            f"{path.name} is a pickled module whose code cannot be found here: {exc}",
            remedies=(ImportCode(module.split(".")[0]),),
        ) from None
    except (RuntimeError, EOFError, OSError, ValueError, pickle.UnpicklingError) as exc:
        raise _corrupt(path, exc) from None


def _corrupt(path: Path, exc: BaseException) -> FormatError:
    first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
    return FormatError(
        f"{path.name} is not a readable PyTorch file (truncated or corrupted): {first}",
        hint="restore the file or save the model again",
    )


plugin = TorchPlugin()

__all__ = ["MODES", "TorchPlugin", "plugin"]
