"""Proto messages <-> API models. Pure functions: no I/O, no decisions beyond renaming."""

from __future__ import annotations

import datetime as dt
import json
import math
from collections.abc import Sequence
from typing import Any, overload

from google.protobuf import timestamp_pb2
from novacorrente.analytics.v1 import analytics_pb2 as apb
from novacorrente.common.v1 import common_pb2 as cpb
from novacorrente.forecast.v1 import forecast_pb2 as fpb
from pydantic import JsonValue

from gateway import models as m

__all__ = [
    "ENUM_PREFIXES",
    "alert",
    "date_out",
    "date_proto",
    "demand_series",
    "enum_name",
    "enum_value",
    "external_series",
    "filter_proto",
    "forecast",
    "inventory_page",
    "kpis",
    "lead_times",
    "materials",
    "models_out",
    "page",
    "provenance",
    "reorder_policy",
    "sites",
    "suppliers",
    "watermark",
]

# Any: each generated enum class is a type of its own (its EnumTypeWrapper is the metaclass instance).
ENUM_PREFIXES: dict[str, tuple[Any, str]] = {
    "stock_status": (apb.StockStatus, "STOCK_STATUS_"),
    "alert_kind": (apb.AlertKind, "ALERT_KIND_"),
    "alert_state": (apb.AlertState, "ALERT_STATE_"),
    "criticality": (cpb.Criticality, "CRITICALITY_"),
    "site_type": (cpb.SiteType, "SITE_TYPE_"),
    "time_grain": (cpb.TimeGrain, "TIME_GRAIN_"),
    "demand_class": (fpb.DemandClass, "DEMAND_CLASS_"),
    "aggregation_level": (fpb.AggregationLevel, "AGGREGATION_LEVEL_"),
}
"""Every proto enum the API shows, with the prefix its JSON names drop (tests check the Literals match)."""


_NAMES: dict[str, dict[int, str]] = {
    kind: {number: name.removeprefix(prefix).lower() for name, number in wrapper.items()}
    for kind, (wrapper, prefix) in ENUM_PREFIXES.items()
}
"""The JSON name of every known value of every kind (looked up per field of every row of every answer)."""


def enum_name(kind: str, value: int) -> str:
    """``STOCK_STATUS_CRITICAL`` -> ``critical``. A value newer than these stubs reads as ``unspecified``."""
    return _NAMES[kind].get(value, "unspecified")


def enum_value(kind: str, name: str | None) -> Any:
    """``critical`` -> the value of ``STOCK_STATUS_CRITICAL``; None -> 0 (unspecified). Typed Any: the value
    goes to a field of that enum's own ValueType."""
    if name is None:
        return 0
    wrapper, prefix = ENUM_PREFIXES[kind]
    return int(wrapper.Value(prefix + name.upper()))


def _finite(value: float) -> float | None:
    return value if math.isfinite(value) else None


def date_out(date: cpb.Date) -> dt.date | None:
    if not (date.year or date.month or date.day):
        return None
    return dt.date(date.year, date.month, date.day)


@overload
def date_proto(date: dt.date) -> cpb.Date: ...
@overload
def date_proto(date: None) -> None: ...
def date_proto(date: dt.date | None) -> cpb.Date | None:
    return None if date is None else cpb.Date(year=date.year, month=date.month, day=date.day)


_EPOCH = dt.datetime(1970, 1, 1, tzinfo=dt.UTC)


