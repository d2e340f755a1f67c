"""Properties of docker-compose.yml, read from the model `docker compose config` normalised and validated."""

from __future__ import annotations

from typing import Any

import pytest

Model = dict[str, Any]
GRPC = {"ingestion": 50051, "analytics": 50052, "forecast": 50053}
OWN = ("migrate", "ingestion", "analytics", "forecast", "gateway", "training")


def test_the_platform_is_all_there(compose_model: Model) -> None:
    services = compose_model["services"]
    assert set(services) == {"postgres", "rabbitmq", "redis", *OWN}
    assert services["postgres"]["image"].startswith("postgres:15")
    assert services["redis"]["image"].startswith("redis:7")
    assert services["rabbitmq"]["image"].startswith(("rabbitmq:3.13-management", "rabbitmq:4"))
    assert services["training"]["profiles"] == ["training"]
    assert services["migrate"]["command"] == ["migrate"]
    assert services["migrate"]["image"] == services["ingestion"]["image"]


@pytest.mark.parametrize("name", OWN)
def test_own_services_are_hardened(compose_model: Model, name: str) -> None:
    service = compose_model["services"][name]
    assert service["read_only"] is True
    assert service["user"] == "10001:10001"
    assert service["cap_drop"] == ["ALL"]
    assert "no-new-privileges:true" in service["security_opt"]
    assert any(t.startswith("/tmp:") for t in service["tmpfs"])
    assert (
        service["build"]["dockerfile"]
        == f"deploy/docker/{'ingestion' if name == 'migrate' else name}.Dockerfile"
    )


def test_grpc_healthchecks_and_start_order(compose_model: Model) -> None:
    services = compose_model["services"]
    for name, port in GRPC.items():
        check = services[name]["healthcheck"]["test"]
        assert check == ["CMD", "python", "-m", "services.kit.healthcheck", str(port)], name
        assert services[name]["environment"][f"NOVA_{name.upper()}_PORT"] == str(port)
        assert services[name]["environment"][f"NOVA_{name.upper()}_HOST"] == "0.0.0.0"
        assert services[name]["depends_on"]["migrate"]["condition"] == "service_completed_successfully"
    assert services["ingestion"]["depends_on"]["postgres"]["condition"] == "service_healthy"
    assert services["ingestion"]["depends_on"]["rabbitmq"]["condition"] == "service_healthy"
    assert {d["condition"] for d in services["gateway"]["depends_on"].values()} == {"service_healthy"}
    assert services["migrate"]["depends_on"]["postgres"]["condition"] == "service_healthy"


def test_secrets_come_from_files_never_inline(compose_model: Model) -> None:
    assert all("file" in secret for secret in compose_model["secrets"].values())
    services = compose_model["services"]
    assert services["postgres"]["environment"]["POSTGRES_PASSWORD_FILE"] == "/run/secrets/postgres_password"
    for name in ("ingestion", "analytics", "forecast", "gateway"):
        env = services[name]["environment"]
        assert env["NOVA_JWT_SECRET_FILE"] == "/run/secrets/jwt_secret", name
        assert "NOVA_JWT_SECRET" not in env and "NOVA_DATABASE_URL" not in env, name
        for value in env.values():
            assert "@" not in str(value), f"{name}: credentials in an environment value"
    assert "database_url" not in {s["source"] for s in services["forecast"]["secrets"]}, (
        "forecast has no database"
    )
    assert {s["source"] for s in services["gateway"]["secrets"]} == {"jwt_secret"}


def test_models_volume_read_only_in_forecast_written_by_training(compose_model: Model) -> None:
    services = compose_model["services"]
    (forecast,) = [v for v in services["forecast"]["volumes"] if v["target"] == "/models"]
    assert forecast["source"] == "models" and forecast["read_only"] is True
    (training,) = [v for v in services["training"]["volumes"] if v["target"] == "/models"]
    assert training["source"] == "models" and not training.get("read_only")
    (data,) = [v for v in services["training"]["volumes"] if v["target"] == "/data"]
    assert data["type"] == "bind" and data["source"].endswith("/data") and data["read_only"] is True
    assert services["training"]["command"][:5] == ["train", "--data", "/data", "--out", "/models"]
    assert "models" in compose_model["volumes"]


def test_rabbitmq_loads_the_repository_definitions(compose_model: Model) -> None:
    rabbitmq = compose_model["services"]["rabbitmq"]
    targets = {v["target"]: v for v in rabbitmq["volumes"]}
    assert targets["/etc/rabbitmq/definitions.d/10-topology.json"]["source"].endswith(
        "deploy/rabbitmq/definitions.json"
    )
    assert targets["/etc/rabbitmq/conf.d/20-nova.conf"]["source"].endswith("deploy/rabbitmq/rabbitmq.conf")
    users = [s for s in rabbitmq["secrets"] if s["source"] == "rabbitmq_users"]
    assert users[0]["target"] == "/etc/rabbitmq/definitions.d/20-users.json"


def test_stop_grace_outlasts_the_service_drain(compose_model: Model) -> None:
    for name in ("ingestion", "analytics", "forecast", "gateway"):
        service = compose_model["services"][name]
        assert service["stop_grace_period"] == "30s"
        # The consumers' drain, then the RPCs': the grace twice.
        assert 2 * int(service["environment"][f"NOVA_{name.upper()}_GRACE_SECONDS"]) < 30
