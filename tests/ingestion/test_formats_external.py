"""The public feeds (BCB PTAX and SGS, IBGE SIDRA, Open-Meteo), from the real files and from broken ones."""

from __future__ import annotations

import io
import json
from collections import Counter
from datetime import date, datetime, timedelta
from decimal import Decimal
from pathlib import Path

import pytest

from services.ingestion.formats import (
    FileFormat,
    Parsed,
    ParseError,
    Skipped,
    SkipReason,
    detect_format,
    read_file,
    sniff,
)
from services.ingestion.formats.bcb_ptax import read_ptax
from services.ingestion.formats.bcb_sgs import read_sgs
from services.ingestion.formats.ibge_sidra import read_sidra
from services.ingestion.formats.openmeteo import city_from_filename, read_openmeteo
from services.ingestion.records import ExternalObservation
from services.ingestion.validation import ReasonCode, validate

DATA = Path(__file__).resolve().parents[2] / "data"
EXTERNAL = DATA / "external"
CITIES = ["fortaleza_ce", "recife_pe", "rio_de_janeiro_rj", "salvador_ba", "sao_paulo_sp"]


def observations(outcomes: list) -> list[ExternalObservation]:
    return [o.record for o in outcomes if isinstance(o, Parsed)]


def as_bytes(document: object) -> io.BytesIO:
    return io.BytesIO(json.dumps(document).encode())


# -------------------------------------------------------------------------------------------- real files


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        ("dadosSuprimentos.xlsx", FileFormat.SAPIENS_XLSX),
        ("external/bcb_ptax_usd.json", FileFormat.BCB_PTAX_JSON),
        ("external/bcb_ptax_eur.json", FileFormat.BCB_PTAX_JSON),
        ("external/bcb_sgs_selic.json", FileFormat.BCB_SGS_JSON),
        ("external/ibge_sidra_ipca.json", FileFormat.IBGE_SIDRA_JSON),
        *[(f"external/openmeteo_hourly_{c}.json", FileFormat.OPEN_METEO_JSON) for c in CITIES],
    ],
)
def test_detect_format_of_the_real_files_from_content_alone(name: str, expected: FileFormat) -> None:
    assert detect_format("upload.bin", sniff(DATA / name)) is expected
    assert detect_format(name, sniff(DATA / name)) is expected


@pytest.mark.parametrize("currency", ["usd", "eur"])
def test_ptax_keeps_one_closing_quote_per_day(currency: str) -> None:
    path = EXTERNAL / f"bcb_ptax_{currency}.json"
    outcomes = list(read_file(path))
    elements = len(json.loads(path.read_text())["value"])
    assert elements == 13_573
    obs = observations(outcomes)
    skipped = Counter(o.reason for o in outcomes if isinstance(o, Skipped))
    assert skipped == {SkipReason.NOT_CLOSING_BULLETIN: 10_847, SkipReason.SUPERSEDED_CLOSING: 1}
    assert not [o for o in outcomes if isinstance(o, ParseError)]
    closing_lines = {o.line_no for o in outcomes if isinstance(o, Parsed)}
    assert len(closing_lines) + sum(skipped.values()) == elements  # one verdict per element
    assert Counter(o.series_id for o in obs) == {f"ptax.{currency}.sell": 2725, f"ptax.{currency}.buy": 2725}
    assert {(o.unit, o.source) for o in obs} == {(f"BRL/{currency.upper()}", "BCB PTAX")}
    days = [o.date for o in obs if o.series_id.endswith("sell")]
    assert (days[0], days[-1]) == (date(2015, 1, 2), date(2025, 11, 10))  # 11/11 had no closing yet
    assert len(set(days)) == len(days)
    for o in obs:
        assert validate(o) == []


def test_ptax_usd_values_are_the_closing_bulletin() -> None:
    obs = {
        (o.series_id, o.date): o.value for o in observations(list(read_file(EXTERNAL / "bcb_ptax_usd.json")))
    }
    assert obs[("ptax.usd.sell", date(2015, 1, 2))] == Decimal("2.6929")
    assert obs[("ptax.usd.sell", date(2025, 4, 23))] == Decimal("5.688")  # two closings that day, same value
    assert obs[("ptax.usd.buy", date(2025, 4, 22))] == Decimal("5.749")


