"""The Open Inference Protocol over gRPC (service ``inference.GRPCInferenceService``), beside
the REST app in the same process and event loop.

:func:`serving_grpc` starts a ``grpc.aio`` server in the app's lifespan (``persistkit serve
--grpc-port``) on the REST app's own repository and :class:`~persistkit.server.inference.
Inference`, so both transports answer from the same loaded models through the same checks,
batching and ``label``/``scores`` outputs. Errors keep REST's messages; their kind maps to a
gRPC status code (:func:`status_code`).

Needs the ``grpc`` extra; importing this module without it raises
:class:`~persistkit.errors.MissingExtraError`.
"""

from __future__ import annotations

import logging
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from typing import TYPE_CHECKING, Any

from persistkit.errors import (
    InputError,
    MissingExtraError,
    ModelNotServedError,
    PersistkitError,
    RequestTooLargeError,
)

try:
    import grpc
    import grpc.aio

    from persistkit.server import proto
    from persistkit.server.grpc_repository import CODE_OF_STATUS, RepositoryService
    from persistkit.server.grpc_tensors import decode_inputs, encode_response
except ImportError as exc:  # the grpc extra is missing: say so once, with the fix
    if (exc.name or "").split(".")[0] not in ("grpc", "google"):
        raise
    raise MissingExtraError(
        f"serving gRPC needs grpcio and protobuf, and {exc.name} is not installed",
        hint='pip install "persistkit[grpc]" (or leave out --grpc-port)',
    ) from None

from persistkit import __version__
from persistkit.server import metrics
from persistkit.server.inference import Inference
from persistkit.server.observer import incoming_id, install_log_filter, request_id
from persistkit.server.repository import ModelRepository, ServedModel
from persistkit.server.repository_api import RepositoryRequestError

if TYPE_CHECKING:
    from starlette.applications import Starlette

logger = logging.getLogger("persistkit.server")
REQUEST_ID_KEY = "x-request-id"


def status_code(exc: PersistkitError) -> grpc.StatusCode:
    """The gRPC status for an error REST answers with 404, 503, 413, 409, 400 or 500."""
    from persistkit.server.app import ServerNotReadyError

    if isinstance(exc, RepositoryRequestError):
        return CODE_OF_STATUS.get(exc.status, grpc.StatusCode.INVALID_ARGUMENT)
    if isinstance(exc, ModelNotServedError):
        return grpc.StatusCode.NOT_FOUND
    if isinstance(exc, ServerNotReadyError):
        return grpc.StatusCode.UNAVAILABLE
    if isinstance(exc, RequestTooLargeError):
        return grpc.StatusCode.RESOURCE_EXHAUSTED
    if isinstance(exc, InputError):
        return grpc.StatusCode.INVALID_ARGUMENT
    return grpc.StatusCode.INTERNAL


