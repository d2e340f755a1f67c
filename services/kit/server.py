"""gRPC server bootstrap: interceptors, health, reflection, metrics endpoint and ordered shutdown.

Health is driven by dependency checks: every ``health_poll_seconds`` each registered check runs (with a
timeout); the overall service ``""`` and every named service report SERVING only while all checks pass.

Shutdown (``stop()``, or SIGTERM/SIGINT under ``run_until_signal()``) runs in this order, each step logged:
    1. every health status NOT_SERVING (permanently), then ``shutdown_delay_seconds`` so routing stops;
    2. ``on_stop`` callbacks in registration order (stop consumers: no new work arrives);
    3. ``server.stop(grace)``: new calls are refused, in-flight calls get ``grace`` seconds to finish;
    4. ``on_close`` callbacks in registration order (close pools the in-flight calls were using);
    5. the metrics endpoint.
A failing callback is logged and does not prevent the later steps.
"""

from __future__ import annotations

import asyncio
import gc
import logging
import signal
from collections.abc import Awaitable, Callable, Iterable, Mapping, Sequence
from typing import Any, TypeVar

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection
from prometheus_client import CollectorRegistry, start_http_server

from services.kit.auth import MethodPolicy
from services.kit.interceptors import default_interceptors
from services.kit.settings import ConfigurationError, ServiceSettings

__all__ = ["LIVENESS", "Callback", "GrpcServer", "HealthCheck", "freeze_startup_heap"]

LIVENESS = "liveness"
"""Health service name that is SERVING from start until shutdown, whatever the dependency checks say."""

log = logging.getLogger(__name__)

HealthCheck = Callable[[], Awaitable[bool]]
"""Returns True while a dependency (database, broker, model) is usable; an exception counts as False."""
Callback = Callable[[], Awaitable[None]]
_Servicer = TypeVar("_Servicer")

_SERVING = health_pb2.HealthCheckResponse.SERVING
_NOT_SERVING = health_pb2.HealthCheckResponse.NOT_SERVING


def freeze_startup_heap() -> None:
    """Exempt the objects alive now (modules, classes, functions, settings, start-up state) from the garbage
    collector's full collections.

    A served call allocates short-lived objects; with calls in flight enough of them survive the young
    collections to trigger a full one every few seconds at a few thousand calls a second. A full collection
    walks every tracked object of the process (some 100,000 after start-up) and stops the event loop for
    tens of milliseconds: that pause is the tail latency of every call in flight. Frozen, the start-up heap
    is skipped. Run once, when start-up is over; start-up garbage is collected first, so that it is not
    kept for ever.
    """
    gc.collect()
    gc.freeze()


def _name(callback: Callable[..., Any]) -> str:
    return getattr(callback, "__qualname__", None) or repr(callback)


def server_credentials(settings: ServiceSettings) -> grpc.ServerCredentials | None:
    """TLS when NOVA_TLS_CERT_FILE/KEY_FILE are set; with NOVA_TLS_CA_FILE too, client certificates signed
    by that CA are required (mutual TLS). None: plaintext."""
    if settings.tls_cert_file is None and settings.tls_key_file is None:
        return None
    if settings.tls_cert_file is None or settings.tls_key_file is None:
        raise ConfigurationError("NOVA_TLS_CERT_FILE and NOVA_TLS_KEY_FILE go together")
    ca = settings.tls_ca_file.read_bytes() if settings.tls_ca_file is not None else None
    return grpc.ssl_server_credentials(
        [(settings.tls_key_file.read_bytes(), settings.tls_cert_file.read_bytes())],
        root_certificates=ca,
        require_client_auth=ca is not None,
    )


