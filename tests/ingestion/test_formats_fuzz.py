"""Property tests: whatever the bytes, readers answer with outcomes (never an exception), errors name a field,
and everything they accept passes validation. Validation itself never raises on ill-typed fields."""

from __future__ import annotations

import csv
import io
import json
import zipfile
from collections.abc import Callable, Iterable
from dataclasses import fields
from datetime import date, datetime
from decimal import Decimal

import openpyxl
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from openpyxl.cell.cell import ILLEGAL_CHARACTERS_RE

from services.ingestion.formats import Parsed, ParseError, Skipped, read_file
from services.ingestion.formats.bcb_ptax import read_ptax
from services.ingestion.formats.bcb_sgs import read_sgs
from services.ingestion.formats.generic import read_csv, read_parquet
from services.ingestion.formats.ibge_sidra import read_sidra
from services.ingestion.formats.openmeteo import read_openmeteo
from services.ingestion.formats.sapiens import COLUMNS, SHEET, read_sapiens_csv, read_sapiens_xlsx
from services.ingestion.records import RECORD_TYPES, Consumption, Record
from services.ingestion.validation import ReasonCode, validate

FUZZ = settings(max_examples=120, deadline=None, database=None, suppress_health_check=[HealthCheck.too_slow])


def check(outcomes: Iterable[object]) -> list[object]:
    seen = list(outcomes)
    for o in seen:
        assert isinstance(o, Parsed | ParseError | Skipped), o
        assert o.line_no >= 0
        if isinstance(o, ParseError):
            assert o.field_path and isinstance(o.reason_code, ReasonCode) and o.violations
            for v in o.violations:
                assert v.field_path and isinstance(v.reason_code, ReasonCode)
                (v.field_path + v.description).encode("utf-8")  # valid in a protobuf string
            o.raw.encode("utf-8")  # storable: no lone surrogates
            assert "\x00" not in o.raw
        elif isinstance(o, Parsed):
            assert validate(o.record) == [], o.record
    return seen


# Cells a little more likely than random text to get deep into the readers.
PLAUSIBLE = st.sampled_from(
    [
        "N/A",
        "",
        " ",
        "UN",
        "MT",
        "CX",
        "SR",
        "UND",
        "10",
        "0",
        "-1",
        "1,5",
        "1.5",
        "11.650",
        "1e9",
        "NaN",
        "02/12/2024",
        "31/02/2024",
        "12/31/2024",
        "2024-12-02",
        "02/12/2024 00:00",
        "94657",
        "ALMOX-BA",
        "ESCRITÓRIO",
        "010601",
        "SERVIÇOS TOMADOS",
        "\x00",
        "\ufeff",
        '"',
        ";",
        ",",
    ]
)
CELL = st.one_of(PLAUSIBLE, st.text(max_size=12))


def _csv_text(rows: list[list[str]], header: Iterable[str], delimiter: str) -> bytes:
    out = io.StringIO()
    writer = csv.writer(out, delimiter=delimiter)
    writer.writerow(header)
    writer.writerows(rows)
    return out.getvalue().encode("utf-8", "surrogatepass")


@FUZZ
@given(
    rows=st.lists(st.lists(CELL, min_size=9, max_size=13), max_size=6),
    delimiter=st.sampled_from([";", ","]),
    tail=st.binary(max_size=40),
)
def test_sapiens_csv_never_raises(rows: list[list[str]], delimiter: str, tail: bytes) -> None:
    data = _csv_text(rows, COLUMNS, delimiter) + tail
    check(read_sapiens_csv(io.BytesIO(data)))


@FUZZ
@given(text=st.text(max_size=300))
def test_sapiens_csv_random_text(text: str) -> None:
    header = ";".join(COLUMNS) + "\n"
    check(read_sapiens_csv(io.BytesIO((header + text).encode("utf-8", "surrogatepass"))))
    check(read_sapiens_csv(io.BytesIO(text.encode("utf-8", "surrogatepass"))))


