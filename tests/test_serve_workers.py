"""`persistkit serve --workers N`: the workers share one copy of memory-mapped weights, the
supervisor keeps no model, metrics add up over the workers, runtime loads are refused."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import numpy as np
import pytest
from prometheus_client.parser import text_string_to_metric_families

import persistkit
from serve_helpers import free_port, serve_command, serving_process

torch = pytest.importorskip("torch")
pytest.importorskip("safetensors")
pytestmark = pytest.mark.torch

WIDTH = 1024  # one 1024x1024 float32 layer: 4 MiB of weights
MODEL_CODE = textwrap.dedent(
    """
    from torch import nn

    class Wide(nn.Module):
        def __init__(self, width: int = 1024) -> None:
            super().__init__()
            self.width = width
            self.layer = nn.Linear(width, width)

        def forward(self, x):
            return self.layer(x)
    """
)


@dataclass
class Served:
    url: str
    supervisor: int
    weights: Path


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Served]:
    folder = tmp_path_factory.mktemp("workers")
    (folder / "wide_model.py").write_text(MODEL_CODE)
    env = {**os.environ, "PERSISTKIT_HOME": str(folder / "home")}
    env.pop("PROMETHEUS_MULTIPROC_DIR", None)
    sys.path.append(str(folder))
    try:
        from wide_model import Wide  # type: ignore[import-not-found]

        with pytest.MonkeyPatch.context() as patch:
            patch.setenv("PERSISTKIT_HOME", str(folder / "home"))
            example = np.zeros((2, WIDTH), np.float32)
            art = persistkit.save(Wide(WIDTH).eval(), "wide", store=folder / "store",
                                  backend="safetensors", example=example)  # fmt: skip
    finally:
        sys.path.remove(str(folder))
    weights = next(art.path.glob("*.safetensors"))
    port = free_port()
    args = ["wide", "--workers", "2", "--store", str(folder / "store"), "--trust",
            "--app-dir", str(folder), "--port", str(port)]  # fmt: skip
    with serving_process(args, port, env) as process:
        yield Served(f"http://127.0.0.1:{port}", process.pid, weights)


def children(pid: int) -> list[int]:
    found, index = [pid], 0
    while index < len(found):
        path = Path(f"/proc/{found[index]}/task/{found[index]}/children")
        found += [int(c) for c in path.read_text().split()] if path.exists() else []
        index += 1
    return found[1:]


def mapped(pid: int, suffix: str) -> dict[str, int]:
    """Rss and Pss (kB) of the process's mappings of files whose name ends with ``suffix``."""
    totals = {"Rss": 0, "Pss": 0}
    inside = False
    for line in Path(f"/proc/{pid}/smaps").read_text().splitlines():
        first = line.split(maxsplit=1)[0]
        if "-" in first and not first.endswith(":"):
            inside = line.rstrip().endswith(suffix)
        elif inside and first[:-1] in totals:
            totals[first[:-1]] += int(line.split()[1])
    return totals


def infer(url: str) -> int:
    body = {"inputs": [{"name": "input-0", "shape": [1, WIDTH], "datatype": "FP32",
                        "data": [0.5] * WIDTH}]}  # fmt: skip
    return httpx.post(f"{url}/v2/models/wide/infer", json=body, timeout=60).status_code


def workers_of(served: Served) -> list[int]:
    """The two workers, once both have loaded the model (ready answers after the first)."""
    deadline = time.monotonic() + 60
    while True:
        found = [p for p in children(served.supervisor)
                 if served.weights.name in Path(f"/proc/{p}/maps").read_text()]  # fmt: skip
        if len(found) == 2:
            return found
        assert time.monotonic() < deadline, f"{len(found)} of 2 workers loaded the model"
        time.sleep(0.2)


def test_the_workers_share_one_copy_of_the_weights(served: Served) -> None:
    size_kb = served.weights.stat().st_size // 1024
    workers = workers_of(served)
    deadline = time.monotonic() + 60
    while min(mapped(p, served.weights.name)["Rss"] for p in workers) < 0.9 * size_kb:
        assert time.monotonic() < deadline, "a worker never answered"
        assert infer(served.url) == 200
    rss = sum(mapped(p, served.weights.name)["Rss"] for p in workers)
    pss = sum(mapped(p, served.weights.name)["Pss"] for p in workers)
    assert rss >= 1.8 * size_kb  # each worker has all the weights in its address space...
    assert pss <= 1.1 * size_kb  # ...and together they hold one copy (the page cache's)


def test_the_supervisor_keeps_no_model(served: Served) -> None:
    maps = Path(f"/proc/{served.supervisor}/maps").read_text()
    assert served.weights.name not in maps
    assert "libtorch" not in maps  # torch was never imported there


def test_metrics_add_up_over_the_workers(served: Served) -> None:
    def infer_count() -> float:
        text = httpx.get(f"{served.url}/metrics").text
        return sum(
            sample.value
            for family in text_string_to_metric_families(text)
            for sample in family.samples
            if sample.name == "persistkit_requests_total"
            and sample.labels == {"model": "wide", "endpoint": "infer", "code": "200"}
        )

    before = infer_count()
    for _ in range(12):
        assert infer(served.url) == 200
    assert infer_count() == before + 12  # from whichever worker answers the scrape
    families = text_string_to_metric_families(httpx.get(f"{served.url}/metrics").text)
    loaded = {s.value for f in families for s in f.samples if s.name == "persistkit_models_loaded"}
    assert loaded == {1.0}


def test_runtime_loads_are_refused_with_several_workers(served: Served) -> None:
    response = httpx.post(f"{served.url}/v2/repository/models/wide/load")
    assert response.status_code == 409
    assert "--workers 1" in json.loads(response.text)["error"]


def test_a_bad_ref_fails_in_one_line_before_any_worker_starts(tmp_path: Path) -> None:
    env = {**os.environ, "PERSISTKIT_HOME": str(tmp_path / "home")}
    command = serve_command("nothing-here", "--workers", "2", "--store", str(tmp_path),
                            "--port", str(free_port()))  # fmt: skip
    result = subprocess.run(command, env=env, capture_output=True, text=True, timeout=120)
    assert result.returncode == 1
    assert "no model named 'nothing-here'" in result.stderr
    assert "Traceback" not in result.stderr
