"""Server interceptors: request id, metrics, error mapping, authentication and authorization.

grpc.aio server interceptors only see the call details and return an ``RpcMethodHandler``; to act around
the call itself each interceptor rebuilds the handler with a wrapped behaviour. Every interceptor here
expresses its work as an async context manager entered around the behaviour (``around``), so one wrapper
(``wrap_handler``) serves all four RPC kinds, including async-generator streaming handlers.

``default_interceptors`` returns them in the order they must run, outermost first:

    RequestIdInterceptor   sets the request id before anything logs
    MetricsInterceptor     counts every outcome, including auth failures
    ErrorMappingInterceptor  turns DomainError (also auth's) into statuses, anything else into INTERNAL
    AuthInterceptor        UNAUTHENTICATED / PERMISSION_DENIED before the servicer runs
"""

from __future__ import annotations

import asyncio
import inspect
import logging
import re
import time
import uuid
from abc import abstractmethod
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from contextlib import AbstractAsyncContextManager, AsyncExitStack, asynccontextmanager, suppress
from dataclasses import dataclass
from typing import Any

import grpc
from grpc_status import rpc_status
from prometheus_client import CollectorRegistry, Counter, Histogram

from services.kit.auth import MethodPolicy, Principal, is_open_method, principal_var, verify_token
from services.kit.errors import DomainError, FieldViolation, InvalidArgument, Unauthenticated
from services.kit.logging import request_id_var

__all__ = [
    "REQUEST_ID_HEADER",
    "AuthInterceptor",
    "ChainInterceptor",
    "ErrorMappingInterceptor",
    "MetricsInterceptor",
    "RequestIdInterceptor",
    "RpcMetrics",
    "WrappingInterceptor",
    "default_interceptors",
    "wrap_handler",
]

log = logging.getLogger(__name__)

REQUEST_ID_HEADER = "x-request-id"
# Only ids that are safe to copy into logs and headers are taken from the caller.
_VALID_REQUEST_ID = re.compile(r"^[A-Za-z0-9._:\-]{1,128}$")

Around = Callable[[grpc.aio.ServicerContext], AbstractAsyncContextManager[None]]


def _wrap_single(behavior: Callable[..., Any], around: Around) -> Callable[..., Awaitable[Any]]:
    """Wrap a behaviour that returns one response (or writes with ``context.write`` and returns None)."""

    async def wrapped(request: Any, context: grpc.aio.ServicerContext) -> Any:
        async with around(context):
            result = behavior(request, context)
            if inspect.isawaitable(result):
                result = await result
            return result

    return wrapped


def _wrap_streaming(behavior: Callable[..., Any], around: Around) -> Callable[..., Any]:
    """Wrap a response-streaming behaviour, keeping its style (generator vs. ``context.write`` coroutine).

    grpc.aio picks the streaming protocol from the function type, so a coroutine must stay a coroutine and an
    async generator an async generator.
    """
    if inspect.iscoroutinefunction(behavior):
        return _wrap_single(behavior, around)

    async def wrapped(request: Any, context: grpc.aio.ServicerContext) -> AsyncIterator[Any]:
        async with around(context):
            responses = behavior(request, context)
            if hasattr(responses, "__aiter__"):
                async for response in responses:
                    yield response
            else:
                for response in responses:
                    yield response

    return wrapped


def wrap_handler(handler: grpc.RpcMethodHandler, around: Around) -> grpc.RpcMethodHandler:
    """Rebuild ``handler`` (any of the four kinds) so each call runs inside ``around(context)``."""
    kwargs = {
        "request_deserializer": handler.request_deserializer,
        "response_serializer": handler.response_serializer,
    }
    if handler.unary_unary is not None:
        return grpc.unary_unary_rpc_method_handler(_wrap_single(handler.unary_unary, around), **kwargs)
    if handler.unary_stream is not None:
        return grpc.unary_stream_rpc_method_handler(_wrap_streaming(handler.unary_stream, around), **kwargs)
    if handler.stream_unary is not None:
        return grpc.stream_unary_rpc_method_handler(_wrap_single(handler.stream_unary, around), **kwargs)
    if handler.stream_stream is not None:
        return grpc.stream_stream_rpc_method_handler(_wrap_streaming(handler.stream_stream, around), **kwargs)
    raise ValueError("RpcMethodHandler has no behaviour")


class WrappingInterceptor(grpc.aio.ServerInterceptor):
    """Base: subclasses implement ``around`` and get it applied to every handled method."""

    async def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], Awaitable[grpc.RpcMethodHandler]],
        handler_call_details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler:
        handler = await continuation(handler_call_details)
        if handler is None:  # unknown method: let the server answer UNIMPLEMENTED
            return None
        details = handler_call_details
        return wrap_handler(handler, lambda context: self.around(details, context))

    @abstractmethod
    def around(
        self, details: grpc.HandlerCallDetails, context: grpc.aio.ServicerContext
    ) -> AbstractAsyncContextManager[None]:
        """Context manager entered around one call of ``details.method``."""


