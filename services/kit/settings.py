"""Configuration read from the environment (pydantic-settings).

``CommonSettings`` holds what every process shares (same variable names everywhere); ``ServiceSettings`` adds
what a gRPC server needs, under a per-service prefix. Each service declares its own subclass::

    class IngestionSettings(ServiceSettings):
        model_config = SettingsConfigDict(env_prefix="NOVA_INGESTION_")
        port: Port = Field(50051, description="TCP port of the gRPC server.")

Settings are parsed once in ``__main__`` and passed down explicitly: this module holds no instance.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, TypedDict

from pydantic import Field, SecretStr, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

__all__ = [
    "MIN_JWT_KEY_BYTES",
    "CommonSettings",
    "ConfigurationError",
    "Port",
    "ServiceSettings",
    "TlsClientPaths",
]

MIN_JWT_KEY_BYTES = 32
"""RFC 7518 §3.2: an HS256 key must be at least as long as the hash output."""

Port = Annotated[int, Field(ge=0, le=65535)]
"""A TCP port; subclasses overriding ``port`` use it to keep the range check."""

_LOG_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL")


class TlsClientPaths(TypedDict, total=False):
    """The TLS keyword arguments of ``services.kit.clients.open_channel``."""

    ca_cert_path: Path | None
    client_cert_path: Path | None
    client_key_path: Path | None


class ConfigurationError(RuntimeError):
    """The environment does not configure something the process needs; the message names the variable."""


class CommonSettings(BaseSettings):
    """Settings shared by every process of the platform (no per-service prefix)."""

    model_config = SettingsConfigDict(
        extra="ignore",
        # Field names work as constructor keywords too (tests, composition roots), besides the env aliases.
        validate_by_name=True,
        validate_by_alias=True,
    )

    database_url: str = Field(
        "duckdb:///.nova/nova.duckdb",
        validation_alias="NOVA_DATABASE_URL",
        description="System of record: `postgresql://...` or `duckdb:///path/file.duckdb`.",
    )
    broker_url: str = Field(
        "memory://",
        validation_alias="NOVA_BROKER_URL",
        description="Event bus: `amqp://user:pass@host:5672/vhost` or `memory://` (in-process).",
    )
    cache_url: str = Field(
        "memory://",
        validation_alias="NOVA_CACHE_URL",
        description="Cache: `redis://host:6379/0` or `memory://` (in-process).",
    )
    jwt_secret: SecretStr | None = Field(
        None,
        validation_alias="NOVA_JWT_SECRET",
        description="HS256 signing key for bearer tokens. Takes precedence over NOVA_JWT_SECRET_FILE.",
    )
    jwt_secret_file: Path | None = Field(
        None,
        validation_alias="NOVA_JWT_SECRET_FILE",
        description="Path of a file holding the HS256 key (surrounding whitespace is ignored).",
    )
    database_url_file: Path | None = Field(
        None,
        validation_alias="NOVA_DATABASE_URL_FILE",
        description="File holding NOVA_DATABASE_URL (URLs carry passwords: mount them as secrets). "
        "NOVA_DATABASE_URL, when set, takes precedence.",
    )
    broker_url_file: Path | None = Field(
        None,
        validation_alias="NOVA_BROKER_URL_FILE",
        description="File holding NOVA_BROKER_URL (same rules).",
    )
    cache_url_file: Path | None = Field(
        None, validation_alias="NOVA_CACHE_URL_FILE", description="File holding NOVA_CACHE_URL (same rules)."
    )
    tls_cert_file: Path | None = Field(
        None,
        validation_alias="NOVA_TLS_CERT_FILE",
        description="PEM certificate chain of this process: set with NOVA_TLS_KEY_FILE, servers listen with "
        "TLS and clients present it (mutual TLS). Unset: plaintext (inside a trusted network only).",
    )
    tls_key_file: Path | None = Field(
        None, validation_alias="NOVA_TLS_KEY_FILE", description="PEM private key of NOVA_TLS_CERT_FILE."
    )
    tls_ca_file: Path | None = Field(
        None,
        validation_alias="NOVA_TLS_CA_FILE",
        description="PEM CA bundle: servers require client certificates signed by it; clients verify "
        "servers with it.",
    )
    log_level: str = Field(
        "INFO",
        validation_alias="NOVA_LOG_LEVEL",
        description="Root log level: DEBUG, INFO, WARNING, ERROR or CRITICAL.",
    )

    @field_validator("log_level")
    @classmethod
    def _known_level(cls, value: str) -> str:
        level = value.strip().upper()
        if level not in _LOG_LEVELS:
            raise ValueError(f"NOVA_LOG_LEVEL must be one of {', '.join(_LOG_LEVELS)}, got {value!r}")
        return level

    @model_validator(mode="after")
    def _urls_from_files(self) -> CommonSettings:
        for name in ("database_url", "broker_url", "cache_url"):
            path = getattr(self, f"{name}_file")
            if path is None or name in self.model_fields_set:
                continue
            try:
                setattr(self, name, path.read_text().strip())
            except OSError as exc:
                raise ConfigurationError(
                    f"NOVA_{name.upper()}_FILE={path} cannot be read: {exc.strerror}"
                ) from exc
        return self

    def tls_client_paths(self) -> TlsClientPaths:
        """Keyword arguments for ``services.kit.clients.open_channel``: TLS when configured, else none."""
        if self.tls_cert_file is None and self.tls_ca_file is None:
            return {}
        return {
            "ca_cert_path": self.tls_ca_file,
            "client_cert_path": self.tls_cert_file,
            "client_key_path": self.tls_key_file,
        }

    def jwt_key(self) -> bytes:
        """The HS256 key: NOVA_JWT_SECRET if set, else the stripped content of NOVA_JWT_SECRET_FILE.

        Raises:
            ConfigurationError: neither is set, the file cannot be read, or the key is shorter than 32 bytes.
        """
        if self.jwt_secret is not None:
            key = self.jwt_secret.get_secret_value().strip().encode()
            source = "NOVA_JWT_SECRET"
        elif self.jwt_secret_file is not None:
            try:
                key = self.jwt_secret_file.read_bytes().strip()
            except OSError as exc:
                raise ConfigurationError(
                    f"NOVA_JWT_SECRET_FILE={self.jwt_secret_file} cannot be read: {exc.strerror}"
                ) from exc
            source = "NOVA_JWT_SECRET_FILE"
        else:
            raise ConfigurationError(
                "no JWT signing key: set NOVA_JWT_SECRET or NOVA_JWT_SECRET_FILE "
                "(a development key is generated into .nova/dev-jwt-secret)"
            )
        if len(key) < MIN_JWT_KEY_BYTES:
            raise ConfigurationError(
                f"the JWT key from {source} is {len(key)} bytes; HS256 needs at least {MIN_JWT_KEY_BYTES}"
            )
        return key


class ServiceSettings(CommonSettings):
    """Settings of one gRPC server. Subclasses set ``env_prefix`` (``NOVA_INGESTION_`` ...) and their port."""

    model_config = SettingsConfigDict(env_prefix="NOVA_SERVICE_")

    host: str = Field("127.0.0.1", description="Interface to bind; 0.0.0.0 in containers.")
    port: Port = Field(0, description="TCP port of the gRPC server; 0 picks a free port.")
    grace_seconds: float = Field(
        10.0, ge=0, description="How long in-flight calls may run on shutdown before they are cancelled."
    )
    shutdown_delay_seconds: float = Field(
        0.0,
        ge=0,
        description="Pause between reporting NOT_SERVING and refusing new calls, so load balancers and "
        "Kubernetes endpoints stop routing here first.",
    )
    metrics_port: Port | None = Field(
        None, description="Port of the Prometheus /metrics HTTP endpoint; unset disables it."
    )
    health_poll_seconds: float = Field(
        2.0, gt=0, description="Interval between two runs of the dependency health checks."
    )
    max_message_bytes: int = Field(
        16 * 1024 * 1024, gt=0, description="Largest gRPC message accepted or sent, in bytes."
    )
