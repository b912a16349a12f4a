"""How fast does `persistkit serve` answer: next to the model called in-process, next to
MLServer 1.7.1 (the reference Open Inference Protocol server), and with adaptive batching.

Three modes, each starting real servers as subprocesses on 127.0.0.1 and driving them with a
lean keep-alive load generator (benchmarks/loadgen.py: raw asyncio sockets, its own CPU use
reported, so a run shows the client was not the limit):

  .venv/bin/python benchmarks/bench_serve.py                    # in-process vs served, 1 row
  .venv/bin/python benchmarks/bench_serve.py --against mlserver # the four load shapes
  .venv/bin/python benchmarks/bench_serve.py --batching         # batching on/off, CNN + forest

``--against mlserver`` serves LogisticRegression trained on scikit-learn's digits (64 features)
from persistkit and from MLServer in its default mode (a worker pool) and with
``parallel_workers=0``, all three running at once, and measures 1-row and 64-row JSON requests
with 1 and 8 clients in interleaved rounds (every server once per shape per round). It prints
req/s, p50/p99 latency and the server's CPU per request (user + system time of the server
process and its children, from /proc) and persistkit's ratios to each MLServer mode. Both are
asked for the predicted class (persistkit names ``output-0``; MLServer's sklearn runtime
answers only ``predict`` anyway); ``--all-outputs`` lets persistkit answer ``label`` and
``scores`` too. persistkit runs with httptools when it is installed (the ``serve`` extra). MLServer
lives in its own virtual environment, created on first use under benchmarks/.mlserver-venv
(mlserver==1.7.1, mlserver-sklearn==1.7.1, uvloop==0.21.0: its worker pool fails on newer
uvloop; scikit-learn pinned to this environment's version so both load the same model).

``--batching`` serves a small torch CNN and a 200-tree random forest with batching off and
with ``--max-batch-size 32 --max-batch-delay-ms 2``, 1-row requests from 8 and 32 clients.

Every figure shares a 2-core machine with its client: read ratios, not absolutes.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).parent))
from loadgen import LoadResult, http_request, run_load, tree_cpu_seconds

HOST = "127.0.0.1"
MLSERVER_VENV = Path(__file__).parent / ".mlserver-venv"
MLSERVER_PACKAGES = ["mlserver==1.7.1", "mlserver-sklearn==1.7.1", "uvloop==0.21.0"]


# --- the models ----------------------------------------------------------------------------


def digits_rows() -> tuple[np.ndarray, np.ndarray]:
    """scikit-learn's digits as 0-1 float64 rows of 64 pixels, and their labels."""
    from sklearn.datasets import load_digits

    data = load_digits()
    pixels = np.round(data.images * 255 / 16).reshape(len(data.images), -1)
    return pixels.astype(np.float64) / 255, data.target


def logistic_regression(rows: np.ndarray, labels: np.ndarray) -> Any:
    from sklearn.linear_model import LogisticRegression

    return LogisticRegression(max_iter=300).fit(rows, labels)


def forest(rows: np.ndarray, labels: np.ndarray) -> Any:
    from sklearn.ensemble import RandomForestClassifier

    return RandomForestClassifier(n_estimators=200, random_state=0).fit(rows, labels)


