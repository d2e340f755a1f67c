"""The gateway's HTTP server in-process: ``await build_gateway(settings)``, then ``start()`` / ``stop()``.

    gateway = await build_gateway(settings)          # port 0 picks a free port
    await gateway.start()
    print(gateway.url)                                # http://127.0.0.1:<bound port>
    ...
    await gateway.stop()

Shutdown order: readiness turns 503 ("draining") and open alert streams end; after
``shutdown_delay_seconds`` uvicorn stops accepting, lets in-flight requests finish for ``grace_seconds``, runs
the app's shutdown (closing the channels it opened).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
from collections.abc import Iterator, Mapping

import grpc
import uvicorn
from fastapi import FastAPI

from gateway.app import create_app
from gateway.settings import GatewaySettings

__all__ = ["GatewayServer", "build_gateway", "listening_socket"]

log = logging.getLogger(__name__)


class _EmbeddedServer(uvicorn.Server):
    """uvicorn without signal handlers: the process owner (``__main__``, ``nova demo``) handles signals."""

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield


def listening_socket(host: str, port: int) -> socket.socket:
    """A bound TCP socket for uvicorn to serve on (it listens on it); port 0 picks a free port."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    # proto must say TCP: asyncio sets TCP_NODELAY on accepted connections only when the listening socket's
    # proto is IPPROTO_TCP, and without it every keep-alive response waits ~40 ms on Nagle + delayed ACK.
    sock = socket.socket(family, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
    except OSError:
        sock.close()
        raise
    sock.set_inheritable(True)
    return sock


class GatewayServer:
    """uvicorn serving the gateway app in the current event loop."""

    def __init__(self, settings: GatewaySettings, app: FastAPI):
        self.settings = settings
        self.app = app
        self._sock: socket.socket | None = None
        self._server: _EmbeddedServer | None = None
        self._task: asyncio.Task[None] | None = None

    @property
    def port(self) -> int:
        """The bound port (the real one when the settings asked for 0)."""
        if self._sock is None:
            raise RuntimeError("GatewayServer.start() has not run")
        return int(self._sock.getsockname()[1])

    @property
    def url(self) -> str:
        host = self.settings.host
        host = "127.0.0.1" if host in ("0.0.0.0", "") else host
        scheme = "https" if self.settings.tls_cert_file else "http"
        return f"{scheme}://{f'[{host}]' if ':' in host else host}:{self.port}"

    async def start(self) -> None:
        if self._server is not None:
            raise RuntimeError("GatewayServer already started")
        self._sock = listening_socket(self.settings.host, self.settings.port)
        config = uvicorn.Config(
            self.app,
            lifespan="on",
            # The app logs each request itself, without query strings (they may carry a token).
            access_log=False,
            log_config=None,
            timeout_graceful_shutdown=max(1, round(self.settings.grace_seconds)),
            # Keep-alive longer than a dashboard's polling interval, so connections are reused.
            timeout_keep_alive=30,
            # Only these peers may say, in X-Forwarded-For, which client they forward for: the login throttle
            # keys on that address, so trusting anyone else would let a guesser pick a fresh one per try.
            forwarded_allow_ips=self.settings.forwarded_allow_ips,
            # With NOVA_TLS_CERT_FILE/KEY_FILE the gateway serves HTTPS. It never asks browsers for client
            # certificates: those files also authenticate it to the services (mutual TLS upstream).
            ssl_certfile=self.settings.tls_cert_file,
            ssl_keyfile=self.settings.tls_key_file,
        )
        self._server = _EmbeddedServer(config)
        self._task = asyncio.create_task(self._server.serve(sockets=[self._sock]), name="gateway-http")
        while not self._server.started:
            if self._task.done():
                self._task.result()  # raises the startup failure
                raise RuntimeError("gateway HTTP server exited during startup")
            await asyncio.sleep(0.01)
        log.info("gateway listening on %s", self.url)

    async def stop(self) -> None:
        if self._server is None or self._task is None:
            return
        self.app.state.shutdown.set()
        if self.settings.shutdown_delay_seconds:
            await asyncio.sleep(self.settings.shutdown_delay_seconds)
        self._server.should_exit = True
        try:
            await self._task
        finally:
            if self._sock is not None:
                self._sock.close()
            log.info("gateway stopped")


async def build_gateway(
    settings: GatewaySettings,
    *,
    channels: Mapping[str, grpc.aio.Channel] | None = None,
    **app_options: object,
) -> GatewayServer:
    """The gateway app from ``settings`` in an HTTP server, not started (options go to ``create_app``)."""
    return GatewayServer(settings, create_app(settings, channels=channels, **app_options))  # type: ignore[arg-type]
