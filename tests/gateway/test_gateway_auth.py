"""Auth on every route, generated from the app's own route table so that a new route cannot escape it."""

from __future__ import annotations

import re
import time
from collections.abc import Callable
from typing import Any

import httpx
import jwt
import pytest
from fastapi import FastAPI
from fastapi.routing import APIRoute

from gateway.app import create_app
from gateway.auth import GRPC_METHOD_KEY, route_method
from gateway.policy import method, upstream_policy
from gateway.settings import GatewaySettings
from services.kit.auth import MethodPolicy, Role
from tests.gateway.peers import DOUBLE_POLICY, Peers

OPEN_API_ROUTES = {"/api/v1/login"}
"""The only /api/v1 route that needs no token (it is how a token is obtained)."""


def _walk(routes: list[Any]) -> list[APIRoute]:
    out: list[APIRoute] = []
    for route in routes:
        if isinstance(route, APIRoute):
            out.append(route)
        elif hasattr(route, "original_router"):  # FastAPI >= 0.16x keeps included routers as branches
            out.extend(_walk(route.original_router.routes))
        elif hasattr(route, "routes") and not hasattr(route, "app"):
            out.extend(_walk(route.routes))
    return out


def api_routes(app: FastAPI) -> list[APIRoute]:
    return [r for r in _walk(list(app.routes)) if r.path.startswith("/api/v1")]


def data_routes(app: FastAPI) -> list[tuple[str, str, str]]:
    """(verb, concrete path, gRPC method) of every route that reads or changes data."""
    out = []
    for route in api_routes(app):
        if route.path in OPEN_API_ROUTES:
            continue
        path = re.sub(r"\{[^}]+\}", "some-id", route.path)
        for verb in sorted(route.methods):
            out.append((verb, path, route_method(route)))
    return out


def expired_token(key: bytes, role: str = "admin") -> str:
    past = int(time.time()) - 3600
    return jwt.encode({"sub": "old", "role": role, "iat": past - 60, "exp": past}, key, algorithm="HS256")


OPEN_TO_EVERY_ROLE = {"/novacorrente.ingestion.v1.IngestionService/GetWatermark"}
"""Methods whose policy admits every role (the committed watermark: readers and loaders both need it)."""


def weaker_role(policy: MethodPolicy, rpc: str) -> Role | None:
    allowed = policy.allowed_roles(rpc)
    # Prefer the role just below the allowed ones: viewer for planner routes, ingestor for read routes.
    for role in (Role.VIEWER, Role.INGESTOR, Role.PLANNER):
        if role not in allowed:
            return role
    assert rpc in OPEN_TO_EVERY_ROLE, f"{rpc} is open to every role"
    return None


def allowed_role(policy: MethodPolicy, rpc: str) -> Role:
    for role in (Role.VIEWER, Role.PLANNER, Role.ADMIN):
        if role in policy.allowed_roles(rpc):
            return role
    raise AssertionError(f"{rpc} is open to no dashboard role")


def test_route_walk_sees_every_route_of_the_openapi_document(app: FastAPI) -> None:
    """The matrix below enumerates routes itself; it must see what the OpenAPI document (and so the router)
    sees, and no /api/v1 route may hide from the document."""
    walked = {(verb, r.path) for r in api_routes(app) for verb in r.methods}
    documented = {
        (verb.upper(), path)
        for path, ops in app.openapi()["paths"].items()
        if path.startswith("/api/v1")
        for verb in ops
    }
    assert walked == documented
    assert all(r.include_in_schema for r in api_routes(app))


def test_every_data_route_declares_its_grpc_method(app: FastAPI) -> None:
    routes = data_routes(app)
    assert len(routes) == 17  # update when a route is added: the matrix below then covers it too
    for verb, path, rpc in routes:
        assert rpc, f"{verb} {path} declares no {GRPC_METHOD_KEY}: it would not be authorized"
        service, name = rpc.strip("/").split("/")
        assert method(service, name) == rpc
    assert {r.path for r in api_routes(app)} >= OPEN_API_ROUTES


