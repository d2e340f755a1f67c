"""Test doubles of the gateway's peers: small in-memory AnalyticsService, ForecastService and IngestionService
servicers, served over real gRPC by the kit's GrpcServer (same interceptors, auth and error mapping as the
real services).

``FAIL`` lets a test make any method fail with a chosen domain error or raw status, to exercise the status
mapping end to end. ``FakeAnalytics.watch_bus`` raises an alert when an ingested stock count falls to the
reorder point of a known row, standing in for the analytics alert rule in the browser test.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import json
import uuid
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field

import grpc
from google.protobuf import timestamp_pb2
from novacorrente.analytics.v1 import analytics_pb2 as apb
from novacorrente.analytics.v1 import analytics_pb2_grpc
from novacorrente.common.v1 import common_pb2 as cpb
from novacorrente.events.v1 import events_pb2
from novacorrente.forecast.v1 import forecast_pb2 as fpb
from novacorrente.forecast.v1 import forecast_pb2_grpc
from novacorrente.ingestion.v1 import ingestion_pb2 as ipb
from novacorrente.ingestion.v1 import ingestion_pb2_grpc

from gateway.policy import ANALYTICS, FORECAST, INGESTION
from services.kit.auth import PLAN, READ, WRITE, MethodPolicy, principal_var
from services.kit.errors import DomainError, FailedPrecondition, FieldViolation, InvalidArgument, NotFound
from services.kit.server import GrpcServer
from services.kit.settings import ServiceSettings
from services.ports.bus import Delivery, EventBus, Subscription

__all__ = ["DOUBLE_POLICY", "FakeAnalytics", "FakeForecast", "FakeIngestion", "Peers", "start_peers"]

DOUBLE_POLICY = MethodPolicy(
    {
        **{
            f"/{ANALYTICS}/{name}": READ
            for name in apb.DESCRIPTOR.services_by_name["AnalyticsService"].methods_by_name
        },
        f"/{ANALYTICS}/AcknowledgeAlert": PLAN,
        f"/{ANALYTICS}/ResolveAlert": PLAN,
        **{
            f"/{FORECAST}/{name}": READ
            for name in fpb.DESCRIPTOR.services_by_name["ForecastService"].methods_by_name
        },
        f"/{INGESTION}/GetWatermark": WRITE | READ,
    }
)
"""The rules the doubles enforce: reads for viewers and up, alert actions for planners."""

Failure = DomainError | tuple[grpc.StatusCode, str]
FAIL: dict[str, Failure] = {}


async def _maybe_fail(method: str, context: grpc.aio.ServicerContext) -> None:
    failure = FAIL.get(method)
    if failure is None:
        return
    if isinstance(failure, DomainError):
        raise failure
    await context.abort(*failure)


def _date(d: dt.date) -> cpb.Date:
    return cpb.Date(year=d.year, month=d.month, day=d.day)


def _now() -> timestamp_pb2.Timestamp:
    ts = timestamp_pb2.Timestamp()
    ts.GetCurrentTime()
    return ts


MONDAY = dt.date(2025, 9, 29)
LEVELS = (0.5, 0.8, 0.9, 0.95)


@dataclass
class Row:
    material: str
    site: str
    name: str
    family: str
    unit: str
    on_hand: float
    on_order: float
    safety_stock: float
    reorder_point: float
    weekly: float
    simulated: bool = False

    def status(self) -> int:
        position = self.on_hand + self.on_order
        if position <= self.safety_stock:
            return apb.STOCK_STATUS_CRITICAL
        if position <= self.reorder_point:
            return apb.STOCK_STATUS_ATTENTION
        return apb.STOCK_STATUS_NORMAL

    def proto(self) -> apb.InventoryStatus:
        position = self.on_hand + self.on_order
        cover = self.on_hand / (self.weekly / 7) if self.weekly else float("inf")
        return apb.InventoryStatus(
            material_code=self.material,
            site_code=self.site,
            on_hand=self.on_hand,
            on_order=self.on_order,
            stock_position=position,
            safety_stock=self.safety_stock,
            reorder_point=self.reorder_point,
            days_of_cover=cover,
            status=self.status(),
            suggested_order_quantity=max(0.0, self.reorder_point * 2 - position)
            if self.status() > 1
            else 0.0,
            risk=round(self.reorder_point / max(position, 0.5), 3),
            family=self.family,
            unit=self.unit,
            simulated=self.simulated,
        )


def default_rows() -> list[Row]:
    return [
        Row("010601", "ALMOX-BA", "CABO DE COBRE NU 16MM", "MATERIAL ELETRICO", "M", 120, 0, 40, 90, 35),
        Row("020310", "ALMOX-BA", "LUVA DE PROTECAO ISOLANTE", "EPI", "PAR", 8, 0, 10, 18, 6),
        Row(
            "030115",
            "TORRE-SSA-0042",
            "PARAFUSO GALVANIZADO 5/8",
            "MATERIAL CIVIL",
            "UN",
            200,
            100,
            50,
            120,
            60,
        ),
        Row("040220", "ALMOX-BA", "DISJUNTOR BIPOLAR 40A", "MATERIAL ELETRICO", "UN", 14, 0, 6, 16, 4),
    ]


class FakeAnalytics(analytics_pb2_grpc.AnalyticsServiceServicer):
    def __init__(self) -> None:
        self.rows = default_rows()
        self.alerts: dict[str, apb.Alert] = {}
        self.watchers: list[asyncio.Queue[apb.Alert]] = []
        self.seen_tokens: list[str] = []
        self.seen_request_ids: list[str] = []
        self.sequence = 4207

    def _provenance(self) -> cpb.Provenance:
        return cpb.Provenance(data_watermark=f"seq:{self.sequence}", generated_at=_now())

    async def _enter(self, method: str, context: grpc.aio.ServicerContext) -> None:
        for key, value in context.invocation_metadata() or ():
            if key == "authorization":
                self.seen_tokens.append(str(value))
            elif key == "x-request-id":
                self.seen_request_ids.append(str(value))
        await _maybe_fail(method, context)

    def _rows(self, f: cpb.Filter) -> list[Row]:
        return [
            r
            for r in self.rows
            if (not f.material_codes or r.material in f.material_codes)
            and (not f.site_codes or r.site in f.site_codes)
            and (not f.families or r.family in f.families)
        ]

    async def GetKpis(self, request, context):
        await self._enter("GetKpis", context)
        rows = self._rows(request.filter)
        kpis = [
            apb.Kpi(
                name="total_demand", value=sum(r.weekly for r in rows) * 52, unit="units", available=True
            ),
            apb.Kpi(name="fill_rate", unit="%", available=False, note="no stock ledger in the export"),
            apb.Kpi(name="stockout_rate", unit="%", available=False, note="no stock ledger in the export"),
            apb.Kpi(name="days_of_cover", value=23.5, unit="days", available=True, note="simulated stock"),
            apb.Kpi(name="lead_time_p90_days", value=14.0, unit="days", available=True),
            apb.Kpi(
                name="sla_risk_series", value=sum(r.status() > 1 for r in rows), unit="series", available=True
            ),
            apb.Kpi(name="forecast_wape", value=71.2, unit="%", available=True),
            apb.Kpi(name="forecast_interval_coverage", value=87.0, unit="%", available=True),
        ]
        if request.names:
            kpis = [k for k in kpis if k.name in request.names]
        return apb.GetKpisResponse(kpis=kpis, provenance=self._provenance())

    async def GetDemandSeries(self, request, context):
        await self._enter("GetDemandSeries", context)
        rows = self._rows(request.filter)
        weekly = sum(r.weekly for r in rows)
        points = []
        for i in range(-20, 0):
            quantity = max(0.0, weekly + ((i * 7919) % 13 - 6) * weekly / 10) if i % 3 else 0.0
            points.append(
                apb.DemandPoint(
                    period_start=_date(MONDAY + dt.timedelta(weeks=i)), quantity=quantity, lines=2
                )
            )
        single = len(rows) == 1 and request.include_forecast
        for i in range(8 if single else 0):
            band = [cpb.QuantileValue(level=q, value=weekly * (0.6 + q)) for q in LEVELS]
            points.append(
                apb.DemandPoint(
                    period_start=_date(MONDAY + dt.timedelta(weeks=i)), forecast=band, is_forecast=True
                )
            )
        provenance = self._provenance()
        if single:
            provenance.model_name, provenance.model_version = "demand_forecast", "3"
        return apb.GetDemandSeriesResponse(
            points=points, unit=rows[0].unit if len(rows) == 1 else "", provenance=provenance
        )

    async def GetSeriesHistory(self, request, context):
        await self._enter("GetSeriesHistory", context)
        return apb.GetSeriesHistoryResponse(provenance=self._provenance())

    async def ListInventoryStatus(self, request, context):
        await self._enter("ListInventoryStatus", context)
        rows = [r.proto() for r in self._rows(request.filter)]
        rows = [r for r in rows if r.status >= request.min_status]
        rows.sort(key=lambda r: -r.risk)
        size = request.page.page_size or 50
        if size > 1000 or not (request.page.page_token or "0").isdigit():
            raise InvalidArgument([FieldViolation("page", "bad page_size or page_token")])
        start = int(request.page.page_token or 0)
        page = rows[start : start + size]
        token = str(start + size) if start + size < len(rows) else ""
        return apb.ListInventoryStatusResponse(
            rows=page,
            page=cpb.PageInfo(next_page_token=token, total_size=len(rows)),
            provenance=self._provenance(),
        )

    async def GetLeadTimes(self, request, context):
        await self._enter("GetLeadTimes", context)
        days = [3.0, 5.0, 6.0, 6.0, 7.0, 9.0, 14.0, 21.0]
        return apb.GetLeadTimesResponse(
            days=days,
            mean_days=8.875,
            p50_days=6.5,
            p90_days=16.1,
            std_days=5.6,
            scope="material",
            provenance=self._provenance(),
        )

    async def ListAlerts(self, request, context):
        await self._enter("ListAlerts", context)
        alerts = [a for a in self.alerts.values() if not request.states or a.state in request.states]
        alerts.sort(key=lambda a: -a.raised_at.ToNanoseconds())
        return apb.ListAlertsResponse(alerts=alerts, page=cpb.PageInfo(total_size=len(alerts)))

    async def WatchAlerts(self, request, context) -> AsyncIterator[apb.Alert]:
        await self._enter("WatchAlerts", context)
        queue: asyncio.Queue[apb.Alert] = asyncio.Queue()
        self.watchers.append(queue)
        try:
            while True:
                alert = await queue.get()
                f = request.filter
                if (not f.material_codes or alert.material_code in f.material_codes) and (
                    not f.site_codes or alert.site_code in f.site_codes
                ):
                    yield alert
        finally:
            self.watchers.remove(queue)

    def _broadcast(self, alert: apb.Alert) -> None:
        for queue in self.watchers:
            queue.put_nowait(apb.Alert.FromString(alert.SerializeToString()))

    def raise_alert(self, material: str, site: str, *, stock_position: float | None = None) -> apb.Alert:
        row = next(r for r in self.rows if r.material == material and r.site == site)
        position = row.on_hand + row.on_order if stock_position is None else stock_position
        alert = apb.Alert(
            alert_id=uuid.uuid4().hex[:12],
            kind=apb.ALERT_KIND_REORDER_POINT,
            material_code=material,
            site_code=site,
            state=apb.ALERT_STATE_OPEN,
            message=f"{row.name} em {site}: posição {position:g} {row.unit} ≤ ponto de pedido "
            f"{row.reorder_point:g}",
            stock_position=position,
            reorder_point=row.reorder_point,
            days_of_cover=position / (row.weekly / 7),
            lead_time_days=6.5,
            raised_at=_now(),
            history=[apb.AlertEvent(state=apb.ALERT_STATE_OPEN, actor="system", at=_now())],
            provenance=self._provenance(),
        )
        self.alerts[alert.alert_id] = alert
        self._broadcast(alert)
        return alert

    async def _change(self, request, context, method: str, state: int):
        await self._enter(method, context)
        alert = self.alerts.get(request.alert_id)
        if alert is None:
            raise NotFound(
                f"alert {request.alert_id} not found", resource_type="alert", resource_name=request.alert_id
            )
        if alert.state == apb.ALERT_STATE_RESOLVED:
            raise FailedPrecondition("alert is already resolved", reason="ALERT_RESOLVED")
        principal = principal_var.get()
        alert.state = state
        alert.history.append(
            apb.AlertEvent(
                state=state, actor=principal.subject if principal else "?", at=_now(), comment=request.comment
            )
        )
        self._broadcast(alert)
        return alert

    async def AcknowledgeAlert(self, request, context):
        return await self._change(request, context, "AcknowledgeAlert", apb.ALERT_STATE_ACKNOWLEDGED)

    async def ResolveAlert(self, request, context):
        return await self._change(request, context, "ResolveAlert", apb.ALERT_STATE_RESOLVED)

    async def ListMaterials(self, request, context):
        await self._enter("ListMaterials", context)
        q = request.query.lower()
        found = {}
        for r in self.rows:
            if q in r.material.lower() or q in r.name.lower():
                found[r.material] = apb.MaterialInfo(
                    code=r.material,
                    name=r.name,
                    family=r.family,
                    unit=r.unit,
                    criticality=cpb.CRITICALITY_HIGH,
                    abc_class="A",
                    stocked=True,
                    total_quantity=r.weekly * 52,
                    lines=40,
                )
        return apb.ListMaterialsResponse(
            materials=sorted(found.values(), key=lambda x: x.code), page=cpb.PageInfo(total_size=len(found))
        )

    async def ListSites(self, request, context):
        await self._enter("ListSites", context)
        sites = [
            apb.SiteInfo(
                code="ALMOX-BA", client="", region="BA", site_type=cpb.SITE_TYPE_WAREHOUSE, lines=900
            ),
            apb.SiteInfo(
                code="TORRE-SSA-0042",
                client="American Tower",
                region="BA",
                site_type=cpb.SITE_TYPE_TOWER,
                criticality=cpb.CRITICALITY_HIGH,
                lines=12,
            ),
        ]
        sites = [s for s in sites if request.query.lower() in s.code.lower()]
        return apb.ListSitesResponse(sites=sites, page=cpb.PageInfo(total_size=len(sites)))

    async def ListSuppliers(self, request, context):
        await self._enter("ListSuppliers", context)
        suppliers = [apb.SupplierInfo(code="F001", name="ELETRO BAHIA LTDA", lines=120, lead_time_p50_days=6)]
        return apb.ListSuppliersResponse(suppliers=suppliers, page=cpb.PageInfo(total_size=1))

    async def GetExternalSeries(self, request, context):
        await self._enter("GetExternalSeries", context)
        catalog = {
            "ptax.usd.sell": ("BRL", "BCB PTAX", lambda i: 5.30 + 0.02 * (i % 7)),
            "weather.salvador.precipitation_mm": ("mm", "Open-Meteo", lambda i: float((i * 37) % 23)),
            "selic.rate": ("%", "BCB SGS", lambda i: 15.0),
        }
        ids = list(request.series_ids) or list(catalog)
        series = []
        for sid in ids:
            if sid not in catalog:
                raise NotFound(f"unknown series {sid}", resource_type="external_series", resource_name=sid)
            unit, source, value = catalog[sid]
            dates = (
                []
                if not request.series_ids
                else [_date(MONDAY - dt.timedelta(weeks=k)) for k in range(26, 0, -1)]
            )
            series.append(
                apb.ExternalSeries(
                    series_id=sid,
                    unit=unit,
                    source=source,
                    dates=dates,
                    values=[value(i) for i in range(len(dates))],
                )
            )
        return apb.GetExternalSeriesResponse(series=series, provenance=self._provenance())

    async def GetWatermark(self, request, context):
        await self._enter("GetWatermark", context)
        return apb.GetWatermarkResponse(sequence=self.sequence, data_watermark=f"seq:{self.sequence}")

    async def watch_bus(self, bus: EventBus) -> Subscription:
        """Raise an alert for every ingested stock count at or below a known row's reorder point."""

        async def on_batch(delivery: Delivery) -> None:
            event = events_pb2.BatchCommitted.FromString(delivery.body)
            self.sequence = max(self.sequence, event.sequence_to)
            for committed in event.records:
                if committed.record.WhichOneof("kind") != "stock_snapshot":
                    continue
                snap = committed.record.stock_snapshot
                for row in self.rows:
                    if (row.material, row.site) == (snap.material_code, snap.site_code):
                        row.on_hand = snap.on_hand
                        row.simulated = snap.simulated
                        if row.on_hand + row.on_order <= row.reorder_point:
                            self.raise_alert(row.material, row.site)

        return await bus.subscribe(
            f"gateway-test.{uuid.uuid4().hex[:8]}", ["ingestion.batch.committed"], on_batch
        )


