"""Several worker processes (``persistkit serve --workers N``): the start-up check.

Each worker loads every model itself. Memory-mappable weights (safetensors, and torch files,
which their plugins load memory-mapped) are then one copy in the page cache, shared by all
workers: a worker's RSS counts those pages, its PSS only its share of them.

The supervisor process (uvicorn's, which starts the workers) checks first that every ref
loads, so a bad ref fails as one clear line instead of a traceback per worker. It checks in
a throwaway process: loading in the supervisor itself would keep a copy of every model, and
of the libraries it imported (torch: some 150 MB), for as long as the server runs, in a
process that never answers a request.
"""

from __future__ import annotations

import multiprocessing
import sys
from dataclasses import dataclass

from persistkit.errors import PersistkitError


@dataclass(frozen=True)
class CheckResult:
    """What the throwaway process reports: the served ``name:version`` labels, or the
    error's message and CLI hint (an exception crossing processes loses its class)."""

    served: list[str]
    error: str | None = None
    hint: str | None = None


def check_loads(
    refs: list[str], store: str | None, trusted: bool | list[str], app_dir: str | None
) -> list[str]:
    """Load every ref in a fresh process and let it go; return the ``name:version`` labels
    served. Raises :class:`PersistkitError` with the load's own message and hint."""
    context = multiprocessing.get_context("spawn")  # a fresh interpreter, nothing inherited
    with context.Pool(1) as pool:
        result: CheckResult = pool.apply(_load_all, (refs, store, trusted, app_dir))
    if result.error is not None:
        raise PersistkitError(result.error, hint=result.hint)
    return result.served


def _load_all(
    refs: list[str], store: str | None, trusted: bool | list[str], app_dir: str | None
) -> CheckResult:
    from persistkit.server.repository import ModelRepository

    if app_dir is not None and app_dir not in sys.path:
        sys.path.append(app_dir)  # last, as the CLI put it
    repository = ModelRepository(refs, store=store, trusted=trusted)
    try:
        repository.load()
    except PersistkitError as exc:
        return CheckResult([], exc.message, exc.hint_for("cli"))
    except Exception as exc:  # a plugin's own failure: its type and text, in one line
        return CheckResult([], f"loading failed: {type(exc).__name__}: {exc}"[:2000])
    return CheckResult([served_label(m.name, m.version_label) for m in repository.models()])


def served_label(name: str, version: str) -> str:
    """``name:version``, or ``name`` for a model served from a path."""
    return f"{name}:{version}" if version else name
