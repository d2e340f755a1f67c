"""ASGI middleware: request id, Prometheus metrics, access log and security headers, in one pass.

Written as plain ASGI (not Starlette's BaseHTTPMiddleware) so that streaming responses (server-sent events)
flow through untouched and the request id context variable is visible to the route and to the outbound gRPC
calls it makes (the kit's client interceptor copies it into ``x-request-id``).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

import grpc
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

from services.kit.logging import request_id_from, request_id_var

__all__ = ["GatewayMetrics", "RequestMiddleware"]

log = logging.getLogger("gateway.access")

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]

_SECURITY_HEADERS = [
    (b"x-content-type-options", b"nosniff"),
    (b"referrer-policy", b"no-referrer"),
    (b"x-frame-options", b"DENY"),
    (
        b"content-security-policy",
        # Everything the dashboard needs is served from here; no CDN, no inline script.
        b"default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
        b"connect-src 'self'; object-src 'none'; base-uri 'none'; frame-ancestors 'none'",
    ),
]


class GatewayMetrics:
    """HTTP and upstream instruments on the app's own registry (never the process-global one)."""

    def __init__(self, registry: CollectorRegistry):
        self.registry = registry
        self.requests = Counter(
            "nova_http_requests",
            "HTTP requests served, by method, route template and status.",
            ["method", "route", "status"],
            registry=registry,
        )
        self.latency = Histogram(
            "nova_http_request_duration_seconds",
            "Time to the end of the response (whole stream for server-sent events).",
            ["method", "route"],
            registry=registry,
            buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30),
        )
        self.upstream = Counter(
            "nova_gateway_upstream_calls",
            "gRPC calls made for HTTP requests, by full method and status code.",
            ["method", "code"],
            registry=registry,
        )
        self.sse_streams = Gauge(
            "nova_gateway_sse_streams", "Open server-sent-event streams.", registry=registry
        )
        self._upstream_children: dict[tuple[str, str], Counter] = {}

    def count_upstream(self, method: str, code: str) -> None:
        """Count an upstream call of ``method`` that ended with ``code`` (labelled children kept)."""
        child = self._upstream_children.get((method, code))
        if child is None:
            child = self._upstream_children[(method, code)] = self.upstream.labels(method=method, code=code)
        child.inc()


def _route_template(scope: Scope) -> str:
    route = scope.get("route")
    path = getattr(route, "path", None)
    # Unmatched paths are not labels: a scanner must not be able to grow the metric without bound.
    return str(path) if path else "unmatched"


class RequestMiddleware:
    def __init__(self, app: ASGIApp, metrics: GatewayMetrics):
        self.app = app
        self.metrics = metrics
        # Labelled children by (method, route, status): ``labels()`` validates and joins its arguments on
        # every call, and the set of keys is as bounded as the labels themselves.
        self._children: dict[tuple[str, str, int], tuple[Counter, Histogram]] = {}

    def _observe(self, method: str, route: str, status: int, elapsed: float) -> None:
        key = (method, route, status)
        children = self._children.get(key)
        if children is None:
            children = self._children[key] = (
                self.metrics.requests.labels(method=method, route=route, status=str(status)),
                self.metrics.latency.labels(method=method, route=route),
            )
        children[0].inc()
        children[1].observe(elapsed)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        incoming = ""
        for key, value in scope.get("headers", ()):
            if key == b"x-request-id":
                incoming = value.decode("latin-1")
                break
        request_id = request_id_from(incoming)
        token = request_id_var.set(request_id)
        api = str(scope.get("path", "")).startswith("/api/")
        start = time.perf_counter()
        status = 500

        async def send_wrapper(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = int(message["status"])
                headers = list(message.get("headers", ()))
                if api and not any(k.lower() == b"cache-control" for k, _ in headers):
                    # Answers depend on the caller's token: no shared cache may keep them.
                    headers.append((b"cache-control", b"no-store"))
                headers.append((b"x-request-id", request_id.encode()))
                headers.extend(_SECURITY_HEADERS)
                message["headers"] = headers
            await send(message)

        started = False

        async def send_tracking(message: Message) -> None:
            nonlocal started
            started = started or message["type"] == "http.response.start"
            await send_wrapper(message)

        try:
            await self.app(scope, receive, send_tracking)
        except Exception:
            # The one place for failures of the gateway itself: logged with the request id, answered with
            # a generic 500 that names the id (never the traceback).
            log.exception("unhandled error in %s %s", scope.get("method", ""), scope.get("path", ""))
            if started:
                raise
            from gateway.status import ApiError, error_response

            error = ApiError(
                grpc.StatusCode.INTERNAL, f"internal error (request id {request_id})", status=500
            )
            await error_response(error)(scope, receive, send_tracking)
        finally:
            elapsed = time.perf_counter() - start
            route = _route_template(scope)
            method = scope.get("method", "")
            self._observe(method, route, status, elapsed)
            # The path only, never the query string: the alert stream may carry a token there.
            log.info(
                "%s %s %s",
                method,
                scope.get("path", ""),
                status,
                extra={"status": status, "route": route, "duration_ms": round(elapsed * 1000, 2)},
            )
            request_id_var.reset(token)
