"""Converting models to ONNX: torch modules with torch's exporter, scikit-learn estimators and
pipelines with skl2onnx. Each converter returns the serialized model and what it records.

torch, scikit-learn and skl2onnx are imported inside the converters only (saving needs them;
loading never does).
"""

from __future__ import annotations

import contextlib
import importlib.metadata
import io
import logging
import re
import warnings
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

from persistkit.errors import CannotSaveError, PersistkitWarning
from persistkit_onnx.checks import MAX_ONNX_BYTES

_DIM_NAME_HINT = 'pass dynamic={1: "seq"}: axis numbers (1 and up; 0 is always the batch) to names'


@dataclass
class Converted:
    """A converted model: the ONNX bytes, the converter's name and the versions of the
    libraries that made it, the prediction methods its outputs answer (method to output name,
    in output order), and extra facts for the manifest."""

    data: bytes
    converter: str
    libraries: dict[str, str]
    methods: dict[str, str]
    facts: dict[str, Any] = field(default_factory=dict)


def _version(dist: str) -> str:
    try:
        return importlib.metadata.version(dist)
    except importlib.metadata.PackageNotFoundError:
        return "unknown"


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0][:300] if text else type(exc).__name__


def _refuse_too_large(size: int, what: str, hint: str) -> None:
    if size > MAX_ONNX_BYTES:
        raise CannotSaveError(
            f"the ONNX graph of this {what} is {size} bytes; one ONNX file holds at most 2 GiB "
            "and persistkit does not write weights to separate files",
            hint=hint,
        )


# -- torch ------------------------------------------------------------------------------------

_TORCH_HINT = (
    'save it with backend="safetensors" or backend="torch": they store the module rather than '
    "convert it"
)


def convert_torch(model: Any, example: Any, options: dict[str, Any]) -> Converted:
    """Export ``model`` with ``torch.onnx.export(dynamo=True)`` traced on ``example``.

    Axis 0 is dynamic (any batch size); ``options["dynamic"]`` (``{axis: name}``) makes more
    axes dynamic; ``options["opset"]`` picks the opset (default: the exporter's). Raises
    :class:`CannotSaveError` for a module the exporter cannot trace.
    """
    import torch

    x = _example_tensor(model, example)
    if x.shape[0] == 1:
        # a batch of one would let the tracer treat the batch axis as the constant 1
        x = torch.cat([x, x])
    dims = {0: torch.export.Dim("batch")}
    for axis, name in _dynamic_axes(options.get("dynamic"), x.ndim).items():
        dims[axis] = torch.export.Dim(name)
    opset = options.get("opset")
    what = type(model).__name__
    try:
        with _quiet_exporter():
            program = torch.onnx.export(
                model,
                (x,),
                None,
                dynamo=True,
                dynamic_shapes=(dims,),
                opset_version=int(opset) if opset is not None else None,
                input_names=["input"],
                external_data=False,
                verbose=False,
            )
        assert program is not None  # dynamo=True always returns the program
        proto = program.model_proto
    except Exception as exc:  # the exporter raises many kinds (tracing, lowering, ONNX)
        raise CannotSaveError(
            f"torch's ONNX exporter cannot convert this {what}: {_export_failure(exc)}",
            hint=_TORCH_HINT,
        ) from None
    _refuse_too_large(proto.ByteSize(), what, _TORCH_HINT)
    outputs = [o.name for o in proto.graph.output]
    return Converted(
        data=proto.SerializeToString(),
        converter="torch.onnx.export(dynamo=True)",
        libraries={"torch": torch.__version__, "onnxscript": _version("onnxscript")},
        methods={"predict": outputs[0]},
        facts={"dynamic_axes": {str(a): str(d.__name__) for a, d in dims.items()}},
    )


def _example_tensor(model: Any, example: Any) -> Any:
    """``example`` as the tensor the torch adapter would feed ``model`` (floats in the dtype
    of the module's parameters; integers too unless the module embeds indices)."""
    import numpy as np
    import torch

    x = torch.from_numpy(np.array(example, copy=True, order="C"))
    dtype = next((p.dtype for p in model.parameters() if p.is_floating_point()), None)
    embeds = any(type(m).__name__ in ("Embedding", "EmbeddingBag") for m in model.modules())
    if dtype is not None and (x.is_floating_point() or not embeds):
        x = x.to(dtype=dtype)
    return x


