"""The platform's server interceptor: request id, metrics, error mapping, authentication and authorization.

grpc.aio server interceptors only see the call details and return an ``RpcMethodHandler``; to act around
the call itself the interceptor returns a twin of the method's handler whose behaviour does the four jobs
around the servicer's. The twin is built once per method and reused (grpc.aio asks on every call).

Per call, outermost first:

    request id     taken from ``x-request-id`` (or made), exposed to logs, echoed in trailing metadata
    metrics        every outcome counted and timed per method and final code, auth failures included
    error mapping  DomainError (also auth's and undecodable requests') -> its status with details; anything
                   else -> INTERNAL with a generic message, logged with the traceback and request id
    auth           UNAUTHENTICATED / PERMISSION_DENIED per method policy, before the servicer runs

The jobs are written out inline in one coroutine (one async generator for streamed responses) with
try/except rather than as nested async context managers: at thousands of calls a second the context-manager
machinery (a generator, an exit stack, enter/exit coroutines per layer) cost more than the jobs themselves.
"""

from __future__ import annotations

import asyncio
import inspect
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from contextlib import suppress
from dataclasses import dataclass
from typing import Any

import grpc
from grpc_status import rpc_status
from prometheus_client import CollectorRegistry, Counter, Histogram

from services.kit.auth import MethodPolicy, Principal, is_open_method, principal_var, verify_token
from services.kit.errors import DomainError, FieldViolation, InvalidArgument, Unauthenticated
from services.kit.logging import request_id_from, request_id_var

__all__ = [
    "REQUEST_ID_HEADER",
    "PlatformInterceptor",
    "RpcMetrics",
    "UndecodableRequest",
    "default_interceptors",
]

log = logging.getLogger(__name__)

REQUEST_ID_HEADER = "x-request-id"
# Only ids that are safe to copy into logs and headers are taken from the caller.

_perf_counter = time.perf_counter


class RpcMetrics:
    """Prometheus instruments for served RPCs, registered on the given registry (not the global one)."""

    def __init__(self, registry: CollectorRegistry):
        self.requests = Counter(
            "nova_grpc_server_requests",
            "gRPC calls served, by full method name and final status code.",
            ["method", "code"],
            registry=registry,
        )
        self.latency = Histogram(
            "nova_grpc_server_request_duration_seconds",
            "Time from the start of a call to its final status (whole stream for streaming calls).",
            ["method", "code"],
            registry=registry,
            buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30),
        )
        # (method, code) -> the two labelled children: ``labels()`` validates, sorts and locks on every
        # lookup. Bounded by the served methods times the status codes.
        self._children: dict[tuple[str, str], tuple[Any, Any]] = {}

    def observe(self, method: str, code: str, seconds: float) -> None:
        children = self._children.get((method, code))
        if children is None:
            children = self._children[(method, code)] = (
                self.requests.labels(method=method, code=code),
                self.latency.labels(method=method, code=code),
            )
        children[0].inc()
        children[1].observe(seconds)


def _code_name(context: grpc.aio.ServicerContext, default: str) -> str:
    """The status code a handler set (``set_code`` or ``abort``), or ``default`` when it set none."""
    code = context.code()
    if code is None:
        return default
    if isinstance(code, grpc.StatusCode):
        return str(code.name)
    if isinstance(code, int):
        for candidate in grpc.StatusCode:
            if candidate.value[0] == code:
                return str(candidate.name)
    return default


@dataclass(frozen=True, slots=True)
class UndecodableRequest:
    """Stands in for a request message whose bytes did not parse.

    Malformed request bytes must become INVALID_ARGUMENT naming the request, not grpc's INTERNAL: a client
    error must look like one. The deserializer cannot raise a status, so the parse failure is carried to the
    behaviour, where it is raised inside the error mapping (after authentication, like any other request
    check).
    """

    error: str


def _tolerant(deserializer: Callable[[bytes], Any] | None) -> Callable[[bytes], Any] | None:
    if deserializer is None:
        return None

    def parse(data: bytes) -> Any:
        try:
            return deserializer(data)
        except Exception as exc:  # DecodeError and friends: the client sent bytes that are not the message
            return UndecodableRequest(f"{type(exc).__name__}: {exc}")

    return parse


def _invalid(request: UndecodableRequest) -> InvalidArgument:
    return InvalidArgument([FieldViolation("request", f"not a valid request message ({request.error})")])


def _decoded(request: Any, request_streaming: bool) -> Any:
    """The request as the behaviour takes it; undecodable bytes are INVALID_ARGUMENT (streams: when read)."""
    if request_streaming:
        return _checked_stream(request)
    if type(request) is UndecodableRequest:
        raise _invalid(request)
    return request


