"""The ``onnx`` backend: torch modules and scikit-learn models converted to ONNX, run with
onnxruntime.

Saving converts (torch's exporter, ``dynamo=True``; skl2onnx) and needs ``example=``; the core
then reloads the file and checks its predictions against the model's within
:data:`TOLERANCE`. Loading builds an ``onnxruntime.InferenceSession`` from the checked bytes and
wraps it in :class:`OnnxModel`; neither torch nor scikit-learn is imported. ONNX files carry no
code, so the backend is ``safe``: bare ``.onnx`` files from other tools load under the default
policy, once :mod:`persistkit_onnx.checks` has refused weights kept in other files and custom
operator domains. Importing this module imports none of onnx, onnxruntime, torch or sklearn,
nor this package's own converters, checks and model wrapper: each hook imports what it uses
(a load of another backend imports none of them).
"""

from __future__ import annotations

import functools
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

import persistkit
from persistkit import Backend, BackendInfo
from persistkit.errors import CannotSaveError, FormatError, InputError

if TYPE_CHECKING:
    from persistkit_onnx.convert import Converted
    from persistkit_onnx.model import OnnxModel, OutputRole

#: ``(rtol, atol)`` within which the ONNX model's float answers match the model's own
#: (``numpy.allclose`` terms). Measured by ``benchmarks/bench_onnx.py tolerance``: across
#: random MLPs and CNNs (BatchNorm, pooling) and scikit-learn models converted as float32,
#: the worst case stays well below it (see docs/onnx.md); labels must be identical.
TOLERANCE = (1e-4, 1e-5)
DEFAULT_PROVIDERS = ("CPUExecutionProvider",)


def is_torch_module(model: Any) -> bool:
    """True for ``torch.nn.Module`` instances (checked without importing torch)."""
    return any(
        c.__name__ == "Module" and c.__module__ == "torch.nn.modules.module"
        for c in type(model).__mro__
    )


def is_sklearn_model(model: Any) -> bool:
    """True for scikit-learn estimators and pipelines (checked without importing sklearn)."""
    if isinstance(model, type):
        return False
    return any(
        c.__module__.split(".", 1)[0] == "sklearn" for c in type(model).__mro__[:-1]
    ) and hasattr(model, "get_params")


