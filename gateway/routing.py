"""The /api/v1 data routes: FastAPI's declarations, a shorter path per request.

FastAPI's generic dependency solver handles scopes, caches, generators, overrides, bodies and thread pools
on every request, and costs more CPU per request than everything else a data route does. The data routes use
a small subset of it: async dependencies that take the request and query parameters, query parameters, a
response model. For a route that uses only that subset, ``RpcRoute`` solves it directly, still with FastAPI's
own validation (each parameter's pydantic adapter, fed from the query as ``request_params_to_args`` feeds it)
and response serialisation (``serialize_response``), so the answers, the 400s and the OpenAPI document (built
from the same declarations) are the ones FastAPI gives. A route that needs more (a body, path parameters, a
streaming response, a dependency used twice), and every request made while ``dependency_overrides`` are set,
take FastAPI's own handler.

``ExactRoutes`` goes one step further for those routes: FastAPI's router tries each route and included router
in turn, twice for a route in an included router, then sets up exception handling and exit stacks per
request; a GET whose path is exactly one of these routes' paths needs none of that, so it is handed to the
route's handler from a dictionary, and the app's own exception handlers turn its errors into responses.
Everything else (other methods, other paths, trailing-slash redirects, 404s) goes through FastAPI unchanged.
tests/gateway/test_gateway_routing.py checks the two paths give the same answers.
"""

from __future__ import annotations

import copy
import inspect
from collections.abc import Awaitable, Callable, Coroutine, Iterable, MutableMapping
from typing import Any

from fastapi import FastAPI, Request, Response
from fastapi._compat import ModelField, field_annotation_is_sequence
from fastapi.datastructures import DefaultPlaceholder
from fastapi.dependencies.models import Dependant
from fastapi.dependencies.utils import request_params_to_args
from fastapi.exceptions import RequestValidationError
from fastapi.routing import APIRoute, serialize_response
from pydantic import BaseModel
from starlette.datastructures import QueryParams
from starlette.exceptions import HTTPException
from starlette.routing import BaseRoute

__all__ = ["ExactRoutes", "RpcRoute"]

Handler = Callable[[Request], Coroutine[Any, Any, Response]]
Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]
QueryReader = Callable[[QueryParams], tuple[dict[str, Any], list[Any]]]

_IMMUTABLE = (type(None), bool, int, float, str, bytes)


def _simple_query_field(field: ModelField) -> bool:
    """A query parameter named by its alias alone, of a plain type (no parameter model, no JSON)."""
    info = field.field_info
    annotation = info.annotation
    return (
        info.validation_alias is None
        and not (isinstance(annotation, type) and issubclass(annotation, BaseModel))
        and not any(type(item).__name__ == "Json" for item in info.metadata)
    )


def _query_reader(fields: list[ModelField]) -> QueryReader:
    """Reads and validates ``fields`` from a query string as ``request_params_to_args`` does.

    That function re-derives each parameter's alias, kind and default handling from its annotation on every
    call; here they are derived once. A parameter outside the simple case, and a missing required one (for
    FastAPI's exact error), go to ``request_params_to_args`` itself.
    """
    if not all(_simple_query_field(f) for f in fields):
        return lambda query: request_params_to_args(fields, query)
    plan = [
        (
            field,
            field.alias,
            field_annotation_is_sequence(field.field_info.annotation),
            ("query", field.alias),
            isinstance(field.default, _IMMUTABLE),
        )
        for field in fields
    ]

    def read(query: QueryParams) -> tuple[dict[str, Any], list[Any]]:
        values: dict[str, Any] = {}
        errors: list[Any] = []
        for field, alias, many, loc, immutable in plan:
            # ``alias in query`` first: getlist scans every parameter, membership is a dictionary lookup.
            raw = (query.getlist(alias) if alias in query else None) if many else query.get(alias)
            if raw is None or (many and not raw):
                info = field.field_info
                if info.is_required():
                    errors.extend(request_params_to_args([field], query)[1])
                    continue
                raw = field.default if immutable else copy.deepcopy(field.default)
                if not info.validate_default:
                    values[field.name] = raw
                    continue
            value, field_errors = field.validate(raw, values, loc=loc)
            if field_errors:
                errors.extend(field_errors)
            else:
                values[field.name] = value
        return values, errors

    return read


def _is_async(call: object) -> bool:
    # A security scheme such as HTTPBearer is an object with an async __call__.
    return inspect.iscoroutinefunction(call) or inspect.iscoroutinefunction(type(call).__call__)


def _plain(dependant: Dependant, seen: set[int]) -> bool:
    """True when ``dependant`` and its dependencies take nothing but the request and query parameters."""
    if (
        dependant.path_params
        or dependant.header_params
        or dependant.cookie_params
        or dependant.body_params
        or dependant.websocket_param_name
        or dependant.background_tasks_param_name
        or dependant.response_param_name
        or dependant.security_scopes_param_name
    ):
        return False
    for sub in dependant.dependencies:
        # A dependency listed twice would be called twice here (FastAPI calls it once per request).
        if id(sub.call) in seen or not _is_async(sub.call) or sub.name is None:
            return False
        seen.add(id(sub.call))
        if not _plain(sub, seen):
            return False
    return True


