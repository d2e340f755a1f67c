"""gRPC adapter of AnalyticsService: one call into the use cases per RPC, the caller's deadline passed on."""

from __future__ import annotations

from collections.abc import AsyncIterator

import grpc
from novacorrente.analytics.v1 import analytics_pb2, analytics_pb2_grpc

from services.analytics.service import AnalyticsService

__all__ = ["AnalyticsServicer"]


def _timeout(context: grpc.aio.ServicerContext) -> float | None:
    return context.time_remaining()


class AnalyticsServicer(analytics_pb2_grpc.AnalyticsServiceServicer):
    def __init__(self, service: AnalyticsService):
        self._service = service

    async def GetDemandSeries(self, request, context):  # type: ignore[no-untyped-def]
        return await self._service.get_demand_series(request, _timeout(context))

    async def GetSeriesHistory(self, request, context):  # type: ignore[no-untyped-def]
        return await self._service.get_series_history(request, _timeout(context))

    async def GetKpis(self, request, context):  # type: ignore[no-untyped-def]
        return await self._service.get_kpis(request, _timeout(context))

    async def ListInventoryStatus(self, request, context):  # type: ignore[no-untyped-def]
        return await self._service.list_inventory_status(request, _timeout(context))

    async def GetLeadTimes(self, request, context):  # type: ignore[no-untyped-def]
        return await self._service.get_lead_times(request, _timeout(context))

    async def ListAlerts(self, request, context):  # type: ignore[no-untyped-def]
        return await self._service.list_alerts(request)

    async def WatchAlerts(  # type: ignore[override]
        self, request: analytics_pb2.WatchAlertsRequest, context: grpc.aio.ServicerContext
    ) -> AsyncIterator[analytics_pb2.Alert]:
        async for alert in self._service.watch_alerts(request):
            yield alert

    async def AcknowledgeAlert(self, request, context):  # type: ignore[no-untyped-def]
        return await self._service.acknowledge_alert(request)

    async def ResolveAlert(self, request, context):  # type: ignore[no-untyped-def]
        return await self._service.resolve_alert(request)

    async def ListMaterials(self, request, context):  # type: ignore[no-untyped-def]
        return await self._service.list_materials(request, _timeout(context))

    async def ListSites(self, request, context):  # type: ignore[no-untyped-def]
        return await self._service.list_sites(request, _timeout(context))

    async def ListSuppliers(self, request, context):  # type: ignore[no-untyped-def]
        return await self._service.list_suppliers(request, _timeout(context))

    async def GetExternalSeries(self, request, context):  # type: ignore[no-untyped-def]
        return await self._service.get_external_series(request, _timeout(context))

    async def GetWatermark(self, request, context):  # type: ignore[no-untyped-def]
        return await self._service.get_watermark()
