"""POST /api/v1/login: username and password from the users file -> a bearer token with the user's role.

The token is the platform's ordinary JWT (same key, claims and roles as ``nova token``); the gateway forwards
it upstream unchanged, so a dashboard user can do exactly what their role allows on the services.
"""

from __future__ import annotations

import datetime as dt

from fastapi import APIRouter, Request
from starlette.datastructures import State

from gateway import models as m
from gateway.api import ERROR_RESPONSES
from gateway.status import from_domain_error
from gateway.users import LoginThrottle, User
from services.kit.auth import mint_token
from services.kit.errors import DomainError, FailedPrecondition

__all__ = ["router"]

router = APIRouter(prefix="/api/v1")


async def _verify(state: State, username: str, password: str, client: str) -> User:
    """The password check, inside a throttle slot taken before it starts (see ``LoginThrottle``)."""
    throttle: LoginThrottle = state.login_throttle
    attempt = throttle.check(username, client)
    try:
        user: User = await state.users.verify(username, password)
    except DomainError:
        throttle.failed(attempt)
        raise
    except BaseException:
        throttle.abandoned(attempt)
        raise
    throttle.succeeded(attempt)
    return user


@router.post(
    "/login",
    response_model=m.TokenOut,
    summary="Exchange a dashboard username and password for a bearer token",
    responses={k: ERROR_RESPONSES[k] for k in (400, 401, 409, 429)},
    description="401 for any wrong username or password (one message for both); 429 with Retry-After after "
    "repeated failures for the same user from the same address, or while as many attempts for them are still "
    "being checked; 409 when this gateway has no users file.",
)
async def login(request: Request, body: m.LoginIn) -> m.TokenOut:
    state = request.app.state
    client = request.client.host if request.client else ""
    try:
        if state.users is None:
            raise FailedPrecondition(
                "login is not configured on this gateway (NOVA_GATEWAY_USERS_FILE); use a bearer token",
                reason="LOGIN_NOT_CONFIGURED",
            )
        user = await _verify(state, body.username, body.password, client)
    except DomainError as exc:
        raise from_domain_error(exc) from None
    ttl = state.settings.token_ttl_seconds
    token = mint_token(state.jwt_key, user.username, user.role, ttl)
    expires = dt.datetime.now(dt.UTC) + dt.timedelta(seconds=int(ttl))
    return m.TokenOut(
        access_token=token,
        expires_at=expires,
        expires_in=int(ttl),
        username=user.username,
        role=user.role.value,
    )
