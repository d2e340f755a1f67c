"""The demo's simulated stock ledger.

The requisition export has no stock ledger. So that the inventory pages have something real to
work on, the demo simulates one from the real data and says so (every record it makes is marked
``simulated``, and the notes of figures computed from them tell the user): for every material x site
with repeated real demand, week by week, real demand is issued from stock, and a purchase order is
placed when the stock position falls to a simple reorder level, arriving after a lead time drawn from
that material's real observed lead times. The weekly stock counts and the orders are submitted through
the ingestion API as StockSnapshot and PurchaseOrder records, like any other data.
"""

from __future__ import annotations

import asyncio
import dataclasses
import datetime as dt
import hashlib
import random
import statistics
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from decimal import Decimal
from pathlib import Path

from services.ingestion.converters import record_to_proto
from services.ingestion.formats import Parsed, read_file
from services.ingestion.records import Consumption, ConsumptionFlag, PurchaseOrder, Record, StockSnapshot

__all__ = ["simulate_ledger", "submit_simulated_ledger"]

MIN_LINES = 3  # series with fewer real requisition lines are too sparse to plan
COVER_WEEKS = 4.0  # order quantity: this many weeks of mean demand
SEED = 20251024  # deterministic: the same export gives the same ledger (and replays as duplicates)
_SKIP = {ConsumptionFlag.SERVICE, ConsumptionFlag.UNKNOWN_SITE, ConsumptionFlag.UNIT_VARIANT}


@dataclass
class _Series:
    weekly: Counter[dt.date] = field(default_factory=Counter)  # quantities: float counts, Counter sums them
    suppliers: Counter[str] = field(default_factory=Counter)
    lines: int = 0


def _monday(d: dt.date) -> dt.date:
    return d - dt.timedelta(days=d.weekday())


def simulate_ledger(export: Path) -> list[Record]:
    series: dict[tuple[str, str], _Series] = defaultdict(_Series)
    lead_times: dict[str, list[int]] = defaultdict(list)
    last_day = dt.date.min
    for outcome in read_file(export):
        if not isinstance(outcome, Parsed) or not isinstance(outcome.record, Consumption):
            continue
        line = outcome.record
        if _SKIP & set(line.flags):
            continue
        s = series[(line.material_code, line.site_code)]
        s.weekly[_monday(line.solicited_date)] += float(line.quantity)  # type: ignore[assignment]
        s.suppliers[line.supplier_code] += 1
        s.lines += 1
        last_day = max(last_day, line.solicited_date)
        lead = line.lead_time_days()
        if lead is not None and lead >= 0:
            lead_times[line.material_code].append(lead)
    every_lead = [d for days in lead_times.values() for d in days] or [7]
    rng = random.Random(SEED)
    records: list[Record] = []
    po_number = 0
    end = _monday(last_day)
    for (material, site), s in sorted(series.items()):
        if s.lines < MIN_LINES:
            continue
        start = min(s.weekly)
        weeks = (end - start).days // 7 + 1
        mean = sum(s.weekly.values()) / weeks
        leads = lead_times.get(material) or every_lead
        lead_weeks = statistics.fmean(leads) / 7
        reorder_level = mean * (lead_weeks + 1)
        quantity = max(round(mean * COVER_WEEKS), 1)
        on_hand = reorder_level + quantity
        open_orders: list[tuple[dt.date, float, PurchaseOrder]] = []
        supplier = s.suppliers.most_common(1)[0][0]
        for w in range(weeks):
            monday = start + dt.timedelta(weeks=w)
            sunday = monday + dt.timedelta(days=6)
            for arrival, qty, order in [o for o in open_orders if o[0] <= sunday]:
                on_hand += qty
                open_orders.remove((arrival, qty, order))
                records.append(_received(order, arrival))
            on_hand = max(on_hand - s.weekly.get(monday, 0.0), 0.0)
            records.append(
                StockSnapshot(material, site, Decimal(str(round(on_hand, 3))), sunday, simulated=True)
            )
            on_order = sum(qty for _, qty, _ in open_orders)
            if on_hand + on_order <= reorder_level:
                po_number += 1
                arrival = sunday + dt.timedelta(days=rng.choice(leads))
                order = PurchaseOrder(
                    po_id=f"SIM-{po_number:06d}",
                    material_code=material,
                    site_code=site,
                    supplier_code=supplier,
                    quantity=Decimal(quantity),
                    placed_date=sunday,
                    expected_date=arrival,
                    simulated=True,
                )
                open_orders.append((arrival, float(quantity), order))
        records.extend(order for _, _, order in open_orders)  # still open at the end of the export
    return records


def _received(order: PurchaseOrder, day: dt.date) -> PurchaseOrder:
    return dataclasses.replace(order, received_date=day)


async def submit_simulated_ledger(target: str, token: str, export: Path, batch: int = 5_000) -> str:
    """Simulate and submit; returns a one-line summary. Keys derived from the content make a re-run a
    replay."""
    from novacorrente.ingestion.v1 import ingestion_pb2 as pb
    from novacorrente.ingestion.v1 import ingestion_pb2_grpc

    from services.kit.clients import open_channel

    records = await asyncio.to_thread(simulate_ledger, export)
    counts: Counter[str] = Counter()
    async with open_channel(target, token=token, default_timeout=120) as channel:
        stub = ingestion_pb2_grpc.IngestionServiceStub(channel)
        for start in range(0, len(records), batch):
            protos = [record_to_proto(r) for r in records[start : start + batch]]
            # Keyed by the batch's content: the same ledger replays, a changed one (other data, or a
            # change to the simulation) is submitted as new content rather than refused as a reused key.
            digest = hashlib.sha256(b"".join(p.SerializeToString(deterministic=True) for p in protos))
            request = pb.SubmitBatchRequest(
                idempotency_key=f"demo-ledger:{digest.hexdigest()[:32]}",
                records=protos,
                source="demo-simulated-ledger",
            )
            answer = await stub.SubmitBatch(request)
            for name in ("accepted", "duplicate", "superseded", "rejected"):
                counts[name] += getattr(answer.counts, name)
    snapshots = sum(isinstance(r, StockSnapshot) for r in records)
    return (
        f"simulated stock ledger (no real ledger in the export): {snapshots} weekly stock counts and "
        f"{len(records) - snapshots} purchase-order versions; {counts['accepted']} accepted, "
        f"{counts['superseded']} superseded, {counts['duplicate']} duplicate, {counts['rejected']} rejected"
    )