def _dynamic_axes(value: Any, ndim: int) -> dict[int, str]:
    """``dynamic=`` as ``{axis: name}`` (keys may be strings, as JSON gives them back)."""
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise CannotSaveError(f"dynamic= must be a dict, not {value!r}", hint=_DIM_NAME_HINT)
    axes: dict[int, str] = {}
    for key, name in value.items():
        try:
            axis = int(key)
        except (TypeError, ValueError):
            raise CannotSaveError(
                f"dynamic= has a key {key!r} that is not an axis number", hint=_DIM_NAME_HINT
            ) from None
        if not 1 <= axis < ndim or not isinstance(name, str) or not name.isidentifier():
            raise CannotSaveError(
                f"dynamic= maps axis {key!r} to {name!r}; example= has {ndim} axes and names "
                "must be identifiers",
                hint=_DIM_NAME_HINT,
            )
        if name == "batch" or name in axes.values():
            raise CannotSaveError(
                f"dynamic= uses the name {name!r} twice (axis 0 is 'batch')", hint=_DIM_NAME_HINT
            )
        axes[axis] = name
    return axes


@contextlib.contextmanager
def _quiet_exporter() -> Iterator[None]:
    """The exporter logs a warning per missing torchvision operator, dumps graphs when tracing
    fails and warns about its own deprecations; none of it is for the user (a failure still
    raises, and its cause goes into the CannotSaveError). torch's loggers set their own levels,
    so each is raised to ERROR for the call and restored after; ``sys.stderr`` is captured
    for the call (in every thread of the process: the exporter holds it for seconds)."""
    loggers = [logging.getLogger("torch")] + [
        logger
        for name, logger in list(logging.root.manager.loggerDict.items())
        if name.startswith("torch.") and isinstance(logger, logging.Logger)
    ]
    levels = [logger.level for logger in loggers]
    for logger in loggers:
        logger.setLevel(logging.ERROR)
    try:
        # torch.export prints the graph it failed on to sys.stderr
        with warnings.catch_warnings(), contextlib.redirect_stderr(io.StringIO()):
            warnings.simplefilter("ignore")
            yield
    finally:
        for logger, level in zip(loggers, levels):
            logger.setLevel(level)


_ANSI = re.compile(r"\x1b\[[0-9;]*m")


def _export_failure(exc: BaseException) -> str:
    """What went wrong, in a line or two: the exporter's own message names the step that
    failed; the innermost cause says why."""
    cause = exc
    while cause.__cause__ is not None:
        cause = cause.__cause__
    said = f"{type(exc).__name__}: {_first_line(exc).removesuffix('Next steps:').strip()}"
    if cause is not exc:
        said += f" (caused by {type(cause).__name__}: {_first_line(cause)})"
    return _ANSI.sub("", said)


# -- scikit-learn -----------------------------------------------------------------------------

#: the input types tried, in order: float64 first (scikit-learn computes in float64, and
#: skl2onnx's double graphs reproduce it to ~1e-15), then float32, which every skl2onnx
#: converter supports (tree ensembles only take float32; scikit-learn's trees compare float32
#: features themselves)
_SKLEARN_TYPES = {"float64": "DoubleTensorType", "float32": "FloatTensorType"}
_SKLEARN_HINT = 'save it with backend="joblib" (needs scikit-learn to load)'


def convert_sklearn(model: Any, example: Any, options: dict[str, Any]) -> Converted:
    """Convert a fitted estimator or pipeline with skl2onnx for inputs shaped like ``example``
    (2-D, numeric). ``options["dtype"]`` (``"float64"``/``"float32"``) forces the input type;
    by default float64 is tried first, float32 when skl2onnx or onnxruntime has no float64
    version of an operator. Classifiers answer arrays (ZipMap off): the label and the
    probabilities (or decision scores). Raises :class:`CannotSaveError` naming the estimator.
    """
    import skl2onnx
    from skl2onnx.common import data_types

    if example.ndim != 2 or example.dtype.kind not in "biuf":
        raise CannotSaveError(
            f"the onnx backend converts scikit-learn models for 2-D numeric inputs; example= "
            f"is {example.ndim}-D {example.dtype}",
            hint="pass example= as a (n_samples, n_features) numeric array, or use "
            'backend="joblib"',
        )
    forced = options.get("dtype")
    if forced is not None and forced not in _SKLEARN_TYPES:
        raise CannotSaveError(
            f"dtype={forced!r} is not an input type the onnx backend converts to",
            hint='pass dtype="float64" or dtype="float32", or leave it out',
        )
    if forced == "float32":
        _warn_float32_before_trees(model)
    classifier = _is_classifier(model)
    opset = options.get("opset")
    errors = []
    for dtype in [forced] if forced else list(_SKLEARN_TYPES):
        tensor_type = getattr(data_types, _SKLEARN_TYPES[dtype])
        converting, cast_before = model, None
        if dtype == "float64":
            converting, cast_before = _cast_before_trees(model)
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                proto = skl2onnx.convert_sklearn(
                    converting,
                    initial_types=[("input", tensor_type([None, example.shape[1]]))],
                    options={"zipmap": False} if classifier else None,
                    target_opset=int(opset) if opset is not None else None,
                )
            data = proto.SerializeToString()
            _runs(data)  # onnxruntime lacks some float64 kernels that skl2onnx emits
        except Exception as exc:  # skl2onnx raises RuntimeError, ValueError, its own kinds
            errors.append(f"{dtype}: {type(exc).__name__}: {_first_line(exc)}")
            continue
        _refuse_too_large(len(data), type(model).__name__, _SKLEARN_HINT)
        outputs = [o.name for o in proto.graph.output]
        facts: dict[str, Any] = {"input_type": dtype}
        if cast_before:
            facts["float32_from"] = cast_before
        return Converted(
            data=data,
            converter="skl2onnx",
            libraries={"scikit-learn": _version("scikit-learn"), "skl2onnx": skl2onnx.__version__},
            methods=_sklearn_methods(model, outputs, classifier),
            facts=facts,
        )
    raise CannotSaveError(
        f"skl2onnx cannot convert this {_estimator_names(model)} ({'; '.join(errors)})",
        hint=_SKLEARN_HINT,
    )