def test_sgs_selic_daily_values() -> None:
    outcomes = list(read_file(EXTERNAL / "bcb_sgs_selic.json"))
    obs = observations(outcomes)
    assert len(outcomes) == len(obs) == 3968
    assert {(o.series_id, o.unit, o.source) for o in obs} == {("selic.target_pct_year", "% a.a.", "BCB SGS")}
    assert (obs[0].date, obs[0].value) == (date(2015, 1, 1), Decimal("11.75"))
    assert (obs[-1].date, obs[-1].value) == (date(2025, 11, 11), Decimal("15.00"))
    assert [o.date for o in obs] == [date(2015, 1, 1) + timedelta(days=n) for n in range(3968)]


def test_sidra_ipca_skips_its_header_row() -> None:
    outcomes = list(read_file(EXTERNAL / "ibge_sidra_ipca.json"))
    assert outcomes[0] == Skipped(0, SkipReason.HEADER, "SIDRA header row")
    obs = observations(outcomes)
    assert len(obs) == 130 and len(outcomes) == 131
    assert [o.line_no for o in outcomes[1:]] == list(range(1, 131))
    assert (obs[0].series_id, obs[0].date, obs[0].value, obs[0].unit) == (
        "ipca.monthly_pct",
        date(2015, 1, 1),
        Decimal("1.24"),
        "%",
    )
    assert obs[-1].date == date(2025, 10, 1)
    assert all(o.date.day == 1 for o in obs)


@pytest.mark.parametrize("city_file", CITIES)
def test_openmeteo_daily_aggregates_on_local_days(city_file: str) -> None:
    outcomes = list(read_file(EXTERNAL / f"openmeteo_hourly_{city_file}.json"))
    city = city_from_filename(f"openmeteo_hourly_{city_file}.json")
    obs = observations(outcomes)
    assert len(obs) == 1460 * 5
    names = Counter(o.series_id for o in obs)
    assert names == {
        f"weather.{city}.{n}": 1460
        for n in (
            "precipitation_mm",
            "temperature_mean_c",
            "temperature_max_c",
            "humidity_mean_pct",
            "wind_max_kmh",
        )
    }
    # 35,064 GMT hours = 1,461 GMT days; shifted to Brasília time the first and last local days are partial.
    partial = [o for o in outcomes if isinstance(o, Skipped)]
    assert len(partial) == 10 and {o.reason for o in partial} == {SkipReason.PARTIAL_DAY}
    assert not [o for o in outcomes if isinstance(o, ParseError)]
    days = sorted({o.date for o in obs})
    assert (days[0], days[-1], len(days)) == (date(2021, 11, 12), date(2025, 11, 10), 1460)


def test_openmeteo_salvador_first_local_day_by_hand() -> None:
    path = EXTERNAL / "openmeteo_hourly_salvador_ba.json"
    hourly = json.loads(path.read_text(), parse_float=Decimal)["hourly"]
    start = hourly["time"].index("2021-11-12T03:00")  # local midnight, UTC-3
    window = slice(start, start + 24)
    obs = {o.series_id: o for o in observations(list(read_file(path))) if o.date == date(2021, 11, 12)}
    assert obs["weather.salvador.precipitation_mm"].value == sum(hourly["precipitation"][window])
    assert obs["weather.salvador.temperature_max_c"].value == max(hourly["temperature_2m"][window])
    assert obs["weather.salvador.wind_max_kmh"].value == max(hourly["wind_speed_10m"][window])
    mean = Decimal(sum(hourly["relative_humidity_2m"][window])) / 24  # integers in the file
    assert obs["weather.salvador.humidity_mean_pct"].value == mean.quantize(Decimal("0.01"))
    assert obs["weather.salvador.temperature_mean_c"].unit == "°C"


# ---------------------------------------------------------------------------------------- broken inputs


