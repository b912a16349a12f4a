"""Tensors of the Open Inference Protocol's gRPC messages to numpy arrays and back.

A request's inputs come either all as ``raw_input_contents`` (little-endian bytes, what
tritonclient sends) or all as typed ``contents`` (``fp32_contents``, ``bytes_contents``, ...);
both decode through the same checks as REST bodies (:mod:`persistkit.server.protocol`): the
shape's bounds, the byte count, BYTES elements, integer ranges. Errors are
:class:`~persistkit.errors.InputError` with the same messages REST gives.

The answer comes back in the form the request used: raw when the request was raw (or when an
output has no typed form, FP16), typed otherwise, so a client that writes typed contents
reads typed contents.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np

from persistkit.errors import InputError
from persistkit.server.proto import InferTensorContents
from persistkit.server.protocol import _from_binary, _shape, _to_binary
from persistkit.signature import DATATYPES, numpy_dtype, oip_datatype

#: the typed ``InferTensorContents`` field of each datatype (FP16 has none: raw only)
CONTENTS_FIELD = {
    "BOOL": "bool_contents",
    "INT8": "int_contents",
    "INT16": "int_contents",
    "INT32": "int_contents",
    "INT64": "int64_contents",
    "UINT8": "uint_contents",
    "UINT16": "uint_contents",
    "UINT32": "uint_contents",
    "UINT64": "uint64_contents",
    "FP32": "fp32_contents",
    "FP64": "fp64_contents",
    "BYTES": "bytes_contents",
}
#: the dtype of the 32-bit fields that carry the smaller integer datatypes too
_CARRIERS = {"int_contents": np.dtype(np.int32), "uint_contents": np.dtype(np.uint32)}
_ALL_FIELDS = tuple(f.name for f in InferTensorContents.DESCRIPTOR.fields)


def decode_inputs(request: Any) -> dict[str, np.ndarray]:
    """The input arrays of a ``ModelInferRequest`` by name; each array's dtype is the
    datatype its tensor declared (``BYTES``: an object array of str, or of bytes where an
    element is not UTF-8)."""
    tensors, raw = request.inputs, request.raw_input_contents
    if not tensors:
        raise InputError("the request has no inputs", hint="send at least one input tensor")
    if raw and len(raw) != len(tensors):
        raise InputError(
            f"the request has {len(raw)} raw_input_contents for {len(tensors)} inputs",
            hint="send one raw_input_contents entry per input, in the order of the inputs "
            "(or typed contents for every input)",
        )
    inputs: dict[str, np.ndarray] = {}
    for index, tensor in enumerate(tensors):
        name = tensor.name
        if not name:
            raise InputError("an input has no 'name'", hint="give every input its name")
        if name in inputs:
            raise InputError(f"input {name!r} appears twice", hint="send each input once")
        inputs[name] = _decode(tensor, raw[index] if raw else None)
    return inputs


def _decode(tensor: Any, raw: bytes | None) -> np.ndarray:
    label = f"input {tensor.name[:64]!r}"
    datatype = tensor.datatype
    if datatype not in DATATYPES:
        raise InputError(
            f"{label} has datatype {datatype[:40]!r}, which is not an OIP datatype",
            hint=f"use one of {', '.join(DATATYPES)}",
        )
    shape = _shape(list(tensor.shape), label)
    count = math.prod(shape)
    typed = [field for field in _ALL_FIELDS if len(getattr(tensor.contents, field))]
    if raw is not None:
        if typed:
            raise InputError(
                f"{label} has both raw_input_contents and typed contents ({typed[0]})",
                hint="send its values one way only",
            )
        return _from_binary(raw, datatype, shape, count, label)
    field = CONTENTS_FIELD.get(datatype)
    if field is None:
        raise InputError(
            f"{label} is {datatype}, which has no typed contents",
            hint=f"send {datatype} values as raw_input_contents (little-endian bytes)",
        )
    if any(other != field for other in typed):
        wrong = next(other for other in typed if other != field)
        raise InputError(
            f"{label} is {datatype} but its values are in {wrong}",
            hint=f"put {datatype} values in {field}",
        )
    values = getattr(tensor.contents, field)
    if len(values) != count:
        raise InputError(
            f"{label} has shape {shape} ({count} values) but {len(values)} values of data",
            hint="make the data hold exactly as many values as the shape says",
        )
    if datatype == "BYTES":
        return _texts(list(values), shape)
    return _typed_array(values, datatype, shape, label)


def _typed_array(values: Sequence[Any], datatype: str, shape: list[int], label: str) -> np.ndarray:
    """Typed values in the datatype's dtype. INT8/16 and UINT8/16 travel in 32-bit fields,
    so a value outside the datatype's range is refused rather than wrapped."""
    dtype = numpy_dtype(datatype)
    carrier = _CARRIERS.get(CONTENTS_FIELD[datatype], dtype)
    array = np.array(values, dtype=carrier)
    if carrier != dtype:
        narrow = array.astype(dtype)
        if not np.array_equal(narrow, array):
            raise InputError(
                f"{label} has values outside the range of {datatype}",
                hint="send whole numbers the datatype can hold",
            )
        array = narrow
    return array.reshape(shape)


def _texts(items: list[bytes], shape: list[int]) -> np.ndarray:
    """BYTES elements as the REST path gives them to a model: str when every element is
    UTF-8 (text models want str), else the bytes themselves (picture files)."""
    try:
        values: list[Any] = [item.decode("utf-8") for item in items]
    except UnicodeDecodeError:
        values = items
    array = np.empty(len(values), dtype=object)
    array[:] = values
    return array.reshape(shape)


def encode_response(response: Any, outputs: Sequence[tuple[str, np.ndarray]], *, raw: bool) -> None:
    """Fill ``response`` (a ``ModelInferResponse``) with ``(name, array)`` outputs: as
    ``raw_output_contents`` when ``raw`` or when an output has no typed form, else typed."""
    arrays = [(name, array.reshape(1) if array.ndim == 0 else array) for name, array in outputs]
    datatypes = [oip_datatype(array.dtype) for _, array in arrays]
    raw = raw or any(datatype not in CONTENTS_FIELD for datatype in datatypes)
    for (name, array), datatype in zip(arrays, datatypes):
        tensor = response.outputs.add(name=name, datatype=datatype, shape=list(array.shape))
        if raw:
            response.raw_output_contents.append(_to_binary(array, datatype))
        elif datatype == "BYTES":
            tensor.contents.bytes_contents.extend(
                v if isinstance(v, bytes) else str(v).encode("utf-8") for v in array.reshape(-1)
            )
        else:
            getattr(tensor.contents, CONTENTS_FIELD[datatype]).extend(array.reshape(-1).tolist())
