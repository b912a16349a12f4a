"""Hostile requests to the serving extensions (repository, metrics, request ids, the JSON
fast path), against a real uvicorn server: each gets a clear 4xx in the OIP error body and
leaves nothing behind (no log line split by a client, no metric label or index row per
made-up name)."""

from __future__ import annotations

import json
import logging
import socket
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import numpy as np
import pytest

import persistkit
from persistkit.server import ModelRepository, codec, create_app
from serve_helpers import RunningServer, digits, running_server

ROW = [0.0] * 64


def _zeros(x: np.ndarray) -> np.ndarray:
    return np.zeros(len(x), dtype=np.int64)


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningServer]:
    """`persistkit serve reviewed` over a store holding reviewed:1 and extra:1."""
    data = digits()
    folder = tmp_path_factory.mktemp("review-store")
    with pytest.MonkeyPatch.context() as env:
        env.setenv("PERSISTKIT_HOME", str(tmp_path_factory.mktemp("review-home")))
        store = persistkit.Store(folder)
        store.save(_zeros, "reviewed", example=data.rows[:3], backend="pickle")
        store.save(_zeros, "extra", example=data.rows[:3], backend="pickle")
        repository = ModelRepository(["reviewed"], store=str(folder), trusted=True)
        with running_server(create_app(repository)) as running:
            yield running


def _nested(depth: int) -> bytes:
    return b"[" * depth + b"]" * depth


@pytest.mark.parametrize(
    ("path", "body"),
    [
        ("/v2/repository/index", _nested(20_000)),
        ("/v2/repository/models/extra/load", _nested(20_000)),
        ("/v2/repository/models/extra/unload", b'{"parameters": ' + _nested(20_000) + b"}"),
        (
            "/v2/repository/models/extra/load",
            json.dumps({"parameters": {"config": "[" * 5000 + "]" * 5000}}).encode(),
        ),
    ],
    ids=["index", "load", "unload", "load-config"],
)
def test_deeply_nested_json_to_the_repository_is_400_not_500(
    server: RunningServer, path: str, body: bytes
) -> None:
    response = httpx.post(server.url + path, content=body)
    assert response.status_code == 400, response.text
    assert "not valid JSON" in response.json()["error"]


def _metric_lines(server: RunningServer, word: str) -> list[str]:
    text = httpx.get(server.url + "/metrics").text
    return [line for line in text.splitlines() if word in line and not line.startswith("#")]


def test_made_up_repository_urls_add_no_endpoint_label(server: RunningServer) -> None:
    for index in range(3):
        response = httpx.get(f"{server.url}/v2/repository/models/reviewed/made-up-{index}")
        assert response.status_code == 404
    assert _metric_lines(server, "made-up") == []
    assert _metric_lines(server, 'persistkit_requests_total{code="404",endpoint="other"')


def test_loading_a_name_the_store_lacks_leaves_no_row_or_label(server: RunningServer) -> None:
    for index in range(3):
        response = httpx.post(f"{server.url}/v2/repository/models/nosuch-{index}/load")
        assert response.status_code == 404
        assert "no model named" in response.json()["error"]
    index = httpx.get(server.url + "/v2/repository/index").json()
    assert [row for row in index if row["name"].startswith("nosuch")] == []
    assert _metric_lines(server, "nosuch") == []


def test_unloading_made_up_names_keeps_nothing_per_name(server: RunningServer) -> None:
    repository = server.app.state.repository
    before = len(repository._name_locks)  # one lock per name loaded or unloaded
    for index in range(3):
        response = httpx.post(f"{server.url}/v2/repository/models/{'x' * 4000}{index}/unload")
        assert response.status_code == 404
        assert "cannot be unloaded" in response.json()["error"]
    assert len(repository._name_locks) == before


def _access_lines(caplog: pytest.LogCaptureFixture, marker: str) -> list[str]:
    lines = [r.getMessage() for r in caplog.records if r.name.startswith("persistkit.server")]
    return [line for line in lines if marker in line]


def test_a_client_cannot_split_log_lines_with_encoded_newlines(
    server: RunningServer, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.INFO, logger="persistkit.server"):
        response = httpx.post(
            f"{server.url}/v2/models/a%0D%0A127.0.0.1%20FORGED%0Ab/infer",
            content=b"{}",
            headers={"x-request-id": "newline-probe"},
        )
        assert response.status_code == 404
        deadline = time.monotonic() + 5  # the access line follows the response
        while not _access_lines(caplog, "newline-probe") and time.monotonic() < deadline:
            time.sleep(0.02)
    lines = _access_lines(caplog, "newline-probe")
    assert lines, "no access line"
    assert all("\n" not in line and "\r" not in line for line in lines), lines
    assert any("\\n" in line for line in lines)  # shown escaped, not dropped


