"""A bare grpc.aio echo server in its own process: the raw limit a unary call costs on this machine (used by
benchmarks that load a server from another process)."""

from __future__ import annotations

import asyncio
import sys

import grpc

from bench.common import bare_grpc_server


async def main(port: int) -> None:
    async def echo(request: bytes, context: grpc.aio.ServicerContext) -> bytes:
        return request

    server, _ = await bare_grpc_server("bench.Echo", {"Echo": echo}, port=port)
    await server.wait_for_termination()


if __name__ == "__main__":
    asyncio.run(main(int(sys.argv[1])))
