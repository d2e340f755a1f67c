"""Turns received records (wire records or lines read from a file) into rows ready to commit.

Each item is converted, validated and normalised; a valid one becomes a `PreparedRecord` (its
natural key, content hash and normalised wire payload), an invalid one a `Rejected` naming every
bad field. Skipped file lines (deliberately ignored, e.g. intraday quotes) are kept apart.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import NamedTuple, cast

from novacorrente.ingestion.v1 import records_pb2

from services.ingestion import records as dom
from services.ingestion.converters import ConversionError, record_from_proto, record_payload, record_to_proto
from services.ingestion.formats.outcome import Outcome, Parsed, ParseError, Skipped, Stored
from services.ingestion.store import PreparedRecord
from services.ingestion.validation import Violation as FieldProblem
from services.ingestion.validation import validate

__all__ = ["Prepared", "Rejected", "Violation", "prepare_records", "record_key"]


class Violation(NamedTuple):
    field: str
    reason: str
    description: str


@dataclass(frozen=True, slots=True)
class Rejected:
    index: int
    natural_key: str
    violations: list[Violation]
    record: bytes | None  # the wire form as received, when there was one
    raw: str  # the source line, for file input


@dataclass
class Prepared:
    records: list[PreparedRecord] = field(default_factory=list)
    rejected: list[Rejected] = field(default_factory=list)
    skipped: list[Skipped] = field(default_factory=list)


def record_key(record: dom.Record) -> str:
    return f"{record.record_type}:{'|'.join(record.natural_key())}"


def _accept(out: Prepared, index: int, record: dom.Record) -> None:
    out.records.append(
        PreparedRecord(
            index=index,
            kind=record.record_type,
            record_key=record_key(record),
            content_hash=record.content_hash(),
            payload=record_payload(record),
        )
    )


def prepare_records(
    items: Iterable[records_pb2.Record | Outcome], *, base_path: str, from_file: bool = False
) -> Prepared:
    """`base_path` prefixes field paths: "records" gives records[3].consumption.quantity.

    Wire records are indexed by position; file outcomes by their line number."""
    out = Prepared()
    for position, item in enumerate(items):
        if type(item) is Parsed:
            # A file reader yields Parsed only for records it validated already: validating twice
            # costs time only.
            _accept(out, item.line_no, item.record)
            continue
        if type(item) is Stored:
            out.records.append(
                PreparedRecord(item.line_no, item.kind, item.record_key, item.content_hash, item.payload)
            )
            continue
        if isinstance(item, Skipped):
            out.skipped.append(item)
            continue
        if isinstance(item, ParseError):
            found = item.violations or (FieldProblem(item.field_path, item.reason_code, item.description),)
            listed = [
                Violation(f"{base_path}[{item.line_no}].{v.field_path}", v.reason_code, v.description)
                for v in found
            ]
            out.rejected.append(Rejected(item.line_no, "", listed, None, item.raw))
            continue
        index = item.line_no if isinstance(item, Parsed) else position
        prefix = f"{base_path}[{index}]"
        if isinstance(item, Parsed):
            record: dom.Record = item.record
            wire = None
        else:
            item = cast(records_pb2.Record, item)  # every file outcome was handled above
            wire = item.SerializeToString()
            try:
                record = record_from_proto(item)
            except ConversionError as exc:
                out.rejected.append(
                    Rejected(
                        index,
                        "",
                        [
                            Violation(f"{prefix}.{v.field_path}", v.reason_code, v.description)
                            for v in exc.violations
                        ],
                        wire,
                        "",
                    )
                )
                continue
        # A file reader yields Parsed only for records it validated already: validating twice costs time only.
        problems = [] if isinstance(item, Parsed) else validate(record)
        if problems:
            out.rejected.append(
                Rejected(
                    index,
                    record_key(record),
                    [Violation(f"{prefix}.{v.field_path}", v.reason_code, v.description) for v in problems],
                    wire if wire is not None else record_to_proto(record).SerializeToString(),
                    "",
                )
            )
            continue
        _accept(out, index, record)
    return out
