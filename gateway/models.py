"""JSON shapes of the HTTP API (pydantic), one per gRPC message the gateway exposes.

Conventions: snake_case fields named as in the protos; enums as lower-case names without the proto prefix
(``STOCK_STATUS_CRITICAL`` -> ``"critical"``); dates ``YYYY-MM-DD``; timestamps ISO 8601 in UTC; every
figure travels with its ``provenance``.
"""

from __future__ import annotations

import datetime as dt
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, JsonValue

__all__ = [
    "AggregationLevelName",
    "AlertActionIn",
    "AlertEventOut",
    "AlertKindName",
    "AlertOut",
    "AlertPage",
    "AlertStateName",
    "CriticalityName",
    "DemandClassName",
    "DemandPointOut",
    "DemandSeriesOut",
    "ErrorBody",
    "ErrorDetail",
    "ExternalSeriesListOut",
    "ExternalSeriesOut",
    "FieldViolationOut",
    "ForecastOut",
    "HealthOut",
    "InventoryPage",
    "InventoryRowOut",
    "KpiOut",
    "KpisOut",
    "LeadTimesOut",
    "LoginIn",
    "MaterialOut",
    "MaterialPage",
    "ModelInfoOut",
    "ModelsOut",
    "PageOut",
    "ProvenanceOut",
    "QuantileOut",
    "ReadyOut",
    "ReorderDecompositionOut",
    "ReorderPolicyOut",
    "SeriesRefOut",
    "SiteOut",
    "SitePage",
    "SiteTypeName",
    "StockStatusName",
    "SupplierOut",
    "SupplierPage",
    "TimeGrainName",
    "TokenOut",
    "WatermarkOut",
    "WeekForecastOut",
]

StockStatusName = Literal["unspecified", "normal", "attention", "critical"]
AlertKindName = Literal["unspecified", "reorder_point", "cover_below_lead_time"]
AlertStateName = Literal["unspecified", "open", "acknowledged", "resolved"]
CriticalityName = Literal["unspecified", "low", "medium", "high"]
SiteTypeName = Literal["unspecified", "tower", "warehouse", "office"]
DemandClassName = Literal["unspecified", "smooth", "erratic", "intermittent", "lumpy"]
AggregationLevelName = Literal["unspecified", "material_site", "material", "family", "region", "national"]
TimeGrainName = Literal["day", "week", "month"]


class _Out(BaseModel):
    model_config = ConfigDict(extra="forbid")


# -- shared --------------------------------------------------------------------------------------------


class FieldViolationOut(_Out):
    field: str = Field(
        description="Path of the offending field, e.g. `query.horizon` or `filter.date_range`."
    )
    description: str


class ErrorDetail(_Out):
    status: int = Field(description="HTTP status, repeated for clients that only keep the body.")
    code: str = Field(description="gRPC status code name, e.g. INVALID_ARGUMENT.")
    message: str
    reason: str = Field("", description="Stable machine-readable reason (google.rpc.ErrorInfo.reason).")
    request_id: str = Field("", description="Correlates with the services' logs; also in X-Request-ID.")
    field_violations: list[FieldViolationOut] = Field(
        default_factory=list, description="google.rpc.BadRequest field violations (400 only)."
    )
    retry_after_seconds: float | None = Field(
        None,
        description="google.rpc.RetryInfo delay (1 second on a 503 without one); also sent as the "
        "Retry-After header.",
    )


class ErrorBody(_Out):
    """The body of every non-2xx answer."""

    error: ErrorDetail


class ProvenanceOut(_Out):
    """Where a number comes from."""

    data_watermark: str = Field(description="Highest ingestion sequence reflected, e.g. `seq:4207`.")
    model_name: str = ""
    model_version: str = ""
    generated_at: dt.datetime | None = Field(None, description="When the answer was computed (UTC).")
    from_cache: bool = False


class PageOut(_Out):
    next_page_token: str = Field(description="Pass as `page_token` for the next page; empty on the last.")
    total_size: int


class QuantileOut(_Out):
    level: float = Field(description="Probability level in (0, 1), e.g. 0.9 for P90.")
    value: float


class WatermarkOut(_Out):
    sequence: int
    data_watermark: str


# -- analytics -----------------------------------------------------------------------------------------


class KpiOut(_Out):
    name: str = Field(description="Stable KPI name, e.g. `fill_rate`.")
    value: float | None = Field(description="Null when `available` is false.")
    unit: str
    available: bool
    note: str = ""


class KpisOut(_Out):
    kpis: list[KpiOut]
    provenance: ProvenanceOut


class DemandPointOut(_Out):
    period_start: dt.date
    quantity: float
    lines: int
    forecast: list[QuantileOut] = Field(description="Forecast quantiles for the period, ascending by level.")
    is_forecast: bool = Field(description="True after the last actual period (forecast only).")


class DemandSeriesOut(_Out):
    points: list[DemandPointOut]
    unit: str
    provenance: ProvenanceOut


