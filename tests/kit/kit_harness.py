"""Test doubles shared by the kit tests (kept out of conftest.py so test modules can import them)."""

from __future__ import annotations

from dataclasses import dataclass

import grpc
from prometheus_client import CollectorRegistry

from services.kit.auth import Role, mint_token
from services.kit.server import GrpcServer


@dataclass
class Dependency:
    """A dependency whose health the test controls."""

    ok: bool = True
    calls: int = 0

    async def check(self) -> bool:
        self.calls += 1
        return self.ok


@dataclass
class Harness:
    server: GrpcServer
    channel: grpc.aio.Channel
    key: bytes
    registry: CollectorRegistry
    dependency: Dependency

    def metadata(
        self, *extra: tuple[str, str], role: Role | None = Role.VIEWER
    ) -> tuple[tuple[str, str], ...]:
        auth = (
            () if role is None else (("authorization", f"Bearer {mint_token(self.key, 'alice', role, 60)}"),)
        )
        return (*auth, *extra)
