"""The ``torchscript`` backend: reading ``torch.jit.save`` archives.

A TorchScript archive holds Python source (``code/``) that ``torch.jit.load`` compiles and
runs, and pickles that call into it, so loading one runs code from the file: the backend is
neither safe nor restricted, and the core hands it only artifacts the user trusts
(``trusted=True`` or their own seal); otherwise the load is refused, naming TorchScript.

It does not write TorchScript. ``torch.jit.trace`` records the branch the example takes and
silently answers other inputs with it (the check against the example cannot notice), and
``torch.jit.script`` needs code written for it; either way the file would only ever load
with ``trusted=True``. ``backend="export"`` freezes the same module into a file that loads
without trust, so a save with ``backend="torchscript"`` is refused with that advice.
"""

from __future__ import annotations

import io
import warnings
from pathlib import Path
from typing import Any

from persistkit import Backend
from persistkit.errors import (
    CannotSaveError,
    FormatError,
    PersistkitError,
    UntrustedArtifactError,
)
from persistkit_export.declared import TORCHSCRIPT_INFO
from persistkit_export.sniff import zip_kind


class TorchScriptBackend(Backend):
    """Loads ``torch.jit.save`` archives (trusted only); never writes them."""

    info = TORCHSCRIPT_INFO
    file_name = "model.pt"

    def can_save(self, model: Any) -> bool:
        return False  # never chosen automatically; see the module docstring

    def sniff(self, path: Path, head: bytes) -> bool:
        # only by content: ".pt" files are usually torch.save files
        return zip_kind(path, head) == "torchscript"

    def save(self, model: Any, path: Path, options: dict[str, Any]) -> None:
        raise CannotSaveError(
            "persistkit reads TorchScript but does not write it: tracing freezes the branch "
            "the example takes, and the file would load only with trusted=True",
            hint='save with backend="export" (pass example=): the same frozen computation, '
            "in a file that loads without trusted=",
        )

    def load(self, path: Path, manifest: Any, options: dict[str, Any], policy: Any) -> Any:
        return self.load_path(path, manifest, options, policy)

    def load_payload(
        self, payload: Any, manifest: Any, options: dict[str, Any], policy: Any
    ) -> Any:
        import torch

        if not policy.trust_all:  # the core refuses first; this holds if it is bypassed
            raise UntrustedArtifactError(
                f"refusing to load {payload.name}: it is TorchScript, which runs code from "
                "the file when it loads",
                hint="if you trust its source, pass trusted=True (that runs this file's code)",
            )
        data = payload.read_bytes()
        try:
            with warnings.catch_warnings():  # deprecated in favour of torch.export: we know
                warnings.simplefilter("ignore", DeprecationWarning)
                return torch.jit.load(
                    io.BytesIO(data), map_location=options.get("map_location", "cpu")
                )
        except PersistkitError:
            raise
        except Exception as exc:  # torch.jit reports a damaged archive as RuntimeError & co
            first = str(exc).strip().splitlines()[0][:300] if str(exc).strip() else ""
            raise FormatError(
                f"{payload.name} is not a readable TorchScript archive: "
                f"{type(exc).__name__}: {first}",
                hint="restore the file, or save the model again",
            ) from None
