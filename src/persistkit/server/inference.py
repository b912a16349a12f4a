"""The transport-free core of inference: checked input arrays in, named output arrays out.

REST (:mod:`persistkit.server.app`) and gRPC both call :meth:`Inference.infer` with the
arrays their codec decoded (each array's dtype is the datatype its request declared), so both
get the same checks, the same picture reading, the same adaptive batching and the same
``label``/``scores`` outputs. Errors are :class:`~persistkit.errors.InputError` (a 400 /
``INVALID_ARGUMENT``) or whatever the model raised (a 500 / ``INTERNAL``).
"""

from __future__ import annotations

import time
import weakref
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import anyio.to_thread
import numpy as np

from persistkit.errors import InputError, PersistkitError
from persistkit.server.batching import Batcher
from persistkit.server.metrics import observe_batch
from persistkit.server.protocol import check_model_inputs, picture_files
from persistkit.server.repository import LABEL_OUTPUT, SCORES_OUTPUT, ServedModel
from persistkit.signature import TensorSpec

#: what a model is called with: one array, or a dict / tuple of them (several inputs)
ModelInput = np.ndarray | dict[str, np.ndarray] | tuple[np.ndarray, ...]


@dataclass(frozen=True)
class InferenceAnswer:
    """What a transport encodes: the model's name and version label, and the requested
    outputs as ``(name, array)`` in the order they were asked for (all outputs, in the
    metadata's order, when none were named)."""

    model_name: str
    model_version: str
    outputs: list[tuple[str, np.ndarray]]


#: a model whose calls take less than this (wall time, in a worker thread) may run on the
#: event loop: handing a call to a thread and back costs more CPU than a small model's call
#: (scikit-learn's logistic regression answers in ~0.1-0.3 ms), and a model that holds the
#: GIL blocks the loop from a thread too. Slower models stay in worker threads
INLINE_BELOW_S = 0.002
_TIMED_CALLS = 4  # calls timed (in a thread, then on the loop) before a choice is made


class _ModelState:
    """Where one model's calls run, from their measured wall times; and the outputs it
    answers (worked out once: ``ServedModel.answer_outputs`` builds them on each use).

    Calls start in a worker thread. A model fast there is tried on the event loop; if it is
    slower on the loop (a torch model whose intra-op threads fight the loop for the cores
    can be 10x slower there), it goes back to threads for good.
    """

    __slots__ = (
        "answer_specs",
        "available",
        "calls",
        "loop_calls",
        "loop_refused",
        "loop_seconds",
        "rows",
        "seconds",
    )  # fmt: skip

    def __init__(self, served: ServedModel) -> None:
        self.calls, self.seconds, self.rows = 0, 0.0, 1.0
        self.loop_calls, self.loop_seconds, self.loop_refused = 0, 0.0, False
        self.answer_specs = {spec.name: spec for spec in served.answer_outputs}
        signature = served.signature
        own = [s.name for s in signature.outputs] if signature.output_form != "single" else []
        self.available = (*(own or [served.output_name]), *self.answer_specs)

    def add(self, seconds: float, rows: int, *, on_loop: bool) -> None:
        if on_loop:
            self.loop_seconds += (seconds - self.loop_seconds) / min(self.loop_calls + 1, 20)
            self.loop_calls += 1
            limit = max(INLINE_BELOW_S, 2 * self.seconds)
            if self.loop_calls >= _TIMED_CALLS and self.loop_seconds > limit:
                self.loop_refused = True
            return
        self.calls += 1
        if self.calls == 1:
            return  # the first call warms up (imports, caches, allocations): not typical
        weight = 1 / min(self.calls - 1, 20)
        self.seconds += (seconds - self.seconds) * weight
        self.rows += (max(rows, 1) - self.rows) * weight

    def on_loop(self, rows: int) -> bool:
        """True when a call over ``rows`` rows should run on the event loop: it is expected
        to take under :data:`INLINE_BELOW_S` (time per call scaled up, never down, by rows)
        and the loop has not proven slower for this model."""
        if self.loop_refused or self.calls < _TIMED_CALLS:
            return False
        return self.seconds * max(1.0, rows / self.rows) < INLINE_BELOW_S