class InferenceService:
    """The calls of ``GRPCInferenceService``, answered from ``repository`` through
    ``inference`` (the repository extension's three through :class:`~persistkit.server.
    grpc_repository.RepositoryService`; ``mutable`` as there). Each method takes a request
    message and returns the response message; :meth:`handler` wraps them for grpc with the
    error mapping."""

    def __init__(
        self, repository: ModelRepository, inference: Inference, *, mutable: bool = True
    ) -> None:
        self.repository = repository
        self.inference = inference
        self.repository_calls = RepositoryService(repository, mutable=mutable)

    def _served(self, name: str, version: str) -> ServedModel:
        from persistkit.server.app import ServerNotReadyError

        if not self.repository.ready:
            raise ServerNotReadyError("models are still loading", hint="retry when ready")
        return self.repository.get(name, version or None)

    async def server_live(self, request: Any) -> Any:
        return proto.ServerLiveResponse(live=True)

    async def server_ready(self, request: Any) -> Any:
        return proto.ServerReadyResponse(ready=self.repository.ready)

    async def model_ready(self, request: Any) -> Any:
        """Ready when the server has that model (and version or alias) loaded; a model it
        does not serve is simply not ready (as ``GET .../ready`` answers 404)."""
        try:
            self._served(request.name, request.version)
        except PersistkitError:
            return proto.ModelReadyResponse(ready=False)
        return proto.ModelReadyResponse(ready=True)

    async def server_metadata(self, request: Any) -> Any:
        return proto.ServerMetadataResponse(
            name="persistkit", version=__version__, extensions=["model_repository"]
        )

    async def model_metadata(self, request: Any) -> Any:
        served = self._served(request.name, request.version)
        signature = served.signature
        return proto.ModelMetadataResponse(
            name=served.name,
            versions=self.repository.versions(served.name),
            platform=served.platform,
            inputs=[spec.to_dict() for spec in signature.inputs],
            outputs=[spec.to_dict() for spec in (*signature.outputs, *served.answer_outputs)],
        )

    async def model_infer(self, request: Any) -> Any:
        """Decode the inputs (raw or typed), infer through the shared :class:`Inference`,
        answer in the form the request used (see :mod:`persistkit.server.grpc_tensors`)."""
        served = self._served(request.model_name, request.model_version)
        inputs = decode_inputs(request)
        requested = [output.name for output in request.outputs]
        parameters = {
            key: getattr(value, kind)
            for key, value in request.parameters.items()
            if (kind := value.WhichOneof("parameter_choice"))
        }
        answer = await self.inference.infer(served, inputs, requested, parameters)
        response = proto.ModelInferResponse(
            model_name=answer.model_name, model_version=answer.model_version, id=request.id
        )
        encode_response(response, answer.outputs, raw=bool(request.raw_input_contents))
        return response

    def handler(self) -> grpc.GenericRpcHandler:
        """The service's handlers for ``grpc.aio.Server.add_generic_rpc_handlers``."""
        methods = {
            "ServerLive": self.server_live,
            "ServerReady": self.server_ready,
            "ModelReady": self.model_ready,
            "ServerMetadata": self.server_metadata,
            "ModelMetadata": self.model_metadata,
            "ModelInfer": self.model_infer,
            "RepositoryIndex": self.repository_calls.index,
            "RepositoryModelLoad": self.repository_calls.load,
            "RepositoryModelUnload": self.repository_calls.unload,
        }
        return grpc.method_handlers_generic_handler(
            proto.SERVICE,
            {
                name: grpc.unary_unary_rpc_method_handler(
                    _answering(name, method, self.repository.serves),
                    request_deserializer=proto.METHODS[name][0].FromString,
                    response_serializer=proto.METHODS[name][1].SerializeToString,
                )
                for name, method in methods.items()
            },
        )


#: the HTTP status REST answers for each gRPC status (metrics count both transports alike)
HTTP_STATUS = {
    grpc.StatusCode.OK: 200,
    grpc.StatusCode.INVALID_ARGUMENT: 400,
    grpc.StatusCode.NOT_FOUND: 404,
    grpc.StatusCode.RESOURCE_EXHAUSTED: 413,
    grpc.StatusCode.FAILED_PRECONDITION: 409,
    grpc.StatusCode.INTERNAL: 500,
    grpc.StatusCode.UNAVAILABLE: 503,
}


