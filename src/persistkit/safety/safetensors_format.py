"""A strict, pure-Python reader of the ``.safetensors`` header.

Every structural rule of the format is checked from the header and the file size alone, before
any tensor memory is allocated or mapped: an 8-byte little-endian header length within a limit,
a JSON object header (no duplicate keys), known dtypes, non-negative shapes, and data offsets
that match each tensor's byte size, tile the data section from offset 0 without gaps or
overlap, and end exactly at the end of the file. A file that passes can be handed to the
``safetensors`` library without it ever reading past the file or allocating more than the file
holds.

Numbers are bounded before any arithmetic is done with them: an integer of more than 20 digits
(more than a u64 holds) is refused while the JSON is parsed, a shape has at most
:data:`MAX_DIMS` dimensions each at most :data:`MAX_DIM`, and element counts are multiplied out
one dimension at a time, stopping as soon as they pass what the file can hold — so a header of
huge dimensions with one zero is refused in microseconds instead of computing an
arbitrary-precision product.

The JSON accepted is the JSON the reference ``safetensors`` library (serde_json) accepts: the
four JSON whitespace characters (space, tab, LF, CR) before, inside and after the object;
nothing else (no other whitespace, no byte-order mark, no ``NaN``/``Infinity``, no ``-0``, no
unpaired surrogate escapes). Deliberately stricter than the reference: duplicate keys and
unknown keys in a tensor entry (the reference silently keeps one / ignores them) and shapes of
more than 64 dimensions (numpy cannot build them) are refused.
"""

from __future__ import annotations

import json
import os
import struct
from pathlib import Path
from typing import Any

from persistkit.errors import FormatError
from persistkit.values import Value

HEADER_LENGTH_BYTES = 8
MAX_HEADER_BYTES = 100_000_000  # the limit the safetensors library itself enforces
METADATA_KEY = "__metadata__"
MAX_DIMS = 64  # numpy's limit on dimensions; the reference library accepts more
MAX_DIM = 2**63 - 1  # the largest size numpy and torch can give a dimension
_MAX_U64 = 2**64 - 1  # the reference computes element counts in u64 and refuses overflow
_MAX_INT_DIGITS = len(str(_MAX_U64))

# dtype name in the header -> bits per element
DTYPE_BITS: dict[str, int] = {
    "BOOL": 8,
    "U8": 8,
    "I8": 8,
    "F8_E5M2": 8,
    "F8_E4M3": 8,
    "F8_E4M3FNUZ": 8,
    "F8_E5M2FNUZ": 8,
    "F8_E8M0": 8,
    "I16": 16,
    "U16": 16,
    "F16": 16,
    "BF16": 16,
    "I32": 32,
    "U32": 32,
    "F32": 32,
    "I64": 64,
    "U64": 64,
    "F64": 64,
    "C64": 64,
    "F4": 4,
    "F6_E2M3": 6,
    "F6_E3M2": 6,
}

_TENSOR_KEYS = frozenset({"dtype", "shape", "data_offsets"})


class TensorEntry(Value):
    """One tensor as the header describes it; offsets are relative to the data section."""

    _fields = ("name", "dtype", "shape", "begin", "end")
    __slots__ = _fields
    name: str
    dtype: str
    shape: tuple[int, ...]
    begin: int
    end: int

    def __init__(self, name: str, dtype: str, shape: tuple[int, ...], begin: int, end: int) -> None:
        self._set(name, dtype, shape, begin, end)

    @property
    def nbytes(self) -> int:
        return self.end - self.begin


class SafetensorsHeader(Value):
    """A validated header: tensors in file order, string metadata, and where data starts."""

    _fields = ("tensors", "metadata", "data_start", "file_size")
    __slots__ = _fields
    tensors: tuple[TensorEntry, ...]
    metadata: dict[str, str]
    data_start: int
    file_size: int

    def __init__(
        self,
        tensors: tuple[TensorEntry, ...],
        metadata: dict[str, str],
        data_start: int,
        file_size: int,
    ) -> None:
        self._set(tensors, metadata, data_start, file_size)

    @property
    def names(self) -> list[str]:
        return [t.name for t in self.tensors]


