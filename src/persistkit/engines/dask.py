"""The Dask engine: partitions run as tasks on the worker processes of a Dask cluster.

Only the glue lives here (start or reach a cluster, submit with a bounded window, collect as
tasks finish); what a task does is :func:`persistkit.batch.predict_partition`. Workers import
persistkit themselves, so a cluster reached with ``address`` must have it (and the model's
libraries) installed, and must see the input files at the same paths.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Iterable, Iterator
from typing import Any

from persistkit.errors import EngineError

INSTALL = 'pip install "persistkit[batch]"'
CONNECT_TIMEOUT_S = 20


def _distributed() -> Any:
    try:
        import distributed
    except ImportError:
        raise EngineError(
            "the dask engine needs dask.distributed, which is not installed",
            hint=INSTALL,
        ) from None
    return distributed


def default_workers() -> int:
    """One worker process per CPU core this process may use."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


class DaskEngine:
    """A Dask client: on a ``LocalCluster`` of worker *processes* (one thread each) started
    here and closed by :meth:`close`, or on the scheduler at ``address``, left running."""

    name = "dask"

    def __init__(self, *, address: str | None = None, workers: int | None = None) -> None:
        distributed = _distributed()
        self.address = address
        self._cluster: Any = None
        if address is None:
            self._cluster = self._start_cluster(distributed, workers or default_workers())
            self._client = distributed.Client(self._cluster)
        else:
            self._client = self._connect(distributed, address)
        self.slots = max(sum(self._client.nthreads().values()), 1)

    @staticmethod
    def _start_cluster(distributed: Any, workers: int) -> Any:
        try:
            return distributed.LocalCluster(
                n_workers=workers,
                threads_per_worker=1,  # one model copy per process, the GIL never shared
                processes=True,
                dashboard_address=None,  # no dashboard; its health routes on any free port:
                scheduler_kwargs={"dashboard_address": ":0"},  # not 8787, maybe taken
                worker_dashboard_address=None,
                silence_logs=logging.ERROR,
            )
        except RuntimeError as exc:
            raise EngineError(
                f"could not start a local Dask cluster: {exc}",
                hint='call predict_many from a script under `if __name__ == "__main__":` '
                "(worker processes import the main module), or pass the address of a "
                "running scheduler",
            ) from None

    @staticmethod
    def _connect(distributed: Any, address: str) -> Any:
        try:
            client = distributed.Client(address, timeout=f"{CONNECT_TIMEOUT_S}s")
        except (OSError, TimeoutError, ValueError) as exc:
            raise EngineError(
                f"cannot reach the Dask scheduler at {address}: {exc}",
                hint="start one (`dask scheduler`, then `dask worker ADDRESS` on each "
                "machine), or leave the address out to start a local cluster",
            ) from None
        try:
            client.wait_for_workers(1, timeout=CONNECT_TIMEOUT_S)
        except TimeoutError:
            client.close()
            raise EngineError(
                f"the Dask scheduler at {address} has no workers",
                hint="start workers with `dask worker ADDRESS`",
            ) from None
        return client

    def map_unordered(
        self, function: Callable[..., Any], tasks: Iterable[tuple[Any, ...]], *, window: int
    ) -> Iterator[Any]:
        """Submit up to ``window`` tasks, and one more each time one finishes (so a run over
        millions of files never holds millions of futures), yielding results as they come."""
        distributed = _distributed()
        queue = iter(tasks)
        running = distributed.as_completed()
        pending: set[Any] = set()  # ours to cancel: as_completed's own set changes under us

        def submit_next() -> None:
            task = next(queue, None)
            if task is not None:
                future = self._client.submit(function, *task, pure=False)
                pending.add(future)
                running.add(future)

        for _ in range(max(window, 1)):
            submit_next()
        try:
            for future in running:
                pending.discard(future)
                try:
                    result = future.result()
                except distributed.KilledWorker as exc:
                    raise EngineError(
                        f"Dask workers died while running a partition: {exc}",
                        hint="an input may crash the model's library, or the workers ran "
                        "out of memory: try a smaller partition size",
                    ) from None
                future.release()
                submit_next()
                yield result
        finally:
            for future in pending:
                future.cancel()

    def describe(self) -> str:
        where = "a local cluster" if self.address is None else self.address
        return f"{self.slots} Dask worker thread{'s' if self.slots != 1 else ''} on {where}"

    def close(self) -> None:
        client, self._client = self._client, None
        if client is not None:
            client.close()
        cluster, self._cluster = self._cluster, None
        if cluster is not None:
            cluster.close()

    def __enter__(self) -> DaskEngine:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
