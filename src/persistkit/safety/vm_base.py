"""What the restricted machine's parts share: its refusal, its roles beyond the allow-list's,
its limits, and small checks on values (see :mod:`persistkit.safety.vm`)."""

from __future__ import annotations

from typing import Any

from persistkit.errors import UntrustedArtifactError

#: roles the machine gives globals besides the allow-list's own
TRUSTED = "trusted"  # named in ``trusted=[...]``: plain pickle semantics
REPLACEMENT = "replacement"  # a reader's own stand-in for a format's helper class

MAX_MEMO_SLACK = 4096  # memo slots beyond those in use (a pickler numbers them 0, 1, 2, ...)
MAX_DIMS = 64
MAX_ELEMENTS = 1 << 48
MAX_ITEMSIZE = 1 << 31
MAX_FIELDS = 1 << 16
# Python's pickler cannot nest values deeper than its recursion limit; hashing a tuple nested
# ~100,000 deep recurses in C without a check and kills the process
MAX_NESTING = 1000


class Refusal(UntrustedArtifactError):
    """The stream tried to do something no pickler writes (an invariant of the machine)."""


def is_dunder(name: str) -> bool:
    return len(name) > 4 and name.startswith("__") and name.endswith("__")


def exact_int(value: Any) -> bool:
    """An ``int`` itself (not ``bool``, not a numpy integer)."""
    return type(value) is int


def describe(value: Any) -> str:
    """How an error names a value the stream holds."""
    if isinstance(value, type):
        return f"the class {value.__module__}.{value.__qualname__}"
    kind = type(value)
    if callable(value):
        return f"a callable {kind.__module__}.{kind.__qualname__}"
    return f"a {kind.__module__}.{kind.__qualname__}"
