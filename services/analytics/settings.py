"""Settings of the analytics-query service (env prefix NOVA_ANALYTICS_)."""

from __future__ import annotations

import os
import socket

from pydantic import Field
from pydantic_settings import SettingsConfigDict

from services.kit.settings import ServiceSettings

__all__ = ["AnalyticsSettings", "default_replica_id"]


def default_replica_id() -> str:
    """``<hostname>-<pid>``: unique per running process, so each replica gets its own queue."""
    return f"{socket.gethostname()}-{os.getpid()}"


class AnalyticsSettings(ServiceSettings):
    """Everything the analytics-query process reads from its environment."""

    model_config = SettingsConfigDict(env_prefix="NOVA_ANALYTICS_", extra="ignore", validate_by_name=True)

    port: int = Field(50052, ge=0, le=65535, description="TCP port of the gRPC server.")
    duckdb_path: str = Field(
        ".nova/analytics.duckdb",
        description="File of the DuckDB read model (derived data, one per replica); `:memory:` for tests.",
    )
    alerts_duckdb_path: str = Field(
        ".nova/analytics-alerts.duckdb",
        description="File of the embedded alert store, used when NOVA_DATABASE_URL is not postgresql://. "
        "Kept apart from the read model so that rebuilding the read model never loses alerts.",
    )
    ingestion_target: str = Field(
        "",
        description="host:port of IngestionService, used to rebuild or catch up from ExportRecords. Empty: "
        "no catch-up (embedded profile fed only by the in-process bus).",
    )
    ingestion_token_role: str = Field(
        "ingestor", description="Role of the service token minted for ExportRecords calls."
    )
    replica_id: str = Field(
        default_factory=default_replica_id,
        description="Identifies this replica; its bus queues are named after it (analytics.readmodel.<id>).",
    )
    queue_expires_seconds: float = Field(
        600.0, gt=0, description="The broker deletes the queue of a replica that has been gone this long."
    )
    query_workers: int = Field(
        4, ge=1, le=64, description="Threads running read-model queries (the bounded executor)."
    )
    duckdb_threads: int = Field(0, ge=0, description="DuckDB worker threads; 0 keeps DuckDB's default.")
    duckdb_memory_limit: str = Field(
        "", description="DuckDB memory_limit, e.g. '2GB'; empty keeps the default."
    )
    query_timeout_seconds: float = Field(
        30.0, gt=0, description="Longest a query may run when the caller set no (shorter) deadline."
    )
    cache_ttl_seconds: float = Field(
        3600.0, gt=0, description="Lifetime of a cached answer (keys carry the data watermark anyway)."
    )
    max_range_days: int = Field(
        3700, ge=1, description="Longest date range a query may ask for (INVALID_ARGUMENT above)."
    )
    max_series_per_call: int = Field(
        5000, ge=1, description="Most series one GetSeriesHistory call may ask for."
    )
    export_page_size: int = Field(5000, ge=1, le=50_000, description="Records per ExportRecords page.")
    catchup_chunk_records: int = Field(
        50_000, ge=1, description="Records applied per read-model transaction while catching up."
    )
    catchup_timeout_seconds: float = Field(
        3600.0, gt=0, description="Deadline of one ExportRecords stream (a full rebuild included)."
    )
    catchup_retry_seconds: float = Field(
        2.0, gt=0, description="Pause between two attempts to catch up when ingestion is unreachable."
    )
    housekeeping_interval_seconds: float = Field(
        3600.0,
        ge=0,
        description="Pause between two retention rounds (superseded forecast versions, the forecast journal, "
        "old inbox entries); 0 turns them off.",
    )
    inbox_retention_days: float = Field(
        7.0,
        gt=0,
        description="Age after which the read model forgets an applied event's id (ids of events whose "
        "forecasts or policies are still read, or that are still in the forecast journal, are kept).",
    )
    alert_relay_interval_seconds: float = Field(
        1.0, gt=0, description="Longest pause before alert changes not yet on the bus are published."
    )
