"""Generic CSV and Parquet readers: round trips of every record type, strict headers, native Parquet types."""

from __future__ import annotations

import io
from datetime import UTC, date, datetime, timedelta, timezone
from decimal import Decimal

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from services.ingestion.formats import FileFormat, Parsed, ParseError, Skipped, detect_format, read_file
from services.ingestion.formats.generic import read_csv, read_parquet, write_csv
from services.ingestion.records import (
    RECORD_TYPES,
    Consumption,
    ConsumptionFlag,
    Criticality,
    ExternalObservation,
    Material,
    MovementKind,
    PurchaseOrder,
    Record,
    Site,
    SiteType,
    StockMovement,
    StockSnapshot,
    Supplier,
)
from services.ingestion.validation import ReasonCode, validate

SAMPLES: list[Record] = [
    Material("010601", "MASCARA DESCARTAVEL", "EPI", "CX", Criticality.HIGH, "A", True),
    Material("0001", "SERVIÇOS TOMADOS", "SERVIÇOS PRESTADOS", "SR", stocked=False),
    Site("ALMOX-BA", "", "BA", SiteType.WAREHOUSE),
    Site("N/A"),
    Supplier("BAHIALIMP", "BahiaLimp"),
    Consumption(
        "94657",
        "010825#1",
        "010825",
        "BAJSS002-3",
        "L.M.C LEMOS",
        Decimal("1643.4"),
        "KG",
        date(2024, 12, 2),
        None,
        date(2024, 11, 30),
        "FERRO E AÇO",
        (ConsumptionFlag.NEGATIVE_LEAD_TIME,),
    ),
    StockSnapshot("010825", "ALMOX-BA", Decimal(0), date(2025, 1, 31)),
    StockMovement(
        "MV-1",
        MovementKind.TRANSFER,
        "010825",
        "ALMOX-BA",
        Decimal(5),
        datetime(2025, 1, 31, 14, 0, tzinfo=timezone(timedelta(hours=-3))),
        "BAFRD017",
    ),
    StockMovement(
        "MV-2", MovementKind.ADJUSTMENT, "010825", "ALMOX-BA", Decimal(-2), datetime(2025, 2, 1, tzinfo=UTC)
    ),
    PurchaseOrder(
        "PO-9", "010825", "ALMOX-BA", "L.M.C LEMOS", Decimal(10), date(2025, 1, 2), date(2025, 1, 9), None
    ),
    ExternalObservation("ptax.usd.sell", date(2025, 1, 2), Decimal("6.2086"), "BRL/USD", "BCB PTAX"),
]


def test_samples_cover_every_record_type_and_are_valid() -> None:
    assert {type(r) for r in SAMPLES} == set(RECORD_TYPES.values())
    for record in SAMPLES:
        assert validate(record) == []


@pytest.mark.parametrize("record_type", sorted(RECORD_TYPES))
def test_csv_round_trip(record_type: str) -> None:
    records = [r for r in SAMPLES if r.record_type == record_type]
    sink = io.StringIO()
    assert write_csv(records, sink, record_type) == len(records)
    data = sink.getvalue().encode()
    assert detect_format(f"{record_type}.csv", data[:4096]) is FileFormat.CSV
    outcomes = list(read_file(io.BytesIO(data), filename=f"{record_type}.csv", record_type=record_type))
    assert [o.record for o in outcomes if isinstance(o, Parsed)] == records
    assert [o.line_no for o in outcomes] == list(range(1, len(records) + 1))
    assert [o.record.content_hash() for o in outcomes] == [r.content_hash() for r in records]


def _csv(text: str, record_type: str = "site") -> list:
    return list(read_csv(io.BytesIO(text.encode()), record_type))


def test_header_must_name_fields_exactly() -> None:
    (error,) = _csv("code,clinet\nX,Y\n")
    assert (error.line_no, error.field_path, error.reason_code) == (
        0,
        "header.clinet",
        ReasonCode.INVALID_SCHEMA,
    )
    (error,) = _csv("name\nX\n", "supplier")
    assert error.field_path == "header.code"
    (error,) = _csv("code,code\nX,Y\n")
    assert error.field_path == "header.code"
    (error,) = _csv("")
    assert (error.field_path, error.reason_code) == ("header", ReasonCode.INVALID_SCHEMA)


def test_optional_columns_take_their_defaults() -> None:
    (parsed,) = _csv("code\nBAFRD017\n")
    assert parsed.record == Site("BAFRD017")


def test_unknown_record_type() -> None:
    (error,) = _csv("code\nX\n", "invoice")
    assert (error.field_path, error.reason_code) == ("record_type", ReasonCode.UNKNOWN_VALUE)


CONSUMPTION_HEADER = (
    "requisition_id,line_key,material_code,site_code,supplier_code,"
    "quantity,unit,solicited_date,purchase_date\n"
)


@pytest.mark.parametrize(
    ("line", "path", "reason"),
    [
        ("R1,A#1,A,N/A,S,1.5,UND,2025-01-02,", "consumption.unit", ReasonCode.UNKNOWN_UNIT),
        ("R1,A#1,A,N/A,S,,UN,2025-01-02,", "consumption.quantity", ReasonCode.REQUIRED),
        ('R1,A#1,A,N/A,S,"1,5",UN,2025-01-02,', "consumption.quantity", ReasonCode.INVALID_FORMAT),
        ("R1,A#1,A,N/A,S,NaN,UN,2025-01-02,", "consumption.quantity", ReasonCode.INVALID_FORMAT),
        ("R1,A#1,A,N/A,S,1e20,UN,2025-01-02,", "consumption.quantity", ReasonCode.OUT_OF_RANGE),
        ("R1,A#1,A,N/A,S,1,UN,N/A,", "consumption.solicited_date", ReasonCode.INVALID_FORMAT),
        ("R1,A#1,A,N/A,S,1,UN,02/01/2025,", "consumption.solicited_date", ReasonCode.INVALID_FORMAT),
        ("R1,A#1,A,N/A,S,1,UN,2025-01-02,2025-13-01", "consumption.purchase_date", ReasonCode.INVALID_FORMAT),
        ("R1,A#1,,N/A,S,1,UN,2025-01-02,", "consumption.material_code", ReasonCode.REQUIRED),
    ],
)
def test_consumption_csv_errors_name_the_field(line: str, path: str, reason: ReasonCode) -> None:
    (error,) = _csv(CONSUMPTION_HEADER + line + "\n", "consumption")
    assert isinstance(error, ParseError)
    assert (error.line_no, error.field_path, error.reason_code) == (1, path, reason)
    assert error.raw


