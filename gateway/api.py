"""The /api/v1 routes: each one converts its query, makes ONE gRPC call with the caller's token, and
converts the answer. No business logic lives here.

A route declares its gRPC method once (``x-grpc-method``); ``upstream_call`` resolves the stub method from
that same name, so the method authorized (``gateway.auth``) is always the method called.
"""

from __future__ import annotations

import datetime as dt
import time
from typing import Annotated, Any, Literal

import grpc
from fastapi import APIRouter, Body, Depends, Path, Query, Request
from fastapi.responses import StreamingResponse
from google.protobuf.message import Message
from novacorrente.analytics.v1 import analytics_pb2 as apb
from novacorrente.common.v1 import common_pb2 as cpb
from novacorrente.forecast.v1 import forecast_pb2 as fpb
from novacorrente.ingestion.v1 import ingestion_pb2 as ipb

from gateway import converters as conv
from gateway import models as m
from gateway.auth import (
    GRPC_METHOD_KEY,
    Caller,
    CallerDep,
    StreamCallerDep,
    route_method,
)
from gateway.policy import ANALYTICS, FORECAST, INGESTION, method
from gateway.query import FILTER_PARAMETERS, parse_filter
from gateway.routing import RpcRoute
from gateway.sse import stream_events
from gateway.status import ApiError, from_rpc_error

__all__ = ["ERROR_RESPONSES", "router"]

router = APIRouter(prefix="/api/v1", route_class=RpcRoute)

INT32_MAX = 2**31 - 1

ERROR_RESPONSES: dict[int | str, dict[str, Any]] = {
    400: {"model": m.ErrorBody, "description": "INVALID_ARGUMENT: `field_violations` name the fields."},
    401: {"model": m.ErrorBody, "description": "Missing, malformed or expired bearer token."},
    403: {"model": m.ErrorBody, "description": "The token's role may not call this operation."},
    404: {"model": m.ErrorBody, "description": "NOT_FOUND."},
    409: {"model": m.ErrorBody, "description": "ALREADY_EXISTS, ABORTED or FAILED_PRECONDITION."},
    429: {"model": m.ErrorBody, "description": "RESOURCE_EXHAUSTED; see Retry-After."},
    502: {"model": m.ErrorBody, "description": "The upstream service failed (INTERNAL, UNKNOWN...)."},
    503: {"model": m.ErrorBody, "description": "UNAVAILABLE; see Retry-After."},
    504: {"model": m.ErrorBody, "description": "DEADLINE_EXCEEDED."},
}

_UPSTREAM_OF = {ANALYTICS: "analytics", FORECAST: "forecast", INGESTION: "ingestion"}


def rpc_route(
    verb: str,
    path: str,
    rpc: str,
    *,
    responses: dict[int | str, Any] | None = None,
    filtered: bool = False,
    **kwargs: Any,
) -> Any:
    """Declare a route that maps to the gRPC method ``rpc`` (``filtered``: it takes the data filter)."""
    extra: dict[str, Any] = {GRPC_METHOD_KEY: rpc}
    if filtered:
        extra["parameters"] = FILTER_PARAMETERS
    return router.api_route(
        path,
        methods=[verb],
        openapi_extra=extra,
        responses={**ERROR_RESPONSES, **(responses or {})},
        description=kwargs.pop("description", "") + f"\n\ngRPC: `{rpc}`.",
        **kwargs,
    )


def _stub_method(request: Request, rpc: str) -> Any:
    service, name = rpc.strip("/").split("/")
    stub = getattr(request.app.state.upstreams, _UPSTREAM_OF[service])
    return getattr(stub, name)


async def upstream_call(request: Request, caller: Caller, message: Message) -> Any:
    """Make the route's one unary call, forwarding the caller's token; map failures to ``ApiError``."""
    rpc = route_method(request.scope.get("route"))
    state = request.app.state
    try:
        reply = await _stub_method(request, rpc)(
            message, metadata=caller.metadata, timeout=state.settings.request_timeout_seconds
        )
    except grpc.aio.AioRpcError as exc:
        state.metrics.count_upstream(rpc, exc.code().name)
        raise from_rpc_error(exc) from None
    state.metrics.count_upstream(rpc, "OK")
    return reply


# -- query parameters shared by several routes ----------------------------------------------------------


async def filter_query(request: Request) -> cpb.Filter:
    """The filter parameters (documented through ``openapi_extra``, see ``gateway.query``)."""
    return parse_filter(request)