def read_safetensors_header(
    path: str | os.PathLike[str], *, max_header_bytes: int = MAX_HEADER_BYTES
) -> SafetensorsHeader:
    """Read and validate the header of the ``.safetensors`` file at ``path``.

    Reads only the header bytes (at most ``max_header_bytes``). Raises
    :class:`persistkit.errors.FormatError` naming the first rule the file breaks; a file that
    passes is structurally sound (every byte of it belongs to exactly one tensor).
    """
    path = Path(path)
    name = path.name
    try:
        with open(path, "rb") as fh:
            file_size = os.fstat(fh.fileno()).st_size
            prefix = fh.read(HEADER_LENGTH_BYTES)
            if len(prefix) < HEADER_LENGTH_BYTES:
                raise _bad(name, f"it is {file_size} bytes, too short to hold a header length")
            (header_len,) = struct.unpack("<Q", prefix)
            if header_len > max_header_bytes:
                raise _bad(
                    name, f"its header claims {header_len} bytes, over the {max_header_bytes} limit"
                )
            if HEADER_LENGTH_BYTES + header_len > file_size:
                raise _bad(
                    name,
                    f"its header claims {header_len} bytes but the file has only "
                    f"{file_size - HEADER_LENGTH_BYTES} after the length: it is truncated",
                )
            raw = fh.read(header_len)
    except OSError as exc:
        raise FormatError(f"cannot read {name}: {exc}") from None
    return parse_safetensors_header(raw, file_size=file_size, name=name)


def parse_safetensors_header(
    raw: bytes, *, file_size: int, name: str = "the safetensors file"
) -> SafetensorsHeader:
    """Validate header bytes ``raw`` (the bytes after the 8-byte length) of a file whose total
    size is ``file_size``."""
    data_start = HEADER_LENGTH_BYTES + len(raw)
    data_size = file_size - data_start
    header = _parse_json(raw, name)
    metadata = _metadata(header.pop(METADATA_KEY, None), name)
    entries = [_entry(key, value, name, data_size) for key, value in header.items()]
    entries.sort(key=lambda e: (e.begin, e.end))
    position = 0
    for entry in entries:
        if entry.begin != position:
            problem = "overlaps the tensor before it" if entry.begin < position else "leaves a gap"
            raise _bad(name, f"tensor {entry.name!r} at offset {entry.begin} {problem}")
        position = entry.end
    if position != data_size:
        raise _bad(name, f"it has {data_size - position} trailing bytes after the last tensor")
    return SafetensorsHeader(tuple(entries), metadata, data_start, file_size)


def _parse_json(raw: bytes, name: str) -> dict[str, Any]:
    """The header as a dict, parsed with the reference library's JSON rules (see the module
    docstring); integers longer than a u64 are refused before they are converted."""
    try:
        header = json.loads(
            raw.decode("utf-8"),
            object_pairs_hook=_strict_object,
            parse_int=_bounded_int,
            parse_constant=_no_constant,
        )
    except (UnicodeError, ValueError, RecursionError) as exc:
        raise _bad(name, f"its header is not valid JSON: {exc}") from None
    if not isinstance(header, dict):
        raise _bad(name, "its header is not a JSON object")
    return header


def _entry(key: str, value: Any, name: str, data_size: int) -> TensorEntry:
    if not isinstance(value, dict) or set(value) != _TENSOR_KEYS:
        raise _bad(name, f"tensor {key!r} must have exactly dtype, shape and data_offsets")
    dtype, offsets = value["dtype"], value["data_offsets"]
    if dtype not in DTYPE_BITS:
        raise _bad(name, f"tensor {key!r} has unknown dtype {dtype!r}")
    shape = _shape(key, value["shape"], name)
    if (
        not isinstance(offsets, list)
        or len(offsets) != 2
        or not all(_is_count(o) for o in offsets)
        or offsets[0] > offsets[1]
    ):
        raise _bad(name, f"tensor {key!r} has invalid data_offsets {offsets!r:.80}")
    if offsets[1] > data_size:
        raise _bad(
            name,
            f"tensor {key!r} ends at data offset {offsets[1]} but the file holds {data_size} "
            "bytes of data: it is truncated",
        )
    _check_byte_size(key, dtype, shape, offsets[1] - offsets[0], name)
    return TensorEntry(key, dtype, shape, offsets[0], offsets[1])


