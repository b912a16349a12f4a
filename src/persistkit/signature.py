"""Input/output signatures in Open Inference Protocol terms, derived from example arrays."""

from __future__ import annotations

from typing import Any

import numpy as np

# numpy dtype kind+size -> Open Inference Protocol datatype
_TO_OIP = {
    "b1": "BOOL",
    "u1": "UINT8",
    "u2": "UINT16",
    "u4": "UINT32",
    "u8": "UINT64",
    "i1": "INT8",
    "i2": "INT16",
    "i4": "INT32",
    "i8": "INT64",
    "f2": "FP16",
    "f4": "FP32",
    "f8": "FP64",
}
_FROM_OIP = {v: k for k, v in _TO_OIP.items()}


def oip_datatype(dtype: np.dtype[Any]) -> str:
    """The Open Inference Protocol datatype of a numpy dtype (``BYTES`` for text/objects)."""
    key = f"{dtype.kind}{dtype.itemsize}"
    if key in _TO_OIP:
        return _TO_OIP[key]
    if dtype.kind in "USOV":
        return "BYTES"
    raise ValueError(f"numpy dtype {dtype} has no Open Inference Protocol datatype")


def numpy_dtype(datatype: str) -> np.dtype[Any]:
    """The numpy dtype for an Open Inference Protocol datatype (``BYTES`` maps to object)."""
    if datatype == "BYTES":
        return np.dtype(object)
    try:
        return np.dtype(_FROM_OIP[datatype])
    except KeyError:
        raise ValueError(f"unknown Open Inference Protocol datatype {datatype!r}") from None


def tensor_spec(name: str, array: np.ndarray) -> dict[str, Any]:
    """``{name, datatype, shape}`` with ``-1`` for the batch (first) dimension."""
    shape = [-1, *array.shape[1:]] if array.ndim >= 1 else []
    return {"name": name, "datatype": oip_datatype(array.dtype), "shape": shape}


def signature_from_example(inputs: np.ndarray, outputs: np.ndarray | None) -> dict[str, Any]:
    sig: dict[str, Any] = {"inputs": [tensor_spec("input-0", inputs)], "outputs": []}
    if outputs is not None:
        sig["outputs"] = [tensor_spec("output-0", outputs)]
    return sig