async def _checked_stream(requests: AsyncIterator[Any]) -> AsyncIterator[Any]:
    async for request in requests:
        if type(request) is UndecodableRequest:
            raise _invalid(request)
        yield request


def _read_metadata(context: grpc.aio.ServicerContext) -> tuple[str | None, str | None]:
    """The first ``x-request-id`` and ``authorization`` values the caller sent, in one pass."""
    request_id = authorization = None
    for key, value in context.invocation_metadata() or ():
        if key == REQUEST_ID_HEADER:
            if request_id is None:
                request_id = value.decode() if isinstance(value, bytes) else value
        elif key == "authorization":
            if authorization is None:
                authorization = value.decode() if isinstance(value, bytes) else value
    return request_id, authorization


def _begin(context: grpc.aio.ServicerContext) -> tuple[str | None, Any]:
    """Set up the request id of a call; returns the authorization header and the id's context token.

    The id goes back in *trailing* metadata, with the status. Sending it as initial metadata at the start of
    the call would make the client's gRPC see response headers at once, and an attempt that has received
    headers is committed: gRPC never retries it, so a replica killed or restarted in the middle of a call
    would fail the call instead of having it retried on another replica (``services.kit.clients``). With no
    early headers the headers travel with the answer, and every attempt cut short before it is retryable.
    Handlers that set trailing metadata of their own must keep what is there
    (``context.trailing_metadata()``).
    """
    incoming, authorization = _read_metadata(context)
    request_id = request_id_from(incoming)
    token = request_id_var.set(request_id)
    context.set_trailing_metadata(((REQUEST_ID_HEADER, request_id),))
    return authorization, token


async def _abort_with(method: str, exc: Exception, context: grpc.aio.ServicerContext) -> None:
    """The error mapping: end the call with the status ``exc`` stands for (``abort`` raises AbortError)."""
    if isinstance(exc, DomainError):
        log.info(
            "%s failed: %s %s",
            method,
            exc.code.name,
            exc.message,
            extra={"method": method, "code": exc.code.name, "reason": exc.reason},
        )
        status = rpc_status.to_status(exc.to_status())
        # abort() replaces the trailing metadata set so far; keep it (the request id) beside the details.
        await context.abort(
            status.code, status.details, (*(context.trailing_metadata() or ()), *status.trailing_metadata)
        )
    else:
        request_id = request_id_var.get() or "unknown"
        log.error(
            "unhandled error in %s",
            method,
            exc_info=exc,
            extra={"method": method, "request_id": request_id},
        )
        await context.abort(grpc.StatusCode.INTERNAL, f"internal error (request id {request_id})")


def _authenticate(key: bytes, header: str | None) -> Principal:
    """Verify ``authorization: Bearer <jwt>``."""
    if header is None:
        raise Unauthenticated("missing authorization metadata", reason="TOKEN_MISSING")
    scheme, _, token = header.strip().partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        raise Unauthenticated("authorization must be 'Bearer <token>'", reason="TOKEN_MISSING")
    return verify_token(key, token.strip())