class InventoryRowOut(_Out):
    material_code: str
    site_code: str
    on_hand: float
    on_order: float
    backorders: float
    stock_position: float = Field(description="on_hand + on_order - backorders.")
    safety_stock: float
    reorder_point: float
    days_of_cover: float | None = Field(description="Null when unbounded (no forecast demand).")
    status: StockStatusName
    suggested_order_quantity: float
    risk: float | None = Field(description="Risk score used for the order (higher first).")
    family: str
    unit: str
    simulated: bool = Field(
        description="The position rests on simulated stock records (the demo's ledger), not on counts."
    )


class InventoryPage(_Out):
    rows: list[InventoryRowOut] = Field(description="Sorted by risk, highest first.")
    page: PageOut
    provenance: ProvenanceOut


class LeadTimesOut(_Out):
    days: list[float]
    mean_days: float
    p50_days: float
    p90_days: float
    std_days: float
    scope: str = Field(description="`material_site`, `material`, `family` or `all`.")
    provenance: ProvenanceOut


class AlertEventOut(_Out):
    state: AlertStateName
    actor: str
    at: dt.datetime | None
    comment: str


class AlertOut(_Out):
    alert_id: str
    kind: AlertKindName
    material_code: str
    site_code: str
    state: AlertStateName
    message: str
    stock_position: float
    reorder_point: float
    days_of_cover: float | None = Field(description="Null when unbounded.")
    lead_time_days: float
    raised_at: dt.datetime | None
    history: list[AlertEventOut] = Field(description="Audit trail, oldest first.")
    provenance: ProvenanceOut


class AlertPage(_Out):
    alerts: list[AlertOut] = Field(description="Newest first.")
    page: PageOut


class AlertActionIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    comment: str = Field("", max_length=2000, description="Kept in the alert's audit trail.")


class MaterialOut(_Out):
    code: str
    name: str
    family: str
    unit: str
    criticality: CriticalityName
    abc_class: str
    stocked: bool
    total_quantity: float
    lines: int


class MaterialPage(_Out):
    materials: list[MaterialOut]
    page: PageOut


class SiteOut(_Out):
    code: str
    client: str
    region: str
    site_type: SiteTypeName
    criticality: CriticalityName
    lines: int


class SitePage(_Out):
    sites: list[SiteOut]
    page: PageOut


class SupplierOut(_Out):
    code: str
    name: str
    lines: int
    lead_time_p50_days: float


class SupplierPage(_Out):
    suppliers: list[SupplierOut]
    page: PageOut


class ExternalSeriesOut(_Out):
    series_id: str
    unit: str
    source: str
    dates: list[dt.date]
    values: list[float | None] = Field(description="Aligned with `dates`; null for a missing value.")


class ExternalSeriesListOut(_Out):
    series: list[ExternalSeriesOut]
    provenance: ProvenanceOut


# -- forecast ------------------------------------------------------------------------------------------


class SeriesRefOut(_Out):
    level: AggregationLevelName
    material_code: str
    site_code: str
    family: str
    region: str


class WeekForecastOut(_Out):
    week_start: dt.date
    quantiles: list[QuantileOut] = Field(description="Ascending by level, non-crossing.")
    mean: float


class ForecastOut(_Out):
    series: SeriesRefOut
    weeks: list[WeekForecastOut]
    demand_class: DemandClassName
    method: str
    fallback: bool
    fallback_reason: str
    unit: str
    provenance: ProvenanceOut


class ReorderDecompositionOut(_Out):
    expected_lead_time_demand: float
    demand_part: float
    lead_time_variability_part: float
    service_target: float
    service_target_source: str
    lead_time_mean_days: float
    lead_time_p90_days: float
    lead_time_observations: int
    lead_time_scope: str


class ReorderPolicyOut(_Out):
    series: SeriesRefOut
    safety_stock: float
    reorder_point: float
    order_up_to: float
    suggested_order_quantity: float
    suggested_order_date: dt.date | None
    days_of_cover: float | None = Field(description="Null when unbounded.")
    stock_position: float
    stock_position_known: bool = Field(description="False: no stock records for it, position taken as 0.")
    stock_position_note: str = Field(description="Where the stock position came from, or why it is unknown.")
    decomposition: ReorderDecompositionOut
    unit: str
    method: str
    fallback: bool
    provenance: ProvenanceOut


class ModelInfoOut(_Out):
    name: str
    version: str
    serving: bool
    state: str = Field(description="`ready`, `refused` (see `reason`) or `loading`.")
    reason: str
    quantiles: list[float]
    feature_spec_version: str
    metrics: JsonValue = Field(description="Backtest metrics from the model's sidecar (null when absent).")
    created_at: str


class ModelsOut(_Out):
    models: list[ModelInfoOut] = Field(description="Every version seen, serving first.")


# -- session and probes --------------------------------------------------------------------------------


class LoginIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    username: str = Field(min_length=1, max_length=128)
    password: str = Field(min_length=1, max_length=1024)


class TokenOut(_Out):
    access_token: str
    token_type: Literal["bearer"] = "bearer"
    expires_at: dt.datetime
    expires_in: int = Field(description="Seconds until `expires_at`.")
    username: str
    role: str


class HealthOut(_Out):
    status: Literal["ok"]


class ReadyOut(_Out):
    status: Literal["ready", "not_ready", "draining"]
    upstreams: dict[str, str] = Field(description="grpc.health.v1 status (or failure) of each upstream.")
