"""Adaptive batching (`persistkit serve --max-batch-size N --max-batch-delay-ms T`): concurrent
requests for one model run as one stacked predict call and each gets its own rows back; a bad
request keeps its own error. Against a real uvicorn server, and the Batcher on its own."""

from __future__ import annotations

import asyncio
import json
import threading
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import httpx
import numpy as np
import pytest
from click.testing import CliRunner

import persistkit
from persistkit.server import ModelRepository, create_app
from persistkit.server.batching import Batcher
from persistkit.server.inference import Inference
from serve_helpers import running_server

#: row counts of every call the served model saw (the loaded function is this module's own)
CALLS: list[int] = []
_CALLS_LOCK = threading.Lock()
POISON = -1.0  # a row holding this makes the model raise


def doubling_model(x: np.ndarray) -> np.ndarray:
    """Twice its input; records each call's rows; refuses a batch holding a poison row."""
    batch = np.asarray(x)
    with _CALLS_LOCK:
        CALLS.append(len(batch))
    if (batch == POISON).any():
        raise ValueError("poisoned row")
    return batch * 2


@pytest.fixture(scope="module")
def batched(tmp_path_factory: pytest.TempPathFactory) -> Iterator[httpx.Client]:
    """A server batching up to 16 rows, waiting up to 200 ms for companions."""
    store_dir = tmp_path_factory.mktemp("batching-store")
    with pytest.MonkeyPatch.context() as env:
        env.setenv("PERSISTKIT_HOME", str(tmp_path_factory.mktemp("batching-home")))
        persistkit.Store(store_dir).save(
            doubling_model, "double", example=np.ones((2, 3)), backend="pickle"
        )
        repository = ModelRepository(["double"], store=str(store_dir))
        inference = Inference(max_batch_size=16, max_batch_delay_ms=200)
        app = create_app(repository, inference=inference)
        with running_server(app) as server, httpx.Client(base_url=server.url) as client:
            yield client


def infer(client: httpx.Client, rows: np.ndarray, datatype: str = "FP64") -> httpx.Response:
    body = {"inputs": [{"name": "input-0", "datatype": datatype, "shape": list(rows.shape),
                        "data": rows.ravel().tolist()}]}  # fmt: skip
    return client.post("/v2/models/double/infer", content=json.dumps(body).encode())


def answer(response: httpx.Response) -> np.ndarray:
    assert response.status_code == 200, response.text
    output = response.json()["outputs"][0]
    return np.asarray(output["data"]).reshape(output["shape"])


def concurrently(client: httpx.Client, batches: list[np.ndarray]) -> list[httpx.Response]:
    with ThreadPoolExecutor(len(batches)) as pool:
        return list(pool.map(lambda rows: infer(client, rows), batches))


def test_concurrent_requests_share_one_predict_call_and_get_their_own_rows(
    batched: httpx.Client,
) -> None:
    CALLS.clear()
    batches = [np.full((i + 1, 3), float(i)) for i in range(4)]  # 1 + 2 + 3 + 4 rows
    responses = concurrently(batched, batches)
    for rows, response in zip(batches, responses):
        np.testing.assert_array_equal(answer(response), rows * 2)
    assert max(CALLS) > 4, CALLS  # at least two requests were stacked into one call


def test_a_poisoned_request_fails_alone_and_its_neighbours_are_answered(
    batched: httpx.Client,
) -> None:
    batches = [np.full((2, 3), 5.0), np.full((1, 3), POISON), np.full((3, 3), 7.0)]
    good_a, poisoned, good_b = concurrently(batched, batches)
    np.testing.assert_array_equal(answer(good_a), batches[0] * 2)
    np.testing.assert_array_equal(answer(good_b), batches[2] * 2)
    assert poisoned.status_code >= 400
    assert "poisoned row" in poisoned.json()["error"]


def test_a_request_failing_validation_gets_its_own_400_while_others_are_answered(
    batched: httpx.Client,
) -> None:
    with ThreadPoolExecutor(3) as pool:
        good = pool.submit(infer, batched, np.ones((2, 3)))
        misshapen = pool.submit(infer, batched, np.ones((2, 4)))
        wrong_type = pool.submit(infer, batched, np.ones((2, 3), dtype=np.int64), "INT64")
    np.testing.assert_array_equal(answer(good.result()), np.full((2, 3), 2.0))
    assert misshapen.result().status_code == 400
    assert "shape" in misshapen.result().json()["error"]
    assert wrong_type.result().status_code == 400
    assert "FP64" in wrong_type.result().json()["error"]


# --- the Batcher on its own ----------------------------------------------------------------


class Recorder:
    """A runner that records each call's rows and answers the rows plus one."""

    def __init__(self, delay: float = 0.0) -> None:
        self.calls: list[int] = []
        self.delay = delay

    async def __call__(
        self, model: Any, batch: np.ndarray, wanted: tuple[str, ...]
    ) -> dict[str, np.ndarray]:
        self.calls.append(len(batch))
        await asyncio.sleep(self.delay)
        return {"out": batch + 1}


def run_all(batcher: Batcher, batches: list[np.ndarray], model: Any = "m") -> list[np.ndarray]:
    async def main() -> list[np.ndarray]:
        answers = await asyncio.gather(*(batcher.submit(model, b, ("out",)) for b in batches))
        return [a["out"] for a in answers]

    return asyncio.run(main())


