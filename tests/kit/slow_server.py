"""A service process for the graceful-shutdown test, run as ``python slow_server.py``.

Configured from the environment like a real service (NOVA_SERVICE_*, NOVA_JWT_SECRET). Prints to stdout, one
line each: ``PORT <n>`` once serving, ``slow started`` / ``slow finished`` per call, the shutdown callbacks as
they run, and ``exited`` when ``run_until_signal`` returns. Logs go to stderr as JSON lines.
"""

from __future__ import annotations

import asyncio

import grpc

from services.kit.auth import READ, MethodPolicy
from services.kit.logging import configure_logging
from services.kit.server import GrpcServer
from services.kit.settings import ServiceSettings

SERVICE = "test.v1.SlowService"


def say(line: str) -> None:
    print(line, flush=True)


async def slow(request: bytes, context: grpc.aio.ServicerContext) -> bytes:
    say("slow started")
    await asyncio.sleep(1.0)
    say("slow finished")
    return b"done"


def callback(line: str):  # type: ignore[no-untyped-def]
    async def run() -> None:
        say(line)

    run.__qualname__ = line
    return run


async def main(settings: ServiceSettings) -> None:
    server = GrpcServer(settings, policy=MethodPolicy({f"/{SERVICE}/Slow": READ}), service_names=[SERVICE])
    server.add_generic_rpc_handlers(
        [grpc.method_handlers_generic_handler(SERVICE, {"Slow": grpc.unary_unary_rpc_method_handler(slow)})]
    )
    server.on_stop(callback("on_stop consumers"))
    server.on_close(callback("on_close pool"))
    server.on_close(callback("on_close cache"))
    await server.start()
    say(f"PORT {server.port}")
    await server.run_until_signal()
    say("exited")


if __name__ == "__main__":
    settings = ServiceSettings()
    configure_logging(settings.log_level)
    asyncio.run(main(settings))
