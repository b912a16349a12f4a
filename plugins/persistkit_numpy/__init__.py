"""The ``numpy`` backend: plain ``.npy`` and ``.npz`` files are data.

Arrays of numbers load with no pickle at all, through persistkit's strict reader
(:mod:`persistkit.safety.numpy_format`: bounded headers, exact byte counts, zip members checked
before they are read). Object arrays hold a pickle: it goes through the audit and the restricted
unpickler like every other pickle, so a payload is refused with the globals it needs. ``scan``
uses the same reader and gives the same verdict.

Saving: ``persistkit.save(array, ..., backend="numpy")`` writes one numeric array as ``.npy``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from persistkit import Backend, BackendInfo
from persistkit.errors import CannotSaveError

_NPY_MAGIC = b"\x93NUMPY"
_ZIP_MAGIC = b"PK\x03\x04"
_ZIP_NAME_AT = 30  # a zip local file header: the name follows 30 fixed bytes


class NumpyBackend(Backend):
    info = BackendInfo(
        "numpy",
        description="numpy .npy/.npz arrays: numbers without pickle (safe); object arrays "
        "only through the restricted unpickler",
        safe=True,
        suffixes=(".npy", ".npz"),
        save_options=(),
        load_options=(),
    )
    file_name = "model.npy"

    def can_save(self, model: Any) -> bool:
        import numpy as np

        return isinstance(model, np.ndarray) and not model.dtype.hasobject

    def sniff(self, path: Path, head: bytes) -> bool:
        if head.startswith(_ZIP_MAGIC) and b"data.pkl" in head:
            return False  # a torch zip, whatever its name says
        return super().sniff(path, head) or head.startswith(_NPY_MAGIC) or _zip_of_npy(head)

    def save(self, model: Any, path: Path, options: dict[str, Any]) -> None:
        import numpy as np

        if not self.can_save(model):
            raise CannotSaveError(
                f"the numpy backend saves one numpy array of numbers, not a "
                f"{type(model).__qualname__}",
                hint='save dicts of arrays with backend="safetensors"',
            )
        with open(path, "wb") as fh:
            np.save(fh, model, allow_pickle=False)

    def load(self, path: Path, manifest: Any, options: dict[str, Any], policy: Any) -> Any:
        from persistkit.safety import read_npy, read_npz

        with open(path, "rb") as fh:
            head = fh.read(len(_NPY_MAGIC))
        return read_npy(path, policy) if head == _NPY_MAGIC else read_npz(path, policy)


def _zip_of_npy(head: bytes) -> bool:
    """A zip whose first member (named in its local header) is an ``.npy`` array."""
    if not head.startswith(_ZIP_MAGIC) or len(head) < _ZIP_NAME_AT:
        return False
    length = int.from_bytes(head[26:28], "little")
    name = head[_ZIP_NAME_AT : _ZIP_NAME_AT + length]
    return len(name) == length and name.endswith(b".npy")


plugin = NumpyBackend()

__all__ = ["NumpyBackend", "plugin"]
