"""Bearer tokens (JWT HS256) and the per-method role policy.

Claims: ``sub`` (who), ``role`` (one of ``Role``), ``iat``, ``exp``. Roles rank for reads
admin > planner > viewer; ``ingestor`` may only write data. A method absent from the policy is denied, except
the open infrastructure services (health, reflection), so forgetting to list a new RPC fails closed.
"""

from __future__ import annotations

import enum
import functools
import time
from collections.abc import Iterable, Mapping
from contextvars import ContextVar
from dataclasses import dataclass

import jwt

from services.kit.errors import PermissionDenied, Unauthenticated
from services.kit.settings import MIN_JWT_KEY_BYTES

__all__ = [
    "ADMIN",
    "ALGORITHM",
    "OPEN_METHOD_PREFIXES",
    "PLAN",
    "READ",
    "WRITE",
    "MethodPolicy",
    "Principal",
    "Role",
    "TokenSource",
    "is_open_method",
    "mint_token",
    "principal_var",
    "require_principal",
    "verify_token",
]

ALGORITHM = "HS256"


class Role(enum.StrEnum):
    """What a token holder may do; see the module docstring for the ranking."""

    VIEWER = "viewer"
    PLANNER = "planner"
    INGESTOR = "ingestor"
    ADMIN = "admin"


READ: frozenset[Role] = frozenset({Role.VIEWER, Role.PLANNER, Role.ADMIN})
"""Read dashboards, forecasts and analytics."""
PLAN: frozenset[Role] = frozenset({Role.PLANNER, Role.ADMIN})
"""Change plans: run forecasts, acknowledge alerts, set policies."""
WRITE: frozenset[Role] = frozenset({Role.INGESTOR, Role.ADMIN})
"""Load data into the system."""
ADMIN: frozenset[Role] = frozenset({Role.ADMIN})
"""Operate the platform."""

OPEN_METHOD_PREFIXES = ("/grpc.health.v1.Health/", "/grpc.reflection.")
"""Methods callable without a token: probes and tooling must work before anyone has credentials."""


@dataclass(frozen=True, slots=True)
class Principal:
    """The authenticated caller of the current RPC."""

    subject: str
    role: Role
    expires_at: int


principal_var: ContextVar[Principal | None] = ContextVar("principal", default=None)
"""Principal of the RPC being served in this task; set by the auth interceptor."""


def require_principal() -> Principal:
    """The current caller, or Unauthenticated when the code runs outside an authenticated call."""
    principal = principal_var.get()
    if principal is None:
        raise Unauthenticated("no authenticated caller")
    return principal


def _check_key(key: bytes) -> None:
    if len(key) < MIN_JWT_KEY_BYTES:
        raise ValueError(f"HS256 key must be at least {MIN_JWT_KEY_BYTES} bytes, got {len(key)}")


def mint_token(key: bytes, subject: str, role: Role | str, ttl_seconds: float) -> str:
    """Sign a token for ``subject`` with ``role`` valid for ``ttl_seconds`` from now."""
    _check_key(key)
    if ttl_seconds <= 0:
        raise ValueError("ttl_seconds must be positive")
    now = int(time.time())
    claims = {"sub": subject, "role": Role(role).value, "iat": now, "exp": now + int(ttl_seconds)}
    return jwt.encode(claims, key, algorithm=ALGORITHM)


def verify_token(key: bytes, token: str, *, leeway_seconds: float = 5.0) -> Principal:
    """Check signature, expiry and claims of ``token``.

    ``leeway_seconds`` absorbs clock skew between the minting and the verifying host.

    Raises:
        Unauthenticated: malformed, badly signed, expired, missing a claim, or an unknown role. The message
            says which, never echoing the token.
    """
    # A client sends the same token on every call until it renews it: the signature of a token already
    # verified with this key is not checked again (an HMAC and a JSON parse per call add up at thousands of
    # calls a second); its expiry still is, on every call.
    principal = _verified(key, token, leeway_seconds)
    if principal.expires_at + leeway_seconds < time.time():
        raise Unauthenticated("token expired", reason="TOKEN_EXPIRED")
    return principal


