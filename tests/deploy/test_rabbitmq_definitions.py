"""deploy/rabbitmq: the broker topology the compose file and the dev overlay load at boot."""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import subprocess
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import aio_pika
import pytest

from services.forecast.settings import ForecastSettings
from services.ports.bus import DEFAULT_DELIVERY_LIMIT, DEFAULT_EXCHANGE, Delivery, open_bus

REPO_ROOT = Path(__file__).resolve().parents[2]
RABBITMQ = REPO_ROOT / "deploy" / "rabbitmq"


def load_definitions() -> dict[str, Any]:
    return json.loads((RABBITMQ / "definitions.json").read_text())


def test_dev_overlay_copies_are_identical() -> None:
    # kustomize cannot read outside k8s/, so the dev overlay keeps copies; they must not drift.
    copies = REPO_ROOT / "k8s" / "overlays" / "dev" / "rabbitmq"
    for name in ("definitions.json", "rabbitmq.conf"):
        assert (copies / name).read_bytes() == (RABBITMQ / name).read_bytes(), name


def test_topology_carries_no_credentials_and_matches_the_bus_adapter() -> None:
    definitions = load_definitions()
    assert "users" not in definitions and "permissions" not in definitions
    exchanges = {e["name"]: e["type"] for e in definitions["exchanges"]}
    # The adapter declares these itself: the broker refuses a redeclaration with another type.
    assert exchanges == {DEFAULT_EXCHANGE: "topic", f"{DEFAULT_EXCHANGE}.dlx": "direct"}
    queues = {q["name"]: q["arguments"] for q in definitions["queues"]}
    work = ForecastSettings.model_fields["reforecast_queue"].default
    assert queues[work] == {
        "x-queue-type": "quorum",
        "x-delivery-limit": DEFAULT_DELIVERY_LIMIT,
        "x-dead-letter-exchange": f"{DEFAULT_EXCHANGE}.dlx",
        "x-dead-letter-routing-key": work,
        "x-dead-letter-strategy": "at-least-once",
        "x-overflow": "reject-publish",
    }
    assert queues[f"{work}.dlq"] == {"x-queue-type": "quorum"}


def test_config_loads_the_directory_both_deployments_mount() -> None:
    conf = (RABBITMQ / "rabbitmq.conf").read_text()
    assert "load_definitions = /etc/rabbitmq/definitions.d\n" in conf
    compose = (REPO_ROOT / "docker-compose.yml").read_text()
    assert "/etc/rabbitmq/definitions.d/10-topology.json" in compose
    assert "/etc/rabbitmq/definitions.d/20-users.json" in compose
    dev = (REPO_ROOT / "k8s" / "overlays" / "dev" / "backing" / "rabbitmq.yaml").read_text()
    assert "mountPath: /etc/rabbitmq/definitions.d" in dev and "path: 20-users.json" in dev


def _rabbitmqctl(*args: str, stdin: str | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["rabbitmqctl", "-q", *args], input=stdin, capture_output=True, text=True, timeout=60, check=False
    )


@pytest.fixture
def imported(tmp_path: Path) -> Iterator[tuple[str, str, str]]:
    """The repository topology plus a user made by deploy/dev-secrets.sh, in a throwaway vhost."""
    if shutil.which("rabbitmqctl") is None:
        pytest.skip("rabbitmqctl is not installed")
    secrets = tmp_path / "secrets"
    subprocess.run(
        ["bash", str(REPO_ROOT / "deploy" / "dev-secrets.sh")],
        env={**os.environ, "NOVA_SECRETS_DIR": str(secrets)},
        check=True,
        capture_output=True,
        timeout=60,
    )
    vhost = user = f"nova-deploy-test-{uuid.uuid4().hex[:10]}"
    topology = json.dumps(load_definitions()).replace('"vhost": "nova"', f'"vhost": "{vhost}"')
    topology = topology.replace('{"name": "nova"}', f'{{"name": "{vhost}"}}')
    users = json.loads((secrets / "rabbitmq_users.json").read_text())
    users["users"][0]["name"] = user
    users["permissions"][0].update(user=user, vhost=vhost)
    # The broker is shared with other suites, some of which stop and start it to test outages.
    started = _rabbitmqctl("await_startup", "--timeout", "60")
    assert started.returncode == 0, started.stderr
    try:
        # Through stdin: the CLI may run as the broker's own user, which cannot read pytest's tmp_path.
        # In file-name order, as the broker imports its definitions directory at boot.
        for document in (topology, json.dumps(users)):
            result = _rabbitmqctl("import_definitions", "--format", "json", stdin=document)
            assert result.returncode == 0, result.stderr
        yield vhost, user, (secrets / "rabbitmq_password").read_text()
    finally:
        _rabbitmqctl("delete_vhost", vhost)
        _rabbitmqctl("delete_user", user)


@pytest.mark.integration
async def test_a_real_broker_routes_and_dead_letters_with_the_generated_user(
    imported: tuple[str, str, str],
) -> None:
    vhost, user, password = imported
    connection = await aio_pika.connect(
        host="127.0.0.1", port=5672, login=user, password=password, virtualhost=vhost
    )
    async with connection:
        channel = await connection.channel(publisher_confirms=True)
        events = await channel.get_exchange("novacorrente.events", ensure=True)
        await events.publish(
            aio_pika.Message(b"batch", message_id="e-1"), routing_key="ingestion.batch.committed", timeout=10
        )
        work = await channel.get_queue("forecast.reforecast", ensure=True)
        message = await work.get(timeout=10, fail=True)
        assert message is not None and message.body == b"batch"
        # A consumer that gives up on a message must not lose it: it is dead-lettered to the .dlq.
        await message.reject(requeue=False)
        dead = await channel.get_queue("forecast.reforecast.dlq", ensure=True)
        for _ in range(50):  # dead-lettering is asynchronous: up to 5 s
            dead_message = await dead.get(timeout=10, fail=False)
            if dead_message is not None:
                break
            await asyncio.sleep(0.1)
        assert dead_message is not None and dead_message.message_id == "e-1"
        await dead_message.ack()


@pytest.mark.integration
async def test_the_services_bus_adapter_accepts_the_pre_declared_topology(
    imported: tuple[str, str, str],
) -> None:
    # The adapter redeclares the exchanges and the forecast queue at start: any argument that differs
    # from the definitions would fail here with PRECONDITION_FAILED.
    vhost, user, password = imported
    bus = await open_bus(f"amqp://{user}:{password}@127.0.0.1:5672/{vhost}")
    try:

        async def ignore(delivery: Delivery) -> None:
            return None

        work = ForecastSettings.model_fields["reforecast_queue"].default
        subscription = await bus.subscribe(work, ["ingestion.batch.committed"], ignore)
        await subscription.stop()
    finally:
        await bus.close()
