"""Fixtures shared by every test tier: a signing key, tokens, and isolated real back ends.

Integration fixtures create their own PostgreSQL database and RabbitMQ vhost and drop them at
the end, so runs never see each other's data.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import secrets
import shutil
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path

import asyncpg
import grpc
import pytest
from google.rpc import error_details_pb2
from grpc_status import rpc_status

from services.kit.auth import Role, mint_token

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT / "data"
MODEL_NAME = "demand_forecast"
PG_ADMIN_URL = os.environ.get("NOVA_TEST_PG_URL", "postgresql://postgres@127.0.0.1:5432/test")
AMQP_HOST = os.environ.get("NOVA_TEST_AMQP_HOST", "127.0.0.1:5672")
REDIS_URL = os.environ.get("NOVA_TEST_REDIS_URL", "redis://127.0.0.1:6379/0")


@pytest.fixture(scope="session")
def jwt_key() -> bytes:
    """A signing key that is also valid text, so NOVA_JWT_SECRET=jwt_key.decode() is the same key."""
    return secrets.token_hex(32).encode()


@pytest.fixture(scope="session")
def token_for(jwt_key: bytes) -> Callable[..., str]:
    def make(role: str = "admin", subject: str = "tester", ttl: float = 600) -> str:
        return mint_token(jwt_key, subject, Role(role), ttl)

    return make


def bearer(token: str) -> tuple[tuple[str, str], ...]:
    return (("authorization", f"Bearer {token}"),)


def bad_request_fields(error: grpc.RpcError) -> list[str]:
    """The field paths of the google.rpc.BadRequest details of a failed call (sync or asyncio stub)."""
    status = rpc_status.from_call(error)  # type: ignore[arg-type]
    assert status is not None, "an INVALID_ARGUMENT must carry google.rpc details"
    fields: list[str] = []
    for detail in status.details:
        if detail.Is(error_details_pb2.BadRequest.DESCRIPTOR):
            bad = error_details_pb2.BadRequest()
            detail.Unpack(bad)
            fields += [v.field for v in bad.field_violations]
    return fields


@contextlib.asynccontextmanager
async def fresh_pg_database() -> AsyncIterator[str]:
    """A fresh, empty PostgreSQL database, dropped afterwards."""
    name = f"nova_test_{uuid.uuid4().hex[:12]}"
    admin = await asyncpg.connect(PG_ADMIN_URL)
    try:
        await admin.execute(f'CREATE DATABASE "{name}"')
    finally:
        await admin.close()
    try:
        yield PG_ADMIN_URL.rsplit("/", 1)[0] + f"/{name}"
    finally:
        admin = await asyncpg.connect(PG_ADMIN_URL)
        try:
            await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        finally:
            await admin.close()


@pytest.fixture
async def pg_url() -> AsyncIterator[str]:
    """A fresh, empty PostgreSQL database for one test."""
    async with fresh_pg_database() as url:
        yield url


def rabbitmqctl(*args: str, attempts: int = 3) -> None:
    """Run a ``rabbitmqctl`` command; a failure is tried again (the broker may still be closing the
    connections and queues of processes a test killed), then raised with the CLI's own message."""
    for attempt in range(1, attempts + 1):
        done = subprocess.run(["rabbitmqctl", "-q", *args], capture_output=True, text=True, timeout=60)
        if done.returncode == 0:
            return
        if attempt < attempts:
            time.sleep(2.0)
    raise RuntimeError(f"rabbitmqctl {' '.join(args)} failed ({done.returncode}): {done.stderr.strip()}")


@pytest.fixture(scope="session")
def amqp_url() -> Iterator[str]:
    """A RabbitMQ vhost of this test session, deleted afterwards."""
    vhost = f"nova-test-{uuid.uuid4().hex[:10]}"
    rabbitmqctl("add_vhost", vhost)
    rabbitmqctl("set_permissions", "-p", vhost, "guest", ".*", ".*", ".*")
    yield f"amqp://guest:guest@{AMQP_HOST}/{vhost}"
    rabbitmqctl("delete_vhost", vhost)


def _training_fingerprint() -> str:
    digest = hashlib.sha256()
    files = [*sorted((ROOT / "ml_training").glob("*.py")), ROOT / "services/forecast/features.py"]
    for path in [*files, DATA / "dadosSuprimentos.xlsx"]:
        digest.update(path.name.encode())
        digest.update(path.read_bytes())
    return digest.hexdigest()[:16]


@pytest.fixture(scope="session")
def trained_repo(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A model repository holding one real model version (read only copy per session).

    Trained by ``python -m ml_training train --quick`` on the real export, once per training-code and
    data fingerprint (cached in the system temp folder). ``NOVA_TEST_MODEL_REPOSITORY`` points at an
    already trained repository instead (e.g. ``make models``).
    """
    given = os.environ.get("NOVA_TEST_MODEL_REPOSITORY")
    cache = (
        Path(given)
        if given
        else Path(tempfile.gettempdir()) / f"nova-forecast-test-model-{_training_fingerprint()}"
    )
    if not given and not (cache / MODEL_NAME / "1" / "model.json").is_file():
        staging = Path(tempfile.mkdtemp(prefix=".nova-train-", dir=tempfile.gettempdir()))
        proc = subprocess.run(
            [
                sys.executable,
                "-m",
                "ml_training",
                "train",
                "--data",
                str(DATA),
                "--out",
                str(staging),
                "--quick",
            ],
            cwd=ROOT,
            capture_output=True,
            text=True,
            timeout=300,
        )
        if proc.returncode != 0:
            shutil.rmtree(staging, ignore_errors=True)
            pytest.fail(f"training the test model failed:\n{proc.stderr[-3000:]}")
        shutil.rmtree(cache, ignore_errors=True)
        staging.rename(cache)
    versions = sorted((cache / MODEL_NAME).iterdir(), key=lambda p: int(p.name) if p.name.isdigit() else -1)
    repo = tmp_path_factory.mktemp("models")
    shutil.copytree(versions[-1], repo / MODEL_NAME / "1")
    sidecar_path = repo / MODEL_NAME / "1" / "model.json"
    sidecar = json.loads(sidecar_path.read_text())
    sidecar["version"] = "1"
    # The graph treats NaN as 'missing' (LightGBM), and build_features emits NaN for absent externals and
    # lags. The export does not declare that yet, so the Open Inference Protocol would refuse the very rows
    # the domain API feeds: declare it here (the sha256 covers model.onnx only) until the export does.
    for spec in sidecar["inputs"]:
        spec.setdefault("allow_nan", True)
    sidecar_path.write_text(json.dumps(sidecar))
    return repo
