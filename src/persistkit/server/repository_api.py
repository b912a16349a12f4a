"""The OIP model-repository extension (as Triton implements it) and ``GET /metrics``.

* ``GET|POST /v2/repository/index``, body ``{"ready": true}`` optional: a JSON list of
  ``{"name", "version", "state", "reason"}``, one row per loaded version (``READY``) and one
  per other model of the store (``UNAVAILABLE`` with why, or ``LOADING``);
* ``POST /v2/repository/models/{name}/load``, body ``{"parameters": {...}}`` optional: load
  ``name`` from the store and serve it in place of what was served of it. Parameters:
  ``version`` (a number), ``alias`` (a name), or Triton's ``config`` holding only a
  ``version_policy`` (``{"specific": {"versions": [3]}}`` or ``{"latest": {"num_versions":
  1}}``), which is what ``tritonclient``'s ``load_model(name, config=...)`` sends;
* ``POST /v2/repository/models/{name}/unload``: stop serving every version of ``name``.

Success is 200 with an empty body (as Triton answers); every refusal is the OIP error body
``{"error": ...}``: 400 for a malformed request or a model that failed to load, 404 for a
model the store (or the server) does not have, 409 when runtime changes cannot apply
(several workers), 503 while start-up loading runs.
"""

from __future__ import annotations

import json
import logging
from typing import Any

import anyio.to_thread
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from persistkit.errors import (
    ArtifactNotFoundError,
    InputError,
    ModelNotServedError,
    PersistkitError,
    RefError,
)
from persistkit.server import metrics
from persistkit.server.repository import ModelRepository

logger = logging.getLogger("persistkit.server")
MAX_BODY_BYTES = 64 * 1024
LOAD_PARAMETERS = ("version", "alias", "config")


class RepositoryRequestError(InputError):
    """A repository request that cannot be answered as sent (answered with its status)."""

    def __init__(self, message: str, *, hint: str, status: int = 400) -> None:
        super().__init__(message, hint=hint)
        self.status = status


def error_response(status: int, exc: PersistkitError) -> JSONResponse:
    """The OIP error body, the hint (as the server's operator or client reads it) included."""
    hint = exc.hint_for("http")
    return JSONResponse({"error": f"{exc.message} ({hint})" if hint else exc.message}, status)


class RepositoryRoutes:
    """The repository extension's handlers bound to one repository. ``mutable`` is false
    when runtime loads cannot apply to the whole server (several worker processes)."""

    def __init__(self, repository: ModelRepository, *, mutable: bool = True) -> None:
        self.repository = repository
        self.mutable = mutable

    def all(self) -> list[Route]:
        models = "/v2/repository/models/{name}"
        return [
            Route("/v2/repository/index", self.index, methods=["GET", "POST"]),
            Route(models + "/load", self.load, methods=["POST"]),
            Route(models + "/unload", self.unload, methods=["POST"]),
            Route("/metrics", scrape),
        ]

    async def index(self, request: Request) -> Response:
        try:
            body = await _json_body(request)
            ready = body.pop("ready", False)
            _no_other_fields(body, "an index request", ["ready"])
            if not isinstance(ready, bool):
                raise _bad(f'"ready" must be true or false, not {_shown(ready)}')
        except RepositoryRequestError as exc:
            return error_response(exc.status, exc)
        rows = await anyio.to_thread.run_sync(lambda: self.repository.index(ready_only=ready))
        return JSONResponse([row.to_dict() for row in rows])

    async def load(self, request: Request) -> Response:
        name = request.path_params["name"]
        try:
            self._check_mutable("load")
            parameters = _parameters(await _json_body(request))
            _no_other_fields(dict(parameters), "load parameters", list(LOAD_PARAMETERS))
            version, alias = _load_target(parameters)
            await anyio.to_thread.run_sync(
                lambda: self.repository.load_model(name, version=version, alias=alias)
            )
        except RepositoryRequestError as exc:
            return error_response(exc.status, exc)
        except (RefError, InputError) as exc:
            return error_response(400, exc)
        except ArtifactNotFoundError as exc:
            return error_response(404, exc)
        except PersistkitError as exc:
            failed = PersistkitError(f"failed to load {name!r}: {exc.message}",
                                     hint=exc.hint_for("http"))  # fmt: skip
            return error_response(400, failed)
        return Response(status_code=200)

    async def unload(self, request: Request) -> Response:
        name = request.path_params["name"]
        try:
            self._check_mutable("unload")
            parameters = _parameters(await _json_body(request))
            dependents = parameters.pop("unload_dependents", False)
            _no_other_fields(parameters, "unload parameters", ["unload_dependents"])
            if not isinstance(dependents, bool):  # no model here has dependents
                raise _bad(f'"unload_dependents" must be true or false, not {_shown(dependents)}')
            await anyio.to_thread.run_sync(lambda: self.repository.unload_model(name))
        except RepositoryRequestError as exc:
            return error_response(exc.status, exc)
        except ModelNotServedError as exc:
            return error_response(404, exc)
        return Response(status_code=200)

    def _check_mutable(self, what: str) -> None:
        check_mutable(self.repository, mutable=self.mutable, what=what)


