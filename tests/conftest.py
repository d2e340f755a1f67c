"""Fixtures shared by every test tier: a signing key, tokens, and isolated real back ends.

Integration fixtures create their own PostgreSQL database and RabbitMQ vhost and drop them at
the end, so runs never see each other's data.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import subprocess
import uuid
from collections.abc import AsyncIterator, Callable, Iterator

import asyncpg
import pytest

from services.kit.auth import Role, mint_token

PG_ADMIN_URL = os.environ.get("NOVA_TEST_PG_URL", "postgresql://postgres@127.0.0.1:5432/test")
AMQP_HOST = os.environ.get("NOVA_TEST_AMQP_HOST", "127.0.0.1:5672")
REDIS_URL = os.environ.get("NOVA_TEST_REDIS_URL", "redis://127.0.0.1:6379/0")


@pytest.fixture(scope="session")
def jwt_key() -> bytes:
    return secrets.token_bytes(32)


@pytest.fixture(scope="session")
def token_for(jwt_key: bytes) -> Callable[..., str]:
    def make(role: str = "admin", subject: str = "tester", ttl: float = 600) -> str:
        return mint_token(jwt_key, subject, Role(role), ttl)

    return make


def bearer(token: str) -> tuple[tuple[str, str], ...]:
    return (("authorization", f"Bearer {token}"),)


@contextlib.asynccontextmanager
async def fresh_pg_database() -> AsyncIterator[str]:
    """A fresh, empty PostgreSQL database, dropped afterwards."""
    name = f"nova_test_{uuid.uuid4().hex[:12]}"
    admin = await asyncpg.connect(PG_ADMIN_URL)
    try:
        await admin.execute(f'CREATE DATABASE "{name}"')
    finally:
        await admin.close()
    try:
        yield PG_ADMIN_URL.rsplit("/", 1)[0] + f"/{name}"
    finally:
        admin = await asyncpg.connect(PG_ADMIN_URL)
        try:
            await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        finally:
            await admin.close()


@pytest.fixture
async def pg_url() -> AsyncIterator[str]:
    """A fresh, empty PostgreSQL database for one test."""
    async with fresh_pg_database() as url:
        yield url


def _rabbitmqctl(*args: str) -> None:
    subprocess.run(["rabbitmqctl", "-q", *args], check=True, capture_output=True, timeout=60)


@pytest.fixture(scope="session")
def amqp_url() -> Iterator[str]:
    """A RabbitMQ vhost of this test session, deleted afterwards."""
    vhost = f"nova-test-{uuid.uuid4().hex[:10]}"
    _rabbitmqctl("add_vhost", vhost)
    _rabbitmqctl("set_permissions", "-p", vhost, "guest", ".*", ".*", ".*")
    yield f"amqp://guest:guest@{AMQP_HOST}/{vhost}"
    _rabbitmqctl("delete_vhost", vhost)