@FUZZ
@given(record_type=st.sampled_from(sorted(RECORD_TYPES)), data=st.data())
def test_generic_csv_never_raises(record_type: str, data: st.DataObject) -> None:
    names = [f.name for f in fields(RECORD_TYPES[record_type])]
    header = data.draw(st.lists(st.sampled_from([*names, "bogus"]), max_size=len(names) + 1)) or names
    rows = data.draw(st.lists(st.lists(CELL, min_size=len(header), max_size=len(header) + 1), max_size=5))
    check(read_csv(io.BytesIO(_csv_text(rows, header, ",")), record_type))


@FUZZ
@given(data=st.binary(max_size=300))
def test_binary_garbage_is_a_file_error(data: bytes) -> None:
    readers: list[Callable[[io.BytesIO], Iterable[object]]] = [
        read_sapiens_xlsx,
        read_sapiens_csv,
        lambda s: read_csv(s, "consumption"),
        lambda s: read_parquet(s, "site"),
        lambda s: read_ptax(s, currency="usd"),
        lambda s: read_sgs(s, series_id="a.b"),
        read_sidra,
        lambda s: read_openmeteo(s, city="x"),
        lambda s: read_file(s, filename="upload.bin", record_type="site"),
    ]
    for reader in readers:
        check(reader(io.BytesIO(data)))
    check(read_sapiens_xlsx(io.BytesIO(b"PK\x03\x04" + data)))
    check(read_parquet(io.BytesIO(b"PAR1" + data + b"PAR1"), "site"))


JSON = st.recursive(
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=8),
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=6), children, max_size=4)
    ),
    max_leaves=20,
)


def _json(document: object) -> io.BytesIO:
    return io.BytesIO(json.dumps(document).encode())


@FUZZ
@given(document=JSON)
def test_feed_readers_never_raise_on_any_json(document: object) -> None:
    check(read_ptax(_json(document), currency="usd"))
    check(read_sgs(_json(document), series_id="a.b"))
    check(read_sidra(_json(document)))
    check(read_openmeteo(_json(document), city="x"))


def _field(names: list[str], plausible: st.SearchStrategy) -> st.SearchStrategy:
    return st.dictionaries(st.sampled_from(names), st.one_of(plausible, JSON), max_size=len(names))


@FUZZ
@given(
    quotes=st.lists(
        _field(
            ["cotacaoCompra", "cotacaoVenda", "dataHoraCotacao", "tipoBoletim"],
            st.sampled_from(
                [
                    5.1,
                    0,
                    -1,
                    1e308,
                    "2025-04-23 13:06:30.443",
                    "2025-02-30 13:00:00",
                    "Fechamento",
                    "Abertura",
                    "5,1",
                ]
            ),
        ),
        max_size=6,
    ),
    sgs=st.lists(
        _field(
            ["data", "valor"], st.sampled_from(["01/01/2025", "31/02/2025", "11.75", "11,75", "", "1e999"])
        ),
        max_size=6,
    ),
    sidra=st.lists(
        _field(
            ["NC", "MN", "V", "D2C", "D3C"],
            st.sampled_from(["1", "%", "0.16", "-", "...", "63", "202501", "202513", "Valor"]),
        ),
        max_size=6,
    ),
)
def test_feed_readers_on_near_valid_elements(quotes: list, sgs: list, sidra: list) -> None:
    check(read_ptax(_json({"value": quotes}), currency="usd"))
    check(read_sgs(_json({"data": sgs}), series_id="a.b"))
    check(read_sidra(_json(sidra)))


