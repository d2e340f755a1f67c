"""The platform interceptor's less travelled paths: generated request ids, undecodable requests, codes set
without raising, cancelled calls, metric children, context variables, and the start-up heap freeze."""

from __future__ import annotations

import asyncio
import gc
import re
from collections.abc import Sequence
from typing import Any

import grpc
import pytest
from google.rpc import error_details_pb2
from grpc_health.v1 import health_pb2
from grpc_status import rpc_status
from kit_echo import POLICY, method
from kit_harness import Harness
from prometheus_client import CollectorRegistry

from services.kit.auth import Role, mint_token, principal_var
from services.kit.interceptors import PlatformInterceptor, RpcMetrics
from services.kit.logging import _RequestIds, new_request_id, request_id_var
from services.kit.server import freeze_startup_heap

SAFE_ID = re.compile(r"^[A-Za-z0-9._:\-]{1,128}$")


def test_generated_request_ids_are_unique_32_hex_and_log_safe() -> None:
    ids = [new_request_id() for _ in range(20_000)]
    assert len(set(ids)) == len(ids)
    assert all(len(i) == 32 and int(i, 16) >= 0 and SAFE_ID.match(i) for i in ids)
    # One process's ids share their random half; the counter half does not read as a call count.
    assert len({i[:16] for i in ids}) == 1
    assert ids[1][16:] != f"{2:016x}"


def test_a_reseeded_generator_does_not_repeat_ids() -> None:
    # What a forked child does (os.register_at_fork): it must not repeat its parent's ids.
    ids = _RequestIds()
    before = [ids() for _ in range(100)]
    ids.reseed()
    after = [ids() for _ in range(100)]
    assert not set(before) & set(after)
    assert before[0][:16] != after[0][:16]


async def parse_call(harness: Harness, body: bytes, *extra: tuple[str, str], role: Role | None = Role.VIEWER):
    return await harness.channel.unary_unary(method("Parse"))(
        body, metadata=harness.metadata(*extra, role=role), timeout=5
    )


async def test_decodable_request_reaches_the_handler(harness: Harness) -> None:
    body = health_pb2.HealthCheckRequest(service="svc").SerializeToString()
    assert await parse_call(harness, body) == b"svc"


@pytest.mark.parametrize("kind", ["unary", "stream"])
async def test_undecodable_request_bytes_are_invalid_argument(harness: Harness, kind: str) -> None:
    garbage = b"\xff\xff\xff"
    with pytest.raises(grpc.aio.AioRpcError) as info:
        if kind == "unary":
            await parse_call(harness, garbage, ("x-request-id", "bad-bytes-1"))
        else:
            good = health_pb2.HealthCheckRequest(service="a").SerializeToString()
            await harness.channel.stream_unary(method("ParseStream"))(
                iter([good, garbage]), metadata=harness.metadata(("x-request-id", "bad-bytes-1")), timeout=5
            )
    error = info.value
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT
    status = rpc_status.from_call(error)
    assert status is not None
    [packed] = [d for d in status.details if d.Is(error_details_pb2.BadRequest.DESCRIPTOR)]
    bad_request = error_details_pb2.BadRequest()
    packed.Unpack(bad_request)
    assert [v.field for v in bad_request.field_violations] == ["request"]
    assert dict(error.trailing_metadata())["x-request-id"] == "bad-bytes-1"


async def test_authentication_comes_before_decoding(harness: Harness) -> None:
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await parse_call(harness, b"\xff\xff\xff", role=None)
    assert info.value.code() == grpc.StatusCode.UNAUTHENTICATED


def count(harness: Harness, name: str, code: str) -> float | None:
    return harness.registry.get_sample_value(
        "nova_grpc_server_requests_total", {"method": method(name), "code": code}
    )


async def eventually_counted(harness: Harness, name: str, code: str) -> None:
    # The server records a call after its status is sent, so the client can see the status first.
    async with asyncio.timeout(3):
        while count(harness, name, code) != 1:
            await asyncio.sleep(0.01)