class OnnxPlugin(Backend):
    """The ``onnx`` backend plus the adapter hooks (predict, freeze, describe) of the
    :class:`OnnxModel` it loads."""

    info = BackendInfo(
        "onnx",
        description="ONNX via torch's exporter or skl2onnx, run with onnxruntime (no torch or "
        "scikit-learn at load; predictions within a stated tolerance); needs example=",
        safe=True,
        # onnx parses and checks the graph before onnxruntime gets it
        requires=("onnxruntime", "onnx"),
        extra="onnx",
        suffixes=(".onnx",),
        save_options=("opset", "dynamic", "dtype"),
        load_options=("providers",),
        converts=True,
        tolerance=TOLERANCE,
    )
    file_name = "model.onnx"

    # -- backend ------------------------------------------------------------------------------
    def can_save(self, model: Any) -> bool:
        return is_torch_module(model) or is_sklearn_model(model)

    def save_with_example(
        self, model: Any, path: Path, options: dict[str, Any], example: Any
    ) -> None:
        import numpy as np

        from persistkit_onnx.convert import convert_sklearn, convert_torch

        if example is None:  # the core always passes one to a converting backend
            raise CannotSaveError(
                "the onnx backend converts the model by running it, so it needs example=",
                hint="pass example=<a small batch of real inputs>",
            )
        example = np.asarray(example)
        if is_torch_module(model):
            if "dtype" in options:
                raise CannotSaveError(
                    "dtype= picks the input type of a scikit-learn conversion; a torch module "
                    "takes the dtype of its parameters",
                    hint="drop dtype=",
                )
            converted = convert_torch(model, example, options)
        elif is_sklearn_model(model):
            if "dynamic" in options:
                raise CannotSaveError(
                    "dynamic= names dynamic axes of a torch export; scikit-learn models take "
                    "any batch size already",
                    hint="drop dynamic=",
                )
            converted = convert_sklearn(model, example, options)
        else:
            raise CannotSaveError(
                f"the onnx backend converts torch modules and scikit-learn estimators, not a "
                f"{type(model).__qualname__}",
                hint="pick another backend (`persistkit backends` lists them)",
            )
        options.update(_record(model, example, converted))
        path.write_bytes(converted.data)

    def load_payload(
        self, payload: Any, manifest: Any, options: dict[str, Any], policy: Any
    ) -> Any:
        from persistkit_onnx import checks
        from persistkit_onnx.model import OnnxModel, OutputRole, build_session

        checks.check_size(payload.name, payload.size)
        data = payload.read_bytes()
        graph = checks.parse_model(payload.name, data)
        checks.check_self_contained(payload.name, graph)
        opsets = checks.opsets_of(graph)
        del graph
        providers = _providers(options.get("providers"))
        try:
            session = build_session(data, providers)
        except Exception as exc:  # onnxruntime's errors are one class per status code
            text = str(exc).strip()
            detail = text.splitlines()[0][:300] if text else type(exc).__name__
            raise FormatError(
                f"onnxruntime cannot load {payload.name}: {detail}",
                hint="the file is damaged or needs a newer onnxruntime; restore it, upgrade "
                "onnxruntime, or save the model again",
            ) from None
        roles = options.get("roles")
        if roles is None:  # a bare file, or an artifact that recorded no roles
            return OnnxModel.from_graph(session, opsets)
        if not isinstance(roles, dict) or not roles:
            raise FormatError(
                f"the manifest records output roles that are not an object: {roles!r}",
                hint="the manifest is damaged; restore it or save the model again",
            )
        default = options.get("default_method", "predict")
        parsed = {str(k): OutputRole.from_json(v) for k, v in roles.items()}
        return OnnxModel(session, parsed, str(default), opsets)

    # -- adapter ------------------------------------------------------------------------------
    @persistkit.hookimpl
    def persistkit_freeze(self, model: Any) -> Any | None:
        return model if _is_onnx_model(model) else None

    @persistkit.hookimpl
    def persistkit_predict(self, model: Any, inputs: Any, options: dict[str, Any]) -> Any | None:
        if not _is_onnx_model(model):
            return None
        return model.predict(inputs, options.get("method"))

    @persistkit.hookimpl
    def persistkit_describe(self, model: Any) -> dict[str, Any] | None:
        if not _is_onnx_model(model):
            return None
        return {
            "family": "onnx",
            "libraries": dict(_runtime_versions()),
            "opsets": dict(model.opsets),
            "methods": list(model.roles),
        }


def _is_onnx_model(model: Any) -> bool:
    """True for an :class:`OnnxModel`; none exists before its module is imported, so the
    adapter hooks (called on every model) do not import it to find out."""
    module = sys.modules.get("persistkit_onnx.model")
    return module is not None and isinstance(model, module.OnnxModel)


def _record(model: Any, example: Any, converted: Converted) -> dict[str, Any]:
    """What the manifest keeps about a conversion: converter and versions, opsets, inputs, and
    which output answers which method, in the dtype and rank the model itself answers with
    (checked on ``example``: a method whose ONNX answer has another shape is left out, and
    one whose numbers differ beyond :data:`TOLERANCE` refuses the save)."""
    from persistkit_onnx import checks
    from persistkit_onnx.model import build_session

    graph = checks.parse_model("the converted model", converted.data)
    session = build_session(converted.data, list(DEFAULT_PROVIDERS))
    roles: dict[str, dict[str, Any]] = {}
    for method, output in converted.methods.items():
        role = _checked_role(model, example, session, method, output)
        if role is not None:
            roles[method] = role.to_json()
    if "predict" not in roles and "transform" not in roles:
        raise CannotSaveError(
            f"the ONNX graph of this {type(model).__qualname__} answers example= in another "
            "shape than the model",
            hint="use another backend than onnx for this model",
        )
    return {
        "converter": {"name": converted.converter, "version": _converter_version(converted)},
        "libraries": {**converted.libraries, **dict(_runtime_versions())},
        "opsets": checks.opsets_of(graph),
        "ir_version": int(graph.ir_version),
        "inputs": [
            {"name": i.name, "type": i.type, "shape": list(i.shape)} for i in session.get_inputs()
        ],
        "roles": roles,
        "default_method": "predict" if "predict" in roles else "transform",
        **converted.facts,
    }


