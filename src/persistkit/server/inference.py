"""The transport-free core of inference: checked input arrays in, named output arrays out.

REST (:mod:`persistkit.server.app`) and gRPC both call :meth:`Inference.infer` with the
arrays their codec decoded (each array's dtype is the datatype its request declared), so both
get the same checks, the same picture reading, the same adaptive batching and the same
``label``/``scores`` outputs. Errors are :class:`~persistkit.errors.InputError` (a 400 /
``INVALID_ARGUMENT``) or whatever the model raised (a 500 / ``INTERNAL``).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from functools import partial
from typing import Any

import anyio.to_thread
import numpy as np

from persistkit.errors import InputError
from persistkit.server.protocol import check_inputs, picture_files
from persistkit.server.repository import LABEL_OUTPUT, SCORES_OUTPUT, ServedModel


@dataclass(frozen=True)
class InferenceAnswer:
    """What a transport encodes: the model's name and version label, and the requested
    outputs as ``(name, array)`` in the order they were asked for (all outputs, in the
    metadata's order, when none were named)."""

    model_name: str
    model_version: str
    outputs: list[tuple[str, np.ndarray]]


class Inference:
    """Runs predictions for a server; one instance per server, shared by every transport.

    ``max_batch_size`` > 1 turns on adaptive batching (see :mod:`persistkit.server.batching`):
    concurrent requests for one model are stacked into one predict call for at most
    ``max_batch_delay_ms``. Off (1) by default.
    """

    def __init__(self, *, max_batch_size: int = 1, max_batch_delay_ms: float = 0.0) -> None:
        self.max_batch_size = max_batch_size
        self.max_batch_delay_ms = max_batch_delay_ms

    async def infer(
        self,
        served: ServedModel,
        inputs: Mapping[str, np.ndarray],
        requested: Sequence[str] = (),
        parameters: Mapping[str, Any] | None = None,
    ) -> InferenceAnswer:
        """Check ``inputs`` against ``served``'s signature, predict, and answer the
        ``requested`` outputs (all when empty). ``parameters`` are the request's OIP
        parameters (reserved; none changes the prediction yet)."""
        available = [served.output_name, *(s.name for s in served.answer_outputs)]
        unknown = [name for name in requested if name not in available]
        if unknown:
            raise InputError(
                f"the model has no output named {unknown[0][:64]!r}; its outputs are "
                f"{', '.join(repr(name) for name in available)}",
                hint="ask for those outputs, or for none",
            )
        pictures = picture_files(dict(inputs), served.signature)
        if pictures is not None:
            batch = await _read_pictures(served, pictures)
        else:
            batch = check_inputs(dict(inputs), served.signature)
        wanted = list(requested) or available
        prediction = await self.predict(served, batch)
        arrays = {served.output_name: prediction}
        if any(name != served.output_name for name in wanted):
            arrays.update(await _answer_arrays(served, batch, prediction))
        return InferenceAnswer(
            served.name,
            served.version_label,
            [(name, arrays[name]) for name in wanted if name in arrays],
        )

    async def predict(self, served: ServedModel, batch: np.ndarray) -> np.ndarray:
        """The model's prediction for a checked ``batch``, in a worker thread."""
        return await anyio.to_thread.run_sync(partial(_predict_now, served.model, batch))


def _predict_now(model: Any, batch: Any) -> np.ndarray:
    from persistkit.api import predict
    from persistkit.arrays import to_numpy

    return to_numpy(predict(model, batch))


async def _answer_arrays(
    served: ServedModel, batch: np.ndarray, prediction: np.ndarray
) -> dict[str, np.ndarray]:
    """The ``label`` (object array of str) and ``scores`` outputs of ``prediction``."""
    from persistkit.answers import score_batch

    assert served.outputs is not None
    call = partial(score_batch, prediction, served.outputs, model=served.model, batch=batch)
    scored = await anyio.to_thread.run_sync(call)
    labels = np.empty(len(scored.predicted), dtype=object)
    labels[:] = [str(label) for label in scored.predicted]
    arrays = {LABEL_OUTPUT: labels}
    specs = {spec.name: spec for spec in served.answer_outputs}
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
