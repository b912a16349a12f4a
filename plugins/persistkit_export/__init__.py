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
from persistkit import Backend, BackendInfo
from persistkit_export.export import ExportBackend
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
