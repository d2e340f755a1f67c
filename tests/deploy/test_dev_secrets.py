"""deploy/dev-secrets.sh: development secrets generated locally, idempotently, never committed."""

from __future__ import annotations

import base64
import hashlib
import json
import os
import shutil
import stat
import subprocess
from pathlib import Path
from urllib.parse import urlsplit

import pytest

REPO_ROOT = Path(__file__).resolve().parents[2]
SCRIPT = REPO_ROOT / "deploy" / "dev-secrets.sh"
COMPOSE_SECRETS = ("jwt_secret", "postgres_password", "database_url", "broker_url", "rabbitmq_users.json")


def run(secrets: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["bash", str(SCRIPT), *args],
        env={**os.environ, "NOVA_SECRETS_DIR": str(secrets)},
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )


def test_generates_every_compose_secret_once(tmp_path: Path) -> None:
    secrets = tmp_path / "secrets"
    run(secrets)
    first = {name: (secrets / name).read_bytes() for name in COMPOSE_SECRETS}
    assert all(first.values())
    assert stat.S_IMODE(secrets.stat().st_mode) == 0o700
    # Readable by the containers' users (bind mounts keep the host's mode), private to the directory.
    assert stat.S_IMODE((secrets / "database_url").stat().st_mode) == 0o644
    run(secrets)
    assert {name: (secrets / name).read_bytes() for name in COMPOSE_SECRETS} == first, "must not rotate"


def test_urls_and_broker_user_share_the_generated_passwords(tmp_path: Path) -> None:
    secrets = tmp_path / "secrets"
    run(secrets)
    database = urlsplit((secrets / "database_url").read_text())
    assert (database.scheme, database.hostname, database.port, database.path) == (
        "postgresql",
        "postgres",
        5432,
        "/nova",
    )
    assert database.password == (secrets / "postgres_password").read_text()
    broker = urlsplit((secrets / "broker_url").read_text())
    assert (broker.hostname, broker.path) == ("rabbitmq", "/nova")
    users = json.loads((secrets / "rabbitmq_users.json").read_text())
    (user,) = users["users"]
    assert user["name"] == broker.username == "nova"
    # RabbitMQ's rabbit_password_hashing_sha256: base64(salt[4] + sha256(salt + password)).
    raw = base64.b64decode(user["password_hash"])
    assert raw[4:] == hashlib.sha256(raw[:4] + broker.password.encode()).digest()  # type: ignore[union-attr]
    assert users["permissions"] == [
        {"user": "nova", "vhost": "nova", "configure": ".*", "write": ".*", "read": ".*"}
    ]


def test_k8s_dev_mode_renders_secret_objects(tmp_path: Path) -> None:
    if shutil.which("kubectl") is None:
        pytest.skip("kubectl is not on PATH")
    output = run(tmp_path / "secrets", "k8s-dev").stdout
    names = [line.split(":", 1)[1].strip() for line in output.splitlines() if line.startswith("  name:")]
    assert names == ["nova-backing", "nova-jwt", "nova-postgres", "nova-rabbitmq"]
    assert "database-url:" in output and "users.json:" in output