BACKTEST = {
    "cutoffs": ["2025-06-02", "2025-06-30", "2025-07-28", "2025-08-25"],
    "metrics": {
        "lightgbm-quantile": {
            "overall": {
                "scaled_pinball": 0.412,
                "mase": 0.88,
                "wape": 0.71,
                "bias": -0.04,
                "coverage_p90": 0.87,
            }
        },
        "tsb": {
            "overall": {
                "scaled_pinball": 0.455,
                "mase": 0.93,
                "wape": 0.76,
                "bias": 0.05,
                "coverage_p90": 0.84,
            }
        },
        "seasonal-naive": {
            "overall": {"scaled_pinball": 0.61, "mase": 1.0, "wape": 0.98, "bias": 0.01, "coverage_p90": 0.71}
        },
    },
}


class FakeForecast(forecast_pb2_grpc.ForecastServiceServicer):
    async def Forecast(self, request, context):
        await _maybe_fail("Forecast", context)
        horizon = request.horizon_weeks or 8
        if not 1 <= horizon <= 26:
            raise InvalidArgument([FieldViolation("horizon_weeks", "must be 1..26")])
        out = []
        for ref in request.series:
            weeks = [
                fpb.WeekForecast(
                    week_start=_date(MONDAY + dt.timedelta(weeks=i)),
                    quantiles=[cpb.QuantileValue(level=q, value=10 * (0.5 + q)) for q in LEVELS],
                    mean=10.5,
                )
                for i in range(horizon)
            ]
            out.append(
                fpb.SeriesForecast(
                    series=ref,
                    weeks=weeks,
                    demand_class=fpb.DEMAND_CLASS_INTERMITTENT,
                    method="lightgbm-quantile",
                    unit="M",
                    provenance=cpb.Provenance(
                        data_watermark="seq:4207",
                        model_name="demand_forecast",
                        model_version="3",
                        generated_at=_now(),
                    ),
                )
            )
        return fpb.ForecastResponse(forecasts=out)

    async def GetReorderPolicy(self, request, context):
        await _maybe_fail("GetReorderPolicy", context)
        policies = []
        for ref in request.series:
            policies.append(
                fpb.ReorderPolicy(
                    series=ref,
                    safety_stock=40,
                    reorder_point=90,
                    order_up_to=160,
                    suggested_order_quantity=0,
                    suggested_order_date=_date(MONDAY + dt.timedelta(days=9)),
                    days_of_cover=24,
                    stock_position=120,
                    decomposition=fpb.ReorderDecomposition(
                        expected_lead_time_demand=50,
                        demand_part=28,
                        lead_time_variability_part=12,
                        service_target=0.95,
                        service_target_source="criticality",
                        lead_time_mean_days=8.9,
                        lead_time_p90_days=16.1,
                        lead_time_observations=8,
                        lead_time_scope="material",
                    ),
                    unit="M",
                    method="lightgbm-quantile",
                    provenance=cpb.Provenance(
                        data_watermark="seq:4207",
                        model_name="demand_forecast",
                        model_version="3",
                        generated_at=_now(),
                    ),
                )
            )
        return fpb.ReorderPolicyResponse(policies=policies)

    async def ListModels(self, request, context):
        await _maybe_fail("ListModels", context)
        return fpb.ListModelsResponse(
            models=[
                fpb.ModelInfo(
                    name="demand_forecast",
                    version="3",
                    serving=True,
                    state="ready",
                    quantiles=LEVELS,
                    feature_spec_version="2",
                    metrics_json=json.dumps(BACKTEST),
                    created_at="2025-10-20T12:00:00Z",
                ),
                fpb.ModelInfo(
                    name="demand_forecast",
                    version="2",
                    state="refused",
                    reason="sha256 does not match the sidecar",
                ),
            ]
        )