class Inference:
    """Runs predictions for a server; one instance per server, shared by every transport.

    ``max_batch_size`` > 1 turns on adaptive batching (:mod:`persistkit.server.batching`):
    concurrent requests for one model are stacked into one predict call of at most that many
    rows, a request waiting at most ``max_batch_delay_ms`` for companions when the model is
    idle. Off (1) by default.
    """

    def __init__(self, *, max_batch_size: int = 1, max_batch_delay_ms: float = 0.0) -> None:
        if max_batch_size < 1 or max_batch_delay_ms < 0:
            raise ValueError("max_batch_size must be >= 1 and max_batch_delay_ms >= 0")
        self.max_batch_size = max_batch_size
        self.max_batch_delay_ms = max_batch_delay_ms
        self.batcher = (
            Batcher(self._run, max_rows=max_batch_size, max_delay_s=max_batch_delay_ms / 1000)
            if max_batch_size > 1
            else None
        )
        self._states: dict[int, tuple[weakref.ref[ServedModel], _ModelState]] = {}

    async def infer(
        self,
        served: ServedModel,
        inputs: Mapping[str, np.ndarray],
        requested: Sequence[str] = (),
        parameters: Mapping[str, Any] | None = None,
    ) -> InferenceAnswer:
        """Check ``inputs`` (name -> array whose dtype is the datatype the request declared)
        against ``served``'s signature, predict (batched with concurrent requests when
        batching is on), and answer the ``requested`` outputs (all when empty).
        ``parameters`` are the request's OIP parameters (none changes the prediction yet).
        Raises :class:`InputError` for a request the model cannot take."""
        timing = self._timing(served)
        available = timing.available
        unknown = [name for name in requested if name not in available]
        if unknown:
            raise InputError(
                f"the model has no output named {unknown[0][:64]!r}; its outputs are "
                f"{', '.join(repr(name) for name in available)}",
                hint="ask for those outputs, or for none",
            )
        pictures = picture_files(dict(inputs), served.signature)
        batch: ModelInput
        if pictures is not None:
            batch = await _read_pictures(served, pictures)
        else:
            batch = check_model_inputs(dict(inputs), served.signature)
        wanted = tuple(requested) or available
        if self.batcher is not None:
            arrays = await self.batcher.submit(served, batch, wanted)
        else:
            arrays = await self._run(served, batch, wanted)
        return InferenceAnswer(
            served.name,
            served.version_label,
            [(name, arrays[name]) for name in wanted if name in arrays],
        )

    async def predict(self, served: ServedModel, batch: np.ndarray) -> np.ndarray:
        """The model's own output for a checked ``batch`` (no batching with others)."""
        return (await self._run(served, batch, (served.output_name,)))[served.output_name]

    async def _run(
        self, served: ServedModel, batch: ModelInput, wanted: tuple[str, ...]
    ) -> dict[str, np.ndarray]:
        """One predict call (plus ``label``/``scores`` when wanted): on the event loop for a
        model known to be fast, else in a worker thread; timed either way."""
        timing = self._timing(served)
        rows = _rows(batch)

        on_loop = timing.on_loop(rows)

        def timed() -> dict[str, np.ndarray]:
            began = time.perf_counter()
            arrays = _compute(served, batch, wanted, timing.answer_specs)
            timing.add(time.perf_counter() - began, rows, on_loop=on_loop)
            return arrays

        arrays = timed() if on_loop else await anyio.to_thread.run_sync(timed)
        observe_batch(served.name, rows)
        return arrays

    def _timing(self, served: ServedModel) -> _ModelState:
        entry = self._states.get(id(served))
        if entry is not None and entry[0]() is served:
            return entry[1]
        self._states = {k: v for k, v in self._states.items() if v[0]() is not None}
        timing = _ModelState(served)
        self._states[id(served)] = (weakref.ref(served), timing)
        return timing


