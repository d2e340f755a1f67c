"""Error mapping through a real server, for every RPC kind, plus the metrics it records."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable

import grpc
import pytest
from google.rpc import error_details_pb2, status_pb2
from grpc_status import rpc_status
from kit_echo import SECRET, method
from kit_harness import Harness

Call = Callable[[Harness, bytes], Awaitable[list[bytes]]]


async def unary_unary(h: Harness, payload: bytes) -> list[bytes]:
    return [await h.channel.unary_unary(method("Echo"))(payload, metadata=h.metadata(), timeout=5)]


async def unary_stream(h: Harness, payload: bytes) -> list[bytes]:
    call = h.channel.unary_stream(method("Stream"))(payload, metadata=h.metadata(), timeout=5)
    return [item async for item in call]


async def unary_stream_writer(h: Harness, payload: bytes) -> list[bytes]:
    call = h.channel.unary_stream(method("WriteStream"))(payload, metadata=h.metadata(), timeout=5)
    return [item async for item in call]


async def stream_unary(h: Harness, payload: bytes) -> list[bytes]:
    requests = iter([b"ok", payload])
    return [await h.channel.stream_unary(method("Collect"))(requests, metadata=h.metadata(), timeout=5)]


async def stream_stream(h: Harness, payload: bytes) -> list[bytes]:
    call = h.channel.stream_stream(method("Chat"))(iter([b"ok", payload]), metadata=h.metadata(), timeout=5)
    return [item async for item in call]


KINDS = pytest.mark.parametrize(
    "invoke", [unary_unary, unary_stream, unary_stream_writer, stream_unary, stream_stream]
)


async def failing(invoke: Call, harness: Harness, payload: bytes) -> grpc.aio.AioRpcError:
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await invoke(harness, payload)
    return info.value


def detail(status: status_pb2.Status, kind: type) -> object:
    for packed in status.details:
        if packed.Is(kind.DESCRIPTOR):
            message = kind()
            packed.Unpack(message)
            return message
    raise AssertionError(f"no {kind.__name__} in {status.details}")


@KINDS
async def test_success_for_every_kind(harness: Harness, invoke: Call) -> None:
    assert await invoke(harness, b"hello")


@KINDS
async def test_invalid_argument_carries_field_violations(harness: Harness, invoke: Call) -> None:
    error = await failing(invoke, harness, b"invalid")
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT
    status = rpc_status.from_call(error)
    assert status is not None and status.code == grpc.StatusCode.INVALID_ARGUMENT.value[0]
    bad_request = detail(status, error_details_pb2.BadRequest)
    assert [(v.field, v.description) for v in bad_request.field_violations] == [
        ("quantity", "must be positive"),
        ("material_code", "unknown material"),
    ]
    info = detail(status, error_details_pb2.ErrorInfo)
    assert (info.reason, info.domain) == ("INVALID_ARGUMENT", "novacorrente")
    # The details did not displace the request id: both travel in the trailing metadata.
    assert len(dict(error.trailing_metadata())["x-request-id"]) == 32


@KINDS
async def test_unavailable_carries_retry_info(harness: Harness, invoke: Call) -> None:
    error = await failing(invoke, harness, b"unavailable")
    assert error.code() == grpc.StatusCode.UNAVAILABLE
    assert error.details() == "database is down"
    retry = detail(rpc_status.from_call(error), error_details_pb2.RetryInfo)
    assert retry.retry_delay.seconds == 3


@KINDS
async def test_unexpected_error_is_internal_without_leaking(
    harness: Harness, invoke: Call, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.ERROR, logger="services.kit.interceptors"):
        error = await failing(invoke, harness, b"boom")
    assert error.code() == grpc.StatusCode.INTERNAL
    assert SECRET not in (error.details() or "")
    request_id = dict(error.trailing_metadata())["x-request-id"]
    assert error.details() == f"internal error (request id {request_id})"
    assert rpc_status.from_call(error) is None  # no details that could carry the exception text
    [record] = [r for r in caplog.records if r.name == "services.kit.interceptors"]
    assert record.exc_info is not None and SECRET in str(record.exc_info[1])
    assert getattr(record, "request_id", None) == request_id


async def test_error_after_first_stream_message(harness: Harness) -> None:
    call = harness.channel.unary_stream(method("Stream"))(b"invalid", metadata=harness.metadata(), timeout=5)
    received = []
    with pytest.raises(grpc.aio.AioRpcError) as info:
        async for item in call:
            received.append(item)
    assert received == [b"first"]
    assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT


async def test_metrics_count_calls_by_method_and_code(harness: Harness) -> None:
    await unary_unary(harness, b"hello")
    await unary_unary(harness, b"hello")
    await failing(unary_unary, harness, b"invalid")
    await failing(unary_stream, harness, b"boom")
    with pytest.raises(grpc.aio.AioRpcError):
        await harness.channel.unary_unary(method("Echo"))(b"hi", timeout=5)  # no token

    def count(name: str, code: str) -> float | None:
        return harness.registry.get_sample_value(
            "nova_grpc_server_requests_total", {"method": method(name), "code": code}
        )

    # The server records a call after its status is sent, so the client can see the status first.
    expected = {
        ("Echo", "OK"): 2,
        ("Echo", "INVALID_ARGUMENT"): 1,
        ("Echo", "UNAUTHENTICATED"): 1,
        ("Stream", "INTERNAL"): 1,
    }
    for _ in range(200):
        if all(count(n, c) == v for (n, c), v in expected.items()):
            break
        await asyncio.sleep(0.01)
    assert count("Echo", "OK") == 2
    assert count("Echo", "INVALID_ARGUMENT") == 1
    assert count("Echo", "UNAUTHENTICATED") == 1
    assert count("Stream", "INTERNAL") == 1
    latency = harness.registry.get_sample_value(
        "nova_grpc_server_request_duration_seconds_count", {"method": method("Echo"), "code": "OK"}
    )
    assert latency == 2
