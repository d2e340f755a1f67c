"""Outbound gRPC channels: bearer token, request id propagation, default deadline, retries, keepalive.

    channel = open_channel("127.0.0.1:50052", token_provider=TokenSource(key, "forecast", Role.VIEWER))
    stub = AnalyticsServiceStub(channel)
    ...
    await channel.close()

Load balancing: ``round_robin`` by default, so a target that resolves to several addresses (a headless
Service's DNS name, or ``ipv4:10.0.0.1:50052,10.0.0.2:50052``) spreads the calls over every replica that is
connected, and a replica that goes away simply drops out of the rotation. A one-address target behaves as
with gRPC's default ``pick_first``.

Retries: the service config retries UNAVAILABLE up to 4 attempts with exponential backoff. gRPC only retries
an attempt that has not yet received response headers. The platform's servers send no headers before the
answer (the request id travels in trailing metadata, see ``services.kit.interceptors``), so this covers a
peer that is down, restarting or killed in the middle of the call (connection refused or reset, GOAWAY) as
well as an UNAVAILABLE status answered by a handler; with round robin the retry goes to the next replica.
An attempt that already received headers (a streaming response under way) is committed and not retried.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import grpc

from services.kit.interceptors import REQUEST_ID_HEADER
from services.kit.logging import new_request_id, request_id_var

__all__ = ["DEFAULT_TIMEOUT_SECONDS", "RETRY_POLICY", "metadata_interceptors", "open_channel"]

DEFAULT_TIMEOUT_SECONDS = 10.0
"""Deadline given to an outbound call whose caller set none: no call may wait forever."""

RETRY_POLICY: dict[str, Any] = {
    "maxAttempts": 4,
    "initialBackoff": "0.1s",
    "maxBackoff": "2s",
    "backoffMultiplier": 2,
    "retryableStatusCodes": ["UNAVAILABLE"],
}


class _CallMetadata:
    """Adds ``authorization``, ``x-request-id`` and a default deadline to every outbound call.

    The request id is the one of the call being served (``request_id_var``), so one id follows a request
    across services; outside a served call a fresh id is made. Values the caller set explicitly win.
    """

    def __init__(self, token_provider: Callable[[], str] | None, default_timeout: float):
        self._token_provider = token_provider
        self._default_timeout = default_timeout

    def _details(self, details: grpc.aio.ClientCallDetails) -> grpc.aio.ClientCallDetails:
        metadata = grpc.aio.Metadata(*(details.metadata or ()))
        if self._token_provider is not None and "authorization" not in metadata:
            metadata.add("authorization", f"Bearer {self._token_provider()}")
        if REQUEST_ID_HEADER not in metadata:
            metadata.add(REQUEST_ID_HEADER, request_id_var.get() or new_request_id())
        timeout = details.timeout if details.timeout is not None else self._default_timeout
        return details._replace(metadata=metadata, timeout=timeout)


# grpc.aio files each interceptor under the FIRST call kind it implements (an if/elif chain), so one
# object implementing all four kinds would only ever see unary-unary calls: one class per kind.
class _UnaryUnary(_CallMetadata, grpc.aio.UnaryUnaryClientInterceptor):
    async def intercept_unary_unary(self, continuation, client_call_details, request):  # type: ignore[no-untyped-def]
        return await continuation(self._details(client_call_details), request)


class _UnaryStream(_CallMetadata, grpc.aio.UnaryStreamClientInterceptor):
    async def intercept_unary_stream(self, continuation, client_call_details, request):  # type: ignore[no-untyped-def]
        return await continuation(self._details(client_call_details), request)


class _StreamUnary(_CallMetadata, grpc.aio.StreamUnaryClientInterceptor):
    async def intercept_stream_unary(self, continuation, client_call_details, request_iterator):  # type: ignore[no-untyped-def]
        return await continuation(self._details(client_call_details), request_iterator)


class _StreamStream(_CallMetadata, grpc.aio.StreamStreamClientInterceptor):
    async def intercept_stream_stream(self, continuation, client_call_details, request_iterator):  # type: ignore[no-untyped-def]
        return await continuation(self._details(client_call_details), request_iterator)


def metadata_interceptors(
    token_provider: Callable[[], str] | None, default_timeout: float
) -> list[grpc.aio.ClientInterceptor]:
    """The interceptors that add token, request id and default deadline, one per call kind."""
    return [
        cls(token_provider, default_timeout)
        for cls in (_UnaryUnary, _UnaryStream, _StreamUnary, _StreamStream)
    ]


def _service_config(load_balancing: str = "round_robin") -> str:
    """The channel's service config (JSON): load-balancing policy and the retry policy for every method."""
    return json.dumps(
        {
            "loadBalancingConfig": [{load_balancing: {}}],
            "methodConfig": [{"name": [{}], "retryPolicy": RETRY_POLICY}],
        }
    )


