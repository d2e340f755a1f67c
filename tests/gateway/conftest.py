"""Fixtures for the gateway tests: the peer doubles over real gRPC, the app, an HTTP client, a users file."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path

import httpx
import pytest
from fastapi import FastAPI

from gateway.app import create_app
from gateway.settings import GatewaySettings
from gateway.users import create_dev_users
from tests.gateway.peers import DOUBLE_POLICY, FAIL, Peers, start_peers


@pytest.fixture(autouse=True)
def _no_injected_failures() -> Iterator[None]:
    FAIL.clear()
    yield
    FAIL.clear()


@pytest.fixture(scope="session")
def users_file(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, str]]:
    """A users file with the development users; bcrypt cost 4 keeps the tests fast."""
    path = tmp_path_factory.mktemp("gateway-users") / "users.json"
    return path, create_dev_users(path, rounds=4)


@pytest.fixture
def gateway_settings(jwt_key: bytes, users_file: tuple[Path, dict[str, str]]) -> GatewaySettings:
    return GatewaySettings(
        host="127.0.0.1",
        port=0,
        jwt_secret=jwt_key.hex(),
        users_file=users_file[0],
        grace_seconds=1,
        request_timeout_seconds=5,
        sse_heartbeat_seconds=0.5,
    )


@pytest.fixture
async def peers(jwt_key: bytes) -> AsyncIterator[Peers]:
    running = await start_peers(jwt_key)
    try:
        yield running
    finally:
        await running.stop()


@pytest.fixture
def app(gateway_settings: GatewaySettings, peers: Peers, jwt_key: bytes) -> FastAPI:
    return create_app(gateway_settings, channels=peers.channels, policy=DOUBLE_POLICY, jwt_key=jwt_key)


@pytest.fixture
async def client(app: FastAPI) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://gateway") as c:
        yield c


@pytest.fixture
def auth(token_for: Callable[..., str]) -> Callable[[str], dict[str, str]]:
    def headers(role: str = "planner") -> dict[str, str]:
        return {"Authorization": f"Bearer {token_for(role)}"}

    return headers
