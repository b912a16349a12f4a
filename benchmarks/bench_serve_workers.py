"""Memory of `persistkit serve --workers N` on a large memory-mappable model.

  .venv/bin/python benchmarks/bench_serve_workers.py             # 4 workers, 200 MB, 2 rounds
  .venv/bin/python benchmarks/bench_serve_workers.py --workers 2 --size-mb 50 --rounds 1

Saves a ~200 MB torch MLP (five 3200x3200 linear layers, float32) with the safetensors backend
into a temporary store, then, in interleaved rounds, serves it with ``--workers N`` two ways:

* ``supervisor loads`` (what `persistkit serve` did before): the supervisor process loads
  every model itself to check it, and keeps it (a launcher loads the repository, then runs
  the same CLI in that process);
* ``throwaway check`` (now): the check loads in a throwaway process.

After start-up it sends requests from 8 clients until every worker has answered (so each has
touched all its weights), then reads /proc/PID/smaps_rollup (Rss, Pss) of every process of
the server and, from /proc/PID/smaps, the Rss and Pss of the weights file's mapping. One copy
of the weights shared by all workers shows as a weights PSS total of about the file's size,
while the weights RSS total is N times that. Figures are MiB.
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import subprocess
import sys
import tempfile
import textwrap
import time
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

MODEL_CODE = textwrap.dedent(
    """
    from torch import nn

    class BigMLP(nn.Module):
        def __init__(self, width: int = 3200, depth: int = 5) -> None:
            super().__init__()
            self.width, self.depth = width, depth
            self.layers = nn.Sequential(*[nn.Linear(width, width) for _ in range(depth)])

        def forward(self, x):
            return self.layers(x)
    """
)
#: the old behaviour, reproduced: load in the supervisor and keep the repository alive
SUPERVISOR_LOADS = (
    "import sys; sys.path.append(sys.argv[1]); "
    "from persistkit.server.repository import ModelRepository; "
    "kept = ModelRepository(['big'], store=sys.argv[2], trusted=True); kept.load(); "
    "from persistkit.cli import main; sys.argv = ['persistkit', *sys.argv[3:]]; main()"
)
MODES = ("supervisor loads", "throwaway check")


def build(folder: Path, size_mb: int) -> tuple[Path, int]:
    """Save the MLP (about ``size_mb`` MB) as ``big`` in ``folder/store``; return the store
    and the width (3200 for 200 MB)."""
    import numpy as np

    import persistkit

    (folder / "bench_mlp.py").write_text(MODEL_CODE)
    sys.path.append(str(folder))
    from bench_mlp import BigMLP  # type: ignore[import-not-found]

    width = int((size_mb * 1e6 / 4 / 5) ** 0.5)
    model = BigMLP(width=width).eval()
    example = np.zeros((2, width), dtype=np.float32)
    persistkit.save(model, "big", store=folder / "store", backend="safetensors", example=example)
    return folder / "store", width


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


@contextmanager
def server(mode: str, folder: Path, store: Path, workers: int) -> Iterator[tuple[int, int]]:
    """Run the server in ``mode``; yield (its pid, its port) once it is ready."""
    port = free_port()
    args = ["serve", "big", "--store", str(store), "--workers", str(workers), "--trust",
            "--app-dir", str(folder), "--port", str(port), "--log-level", "warning"]  # fmt: skip
    if mode == "supervisor loads":
        command = [sys.executable, "-c", SUPERVISOR_LOADS, str(folder), str(store), *args]
    else:
        command = [sys.executable, "-c", "from persistkit.cli import main; main()", *args]
    process = subprocess.Popen(command, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 300
        while not ready(port):
            if process.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"the server ({mode}) did not start")
            time.sleep(0.2)
        yield process.pid, port
    finally:
        process.terminate()
        process.wait(timeout=60)


def ready(port: int) -> bool:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/v2/health/ready", timeout=2) as r:
            return bool(r.status == 200)
    except OSError:
        return False


def tree(pid: int) -> list[int]:
    """``pid`` and all its descendants."""
    found, index = [pid], 0
    while index < len(found):
        current = found[index]
        try:
            children = Path(f"/proc/{current}/task/{current}/children").read_text().split()
        except OSError:
            children = []
        found += [int(c) for c in children]
        index += 1
    return found


def rollup(pid: int) -> dict[str, float]:
    """Rss and Pss of one process, MiB."""
    values = {}
    for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines()[1:]:
        key, value = line.split()[:2]
        if key in ("Rss:", "Pss:"):
            values[key[:-1]] = int(value) / 1024
    return values


def weights(pid: int) -> dict[str, float]:
    """Rss and Pss of the process's mappings of a .safetensors file, MiB."""
    values = {"Rss": 0.0, "Pss": 0.0}
    inside = False
    for line in Path(f"/proc/{pid}/smaps").read_text().splitlines():
        first = line.split(maxsplit=1)[0]
        if "-" in first and not first.endswith(":"):  # a mapping's header line
            inside = line.rstrip().endswith(".safetensors")
        elif inside and first in ("Rss:", "Pss:"):
            values[first[:-1]] += int(line.split()[1]) / 1024
    return values