class _Solver:
    """Solves one dependant (and its dependencies, depth first) for a request, as ``solve_dependencies`` does
    for the subset ``_plain`` admits."""

    def __init__(self, dependant: Dependant):
        self._subs = [(str(sub.name), sub.call, _Solver(sub)) for sub in dependant.dependencies]
        self._query = _query_reader(dependant.query_params) if dependant.query_params else None
        self._request_names = [
            name
            for name in (dependant.request_param_name, dependant.http_connection_param_name)
            if name is not None
        ]

    async def __call__(self, request: Request) -> tuple[dict[str, Any], list[Any]]:
        values: dict[str, Any] = {}
        errors: list[Any] = []
        for name, call, solve in self._subs:
            sub_values, sub_errors = await solve(request)
            if sub_errors:
                errors.extend(sub_errors)
                continue
            values[name] = await call(**sub_values)  # type: ignore[misc]
        if self._query is not None:
            query_values, query_errors = self._query(request.query_params)
            values.update(query_values)
            errors.extend(query_errors)
        for name in self._request_names:
            values[name] = request
        return values, errors


class RpcRoute(APIRoute):
    """An ``APIRoute`` whose handler skips FastAPI's generic solver when the route allows it (see above)."""

    lean_handler: Handler | None
    """The short path, or None when the route needs FastAPI's; valid only while no overrides are set."""

    def get_route_handler(self) -> Handler:
        fallback = super().get_route_handler()
        self.lean_handler = lean = self._lean_handler() if self._lean() else None
        if lean is None:
            return fallback
        overrides = self.dependency_overrides_provider

        async def handler(request: Request) -> Response:
            if overrides is not None and getattr(overrides, "dependency_overrides", None):
                return await fallback(request)
            return await lean(request)

        return handler

    def _lean(self) -> bool:
        return (
            self.methods == {"GET"}
            and self.status_code is None
            and self.response_field is not None
            and isinstance(self.response_class, DefaultPlaceholder)
            and _is_async(self.dependant.call)
            and _plain(self.dependant, set())
        )

    def _lean_handler(self) -> Handler:
        endpoint = self.dependant.call
        assert endpoint is not None
        solve = _Solver(self.dependant)
        options: dict[str, Any] = {
            "field": self.response_field,
            "include": self.response_model_include,
            "exclude": self.response_model_exclude,
            "by_alias": self.response_model_by_alias,
            "exclude_unset": self.response_model_exclude_unset,
            "exclude_defaults": self.response_model_exclude_defaults,
            "exclude_none": self.response_model_exclude_none,
            # JSON bytes straight from pydantic's serializer, as FastAPI makes them for the default class.
            "dump_json": True,
        }

        async def lean(request: Request) -> Response:
            values, errors = await solve(request)
            if errors:
                raise RequestValidationError(errors)
            raw = await endpoint(**values)
            if isinstance(raw, Response):
                return raw
            content = await serialize_response(response_content=raw, **options)
            return Response(content=content, media_type="application/json")

        return lean


class ExactRoutes:
    """Pure ASGI middleware: a GET for exactly the path of a lean ``RpcRoute`` goes straight to its handler.

    Sits inside the request middleware (request id, metrics and access log still see every request) and in
    place of FastAPI's exception middleware for the requests it takes.
    """

    def __init__(self, app: ASGIApp, *, fastapi: FastAPI, routes: Iterable[BaseRoute]):
        self.app = app
        self._fastapi = fastapi
        self._routes: dict[str, RpcRoute] = {}
        for route in routes:
            if isinstance(route, RpcRoute) and route.lean_handler is not None and not route.param_convertors:
                # setdefault: of two routes with one path, FastAPI's router picks the first too.
                self._routes.setdefault(route.path, route)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        route = self._routes.get(scope["path"]) if scope["type"] == "http" else None
        if route is None or scope["method"] != "GET" or self._fastapi.dependency_overrides:
            await self.app(scope, receive, send)
            return
        scope["route"] = route
        scope["endpoint"] = route.endpoint
        scope["path_params"] = {}
        request = Request(scope, receive, send)
        try:
            response = await route.lean_handler(request)  # type: ignore[misc]
        except Exception as exc:
            response = await self._handled(request, exc)
        await response(scope, receive, send)

    async def _handled(self, request: Request, exc: Exception) -> Response:
        """The response of the app's exception handler for ``exc`` (re-raised when there is none)."""
        handlers = self._fastapi.exception_handlers
        handler = handlers.get(exc.status_code) if isinstance(exc, HTTPException) else None
        for cls in type(exc).__mro__:
            if handler is not None:
                break
            handler = handlers.get(cls)
        if handler is None:
            raise exc
        # The gateway's handlers only format a body; called inline rather than in a worker thread.
        response = handler(request, exc)
        if inspect.isawaitable(response):
            response = await response
        assert isinstance(response, Response)
        return response
