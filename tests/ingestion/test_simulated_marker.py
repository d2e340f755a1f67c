"""The ``simulated`` marker of stock records (counts, movements, purchase orders): content, wire form, files.

Records stored before the marker existed are real ones: their content hashes and wire bytes must be exactly
what they were, so that a re-upload of them stays a duplicate; a record marked simulated is other content.
"""

from __future__ import annotations

import datetime as dt
import io
from dataclasses import replace
from decimal import Decimal

from novacorrente.ingestion.v1 import records_pb2 as pb

from services.ingestion.converters import record_from_proto, record_payload
from services.ingestion.formats import Parsed
from services.ingestion.formats.generic import read_csv, write_csv
from services.ingestion.records import (
    MovementKind,
    Novelty,
    PurchaseOrder,
    Record,
    StockMovement,
    StockSnapshot,
    novelty,
)

COUNT = StockSnapshot("010932", "ALMOX-BA", Decimal("3.5"), dt.date(2025, 1, 5))
ISSUE = StockMovement(
    reference="MV-1",
    kind=MovementKind.ISSUE,
    material_code="010932",
    site_code="ALMOX-BA",
    quantity=Decimal("2"),
    at=dt.datetime(2025, 1, 6, 10, 30, tzinfo=dt.UTC),
)
ORDER = PurchaseOrder(
    po_id="PO-7",
    material_code="010932",
    site_code="ALMOX-BA",
    supplier_code="F01",
    quantity=Decimal("10"),
    placed_date=dt.date(2025, 1, 6),
    expected_date=dt.date(2025, 1, 12),
)
# Content hashes and serialized records as ingestion computed them before the marker existed.
STORED: dict[Record, tuple[str, str]] = {
    COUNT: (
        "0ed5e30c392f43c63c73de5ef042be5428e8e768ee1969c01b2fa32af3a2745e",
        "2a240a063031303933321208414c4d4f582d4241190000000000000c40220708e90f10011805",
    ),
    ISSUE: (
        "45a6800e3ecd89f49823ffdff1a7febbcf8739d4508816a3ced62d08a9dc263d",
        "322b0a044d562d3110021a063031303933322208414c4d4f582d42413100000000000000403a0608a8e1eebb06",
    ),
    ORDER: (
        "c78c83ea8ae24988ed7ca2e1c429e331f5db60ef111dd5887a89e7fdd2d4991b",
        "3a380a04504f2d3712063031303933321a08414c4d4f582d42412203463031290000000000002440320708e90f10011806"
        "3a0708e90f1001180c",
    ),
}


def test_unmarked_records_keep_their_stored_hash_and_bytes() -> None:
    for record, (content_hash, payload) in STORED.items():
        assert record.simulated is False  # type: ignore[attr-defined]
        assert record.content_hash() == content_hash
        assert record_payload(record).hex() == payload
        back = record_from_proto(pb.Record.FromString(bytes.fromhex(payload)))
        assert back == record and back.content_hash() == content_hash


def test_the_marker_is_content_and_travels_on_the_wire() -> None:
    for record in STORED:
        marked = replace(record, simulated=True)  # type: ignore[type-var]
        assert novelty(record.content_hash(), marked) is Novelty.SUPERSEDES
        assert marked.natural_key() == record.natural_key()
        back = record_from_proto(pb.Record.FromString(record_payload(marked)))
        assert back == marked and back.simulated is True  # type: ignore[attr-defined]


def test_the_generic_csv_column_is_optional_and_round_trips() -> None:
    plain = [
        o.record
        for o in read_csv(
            io.BytesIO(b"material_code,site_code,on_hand,as_of\n010932,ALMOX-BA,3.5,2025-01-05\n"),
            "stock_snapshot",
        )
        if isinstance(o, Parsed)
    ]
    assert plain == [COUNT] and plain[0].content_hash() == STORED[COUNT][0]
    records = [COUNT, replace(COUNT, as_of=dt.date(2025, 1, 12), simulated=True)]
    sink = io.StringIO()
    write_csv(records, sink, "stock_snapshot")
    back = [o.record for o in read_csv(io.BytesIO(sink.getvalue().encode()), "stock_snapshot")]
    assert back == records
