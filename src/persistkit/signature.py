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


#: how a model takes its inputs / gives its outputs: one array, a dict of arrays by name, or
#: a tuple of arrays in order (the names are then ``input-0``, ``input-1``, ...)
FORMS = ("single", "dict", "tuple")


@dataclass(frozen=True)
class Signature:
    """The inputs and outputs a model was saved with (empty lists when unknown).

    ``input_form`` says how the model takes its inputs: ``"single"`` (one array, the first
    spec), ``"dict"`` (a dict of arrays keyed by the specs' names: ``forward(self, a, b)`` or
    a function of one dict) or ``"tuple"`` (arrays in the specs' order); ``output_form`` the
    same of what it returns. Manifests written before these fields existed are single.
    """

    inputs: tuple[TensorSpec, ...] = ()
    outputs: tuple[TensorSpec, ...] = ()
    input_form: str = "single"
    output_form: str = "single"

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
            input_form = signature.get("input_form", "single")
            output_form = signature.get("output_form", "single")
        except AttributeError:
            raise ManifestError("the manifest's signature is malformed") from None
        for form, specs in ((input_form, inputs), (output_form, outputs)):
            if form not in FORMS or (form == "single" and len(specs) > 1):
                raise ManifestError(f"the manifest's signature has an invalid form {form!r:.40}")
            if len({spec.name for spec in specs}) != len(specs):
                raise ManifestError("the manifest's signature names a tensor twice")
        return cls(inputs, outputs, input_form, output_form)

    def to_dict(self) -> dict[str, Any]:
        data: dict[str, Any] = {
            "inputs": [s.to_dict() for s in self.inputs],
            "outputs": [s.to_dict() for s in self.outputs],
        }
        # written only when not single, so a single-tensor manifest stays as before
        if self.input_form != "single":
            data["input_form"] = self.input_form
        if self.output_form != "single":
            data["output_form"] = self.output_form
        return data


def tensor_spec(name: str, array: np.ndarray) -> dict[str, Any]:
    """``{name, datatype, shape}`` with ``-1`` for the batch (first) dimension."""
    return TensorSpec.of_array(name, array).to_dict()


def is_tensor_group(value: Any) -> bool:
    """True for several tensors given together: a dict of them by name, or a tuple of them
    (a list stays one array: ``[[1, 2], [3, 4]]`` is a batch)."""
    return isinstance(value, (dict, tuple)) and bool(value)


def tensor_group(value: Any, *, what: str = "example=") -> dict[str, Any] | tuple[Any, ...]:
    """A dict (names checked: non-empty strings) or tuple of tensors, each turned into a
    numpy array. Raises :class:`InputError` for anything else in it."""
    from persistkit.arrays import to_numpy

    def array(item: Any, label: str) -> np.ndarray:
        converted = to_numpy(item)
        if converted.dtype == object or converted.ndim == 0:
            raise InputError(
                f"{what} {label} must be a batch of numbers or strings, not {type(item).__name__}",
                hint="give every tensor of the group as an array with a batch dimension",
            )
        return converted

    if isinstance(value, dict):
        if not all(isinstance(k, str) and k and len(k) <= 256 for k in value):
            raise InputError(
                f"{what} is a dict whose keys are not all names",
                hint="key each tensor by the model's name for it (a short non-empty string)",
            )
        return {k: array(v, repr(k)) for k, v in value.items()}
    return tuple(array(v, f"item {i}") for i, v in enumerate(value))


def _specs(value: Any, default_name: str, prefix: str) -> tuple[str, list[dict[str, Any]]]:
    """(form, specs) of one array or a group of them."""
    if isinstance(value, dict):
        return "dict", [tensor_spec(name, np.asarray(v)) for name, v in value.items()]
    if isinstance(value, tuple):
        return "tuple", [tensor_spec(f"{prefix}-{i}", np.asarray(v)) for i, v in enumerate(value)]
    return "single", [tensor_spec(default_name, value)]


def signature_from_example(
    inputs: Any,
    outputs: Any,
    *,
    input_name: str = INPUT_NAME,
    output_name: str = OUTPUT_NAME,
) -> dict[str, Any]:
    """The manifest's ``signature`` field for an example batch and its predictions.

    Either may be one array or a group (see :func:`is_tensor_group`): a dict gives one spec
    per key, a tuple one per item named ``input-0``, ``input-1``, ... (``output-0``, ...),
    and the form is recorded so a server calls the model the same way.
    """
    input_form, input_specs = _specs(inputs, input_name, "input")
    sig: dict[str, Any] = {"inputs": input_specs, "outputs": []}
    if input_form != "single":
        sig["input_form"] = input_form
    if outputs is not None:
        output_form, sig["outputs"] = _specs(outputs, output_name, "output")
        if output_form != "single":
            sig["output_form"] = output_form
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
