"""Authentication and authorization through a real server: every path of AuthInterceptor."""

from __future__ import annotations

import time

import grpc
import jwt
import pytest
from google.rpc import error_details_pb2
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc
from grpc_status import rpc_status
from kit_echo import SERVICE, method
from kit_harness import Harness

from services.kit.auth import Role


async def unary(h: Harness, name: str, payload: bytes, metadata: tuple[tuple[str, str], ...]) -> bytes:
    return await h.channel.unary_unary(method(name))(payload, metadata=metadata, timeout=5)


def bearer(token: str) -> tuple[tuple[str, str], ...]:
    return (("authorization", f"Bearer {token}"),)


async def expect_code(call_coro, code: grpc.StatusCode) -> grpc.aio.AioRpcError:  # type: ignore[no-untyped-def]
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await call_coro
    assert info.value.code() == code, info.value.details()
    return info.value


def claims(**overrides: object) -> dict[str, object]:
    now = int(time.time())
    base: dict[str, object] = {"sub": "alice", "role": "viewer", "iat": now, "exp": now + 60}
    base.update(overrides)
    return {k: v for k, v in base.items() if v is not None}


async def test_no_token_is_unauthenticated(harness: Harness) -> None:
    error = await expect_code(unary(harness, "Echo", b"hi", ()), grpc.StatusCode.UNAUTHENTICATED)
    info = error_details_pb2.ErrorInfo()
    rpc_status.from_call(error).details[0].Unpack(info)
    assert info.reason == "TOKEN_MISSING"


async def test_expired_token_is_unauthenticated(harness: Harness) -> None:
    now = int(time.time())
    token = jwt.encode(claims(iat=now - 3600, exp=now - 600), harness.key, algorithm="HS256")
    error = await expect_code(unary(harness, "Echo", b"hi", bearer(token)), grpc.StatusCode.UNAUTHENTICATED)
    assert error.details() == "token expired"


async def test_wrong_signature_is_unauthenticated(harness: Harness) -> None:
    token = jwt.encode(claims(), b"k" * 32 + b"-some-other-key", algorithm="HS256")
    error = await expect_code(unary(harness, "Echo", b"hi", bearer(token)), grpc.StatusCode.UNAUTHENTICATED)
    assert "signature" in error.details()


@pytest.mark.parametrize(
    "header",
    ["Bearer not-a-jwt", "Basic dXNlcjpwYXNz", "Bearer", "Bearer " + "x.y.z"],
)
async def test_malformed_authorization_is_unauthenticated(harness: Harness, header: str) -> None:
    await expect_code(
        unary(harness, "Echo", b"hi", (("authorization", header),)), grpc.StatusCode.UNAUTHENTICATED
    )


async def test_unknown_role_and_missing_claim_are_unauthenticated(harness: Harness) -> None:
    unknown_role = jwt.encode(claims(role="superuser"), harness.key, algorithm="HS256")
    await expect_code(unary(harness, "Echo", b"hi", bearer(unknown_role)), grpc.StatusCode.UNAUTHENTICATED)
    no_exp = jwt.encode(claims(exp=None), harness.key, algorithm="HS256")
    await expect_code(unary(harness, "Echo", b"hi", bearer(no_exp)), grpc.StatusCode.UNAUTHENTICATED)


async def test_viewer_on_planner_method_is_permission_denied(harness: Harness) -> None:
    error = await expect_code(
        unary(harness, "Plan", b"hi", harness.metadata(role=Role.VIEWER)), grpc.StatusCode.PERMISSION_DENIED
    )
    assert "viewer" in error.details()


@pytest.mark.parametrize(
    ("name", "role", "allowed"),
    [
        ("Plan", Role.PLANNER, True),
        ("Plan", Role.ADMIN, True),
        ("Plan", Role.INGESTOR, False),
        ("Echo", Role.INGESTOR, False),
        ("Upload", Role.INGESTOR, True),
        ("Upload", Role.PLANNER, False),
        ("Unlisted", Role.ADMIN, False),
    ],
)
async def test_role_matrix(harness: Harness, name: str, role: Role, allowed: bool) -> None:
    call = unary(harness, name, b"hi", harness.metadata(role=role))
    if allowed:
        assert await call == b"hi"
    else:
        await expect_code(call, grpc.StatusCode.PERMISSION_DENIED)


async def test_right_role_is_ok_and_handler_sees_principal(harness: Harness) -> None:
    assert await unary(harness, "Plan", b"whoami", harness.metadata(role=Role.PLANNER)) == b"alice:planner"


async def test_streaming_calls_are_authenticated(harness: Harness) -> None:
    call = harness.channel.unary_stream(method("Stream"))(b"hi", timeout=5)
    with pytest.raises(grpc.aio.AioRpcError) as info:
        _ = [item async for item in call]
    assert info.value.code() == grpc.StatusCode.UNAUTHENTICATED

    chat = harness.channel.stream_stream(method("Chat"))(iter([b"a"]), metadata=harness.metadata(), timeout=5)
    assert [item async for item in chat] == [b"a"]


async def test_health_is_open_and_serving(harness: Harness) -> None:
    stub = health_pb2_grpc.HealthStub(harness.channel)
    for service in ("", SERVICE):
        reply = await stub.Check(health_pb2.HealthCheckRequest(service=service), timeout=5)
        assert reply.status == health_pb2.HealthCheckResponse.SERVING
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await stub.Check(health_pb2.HealthCheckRequest(service="no.such.Service"), timeout=5)
    assert info.value.code() == grpc.StatusCode.NOT_FOUND


async def test_reflection_is_open_and_lists_services(harness: Harness) -> None:
    stub = reflection_pb2_grpc.ServerReflectionStub(harness.channel)
    call = stub.ServerReflectionInfo(
        iter([reflection_pb2.ServerReflectionRequest(list_services="")]), timeout=5
    )
    names = set()
    async for response in call:
        names |= {s.name for s in response.list_services_response.service}
    assert names == {SERVICE, "grpc.health.v1.Health", "grpc.reflection.v1alpha.ServerReflection"}
