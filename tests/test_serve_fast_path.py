"""The serving fast path: orjson and the standard library read and write the same bodies,
binary tensors are views of the request body, and fast models run on the event loop while
slow ones stay in worker threads."""

from __future__ import annotations

import asyncio
import json
import threading
import time
from collections.abc import Iterator
from typing import Any

import numpy as np
import pytest

from persistkit.errors import InputError
from persistkit.manifest import Manifest
from persistkit.server import codec
from persistkit.server.inference import INLINE_BELOW_S, Inference
from persistkit.server.protocol import build_outputs_response, parse_infer_request
from persistkit.server.repository import ServedModel
from persistkit.signature import Signature

BACKENDS = ["json", "orjson"]


@pytest.fixture(params=BACKENDS)
def backend(request: pytest.FixtureRequest) -> Iterator[str]:
    """Each JSON backend in turn, the fastest installed one restored after."""
    before = codec.BACKEND
    codec.use(request.param)
    yield request.param
    codec.use(before)


def body(data: Any, *, datatype: str = "FP64", shape: Any = None, **extra: Any) -> bytes:
    item = {"name": "x", "datatype": datatype, "shape": shape or [len(data)], "data": data}
    return json.dumps({"inputs": [item], **extra}).encode()


ACCEPTED = [
    body([0.1, 2.5e-300, 1e308, -0.0, 3]),
    body([1, -(2**63), 2**63 - 1], datatype="INT64"),
    body([2**64 - 1], datatype="UINT64"),
    body([float("nan"), float("inf"), -float("inf")]),  # Python clients write NaN, Infinity
    body([[1.5, 2.5], [3.5, 4.5]], shape=[2, 2]),
    body(["é", "日本", "\U0001f600"], datatype="BYTES"),
    body([True, False], datatype="BOOL", id="req-1"),
]


def parsed_both_ways(raw: bytes) -> tuple[Any, Any]:
    """What orjson's and the standard library's paths make of ``raw``: the parsed request,
    or the refusal's message."""

    def parsed() -> Any:
        try:
            return parse_infer_request(raw, None)
        except InputError as exc:
            return exc.message

    before = codec.BACKEND
    try:
        codec.use("orjson")
        fast = parsed()
        codec.use("json")
        return fast, parsed()
    finally:
        codec.use(before)


@pytest.mark.parametrize("raw", ACCEPTED, ids=range(len(ACCEPTED)))
def test_both_json_backends_read_the_same_arrays(raw: bytes) -> None:
    fast, slow = parsed_both_ways(raw)
    assert fast.id == slow.id
    (a,), (b,) = fast.inputs.values(), slow.inputs.values()
    assert a.dtype == b.dtype
    assert a.shape == b.shape
    np.testing.assert_array_equal(a, b)


REFUSED = [
    b"{not json",
    b"[1, 2]",
    body([1.5], datatype="INT32"),
    body([2**64], datatype="UINT64"),
    body([2**70], datatype="INT64"),
    json.dumps(
        {"inputs": [{"name": "x", "datatype": "FP32", "shape": [10**30, 0], "data": []}]}
    ).encode(),
    body([1.0, 2.0], shape=[3]),
]


@pytest.mark.parametrize("raw", REFUSED, ids=range(len(REFUSED)))
def test_both_json_backends_refuse_with_the_same_message(raw: bytes) -> None:
    fast, slow = parsed_both_ways(raw)
    assert isinstance(fast, str), fast
    assert fast == slow


def test_a_response_holding_nan_is_written_as_python_reads_it(backend: str) -> None:
    values = np.array([1.5, np.nan, np.inf], dtype=np.float32)
    response = build_outputs_response(
        model_name="m", model_version="1", request_id=None, outputs=[("y", values)], binary=False
    )
    data = json.loads(response.body)["outputs"][0]["data"]
    assert data[0] == 1.5
    assert np.isnan(data[1])
    assert data[2] == float("inf")


def test_both_backends_write_the_same_response(backend: str) -> None:
    outputs = [("y", np.array([0.1, 1e-7, 3.0], dtype=np.float64)), ("n", np.arange(3))]
    response = build_outputs_response(
        model_name="m", model_version="1", request_id="r", outputs=outputs, binary=False
    )
    decoded = json.loads(response.body)
    assert decoded["id"] == "r"
    assert decoded["outputs"][0]["data"] == [0.1, 1e-7, 3.0]
    assert decoded["outputs"][1] == {"name": "n", "datatype": "INT64", "shape": [3],
                                     "data": [0, 1, 2]}  # fmt: skip


def binary_body(values: np.ndarray, pad: int = 0) -> tuple[bytearray, str]:
    """A binary-extension body; ``pad`` spaces in the JSON header move the tensor's offset."""
    raw = values.astype(values.dtype.newbyteorder("<")).tobytes()
    item = {"name": "x", "datatype": "FP32", "shape": list(values.shape),
            "parameters": {"binary_data_size": len(raw)}}  # fmt: skip
    header = json.dumps({"inputs": [item]}).encode() + b" " * pad
    return bytearray(header + raw), str(len(header))


