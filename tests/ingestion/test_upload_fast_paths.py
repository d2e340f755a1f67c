"""The upload hot path's shortcuts give exactly what the general code gives.

Content hashes and payloads are stored and compared across uploads, so a shortcut that spelled them
differently would turn a re-upload into corrections; the reader's per-value validation must accept
exactly what validate() accepts; a file read in the worker process must answer as one read in threads.
"""

from __future__ import annotations

import concurrent.futures
import csv
import hashlib
import io
import json
import random
import uuid
from dataclasses import fields, replace
from datetime import UTC, date, datetime
from decimal import Decimal
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from novacorrente.events.v1 import events_pb2
from novacorrente.ingestion.v1 import ingestion_pb2 as pb
from novacorrente.ingestion.v1 import records_pb2

from services.ingestion import records as dom
from services.ingestion.converters import consumption_payload, record_to_proto
from services.ingestion.formats import Parsed, read_file
from services.ingestion.formats.sapiens import COLUMNS, read_sapiens_csv
from services.ingestion.reading import ReadingPool
from services.ingestion.service import IngestionUseCases, Limits, _batch_committed
from services.ingestion.sql import open_database
from services.ingestion.store import CommitOutcome, IngestionStore, PreparedRecord
from services.ingestion.validation import consumption_field_valid, validate

EXPORT = Path(__file__).resolve().parents[2] / "data" / "dadosSuprimentos.xlsx"


def _reference_hash(record: dom.Record) -> str:
    """Record.content_hash as first written: json.dumps of the canonical fields (a field added since, listed
    in ``hash_omit_default``, counts only when not at its default: records without it hash as they did
    before it existed)."""
    names = [
        f.name
        for f in fields(record)  # type: ignore[arg-type]
        if f.name not in record.hash_exclude
        and not (f.name in record.hash_omit_default and getattr(record, f.name) == f.default)
    ]
    payload = {n: dom._canonical(getattr(record, n)) for n in names}
    text = json.dumps(
        [record.record_type, payload], sort_keys=True, ensure_ascii=False, separators=(",", ":")
    )
    return hashlib.sha256(text.encode()).hexdigest()


@pytest.fixture(scope="module")
def export_records() -> list[dom.Record]:
    return [o.record for o in read_file(EXPORT) if isinstance(o, Parsed)]


def test_content_hashes_of_the_real_export_are_unchanged(export_records: list[dom.Record]) -> None:
    assert len(export_records) > 4000
    for record in export_records:
        assert record.content_hash() == _reference_hash(record)


def test_consumption_payloads_are_the_message_bytes(export_records: list[dom.Record]) -> None:
    for record in export_records:
        if isinstance(record, dom.Consumption):
            expected = record_to_proto(record).SerializeToString(deterministic=True)
            assert consumption_payload(record) == expected


_text = st.text(st.characters(blacklist_categories=("Cs",)), max_size=300)
_day = st.dates(date(1990, 1, 1), date(2110, 1, 1))
_quantity = st.decimals(allow_nan=False, allow_infinity=False, places=4, min_value=-1e6, max_value=1e12)


@settings(max_examples=300, deadline=None)
@given(
    texts=st.lists(_text, min_size=7, max_size=7),
    quantity=_quantity,
    days=st.tuples(_day, st.none() | _day, st.none() | _day),
    flags=st.lists(st.sampled_from(list(dom.ConsumptionFlag)), unique=True),
)
def test_consumption_shortcuts_match_the_general_code(
    texts: list[str], quantity: Decimal, days: tuple, flags: list
) -> None:
    flagged = tuple(sorted(flags))
    record = dom.Consumption(*texts[:5], quantity, texts[5], *days, family=texts[6], flags=flagged)
    assert record.content_hash() == _reference_hash(record)
    assert record.natural_key() == tuple(str(dom._canonical(getattr(record, n))) for n in record.key_fields)
    if quantity > 0:
        assert consumption_payload(record) == record_to_proto(record).SerializeToString(deterministic=True)
    # The reader accepts a line when every field passes on its own and the dates agree: validate() too.
    own = all(consumption_field_valid(f.name, getattr(record, f.name)) for f in fields(record)[:11])
    dates_agree = not (
        own and record.requested_date is not None and record.requested_date > record.solicited_date
    )
    assert (validate(record) == []) == (own and dates_agree)