async def test_auth_matrix(
    app: FastAPI, client: httpx.AsyncClient, token_for: Callable[..., str], jwt_key: bytes
) -> None:
    checked = 0
    for verb, path, rpc in data_routes(app):
        missing = await client.request(verb, path)
        assert missing.status_code == 401, (verb, path, missing.text)
        assert missing.headers["www-authenticate"] == "Bearer"
        assert missing.json()["error"]["reason"] == "TOKEN_MISSING"

        wrong_scheme = await client.request(verb, path, headers={"Authorization": "Basic dXNlcjpwYXNz"})
        assert wrong_scheme.status_code == 401, (verb, path)

        expired = await client.request(
            verb, path, headers={"Authorization": f"Bearer {expired_token(jwt_key)}"}
        )
        assert expired.status_code == 401, (verb, path, expired.text)
        assert expired.json()["error"]["reason"] == "TOKEN_EXPIRED"
        assert 'error="invalid_token"' in expired.headers["www-authenticate"]

        forged = token_for("admin")[:-4] + "AAAA"
        bad_signature = await client.request(verb, path, headers={"Authorization": f"Bearer {forged}"})
        assert bad_signature.status_code == 401, (verb, path)

        weak = weaker_role(DOUBLE_POLICY, rpc)
        if weak is not None:
            denied = await client.request(
                verb, path, headers={"Authorization": f"Bearer {token_for(weak.value)}"}
            )
            assert denied.status_code == 403, (verb, path, weak, denied.text)
            assert denied.json()["error"]["code"] == "PERMISSION_DENIED"

        if not path.endswith("/stream"):
            ok = allowed_role(DOUBLE_POLICY, rpc)
            granted = await client.request(
                verb, path, headers={"Authorization": f"Bearer {token_for(ok.value)}"}
            )
            # Past auth: the double may still refuse the empty request (404 for "some-id"...), never 401/403.
            assert granted.status_code not in (401, 403), (verb, path, ok, granted.text)
        checked += 1
    assert checked == len(data_routes(app))


async def test_stream_accepts_access_token_query(
    client: httpx.AsyncClient, token_for: Callable[..., str], jwt_key: bytes
) -> None:
    # (A granted stream would never end under ASGITransport; the streaming tests use a real server.)
    assert (
        await client.get("/api/v1/alerts/stream", params={"access_token": expired_token(jwt_key)})
    ).status_code == 401
    weak = await client.get("/api/v1/alerts/stream", params={"access_token": token_for("ingestor")})
    assert weak.status_code == 403
    # Only the stream takes tokens from the URL.
    other = await client.get("/api/v1/kpis", params={"access_token": token_for("admin")})
    assert other.status_code == 401


async def test_caller_token_is_forwarded_unchanged(
    client: httpx.AsyncClient, peers: Peers, token_for: Callable[..., str]
) -> None:
    token = token_for("viewer", subject="maria")
    response = await client.get("/api/v1/kpis", headers={"Authorization": f"Bearer {token}"})
    assert response.status_code == 200
    assert peers.analytics.seen_tokens == [f"Bearer {token}"]


async def test_upstream_permission_denied_is_403(
    gateway_settings: GatewaySettings, peers: Peers, jwt_key: bytes, token_for: Callable[..., str]
) -> None:
    # A gateway whose policy is laxer than the service's still cannot let a weak role through.
    lax = MethodPolicy({rpc: set(Role) for rpc in DOUBLE_POLICY.rules})
    app = create_app(gateway_settings, channels=peers.channels, policy=lax, jwt_key=jwt_key)
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://gw") as c:
        response = await c.post(
            "/api/v1/alerts/any/acknowledge", headers={"Authorization": f"Bearer {token_for('viewer')}"}
        )
    assert response.status_code == 403
    assert response.json()["error"]["code"] == "PERMISSION_DENIED"
    assert "may not call" in response.json()["error"]["message"]


def test_double_policy_matches_the_services_policy(app: FastAPI) -> None:
    """The doubles enforce what the real services enforce, for every method the gateway routes to."""
    pytest.importorskip("services.analytics.app", reason="the analytics service is not in the tree yet")
    real = upstream_policy()
    for verb, path, rpc in data_routes(app):
        assert real.allowed_roles(rpc), f"{rpc} ({verb} {path}) is in no service policy"
        assert real.allowed_roles(rpc) == DOUBLE_POLICY.allowed_roles(rpc), rpc