def _checked_role(
    model: Any, example: Any, session: Any, method: str, output: str
) -> OutputRole | None:
    import numpy as np

    options = {} if method == "predict" else {"method": method}
    own = persistkit.to_numpy(persistkit.predict(model, example, **options))
    from persistkit_onnx.model import OutputRole

    role = OutputRole(output, own.dtype.str if own.dtype != object else None, own.ndim)
    feed = {session.get_inputs()[0].name: example.astype(_input_dtype(session))}
    (raw,) = session.run([output], feed)
    answer = role.shape_like_model(raw)
    if answer.shape != own.shape:
        return None  # e.g. a binary decision_function: scikit-learn (n,), skl2onnx (n, 2)
    if method != "predict" and own.dtype.kind in "fc":
        rtol, atol = TOLERANCE
        if not np.allclose(answer, own, rtol=rtol, atol=atol, equal_nan=True):
            worst = float(np.abs(answer.astype(np.float64) - own.astype(np.float64)).max())
            raise CannotSaveError(
                f"the ONNX graph's {method} differs from the model's on example= by up to "
                f"{worst:.3g}, beyond the stated tolerance (rtol={rtol:g}, atol={atol:g})",
                hint="this model does not convert faithfully to ONNX; use another backend",
            )
    return role


def _input_dtype(session: Any) -> str:
    kind = session.get_inputs()[0].type
    return {"tensor(double)": "float64", "tensor(int64)": "int64"}.get(kind, "float32")


def _converter_version(converted: Converted) -> str:
    name = "torch" if converted.converter.startswith("torch") else converted.converter
    return converted.libraries.get(name, "unknown")


@functools.lru_cache(maxsize=1)
def _runtime_versions() -> tuple[tuple[str, str], ...]:
    import importlib.metadata  # ~1.3 ms: only when a save describes a model

    found = []
    for dist in ("onnxruntime", "onnx"):
        try:
            found.append((dist, importlib.metadata.version(dist)))
        except importlib.metadata.PackageNotFoundError:
            continue
    return tuple(found)


def _providers(value: Any) -> list[str]:
    """``providers=`` checked against what this onnxruntime has (default: the CPU)."""
    if value is None:
        return list(DEFAULT_PROVIDERS)
    import onnxruntime

    names = [value] if isinstance(value, str) else value
    available = onnxruntime.get_available_providers()
    if not isinstance(names, (list, tuple)) or not all(isinstance(n, str) for n in names):
        raise InputError(
            f"providers= must be a list of onnxruntime provider names, not {value!r}",
            hint=f"this onnxruntime has: {', '.join(available)}",
        )
    missing = [n for n in names if n not in available]
    if missing or not names:
        raise InputError(
            f"onnxruntime here has no execution provider {', '.join(missing) or '(none given)'}",
            hint=f"pass providers= from: {', '.join(available)}",
        )
    return list(names)


plugin = OnnxPlugin()

def __getattr__(name: str) -> Any:
    if name != "OnnxModel":
        raise AttributeError(f"module 'persistkit_onnx' has no attribute {name!r}")
    from persistkit_onnx.model import OnnxModel

    return OnnxModel


__all__ = ["TOLERANCE", "OnnxModel", "OnnxPlugin", "is_sklearn_model", "is_torch_module", "plugin"]