async def test_code_set_without_raising_is_the_calls_code(harness: Harness) -> None:
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await harness.channel.unary_unary(method("Coded"))(b"", metadata=harness.metadata(), timeout=5)
    assert info.value.code() == grpc.StatusCode.NOT_FOUND
    assert len(dict(info.value.trailing_metadata())["x-request-id"]) == 32
    await eventually_counted(harness, "Coded", "NOT_FOUND")


async def test_call_cancelled_by_the_client_is_counted_cancelled(harness: Harness) -> None:
    call = harness.channel.unary_unary(method("Slow"))(b"5", metadata=harness.metadata(), timeout=10)
    await asyncio.sleep(0.2)
    call.cancel()
    with pytest.raises(asyncio.CancelledError):
        await call
    await eventually_counted(harness, "Slow", "CANCELLED")


def test_metric_children_are_looked_up_once_per_method_and_code() -> None:
    registry = CollectorRegistry()
    metrics = RpcMetrics(registry)
    lookups: list[dict[str, str]] = []
    labels = metrics.requests.labels

    def spy(**kwargs: str) -> Any:
        lookups.append(kwargs)
        return labels(**kwargs)

    metrics.requests.labels = spy  # type: ignore[method-assign]
    for code in ("OK", "OK", "NOT_FOUND", "OK"):
        metrics.observe("/a.B/C", code, 0.002)
    assert lookups == [{"method": "/a.B/C", "code": "OK"}, {"method": "/a.B/C", "code": "NOT_FOUND"}]
    sample = registry.get_sample_value
    assert sample("nova_grpc_server_requests_total", {"method": "/a.B/C", "code": "OK"}) == 3
    assert sample("nova_grpc_server_request_duration_seconds_count", {"method": "/a.B/C", "code": "OK"}) == 3
    assert (
        sample(
            "nova_grpc_server_request_duration_seconds_bucket",
            {"method": "/a.B/C", "code": "OK", "le": "0.001"},
        )
        == 0
    )
    assert sample("nova_grpc_server_requests_total", {"method": "/a.B/C", "code": "NOT_FOUND"}) == 1


class FakeContext:
    """What the interceptor reads and writes of a servicer context, for calls made without a server."""

    def __init__(self, metadata: Sequence[tuple[str, str]]):
        self._metadata = tuple(metadata)
        self.trailing: tuple[tuple[str, str], ...] = ()

    def invocation_metadata(self) -> tuple[tuple[str, str], ...]:
        return self._metadata

    def set_trailing_metadata(self, metadata: Sequence[tuple[str, str]]) -> None:
        self.trailing = tuple(metadata)

    def trailing_metadata(self) -> tuple[tuple[str, str], ...]:
        return self.trailing

    def code(self) -> None:
        return None


async def test_context_variables_are_restored_after_a_call() -> None:
    key = b"k" * 32
    interceptor = PlatformInterceptor(key, POLICY, RpcMetrics(CollectorRegistry()))
    seen: list[tuple[str | None, str]] = []

    async def behaviour(request: bytes, context: Any) -> bytes:
        principal = principal_var.get()
        assert principal is not None
        seen.append((request_id_var.get(), principal.subject))
        return request

    wrapped = interceptor.wrap(method("Echo"), grpc.unary_unary_rpc_method_handler(behaviour))
    token = f"Bearer {mint_token(key, 'dana', Role.VIEWER, 60)}"
    context = FakeContext([("authorization", token), ("x-request-id", "direct-1")])
    outer = request_id_var.set("outer")
    try:
        assert await wrapped.unary_unary(b"hi", context) == b"hi"
        assert request_id_var.get() == "outer" and principal_var.get() is None
    finally:
        request_id_var.reset(outer)
    assert seen == [("direct-1", "dana")]
    assert context.trailing == (("x-request-id", "direct-1"),)


def test_freeze_startup_heap_freezes_what_is_alive() -> None:
    gc.unfreeze()
    try:
        freeze_startup_heap()
        assert gc.get_freeze_count() > 0
    finally:
        gc.unfreeze()
