"""Where a batch run's partitions are computed: this process, or an existing cluster.

An engine maps one function over many tasks and yields the results as they finish; it knows
nothing about models or files (that is :mod:`persistkit.batch`). ``local`` runs the tasks one
after another here; ``dask`` (:mod:`persistkit.engines.dask`) sends them to the worker
processes of a Dask cluster, started for the run or reached at an address. Ray is not offered:
see ``docs/batch.md``.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from typing import Any, Protocol

from persistkit.errors import EngineError

ENGINES = ("local", "dask")


class Engine(Protocol):
    """What a batch run needs from an engine. Use it as a context manager (``close`` ends
    whatever it started: a local cluster; a cluster reached at an address is left running)."""

    name: str
    #: how many tasks run at once (worker threads); the run keeps about twice that in flight
    slots: int

    def map_unordered(
        self, function: Callable[..., Any], tasks: Iterable[tuple[Any, ...]], *, window: int
    ) -> Iterator[Any]:
        """``function(*task)`` for every task, yielded as each finishes, at most ``window``
        submitted and unfinished at a time. An exception raised by a task is raised here."""
        ...

    def describe(self) -> str:
        """Where the work runs, for people (``"2 worker processes at tcp://..."``)."""
        ...

    def close(self) -> None:
        """Stop what the engine started; safe to call twice."""
        ...

    def __enter__(self) -> Engine: ...

    def __exit__(self, *exc: object) -> None: ...


class LocalEngine:
    """Every task in this process, one after another: no cluster, no extra dependency."""

    name = "local"
    slots = 1

    def map_unordered(
        self, function: Callable[..., Any], tasks: Iterable[tuple[Any, ...]], *, window: int
    ) -> Iterator[Any]:
        for task in tasks:
            yield function(*task)

    def describe(self) -> str:
        return "this process"

    def close(self) -> None:
        pass

    def __enter__(self) -> LocalEngine:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def open_engine(name: str, *, address: str | None = None, workers: int | None = None) -> Engine:
    """The engine called ``name`` (one of :data:`ENGINES`), started or connected.

    ``address`` (``tcp://host:8786``) reaches an existing Dask scheduler; without it ``dask``
    starts a local cluster of ``workers`` processes (default: one per CPU core). Raises
    :class:`EngineError` for an unknown name, an address given to ``local``, or an engine
    that is not installed or cannot be reached.
    """
    if name not in ENGINES:
        raise EngineError(
            f"unknown engine {name!r}",
            hint="use engine 'dask' (a Dask cluster: local, or --address of a running "
            "scheduler) or 'local' (this process); Ray is not supported (see docs/batch.md)",
        )
    if name == "local":
        if address is not None:
            raise EngineError(
                "an address was given, but the local engine runs in this process",
                hint="pass engine 'dask' to use the cluster at that address",
            )
        return LocalEngine()
    from persistkit.engines.dask import DaskEngine

    return DaskEngine(address=address, workers=workers)
