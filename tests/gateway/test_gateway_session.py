"""Login against the users file, development users, throttling."""

from __future__ import annotations

import asyncio
import json
import stat
from collections.abc import Callable
from pathlib import Path

import bcrypt
import httpx
import pytest

from gateway.app import create_app
from gateway.server import build_gateway
from gateway.settings import GatewaySettings
from gateway.users import LoginThrottle, UserStore, add_user, create_dev_users, read_users
from services.kit.auth import Role, verify_token
from services.kit.errors import ResourceExhausted, Unauthenticated
from tests.gateway.peers import DOUBLE_POLICY, Peers


def test_dev_users_file_holds_only_hashes(tmp_path: Path) -> None:
    path = tmp_path / "state" / "users.json"
    passwords = create_dev_users(path, rounds=4)
    assert set(passwords) == {"planner", "viewer", "admin"}
    assert len(set(passwords.values())) == 3 and all(len(p) >= 16 for p in passwords.values())
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    text = path.read_text()
    assert not any(p in text for p in passwords.values())
    users = read_users(path)
    assert {u.role for u in users.values()} == {Role.PLANNER, Role.VIEWER, Role.ADMIN}
    assert bcrypt.checkpw(passwords["planner"].encode(), users["planner"].password_hash.encode())
    # A second set-up hands out new passwords; the old ones stop working.
    again = create_dev_users(path, rounds=4)
    assert again["planner"] != passwords["planner"]
    assert not bcrypt.checkpw(
        passwords["planner"].encode(), read_users(path)["planner"].password_hash.encode()
    )


def test_broken_users_files_are_refused(tmp_path: Path) -> None:
    path = tmp_path / "users.json"
    bad_role = {"version": 1, "users": [{"username": "a", "role": "boss", "password_hash": "$2b$04$x"}]}
    no_hash = {"version": 1, "users": [{"username": "a", "role": "admin", "password_hash": "plain"}]}
    for content in ("[]", '{"version": 2, "users": []}', json.dumps(bad_role), json.dumps(no_hash)):
        path.write_text(content)
        with pytest.raises(ValueError, match="users"):
            read_users(path)


async def test_store_picks_up_new_users_and_hides_which_part_was_wrong(tmp_path: Path) -> None:
    path = tmp_path / "users.json"
    passwords = create_dev_users(path, rounds=4)
    store = UserStore(path)
    assert (await store.verify("viewer", passwords["viewer"])).role == Role.VIEWER
    messages = set()
    for user, password in (
        ("viewer", "wrong"),
        ("nobody", "wrong"),
        ("viewer", passwords["viewer"] + "x" * 80),
    ):
        with pytest.raises(Unauthenticated) as info:
            await store.verify(user, password)
        messages.add(info.value.message)
    assert messages == {"wrong username or password"}
    add_user(path, "carla", "planner", "s3nha-forte", rounds=4)
    assert (await store.verify("carla", "s3nha-forte")).role == Role.PLANNER


def test_throttle_window() -> None:
    now = [1000.0]
    throttle = LoginThrottle(3, 60, clock=lambda: now[0])
    for _ in range(3):
        throttle.failed(throttle.check("a", "1.2.3.4"))
    with pytest.raises(ResourceExhausted) as info:
        throttle.check("a", "1.2.3.4")
    assert info.value.retry_after_seconds == pytest.approx(60)
    throttle.check("a", "5.6.7.8")  # another client is not affected
    throttle.check("b", "1.2.3.4")  # nor another user
    now[0] += 61
    throttle.check("a", "1.2.3.4")


def test_throttle_counts_attempts_still_being_checked() -> None:
    throttle = LoginThrottle(3, 60, clock=lambda: 1000.0)
    attempts = [throttle.check("a", "1.2.3.4") for _ in range(3)]
    with pytest.raises(ResourceExhausted) as info:
        throttle.check("a", "1.2.3.4")
    assert info.value.retry_after_seconds == pytest.approx(1)  # the checks in flight end soon
    throttle.abandoned(attempts[0])  # no verdict (e.g. cancelled): the slot is free again
    attempts[0] = throttle.check("a", "1.2.3.4")
    for attempt in attempts:
        throttle.failed(attempt)
    with pytest.raises(ResourceExhausted) as info:
        throttle.check("a", "1.2.3.4")
    assert info.value.retry_after_seconds == pytest.approx(60)


def test_throttle_success_keeps_failures_of_concurrent_attempts() -> None:
    throttle = LoginThrottle(4, 60, clock=lambda: 1000.0)
    throttle.failed(throttle.check("a", "1.2.3.4"))  # before the right password: cleared by its success
    right = throttle.check("a", "1.2.3.4")
    guesses = [throttle.check("a", "1.2.3.4") for _ in range(2)]
    for guess in guesses:
        throttle.failed(guess)
    throttle.succeeded(right)
    # The two guesses made alongside still count: two more attempts, then refusal.
    for _ in range(2):
        throttle.failed(throttle.check("a", "1.2.3.4"))
    with pytest.raises(ResourceExhausted):
        throttle.check("a", "1.2.3.4")


