"""Settings: environment names, prefixes, secrets and the JWT key."""

from __future__ import annotations

from pathlib import Path

import pytest
from pydantic import Field, ValidationError
from pydantic_settings import SettingsConfigDict

from services.kit.settings import CommonSettings, ConfigurationError, Port, ServiceSettings
from services.kit.tokens import mint_dev_token

KEY = "k" * 40


class ForecastSettings(ServiceSettings):
    """Shape of a real service's settings, as the services declare them."""

    model_config = SettingsConfigDict(env_prefix="NOVA_FORECAST_")

    port: Port = Field(50053, description="TCP port of the gRPC server.")
    model_repository: Path = Field(Path("./models"), description="Directory of exported models.")


@pytest.fixture(autouse=True)
def clean_env(monkeypatch: pytest.MonkeyPatch) -> pytest.MonkeyPatch:
    import os

    for name in list(os.environ):
        if name.startswith("NOVA_"):
            monkeypatch.delenv(name)
    return monkeypatch


def test_defaults_follow_the_brief() -> None:
    settings = ForecastSettings()
    assert settings.database_url == "duckdb:///.nova/nova.duckdb"
    assert settings.broker_url == "memory://"
    assert settings.cache_url == "memory://"
    assert settings.log_level == "INFO"
    assert (settings.host, settings.port, settings.grace_seconds) == ("127.0.0.1", 50053, 10.0)
    assert settings.metrics_port is None and settings.jwt_secret is None


def test_shared_names_have_no_prefix_and_service_names_do(clean_env: pytest.MonkeyPatch) -> None:
    clean_env.setenv("NOVA_DATABASE_URL", "postgresql://postgres@127.0.0.1:5432/test")
    clean_env.setenv("NOVA_BROKER_URL", "amqp://guest:guest@127.0.0.1:5672/%2f")
    clean_env.setenv("NOVA_CACHE_URL", "redis://127.0.0.1:6379/0")
    clean_env.setenv("NOVA_LOG_LEVEL", "debug")
    clean_env.setenv("NOVA_FORECAST_HOST", "0.0.0.0")
    clean_env.setenv("NOVA_FORECAST_PORT", "6000")
    clean_env.setenv("NOVA_FORECAST_GRACE_SECONDS", "2.5")
    clean_env.setenv("NOVA_FORECAST_METRICS_PORT", "9100")
    clean_env.setenv("NOVA_FORECAST_MODEL_REPOSITORY", "/models")
    clean_env.setenv("NOVA_INGESTION_PORT", "7000")  # another service's: ignored
    clean_env.setenv("NOVA_FORECAST_DATABASE_URL", "duckdb:///wrong")  # shared names take no prefix
    settings = ForecastSettings()
    assert settings.database_url == "postgresql://postgres@127.0.0.1:5432/test"
    assert settings.broker_url == "amqp://guest:guest@127.0.0.1:5672/%2f"
    assert settings.cache_url == "redis://127.0.0.1:6379/0"
    assert settings.log_level == "DEBUG"
    assert (settings.host, settings.port, settings.grace_seconds) == ("0.0.0.0", 6000, 2.5)
    assert settings.metrics_port == 9100
    assert settings.model_repository == Path("/models")


def test_invalid_values_are_rejected(clean_env: pytest.MonkeyPatch) -> None:
    clean_env.setenv("NOVA_FORECAST_PORT", "not-a-port")
    with pytest.raises(ValidationError):
        ForecastSettings()
    clean_env.setenv("NOVA_FORECAST_PORT", "70000")
    with pytest.raises(ValidationError):
        ForecastSettings()
    clean_env.delenv("NOVA_FORECAST_PORT")
    clean_env.setenv("NOVA_LOG_LEVEL", "chatty")
    with pytest.raises(ValidationError, match="NOVA_LOG_LEVEL"):
        ForecastSettings()


def test_secret_is_hidden_and_used_as_key(clean_env: pytest.MonkeyPatch) -> None:
    clean_env.setenv("NOVA_JWT_SECRET", KEY)
    settings = CommonSettings()
    assert KEY not in repr(settings) and KEY not in str(settings.model_dump())
    assert settings.jwt_key() == KEY.encode()


def test_secret_file_is_read_and_stripped(clean_env: pytest.MonkeyPatch, tmp_path: Path) -> None:
    path = tmp_path / "dev-jwt-secret"
    path.write_text(f"  {KEY}\n")
    clean_env.setenv("NOVA_JWT_SECRET_FILE", str(path))
    assert CommonSettings().jwt_key() == KEY.encode()
    clean_env.setenv("NOVA_JWT_SECRET", "s" * 32)  # the variable wins over the file
    assert CommonSettings().jwt_key() == b"s" * 32


def test_missing_key_names_the_variable(tmp_path: Path) -> None:
    with pytest.raises(ConfigurationError, match="NOVA_JWT_SECRET"):
        CommonSettings().jwt_key()
    with pytest.raises(ConfigurationError, match="NOVA_JWT_SECRET_FILE"):
        CommonSettings(jwt_secret_file=tmp_path / "absent").jwt_key()
    with pytest.raises(ConfigurationError, match="at least 32"):
        CommonSettings(jwt_secret="short").jwt_key()
    with pytest.raises(ConfigurationError, match="NOVA_JWT_SECRET"):
        mint_dev_token(CommonSettings(), "viewer")


def test_fields_are_documented() -> None:
    for cls in (CommonSettings, ServiceSettings):
        for name, info in cls.model_fields.items():
            assert info.description, f"{cls.__name__}.{name} has no description"