#: estimators whose predict casts the features to float32 first (scikit-learn's tree DTYPE):
#: a float32 cast placed before them changes nothing, and lets the steps before them run in
#: float64 in the ONNX graph as they do in scikit-learn (onnxruntime's tree kernels take float32)
_FLOAT32_TREES = frozenset(
    {
        "DecisionTreeClassifier",
        "DecisionTreeRegressor",
        "ExtraTreeClassifier",
        "ExtraTreeRegressor",
        "RandomForestClassifier",
        "RandomForestRegressor",
        "ExtraTreesClassifier",
        "ExtraTreesRegressor",
        "GradientBoostingClassifier",
        "GradientBoostingRegressor",
    }
)


def _warn_float32_before_trees(model: Any) -> None:
    """dtype="float32" on a pipeline with steps before a tree ensemble: those steps then
    compute in float32, and a sample near a split can land on the other side."""
    steps = getattr(model, "steps", None)
    if not isinstance(steps, list) or len(steps) < 2:
        return
    final = type(steps[-1][1]).__name__
    if final in _FLOAT32_TREES:
        warnings.warn(
            f'dtype="float32" makes the steps before {final} compute in float32, where '
            "scikit-learn computes them in float64: samples near a split can get another "
            "prediction than scikit-learn's (leave dtype= out to keep them in float64)",
            PersistkitWarning,
            stacklevel=4,
        )


def _cast_before_trees(model: Any) -> tuple[Any, str | None]:
    """``model`` with skl2onnx's float32 cast inserted before a final tree ensemble, for a
    float64 conversion (a new Pipeline around the same fitted steps; ``model`` is unchanged),
    and the name of the estimator the cast precedes. Without it, a float64 graph has no tree
    kernel, and an all-float32 graph scales features in float32, which moves some samples
    across a split: scikit-learn scales in float64 and only then casts."""
    steps = list(model.steps) if hasattr(model, "steps") else [("model", model)]
    final = steps[-1][1]
    if type(final).__name__ not in _FLOAT32_TREES or type(final).__module__.split(".")[0] != (
        "sklearn"
    ):
        return model, None
    import numpy as np
    from skl2onnx.sklapi import CastTransformer
    from sklearn.pipeline import Pipeline

    cast = CastTransformer(dtype=np.float32).fit(np.zeros((1, 1)))
    return Pipeline([*steps[:-1], ("cast_to_float32", cast), steps[-1]]), type(final).__name__


def _runs(data: bytes) -> None:
    from persistkit_onnx.model import build_session

    build_session(data, ["CPUExecutionProvider"])


def _is_classifier(model: Any) -> bool:
    from sklearn.base import is_classifier

    return bool(is_classifier(model))


def _sklearn_methods(model: Any, outputs: list[str], classifier: bool) -> dict[str, str]:
    if classifier:
        methods = {"predict": outputs[0]}
        if len(outputs) > 1:
            second = "predict_proba" if hasattr(model, "predict_proba") else "decision_function"
            methods[second] = outputs[1]
        return methods
    return {"predict" if hasattr(model, "predict") else "transform": outputs[0]}


def _estimator_names(model: Any) -> str:
    """``Pipeline(StandardScaler, MyEstimator)`` for a pipeline, the class name otherwise."""
    steps = getattr(model, "steps", None)
    if isinstance(steps, list):
        inner = ", ".join(type(step).__name__ for _, step in steps)
        return f"{type(model).__name__}({inner})"
    return type(model).__name__
