"""`persistkit serve` answers Prometheus scrapes at /metrics and carries request ids: scraped
with prometheus_client's own text parser from a real uvicorn server."""

from __future__ import annotations

import logging
import sys
import time
import warnings
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import numpy as np
import pytest
from prometheus_client.parser import text_string_to_metric_families

import persistkit
from persistkit.server import ModelRepository, create_app, metrics
from serve_helpers import RunningServer, digits, running_server, train_digits_model

with warnings.catch_warnings():  # starlette now prefers httpx2; httpx works the same here
    warnings.filterwarnings("ignore", message="Using `httpx` with `starlette.testclient`")
    from starlette.testclient import TestClient


@dataclass
class Served:
    server: RunningServer
    rows: np.ndarray


def _fails(x: np.ndarray) -> np.ndarray:
    if len(x) > 1:  # the one-row example at save works
        raise RuntimeError("this model fails on every batch of two rows or more")
    return np.zeros(len(x))


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Served]:
    """digits:1 (a classifier) and broken:1 (raises on every request: they send 2 rows)."""
    data = digits()
    store_dir = tmp_path_factory.mktemp("metrics-store")
    with pytest.MonkeyPatch.context() as env:
        env.setenv("PERSISTKIT_HOME", str(tmp_path_factory.mktemp("metrics-home")))
        store = persistkit.Store(store_dir)
        store.save(train_digits_model(data), "digits", example=data.rows[:3])
        store.save(_fails, "broken", example=data.rows[:1], backend="cloudpickle")
        repository = ModelRepository(["digits", "broken"], store=str(store_dir), trusted=True)
        with running_server(create_app(repository)) as server:
            yield Served(server, data.rows)


def scrape(served: Served) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """Every sample of /metrics as {(sample name, sorted labels): value}."""
    response = httpx.get(f"{served.server.url}/metrics")
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/plain")
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(response.text)
        for sample in family.samples
    }


def infer(served: Served, model: str, rows: int = 2, **headers: str) -> httpx.Response:
    body = {
        "inputs": [
            {
                "name": "input-0",
                "shape": [rows, 64],
                "datatype": "FP64",
                "data": served.rows[:rows].ravel().tolist(),
            }
        ]
    }
    return httpx.post(f"{served.server.url}/v2/models/{model}/infer", json=body, headers=headers)


def labels(**values: str) -> tuple[tuple[str, str], ...]:
    return tuple(sorted(values.items()))


def test_requests_are_counted_by_model_endpoint_and_code(served: Served) -> None:
    key = ("persistkit_requests_total", labels(model="digits", endpoint="infer", code="200"))
    before = scrape(served).get(key, 0.0)
    for _ in range(3):
        assert infer(served, "digits").status_code == 200
    assert scrape(served)[key] == before + 3


def test_errors_are_counted_by_code(served: Served) -> None:
    bad = ("persistkit_request_errors_total", labels(model="digits", endpoint="infer", code="400"))
    failed = (
        "persistkit_request_errors_total",
        labels(model="broken", endpoint="infer", code="500"),
    )
    before = scrape(served)
    wrong = httpx.post(f"{served.server.url}/v2/models/digits/infer", content=b"{not json")
    assert wrong.status_code == 400
    assert infer(served, "broken").status_code == 500
    after = scrape(served)
    assert after[bad] == before.get(bad, 0.0) + 1
    assert after[failed] == before.get(failed, 0.0) + 1


def test_a_name_not_served_is_never_a_label_value(served: Served) -> None:
    assert infer(served, "made-up-name").status_code == 404
    names = {dict(key[1]).get("model") for key in scrape(served)}
    assert "made-up-name" not in names
    assert "" in names  # counted, under the empty model label


def test_latency_histogram_counts_each_request(served: Served) -> None:
    count = ("persistkit_request_duration_seconds_count", labels(model="digits", endpoint="infer"))
    fast = (
        "persistkit_request_duration_seconds_bucket",
        labels(model="digits", endpoint="infer", le="10.0"),
    )
    before = scrape(served).get(count, 0.0)
    infer(served, "digits")
    after = scrape(served)
    assert after[count] == before + 1
    assert after[fast] == after[count]  # every request took less than 10 s


def test_batch_sizes_are_a_histogram(served: Served) -> None:
    count = ("persistkit_batch_size_count", labels(model="digits"))
    total = ("persistkit_batch_size_sum", labels(model="digits"))
    before = scrape(served)
    metrics.observe_batch("digits", 64)
    after = scrape(served)
    assert after[count] == before.get(count, 0.0) + 1
    assert after[total] == before.get(total, 0.0) + 64


def test_load_time_and_loaded_models_are_reported(served: Served) -> None:
    samples = scrape(served)
    assert samples[("persistkit_model_load_seconds_count", labels(model="digits"))] >= 1
    assert samples[("persistkit_models_loaded", labels(model="digits"))] == 1
    assert samples[("persistkit_models_loaded", labels(model="broken"))] == 1


def test_request_id_is_echoed(served: Served) -> None:
    response = infer(served, "digits", **{"X-Request-Id": "abc-123"})
    assert response.headers["x-request-id"] == "abc-123"


def test_request_id_is_made_when_absent_or_unsafe(served: Served) -> None:
    made = httpx.get(f"{served.server.url}/v2/health/live").headers["x-request-id"]
    assert len(made) == 32 and int(made, 16) >= 0
    unsafe = httpx.get(
        f"{served.server.url}/v2/health/live", headers={"X-Request-Id": "a b\tc" + "x" * 200}
    )
    assert unsafe.headers["x-request-id"] != "a b\tc" + "x" * 200
    assert len(unsafe.headers["x-request-id"]) == 32


def test_a_failing_model_answers_and_logs_with_the_request_id(
    served: Served, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.INFO, logger="persistkit.server"):
        response = infer(served, "broken", **{"X-Request-Id": "failing-request-7"})
        assert response.status_code == 500
        assert response.headers["x-request-id"] == "failing-request-7"
        errors = [r for r in caplog.records if r.levelno >= logging.ERROR]
        assert errors and all("failing-request-7" in r.getMessage() for r in errors)
        # the access line is written once the response has gone out: the client can be first
        deadline = time.monotonic() + 10
        while not access_lines(caplog, "failing-request-7") and time.monotonic() < deadline:
            time.sleep(0.01)
    assert any(" 500 " in line for line in access_lines(caplog, "failing-request-7"))


def access_lines(caplog: pytest.LogCaptureFixture, request_id: str) -> list[str]:
    """The access log lines captured so far that carry ``request_id``."""
    lines = [r.getMessage() for r in caplog.records if r.name == "persistkit.server.access"]
    return [line for line in lines if request_id in line]


def test_without_prometheus_client_metrics_answer_501_with_the_install_line(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setitem(sys.modules, "prometheus_client", None)  # import now fails
    metrics.available.cache_clear()
    metrics.instruments.cache_clear()
    try:
        client = TestClient(create_app(ModelRepository(["anything"], store=str(tmp_path))))
        response = client.get("/metrics")
        metrics.observe_batch("digits", 3)  # a no-op, never an error
    finally:
        monkeypatch.undo()
        metrics.available.cache_clear()
        metrics.instruments.cache_clear()
    assert response.status_code == 501
    assert 'pip install "persistkit[serve]"' in response.json()["error"]
