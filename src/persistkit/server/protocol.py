"""Open Inference Protocol V2 bodies: parse infer requests (JSON tensors and the binary tensor
data extension) into numpy arrays checked against a model's signature, and build responses.

Pure functions over bytes and arrays, no HTTP: the app calls them and maps
:class:`~persistkit.errors.InputError` to a 400 ``{"error": ...}`` response.
"""

from __future__ import annotations

import contextlib
import math
import struct
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from persistkit.errors import InputError
from persistkit.server import codec
from persistkit.signature import (
    DATATYPES,
    MAX_RANK,
    Signature,
    TensorSpec,
    numpy_dtype,
    oip_datatype,
)

HEADER_LENGTH = "inference-header-content-length"
# JSON scalar kinds each datatype accepts in "data" (numpy dtype kinds after np.array)
_JSON_KINDS = {"BOOL": "b", "BYTES": "U"}
_INT_KINDS, _FLOAT_KINDS = "iu", "iuf"
# the most values an input's shape may describe, zero dimensions left out: more than any
# request body holds, far below what numpy can index (so reshape never fails)
MAX_ELEMENTS = 2**40


@dataclass(frozen=True)
class InferRequest:
    """A decoded infer request: the input arrays by name and how to answer."""

    id: str | None
    inputs: dict[str, np.ndarray]
    outputs: list[str]  # requested output names; empty means all
    binary_output: bool


def parse_infer_request(body: bytes | bytearray, header_length: str | None) -> InferRequest:
    """Decode an infer request body; ``header_length`` is the value of the
    ``Inference-Header-Content-Length`` header (binary extension), or None for pure JSON.

    Binary tensors are views of ``body``, not copies: pass a ``bytearray`` for arrays the
    model may write to (from ``bytes`` they are copied, as numpy cannot write to them).
    """
    if header_length is None:
        header, binary = memoryview(body), memoryview(b"")
    else:
        # ASCII digits only: "²".isdigit() is true, but int() refuses it
        digits = header_length.isascii() and header_length.isdigit()
        length = int(header_length) if digits else -1
        if not 0 <= length <= len(body):
            raise InputError(
                f"Inference-Header-Content-Length is {header_length[:40]!r} but the body has "
                f"{len(body)} bytes",
                hint="give the length in bytes of the JSON part at the start of the body",
            )
        view = memoryview(body)
        header, binary = view[:length], view[length:]
    try:
        return _parse(header, binary, codec.loads)
    except InputError:
        if codec.BACKEND == "json":
            raise
        # orjson reads integers past 64 bits as floats: a refusal is worded from the
        # standard library's exact reading (and a request it accepts is answered)
        return _parse(header, binary, codec.stdlib_loads)


def _parse(header: memoryview, binary: memoryview, loads: Callable[[Any], Any]) -> InferRequest:
    try:
        request = loads(header)
    except codec.JSONDecodeError as exc:
        raise InputError(
            f"the request is not valid JSON: {exc}", hint="send a JSON object"
        ) from None
    if not isinstance(request, dict):
        raise InputError("the request must be a JSON object", hint='send {"inputs": [...]}')
    raw_inputs = request.get("inputs")
    if not isinstance(raw_inputs, list) or not raw_inputs:
        raise InputError(
            "the request has no 'inputs' list",
            hint='send {"inputs": [{"name", "datatype", "shape", "data"}]}',
        )
    inputs: dict[str, np.ndarray] = {}
    offset = 0
    for raw in raw_inputs:
        name, array, used = _parse_input(raw, binary, offset)
        if name in inputs:
            raise InputError(f"input {name!r} appears twice", hint="send each input once")
        inputs[name] = array
        offset += used
    if offset != len(binary):
        raise InputError(
            f"the body has {len(binary) - offset} bytes of binary data no input claims",
            hint="make each input's parameters.binary_data_size match its data",
        )
    return InferRequest(
        id=_request_id(request.get("id")),
        inputs=inputs,
        outputs=_requested_outputs(request.get("outputs")),
        binary_output=_binary_output(request),
    )


