"""A strict, pure-Python reader of the ``.safetensors`` header.

Every structural rule of the format is checked from the header and the file size alone, before
any tensor memory is allocated or mapped: an 8-byte little-endian header length within a limit,
a JSON object header (no duplicate keys), known dtypes, non-negative shapes, and data offsets
that match each tensor's byte size, tile the data section from offset 0 without gaps or
overlap, and end exactly at the end of the file. A file that passes can be handed to the
``safetensors`` library without it ever reading past the file or allocating more than the file
holds.
"""

from __future__ import annotations

import json
import math
import os
import struct
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from persistkit.errors import FormatError

HEADER_LENGTH_BYTES = 8
MAX_HEADER_BYTES = 100_000_000  # the limit the safetensors library itself enforces
METADATA_KEY = "__metadata__"

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


@dataclass(frozen=True)
class TensorEntry:
    """One tensor as the header describes it; offsets are relative to the data section."""

    name: str
    dtype: str
    shape: tuple[int, ...]
    begin: int
    end: int

    @property
    def nbytes(self) -> int:
        return self.end - self.begin


@dataclass(frozen=True)
class SafetensorsHeader:
    """A validated header: tensors in file order, string metadata, and where data starts."""

    tensors: tuple[TensorEntry, ...]
    metadata: dict[str, str] = field(default_factory=dict)
    data_start: int = 0
    file_size: int = 0

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
    if not raw.startswith(b"{"):
        raise _bad(name, "its header is not a JSON object")
    try:
        header = json.loads(raw.decode("utf-8"), object_pairs_hook=_no_duplicates)
    except (UnicodeDecodeError, ValueError, RecursionError) as exc:
        raise _bad(name, f"its header is not valid JSON: {exc}") from None
    if not isinstance(header, dict):
        raise _bad(name, "its header is not a JSON object")
    metadata = _metadata(header.pop(METADATA_KEY, None), name)
    entries = [_entry(key, value, name) for key, value in header.items()]
    entries.sort(key=lambda e: (e.begin, e.end))
    position = 0
    for entry in entries:
        if entry.begin != position:
            problem = "overlaps the tensor before it" if entry.begin < position else "leaves a gap"
            raise _bad(name, f"tensor {entry.name!r} at offset {entry.begin} {problem}")
        position = entry.end
    if position != data_size:
        if position > data_size:
            raise _bad(
                name,
                f"its tensors need {position} bytes of data but the file holds {data_size}: "
                "it is truncated",
            )
        raise _bad(name, f"it has {data_size - position} trailing bytes after the last tensor")
    return SafetensorsHeader(tuple(entries), metadata, data_start, file_size)


def _entry(key: str, value: Any, name: str) -> TensorEntry:
    if not isinstance(value, dict) or set(value) != _TENSOR_KEYS:
        raise _bad(name, f"tensor {key!r} must have exactly dtype, shape and data_offsets")
    dtype, shape, offsets = value["dtype"], value["shape"], value["data_offsets"]
    if dtype not in DTYPE_BITS:
        raise _bad(name, f"tensor {key!r} has unknown dtype {dtype!r}")
    if not isinstance(shape, list) or not all(_is_count(d) for d in shape):
        raise _bad(name, f"tensor {key!r} has an invalid shape {shape!r}")
    if (
        not isinstance(offsets, list)
        or len(offsets) != 2
        or not all(_is_count(o) for o in offsets)
        or offsets[0] > offsets[1]
    ):
        raise _bad(name, f"tensor {key!r} has invalid data_offsets {offsets!r}")
    bits = math.prod(shape) * DTYPE_BITS[dtype]
    if bits % 8:
        raise _bad(name, f"tensor {key!r} of {dtype} {shape} does not fill whole bytes")
    if offsets[1] - offsets[0] != bits // 8:
        raise _bad(
            name,
            f"tensor {key!r} of {dtype} {shape} needs {bits // 8} bytes but its "
            f"data_offsets span {offsets[1] - offsets[0]}",
        )
    return TensorEntry(key, dtype, tuple(shape), offsets[0], offsets[1])


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


def _no_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    result: dict[str, Any] = {}
    for key, value in pairs:
        if key in result:
            raise ValueError(f"duplicate key {key!r}")
        result[key] = value
    return result


def _bad(name: str, problem: str) -> FormatError:
    return FormatError(
        f"{name} is not a valid safetensors file: {problem}",
        hint="the file is truncated or corrupted; restore it or save the model again",
    )
