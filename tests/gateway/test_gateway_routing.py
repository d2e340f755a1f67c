"""The short request path of the data routes (gateway.routing) answers exactly as FastAPI's own path does,
and the gateway's own channels carry the platform's client options and the request id."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import grpc
import httpx
import jwt
import pytest
from fastapi import FastAPI

from gateway import api
from gateway.app import create_app
from gateway.routing import ExactRoutes, RpcRoute
from gateway.settings import GatewaySettings
from gateway.upstreams import Upstreams
from services.kit import clients
from services.kit.auth import ALGORITHM
from tests.gateway.peers import DOUBLE_POLICY, FAIL, Peers

# Valid and invalid queries on the routes the short path serves, and some it leaves to FastAPI.
REQUESTS = [
    ("viewer", "/api/v1/kpis?name=fill_rate&name=total_demand&material=010601"),
    ("viewer", "/api/v1/kpis?start=2025-01-01&end=2025-02-30"),
    ("viewer", "/api/v1/inventory?page_size=2&min_status=attention"),
    ("viewer", "/api/v1/inventory?page_size=-1&page_token=" + "x" * 5000),
    ("viewer", "/api/v1/inventory?page_size=abc&min_status=bogus"),
    ("viewer", "/api/v1/alerts?state=open&state=resolved"),
    ("viewer", "/api/v1/alerts?state=open&state=bogus"),
    ("viewer", "/api/v1/demand?grain=month&include_forecast=false"),
    ("viewer", "/api/v1/demand?include_forecast=maybe"),
    ("viewer", "/api/v1/external-series?series=ptax&start=2025-13-01"),
    ("viewer", "/api/v1/forecast?material=010601&site=ALMOX-BA&horizon=-1"),
    ("viewer", "/api/v1/reorder-policy?material=010601&site=ALMOX-BA&service_level=nan"),
    ("viewer", "/api/v1/materials?q=cabo&page_size=3"),
    ("viewer", "/api/v1/watermark"),
    ("viewer", "/api/v1/watermark/"),
    ("ingestor", "/api/v1/watermark"),
    ("", "/api/v1/watermark"),
    ("expired", "/api/v1/kpis"),
    ("viewer", "/api/v1/nowhere"),
]


def _lean_routes(app: FastAPI) -> dict[str, RpcRoute]:
    async def unused(*_: object) -> None:
        raise AssertionError

    return ExactRoutes(unused, fastapi=app, routes=api.router.routes)._routes


def _without_clock(value: Any) -> Any:
    """``value`` with the doubles' answer times blanked (they stamp each answer with the time)."""
    if isinstance(value, dict):
        return {k: None if k == "generated_at" else _without_clock(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_without_clock(v) for v in value]
    return value


def _comparable(response: httpx.Response) -> tuple[int, Any, dict[str, str]]:
    headers = {k: v for k, v in response.headers.items() if k not in ("date", "content-length")}
    json = response.headers.get("content-type") == "application/json"
    return response.status_code, _without_clock(response.json()) if json else response.text, headers


@pytest.mark.parametrize("role, url", REQUESTS)
async def test_short_path_answers_as_fastapi_does(
    app: FastAPI,
    client: httpx.AsyncClient,
    token_for: Callable[..., str],
    jwt_key: bytes,
    role: str,
    url: str,
) -> None:
    if role == "expired":
        now = int(time.time())
        claims = {"sub": "old", "role": "viewer", "iat": now - 120, "exp": now - 60}
        headers = {"Authorization": f"Bearer {jwt.encode(claims, jwt_key, algorithm=ALGORITHM)}"}
    else:
        headers = {"Authorization": f"Bearer {token_for(role)}"} if role else {}
    headers["X-Request-ID"] = "same-id"
    short = await client.get(url, headers=headers)
    # Any dependency override sends every request through FastAPI's own routing and solver.
    app.dependency_overrides[_comparable] = _comparable
    try:
        full = await client.get(url, headers=headers)
    finally:
        app.dependency_overrides.clear()
    assert _comparable(short) == _comparable(full)


def test_short_path_takes_only_plain_get_routes(app: FastAPI) -> None:
    table = _lean_routes(app)
    assert {"/api/v1/kpis", "/api/v1/inventory", "/api/v1/alerts", "/api/v1/watermark"} <= set(table)
    assert "/api/v1/alerts/stream" not in table  # a streaming response
    assert not any("{" in path for path in table)  # path parameters
    for route in api.router.routes:
        assert isinstance(route, RpcRoute)
        assert (route.path in table) == (route.methods == {"GET"} and route.path != "/api/v1/alerts/stream")


async def test_errors_of_the_short_path_go_through_the_app_handlers(
    client: httpx.AsyncClient, auth: Callable[[str], dict[str, str]]
) -> None:
    FAIL["GetKpis"] = (grpc.StatusCode.UNAVAILABLE, "restarting")
    response = await client.get("/api/v1/kpis", headers=auth("viewer"))
    assert response.status_code == 503
    assert response.json()["error"]["code"] == "UNAVAILABLE"
    assert response.headers["cache-control"] == "no-store"
    assert response.headers["x-content-type-options"] == "nosniff"


def test_gateway_channels_have_the_platform_client_options_without_interceptors(
    monkeypatch: pytest.MonkeyPatch, gateway_settings: GatewaySettings
) -> None:
    seen: list[tuple[list[tuple[str, Any]], object]] = []

    def capture(target: str, options: list[tuple[str, Any]], interceptors: object = None) -> object:
        seen.append((list(options), interceptors))
        return object()

    monkeypatch.setattr(clients.grpc.aio, "insecure_channel", capture)
    settings = gateway_settings.model_copy(update={"max_message_bytes": 1234})
    clients.open_channel("127.0.0.1:1", max_message_bytes=1234)
    Upstreams(settings).channel("analytics")
    (platform_options, platform_interceptors), (gateway_options, gateway_interceptors) = seen
    assert gateway_options == platform_options
    assert ("grpc.max_receive_message_length", 1234) in gateway_options
    assert platform_interceptors and gateway_interceptors is None


async def test_gateway_channel_forwards_token_and_request_id(
    gateway_settings: GatewaySettings, peers: Peers, jwt_key: bytes, token_for: Callable[..., str]
) -> None:
    settings = gateway_settings.model_copy(
        update={"analytics_target": peers.target, "forecast_target": peers.target}
    )
    app = create_app(settings, policy=DOUBLE_POLICY, jwt_key=jwt_key)  # opens its own channels
    token = token_for("viewer")
    transport = httpx.ASGITransport(app=app)
    try:
        async with httpx.AsyncClient(transport=transport, base_url="http://gateway") as client:
            response = await client.get(
                "/api/v1/watermark", headers={"Authorization": f"Bearer {token}", "X-Request-ID": "req-7"}
            )
    finally:
        await app.state.upstreams.close()
    assert response.status_code == 200
    assert peers.analytics.seen_tokens[-1] == f"Bearer {token}"
    assert peers.analytics.seen_request_ids[-1] == "req-7"
