"""Telling torch's three zip formats apart without torch: ``torch.save`` files, ``.pt2``
archives (``torch.export.save``) and TorchScript archives (``torch.jit.save``) all start with a
zip entry ``<name>/...``; only their entry names differ."""

from __future__ import annotations

import zipfile
from pathlib import Path

from persistkit.safety import looks_like_pt2

ZIP_MAGIC = b"PK\x03\x04"


def zip_names(path: Path) -> list[str]:
    """The entry names of the zip at ``path`` (its central directory only), or ``[]`` if it
    is not a readable zip."""
    try:
        with zipfile.ZipFile(path) as archive:
            return archive.namelist()
    except (zipfile.BadZipFile, OSError, ValueError, EOFError):
        return []


def looks_like_torchscript(names: list[str]) -> bool:
    """A ``torch.jit.save`` archive: Python source under ``<name>/code/`` and a
    ``<name>/constants.pkl`` (a ``torch.save`` zip has neither)."""
    stripped = [n.split("/", 1)[1] for n in names if "/" in n]
    return "constants.pkl" in stripped or any(n.startswith("code/") for n in stripped)


def zip_kind(path: Path, head: bytes) -> str | None:
    """``"pt2"``, ``"torchscript"`` or ``None`` (not a zip, or another zip) for a bare file."""
    if not head.startswith(ZIP_MAGIC):
        return None
    names = zip_names(path)
    if looks_like_pt2(names):
        return "pt2"
    if looks_like_torchscript(names):
        return "torchscript"
    return None
