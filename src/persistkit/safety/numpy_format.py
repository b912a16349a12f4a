"""Strict readers of numpy's ``.npy`` and ``.npz`` files, shared by ``load`` (the ``numpy``
backend) and ``scan``, so both give the same verdict.

Arrays of numbers are data: each header is read with numpy's public readers, its shape is
bounded (at most 64 dimensions, each a whole number, the element count multiplied out only
until it passes the bytes really present) and the bytes after the header must be exactly
``count × itemsize``; only then are they turned into an array (never ``allow_pickle=True``).
Object arrays hold a pickle after the header: it is audited and built by the restricted
unpickler under the load's :class:`TrustPolicy`, like every other pickle persistkit reads.
``.npz`` archives may hold only ``.npy`` members (stored or deflated, not encrypted, each name
once), and their declared sizes must fit the policy's decompression caps before any is read.
"""

from __future__ import annotations

import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

from persistkit.errors import FormatError
from persistkit.safety.pickle_audit import PickleAudit, audit_pickle
from persistkit.safety.policy import RATIO_FLOOR_BYTES, TrustPolicy

NPY_MAGIC = b"\x93NUMPY"
ZIP_MAGIC = b"PK\x03\x04"
MAX_DIMS = 64  # numpy's own limit
_MEMBER_SUFFIX = ".npy"
_ZIP_METHODS = (zipfile.ZIP_STORED, zipfile.ZIP_DEFLATED)  # what numpy.savez(_compressed) writes


@dataclass(frozen=True)
class NpyHeader:
    """What a ``.npy`` header declares, checked against the bytes that follow it."""

    dtype: Any
    shape: tuple[int, ...]
    fortran_order: bool
    count: int

    @property
    def has_objects(self) -> bool:
        return bool(self.dtype.hasobject)


def read_npy(path: Path, policy: TrustPolicy) -> Any:
    """The array in the ``.npy`` file at ``path``."""
    with open(path, "rb") as fh:
        size = path.stat().st_size
        return _read_array(fh, size, policy, what=path.name)


def read_npz(path: Path, policy: TrustPolicy) -> dict[str, Any]:
    """The arrays in the ``.npz`` archive at ``path``, by name (without ``.npy``)."""
    with _open_zip(path) as archive:
        arrays = {}
        for info in _npz_members(archive, path, policy):
            with archive.open(info) as fh:
                what = f"{info.filename} in {path.name}"
                arrays[info.filename[: -len(_MEMBER_SUFFIX)]] = _guarded(
                    lambda fh=fh, info=info, what=what: _read_array(
                        fh, info.file_size, policy, what
                    ),
                    what,
                )
        return arrays


def scan_npy(path: Path) -> list[PickleAudit | None]:
    """For ``scan``: the ``.npy`` file's one array checked as :func:`read_npy` checks it, as a
    list of one entry: ``None`` for numbers, the pickle's audit for an object array."""
    with open(path, "rb") as fh:
        return [_scan_array(fh, path.stat().st_size, what=path.name)]


def scan_npz(path: Path, policy: TrustPolicy) -> tuple[list[PickleAudit | None], int]:
    """For ``scan``: each member checked as :func:`read_npz` checks it (``None`` for numbers,
    the pickle's audit for object arrays), and the archive's unpacked size."""
    with _open_zip(path) as archive:
        members = _npz_members(archive, path, policy)
        results = []
        for info in members:
            with archive.open(info) as fh:
                what = f"{info.filename} in {path.name}"
                results.append(
                    _guarded(
                        lambda fh=fh, info=info, what=what: _scan_array(fh, info.file_size, what),
                        what,
                    )
                )
        return results, sum(info.file_size for info in members)


def is_npz(path: Path) -> bool:
    """True for a zip archive whose members are all ``.npy`` files (or that has none)."""
    try:
        with zipfile.ZipFile(path) as archive:
            return all(name.endswith(_MEMBER_SUFFIX) for name in archive.namelist())
    except (zipfile.BadZipFile, OSError, ValueError, EOFError):
        return False


# --- one array ------------------------------------------------------------------------------


def _read_array(fh: IO[bytes], size: int, policy: TrustPolicy, what: str) -> Any:
    import numpy as np

    header = read_npy_header(fh, size, what)
    if header.has_objects:
        return _read_object_array(fh.read(), header, policy, what)
    data = _read_exact(fh, header.count * header.dtype.itemsize, what)
    flat = np.frombuffer(data, dtype=header.dtype)
    return flat.reshape(header.shape, order="F" if header.fortran_order else "C")


def _scan_array(fh: IO[bytes], size: int, what: str) -> PickleAudit | None:
    header = read_npy_header(fh, size, what)
    if not header.has_objects:
        _read_exact(fh, header.count * header.dtype.itemsize, what)  # as load reads it
        return None
    return audit_pickle(fh.read(), what=f"object array in {what}")


