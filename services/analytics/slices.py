"""The slice of the data a query asks for, and the record kinds and dimensions the read model tracks.

A ``Slice`` is the validated, normalised form of ``common.v1.Filter``: every list sorted and deduplicated, so
two filters that select the same data are equal (and share one cache entry). Lists are OR-ed within a field
and AND-ed across fields; an empty list does not filter.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field

__all__ = [
    "DIMS_BY_KIND",
    "INGESTION_KINDS",
    "KINDS",
    "Dim",
    "Kind",
    "Slice",
]


class Kind:
    """Record kinds with their own watermarks (what a cached answer depends on)."""

    MATERIAL = "material_master"
    SITE = "site_master"
    SUPPLIER = "supplier_master"
    CONSUMPTION = "consumption"
    STOCK = "stock"  # snapshots and movements
    PO = "po"
    EXTERNAL = "external"
    FORECAST = "forecast"  # forecasts and reorder policies (versioned by generated_at, not by sequence)
    DATA_END = "data_end"  # the last demand date (as a day ordinal): open-ended date ranges end there


class Dim:
    """Dimensions a watermark can be narrowed by; each matches a field of ``Slice``."""

    MATERIAL = "material"
    SITE = "site"
    FAMILY = "family"
    SUPPLIER = "supplier"
    CLIENT = "client"
    REGION = "region"
    SERIES = "series"


KINDS: tuple[str, ...] = (
    Kind.MATERIAL,
    Kind.SITE,
    Kind.SUPPLIER,
    Kind.CONSUMPTION,
    Kind.STOCK,
    Kind.PO,
    Kind.EXTERNAL,
    Kind.FORECAST,
    Kind.DATA_END,
)
INGESTION_KINDS: frozenset[str] = frozenset(KINDS) - {Kind.FORECAST, Kind.DATA_END}
"""Kinds whose versions are ingestion sequence numbers (the data watermark)."""

_GEO = (Dim.SITE, Dim.CLIENT, Dim.REGION)
DIMS_BY_KIND: dict[str, frozenset[str]] = {
    Kind.MATERIAL: frozenset({Dim.MATERIAL, Dim.FAMILY}),
    Kind.SITE: frozenset(_GEO),
    Kind.SUPPLIER: frozenset({Dim.SUPPLIER}),
    Kind.CONSUMPTION: frozenset({Dim.MATERIAL, Dim.FAMILY, Dim.SUPPLIER, *_GEO}),
    Kind.STOCK: frozenset({Dim.MATERIAL, Dim.FAMILY, *_GEO}),
    Kind.PO: frozenset({Dim.MATERIAL, Dim.FAMILY, Dim.SUPPLIER, *_GEO}),
    Kind.EXTERNAL: frozenset({Dim.SERIES}),
    Kind.FORECAST: frozenset({Dim.MATERIAL, Dim.FAMILY, *_GEO}),
    Kind.DATA_END: frozenset(),
}
"""Dimensions each kind's records are indexed by (see ``read_model`` for how a record bumps them)."""


def _norm(values: object) -> tuple[str, ...]:
    return tuple(sorted({str(v).strip() for v in values if str(v).strip()}))  # type: ignore[attr-defined]


@dataclass(frozen=True, slots=True)
class Slice:
    """A normalised filter. Dates are inclusive; ``None`` leaves that side open."""

    materials: tuple[str, ...] = ()
    families: tuple[str, ...] = ()
    sites: tuple[str, ...] = ()
    clients: tuple[str, ...] = ()
    regions: tuple[str, ...] = ()
    suppliers: tuple[str, ...] = ()
    start: dt.date | None = None
    end: dt.date | None = None
    series: tuple[str, ...] = field(default=())
    """External series ids (only GetExternalSeries uses it)."""

    @classmethod
    def of(
        cls,
        *,
        materials: object = (),
        families: object = (),
        sites: object = (),
        clients: object = (),
        regions: object = (),
        suppliers: object = (),
        start: dt.date | None = None,
        end: dt.date | None = None,
        series: object = (),
    ) -> Slice:
        return cls(
            materials=_norm(materials),
            families=_norm(families),
            sites=_norm(sites),
            clients=_norm(clients),
            regions=_norm(regions),
            suppliers=_norm(suppliers),
            start=start,
            end=end,
            series=_norm(series),
        )

    def values(self, dim: str) -> tuple[str, ...]:
        """The filter values of one dimension (empty: not filtered on it)."""
        values: tuple[str, ...] = getattr(self, _FIELD_OF_DIM[dim])
        return values

    @property
    def is_single_series(self) -> bool:
        """Exactly one material at exactly one site, and nothing else narrowing it."""
        return (
            len(self.materials) == 1
            and len(self.sites) == 1
            and not (self.families or self.clients or self.regions or self.suppliers)
        )


_FIELD_OF_DIM = {
    Dim.MATERIAL: "materials",
    Dim.FAMILY: "families",
    Dim.SITE: "sites",
    Dim.CLIENT: "clients",
    Dim.REGION: "regions",
    Dim.SUPPLIER: "suppliers",
    Dim.SERIES: "series",
}