def _shape(key: str, shape: Any, name: str) -> tuple[int, ...]:
    """The shape as a tuple, each dimension bounded before anything is computed from it."""
    if not isinstance(shape, list):
        raise _bad(name, f"tensor {key!r} has an invalid shape {shape!r:.80}")
    if len(shape) > MAX_DIMS:
        raise _bad(
            name, f"tensor {key!r} has {len(shape)} dimensions, more than the {MAX_DIMS} allowed"
        )
    for dim in shape:
        if not _is_count(dim) or dim > MAX_DIM:
            raise _bad(
                name,
                f"tensor {key!r} has an invalid dimension {dim!r:.40} "
                f"(sizes are whole numbers from 0 to {MAX_DIM})",
            )
    return tuple(shape)


def _check_byte_size(key: str, dtype: str, shape: tuple[int, ...], span: int, name: str) -> None:
    """Check that a tensor of ``dtype`` and ``shape`` fills exactly the ``span`` bytes its
    offsets give it (``span`` is at most the file's size)."""
    bits = DTYPE_BITS[dtype]
    what = f"tensor {key!r} of {dtype} {list(shape)}"
    if 0 in shape:
        _check_count_fits_u64(key, shape, name)
        count = 0
    else:
        bounded = _bounded_count(shape, limit=span * 8 // bits)
        if bounded is None:
            raise _bad(name, f"{what} needs more than the {span} bytes its data_offsets span")
        count = bounded
    if (count * bits) % 8:
        raise _bad(name, f"{what} does not fill whole bytes")
    if count * bits != span * 8:
        raise _bad(name, f"{what} needs {count * bits // 8} bytes but its data_offsets span {span}")


def _bounded_count(shape: tuple[int, ...], *, limit: int) -> int | None:
    """The product of ``shape`` (no zeros), or None once a partial product passes ``limit``
    before the last dimension. Each factor is at most 2**63 and each partial product at most
    ``limit``, so every step is a small multiplication, never a huge arbitrary-precision one."""
    count = 1
    for index, dim in enumerate(shape):
        count *= dim
        if count > limit and index < len(shape) - 1:
            return None
    return count


def _check_count_fits_u64(key: str, shape: tuple[int, ...], name: str) -> None:
    """An empty tensor's dimensions multiplied in order, as the reference library does: it
    refuses the file when a partial product overflows a u64 before the zero is reached."""
    count = 1
    for dim in shape:
        count *= dim
        if count > _MAX_U64:
            raise _bad(
                name,
                f"tensor {key!r} has a shape {list(shape)} whose element count overflows "
                "64 bits before its zero dimension",
            )


def _metadata(value: Any, name: str) -> dict[str, str]:
    if value is None:
        return {}
    if not isinstance(value, dict) or not all(
        isinstance(k, str) and isinstance(v, str) for k, v in value.items()
    ):
        raise _bad(name, f"its {METADATA_KEY} must map strings to strings")
    return dict(value)


def _is_count(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= 0


def _bounded_int(text: str) -> int:
    """``parse_int`` for the header: only what fits a u64, never ``-0`` or a negative."""
    if text.startswith("-"):
        raise ValueError(f"negative number {text[:40]}")
    if len(text) > _MAX_INT_DIGITS:
        raise ValueError(f"number of {len(text)} digits, more than a 64-bit count holds")
    return int(text)


def _no_constant(text: str) -> Any:
    """``parse_constant``: ``NaN`` and ``Infinity`` are not JSON."""
    raise ValueError(f"{text} is not JSON")


def _strict_object(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    """``object_pairs_hook``: refuses duplicate keys, and keys or string values that are not
    valid Unicode (escaped unpaired surrogates, which Python accepts and serde refuses)."""
    result: dict[str, Any] = {}
    for key, value in pairs:
        _check_unicode(key)
        if isinstance(value, str):
            _check_unicode(value)
        if key in result:
            raise ValueError(f"duplicate key {key!r}")
        result[key] = value
    return result


def _check_unicode(text: str) -> None:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        raise ValueError(f"string {text[:40]!r} holds an unpaired surrogate") from None


def _bad(name: str, problem: str) -> FormatError:
    return FormatError(
        f"{name} is not a valid safetensors file: {problem}",
        hint="the file is truncated or corrupted; restore it or save the model again",
    )
