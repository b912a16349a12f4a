"""The `persistkit serve` command: saved models over the Open Inference Protocol V2 REST API."""

from __future__ import annotations

import copy
import errno
import json
import os
import shutil
import socket
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import click

from persistkit.cli.options import (
    app_dir_option,
    store_option,
    trust_option,
    trusted,
    use_app_dir,
)
from persistkit.errors import PersistkitError


def check_port(host: str, port: int) -> None:
    """Bind ``host:port`` once, the way uvicorn will, and let it go: a busy port (or an
    address this machine does not have) is one clear error before any model is loaded.
    Port 0 (any free port) needs no check."""
    if port == 0:
        return
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    shown = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
    try:
        with socket.socket(family, socket.SOCK_STREAM) as probe:
            probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as uvicorn does
            probe.bind((host, port))
    except OSError as exc:
        if exc.errno == errno.EADDRINUSE:
            raise PersistkitError(
                f"cannot serve on {shown}: the port is already in use",
                hint=f"stop what is listening there, or pick another port (--port {port + 1})",
            ) from None
        if exc.errno == errno.EACCES:
            raise PersistkitError(
                f"cannot serve on {shown}: permission denied",
                hint="ports below 1024 need privileges; pick --port 1024 or above",
            ) from None
        raise PersistkitError(
            f"cannot serve on {shown}: {exc.strerror or exc}",
            hint="check --host (an address of this machine, e.g. 127.0.0.1 or 0.0.0.0)",
        ) from None