def _request_id(value: Any) -> str | None:
    if value is None:
        return None
    if not isinstance(value, str):
        raise InputError("the request 'id' must be a string", hint="send a string id or none")
    return value


def _requested_outputs(value: Any) -> list[str]:
    if value is None:
        return []
    if not isinstance(value, list) or not all(
        isinstance(o, dict) and isinstance(o.get("name"), str) for o in value
    ):
        raise InputError("'outputs' must be a list of {\"name\": ...}", hint="fix 'outputs'")
    return [o["name"] for o in value]


def _binary_output(request: dict[str, Any]) -> bool:
    params = request.get("parameters")
    wanted = isinstance(params, dict) and params.get("binary_data_output") is True
    for output in request.get("outputs") or []:
        output_params = output.get("parameters") if isinstance(output, dict) else None
        if isinstance(output_params, dict) and "binary_data" in output_params:
            wanted = output_params["binary_data"] is True
    return wanted


def _parse_input(raw: Any, binary: memoryview, offset: int) -> tuple[str, np.ndarray, int]:
    """One input object -> (name, array, binary bytes consumed)."""
    if not isinstance(raw, dict):
        raise InputError("each input must be a JSON object", hint="see the OIP V2 spec")
    name = raw.get("name")
    if not isinstance(name, str) or not name:
        raise InputError("an input has no 'name'", hint="give every input its name")
    label = f"input {name[:64]!r}"
    datatype = raw.get("datatype")
    if datatype not in DATATYPES:
        raise InputError(
            f"{label} has datatype {str(datatype)[:40]!r}, which is not an OIP datatype",
            hint=f"use one of {', '.join(DATATYPES)}",
        )
    shape = _shape(raw.get("shape"), label)
    count = math.prod(shape)
    params = raw.get("parameters") or {}
    size = params.get("binary_data_size") if isinstance(params, dict) else None
    if size is not None:
        if not isinstance(size, int) or isinstance(size, bool) or size < 0:
            raise InputError(f"{label} has an invalid binary_data_size", hint="give a byte count")
        if offset + size > len(binary):
            raise InputError(
                f"{label} claims {_brief(size)} bytes of binary data but only "
                f"{len(binary) - offset} remain in the body",
                hint="send the bytes after the JSON header",
            )
        chunk = binary[offset : offset + size]
        return name, _from_binary(chunk, datatype, shape, count, label), size
    if "data" not in raw:
        raise InputError(f"{label} has neither 'data' nor binary data", hint="send its values")
    return name, _from_json(raw["data"], datatype, shape, count, label), 0


def _shape(shape: Any, label: str) -> list[int]:
    """The input's shape, every dimension bounded before anything is computed from it: at
    most ``MAX_RANK`` whole numbers >= 0 whose non-zero product is at most
    ``MAX_ELEMENTS`` (numpy could not build more, and no request body holds more)."""
    if not isinstance(shape, list):
        raise InputError(
            f"{label} has no valid 'shape' (a list of sizes >= 0)", hint="give its shape"
        )
    if len(shape) > MAX_RANK:
        raise InputError(
            f"{label} has a shape of {len(shape)} dimensions, more than the {MAX_RANK} allowed",
            hint="reshape the input to the model's shape",
        )
    for dim in shape:
        if not isinstance(dim, int) or isinstance(dim, bool) or dim < 0:
            raise InputError(
                f"{label} has an invalid size {str(dim)[:40]!r} in its 'shape' "
                "(sizes are whole numbers >= 0)",
                hint="give its shape as a list of whole numbers",
            )
    elements = 1  # zero dimensions left out: [0, 10**30] is as absurd as [10**30]
    for dim in shape:
        if dim > MAX_ELEMENTS or elements * max(dim, 1) > MAX_ELEMENTS:
            raise InputError(
                f"{label} has a 'shape' of more than {MAX_ELEMENTS} values",
                hint="send a smaller tensor; each size counts values",
            )
        elements *= max(dim, 1)
    return shape


