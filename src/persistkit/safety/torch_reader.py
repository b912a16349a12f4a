"""Read full-module ``torch.save`` zip files under the trust policy, without ``torch.load``.

A ``torch.save`` file is a zip archive: ``<prefix>/data.pkl`` is a pickle whose tensors are
persistent ids ``("storage", StorageType, key, location, numel)``, and each storage's raw bytes
are the entry ``<prefix>/data/<key>``. The reader checks the archive (one prefix, no paths
that escape, entries stored uncompressed as torch writes them, sizes that agree), audits
``data.pkl`` as a whole, refuses untrusted globals, and then runs the restricted unpickler with
a ``persistent_load`` that builds each storage from its entry's bytes with
``torch.frombuffer``. Storage type names are replaced by inert markers, so the payload can
never call a storage constructor itself.
"""

from __future__ import annotations

import zipfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import TYPE_CHECKING, Any

from persistkit.errors import FormatError
from persistkit.safety.pickle_audit import audit_pickle
from persistkit.safety.unpickler import load_audited

if TYPE_CHECKING:
    from persistkit.payload import PayloadFile
    from persistkit.safety.policy import TrustPolicy

MAX_PICKLE_BYTES = 1024**3
# what zipfile raises on damaged archives (bad names decode with ValueError; unknown
# compression is NotImplementedError; encrypted entries RuntimeError)
_ZIP_ERRORS = (zipfile.BadZipFile, OSError, EOFError, ValueError, NotImplementedError, RuntimeError)
_STORAGE_DTYPES = {
    "BoolStorage": "bool",
    "ByteStorage": "uint8",
    "CharStorage": "int8",
    "ShortStorage": "int16",
    "IntStorage": "int32",
    "LongStorage": "int64",
    "HalfStorage": "float16",
    "FloatStorage": "float32",
    "DoubleStorage": "float64",
    "BFloat16Storage": "bfloat16",
    "ComplexFloatStorage": "complex64",
    "ComplexDoubleStorage": "complex128",
}


@dataclass(frozen=True)
class StorageType:
    """Stands where ``torch.FloatStorage`` & co. would be imported: names a dtype only."""

    dtype_name: str


# the storage type names torch writes into data.pkl, each replaced by an inert marker
_MARKERS = {("torch", name): StorageType(dtype) for name, dtype in _STORAGE_DTYPES.items()}
STORAGE_MARKERS = frozenset(_MARKERS)


class TorchZip:
    """A validated ``torch.save`` archive: one prefix, stored entries, sane sizes, and no
    name twice (two readers of one file could otherwise pick different entries)."""

    def __init__(self, path: Path, archive: zipfile.ZipFile, file_size: int) -> None:
        self.path = path
        self.zip = archive
        names = archive.namelist()
        twice = duplicate_names(names)
        if twice:
            raise self.bad(
                f"entry {twice[0]!r} appears more than once (readers disagree on which one counts)"
            )
        prefixes = {name.split("/", 1)[0] for name in names}
        if len(prefixes) != 1 or not names:
            raise self.bad("its entries do not share one top-level folder")
        self.prefix = prefixes.pop()
        for info in archive.infolist():
            pure = PurePosixPath(info.filename)
            if pure.is_absolute() or ".." in pure.parts or "\\" in info.filename:
                raise self.bad(f"entry {info.filename!r} escapes the archive")
            if info.compress_type != zipfile.ZIP_STORED:
                raise self.bad(f"entry {info.filename!r} is compressed, which torch never does")
            if info.file_size > file_size:
                raise self.bad(f"entry {info.filename!r} claims more bytes than the file has")
        if f"{self.prefix}/data.pkl" not in names:
            raise self.bad("it has no data.pkl")
        byteorder = self.read_optional("byteorder")
        if byteorder not in (None, b"little"):
            raise self.bad("it was written on a big-endian machine, which is not supported")

    def bad(self, why: str) -> FormatError:
        return FormatError(
            f"{self.path.name} is not a valid torch.save file: {why}",
            hint="the file is damaged or is not a PyTorch model file",
        )

    def read(self, name: str) -> bytes:
        try:
            return self.zip.read(f"{self.prefix}/{name}")
        except KeyError:
            raise self.bad(f"entry {name!r} is missing") from None
        except _ZIP_ERRORS as exc:
            raise self.bad(f"entry {name!r} is corrupted ({exc})") from None

    def read_optional(self, name: str) -> bytes | None:
        if f"{self.prefix}/{name}" not in self.zip.NameToInfo:
            return None
        return self.read(name)

    def read_pickle(self) -> bytes:
        info = self.zip.getinfo(f"{self.prefix}/data.pkl")
        if info.file_size > MAX_PICKLE_BYTES:
            raise self.bad("its data.pkl is larger than 1 GiB")
        return self.read("data.pkl")

    def storage_size(self, key: str) -> int:
        info = self.zip.NameToInfo.get(f"{self.prefix}/data/{key}")
        if info is None:
            raise self.bad(f"storage {key!r} is missing")
        return info.file_size


