"""Writing the ``.safetensors`` layout of torch tensors ourselves, through
``persistkit.payload_writer``: each tensor's bytes go to the file straight from the tensor's
memory and are hashed from that same memory on another core, so a save passes over the
weights once, never reading the file back.

The bytes are exactly what ``safetensors.torch.save_file`` writes (its tensor order, header
JSON and padding; a test compares the two files byte for byte). Anything unusual (a tensor
not on the CPU, not contiguous, sparse, sharing memory with another, a dtype the table
below lacks, a big-endian machine) is left to ``save_file`` itself, with its own checks and
errors.
"""

from __future__ import annotations

import json
import struct
import sys
from pathlib import Path
from typing import Any

import persistkit

#: safetensors' dtype names, in the order its writer sorts tensors by (largest first; then by
#: name): the order of its Rust ``Dtype`` enum
_DTYPE_ORDER = (
    "U64",
    "I64",
    "F64",
    "C64",
    "F32",
    "U32",
    "I32",
    "BF16",
    "F16",
    "U16",
    "I16",
    "F8_E4M3",
    "F8_E5M2",
    "I8",
    "U8",
    "BOOL",
)
_TORCH_NAMES = {
    "uint64": "U64",
    "int64": "I64",
    "float64": "F64",
    "complex64": "C64",
    "float32": "F32",
    "uint32": "U32",
    "int32": "I32",
    "bfloat16": "BF16",
    "float16": "F16",
    "uint16": "U16",
    "int16": "I16",
    "float8_e4m3fn": "F8_E4M3",
    "float8_e5m2": "F8_E5M2",
    "int8": "I8",
    "uint8": "U8",
    "bool": "BOOL",
}
_RANK = {name: rank for rank, name in enumerate(_DTYPE_ORDER)}


def writable_here(tensors: dict[str, Any]) -> bool:
    """True when :func:`write_tensors` writes these tensors exactly as ``save_file`` would
    (else use ``save_file``, which also raises the library's own errors)."""
    import torch

    if sys.byteorder != "little" or not tensors:
        return False
    seen: set[int] = set()
    for tensor in tensors.values():
        if not isinstance(tensor, torch.Tensor) or tensor.layout != torch.strided:
            return False
        if tensor.device.type != "cpu" or not tensor.is_contiguous():
            return False
        if str(tensor.dtype).removeprefix("torch.") not in _TORCH_NAMES:
            return False
        if tensor.numel():
            storage = tensor.untyped_storage().data_ptr()
            if storage in seen:  # shared memory: save_file refuses it, with its own message
                return False
            seen.add(storage)
    return True


def write_tensors(tensors: dict[str, Any], path: Path, metadata: dict[str, str]) -> None:
    """Write ``tensors`` (see :func:`writable_here`) as a ``.safetensors`` file at ``path``."""
    import torch

    entries = []
    for name, tensor in tensors.items():
        dtype = _TORCH_NAMES[str(tensor.dtype).removeprefix("torch.")]
        entries.append((_RANK[dtype], name, dtype, tensor))
    entries.sort(key=lambda e: (e[0], e[1]))
    header: dict[str, Any] = {}
    if metadata:
        header["__metadata__"] = dict(sorted(metadata.items()))
    buffers = []
    offset = 0
    for _rank, name, dtype, tensor in entries:
        size = tensor.numel() * tensor.element_size()
        header[name] = {
            "dtype": dtype,
            "shape": list(tensor.shape),
            "data_offsets": [offset, offset + size],
        }
        offset += size
        if size:
            # the tensor's own memory, as bytes (no copy)
            buffers.append(tensor.detach().reshape(-1).view(torch.uint8).numpy())
    text = json.dumps(header, separators=(",", ":"), ensure_ascii=False).encode("utf-8")
    text += b" " * (-len(text) % 8)  # the library pads the header to 8-byte alignment
    with persistkit.payload_writer(path, stable=buffers) as fh:
        fh.write(struct.pack("<Q", len(text)) + text)
        for buf in buffers:
            fh.write(memoryview(buf))