def _brief(number: int) -> str:
    """A number for a message: a huge one is cut to its first digits and its length."""
    text = str(number)
    return text if len(text) <= 24 else f"{text[:12]}... ({len(text)} digits)"


def _from_binary(
    chunk: bytes | bytearray | memoryview, datatype: str, shape: list[int], count: int, label: str
) -> np.ndarray:
    if datatype == "BYTES":
        items = _split_bytes(chunk, label, count)
        if len(items) != count:
            raise _count_error(label, shape, count, len(items))
        try:  # text models want str, as they get from JSON requests
            values: list[Any] = [item.decode("utf-8") for item in items]
        except UnicodeDecodeError:
            values = list(items)
        texts = np.empty(count, dtype=object)
        texts[:] = values
        return texts.reshape(shape)
    dtype = numpy_dtype(datatype).newbyteorder("<")
    if len(chunk) != count * dtype.itemsize:
        raise InputError(
            f"{label} has shape {shape} ({count} {datatype} values, "
            f"{count * dtype.itemsize} bytes) but {len(chunk)} bytes of data",
            hint="send exactly shape × element size bytes, little-endian",
        )
    array = np.frombuffer(chunk, dtype=dtype).reshape(shape)
    if array.flags.writeable and array.flags.aligned and dtype.isnative:
        return array  # a view of the body: no copy
    # read-only (bytes), misaligned after the JSON header, or big-endian host: copy once
    return array.astype(dtype.newbyteorder("="))


def _split_bytes(chunk: bytes | bytearray | memoryview, label: str, count: int) -> list[bytes]:
    """BYTES tensors: each element is a 4-byte little-endian length, then that many bytes.

    Stops at one element past ``count`` (the caller then refuses the miscount): a body of
    millions of empty elements under a small shape must not hold the event loop."""
    items: list[bytes] = []
    pos = 0
    while pos < len(chunk) and len(items) <= count:
        if pos + 4 > len(chunk):
            raise InputError(f"{label} has a truncated BYTES element", hint="check the encoding")
        (length,) = struct.unpack_from("<I", chunk, pos)
        pos += 4
        if pos + length > len(chunk):
            raise InputError(f"{label} has a truncated BYTES element", hint="check the encoding")
        items.append(bytes(chunk[pos : pos + length]))
        pos += length
    return items


def _from_json(data: Any, datatype: str, shape: list[int], count: int, label: str) -> np.ndarray:
    try:
        values = np.array(data)
    except (ValueError, TypeError, RecursionError):
        raise InputError(
            f"{label} 'data' is not a regular (nested) list", hint="send a flat list of values"
        ) from None
    if values.size != count:
        raise _count_error(label, shape, count, values.size)
    kind = values.dtype.kind
    if kind == "O" and count and datatype in ("FP16", "FP32", "FP64"):
        # integers past 64 bits make an object array; read them as the float they name, as
        # the orjson path does (one past the float range stays refused below)
        with contextlib.suppress(ValueError, TypeError, OverflowError):
            values = np.array(data, dtype=np.float64)
            kind = values.dtype.kind
    allowed = _JSON_KINDS.get(datatype) or (_INT_KINDS if datatype[0] in "IU" else _FLOAT_KINDS)
    if count and kind not in allowed:
        raise InputError(
            f"{label} is {datatype} but its 'data' holds "
            f"{'text' if kind == 'U' else 'other'} values ({values.dtype})",
            hint=f"send {_describe_values(datatype)}",
        )
    if datatype == "BYTES":
        return values.astype(object).reshape(shape)
    target = numpy_dtype(datatype)
    converted = values.astype(target, copy=False).reshape(shape)
    if datatype[0] in "IU" and count and not np.array_equal(converted.ravel(), values.ravel()):
        raise InputError(
            f"{label} has values outside the range of {datatype}",
            hint=f"send {_describe_values(datatype)}",
        )
    return converted


def _describe_values(datatype: str) -> str:
    if datatype == "BOOL":
        return "true/false values"
    if datatype == "BYTES":
        return "strings"
    return "whole numbers" if datatype[0] in "IU" else "numbers"