@FUZZ
@given(
    times=st.lists(
        st.one_of(
            st.sampled_from(["2024-01-01T00:00", "2024-01-01T01:00", "2024-01-02T00:00", "2024-01-01T00:30"]),
            st.text(max_size=16),
        ),
        max_size=30,
    ),
    values=st.lists(
        st.one_of(st.none(), st.floats(-1e6, 1e6), st.integers(-10, 1000), st.text(max_size=3)), max_size=30
    ),
    offset=st.one_of(st.integers(-100_000, 100_000), st.text(max_size=3)),
)
def test_openmeteo_on_near_valid_documents(times: list, values: list, offset: object) -> None:
    series = (
        (values * (len(times) // max(len(values), 1) + 1))[: len(times)] if values else [None] * len(times)
    )
    document = {
        "utc_offset_seconds": offset,
        "hourly_units": {
            "temperature_2m": "°C",
            "relative_humidity_2m": "%",
            "precipitation": "mm",
            "wind_speed_10m": "km/h",
        },
        "hourly": {
            "time": times,
            "temperature_2m": series,
            "relative_humidity_2m": series,
            "precipitation": series,
            "wind_speed_10m": series,
        },
    }
    check(read_openmeteo(_json(document), city="x"))


@FUZZ
@given(
    rows=st.lists(
        st.lists(
            st.one_of(
                CELL,
                st.integers(-(10**12), 10**12),
                st.floats(allow_nan=True),
                st.datetimes(min_value=datetime(1900, 1, 1)),
                st.none(),
            ),
            min_size=11,
            max_size=11,
        ),
        max_size=4,
    )
)
def test_sapiens_xlsx_cells_of_any_type(rows: list[list[object]]) -> None:
    workbook = openpyxl.Workbook()
    sheet = workbook.active
    sheet.title = SHEET
    sheet.append(list(COLUMNS))
    for row in rows:
        # openpyxl refuses to *write* control characters; the reader's handling of them is fuzzed via CSV.
        sheet.append([ILLEGAL_CHARACTERS_RE.sub("", v) if isinstance(v, str) else v for v in row])
    sink = io.BytesIO()
    workbook.save(sink)
    check(read_sapiens_xlsx(io.BytesIO(sink.getvalue())))


def test_xlsx_zip_with_garbage_members() -> None:
    sink = io.BytesIO()
    with zipfile.ZipFile(sink, "w") as archive:
        archive.writestr("[Content_Types].xml", "<not-xml")
        archive.writestr("xl/workbook.xml", "\x00\x01")
    check(read_sapiens_xlsx(io.BytesIO(sink.getvalue())))


ANY_VALUE = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(),
    st.text(max_size=8),
    st.decimals(),
    st.floats(),
    st.dates(),
    st.datetimes(),
    st.lists(st.text(max_size=3), max_size=2).map(tuple),
    st.lists(st.integers(), max_size=2),
)


@FUZZ
@given(record_type=st.sampled_from(sorted(RECORD_TYPES)), data=st.data())
def test_validate_never_raises_and_names_the_field(record_type: str, data: st.DataObject) -> None:
    cls = RECORD_TYPES[record_type]
    values = {f.name: data.draw(ANY_VALUE, label=f.name) for f in fields(cls)}
    record: Record = cls(**values)
    for violation in validate(record):
        assert violation.field_path.startswith(f"{record_type}.")
        assert violation.field_path.split(".", 1)[1] in {f.name for f in fields(cls)}
        assert isinstance(violation.reason_code, ReasonCode)


def test_fuzz_sanity_a_good_line_is_parsed() -> None:
    row = [
        "BAFRD017",
        "010825",
        "PREGO",
        "MATERIAL CIVIL",
        "LEMOS",
        "10",
        "UN",
        "N/A",
        "94657",
        "02/12/2024",
        "02/12/2024",
    ]
    (_material, _site, _supplier, line) = check(read_sapiens_csv(io.BytesIO(_csv_text([row], COLUMNS, ";"))))
    assert isinstance(line, Parsed) and isinstance(line.record, Consumption)
    assert line.record.quantity == Decimal(10) and line.record.solicited_date == date(2024, 12, 2)
