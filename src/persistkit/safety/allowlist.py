"""Exact ``module.qualname`` globals that untrusted pickles may import.

Only exact names: never module prefixes, never "anything in numpy" (numpy, like the stdlib,
contains functions that execute strings).
"""

from __future__ import annotations

DEFAULT_ALLOWED: frozenset[str] = frozenset(
    {
        "builtins.complex",
        "builtins.set",
        "builtins.frozenset",
        "builtins.slice",
        "builtins.range",
        "builtins.bytearray",
        "collections.OrderedDict",
        "collections.defaultdict",
        "numpy.dtype",
        "numpy.ndarray",
        "numpy.core.multiarray._reconstruct",
        "numpy._core.multiarray._reconstruct",
        "numpy.core.multiarray.scalar",
        "numpy._core.multiarray.scalar",
    }
)


def is_allowed(qualified_name: str) -> bool:
    return qualified_name in DEFAULT_ALLOWED
