"""The model-repository extension over gRPC: ``RepositoryIndex``, ``RepositoryModelLoad`` and
``RepositoryModelUnload``, the calls ``tritonclient.grpc``'s ``get_model_repository_index``,
``load_model`` and ``unload_model`` make.

They do what the REST routes of :mod:`persistkit.server.repository_api` do, on the same
repository, with the same parameters (``version``, ``alias``, Triton's ``config``) read by
the same helpers, and refuse with the same messages; the HTTP status REST answers becomes
the gRPC status code (:data:`CODE_OF_STATUS`).
"""

from __future__ import annotations

from typing import Any

import anyio.to_thread
import grpc

from persistkit.errors import ArtifactNotFoundError, InputError, PersistkitError, RefError
from persistkit.server import proto
from persistkit.server.repository import ModelRepository
from persistkit.server.repository_api import (
    LOAD_PARAMETERS,
    RepositoryRequestError,
    _bad,
    _load_target,
    _no_other_fields,
    check_mutable,
)

#: the gRPC status of each HTTP status a repository request is refused with
CODE_OF_STATUS = {
    400: grpc.StatusCode.INVALID_ARGUMENT,
    404: grpc.StatusCode.NOT_FOUND,
    409: grpc.StatusCode.FAILED_PRECONDITION,
    413: grpc.StatusCode.RESOURCE_EXHAUSTED,
    503: grpc.StatusCode.UNAVAILABLE,
}


class RepositoryService:
    """The three repository calls on ``repository``. ``mutable`` is false when a load or
    unload would reach only one of several worker processes (then both are refused)."""

    def __init__(self, repository: ModelRepository, *, mutable: bool = True) -> None:
        self.repository = repository
        self.mutable = mutable

    async def index(self, request: Any) -> Any:
        ready_only = bool(request.ready)
        rows = await anyio.to_thread.run_sync(lambda: self.repository.index(ready_only=ready_only))
        return proto.RepositoryIndexResponse(models=[row.to_dict() for row in rows])

    async def load(self, request: Any) -> Any:
        name = request.model_name
        try:
            check_mutable(self.repository, mutable=self.mutable, what="load")
            parameters = _parameters(request)
            _no_other_fields(dict(parameters), "load parameters", list(LOAD_PARAMETERS))
            version, alias = _load_target(parameters)
            await anyio.to_thread.run_sync(
                lambda: self.repository.load_model(name, version=version, alias=alias)
            )
        except RepositoryRequestError as exc:
            raise _with_hint(exc, exc.status) from None
        except (RefError, InputError) as exc:
            raise _with_hint(exc, 400) from None
        except ArtifactNotFoundError as exc:
            raise _with_hint(exc, 404) from None
        except PersistkitError as exc:
            failed = PersistkitError(f"failed to load {name!r}: {exc.message}",
                                     hint=exc.hint_for("http"))  # fmt: skip
            raise _with_hint(failed, 400) from None
        return proto.RepositoryModelLoadResponse()

    async def unload(self, request: Any) -> Any:
        try:
            check_mutable(self.repository, mutable=self.mutable, what="unload")
            parameters = _parameters(request)
            dependents = parameters.pop("unload_dependents", False)
            _no_other_fields(parameters, "unload parameters", ["unload_dependents"])
            if not isinstance(dependents, bool):  # no model here has dependents
                raise _bad(f'"unload_dependents" must be true or false, not {dependents!r:.80}')
            await anyio.to_thread.run_sync(lambda: self.repository.unload_model(request.model_name))
        except RepositoryRequestError as exc:
            raise _with_hint(exc, exc.status) from None
        except PersistkitError as exc:  # ModelNotServedError: not loaded here
            raise _with_hint(exc, 404) from None
        return proto.RepositoryModelUnloadResponse()


def _parameters(request: Any) -> dict[str, Any]:
    """A request's ``ModelRepositoryParameter`` map as plain values (unset ones left out)."""
    return {
        key: getattr(value, kind)
        for key, value in request.parameters.items()
        if (kind := value.WhichOneof("parameter_choice"))
    }


def _with_hint(exc: PersistkitError, status: int) -> RepositoryRequestError:
    """``exc`` as REST words it (``message (hint)``), with the status REST answers."""
    hint = exc.hint_for("http")
    message = f"{exc.message} ({hint})" if hint else exc.message
    return RepositoryRequestError(message, hint="", status=status)