def test_other_records_hash_as_before() -> None:
    records: list[dom.Record] = [
        dom.Site(code='BR"73\\531', region="BA", site_type=dom.SiteType.TOWER),
        dom.Material(code="010601", name="CAIXA \u00e7\u00e3o\x01", family="F", unit="CX", stocked=False),
        dom.Material(code="010601", name="CAIXA", family="F", unit="CX", unit_cost_brl=Decimal("12.50")),
        dom.StockMovement(
            reference="r1",
            kind=dom.MovementKind.TRANSFER,
            material_code="m",
            site_code="a",
            quantity=Decimal("1.500"),
            at=datetime(2025, 1, 2, 3, 4, tzinfo=UTC),
            to_site_code="b",
        ),
        dom.ExternalObservation("ptax.usd.sell", date(2025, 1, 2), Decimal("-0"), "BRL", "BCB"),
    ]
    for record in records:
        assert record.content_hash() == _reference_hash(record)


def test_batch_committed_bytes_are_the_message_bytes(export_records: list[dom.Record]) -> None:
    rows = [
        PreparedRecord(i, r.record_type, "k", r.content_hash(), record_to_proto(r).SerializeToString())
        for i, r in enumerate(export_records[:300])
    ]
    outcome = CommitOutcome(
        batch_id=str(uuid.uuid4()),
        committed_at=datetime(2025, 3, 4, 5, 6, 7, 891011, tzinfo=UTC),
        decisions=[],
        written=[(1000 + 200 * i, r, i % 3 == 0) for i, r in enumerate(rows)],
    )
    message = _batch_committed(outcome)
    event = events_pb2.BatchCommitted.FromString(message.body)
    expected = events_pb2.BatchCommitted(
        event_id=event.event_id,
        batch_id=outcome.batch_id,
        sequence_from=outcome.written[0][0],
        sequence_to=outcome.written[-1][0],
    )
    expected.committed_at.FromDatetime(outcome.committed_at)
    for seq, row, supersedes in outcome.written:
        committed = expected.records.add(sequence=seq, batch_id=outcome.batch_id, supersedes=supersedes)
        committed.record.MergeFromString(row.payload)
        committed.committed_at.CopyFrom(expected.committed_at)
    assert message.body == expected.SerializeToString()
    assert message.event_type == "novacorrente.events.v1.BatchCommitted"


def _trap_csv(path: Path) -> None:
    """The real export as CSV, with many lines broken in the ways files break (seeded)."""
    rows = []
    for outcome in read_file(EXPORT):
        if isinstance(outcome, Parsed) and isinstance(outcome.record, dom.Consumption):
            c = outcome.record
            rows.append(
                [
                    c.site_code,
                    c.material_code,
                    "NOME",
                    c.family,
                    c.supplier_code,
                    str(c.quantity).replace(".", ","),
                    c.unit,
                    "N/A" if c.requested_date is None else c.requested_date.strftime("%d/%m/%Y"),
                    c.requisition_id,
                    c.solicited_date.strftime("%d/%m/%Y"),
                    "N/A" if c.purchase_date is None else c.purchase_date.strftime("%d/%m/%Y"),
                ]
            )
    tricky = ["", " ", "N/A", "0", "-1", "1.5", "11.650", "abc", "31/02/2024", "01/01/1999", "2024-03-01",
              "X" * 205, "a\tb", "é", "M²", "mt", "XX", "1e400", "GERBA", "31/12/2101", " pad "]  # fmt: skip
    rng = random.Random(11)
    for row in rows:
        if rng.random() < 0.3:
            row[rng.randrange(len(row))] = rng.choice(tricky)
    out = io.StringIO()
    writer = csv.writer(out, delimiter=";")
    writer.writerow(COLUMNS)
    writer.writerows(rows)
    writer.writerow([])
    writer.writerow(rows[0][:4])
    path.write_text(out.getvalue(), encoding="utf-8")


