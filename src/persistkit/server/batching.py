"""Adaptive batching: concurrent requests for one model stacked into one ``predict`` call.

Each served model has one queue and one worker task on the server's event loop, running one
batch at a time. A request waits in the queue while the model is busy, so under load batches
fill by themselves; when the model is idle, the first request waits at most ``max_delay_s``
for companions (0: not at all). A batch takes, in arrival order, the requests that share the
first one's key (each input's name, shape past the batch dimension and dtype, and the
outputs asked for) up to ``max_rows`` rows in all; others wait for the next batch. A request
larger than ``max_rows`` runs alone.

Outputs are split back by each request's rows. If the stacked call raises, or returns an
output whose first dimension is not the stacked row count, every request of the batch is run
alone, so one bad request cannot fail its neighbours: each gets its own answer or its own
error.
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import Awaitable, Callable, Hashable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

Outputs = dict[str, np.ndarray]
#: one request's inputs: one array, or a dict / tuple of arrays of one batch size
Batch = np.ndarray | dict[str, np.ndarray] | tuple[np.ndarray, ...]
#: runs one (possibly stacked) batch for a model and the outputs wanted, off or on the loop
Runner = Callable[[Any, Batch, tuple[str, ...]], Awaitable[Outputs]]


@dataclass
class _Pending:
    batch: Batch
    rows: int
    wanted: tuple[str, ...]
    key: Hashable
    future: asyncio.Future[Outputs]


@dataclass
class _Queue:
    pending: deque[_Pending] = field(default_factory=deque)
    wake: asyncio.Event = field(default_factory=asyncio.Event)
    worker: asyncio.Task[None] | None = None


class Batcher:
    """Stacks concurrent requests per model; see the module's documentation.

    ``run(model_key, batch, wanted)`` computes the outputs of one batch; the batcher calls it
    with the stacked rows, and again per request when the stacked call fails.
    """

    def __init__(self, run: Runner, *, max_rows: int, max_delay_s: float) -> None:
        if max_rows < 2:
            raise ValueError("batching needs max_rows >= 2")
        self.run = run
        self.max_rows = max_rows
        self.max_delay_s = max(0.0, max_delay_s)
        self._queues: dict[int, tuple[Any, _Queue]] = {}

    async def submit(self, model: Any, batch: Batch, wanted: tuple[str, ...]) -> Outputs:
        """The outputs for ``batch`` (already checked), computed alone or stacked with
        concurrent requests for the same ``model`` (any object naming the model: the
        server's ``ServedModel``; compared by identity)."""
        arrays = _arrays(batch)
        if any(a.ndim == 0 for a in arrays) or len(arrays[0]) >= self.max_rows:
            return await self.run(model, batch, wanted)
        loop = asyncio.get_running_loop()
        entry = self._queues.get(id(model))
        if entry is None or entry[0] is not model:
            entry = (model, _Queue())
            self._queues[id(model)] = entry
        queue = entry[1]
        names = tuple(batch) if isinstance(batch, dict) else len(arrays)
        items = tuple((a.shape[1:], a.dtype.str) for a in arrays)
        key = (type(batch).__name__, names, items, wanted)
        pending = _Pending(batch, len(arrays[0]), wanted, key, loop.create_future())
        queue.pending.append(pending)
        queue.wake.set()
        if queue.worker is None or queue.worker.done():
            queue.worker = loop.create_task(self._work(model, queue))
        return await pending.future

    async def _work(self, model: Any, queue: _Queue) -> None:
        """Run batches for ``model`` until its queue is empty; if the worker itself is
        stopped (the server shutting down), no request is left waiting for ever."""
        try:
            await self._drain(model, queue)
        finally:
            while queue.pending:
                pending = queue.pending.popleft()
                if not pending.future.done():
                    pending.future.cancel()
        if id(model) in self._queues and self._queues[id(model)][1] is queue:
            del self._queues[id(model)]  # a model unloaded later leaves nothing behind

    async def _drain(self, model: Any, queue: _Queue) -> None:
        loop = asyncio.get_running_loop()
        while queue.pending:
            if self.max_delay_s and self._rows_like(queue, queue.pending[0].key) < self.max_rows:
                deadline = loop.time() + self.max_delay_s
                while self._rows_like(queue, queue.pending[0].key) < self.max_rows:
                    left = deadline - loop.time()
                    if left <= 0:
                        break
                    queue.wake.clear()
                    try:
                        await asyncio.wait_for(queue.wake.wait(), left)
                    except asyncio.TimeoutError:
                        break
            group = self._take(queue)
            await self._run_group(model, group)

    @staticmethod
    def _rows_like(queue: _Queue, key: Hashable) -> int:
        return sum(p.rows for p in queue.pending if p.key == key)

    def _take(self, queue: _Queue) -> list[_Pending]:
        """The first pending request and the later ones sharing its key, up to max_rows."""
        first = queue.pending.popleft()
        group, rows, kept = [first], first.rows, deque[_Pending]()
        while queue.pending:
            item = queue.pending.popleft()
            if item.key == first.key and rows + item.rows <= self.max_rows:
                group.append(item)
                rows += item.rows
            else:
                kept.append(item)
        queue.pending.extendleft(reversed(kept))
        return group

    async def _run_group(self, model: Any, group: list[_Pending]) -> None:
        live = [p for p in group if not p.future.done()]  # a client may have gone
        if not live:
            return
        if len(live) > 1:
            stacked = _stack([p.batch for p in live])
            total = sum(p.rows for p in live)
            try:
                outputs = await self.run(model, stacked, live[0].wanted)
            except Exception:
                outputs = None  # one bad request must not fail its neighbours: run each alone
            if outputs is not None and all(
                getattr(a, "ndim", 0) >= 1 and len(a) == total for a in outputs.values()
            ):
                start = 0
                for p in live:
                    end = start + p.rows
                    _settle(p, {name: array[start:end] for name, array in outputs.items()})
                    start = end
                return
        for p in live:
            try:
                _settle(p, await self.run(model, p.batch, p.wanted))
            except Exception as exc:
                if not p.future.done():
                    p.future.set_exception(exc)


def _arrays(batch: Batch) -> list[np.ndarray]:
    if isinstance(batch, dict):
        return list(batch.values())
    return list(batch) if isinstance(batch, tuple) else [batch]


def _stack(batches: list[Batch]) -> Batch:
    """Requests of one key stacked along the batch dimension, in the same form."""
    first = batches[0]
    if isinstance(first, dict):
        dicts = [b for b in batches if isinstance(b, dict)]
        return {name: np.concatenate([b[name] for b in dicts]) for name in first}
    columns = zip(*(_arrays(b) for b in batches))
    stacked = tuple(np.concatenate(column) for column in columns)
    return stacked if isinstance(first, tuple) else stacked[0]


def _settle(pending: _Pending, outputs: Outputs) -> None:
    if not pending.future.done():
        pending.future.set_result(outputs)
