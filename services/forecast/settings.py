"""Settings of forecast-serving (environment prefix ``NOVA_FORECAST_``)."""

from __future__ import annotations

from pathlib import Path

from pydantic import Field
from pydantic_settings import SettingsConfigDict

from services.kit.settings import ServiceSettings

__all__ = ["ForecastSettings"]


class ForecastSettings(ServiceSettings):
    """Everything forecast-serving reads from the environment; parsed once in ``__main__``."""

    model_config = SettingsConfigDict(env_prefix="NOVA_FORECAST_")

    port: int = Field(50053, ge=0, le=65535, description="TCP port of the gRPC server; 0 picks a free port.")
    model_repository: Path = Field(
        Path("./models"),
        description="Model repository root, laid out <model>/<version>/{model.onnx,model.json}; read only.",
    )
    model_name: str = Field(
        "demand_forecast", description="Model the domain API (Forecast, GetReorderPolicy) forecasts with."
    )
    model_version: str = Field(
        "",
        description="Pin the domain model to this version (a rollback); empty serves the newest valid one.",
    )
    repository_poll_seconds: float = Field(
        10.0, ge=0, description="Interval between two scans of the repository for new versions; 0 disables."
    )
    onnx_intra_op_threads: int = Field(
        1,
        ge=0,
        validation_alias="NOVA_ONNX_INTRA_OP_THREADS",
        description="onnxruntime intra-op threads per session (0: onnxruntime's default, one per core).",
    )
    inline_max_rows: int = Field(
        64,
        ge=0,
        description="Inferences of at most this many rows run on the event loop; larger ones in the executor "
        "(bench/oip_infer.py measures the crossover: an executor hop costs more than a few-row inference).",
    )
    inference_workers: int = Field(2, ge=1, description="Threads of the bounded inference executor.")
    inference_queue_limit: int = Field(
        64,
        ge=1,
        description="Large inferences allowed to wait for the executor; more are RESOURCE_EXHAUSTED.",
    )
    dynamic_batching: bool = Field(
        False,
        description="Merge concurrent small OIP inferences of one model version into one onnxruntime run.",
    )
    batch_window_ms: float = Field(0.5, ge=0, description="How long a dynamic batch waits for more requests.")
    analytics_target: str = Field("127.0.0.1:50052", description="host:port of analytics-query.")
    analytics_timeout_seconds: float = Field(5.0, gt=0, description="Deadline of each call to analytics.")
    history_batch_size: int = Field(500, ge=1, description="Series per GetSeriesHistory call.")
    history_read_concurrency: int = Field(
        1,
        ge=1,
        description="GetSeriesHistory calls in flight at once; reads needed meanwhile wait and travel "
        "together in the next call, so concurrent one-series forecasts share analytics calls.",
    )
    history_cache_ttl_seconds: float = Field(
        6 * 3600.0, gt=0, description="Safety-net expiry of a cached history; batch events invalidate sooner."
    )
    history_cache_prefix: str = Field("forecast:history:v1:", description="Key prefix of cached histories.")
    result_cache: bool = Field(
        True,
        description="Serve a material x site forecast from the cache while its history generation, external "
        "points, model version and options are unchanged (same TTL and key prefix as the histories).",
    )
    max_series_per_request: int = Field(
        1000, ge=1, description="Most series one Forecast/policy call may ask."
    )
    default_horizon_weeks: int = Field(8, ge=1, description="Horizon when the request says 0.")
    max_horizon_weeks: int = Field(26, ge=1, description="Longest horizon served.")
    min_history_weeks: int = Field(
        8,
        ge=1,
        description="Series with fewer history weeks are answered by the intermittent-demand fallback.",
    )
    fallback_method: str = Field("tsb", description="Intermittent-demand fallback: tsb, sba or croston.")
    order_cycle_days: float = Field(
        14.0, gt=0, description="Order cycle used for order-up-to under continuous review (review period 0)."
    )
    reforecast_queue: str = Field(
        "forecast.reforecast",
        description="Competing-consumer queue for ingestion.batch.committed (shared by all replicas).",
    )
    reforecast_batch_size: int = Field(200, ge=1, description="Series re-forecast and published per event.")
    reforecast_concurrency: int = Field(1, ge=1, description="Batch events handled at once per replica.")
    consume_events: bool = Field(
        True, description="Run the re-forecast consumer (off for read-only replicas)."
    )
