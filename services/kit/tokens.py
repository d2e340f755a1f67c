"""Development tokens, for ``nova token --role ROLE`` and local tooling."""

from __future__ import annotations

from services.kit.auth import Role, mint_token
from services.kit.settings import CommonSettings

__all__ = ["DEFAULT_DEV_TTL_SECONDS", "mint_dev_token"]

DEFAULT_DEV_TTL_SECONDS = 8 * 3600
"""A working day: long enough for a demo session, short enough that a leaked token soon dies."""


def mint_dev_token(
    settings: CommonSettings,
    role: Role | str,
    *,
    subject: str | None = None,
    ttl_seconds: float = DEFAULT_DEV_TTL_SECONDS,
) -> str:
    """Sign a token with the configured key (NOVA_JWT_SECRET / NOVA_JWT_SECRET_FILE).

    ``subject`` defaults to ``dev-<role>``. Raises ConfigurationError when no key is configured and
    ValueError for an unknown role.
    """
    role = Role(role)
    return mint_token(settings.jwt_key(), subject or f"dev-{role.value}", role, ttl_seconds)
