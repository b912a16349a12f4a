"""The Hugging Face adapter: predict, describe and backend votes for ``PreTrainedModel``.

transformers is never imported here to *detect* a model: a model object whose class comes from
transformers means the caller already imported it.
"""

from __future__ import annotations

import re
from typing import Any

import persistkit
from persistkit.errors import InputError

# heads whose logits are (batch, num_labels): an answer is the label of the largest logit
_CLASSIFIER = re.compile(r"For(Sequence|Image|Audio|Video)Classification\Z")
_INTEGER_INPUTS = ("input_ids",)


def is_hf_model(model: Any) -> bool:
    """A ``transformers.PreTrainedModel`` (asked only when torch and transformers are
    already imported: a model of theirs means they are)."""
    import sys

    torch, transformers = sys.modules.get("torch"), sys.modules.get("transformers")
    if torch is None or transformers is None or not isinstance(model, torch.nn.Module):
        return False
    return isinstance(model, transformers.PreTrainedModel)


def exported_by_transformers(model: Any) -> bool:
    """Whether ``model``'s class is one transformers exports by name, so a load rebuilds it
    (a subclass defined elsewhere would be refused at load)."""
    import transformers

    name = type(model).__name__
    try:
        return getattr(transformers, name, None) is type(model)
    except Exception:
        return False


def predict(model: Any, inputs: Any, options: dict[str, Any]) -> Any:
    """Feed ``inputs`` as the model's main input (``input_ids`` as integers,
    ``pixel_values`` and the rest as the model's float dtype), or a dict of named inputs
    as they are named; return the ``logits`` (else the first output) as numpy."""
    import torch

    method = options.get("method")
    func = getattr(model, method, None) if method else model
    if func is None:
        raise InputError(
            f"{type(model).__name__} has no method {method!r}",
            hint="leave method= out to call the model",
        )
    if isinstance(inputs, dict):
        kwargs = {str(k): _tensor(model, str(k), v) for k, v in inputs.items()}
    else:
        kwargs = {model.main_input_name: _tensor(model, model.main_input_name, inputs)}
    try:
        with torch.inference_mode():
            out = func(**kwargs)
    except (RuntimeError, ValueError, TypeError, IndexError) as exc:
        detail = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        shapes = ", ".join(f"{k} {tuple(v.shape)}" for k, v in kwargs.items())
        raise InputError(
            f"{type(model).__name__} rejected {shapes}: {detail}",
            hint=f"pass {model.main_input_name} as the model expects it",
        ) from None
    return _outputs(out)


def _tensor(model: Any, name: str, value: Any) -> Any:
    import numpy as np
    import torch

    if isinstance(value, torch.Tensor):
        x = value
    else:
        array = persistkit.to_numpy(value)
        if array.dtype == object or array.dtype.kind not in "biuf":
            raise InputError(
                f"{name} must be numbers, got {array.dtype} values",
                hint="pass a numeric numpy array, a tensor, or a nested list of numbers",
            )
        x = torch.from_numpy(np.array(array, copy=True, order="C"))
    if name in _INTEGER_INPUTS or name.endswith(("_ids", "attention_mask")):
        if x.is_floating_point() and not torch.equal(x, x.round()):
            raise InputError(
                f"{name} are token indices, and these values are not whole numbers",
                hint="pass integer token ids",
            )
        return x.to(torch.long)
    return x.to(dtype=model.dtype, device=model.device)


def _outputs(out: Any) -> Any:
    """The ``logits`` of a ``ModelOutput`` (else its first tensor) as numpy."""
    import torch

    logits = getattr(out, "logits", None)
    if isinstance(logits, torch.Tensor):
        out = logits
    elif not isinstance(out, torch.Tensor) and (
        isinstance(out, (tuple, list)) or hasattr(out, "to_tuple")
    ):
        out = out[0]
    if not isinstance(out, torch.Tensor):
        raise InputError(f"the model returned a {type(out).__name__}, not a tensor")
    out = out.detach().cpu()
    return (out.float() if out.dtype == torch.bfloat16 else out).numpy()  # numpy lacks bf16


def labels_of(model: Any) -> list[str] | None:
    """``config.id2label`` in column order, for a single-label classifier whose logits are
    (batch, num_labels); ``None`` otherwise."""
    config = model.config
    if not _CLASSIFIER.search(type(model).__name__):
        return None
    if getattr(config, "problem_type", None) == "multi_label_classification":
        return None  # independent sigmoids, not one answer
    id2label = getattr(config, "id2label", None) or {}
    try:
        labels = [str(id2label[i]) for i in range(len(id2label))]
    except KeyError:
        return None
    if len(labels) < 2 or len(set(labels)) != len(labels):
        return None
    return labels


def describe(model: Any) -> dict[str, Any]:
    """Family ``hf``, the libraries the folder needs, architecture and model type, and a
    classifier's labels (``config.id2label``) with ``output: "logits"``."""
    import safetensors
    import torch
    import transformers

    facts: dict[str, Any] = {
        "family": "hf",
        "libraries": {
            "transformers": transformers.__version__,
            "torch": torch.__version__,
            "safetensors": safetensors.__version__,
        },
        "architecture": type(model).__name__,
        "model_type": getattr(model.config, "model_type", None),
        "main_input": model.main_input_name,
    }
    labels = labels_of(model)
    if labels is not None:
        facts["labels"] = labels
        facts["output"] = "logits"
    return facts
