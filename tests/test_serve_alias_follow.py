"""`persistkit serve m@prod` follows the alias: another process moves it in the store, the
server loads the new version, then answers from it; a version that fails to load leaves the
old one answering; --pin keeps the start-up version."""

from __future__ import annotations

import logging
import os
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
from prometheus_client.parser import text_string_to_metric_families

import persistkit
from persistkit.server import ModelRepository, create_app
from serve_helpers import free_port, running_server, serving_process

INTERVAL = 0.2  # seconds between looks at the store
ROWS = np.zeros((2, 3))


def answers_one(x: np.ndarray) -> np.ndarray:
    return np.ones(len(x))


def answers_two(x: np.ndarray) -> np.ndarray:
    return np.full(len(x), 2.0)


def answers_slowly(x: np.ndarray) -> np.ndarray:
    time.sleep(1.0)
    return np.full(len(x), 3.0)


class SlowToLoad:
    """Answers 4; unpickling it takes a second (a big model's load, in small)."""

    def __init__(self) -> None:
        self.answer = 4.0  # state, so unpickling calls __setstate__

    def __call__(self, x: np.ndarray) -> np.ndarray:
        return np.full(len(x), self.answer)

    def __setstate__(self, state: dict[str, Any]) -> None:
        time.sleep(1.0)
        self.__dict__.update(state)


@dataclass
class Store:
    folder: Path
    env: dict[str, str]

    def move(self, ref: str, alias: str = "prod") -> None:
        """Point ``alias`` at ``ref`` from another process, as an operator would."""
        code = "import sys, persistkit; persistkit.Store(sys.argv[1]).alias(*sys.argv[2:])"
        subprocess.run(
            [sys.executable, "-c", code, str(self.folder), ref, alias], env=self.env, check=True
        )


