"""The ASGI app: Open Inference Protocol V2 REST routes plus a small upload page.

OIP routes stay pure protocol. The page (``GET /``) lists models through ``GET /ui/models`` and
posts a picture to ``POST /ui/predict/{name}``, which decodes it with the same code as
``persistkit predict`` (:func:`persistkit.inputs.read_image`, with the model's preprocess
record). A model saved with labels also answers a ``label`` (``BYTES``) and a ``scores``
output beside its own (see :mod:`persistkit.answers`).
"""

from __future__ import annotations

import gc
import json
import logging
import os
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from functools import cache, partial
from importlib import resources
from typing import Any

import anyio.to_thread
import numpy as np
from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import HTMLResponse, JSONResponse, Response
from starlette.routing import Route

from persistkit import __version__
from persistkit.errors import (
    InputError,
    ModelNotServedError,
    PersistkitError,
    RequestTooLargeError,
)
from persistkit.server.follow import AliasFollower
from persistkit.server.inference import Inference
from persistkit.server.observer import RequestObserver
from persistkit.server.protocol import (
    HEADER_LENGTH,
    build_outputs_response,
    parse_infer_request,
)
from persistkit.server.repository import ModelRepository, ServedModel
from persistkit.server.repository_api import RepositoryRoutes

DEFAULT_MAX_BODY_BYTES = 64 * 1024 * 1024
CONFIG_ENV = "PERSISTKIT_SERVE_CONFIG"
logger = logging.getLogger("persistkit.server")


class ServerNotReadyError(PersistkitError):
    """A request arrived before every model finished loading (answered with 503)."""


def error(status: int, message: str) -> JSONResponse:
    """The OIP error body: ``{"error": message}`` (tritonclient reads exactly this key)."""
    return JSONResponse({"error": message}, status_code=status)


def create_app(
    repository: ModelRepository,
    *,
    max_body_bytes: int = DEFAULT_MAX_BODY_BYTES,
    inference: Inference | None = None,
    follow_interval: float | None = None,
    mutable_repository: bool = True,
) -> Starlette:
    """The server for ``repository``. Models not yet loaded load at start-up (the ASGI
    lifespan), in a worker thread; until then ``/v2/health/ready`` answers 503.

    ``inference`` runs the predictions (a plain :class:`Inference`, no batching, by
    default); it is ``app.state.inference``, so another transport (gRPC) can share it.
    ``follow_interval`` (seconds) turns on following aliases (:mod:`persistkit.server.follow`);
    ``mutable_repository=False`` refuses runtime loads and unloads (several workers).
    """
    inference = inference or Inference()

    @asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        await anyio.to_thread.run_sync(repository.load)
        _freeze_long_lived()
        follower = AliasFollower(repository, follow_interval).start() if follow_interval else None
        try:
            yield
        finally:
            if follower is not None:
                follower.stop()

    routes = Routes(repository, max_body_bytes, inference)
    operations = RepositoryRoutes(repository, mutable=mutable_repository)
    app = Starlette(
        routes=[*routes.all(), *operations.all()],
        middleware=[
            Middleware(RequestObserver, served=repository.serves, on_error=_unexpected_error)
        ],
        lifespan=lifespan,
        exception_handlers={
            PersistkitError: _persistkit_error,
            HTTPException: _http_error,
            Exception: _unexpected_error,
        },
    )
    app.state.repository = repository
    app.state.inference = inference
    return app


def _freeze_long_lived() -> None:
    """Move everything alive now (the libraries, the loaded models) out of the garbage
    collector's reach. A full collection otherwise walks them all again and again: with
    scikit-learn loaded that is ~150k objects and 150-250 ms measured here, a stall that
    lands on whichever request is running (the p99)."""
    gc.collect()
    gc.freeze()


