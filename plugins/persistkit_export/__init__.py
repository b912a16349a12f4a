"""Frozen PyTorch programs: the ``export`` backend (``torch.export``, ``.pt2``) and the
``torchscript`` backend (reading ``torch.jit.save`` archives, trusted only).

One plugin object declares both backends and hands each hook to the backend it names. The
PyTorch adapter (freeze, predict) stays in ``persistkit_torch``: what these backends load are
``nn.Module``\\ s. Importing this package does not import torch.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import persistkit
from persistkit import Backend, BackendInfo, Recommendation
from persistkit_export.export import ExportBackend, is_exported_program
from persistkit_export.torchscript import TorchScriptBackend


class ExportPlugin:
    """The ``export`` and ``torchscript`` backends, registered as one plugin."""

    def __init__(self) -> None:
        self.export = ExportBackend()
        self.torchscript = TorchScriptBackend()
        self._backends: dict[str, Backend] = {
            "export": self.export,
            "torchscript": self.torchscript,
        }

    @persistkit.hookimpl
    def persistkit_backends(self) -> list[BackendInfo]:
        return [b.info for b in self._backends.values()]

    @persistkit.hookimpl
    def persistkit_can_save(self, model: Any, backend: str) -> bool | None:
        chosen = self._backends.get(backend)
        return None if chosen is None else chosen.can_save(model)

    @persistkit.hookimpl
    def persistkit_save(
        self, model: Any, backend: str, directory: Path, options: dict[str, Any], example: Any
    ) -> list[str] | None:
        chosen = self._backends.get(backend)
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
        return next((n for n, b in self._backends.items() if b.sniff(path, head)), None)

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
        chosen = self._backends.get(backend)
        if chosen is None:
            return None
        return chosen.persistkit_load(backend, directory, manifest, options, policy, files)


plugin = ExportPlugin()

__all__ = ["ExportBackend", "ExportPlugin", "TorchScriptBackend", "plugin"]
