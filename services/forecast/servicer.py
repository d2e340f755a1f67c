"""gRPC adapter of ``novacorrente.forecast.v1.ForecastService``: convert, call, convert back."""

from __future__ import annotations

import grpc
from novacorrente.forecast.v1 import forecast_pb2 as fpb
from novacorrente.forecast.v1 import forecast_pb2_grpc as fpb_grpc

from services.forecast import converters
from services.forecast.repository import ModelRepository
from services.forecast.service import ForecastUseCases

__all__ = ["ForecastServicer"]


class ForecastServicer(fpb_grpc.ForecastServiceServicer):
    def __init__(self, use_cases: ForecastUseCases, repository: ModelRepository):
        self._use_cases = use_cases
        self._repository = repository

    async def Forecast(
        self, request: fpb.ForecastRequest, context: grpc.aio.ServicerContext
    ) -> fpb.ForecastResponse:
        items = await self._use_cases.forecast_cached(
            converters.series_specs(request.series), request.horizon_weeks, converters.encode_forecast
        )
        return converters.forecast_response(items)

    async def GetReorderPolicy(
        self, request: fpb.ReorderPolicyRequest, context: grpc.aio.ServicerContext
    ) -> fpb.ReorderPolicyResponse:
        results = await self._use_cases.reorder_policies(
            converters.series_specs(request.series), request.service_level, request.review_period_days
        )
        return fpb.ReorderPolicyResponse(policies=[converters.policy_pb(r) for r in results])

    async def ListModels(
        self, request: fpb.ListModelsRequest, context: grpc.aio.ServicerContext
    ) -> fpb.ListModelsResponse:
        return fpb.ListModelsResponse(
            models=[converters.model_info_pb(r, self._repository) for r in self._repository.records()]
        )
