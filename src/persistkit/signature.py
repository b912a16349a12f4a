"""Input/output signatures in Open Inference Protocol terms, derived from example arrays.

A signature is stored in the manifest as ``{"inputs": [spec, ...], "outputs": [spec, ...]}``
where each spec is ``{"name", "datatype", "shape"}``: the datatype is an Open Inference
Protocol name (``BOOL``, ``UINT8`` … ``INT64``, ``FP16``/``FP32``/``FP64``, ``BYTES``) and the
first dimension of the shape is ``-1`` (any batch size). :class:`TensorSpec` is the validated
view that ``predict`` and ``serve`` use; manifests are untrusted, so it checks every field.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from persistkit.errors import InputError, ManifestError

INPUT_NAME = "input-0"
OUTPUT_NAME = "output-0"
MAX_RANK = 16

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
DATATYPES = (*_FROM_OIP, "BYTES")


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


@dataclass(frozen=True)
class TensorSpec:
    """One named tensor: OIP datatype and shape, ``-1`` where any size is allowed."""

    name: str
    datatype: str
    shape: tuple[int, ...]

    @property
    def dtype(self) -> np.dtype[Any]:
        """The numpy dtype values are converted to (object for ``BYTES``)."""
        return numpy_dtype(self.datatype)

    @property
    def sample_shape(self) -> tuple[int, ...]:
        """The shape of one item of the batch (the shape without its first dimension)."""
        return self.shape[1:]

    def accepts(self, shape: tuple[int, ...]) -> bool:
        """True if a tensor of ``shape`` fits: same rank, equal sizes where not ``-1``."""
        return len(shape) == len(self.shape) and all(
            want in (-1, got) for want, got in zip(self.shape, shape)
        )

    def describe_shape(self) -> str:
        """The shape for people: ``(N, 64)``, with ``N`` for the batch and ``*`` for any size."""
        parts = [
            "N" if i == 0 and d == -1 else "*" if d == -1 else str(d)
            for i, d in enumerate(self.shape)
        ]
        return "(" + ", ".join(parts) + ("," if len(parts) == 1 else "") + ")"

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "datatype": self.datatype, "shape": list(self.shape)}

    @classmethod
    def from_dict(cls, data: Any) -> TensorSpec:
        """Validate one spec read from a (possibly hostile) manifest."""
        if not isinstance(data, dict):
            raise ManifestError("a signature entry is not an object")
        name, datatype, shape = data.get("name"), data.get("datatype"), data.get("shape")
        if not isinstance(name, str) or not name or len(name) > 256:
            raise ManifestError(f"signature entry has an invalid name {name!r:.80}")
        if datatype not in DATATYPES:
            raise ManifestError(f"signature entry {name!r} has unknown datatype {datatype!r:.80}")
        if (
            not isinstance(shape, list)
            or len(shape) > MAX_RANK
            or not all(isinstance(d, int) and not isinstance(d, bool) and d >= -1 for d in shape)
        ):
            raise ManifestError(f"signature entry {name!r} has an invalid shape {shape!r:.80}")
        return cls(name, datatype, tuple(shape))

    @classmethod
    def of_array(cls, name: str, array: np.ndarray) -> TensorSpec:
        """The spec of ``array`` taken as a batch: its first dimension becomes ``-1``."""
        shape = (-1, *array.shape[1:]) if array.ndim >= 1 else ()
        return cls(name, oip_datatype(array.dtype), tuple(int(d) for d in shape))


@dataclass(frozen=True)
class Signature:
    """The inputs and outputs a model was saved with (empty lists when unknown)."""

    inputs: tuple[TensorSpec, ...] = ()
    outputs: tuple[TensorSpec, ...] = ()

    @property
    def input(self) -> TensorSpec | None:
        """The first (for persistkit models: the only) input, or None if unknown."""
        return self.inputs[0] if self.inputs else None

    @property
    def output(self) -> TensorSpec | None:
        return self.outputs[0] if self.outputs else None

    @classmethod
    def from_manifest(cls, signature: dict[str, Any] | None) -> Signature:
        """Read the ``signature`` field of a manifest (``None`` gives an empty signature)."""
        if not signature:
            return cls()
        try:
            inputs = tuple(TensorSpec.from_dict(s) for s in signature.get("inputs") or [])
            outputs = tuple(TensorSpec.from_dict(s) for s in signature.get("outputs") or [])
        except AttributeError:
            raise ManifestError("the manifest's signature is malformed") from None
        return cls(inputs, outputs)

    def to_dict(self) -> dict[str, Any]:
        return {
            "inputs": [s.to_dict() for s in self.inputs],
            "outputs": [s.to_dict() for s in self.outputs],
        }


def tensor_spec(name: str, array: np.ndarray) -> dict[str, Any]:
    """``{name, datatype, shape}`` with ``-1`` for the batch (first) dimension."""
    return TensorSpec.of_array(name, array).to_dict()


def signature_from_example(
    inputs: np.ndarray,
    outputs: np.ndarray | None,
    *,
    input_name: str = INPUT_NAME,
    output_name: str = OUTPUT_NAME,
) -> dict[str, Any]:
    """The manifest's ``signature`` field for an example batch and its predictions."""
    sig: dict[str, Any] = {"inputs": [tensor_spec(input_name, inputs)], "outputs": []}
    if outputs is not None:
        sig["outputs"] = [tensor_spec(output_name, outputs)]
    return sig


def conform(array: np.ndarray, spec: TensorSpec | None, *, source: str) -> np.ndarray:
    """Make ``array`` a batch that fits ``spec``: add the batch dimension to a single item,
    convert the dtype where no value changes, and check the shape.

    Raises :class:`InputError` naming ``source`` when the array cannot fit.
    """
    if spec is None:
        return array if array.ndim >= 1 else array.reshape(1)
    if len(spec.shape) >= 1 and array.ndim == len(spec.shape) - 1:
        array = array[np.newaxis, ...]
    if not spec.accepts(tuple(array.shape)):
        raise InputError(
            f"{source} has shape {tuple(array.shape)}; the model expects "
            f"{spec.describe_shape()} (one item: {spec.sample_shape or 'a scalar'})",
            hint="reshape the data to the model's input shape (`persistkit show` prints it)",
        )
    return cast_exactly(array, spec, source=source)


def cast_exactly(array: np.ndarray, spec: TensorSpec, *, source: str) -> np.ndarray:
    """Convert ``array`` to the spec's dtype, refusing conversions that would change values."""
    if spec.datatype == "BYTES":
        if array.dtype.kind in "USO":
            return array
        raise InputError(
            f"{source} holds {array.dtype} numbers; the model expects text (BYTES)",
            hint="pass strings",
        )
    target = spec.dtype
    if array.dtype == target:
        return array
    if array.dtype.kind in "USO":
        raise InputError(
            f"{source} holds text; the model expects numbers ({spec.datatype})",
            hint="pass numeric data",
        )
    if np.can_cast(array.dtype, target, casting="safe") or (
        array.dtype.kind == "f" and target.kind == "f"
    ):
        # float to narrower float rounds as the model itself would; nothing else may change
        return array.astype(target)
    converted = array.astype(target)
    with np.errstate(invalid="ignore"):
        same = np.array_equal(converted.astype(array.dtype), array, equal_nan=target.kind == "f")
    if not same:
        raise InputError(
            f"{source} holds {array.dtype} values that do not fit the model's "
            f"{spec.datatype} input without changing them",
            hint=f"pass values representable as {spec.datatype}",
        )
    return converted
