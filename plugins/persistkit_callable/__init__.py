"""The plain-callable adapter: any function (or object with ``__call__``) is a model whose
prediction is ``model(inputs)``. It runs after every other adapter, so frameworks whose models
are callable (PyTorch) keep their own behaviour.
"""

from __future__ import annotations

import types
from typing import Any

import persistkit
from persistkit import Recommendation


def _is_plain_callable(model: Any) -> bool:
    return callable(model) and not isinstance(model, type)


def _by_reference(func: Any) -> bool:
    """Can plain pickle store ``func`` as an import path that loads back elsewhere?"""
    qualname = getattr(func, "__qualname__", "")
    module = getattr(func, "__module__", None)
    return bool(module) and module != "__main__" and "<" not in qualname


@persistkit.hookimpl(trylast=True)
def persistkit_predict(model: Any, inputs: Any, options: dict[str, Any]) -> Any | None:
    if not _is_plain_callable(model):
        return None
    method = options.get("method")
    func = getattr(model, method) if method else model
    return func(inputs)


@persistkit.hookimpl(trylast=True)
def persistkit_describe(model: Any) -> dict[str, Any] | None:
    if not isinstance(model, (types.FunctionType, types.BuiltinFunctionType, types.MethodType)):
        return None
    return {
        "family": "callable",
        "class": f"{getattr(model, '__module__', '?')}.{getattr(model, '__qualname__', '?')}",
    }


@persistkit.hookimpl(trylast=True)
def persistkit_recommend(model: Any) -> list[Recommendation] | None:
    if not isinstance(model, (types.FunctionType, types.MethodType)):
        return None
    if _by_reference(model):
        return [Recommendation("pickle", 30, "an importable function pickles by reference")]
    return [
        Recommendation(
            "cloudpickle",
            45,
            "lambdas, closures and functions defined in __main__ "
            "must be stored by value, which cloudpickle does",
        ),
        Recommendation("dill", 40, "dill also stores functions by value"),
    ]