def app_from_environment() -> Starlette:
    """App factory for ``uvicorn --factory`` with several workers: each worker process reads
    its configuration from ``$PERSISTKIT_SERVE_CONFIG`` and loads the models itself."""
    config = json.loads(os.environ[CONFIG_ENV])
    app_dir = config.get("app_dir")
    if isinstance(app_dir, str) and app_dir not in sys.path:
        sys.path.append(app_dir)  # last, as `persistkit serve --app-dir` put it (see cli)
    repository = ModelRepository(
        config["refs"], store=config.get("store"), trusted=config.get("trusted", False)
    )
    app = create_app(
        repository,
        max_body_bytes=config["max_body_bytes"],
        follow_interval=config.get("follow_interval"),
        mutable_repository=False,  # a load request would reach one worker of several
        inference=Inference(
            max_batch_size=config.get("max_batch_size", 1),
            max_batch_delay_ms=config.get("max_batch_delay_ms", 0.0),
        ),
    )
    if config.get("grpc_address"):  # every worker serves gRPC on the one port (SO_REUSEPORT)
        from persistkit.server.grpc_server import add_grpc

        add_grpc(
            app,
            config["grpc_address"],
            max_message_bytes=config["max_body_bytes"],
            reuse_port=True,
            mutable_repository=False,
        )
    return app


async def _persistkit_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, PersistkitError)
    status = 400
    if isinstance(exc, ModelNotServedError):
        status = 404
    elif isinstance(exc, ServerNotReadyError):
        status = 503
    elif isinstance(exc, RequestTooLargeError):
        status = 413
    elif not isinstance(exc, InputError):
        status = 500
        logger.error("request %s %s failed: %s", request.method, request.url.path, exc)
    return error(status, exc.message)


async def _http_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, HTTPException)
    return error(exc.status_code, str(exc.detail))


async def _unexpected_error(request: Request, exc: Exception) -> Response:
    logger.exception("request %s %s failed", request.method, request.url.path)
    return error(500, f"the model failed: {type(exc).__name__}: {exc}"[:2000])


@cache
def _page_html() -> str:
    """The upload page, read from the package once."""
    return resources.files("persistkit.server").joinpath("index.html").read_text("utf-8")


