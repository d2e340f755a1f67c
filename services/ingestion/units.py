"""Units of measure: an explicit table, explicit aliases, and conversions only where physics defines them.

The Sapiens export spells 17 units: UN SR MT KG M³ M2 M CJ PC CX PAR GL M² M3 LT VB HR. Three of them are
spellings of another (``MT`` is the metre: every MT line is a cable, conduit or chain sold by length, like the
``M`` lines; ``M²``/``M³`` are ``M2``/``M3`` typed with superscripts), so the export holds 14 canonical units.
A handful of metric companions (G, T, CM, MM, KM, ML) are in the table only so that real conversions have
somewhere to go.

What is deliberately *not* convertible:

* ``CX`` (box), ``GL`` (gallon can: 3.6 L for Brazilian paint, 3.785 L elsewhere), ``CJ`` (set), ``PAR``
  (pair) and ``PC`` (piece as the supplier cuts it) have a size that depends on the material, which the export
  does not carry. Material 010601 is bought both per ``CX`` and per ``UN``: the two quantities stay apart.
* Service units (``SR`` service, ``VB`` lump sum, ``HR`` hour of service) measure work, not stock.

Unknown spellings are rejected (``UnknownUnitError``); nothing is guessed, only upper-cased and trimmed.
"""

from __future__ import annotations

from dataclasses import dataclass
from decimal import Decimal
from enum import StrEnum

__all__ = [
    "ALIASES",
    "EXPORT_UNIT_SPELLINGS",
    "UNITS",
    "Dimension",
    "Unit",
    "UnitConversionError",
    "UnknownUnitError",
    "canonical_unit",
    "convert",
    "is_known_unit",
    "is_service_unit",
]


class Dimension(StrEnum):
    """What a unit measures. Conversions only happen inside one dimension, between units with a factor."""

    COUNT = "count"
    MASS = "mass"
    LENGTH = "length"
    AREA = "area"
    VOLUME = "volume"
    PACKAGE = "package"  # size depends on the material: never converted
    SERVICE = "service"  # work, not stock


@dataclass(frozen=True, slots=True)
class Unit:
    """One canonical unit.

    ``factor`` is the size of the unit in its dimension's base unit (KG, M, M2, LT); ``None`` means the unit
    has no fixed size and cannot be converted to anything but itself.
    """

    code: str
    name: str
    dimension: Dimension
    factor: Decimal | None

    @property
    def stockable(self) -> bool:
        """False for units that measure services (SR, VB, HR)."""
        return self.dimension is not Dimension.SERVICE


def _u(code: str, name: str, dimension: Dimension, factor: str | None) -> Unit:
    return Unit(code, name, dimension, Decimal(factor) if factor is not None else None)


UNITS: dict[str, Unit] = {
    u.code: u
    for u in (
        # --- the 14 canonical units of the Sapiens export
        _u("UN", "unidade", Dimension.COUNT, None),
        _u("PC", "peça", Dimension.PACKAGE, None),
        _u("PAR", "par", Dimension.PACKAGE, None),
        _u("CJ", "conjunto", Dimension.PACKAGE, None),
        _u("CX", "caixa", Dimension.PACKAGE, None),
        _u("GL", "galão", Dimension.PACKAGE, None),
        _u("KG", "quilograma", Dimension.MASS, "1"),
        _u("M", "metro", Dimension.LENGTH, "1"),
        _u("M2", "metro quadrado", Dimension.AREA, "1"),
        _u("M3", "metro cúbico", Dimension.VOLUME, "1000"),
        _u("LT", "litro", Dimension.VOLUME, "1"),
        _u("SR", "serviço", Dimension.SERVICE, None),
        _u("VB", "verba", Dimension.SERVICE, None),
        _u("HR", "hora de serviço", Dimension.SERVICE, None),
        # --- metric companions, present so that real conversions exist
        _u("G", "grama", Dimension.MASS, "0.001"),
        _u("T", "tonelada", Dimension.MASS, "1000"),
        _u("MM", "milímetro", Dimension.LENGTH, "0.001"),
        _u("CM", "centímetro", Dimension.LENGTH, "0.01"),
        _u("KM", "quilômetro", Dimension.LENGTH, "1000"),
        _u("ML", "mililitro", Dimension.VOLUME, "0.001"),
    )
}
"""Canonical units by code."""

ALIASES: dict[str, str] = {"MT": "M", "M²": "M2", "M³": "M3", "L": "LT"}
"""Other spellings of a canonical unit (upper-cased)."""

EXPORT_UNIT_SPELLINGS: frozenset[str] = frozenset(
    {"UN", "SR", "MT", "KG", "M³", "M2", "M", "CJ", "PC", "CX", "PAR", "GL", "M²", "M3", "LT", "VB", "HR"}
)
"""The 17 spellings of the Sapiens export (dadosSuprimentos.xlsx), all accepted by ``canonical_unit``."""


class UnknownUnitError(ValueError):
    """The unit is not in the table; it is never guessed."""


class UnitConversionError(ValueError):
    """The two units are known but no real conversion exists between them."""


def canonical_unit(raw: str) -> str:
    """The canonical code of ``raw`` (trimmed, upper-cased, alias resolved), else ``UnknownUnitError``."""
    code = raw.strip().upper()
    code = ALIASES.get(code, code)
    if code not in UNITS:
        raise UnknownUnitError(f"unknown unit {raw!r}")
    return code


def is_known_unit(raw: str) -> bool:
    """True when ``canonical_unit(raw)`` succeeds."""
    try:
        canonical_unit(raw)
    except UnknownUnitError:
        return False
    return True


_SERVICE_CODES = frozenset(code for code, unit in UNITS.items() if not unit.stockable)


def is_service_unit(raw: str) -> bool:
    """True for units that measure services (SR, VB, HR); False for stock units and unknown units."""
    # canonical_unit without the exception for unknown units: this runs for every requisition line.
    code = raw.strip().upper()
    return ALIASES.get(code, code) in _SERVICE_CODES


def convert(quantity: Decimal, from_unit: str, to_unit: str) -> Decimal:
    """Convert ``quantity`` between two units of the same dimension that both have a fixed size.

    Same unit (after aliasing) is always allowed. Raises ``UnknownUnitError`` or ``UnitConversionError``.
    """
    source = UNITS[canonical_unit(from_unit)]
    target = UNITS[canonical_unit(to_unit)]
    if source.code == target.code:
        return quantity
    if source.dimension is not target.dimension or source.factor is None or target.factor is None:
        raise UnitConversionError(
            f"no conversion from {source.code} ({source.dimension}) to {target.code} ({target.dimension}): "
            "the size of the unit depends on the material or the units measure different things"
        )
    return quantity * source.factor / target.factor
