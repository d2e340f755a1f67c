"""Outbound channels: token, request id propagation, default deadline, retries and TLS."""

from __future__ import annotations

import asyncio
import shutil
import subprocess
from pathlib import Path

import grpc
import pytest
from kit_echo import method
from kit_harness import Harness

from services.kit.auth import READ, MethodPolicy, Role, TokenSource, mint_token
from services.kit.clients import open_channel
from services.kit.logging import request_id_var
from services.kit.server import GrpcServer
from services.kit.settings import ServiceSettings


async def test_channel_sends_token_request_id_and_default_deadline(harness: Harness) -> None:
    target = f"127.0.0.1:{harness.server.port}"
    async with open_channel(
        target, token_provider=TokenSource(harness.key, "forecast", Role.PLANNER), default_timeout=2
    ) as channel:
        assert await channel.unary_unary(method("Plan"))(b"whoami") == b"forecast:planner"

        token = request_id_var.set("outer-request-7")
        try:
            assert await channel.unary_unary(method("Echo"))(b"rid") == b"outer-request-7"
        finally:
            request_id_var.reset(token)
        # Metadata the caller sets explicitly wins over the channel's.
        viewer = mint_token(harness.key, "carol", Role.VIEWER, 60)
        explicit = (("authorization", f"Bearer {viewer}"), ("x-request-id", "explicit-1"))
        assert await channel.unary_unary(method("Echo"))(b"whoami", metadata=explicit) == b"carol:viewer"
        assert await channel.unary_unary(method("Echo"))(b"rid", metadata=explicit) == b"explicit-1"
        # Outside a served call every outbound call still gets an id of its own.
        assert len(await channel.unary_unary(method("Echo"))(b"rid")) == 32

        left = float(await channel.unary_unary(method("Remaining"))(b""))
        assert 0 < left <= 2.1  # deadline propagation rounds up slightly
        left = float(await channel.unary_unary(method("Remaining"))(b"", timeout=30))
        assert 5 < left <= 30.1


async def test_fixed_token_and_argument_checks(harness: Harness) -> None:
    token = mint_token(harness.key, "bob", Role.VIEWER, 60)
    async with open_channel(f"127.0.0.1:{harness.server.port}", token=token) as channel:
        assert await channel.unary_unary(method("Echo"))(b"whoami") == b"bob:viewer"
        with pytest.raises(grpc.aio.AioRpcError) as info:
            await channel.unary_unary(method("Plan"))(b"x")
        assert info.value.code() == grpc.StatusCode.PERMISSION_DENIED
    with pytest.raises(ValueError):
        open_channel("127.0.0.1:1", token="a", token_provider=lambda: "b")
    with pytest.raises(ValueError):
        open_channel("127.0.0.1:1", client_cert_path="cert.pem")


async def flaky_server(failures: int) -> tuple[grpc.aio.Server, int, list[int]]:
    """A plain server whose method answers UNAVAILABLE (trailers only) ``failures`` times, then OK."""
    attempts: list[int] = []

    async def flaky(request: bytes, context: grpc.aio.ServicerContext) -> bytes:
        attempts.append(1)
        if len(attempts) <= failures:
            await context.abort(grpc.StatusCode.UNAVAILABLE, "restarting")
        return b"ok"

    server = grpc.aio.server()
    server.add_generic_rpc_handlers(
        [
            grpc.method_handlers_generic_handler(
                "test.v1.Flaky", {"Call": grpc.unary_unary_rpc_method_handler(flaky)}
            )
        ]
    )
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    return server, port, attempts


async def test_unavailable_is_retried_by_the_service_config() -> None:
    server, port, attempts = await flaky_server(failures=2)
    try:
        # Without the retry policy the first UNAVAILABLE reaches the caller.
        async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as plain:
            with pytest.raises(grpc.aio.AioRpcError) as info:
                await plain.unary_unary("/test.v1.Flaky/Call")(b"", timeout=5)
            assert info.value.code() == grpc.StatusCode.UNAVAILABLE
        attempts.clear()
        async with open_channel(f"127.0.0.1:{port}", default_timeout=5) as channel:
            assert await channel.unary_unary("/test.v1.Flaky/Call")(b"") == b"ok"
        assert len(attempts) == 3
    finally:
        await server.stop(0)


async def test_retries_give_up_after_four_attempts() -> None:
    server, port, attempts = await flaky_server(failures=10)
    try:
        async with open_channel(f"127.0.0.1:{port}", default_timeout=5) as channel:
            with pytest.raises(grpc.aio.AioRpcError) as info:
                await channel.unary_unary("/test.v1.Flaky/Call")(b"")
        assert info.value.code() == grpc.StatusCode.UNAVAILABLE
        assert len(attempts) == 4
    finally:
        await server.stop(0)