def _answering(
    name: str, method: Callable[[Any], Awaitable[Any]], served: Callable[[str], bool]
) -> Callable[[Any, grpc.aio.ServicerContext], Awaitable[Any]]:
    """``method`` as a grpc handler: persistkit errors end the call with their status code and
    REST's message; anything else is INTERNAL, logged with its traceback. As the REST
    middleware does, the call carries a request id (the client's ``x-request-id`` metadata,
    else a new one; sent back in the trailing metadata, added to log lines) and is counted in
    the metrics under the endpoint ``grpc_<name>`` (``served(model)`` keeps made-up model
    names out of the labels)."""
    endpoint = f"grpc_{name}"

    async def call(request: Any, context: grpc.aio.ServicerContext) -> Any:
        began = time.perf_counter()
        metadata = [
            (key.encode("ascii"), value if isinstance(value, bytes) else value.encode())
            for key, value in context.invocation_metadata() or ()
        ]
        rid = incoming_id(metadata) or uuid.uuid4().hex
        request_id.set(rid)  # each call runs in its own task and context
        context.set_trailing_metadata(((REQUEST_ID_KEY, rid),))
        code = grpc.StatusCode.OK
        try:
            return await method(request)
        except PersistkitError as exc:
            code = status_code(exc)
            if code == grpc.StatusCode.INTERNAL:
                logger.error("gRPC %s failed: %s", name, exc)
            await context.abort(code, exc.message)
        except Exception as exc:
            code = grpc.StatusCode.INTERNAL
            logger.exception("gRPC %s failed", name)
            await context.abort(code, f"the model failed: {type(exc).__name__}: {exc}"[:2000])
        finally:
            model = getattr(request, "model_name", "") or getattr(request, "name", "")
            seconds = time.perf_counter() - began
            metrics.observe_request(model if served(model) else "", endpoint,
                                    HTTP_STATUS.get(code, 500), seconds)  # fmt: skip

    return call


def grpc_address(host: str, port: int) -> str:
    """``host:port`` as grpc wants it (an IPv6 host in brackets)."""
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


@asynccontextmanager
async def serving_grpc(
    address: str,
    repository: ModelRepository,
    inference: Inference,
    *,
    max_message_bytes: int,
    reuse_port: bool = False,
    mutable_repository: bool = True,
) -> AsyncIterator[int]:
    """Serve ``GRPCInferenceService`` on ``address`` (``host:port``; port 0 picks a free
    one) until the block ends; yields the bound port. Messages up to ``max_message_bytes``
    are accepted (larger: RESOURCE_EXHAUSTED). ``reuse_port`` lets several server processes
    (``--workers``) share the port; otherwise a port in use is a :class:`PersistkitError`.
    ``mutable_repository=False`` refuses runtime loads and unloads (several workers)."""
    server = grpc.aio.server(
        options=[
            ("grpc.max_receive_message_length", max_message_bytes),
            ("grpc.max_send_message_length", max_message_bytes),
            ("grpc.so_reuseport", 1 if reuse_port else 0),
        ]
    )
    service = InferenceService(repository, inference, mutable=mutable_repository)
    server.add_generic_rpc_handlers((service.handler(),))
    install_log_filter()  # log lines during a call end with its request id, as in REST
    try:
        port = server.add_insecure_port(address)
    except RuntimeError:  # grpc >= 1.5x raises; older versions returned 0
        port = 0
    if not port:
        await server.stop(None)
        raise PersistkitError(
            f"cannot serve gRPC on {address}: the address is in use or not this machine's",
            hint="stop what is listening there, or pick another --grpc-port",
        )
    await server.start()
    logger.info("gRPC (Open Inference Protocol) on %s", address.rsplit(":", 1)[0] + f":{port}")
    try:
        yield port
    finally:
        await server.stop(grace=2.0)


def add_grpc(
    app: Starlette,
    address: str,
    *,
    max_message_bytes: int,
    reuse_port: bool = False,
    mutable_repository: bool = True,
) -> None:
    """Serve gRPC on ``address`` for as long as ``app`` (from :func:`~persistkit.server.app.
    create_app`) runs: started in its lifespan once the models have loaded, stopped when it
    shuts down, on its ``state.repository`` and ``state.inference``. The bound port is
    ``app.state.grpc_port``."""
    rest_lifespan = app.router.lifespan_context

    @asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[Any]:
        grpc_server = serving_grpc(
            address,
            app.state.repository,
            app.state.inference,
            max_message_bytes=max_message_bytes,
            reuse_port=reuse_port,
            mutable_repository=mutable_repository,
        )
        # the REST lifespan loads the models first; gRPC starts on the loaded repository
        async with rest_lifespan(app) as state, grpc_server as port:
            app.state.grpc_port = port
            yield state

    app.router.lifespan_context = lifespan
