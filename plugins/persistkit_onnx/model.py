"""``OnnxModel``: an onnxruntime session plus what its outputs mean, and prediction with it.

Only numpy and onnxruntime are used here: a loaded ONNX model runs without torch or
scikit-learn. onnxruntime is imported when a session is built, not with this module.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import persistkit
from persistkit.errors import FormatError, InputError

#: onnxruntime's type names of tensor elements, as numpy dtypes
_ELEMENT_DTYPES = {
    "tensor(float)": "float32",
    "tensor(double)": "float64",
    "tensor(float16)": "float16",
    "tensor(int64)": "int64",
    "tensor(int32)": "int32",
    "tensor(int16)": "int16",
    "tensor(int8)": "int8",
    "tensor(uint64)": "uint64",
    "tensor(uint32)": "uint32",
    "tensor(uint16)": "uint16",
    "tensor(uint8)": "uint8",
    "tensor(bool)": "bool",
    "tensor(string)": "object",
}
#: skl2onnx's name for a classifier's probabilities when ZipMap is off
_PROBABILITIES = "probabilities"


@dataclass(frozen=True)
class OutputRole:
    """One prediction method of the model (``predict``, ``predict_proba``...): the graph
    output that answers it and, where the saving model's own answer was recorded, its numpy
    ``dtype`` and ``ndim`` (the ONNX answer is cast and a trailing axis of 1 dropped to match:
    skl2onnx's regressors answer ``(n, 1)`` where scikit-learn answers ``(n,)``)."""

    output: str
    dtype: str | None = None
    ndim: int | None = None

    def to_json(self) -> dict[str, Any]:
        return {"output": self.output, "dtype": self.dtype, "ndim": self.ndim}

    @classmethod
    def from_json(cls, data: Any) -> OutputRole:
        if not isinstance(data, Mapping) or not isinstance(data.get("output"), str):
            raise FormatError(
                f"the manifest records an output role that is not an object naming an "
                f"output: {data!r}",
                hint="the manifest is damaged; restore it or save the model again",
            )
        dtype, ndim = data.get("dtype"), data.get("ndim")
        return cls(
            data["output"],
            dtype if isinstance(dtype, str) else None,
            ndim if isinstance(ndim, int) else None,
        )

    def shape_like_model(self, value: Any) -> Any:
        """``value`` (one session output) in the dtype and rank the model answered with."""
        import numpy as np

        array = np.asarray(value)
        if self.ndim is not None and array.ndim == self.ndim + 1 and array.shape[-1] == 1:
            array = array.reshape(array.shape[:-1])
        if self.dtype is not None and array.dtype != np.dtype(self.dtype):
            array = array.astype(self.dtype)
        elif array.dtype == object:  # strings come back as Python str objects
            array = array.astype(str)
        return array


class OnnxModel:
    """A loaded ONNX model: call :meth:`predict`, or use ``persistkit.predict``.

    ``roles`` maps prediction methods to outputs; ``default`` is the method used when none is
    asked for. ``opsets`` maps each operator domain (``"ai.onnx"``, ``"ai.onnx.ml"``) to its
    version. The session is an ``onnxruntime.InferenceSession``; this class never imports
    torch or scikit-learn.
    """

    def __init__(
        self,
        session: Any,
        roles: dict[str, OutputRole],
        default: str,
        opsets: dict[str, int],
    ) -> None:
        self.session = session
        self.roles = roles
        self.default = default
        self.opsets = opsets
        self.inputs = list(session.get_inputs())
        self.output_names = [o.name for o in session.get_outputs()]
        missing = sorted({r.output for r in roles.values()} - set(self.output_names))
        if missing or default not in roles:
            raise FormatError(
                f"the manifest names ONNX outputs this graph does not have: "
                f"{', '.join(missing) or default}; the graph has {', '.join(self.output_names)}",
                hint="the manifest and the model file do not belong together; restore the "
                "artifact or save the model again",
            )

    def __repr__(self) -> str:
        shown = ", ".join(f"{i.name}{_shape_text(i.shape)}" for i in self.inputs)
        return f"OnnxModel({shown} -> {', '.join(self.roles)})"

    @classmethod
    def from_graph(cls, session: Any, opsets: dict[str, int]) -> OnnxModel:
        """Roles read from the graph alone (a bare ``.onnx`` file has no manifest): the first
        output answers ``predict``; an output called ``probabilities`` (skl2onnx's classifiers)
        answers ``predict_proba``."""
        names = [o.name for o in session.get_outputs()]
        roles = {"predict": OutputRole(names[0])}
        if _PROBABILITIES in names[1:]:
            roles["predict_proba"] = OutputRole(_PROBABILITIES)
        return cls(session, roles, "predict", opsets)

    # -- prediction ---------------------------------------------------------------------------
    def predict(self, inputs: Any, method: str | None = None) -> Any:
        """The answer of ``method`` (default :attr:`default`) for ``inputs``: a numpy array.

        ``inputs`` is one batch (array, list, tensor), or a dict of input name to batch for a
        graph with several inputs. Inputs are cast to the dtype the graph takes; a batch of
        the wrong rank or size is an :class:`InputError` naming the shape expected.
        """
        method = method or self.default
        role = self.roles.get(method)
        if role is None:
            raise InputError(
                f"this ONNX model has no method {method!r}",
                hint=f"use one of: {', '.join(self.roles)}",
            )
        feed = self._feed(inputs)
        try:
            (value,) = self.session.run([role.output], feed)
        except Exception as exc:  # onnxruntime's errors are its own classes, one per status
            detail = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            raise InputError(
                f"onnxruntime rejected the inputs: {detail}",
                hint=f"pass a batch shaped {self._expected()}",
            ) from None
        return role.shape_like_model(value)

    def _feed(self, inputs: Any) -> dict[str, Any]:
        if isinstance(inputs, Mapping):
            names = [i.name for i in self.inputs]
            if sorted(inputs) != sorted(names):
                raise InputError(
                    f"this ONNX model takes the inputs {', '.join(names)}, "
                    f"not {', '.join(map(str, inputs))}",
                    hint="pass a dict with exactly those names",
                )
            return {i.name: self._as_input(i, inputs[i.name]) for i in self.inputs}
        if len(self.inputs) != 1:
            raise InputError(
                f"this ONNX model takes {len(self.inputs)} inputs "
                f"({', '.join(i.name for i in self.inputs)})",
                hint="pass a dict of input name to array",
            )
        (spec,) = self.inputs
        return {spec.name: self._as_input(spec, inputs)}

    def _as_input(self, spec: Any, value: Any) -> Any:
        import numpy as np

        array = persistkit.to_numpy(value)
        dtype = _ELEMENT_DTYPES.get(spec.type)
        if dtype is not None and array.dtype != np.dtype(dtype):
            if dtype != "object" and array.dtype.kind not in "biuf":
                raise InputError(
                    f"input {spec.name!r} takes numbers ({dtype}), got {array.dtype} values",
                    hint=f"pass a numeric batch shaped {_shape_text(spec.shape)}",
                )
            array = array.astype(dtype)
        if not _fits(array.shape, spec.shape):
            raise InputError(
                f"input {spec.name!r} takes a batch shaped {_shape_text(spec.shape)}, "
                f"got {tuple(array.shape)}",
                hint="pass a batch shaped like the example the model was saved with "
                "(`persistkit show` lists its signature)",
            )
        return np.ascontiguousarray(array)

    def _expected(self) -> str:
        return ", ".join(f"{i.name}: {_shape_text(i.shape)}" for i in self.inputs)


def _fits(shape: tuple[int, ...], expected: Any) -> bool:
    """Whether a concrete ``shape`` fits an ONNX input shape (ints fixed, names free)."""
    if expected is None:  # rank unknown
        return True
    if len(shape) != len(expected):
        return False
    return all(not isinstance(want, int) or want == got for got, want in zip(shape, expected))


def _shape_text(shape: Any) -> str:
    if shape is None:
        return "(any shape)"
    parts = [str(d) if isinstance(d, int) else (d or "?") for d in shape]
    return "(" + ", ".join(parts) + ("," if len(parts) == 1 else "") + ")"


def build_session(data: bytes, providers: list[str]) -> Any:
    """An ``onnxruntime.InferenceSession`` over the model ``data`` (bytes, never a path)."""
    import onnxruntime

    options = onnxruntime.SessionOptions()
    options.log_severity_level = 3  # errors only: warnings about unused initializers are noise
    return onnxruntime.InferenceSession(data, sess_options=options, providers=providers)