def small_cnn() -> Any:
    """Two 3x3 convolutions and a linear head over 1x28x28 pictures (~0.1 M parameters)."""
    import torch
    from torch import nn

    torch.manual_seed(0)
    return nn.Sequential(
        nn.Conv2d(1, 16, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
        nn.Conv2d(16, 32, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
        nn.Flatten(), nn.Linear(32 * 7 * 7, 10),
    ).eval()  # fmt: skip


def mlp() -> Any:
    import torch

    torch.manual_seed(0)
    return torch.nn.Sequential(
        torch.nn.Linear(64, 32), torch.nn.ReLU(), torch.nn.Linear(32, 10)
    ).eval()


# --- servers -------------------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind((HOST, 0))
        return int(sock.getsockname()[1])


@dataclass
class Server:
    """A server subprocess: what it is called in the tables, its port and process."""

    label: str
    port: int
    process: subprocess.Popen[bytes]
    model_path: str  # /v2/models/NAME/infer
    log: Path

    def cpu_seconds(self) -> float:
        return tree_cpu_seconds(self.process.pid)


def wait_ready(server: Server, timeout: float = 180) -> Server:
    deadline = time.monotonic() + timeout
    url = f"http://{HOST}:{server.port}/v2/health/ready"
    while time.monotonic() < deadline:
        if server.process.poll() is not None:
            raise RuntimeError(f"{server.label} exited:\n{server.log.read_text()[-3000:]}")
        try:
            with urllib.request.urlopen(url, timeout=2) as response:
                if response.status == 200:
                    return server
        except OSError:
            pass
        time.sleep(0.2)
    raise RuntimeError(f"{server.label} did not become ready:\n{server.log.read_text()[-3000:]}")


def start_persistkit(
    label: str,
    refs: list[str],
    store: str,
    logs: Path,
    extra: Sequence[str] = (),
    env: dict[str, str] | None = None,
) -> Server:
    port = free_port()
    log = logs / f"{label.replace(' ', '_')}.log"
    command = [
        sys.executable, "-c", "from persistkit.cli import main; main()", "serve", *refs,
        "--store", store, "--port", str(port), "--log-level", "warning", *extra,
    ]  # fmt: skip
    with log.open("wb") as out:
        process = subprocess.Popen(
            command, stdout=out, stderr=subprocess.STDOUT, env={**os.environ, **(env or {})}
        )
    return Server(label, port, process, f"/v2/models/{refs[0]}/infer", log)


def mlserver_python() -> Path:
    """The MLServer environment's interpreter, creating the environment on first use."""
    python = MLSERVER_VENV / "bin" / "python"
    if not (MLSERVER_VENV / "bin" / "mlserver").exists():
        import sklearn

        print(f"creating {MLSERVER_VENV} (a few minutes, once)", file=sys.stderr)
        subprocess.run([sys.executable, "-m", "venv", str(MLSERVER_VENV)], check=True)
        subprocess.run(
            [str(python), "-m", "pip", "install", "-q", *MLSERVER_PACKAGES,
             f"scikit-learn=={sklearn.__version__}"],
            check=True,
        )  # fmt: skip
    return python


def httptools_for_mlserver() -> Path:
    """A folder holding httptools for the MLServer environment (kept out of the environment
    itself, so it stays as MLServer's own install makes it unless asked)."""
    folder = MLSERVER_VENV / "httptools-extra"
    if not (folder / "httptools").exists():
        python = mlserver_python()
        subprocess.run(
            [str(python), "-m", "pip", "install", "-q", "--target", str(folder), "httptools"],
            check=True,
        )
    return folder


def start_mlserver(
    label: str,
    model: Any,
    root: Path,
    logs: Path,
    workers: int | None,
    env: dict[str, str] | None = None,
) -> Server:
    """MLServer serving ``model`` (joblib file, mlserver-sklearn) as ``digits``;
    ``workers=None`` keeps its default worker pool."""
    import joblib

    python = mlserver_python()
    folder = root / label.replace(" ", "_")
    (folder / "digits").mkdir(parents=True)
    joblib.dump(model, folder / "digits" / "model.joblib")
    (folder / "digits" / "model-settings.json").write_text(
        json.dumps(
            {
                "name": "digits",
                "implementation": "mlserver_sklearn.SKLearnModel",
                "parameters": {"uri": "./model.joblib", "version": "1"},
            }
        )
    )
    port = free_port()
    settings: dict[str, Any] = {
        "http_port": port,
        "grpc_port": free_port(),
        "metrics_port": free_port(),
        "host": HOST,
        "debug": False,  # its default (True) writes an access-log line per request
    }
    if workers is not None:
        settings["parallel_workers"] = workers
    (folder / "settings.json").write_text(json.dumps(settings))
    log = logs / f"{folder.name}.log"
    mlserver = python.parent / "mlserver"
    with log.open("wb") as out:
        process = subprocess.Popen(
            [str(mlserver), "start", str(folder)],
            stdout=out,
            stderr=subprocess.STDOUT,
            env={**os.environ, **(env or {})},
        )
    return Server(label, port, process, "/v2/models/digits/infer", log)


@contextmanager
def running(starters: list[Callable[[], Server]]) -> Iterator[list[Server]]:
    """Start every server (one after the other: start-ups compete for the cores), wait
    until each is ready, and stop them all afterwards."""
    servers: list[Server] = []
    try:
        for start in starters:
            servers.append(wait_ready(start()))
        yield servers
    finally:
        for server in servers:
            server.process.terminate()
        for server in servers:
            try:
                server.process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                server.process.kill()


# --- requests and measurements -------------------------------------------------------------


def infer_body(
    rows: np.ndarray, datatype: str, binary: bool = False, outputs: Sequence[str] = ()
) -> tuple[bytes, dict[str, str]]:
    """An OIP infer request for ``rows`` (JSON tensors, or the binary extension), asking
    for ``outputs`` by name (all the model has when empty)."""
    tensor: dict[str, Any] = {"name": "input-0", "datatype": datatype, "shape": list(rows.shape)}
    request: dict[str, Any] = {"inputs": [tensor]}
    if outputs:
        request["outputs"] = [{"name": name} for name in outputs]
    if not binary:
        tensor["data"] = rows.ravel().tolist()
        return json.dumps(request).encode(), {}
    raw = np.ascontiguousarray(rows, dtype=rows.dtype.newbyteorder("<")).tobytes()
    tensor["parameters"] = {"binary_data_size": len(raw)}
    header = json.dumps(request).encode()
    return header + raw, {"Inference-Header-Content-Length": str(len(header))}


@dataclass
class Measured:
    """Every round of one (server, shape): load results and server CPU seconds."""

    rounds: list[LoadResult] = field(default_factory=list)
    server_cpu_s: float = 0.0

    def add(self, result: LoadResult, cpu: float) -> None:
        self.rounds.append(result)
        self.server_cpu_s += cpu

    @property
    def requests(self) -> int:
        return sum(len(r.latencies) for r in self.rounds)

    def summary(self) -> dict[str, Any]:
        merged = LoadResult(
            latencies=[x for r in self.rounds for x in r.latencies],
            errors=sum(r.errors for r in self.rounds),
            elapsed=sum(r.elapsed for r in self.rounds),
            client_cpu_s=sum(r.client_cpu_s for r in self.rounds),
            first_error=next((r.first_error for r in self.rounds if r.first_error), ""),
        )
        rates = sorted(r.per_second for r in self.rounds)
        return {
            "per_second": merged.per_second,
            "per_second_rounds": rates,
            "p50_ms": merged.percentile_ms(50),
            "p99_ms": merged.percentile_ms(99),
            "cpu_ms_per_request": 1000 * self.server_cpu_s / max(self.requests, 1),
            "client_cores": merged.client_cores,
            "requests": self.requests,
            "errors": merged.errors,
            "first_error": merged.first_error,
        }


def measure(
    server: Server, request: bytes, clients: int, seconds: float
) -> tuple[LoadResult, float]:
    """One round on ``server``: the load, and the server's CPU seconds during it (warm-up
    excluded: the CPU reading starts after a short unmeasured load)."""
    run_load(HOST, server.port, request, clients=clients, seconds=0.3, warmup=0.0)
    before = server.cpu_seconds()
    result = run_load(HOST, server.port, request, clients=clients, seconds=seconds, warmup=0.0)
    return result, server.cpu_seconds() - before


def interleaved(
    servers: list[Server],
    shapes: list[tuple[str, bytes | Callable[[Server], bytes], int]],
    rounds: int,
    seconds: float,
) -> dict[str, dict[str, Measured]]:
    """``shape label -> server label -> Measured``; each round visits every shape and every
    server, in an order rotated each round so drift hits all alike."""
    table: dict[str, dict[str, Measured]] = {
        label: {s.label: Measured() for s in servers} for label, _, _ in shapes
    }
    for round_ in range(rounds):
        for label, request, clients in shapes:
            order = servers[round_ % len(servers) :] + servers[: round_ % len(servers)]
            for server in order:
                raw = request(server) if callable(request) else request
                result, cpu = measure(server, raw, clients, seconds)
                table[label][server.label].add(result, cpu)
        print(f"round {round_ + 1}/{rounds} done", file=sys.stderr)
    return table


def print_table(table: dict[str, dict[str, Measured]], reference: str) -> dict[str, Any]:
    """Print every (shape, server) and ``reference``'s ratios to the others; return the
    numbers for --json."""
    report: dict[str, Any] = {}
    print(
        f"{'shape':22} {'server':26} {'req/s':>8} {'p50 ms':>8} {'p99 ms':>8} "
        f"{'CPU ms/req':>10} {'client cores':>12} {'errors':>6}"
    )
    for shape, by_server in table.items():
        report[shape] = {}
        for name, measured in by_server.items():
            s = measured.summary()
            report[shape][name] = s
            print(
                f"{shape:22} {name:26} {s['per_second']:8.0f} {s['p50_ms']:8.2f} "
                f"{s['p99_ms']:8.2f} {s['cpu_ms_per_request']:10.3f} {s['client_cores']:12.2f} "
                f"{s['errors']:6d}"
            )
            if s["first_error"]:
                print(f"    first error: {s['first_error'][:200]}")
    print(f"\nratios of {reference} to each (req/s: >1 wins; p99 and CPU/request: <1 wins)")
    for shape, by_server in report.items():
        ours = by_server[reference]
        for name, theirs in list(by_server.items()):
            if name == reference:
                continue
            ratios = {
                "req_s": ours["per_second"] / theirs["per_second"],
                "p99": ours["p99_ms"] / theirs["p99_ms"],
                "cpu_per_request": ours["cpu_ms_per_request"] / theirs["cpu_ms_per_request"],
            }
            ours.setdefault("ratios", {})[name] = ratios
            print(
                f"{shape:22} vs {name:26} req/s x{ratios['req_s']:.2f}   p99 x{ratios['p99']:.2f}"
                f"   CPU/request x{ratios['cpu_per_request']:.2f}"
            )
    return report


SHAPES = [(1, 1), (1, 8), (64, 1), (64, 8)]  # (rows per request, clients)


def against_mlserver(args: argparse.Namespace, tmp: Path) -> dict[str, Any]:
    import persistkit

    rows, labels = digits_rows()
    model = logistic_regression(rows, labels)
    store = str(tmp / "store")
    persistkit.Store(store).save(model, "digits", example=rows[:5])
    logs = tmp / "logs"
    logs.mkdir()
    starters: list[Callable[[], Server]] = [
        lambda: start_persistkit("persistkit", ["digits"], store, logs)
    ]
    env: dict[str, str] = {}
    if args.against == "mlserver" and args.mlserver_httptools:
        extra = str(httptools_for_mlserver())
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [extra, os.environ.get("PYTHONPATH")]))
    if args.against == "mlserver":
        starters += [
            lambda: start_mlserver("mlserver default", model, tmp, logs, None, env),
            lambda: start_mlserver("mlserver parallel_workers=0", model, tmp, logs, 0, env),
        ]
    import importlib.util

    if importlib.util.find_spec("httptools") is None:
        print(
            "note: httptools is not installed here, so persistkit runs on uvicorn's pure-Python "
            'h11 (pip install "persistkit[serve]" brings it)',
            file=sys.stderr,
        )
    with running(starters) as servers:

        def request_for(count: int) -> Callable[[Server], bytes]:
            # the same work from both: the predicted class. MLServer's sklearn runtime answers
            # only `predict` to a request naming no outputs; persistkit would add `label` and
            # `scores` (a second model call), so it is asked for its own output by name
            # unless --all-outputs
            own = () if args.all_outputs else ("output-0",)
            ours = infer_body(rows[:count], "FP64", outputs=own)
            theirs = infer_body(rows[:count], "FP64")
            return lambda server: http_request(
                HOST, server.port, server.model_path,
                *(ours if server.label == "persistkit" else theirs),
            )  # fmt: skip

        shapes: list[tuple[str, bytes | Callable[[Server], bytes], int]] = [
            (f"{count} row{'s' if count > 1 else ''}, {clients} client{'s' if clients > 1 else ''}",
             request_for(count), clients)
            for count, clients in SHAPES
        ]  # fmt: skip
        table = interleaved(servers, shapes, args.rounds, args.seconds)
    print(
        f"\n{os.cpu_count()} CPUs, {args.rounds} rounds of {args.seconds:g} s per cell, "
        "JSON tensors"
    )
    return print_table(table, "persistkit")