def aligned_body(values: np.ndarray) -> tuple[bytearray, str]:
    for pad in range(8):
        raw, length = binary_body(values, pad)
        if int(length) % values.dtype.itemsize == 0:
            return raw, length
    raise AssertionError("unreachable")


def test_binary_tensors_are_writable_views_of_the_body_not_copies() -> None:
    values = np.arange(12, dtype=np.float32).reshape(3, 4)
    raw, length = aligned_body(values)
    array = parse_infer_request(raw, length).inputs["x"]
    np.testing.assert_array_equal(array, values)
    assert np.shares_memory(array, np.frombuffer(raw, dtype=np.uint8))
    array[0, 0] = 99  # models may write to their inputs
    assert array[0, 0] == 99


def test_binary_tensors_from_read_only_or_misaligned_bodies_are_copied_once() -> None:
    values = np.arange(4, dtype=np.float32)
    raw, length = aligned_body(values)
    frozen = parse_infer_request(bytes(raw), length).inputs["x"]
    assert frozen.flags.writeable
    np.testing.assert_array_equal(frozen, values)
    for pad in range(4):
        odd, odd_length = binary_body(values, pad)
        array = parse_infer_request(odd, odd_length).inputs["x"]
        assert array.flags.aligned and array.flags.writeable
        np.testing.assert_array_equal(array, values)


def test_json_data_arrives_in_the_declared_dtype(backend: str) -> None:
    parsed = parse_infer_request(body([1, 2.5, 3], datatype="FP32"), None)
    assert parsed.inputs["x"].dtype == np.float32
    np.testing.assert_array_equal(parsed.inputs["x"], [1, 2.5, 3])


# --- where a model runs ----------------------------------------------------------------------


class ThreadRecorder:
    """A model that records which thread each call ran in, sleeping ``seconds``."""

    def __init__(self, seconds: float) -> None:
        self.seconds = seconds
        self.threads: list[str] = []

    def __call__(self, x: np.ndarray) -> np.ndarray:
        self.threads.append(threading.current_thread().name)
        if self.seconds:
            time.sleep(self.seconds)
        return np.asarray(x) * 2


def served(model: Any) -> ServedModel:
    signature = Signature.from_manifest(
        {"inputs": [{"name": "x", "datatype": "FP64", "shape": [-1, 2]}], "outputs": []}
    )
    return ServedModel("m", 1, model, Manifest(name="m", backend="pickle", files=[]), signature)


def calls_in(model: ThreadRecorder, count: int) -> list[str]:
    inference, target = Inference(), served(model)

    async def main() -> None:
        for _ in range(count):
            answer = await inference.infer(target, {"x": np.ones((1, 2))})
            np.testing.assert_array_equal(answer.outputs[0][1], [[2.0, 2.0]])

    asyncio.run(main())
    return model.threads


def test_a_fast_model_moves_onto_the_event_loop_after_a_few_timed_calls() -> None:
    threads = calls_in(ThreadRecorder(0.0), 8)
    main = threading.main_thread().name
    assert threads[0] != main  # timed in a worker thread first
    assert threads[-1] == main


def test_a_slow_model_stays_in_worker_threads() -> None:
    threads = calls_in(ThreadRecorder(INLINE_BELOW_S * 2), 6)
    assert threading.main_thread().name not in threads


class SlowOnTheLoop(ThreadRecorder):
    """Fast in a worker thread, slow in the main thread (as a torch model whose intra-op
    threads fight the event loop for the cores)."""

    def __call__(self, x: np.ndarray) -> np.ndarray:
        if threading.current_thread() is threading.main_thread():
            time.sleep(INLINE_BELOW_S * 2)
        return super().__call__(x)


def test_a_model_slower_on_the_loop_than_in_a_thread_goes_back_to_threads_for_good() -> None:
    threads = calls_in(SlowOnTheLoop(0.0), 20)
    main = threading.main_thread().name
    assert main in threads  # it was tried on the loop ...
    assert main not in threads[-8:]  # ... and sent back


def test_start_up_moves_what_is_loaded_out_of_the_collectors_reach(
    tmp_path: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    # a full collection would otherwise walk every library object and loaded model again
    # (150-250 ms with scikit-learn loaded), stalling whichever request is running
    import gc
    import warnings

    import persistkit
    from persistkit.server import ModelRepository, create_app

    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="Using `httpx` with `starlette.testclient`")
        from starlette.testclient import TestClient

    monkeypatch.setenv("PERSISTKIT_HOME", str(tmp_path / "home"))
    persistkit.Store(tmp_path / "store").save(
        ThreadRecorder(0.0), "recorder", example=np.ones((1, 2)), backend="pickle"
    )
    gc.unfreeze()
    try:
        app = create_app(ModelRepository(["recorder"], store=str(tmp_path / "store")))
        assert gc.get_freeze_count() == 0
        with TestClient(app):
            assert gc.get_freeze_count() > 0
    finally:
        gc.unfreeze()
