"""A lean HTTP/1.1 load generator for the serving benchmarks, and the CPU a process tree used.

One asyncio task per client, each on its own keep-alive connection, sending a request whose
bytes are built once and reading the response by its Content-Length: no HTTP library, so the
client spends a few tens of microseconds per request and the server stays the bottleneck on a
2-core machine. :func:`run_load` returns the client's own CPU use beside the results, so a run
can show that the client was not the limit (it should stay well below one core).
"""

from __future__ import annotations

import asyncio
import os
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

_TICK = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100


def http_request(host: str, port: int, path: str, body: bytes, headers: dict[str, str]) -> bytes:
    """The bytes of one ``POST`` (or ``GET`` when ``body`` is empty) with keep-alive."""
    method = "POST" if body else "GET"
    lines = [f"{method} {path} HTTP/1.1", f"Host: {host}:{port}"]
    lines += [f"{key}: {value}" for key, value in headers.items()]
    if body:
        lines.append(f"Content-Length: {len(body)}")
    return ("\r\n".join(lines) + "\r\n\r\n").encode() + body


@dataclass
class LoadResult:
    """Latencies of the answered requests (seconds), errors, wall time and client CPU."""

    latencies: list[float] = field(default_factory=list)
    errors: int = 0
    elapsed: float = 0.0
    client_cpu_s: float = 0.0
    first_error: str = ""

    @property
    def per_second(self) -> float:
        return len(self.latencies) / self.elapsed if self.elapsed else float("nan")

    def percentile_ms(self, q: float) -> float:
        if not self.latencies:
            return float("nan")
        return float(np.percentile(np.asarray(self.latencies), q)) * 1000

    @property
    def client_cores(self) -> float:
        """How many cores the load generator kept busy (1.0 = one core flat out)."""
        return self.client_cpu_s / self.elapsed if self.elapsed else float("nan")


async def _one_client(
    host: str, port: int, request: bytes, stop_at: float, result: LoadResult, warm: float
) -> None:
    reader, writer = await asyncio.open_connection(host, port)
    try:
        while True:
            t0 = time.perf_counter()
            if t0 >= stop_at:
                return
            writer.write(request)
            head = await reader.readuntil(b"\r\n\r\n")
            length = _content_length(head)
            body = await reader.readexactly(length)
            if t0 < warm:
                continue
            if head[9:12] == b"200":
                result.latencies.append(time.perf_counter() - t0)
            else:
                result.errors += 1
                result.first_error = result.first_error or (head[:12] + body[:300]).decode(
                    "utf-8", "replace"
                )
    finally:
        writer.close()


def _content_length(head: bytes) -> int:
    lower = head.lower()
    start = lower.find(b"\r\ncontent-length:")
    if start < 0:
        raise RuntimeError(f"response without Content-Length: {head[:200]!r}")
    end = lower.find(b"\r\n", start + 2)
    return int(lower[start + 17 : end])


async def _load(
    host: str, port: int, request: bytes, clients: int, seconds: float, warmup: float
) -> LoadResult:
    result = LoadResult()
    begin = time.perf_counter()
    warm = begin + warmup
    stop_at = warm + seconds
    tasks = [_one_client(host, port, request, stop_at, result, warm) for _ in range(clients)]
    await asyncio.sleep(0)
    cpu_at_warm: list[float] = []

    async def mark() -> None:
        await asyncio.sleep(max(0.0, warm - time.perf_counter()))
        cpu_at_warm.append(time.process_time())

    await asyncio.gather(mark(), *tasks)
    result.elapsed = time.perf_counter() - warm
    result.client_cpu_s = time.process_time() - cpu_at_warm[0]
    return result


def run_load(
    host: str,
    port: int,
    request: bytes,
    *,
    clients: int,
    seconds: float,
    warmup: float = 0.5,
) -> LoadResult:
    """Drive ``clients`` keep-alive connections sending ``request`` for ``warmup`` seconds
    (not counted), then ``seconds`` (counted)."""
    return asyncio.run(_load(host, port, request, clients, seconds, warmup))


# --- server CPU, from /proc ----------------------------------------------------------------


def _children(pid: int) -> list[int]:
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        ppid = int(stat.rsplit(")", 1)[1].split()[1])
        if ppid == pid:
            found.append(int(entry.name))
    return found


def tree_cpu_seconds(pid: int) -> float:
    """User + system CPU seconds of ``pid`` and every live descendant (a server's worker
    pool included)."""
    total, todo = 0.0, [pid]
    while todo:
        current = todo.pop()
        try:
            fields = Path(f"/proc/{current}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        total += (int(fields[11]) + int(fields[12])) / _TICK  # utime, stime
        todo.extend(_children(current))
    return total