class GrpcServer:
    """One grpc.aio server with the platform's interceptors, health, reflection and lifecycle.

    Construct it, register servicers, checks and callbacks, then ``await run_until_signal()`` (from
    ``__main__``) or ``await start()`` / ``await stop()`` (tests). Registration is recorded and applied in
    ``start()``, so the object can be built before the event loop runs.

    Args:
        settings: the service's settings (host, port, grace, message size, health poll, metrics port).
        policy: roles allowed per method; methods not listed are denied.
        jwt_key: HS256 key for verifying bearer tokens; defaults to ``settings.jwt_key()``.
        service_names: full names of the services served (``novacorrente.x.v1.XService``), for health and
            reflection.
        registry: Prometheus registry for the RPC metrics; a private one when omitted.
        health_checks: dependency checks by name (see ``add_health_check``).
        health_check_timeout: seconds a single check may take before it counts as failed; defaults to the
            poll interval.
        interceptors: extra interceptors, run inside the default chain (after auth).
    """

    def __init__(
        self,
        settings: ServiceSettings,
        *,
        policy: MethodPolicy,
        jwt_key: bytes | None = None,
        service_names: Sequence[str] = (),
        registry: CollectorRegistry | None = None,
        health_checks: Mapping[str, HealthCheck] | None = None,
        health_check_timeout: float | None = None,
        interceptors: Sequence[grpc.aio.ServerInterceptor] = (),
    ):
        self.settings = settings
        self.registry = registry if registry is not None else CollectorRegistry()
        self.service_names = tuple(service_names)
        self.health = health.aio.HealthServicer()
        self._key = jwt_key if jwt_key is not None else settings.jwt_key()
        self._policy = policy
        self._extra_interceptors = tuple(interceptors)
        self._registrations: list[Callable[[grpc.aio.Server], None]] = []
        self._health_checks: dict[str, HealthCheck] = dict(health_checks or {})
        self._check_timeout = health_check_timeout or settings.health_poll_seconds
        self._on_stop: list[Callback] = []
        self._on_close: list[Callback] = []
        self._server: grpc.aio.Server | None = None
        self._port: int | None = None
        self._metrics_httpd: Any = None
        self._poller: asyncio.Task[None] | None = None
        self._serving: bool | None = None
        self._stop_task: asyncio.Task[None] | None = None

    # -- registration ---------------------------------------------------------------------------------

    def add_servicer(
        self, add_to_server: Callable[[_Servicer, grpc.aio.Server], None], servicer: _Servicer
    ) -> None:
        """Register a servicer with its generated ``add_XServicer_to_server`` function."""
        self._registrations.append(lambda server: add_to_server(servicer, server))

    def add_generic_rpc_handlers(self, handlers: Iterable[grpc.GenericRpcHandler]) -> None:
        """Register hand-built handlers (e.g. ``grpc.method_handlers_generic_handler``)."""
        handlers = tuple(handlers)
        self._registrations.append(lambda server: server.add_generic_rpc_handlers(handlers))

    def add_health_check(self, name: str, check: HealthCheck) -> None:
        """Add a dependency check; ``name`` appears in the logs when it fails."""
        self._health_checks[name] = check

    def on_stop(self, callback: Callback) -> None:
        """Run ``callback`` at shutdown after health goes NOT_SERVING, before the server stops (consumers)."""
        self._on_stop.append(callback)

    def on_close(self, callback: Callback) -> None:
        """Run ``callback`` at shutdown after in-flight calls finished (pools, files, executors)."""
        self._on_close.append(callback)

    # -- state ----------------------------------------------------------------------------------------

    @property
    def server(self) -> grpc.aio.Server:
        if self._server is None:
            raise RuntimeError("GrpcServer.start() has not run")
        return self._server

    @property
    def port(self) -> int:
        """The bound TCP port (the real one when the settings asked for port 0)."""
        if self._port is None:
            raise RuntimeError("GrpcServer.start() has not run")
        return self._port

    @property
    def address(self) -> str:
        return f"{self.settings.host}:{self.port}"

    @property
    def metrics_port(self) -> int | None:
        return None if self._metrics_httpd is None else int(self._metrics_httpd.server_port)

    # -- lifecycle ------------------------------------------------------------------------------------

    def _options(self) -> list[tuple[str, Any]]:
        size = self.settings.max_message_bytes
        return [
            ("grpc.max_receive_message_length", size),
            ("grpc.max_send_message_length", size),
            # Without this Linux lets a second process bind the same port and split the traffic silently.
            ("grpc.so_reuseport", 0),
            # Detect dead peers, and accept the clients' keepalive pings (clients ping every 30 s).
            ("grpc.keepalive_time_ms", 60_000),
            ("grpc.keepalive_timeout_ms", 20_000),
            ("grpc.http2.min_recv_ping_interval_without_data_ms", 10_000),
            ("grpc.keepalive_permit_without_calls", 1),
        ]

    async def start(self) -> None:
        """Bind, register everything, run the first health check, and start serving."""
        if self._server is not None:
            raise RuntimeError("GrpcServer already started")
        server = grpc.aio.server(
            interceptors=[
                *default_interceptors(self._key, self._policy, self.registry),
                *self._extra_interceptors,
            ],
            options=self._options(),
        )
        for register in self._registrations:
            register(server)
        health_pb2_grpc.add_HealthServicer_to_server(self.health, server)
        reflection.enable_server_reflection(
            [*self.service_names, health.SERVICE_NAME, reflection.SERVICE_NAME], server
        )
        address = f"{self.settings.host}:{self.settings.port}"
        credentials = server_credentials(self.settings)
        if credentials is None:
            self._port = server.add_insecure_port(address)
        else:
            self._port = server.add_secure_port(address, credentials)
        if not self._port:
            raise RuntimeError(f"cannot bind {self.settings.host}:{self.settings.port}")
        self._server = server
        # "liveness" says only that the process serves: a liveness probe must not restart a replica because a
        # dependency is down (readiness, the overall "" status, says that). Graceful shutdown clears it too.
        await self.health.set(LIVENESS, _SERVING)
        # Report the real state before the first call can ask for it.
        await self.check_health()
        await server.start()
        self._poller = asyncio.create_task(self._poll_health(), name="health-poller")
        if self.settings.metrics_port is not None:
            self._metrics_httpd, _ = start_http_server(
                self.settings.metrics_port, addr=self.settings.host, registry=self.registry
            )
        log.info(
            "gRPC server listening on %s",
            self.address,
            extra={"services": list(self.service_names), "metrics_port": self.metrics_port},
        )

    async def _run_check(self, name: str, check: HealthCheck) -> bool:
        try:
            return bool(await asyncio.wait_for(check(), self._check_timeout))
        except TimeoutError:
            log.warning("health check %s timed out after %ss", name, self._check_timeout)
        except Exception:
            log.warning("health check %s raised", name, exc_info=True)
        return False

    async def check_health(self) -> bool:
        """Run every check now and publish the result; True when all pass."""
        names = list(self._health_checks)
        results = await asyncio.gather(*(self._run_check(n, self._health_checks[n]) for n in names))
        failing = [name for name, ok in zip(names, results, strict=True) if not ok]
        serving = not failing
        if serving != self._serving:
            if serving:
                log.info("health: SERVING")
            else:
                log.warning("health: NOT_SERVING, failing checks: %s", ", ".join(failing))
            self._serving = serving
        status = _SERVING if serving else _NOT_SERVING
        for service in ("", *self.service_names):
            await self.health.set(service, status)
        return serving

    async def _poll_health(self) -> None:
        while True:
            await asyncio.sleep(self.settings.health_poll_seconds)
            await self.check_health()

    async def _run_callbacks(self, phase: str, callbacks: list[Callback]) -> None:
        for callback in callbacks:
            log.info("shutdown: %s %s", phase, _name(callback))
            try:
                await callback()
            except Exception:
                log.exception("shutdown: %s %s failed", phase, _name(callback))

    async def stop(self, grace: float | None = None) -> None:
        """Shut down in the documented order; concurrent and repeated calls wait for the same shutdown."""
        if self._stop_task is None:
            self._stop_task = asyncio.create_task(self._shutdown(grace), name="grpc-shutdown")
        await asyncio.shield(self._stop_task)

    async def _shutdown(self, grace: float | None) -> None:
        grace = self.settings.grace_seconds if grace is None else grace
        log.info("shutdown: health NOT_SERVING")
        if self._poller is not None:
            self._poller.cancel()
            await asyncio.gather(self._poller, return_exceptions=True)
        await self.health.enter_graceful_shutdown()
        if self.settings.shutdown_delay_seconds:
            await asyncio.sleep(self.settings.shutdown_delay_seconds)
        await self._run_callbacks("on_stop", self._on_stop)
        if self._server is not None:
            log.info("shutdown: stopping gRPC server (grace %ss)", grace)
            await self._server.stop(grace)
            log.info("shutdown: gRPC server stopped")
        await self._run_callbacks("on_close", self._on_close)
        if self._metrics_httpd is not None:
            httpd, self._metrics_httpd = self._metrics_httpd, None
            await asyncio.to_thread(httpd.shutdown)
            httpd.server_close()
        log.info("shutdown: complete")

    async def run_until_signal(
        self, signals: Sequence[signal.Signals] = (signal.SIGTERM, signal.SIGINT)
    ) -> None:
        """Start (if needed), serve until one of ``signals`` arrives, then ``stop()``.

        This is how a service process serves, so it is also where start-up is over: the start-up heap is
        frozen here (``freeze_startup_heap``), not in ``start()``, which tests call many times per process.
        """
        if self._server is None:
            await self.start()
        freeze_startup_heap()
        loop = asyncio.get_running_loop()
        received = asyncio.Event()

        def on_signal(sig: signal.Signals) -> None:
            if received.is_set():
                log.warning("received %s again; shutdown already in progress", sig.name)
                return
            log.info("received %s, shutting down", sig.name)
            received.set()

        for sig in signals:
            loop.add_signal_handler(sig, on_signal, sig)
        try:
            await received.wait()
            # Handlers stay installed while draining so a second signal cannot kill in-flight calls.
            await self.stop()
        finally:
            for sig in signals:
                loop.remove_signal_handler(sig)
