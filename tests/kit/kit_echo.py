"""A bytes-in/bytes-out test service ("test.v1.EchoService") built from generic handlers.

Payload commands make a handler misbehave on purpose: ``invalid`` raises InvalidArgument, ``unavailable``
raises Unavailable, ``boom`` raises RuntimeError (with a secret in its text), ``whoami`` answers with the
caller's principal and ``rid`` with the request id seen by the handler. Streaming handlers send one response
before failing, so errors after the first message are covered too. ``Parse`` and ``ParseStream`` take a
protobuf message (``HealthCheckRequest``) so that undecodable request bytes can be sent; ``Coded`` ends the
call with NOT_FOUND through ``context.set_code`` without raising.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import grpc
from grpc_health.v1 import health_pb2

from services.kit.auth import PLAN, READ, WRITE, MethodPolicy, require_principal
from services.kit.errors import FieldViolation, InvalidArgument, Unavailable
from services.kit.logging import request_id_var

SERVICE = "test.v1.EchoService"
SECRET = "db password is hunter2"


def method(name: str) -> str:
    return f"/{SERVICE}/{name}"


POLICY = MethodPolicy(
    {
        method("Echo"): READ,
        method("Plan"): PLAN,
        method("Upload"): WRITE,
        method("Stream"): READ,
        method("WriteStream"): READ,
        method("Collect"): READ,
        method("Chat"): READ,
        method("Slow"): READ,
        method("Remaining"): READ,
        method("Parse"): READ,
        method("ParseStream"): READ,
        method("Coded"): READ,
        # "Unlisted" is served but deliberately absent: it must be denied.
    }
)


def answer(payload: bytes) -> bytes:
    if payload == b"invalid":
        raise InvalidArgument(
            [
                FieldViolation("quantity", "must be positive"),
                FieldViolation("material_code", "unknown material"),
            ]
        )
    if payload == b"unavailable":
        raise Unavailable("database is down", retry_after_seconds=3)
    if payload == b"boom":
        raise RuntimeError(SECRET)
    if payload == b"whoami":
        principal = require_principal()
        return f"{principal.subject}:{principal.role.value}".encode()
    if payload == b"rid":
        return (request_id_var.get() or "").encode()
    return payload


async def echo(request: bytes, context: grpc.aio.ServicerContext) -> bytes:
    return answer(request)


async def stream(request: bytes, context: grpc.aio.ServicerContext) -> AsyncIterator[bytes]:
    yield b"first"
    yield answer(request)
    yield b"last"


async def write_stream(request: bytes, context: grpc.aio.ServicerContext) -> None:
    # The reader/writer style of streaming: a coroutine calling context.write.
    await context.write(b"first")
    await context.write(answer(request))


async def collect(requests: AsyncIterator[bytes], context: grpc.aio.ServicerContext) -> bytes:
    parts = [answer(part) async for part in requests]
    return b"|".join(parts)


async def chat(requests: AsyncIterator[bytes], context: grpc.aio.ServicerContext) -> AsyncIterator[bytes]:
    async for part in requests:
        yield answer(part)


async def slow(request: bytes, context: grpc.aio.ServicerContext) -> bytes:
    await asyncio.sleep(float(request.decode() or "1"))
    return b"done"


async def remaining(request: bytes, context: grpc.aio.ServicerContext) -> bytes:
    """Seconds left before the call's deadline, as seen by the server ("None" without a deadline)."""
    left = context.time_remaining()
    return str(left).encode()


async def parse(request: health_pb2.HealthCheckRequest, context: grpc.aio.ServicerContext) -> bytes:
    return request.service.encode()


async def parse_stream(
    requests: AsyncIterator[health_pb2.HealthCheckRequest], context: grpc.aio.ServicerContext
) -> bytes:
    return b"|".join([request.service.encode() async for request in requests])


async def coded(request: bytes, context: grpc.aio.ServicerContext) -> bytes:
    context.set_code(grpc.StatusCode.NOT_FOUND)
    context.set_details("nothing here")
    return b""


def handler() -> grpc.GenericRpcHandler:
    parsed = {"request_deserializer": health_pb2.HealthCheckRequest.FromString}
    return grpc.method_handlers_generic_handler(
        SERVICE,
        {
            "Echo": grpc.unary_unary_rpc_method_handler(echo),
            "Plan": grpc.unary_unary_rpc_method_handler(echo),
            "Upload": grpc.unary_unary_rpc_method_handler(echo),
            "Unlisted": grpc.unary_unary_rpc_method_handler(echo),
            "Stream": grpc.unary_stream_rpc_method_handler(stream),
            "WriteStream": grpc.unary_stream_rpc_method_handler(write_stream),
            "Collect": grpc.stream_unary_rpc_method_handler(collect),
            "Chat": grpc.stream_stream_rpc_method_handler(chat),
            "Slow": grpc.unary_unary_rpc_method_handler(slow),
            "Remaining": grpc.unary_unary_rpc_method_handler(remaining),
            "Parse": grpc.unary_unary_rpc_method_handler(parse, **parsed),
            "ParseStream": grpc.stream_unary_rpc_method_handler(parse_stream, **parsed),
            "Coded": grpc.unary_unary_rpc_method_handler(coded),
        },
    )
