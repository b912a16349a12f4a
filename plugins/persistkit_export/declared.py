"""What the export plugin declares, importable without its backends: the two backends'
records and the test for an ``ExportedProgram`` (registering the plugin reads only these, so
a load that uses neither backend never imports :mod:`persistkit_export.export`)."""

from __future__ import annotations

from typing import Any

from persistkit import BackendInfo

EXPORT_INFO = BackendInfo(
    "export",
    description="torch.export: weights and computation in one .pt2 file that runs "
    "without the model's code (needs example=; untrusted files are audited first)",
    safe=True,
    converts=True,
    requires=("torch",),
    extra="torch",
    suffixes=(".pt2",),
    save_options=("dynamic",),
    load_options=(),
)

TORCHSCRIPT_INFO = BackendInfo(
    "torchscript",
    description="torch.jit archives (read only): they run their own code when loaded, "
    "so they load only with trusted=True; save with backend='export' instead",
    safe=False,
    restricted=False,
    requires=("torch",),
    extra="torch",
    save_options=(),
    load_options=("map_location",),
)


def is_exported_program(obj: Any) -> bool:
    """True for a ``torch.export.ExportedProgram`` (checked without importing torch)."""
    return any(
        c.__name__ == "ExportedProgram" and c.__module__.startswith("torch.export")
        for c in type(obj).__mro__
    )