def duplicate_names(names: list[str]) -> list[str]:
    """The entry names that occur more than once in a zip's central directory."""
    seen: set[str] = set()
    twice = []
    for name in names:
        if name in seen:
            twice.append(name)
        seen.add(name)
    return twice


@contextmanager
def _payload(source: Path | PayloadFile) -> Iterator[PayloadFile]:
    """``source`` if it is an opened payload file, else the file at that path opened as one
    (a regular file, not through a link) and closed afterwards."""
    from persistkit.payload import PayloadFile, open_model_file

    if isinstance(source, PayloadFile):
        yield source
        return
    with open_model_file(Path(source)) as opened:
        yield opened


@contextmanager
def open_torch_zip(source: Path | PayloadFile) -> Iterator[TorchZip]:
    """Open and validate a ``torch.save`` zip, reading it through one descriptor (the checked
    one, when given an opened payload file); raises :class:`FormatError` if it is not one."""
    with _payload(source) as payload, payload.stream() as fh:
        try:
            archive = zipfile.ZipFile(fh)
        except _ZIP_ERRORS as exc:
            raise FormatError(
                f"{payload.path.name} is not a valid torch.save file: {exc}",
                hint="the file is damaged or is not a PyTorch model file",
            ) from None
        with archive:
            yield TorchZip(payload.path, archive, payload.size)


def read_torch_zip(
    source: Path | PayloadFile, policy: TrustPolicy, *, map_location: Any = "cpu"
) -> Any:
    """Load the ``torch.save`` file ``source`` (a path, or an opened and checked payload
    file) under ``policy`` (see the module docstring).

    Tensors are built on the CPU; a module is then moved with ``.to(map_location)`` when
    ``map_location`` names another device.
    """
    import torch

    shown = source.name if isinstance(source, Path) else source.path.name
    what = f"data.pkl of {shown}"
    with open_torch_zip(source) as archive:
        data = archive.read_pickle()
        audit = audit_pickle(data, persistent=True, what=what)
        storages: dict[str, Any] = {}

        def storage_for(pid: Any) -> Any:
            if not (
                isinstance(pid, tuple)
                and len(pid) == 5
                and pid[0] == "storage"
                and isinstance(pid[1], StorageType)
                and isinstance(pid[2], str)
                and isinstance(pid[4], int)
                and pid[4] >= 0
            ):
                raise archive.bad("a tensor refers to its storage in an unknown way")
            _tag, storage_type, key, _location, numel = pid
            dtype = getattr(torch, storage_type.dtype_name)
            if key not in storages:
                itemsize = torch.empty((), dtype=dtype).element_size()
                if archive.storage_size(key) != numel * itemsize:
                    raise archive.bad(f"storage {key!r} has a size that disagrees with its record")
                # a storage over our own bytearray cannot be resized, so a tensor record
                # whose size or stride reaches past it fails instead of growing it; an empty
                # storage gets one element of padding for the same reason
                raw = bytearray(archive.read(f"data/{key}")) or bytearray(itemsize)
                storages[key] = torch.frombuffer(raw, dtype=torch.uint8).untyped_storage()
            return torch.storage.TypedStorage(
                wrap_storage=storages[key], dtype=dtype, _internal=True
            )

        model = load_audited(
            data, audit, policy, what=what, replacements=_MARKERS, persistent_load=storage_for
        )
    if map_location not in (None, "cpu") and isinstance(model, torch.nn.Module):
        model = model.to(map_location)
    return model
