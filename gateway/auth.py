"""Bearer tokens on HTTP: the same JWTs and roles as the services, checked per route, forwarded as metadata.

Every data route declares the gRPC method it calls (``x-grpc-method`` in its OpenAPI operation). The
``caller`` dependency reads that name from the matched route, verifies the token (401 when missing, malformed,
badly signed or expired) and checks the role against the upstream's policy for that method (403). The
resulting ``Caller`` carries the caller's own token, which the route forwards upstream unchanged.

The alert stream also accepts ``?access_token=`` because a browser's EventSource cannot set headers; the
header wins when both are given. Tokens in URLs end up in logs: the gateway's access log never records query
strings, and proxies in front of it should not either.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated

from fastapi import Depends, Query, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from starlette.routing import BaseRoute

from gateway.status import from_domain_error
from services.kit.auth import MethodPolicy, Principal, verify_token
from services.kit.errors import PermissionDenied, Unauthenticated
from services.kit.interceptors import REQUEST_ID_HEADER
from services.kit.logging import request_id_var

__all__ = [
    "GRPC_METHOD_KEY",
    "Authorizer",
    "Caller",
    "CallerDep",
    "StreamCallerDep",
    "caller",
    "route_method",
    "stream_caller",
]

GRPC_METHOD_KEY = "x-grpc-method"
"""OpenAPI extension naming the gRPC method an operation maps to."""

bearer_scheme = HTTPBearer(
    auto_error=False,
    bearerFormat="JWT",
    description="JWT from POST /api/v1/login (or `nova token`); roles viewer < planner < admin.",
)


@dataclass(frozen=True, slots=True)
class Caller:
    """An authenticated, authorized HTTP caller and the token to forward."""

    principal: Principal
    token: str

    @property
    def metadata(self) -> tuple[tuple[str, str], ...]:
        """Metadata of a call made for this caller: their token, and the request id of the request served
        (the gateway's channels have no interceptor to add it, see ``gateway.upstreams``)."""
        request_id = request_id_var.get()
        if request_id is None:
            return (("authorization", f"Bearer {self.token}"),)
        return (("authorization", f"Bearer {self.token}"), (REQUEST_ID_HEADER, request_id))


class Authorizer:
    """Verifies tokens with the platform key and authorizes methods with the upstream policy."""

    def __init__(self, key: bytes, policy: MethodPolicy):
        self._key = key
        self.policy = policy

    def check(self, token: str | None, method: str) -> Caller:
        """Raise ``ApiError`` (401/403) unless ``token`` is valid and its role may call ``method``."""
        try:
            if not token:
                raise Unauthenticated("missing bearer token", reason="TOKEN_MISSING")
            principal = verify_token(self._key, token)
            if not self.policy.allowed_roles(method):
                # Fail closed: a method the upstream policy does not list is denied there too.
                raise PermissionDenied(f"{method} is not open to any role")
            self.policy.authorize(method, principal)
        except (Unauthenticated, PermissionDenied) as exc:
            raise from_domain_error(exc) from None
        return Caller(principal=principal, token=token)


def route_method(route: BaseRoute | None) -> str:
    """The gRPC method a route declared, or '' when it declared none."""
    extra = getattr(route, "openapi_extra", None) or {}
    return str(extra.get(GRPC_METHOD_KEY, ""))


def _authorizer(request: Request) -> Authorizer:
    authorizer: Authorizer = request.app.state.authorizer
    return authorizer


Credentials = Annotated[HTTPAuthorizationCredentials | None, Depends(bearer_scheme)]


async def caller(request: Request, credentials: Credentials) -> Caller:
    """Dependency of every data route: the authenticated caller, authorized for the route's method."""
    token = credentials.credentials if credentials is not None else None
    return _authorizer(request).check(token, route_method(request.scope.get("route")))


async def stream_caller(
    request: Request,
    credentials: Credentials,
    access_token: Annotated[
        str | None,
        Query(
            description="Bearer token for clients that cannot set headers (EventSource). Prefer the header.",
            max_length=4096,
        ),
    ] = None,
) -> Caller:
    """Like ``caller``, but also takes the token from ``?access_token=``."""
    token = credentials.credentials if credentials is not None else access_token
    return _authorizer(request).check(token, route_method(request.scope.get("route")))


CallerDep = Annotated[Caller, Depends(caller)]
StreamCallerDep = Annotated[Caller, Depends(stream_caller)]
