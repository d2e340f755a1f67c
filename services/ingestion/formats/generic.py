"""Generic CSV and Parquet readers: one record type per file, columns named after the dataclass fields.

CSV (the platform's own format, not a locale's): UTF-8 (BOM optional), "," delimiter, "." decimal point,
dates YYYY-MM-DD, timestamps ISO 8601 with an offset, flags joined with "|", an empty cell is "no value"
(REQUIRED for a required field, the default for a field that has one). Text is taken literally: "N/A" in a
site code is the explicit unknown site, "N/A" in a date is INVALID_FORMAT.

Parquet: the same columns; typed columns (string, integer, decimal, double, date32, timestamp, list of
strings for flags) are read natively, string columns through the CSV rules. Read batch by batch
(``iter_batches``), so memory is bounded by ``batch_size`` rows.

Columns for every field without a default are required; an unknown column rejects the header (a misspelt
optional column would otherwise be silently ignored).
"""

from __future__ import annotations

import csv
import io
import math
import re
import types
import typing
from collections.abc import Iterable, Iterator
from dataclasses import MISSING, dataclass, fields, replace
from datetime import date, datetime
from decimal import Decimal
from enum import StrEnum
from typing import Any, TextIO

import pyarrow as pa  # type: ignore[import-untyped]
import pyarrow.parquet as pq  # type: ignore[import-untyped]

from services.ingestion.formats.outcome import (
    MAX_RAW,
    Outcome,
    Parsed,
    ParseError,
    Source,
    csv_rows,
    file_error,
    open_binary,
)
from services.ingestion.formats.values import ValueProblem, parse_decimal, parse_iso_date, parse_iso_datetime
from services.ingestion.records import (
    RECORD_TYPES,
    Consumption,
    Record,
    canonical_decimal,
    decimal_from_float,
)
from services.ingestion.units import UnknownUnitError, canonical_unit
from services.ingestion.validation import ReasonCode, Violation, quality_flags, validate

__all__ = ["FLAG_SEPARATOR", "read_csv", "read_parquet", "record_class", "write_csv"]

FLAG_SEPARATOR = "|"
_SURROGATE = re.compile("[\udc80-\udcff]")


def record_class(record_type: str | type[Record]) -> type[Record]:
    """The class of a ``record_type`` name ("consumption"), or the class itself; KeyError if unknown."""
    if isinstance(record_type, type) and issubclass(record_type, Record):
        return record_type
    return RECORD_TYPES[str(record_type)]


@dataclass(frozen=True, slots=True)
class _Field:
    name: str
    kind: Any  # str | int | bool | Decimal | date | datetime | a StrEnum subclass | tuple (of a StrEnum)
    item: Any  # enum of a tuple field
    optional: bool  # None is a valid value
    default: Any  # MISSING when the column is required


def _fields(cls: type[Record]) -> list[_Field]:
    hints = typing.get_type_hints(cls)
    specs: list[_Field] = []
    for f in fields(cls):  # type: ignore[arg-type]
        hint = hints[f.name]
        optional = False
        if isinstance(hint, types.UnionType):
            args = [a for a in hint.__args__ if a is not type(None)]
            optional = len(args) < len(hint.__args__)
            hint = args[0]
        item = None
        if typing.get_origin(hint) is tuple:
            item = typing.get_args(hint)[0]
            hint = tuple
        specs.append(_Field(f.name, hint, item, optional, f.default))
    return specs


