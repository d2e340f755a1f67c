"""Real data for the external-factor tests: the feed files read by ingestion's readers, and a real
analytics-query replica (in-memory DuckDB, in-process bus) holding them, as production would after upload."""

from __future__ import annotations

import asyncio
import contextlib
import time
import uuid
from collections import defaultdict
from collections.abc import AsyncIterator, Sequence
from functools import lru_cache
from pathlib import Path

import numpy as np
from google.protobuf import timestamp_pb2
from novacorrente.events.v1 import events_pb2 as epb
from novacorrente.ingestion.v1 import records_pb2 as rpb

from ml_training.externals import FEED_FILES
from services.ingestion.converters import record_to_proto
from services.ingestion.formats import Parsed, read_file
from services.ports.bus import OutgoingMessage, open_bus

ROOT = Path(__file__).resolve().parents[2]
EXTERNAL_DIR = ROOT / "data" / "external"
EXPORT = ROOT / "data" / "dadosSuprimentos.xlsx"


def _read(paths: Sequence[Path]) -> tuple[rpb.Record, ...]:
    return tuple(
        record_to_proto(outcome.record)
        for path in paths
        for outcome in read_file(path)
        if isinstance(outcome, Parsed)
    )


@lru_cache(maxsize=1)
def feed_records() -> tuple[rpb.Record, ...]:
    """Every observation ingestion accepts from the feed files training reads, in wire form."""
    return _read([p for pattern in FEED_FILES for p in sorted(EXTERNAL_DIR.glob(pattern))])


@lru_cache(maxsize=1)
def export_records() -> tuple[rpb.Record, ...]:
    """The requisition export as ingestion reads it (masters and consumption lines)."""
    return _read([EXPORT])


def points_by_series(records: Sequence[rpb.Record]) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """Series id -> (days, values) of the external observations among ``records`` (wire values: doubles)."""
    rows: dict[str, list[tuple[str, float]]] = defaultdict(list)
    for record in records:
        if record.WhichOneof("kind") == "external_observation":
            e = record.external_observation
            rows[e.series_id].append((f"{e.date.year:04d}-{e.date.month:02d}-{e.date.day:02d}", e.value))
    return {
        series: (np.array([d for d, _ in r], dtype="datetime64[D]"), np.array([v for _, v in r]))
        for series, r in rows.items()
    }


def batch_event(records: Sequence[rpb.Record], first_sequence: int = 1) -> epb.BatchCommitted:
    """A committed batch as ingestion publishes it."""
    now = timestamp_pb2.Timestamp()
    now.GetCurrentTime()
    batch_id = uuid.uuid4().hex
    committed = [
        rpb.CommittedRecord(sequence=first_sequence + i, batch_id=batch_id, record=r, committed_at=now)
        for i, r in enumerate(records)
    ]
    return epb.BatchCommitted(
        event_id=uuid.uuid4().hex,
        batch_id=batch_id,
        sequence_from=first_sequence,
        sequence_to=first_sequence + len(records) - 1,
        records=committed,
        committed_at=now,
    )


@contextlib.asynccontextmanager
async def real_analytics(jwt_key: bytes, records: Sequence[rpb.Record]) -> AsyncIterator[str]:
    """A started analytics-query replica that applied ``records`` (one batch); yields its address."""
    from services.analytics.app import build_app
    from services.analytics.settings import AnalyticsSettings

    bus_url = f"memory://forecast-ext-{uuid.uuid4().hex}"
    bus = await open_bus(bus_url)
    settings = AnalyticsSettings(
        host="127.0.0.1",
        port=0,
        grace_seconds=1.0,
        health_poll_seconds=0.1,
        duckdb_path=":memory:",
        alerts_duckdb_path=":memory:",
        database_url="duckdb:///unused",
        broker_url=bus_url,
        cache_url=f"memory://{uuid.uuid4().hex}",
        replica_id=uuid.uuid4().hex[:8],
        query_workers=2,
        catchup_retry_seconds=0.1,
        jwt_secret=jwt_key.hex(),
    )
    app = await build_app(settings, bus=bus, jwt_key=jwt_key)
    await app.start()
    try:
        await app.wait_ready()
        event = batch_event(records)
        await bus.publish(
            [
                OutgoingMessage(
                    "ingestion.batch.committed",
                    event.SerializeToString(),
                    event.DESCRIPTOR.full_name,
                    event.event_id,
                )
            ]
        )
        deadline = time.monotonic() + 60
        while app.service.model.applied_seq < event.sequence_to:
            if time.monotonic() > deadline:
                raise AssertionError("analytics did not apply the batch in time")
            await asyncio.sleep(0.05)
        yield app.address
    finally:
        await app.stop()
        await bus.close()