def test_reader_accepts_only_valid_lines(tmp_path: Path) -> None:
    path = tmp_path / "traps.csv"
    _trap_csv(path)
    outcomes = list(read_sapiens_csv(path))
    accepted = [o.record for o in outcomes if isinstance(o, Parsed) and isinstance(o.record, dom.Consumption)]
    rejected = [o for o in outcomes if not isinstance(o, Parsed)]
    assert len(accepted) > 2000 and len(rejected) > 500
    for record in accepted:
        assert validate(record) == []
        assert validate(replace(record, flags=())) == []


async def _upload(path: Path, reading: ReadingPool | None) -> tuple[pb.UploadFileResponse, list[bytes]]:
    db = await open_database("duckdb:///:memory:")
    await db.migrate()
    store = IngestionStore(db)
    with concurrent.futures.ThreadPoolExecutor(2) as executor:
        limits = Limits(upload_commit_records=700, process_read_min_bytes=0)
        cases = IngestionUseCases(store, limits, executor, reading=reading)
        header = pb.UploadHeader(filename=path.name, idempotency_key="k")
        first = await cases.upload("me", header, path)
        again = await cases.upload("me", header, path)
        assert again.replayed and again.counts == first.counts
        assert list(again.exceptions) == list(first.exceptions)
        rows = await store.export(0, 10**9, 10**9)
    await db.close()
    return first, [records_pb2.Record.FromString(r.payload).SerializeToString() for r in rows]


async def test_a_file_read_in_the_worker_process_answers_as_in_threads(tmp_path: Path) -> None:
    path = tmp_path / "traps.csv"
    _trap_csv(path)
    threads, thread_rows = await _upload(path, None)
    pool = ReadingPool(1)
    try:
        process, process_rows = await _upload(path, pool)
    finally:
        pool.shutdown()
    assert process.counts == threads.counts
    assert process.counts.rejected > 500
    assert list(process.exceptions) == list(threads.exceptions)
    assert process_rows == thread_rows


def test_ordinals_count_as_a_counter(monkeypatch: pytest.MonkeyPatch) -> None:
    from collections import Counter

    from services.ingestion.formats import ordinals

    monkeypatch.setattr(ordinals, "_FLUSH", 500)
    monkeypatch.setattr(ordinals, "_FILTER_BITS", 1 << 12)  # many filter collisions, so exact lookups
    rng = random.Random(5)
    keys = [rng.getrandbits(64) for _ in range(6_000)]
    counter: Counter[int] = Counter()
    counts = ordinals.Ordinals()
    for _ in range(40_000):
        key = rng.choice(keys) if rng.random() < 0.3 else rng.getrandbits(64)
        counter[key] += 1
        assert counts.next(key) == counter[key]


def test_varints_are_the_message_library_s() -> None:
    from services.ingestion.wire import length_delimited, varint

    rng = random.Random(3)
    edges = [2**14 - 1, 2**14, 2**21 - 1, 2**21]
    for n in [*range(1, 20_000, 7), *edges, *(1 + rng.getrandbits(62) for _ in range(500))]:
        assert b"\x08" + varint(n) == pb.RecordVerdict(index=n).SerializeToString()
    for size in (1, 127, 128, 16_383, 16_384, 300_000):  # (proto3 leaves zero and "" out)
        text = "x" * size
        assert length_delimited(0x1A, text.encode()) == pb.RecordVerdict(natural_key=text).SerializeToString()
