"""Protobuf <-> domain conversions of forecast-serving (no logic beyond mapping)."""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Sequence

from google.protobuf import timestamp_pb2
from novacorrente.common.v1 import common_pb2 as cpb
from novacorrente.forecast.v1 import forecast_pb2 as fpb

from services.forecast.repository import ModelRepository, VersionRecord
from services.forecast.result_cache import CachedForecast
from services.forecast.service import ForecastResult, PolicyResult, SeriesSpec

__all__ = [
    "date_pb",
    "encode_forecast",
    "forecast_pb",
    "forecast_response",
    "model_info_pb",
    "policy_pb",
    "series_pb",
    "series_specs",
]

_DEMAND_CLASS = {
    "smooth": fpb.DEMAND_CLASS_SMOOTH,
    "erratic": fpb.DEMAND_CLASS_ERRATIC,
    "intermittent": fpb.DEMAND_CLASS_INTERMITTENT,
    "lumpy": fpb.DEMAND_CLASS_LUMPY,
}


def series_specs(refs: Sequence[fpb.SeriesRef]) -> list[SeriesSpec]:
    return [
        SeriesSpec(
            level=ref.level or fpb.AGGREGATION_LEVEL_MATERIAL_SITE,
            material_code=ref.material_code,
            site_code=ref.site_code,
            family=ref.family,
            region=ref.region,
        )
        for ref in refs
    ]


def series_pb(spec: SeriesSpec) -> fpb.SeriesRef:
    return fpb.SeriesRef(
        level=spec.level,  # type: ignore[arg-type]
        material_code=spec.material_code,
        site_code=spec.site_code,
        family=spec.family,
        region=spec.region,
    )


def date_pb(value: dt.date) -> cpb.Date:
    return cpb.Date(year=value.year, month=value.month, day=value.day)


def _timestamp(value: dt.datetime) -> timestamp_pb2.Timestamp:
    stamp = timestamp_pb2.Timestamp()
    stamp.FromDatetime(value)
    return stamp


def _provenance(result: ForecastResult) -> cpb.Provenance:
    return cpb.Provenance(
        data_watermark=result.watermark,
        model_name=result.model_name,
        model_version=result.model_version,
        generated_at=_timestamp(result.generated_at),
    )


def forecast_pb(result: ForecastResult) -> fpb.SeriesForecast:
    out = fpb.SeriesForecast(
        series=series_pb(result.series),
        demand_class=_DEMAND_CLASS.get(result.demand_class, fpb.DEMAND_CLASS_UNSPECIFIED),
        method=result.method,
        fallback=result.fallback,
        fallback_reason=result.fallback_reason,
        unit=result.unit,
        provenance=_provenance(result),
    )
    # Filled in place with add(): building a message per value and copying it in costs twice as much, and
    # this runs for every series of every answer.
    weeks, levels = out.weeks, result.levels
    for week, row, mean in zip(
        result.week_starts, result.quantiles.tolist(), result.means.tolist(), strict=True
    ):
        item = weeks.add(mean=mean)
        start = item.week_start
        start.year, start.month, start.day = week.year, week.month, week.day
        quantiles = item.quantiles
        for level, value in zip(levels, row, strict=True):
            quantiles.add(level=level, value=value)
    return out


def encode_forecast(result: ForecastResult) -> bytes:
    """The wire form of one series' forecast, as the forecast cache stores it."""
    return forecast_pb(result).SerializeToString()


def forecast_response(items: Sequence[CachedForecast]) -> fpb.ForecastResponse:
    """The answer from encoded forecasts; those served from the cache say so in their provenance (the rest
    of the provenance, ``generated_at`` included, is the one of the computation)."""
    response = fpb.ForecastResponse()
    forecasts = response.forecasts
    for item in items:
        forecast = forecasts.add()
        forecast.MergeFromString(item.payload)
        if item.from_cache:
            forecast.provenance.from_cache = True
    return response


def policy_pb(result: PolicyResult) -> fpb.ReorderPolicy:
    n = result.numbers
    return fpb.ReorderPolicy(
        series=series_pb(result.forecast.series),
        safety_stock=n.safety_stock,
        reorder_point=n.reorder_point,
        order_up_to=n.order_up_to,
        suggested_order_quantity=n.suggested_order_quantity,
        suggested_order_date=date_pb(n.suggested_order_date) if n.suggested_order_date else None,
        days_of_cover=n.days_of_cover,
        stock_position=n.stock_position,
        decomposition=fpb.ReorderDecomposition(
            expected_lead_time_demand=n.expected_lead_time_demand,
            demand_part=n.demand_part,
            lead_time_variability_part=n.lead_time_variability_part,
            service_target=n.service_target,
            service_target_source=result.service_target_source,
            lead_time_mean_days=n.lead_time_mean_days,
            lead_time_p90_days=n.lead_time_p90_days,
            lead_time_observations=n.lead_time_observations,
            lead_time_scope=result.lead_time_scope,
        ),
        unit=result.forecast.unit,
        method=result.forecast.method,
        fallback=result.forecast.fallback,
        provenance=_provenance(result.forecast),
        stock_position_known=result.stock.known,
        stock_position_note=result.stock.note,
    )


def model_info_pb(record: VersionRecord, repository: ModelRepository) -> fpb.ModelInfo:
    sidecar = record.sidecar or {}
    serving = repository.serving(record.name)
    metrics = (
        sidecar.get("backtest", {}).get("metrics") if isinstance(sidecar.get("backtest"), dict) else None
    )
    return fpb.ModelInfo(
        name=record.name,
        version=record.version,
        serving=serving is not None and serving.version == record.version,
        state=record.state,
        reason=record.reason,
        quantiles=[float(q) for q in sidecar.get("quantiles", [])],
        feature_spec_version=str(sidecar.get("feature_spec_version", "")),
        metrics_json=json.dumps(metrics, sort_keys=True) if metrics is not None else "",
        created_at=str(sidecar.get("created_at", "")),
    )