def _read_object_array(data: bytes, header: NpyHeader, policy: TrustPolicy, what: str) -> Any:
    """An object array: its pickle audited, then built by the restricted unpickler."""
    import numpy as np

    from persistkit.safety.unpickler import load_audited

    where = f"object array in {what}"
    array = load_audited(data, audit_pickle(data, what=where), policy, what=where)
    if not isinstance(array, np.ndarray) or array.shape != header.shape:
        raise _bad(what, "its pickle does not hold the array its header describes")
    return array


def read_npy_header(fh: IO[bytes], size: int, what: str) -> NpyHeader:
    """Read and bound a ``.npy`` header from ``fh`` (``size`` bytes long in all)."""
    import numpy as np

    try:
        version = np.lib.format.read_magic(fh)
        if version == (1, 0):
            shape, fortran_order, dtype = np.lib.format.read_array_header_1_0(fh)
        elif version == (2, 0):
            shape, fortran_order, dtype = np.lib.format.read_array_header_2_0(fh)
        else:
            raise ValueError(f"unsupported .npy version {version}")
    except (ValueError, OSError, SyntaxError, TypeError, EOFError) as exc:
        raise _bad(what, str(exc)) from None
    available = size - fh.tell()
    count = _bounded_count(shape, dtype, available, what)
    if not dtype.hasobject and count * dtype.itemsize != available:
        raise _bad(
            what,
            f"its header describes {count * dtype.itemsize} bytes of {dtype} {shape} but "
            f"{available} bytes follow it",
        )
    return NpyHeader(dtype, tuple(shape), bool(fortran_order), count)


def _bounded_count(shape: Any, dtype: Any, available: int, what: str) -> int:
    """The element count, refused as soon as it passes what the bytes could hold (an object
    takes at least one byte of pickle), never multiplying huge numbers."""
    if not isinstance(shape, tuple) or len(shape) > MAX_DIMS:
        raise _bad(what, f"its shape {str(shape)[:80]} has more than {MAX_DIMS} dimensions")
    if dtype.itemsize == 0 and not dtype.hasobject:
        raise _bad(what, f"its dtype {dtype} has elements of size 0")
    per_element = 1 if dtype.hasobject else dtype.itemsize
    limit = available // per_element
    for dim in shape:
        if not isinstance(dim, int) or isinstance(dim, bool) or dim < 0:
            raise _bad(what, f"its shape {str(shape)[:80]} has an invalid size")
    if 0 in shape:
        return 0
    count = 1
    for dim in shape:
        if dim > limit or count * dim > limit:
            raise _bad(
                what,
                f"its shape {str(shape)[:80]} needs more than the {available} bytes that follow "
                "the header",
            )
        count *= dim
    return count


def _read_exact(fh: IO[bytes], nbytes: int, what: str) -> bytearray:
    """Exactly ``nbytes`` (into a writable buffer, so arrays are writable), then the end."""
    buffer = bytearray(nbytes)
    view, filled = memoryview(buffer), 0
    while filled < nbytes:
        got = fh.readinto(view[filled:])  # type: ignore[attr-defined]
        if not got:
            raise _bad(what, f"it ends after {filled} of its {nbytes} data bytes")
        filled += got
    if fh.read(1):
        raise _bad(what, "it has bytes after its array data")
    return buffer


# --- the archive ----------------------------------------------------------------------------


def _open_zip(path: Path) -> zipfile.ZipFile:
    try:
        return zipfile.ZipFile(path)
    except (zipfile.BadZipFile, OSError, ValueError, EOFError) as exc:
        raise _bad(path.name, f"it is not a readable zip archive: {exc}") from None


def _npz_members(archive: zipfile.ZipFile, path: Path, policy: TrustPolicy) -> list[Any]:
    """The archive's members, each checked before any is read."""
    members, seen, total = archive.infolist(), set(), 0
    for info in members:
        name = info.filename
        if name in seen:
            raise _bad(path.name, f"it holds {name!r} twice (which one numpy reads is ambiguous)")
        seen.add(name)
        if not name.endswith(_MEMBER_SUFFIX):
            raise _bad(path.name, f"its member {name!r} is not an .npy array")
        if info.flag_bits & 0x1 or info.compress_type not in _ZIP_METHODS:
            raise _bad(path.name, f"its member {name!r} is encrypted or oddly compressed")
        total += info.file_size
        if info.file_size > max(
            RATIO_FLOOR_BYTES, info.compress_size * policy.max_compression_ratio
        ):
            raise _bad(
                path.name,
                f"its member {name!r} unpacks to more than "
                f"{policy.max_compression_ratio} times its packed size",
            )
    if total > policy.max_decompressed_bytes:
        raise _bad(
            path.name,
            f"it unpacks to {total} bytes, over the {policy.max_decompressed_bytes} byte cap",
        )
    return members


def _guarded(action: Any, what: str) -> Any:
    """Run ``action``; a damaged member (bad CRC, truncated deflate stream) is a FormatError."""
    try:
        return action()
    except (zipfile.BadZipFile, EOFError, OSError, ValueError) as exc:
        raise _bad(what, f"{type(exc).__name__}: {exc}") from None


def _bad(what: str, problem: str) -> FormatError:
    return FormatError(
        f"{what} is not a valid numpy array file: {problem}",
        hint="the file is truncated or corrupted; restore it or save it again",
    )
