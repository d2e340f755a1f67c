"""Composition root of the gateway: ``create_app(settings)`` wires auth, upstreams, routes, dashboard."""

from __future__ import annotations

import asyncio
import http
from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import grpc
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import FileResponse, JSONResponse
from fastapi.staticfiles import StaticFiles
from prometheus_client import CollectorRegistry
from starlette.exceptions import HTTPException as StarletteHTTPException

from gateway import api, probes, session
from gateway.auth import Authorizer
from gateway.middleware import GatewayMetrics, RequestMiddleware
from gateway.policy import upstream_policy
from gateway.routing import ExactRoutes
from gateway.settings import GatewaySettings
from gateway.status import ApiError, error_response
from gateway.upstreams import Upstreams
from gateway.users import LoginThrottle, UserStore
from services.kit.auth import MethodPolicy

__all__ = ["API_PREFIX", "OPENAPI_URL", "STATIC_DIR", "create_app"]

API_PREFIX = "/api/v1"
OPENAPI_URL = f"{API_PREFIX}/openapi.json"
STATIC_DIR = Path(__file__).parent / "static"

_DESCRIPTION = """\
HTTP JSON over the Nova Corrente services' gRPC APIs, for dashboards. Each operation maps to one gRPC
method (`x-grpc-method`) and requires a bearer token whose role that method's policy allows; the token
is forwarded to the service. Errors share one body (`ErrorBody`); gRPC codes map to HTTP statuses in one
table (INVALID_ARGUMENT 400, UNAUTHENTICATED 401, PERMISSION_DENIED 403, NOT_FOUND 404, ALREADY_EXISTS /
ABORTED / FAILED_PRECONDITION 409, RESOURCE_EXHAUSTED 429, UNAVAILABLE 503 + Retry-After,
DEADLINE_EXCEEDED 504, upstream failures 502). Every figure carries its provenance.
"""


# FastAPI documents these for every operation that takes input; _validation_error answers 400 instead.
_VALIDATION_SCHEMAS = ("HTTPValidationError", "ValidationError")


def _validation_error(_: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, RequestValidationError)
    violations = [
        (".".join(str(part) for part in err.get("loc", ())), str(err.get("msg", "invalid")))
        for err in exc.errors()
    ]
    message = "; ".join(f"{f}: {d}" for f, d in violations) or "invalid request"
    return error_response(
        ApiError(
            grpc.StatusCode.INVALID_ARGUMENT, message, reason="INVALID_REQUEST", field_violations=violations
        )
    )


def _http_error(_: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, StarletteHTTPException)
    codes = {404: grpc.StatusCode.NOT_FOUND, 401: grpc.StatusCode.UNAUTHENTICATED}
    code = codes.get(exc.status_code, grpc.StatusCode.UNKNOWN)
    try:
        name = code.name if exc.status_code in codes else http.HTTPStatus(exc.status_code).name
    except ValueError:
        name = "HTTP_ERROR"
    error = ApiError(code, str(exc.detail), status=exc.status_code, code_name=name)
    return error_response(error, headers=exc.headers)


def _without_validation_errors(doc: dict[str, Any]) -> dict[str, Any]:
    """Drop FastAPI's 422 responses and their schemas: invalid requests get 400 with ``ErrorBody`` here."""
    for item in doc.get("paths", {}).values():
        for operation in item.values():
            if isinstance(operation, dict):
                operation.get("responses", {}).pop("422", None)
    schemas = doc.get("components", {}).get("schemas", {})
    for name in _VALIDATION_SCHEMAS:
        schemas.pop(name, None)
    return doc


def _use_gateway_openapi(app: FastAPI) -> None:
    """Serve the generated document without the 422s, built once and cached as FastAPI caches its own."""
    generate = app.openapi

    def openapi() -> dict[str, Any]:
        if not app.openapi_schema:
            app.openapi_schema = _without_validation_errors(generate())
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]


def _api_error(_: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, ApiError)
    return error_response(exc)


def create_app(
    settings: GatewaySettings,
    *,
    channels: Mapping[str, grpc.aio.Channel] | None = None,
    policy: MethodPolicy | None = None,
    jwt_key: bytes | None = None,
    registry: CollectorRegistry | None = None,
) -> FastAPI:
    """The gateway as an ASGI app.

    Args:
        channels: channels to the upstreams by name (``ingestion``, ``analytics``, ``forecast``), owned by the
            caller; missing ones are opened from the settings' targets on first use and closed on shutdown.
        policy: the upstream method policy; defaults to the services' own (``gateway.policy``).
        jwt_key: HS256 key; defaults to ``settings.jwt_key()``.
        registry: Prometheus registry for /metrics; a private one when omitted.
    """
    key = jwt_key if jwt_key is not None else settings.jwt_key()
    upstreams = Upstreams(settings, channels)
    metrics = GatewayMetrics(registry if registry is not None else CollectorRegistry())

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        yield
        app.state.shutdown.set()
        await upstreams.close()

    app = FastAPI(
        title="Nova Corrente gateway",
        version="1.0.0",
        description=_DESCRIPTION,
        openapi_url=OPENAPI_URL,
        # The interactive docs pages load their scripts from a CDN; the document itself is enough.
        docs_url=None,
        redoc_url=None,
        lifespan=lifespan,
        # The gateway's telemetry is its Prometheus registry and JSON access log. FastAPI's OpenTelemetry
        # hooks would otherwise look the global providers up on every request, to find none configured.
        telemetry={"tracing": False, "metrics": False, "logs": False},
    )
    app.state.settings = settings
    app.state.jwt_key = key
    app.state.authorizer = Authorizer(key, policy if policy is not None else upstream_policy())
    app.state.upstreams = upstreams
    app.state.metrics = metrics
    app.state.shutdown = asyncio.Event()
    app.state.users = UserStore(settings.users_file) if settings.users_file is not None else None
    app.state.login_throttle = LoginThrottle(settings.login_max_failures, settings.login_lockout_seconds)

    app.add_exception_handler(ApiError, _api_error)
    app.add_exception_handler(RequestValidationError, _validation_error)
    app.add_exception_handler(StarletteHTTPException, _http_error)
    # Added first, so it runs inside RequestMiddleware. api.router is included without a prefix of its own:
    # its routes' paths are the paths requests use.
    app.add_middleware(ExactRoutes, fastapi=app, routes=api.router.routes)
    app.add_middleware(RequestMiddleware, metrics=metrics)

    app.include_router(session.router)
    app.include_router(api.router)
    app.include_router(probes.router)
    _use_gateway_openapi(app)

    static = settings.static_dir or STATIC_DIR
    app.mount("/static", StaticFiles(directory=static), name="static")

    @app.get("/", include_in_schema=False)
    async def index() -> FileResponse:
        return FileResponse(static / "index.html", headers={"Cache-Control": "no-cache"})

    return app