def _replica(jwt_key: bytes, number: int, started: list[int], pinged: set[int]) -> GrpcServer:
    """A server of test.v1.Cut: ``Hold`` counts its start and answers after a second, ``Ping`` at once."""

    async def hold(request: bytes, context: grpc.aio.ServicerContext) -> bytes:
        started[number] += 1
        await asyncio.sleep(1.0)
        return b"done"

    async def ping(request: bytes, context: grpc.aio.ServicerContext) -> bytes:
        pinged.add(number)
        return b""

    server = GrpcServer(
        ServiceSettings(host="127.0.0.1", port=0, grace_seconds=0),
        policy=MethodPolicy({"/test.v1.Cut/Hold": READ, "/test.v1.Cut/Ping": READ}),
        jwt_key=jwt_key,
    )
    methods = {"Hold": hold, "Ping": ping}
    server.add_generic_rpc_handlers(
        [
            grpc.method_handlers_generic_handler(
                "test.v1.Cut", {name: grpc.unary_unary_rpc_method_handler(fn) for name, fn in methods.items()}
            )
        ]
    )
    return server


async def test_a_call_cut_by_a_replica_going_away_is_retried_on_the_other() -> None:
    """Round robin over two replicas; one stops without grace while calls are in flight on it. Its attempts
    had received no response headers (the request id travels in trailers), so gRPC retries them on the other
    replica and every call succeeds."""
    key = b"k" * 32
    started, pinged = [0, 0], set[int]()
    replicas = [_replica(key, number, started, pinged) for number in range(2)]
    for server in replicas:
        await server.start()
    try:
        target = "ipv4:" + ",".join(f"127.0.0.1:{server.port}" for server in replicas)
        async with open_channel(
            target, token=mint_token(key, "dave", Role.VIEWER, 60), default_timeout=10
        ) as ch:
            for _ in range(50):  # round robin only uses connected replicas: until both are in the rotation
                await ch.unary_unary("/test.v1.Cut/Ping")(b"")
                if len(pinged) == 2:
                    break
            calls = [ch.unary_unary("/test.v1.Cut/Hold")(b"") for _ in range(8)]
            for _ in range(250):
                if sum(started) == 8:
                    break
                await asyncio.sleep(0.02)
            assert started == [4, 4]  # every call is in flight, half of them on the replica about to go
            await replicas[0].server.stop(0)
            assert await asyncio.gather(*calls) == [b"done"] * 8
        assert started == [4, 8]  # the four cut calls ran again, on the other replica
    finally:
        for server in replicas:
            await server.stop(0)


@pytest.fixture
def tls_cert(tmp_path: Path) -> tuple[Path, Path]:
    """A self-signed certificate for localhost / 127.0.0.1, made with the openssl command."""
    if shutil.which("openssl") is None:
        pytest.skip("the openssl command makes the test certificate")
    key, cert = tmp_path / "server.key", tmp_path / "server.pem"
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes",
         "-keyout", str(key), "-out", str(cert), "-days", "1", "-subj", "/CN=localhost",
         "-addext", "subjectAltName=DNS:localhost,IP:127.0.0.1"],
        check=True,
        capture_output=True,
    )  # fmt: skip
    return key, cert


async def test_tls_channel_when_a_ca_is_given(tls_cert: tuple[Path, Path]) -> None:
    key, cert = tls_cert

    async def hello(request: bytes, context: grpc.aio.ServicerContext) -> bytes:
        return b"secure " + request

    server = grpc.aio.server()
    server.add_generic_rpc_handlers(
        [
            grpc.method_handlers_generic_handler(
                "test.v1.Tls", {"Hello": grpc.unary_unary_rpc_method_handler(hello)}
            )
        ]
    )
    port = server.add_secure_port(
        "127.0.0.1:0", grpc.ssl_server_credentials([(key.read_bytes(), cert.read_bytes())])
    )
    await server.start()
    try:
        async with open_channel(f"localhost:{port}", ca_cert_path=cert, default_timeout=5) as channel:
            assert await channel.unary_unary("/test.v1.Tls/Hello")(b"hi") == b"secure hi"
        # The same server refuses a plaintext client: the TLS path is really taken above.
        async with open_channel(f"localhost:{port}", default_timeout=2) as plain:
            with pytest.raises(grpc.aio.AioRpcError):
                await plain.unary_unary("/test.v1.Tls/Hello")(b"hi")
    finally:
        await server.stop(0)