def _metadata_value(details: grpc.HandlerCallDetails, key: str) -> str | None:
    for item_key, value in details.invocation_metadata or ():
        if item_key == key:
            return value.decode() if isinstance(value, bytes) else value
    return None


class RequestIdInterceptor(WrappingInterceptor):
    """Takes ``x-request-id`` from the caller (or makes one), exposes it to logs, and echoes it back.

    The id goes back in *trailing* metadata, with the status. Sending it as initial metadata at the start of
    the call would make the client's gRPC see response headers at once, and an attempt that has received
    headers is committed: gRPC never retries it, so a replica killed or restarted in the middle of a call
    would fail the call instead of having it retried on another replica (``services.kit.clients``). With no
    early headers the headers travel with the answer, and every attempt cut short before it is retryable.
    Handlers that set trailing metadata of their own must keep what is there
    (``context.trailing_metadata()``).
    """

    @asynccontextmanager
    async def around(
        self, details: grpc.HandlerCallDetails, context: grpc.aio.ServicerContext
    ) -> AsyncIterator[None]:
        incoming = _metadata_value(details, REQUEST_ID_HEADER)
        request_id = incoming if incoming and _VALID_REQUEST_ID.match(incoming) else uuid.uuid4().hex
        token = request_id_var.set(request_id)
        try:
            context.set_trailing_metadata(((REQUEST_ID_HEADER, request_id),))
            yield
        finally:
            # A generator closed from another context cannot reset; the call's context dies with it anyway.
            with suppress(ValueError):
                request_id_var.reset(token)


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

    def observe(self, method: str, code: str, seconds: float) -> None:
        self.requests.labels(method=method, code=code).inc()
        self.latency.labels(method=method, code=code).observe(seconds)


def _code_name(context: grpc.aio.ServicerContext, default: str) -> str:
    code = context.code()
    if isinstance(code, grpc.StatusCode):
        return str(code.name)
    if isinstance(code, int):
        for candidate in grpc.StatusCode:
            if candidate.value[0] == code:
                return str(candidate.name)
    return default


class MetricsInterceptor(WrappingInterceptor):
    """Counts calls and their latency per method and final status code."""

    def __init__(self, metrics: RpcMetrics):
        self._metrics = metrics

    @asynccontextmanager
    async def around(
        self, details: grpc.HandlerCallDetails, context: grpc.aio.ServicerContext
    ) -> AsyncIterator[None]:
        start = time.perf_counter()
        code = "OK"
        try:
            yield
            code = _code_name(context, "OK")
        except grpc.aio.AbortError:
            code = _code_name(context, "UNKNOWN")
            raise
        except asyncio.CancelledError:
            code = "CANCELLED"
            raise
        except GeneratorExit:  # the stream consumer went away before the end
            code = "CANCELLED"
            raise
        except BaseException:
            code = "UNKNOWN"
            raise
        finally:
            self._metrics.observe(details.method, code, time.perf_counter() - start)


@dataclass(frozen=True, slots=True)
class UndecodableRequest:
    """Stands in for a request message whose bytes did not parse (see ``decode_errors_as_invalid``)."""

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


async def _checked_stream(requests: AsyncIterator[Any]) -> AsyncIterator[Any]:
    async for request in requests:
        if isinstance(request, UndecodableRequest):
            raise _invalid(request)
        yield request


def decode_errors_as_invalid(handler: grpc.RpcMethodHandler) -> grpc.RpcMethodHandler:
    """Malformed request bytes become INVALID_ARGUMENT naming the request, not grpc's INTERNAL: a client
    error must look like one. The parse failure is carried to the behaviour, which raises inside the error
    mapping."""
    behavior = handler.unary_unary or handler.unary_stream or handler.stream_unary or handler.stream_stream
    if handler.request_streaming:

        def fix(request: Any) -> Any:
            return _checked_stream(request)
    else:

        def fix(request: Any) -> Any:
            if isinstance(request, UndecodableRequest):
                raise _invalid(request)
            return request

    streaming_out = handler.response_streaming and not inspect.iscoroutinefunction(behavior)
    if streaming_out:

        async def checked_gen(request: Any, context: grpc.aio.ServicerContext) -> AsyncIterator[Any]:
            responses = behavior(fix(request), context)
            if hasattr(responses, "__aiter__"):
                async for response in responses:
                    yield response
            else:
                for response in responses:
                    yield response

        new_behavior: Callable[..., Any] = checked_gen
    else:

        async def checked(request: Any, context: grpc.aio.ServicerContext) -> Any:
            result = behavior(fix(request), context)
            return await result if inspect.isawaitable(result) else result

        new_behavior = checked
    kwargs = {
        "request_deserializer": _tolerant(handler.request_deserializer),
        "response_serializer": handler.response_serializer,
    }
    factory = {
        (False, False): grpc.unary_unary_rpc_method_handler,
        (False, True): grpc.unary_stream_rpc_method_handler,
        (True, False): grpc.stream_unary_rpc_method_handler,
        (True, True): grpc.stream_stream_rpc_method_handler,
    }[(handler.request_streaming, handler.response_streaming)]
    return factory(new_behavior, **kwargs)