def _timestamp(ts: timestamp_pb2.Timestamp) -> dt.datetime | None:
    seconds, nanos = ts.seconds, ts.nanos
    if not (seconds or nanos):
        return None
    # What Timestamp.ToDatetime(tzinfo=UTC) computes (microsecond precision), without its generic path.
    return _EPOCH + dt.timedelta(seconds=seconds, microseconds=nanos // 1000)


def filter_proto(
    *,
    material: Sequence[str] = (),
    site: Sequence[str] = (),
    family: Sequence[str] = (),
    client: Sequence[str] = (),
    region: Sequence[str] = (),
    supplier: Sequence[str] = (),
    start: dt.date | None = None,
    end: dt.date | None = None,
) -> cpb.Filter:
    out = cpb.Filter(
        material_codes=material,
        site_codes=site,
        families=family,
        clients=client,
        regions=region,
        suppliers=supplier,
    )
    if start is not None:
        out.date_range.start.CopyFrom(date_proto(start))
    if end is not None:
        out.date_range.end.CopyFrom(date_proto(end))
    return out


def provenance(p: cpb.Provenance) -> m.ProvenanceOut:
    return m.ProvenanceOut(
        data_watermark=p.data_watermark,
        model_name=p.model_name,
        model_version=p.model_version,
        generated_at=_timestamp(p.generated_at),
        from_cache=p.from_cache,
    )


def page(p: cpb.PageInfo) -> m.PageOut:
    return m.PageOut(next_page_token=p.next_page_token, total_size=p.total_size)


def _quantiles(values: Sequence[cpb.QuantileValue]) -> list[m.QuantileOut]:
    return [m.QuantileOut(level=q.level, value=q.value) for q in values]


def watermark(r: apb.GetWatermarkResponse) -> m.WatermarkOut:
    # The ingestion service's GetWatermarkResponse has the same two fields.
    return m.WatermarkOut(sequence=r.sequence, data_watermark=r.data_watermark)


def kpis(r: apb.GetKpisResponse) -> m.KpisOut:
    return m.KpisOut(
        kpis=[
            m.KpiOut(
                name=k.name,
                value=_finite(k.value) if k.available else None,
                unit=k.unit,
                available=k.available,
                note=k.note,
            )
            for k in r.kpis
        ],
        provenance=provenance(r.provenance),
    )


def demand_series(r: apb.GetDemandSeriesResponse) -> m.DemandSeriesOut:
    return m.DemandSeriesOut(
        points=[
            m.DemandPointOut(
                period_start=date_out(p.period_start) or dt.date.min,
                quantity=p.quantity,
                lines=p.lines,
                forecast=_quantiles(p.forecast),
                is_forecast=p.is_forecast,
            )
            for p in r.points
        ],
        unit=r.unit,
        provenance=provenance(r.provenance),
    )


def inventory_page(r: apb.ListInventoryStatusResponse) -> m.InventoryPage:
    return m.InventoryPage(
        rows=[
            m.InventoryRowOut(
                material_code=s.material_code,
                site_code=s.site_code,
                on_hand=s.on_hand,
                on_order=s.on_order,
                backorders=s.backorders,
                stock_position=s.stock_position,
                safety_stock=s.safety_stock,
                reorder_point=s.reorder_point,
                days_of_cover=_finite(s.days_of_cover),
                status=enum_name("stock_status", s.status),  # type: ignore[arg-type]
                suggested_order_quantity=s.suggested_order_quantity,
                risk=_finite(s.risk),
                family=s.family,
                unit=s.unit,
                simulated=s.simulated,
            )
            for s in r.rows
        ],
        page=page(r.page),
        provenance=provenance(r.provenance),
    )


def lead_times(r: apb.GetLeadTimesResponse) -> m.LeadTimesOut:
    return m.LeadTimesOut(
        days=list(r.days),
        mean_days=r.mean_days,
        p50_days=r.p50_days,
        p90_days=r.p90_days,
        std_days=r.std_days,
        scope=r.scope,
        provenance=provenance(r.provenance),
    )


def alert(a: apb.Alert) -> m.AlertOut:
    return m.AlertOut(
        alert_id=a.alert_id,
        kind=enum_name("alert_kind", a.kind),  # type: ignore[arg-type]
        material_code=a.material_code,
        site_code=a.site_code,
        state=enum_name("alert_state", a.state),  # type: ignore[arg-type]
        message=a.message,
        stock_position=a.stock_position,
        reorder_point=a.reorder_point,
        days_of_cover=_finite(a.days_of_cover),
        lead_time_days=a.lead_time_days,
        raised_at=_timestamp(a.raised_at),
        history=[
            m.AlertEventOut(
                state=enum_name("alert_state", e.state),  # type: ignore[arg-type]
                actor=e.actor,
                at=_timestamp(e.at),
                comment=e.comment,
            )
            for e in a.history
        ],
        provenance=provenance(a.provenance),
    )


def materials(r: apb.ListMaterialsResponse) -> m.MaterialPage:
    return m.MaterialPage(
        materials=[
            m.MaterialOut(
                code=x.code,
                name=x.name,
                family=x.family,
                unit=x.unit,
                criticality=enum_name("criticality", x.criticality),  # type: ignore[arg-type]
                abc_class=x.abc_class,
                stocked=x.stocked,
                total_quantity=x.total_quantity,
                lines=x.lines,
            )
            for x in r.materials
        ],
        page=page(r.page),
    )


def sites(r: apb.ListSitesResponse) -> m.SitePage:
    return m.SitePage(
        sites=[
            m.SiteOut(
                code=x.code,
                client=x.client,
                region=x.region,
                site_type=enum_name("site_type", x.site_type),  # type: ignore[arg-type]
                criticality=enum_name("criticality", x.criticality),  # type: ignore[arg-type]
                lines=x.lines,
            )
            for x in r.sites
        ],
        page=page(r.page),
    )


def suppliers(r: apb.ListSuppliersResponse) -> m.SupplierPage:
    return m.SupplierPage(
        suppliers=[
            m.SupplierOut(code=x.code, name=x.name, lines=x.lines, lead_time_p50_days=x.lead_time_p50_days)
            for x in r.suppliers
        ],
        page=page(r.page),
    )


def external_series(r: apb.GetExternalSeriesResponse) -> m.ExternalSeriesListOut:
    return m.ExternalSeriesListOut(
        series=[
            m.ExternalSeriesOut(
                series_id=s.series_id,
                unit=s.unit,
                source=s.source,
                dates=[date_out(d) or dt.date.min for d in s.dates],
                values=[_finite(v) for v in s.values],
            )
            for s in r.series
        ],
        provenance=provenance(r.provenance),
    )


def _series_ref(s: fpb.SeriesRef) -> m.SeriesRefOut:
    return m.SeriesRefOut(
        level=enum_name("aggregation_level", s.level),  # type: ignore[arg-type]
        material_code=s.material_code,
        site_code=s.site_code,
        family=s.family,
        region=s.region,
    )


def forecast(f: fpb.SeriesForecast) -> m.ForecastOut:
    return m.ForecastOut(
        series=_series_ref(f.series),
        weeks=[
            m.WeekForecastOut(
                week_start=date_out(w.week_start) or dt.date.min,
                quantiles=_quantiles(w.quantiles),
                mean=w.mean,
            )
            for w in f.weeks
        ],
        demand_class=enum_name("demand_class", f.demand_class),  # type: ignore[arg-type]
        method=f.method,
        fallback=f.fallback,
        fallback_reason=f.fallback_reason,
        unit=f.unit,
        provenance=provenance(f.provenance),
    )


def reorder_policy(p: fpb.ReorderPolicy) -> m.ReorderPolicyOut:
    d = p.decomposition
    return m.ReorderPolicyOut(
        series=_series_ref(p.series),
        safety_stock=p.safety_stock,
        reorder_point=p.reorder_point,
        order_up_to=p.order_up_to,
        suggested_order_quantity=p.suggested_order_quantity,
        suggested_order_date=date_out(p.suggested_order_date),
        days_of_cover=_finite(p.days_of_cover),
        stock_position=p.stock_position,
        stock_position_known=p.stock_position_known,
        stock_position_note=p.stock_position_note,
        decomposition=m.ReorderDecompositionOut(
            expected_lead_time_demand=d.expected_lead_time_demand,
            demand_part=d.demand_part,
            lead_time_variability_part=d.lead_time_variability_part,
            service_target=d.service_target,
            service_target_source=d.service_target_source,
            lead_time_mean_days=d.lead_time_mean_days,
            lead_time_p90_days=d.lead_time_p90_days,
            lead_time_observations=d.lead_time_observations,
            lead_time_scope=d.lead_time_scope,
        ),
        unit=p.unit,
        method=p.method,
        fallback=p.fallback,
        provenance=provenance(p.provenance),
    )


def _metrics(text: str) -> JsonValue:
    if not text:
        return None
    try:
        parsed: JsonValue = json.loads(text)
    except ValueError:
        # Keep the text rather than hide it: the sidecar is the model's contract, shown as it is.
        return text
    return parsed


def models_out(r: fpb.ListModelsResponse) -> m.ModelsOut:
    return m.ModelsOut(
        models=[
            m.ModelInfoOut(
                name=x.name,
                version=x.version,
                serving=x.serving,
                state=x.state,
                reason=x.reason,
                quantiles=list(x.quantiles),
                feature_spec_version=x.feature_spec_version,
                metrics=_metrics(x.metrics_json),
                created_at=x.created_at,
            )
            for x in r.models
        ]
    )
