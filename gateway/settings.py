"""Settings of the HTTP gateway (env prefix NOVA_GATEWAY_)."""

from __future__ import annotations

from pathlib import Path

from pydantic import Field
from pydantic_settings import SettingsConfigDict

from services.kit.settings import Port, ServiceSettings

__all__ = ["GatewaySettings"]


class GatewaySettings(ServiceSettings):
    """Everything the gateway reads from its environment; parsed once in ``__main__``."""

    model_config = SettingsConfigDict(env_prefix="NOVA_GATEWAY_", extra="ignore", validate_by_name=True)

    port: Port = Field(8080, description="TCP port of the HTTP server; 0 picks a free port.")
    ingestion_target: str = Field("127.0.0.1:50051", description="host:port of IngestionService.")
    analytics_target: str = Field("127.0.0.1:50052", description="host:port of AnalyticsService.")
    forecast_target: str = Field("127.0.0.1:50053", description="host:port of ForecastService.")
    request_timeout_seconds: float = Field(
        10.0, gt=0, description="Deadline of every unary gRPC call made for an HTTP request."
    )
    health_timeout_seconds: float = Field(
        2.0, gt=0, description="Deadline of each upstream grpc.health.v1 check made by /readyz."
    )
    users_file: Path | None = Field(
        None,
        description="JSON file of dashboard users with bcrypt password hashes (see gateway.users). Unset: "
        "POST /api/v1/login is refused and clients bring their own bearer tokens.",
    )
    token_ttl_seconds: float = Field(
        8 * 3600.0, gt=0, le=7 * 24 * 3600, description="Lifetime of a token issued by POST /api/v1/login."
    )
    login_max_failures: int = Field(
        5,
        ge=1,
        description="Failed logins per user and client address before further tries are refused; attempts "
        "whose password is still being checked count as failures until they end.",
    )
    login_lockout_seconds: float = Field(
        300.0, gt=0, description="How long those refusals last (HTTP 429 with Retry-After)."
    )
    forwarded_allow_ips: str = Field(
        "127.0.0.1,::1",
        description="Comma-separated addresses or networks (CIDR) of proxies trusted to set X-Forwarded-For "
        "and X-Forwarded-Proto; the client address of their requests (which login throttling keys on) is "
        "taken from those headers. Set it to the ingress controller's pod network behind an ingress; empty "
        "trusts none.",
    )
    sse_heartbeat_seconds: float = Field(
        15.0, gt=0, description="Interval of keep-alive comments on an idle server-sent-events stream."
    )
    sse_max_seconds: float = Field(
        3600.0,
        gt=0,
        description="Longest life of one alert stream; the browser reconnects by itself (the stream also "
        "ends when the caller's token expires).",
    )
    static_dir: Path | None = Field(
        None, description="Directory of the dashboard files; unset serves the packaged gateway/static."
    )