class _Coercer:
    """Turns a cell (text, or a native Parquet value) into a field value; raises ValueProblem."""

    def __init__(self, spec: _Field, unit: bool) -> None:
        self.spec = spec
        self.unit = unit  # a unit of measure, canonicalised (MT -> M) or UNKNOWN_UNIT

    def __call__(self, value: object) -> Any:
        kind = self.spec.kind
        if isinstance(value, str):
            if _SURROGATE.search(value):
                raise ValueProblem(ReasonCode.INVALID_FORMAT, "bytes that are not valid UTF-8")
            return self.text(value.strip())
        if kind is Decimal:
            if isinstance(value, Decimal):
                if not value.is_finite():
                    raise ValueProblem(ReasonCode.OUT_OF_RANGE, "must be finite")
                return value
            if isinstance(value, int) and not isinstance(value, bool):
                return Decimal(value)
            if isinstance(value, float):
                if not math.isfinite(value):
                    raise ValueProblem(ReasonCode.OUT_OF_RANGE, "must be finite")
                return decimal_from_float(value)
        elif kind is int and isinstance(value, int) and not isinstance(value, bool):
            return value
        elif kind is bool and isinstance(value, bool):
            return value
        elif kind is date and isinstance(value, date) and not isinstance(value, datetime):
            return value
        elif kind is datetime and isinstance(value, datetime):
            return value
        elif kind is tuple and isinstance(value, list | tuple):
            return tuple(self.enum(self.spec.item, str(v)) for v in value)
        raise ValueProblem(
            ReasonCode.INVALID_FORMAT, f"expected {self._kind_name()}, got {type(value).__name__}"
        )

    def _kind_name(self) -> str:
        return getattr(self.spec.kind, "__name__", str(self.spec.kind))

    @staticmethod
    def enum(enum: type[StrEnum], text: str) -> StrEnum:
        try:
            return enum(text.strip())
        except ValueError as exc:
            options = ", ".join(m.value for m in enum)
            raise ValueProblem(ReasonCode.UNKNOWN_VALUE, f"{text!r} is not one of: {options}") from exc

    def text(self, text: str) -> Any:
        kind = self.spec.kind
        if kind is str:
            if self.unit:
                try:
                    return canonical_unit(text)
                except UnknownUnitError as exc:
                    raise ValueProblem(ReasonCode.UNKNOWN_UNIT, f"unknown unit {text!r}") from exc
            return text
        if kind is Decimal:
            return parse_decimal(text, ".")
        if kind is int:
            if not re.fullmatch(r"[+-]?\d{1,18}", text, re.ASCII):
                raise ValueProblem(ReasonCode.INVALID_FORMAT, f"{text[:40]!r} is not an integer")
            return int(text)
        if kind is bool:
            lowered = text.lower()
            if lowered in ("true", "1"):
                return True
            if lowered in ("false", "0"):
                return False
            raise ValueProblem(ReasonCode.INVALID_FORMAT, f"{text[:40]!r} is not true or false")
        if kind is date:
            return parse_iso_date(text)
        if kind is datetime:
            return parse_iso_datetime(text)
        if kind is tuple:
            return tuple(
                self.enum(self.spec.item, part) for part in text.split(FLAG_SEPARATOR) if part.strip()
            )
        if isinstance(kind, type) and issubclass(kind, StrEnum):
            return self.enum(kind, text)
        raise ValueProblem(ReasonCode.INVALID_FORMAT, f"unsupported field type {self._kind_name()}")


class _RowBuilder:
    """Checks a header against a record class and builds records from rows."""

    def __init__(self, cls: type[Record]) -> None:
        self.cls = cls
        self.specs = {s.name: s for s in _fields(cls)}
        self.coercers = {name: _Coercer(spec, name in cls.unit_fields) for name, spec in self.specs.items()}

    def header_problems(self, columns: list[str]) -> list[Violation]:
        problems: list[Violation] = []
        seen: set[str] = set()
        for column in columns:
            if column not in self.specs:
                shown = repr(column)[1:-1][:60]  # a column name is untrusted text: escaped, cut
                problems.append(
                    Violation(
                        f"header.{shown}",
                        ReasonCode.INVALID_SCHEMA,
                        f"{column!r} is not a field of {self.cls.record_type}",
                    )
                )
            elif column in seen:
                problems.append(Violation(f"header.{column}", ReasonCode.INVALID_SCHEMA, "column repeated"))
            seen.add(column)
        for name, spec in self.specs.items():
            if name not in seen and spec.default is MISSING:
                problems.append(
                    Violation(f"header.{name}", ReasonCode.INVALID_SCHEMA, f"column {name} is missing")
                )
        return problems

    def build(self, line_no: int, row: dict[str, object], raw: str) -> Outcome:
        prefix = self.cls.record_type
        values: dict[str, Any] = {}
        problems: list[Violation] = []
        for name, spec in self.specs.items():
            cell = row.get(name)
            if cell is None or (isinstance(cell, str) and not cell.strip()):
                if spec.optional:
                    values[name] = None
                elif spec.default is not MISSING:
                    values[name] = spec.default
                else:
                    problems.append(Violation(f"{prefix}.{name}", ReasonCode.REQUIRED, "required"))
                continue
            try:
                values[name] = self.coercers[name](cell)
            except ValueProblem as problem:
                problems.append(Violation(f"{prefix}.{name}", problem.reason, problem.description))
        if problems:
            return ParseError.of(line_no, problems, raw)
        record = self.cls(**values)
        problems = validate(record)
        if problems:
            return ParseError.of(line_no, problems, raw)
        if isinstance(record, Consumption):
            # Our own flags are recomputed, so a file cannot omit the ones its lines deserve.
            record = _replace_flags(record)
        return Parsed(line_no, record)