class FakeIngestion(ingestion_pb2_grpc.IngestionServiceServicer):
    async def GetWatermark(self, request, context):
        await _maybe_fail("IngestionGetWatermark", context)
        return ipb.GetWatermarkResponse(sequence=4210, data_watermark="seq:4210")


@dataclass
class Peers:
    server: GrpcServer
    analytics: FakeAnalytics
    forecast: FakeForecast
    channel: grpc.aio.Channel
    cleanups: list[Callable[[], object]] = field(default_factory=list)

    @property
    def target(self) -> str:
        return f"127.0.0.1:{self.server.port}"

    @property
    def channels(self) -> dict[str, grpc.aio.Channel]:
        return {"ingestion": self.channel, "analytics": self.channel, "forecast": self.channel}

    async def stop(self) -> None:
        await self.channel.close()
        await self.server.stop(0)


async def start_peers(
    jwt_key: bytes, *, ingestion: bool = True, policy: MethodPolicy = DOUBLE_POLICY
) -> Peers:
    """The three doubles on one port (the gateway's three channels may all point at it)."""
    server = GrpcServer(
        ServiceSettings(port=0, health_poll_seconds=3600),
        policy=policy,
        jwt_key=jwt_key,
        service_names=[ANALYTICS, FORECAST, *([INGESTION] if ingestion else [])],
    )
    analytics, forecast = FakeAnalytics(), FakeForecast()
    server.add_servicer(analytics_pb2_grpc.add_AnalyticsServiceServicer_to_server, analytics)
    server.add_servicer(forecast_pb2_grpc.add_ForecastServiceServicer_to_server, forecast)
    if ingestion:
        server.add_servicer(ingestion_pb2_grpc.add_IngestionServiceServicer_to_server, FakeIngestion())
    await server.start()
    from services.kit.clients import open_channel

    channel = open_channel(f"127.0.0.1:{server.port}")
    return Peers(server=server, analytics=analytics, forecast=forecast, channel=channel)
