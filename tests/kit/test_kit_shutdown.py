"""Graceful shutdown of a real service process on SIGTERM."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import sys
import time
from pathlib import Path

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

from services.kit.auth import Role, mint_token
from services.kit.clients import open_channel

SLOW_SERVER = Path(__file__).with_name("slow_server.py")
GRACE = 5.0


async def wait_for(condition, within: float = 10.0) -> None:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + within
    while not condition():
        assert time.monotonic() < deadline, "condition not reached in time"
        await asyncio.sleep(0.01)


async def test_sigterm_drains_in_flight_calls_then_closes_in_order(jwt_key: bytes) -> None:
    env = {
        **os.environ,
        "NOVA_JWT_SECRET": jwt_key.decode(),
        "NOVA_LOG_LEVEL": "info",
        "NOVA_SERVICE_HOST": "127.0.0.1",
        "NOVA_SERVICE_PORT": "0",
        "NOVA_SERVICE_GRACE_SECONDS": str(GRACE),
        "NOVA_SERVICE_SHUTDOWN_DELAY_SECONDS": "0.5",
    }
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        str(SLOW_SERVER),
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        env=env,
    )
    assert proc.stdout is not None and proc.stderr is not None
    lines: list[str] = []

    async def read_stdout() -> None:
        assert proc.stdout is not None
        async for raw in proc.stdout:
            lines.append(raw.decode().strip())

    reader = asyncio.create_task(read_stdout())
    stderr_task = asyncio.create_task(proc.stderr.read())
    try:
        await wait_for(lambda: any(line.startswith("PORT ") for line in lines))
        target = f"127.0.0.1:{next(line for line in lines if line.startswith('PORT ')).split()[1]}"
        token = mint_token(jwt_key, "alice", Role.VIEWER, 60)
        async with open_channel(target, token=token, default_timeout=10) as channel:
            slow = channel.unary_unary("/test.v1.SlowService/Slow")
            calls = [asyncio.ensure_future(slow(b"")) for _ in range(8)]
            await wait_for(lambda: lines.count("slow started") == 8)

            started = time.monotonic()
            proc.send_signal(signal.SIGTERM)

            async with grpc.aio.insecure_channel(target) as probe:
                health = health_pb2_grpc.HealthStub(probe)
                request = health_pb2.HealthCheckRequest(service="test.v1.SlowService")
                # Shortly after SIGTERM the server still answers, but reports NOT_SERVING.
                status = None
                while status != health_pb2.HealthCheckResponse.NOT_SERVING:
                    status = (await health.Check(request, timeout=1)).status
                    assert time.monotonic() - started < 0.5, "health did not go NOT_SERVING during the delay"

            # Once the consumers are stopped the server stops: new calls are refused while old ones finish.
            await wait_for(lambda: "on_stop consumers" in lines)
            await asyncio.sleep(0.1)
            async with grpc.aio.insecure_channel(target) as late:
                try:
                    await late.unary_unary("/test.v1.SlowService/Slow")(
                        b"", metadata=(("authorization", f"Bearer {token}"),), timeout=1
                    )
                    refused = None
                except grpc.aio.AioRpcError as error:
                    refused = error.code()
            assert refused == grpc.StatusCode.UNAVAILABLE

            assert await asyncio.gather(*calls) == [b"done"] * 8

        returncode = await asyncio.wait_for(proc.wait(), timeout=GRACE + 2)
        elapsed = time.monotonic() - started
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
        await reader
        stderr = (await stderr_task).decode()

    assert returncode == 0, stderr
    assert elapsed < GRACE, f"shutdown took {elapsed:.1f}s"
    assert lines.count("slow finished") == 8
    # In-flight calls finished after consumers stopped and before the pools were closed.
    lifecycle = [line for line in lines if line.startswith(("on_", "slow finished", "exited"))]
    assert lifecycle == [
        "on_stop consumers",
        *["slow finished"] * 8,
        "on_close pool",
        "on_close cache",
        "exited",
    ]

    records = [json.loads(line) for line in stderr.splitlines() if line.startswith("{")]
    messages = [r["msg"] for r in records]
    assert "received SIGTERM, shutting down" in messages
    assert messages.index("shutdown: health NOT_SERVING") < messages.index(
        "shutdown: on_stop on_stop consumers"
    )
    assert messages[-1] == "shutdown: complete"
    assert all({"ts", "level", "logger", "msg", "request_id"} <= r.keys() for r in records)
