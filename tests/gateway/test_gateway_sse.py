"""Server-sent events and the in-process server, over a real socket (uvicorn on 127.0.0.1:0)."""

from __future__ import annotations

import asyncio
import json
import os
import secrets
import signal
import sys
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import grpc
import httpx
import pytest

from gateway.server import GatewayServer, build_gateway
from gateway.settings import GatewaySettings
from services.kit.auth import mint_token
from tests.gateway.peers import DOUBLE_POLICY, FAIL, Peers, start_peers


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


async def test_keep_alive_requests_are_not_delayed(
    server: GatewayServer, token_for: Callable[..., str]
) -> None:
    """A regression guard: without TCP_NODELAY on accepted sockets each keep-alive answer waited ~40 ms."""
    headers = {"Authorization": f"Bearer {token_for('viewer')}"}
    async with httpx.AsyncClient(base_url=server.url, timeout=10) as client:
        durations = []
        for _ in range(9):
            started = time.perf_counter()
            assert (await client.get("/api/v1/watermark", headers=headers)).status_code == 200
            durations.append(time.perf_counter() - started)
    assert sorted(durations)[4] < 0.025, durations


async def test_python_m_gateway_serves_until_sigterm(users_file: tuple[Path, dict[str, str]]) -> None:
    # A printable key: the process reads it from the environment, where raw bytes cannot go.
    key = secrets.token_hex(32).encode()
    peers = await start_peers(key)
    env = {
        **os.environ,
        "NOVA_JWT_SECRET": key.decode(),
        "NOVA_GATEWAY_PORT": "0",
        "NOVA_GATEWAY_INGESTION_TARGET": peers.target,
        "NOVA_GATEWAY_ANALYTICS_TARGET": peers.target,
        "NOVA_GATEWAY_FORECAST_TARGET": peers.target,
        "NOVA_GATEWAY_USERS_FILE": str(users_file[0]),
        "NOVA_GATEWAY_GRACE_SECONDS": "1",
    }
    env.pop("NOVA_JWT_SECRET_FILE", None)
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "gateway",
        env=env,
        stderr=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.DEVNULL,
    )
    try:
        url = ""
        assert process.stderr is not None
        while not url:
            line = await asyncio.wait_for(process.stderr.readline(), 60)
            assert line, "the gateway exited before listening"
            record = json.loads(line)
            if record["msg"].startswith("gateway listening on "):
                url = record["msg"].removeprefix("gateway listening on ")
        async with httpx.AsyncClient(base_url=url, timeout=10) as client:
            assert (await client.get("/healthz")).status_code == 200
            viewer = {"Authorization": f"Bearer {mint_token(key, 'v', 'viewer', 60)}"}
            assert (await client.get("/api/v1/kpis", headers=viewer)).status_code == 200
            # The services' own policy, loaded by default: an ingestor may not read KPIs.
            ingestor = {"Authorization": f"Bearer {mint_token(key, 'i', 'ingestor', 60)}"}
            assert (await client.get("/api/v1/kpis", headers=ingestor)).status_code == 403
        process.send_signal(signal.SIGTERM)
        assert await asyncio.wait_for(process.wait(), 15) == 0
    finally:
        if process.returncode is None:
            process.kill()
            await process.wait()
        await peers.stop()