def maps_weights(pid: int) -> bool:
    return ".safetensors" in Path(f"/proc/{pid}/maps").read_text()


def touch_every_worker(port: int, width: int, workers: list[int], size: float) -> int:
    """Send requests from 8 clients until every worker has mapped in (touched) 95% of the
    weights file of ``size`` MiB; returns the number of requests sent."""
    from concurrent.futures import ThreadPoolExecutor

    import numpy as np

    data = np.random.default_rng(0).random(4 * width).round(3).tolist()
    body = json.dumps(
        {"inputs": [{"name": "input-0", "shape": [4, width], "datatype": "FP32", "data": data}]}
    ).encode()

    def one(_: int) -> int:
        request = urllib.request.Request(f"http://127.0.0.1:{port}/v2/models/big/infer", body)
        with urllib.request.urlopen(request, timeout=120) as response:
            return int(response.status)

    sent, deadline = 0, time.monotonic() + 300
    with ThreadPoolExecutor(8) as pool:
        while min(weights(p)["Rss"] for p in workers) < 0.95 * size:
            if time.monotonic() > deadline:
                raise RuntimeError("some worker never answered")
            assert set(pool.map(one, range(16))) == {200}
            sent += 16
    return sent


def measure(
    mode: str, folder: Path, store: Path, width: int, workers: int, size: float
) -> dict[str, object]:
    with server(mode, folder, store, workers) as (pid, port):
        deadline = time.monotonic() + 300
        while True:  # ready answers once one worker has loaded: wait for all of them
            processes = tree(pid)
            serving = [p for p in processes if p != pid and maps_weights(p)]
            if len(serving) == workers:
                break
            if time.monotonic() > deadline:
                raise RuntimeError(f"{len(serving)} of {workers} workers loaded the model")
            time.sleep(0.5)
        sent = touch_every_worker(port, width, serving, size)
        rows = {p: {**rollup(p), **{f"weights_{k}": v for k, v in weights(p).items()}}
                for p in processes}  # fmt: skip
    total = {key: sum(row[key] for row in rows.values()) for key in next(iter(rows.values()))}
    return {"mode": mode, "requests": sent, "supervisor": rows[pid], "total": total,
            "processes": len(rows)}  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workers", type=int, default=4)
    parser.add_argument("--size-mb", type=int, default=200)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--json", action="store_true", help="print the results as JSON")
    options = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="bench-serve-workers-") as tmp:
        folder = Path(tmp)
        os.environ["PERSISTKIT_HOME"] = str(folder / "home")
        store, width = build(folder, options.size_mb)
        size = sum(p.stat().st_size for p in store.rglob("*.safetensors")) / 2**20
        results = [
            measure(mode, folder, store, width, options.workers, size)
            for _ in range(options.rounds)
            for mode in MODES
        ]
    if options.json:
        print(json.dumps({"weights_file_mib": size, "results": results}, indent=1))
        return
    print(f"weights file {size:.0f} MiB, --workers {options.workers}; MiB, all processes")
    print(f"{'mode':<18}{'RSS':>8}{'PSS':>8}{'weights RSS':>13}{'weights PSS':>13}"
          f"{'supervisor RSS':>16}{'supervisor PSS':>16}")  # fmt: skip
    for result in results:
        total, supervisor = result["total"], result["supervisor"]
        assert isinstance(total, dict) and isinstance(supervisor, dict)
        print(f"{result['mode']:<18}{total['Rss']:>8.0f}{total['Pss']:>8.0f}"
              f"{total['weights_Rss']:>13.0f}{total['weights_Pss']:>13.0f}"
              f"{supervisor['Rss']:>16.0f}{supervisor['Pss']:>16.0f}")  # fmt: skip


if __name__ == "__main__":
    main()
