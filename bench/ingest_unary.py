"""ingest_unary: single-record SubmitBatch calls at 16 in flight, on PostgreSQL with RabbitMQ.

Project: `python -m services.ingestion` in its own process. Raw limit, same run: a bare grpc.aio
echo server (bench/echo_server.py) answering the same request bytes at the same concurrency.
Reports calls/s (ratio = project / echo) and p50/p99 latency.

    python -m bench.ingest_unary [--calls 10000] [--concurrency 16]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import secrets
import subprocess
import sys
import time
import uuid

import asyncpg
import grpc
from novacorrente.common.v1 import common_pb2
from novacorrente.ingestion.v1 import ingestion_pb2 as pb
from novacorrente.ingestion.v1 import records_pb2 as rec

from bench.common import percentile, result
from bench.ingest_upload import AMQP, PG, wait_port
from services.kit.auth import mint_token


def request(n: int) -> bytes:
    line = rec.Record(
        consumption=rec.Consumption(
            requisition_id=f"U{n}",
            line_key="010601#1",
            material_code="010601",
            site_code="ALMOX-BA",
            supplier_code="FORNECEDOR X",
            quantity=1 + n % 9,
            unit="UN",
            solicited_date=common_pb2.Date(year=2025, month=1 + n % 12, day=1 + n % 28),
        )
    )
    return pb.SubmitBatchRequest(idempotency_key=f"unary-{n}", records=[line]).SerializeToString()


async def drive(
    target: str, method: str, bodies: list[bytes], concurrency: int, token: str
) -> tuple[float, list[float]]:
    latencies: list[float] = []
    queue = iter(range(len(bodies)))
    async with grpc.aio.insecure_channel(target) as channel:
        call = channel.unary_unary(method, request_serializer=lambda b: b, response_deserializer=lambda b: b)
        metadata = (("authorization", f"Bearer {token}"),)

        async def worker() -> None:
            for i in queue:
                started = time.perf_counter()
                await call(bodies[i], metadata=metadata, timeout=30)
                latencies.append(time.perf_counter() - started)

        started = time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(concurrency)))
        return time.perf_counter() - started, latencies


async def main(calls: int, concurrency: int) -> None:
    db = f"nova_bench_{uuid.uuid4().hex[:8]}"
    vhost = f"nova-bench-{uuid.uuid4().hex[:8]}"
    admin = await asyncpg.connect(PG)
    await admin.execute(f'CREATE DATABASE "{db}"')
    subprocess.run(["rabbitmqctl", "-q", "add_vhost", vhost], check=True)
    subprocess.run(
        ["rabbitmqctl", "-q", "set_permissions", "-p", vhost, "guest", ".*", ".*", ".*"], check=True
    )
    key = secrets.token_hex(32)
    port, echo_port = 50761, 50762
    env = {
        **os.environ,
        "NOVA_DATABASE_URL": PG.rsplit("/", 1)[0] + f"/{db}",
        "NOVA_BROKER_URL": f"amqp://guest:guest@{AMQP}/{vhost}",
        "NOVA_JWT_SECRET": key,
        "NOVA_INGESTION_PORT": str(port),
        "NOVA_LOG_LEVEL": "WARNING",
    }
    service = subprocess.Popen([sys.executable, "-m", "services.ingestion"], env=env)
    echo = subprocess.Popen([sys.executable, "-m", "bench.echo_server", str(echo_port)])
    try:
        await wait_port(port)
        await wait_port(echo_port)
        token = mint_token(key.encode(), "bench", "ingestor", 3600)
        bodies = [request(n) for n in range(calls)]
        await drive(f"127.0.0.1:{echo_port}", "/bench.Echo/Echo", bodies[:500], concurrency, token)  # warm up
        echo_s, echo_lat = await drive(
            f"127.0.0.1:{echo_port}", "/bench.Echo/Echo", bodies, concurrency, token
        )
        method = "/novacorrente.ingestion.v1.IngestionService/SubmitBatch"
        project_s, lat = await drive(f"127.0.0.1:{port}", method, bodies, concurrency, token)
        project, raw = calls / project_s, calls / echo_s
        p50, p99 = percentile(lat, 50) * 1000, percentile(lat, 99) * 1000
        print(f"echo: {raw:,.0f} calls/s, p50 {percentile(echo_lat, 50) * 1000:.2f} ms")
        print(f"ingestion: {project:,.0f} calls/s, p50 {p50:.2f} ms, p99 {p99:.2f} ms")
        result(
            "ingest_unary",
            project,
            "calls/s",
            raw,
            None,
            p50_ms=round(p50, 2),
            p99_ms=round(p99, 2),
            calls=calls,
        )
    finally:
        for proc in (service, echo):
            proc.terminate()
            proc.wait(30)
        await admin.execute(f'DROP DATABASE IF EXISTS "{db}" WITH (FORCE)')
        await admin.close()
        subprocess.run(["rabbitmqctl", "-q", "delete_vhost", vhost], check=False)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--calls", type=int, default=10_000)
    parser.add_argument("--concurrency", type=int, default=16)
    ns = parser.parse_args()
    asyncio.run(main(ns.calls, ns.concurrency))
