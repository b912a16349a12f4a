"""Per-request observation: request ids, the access log and request metrics.

:class:`RequestObserver` is plain ASGI middleware (no per-request objects beyond a closure):
it takes the client's ``X-Request-Id`` (printable ASCII, at most 128 characters) or makes
one, answers it in the ``X-Request-Id`` response header, holds it in :data:`request_id` while
the request runs, so every line logged to ``persistkit.server`` during the request ends with
``[request ID]``, and writes one access line per request to ``persistkit.server.access``.
A client that leaves before its request body arrived is counted and logged as 499, not as a
server error. Log lines show a client's line breaks (a percent-decoded path) escaped.
"""

from __future__ import annotations

import itertools
import logging
import os
import time
from collections.abc import Awaitable, Callable, MutableMapping
from contextvars import ContextVar
from typing import Any

from starlette.requests import ClientDisconnect, Request
from starlette.responses import Response

from persistkit.server import metrics

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]

HEADER = b"x-request-id"
MAX_ID_LENGTH = 128
CLIENT_GONE = 499  # the status counted and logged for a client that left mid-request
#: the id of the request being answered (empty outside one)
request_id: ContextVar[str] = ContextVar("persistkit_request_id", default="")
access_logger = logging.getLogger("persistkit.server.access")


class RequestIdFilter(logging.Filter):
    """Adds ``request_id`` to each record and ``[request ID]`` to its message, during a
    request. Installed on the ``persistkit.server`` loggers by :func:`install_log_filter`."""

    def filter(self, record: logging.LogRecord) -> bool:
        current = request_id.get()
        record.request_id = current
        if not getattr(record, "_id_added", False):
            # a client's text (a percent-decoded URL path, a model name) may hold line breaks:
            # shown escaped, so that no client can write a line of its own into the log
            try:
                message = record.getMessage()
            except Exception:  # a malformed call: logging's own handler reports it
                return True
            if not message.isprintable():
                message = escape_controls(message)
            if current:
                message = f"{message} [request {current}]"
            record.msg, record.args = message, None
            record._id_added = True
        return True


def escape_controls(text: str) -> str:
    """``text`` with line breaks and other unprintable characters written as escapes."""
    return "".join(c if c.isprintable() else repr(c)[1:-1] for c in text)


def install_log_filter() -> None:
    """Put :class:`RequestIdFilter` on the server's loggers (once)."""
    for name in ("persistkit.server", "persistkit.server.access"):
        logger = logging.getLogger(name)
        if not any(isinstance(f, RequestIdFilter) for f in logger.filters):
            logger.addFilter(RequestIdFilter())


def incoming_id(headers: list[tuple[bytes, bytes]]) -> str | None:
    """The client's ``X-Request-Id`` when it is safe to log and echo, else None."""
    for key, value in headers:
        if key.lower() == HEADER:
            if 0 < len(value) <= MAX_ID_LENGTH and all(33 <= b <= 126 for b in value):
                return value.decode("ascii")
            return None
    return None


_ID_PREFIX = os.urandom(8).hex()  # per process: ids from several workers never collide
_ID_COUNTER = itertools.count()


def new_id() -> str:
    """A request id unique across processes and restarts: 32 hex digits (a random prefix
    per process, then a counter; cheaper than a uuid4 per request)."""
    return f"{_ID_PREFIX}{next(_ID_COUNTER) & 0xFFFFFFFFFFFFFFFF:016x}"


def classify(path: str) -> tuple[str, str]:
    """``(endpoint, model name)`` of a request path: the endpoint label of the metrics and
    the model the URL names (empty for none)."""
    parts = path.strip("/").split("/")
    if parts[:2] == ["v2", "models"] and len(parts) >= 3:
        last = parts[-1] if len(parts) > 3 else ""
        endpoint = {"infer": "infer", "ready": "model_ready"}.get(last, "model_metadata")
        return endpoint, parts[2]
    if parts[:3] == ["v2", "repository", "models"] and len(parts) == 5:
        if parts[4] in ("load", "unload"):  # a fixed set: the URL never makes a label
            return f"repository_{parts[4]}", parts[3]
        return "other", ""
    if parts[:2] == ["v2", "repository"]:
        return "repository_index", ""
    if parts[:2] == ["v2", "health"]:
        return "health", ""
    if parts == ["v2"]:
        return "server_metadata", ""
    if parts[0] == "metrics":
        return "metrics", ""
    if parts[0] in ("", "ui"):
        return "page", ""
    return "other", ""


class RequestObserver:
    """ASGI middleware: see the module's documentation. ``served(name)`` says whether a name
    is served (others are counted under an empty model label, so a client cannot grow the
    metrics with made-up names); ``on_error`` answers an exception the app let through (the
    app's own 500 handler) so that answer, too, carries the request id."""

    def __init__(
        self,
        app: ASGIApp,
        *,
        served: Callable[[str], bool],
        on_error: Callable[[Request, Exception], Awaitable[Response]],
    ) -> None:
        self.app = app
        self.served = served
        self.on_error = on_error
        install_log_filter()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        began = time.perf_counter()
        rid = incoming_id(scope["headers"]) or new_id()
        # set, not reset: each request runs in its own task and context, and the app's error
        # handlers log after this middleware returns
        request_id.set(rid)
        header = (HEADER, rid.encode("ascii"))
        status = 500
        started = False

        async def send_with_id(message: Message) -> None:
            nonlocal status, started
            if message["type"] == "http.response.start":
                status, started = message["status"], True
                message["headers"] = [*message.get("headers", ()), header]
            await send(message)

        try:
            await self.app(scope, receive, send_with_id)
        except ClientDisconnect:
            # gone before its request was read: nobody to answer, and no fault of the
            # server's (nginx's 499, "client closed request", never counted as a 500)
            if started:
                raise
            status = CLIENT_GONE
        except Exception as exc:
            if started:
                raise
            response = await self.on_error(Request(scope, receive), exc)
            await response(scope, receive, send_with_id)
        finally:
            self._observe(scope, status, time.perf_counter() - began, rid)

    def _observe(self, scope: Scope, status: int, seconds: float, rid: str) -> None:
        endpoint, model = classify(scope["path"])
        metrics.observe_request(model if model and self.served(model) else "", endpoint,
                                status, seconds)  # fmt: skip
        if access_logger.isEnabledFor(logging.INFO):
            client = scope.get("client")
            access_logger.info(
                '%s "%s %s" %d %.1fms',
                f"{client[0]}:{client[1]}" if client else "-",
                scope["method"], scope["path"], status, seconds * 1000,
            )  # fmt: skip