class ErrorMappingInterceptor(WrappingInterceptor):
    """The one place where exceptions become statuses.

    DomainError -> its code with ``google.rpc.Status`` details (readable with ``rpc_status.from_call``).
    Anything else -> INTERNAL with a generic message naming the request id; the traceback is logged, never
    sent.
    """

    @asynccontextmanager
    async def around(
        self, details: grpc.HandlerCallDetails, context: grpc.aio.ServicerContext
    ) -> AsyncIterator[None]:
        try:
            yield
        except grpc.aio.AbortError:  # the handler aborted with a status of its own choosing
            raise
        except DomainError as exc:
            log.info(
                "%s failed: %s %s",
                details.method,
                exc.code.name,
                exc.message,
                extra={"method": details.method, "code": exc.code.name, "reason": exc.reason},
            )
            status = rpc_status.to_status(exc.to_status())
            # abort() replaces the trailing metadata set so far; keep it (the request id) beside the details.
            await context.abort(
                status.code, status.details, (*(context.trailing_metadata() or ()), *status.trailing_metadata)
            )
        except Exception:
            request_id = request_id_var.get() or "unknown"
            log.exception(
                "unhandled error in %s",
                details.method,
                extra={"method": details.method, "request_id": request_id},
            )
            await context.abort(grpc.StatusCode.INTERNAL, f"internal error (request id {request_id})")

    async def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], Awaitable[grpc.RpcMethodHandler]],
        handler_call_details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler:
        handler = await continuation(handler_call_details)
        if handler is None:
            return None
        details = handler_call_details
        return wrap_handler(decode_errors_as_invalid(handler), lambda context: self.around(details, context))


class AuthInterceptor(WrappingInterceptor):
    """Verifies ``authorization: Bearer <jwt>`` and checks the role against the method policy.

    Open methods (health, reflection) skip both checks. The principal is available to handlers through
    ``services.kit.auth.principal_var``.
    """

    def __init__(self, key: bytes, policy: MethodPolicy):
        self._key = key
        self._policy = policy

    def authenticate(self, details: grpc.HandlerCallDetails) -> Principal:
        header = _metadata_value(details, "authorization")
        if header is None:
            raise Unauthenticated("missing authorization metadata", reason="TOKEN_MISSING")
        scheme, _, token = header.strip().partition(" ")
        if scheme.lower() != "bearer" or not token.strip():
            raise Unauthenticated("authorization must be 'Bearer <token>'", reason="TOKEN_MISSING")
        return verify_token(self._key, token.strip())

    @asynccontextmanager
    async def around(
        self, details: grpc.HandlerCallDetails, context: grpc.aio.ServicerContext
    ) -> AsyncIterator[None]:
        if is_open_method(details.method):
            yield
            return
        principal = self.authenticate(details)
        self._policy.authorize(details.method, principal)
        token = principal_var.set(principal)
        try:
            yield
        finally:
            with suppress(ValueError):
                principal_var.reset(token)


@dataclass(frozen=True, slots=True)
class _CallDetails:
    """The two fields of ``grpc.HandlerCallDetails`` the layers read, taken from the call's context."""

    method: str
    invocation_metadata: Sequence[tuple[str, str | bytes]]


class ChainInterceptor(grpc.aio.ServerInterceptor):
    """Several wrapping interceptors run as ONE server interceptor, outermost first.

    grpc.aio calls every interceptor on every call, and each would rebuild the method's handler: composed
    here, a method's wrapped handler is built once and reused, and each call only enters the layers'
    context managers. Behaviour is that of nesting the layers (an ``AsyncExitStack`` unwinds like nested
    ``async with``), with malformed request bytes turned into INVALID_ARGUMENT inside the error mapping.
    """

    def __init__(self, layers: Sequence[WrappingInterceptor]):
        self._layers = tuple(layers)
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
        wrapped = wrap_handler(
            decode_errors_as_invalid(handler), lambda context: self._around(method, context)
        )
        self._wrapped[method] = (handler, wrapped)
        return wrapped

    @asynccontextmanager
    async def _around(self, method: str, context: grpc.aio.ServicerContext) -> AsyncIterator[None]:
        details = _CallDetails(method, tuple(context.invocation_metadata() or ()))
        async with AsyncExitStack() as stack:
            for layer in self._layers:
                await stack.enter_async_context(layer.around(details, context))  # type: ignore[arg-type]
            yield


def default_interceptors(
    key: bytes, policy: MethodPolicy, registry: CollectorRegistry
) -> Sequence[grpc.aio.ServerInterceptor]:
    """The chain every service uses: request id, metrics, error mapping, auth (outermost first)."""
    return (
        ChainInterceptor(
            (
                RequestIdInterceptor(),
                MetricsInterceptor(RpcMetrics(registry)),
                ErrorMappingInterceptor(),
                AuthInterceptor(key, policy),
            )
        ),
    )
