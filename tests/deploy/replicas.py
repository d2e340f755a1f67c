"""Service processes on loopback for the scale-out test: spawn, readiness, metrics, and client-side attempts.

Each deployable runs as ``python -m <module>`` with its own environment and log file, exactly as in a
container; nothing here reaches into a service's code.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import grpc
import httpx
from grpc_health.v1 import health_pb2, health_pb2_grpc
from prometheus_client.parser import text_string_to_metric_families

__all__ = ["Replica", "channel_attempts", "free_port", "spawn"]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class Replica:
    """One running service process."""

    name: str
    port: int
    metrics_port: int
    proc: subprocess.Popen[bytes]
    log: Path

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    def tail(self, chars: int = 3000) -> str:
        text = self.log.read_text(errors="replace") if self.log.exists() else ""
        return f"--- {self.name} (exit {self.proc.poll()}) ---\n{text[-chars:]}"

    def kill(self) -> None:
        """SIGKILL: no drain, no consumer stop, no goodbye to the broker (a crashed or evicted pod)."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(timeout=10)

    async def wait_serving(self, timeout: float) -> None:
        """Until the overall health status is SERVING; fails early when the process exits."""
        deadline = time.monotonic() + timeout
        async with grpc.aio.insecure_channel(self.address) as channel:
            stub = health_pb2_grpc.HealthStub(channel)
            while time.monotonic() < deadline:
                if self.proc.poll() is not None:
                    raise AssertionError(f"{self.name} exited before serving\n{self.tail()}")
                try:
                    reply = await stub.Check(health_pb2.HealthCheckRequest(), timeout=2)
                    if reply.status == health_pb2.HealthCheckResponse.SERVING:
                        return
                except grpc.aio.AioRpcError:
                    pass
                await asyncio.sleep(0.2)
        raise AssertionError(f"{self.name} not SERVING within {timeout} s\n{self.tail()}")

    async def served(self) -> dict[tuple[str, str], float]:
        """Calls this process has served so far, by (short method name, status code), from /metrics."""
        async with httpx.AsyncClient() as http:
            text = (await http.get(f"http://127.0.0.1:{self.metrics_port}/metrics", timeout=5)).text
        counts: dict[tuple[str, str], float] = {}
        for family in text_string_to_metric_families(text):
            if family.name != "nova_grpc_server_requests":
                continue
            for sample in family.samples:
                if sample.name.endswith("_total"):
                    method = sample.labels["method"].rsplit("/", 1)[-1]
                    counts[(method, sample.labels["code"])] = sample.value
        return counts


def spawn(name: str, module: str, port: int, env: dict[str, str], tmp: Path) -> Replica:
    """Start ``python -m module`` with ``env`` on top of this process' environment, logging to a file."""
    log = tmp / f"{name}.log"
    metrics_port = free_port()
    prefix = {
        "services.ingestion": "NOVA_INGESTION_",
        "services.analytics": "NOVA_ANALYTICS_",
        "services.forecast": "NOVA_FORECAST_",
    }[module]
    own = {f"{prefix}PORT": str(port), f"{prefix}METRICS_PORT": str(metrics_port)}
    with log.open("wb") as out:  # the child keeps its own copy of the descriptor
        proc = subprocess.Popen(
            [sys.executable, "-m", module],
            cwd=tmp,
            env={**os.environ, **env, **own},
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    return Replica(name, port, metrics_port, proc, log)


def channel_attempts(target: str) -> tuple[int, dict[str, int]] | None:
    """(calls started on the channel to ``target``, attempts started per backend address) in this process.

    Read from gRPC's channelz: a channel counts the calls the application made, its subchannels (one per
    address) count the attempts actually sent, retries included. grpcio exposes channelz only through its
    private cygrpc module (the public one is the separate grpcio-channelz package), so this is a figure for
    the report and None when unavailable, never an assertion.
    """
    try:
        from grpc._cython import cygrpc

        channels = json.loads(cygrpc.channelz_get_top_channels(0)).get("channel", [])
        for channel in channels:
            if channel.get("data", {}).get("target") != target:
                continue
            per_address: dict[str, int] = {}
            for ref in channel.get("subchannelRef", []):
                sub = json.loads(cygrpc.channelz_get_subchannel(int(ref["subchannelId"])))["subchannel"]
                address = sub["data"]["target"]
                per_address[address] = per_address.get(address, 0) + int(sub["data"].get("callsStarted", 0))
            return int(channel["data"].get("callsStarted", 0)), per_address
    except Exception:
        return None
    return None


def unacked_deliveries(pid: int, vhost: str) -> int:
    """Messages RabbitMQ has delivered to process ``pid`` (on ``vhost``) and not yet seen acknowledged.

    The process' AMQP connections are found by their local ports (``ss``), its channels by name in
    ``rabbitmqctl list_channels`` (``"<client addr>:<port> -> <broker addr>:<port> (<n>)"``).
    """
    sockets = subprocess.run(
        ["ss", "-tnpH", "state", "established", "( dport = :5672 )"],
        check=True,
        capture_output=True,
        text=True,
        timeout=10,
    ).stdout
    ports = {line.split()[2].rsplit(":", 1)[1] for line in sockets.splitlines() if f"pid={pid}," in line}
    channels = subprocess.run(
        [
            "rabbitmqctl",
            "-q",
            "--no-table-headers",
            "list_channels",
            "name",
            "vhost",
            "messages_unacknowledged",
        ],
        check=True,
        capture_output=True,
        text=True,
        timeout=30,
    ).stdout
    held = 0
    for line in channels.splitlines():
        name, _, rest = line.partition("\t")
        channel_vhost, _, unacked = rest.partition("\t")
        client_port = name.split(" -> ", 1)[0].rsplit(":", 1)[-1]
        if channel_vhost == vhost and client_port in ports:
            held += int(unacked)
    return held
