"""gRPC beside REST on one `persistkit serve --grpc-port` process: req/s, p99 and server CPU
per request for the four load shapes of issue 14 (1 and 64 rows, 1 and 8 clients).

Both transports answer from the same loaded model (LogisticRegression on digits, as in
bench_serve.py) and are driven by equally lean clients on loopback: REST by
``loadgen.run_load`` (raw HTTP/1.1, binary tensor data in, JSON out), gRPC by one ``grpc.aio``
channel per client sending pre-serialized ``ModelInferRequest`` bytes (raw_input_contents),
so neither side pays for a client library per request. Runs are interleaved (REST, gRPC,
REST, ...) and each figure is the median over rounds; the server's CPU is read from /proc.

    .venv/bin/python benchmarks/bench_grpc.py --rounds 3 --seconds 3
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).parent))
from loadgen import LoadResult, http_request, run_load, tree_cpu_seconds

SHAPES = [(1, 1), (1, 8), (64, 1), (64, 8)]  # (rows per request, clients)
INFER = "/inference.GRPCInferenceService/ModelInfer"


def save_model(store: Path) -> np.ndarray:
    """LogisticRegression on digits saved as ``digits``; returns the rows to send."""
    from sklearn.datasets import load_digits
    from sklearn.linear_model import LogisticRegression

    import persistkit

    data = load_digits()
    rows = data.data.astype(np.float64)
    model = LogisticRegression(max_iter=2000).fit(rows, data.target)
    persistkit.Store(store).save(model, "digits", example=rows[:5])
    return rows


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
    return http_request("127.0.0.1", port, "/v2/models/digits/infer", header + payload, headers)


def grpc_request(batch: np.ndarray) -> bytes:
    from persistkit.server import proto

    request = proto.ModelInferRequest(model_name="digits")
    request.inputs.add(name="input-0", datatype="FP64", shape=list(batch.shape))
    request.outputs.add(name="output-0")
    request.raw_input_contents.append(batch.astype("<f8").tobytes())
    return bytes(request.SerializeToString())


async def _grpc_load(
    port: int, request: bytes, clients: int, seconds: float, warmup: float
) -> LoadResult:
    import grpc.aio

    result = LoadResult()
    begin = time.perf_counter()
    warm, stop_at = begin + warmup, begin + warmup + seconds

    async def one_client() -> None:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
            call = channel.unary_unary(INFER)  # bytes in, bytes out: no (de)serializing
            while (t0 := time.perf_counter()) < stop_at:
                try:
                    await call(request)
                except grpc.aio.AioRpcError as exc:
                    result.errors += 1
                    result.first_error = result.first_error or str(exc.details())
                    continue
                if t0 >= warm:
                    result.latencies.append(time.perf_counter() - t0)

    cpu: list[float] = []

    async def mark() -> None:
        await asyncio.sleep(warmup)
        cpu.append(time.process_time())

    await asyncio.gather(mark(), *(one_client() for _ in range(clients)))
    result.elapsed = time.perf_counter() - warm
    result.client_cpu_s = time.process_time() - cpu[0]
    return result


def measure(transport: str, pid: int, port: int, request: bytes, clients: int, seconds: float):
    """One run: (req/s, p99 ms, server CPU ms per request, client cores)."""
    before = tree_cpu_seconds(pid)
    if transport == "rest":
        result = run_load("127.0.0.1", port, request, clients=clients, seconds=seconds)
    else:
        result = asyncio.run(_grpc_load(port, request, clients, seconds, 0.5))
    cpu = tree_cpu_seconds(pid) - before
    if result.errors:
        raise RuntimeError(f"{transport}: {result.errors} errors, first: {result.first_error}")
    answered = len(result.latencies)
    # the CPU window includes the warm-up: count its requests too, approximately
    per_request = cpu * 1000 / (answered * (1 + 0.5 / seconds))
    return result.per_second, result.percentile_ms(99), per_request, result.client_cores


def wait_ready(port: int, process: subprocess.Popen) -> None:
    import httpx

    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError("persistkit serve exited")
        try:
            if httpx.get(f"http://127.0.0.1:{port}/v2/health/ready").status_code == 200:
                return
        except httpx.TransportError:
            pass
        time.sleep(0.2)
    raise RuntimeError("persistkit serve did not get ready")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--seconds", type=float, default=3.0)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as scratch:
        env = {**os.environ, "PERSISTKIT_HOME": str(Path(scratch) / "home")}
        os.environ.update(env)
        rows = save_model(Path(scratch) / "store")
        port, grpc_port = 18651, 18652
        command = [sys.executable, "-c", "from persistkit.cli import main; main()", "serve",
                   "digits", "--store", str(Path(scratch) / "store"), "--port", str(port),
                   "--grpc-port", str(grpc_port), "--log-level", "warning"]  # fmt: skip
        server = subprocess.Popen(command, env=env)
        try:
            wait_ready(port, server)
            runs: dict[tuple[int, int, str], list[tuple[float, float, float, float]]] = {}
            for round_ in range(args.rounds):
                for rows_n, clients in SHAPES:
                    batch = rows[:rows_n]
                    requests = {"rest": rest_request(port, batch), "grpc": grpc_request(batch)}
                    order = ["rest", "grpc"] if round_ % 2 == 0 else ["grpc", "rest"]
                    for transport in order:
                        target = port if transport == "rest" else grpc_port
                        figures = measure(
                            transport, server.pid, target, requests[transport], clients,
                            args.seconds,
                        )  # fmt: skip
                        runs.setdefault((rows_n, clients, transport), []).append(figures)
        finally:
            server.terminate()
            server.wait(timeout=30)
    print(f"medians over {args.rounds} interleaved rounds of {args.seconds:g} s")
    print("shape            | REST req/s  p99 ms  CPU ms/req | gRPC req/s  p99 ms  CPU ms/req "
          "| gRPC/REST req/s")  # fmt: skip
    for rows_n, clients in SHAPES:
        line = f"{rows_n:>2} rows {clients} client{'s' if clients > 1 else ' '} |"
        medians = {}
        for transport in ("rest", "grpc"):
            figures = runs[(rows_n, clients, transport)]
            medians[transport] = [statistics.median(f[i] for f in figures) for i in range(4)]
            rate, p99, cpu, _ = medians[transport]
            line += f" {rate:10.0f} {p99:7.2f} {cpu:11.3f} |"
        print(f"{line} {medians['grpc'][0] / medians['rest'][0]:14.2f}")
    client = max(statistics.median(f[3] for f in v) for v in runs.values())
    print(f"(the busiest client kept {client:.2f} cores busy)")


if __name__ == "__main__":
    main()
