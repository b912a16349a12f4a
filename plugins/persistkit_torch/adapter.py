"""The PyTorch adapter: freeze, predict, describe and backend votes for ``nn.Module`` models.

torch is imported only when one of these is called with a torch model (which means the caller
already imported torch).
"""

from __future__ import annotations

import functools
import itertools
from typing import Any

import persistkit
from persistkit import Recommendation
from persistkit.errors import InputError
from persistkit_torch.detect import importable_name, is_tensor

_INDEX_LAYERS = ("Embedding", "EmbeddingBag")


def freeze(model: Any) -> Any:
    """Put ``model`` in eval mode and turn off gradients for all its parameters, in place.

    Returns the same module. It does NOT compile (``torch.compile``), quantize, fuse layers,
    change dtypes or move the module to another device: the frozen module computes exactly what
    the trained one computes in eval mode.

    A module loaded from ``torch.export`` (``ExportedProgram.module()``) refuses ``eval()``:
    its mode was fixed when it was traced (dropout and batch norm are recorded as calls in
    that mode), so it is left as it is. A TorchScript module refuses ``requires_grad_``: its
    parameters are switched off one by one instead.
    """
    try:
        model.eval()
    except NotImplementedError:
        if not hasattr(model, "_in_spec"):  # only an exported GraphModule has no eval()
            raise
    scripted = any(
        c.__module__ == "torch.jit._script" and c.__name__ == "ScriptModule"
        for c in type(model).__mro__
    )
    if scripted:
        for parameter in model.parameters():
            parameter.requires_grad_(False)
    else:
        model.requires_grad_(False)
    return model


def predict(model: Any, inputs: Any, options: dict[str, Any]) -> Any:
    """Run ``model`` (or its method ``options["method"]``) under ``torch.inference_mode()``.

    Inputs may be tensors, numpy arrays or (nested) lists. Floating inputs are cast to the
    dtype of the module's floating parameters and moved to their device; integer inputs keep
    their dtype when the module has an embedding layer (they are indices), otherwise they are
    cast too. Tensor outputs come back as numpy arrays (bfloat16 and other dtypes numpy lacks
    as float32); tuples, lists and dicts of tensors as the same containers of arrays.
    """
    import torch

    method = options.get("method")
    func = getattr(model, method, None) if method else model
    if func is None:
        raise InputError(
            f"{type(model).__name__} has no method {method!r}",
            hint="leave method= out to call the module's forward()",
        )
    if isinstance(inputs, (dict, tuple)) and not is_tensor(inputs):
        return _predict_group(model, func, inputs)
    x = _as_input(model, inputs)
    try:
        with torch.inference_mode():
            out = func(x)
    # AssertionError: an exported graph's input checks (shapes and guards) assert
    except (RuntimeError, ValueError, TypeError, IndexError, AssertionError) as exc:
        detail = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise InputError(
            f"{type(model).__name__} rejected inputs of shape {tuple(x.shape)} and dtype "
            f"{x.dtype}: {detail}",
            hint="pass a batch shaped like the example the model was saved with "
            "(`persistkit show` lists its signature)",
        ) from None
    return _to_numpy(out)


def _predict_group(model: Any, func: Any, inputs: dict[str, Any] | tuple[Any, ...]) -> Any:
    """Several inputs: a tuple is passed positionally (``forward(self, a, b)``); a dict by
    keyword when ``forward`` names every key (or takes ``**kwargs``), else as one argument
    (``forward(self, batch)`` indexing ``batch["a"]``)."""
    import torch

    if isinstance(inputs, dict):
        tensors: Any = {name: _as_input(model, value) for name, value in inputs.items()}
        by_keyword = _takes_keywords(func, list(tensors))
    else:
        tensors = tuple(_as_input(model, value) for value in inputs)
    try:
        with torch.inference_mode():
            if isinstance(tensors, tuple):
                out = func(*tensors)
            else:
                out = func(**tensors) if by_keyword else func(tensors)
    except (RuntimeError, ValueError, TypeError, IndexError, AssertionError, KeyError) as exc:
        detail = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        shapes = (
            {k: tuple(v.shape) for k, v in tensors.items()}
            if isinstance(tensors, dict)
            else [tuple(v.shape) for v in tensors]
        )
        raise InputError(
            f"{type(model).__name__} rejected inputs of shapes {shapes}: {detail}",
            hint="pass the inputs the model was saved with (`persistkit show` lists them)",
        ) from None
    return _to_numpy(out)


def _takes_keywords(func: Any, names: list[str]) -> bool:
    import inspect

    try:
        parameters = inspect.signature(getattr(func, "forward", func)).parameters
    except (TypeError, ValueError):
        return False
    if any(p.kind is inspect.Parameter.VAR_KEYWORD for p in parameters.values()):
        return True
    return all(name in parameters for name in names)