def _read(path: str | Path | None) -> bytes | None:
    return None if path is None else Path(path).read_bytes()


def open_channel(
    target: str,
    *,
    token: str | None = None,
    token_provider: Callable[[], str] | None = None,
    default_timeout: float = DEFAULT_TIMEOUT_SECONDS,
    max_message_bytes: int = 16 * 1024 * 1024,
    ca_cert_path: str | Path | None = None,
    client_cert_path: str | Path | None = None,
    client_key_path: str | Path | None = None,
    load_balancing: str = "round_robin",
    with_metadata_interceptors: bool = True,
) -> grpc.aio.Channel:
    """Open a channel to ``target`` with the platform's client defaults.

    ``target`` is any gRPC target: ``host:port``, ``dns:///name:port``, or ``ipv4:host:port,host:port,...``
    (a fixed list of replicas).

    Args:
        token: a fixed bearer token (e.g. a user's, forwarded by the gateway).
        token_provider: called per call for a fresh token (e.g. ``services.kit.auth.TokenSource``); use one
            of ``token`` / ``token_provider``, or neither for open services only (health).
        default_timeout: deadline in seconds for calls made without one.
        ca_cert_path: PEM roots to verify the server; giving any of the three paths switches to TLS.
        client_cert_path, client_key_path: PEM client certificate chain and key for mutual TLS.
        load_balancing: gRPC load-balancing policy over the target's addresses, ``round_robin`` or
            ``pick_first``.
        with_metadata_interceptors: False for a caller that passes the deadline, token and request id on
            every call itself (the gateway): grpc.aio runs each intercepted call as one more task.
    """
    if token is not None and token_provider is not None:
        raise ValueError("give token or token_provider, not both")
    provider = token_provider if token is None else (lambda: token)
    options: list[tuple[str, Any]] = [
        ("grpc.enable_retries", 1),
        ("grpc.service_config", _service_config(load_balancing)),
        # Keepalive only while calls are active; the server accepts pings every 10 s or slower.
        ("grpc.keepalive_time_ms", 30_000),
        ("grpc.keepalive_timeout_ms", 10_000),
        ("grpc.keepalive_permit_without_calls", 0),
        ("grpc.http2.max_pings_without_data", 0),
        ("grpc.max_receive_message_length", max_message_bytes),
        ("grpc.max_send_message_length", max_message_bytes),
    ]
    interceptors = metadata_interceptors(provider, default_timeout) if with_metadata_interceptors else None
    if ca_cert_path is None and client_cert_path is None and client_key_path is None:
        return grpc.aio.insecure_channel(target, options=options, interceptors=interceptors)
    if (client_cert_path is None) != (client_key_path is None):
        raise ValueError("client_cert_path and client_key_path go together")
    credentials = grpc.ssl_channel_credentials(
        root_certificates=_read(ca_cert_path),
        private_key=_read(client_key_path),
        certificate_chain=_read(client_cert_path),
    )
    return grpc.aio.secure_channel(target, credentials, options=options, interceptors=interceptors)