class PlatformInterceptor(grpc.aio.ServerInterceptor):
    """Request id, metrics, error mapping and auth around every method (see the module docstring).

    Open methods (health, reflection) skip authentication. The principal is available to handlers through
    ``services.kit.auth.principal_var``, the request id through ``services.kit.logging.request_id_var``.
    """

    def __init__(self, key: bytes, policy: MethodPolicy, metrics: RpcMetrics):
        self._key = key
        self._policy = policy
        self._metrics = metrics
        # method -> (the server's handler, its wrapped twin); bounded by the methods the server has.
        self._wrapped: dict[str, tuple[grpc.RpcMethodHandler, grpc.RpcMethodHandler]] = {}

    async def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], Awaitable[grpc.RpcMethodHandler]],
        handler_call_details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler:
        handler = await continuation(handler_call_details)
        if handler is None:  # unknown method: let the server answer UNIMPLEMENTED
            return None
        method = handler_call_details.method
        cached = self._wrapped.get(method)
        if cached is not None and cached[0] is handler:
            return cached[1]
        wrapped = self.wrap(method, handler)
        self._wrapped[method] = (handler, wrapped)
        return wrapped

    def wrap(self, method: str, handler: grpc.RpcMethodHandler) -> grpc.RpcMethodHandler:
        """The twin of ``handler`` (any of the four kinds) that does the platform's jobs around each call."""
        behavior = (
            handler.unary_unary or handler.unary_stream or handler.stream_unary or handler.stream_stream
        )
        if behavior is None:
            raise ValueError("RpcMethodHandler has no behaviour")
        # grpc.aio picks the streaming protocol from the function type: a coroutine that writes with
        # ``context.write`` must stay a coroutine, an (async) generator must stay an async generator.
        if handler.response_streaming and not inspect.iscoroutinefunction(behavior):
            new_behavior: Callable[..., Any] = self._streamed(method, behavior, handler.request_streaming)
        else:
            new_behavior = self._single(method, behavior, handler.request_streaming)
        factory = {
            (False, False): grpc.unary_unary_rpc_method_handler,
            (False, True): grpc.unary_stream_rpc_method_handler,
            (True, False): grpc.stream_unary_rpc_method_handler,
            (True, True): grpc.stream_stream_rpc_method_handler,
        }[(handler.request_streaming, handler.response_streaming)]
        return factory(
            new_behavior,
            request_deserializer=_tolerant(handler.request_deserializer),
            response_serializer=handler.response_serializer,
        )

    def _authorize(self, method: str, header: str | None) -> Any:
        """Authenticate and authorize the caller; returns the principal's context token."""
        principal = _authenticate(self._key, header)
        self._policy.authorize(method, principal)
        return principal_var.set(principal)

    def _single(
        self, method: str, behavior: Callable[..., Any], request_streaming: bool
    ) -> Callable[..., Awaitable[Any]]:
        """A behaviour that returns one response (or writes with ``context.write`` and returns None)."""
        is_open = is_open_method(method)
        is_coroutine = inspect.iscoroutinefunction(behavior)
        observe = self._metrics.observe
        authorize = self._authorize

        async def call(request: Any, context: grpc.aio.ServicerContext) -> Any:
            start = _perf_counter()
            authorization, id_token = _begin(context)
            principal_token = None
            code = "UNKNOWN"
            try:
                try:
                    if not is_open:
                        principal_token = authorize(method, authorization)
                    request = _decoded(request, request_streaming)
                    if is_coroutine:
                        result = await behavior(request, context)
                    else:
                        result = behavior(request, context)
                        if inspect.isawaitable(result):
                            result = await result
                except grpc.aio.AbortError:  # the handler aborted with a status of its own choosing
                    raise
                except Exception as exc:
                    await _abort_with(method, exc, context)
                code = _code_name(context, "OK")
                return result
            except grpc.aio.AbortError:
                code = _code_name(context, "UNKNOWN")
                raise
            except (asyncio.CancelledError, GeneratorExit):  # GeneratorExit: the coroutine was closed
                code = "CANCELLED"
                raise
            finally:
                if principal_token is not None:
                    principal_var.reset(principal_token)
                observe(method, code, _perf_counter() - start)
                request_id_var.reset(id_token)

        return call

    def _streamed(
        self, method: str, behavior: Callable[..., Any], request_streaming: bool
    ) -> Callable[..., AsyncIterator[Any]]:
        """A behaviour that yields its responses (async or plain generator)."""
        is_open = is_open_method(method)
        observe = self._metrics.observe
        authorize = self._authorize

        async def stream(request: Any, context: grpc.aio.ServicerContext) -> AsyncIterator[Any]:
            start = _perf_counter()
            authorization, id_token = _begin(context)
            principal_token = None
            code = "UNKNOWN"
            try:
                try:
                    if not is_open:
                        principal_token = authorize(method, authorization)
                    request = _decoded(request, request_streaming)
                    responses = behavior(request, context)
                    if hasattr(responses, "__aiter__"):
                        async for response in responses:
                            yield response
                    else:
                        for response in responses:
                            yield response
                except grpc.aio.AbortError:
                    raise
                except Exception as exc:
                    await _abort_with(method, exc, context)
                code = _code_name(context, "OK")
            except grpc.aio.AbortError:
                code = _code_name(context, "UNKNOWN")
                raise
            except (asyncio.CancelledError, GeneratorExit):  # GeneratorExit: the consumer went away
                code = "CANCELLED"
                raise
            finally:
                # A generator closed from another context cannot reset; the call's context dies with it.
                if principal_token is not None:
                    with suppress(ValueError):
                        principal_var.reset(principal_token)
                observe(method, code, _perf_counter() - start)
                with suppress(ValueError):
                    request_id_var.reset(id_token)

        return stream


def default_interceptors(
    key: bytes, policy: MethodPolicy, registry: CollectorRegistry
) -> Sequence[grpc.aio.ServerInterceptor]:
    """The interceptors every service uses (one, doing request id, metrics, error mapping and auth)."""
    return (PlatformInterceptor(key, policy, RpcMetrics(registry)),)
