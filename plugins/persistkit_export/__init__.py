"""Frozen PyTorch programs: the ``export`` backend (``torch.export``, ``.pt2``) and the
``torchscript`` backend (reading ``torch.jit.save`` archives, trusted only).

One plugin object declares both backends and hands each hook to the backend it names. The
PyTorch adapter (freeze, predict) stays in ``persistkit_torch``: what these backends load are
``nn.Module``\\ s. Importing this package imports neither torch nor the backends: it declares
them from :mod:`persistkit_export.declared` and imports a backend's module the first time a
hook names that backend (a load of any other backend never imports them).
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

import persistkit
from persistkit import BackendInfo, Recommendation
from persistkit_export.declared import EXPORT_INFO, TORCHSCRIPT_INFO, is_exported_program

if TYPE_CHECKING:
    from persistkit import Backend
    from persistkit_export.export import ExportBackend
    from persistkit_export.torchscript import TorchScriptBackend

_MODULES = {"ExportBackend": "export", "TorchScriptBackend": "torchscript"}


class ExportPlugin:
    """The ``export`` and ``torchscript`` backends, registered as one plugin."""

    def __init__(self) -> None:
        self._made: dict[str, Backend] = {}

    @property
    def export(self) -> ExportBackend:
        return self._backend("export")  # type: ignore[return-value]

    @property
    def torchscript(self) -> TorchScriptBackend:
        return self._backend("torchscript")  # type: ignore[return-value]

    def _backend(self, name: str) -> Backend | None:
        """The backend called ``name`` (its module imported on first use), or None."""
        made = self._made.get(name)
        if made is None and name in (EXPORT_INFO.name, TORCHSCRIPT_INFO.name):
            if name == EXPORT_INFO.name:
                from persistkit_export.export import ExportBackend

                made = self._made[name] = ExportBackend()
            else:
                from persistkit_export.torchscript import TorchScriptBackend

                made = self._made[name] = TorchScriptBackend()
        return made

    @persistkit.hookimpl
    def persistkit_backends(self) -> list[BackendInfo]:
        return [EXPORT_INFO, TORCHSCRIPT_INFO]

    @persistkit.hookimpl
    def persistkit_can_save(self, model: Any, backend: str) -> bool | None:
        chosen = self._backend(backend)
        return None if chosen is None else chosen.can_save(model)

    @persistkit.hookimpl
    def persistkit_save(
        self, model: Any, backend: str, directory: Path, options: dict[str, Any], example: Any
    ) -> list[str] | None:
        chosen = self._backend(backend)
        if chosen is None:
            return None
        return chosen.persistkit_save(model, backend, directory, options, example)

    # -- an ExportedProgram the user made: saved as it is, run through its module ----------
    @persistkit.hookimpl
    def persistkit_recommend(self, model: Any) -> list[Recommendation] | None:
        if not is_exported_program(model):
            return None
        return [
            Recommendation(
                "export", 90, "an ExportedProgram is written as it is with torch.export.save"
            )
        ]

    @persistkit.hookimpl
    def persistkit_freeze(self, model: Any) -> Any | None:
        return model if is_exported_program(model) else None  # fixed when it was exported

    @persistkit.hookimpl
    def persistkit_predict(self, model: Any, inputs: Any, options: dict[str, Any]) -> Any | None:
        if not is_exported_program(model):
            return None
        return persistkit.predict(model.module(), inputs, **options)

    @persistkit.hookimpl
    def persistkit_describe(self, model: Any) -> dict[str, Any] | None:
        if not is_exported_program(model):
            return None
        import torch

        return {"family": "torch", "libraries": {"torch": torch.__version__}}

    @persistkit.hookimpl(trylast=True)
    def persistkit_sniff(self, path: Path, head: bytes) -> str | None:
        for name in (EXPORT_INFO.name, TORCHSCRIPT_INFO.name):
            chosen = self._backend(name)
            if chosen is not None and chosen.sniff(path, head):
                return name
        return None

    @persistkit.hookimpl
    def persistkit_load(
        self,
        backend: str,
        directory: Path,
        manifest: Any,
        options: dict[str, Any],
        policy: Any,
        files: Any,
    ) -> Any | None:
        chosen = self._backend(backend)
        if chosen is None:
            return None
        return chosen.persistkit_load(backend, directory, manifest, options, policy, files)


plugin = ExportPlugin()


def __getattr__(name: str) -> Any:
    module = _MODULES.get(name)
    if module is None:
        raise AttributeError(f"module 'persistkit_export' has no attribute {name!r}")
    import importlib

    return getattr(importlib.import_module(f"persistkit_export.{module}"), name)


__all__ = ["ExportBackend", "ExportPlugin", "TorchScriptBackend", "plugin"]