def _hourly(hours: int, start: str = "2024-01-01T03:00", **overrides: object) -> dict:
    first = datetime.fromisoformat(start)
    doc = {
        "utc_offset_seconds": 0,
        "hourly_units": {
            "time": "iso8601",
            "temperature_2m": "°C",
            "relative_humidity_2m": "%",
            "precipitation": "mm",
            "wind_speed_10m": "km/h",
        },
        "hourly": {
            "time": [(first + timedelta(hours=h)).strftime("%Y-%m-%dT%H:%M") for h in range(hours)],
            "temperature_2m": [25.0] * hours,
            "relative_humidity_2m": [80] * hours,
            "precipitation": [0.5] * hours,
            "wind_speed_10m": [10.0] * hours,
        },
    }
    doc.update(overrides)
    return doc


def test_openmeteo_missing_hour_inside_the_file_is_incomplete_for_that_variable_only() -> None:
    doc = _hourly(72)
    doc["hourly"]["precipitation"][30] = None  # second local day
    outcomes = list(read_openmeteo(as_bytes(doc), city="testville"))
    errors = [o for o in outcomes if isinstance(o, ParseError)]
    assert [(e.field_path, e.reason_code, e.line_no) for e in errors] == [
        ("hourly.precipitation", ReasonCode.INCOMPLETE, 25)
    ]
    assert len(observations(outcomes)) == 3 * 5 - 1
    assert observations(outcomes)[0].value == Decimal("12.0")  # 24 x 0.5 mm


def test_openmeteo_rejects_other_units_and_implausible_values() -> None:
    doc = _hourly(24)
    doc["hourly_units"]["temperature_2m"] = "°F"
    doc["hourly"]["wind_speed_10m"][5] = 9999
    outcomes = list(read_openmeteo(as_bytes(doc), city="testville"))
    errors = {(o.field_path, o.reason_code) for o in outcomes if isinstance(o, ParseError)}
    assert errors == {
        ("hourly_units.temperature_2m", ReasonCode.INCONSISTENT),
        ("hourly.wind_speed_10m", ReasonCode.OUT_OF_RANGE),
    }
    assert {o.series_id for o in observations(outcomes)} == {
        "weather.testville.precipitation_mm",
        "weather.testville.humidity_mean_pct",
    }


def test_openmeteo_needs_a_city() -> None:
    (error,) = list(read_openmeteo(as_bytes(_hourly(24))))
    assert (error.field_path, error.reason_code) == ("city", ReasonCode.REQUIRED)


def _ptax(*elements: dict) -> io.BytesIO:
    return as_bytes({"@odata.context": "CotacaoMoedaPeriodo", "value": list(elements)})


def _quote(stamp: str, bulletin: str = "Fechamento", sell: object = 5.1, buy: object = 5.0) -> dict:
    return {"cotacaoCompra": buy, "cotacaoVenda": sell, "dataHoraCotacao": stamp, "tipoBoletim": bulletin}


def test_ptax_bad_elements_name_their_field() -> None:
    outcomes = list(
        read_ptax(
            _ptax(
                _quote("2025-01-02 13:00:00.1", bulletin="Meio-dia"),
                _quote("02/01/2025 13:00"),
                _quote("2025-01-03 13:00:00.1", sell="5,1"),
                _quote("2025-01-06 13:00:00.1", sell=-1),
                _quote("2025-01-07 13:00:00.1"),
            ),
            currency="USD",
        )
    )
    errors = [(o.line_no, o.field_path, o.reason_code) for o in outcomes if isinstance(o, ParseError)]
    assert errors == [
        (1, "value.tipoBoletim", ReasonCode.UNKNOWN_VALUE),
        (2, "value.dataHoraCotacao", ReasonCode.INVALID_FORMAT),
        (3, "value.cotacaoVenda", ReasonCode.INVALID_FORMAT),
        (4, "value.cotacaoVenda", ReasonCode.OUT_OF_RANGE),
    ]
    assert [(o.series_id, o.date) for o in observations(outcomes)] == [
        ("ptax.usd.sell", date(2025, 1, 7)),
        ("ptax.usd.buy", date(2025, 1, 7)),
    ]