def _rows(batch: ModelInput) -> int:
    first = batch if isinstance(batch, np.ndarray) else next(iter(_values(batch)))
    return len(first) if first.ndim else 1


def _values(batch: dict[str, np.ndarray] | tuple[np.ndarray, ...]) -> Iterable[np.ndarray]:
    return batch.values() if isinstance(batch, dict) else batch


def _compute(
    served: ServedModel,
    batch: ModelInput,
    wanted: tuple[str, ...],
    answer_specs: Mapping[str, TensorSpec],
) -> dict[str, np.ndarray]:
    """The wanted outputs of ``served`` for ``batch``, computed here and now."""
    from persistkit.api import predict
    from persistkit.arrays import to_numpy

    answer = predict(served.model, batch)
    if served.signature.output_form != "single":
        return _named_outputs(answer, served)
    prediction = to_numpy(answer)
    arrays = {served.output_name: prediction}
    if any(name != served.output_name for name in wanted) and isinstance(batch, np.ndarray):
        arrays.update(_answer_arrays(served, batch, prediction, answer_specs))
    return arrays


def _named_outputs(answer: Any, served: ServedModel) -> dict[str, np.ndarray]:
    """A model's dict or tuple of outputs by the names its signature gives them."""
    from persistkit.arrays import to_numpy

    specs = served.signature.outputs
    if served.signature.output_form == "dict" and isinstance(answer, Mapping):
        missing = [spec.name for spec in specs if spec.name not in answer]
        if not missing:
            return {spec.name: to_numpy(answer[spec.name]) for spec in specs}
    elif isinstance(answer, (tuple, list)) and len(answer) == len(specs):
        return {spec.name: to_numpy(item) for spec, item in zip(specs, answer)}
    raise ModelAnswerError(
        f"{served.name} answered {_shape_of(answer)}, not the "
        f"{served.signature.output_form} of outputs {[s.name for s in specs]} it was saved with",
        hint="the model's outputs changed since it was saved; save it again with example=",
    )


def _shape_of(answer: Any) -> str:
    if isinstance(answer, Mapping):
        return f"a dict of {sorted(map(str, answer))[:8]}"
    if isinstance(answer, (tuple, list)):
        return f"a {type(answer).__name__} of {len(answer)}"
    return f"one {type(answer).__name__}"


class ModelAnswerError(PersistkitError):
    """A model's answer does not have the outputs its signature records (a 500: the
    request was fine, the model is not)."""


def _answer_arrays(
    served: ServedModel,
    batch: np.ndarray,
    prediction: np.ndarray,
    specs: Mapping[str, TensorSpec],
) -> dict[str, np.ndarray]:
    """The ``label`` (object array of str) and ``scores`` outputs of ``prediction``."""
    from persistkit.answers import score_batch

    assert served.outputs is not None
    scored = score_batch(prediction, served.outputs, model=served.model, batch=batch)
    labels = np.empty(len(scored.predicted), dtype=object)
    labels[:] = [str(label) for label in scored.predicted]
    arrays = {LABEL_OUTPUT: labels}
    if SCORES_OUTPUT in specs and scored.probabilities is not None:
        arrays[SCORES_OUTPUT] = scored.probabilities.astype(specs[SCORES_OUTPUT].dtype)
    return arrays


async def _read_pictures(served: ServedModel, pictures: list[bytes]) -> np.ndarray:
    """Encoded picture files sent as a BYTES input, read exactly as ``persistkit predict``
    reads picture files (the model's preprocess record, else the 0-255 rule)."""
    from persistkit.inputs import picture_batch, read_image

    spec = served.signature.input

    def read_all() -> np.ndarray:
        return np.concatenate(
            [
                picture_batch(
                    read_image(data, spec, source=f"picture {index}", preprocess=served.preprocess),
                    spec,
                    served.preprocess,
                )
                for index, data in enumerate(pictures)
            ]
        )

    return await anyio.to_thread.run_sync(read_all)