def _replace_flags(record: Consumption) -> Consumption:
    return replace(record, flags=quality_flags(record))


# -------------------------------------------------------------------------------------------------- CSV


def read_csv(
    source: Source, record_type: str | type[Record], *, encoding: str = "utf-8-sig"
) -> Iterator[Outcome]:
    """Stream a generic CSV of ``record_type`` records."""
    try:
        builder = _RowBuilder(record_class(record_type))
    except KeyError:
        yield file_error(
            "record_type",
            ReasonCode.UNKNOWN_VALUE,
            f"{record_type!r} is not one of: {', '.join(RECORD_TYPES)}",
        )
        return
    with open_binary(source) as handle:
        text = io.TextIOWrapper(handle, encoding=encoding, errors="surrogateescape", newline="")
        try:
            yield from _read_csv_rows(text, builder)
        finally:
            text.detach()


def _read_csv_rows(text: TextIO, builder: _RowBuilder) -> Iterator[Outcome]:
    reader = csv.reader(text)
    try:
        header = [h.strip() for h in next(reader)]
    except StopIteration:
        yield file_error("header", ReasonCode.INVALID_SCHEMA, "no header line")
        return
    except csv.Error as exc:
        yield file_error("header", ReasonCode.INVALID_FORMAT, f"unreadable header: {exc}")
        return
    problems = builder.header_problems(header)
    if problems:
        yield ParseError.of(0, problems, ",".join(header))
        return
    for item in csv_rows(reader, ","):
        if not isinstance(item, tuple):
            yield item
            continue
        line_no, values, raw = item
        if len(values) != len(header):
            yield file_error(
                "line",
                ReasonCode.INVALID_SCHEMA,
                f"expected {len(header)} fields, got {len(values)}",
                line_no=line_no,
                raw=raw,
            )
            continue
        yield builder.build(line_no, dict(zip(header, values, strict=True)), raw)


def _csv_cell(value: object) -> str:
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, StrEnum):
        return value.value
    if isinstance(value, Decimal):
        return canonical_decimal(value)
    if isinstance(value, datetime | date):
        return value.isoformat()
    if isinstance(value, tuple):
        return FLAG_SEPARATOR.join(_csv_cell(v) for v in value)
    return str(value)


def write_csv(records: Iterable[Record], sink: TextIO, record_type: str | type[Record]) -> int:
    """Write records of one type in the generic CSV format ``read_csv`` reads back; returns the row count."""
    cls = record_class(record_type)
    names = [f.name for f in fields(cls)]  # type: ignore[arg-type]
    writer = csv.writer(sink, lineterminator="\n")
    writer.writerow(names)
    count = 0
    for record in records:
        if not isinstance(record, cls):
            raise TypeError(f"expected {cls.__name__}, got {type(record).__name__}")
        writer.writerow([_csv_cell(getattr(record, n)) for n in names])
        count += 1
    return count


# ---------------------------------------------------------------------------------------------- Parquet


def read_parquet(
    source: Source, record_type: str | type[Record], *, batch_size: int = 4096
) -> Iterator[Outcome]:
    """Stream a generic Parquet file of ``record_type`` records, one row group batch at a time."""
    try:
        builder = _RowBuilder(record_class(record_type))
    except KeyError:
        yield file_error(
            "record_type",
            ReasonCode.UNKNOWN_VALUE,
            f"{record_type!r} is not one of: {', '.join(RECORD_TYPES)}",
        )
        return
    with open_binary(source) as handle:
        try:
            parquet = pq.ParquetFile(handle)
        except (pa.ArrowException, OSError, ValueError) as exc:
            yield file_error("file", ReasonCode.INVALID_FORMAT, f"not a readable Parquet file: {exc}")
            return
        columns = list(parquet.schema_arrow.names)
        problems = builder.header_problems(columns)
        if problems:
            yield ParseError.of(0, problems, ",".join(columns))
            return
        line_no = 0
        try:
            for batch in parquet.iter_batches(batch_size=batch_size):
                for row in batch.to_pylist():
                    line_no += 1
                    yield builder.build(line_no, row, repr(row)[:MAX_RAW])
        except (pa.ArrowException, OSError, ValueError, OverflowError) as exc:
            yield file_error(
                "file", ReasonCode.INVALID_FORMAT, f"unreadable Parquet data: {exc}", line_no=line_no + 1
            )
        finally:
            parquet.close()