def _count_error(label: str, shape: list[int], want: int, got: int) -> InputError:
    return InputError(
        f"{label} has shape {shape} ({want} values) but {got} values of data",
        hint="make the data hold exactly as many values as the shape says",
    )


def picture_files(inputs: dict[str, np.ndarray], signature: Signature) -> list[bytes] | None:
    """The encoded picture files (PNG, JPEG, ...) of a request that sends its one input as
    ``BYTES`` to a model whose input is numeric, one file per batch item; else ``None``.

    A client then needs no preprocessing code: the server reads each file as ``persistkit
    predict`` reads a picture file. (A model whose own input is text keeps BYTES as text.)
    """
    spec = signature.input
    if spec is None or spec.datatype == "BYTES" or len(inputs) != 1:
        return None
    name, array = next(iter(inputs.items()))
    if array.dtype != object or name != spec.name:
        return None
    if array.ndim != 1 or not len(array):
        raise InputError(
            f"pictures sent as BYTES to {spec.name!r} must have shape [N] (one file per "
            f"item), not {list(array.shape)}",
            hint="send shape [1] with the bytes of one picture file",
        )
    if not all(isinstance(item, bytes) for item in array):
        raise InputError(
            "pictures sent as BYTES must travel as binary data: JSON strings cannot hold "
            "a picture file's bytes",
            hint="use the binary data extension (tritonclient: "
            "set_data_from_numpy(..., binary_data=True))",
        )
    return list(array)


def check_inputs(inputs: dict[str, np.ndarray], signature: Signature) -> np.ndarray:
    """The single model input, checked against the signature (name, datatype, shape).

    Parsed arrays carry exactly the dtype their request declared, so the dtype tells the
    declared datatype.
    """
    spec = signature.input
    if spec is None:
        if len(inputs) != 1:
            raise InputError(
                f"this model takes one input; the request has {len(inputs)}",
                hint="send a single input",
            )
        return next(iter(inputs.values()))
    extra = sorted(set(inputs) - {spec.name})
    if extra:
        raise InputError(
            f"the model has no input named {extra[0][:64]!r}; its input is {spec.name!r}",
            hint=f"name the input {spec.name!r} (GET the model's metadata to see it)",
        )
    if spec.name not in inputs:
        raise InputError(f"the request lacks the input {spec.name!r}", hint="send it")
    return _checked(inputs[spec.name], spec)


def _checked(array: np.ndarray, spec: TensorSpec) -> np.ndarray:
    """``array`` if its declared datatype and shape fit ``spec``; else InputError."""
    declared = oip_datatype(array.dtype)
    if declared != spec.datatype:
        raise InputError(
            f"input {spec.name!r} is {declared} but the model takes {spec.datatype}",
            hint=f"send {spec.datatype} values",
        )
    if not spec.accepts(tuple(array.shape)):
        raise InputError(
            f"input {spec.name!r} has shape {list(array.shape)} but the model takes "
            f"{list(spec.shape)} (-1: any size)",
            hint="reshape the input to the model's shape",
        )
    return array


def check_model_inputs(
    inputs: dict[str, np.ndarray], signature: Signature
) -> np.ndarray | dict[str, np.ndarray] | tuple[np.ndarray, ...]:
    """The inputs as the model takes them: one array (see :func:`check_inputs`), or for a
    model of several inputs every one of them, checked against its spec, as a dict by name
    or a tuple in the signature's order (``signature.input_form``). All must have the same
    batch size. Raises :class:`InputError` naming a missing, extra or misshapen input."""
    if signature.input_form == "single":
        return check_inputs(inputs, signature)
    names = [spec.name for spec in signature.inputs]
    listed = ", ".join(repr(name) for name in names)
    extra = [name for name in inputs if name not in names]
    if extra:
        raise InputError(
            f"the model has no input named {extra[0][:64]!r}; its inputs are {listed}",
            hint="name each input as the model's metadata does",
        )
    missing = [name for name in names if name not in inputs]
    if missing:
        raise InputError(
            f"the request lacks the input{'s' if len(missing) > 1 else ''} "
            f"{', '.join(repr(name) for name in missing)}; the model takes {listed}",
            hint="send every input the model's metadata lists",
        )
    checked = {spec.name: _checked(inputs[spec.name], spec) for spec in signature.inputs}
    sizes = {name: len(array) for name, array in checked.items() if array.ndim}
    if len(set(sizes.values())) > 1:
        raise InputError(
            "the inputs have different batch sizes (first dimension): "
            + ", ".join(f"{name!r} {size}" for name, size in sizes.items()),
            hint="send the same number of items in every input",
        )
    if signature.input_form == "dict":
        return checked
    return tuple(checked[name] for name in names)