@pytest.mark.parametrize(
    ("path", "endpoint"),
    [
        ("/v2/models/reviewed/infer", "infer"),
        ("/v2/repository/models/reviewed/load", "repository_load"),
    ],
)
def test_a_client_gone_before_its_body_arrived_is_no_server_error(
    server: RunningServer, caplog: pytest.LogCaptureFixture, path: str, endpoint: str
) -> None:
    host, port = server.host_port.split(":")
    with caplog.at_level(logging.INFO, logger="persistkit.server"):
        with socket.create_connection((host, int(port))) as client:
            head = f"POST {path} HTTP/1.1\r\nHost: x\r\nContent-Length: 1000\r\n"
            client.sendall(f"{head}X-Request-Id: gone-{endpoint}\r\n\r\n{{".encode())
            time.sleep(0.2)
        deadline = time.monotonic() + 5
        while not _access_lines(caplog, f"gone-{endpoint}") and time.monotonic() < deadline:
            time.sleep(0.02)
    assert [r for r in caplog.records if r.levelno >= logging.ERROR] == []
    assert " 499 " in _access_lines(caplog, f"gone-{endpoint}")[0]
    labels = f'endpoint="{endpoint}",model="reviewed"'
    assert _metric_lines(server, f'requests_total{{code="500",{labels}}}') == []
    assert _metric_lines(server, f'requests_total{{code="499",{labels}}}')


def _infer_body(request_id: str) -> bytes:
    inputs = [{"name": "input-0", "datatype": "FP64", "shape": [1, 64], "data": ROW}]
    return json.dumps({"id": request_id, "inputs": inputs}).encode()


def test_a_request_id_with_a_lone_surrogate_is_echoed_on_both_json_paths(
    server: RunningServer,
) -> None:
    body = _infer_body("\ud800")  # json.dumps writes it as the escape \ud800
    answers = {}
    try:
        for backend in ("json", "orjson"):
            codec.use(backend)
            response = httpx.post(server.url + "/v2/models/reviewed/infer", content=body)
            answers[backend] = (response.status_code, response.text)
    finally:
        codec.use(None)
    assert answers["json"][0] == 200
    assert answers["orjson"] == answers["json"]


def _parsed_both_ways(body: bytes) -> dict[str, tuple[str, str]]:
    """``(outcome, text)`` of parsing ``body`` and writing its inputs back as outputs, with
    the standard library and with orjson: the fast path must not change an answer."""
    from persistkit.errors import InputError
    from persistkit.server.protocol import build_outputs_response, parse_infer_request

    outcomes = {}
    try:
        for backend in ("json", "orjson"):
            codec.use(backend)
            try:
                parsed = parse_infer_request(bytearray(body), None)
                response = build_outputs_response(
                    model_name="m", model_version="1", request_id=parsed.id,
                    outputs=list(parsed.inputs.items()), binary=False,
                )  # fmt: skip
                outcomes[backend] = ("answered", response.body.decode())
            except InputError as exc:
                outcomes[backend] = ("refused", exc.message)
    finally:
        codec.use(None)
    return outcomes


def test_an_integer_past_64_bits_in_fp64_data_gets_one_answer_on_both_paths() -> None:
    inputs = [{"name": "x", "datatype": "FP64", "shape": [2], "data": [2**64, 1]}]
    outcomes = _parsed_both_ways(json.dumps({"inputs": inputs}).encode())
    assert outcomes["orjson"] == outcomes["json"]


def test_lone_surrogates_in_names_and_text_get_one_answer_on_both_paths() -> None:
    inputs = [{"name": "\ud800", "datatype": "BYTES", "shape": [1], "data": ["\udfff"]}]
    outcomes = _parsed_both_ways(json.dumps({"inputs": inputs}).encode())
    assert outcomes["json"][0] == "answered"
    assert outcomes["orjson"] == outcomes["json"]


def test_a_bytes_tensor_of_far_more_elements_than_its_shape_is_refused_at_once() -> None:
    from persistkit.errors import InputError
    from persistkit.server.protocol import parse_infer_request

    payload = bytes(8 * 1024 * 1024)  # 2 million empty BYTES elements
    size = {"binary_data_size": len(payload)}
    inputs = [{"name": "x", "datatype": "BYTES", "shape": [1], "parameters": size}]
    header = json.dumps({"inputs": inputs}).encode()
    began = time.perf_counter()
    with pytest.raises(InputError, match="has shape"):
        parse_infer_request(bytearray(header + payload), str(len(header)))
    assert time.perf_counter() - began < 0.5


def test_a_version_that_failed_to_load_once_is_tried_again_later(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("PERSISTKIT_HOME", str(tmp_path / "home"))
    store = persistkit.Store(tmp_path / "store")
    rows = np.zeros((2, 64))
    store.save(_zeros, "m", example=rows, backend="pickle")
    second = store.save(_zeros, "m", example=rows, backend="pickle")
    store.alias("m:1", "prod")
    repository = ModelRepository(["m@prod"], store=str(tmp_path / "store"), trusted=True)
    repository.load()
    payload = next(p for p in second.path.iterdir() if p.suffix == ".pkl")
    saved = payload.read_bytes()
    payload.write_bytes(saved[:-1] + b"!")  # the store fails for a moment
    store.alias("m:2", "prod")
    repository.follow_once()
    assert repository.get("m").version == 1  # the old one keeps answering
    payload.write_bytes(saved)  # and answers again
    repository.follow_once()
    assert repository.get("m").version == 1  # not retried at every interval
    repository.retry_failed_s = 0.0  # as if a minute had gone by
    repository.follow_once()
    assert repository.get("m").version == 2


def test_a_log_call_with_wrong_arguments_does_not_raise_from_the_request_id_filter() -> None:
    from persistkit.server.observer import RequestIdFilter

    record = logging.LogRecord("persistkit.server", logging.ERROR, __file__, 1,
                               "%s and %s", ("only one",), None)  # fmt: skip
    assert RequestIdFilter().filter(record)  # logging's handler reports the bad call