def test_ptax_without_currency_is_refused() -> None:
    (error,) = list(read_ptax(_ptax(_quote("2025-01-07 13:00:00.1"))))
    assert (error.line_no, error.field_path, error.reason_code) == (0, "currency", ReasonCode.REQUIRED)


def test_ptax_latest_closing_of_a_day_wins() -> None:
    outcomes = list(
        read_ptax(
            _ptax(_quote("2025-01-07 13:00:00.5", sell=5.2), _quote("2025-01-07 13:00:00.1", sell=5.1)),
            currency="usd",
        )
    )
    sells = [o for o in observations(outcomes) if o.series_id.endswith("sell")]
    assert [o.value for o in sells] == [Decimal("5.2")]
    assert [(o.line_no, o.reason) for o in outcomes if isinstance(o, Skipped)] == [
        (2, SkipReason.SUPERSEDED_CLOSING)
    ]


def test_sgs_bad_values() -> None:
    doc = [
        {"data": "01/01/2025", "valor": "11,75"},
        {"data": "2025-01-02", "valor": "11.75"},
        {"data": "03/01/2025", "valor": ""},
        {"data": "04/01/2025", "valor": 12.5},
    ]
    outcomes = list(read_sgs(as_bytes(doc), series_id="selic.target_pct_year", unit="% a.a."))
    assert [(o.field_path, o.reason_code) for o in outcomes if isinstance(o, ParseError)] == [
        ("data.valor", ReasonCode.INVALID_FORMAT),
        ("data.data", ReasonCode.INVALID_FORMAT),
        ("data.valor", ReasonCode.REQUIRED),
    ]
    assert [o.value for o in observations(outcomes)] == [Decimal("12.5")]


def test_sgs_needs_a_series_when_the_name_does_not_say() -> None:
    (error,) = list(read_sgs(as_bytes([{"data": "01/01/2025", "valor": "1"}])))
    assert (error.field_path, error.reason_code) == ("series_id", ReasonCode.REQUIRED)
    (obs,) = observations(list(read_sgs(as_bytes([{"data": "01/01/2025", "valor": "1"}]), series_id="bcb.x")))
    assert obs.unit == "unspecified"  # the SGS document carries no unit, and none is invented


def test_sidra_symbols_and_unknown_variables() -> None:
    row = {"NC": "1", "MN": "%", "D2C": "63", "D3C": "202501", "V": "0.16"}
    doc = [
        {**row, "V": "-"},
        {**row, "V": "..."},
        {**row, "D2C": "9999"},
        {**row, "D3C": "2025-01"},
        {**row, "NC": "6"},
    ]
    outcomes = list(read_sidra(as_bytes(doc)))  # no header row: lines start at 1
    assert observations(outcomes)[0].value == Decimal(0)
    assert [(o.line_no, o.field_path, o.reason_code) for o in outcomes if isinstance(o, ParseError)] == [
        (2, "row.V", ReasonCode.REQUIRED),
        (3, "row.D2C", ReasonCode.UNKNOWN_VALUE),
        (4, "row.D3C", ReasonCode.INVALID_FORMAT),
        (5, "row.NC", ReasonCode.UNKNOWN_VALUE),
    ]


@pytest.mark.parametrize(
    ("reader", "content"),
    [
        (lambda s: read_ptax(s, currency="usd"), b'{"value": [1, 2'),
        (lambda s: read_sgs(s, series_id="a.b"), b"\xff\xfe not utf-8"),
        (read_sidra, b"NaN"),
        (lambda s: read_openmeteo(s, city="x"), b"[" * 100_000),
    ],
)
def test_unreadable_json_is_one_file_error(reader: object, content: bytes) -> None:
    (error,) = list(reader(io.BytesIO(content)))  # type: ignore[operator]
    assert isinstance(error, ParseError)
    assert (error.line_no, error.field_path, error.reason_code) == (0, "file", ReasonCode.INVALID_FORMAT)