async def page_query(
    page_size: Annotated[int, Query(ge=0, le=INT32_MAX, description="0: the server's default.")] = 0,
    page_token: Annotated[
        str,
        Query(
            max_length=4096,
            description="`next_page_token` of the last page. 409 ABORTED when the data changed since the "
            "first page: start again without a token.",
        ),
    ] = "",
) -> cpb.PageRequest:
    return cpb.PageRequest(page_size=page_size, page_token=page_token)


FilterDep = Annotated[cpb.Filter, Depends(filter_query)]
PageDep = Annotated[cpb.PageRequest, Depends(page_query)]
Grain = Annotated[m.TimeGrainName | None, Query(description="Time bucket; default week.")]


def _grain(grain: str | None) -> Any:
    return conv.enum_value("time_grain", grain)


# -- analytics ------------------------------------------------------------------------------------------


@rpc_route(
    "GET",
    "/kpis",
    method(ANALYTICS, "GetKpis"),
    filtered=True,
    response_model=m.KpisOut,
    summary="Inventory KPIs for a slice of the data",
)
async def get_kpis(
    request: Request,
    caller: CallerDep,
    filter: FilterDep,
    name: Annotated[list[str], Query(description="KPI names; none means all.")] = [],  # noqa: B006
) -> m.KpisOut:
    reply = await upstream_call(request, caller, apb.GetKpisRequest(filter=filter, names=name))
    return conv.kpis(reply)


@rpc_route(
    "GET",
    "/demand",
    method(ANALYTICS, "GetDemandSeries"),
    filtered=True,
    response_model=m.DemandSeriesOut,
    summary="Demand per period, with the latest forecast band for a single material x site",
)
async def get_demand(
    request: Request,
    caller: CallerDep,
    filter: FilterDep,
    grain: Grain = None,
    include_forecast: Annotated[bool, Query(description="Add P-quantiles (one material x site).")] = True,
) -> m.DemandSeriesOut:
    message = apb.GetDemandSeriesRequest(
        filter=filter, grain=_grain(grain), include_forecast=include_forecast
    )
    return conv.demand_series(await upstream_call(request, caller, message))


@rpc_route(
    "GET",
    "/inventory",
    method(ANALYTICS, "ListInventoryStatus"),
    filtered=True,
    response_model=m.InventoryPage,
    summary="Inventory status per material x site, highest risk first",
)
async def list_inventory(
    request: Request,
    caller: CallerDep,
    filter: FilterDep,
    page: PageDep,
    min_status: Annotated[
        Literal["normal", "attention", "critical"] | None, Query(description="Only rows at least this bad.")
    ] = None,
) -> m.InventoryPage:
    message = apb.ListInventoryStatusRequest(
        filter=filter,
        page=page,
        min_status=conv.enum_value("stock_status", min_status),
    )
    return conv.inventory_page(await upstream_call(request, caller, message))


@rpc_route(
    "GET",
    "/lead-times",
    method(ANALYTICS, "GetLeadTimes"),
    filtered=True,
    response_model=m.LeadTimesOut,
    summary="Observed supplier lead times for a slice of the data",
)
async def get_lead_times(request: Request, caller: CallerDep, filter: FilterDep) -> m.LeadTimesOut:
    return conv.lead_times(await upstream_call(request, caller, apb.GetLeadTimesRequest(filter=filter)))


AlertStates = Annotated[
    list[Literal["open", "acknowledged", "resolved"]], Query(description="Only these states (repeat).")
]


@rpc_route(
    "GET",
    "/alerts",
    method(ANALYTICS, "ListAlerts"),
    filtered=True,
    response_model=m.AlertPage,
    summary="Alerts, newest first",
)
async def list_alerts(
    request: Request,
    caller: CallerDep,
    filter: FilterDep,
    page: PageDep,
    state: AlertStates = [],  # noqa: B006
) -> m.AlertPage:
    message = apb.ListAlertsRequest(
        filter=filter, page=page, states=[conv.enum_value("alert_state", s) for s in state]
    )
    reply = await upstream_call(request, caller, message)
    return m.AlertPage(alerts=[conv.alert(a) for a in reply.alerts], page=conv.page(reply.page))


def _alert_event(alert: apb.Alert) -> tuple[str, m.AlertOut]:
    # Each state change is its own event; the id tells them apart for a client that de-duplicates.
    return f"{alert.alert_id}.{len(alert.history)}", conv.alert(alert)