def _as_input(model: Any, inputs: Any) -> Any:
    import numpy as np
    import torch

    if is_tensor(inputs):
        x = inputs
    else:
        array = persistkit.to_numpy(inputs)
        if array.dtype == object or array.dtype.kind in "USV":
            raise InputError(
                f"a PyTorch model needs numeric inputs, got {array.dtype} values",
                hint="pass a numeric numpy array, a tensor, or a nested list of numbers",
            )
        x = torch.from_numpy(np.array(array, copy=True, order="C"))
    dtype, device = _parameter_dtype_device(model)
    if dtype is not None and (x.is_floating_point() or not _takes_indices(model)):
        x = x.to(dtype=dtype)
    if device is not None:
        x = x.to(device=device)
    return x


def _parameter_dtype_device(model: Any) -> tuple[Any, Any]:
    device = None
    for tensor in itertools.chain(model.parameters(), model.buffers()):
        device = device or tensor.device
        if tensor.is_floating_point():
            return tensor.dtype, tensor.device
    return None, device


def _takes_indices(model: Any) -> bool:
    """Whether integer inputs are indices (an embedding layer), so they keep their dtype.
    A frozen graph (torch.export) has no layer objects: its embedding ops are looked for."""
    if any(type(m).__name__ in _INDEX_LAYERS for m in model.modules()):
        return True
    graph = getattr(model, "graph", None)
    nodes = getattr(graph, "nodes", ())
    return any("embedding" in str(getattr(node, "target", "")) for node in nodes)


def _to_numpy(out: Any) -> Any:
    import torch

    if isinstance(out, torch.Tensor):
        out = out.detach().cpu()
        if out.dtype in (torch.bfloat16,) or not _numpy_has(out.dtype):
            out = out.float()
        return out.numpy()
    if isinstance(out, (list, tuple)):
        return type(out)(_to_numpy(o) for o in out) if type(out) in (list, tuple) else out
    if isinstance(out, dict):
        return {k: _to_numpy(v) for k, v in out.items()}
    return out


@functools.cache  # a handful of dtypes; predict asks on every call
def _numpy_has(dtype: Any) -> bool:
    import torch

    try:
        torch.empty(0, dtype=dtype).numpy()
    except (TypeError, RuntimeError):
        return False
    return True


def describe(model: Any, backend: str | None = None) -> dict[str, Any]:
    """Family ``torch``, torch version, parameter count, and the devices and dtypes of the
    parameters and buffers; a note when a whole-module ``torch`` save holds a class that
    cannot be imported by name."""
    import torch

    tensors = list(model.parameters()) + list(model.buffers())
    facts: dict[str, Any] = {
        "family": "torch",
        "libraries": {"torch": torch.__version__},
        "torch_version": torch.__version__,
        "parameters": sum(p.numel() for p in model.parameters()),
        "devices": sorted({str(t.device) for t in tensors}),
        "dtypes": sorted({str(t.dtype).removeprefix("torch.") for t in tensors}),
        # the code a whole-module save imports: torch, transformers, the user's package
        "modules": sorted({type(m).__module__ for m in model.modules()}),
    }
    if backend == "torch" and importable_name(type(model)) is None:
        facts["notes"] = [
            f"{type(model).__qualname__} is defined in {type(model).__module__} (not an "
            "importable module): a whole-module torch.save of it loads only in a program "
            "that defines the same class"
        ]
    return facts


def recommend(model: Any) -> list[Recommendation]:
    """safetensors first for importable classes (safe, memory-mapped); for a class that
    cannot be imported by name (``__main__``, a notebook), a class-free frozen format
    (``export``, else ``onnx``), which need ``example=``: whole-module ``torch.save`` would
    load only where the class is defined, so it is never chosen silently."""
    if importable_name(type(model)) is not None:
        return [
            Recommendation(
                "safetensors",
                70,
                "the class is importable, so the weights go in a safetensors file (no pickle: "
                "loads without trusted=, memory-mapped) with the class and its arguments in "
                "the manifest",
            ),
            Recommendation("torch", 50, "torch.save of the whole module"),
        ]
    where = f"{type(model).__qualname__} is defined in {type(model).__module__}"
    return [
        Recommendation(
            "export",
            80,
            f"{where} and cannot be imported by name, so it is frozen with torch.export: "
            "weights and computation in one .pt2 file that runs without the class (predict, "
            "serve and a new process need no training code)",
        ),
        Recommendation(
            "onnx",
            60,
            f"{where} and cannot be imported by name, so it is converted to ONNX, which "
            "runs without the class (and without torch)",
        ),
    ]
