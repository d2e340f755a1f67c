"""WHERE clauses for a ``Slice`` on each read-model table, with positional parameters.

Semantics (docs/kpis.md repeats them for users):
- family: the material's family in the material master, or the line's own family when the master does not
  know the material (or gives it no family);
- client, region: those of the site in the site master;
- supplier on demand and orders: the line's supplier; on stock (and alerts): materials ever bought from that
  supplier;
- date range: the demand date (solicitation date) of requisition lines; stock KPIs use it as their period.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence

from services.analytics.slices import Slice

__all__ = ["Where", "demand_where", "stock_where"]


class Where:
    """Accumulates conditions and their parameters."""

    def __init__(self) -> None:
        self.conditions: list[str] = []
        self.params: list[object] = []

    def add(self, condition: str, *params: object) -> None:
        self.conditions.append(condition)
        self.params.extend(params)

    def add_in(self, expression: str, values: Sequence[object]) -> None:
        marks = ", ".join("?" for _ in values)
        self.add(f"{expression} IN ({marks})", *values)

    @property
    def sql(self) -> str:
        return " AND ".join(self.conditions) if self.conditions else "TRUE"

    def extend(self, other: Where) -> None:
        self.conditions.extend(other.conditions)
        self.params.extend(other.params)


def _marks(values: Sequence[object]) -> str:
    return ", ".join("?" for _ in values)


def _geo(where: Where, site_col: str, s: Slice) -> None:
    if s.sites:
        where.add_in(site_col, s.sites)
    if s.clients:
        where.add(f"{site_col} IN (SELECT code FROM sites WHERE client IN ({_marks(s.clients)}))", *s.clients)
    if s.regions:
        where.add(f"{site_col} IN (SELECT code FROM sites WHERE region IN ({_marks(s.regions)}))", *s.regions)


def demand_where(
    s: Slice,
    alias: str = "c",
    *,
    dates: bool = True,
    start: dt.date | None = None,
    end: dt.date | None = None,
) -> Where:
    """Conditions on ``consumption`` rows; ``start``/``end`` override the slice's dates when given."""
    where = Where()
    if s.materials:
        where.add_in(f"{alias}.material_code", s.materials)
    if s.families:
        fam = _marks(s.families)
        where.add(
            f"({alias}.material_code IN (SELECT code FROM materials WHERE family IN ({fam})) OR "
            f"({alias}.family IN ({fam}) AND {alias}.material_code NOT IN "
            f"(SELECT code FROM materials WHERE family <> '')))",
            *s.families,
            *s.families,
        )
    _geo(where, f"{alias}.site_code", s)
    if s.suppliers:
        where.add_in(f"{alias}.supplier_code", s.suppliers)
    if dates:
        first, last = start or s.start, end or s.end
        if first is not None:
            where.add(f"{alias}.demand_date >= ?", first)
        if last is not None:
            where.add(f"{alias}.demand_date <= ?", last)
    return where


def stock_where(s: Slice, alias: str, *, supplier_column: str | None = None) -> Where:
    """Conditions on a table with ``material_code`` and ``site_code`` (snapshots, orders, forecasts...).

    ``supplier_column`` names the table's own supplier column (purchase orders); otherwise a supplier filter
    keeps the materials bought from that supplier.
    """
    where = Where()
    if s.materials:
        where.add_in(f"{alias}.material_code", s.materials)
    if s.families:
        where.add(
            f"{alias}.material_code IN (SELECT code FROM materials WHERE family IN ({_marks(s.families)}))",
            *s.families,
        )
    _geo(where, f"{alias}.site_code", s)
    if s.suppliers:
        if supplier_column:
            where.add_in(f"{alias}.{supplier_column}", s.suppliers)
        else:
            where.add(
                f"{alias}.material_code IN (SELECT material_code FROM consumption "
                f"WHERE supplier_code IN ({_marks(s.suppliers)}))",
                *s.suppliers,
            )
    return where
