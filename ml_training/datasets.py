"""Reading the platform's consumption data and turning it into weekly series.

Sources: the Sapiens requisition export (``dadosSuprimentos.xlsx``, read cell by cell with openpyxl so the
string "N/A" stays a string until *we* decide what it means) or a Parquet/CSV export with the columns
``material, site, family, quantity, unit, requested_date, purchase_date``.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import math
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from services.forecast import features as F

__all__ = [
    "Consumption",
    "Panel",
    "Series",
    "Window",
    "build_panel",
    "detect_window",
    "find_source",
    "is_service",
    "read_consumption",
]

EXPORT_SHEET = "CUSTO DE MATERIAL E SERVIÇOS"
EXPORT_COLUMNS = {
    "site": "DEPÓSITO",
    "material": "PRODUTO/SERVIÇO",
    "description": "MATERIAL",
    "family": "FAMÍLIA",
    "quantity": "QUANTIDADE",
    "unit": "U.M.",
    "requested_date": "DATA SOLICITADO",  # when the requisition was raised: the demand date
    "purchase_date": "DATA DE COMPRA",
}
TABLE_COLUMNS = ("material", "site", "family", "quantity", "unit", "requested_date", "purchase_date")
NA = "N/A"
# Units and families that are services (hours, lump sums, contracted work), not stock.
SERVICE_UNITS = frozenset({"SR", "VB", "HR"})


def is_service(family: str, unit: str) -> bool:
    return unit.strip().upper() in SERVICE_UNITS or family.strip().upper().startswith("SERV")


@dataclass
class Consumption:
    """Goods consumption lines (services already removed), one entry per line, plus what was dropped and
    why."""

    material: list[str]
    site: list[str]
    family: list[str]
    quantity: np.ndarray
    unit: list[str]
    requested: np.ndarray  # datetime64[D]; NaT where the cell said "N/A"
    purchased: np.ndarray  # datetime64[D]; NaT where the cell said "N/A"
    source: str
    dropped: dict[str, int] = field(default_factory=dict)
    services_by_family: dict[str, int] = field(default_factory=dict)

    def __len__(self) -> int:
        return len(self.material)

    def fingerprint(self) -> str:
        """sha256 of the goods rows in a canonical order (what the model was trained from)."""
        digest = hashlib.sha256()
        order = sorted(range(len(self)), key=lambda i: self._row(i))
        for i in order:
            digest.update(("\x1f".join(self._row(i)) + "\n").encode())
        return digest.hexdigest()

    def _row(self, i: int) -> tuple[str, ...]:
        return (
            self.material[i],
            self.site[i],
            self.family[i],
            repr(float(self.quantity[i])),
            self.unit[i],
            str(self.requested[i]),
            str(self.purchased[i]),
        )


def _to_day(value: object) -> np.datetime64:
    if isinstance(value, dt.datetime):
        return np.datetime64(value.date(), "D")
    if isinstance(value, dt.date):
        return np.datetime64(value, "D")
    if isinstance(value, str) and value.strip() not in ("", NA):
        return np.datetime64(value.strip()[:10], "D")
    return np.datetime64("NaT", "D")


def _read_xlsx(path: Path) -> list[dict[str, object]]:
    import openpyxl

    book = openpyxl.load_workbook(path, read_only=True, data_only=True)
    try:
        rows = book[EXPORT_SHEET].iter_rows(values_only=True)
        header = [str(c).strip() if c is not None else "" for c in next(rows)]
        col = {key: header.index(name) for key, name in EXPORT_COLUMNS.items()}
        out = []
        for raw in rows:
            if raw is None or all(c is None for c in raw[: len(header)]):
                continue
            out.append({key: raw[j] for key, j in col.items()})
        return out
    finally:
        book.close()


def _read_table(path: Path) -> list[dict[str, object]]:
    import pyarrow.csv as pacsv
    import pyarrow.parquet as pq

    if path.suffix.lower() == ".parquet":
        table = pq.read_table(path)
    else:
        # Only the empty cell is null: "N/A" (or "NA") stays the string it is.
        # Codes stay strings ("010601" is not the number 10601).
        import pyarrow as pa

        options = pacsv.ConvertOptions(
            null_values=[""],
            strings_can_be_null=False,
            column_types={c: pa.string() for c in ("material", "site", "family", "unit")},
        )
        table = pacsv.read_csv(path, convert_options=options)
    missing = [c for c in TABLE_COLUMNS if c not in table.column_names]
    if missing:
        raise ValueError(f"{path}: missing columns {missing}")
    return table.select(list(TABLE_COLUMNS)).to_pylist()


def find_source(data: Path) -> Path:
    """The consumption file under ``data`` (a directory) or ``data`` itself."""
    if data.is_file():
        return data
    for name in ("consumption.parquet", "consumption.csv", "dadosSuprimentos.xlsx"):
        if (data / name).is_file():
            return data / name
    raise FileNotFoundError(f"no consumption.parquet, consumption.csv or dadosSuprimentos.xlsx under {data}")


def read_consumption(source: Path) -> Consumption:
    raw = _read_xlsx(source) if source.suffix.lower() in (".xlsx", ".xlsm") else _read_table(source)
    dropped: Counter[str] = Counter()
    services: Counter[str] = Counter()
    cols: dict[str, list] = defaultdict(list)
    units_by_material: dict[str, set[str]] = defaultdict(set)
    for rec in raw:
        family = str(rec["family"] if rec["family"] is not None else NA).strip()
        unit = str(rec["unit"] if rec["unit"] is not None else NA).strip().upper()
        if is_service(family, unit):
            services[family] += 1
            continue
        quantity = rec["quantity"]
        if not isinstance(quantity, int | float) or isinstance(quantity, bool) or not math.isfinite(quantity):
            dropped["quantity not a number"] += 1
            continue
        if quantity <= 0:
            dropped["quantity <= 0"] += 1
            continue
        requested = _to_day(rec["requested_date"])
        if np.isnat(requested):
            dropped["request date N/A"] += 1
            continue
        material = str(rec["material"]).strip()
        units_by_material[material].add(unit)
        cols["material"].append(material)
        cols["site"].append(str(rec["site"] if rec["site"] is not None else NA).strip() or NA)
        cols["family"].append(family)
        cols["quantity"].append(float(quantity))
        cols["unit"].append(unit)
        cols["requested"].append(requested)
        cols["purchased"].append(_to_day(rec["purchase_date"]))
    # A material bought in two units (010601 in UN and CX) is two series: quantities in different units
    # cannot be added.
    materials = [
        m if len(units_by_material[m]) == 1 else f"{m}@{u}"
        for m, u in zip(cols["material"], cols["unit"], strict=True)
    ]
    return Consumption(
        material=materials,
        site=cols["site"],
        family=cols["family"],
        quantity=np.array(cols["quantity"], dtype=np.float64),
        unit=cols["unit"],
        requested=np.array(cols["requested"], dtype="datetime64[D]"),
        purchased=np.array(cols["purchased"], dtype="datetime64[D]"),
        source=str(source),
        dropped=dict(dropped),
        services_by_family=dict(services),
    )


def monday(days: np.ndarray) -> np.ndarray:
    d = np.asarray(days, dtype="datetime64[D]")
    return d - ((d.astype(np.int64) - 4) % 7).astype("timedelta64[D]")  # 1970-01-05 was a Monday


@dataclass
class Window:
    """The weeks fit for training: thin weeks at the start and censored weeks at the end are left out."""

    first_week: np.datetime64
    last_week: np.datetime64
    export_end: np.datetime64
    weekly_lines: dict[str, int]
    completeness: dict[str, float]
    censored_tail: list[str]
    thin_head: list[str]
    rule: str


def detect_window(cons: Consumption, min_completeness: float = 0.9, thin_ratio: float = 0.35) -> Window:
    """Find the usable weeks of an export that holds only already-purchased requisitions.

    A requisition raised in week w appears in the export only if it was purchased by the export end, so the
    expected completeness of week w is P(lead time <= export_end - end of w), estimated from the empirical
    distribution of the export's own (non-negative) lead times. Trailing weeks below ``min_completeness``
    are censored; so is any trailing week whose line count is under ``thin_ratio`` x the median week (a
    second, model-free check). At the start, weeks are dropped until a week and the mean of it and the next
    three
    reach ``thin_ratio`` and half the median: the export's start is thin for the mirrored reason."""
    export_end = cons.purchased[~np.isnat(cons.purchased)].max()
    lead = (cons.purchased - cons.requested).astype("timedelta64[D]").astype(np.float64)
    valid = lead[~np.isnan(lead)]
    valid = np.sort(valid[valid >= 0])
    weeks = monday(cons.requested)
    all_weeks = np.arange(weeks.min(), weeks.max() + 1, 7).astype("datetime64[D]")
    counts = np.array([(weeks == w).sum() for w in all_weeks], dtype=np.float64)
    median = float(np.median(counts[counts > 0]))
    horizon_days = (export_end - (all_weeks + np.timedelta64(6, "D"))).astype(np.float64)
    completeness = np.searchsorted(valid, horizon_days, side="right") / max(valid.size, 1)
    end = all_weeks.size
    while end > 0 and (completeness[end - 1] < min_completeness or counts[end - 1] < thin_ratio * median):
        end -= 1
    start = 0
    while start < end:
        ahead = counts[start : start + 4].mean()
        if counts[start] >= thin_ratio * median and ahead >= 0.5 * median:
            break
        start += 1
    if end - start < 8:
        raise ValueError("fewer than 8 usable weeks after removing thin and censored weeks")
    return Window(
        first_week=all_weeks[start],
        last_week=all_weeks[end - 1],
        export_end=export_end,
        weekly_lines={str(w): int(c) for w, c in zip(all_weeks, counts, strict=True)},
        completeness={str(w): float(c) for w, c in zip(all_weeks, completeness, strict=True)},
        censored_tail=[str(w) for w in all_weeks[end:]],
        thin_head=[str(w) for w in all_weeks[:start]],
        rule=(
            f"tail: expected completeness P(lead time <= days to export end) < {min_completeness:.0%} "
            f"or lines < {thin_ratio:.0%} of the median week ({median:.0f}); head: lines < "
            f"{thin_ratio:.0%} of the "
            f"median or the 4-week mean < 50% of it"
        ),
    )


