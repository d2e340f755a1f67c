"""Tokens, policy and development tokens, without a server."""

from __future__ import annotations

import time

import jwt
import pytest

from services.kit.auth import (
    ADMIN,
    PLAN,
    READ,
    WRITE,
    MethodPolicy,
    Principal,
    Role,
    TokenSource,
    is_open_method,
    mint_token,
    principal_var,
    require_principal,
    verify_token,
)
from services.kit.errors import PermissionDenied, Unauthenticated
from services.kit.settings import CommonSettings
from services.kit.tokens import mint_dev_token

KEY = b"0123456789abcdef0123456789abcdef"


def test_mint_and_verify_round_trip() -> None:
    token = mint_token(KEY, "alice", "planner", 60)
    claims = jwt.decode(token, KEY, algorithms=["HS256"])
    assert set(claims) == {"sub", "role", "iat", "exp"} and claims["exp"] - claims["iat"] == 60
    principal = verify_token(KEY, token)
    assert (principal.subject, principal.role) == ("alice", Role.PLANNER)


@pytest.mark.parametrize(
    ("token", "reason"),
    [
        (jwt.encode({"sub": "a", "role": "viewer", "iat": 0, "exp": 1}, KEY, algorithm="HS256"), "expired"),
        (mint_token(b"x" * 32, "a", "viewer", 60), "signature"),
        ("garbage", "malformed"),
        (jwt.encode({"sub": "a", "role": "root", "iat": 0, "exp": 2**40}, KEY, algorithm="HS256"), "role"),
        (jwt.encode({"sub": "a", "iat": 0, "exp": 2**40}, KEY, algorithm="HS256"), "role"),
        (jwt.encode({"sub": "a", "role": "admin", "exp": 2**40}, KEY * 2, algorithm="HS384"), "malformed"),
    ],
)
def test_bad_tokens_are_unauthenticated(token: str, reason: str) -> None:
    with pytest.raises(Unauthenticated, match=reason):
        verify_token(KEY, token)


def test_short_keys_are_refused() -> None:
    with pytest.raises(ValueError, match="32"):
        mint_token(b"short", "a", "viewer", 60)


def test_role_sets_follow_the_ranking() -> None:
    assert READ == {Role.VIEWER, Role.PLANNER, Role.ADMIN}
    assert PLAN == {Role.PLANNER, Role.ADMIN}
    assert WRITE == {Role.INGESTOR, Role.ADMIN}
    assert ADMIN == {Role.ADMIN}


def test_policy_denies_unlisted_methods_and_validates_names() -> None:
    policy = MethodPolicy({"/a.v1.S/Get": READ, "/a.v1.S/Put": WRITE})
    viewer = Principal("v", Role.VIEWER, 0)
    policy.authorize("/a.v1.S/Get", viewer)
    with pytest.raises(PermissionDenied):
        policy.authorize("/a.v1.S/Put", viewer)
    with pytest.raises(PermissionDenied):
        policy.authorize("/a.v1.S/Other", Principal("root", Role.ADMIN, 0))
    merged = policy.merged(MethodPolicy({"/a.v1.S/Put": ADMIN}))
    assert merged.allowed_roles("/a.v1.S/Put") == ADMIN and merged.allowed_roles("/a.v1.S/Get") == READ
    for bad in ("a.v1.S/Get", "/a.v1.S", "/a.v1.S/Get/x", "//Get"):
        with pytest.raises(ValueError):
            MethodPolicy({bad: READ})


def test_open_methods() -> None:
    assert is_open_method("/grpc.health.v1.Health/Check")
    assert is_open_method("/grpc.reflection.v1alpha.ServerReflection/ServerReflectionInfo")
    assert is_open_method("/grpc.reflection.v1.ServerReflection/ServerReflectionInfo")
    assert not is_open_method("/grpc.healthy.v1.Health/Check")
    assert not is_open_method("/novacorrente.forecast.v1.ForecastService/GetForecast")


def test_require_principal_outside_a_call() -> None:
    with pytest.raises(Unauthenticated):
        require_principal()
    token = principal_var.set(Principal("a", Role.VIEWER, 0))
    try:
        assert require_principal().subject == "a"
    finally:
        principal_var.reset(token)


def test_token_source_reuses_then_renews(monkeypatch: pytest.MonkeyPatch) -> None:
    now = [1_000_000.0]
    monkeypatch.setattr(time, "time", lambda: now[0])
    source = TokenSource(KEY, "forecast", Role.VIEWER, ttl_seconds=300)
    first = source()
    assert source() is first
    now[0] += 201  # past two thirds of the lifetime
    second = source()
    assert second != first
    assert jwt.decode(second, KEY, algorithms=["HS256"], options={"verify_exp": False})["iat"] == 1_000_201


def test_dev_token_is_signed_with_the_configured_key() -> None:
    settings = CommonSettings(jwt_secret=KEY.decode())
    principal = verify_token(KEY, mint_dev_token(settings, "admin"))
    assert (principal.subject, principal.role) == ("dev-admin", Role.ADMIN)
    with pytest.raises(ValueError):
        mint_dev_token(settings, "superuser")


def test_a_verified_token_is_still_refused_once_it_expires(monkeypatch: pytest.MonkeyPatch) -> None:
    """Verified tokens are remembered (no HMAC per call), but their expiry is checked on every call."""
    import time as real_time

    from services.kit import auth as auth_module

    key = b"e" * 32
    token = auth_module.mint_token(key, "svc", "viewer", 60)
    assert auth_module.verify_token(key, token, leeway_seconds=0).subject == "svc"
    later = real_time.time() + 120
    monkeypatch.setattr(auth_module.time, "time", lambda: later)
    with pytest.raises(auth_module.Unauthenticated) as err:
        auth_module.verify_token(key, token, leeway_seconds=0)
    assert err.value.reason == "TOKEN_EXPIRED"