def batching(args: argparse.Namespace, tmp: Path) -> dict[str, Any]:
    import persistkit

    rows, labels = digits_rows()
    store = str(tmp / "store")
    persistkit.Store(store).save(forest(rows, labels), "forest", example=rows[:5])
    pictures = np.random.default_rng(0).random((5, 1, 28, 28), dtype=np.float32)
    persistkit.Store(store).save(small_cnn(), "cnn", example=pictures)
    logs = tmp / "logs"
    logs.mkdir()
    options = ["--max-batch-size", str(args.max_batch_size), "--max-batch-delay-ms",
               str(args.max_batch_delay_ms)]  # fmt: skip
    refs = ["cnn", "forest"]
    # torch's intra-op threads spin against the client and the other server for 2 cores;
    # one thread each is the usual serving set-up (--torch-threads changes it)
    env = {"OMP_NUM_THREADS": str(args.torch_threads)}
    starters: list[Callable[[], Server]] = [
        lambda: start_persistkit("batching off", refs, store, logs, env=env),
        lambda: start_persistkit("batching on", refs, store, logs, options, env=env),
    ]
    bodies = {
        "cnn": infer_body(pictures[:1], "FP32", binary=True),
        "forest": infer_body(rows[:1], "FP64"),
    }
    with running(starters) as servers:
        shapes: list[tuple[str, bytes | Callable[[Server], bytes], int]] = []
        for model, (body, headers) in bodies.items():
            for clients in args.batching_clients:
                raw = http_request(
                    HOST, servers[0].port, f"/v2/models/{model}/infer", body, headers
                )
                shapes.append((f"{model}, {clients} clients", raw, clients))
        table = interleaved(servers, shapes, args.rounds, args.seconds)
    print(
        f"\n{os.cpu_count()} CPUs, 1 row per request, batching on = --max-batch-size "
        f"{args.max_batch_size} --max-batch-delay-ms {args.max_batch_delay_ms:g}"
    )
    return print_table(table, "batching on")