@click.command()
@click.argument("refs", nargs=-1, required=True, metavar="REF...")
@store_option
@click.option("--host", default="127.0.0.1", show_default=True, help="Address to listen on.")
@click.option("--port", default=8000, show_default=True, type=click.IntRange(0, 65535))
@click.option(
    "--grpc-port",
    default=None,
    type=click.IntRange(1, 65535),
    help="Also serve the protocol's gRPC half on this port (KServe uses 8081, Triton 8001); "
    'needs pip install "persistkit[grpc]". Off by default.',
)
@click.option(
    "--workers",
    default=1,
    show_default=True,
    type=click.IntRange(1, 64),
    help="Server processes; each loads every model (memory-mapped weights, such as "
    "safetensors, are one copy shared by all). Runtime loads need 1.",
)
@click.option(
    "--max-body-mb",
    default=64,
    show_default=True,
    type=click.IntRange(1, 4096),
    help="Largest request body accepted (larger ones get 413).",
)
@click.option(
    "--follow-interval",
    default=5.0,
    show_default=True,
    type=click.FloatRange(min=0.1),
    metavar="SECONDS",
    help="How often to look where each served alias (NAME@ALIAS, or NAME: the newest "
    "version) points in the store; a moved one is loaded, then switched to.",
)
@click.option(
    "--pin",
    is_flag=True,
    help="Serve the versions the refs name at start-up; never follow aliases.",
)
@click.option(
    "--max-batch-size",
    default=1,
    show_default=True,
    type=click.IntRange(1, 1_000_000),
    metavar="ROWS",
    help="Adaptive batching: stack concurrent requests for one model into one predict call "
    "of up to ROWS rows (1: off).",
)
@click.option(
    "--max-batch-delay-ms",
    default=0.0,
    show_default=True,
    type=click.FloatRange(0, 10_000),
    metavar="MS",
    help="With --max-batch-size: how long a request may wait for others while the model is "
    "idle (while it is busy, requests queue and batch anyway).",
)
@trust_option("the artifacts")
@click.option(
    "--log-level",
    default="info",
    show_default=True,
    type=click.Choice(["critical", "error", "warning", "info", "debug"]),
)
@app_dir_option
def serve(
    refs: tuple[str, ...],
    store_url: str | None,
    host: str,
    port: int,
    grpc_port: int | None,
    workers: int,
    max_body_mb: int,
    follow_interval: float,
    pin: bool,
    max_batch_size: int,
    max_batch_delay_ms: float,
    trust: tuple[str, ...],
    log_level: str,
    app_dir: str,
) -> None:
    """Serve each REF over the Open Inference Protocol V2 (REST; gRPC too with --grpc-port)
    until interrupted.

    \b
    Models load at start-up; /v2/health/ready is true after that. A ref on an alias
    (NAME@prod) or on the newest version (NAME) follows the store: when it moves, the new
    version loads in the background, then answers (--pin: never). /metrics is Prometheus's;
    /v2/repository/... loads and unloads models at runtime (with --workers 1). Clients such as
    tritonclient.http, KServe's and Seldon's speak this protocol; the version segment of
    /v2/models/NAME/versions/VERSION takes a version number or an alias.
    Open http://HOST:PORT/ in a browser to send a picture and see the answer.

    \b
    Examples:
      persistkit serve digits
      persistkit serve digits@prod digits:3 --port 9000
      persistkit serve digits --host 0.0.0.0 --workers 2
      persistkit serve cnn --max-batch-size 32 --max-batch-delay-ms 2
      persistkit serve /mnt/models --host 0.0.0.0 --port 8080 --grpc-port 8081
    """
    import uvicorn

    from persistkit.server.app import CONFIG_ENV, create_app
    from persistkit.server.inference import Inference
    from persistkit.server.repository import ModelRepository
    from persistkit.server.workers import check_loads, served_label

    if max_batch_delay_ms and max_batch_size == 1:
        raise click.UsageError(
            "--max-batch-delay-ms waits for requests to stack, which needs --max-batch-size "
            "above 1 (say --max-batch-size 32)"
        )
    max_body = max_body_mb * 1024 * 1024
    code_folder = use_app_dir(app_dir)
    check_port(host, port)  # before loading models, which can take minutes
    grpc_address = None
    if grpc_port is not None:
        if grpc_port == port:
            raise click.UsageError(
                f"--grpc-port {grpc_port} is also --port: give it a port of its own"
            )
        from persistkit.server.grpc_server import grpc_address as address_of  # needs the extra

        check_port(host, grpc_port)
        grpc_address = address_of(host, grpc_port)
    repository = ModelRepository(list(refs), store=store_url, trusted=trusted(trust))
    # Load first, so a bad ref fails here as one clear line instead of a traceback per
    # worker; with several workers, in a throwaway process (see persistkit.server.workers).
    if workers == 1:
        repository.load()
        labels = [served_label(m.name, m.version_label) for m in repository.models()]
    else:
        labels = check_loads(list(refs), store_url, trusted(trust), code_folder)
    served = ", ".join(labels)
    shown_host = f"[{host}]" if ":" in host else host
    grpc_shown = f" and gRPC on {shown_host}:{grpc_port}" if grpc_address else ""
    click.echo(
        f"serving {served} on http://{shown_host}:{port}/{grpc_shown} (Ctrl+C stops)", err=True
    )
    follow = None if pin else follow_interval
    logging_config = log_config(log_level)
    if workers == 1:
        app = create_app(
            repository,
            max_body_bytes=max_body,
            follow_interval=follow,
            inference=Inference(
                max_batch_size=max_batch_size, max_batch_delay_ms=max_batch_delay_ms
            ),
        )
        if grpc_address is not None:
            from persistkit.server.grpc_server import add_grpc

            add_grpc(app, grpc_address, max_message_bytes=max_body)
        uvicorn.run(
            app,
            host=host,
            port=port,
            log_level=log_level,
            log_config=logging_config,
            access_log=False,  # persistkit.server.access logs each request, with its id
        )
        return
    os.environ[CONFIG_ENV] = json.dumps(
        {
            "refs": list(refs),
            "store": store_url,
            "trusted": trusted(trust),
            "max_body_bytes": max_body,
            "grpc_address": grpc_address,
            "app_dir": code_folder,
            "follow_interval": follow,
            "max_batch_size": max_batch_size,
            "max_batch_delay_ms": max_batch_delay_ms,
        }
    )
    with metrics_folder():
        uvicorn.run(
            "persistkit.server.app:app_from_environment",
            factory=True,
            host=host,
            port=port,
            workers=workers,
            log_level=log_level,
            log_config=logging_config,
            access_log=False,
        )


def log_config(level: str) -> dict[str, Any]:
    """uvicorn's logging set-up plus the server's own loggers (``persistkit.server``: errors,
    loads, alias switches; ``persistkit.server.access``: one line per request with its id)."""
    from uvicorn.config import LOGGING_CONFIG

    config = copy.deepcopy(LOGGING_CONFIG)
    config["loggers"]["persistkit.server"] = {
        "handlers": ["default"],
        "level": level.upper(),
        "propagate": False,
    }
    return config


@contextmanager
def metrics_folder() -> Iterator[None]:
    """With several workers, metrics are written to files that ``/metrics`` adds up
    (prometheus_client's multiprocess mode): a fresh folder for this run, removed after,
    unless ``PROMETHEUS_MULTIPROC_DIR`` already names one (then it is the caller's)."""
    from persistkit.server.metrics import MULTIPROC_ENV

    if os.environ.get(MULTIPROC_ENV):
        yield
        return
    folder = tempfile.mkdtemp(prefix="persistkit-metrics-")
    os.environ[MULTIPROC_ENV] = folder  # inherited by the workers, which start after this
    try:
        yield
    finally:
        del os.environ[MULTIPROC_ENV]
        shutil.rmtree(folder, ignore_errors=True)


def register(group: click.Group) -> None:
    """Add this module's commands to the `persistkit` group."""
    group.add_command(serve)
