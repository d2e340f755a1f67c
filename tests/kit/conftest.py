"""Fixtures for the kit tests: a real in-process grpc.aio server on 127.0.0.1:0 serving the echo service."""

from __future__ import annotations

import secrets
from collections.abc import AsyncIterator, Callable

import grpc
import pytest
from kit_echo import POLICY, SERVICE, handler
from kit_harness import Dependency, Harness
from prometheus_client import CollectorRegistry

from services.kit.server import GrpcServer
from services.kit.settings import ServiceSettings


@pytest.fixture
def jwt_key() -> bytes:
    return secrets.token_hex(32).encode()


@pytest.fixture
def settings_factory() -> Callable[..., ServiceSettings]:
    def make(**overrides: object) -> ServiceSettings:
        values: dict[str, object] = {
            "host": "127.0.0.1",
            "port": 0,
            "grace_seconds": 1.0,
            "health_poll_seconds": 0.05,
        }
        values.update(overrides)
        return ServiceSettings(**values)  # type: ignore[arg-type]

    return make


@pytest.fixture
async def harness(jwt_key: bytes, settings_factory: Callable[..., ServiceSettings]) -> AsyncIterator[Harness]:
    registry = CollectorRegistry()
    dependency = Dependency()
    server = GrpcServer(
        settings_factory(),
        policy=POLICY,
        jwt_key=jwt_key,
        service_names=[SERVICE],
        registry=registry,
        health_checks={"db": dependency.check},
    )
    server.add_generic_rpc_handlers([handler()])
    await server.start()
    channel = grpc.aio.insecure_channel(f"127.0.0.1:{server.port}")
    try:
        yield Harness(server, channel, jwt_key, registry, dependency)
    finally:
        await channel.close()
        await server.stop(0)