@pytest.fixture
def store(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Store:
    """m:1 answers 1 (= m@prod), m:2 answers 2, m:3 is damaged (its payload changed after
    saving), m:4 answers 3 after a second, m:5 answers 4 and takes a second to load."""
    monkeypatch.setenv("PERSISTKIT_HOME", str(tmp_path / "home"))
    folder = tmp_path / "store"
    saved = persistkit.Store(folder)
    saved.save(answers_one, "m", example=ROWS, backend="cloudpickle")
    saved.save(answers_two, "m", example=ROWS, backend="cloudpickle")
    damaged = saved.save(answers_two, "m", example=ROWS, backend="cloudpickle")
    payload = next(p for p in damaged.path.iterdir() if p.name != "persistkit.json"
                   and not p.name.startswith("example"))  # fmt: skip
    payload.write_bytes(payload.read_bytes() + b"\0")
    saved.save(answers_slowly, "m", example=ROWS, backend="cloudpickle")
    saved.save(SlowToLoad(), "m", example=ROWS, backend="cloudpickle")
    saved.alias("m:1", "prod")
    env = {**os.environ, "PERSISTKIT_HOME": str(tmp_path / "home")}
    return Store(folder, env)


@pytest.fixture
def url(store: Store) -> Iterator[str]:
    repository = ModelRepository(["m@prod"], store=str(store.folder), trusted=True)
    with running_server(create_app(repository, follow_interval=INTERVAL)) as server:
        yield server.url


def cli_args(store: Store, port: int, *args: str) -> list[str]:
    """``persistkit serve ARGS`` on ``store`` and ``port``, trusting this folder's code."""
    here = str(Path(__file__).parent)
    return [*args, "--port", str(port), "--store", str(store.folder), "--trust", "--app-dir", here]


def infer(url: str, timeout: float = 10.0) -> tuple[str, float]:
    """(model_version, first answer) of one request for m."""
    body = {"inputs": [{"name": "input-0", "shape": [2, 3], "datatype": "FP64", "data": [0] * 6}]}
    response = httpx.post(f"{url}/v2/models/m/infer", json=body, timeout=timeout)
    assert response.status_code == 200, response.text
    answer = response.json()
    return answer["model_version"], answer["outputs"][0]["data"][0]


def wait_for_version(url: str, version: str, within: float) -> float:
    """Seconds until m answers from ``version``; fails after ``within`` seconds."""
    began = time.monotonic()
    while time.monotonic() - began < within:
        if infer(url)[0] == version:
            return time.monotonic() - began
        time.sleep(0.02)
    raise AssertionError(f"m still answers from {infer(url)[0]} after {within} s")


def metric(url: str, name: str, **labels: str) -> float:
    text = httpx.get(f"{url}/metrics").text
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == name and sample.labels == labels:
                return sample.value
    return 0.0


def test_a_moved_alias_is_answered_from_within_the_interval(store: Store, url: str) -> None:
    assert infer(url) == ("1", 1.0)
    switches = metric(url, "persistkit_model_switches_total", model="m")
    store.move("m:2")
    wait_for_version(url, "2", within=INTERVAL * 5 + 2)  # interval + load + slack
    assert infer(url) == ("2", 2.0)
    metadata = httpx.get(f"{url}/v2/models/m").json()
    assert metadata["versions"] == ["2"]  # the old version is gone, not kept beside
    assert httpx.get(f"{url}/v2/models/m/versions/prod/ready").status_code == 200
    assert metric(url, "persistkit_model_switches_total", model="m") == switches + 1


def test_a_version_that_fails_to_load_leaves_the_old_one_answering(
    store: Store, url: str, caplog: pytest.LogCaptureFixture
) -> None:
    failures = metric(url, "persistkit_model_load_failures_total", model="m")
    with caplog.at_level(logging.ERROR, logger="persistkit.server"):
        store.move("m:3")
        deadline = time.monotonic() + 5
        while metric(url, "persistkit_model_load_failures_total", model="m") == failures:
            assert time.monotonic() < deadline, "the failed load was never counted"
            time.sleep(0.05)
        time.sleep(INTERVAL * 3)  # and it is not retried every interval
    assert infer(url) == ("1", 1.0)
    assert httpx.get(f"{url}/v2/health/ready").status_code == 200
    assert metric(url, "persistkit_model_load_failures_total", model="m") == failures + 1
    logged = [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR]
    assert any("m@prod moved to version 3, which failed to load" in line for line in logged)
    store.move("m:2")  # moving on to a good version still works
    wait_for_version(url, "2", within=INTERVAL * 5 + 2)


def test_requests_under_way_finish_on_the_old_version(store: Store, tmp_path: Path) -> None:
    store.move("m:4")  # answers 3, slowly
    repository = ModelRepository(["m@prod"], store=str(store.folder), trusted=True)
    with running_server(create_app(repository, follow_interval=INTERVAL)) as server:
        slow: list[tuple[str, float]] = []
        request = threading.Thread(target=lambda: slow.append(infer(server.url)))
        request.start()
        time.sleep(0.2)  # the request is inside predict now
        store.move("m:2")
        wait_for_version(server.url, "2", within=INTERVAL * 5 + 2)
        request.join()
        assert slow == [("4", 3.0)]  # answered by the version it started on, to the end


def test_no_answer_comes_from_a_version_still_loading(store: Store, url: str) -> None:
    store.move("m:5")  # loads for a second
    seen: list[tuple[str, float]] = []
    deadline = time.monotonic() + INTERVAL * 5 + 4
    while not seen or seen[-1][0] != "5":
        assert time.monotonic() < deadline, f"never switched: {seen[-3:]}"
        seen.append(infer(url))
    switch = next(i for i, (version, _) in enumerate(seen) if version == "5")
    assert set(seen[:switch]) == {("1", 1.0)}  # the old version answered throughout the load
    assert seen[switch:] == [("5", 4.0)]
    assert switch > 1  # requests were answered while it loaded


def test_serve_pin_keeps_the_start_up_version(store: Store, tmp_path: Path) -> None:
    answers = {}
    for pinned in (True, False):
        store.move("m:1")
        flags = ["--pin"] if pinned else []
        port = free_port()
        args = cli_args(store, port, "m@prod", "--follow-interval", "0.3", *flags)
        with serving_process(args, port, store.env):
            url = f"http://127.0.0.1:{port}"
            store.move("m:2")
            time.sleep(1.5)
            answers[pinned] = infer(url)
    assert answers == {True: ("1", 1.0), False: ("2", 2.0)}


def test_a_bare_name_follows_the_newest_version(store: Store) -> None:
    repository = ModelRepository(["m"], store=str(store.folder), trusted=True)
    with running_server(create_app(repository, follow_interval=INTERVAL)) as server:
        assert infer(server.url)[0] == "5"
        code = (
            "import sys, numpy, persistkit; persistkit.Store(sys.argv[1]).save(numpy.negative, 'm')"
        )
        subprocess.run([sys.executable, "-c", code, str(store.folder)], env=store.env, check=True)
        wait_for_version(server.url, "6", within=INTERVAL * 5 + 2)


def test_a_store_that_stops_answering_is_logged_once_and_the_model_keeps_answering(
    store: Store, url: str, caplog: pytest.LogCaptureFixture
) -> None:
    away = store.folder.with_name("away")
    with caplog.at_level(logging.INFO, logger="persistkit.server"):
        store.folder.rename(away)
        time.sleep(INTERVAL * 6)
        assert infer(url) == ("1", 1.0)
        away.rename(store.folder)
        time.sleep(INTERVAL * 3)
    lines = [r.getMessage() for r in caplog.records if r.name == "persistkit.server"]
    assert len([line for line in lines if "the store could not be read" in line]) == 1
    assert any("the store answers again" in line for line in lines)


def test_every_worker_follows(store: Store) -> None:
    port = free_port()
    args = cli_args(store, port, "m@prod", "--workers", "2", "--follow-interval", "0.3")
    with serving_process(args, port, store.env):
        url = f"http://127.0.0.1:{port}"
        store.move("m:2")
        deadline, streak = time.monotonic() + 30, 0
        while streak < 20:  # 20 answers in a row from version 2: from both workers
            assert time.monotonic() < deadline, "some worker still answers from version 1"
            streak = streak + 1 if infer(url) == ("2", 2.0) else 0
