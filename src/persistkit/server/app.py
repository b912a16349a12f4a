"""The ASGI app: Open Inference Protocol V2 REST routes plus a small upload page.

OIP routes stay pure protocol. The page (``GET /``) lists models through ``GET /ui/models`` and
posts a picture to ``POST /ui/predict/{name}``, which decodes it with the same code as
``persistkit predict`` (:func:`persistkit.inputs.read_image`, with the model's preprocess
record). A model saved with labels also answers a ``label`` (``BYTES``) and a ``scores``
output beside its own (see :mod:`persistkit.answers`).
"""

from __future__ import annotations

import json
import logging
import os
import sys
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from functools import cache, partial
from importlib import resources
from typing import Any

import anyio.to_thread
import numpy as np
from starlette.applications import Starlette
from starlette.exceptions import HTTPException
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
from persistkit.server.protocol import (
    HEADER_LENGTH,
    build_outputs_response,
    check_inputs,
    parse_infer_request,
    picture_files,
)
from persistkit.server.repository import (
    LABEL_OUTPUT,
    SCORES_OUTPUT,
    ModelRepository,
    ServedModel,
)

DEFAULT_MAX_BODY_BYTES = 64 * 1024 * 1024
CONFIG_ENV = "PERSISTKIT_SERVE_CONFIG"
logger = logging.getLogger("persistkit.server")


class ServerNotReadyError(PersistkitError):
    """A request arrived before every model finished loading (answered with 503)."""


def error(status: int, message: str) -> JSONResponse:
    """The OIP error body: ``{"error": message}`` (tritonclient reads exactly this key)."""
    return JSONResponse({"error": message}, status_code=status)


def create_app(
    repository: ModelRepository, *, max_body_bytes: int = DEFAULT_MAX_BODY_BYTES
) -> Starlette:
    """The server for ``repository``. Models not yet loaded load at start-up (the ASGI
    lifespan), in a worker thread; until then ``/v2/health/ready`` answers 503."""

    @asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        await anyio.to_thread.run_sync(repository.load)
        yield

    routes = Routes(repository, max_body_bytes)
    app = Starlette(
        routes=routes.all(),
        lifespan=lifespan,
        exception_handlers={
            PersistkitError: _persistkit_error,
            HTTPException: _http_error,
            Exception: _unexpected_error,
        },
    )
    app.state.repository = repository
    return app


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
    return create_app(repository, max_body_bytes=config["max_body_bytes"])


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

    def __init__(self, repository: ModelRepository, max_body_bytes: int) -> None:
        self.repository = repository
        self.max_body_bytes = max_body_bytes

    def all(self) -> list[Route]:
        model = "/v2/models/{name}"
        versioned = "/v2/models/{name}/versions/{version}"
        return [
            Route("/v2/health/live", self.live),
            Route("/v2/health/ready", self.ready),
            Route("/v2", self.server_metadata),
            Route(model, self.model_metadata),
            Route(versioned, self.model_metadata),
            Route(model + "/ready", self.model_ready),
            Route(versioned + "/ready", self.model_ready),
            Route(model + "/infer", self.infer, methods=["POST"]),
            Route(versioned + "/infer", self.infer, methods=["POST"]),
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
        return JSONResponse(
            {"name": "persistkit", "version": __version__, "extensions": ["binary_tensor_data"]}
        )

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
        pictures = picture_files(parsed.inputs, served.signature)
        if pictures is not None:
            batch = await self._read_pictures(served, pictures)
        else:
            batch = check_inputs(parsed.inputs, served.signature)
        available = [served.output_name, *(s.name for s in served.answer_outputs)]
        unknown = [name for name in parsed.outputs if name not in available]
        if unknown:
            raise InputError(
                f"the model has no output named {unknown[0][:64]!r}; its outputs are "
                f"{', '.join(repr(name) for name in available)}",
                hint="ask for those outputs, or for none",
            )
        wanted = parsed.outputs or available
        prediction = await self._predict(served, batch)
        arrays = {served.output_name: prediction}
        if any(name != served.output_name for name in wanted):
            arrays.update(await self._answer_arrays(served, batch, prediction))
        response = build_outputs_response(
            model_name=served.name,
            model_version=served.version_label,
            request_id=parsed.id,
            outputs=[(name, arrays[name]) for name in wanted if name in arrays],
            binary=parsed.binary_output,
        )
        return Response(response.body, headers=response.headers)

    async def _answer_arrays(
        self, served: ServedModel, batch: np.ndarray, prediction: np.ndarray
    ) -> dict[str, np.ndarray]:
        """The ``label`` (object array of str) and ``scores`` outputs of ``prediction``."""
        from persistkit.answers import score_batch

        assert served.outputs is not None
        call = partial(score_batch, prediction, served.outputs, model=served.model, batch=batch)
        scored = await anyio.to_thread.run_sync(call)
        labels = np.empty(len(scored.predicted), dtype=object)
        labels[:] = [str(label) for label in scored.predicted]
        arrays = {LABEL_OUTPUT: labels}
        specs = {spec.name: spec for spec in served.answer_outputs}
        if SCORES_OUTPUT in specs and scored.probabilities is not None:
            arrays[SCORES_OUTPUT] = scored.probabilities.astype(specs[SCORES_OUTPUT].dtype)
        return arrays

    async def _read_pictures(self, served: ServedModel, pictures: list[bytes]) -> np.ndarray:
        """Encoded picture files sent as a BYTES input, read exactly as ``persistkit predict``
        reads picture files (the model's preprocess record, else the 0-255 rule)."""
        from persistkit.inputs import picture_batch, read_image

        spec = served.signature.input

        def read_all() -> np.ndarray:
            return np.concatenate(
                [
                    picture_batch(
                        read_image(
                            data, spec, source=f"picture {index}", preprocess=served.preprocess
                        ),
                        spec,
                        served.preprocess,
                    )
                    for index, data in enumerate(pictures)
                ]
            )

        return await anyio.to_thread.run_sync(read_all)

    async def _predict(self, served: ServedModel, batch: np.ndarray) -> np.ndarray:
        from persistkit.api import predict
        from persistkit.arrays import to_numpy

        call: Callable[[], Any] = partial(predict, served.model, batch)
        result = await anyio.to_thread.run_sync(call)
        return to_numpy(result)

    async def _body(self, request: Request) -> bytes:
        """The raw body (clients may send no Content-Type), refused past the size limit."""
        declared = request.headers.get("content-length", "")
        if declared.isdigit() and int(declared) > self.max_body_bytes:
            raise self._too_large()
        chunks, size = [], 0
        async for chunk in request.stream():
            size += len(chunk)
            if size > self.max_body_bytes:
                raise self._too_large()
            chunks.append(chunk)
        return b"".join(chunks)

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
                body,
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