@rpc_route(
    "GET",
    "/alerts/stream",
    method(ANALYTICS, "WatchAlerts"),
    filtered=True,
    response_model=None,
    response_class=StreamingResponse,
    responses={
        200: {
            "description": "An endless `text/event-stream`; each `alert` event's data is an `AlertOut`.",
            "content": {"text/event-stream": {"schema": {"type": "string"}}},
        }
    },
    summary="Live alerts as server-sent events",
    description="`text/event-stream`: one `alert` event (an AlertOut) per raised alert and per state change, "
    "`: keepalive` comments while idle, a `stream_error` event (an ErrorBody) if the upstream fails. "
    "EventSource cannot send headers, so this route also takes the token as `?access_token=`. "
    "The stream ends when the token expires; the client then logs in again and reconnects.",
)
async def stream_alerts(request: Request, caller: StreamCallerDep, filter: FilterDep) -> StreamingResponse:
    state = request.app.state
    settings = state.settings
    lifetime = min(settings.sse_max_seconds, caller.principal.expires_at - time.time())
    rpc = route_method(request.scope.get("route"))
    call = _stub_method(request, rpc)(
        apb.WatchAlertsRequest(filter=filter), metadata=caller.metadata, timeout=max(lifetime, 0.001)
    )
    frames = stream_events(
        call,
        _alert_event,
        heartbeat_seconds=settings.sse_heartbeat_seconds,
        deadline=time.monotonic() + lifetime,
        shutdown=state.shutdown,
        metrics=state.metrics,
        method=rpc,
    )
    return StreamingResponse(
        frames,
        media_type="text/event-stream",
        headers={"Cache-Control": "no-store", "X-Accel-Buffering": "no"},
    )


AlertId = Annotated[str, Path(min_length=1, max_length=256)]
ActionBody = Annotated[m.AlertActionIn | None, Body()]


@rpc_route(
    "POST",
    "/alerts/{alert_id}/acknowledge",
    method(ANALYTICS, "AcknowledgeAlert"),
    response_model=m.AlertOut,
    summary="Acknowledge an alert (planner)",
)
async def acknowledge_alert(
    request: Request, caller: CallerDep, alert_id: AlertId, body: ActionBody = None
) -> m.AlertOut:
    message = apb.AlertActionRequest(alert_id=alert_id, comment=body.comment if body else "")
    return conv.alert(await upstream_call(request, caller, message))


@rpc_route(
    "POST",
    "/alerts/{alert_id}/resolve",
    method(ANALYTICS, "ResolveAlert"),
    response_model=m.AlertOut,
    summary="Resolve an alert (planner)",
)
async def resolve_alert(
    request: Request, caller: CallerDep, alert_id: AlertId, body: ActionBody = None
) -> m.AlertOut:
    message = apb.AlertActionRequest(alert_id=alert_id, comment=body.comment if body else "")
    return conv.alert(await upstream_call(request, caller, message))


SearchQuery = Annotated[str, Query(max_length=256, description="Search over code and name.")]


@rpc_route(
    "GET",
    "/materials",
    method(ANALYTICS, "ListMaterials"),
    response_model=m.MaterialPage,
    summary="Materials",
)
async def list_materials(
    request: Request, caller: CallerDep, page: PageDep, q: SearchQuery = ""
) -> m.MaterialPage:
    return conv.materials(await upstream_call(request, caller, apb.ListMasterDataRequest(query=q, page=page)))


@rpc_route("GET", "/sites", method(ANALYTICS, "ListSites"), response_model=m.SitePage, summary="Sites")
async def list_sites(request: Request, caller: CallerDep, page: PageDep, q: SearchQuery = "") -> m.SitePage:
    return conv.sites(await upstream_call(request, caller, apb.ListMasterDataRequest(query=q, page=page)))


@rpc_route(
    "GET",
    "/suppliers",
    method(ANALYTICS, "ListSuppliers"),
    response_model=m.SupplierPage,
    summary="Suppliers",
)
async def list_suppliers(
    request: Request, caller: CallerDep, page: PageDep, q: SearchQuery = ""
) -> m.SupplierPage:
    return conv.suppliers(await upstream_call(request, caller, apb.ListMasterDataRequest(query=q, page=page)))


