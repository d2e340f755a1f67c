"""ingest_upload: a Sapiens-export CSV shaped like the real one, uploaded end to end.

Project: `python -m services.ingestion` (its own process) on PostgreSQL with RabbitMQ, fed by
UploadFile; the clock stops when every record is committed and every event confirmed by the
broker (outbox empty). Raw limit, same run: the same CSV rows read with the csv module and written
with a bare asyncpg `copy_records_to_table`. Also: the service's peak RSS, its worker processes
included (target < 300 MB).

    python -m bench.ingest_upload [--lines 1000000]
"""

from __future__ import annotations

import argparse
import asyncio
import csv
import os
import secrets
import subprocess
import sys
import tempfile
import time
import uuid
from itertools import islice
from pathlib import Path
from typing import TYPE_CHECKING, cast

import asyncpg

from bench.common import peak_rss_mb, result, write_sapiens_csv
from services.cli import summarize, upload_file
from services.kit.auth import mint_token

if TYPE_CHECKING:
    from novacorrente.ingestion.v1.ingestion_pb2 import UploadFileResponse

PG = os.environ.get("NOVA_BENCH_PG_URL", "postgresql://postgres@127.0.0.1:5432/test")
AMQP = os.environ.get("NOVA_BENCH_AMQP_HOST", "127.0.0.1:5672")


async def bare_copy(url: str, path: Path) -> float:
    conn = await asyncpg.connect(url)
    await conn.execute("CREATE TABLE bare_lines (" + ", ".join(f"c{i} TEXT" for i in range(11)) + ")")
    started = time.perf_counter()
    with path.open(encoding="utf-8", newline="") as f:
        rows = csv.reader(f, delimiter=";")
        next(rows)
        while chunk := list(islice(rows, 50_000)):
            await conn.copy_records_to_table("bare_lines", records=chunk)
    elapsed = time.perf_counter() - started
    await conn.close()
    return elapsed


def descendants(pid: int) -> list[int]:
    """The processes the service started (its file reader), recursively."""
    found = []
    for task in Path(f"/proc/{pid}/task").iterdir():
        for child in (task / "children").read_text().split():
            found += [int(child), *descendants(int(child))]
    return found


async def wait_port(port: int, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            _, writer = await asyncio.open_connection("127.0.0.1", port)
            writer.close()
            return
        except OSError:
            await asyncio.sleep(0.2)
    raise RuntimeError("service did not start")


async def main(lines: int) -> None:
    work = Path(tempfile.mkdtemp(prefix="nova-bench-"))
    data = work / "requisitions.csv"
    print(f"generating {lines:,} lines ...", flush=True)
    write_sapiens_csv(data, lines)
    db = f"nova_bench_{uuid.uuid4().hex[:8]}"
    vhost = f"nova-bench-{uuid.uuid4().hex[:8]}"
    admin = await asyncpg.connect(PG)
    await admin.execute(f'CREATE DATABASE "{db}"')
    subprocess.run(["rabbitmqctl", "-q", "add_vhost", vhost], check=True)
    subprocess.run(
        ["rabbitmqctl", "-q", "set_permissions", "-p", vhost, "guest", ".*", ".*", ".*"], check=True
    )
    url = PG.rsplit("/", 1)[0] + f"/{db}"
    key = secrets.token_hex(32)
    port = 50751
    env = {
        **os.environ,
        "NOVA_DATABASE_URL": url,
        "NOVA_BROKER_URL": f"amqp://guest:guest@{AMQP}/{vhost}",
        "NOVA_JWT_SECRET": key,
        "NOVA_INGESTION_PORT": str(port),
        "NOVA_LOG_LEVEL": "WARNING",
    }
    service = subprocess.Popen([sys.executable, "-m", "services.ingestion"], env=env)
    try:
        baseline_s = await bare_copy(url, data)
        await wait_port(port)
        token = mint_token(key.encode(), "bench", "ingestor", 3600)
        started = time.perf_counter()
        answer = cast(
            "UploadFileResponse", await upload_file(f"127.0.0.1:{port}", token, data, progress=False)
        )
        conn = await asyncpg.connect(url)
        while await conn.fetchval("SELECT count(*) FROM support.outbox"):
            await asyncio.sleep(0.05)
        elapsed = time.perf_counter() - started
        await conn.close()
        rss = peak_rss_mb(service.pid)
        # The service's worker processes count too: the sum of their peaks (an upper bound of the total).
        children = {pid: peak_rss_mb(pid) for pid in descendants(service.pid)}
        total_rss = rss + sum(children.values())
        print(summarize(data, answer))
        project = lines / elapsed
        raw = lines / baseline_s
        print(
            f"project: {project:,.0f} lines/s ({elapsed:.1f}s); "
            f"bare COPY: {raw:,.0f} lines/s ({baseline_s:.1f}s)"
        )
        print(
            f"service peak RSS: {total_rss:.0f} MB (target < 300): main process {rss:.0f} MB"
            + "".join(f", worker {mb:.0f} MB" for mb in children.values())
        )
        result(
            "ingest_upload",
            project,
            "lines/s",
            raw,
            0.25,
            lines=lines,
            records=answer.counts.accepted,
            seconds=round(elapsed, 1),
            peak_rss_mb=round(total_rss),
            main_rss_mb=round(rss),
        )
    finally:
        service.terminate()
        service.wait(30)
        await admin.execute(f'DROP DATABASE IF EXISTS "{db}" WITH (FORCE)')
        await admin.close()
        subprocess.run(["rabbitmqctl", "-q", "delete_vhost", vhost], check=False)
        data.unlink(missing_ok=True)
        work.rmdir()


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--lines", type=int, default=1_000_000)
    asyncio.run(main(parser.parse_args().lines))
