"""Stopping and restarting the machine's real servers, always restoring them."""

from __future__ import annotations

import contextlib
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path


def _run(*cmd: str, timeout: float = 120) -> None:
    subprocess.run(cmd, check=True, capture_output=True, timeout=timeout)


def _pg_version() -> str:
    return sorted(p.name for p in Path("/etc/postgresql").iterdir())[-1]


def _pg_ready() -> bool:
    return subprocess.run(["pg_isready", "-q", "-h", "127.0.0.1", "-p", "5432"], check=False).returncode == 0


def start_postgres() -> None:
    if not _pg_ready():
        subprocess.run(
            ["pg_ctlcluster", "--skip-systemctl-redirect", _pg_version(), "main", "start"],
            check=False,
            capture_output=True,
            timeout=120,
        )
    deadline = time.monotonic() + 60
    while not _pg_ready():
        if time.monotonic() > deadline:
            raise RuntimeError("PostgreSQL did not come back")
        time.sleep(0.2)


def stop_postgres() -> None:
    _run("pg_ctlcluster", "--skip-systemctl-redirect", _pg_version(), "main", "stop", "-m", "fast")


@contextlib.contextmanager
def postgres_restored() -> Iterator[None]:
    try:
        yield
    finally:
        start_postgres()


def stop_rabbitmq_app() -> None:
    """Stops the broker (connections drop, nothing accepted) while the node stays up to restart fast."""
    _run("rabbitmqctl", "-q", "stop_app")


def start_rabbitmq_app() -> None:
    _run("rabbitmqctl", "-q", "start_app")
    _run("rabbitmqctl", "-q", "await_startup", "--timeout", "120")


@contextlib.contextmanager
def rabbitmq_restored() -> Iterator[None]:
    try:
        yield
    finally:
        subprocess.run(["rabbitmqctl", "-q", "start_app"], check=False, capture_output=True, timeout=120)
        _run("rabbitmqctl", "-q", "await_startup", "--timeout", "120")
