"""Open-Meteo hourly JSON -> daily weather observations per city.

Series (``weather.<city>.<name>``): ``precipitation_mm`` (sum), ``temperature_mean_c`` and
``temperature_max_c``, ``humidity_mean_pct`` (mean), ``wind_max_kmh`` (max). Means are rounded to 0.01.

Days are *local* days: the files are fetched in GMT (``utc_offset_seconds: 0``) but requisitions are dated in
Brazil, so hours are shifted to ``utc_offset_hours`` (default -3: Brasília time, which every city here has
kept all year since Brazil dropped daylight saving in 2019) before grouping. The shift leaves the first local
day of a file with 3 hours and the last with 21: those edge days are ``Skipped`` (PARTIAL_DAY) rather than
reported as if complete. A day inside the file with a missing or null hour is an INCOMPLETE error for that
variable; an hourly value outside physical bounds is OUT_OF_RANGE. Units must be the ones named below (a
file fetched in °F or inches is rejected, not converted).

Line number of a day's observations: 1-based position of its first hour in ``hourly.time``.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta
from decimal import ROUND_HALF_EVEN, Decimal

from services.ingestion.formats.jsondoc import load_json
from services.ingestion.formats.outcome import (
    Outcome,
    Parsed,
    ParseError,
    Skipped,
    SkipReason,
    Source,
    file_error,
    source_name,
)
from services.ingestion.records import ExternalObservation
from services.ingestion.validation import BRAZILIAN_STATES, ReasonCode, Violation, validate

__all__ = ["DAILY_SERIES", "SOURCE", "VARIABLES", "city_from_filename", "read_openmeteo"]

SOURCE = "Open-Meteo"


@dataclass(frozen=True, slots=True)
class _Variable:
    unit: str
    low: Decimal
    high: Decimal


VARIABLES: dict[str, _Variable] = {
    "precipitation": _Variable("mm", Decimal(0), Decimal(500)),
    "temperature_2m": _Variable("°C", Decimal(-60), Decimal(60)),
    "relative_humidity_2m": _Variable("%", Decimal(0), Decimal(100)),
    "wind_speed_10m": _Variable("km/h", Decimal(0), Decimal(500)),
}
"""Hourly variables read, with the unit they must be in and their physical bounds."""

DAILY_SERIES: tuple[tuple[str, str, str], ...] = (
    ("precipitation", "sum", "precipitation_mm"),
    ("temperature_2m", "mean", "temperature_mean_c"),
    ("temperature_2m", "max", "temperature_max_c"),
    ("relative_humidity_2m", "mean", "humidity_mean_pct"),
    ("wind_speed_10m", "max", "wind_max_kmh"),
)
"""(hourly variable, aggregate, daily series name)."""

_HOURS = 24
_CENT = Decimal("0.01")
_FILENAME = re.compile(r"openmeteo(?:_hourly)?_([a-z0-9_]+)\.json", re.IGNORECASE)
_HOUR = re.compile(r"\d{4}-\d{2}-\d{2}T\d{2}:00", re.ASCII)  # whole hours only


def city_from_filename(filename: str) -> str | None:
    """ "openmeteo_hourly_rio_de_janeiro_rj.json" -> "rio_de_janeiro" (a trailing state code is dropped)."""
    match = _FILENAME.search(filename)
    if not match:
        return None
    slug = match.group(1).lower()
    head, _, tail = slug.rpartition("_")
    return head if head and tail.upper() in BRAZILIAN_STATES else slug


@dataclass
class _Day:
    day: date
    first_line: int
    # variable -> (valid values, problems); problems are kept per variable so one bad hour spoils one series
    values: dict[str, list[Decimal]] = field(default_factory=dict)
    problems: dict[str, list[Violation]] = field(default_factory=dict)
    hours: int = 0


def read_openmeteo(
    source: Source, *, city: str | None = None, utc_offset_hours: int = -3, filename: str | None = None
) -> Iterator[Outcome]:
    """Yield the daily observations of one Open-Meteo hourly file (see the module docstring)."""
    slug = (city or city_from_filename(filename or source_name(source)) or "").lower()
    if not re.fullmatch(r"[a-z0-9_]+", slug):
        yield file_error("city", ReasonCode.REQUIRED, "city not given and not in the file name")
        return
    document = load_json(source)
    if isinstance(document, ParseError):
        yield document
        return
    hourly = document.get("hourly") if isinstance(document, dict) else None
    if (
        not isinstance(document, dict)
        or not isinstance(hourly, dict)
        or not isinstance(hourly.get("time"), list)
    ):
        yield file_error(
            "hourly", ReasonCode.INVALID_SCHEMA, 'expected an object with "hourly": {"time": [...]}'
        )
        return
    times: list[object] = hourly["time"]
    offset = document.get("utc_offset_seconds", 0)
    if isinstance(offset, bool) or not isinstance(offset, int) or abs(offset) > 18 * 3600:
        yield file_error(
            "utc_offset_seconds", ReasonCode.INVALID_FORMAT, f"{offset!r} is not an offset in seconds"
        )
        return
    units = document.get("hourly_units") if isinstance(document.get("hourly_units"), dict) else {}
    arrays: dict[str, list[object]] = {}
    for name, spec in VARIABLES.items():
        array = hourly.get(name)
        if not isinstance(array, list) or len(array) != len(times):
            yield file_error(
                f"hourly.{name}", ReasonCode.INVALID_SCHEMA, f"expected {len(times)} hourly values"
            )
            continue
        unit = units.get(name) if isinstance(units, dict) else None
        if unit != spec.unit:
            yield file_error(
                f"hourly_units.{name}", ReasonCode.INCONSISTENT, f"unit {unit!r}: only {spec.unit!r} is read"
            )
            continue
        arrays[name] = array
    if not arrays:
        return
    shift = timedelta(hours=utc_offset_hours) - timedelta(seconds=offset)
    yield from _days(slug, times, arrays, shift)


def _days(
    slug: str, times: list[object], arrays: dict[str, list[object]], shift: timedelta
) -> Iterator[Outcome]:
    current: _Day | None = None
    first_day: date | None = None
    previous: datetime | None = None
    for index, stamp_text in enumerate(times):
        line_no = index + 1
        if not isinstance(stamp_text, str) or not _HOUR.fullmatch(stamp_text):
            yield file_error(
                "hourly.time", ReasonCode.INVALID_FORMAT, f"{stamp_text!r} is not an hour", line_no
            )
            continue
        try:
            local = datetime.fromisoformat(stamp_text) + shift
        except (ValueError, OverflowError):
            yield file_error(
                "hourly.time", ReasonCode.INVALID_FORMAT, f"{stamp_text!r} is not an hour", line_no
            )
            continue
        if previous is not None and local <= previous:
            yield file_error(
                "hourly.time", ReasonCode.INCONSISTENT, f"{stamp_text} is not after the hour before", line_no
            )
            continue
        previous = local
        if current is None or local.date() != current.day:
            if current is not None:
                yield from _flush(slug, current, arrays, edge=current.day == first_day)
            current = _Day(local.date(), line_no)
            first_day = first_day or current.day
        current.hours += 1
        for name, array in arrays.items():
            _add(current, name, array[index], line_no)
    if current is not None:
        yield from _flush(slug, current, arrays, edge=True)


def _add(day: _Day, name: str, value: object, line_no: int) -> None:
    spec = VARIABLES[name]
    if value is None:
        return  # counted as a missing hour at flush time
    if isinstance(value, bool) or not isinstance(value, Decimal | int):
        day.problems.setdefault(name, []).append(
            Violation(
                f"hourly.{name}", ReasonCode.INVALID_FORMAT, f"hour {line_no}: {value!r} is not a number"
            )
        )
        return
    number = Decimal(value)
    if not spec.low <= number <= spec.high:
        day.problems.setdefault(name, []).append(
            Violation(
                f"hourly.{name}",
                ReasonCode.OUT_OF_RANGE,
                f"hour {line_no}: {number} {spec.unit} outside {spec.low}..{spec.high}",
            )
        )
        return
    day.values.setdefault(name, []).append(number)


def _aggregate(values: list[Decimal], how: str) -> Decimal:
    if how == "sum":
        return sum(values, Decimal(0))
    if how == "max":
        return max(values)
    return (sum(values, Decimal(0)) / len(values)).quantize(_CENT, rounding=ROUND_HALF_EVEN)


def _flush(slug: str, day: _Day, arrays: dict[str, list[object]], *, edge: bool) -> Iterator[Outcome]:
    for name, how, series in DAILY_SERIES:
        if name not in arrays:
            continue
        problems = day.problems.get(name, [])
        values = day.values.get(name, [])
        if problems:
            yield ParseError.of(day.first_line, problems, f"{day.day} {name}")
            continue
        if len(values) < _HOURS:
            if edge and len(values) == day.hours:
                yield Skipped(
                    day.first_line,
                    SkipReason.PARTIAL_DAY,
                    f"{day.day}: {day.hours} of 24 local hours in the file ({series})",
                )
            else:
                yield ParseError.of(
                    day.first_line,
                    [
                        Violation(
                            f"hourly.{name}", ReasonCode.INCOMPLETE, f"{day.day}: {len(values)} of 24 hours"
                        )
                    ],
                    f"{day.day} {name}",
                )
            continue
        unit = VARIABLES[name].unit
        record = ExternalObservation(
            f"weather.{slug}.{series}", day.day, _aggregate(values, how), unit, SOURCE
        )
        bad = validate(record)
        yield (
            ParseError.of(day.first_line, bad, f"{day.day} {name}") if bad else Parsed(day.first_line, record)
        )
