"""Recognising PyTorch objects without importing torch (a model that exists has imported it)."""

from __future__ import annotations

from typing import Any


def _has_base(obj: Any, module: str, name: str) -> bool:
    if isinstance(obj, type):
        return False
    return any(c.__module__ == module and c.__name__ == name for c in type(obj).__mro__)


def is_torch_module(obj: Any) -> bool:
    """True for instances of ``torch.nn.Module`` subclasses."""
    return _has_base(obj, "torch.nn.modules.module", "Module")


def is_tensor(obj: Any) -> bool:
    """True for ``torch.Tensor`` instances (parameters included)."""
    return _has_base(obj, "torch", "Tensor")


def is_tensor_dict(obj: Any) -> bool:
    """True for a non-empty dict of string names to torch tensors (a state dict)."""
    return (
        isinstance(obj, dict)
        and bool(obj)
        and all(isinstance(k, str) and is_tensor(v) for k, v in obj.items())
    )


def importable_name(obj: Any) -> str | None:
    """``module.Qualname`` of a class or function that can be imported back, else ``None``
    (defined in ``__main__``, inside a function, or a lambda)."""
    module = getattr(obj, "__module__", None)
    qualname = getattr(obj, "__qualname__", None)
    if not module or not qualname or module == "__main__" or "<" in qualname:
        return None
    return f"{module}.{qualname}"
