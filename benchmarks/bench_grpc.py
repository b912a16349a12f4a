"""gRPC: req/s, p99 and server CPU per request in the four load shapes of issue 14 (1 and 64
rows, 1 and 8 clients), on LogisticRegression trained on digits (as bench_serve.py).

  .venv/bin/python benchmarks/bench_grpc.py                     # persistkit: gRPC vs REST
  .venv/bin/python benchmarks/bench_grpc.py --against mlserver  # gRPC: persistkit vs MLServer

The first compares the two transports of one `persistkit serve --grpc-port` process (same
loaded model); the second compares persistkit's gRPC with MLServer 1.7.1's (default worker
pool and ``parallel_workers=0``; its environment as bench_serve.py makes it). Clients are
equally lean on every side: REST through ``loadgen.run_load`` (raw HTTP/1.1, binary tensor
data in, JSON out), gRPC through one ``grpc.aio`` channel per client sending pre-serialized
``ModelInferRequest`` bytes (``raw_input_contents``) and not decoding the answers. Runs are
interleaved (every side once per shape per round, the order alternating) and each figure is
the median over rounds; server CPU (its process and children) is read from /proc. Every figure
shares a 2-core machine with its client: read ratios, not absolutes.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).parent))
from bench_serve import (
    HOST,
    SHAPES,
    Server,
    digits_rows,
    free_port,
    logistic_regression,
    running,
    start_mlserver,
    start_persistkit,
)
from loadgen import LoadResult, http_request, run_load

INFER = "/inference.GRPCInferenceService/ModelInfer"
WARMUP = 0.5


def rest_request(port: int, batch: np.ndarray) -> bytes:
    payload = batch.astype("<f8").tobytes()
    header = json.dumps(
        {
            "inputs": [
                {
                    "name": "input-0",
                    "datatype": "FP64",
                    "shape": list(batch.shape),
                    "parameters": {"binary_data_size": len(payload)},
                }
            ],
            "outputs": [{"name": "output-0", "parameters": {"binary_data": False}}],
        }
    ).encode()
    headers = {"Inference-Header-Content-Length": str(len(header))}
    return http_request(HOST, port, "/v2/models/digits/infer", header + payload, headers)


def grpc_request(batch: np.ndarray, output: str) -> bytes:
    """A ModelInfer request for ``digits`` asking for one ``output`` (persistkit's
    ``output-0``, MLServer's ``predict``: neither computes anything else)."""
    from persistkit.server import proto

    request = proto.ModelInferRequest(model_name="digits")
    request.inputs.add(name="input-0", datatype="FP64", shape=list(batch.shape))
    request.outputs.add(name=output)
    request.raw_input_contents.append(batch.astype("<f8").tobytes())
    return bytes(request.SerializeToString())


async def _grpc_load(port: int, request: bytes, clients: int, seconds: float) -> LoadResult:
    import grpc.aio

    result = LoadResult()
    warm = time.perf_counter() + WARMUP
    stop_at = warm + seconds

    async def one_client() -> None:
        async with grpc.aio.insecure_channel(f"{HOST}:{port}") as channel:
            call = channel.unary_unary(INFER)  # bytes in, bytes out: no (de)serializing
            while (began := time.perf_counter()) < stop_at:
                try:
                    await call(request)
                except grpc.aio.AioRpcError as exc:
                    result.errors += 1
                    result.first_error = result.first_error or str(exc.details())
                    continue
                if began >= warm:
                    result.latencies.append(time.perf_counter() - began)

    cpu: list[float] = []

    async def mark() -> None:
        await asyncio.sleep(WARMUP)
        cpu.append(time.process_time())

    await asyncio.gather(mark(), *(one_client() for _ in range(clients)))
    result.elapsed = time.perf_counter() - warm
    result.client_cpu_s = time.process_time() - cpu[0]
    return result


Figures = tuple[float, float, float, float]  # req/s, p99 ms, server CPU ms/request, client cores


def measure(
    server: Server,
    grpc_port: int | None,
    batch: np.ndarray,
    clients: int,
    seconds: float,
    output: str = "output-0",
) -> Figures:
    """One run against ``server``: over gRPC on ``grpc_port``, else over REST."""
    before = server.cpu_seconds()
    if grpc_port is None:
        request = rest_request(server.port, batch)
        result = run_load(HOST, server.port, request, clients=clients, seconds=seconds)
    else:
        request = grpc_request(batch, output)
        result = asyncio.run(_grpc_load(grpc_port, request, clients, seconds))
    cpu = server.cpu_seconds() - before
    if result.errors:
        raise RuntimeError(f"{server.label}: {result.errors} errors: {result.first_error}")
    # the CPU window includes the warm-up: count its requests too, approximately
    per_request = cpu * 1000 / (len(result.latencies) * (1 + WARMUP / seconds))
    return result.per_second, result.percentile_ms(99), per_request, result.client_cores


Side = tuple[str, Server, int | None, str]  # label, server, gRPC port (None: REST), output


def interleaved(sides: list[Side], rows: np.ndarray, rounds: int, seconds: float):
    runs: dict[tuple[int, int, str], list[Figures]] = {}
    for round_ in range(rounds):
        for count, clients in SHAPES:
            order = sides if round_ % 2 == 0 else sides[::-1]
            for label, server, grpc_port, output in order:
                figures = measure(server, grpc_port, rows[:count], clients, seconds, output)
                runs.setdefault((count, clients, label), []).append(figures)
    return runs


def print_table(runs: dict, labels: list[str], rounds: int, seconds: float) -> None:
    print(f"medians over {rounds} interleaved rounds of {seconds:g} s; req/s, p99 ms, CPU ms/req")
    print("shape           | " + " | ".join(f"{label:^27}" for label in labels)
          + f" | {labels[0]} / each other: req/s, p99")  # fmt: skip
    for count, clients in SHAPES:
        cells, medians = [], {}
        for label in labels:
            figures = runs[(count, clients, label)]
            medians[label] = [statistics.median(f[i] for f in figures) for i in range(4)]
            rate, p99, cpu, _ = medians[label]
            cells.append(f"{rate:8.0f} {p99:8.2f} {cpu:9.3f}")
        first = medians[labels[0]]
        ratios = [f"{first[0] / medians[o][0]:.2f}, {first[1] / medians[o][1]:.2f}"
                  for o in labels[1:]]  # fmt: skip
        print(f"{count:>2} rows {clients} client{'s' if clients > 1 else ' '} | "
              + " | ".join(cells) + " | " + "; ".join(ratios))  # fmt: skip
    busiest = max(statistics.median(f[3] for f in v) for v in runs.values())
    print(f"(the busiest client kept {busiest:.2f} cores busy)")


def mlserver_grpc_port(root: Path, label: str) -> int:
    """The gRPC port start_mlserver wrote into that server's settings.json."""
    settings = json.loads((root / label.replace(" ", "_") / "settings.json").read_text())
    return int(settings["grpc_port"])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--against", choices=["mlserver"], default=None)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--seconds", type=float, default=3.0)
    args = parser.parse_args()
    import persistkit

    rows, labels = digits_rows()
    model = logistic_regression(rows, labels)
    with tempfile.TemporaryDirectory() as scratch:
        tmp = Path(scratch)
        persistkit.Store(tmp / "store").save(model, "digits", example=rows[:5])
        logs = tmp / "logs"
        logs.mkdir()
        grpc_port = free_port()
        extra = ["--grpc-port", str(grpc_port)]
        starters: list[Callable[[], Server]] = [
            lambda: start_persistkit("persistkit", ["digits"], str(tmp / "store"), logs, extra)
        ]
        mlservers = ["mlserver parallel_workers=0", "mlserver default"]
        if args.against == "mlserver":
            starters += [
                lambda: start_mlserver(mlservers[0], model, tmp, logs, 0),
                lambda: start_mlserver(mlservers[1], model, tmp, logs, None),
            ]
        with running(starters) as servers:
            if args.against == "mlserver":
                sides: list[Side] = [("persistkit gRPC", servers[0], grpc_port, "output-0")]
                sides += [(f"{label} gRPC", server, mlserver_grpc_port(tmp, label), "predict")
                          for label, server in zip(mlservers, servers[1:])]  # fmt: skip
            else:
                sides = [
                    ("gRPC", servers[0], grpc_port, "output-0"),
                    ("REST", servers[0], None, "output-0"),
                ]
            runs = interleaved(sides, rows, args.rounds, args.seconds)
    print_table(runs, [side[0] for side in sides], args.rounds, args.seconds)


if __name__ == "__main__":
    main()