@dataclass(frozen=True)
class InferResponse:
    """An encoded response body plus the headers it needs."""

    body: bytes
    headers: dict[str, str]


def build_response(
    *,
    model_name: str,
    model_version: str,
    request_id: str | None,
    output_name: str,
    prediction: np.ndarray,
    binary: bool,
    extra: Sequence[tuple[str, np.ndarray]] = (),
) -> InferResponse:
    """Encode the output tensor, then each ``(name, array)`` of ``extra`` (the ``label``
    and ``scores`` of a model saved with labels): see :func:`build_outputs_response`."""
    return build_outputs_response(
        model_name=model_name,
        model_version=model_version,
        request_id=request_id,
        outputs=[(output_name, prediction), *extra],
        binary=binary,
    )


def build_outputs_response(
    *,
    model_name: str,
    model_version: str,
    request_id: str | None,
    outputs: Sequence[tuple[str, np.ndarray]],
    binary: bool,
) -> InferResponse:
    """Encode ``(name, array)`` outputs as JSON, or as a JSON header + raw bytes in output
    order when ``binary`` (``BYTES`` elements: 4-byte little-endian length, then UTF-8)."""
    encoded, payloads = [], []
    for name, array in outputs:
        output, payload = _encode_output(name, array, binary)
        encoded.append(output)
        payloads.append(payload)
    response: dict[str, Any] = {
        "model_name": model_name,
        "model_version": model_version,
        "outputs": encoded,
    }
    if request_id is not None:
        response["id"] = request_id
    finite = all(array.dtype.kind != "f" or bool(np.isfinite(array).all()) for _, array in outputs)
    header = codec.dumps(response, finite=finite or binary)
    if not binary:
        return InferResponse(header, {"content-type": "application/json"})
    return InferResponse(
        header + b"".join(payloads),
        {
            "content-type": "application/octet-stream",
            "inference-header-content-length": str(len(header)),
        },
    )


def _encode_output(name: str, array: np.ndarray, binary: bool) -> tuple[dict[str, Any], bytes]:
    if array.ndim == 0:
        array = array.reshape(1)
    datatype = oip_datatype(array.dtype)
    output: dict[str, Any] = {"name": name, "datatype": datatype, "shape": list(array.shape)}
    if not binary:
        output["data"] = _to_json_values(array, datatype)
        return output, b""
    payload = _to_binary(array, datatype)
    output["parameters"] = {"binary_data_size": len(payload)}
    return output, payload


def _to_json_values(prediction: np.ndarray, datatype: str) -> list[Any]:
    flat = prediction.reshape(-1)
    if datatype == "BYTES":
        return [v.decode("utf-8", "replace") if isinstance(v, bytes) else str(v) for v in flat]
    return flat.tolist()


def _to_binary(prediction: np.ndarray, datatype: str) -> bytes:
    if datatype == "BYTES":
        parts = []
        for value in prediction.reshape(-1):
            raw = value if isinstance(value, bytes) else str(value).encode("utf-8")
            parts.append(struct.pack("<I", len(raw)) + raw)
        return b"".join(parts)
    little = prediction.dtype.newbyteorder("<")
    return np.ascontiguousarray(prediction, dtype=little).tobytes()
