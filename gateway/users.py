"""Dashboard users: a JSON file of bcrypt password hashes, and the login check.

File format (``NOVA_GATEWAY_USERS_FILE``, mode 0600)::

    {"version": 1, "users": [{"username": "planner", "role": "planner", "password_hash": "$2b$12$..."}]}

``create_dev_users`` writes such a file with random passwords for the development users (planner, viewer,
admin) and returns the passwords so the caller (``nova demo``) prints them once; only hashes are stored.
In production the file is provisioned like any other secret (``python -m gateway users add ...``).
"""

from __future__ import annotations

import asyncio
import json
import os
import secrets
import tempfile
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

import bcrypt

from services.kit.auth import Role
from services.kit.errors import ResourceExhausted, Unauthenticated

__all__ = [
    "BCRYPT_ROUNDS",
    "DEV_USERS",
    "LoginAttempt",
    "LoginThrottle",
    "User",
    "UserStore",
    "add_user",
    "create_dev_users",
    "hash_password",
    "read_users",
    "write_users",
]

DEV_USERS: Mapping[str, Role] = {"planner": Role.PLANNER, "viewer": Role.VIEWER, "admin": Role.ADMIN}
BCRYPT_ROUNDS = 12
"""OWASP's floor for bcrypt; a check costs ~0.2 s of CPU, paid in a worker thread."""

# bcrypt ignores bytes after the 72nd: longer passwords would silently collide.
_BCRYPT_MAX_BYTES = 72


@dataclass(frozen=True, slots=True)
class User:
    username: str
    role: Role
    password_hash: str


def hash_password(password: str, rounds: int = BCRYPT_ROUNDS) -> str:
    raw = password.encode()
    if len(raw) > _BCRYPT_MAX_BYTES:
        raise ValueError(f"password longer than {_BCRYPT_MAX_BYTES} bytes")
    return bcrypt.hashpw(raw, bcrypt.gensalt(rounds)).decode()


def read_users(path: Path) -> dict[str, User]:
    """Parse a users file; raises ValueError naming the problem."""
    data = json.loads(path.read_text(encoding="utf-8"))
    if not isinstance(data, dict) or data.get("version") != 1 or not isinstance(data.get("users"), list):
        raise ValueError(f"{path}: not a version 1 users file")
    users: dict[str, User] = {}
    for i, entry in enumerate(data["users"]):
        try:
            user = User(str(entry["username"]), Role(entry["role"]), str(entry["password_hash"]))
        except (KeyError, TypeError, ValueError) as exc:
            raise ValueError(f"{path}: users[{i}] is invalid ({exc})") from None
        if not user.password_hash.startswith("$2"):
            raise ValueError(f"{path}: users[{i}] has no bcrypt hash")
        users[user.username] = user
    return users


