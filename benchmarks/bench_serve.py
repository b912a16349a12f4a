"""How fast does `persistkit serve` answer, next to calling the model in-process?

For a small scikit-learn model (logistic regression on the 8x8 digits) and a small torch model
(a 64-32-10 MLP), this saves each into a temporary store, starts `persistkit serve` in a
subprocess on 127.0.0.1, and drives it with a concurrent load generator (asyncio + httpx, a
bounded number of requests and a time cap) sending one-item Open Inference Protocol requests,
as JSON tensors and as binary tensors. It reports requests per second and p50/p99 latency,
and the same for `model.predict` / `persistkit.predict` called in-process on one item.

Run:  .venv/bin/python benchmarks/bench_serve.py [--requests 2000] [--concurrency 8]
      [--seconds 20] [--workers 1] [--json]

The load generator shares the machine's cores with the server; on a 2-core machine the
numbers are a floor for what a separate client machine would see.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np


def percentile(values: list[float], q: float) -> float:
    return float(np.percentile(np.asarray(values), q)) if values else float("nan")


def summary(kind: str, latencies: list[float], elapsed: float, errors: int = 0) -> dict[str, Any]:
    return {
        "kind": kind,
        "requests": len(latencies),
        "errors": errors,
        "per_second": len(latencies) / elapsed if elapsed else float("nan"),
        "p50_ms": percentile(latencies, 50) * 1000,
        "p99_ms": percentile(latencies, 99) * 1000,
    }


# --- the models ----------------------------------------------------------------------------


def digits_rows() -> tuple[np.ndarray, np.ndarray]:
    from sklearn.datasets import load_digits

    data = load_digits()
    pixels = np.round(data.images * 255 / 16).reshape(len(data.images), -1)
    return pixels.astype(np.float64), data.target


def sklearn_model(rows: np.ndarray, labels: np.ndarray) -> Any:
    from sklearn.linear_model import LogisticRegression

    return LogisticRegression(max_iter=300).fit(rows / 255, labels)


def torch_model() -> Any:
    import torch

    torch.manual_seed(0)
    return torch.nn.Sequential(
        torch.nn.Linear(64, 32), torch.nn.ReLU(), torch.nn.Linear(32, 10)
    ).eval()


# --- in-process baseline -------------------------------------------------------------------


def in_process(kind: str, call: Callable[[], Any], requests: int, seconds: float) -> dict[str, Any]:
    for _ in range(20):
        call()
    latencies: list[float] = []
    start = time.perf_counter()
    while len(latencies) < requests and time.perf_counter() - start < seconds:
        t0 = time.perf_counter()
        call()
        latencies.append(time.perf_counter() - t0)
    return summary(kind, latencies, time.perf_counter() - start)


# --- the server and the load generator ----------------------------------------------------


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def start_server(refs: list[str], store: str, port: int, workers: int) -> subprocess.Popen[bytes]:
    command = [
        sys.executable, "-c", "from persistkit.cli import main; main()", "serve", *refs,
        "--store", store, "--port", str(port), "--workers", str(workers),
        "--log-level", "warning",
    ]  # fmt: skip
    server = subprocess.Popen(command, stderr=subprocess.PIPE)
    import httpx

    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        if server.poll() is not None:
            raise RuntimeError(f"the server exited: {server.stderr.read().decode()}")  # type: ignore[union-attr]
        try:
            if httpx.get(f"http://127.0.0.1:{port}/v2/health/ready").status_code == 200:
                return server
        except httpx.TransportError:
            pass
        time.sleep(0.1)
    server.terminate()
    raise RuntimeError("the server did not become ready")


def request_body(row: np.ndarray, datatype: str, binary: bool) -> tuple[bytes, dict[str, str]]:
    tensor: dict[str, Any] = {"name": "input-0", "datatype": datatype, "shape": [1, row.size]}
    if not binary:
        tensor["data"] = row.ravel().tolist()
        return json.dumps({"inputs": [tensor]}).encode(), {}
    raw = row.astype(row.dtype.newbyteorder("<")).tobytes()
    tensor["parameters"] = {"binary_data_size": len(raw)}
    header = json.dumps({"inputs": [tensor]}).encode()
    return header + raw, {"Inference-Header-Content-Length": str(len(header))}


async def load(
    url: str, body: bytes, headers: dict[str, str], requests: int, concurrency: int,
    seconds: float,
) -> tuple[list[float], int, float]:  # fmt: skip
    import httpx

    latencies: list[float] = []
    errors = 0
    remaining = requests
    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
    async with httpx.AsyncClient(limits=limits, timeout=30) as client:
        for _ in range(20):  # warm up connections and the model
            await (client.post(url, content=body, headers=headers) if body else client.get(url))
        start = time.perf_counter()

        async def worker() -> None:
            nonlocal remaining, errors
            while remaining > 0 and time.perf_counter() - start < seconds:
                remaining -= 1
                t0 = time.perf_counter()
                if body:
                    response = await client.post(url, content=body, headers=headers)
                else:
                    response = await client.get(url)
                if response.status_code == 200:
                    latencies.append(time.perf_counter() - t0)
                else:
                    errors += 1

        await asyncio.gather(*(worker() for _ in range(concurrency)))
        return latencies, errors, time.perf_counter() - start


def over_http(
    kind: str, url: str, row: np.ndarray, datatype: str, binary: bool, args: argparse.Namespace
) -> dict[str, Any]:
    body, headers = request_body(row, datatype, binary)
    latencies, errors, elapsed = asyncio.run(
        load(url, body, headers, args.requests, args.concurrency, args.seconds)
    )
    return summary(kind, latencies, elapsed, errors)


# --- main ----------------------------------------------------------------------------------


def run(args: argparse.Namespace) -> dict[str, Any]:
    import persistkit

    results: list[dict[str, Any]] = []
    notes: list[str] = []
    with tempfile.TemporaryDirectory() as tmp:
        os.environ["PERSISTKIT_HOME"] = str(Path(tmp) / "home")
        store = str(Path(tmp) / "store")
        rows, labels = digits_rows()
        scaled = rows / 255
        sk = sklearn_model(rows, labels)
        persistkit.Store(store).save(sk, "digits", example=scaled[:5])
        refs = ["digits"]
        one = scaled[:1]
        results.append(
            in_process(
                "sklearn in-process model.predict",
                lambda: sk.predict(one),
                args.requests,
                args.seconds,
            )
        )
        results.append(
            in_process(
                "sklearn in-process persistkit.predict",
                lambda: persistkit.predict(sk, one),
                args.requests,
                args.seconds,
            )
        )
        net = None
        try:
            import torch

            net = torch_model()
            example = torch.from_numpy(scaled[:5].astype(np.float32))
            persistkit.Store(store).save(net, "tinynet", example=example)
            refs.append("tinynet")
        except Exception as exc:  # report and go on with sklearn alone
            notes.append(f"torch model not measured: {type(exc).__name__}: {exc}")
            net = None
        if net is not None:
            tensor = torch.from_numpy(one.astype(np.float32))

            def torch_forward() -> Any:
                with torch.inference_mode():
                    return net(tensor).numpy()

            results.append(
                in_process("torch in-process forward", torch_forward, args.requests, args.seconds)
            )
            results.append(
                in_process(
                    "torch in-process persistkit.predict",
                    lambda: persistkit.predict(net, one.astype(np.float32)),
                    args.requests,
                    args.seconds,
                )
            )

        port = free_port()
        server = start_server(refs, store, port, args.workers)
        try:
            base = f"http://127.0.0.1:{port}/v2/models"
            # the ceiling: the same load on an endpoint that does no work
            latencies, errors, elapsed = asyncio.run(
                load(f"http://127.0.0.1:{port}/v2/health/live", b"", {}, args.requests,
                     args.concurrency, args.seconds)
            )  # fmt: skip
            results.append(summary("HTTP only: GET /v2/health/live", latencies, elapsed, errors))
            for binary in (False, True):
                mode = "binary" if binary else "JSON"
                results.append(
                    over_http(
                        f"sklearn served, {mode} tensors",
                        f"{base}/digits/infer",
                        one,
                        "FP64",
                        binary,
                        args,
                    )
                )
                if net is not None:
                    results.append(
                        over_http(
                            f"torch served, {mode} tensors",
                            f"{base}/tinynet/infer",
                            one.astype(np.float32),
                            "FP32",
                            binary,
                            args,
                        )
                    )
        finally:
            server.terminate()
            server.wait(timeout=30)
    return {
        "concurrency": args.concurrency,
        "workers": args.workers,
        "cpus": os.cpu_count(),
        "results": results,
        "notes": notes,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--requests", type=int, default=2000, help="per measurement")
    parser.add_argument("--concurrency", type=int, default=8)
    parser.add_argument("--seconds", type=float, default=20.0, help="time cap per measurement")
    parser.add_argument("--workers", type=int, default=1)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    report = run(args)
    if args.json:
        print(json.dumps(report, indent=2))
        return
    print(
        f"{report['cpus']} CPUs, {args.concurrency} concurrent clients, "
        f"{args.workers} server worker(s), one item per request"
    )
    print(f"{'':44} {'req/s':>9} {'p50 ms':>8} {'p99 ms':>8} {'errors':>6}")
    for r in report["results"]:
        print(
            f"{r['kind']:44} {r['per_second']:9.0f} {r['p50_ms']:8.3f} {r['p99_ms']:8.3f} "
            f"{r['errors']:6d}"
        )
    for note in report["notes"]:
        print("note:", note)


if __name__ == "__main__":
    main()