def test_consumption_csv_flags_are_recomputed_and_units_canonical() -> None:
    (parsed,) = _csv(CONSUMPTION_HEADER + "R1,A#1,A,N/A,S,20000,MT,2025-01-02,2025-01-01\n", "consumption")
    record = parsed.record
    assert record.unit == "M"
    assert set(record.flags) == {
        ConsumptionFlag.UNKNOWN_SITE,
        ConsumptionFlag.NEGATIVE_LEAD_TIME,
        ConsumptionFlag.QUANTITY_OUTLIER,
    }


def test_csv_blank_and_ragged_lines() -> None:
    outcomes = _csv("code,region\n\nBAFRD017,BA,extra\nX,ZZ\n")
    assert isinstance(outcomes[0], Skipped)
    assert (outcomes[1].field_path, outcomes[1].reason_code) == ("line", ReasonCode.INVALID_SCHEMA)
    assert (outcomes[2].field_path, outcomes[2].reason_code) == ("site.region", ReasonCode.UNKNOWN_VALUE)


def _parquet(table: pa.Table) -> io.BytesIO:
    sink = io.BytesIO()
    pq.write_table(table, sink, row_group_size=2)
    sink.seek(0)
    return sink


def test_parquet_native_types_in_batches() -> None:
    rows = 5
    table = pa.table(
        {
            "series_id": pa.array(["weather.salvador.precipitation_mm"] * rows),
            "date": pa.array([date(2025, 1, d) for d in range(1, rows + 1)], pa.date32()),
            "value": pa.array([Decimal("1.25")] * (rows - 1) + [None], pa.decimal128(10, 2)),
            "unit": pa.array(["mm"] * rows),
            "source": pa.array(["Open-Meteo"] * rows),
        }
    )
    data = _parquet(table)
    assert detect_format("x", data.getvalue()[:4]) is FileFormat.PARQUET
    outcomes = list(read_parquet(data, "external_observation", batch_size=2))
    parsed = [o for o in outcomes if isinstance(o, Parsed)]
    assert [o.line_no for o in parsed] == [1, 2, 3, 4]
    assert parsed[0].record.value == Decimal("1.25") and parsed[0].record.date == date(2025, 1, 1)
    (error,) = [o for o in outcomes if isinstance(o, ParseError)]
    assert (error.line_no, error.field_path, error.reason_code) == (
        5,
        "external_observation.value",
        ReasonCode.REQUIRED,
    )


def test_parquet_timestamps_floats_and_lists() -> None:
    table = pa.table(
        {
            "reference": ["MV-1", "MV-2"],
            "kind": ["issue", "teleport"],
            "material_code": ["010825", "010825"],
            "site_code": ["ALMOX-BA", "ALMOX-BA"],
            "quantity": pa.array([2.5, 1.0], pa.float64()),
            "at": pa.array([datetime(2025, 1, 2, 10, tzinfo=UTC)] * 2, pa.timestamp("us", tz="UTC")),
        }
    )
    outcomes = list(read_parquet(_parquet(table), StockMovement))
    assert outcomes[0].record.quantity == Decimal("2.5")
    assert outcomes[0].record.at == datetime(2025, 1, 2, 10, tzinfo=UTC)
    assert (outcomes[1].field_path, outcomes[1].reason_code) == (
        "stock_movement.kind",
        ReasonCode.UNKNOWN_VALUE,
    )


def test_parquet_naive_timestamp_is_rejected() -> None:
    table = pa.table(
        {
            "reference": ["MV-1"],
            "kind": ["receipt"],
            "material_code": ["010825"],
            "site_code": ["ALMOX-BA"],
            "quantity": ["3"],
            "at": pa.array([datetime(2025, 1, 2, 10)], pa.timestamp("us")),
        }
    )
    (error,) = list(read_parquet(_parquet(table), "stock_movement"))
    assert (error.field_path, error.reason_code) == ("stock_movement.at", ReasonCode.INVALID_FORMAT)


def test_parquet_header_and_corrupt_file() -> None:
    (error,) = list(read_parquet(_parquet(pa.table({"code": ["X"], "colour": ["red"]})), "site"))
    assert (error.line_no, error.field_path) == (0, "header.colour")
    (error,) = list(read_parquet(io.BytesIO(b"PAR1 definitely not parquet PAR1"), "site"))
    assert (error.line_no, error.field_path, error.reason_code) == (0, "file", ReasonCode.INVALID_FORMAT)


def test_generic_formats_need_a_record_type() -> None:
    (error,) = list(read_file(io.BytesIO(b"code\nX\n"), filename="sites.csv"))
    assert (error.field_path, error.reason_code) == ("record_type", ReasonCode.REQUIRED)
    (error,) = list(read_file(io.BytesIO(b"\x00\x01\x02"), filename="blob.bin"))
    assert (error.field_path, error.reason_code) == ("file", ReasonCode.UNKNOWN_VALUE)
