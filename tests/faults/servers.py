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


def _redis_up() -> bool:
    reply = subprocess.run(
        ["redis-cli", "-h", "127.0.0.1", "-p", "6379", "ping"], check=False, capture_output=True, text=True
    )
    return reply.stdout.strip() == "PONG"


def stop_redis() -> None:
    subprocess.run(
        ["redis-cli", "-h", "127.0.0.1", "-p", "6379", "shutdown", "nosave"], check=False, capture_output=True
    )
    deadline = time.monotonic() + 30
    while _redis_up():
        if time.monotonic() > deadline:
            raise RuntimeError("Redis did not stop")
        time.sleep(0.1)


def start_redis() -> None:
    """Started with the same command the machine uses (deploy/dev/ensure-services.sh)."""
    if not _redis_up():
        subprocess.run(
            [
                "redis-server", "--daemonize", "yes", "--bind", "127.0.0.1", "-::1", "--port", "6379",
                "--save", "", "--appendonly", "no",
                "--dir", "/var/lib/redis", "--logfile", "/var/log/redis/ci.log",
            ],
            check=True,
            capture_output=True,
        )  # fmt: skip
    deadline = time.monotonic() + 30
    while not _redis_up():
        if time.monotonic() > deadline:
            raise RuntimeError("Redis did not come back")
        time.sleep(0.1)


@contextlib.contextmanager
def redis_restored() -> Iterator[None]:
    try:
        yield
    finally:
        start_redis()
