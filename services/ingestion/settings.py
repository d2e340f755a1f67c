"""Settings of the ingestion service (env prefix NOVA_INGESTION_)."""

from __future__ import annotations

from pydantic import Field
from pydantic_settings import SettingsConfigDict

from services.kit.settings import Port, ServiceSettings

__all__ = ["IngestionSettings"]


class IngestionSettings(ServiceSettings):
    model_config = SettingsConfigDict(env_prefix="NOVA_INGESTION_", extra="ignore", validate_by_name=True)

    port: Port = Field(50051, description="TCP port of the gRPC server.")
    max_batch_records: int = Field(
        10_000, description="Most records one SubmitBatch may carry (RESOURCE_EXHAUSTED above)."
    )
    max_upload_bytes: int = Field(2_000_000_000, description="Largest file UploadFile accepts, in bytes.")
    upload_commit_records: int = Field(5_000, description="Records per commit when loading an uploaded file.")
    idempotency_ttl_seconds: float = Field(
        7 * 24 * 3600, description="How long an idempotency key is remembered."
    )
    housekeeping_interval_seconds: float = Field(
        3600, description="Interval between two deletions of expired idempotency keys (0: never)."
    )
    idempotency_lease_seconds: float = Field(
        120,
        description="After this, a retry takes over the key of an unfinished call (its owner died).",
    )
    spool_dir: str = Field(
        "", description="Directory for spooled uploads; empty means the system temp directory."
    )
    relay_batch_size: int = Field(200, description="Outbox entries published per broker round trip.")
    parse_workers: int = Field(2, description="Threads for file parsing and other blocking work.")
    read_processes: int = Field(
        1, description="Worker processes reading big uploads (0: read every file in the threads)."
    )
    process_read_min_bytes: int = Field(
        8_000_000, description="Uploads of at least this size are read in a worker process."
    )