def write_users(path: Path, users: Iterable[User]) -> None:
    """Write atomically with mode 0600 (the file holds hashes only, but they are still secrets)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    body = {
        "version": 1,
        "users": [
            {"username": u.username, "role": u.role.value, "password_hash": u.password_hash} for u in users
        ],
    }
    fd, tmp = tempfile.mkstemp(prefix=".users-", dir=path.parent)
    try:
        os.fchmod(fd, 0o600)
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            json.dump(body, f, indent=2)
            f.write("\n")
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def add_user(
    path: Path, username: str, role: Role | str, password: str, *, rounds: int = BCRYPT_ROUNDS
) -> None:
    """Add or replace one user in the file (created when absent)."""
    users = read_users(path) if Path(path).exists() else {}
    users[username] = User(username, Role(role), hash_password(password, rounds))
    write_users(path, users.values())


def create_dev_users(
    path: Path | str,
    *,
    users: Mapping[str, Role | str] = DEV_USERS,
    rounds: int = BCRYPT_ROUNDS,
) -> dict[str, str]:
    """Write ``path`` with one user per entry of ``users`` and a fresh random password each.

    Returns ``{username: password}``: the only copy of the passwords, for the caller to show once. An existing
    file is replaced, so every set-up hands out new passwords and old ones stop working.
    """
    passwords = {name: secrets.token_urlsafe(12) for name in users}
    write_users(
        Path(path),
        [User(name, Role(role), hash_password(passwords[name], rounds)) for name, role in users.items()],
    )
    return passwords


class UserStore:
    """Users read from the file, re-read when it changes (no restart to add a user)."""

    def __init__(self, path: Path):
        self.path = path
        self._users: dict[str, User] = {}
        self._stamp: tuple[int, int] | None = None
        self._decoy = b""
        self._reload()

    def _reload(self) -> None:
        stat = self.path.stat()
        stamp = (stat.st_mtime_ns, stat.st_size)
        if stamp != self._stamp:
            self._users = read_users(self.path)
            self._stamp = stamp
            # A hash to check unknown users against, at the file's cost, so that "no such user" takes as
            # long as a wrong password.
            rounds = BCRYPT_ROUNDS
            for user in self._users.values():
                parts = user.password_hash.split("$")
                if len(parts) > 2 and parts[2].isdigit():
                    rounds = int(parts[2])
                    break
            self._decoy = hash_password(secrets.token_urlsafe(12), rounds).encode()

    async def verify(self, username: str, password: str) -> User:
        """The user, or Unauthenticated with one message whatever was wrong (no user enumeration)."""
        await asyncio.to_thread(self._reload)
        user = self._users.get(username)
        raw = password.encode()
        ok = await asyncio.to_thread(
            bcrypt.checkpw, raw[:_BCRYPT_MAX_BYTES], (user.password_hash.encode() if user else self._decoy)
        )
        if user is None or not ok or len(raw) > _BCRYPT_MAX_BYTES:
            raise Unauthenticated("wrong username or password", reason="INVALID_CREDENTIALS")
        return user


@dataclass(frozen=True, slots=True)
class LoginAttempt:
    """A login admitted by ``LoginThrottle.check``: it holds a slot until its outcome is reported."""

    key: tuple[str, str]
    since: int
    """Number of the next failure at admission: lower numbers were recorded before this attempt began."""


@dataclass(slots=True)
class _Window:
    failures: list[tuple[float, int]] = field(default_factory=list)  # (time, number) of recent failures
    in_flight: int = 0


class LoginThrottle:
    """Refuses logins for a (username, client) pair after repeated failures, for a while.

    In memory, per gateway replica: it slows down guessing; it is not an account lockout (which would let
    anyone lock a planner out).

    An attempt counts from ``check`` on, before its password check runs: failures in the window plus
    attempts still being checked may not exceed ``max_failures``, so a burst of concurrent guesses gets no
    more password checks than the same guesses sent one after another. Every admitted attempt ends in
    exactly one of ``failed``, ``succeeded`` or ``abandoned``. A success clears only the failures recorded
    before it began; those of attempts that ran alongside it stay.
    """

    def __init__(self, max_failures: int, lockout_seconds: float, clock: object = time.monotonic):
        self._max = max_failures
        self._lockout = lockout_seconds
        self._clock = clock
        self._windows: dict[tuple[str, str], _Window] = {}
        self._next_failure = 0

    def _now(self) -> float:
        return float(self._clock())  # type: ignore[operator]

    def check(self, username: str, client: str) -> LoginAttempt:
        """Admit one attempt, or raise ResourceExhausted when the pair has no slot left."""
        key = (username, client)
        now = self._now()
        window = self._windows.get(key) or _Window()
        window.failures = [f for f in window.failures if now - f[0] < self._lockout]
        if len(window.failures) + window.in_flight >= self._max:
            self._keep(key, window)
            raise ResourceExhausted(
                "too many failed logins; try again later",
                retry_after_seconds=self._wait(window, now),
                reason="LOGIN_THROTTLED",
            )
        if len(self._windows) > 100_000:  # bound memory under a spray of usernames
            self._windows = {k: w for k, w in self._windows.items() if w.in_flight}
        window.in_flight += 1
        self._windows[key] = window
        return LoginAttempt(key, self._next_failure)

    def _wait(self, window: _Window, now: float) -> float:
        if len(window.failures) >= self._max:
            return self._lockout - (now - window.failures[0][0])
        # Refused only because other attempts are still being checked: they end within a password check.
        return 1.0

    def _keep(self, key: tuple[str, str], window: _Window) -> None:
        if window.failures or window.in_flight:
            self._windows[key] = window
        else:
            self._windows.pop(key, None)

    def _release(self, attempt: LoginAttempt) -> _Window:
        window = self._windows.setdefault(attempt.key, _Window())
        window.in_flight = max(0, window.in_flight - 1)
        return window

    def failed(self, attempt: LoginAttempt) -> None:
        window = self._release(attempt)
        window.failures.append((self._now(), self._next_failure))
        self._next_failure += 1

    def succeeded(self, attempt: LoginAttempt) -> None:
        window = self._release(attempt)
        window.failures = [f for f in window.failures if f[1] >= attempt.since]
        self._keep(attempt.key, window)

    def abandoned(self, attempt: LoginAttempt) -> None:
        """The attempt ended without a verdict (cancelled, users file unreadable): free its slot only."""
        self._keep(attempt.key, self._release(attempt))