@functools.lru_cache(maxsize=4096)
def _verified(key: bytes, token: str, leeway_seconds: float) -> Principal:
    """The principal of a token whose signature and claims are valid (failures raise and are not cached)."""
    _check_key(key)
    try:
        claims = jwt.decode(
            token,
            key,
            algorithms=[ALGORITHM],
            options={"require": ["sub", "role", "iat", "exp"]},
            leeway=leeway_seconds,
        )
    except jwt.ExpiredSignatureError as exc:
        raise Unauthenticated("token expired", reason="TOKEN_EXPIRED") from exc
    except jwt.InvalidSignatureError as exc:
        raise Unauthenticated("token signature is invalid", reason="TOKEN_INVALID") from exc
    except jwt.MissingRequiredClaimError as exc:
        raise Unauthenticated(f"token lacks the {exc.claim!r} claim", reason="TOKEN_INVALID") from exc
    except jwt.InvalidTokenError as exc:
        raise Unauthenticated("token is malformed", reason="TOKEN_INVALID") from exc
    try:
        role = Role(claims["role"])
    except ValueError as exc:
        raise Unauthenticated("token carries an unknown role", reason="TOKEN_INVALID") from exc
    return Principal(subject=str(claims["sub"]), role=role, expires_at=int(claims["exp"]))


def is_open_method(method: str) -> bool:
    """True for methods that need no token (health, reflection)."""
    return method.startswith(OPEN_METHOD_PREFIXES)


class MethodPolicy:
    """Which roles may call which full gRPC method name (``/pkg.Service/Method``).

    Example::

        MethodPolicy({
            "/novacorrente.forecast.v1.ForecastService/GetForecast": READ,
            "/novacorrente.forecast.v1.ForecastService/RunForecast": PLAN,
        })
    """

    def __init__(self, rules: Mapping[str, Iterable[Role | str]]):
        parsed: dict[str, frozenset[Role]] = {}
        for method, roles in rules.items():
            parts = method.split("/")
            if len(parts) != 3 or parts[0] or not parts[1] or not parts[2]:
                raise ValueError(f"policy key {method!r} is not a full method name '/pkg.Service/Method'")
            parsed[method] = frozenset(Role(r) for r in roles)
        self._rules = parsed

    @property
    def rules(self) -> Mapping[str, frozenset[Role]]:
        return dict(self._rules)

    def merged(self, other: MethodPolicy) -> MethodPolicy:
        """A policy holding both rule sets; ``other`` wins on a method listed in both."""
        return MethodPolicy({**self._rules, **other._rules})

    def allowed_roles(self, method: str) -> frozenset[Role]:
        return self._rules.get(method, frozenset())

    def authorize(self, method: str, principal: Principal) -> None:
        """Raise PermissionDenied unless ``principal`` may call ``method``."""
        if principal.role not in self.allowed_roles(method):
            raise PermissionDenied(
                f"role {principal.role.value!r} may not call {method}",
                metadata={"method": method, "role": principal.role.value},
            )


class TokenSource:
    """Mints service-to-service tokens from the key and re-mints them before they expire.

    Pass ``TokenSource(key, "forecast", Role.VIEWER)`` as the token provider of an outbound channel.
    """

    def __init__(self, key: bytes, subject: str, role: Role | str, ttl_seconds: float = 900.0):
        _check_key(key)
        self._key, self._subject, self._role, self._ttl = key, subject, Role(role), ttl_seconds
        self._token = ""
        self._renew_at = 0.0

    def __call__(self) -> str:
        now = time.time()
        if now >= self._renew_at:
            self._token = mint_token(self._key, self._subject, self._role, self._ttl)
            # Renew at two thirds of the lifetime, well before a call could carry an expired token.
            self._renew_at = now + self._ttl * 2 / 3
        return self._token
