"""JSON for request and response bodies: orjson when it is installed (the ``serve`` extra
brings it; it parses a 64-row request about 10x faster than the standard library), else the
standard library, with the same results either way.

orjson is stricter than Python's ``json``: it refuses ``NaN``/``Infinity`` and integers past
64 bits, which Python clients (tritonclient among them) write. A body orjson refuses is
therefore read again by the standard library, so both paths accept exactly the same
documents; only the standard library's refusal is an error. Likewise a response holding NaN
or infinities is written by the standard library (``NaN``, ``Infinity``, as Python reads them)
because orjson would write ``null``.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any


class JSONDecodeError(ValueError):
    """A body that is not valid JSON (the message is the standard library's)."""


def stdlib_loads(data: bytes | bytearray | memoryview) -> Any:
    """Python's own ``json.loads`` (raising :class:`JSONDecodeError`)."""
    try:
        return json.loads(bytes(data) if isinstance(data, memoryview) else data)
    except (ValueError, UnicodeDecodeError, RecursionError) as exc:
        raise JSONDecodeError(str(exc)) from None


def _stdlib_dumps(value: Any) -> bytes:
    return json.dumps(value, separators=(",", ":")).encode()


Codec = tuple[str, Callable[[bytes | bytearray | memoryview], Any], Callable[[Any], bytes]]


def select(backend: str | None = None) -> Codec:
    """``(name, loads, dumps)`` for ``backend``: ``"orjson"``, ``"json"`` (the standard
    library) or None for the fastest installed. ``loads`` raises :class:`JSONDecodeError`;
    ``dumps`` writes compact JSON and is only given finite floats (see
    :func:`dumps`). Tests use this to run both paths."""
    if backend not in (None, "orjson", "json"):
        raise ValueError(f"unknown JSON backend {backend!r}")
    if backend == "json":
        return "json", stdlib_loads, _stdlib_dumps
    try:
        import orjson
    except ImportError:
        if backend == "orjson":
            raise
        return "json", stdlib_loads, _stdlib_dumps

    fast_loads, fast_error = orjson.loads, orjson.JSONDecodeError

    def loads(data: bytes | bytearray | memoryview) -> Any:
        try:
            return fast_loads(data)
        except (fast_error, RecursionError):
            return stdlib_loads(data)  # NaN, huge integers: read as Python reads them

    fast_dumps, encode_error = orjson.dumps, orjson.JSONEncodeError

    def dumps(value: Any) -> bytes:
        try:
            return fast_dumps(value)
        except encode_error:  # a lone surrogate, an integer past 64 bits: as Python writes them
            return _stdlib_dumps(value)

    return "orjson", loads, dumps


BACKEND, loads, _fast_dumps = select()


def use(backend: str | None) -> None:
    """Switch this process to ``backend`` (see :func:`select`): for tests of both paths and
    for comparing them."""
    global BACKEND, loads, _fast_dumps
    BACKEND, loads, _fast_dumps = select(backend)


def dumps(value: Any, *, finite: bool = True) -> bytes:
    """Compact JSON bytes of ``value``; pass ``finite=False`` when it may hold NaN or
    infinities, which are then written as Python's ``json`` writes them."""
    return _fast_dumps(value) if finite else _stdlib_dumps(value)
