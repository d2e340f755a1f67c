"""analytics_catchup: how fast a replica applies BatchCommitted events from the bus, against a bare load.

    python -m bench.analytics_catchup [--records 300000] [--per-event 5000]

Records: requisition lines (and their master records) of a company history made by
bench/gen_company_history.py, packed like ingestion's commits (--per-event records per BatchCommitted).
Project: a replica with a file read model consuming the in-process bus; the clock runs from the first
publish until its watermark reaches the last sequence (decode, idempotency and order checks, conversion,
dimension watermarks, one DuckDB transaction per event, alert candidates). Raw limit, same run: the same
event bodies decoded and their lines inserted into a bare DuckDB table of the same schema through Arrow,
nothing else. value = records/s of the project, baseline = records/s of the bare load, ratio = value /
baseline. No target was set for it; also reported: the peak RSS of the process.
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import os
import tempfile
import time
import uuid
from pathlib import Path
from typing import overload

import duckdb
import pyarrow as pa
from novacorrente.common.v1 import common_pb2
from novacorrente.events.v1 import events_pb2
from novacorrente.ingestion.v1 import records_pb2

from bench.common import peak_rss_mb
from bench.gen_company_history import emit, generate, start_replica
from services.analytics.read_model import TABLES
from services.ports.bus import OutgoingMessage, open_bus


@overload
def _date(value: dt.date) -> common_pb2.Date: ...
@overload
def _date(value: None) -> None: ...
@overload
def _date(value: dt.date | None) -> common_pb2.Date | None: ...
def _date(value: dt.date | None) -> common_pb2.Date | None:
    return None if value is None else common_pb2.Date(year=value.year, month=value.month, day=value.day)


def _events(path: Path, records: int, per_event: int) -> list[bytes]:
    con = duckdb.connect(str(path), read_only=True)
    try:
        materials = con.execute("SELECT code, name, family, unit, stocked FROM materials").fetchall()
        sites = con.execute("SELECT code, client, region FROM sites").fetchall()
        lines = con.execute(
            "SELECT requisition_id, line_key, material_code, site_code, supplier_code, quantity::DOUBLE, "
            "unit, solicited_date, purchase_date, family FROM consumption ORDER BY seq LIMIT ?",
            [records],
        ).fetchall()
    finally:
        con.close()
    items: list[records_pb2.Record] = [
        records_pb2.Record(material=records_pb2.Material(code=c, name=n, family=f, unit=u, stocked=s))
        for c, n, f, u, s in materials
    ]
    items += [records_pb2.Record(site=records_pb2.Site(code=c, client=cl, region=r)) for c, cl, r in sites]
    for req, key, m, s, sup, q, u, sol, bought, fam in lines:
        c = records_pb2.Consumption(
            requisition_id=req,
            line_key=key,
            material_code=m,
            site_code=s,
            supplier_code=sup,
            quantity=q,
            unit=u,
            solicited_date=_date(sol),
            family=fam,
        )
        if bought is not None:
            c.purchase_date.CopyFrom(_date(bought))
        items.append(records_pb2.Record(consumption=c))
    bodies = []
    for start in range(0, len(items), per_event):
        chunk = items[start : start + per_event]
        event = events_pb2.BatchCommitted(
            event_id=uuid.uuid4().hex,
            batch_id=uuid.uuid4().hex,
            sequence_from=start + 1,
            sequence_to=start + len(chunk),
        )
        for k, record in enumerate(chunk):
            event.records.add(sequence=start + k + 1, record=record)
        bodies.append(event.SerializeToString())
    return bodies


def _bare(bodies: list[bytes], folder: Path) -> float:
    """Decode the events and insert their lines through Arrow into a plain table: the raw limit."""
    con = duckdb.connect(str(folder / "bare.duckdb"))
    _, _, columns = TABLES["consumption"]
    con.execute("CREATE TABLE consumption (" + ", ".join(f"{n} {t}" for n, t, _ in columns) + ", seq BIGINT)")
    started = time.perf_counter()
    for body in bodies:
        event = events_pb2.BatchCommitted.FromString(body)
        rows = [r for r in event.records if r.record.WhichOneof("kind") == "consumption"]
        cons = [r.record.consumption for r in rows]

        def d(v: common_pb2.Date) -> dt.date | None:
            return dt.date(v.year, v.month, v.day) if v.year else None

        table = pa.table(
            {
                "requisition_id": [c.requisition_id for c in cons],
                "line_key": [c.line_key for c in cons],
                "material_code": [c.material_code for c in cons],
                "site_code": [c.site_code for c in cons],
                "supplier_code": [c.supplier_code for c in cons],
                "quantity": [c.quantity for c in cons],
                "unit": [c.unit for c in cons],
                "demand_date": [d(c.solicited_date) for c in cons],
                "requested_date": pa.nulls(len(cons), pa.date32()),
                "solicited_date": [d(c.solicited_date) for c in cons],
                "purchase_date": [d(c.purchase_date) for c in cons],
                "lead_time_days": pa.nulls(len(cons), pa.int64()),
                "family": [c.family for c in cons],
                "flags": [list(c.flags) for c in cons],
                "seq": [r.sequence for r in rows],
            }
        )
        con.register("staged", table)
        con.execute("INSERT INTO consumption SELECT * FROM staged")
        con.unregister("staged")
    elapsed = time.perf_counter() - started
    con.close()
    return elapsed


async def _project(bodies: list[bytes], folder: Path, last: int) -> float:
    bus_url = f"memory://catchup-{uuid.uuid4().hex}"
    app, _, _ = await start_replica(folder / "replica.duckdb", broker_url=bus_url)
    bus = await open_bus(bus_url)
    try:
        messages = [
            OutgoingMessage(
                routing_key="ingestion.batch.committed",
                body=b,
                type=events_pb2.BatchCommitted.DESCRIPTOR.full_name,
                message_id=str(i),
            )
            for i, b in enumerate(bodies)
        ]
        started = time.perf_counter()
        await bus.publish(messages)
        # Polled: the service exposes no "applied" signal, and 5 ms is small against the whole catch-up.
        while app.service.model.applied_seq < last:
            await asyncio.sleep(0.005)
        return time.perf_counter() - started
    finally:
        await app.stop()
        await bus.close()


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--records", type=int, default=300_000)
    parser.add_argument("--per-event", type=int, default=5000)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="nova-bench-catchup-") as tmp:
        folder = Path(tmp)
        generate(folder / "source.duckdb", max(0.001, args.records / 20_000_000 * 1.05))
        bodies = _events(folder / "source.duckdb", args.records, args.per_event)
        total = sum(len(events_pb2.BatchCommitted.FromString(b).records) for b in bodies)
        lines = args.records
        bare = _bare(bodies, folder)
        project = asyncio.run(_project(bodies, folder, total))
    print(f"{total} records in {len(bodies)} events: project {project:.2f}s, bare {bare:.2f}s", flush=True)
    emit(
        {
            "name": "analytics_catchup",
            "value": round(total / project, 1),
            "unit": "records/s applied from the bus",
            "baseline": round(total / bare, 1),
            "ratio": round(bare / project, 3),
            "target": None,
            "records": total,
            "requisition_lines": lines,
            "records_per_event": args.per_event,
            "peak_rss_mb": round(peak_rss_mb(os.getpid()), 1),
        }
    )


if __name__ == "__main__":
    main()