async def test_concurrent_wrong_passwords_get_no_more_checks_than_allowed(
    client: httpx.AsyncClient, users_file: tuple[Path, dict[str, str]]
) -> None:
    guesses = [{"username": "planner", "password": f"guess{i}"} for i in range(40)]
    burst = [*guesses, {"username": "planner", "password": users_file[1]["planner"]}]
    answers = await asyncio.gather(*(client.post("/api/v1/login", json=body) for body in burst))
    statuses = [r.status_code for r in answers]
    assert statuses.count(401) <= 5 and statuses.count(200) + statuses.count(401) <= 5, statuses
    assert statuses.count(429) == len(burst) - statuses.count(200) - statuses.count(401)
    after = await client.post("/api/v1/login", json={"username": "planner", "password": "again"})
    assert after.status_code == 429


async def test_login_returns_a_platform_token(
    client: httpx.AsyncClient, users_file: tuple[Path, dict[str, str]], jwt_key: bytes
) -> None:
    r = await client.post("/api/v1/login", json={"username": "planner", "password": users_file[1]["planner"]})
    assert r.status_code == 200
    body = r.json()
    principal = verify_token(jwt_key, body["access_token"])
    assert (principal.subject, principal.role) == ("planner", Role.PLANNER)
    assert body["role"] == "planner" and body["token_type"] == "bearer" and body["expires_in"] == 8 * 3600
    # The token works on the API like any other.
    kpis = await client.get("/api/v1/kpis", headers={"Authorization": f"Bearer {body['access_token']}"})
    assert kpis.status_code == 200


async def test_login_failures(client: httpx.AsyncClient, users_file: tuple[Path, dict[str, str]]) -> None:
    wrong = await client.post("/api/v1/login", json={"username": "viewer", "password": "nope"})
    assert wrong.status_code == 401 and wrong.json()["error"]["reason"] == "INVALID_CREDENTIALS"
    unknown = await client.post("/api/v1/login", json={"username": "ghost", "password": "nope"})
    assert unknown.json()["error"]["message"] == wrong.json()["error"]["message"]
    assert (await client.post("/api/v1/login", json={"username": "viewer"})).status_code == 400
    assert (
        await client.post("/api/v1/login", content=b"{not json", headers={"content-type": "application/json"})
    ).status_code == 400
    for _ in range(5):  # NOVA_GATEWAY_LOGIN_MAX_FAILURES
        await client.post("/api/v1/login", json={"username": "admin", "password": "guess"})
    throttled = await client.post(
        "/api/v1/login", json={"username": "admin", "password": users_file[1]["admin"]}
    )
    assert throttled.status_code == 429
    assert int(throttled.headers["retry-after"]) > 0


@pytest.mark.parametrize("trusted", ["127.0.0.1", ""], ids=["loopback-proxy-trusted", "no-proxy-trusted"])
async def test_throttle_keys_on_the_forwarded_client_only_behind_a_trusted_proxy(
    gateway_settings: GatewaySettings, peers: Peers, jwt_key: bytes, trusted: str
) -> None:
    settings = gateway_settings.model_copy(update={"forwarded_allow_ips": trusted, "login_max_failures": 1})
    gateway = await build_gateway(settings, channels=peers.channels, policy=DOUBLE_POLICY, jwt_key=jwt_key)
    await gateway.start()
    wrong = {"username": "viewer", "password": "nope"}
    try:
        async with httpx.AsyncClient(base_url=gateway.url, timeout=10, trust_env=False) as c:
            statuses = [
                (await c.post("/api/v1/login", json=wrong, headers={"X-Forwarded-For": address})).status_code
                for address in ("203.0.113.7", "203.0.113.8")
            ]
    finally:
        await gateway.stop()
    # Trusted, the proxy's header names two clients; untrusted, both tries come from the one peer address.
    assert statuses == ([401, 401] if trusted else [401, 429])


async def test_login_without_users_file(
    gateway_settings: GatewaySettings, peers: Peers, jwt_key: bytes, token_for: Callable[..., str]
) -> None:
    settings = gateway_settings.model_copy(update={"users_file": None})
    app = create_app(settings, channels=peers.channels, policy=DOUBLE_POLICY, jwt_key=jwt_key)
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://gw") as c:
        r = await c.post("/api/v1/login", json={"username": "planner", "password": "x"})
        assert r.status_code == 409 and r.json()["error"]["reason"] == "LOGIN_NOT_CONFIGURED"
        ok = await c.get("/api/v1/kpis", headers={"Authorization": f"Bearer {token_for('viewer')}"})
        assert ok.status_code == 200


def test_users_cli_writes_dev_users(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from gateway.__main__ import main

    path = tmp_path / "users.json"
    assert main(["users", "create-dev", "--file", str(path)]) == 0
    printed = dict(line.split("\t") for line in capsys.readouterr().out.splitlines() if "\t" in line)
    assert set(printed) == {"planner", "viewer", "admin"}
    stored = json.loads(path.read_text())
    assert bcrypt.checkpw(printed["admin"].encode(), stored["users"][2]["password_hash"].encode())