@dataclass
class Series:
    key: str
    level: str
    material: str
    site: str
    family: str
    region: str
    y: np.ndarray
    attrs: dict[str, str]


@dataclass
class Panel:
    weeks: np.ndarray  # datetime64[D] Mondays of the usable window
    series: list[Series]
    window: Window
    lead_days: dict[str, list[float]]  # material -> observed non-negative lead times (days), by request date
    units: dict[str, str]

    def by_level(self, level: str) -> list[Series]:
        return [s for s in self.series if s.level == level]


def build_panel(
    cons: Consumption, window: Window, min_site_demand_weeks: int = 2, site_series: bool = True
) -> Panel:
    """Weekly series of the usable window at every level: material x site (those with at least
    ``min_site_demand_weeks`` demand weeks: single events teach nothing a material-level series does not),
    material, family, region and national. Quantities in different units are only added within a material.
    ``site_series=False`` leaves the material x site series out (material-level measurements on a history
    with thousands of sites)."""
    weeks = np.arange(window.first_week, window.last_week + 1, 7).astype("datetime64[D]")
    index = ((monday(cons.requested) - window.first_week).astype(np.int64) // 7).astype(np.int64)
    inside = (index >= 0) & (index < weeks.size)
    family_of: dict[str, str] = {}
    unit_of: dict[str, str] = {}
    groups: dict[tuple[str, str, str, str], np.ndarray] = {}

    def add(key: tuple[str, str, str, str], i: int) -> None:
        arr = groups.get(key)
        if arr is None:
            arr = groups[key] = np.zeros(weeks.size)
        arr[index[i]] += cons.quantity[i]

    for i in np.flatnonzero(inside):
        material, site, family = cons.material[i], cons.site[i], cons.family[i]
        family_of.setdefault(material, family)
        unit_of.setdefault(material, cons.unit[i])
        region = F.site_attributes(site)[1]
        add(("material_site", material, site, region), i)
        add(("material", material, "ALL", "ALL"), i)
    series: list[Series] = []
    for (level, material, site, region), y in sorted(groups.items()):
        if level == "material_site" and (not site_series or int((y > 0).sum()) < min_site_demand_weeks):
            continue
        family = family_of[material]
        attrs = F.static_attributes(family, site, level, region)
        series.append(Series(f"{material}|{site}", level, material, site, family, region, y, attrs))
    # Aggregates only add like with like: units are mixed inside a family, so family/region/national series
    # count demand *lines* (requisition lines per week), the unit the design's dashboards use for them.
    lines: dict[tuple[str, str, str], np.ndarray] = defaultdict(lambda: np.zeros(weeks.size))
    for i in np.flatnonzero(inside):
        region = F.site_attributes(cons.site[i])[1]
        lines[("family", cons.family[i], "ALL")][index[i]] += 1
        lines[("region", "ALL", region)][index[i]] += 1
        lines[("national", "ALL", "ALL")][index[i]] += 1
    for (level, family, region), y in sorted(lines.items()):
        attrs = F.static_attributes(family if family != "ALL" else "", "ALL", level, region)
        key = {"family": f"family:{family}", "region": f"region:{region}", "national": "national"}[level]
        series.append(Series(key, level, "ALL", "ALL", family, region, y, attrs))
    lead: dict[str, list[tuple[np.datetime64, float]]] = defaultdict(list)
    days = (cons.purchased - cons.requested).astype("timedelta64[D]").astype(np.float64)
    for i in range(len(cons)):
        if not np.isnan(days[i]) and days[i] >= 0:  # negative lead times are data errors
            lead[cons.material[i]].append((cons.requested[i], float(days[i])))
    lead_days = {m: [d for _, d in sorted(v, key=lambda x: x[0])] for m, v in lead.items()}
    return Panel(weeks=weeks, series=series, window=window, lead_days=lead_days, units=unit_of)