def test_requests_of_other_shapes_or_dtypes_are_not_stacked_together() -> None:
    runner = Recorder()
    batcher = Batcher(runner, max_rows=64, max_delay_s=0.05)
    batches = [np.zeros((1, 3)), np.zeros((1, 4)), np.zeros((1, 3), dtype=np.float32),
               np.zeros((2, 3))]  # fmt: skip
    answers = run_all(batcher, batches)
    for rows, got in zip(batches, answers):
        np.testing.assert_array_equal(got, rows + 1)
        assert got.dtype == rows.dtype
    assert sorted(runner.calls) == [1, 1, 3]  # the two float64 (N, 3) requests went together


def test_a_batch_never_exceeds_max_rows() -> None:
    runner = Recorder()
    batcher = Batcher(runner, max_rows=5, max_delay_s=0.05)
    batches = [np.full((2, 1), float(i)) for i in range(6)] + [np.zeros((9, 1))]
    answers = run_all(batcher, batches)
    for rows, got in zip(batches, answers):
        np.testing.assert_array_equal(got, rows + 1)
    assert max(runner.calls) == 9  # the oversized request ran alone
    assert all(calls <= 5 for calls in runner.calls if calls != 9)
    assert sum(runner.calls) == 21


def test_requests_queue_while_the_model_is_busy_and_then_run_together() -> None:
    runner = Recorder(delay=0.05)
    batcher = Batcher(runner, max_rows=64, max_delay_s=0.0)  # no waiting when idle

    async def main() -> None:
        first = asyncio.create_task(batcher.submit("m", np.zeros((1, 2)), ("out",)))
        await asyncio.sleep(0.01)  # the first batch is running now
        later = [batcher.submit("m", np.zeros((1, 2)), ("out",)) for _ in range(5)]
        await asyncio.gather(first, *later)

    asyncio.run(main())
    assert runner.calls == [1, 5]


def test_outputs_not_split_by_rows_fall_back_to_one_call_per_request() -> None:
    calls: list[int] = []

    async def summing(model: Any, batch: np.ndarray, wanted: tuple[str, ...]) -> Any:
        calls.append(len(batch))
        return {"out": np.asarray([batch.sum()])}  # one value per call, not per row

    batcher = Batcher(summing, max_rows=64, max_delay_s=0.05)
    answers = run_all(batcher, [np.ones((2, 1)), np.ones((3, 1))])
    assert [float(a[0]) for a in answers] == [2.0, 3.0]
    assert calls == [5, 2, 3]


def test_batching_is_off_by_default() -> None:
    assert Inference().batcher is None
    assert Inference(max_batch_size=8).batcher is not None


def test_serve_takes_the_batching_options() -> None:
    from persistkit.cli import main

    result = CliRunner().invoke(main, ["serve", "--help"])
    assert "--max-batch-size" in result.output
    assert "--max-batch-delay-ms" in result.output


def test_a_batch_delay_without_a_batch_size_is_a_usage_error() -> None:
    from persistkit.cli import main

    result = CliRunner().invoke(main, ["serve", "anything", "--max-batch-delay-ms", "5"])
    assert result.exit_code == 2
    assert "needs --max-batch-size" in result.output


def test_each_worker_batches_as_the_command_line_said(
    tmp_path: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    from persistkit.server.app import CONFIG_ENV, app_from_environment

    monkeypatch.setenv("PERSISTKIT_HOME", str(tmp_path / "home"))
    persistkit.Store(tmp_path / "store").save(
        doubling_model, "double", example=np.ones((2, 3)), backend="pickle"
    )
    config = {"refs": ["double"], "store": str(tmp_path / "store"), "max_body_bytes": 2**20,
              "max_batch_size": 8, "max_batch_delay_ms": 5.0}  # fmt: skip
    monkeypatch.setenv(CONFIG_ENV, json.dumps(config))
    batcher = app_from_environment().state.inference.batcher
    assert (batcher.max_rows, batcher.max_delay_s) == (8, 0.005)


def test_requests_of_several_inputs_stack_input_by_input() -> None:
    calls: list[int] = []

    async def adding(model: Any, batch: Any, wanted: tuple[str, ...]) -> Any:
        calls.append(len(batch["a"]))
        return {"out": batch["a"] + batch["b"]}

    batcher = Batcher(adding, max_rows=64, max_delay_s=0.05)

    async def main() -> list[Any]:
        requests = [
            {"a": np.full((1, 2), 1.0), "b": np.full((1, 2), 10.0)},
            {"a": np.full((2, 2), 2.0), "b": np.full((2, 2), 20.0)},
            {"a": np.full((1, 3), 3.0), "b": np.full((1, 3), 30.0)},  # other item shape
        ]
        return await asyncio.gather(*(batcher.submit("m", r, ("out",)) for r in requests))

    first, second, third = asyncio.run(main())
    np.testing.assert_array_equal(first["out"], np.full((1, 2), 11.0))
    np.testing.assert_array_equal(second["out"], np.full((2, 2), 22.0))
    np.testing.assert_array_equal(third["out"], np.full((1, 3), 33.0))
    assert sorted(calls) == [1, 3]
