"""The gRPC channels to the three services, their stubs, and their health for /readyz.

Channels carry no credentials of their own: every data call passes the HTTP caller's token as metadata.
The channels the gateway opens have the platform's client options (``services.kit.clients.open_channel``:
round robin, retries of UNAVAILABLE while a peer is restarting, keepalive, message limits, TLS) but not its
metadata interceptors: every call the gateway makes passes its deadline, the caller's token and the request
id itself (``gateway.auth.Caller.metadata``), and grpc.aio runs each intercepted call as one more task, which
costs a measurable share of the gateway's CPU per request.
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc
from novacorrente.analytics.v1 import analytics_pb2_grpc
from novacorrente.forecast.v1 import forecast_pb2_grpc
from novacorrente.ingestion.v1 import ingestion_pb2_grpc

from gateway.settings import GatewaySettings
from services.kit.clients import open_channel

__all__ = ["UPSTREAMS", "Upstreams"]

UPSTREAMS = ("ingestion", "analytics", "forecast")


class Upstreams:
    """Stubs over channels that are either given (owned by the caller) or opened lazily from the settings.

    Lazy opening matters because a grpc.aio channel belongs to the event loop it was created in: the app
    object may be built before the server's loop runs.
    """

    def __init__(self, settings: GatewaySettings, channels: Mapping[str, grpc.aio.Channel] | None = None):
        unknown = set(channels or {}) - set(UPSTREAMS)
        if unknown:
            raise ValueError(f"unknown upstream channel(s): {sorted(unknown)}; expected {UPSTREAMS}")
        self._settings = settings
        self._channels: dict[str, grpc.aio.Channel] = dict(channels or {})
        self._owned: set[str] = set()
        self._stubs: dict[str, object] = {}

    def target(self, name: str) -> str:
        return str(getattr(self._settings, f"{name}_target"))

    def channel(self, name: str) -> grpc.aio.Channel:
        channel = self._channels.get(name)
        if channel is None:
            channel = open_channel(
                self.target(name),
                max_message_bytes=self._settings.max_message_bytes,
                with_metadata_interceptors=False,
                **self._settings.tls_client_paths(),
            )
            self._channels[name] = channel
            self._owned.add(name)
        return channel

    def _stub(self, name: str, factory: type) -> object:
        stub = self._stubs.get(name)
        if stub is None:
            stub = self._stubs[name] = factory(self.channel(name))
        return stub

    @property
    def analytics(self) -> analytics_pb2_grpc.AnalyticsServiceStub:
        return self._stub("analytics", analytics_pb2_grpc.AnalyticsServiceStub)  # type: ignore[return-value]

    @property
    def forecast(self) -> forecast_pb2_grpc.ForecastServiceStub:
        return self._stub("forecast", forecast_pb2_grpc.ForecastServiceStub)  # type: ignore[return-value]

    @property
    def ingestion(self) -> ingestion_pb2_grpc.IngestionServiceStub:
        return self._stub("ingestion", ingestion_pb2_grpc.IngestionServiceStub)  # type: ignore[return-value]

    async def _health(self, name: str) -> str:
        stub = health_pb2_grpc.HealthStub(self.channel(name))
        try:
            reply = await stub.Check(
                health_pb2.HealthCheckRequest(), timeout=self._settings.health_timeout_seconds
            )
        except grpc.aio.AioRpcError as exc:
            return f"UNREACHABLE ({exc.code().name})"
        return str(health_pb2.HealthCheckResponse.ServingStatus.Name(reply.status))

    async def health(self) -> dict[str, str]:
        """grpc.health.v1 status of every upstream, checked concurrently."""
        statuses = await asyncio.gather(*(self._health(name) for name in UPSTREAMS))
        return dict(zip(UPSTREAMS, statuses, strict=True))

    async def close(self) -> None:
        """Close the channels this object opened (given ones belong to their owner)."""
        owned, self._owned = self._owned, set()
        for name in owned:
            channel = self._channels.pop(name)
            self._stubs.pop(name, None)
            await channel.close()
