"""Request id propagation and dependency-driven health through a real server."""

from __future__ import annotations

import asyncio
from collections.abc import Callable

import grpc
import httpx
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from kit_echo import POLICY, SERVICE, handler, method
from kit_harness import Harness

from services.kit.server import GrpcServer
from services.kit.settings import ServiceSettings

SERVING = health_pb2.HealthCheckResponse.SERVING
NOT_SERVING = health_pb2.HealthCheckResponse.NOT_SERVING


async def test_request_id_is_echoed_and_seen_by_handler(harness: Harness) -> None:
    call = harness.channel.unary_unary(method("Echo"))(
        b"rid", metadata=harness.metadata(extra := ("x-request-id", "req-42.a:b")), timeout=5
    )
    assert await call == b"req-42.a:b"
    assert dict(await call.trailing_metadata())["x-request-id"] == extra[1]


@pytest.mark.parametrize("incoming", [None, "x" * 200, 'bad id {"level": "forged"}'])
async def test_missing_or_unsafe_request_id_is_replaced(harness: Harness, incoming: str | None) -> None:
    extra = () if incoming is None else (("x-request-id", incoming),)
    call = harness.channel.unary_unary(method("Echo"))(b"rid", metadata=harness.metadata(*extra), timeout=5)
    seen = (await call).decode()
    assert seen != incoming and len(seen) == 32 and int(seen, 16) >= 0
    assert dict(await call.trailing_metadata())["x-request-id"] == seen


async def test_streaming_response_carries_request_id(harness: Harness) -> None:
    call = harness.channel.unary_stream(method("Stream"))(
        b"rid", metadata=harness.metadata(("x-request-id", "stream-1")), timeout=5
    )
    assert [item async for item in call] == [b"first", b"stream-1", b"last"]
    assert dict(await call.trailing_metadata())["x-request-id"] == "stream-1"


async def wait_status(stub: health_pb2_grpc.HealthStub, service: str, expected: int) -> None:
    async with asyncio.timeout(3):
        while True:
            reply = await stub.Check(health_pb2.HealthCheckRequest(service=service), timeout=2)
            if reply.status == expected:
                return
            await asyncio.sleep(0.02)


async def test_health_follows_dependency_checks(harness: Harness) -> None:
    stub = health_pb2_grpc.HealthStub(harness.channel)
    await wait_status(stub, "", SERVING)
    harness.dependency.ok = False
    await wait_status(stub, "", NOT_SERVING)
    await wait_status(stub, SERVICE, NOT_SERVING)
    harness.dependency.ok = True
    await wait_status(stub, "", SERVING)
    await wait_status(stub, SERVICE, SERVING)
    assert harness.dependency.calls >= 3  # polled in the background, not once


async def test_raising_or_hanging_check_counts_as_failed(
    jwt_key: bytes, settings_factory: Callable[..., ServiceSettings]
) -> None:
    async def raises() -> bool:
        raise ConnectionError("refused")

    async def hangs() -> bool:
        await asyncio.sleep(60)
        return True

    for check in (raises, hangs):
        server = GrpcServer(
            settings_factory(health_poll_seconds=5), policy=POLICY, jwt_key=jwt_key, health_check_timeout=0.1
        )
        server.add_health_check("dep", check)
        await server.start()
        try:
            async with grpc.aio.insecure_channel(f"127.0.0.1:{server.port}") as channel:
                reply = await health_pb2_grpc.HealthStub(channel).Check(
                    health_pb2.HealthCheckRequest(), timeout=2
                )
                # The first check runs inside start(), so the very first answer is already the real state.
                assert reply.status == NOT_SERVING
        finally:
            await server.stop(0)


async def test_metrics_endpoint_serves_the_registry(
    jwt_key: bytes, settings_factory: Callable[..., ServiceSettings]
) -> None:
    server = GrpcServer(settings_factory(metrics_port=0), policy=POLICY, jwt_key=jwt_key)
    server.add_generic_rpc_handlers([handler()])
    await server.start()
    try:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{server.port}") as channel:
            with pytest.raises(grpc.aio.AioRpcError):
                await channel.unary_unary(method("Echo"))(b"x", timeout=2)
        assert server.metrics_port
        async with httpx.AsyncClient() as client:
            response = await client.get(f"http://127.0.0.1:{server.metrics_port}/metrics", timeout=5)
        assert response.status_code == 200
        assert (
            'nova_grpc_server_requests_total{code="UNAUTHENTICATED",method="/test.v1.EchoService/Echo"} 1.0'
            in (response.text)
        )
    finally:
        await server.stop(0)
    assert server.metrics_port is None


async def test_liveness_stays_serving_while_a_dependency_is_down() -> None:
    """Liveness must not follow the dependency checks, or a database outage would restart every replica."""
    import grpc
    from grpc_health.v1 import health_pb2, health_pb2_grpc

    from services.kit.auth import MethodPolicy
    from services.kit.server import LIVENESS, GrpcServer
    from services.kit.settings import ServiceSettings

    async def down() -> bool:
        return False

    server = GrpcServer(
        ServiceSettings(port=0, health_poll_seconds=0.05),
        policy=MethodPolicy({}),
        jwt_key=b"k" * 32,
        health_checks={"database": down},
    )
    await server.start()
    try:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{server.port}") as channel:
            stub = health_pb2_grpc.HealthStub(channel)
            overall = await stub.Check(health_pb2.HealthCheckRequest())
            live = await stub.Check(health_pb2.HealthCheckRequest(service=LIVENESS))
        assert overall.status == health_pb2.HealthCheckResponse.NOT_SERVING
        assert live.status == health_pb2.HealthCheckResponse.SERVING
    finally:
        await server.stop(0)