class Routes:
    """Request handlers bound to one repository."""

    def __init__(
        self, repository: ModelRepository, max_body_bytes: int, inference: Inference
    ) -> None:
        self.repository = repository
        self.max_body_bytes = max_body_bytes
        self.inference = inference

    def all(self) -> list[Route]:
        model = "/v2/models/{name}"
        versioned = "/v2/models/{name}/versions/{version}"
        return [  # infer first: routes are matched in order, and it is the busy one
            Route(model + "/infer", self.infer, methods=["POST"]),
            Route(versioned + "/infer", self.infer, methods=["POST"]),
            Route("/v2/health/live", self.live),
            Route("/v2/health/ready", self.ready),
            Route("/v2", self.server_metadata),
            Route(model, self.model_metadata),
            Route(versioned, self.model_metadata),
            Route(model + "/ready", self.model_ready),
            Route(versioned + "/ready", self.model_ready),
            Route("/", self.page),
            Route("/ui/models", self.ui_models),
            Route("/ui/predict/{name}", self.ui_predict, methods=["POST"]),
        ]

    # -- health and metadata ----------------------------------------------------------------
    async def live(self, request: Request) -> Response:
        return JSONResponse({"live": True})

    async def ready(self, request: Request) -> Response:
        ready = self.repository.ready
        return JSONResponse({"ready": ready}, status_code=200 if ready else 503)

    async def server_metadata(self, request: Request) -> Response:
        extensions = ["binary_tensor_data", "model_repository"]
        metadata = {"name": "persistkit", "version": __version__, "extensions": extensions}
        return JSONResponse(metadata)

    def _model(self, request: Request) -> ServedModel:
        return self._served(request.path_params["name"], request.path_params.get("version"))

    def _served(self, name: str, segment: str | None) -> ServedModel:
        if not self.repository.ready:
            raise ServerNotReadyError("models are still loading", hint="retry when ready")
        return self.repository.get(name, segment)

    async def model_metadata(self, request: Request) -> Response:
        served = self._model(request)
        signature = served.signature
        outputs = [s.to_dict() for s in (*signature.outputs, *served.answer_outputs)]
        return JSONResponse(
            {
                "name": served.name,
                "versions": self.repository.versions(served.name),
                "platform": served.platform,
                "inputs": [s.to_dict() for s in signature.inputs],
                "outputs": outputs,
            }
        )

    async def model_ready(self, request: Request) -> Response:
        served = self._model(request)
        return JSONResponse({"name": served.name, "ready": True})

    # -- inference --------------------------------------------------------------------------
    async def infer(self, request: Request) -> Response:
        served = self._model(request)
        body = await self._body(request)
        parsed = parse_infer_request(body, request.headers.get(HEADER_LENGTH))
        answer = await self.inference.infer(served, parsed.inputs, parsed.outputs)
        response = build_outputs_response(
            model_name=answer.model_name,
            model_version=answer.model_version,
            request_id=parsed.id,
            outputs=answer.outputs,
            binary=parsed.binary_output,
        )
        return Response(response.body, headers=response.headers)

    async def _predict(self, served: ServedModel, batch: np.ndarray) -> np.ndarray:
        return await self.inference.predict(served, batch)

    async def _body(self, request: Request) -> bytearray:
        """The raw body (clients may send no Content-Type), refused past the size limit. A
        ``bytearray``: binary tensors are writable views of it (no copy per tensor)."""
        declared = request.headers.get("content-length", "")
        if declared.isdigit() and int(declared) > self.max_body_bytes:
            raise self._too_large()
        chunks, size = [], 0
        async for chunk in request.stream():
            size += len(chunk)
            if size > self.max_body_bytes:
                raise self._too_large()
            chunks.append(chunk)
        return bytearray().join(chunks)

    def _too_large(self) -> RequestTooLargeError:
        return RequestTooLargeError(
            f"the request body is larger than this server's limit of {self.max_body_bytes} bytes",
            hint="send smaller batches, or restart the server with a larger --max-body-mb",
        )

    # -- the upload page --------------------------------------------------------------------
    async def page(self, request: Request) -> Response:
        return HTMLResponse(_page_html())

    async def ui_models(self, request: Request) -> Response:
        return JSONResponse(
            [
                {
                    "name": m.name,
                    "version": m.version_label,
                    "aliases": sorted(m.aliases),
                    "inputs": [s.to_dict() for s in m.signature.inputs],
                }
                for m in self.repository.models()
            ]
        )

    async def ui_predict(self, request: Request) -> Response:
        """A picture in the body -> ``{"model", "version", "predictions"}``, read with the
        model's preprocess record. For a model saved with labels, ``predictions`` are
        ``{"label", "score", "scores"}`` (as ``persistkit predict --json`` prints them),
        ``answers`` the text people read (``"gnome (0.97)"``) with the top 5 scores, and
        ``raw`` the model's own outputs."""
        from persistkit.answers import score_batch
        from persistkit.inputs import picture_batch, read_image

        served = self._served(
            request.path_params["name"], request.query_params.get("version") or None
        )
        body = await self._body(request)
        if not body:
            raise InputError("no picture was sent", hint="pick a picture file first")
        changes: list[str] = []
        batch = await anyio.to_thread.run_sync(
            partial(
                read_image,
                bytes(body),
                served.signature.input,
                source="the picture",
                changes=changes,
                preprocess=served.preprocess,
            )
        )
        batch = picture_batch(batch, served.signature.input, served.preprocess)
        prediction = await self._predict(served, batch)
        answer: dict[str, Any] = {
            "model": served.name,
            "version": served.version_label,
            "predictions": prediction.tolist(),
        }
        if served.outputs is not None:
            call = partial(score_batch, prediction, served.outputs, model=served.model, batch=batch)
            answers = (await anyio.to_thread.run_sync(call)).answers()
            answer["raw"] = answer["predictions"]
            answer["predictions"] = [a.to_dict() for a in answers]
            answer["answers"] = [
                {"text": str(a), "top": [{"label": k, "score": v} for k, v in a.top(5)]}
                for a in answers
            ]
        if changes:  # what was done to the picture to fit the model, said, never silent
            answer["warnings"] = changes
        return JSONResponse(answer)
