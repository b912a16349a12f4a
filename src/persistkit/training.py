"""What a save records about training: its metrics (``save(metrics=)``), its parameters
(``save(params=)``) and who saved it.

Both are checked when the model is saved, so every stored version can be compared and
queried the same way (``persistkit ls --where metrics.accuracy>=0.9``,
``name@best:accuracy``): a metric is a finite number, a parameter a JSON scalar (text, a
number, true/false or null), and every key follows :data:`persistkit.refs.KEY_RULE`.
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Mapping
from typing import Any

from persistkit.errors import RecordError, RefError
from persistkit.refs import KEY_RULE, validate_key

MAX_TEXT = 1024  # characters of one text parameter; longer things belong in metadata=


def checked_metrics(metrics: Mapping[str, Any] | None) -> dict[str, float]:
    """``metrics`` as ``{key: float}``; raises :class:`RecordError` naming the first key or
    value that cannot be a metric (a bool, text, NaN, an infinity, an array)."""
    result: dict[str, float] = {}
    for key, value in _items(metrics, "metrics").items():
        number = _number(value)
        if number is None or not math.isfinite(number):
            raise RecordError(
                f"metric {key!r} is {_shown(value)}, not a finite number",
                hint="metrics are finite numbers (accuracy=0.97, loss=0.12); record text "
                "or structured results in metadata=",
            )
        result[key] = number
    return result


def checked_params(params: Mapping[str, Any] | None) -> dict[str, Any]:
    """``params`` as ``{key: JSON scalar}`` (numpy scalars become Python ones); raises
    :class:`RecordError` naming the first key or value that cannot be a parameter."""
    result: dict[str, Any] = {}
    for key, value in _items(params, "params").items():
        scalar = _scalar(value)
        if scalar is _NOT_SCALAR:
            raise RecordError(
                f"parameter {key!r} is {_shown(value)}, not a JSON scalar",
                hint="parameters are text, numbers, true/false or None; flatten nested ones "
                "({'layers.0': 64}) or record them in metadata=",
            )
        if isinstance(scalar, str) and len(scalar) > MAX_TEXT:
            raise RecordError(
                f"parameter {key!r} is {len(scalar)} characters long (at most {MAX_TEXT})",
                hint="record long text in metadata=",
            )
        result[key] = scalar
    return result


def saved_by() -> str | None:
    """The OS user name saving now (``$USER``/``$LOGNAME`` first, as :mod:`getpass` reads
    it), or ``None`` when there is none (a container without a passwd entry)."""
    import getpass

    try:
        return getpass.getuser() or None
    except (ImportError, KeyError, OSError):
        return None


def _items(values: Mapping[str, Any] | None, what: str) -> dict[str, Any]:
    if values is None:
        return {}
    if not isinstance(values, Mapping):
        raise RecordError(
            f"{what}= must be a mapping of names to values, not {type(values).__name__}",
            hint=f"e.g. {what}={{'accuracy': 0.97}}"
            if what == "metrics"
            else f"e.g. {what}={{'C': 1.0, 'kernel': 'rbf'}}",
        )
    for key in values:
        try:
            validate_key(key, what=f"key in {what}=")
        except RefError as exc:
            raise RecordError(exc.message, hint=KEY_RULE) from None
    return dict(values)


def _number(value: Any) -> float | None:
    """``value`` as a float if it is a real number (numpy's and 0-d tensors' too).

    A float32 (or float16) value becomes the shortest decimal that reads back as it: a
    float32 accuracy of 0.9 is recorded as 0.9, not 0.8999999761581421, so
    ``metrics.accuracy>=0.9`` finds it."""
    if isinstance(value, bool):
        return None
    size = getattr(getattr(value, "dtype", None), "itemsize", 8)
    number = _real(value)
    if number is not None and size in (2, 4) and math.isfinite(number):
        import numpy as np  # the value came from numpy or torch: both import it

        narrow = np.float32(number) if size == 4 else np.float16(number)
        return float(str(narrow))
    return number


def _real(value: Any) -> float | None:
    if not isinstance(value, numbers.Real) and callable(getattr(value, "item", None)):
        try:
            value = value.item()  # a 0-d array or tensor, a one-element batch
        except (ValueError, RuntimeError, TypeError):
            return None
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        return None
    try:
        return float(value)
    except (OverflowError, ValueError):
        return None


_NOT_SCALAR = object()


def _scalar(value: Any) -> Any:
    """``value`` as a JSON scalar, or :data:`_NOT_SCALAR`."""
    if value is None or isinstance(value, (str, bool)):
        return value
    if isinstance(value, numbers.Integral):
        return int(value)
    if isinstance(value, numbers.Real):
        number = float(value)
        return number if math.isfinite(number) else _NOT_SCALAR
    if callable(getattr(value, "item", None)) and getattr(value, "ndim", None) == 0:
        return _scalar(value.item())
    return _NOT_SCALAR


def _shown(value: Any) -> str:
    text = repr(value)
    return f"{type(value).__name__} {text[:60] + ('...' if len(text) > 60 else '')}"