@rpc_route(
    "GET",
    "/external-series",
    method(ANALYTICS, "GetExternalSeries"),
    response_model=m.ExternalSeriesListOut,
    summary="External factors (weather, PTAX, SELIC, IPCA); without `series`, the list of series",
)
async def get_external_series(
    request: Request,
    caller: CallerDep,
    series: Annotated[list[str], Query(description="Series ids (repeat); none lists them.")] = [],  # noqa: B006
    start: Annotated[dt.date | None, Query()] = None,
    end: Annotated[dt.date | None, Query()] = None,
    grain: Grain = None,
) -> m.ExternalSeriesListOut:
    message = apb.GetExternalSeriesRequest(series_ids=series, grain=_grain(grain))
    if start is not None:
        message.date_range.start.CopyFrom(conv.date_proto(start))
    if end is not None:
        message.date_range.end.CopyFrom(conv.date_proto(end))
    return conv.external_series(await upstream_call(request, caller, message))


@rpc_route(
    "GET",
    "/watermark",
    method(ANALYTICS, "GetWatermark"),
    response_model=m.WatermarkOut,
    summary="Data watermark of the read model",
)
async def get_watermark(request: Request, caller: CallerDep) -> m.WatermarkOut:
    return conv.watermark(await upstream_call(request, caller, apb.GetWatermarkRequest()))


@rpc_route(
    "GET",
    "/ingestion/watermark",
    method(INGESTION, "GetWatermark"),
    response_model=m.WatermarkOut,
    summary="Data watermark of the system of record (committed data; the read model may lag behind)",
)
async def get_ingestion_watermark(request: Request, caller: CallerDep) -> m.WatermarkOut:
    return conv.watermark(await upstream_call(request, caller, ipb.GetWatermarkRequest()))


# -- forecast -------------------------------------------------------------------------------------------

Level = Annotated[
    Literal["material_site", "material", "family", "region", "national"],
    Query(description="Aggregation level of the series."),
]


def _series_ref(level: str, material: str, site: str, family: str, region: str) -> fpb.SeriesRef:
    return fpb.SeriesRef(
        level=conv.enum_value("aggregation_level", level),
        material_code=material,
        site_code=site,
        family=family,
        region=region,
    )


Code = Annotated[str, Query(max_length=256)]


@rpc_route(
    "GET",
    "/forecast",
    method(FORECAST, "Forecast"),
    response_model=m.ForecastOut,
    summary="Forecast quantiles of one series over a horizon in weeks",
)
async def get_forecast(
    request: Request,
    caller: CallerDep,
    material: Code = "",
    site: Code = "",
    family: Code = "",
    region: Code = "",
    level: Level = "material_site",
    horizon: Annotated[int, Query(ge=0, le=INT32_MAX, description="Weeks ahead; 0: the default (8).")] = 0,
) -> m.ForecastOut:
    message = fpb.ForecastRequest(
        series=[_series_ref(level, material, site, family, region)], horizon_weeks=horizon
    )
    reply = await upstream_call(request, caller, message)
    return conv.forecast(reply.forecasts[0]) if reply.forecasts else _missing("forecast")


@rpc_route(
    "GET",
    "/reorder-policy",
    method(FORECAST, "GetReorderPolicy"),
    response_model=m.ReorderPolicyOut,
    summary="Reorder policy of one material x site, with its decomposition",
)
async def get_reorder_policy(
    request: Request,
    caller: CallerDep,
    material: Code = "",
    site: Code = "",
    service_level: Annotated[
        float,
        Query(allow_inf_nan=False, description="Target cycle service level in (0, 1); 0: from criticality."),
    ] = 0.0,
    review_period_days: Annotated[
        float,
        Query(allow_inf_nan=False, description="Review period in days, at most 365; 0: continuous review."),
    ] = 0.0,
) -> m.ReorderPolicyOut:
    message = fpb.ReorderPolicyRequest(
        series=[_series_ref("material_site", material, site, "", "")],
        service_level=service_level,
        review_period_days=review_period_days,
    )
    reply = await upstream_call(request, caller, message)
    return conv.reorder_policy(reply.policies[0]) if reply.policies else _missing("policy")


@rpc_route(
    "GET",
    "/models",
    method(FORECAST, "ListModels"),
    response_model=m.ModelsOut,
    summary="Model versions in the repository, the serving one first, with backtest metrics",
)
async def list_models(request: Request, caller: CallerDep) -> m.ModelsOut:
    return conv.models_out(await upstream_call(request, caller, fpb.ListModelsRequest()))


def _missing(what: str) -> Any:
    # The contract promises one answer per requested series; an empty answer is an upstream fault.
    raise ApiError(code=grpc.StatusCode.INTERNAL, message=f"upstream returned no {what} for the series")
