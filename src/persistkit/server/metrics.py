"""Prometheus metrics of ``persistkit serve``, through the standard ``prometheus_client``.

``prometheus_client`` is optional (``pip install "persistkit[serve]"``): without it every
``observe_*``/``count_*``/``set_*`` function here does nothing and ``GET /metrics`` answers
501 saying what to install. Call these functions from any thread; they never raise.

What is measured (names as scraped):

* ``persistkit_requests_total{model,endpoint,code}``: every HTTP request, by the served model
  it named (empty when none, or a name this server does not serve: unbounded label values
  are never created from a URL), the endpoint (``infer``, ``model_ready``, ...) and status;
* ``persistkit_request_errors_total{model,endpoint,code}``: the same, for codes >= 400;
* ``persistkit_request_duration_seconds{model,endpoint}``: latency histogram, first byte in
  to last byte out;
* ``persistkit_batch_size{model}``: rows per ``predict`` call (see :func:`observe_batch`);
* ``persistkit_model_load_seconds{model}`` and ``persistkit_model_load_failures_total{model}``;
* ``persistkit_models_loaded{model}``: model versions loaded now (per worker);
* ``persistkit_model_switches_total{model}``: versions swapped in by following an alias;
* the standard ``process_*`` and ``python_info`` metrics (not in multiprocess mode).

With several workers (``--workers N``) the CLI points ``PROMETHEUS_MULTIPROC_DIR`` at a fresh
folder before the workers start, so ``/metrics`` from any worker adds up every worker's counts
(prometheus_client's multiprocess mode; gauges are the maximum over live workers).
"""

from __future__ import annotations

import os
from functools import cache
from typing import Any

MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"
INSTALL_LINE = 'pip install "persistkit[serve]"'
#: request latency buckets, in seconds: sub-millisecond answers are the common case here
LATENCY_BUCKETS = (
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0
)  # fmt: skip
BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024, 4096)
LOAD_BUCKETS = (0.01, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0)


class Instruments:
    """The metric objects, created once per process in their own registry."""

    def __init__(self) -> None:
        from prometheus_client import (
            CollectorRegistry,
            Counter,
            Gauge,
            Histogram,
            PlatformCollector,
            ProcessCollector,
        )

        self.registry = CollectorRegistry(auto_describe=True)
        registry = self.registry
        ProcessCollector(registry=registry)  # process_resident_memory_bytes, cpu seconds, ...
        PlatformCollector(registry=registry)
        self.requests = Counter(
            "persistkit_requests",
            "HTTP requests answered, by served model, endpoint and status code.",
            ["model", "endpoint", "code"],
            registry=registry,
        )
        self.errors = Counter(
            "persistkit_request_errors",
            "HTTP requests answered with a status code of 400 or more.",
            ["model", "endpoint", "code"],
            registry=registry,
        )
        self.latency = Histogram(
            "persistkit_request_duration_seconds",
            "Time from a request's arrival to the end of its response.",
            ["model", "endpoint"],
            buckets=LATENCY_BUCKETS,
            registry=registry,
        )
        self.batch = Histogram(
            "persistkit_batch_size",
            "Rows per predict call (a stacked batch counts once, with all its rows).",
            ["model"],
            buckets=BATCH_BUCKETS,
            registry=registry,
        )
        self.load_seconds = Histogram(
            "persistkit_model_load_seconds",
            "Time to load one model version from the store.",
            ["model"],
            buckets=LOAD_BUCKETS,
            registry=registry,
        )
        self.load_failures = Counter(
            "persistkit_model_load_failures",
            "Model versions that failed to load (at start-up, on request, or when following).",
            ["model"],
            registry=registry,
        )
        self.loaded = Gauge(
            "persistkit_models_loaded",
            "Versions of the model loaded in this server (per worker).",
            ["model"],
            registry=registry,
            multiprocess_mode="livemax",
        )
        self.switches = Counter(
            "persistkit_model_switches",
            "Times a followed alias moved and the server switched to the new version.",
            ["model"],
            registry=registry,
        )


@cache
def available() -> bool:
    """True when ``prometheus_client`` can be imported."""
    try:
        import prometheus_client  # noqa: F401
    except ImportError:
        return False
    return True


@cache
def instruments() -> Instruments | None:
    """This process's metric objects, or None without ``prometheus_client``."""
    _request_children.clear()  # they belonged to the instruments made before, if any
    return Instruments() if available() else None


def observe_request(model: str, endpoint: str, code: int, seconds: float) -> None:
    """Count one answered HTTP request (the server's middleware calls this)."""
    found = instruments()
    if found is None:
        return
    key = (model, endpoint, code)
    children = _request_children.get(key)
    if children is None:  # prometheus_client's labels() costs a few microseconds: once
        status = str(code)
        children = (
            found.requests.labels(model, endpoint, status),
            found.errors.labels(model, endpoint, status) if code >= 400 else None,
            found.latency.labels(model, endpoint),
        )
        _request_children[key] = children
    requests, errors, latency = children
    requests.inc()
    if errors is not None:
        errors.inc()
    latency.observe(seconds)


# (model, endpoint, code) -> that label set's children; model names are only served ones
_request_children: dict[tuple[str, str, int], tuple[Any, Any, Any]] = {}


def observe_batch(model: str, size: int) -> None:
    """Record one ``predict`` call over ``size`` rows for the served model named ``model``.

    For the inference path (REST, gRPC, adaptive batching): call it once per predict call,
    with the stacked size when requests were batched together, so the histogram shows how
    full batches run. Cheap (a dictionary lookup and an addition); a no-op without
    ``prometheus_client``.
    """
    found = instruments()
    if found is not None:
        found.batch.labels(model).observe(size)


def observe_load(model: str, seconds: float) -> None:
    """Record that one version of ``model`` loaded in ``seconds``."""
    found = instruments()
    if found is not None:
        found.load_seconds.labels(model).observe(seconds)


def count_load_failure(model: str) -> None:
    """Count a version of ``model`` that failed to load."""
    found = instruments()
    if found is not None:
        found.load_failures.labels(model).inc()


def count_switch(model: str) -> None:
    """Count a switch to a new version of ``model`` because its followed alias moved."""
    found = instruments()
    if found is not None:
        found.switches.labels(model).inc()


def set_loaded(counts: dict[str, int]) -> None:
    """Set the loaded-versions gauge to ``counts`` (name -> versions loaded); a name set
    before and missing from ``counts`` drops to 0."""
    found = instruments()
    if found is None:
        return
    for name in _gauge_names - counts.keys():
        found.loaded.labels(name).set(0)
    for name, count in counts.items():
        found.loaded.labels(name).set(count)
    _gauge_names.update(counts)


_gauge_names: set[str] = set()  # every model name the loaded gauge was ever set for


def exposition() -> tuple[bytes, str]:
    """The text exposition format (body, content type) of every metric: this process's, or
    with several workers (``PROMETHEUS_MULTIPROC_DIR`` set) every worker's added up."""
    from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest

    found = instruments()
    assert found is not None, "call available() first"
    if os.environ.get(MULTIPROC_ENV):
        from prometheus_client import multiprocess

        registry = CollectorRegistry()
        multiprocess.MultiProcessCollector(registry)
        return generate_latest(registry), CONTENT_TYPE_LATEST
    return generate_latest(found.registry), CONTENT_TYPE_LATEST
