"""Composition root of forecast-serving: repository, runner, analytics client, use cases, servicers."""

from __future__ import annotations

import datetime as dt
import os
from collections.abc import Callable
from dataclasses import dataclass

import grpc
from inference import grpc_service_pb2_grpc as oip_grpc
from novacorrente.forecast.v1 import forecast_pb2_grpc

from services.forecast.access import OIP_SERVICE_NAME, SERVICE_NAME, policy
from services.forecast.consumer import ReforecastConsumer
from services.forecast.history import AnalyticsReader
from services.forecast.metrics import ForecastMetrics
from services.forecast.oip_servicer import OipServicer
from services.forecast.repository import ModelRepository
from services.forecast.result_cache import ForecastCache
from services.forecast.runner import InferenceRunner
from services.forecast.service import ForecastUseCases, answer_settings_digest
from services.forecast.servicer import ForecastServicer
from services.forecast.settings import ForecastSettings
from services.kit.auth import Role, TokenSource
from services.kit.clients import open_channel
from services.kit.server import GrpcServer
from services.ports.bus import EventBus, open_bus
from services.ports.cache import Cache, open_cache

__all__ = ["OIP_SERVICE_NAME", "SERVICE_NAME", "ForecastApp", "build_app", "policy"]


@dataclass
class ForecastApp:
    """A wired forecast-serving process; ``start`` / ``stop`` for tests and the one-process demo."""

    settings: ForecastSettings
    server: GrpcServer
    repository: ModelRepository
    runner: InferenceRunner
    reader: AnalyticsReader
    use_cases: ForecastUseCases
    consumer: ReforecastConsumer | None
    metrics: ForecastMetrics

    async def start(self) -> None:
        await self.repository.start()
        await self.server.start()
        if self.consumer is not None:
            await self.consumer.start()

    async def stop(self) -> None:
        await self.server.stop()

    @property
    def port(self) -> int:
        return self.server.port

    @property
    def address(self) -> str:
        return self.server.address


async def build_app(
    settings: ForecastSettings,
    *,
    bus: EventBus | None = None,
    cache: Cache | None = None,
    jwt_key: bytes | None = None,
    analytics_channel: grpc.aio.Channel | None = None,
    clock: Callable[[], dt.datetime] | None = None,
) -> ForecastApp:
    """Everything wired, not started. A given ``bus``, ``cache`` or ``analytics_channel`` is shared and is not
    closed here; the ones opened here are closed at shutdown."""
    key = jwt_key if jwt_key is not None else settings.jwt_key()
    server = GrpcServer(
        settings, policy=policy(), jwt_key=key, service_names=[SERVICE_NAME, OIP_SERVICE_NAME]
    )
    metrics = ForecastMetrics(server.registry)
    threads = settings.onnx_intra_op_threads
    repository = ModelRepository(
        settings.model_repository,
        intra_op_threads=threads,
        poll_seconds=settings.repository_poll_seconds,
        pinned_versions={settings.model_name: settings.model_version} if settings.model_version else None,
        metrics=metrics,
    )
    runner = InferenceRunner(
        inline_max_rows=settings.inline_max_rows,
        workers=settings.inference_workers,
        queue_limit=settings.inference_queue_limit,
        dynamic_batching=settings.dynamic_batching,
        batch_window_ms=settings.batch_window_ms,
        metrics=metrics,
    )
    own_bus = bus is None and settings.consume_events
    if own_bus:
        bus = await open_bus(settings.broker_url)
    own_cache = cache is None
    cache = (
        cache if cache is not None else open_cache(settings.cache_url, prefix=settings.history_cache_prefix)
    )
    own_channel = analytics_channel is None
    channel = analytics_channel or open_channel(
        settings.analytics_target,
        token_provider=TokenSource(key, "forecast-serving", Role.VIEWER),
        default_timeout=settings.analytics_timeout_seconds,
        max_message_bytes=settings.max_message_bytes,
        **settings.tls_client_paths(),
    )
    reader = AnalyticsReader(
        channel,
        cache,
        batch_size=settings.history_batch_size,
        read_concurrency=settings.history_read_concurrency,
        ttl_seconds=settings.history_cache_ttl_seconds,
        timeout_seconds=settings.analytics_timeout_seconds,
        metrics=metrics,
    )
    extra = {"clock": clock} if clock is not None else {}
    results = (
        ForecastCache(
            cache,
            ttl_seconds=settings.history_cache_ttl_seconds,
            settings_digest=answer_settings_digest(settings),
        )
        if settings.result_cache
        else None
    )
    use_cases = ForecastUseCases(
        repository, runner, reader, settings, metrics=metrics, results=results, **extra
    )
    consumer = (
        ReforecastConsumer(bus, use_cases, reader, settings, metrics)
        if settings.consume_events and bus is not None
        else None
    )
    server.add_servicer(
        forecast_pb2_grpc.add_ForecastServiceServicer_to_server, ForecastServicer(use_cases, repository)
    )
    server.add_servicer(
        oip_grpc.add_GRPCInferenceServiceServicer_to_server, OipServicer(repository, runner, metrics)
    )

    async def repository_readable() -> bool:
        # A missing repository is an operator error worth NOT_SERVING; no model yet is not (fallback answers).
        return os.access(settings.model_repository, os.R_OK | os.X_OK)

    server.add_health_check("model_repository", repository_readable)
    if consumer is not None and bus is not None:
        server.add_health_check("bus", bus.check)
        server.on_stop(consumer.stop)

    async def close() -> None:
        await repository.stop()
        runner.close()
        if own_channel:
            await channel.close()
        if own_cache:
            await cache.close()
        if own_bus and bus is not None:
            await bus.close()

    server.on_close(close)
    return ForecastApp(settings, server, repository, runner, reader, use_cases, consumer, metrics)