def in_process_and_served(args: argparse.Namespace, tmp: Path) -> dict[str, Any]:
    """One row: the model called in-process, then served (JSON and binary tensors)."""
    import persistkit

    rows, labels = digits_rows()
    model = logistic_regression(rows, labels)
    store = str(tmp / "store")
    persistkit.Store(store).save(model, "digits", example=rows[:5])
    persistkit.Store(store).save(mlp(), "tinynet", example=rows[:5].astype(np.float32))
    one = rows[:1]
    report: dict[str, Any] = {}
    for label, call in [
        ("sklearn model.predict", lambda: model.predict(one)),
        ("sklearn persistkit.predict", lambda: persistkit.predict(model, one)),
    ]:
        times = []
        for _ in range(2000):
            t0 = time.perf_counter()
            call()
            times.append(time.perf_counter() - t0)
        report[label] = {"per_second": 1 / np.mean(times), "p50_ms": 1000 * np.median(times)}
        print(
            f"{label:40} {report[label]['per_second']:8.0f}/s  p50 {report[label]['p50_ms']:.3f} ms"
        )
    logs = tmp / "logs"
    logs.mkdir()
    with running([lambda: start_persistkit("persistkit", ["digits", "tinynet"], store, logs)]) as (
        server,
    ):
        for name, datatype, data in [
            ("digits", "FP64", one),
            ("tinynet", "FP32", one.astype(np.float32)),
        ]:
            for binary in (False, True):
                body, headers = infer_body(data, datatype, binary)
                raw = http_request(HOST, server.port, f"/v2/models/{name}/infer", body, headers)
                result, cpu = measure(server, raw, args.concurrency, args.seconds)
                label = f"{name} served, {'binary' if binary else 'JSON'}"
                report[label] = {
                    "per_second": result.per_second,
                    "p50_ms": result.percentile_ms(50),
                    "p99_ms": result.percentile_ms(99),
                    "cpu_ms_per_request": 1000 * cpu / max(len(result.latencies), 1),
                    "client_cores": result.client_cores,
                }
                r = report[label]
                print(
                    f"{label:40} {r['per_second']:8.0f}/s  p50 {r['p50_ms']:.3f} ms  p99 "
                    f"{r['p99_ms']:.3f} ms  CPU {r['cpu_ms_per_request']:.3f} ms/req  client "
                    f"{r['client_cores']:.2f} cores"
                )
    return report


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--against",
        choices=["mlserver", "none"],
        default=None,
        help="the four load shapes against MLServer ('none': persistkit alone)",
    )
    parser.add_argument("--batching", action="store_true", help="batching on vs off")
    parser.add_argument(
        "--mlserver-httptools",
        action="store_true",
        help="--against mlserver: give MLServer httptools too (its own install runs uvicorn on "
        "pure-Python h11; persistkit's serve extra brings httptools)",
    )
    parser.add_argument(
        "--all-outputs",
        action="store_true",
        help="--against: persistkit answers every output (label, scores) instead of the "
        "predicted class alone, as MLServer does",
    )
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--seconds", type=float, default=3.0, help="per cell per round")
    parser.add_argument("--concurrency", type=int, default=8, help="clients (default mode)")
    parser.add_argument("--max-batch-size", type=int, default=32)
    parser.add_argument("--max-batch-delay-ms", type=float, default=2.0)
    parser.add_argument("--batching-clients", type=int, nargs="+", default=[8, 32])
    parser.add_argument("--torch-threads", type=int, default=1, help="OMP_NUM_THREADS (--batching)")
    parser.add_argument("--json", metavar="FILE", help="also write the numbers here")
    args = parser.parse_args()  # fmt: skip
    tmp = Path(tempfile.mkdtemp(prefix="bench-serve-"))
    os.environ["PERSISTKIT_HOME"] = str(tmp / "home")
    try:
        if args.against:
            report = against_mlserver(args, tmp)
        elif args.batching:
            report = batching(args, tmp)
        else:
            report = in_process_and_served(args, tmp)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    if args.json:
        Path(args.json).write_text(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
