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
import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc
from novacorrente.analytics.v1 import analytics_pb2_grpc
from novacorrente.forecast.v1 import forecast_pb2_grpc
from novacorrente.ingestion.v1 import ingestion_pb2_grpc

from gateway.settings import GatewaySettings
from services.kit.clients import RETRY_POLICY

__all__ = ["UPSTREAMS", "Upstreams", "channel_options", "open_upstream_channel"]

UPSTREAMS = ("ingestion", "analytics", "forecast")


def channel_options(max_message_bytes: int) -> list[tuple[str, Any]]:
    """The options ``open_channel`` gives a channel (round robin; a test keeps the two lists equal)."""
    service_config = {
        "loadBalancingConfig": [{"round_robin": {}}],
        "methodConfig": [{"name": [{}], "retryPolicy": RETRY_POLICY}],
    }
    return [
        ("grpc.enable_retries", 1),
        ("grpc.service_config", json.dumps(service_config)),
        ("grpc.keepalive_time_ms", 30_000),
        ("grpc.keepalive_timeout_ms", 10_000),
        ("grpc.keepalive_permit_without_calls", 0),
        ("grpc.http2.max_pings_without_data", 0),
        ("grpc.max_receive_message_length", max_message_bytes),
        ("grpc.max_send_message_length", max_message_bytes),
    ]


def _read(path: Path | None) -> bytes | None:
    return None if path is None else path.read_bytes()


def open_upstream_channel(
    target: str,
    *,
    max_message_bytes: int,
    ca_cert_path: Path | None = None,
    client_cert_path: Path | None = None,
    client_key_path: Path | None = None,
) -> grpc.aio.Channel:
    """A channel to ``target`` as ``open_channel`` opens it, minus the interceptors (see the module doc)."""
    options = channel_options(max_message_bytes)
    if ca_cert_path is None and client_cert_path is None and client_key_path is None:
        return grpc.aio.insecure_channel(target, options=options)
    if (client_cert_path is None) != (client_key_path is None):
        raise ValueError("client_cert_path and client_key_path go together")
    credentials = grpc.ssl_channel_credentials(
        root_certificates=_read(ca_cert_path),
        private_key=_read(client_key_path),
        certificate_chain=_read(client_cert_path),
    )
    return grpc.aio.secure_channel(target, credentials, options=options)


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
            channel = open_upstream_channel(
                self.target(name),
                max_message_bytes=self._settings.max_message_bytes,
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