def check_mutable(repository: ModelRepository, *, mutable: bool, what: str) -> None:
    """Refuse a runtime ``what`` (load, unload) while start-up loading runs (503) or when it
    would reach one worker of several (409). REST and gRPC both ask this."""
    if not repository.started:
        raise RepositoryRequestError(
            "models are still loading",
            hint="retry when the server is ready (/v2/health/ready; gRPC: ServerReady)",
            status=503,
        )
    if not mutable:
        raise RepositoryRequestError(
            f"this server runs several worker processes, and a {what} request would "
            "change only the one that answers it",
            hint="serve with --workers 1 to load and unload at runtime, or restart the "
            "server naming the models to serve",
            status=409,
        )


async def scrape(request: Request) -> Response:
    """``GET /metrics``: the Prometheus text format (501 without ``prometheus_client``)."""
    if not metrics.available():
        return JSONResponse(
            {
                "error": "metrics need the prometheus-client package, which is not installed "
                f"(install it: {metrics.INSTALL_LINE}, then restart the server)"
            },
            status_code=501,
        )
    body, content_type = await anyio.to_thread.run_sync(metrics.exposition)
    return Response(body, headers={"Content-Type": content_type})


# -- request bodies ----------------------------------------------------------------------------
async def _json_body(request: Request) -> dict[str, Any]:
    """The body as a JSON object; an empty body is ``{}`` (tritonclient sends none)."""
    body = b""
    async for chunk in request.stream():
        body += chunk
        if len(body) > MAX_BODY_BYTES:
            raise _bad(f"the request body is larger than {MAX_BODY_BYTES} bytes", status=413)
    if not body.strip():
        return {}
    try:
        parsed = json.loads(body)
    except (ValueError, UnicodeDecodeError, RecursionError) as exc:
        raise _bad(f"the request body is not valid JSON: {exc}") from None
    if not isinstance(parsed, dict):
        raise _bad(f"the request body must be a JSON object, not {type(parsed).__name__}")
    return parsed


def _parameters(body: dict[str, Any]) -> dict[str, Any]:
    parameters = body.pop("parameters", {})
    _no_other_fields(body, "the request", ["parameters"])
    if not isinstance(parameters, dict):
        raise _bad(f'"parameters" must be a JSON object, not {_shown(parameters)}')
    return parameters


def _load_target(parameters: dict[str, Any]) -> tuple[int | None, str | None]:
    """``(version, alias)`` from the load parameters (at most one of them)."""
    version = parameters.get("version")
    alias = parameters.get("alias")
    if "config" in parameters:
        version = _policy_version(parameters["config"], version)
    if isinstance(version, str) and version.isdigit() and version.isascii():
        version = int(version)
    if version is not None and (
        isinstance(version, bool) or not isinstance(version, int) or version < 1
    ):
        raise _bad(f'"version" must be a version number (1, 2, ...), not {_shown(version)}')
    if alias is not None and not isinstance(alias, str):
        raise _bad(f'"alias" must be a string, not {_shown(alias)}')
    if version is not None and alias is not None:
        raise _bad('give "version" or "alias", not both')
    return version, alias


def _policy_version(config: Any, version: Any) -> Any:
    """The version a Triton model config's ``version_policy`` names (None for latest)."""
    if isinstance(config, str):
        try:
            config = json.loads(config)
        except (ValueError, RecursionError):
            raise _bad('"config" is not valid JSON') from None
    if not isinstance(config, dict) or set(config) - {"version_policy"}:
        raise _bad(
            '"config" may hold only a "version_policy"; persistkit reads everything else '
            "from the model's manifest"
        )
    policy = config.get("version_policy", {"latest": {"num_versions": 1}})
    specific = policy.get("specific") if isinstance(policy, dict) else None
    if isinstance(specific, dict) and len(policy) == 1:
        versions = specific.get("versions")
        if isinstance(versions, list) and len(versions) == 1 and version is None:
            return versions[0]
    elif policy == {"latest": {"num_versions": 1}} or policy == {"latest": {}}:
        return version
    raise _bad(
        f"unsupported version_policy {_shown(policy)}: persistkit loads one version per "
        'load, {"specific": {"versions": [N]}} or {"latest": {"num_versions": 1}}'
    )


def _no_other_fields(fields: dict[str, Any], what: str, known: list[str]) -> None:
    extra = sorted(set(fields) - set(known))
    if extra:
        raise _bad(
            f"{what} has unknown field(s) {', '.join(repr(k[:64]) for k in extra[:5])}; "
            f"known: {', '.join(repr(k) for k in known)}"
        )


def _bad(message: str, *, status: int = 400) -> RepositoryRequestError:
    return RepositoryRequestError(
        message, hint="see the OIP model-repository extension", status=status
    )


def _shown(value: Any) -> str:
    return json.dumps(value)[:80]
