"""Server-sent events and the in-process server, over a real socket (uvicorn on 127.0.0.1:0)."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator, Callable

import grpc
import httpx
import pytest

from gateway.server import GatewayServer, build_gateway
from gateway.settings import GatewaySettings
from tests.gateway.peers import DOUBLE_POLICY, FAIL, Peers


@pytest.fixture
async def server(
    gateway_settings: GatewaySettings, peers: Peers, jwt_key: bytes
) -> AsyncIterator[GatewayServer]:
    gateway = await build_gateway(
        gateway_settings, channels=peers.channels, policy=DOUBLE_POLICY, jwt_key=jwt_key
    )
    await gateway.start()
    try:
        yield gateway
    finally:
        await gateway.stop()


async def _events(response: httpx.Response) -> AsyncIterator[tuple[str, str]]:
    """(event name or ':comment', data) per SSE frame."""
    frame: list[str] = []
    async for line in response.aiter_lines():
        if line:
            frame.append(line)
            continue
        name, data = "", ""
        for field in frame:
            if field.startswith(":"):
                yield ":" + field[1:].strip(), ""
            elif field.startswith("event:"):
                name = field[6:].strip()
            elif field.startswith("data:"):
                data = field[5:].strip()
        if name:
            yield name, data
        frame = []


async def _wait_watchers(peers: Peers, n: int) -> None:
    for _ in range(200):
        if len(peers.analytics.watchers) == n:
            return
        await asyncio.sleep(0.01)
    raise AssertionError(f"{len(peers.analytics.watchers)} watchers, expected {n}")


def test_server_binds_port_zero(server: GatewayServer) -> None:
    assert server.port > 0 and server.url == f"http://127.0.0.1:{server.port}"


async def test_alerts_arrive_as_events(
    server: GatewayServer, peers: Peers, token_for: Callable[..., str]
) -> None:
    token = token_for("viewer")
    async with httpx.AsyncClient(base_url=server.url, timeout=10) as client:
        params = {"access_token": token, "material": "020310"}
        async with client.stream("GET", "/api/v1/alerts/stream", params=params) as response:
            assert response.status_code == 200
            assert response.headers["content-type"].startswith("text/event-stream")
            assert response.headers["cache-control"] == "no-store"
            events = _events(response)
            assert await anext(events) == (":connected", "")
            await _wait_watchers(peers, 1)
            peers.analytics.raise_alert("010601", "ALMOX-BA")  # filtered out upstream
            raised = peers.analytics.raise_alert("020310", "ALMOX-BA")
            name, data = await anext(events)
            while name.startswith(":"):
                name, data = await anext(events)
            assert name == "alert"
            alert = json.loads(data)
            assert alert["alert_id"] == raised.alert_id and alert["state"] == "open"
            assert alert["provenance"]["data_watermark"] == "seq:4207"
            # Idle: keep-alive comments (heartbeat 0.5 s in these settings).
            assert await anext(events) == (":keepalive", "")
    await _wait_watchers(peers, 0)  # the client left: the upstream call was cancelled


async def test_stream_ends_when_the_token_expires(
    server: GatewayServer, peers: Peers, token_for: Callable[..., str]
) -> None:
    token = token_for("viewer", ttl=2)
    started = time.monotonic()
    async with httpx.AsyncClient(base_url=server.url, timeout=10) as client:
        async with client.stream(
            "GET", "/api/v1/alerts/stream", headers={"Authorization": f"Bearer {token}"}
        ) as response:
            frames = [name async for name, _ in _events(response)]
    assert frames[0] == ":connected"
    assert time.monotonic() - started < 4
    await _wait_watchers(peers, 0)


async def test_upstream_failure_becomes_an_error_event(
    server: GatewayServer, token_for: Callable[..., str]
) -> None:
    FAIL["WatchAlerts"] = (grpc.StatusCode.UNAVAILABLE, "read model rebuilding")
    async with httpx.AsyncClient(base_url=server.url, timeout=10) as client:
        async with client.stream(
            "GET", "/api/v1/alerts/stream", params={"access_token": token_for("viewer")}
        ) as r:
            frames = [(n, d) async for n, d in _events(r) if not n.startswith(":")]
    assert frames[0][0] == "stream_error"
    error = json.loads(frames[0][1])["error"]
    assert (error["status"], error["code"], error["message"]) == (503, "UNAVAILABLE", "read model rebuilding")


async def test_stop_closes_open_streams(
    gateway_settings: GatewaySettings, peers: Peers, jwt_key: bytes, token_for: Callable[..., str]
) -> None:
    gateway = await build_gateway(
        gateway_settings, channels=peers.channels, policy=DOUBLE_POLICY, jwt_key=jwt_key
    )
    await gateway.start()
    async with httpx.AsyncClient(base_url=gateway.url, timeout=10) as client:
        async with client.stream(
            "GET", "/api/v1/alerts/stream", params={"access_token": token_for("viewer")}
        ) as r:
            await _wait_watchers(peers, 1)
            ready = await client.get("/readyz")
            assert ready.status_code == 200
            started = time.monotonic()
            stopping = asyncio.create_task(gateway.stop())
            frames = [n async for n, _ in _events(r)]
            await stopping
    assert frames[0] == ":connected"
    assert time.monotonic() - started < gateway_settings.grace_seconds + 1
    await _wait_watchers(peers, 0)
