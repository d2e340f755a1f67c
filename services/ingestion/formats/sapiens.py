"""Reader of the Senior Sapiens requisition export (xlsx, and the same table saved as CSV).

Each data line yields the ``Consumption`` (or a ``ParseError``), preceded by the ``Material``, ``Site`` and
``Supplier`` master records it names the first time they appear (deduplicated on their natural key). Rows are
streamed (openpyxl read-only, csv module); what the reader remembers is one small entry per material, site
and supplier code, and one counter per (requisition, material) pair for the line keys: about 4,000 entries
for this export, bounded by the number of requisition lines rather than by their size. Cells are read and
checked once per distinct text (bounded memos): a file repeats its sites, materials, dates and quantities.

Decisions on the export's known traps:

=============================  ========================================================================
"N/A" in DEPÓSITO              kept as the explicit site code "N/A" (site type unknown), line flagged
                               ``unknown_site``: 608 goods lines would otherwise vanish from national
                               demand. An *empty* DEPÓSITO is REQUIRED (nothing is invented).
"N/A" in DATA REQUISITADA      ``requested_date = None``: the column is empty on 86% of the lines.
"N/A" in DATA DE COMPRA        ``purchase_date = None`` (not purchased yet).
"N/A" in SOLICITAÇÃO or        REQUIRED: without a requisition number there is no natural key, and
DATA SOLICITADO                without a solicitation date the line has no place on the time axis
                               (18 lines have "N/A" in both and in DATA DE COMPRA; 1 has them empty).
"N/A" anywhere else            REQUIRED.
purchase before solicitation   accepted, flagged ``negative_lead_time`` (after-the-fact purchases: 26% of
                               the services); lead-time statistics must leave flagged lines out.
services (unit SR/VB/HR or a   accepted, flagged ``service``; their material is ``stocked=False``. They
SERV* family)                  are demand of the company, not stock to plan.
010601 in CX and in UN         one Material (unit of its first line, CX); lines in another unit keep their
                               own unit and are flagged ``unit_variant``: CX->UN needs a pack size the
                               export does not have, so quantities are never added across units.
quantity 11,650                accepted, flagged ``quantity_outlier`` (> ``validation.OUTLIER_QUANTITY``).
ALMOX-BA / ESCRITÓRIO          site types warehouse / office (``classify_site``).
identical lines                distinct records: line_key "<material>#<n>" numbers repeats inside a
                               requisition (13 identical freight lines in requisition 95067 are 13 buys).
site codes cut at 10 chars     kept as exported ("PIP-LSR-00" may be PIP-LSR-002 or PIP-LSR-002-1 of the
                               DADOS sheet): not resolved, since either guess could be wrong.
=============================  ========================================================================

CSV form: same header. The delimiter is ";" or "," (whichever the header line uses). Decimal separator:
"," for ";" files (what Excel writes in a pt-BR locale; "." is then only a thousands separator in full groups
of three), "." for "," files (then "11,650" is rejected, not guessed). Dates: DD/MM/YYYY (pt-BR Excel),
with an optional " 00:00[:00]", or ISO YYYY-MM-DD; MM/DD is never accepted. Encoding UTF-8 (BOM optional); an
undecodable byte rejects its line with INVALID_FORMAT on the field that holds it.

Hidden sheet DADOS: three independent drop-down lists side by side (sites numbered 1..267, cost centres
NC01..NC31 with their client, and change statuses), not a site -> client mapping: row 29 pairs site
BR73531-R-1 with "ALMOXARIFADO - BA" while the warehouse ALMOX-BA is site 87 of the list. So
``read_dados_sites`` yields its sites without a client, and ``read_dados_cost_centres`` the cost-centre list.
"""

from __future__ import annotations

import csv
import hashlib
import io
import operator
import re
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from datetime import date, datetime
from decimal import Decimal
from json.encoder import encode_basestring  # type: ignore[attr-defined]
from typing import Any, BinaryIO

from openpyxl import load_workbook  # type: ignore[import-untyped]
from openpyxl.utils.datetime import from_excel  # type: ignore[import-untyped]

from services.ingestion.converters import consumption_family, consumption_head, consumption_wire
from services.ingestion.formats.ordinals import Ordinals
from services.ingestion.formats.outcome import (
    MAX_RAW,
    Outcome,
    Parsed,
    ParseError,
    Skipped,
    SkipReason,
    Source,
    Stored,
    csv_rows,
    file_error,
    open_binary,
)
from services.ingestion.formats.values import ValueProblem, parse_br_or_iso_date, parse_decimal
from services.ingestion.records import (
    Consumption,
    ConsumptionFlag,
    Material,
    Site,
    SiteType,
    Supplier,
    consumption_json,
    decimal_from_float,
    json_value,
)
from services.ingestion.units import UnknownUnitError, canonical_unit, is_service_unit
from services.ingestion.validation import (
    BRAZILIAN_STATES,
    ReasonCode,
    Violation,
    consumption_field_valid,
    line_flags,
    validate,
)

__all__ = [
    "COLUMNS",
    "DADOS_SHEET",
    "NA",
    "SHEET",
    "UNKNOWN_SITE",
    "classify_site",
    "is_service_family",
    "read_dados_cost_centres",
    "read_dados_sites",
    "read_sapiens_csv",
    "read_sapiens_xlsx",
    "supplier_code",
]

SHEET = "CUSTO DE MATERIAL E SERVIÇOS"
DADOS_SHEET = "DADOS"
NA = "N/A"
UNKNOWN_SITE = NA
"""The site code kept for lines whose DEPÓSITO is "N/A"."""

# The export's column names ("N/A" policy per column: see the module docstring and ``_Assembler.line``).
_SITE, _CODE, _NAME, _FAMILY, _SUPPLIER, _QTY, _UNIT, _REQ_DATE, _REQ_ID, _SOL_DATE, _BUY_DATE = (
    "DEPÓSITO",
    "PRODUTO/SERVIÇO",
    "MATERIAL",
    "FAMÍLIA",
    "NOME FORNEC.",
    "QUANTIDADE",
    "U.M.",
    "DATA REQUISITADA",
    "SOLICITAÇÃO",
    "DATA SOLICITADO",
    "DATA DE COMPRA",
)
COLUMNS: tuple[str, ...] = (
    _SITE,
    _CODE,
    _NAME,
    _FAMILY,
    _SUPPLIER,
    _QTY,
    _UNIT,
    _REQ_DATE,
    _REQ_ID,
    _SOL_DATE,
    _BUY_DATE,
)
"""The header of the export, in its order (the readers find the columns by name)."""

_PATHS = {
    _SITE: "consumption.site_code",
    _CODE: "consumption.material_code",
    _NAME: "material.name",
    _FAMILY: "consumption.family",
    _SUPPLIER: "consumption.supplier_code",
    _QTY: "consumption.quantity",
    _UNIT: "consumption.unit",
    _REQ_DATE: "consumption.requested_date",
    _REQ_ID: "consumption.requisition_id",
    _SOL_DATE: "consumption.solicited_date",
    _BUY_DATE: "consumption.purchase_date",
}

_SURROGATE = re.compile("[\udc80-\udcff]")
_TOWER_ID = re.compile(r"(?=.*\d)(?=(?:.*[A-Z]){2})[A-Z0-9][A-Z0-9 ./_#-]*", re.ASCII)
_UF_SITE_ID = re.compile(r"([A-Z]{2})(?:[A-Z]{3}\d{2,}|\d-)[A-Z0-9 ./_-]*", re.ASCII)
_WHITESPACE = re.compile(r"\s+")


# --------------------------------------------------------------------------------------------- master data


def is_service_family(family: str) -> bool:
    """SERVIÇOS TOMADOS/PRESTADOS/DE LOCAÇÃO/CONTRATADOS and "SERV APOIO ..." are services."""
    return family.strip().upper().startswith("SERV")


def supplier_code(name: str) -> str:
    """The export has no supplier code: the name, trimmed, blanks collapsed, upper-cased, stands in for it."""
    return _WHITESPACE.sub(" ", name.strip()).upper()


def classify_site(code: str) -> tuple[SiteType, str]:
    """(site type, state) of a DEPÓSITO code. The export carries neither, so this is explicit and narrow.

    ALMOX-* is a warehouse (ALMOX-BA: state BA); ESCRITÓRIO an office; GER<UF> (regional management, e.g.
    GERBA) an office in that state; "N/A" unknown. A code with digits and letters follows the tower-id
    conventions (BAFRD017, BR80584-A, SAL031TM, SP4-UBA-00) and is a tower; its state is read only from
    the "<UF><3 letters><digits>" / "<UF><digit>-" prefixes. Anything else (technicians' names such as
    RAFAELPREV, bare numbers that are cost centres) stays unknown rather than being guessed.
    """
    upper = code.strip().upper()
    if upper == NA:
        return SiteType.UNKNOWN, ""
    if upper.startswith("ALMOX"):
        state = upper.rsplit("-", 1)[-1] if "-" in upper else ""
        return SiteType.WAREHOUSE, state if state in BRAZILIAN_STATES else ""
    if upper in ("ESCRITÓRIO", "ESCRITORIO"):
        return SiteType.OFFICE, ""
    if len(upper) == 5 and upper.startswith("GER") and upper[3:] in BRAZILIAN_STATES:
        return SiteType.OFFICE, upper[3:]
    if _TOWER_ID.fullmatch(upper):
        match = _UF_SITE_ID.fullmatch(upper)
        state = match.group(1) if match and match.group(1) in BRAZILIAN_STATES else ""
        return SiteType.TOWER, state
    return SiteType.UNKNOWN, ""


# -------------------------------------------------------------------------------------------- cell readers


class _Cells:
    """How one file form turns a cell into a value; raises ValueProblem. ``None`` means an empty cell."""

    def is_na(self, value: object) -> bool:
        return isinstance(value, str) and value.strip().upper() == NA

    def is_empty(self, value: object) -> bool:
        return value is None or (isinstance(value, str) and not value.strip())

    def text(self, value: object) -> str:
        raise NotImplementedError

    def code(self, value: object) -> str:
        return self.text(value)

    def number(self, value: object) -> Decimal:
        raise NotImplementedError

    def day(self, value: object) -> date:
        raise NotImplementedError


def _check_text(text: str) -> str:
    if _SURROGATE.search(text):
        raise ValueProblem(ReasonCode.INVALID_FORMAT, "bytes that are not valid in the file's encoding")
    return text.strip()


class _XlsxCells(_Cells):
    def __init__(self, epoch: datetime) -> None:
        self.epoch = epoch

    def text(self, value: object) -> str:
        if isinstance(value, str):
            return _check_text(value)
        if isinstance(value, bool) or isinstance(value, datetime | date):
            raise ValueProblem(ReasonCode.INVALID_FORMAT, f"expected text, got {type(value).__name__}")
        if isinstance(value, int):
            return str(value)
        if isinstance(value, float) and value.is_integer():
            return str(int(value))
        raise ValueProblem(ReasonCode.INVALID_FORMAT, f"expected text, got {value!r}")

    def code(self, value: object) -> str:
        # Material codes are zero-padded text ("010825"); a numeric cell has already lost its zeros.
        if not isinstance(value, str):
            raise ValueProblem(
                ReasonCode.INVALID_FORMAT, f"code stored as a number ({value!r}): leading zeros may be lost"
            )
        return _check_text(value)

    def number(self, value: object) -> Decimal:
        if isinstance(value, bool):
            raise ValueProblem(ReasonCode.INVALID_FORMAT, "expected a number, got a boolean")
        if isinstance(value, int):
            return Decimal(value)
        if isinstance(value, float):
            if value != value or value in (float("inf"), float("-inf")):
                raise ValueProblem(ReasonCode.OUT_OF_RANGE, "must be finite")
            return decimal_from_float(value)
        if isinstance(value, str):
            # A number typed as text in the sheet: Brazilian spelling first, then the plain one.
            try:
                return parse_decimal(value, ",")
            except ValueProblem:
                return parse_decimal(value, ".")
        raise ValueProblem(ReasonCode.INVALID_FORMAT, f"expected a number, got {type(value).__name__}")

    def day(self, value: object) -> date:
        if isinstance(value, datetime):
            return value.date()
        if isinstance(value, date):
            return value
        if isinstance(value, int | float) and not isinstance(value, bool):
            # A date cell without a date format: an Excel serial day number.
            if not 1 <= value < 2958466:
                raise ValueProblem(ReasonCode.OUT_OF_RANGE, f"{value!r} is not an Excel date serial")
            converted = from_excel(value, self.epoch)
            return converted.date() if isinstance(converted, datetime) else converted  # type: ignore[return-value]
        if isinstance(value, str):
            return parse_br_or_iso_date(_check_text(value))
        raise ValueProblem(ReasonCode.INVALID_FORMAT, f"expected a date, got {type(value).__name__}")


class _CsvCells(_Cells):
    def __init__(self, decimal_separator: str) -> None:
        self.decimal_separator = decimal_separator

    def text(self, value: object) -> str:
        return _check_text(str(value))

    def number(self, value: object) -> Decimal:
        return parse_decimal(_check_text(str(value)), self.decimal_separator)

    def day(self, value: object) -> date:
        return parse_br_or_iso_date(_check_text(str(value)))


# ----------------------------------------------------------------------------------------- line assembler


@dataclass(slots=True)
class _SeenMaterial:
    name: str
    family: str
    unit: str
    stocked: bool


def _pair_id(requisition: str, code: str) -> int:
    digest = hashlib.blake2b(f"{requisition}\x1f{code}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big")


# The columns in the order a line reads them and reports their problems: the cell reader (a ``_Cells``
# method), what "N/A" or an empty cell means ("keep" N/A as a value, "none", or "required": a violation),
# and the Consumption field the value becomes as it is (checked against ``validate`` once per value).
_LAYOUT: tuple[tuple[str, str, str, str | None], ...] = (
    (_SITE, "text", "keep", "site_code"),
    (_CODE, "code", "required", "material_code"),
    (_NAME, "text", "required", None),
    (_FAMILY, "text", "required", "family"),
    (_SUPPLIER, "text", "required", None),  # the supplier code is derived from it
    (_QTY, "number", "required", "quantity"),
    (_UNIT, "text", "required", None),  # the unit is its canonical form
    (_REQ_DATE, "day", "none", "requested_date"),
    (_REQ_ID, "text", "required", "requisition_id"),
    (_SOL_DATE, "day", "required", "solicited_date"),
    (_BUY_DATE, "day", "none", "purchase_date"),
)
LAYOUT_COLUMNS: tuple[str, ...] = tuple(column for column, *_ in _LAYOUT)
"""The columns ``_Assembler.line`` takes, in its order."""

# A file has few distinct sites, materials, dates and quantities: each distinct text of a column is read
# and checked once. Requisition numbers and line keys are nearly all distinct, so every memo is bounded.
_MEMO_LIMIT = 50_000

_Read = tuple[Any, Violation | None, bool]  # (value, the reader's violation, valid as its Consumption field)
# The cells site .. unit (read values, their problems, all valid, canonical unit, its problem, supplier code).
_HEAD_COLUMNS = 7
# In stored form, also the head's part of the stored record: the JSON texts of family, material code,
# quantity, site code, supplier code and unit, and the wire bytes of fields 3-7 and of the family.
_StoredHead = tuple[str, str, str, str, str, str, bytes, bytes]
_Head = tuple[
    list[Any], tuple[Violation, ...], bool, str | None, Violation | None, str | None, _StoredHead | None
]


def _remember(memo: dict[Any, Any], key: Any, value: Any) -> Any:
    if len(memo) >= _MEMO_LIMIT:
        memo.clear()
    memo[key] = value
    return value


class _Assembler:
    """Turns rows (cells in ``LAYOUT_COLUMNS`` order) into outcomes, remembering the masters already
    emitted."""

    def __init__(
        self, cells: _Cells, raw_text: Callable[[Sequence[object]], str], *, stored_form: bool = False
    ) -> None:
        self.cells = cells
        self.raw_text = raw_text  # a row's raw text, built only for the rows that are rejected
        self.stored_form = stored_form  # valid lines as ``Stored`` rather than ``Parsed``
        self._texts = isinstance(cells, _CsvCells)  # every cell is a str
        self.materials: dict[str, _SeenMaterial] = {}
        self.sites: set[str] = set()
        self.suppliers: set[str] = set()
        # Occurrences per (requisition, material) pair, keyed by a 64-bit digest rather than a tuple of
        # two strings (a collision is ~1e-8 likely in a million-line file).
        self.ordinals = Ordinals()
        self._memos: list[dict[str | None, _Read]] = [{} for _ in _LAYOUT]
        self._units: dict[str, tuple[str | None, Violation | None, bool]] = {}
        self._suppliers: dict[str, tuple[str, bool]] = {}
        self._line_keys: dict[str, bool] = {}
        self._heads: dict[tuple[str, ...], _Head] = {}

    def _read(self, slot: int, value: object) -> _Read:
        column, reader, na, field = _LAYOUT[slot]
        c = self.cells
        result: Any = None
        problem = None
        if c.is_empty(value) or c.is_na(value):
            if na == "keep" and c.is_na(value):
                result = NA
            elif na != "none":
                shown = "empty" if c.is_empty(value) else '"N/A"'
                problem = Violation(_PATHS[column], ReasonCode.REQUIRED, f"{column} is {shown}")
        else:
            try:
                result = getattr(c, reader)(value)
            except ValueProblem as exc:
                problem = Violation(_PATHS[column], exc.reason, f"{column}: {exc.description}")
        valid = problem is None and (field is None or consumption_field_valid(field, result))
        return result, problem, valid

    def _unit(self, raw_unit: str) -> tuple[str | None, Violation | None, bool]:
        known = self._units.get(raw_unit)
        if known is None:
            try:
                unit = canonical_unit(raw_unit)
                known = (unit, None, consumption_field_valid("unit", unit))
            except UnknownUnitError:
                problem = Violation(
                    _PATHS[_UNIT], ReasonCode.UNKNOWN_UNIT, f"{_UNIT}: unknown unit {raw_unit!r}"
                )
                known = (None, problem, False)
            _remember(self._units, raw_unit, known)
        return known

    def _supplier(self, name: str) -> tuple[str, bool]:
        known = self._suppliers.get(name)
        if known is None:
            code = supplier_code(name)
            known = _remember(self._suppliers, name, (code, consumption_field_valid("supplier_code", code)))
        return known

    def _fill(self, slot: int, value: str) -> _Read:
        return _remember(self._memos[slot], value, self._read(slot, value))

    def _cells(self, values: Sequence[object], start: int) -> tuple[list[Any], list[Violation], bool]:
        """The values read from cells ``start``.. of a line, their problems, and whether every value is
        valid as its Consumption field."""
        problems: list[Violation] = []
        read: list[Any] = []
        valid = True
        for slot, value in enumerate(values, start):
            memo = self._memos[slot]
            cached = type(value) is str or value is None  # only these: in xlsx cells 1 == 1.0 == True
            hit = memo.get(value) if cached else None  # type: ignore[call-overload]
            if hit is None:
                hit = self._read(slot, value)
                if cached:
                    _remember(memo, value, hit)
            if hit[1] is not None:
                problems.append(hit[1])
            valid = valid and hit[2]
            read.append(hit[0])
        return read, problems, valid

    def _head(self, values: Sequence[object]) -> _Head:
        """The first ``_HEAD_COLUMNS`` cells read, with the unit and supplier code derived from them."""
        read, problems, valid = self._cells(values, 0)
        unit = unit_problem = supplier = None
        raw_unit, supplier_name = read[6], read[4]
        if raw_unit is not None:
            unit, unit_problem, unit_valid = self._unit(raw_unit)
            valid = valid and unit_valid
        if supplier_name is not None:
            supplier, supplier_valid = self._supplier(supplier_name)
            valid = valid and supplier_valid
        stored = None
        if self.stored_form and valid and not problems:
            site, code, _, family, _, quantity, _ = read
            wire = consumption_head(code, site, supplier, quantity, unit)  # type: ignore[arg-type]
            if wire is not None:
                e = encode_basestring
                stored = (
                    e(family),
                    e(code),
                    json_value(quantity),
                    e(site),
                    e(supplier),  # type: ignore[arg-type]  # valid: the supplier and unit were read
                    e(unit),  # type: ignore[arg-type]
                    wire,
                    consumption_family(family),
                )
        return read, tuple(problems), valid, unit, unit_problem, supplier, stored

    def line(self, line_no: int, values: Sequence[object], row: Sequence[object], out: list[Outcome]) -> None:
        """Appends the outcomes of one line (``values`` in ``LAYOUT_COLUMNS`` order, taken from ``row``)
        to ``out``."""
        if self._texts:
            # The head cells repeat, as a whole, line after line (they come from the same master data).
            key = tuple(values[:_HEAD_COLUMNS])
            head = self._heads.get(key)  # type: ignore[arg-type]
            if head is None:
                head = _remember(self._heads, key, self._head(key))
        else:
            head = self._head(values[:_HEAD_COLUMNS])
        (
            (site, code, name, family, supplier_name, quantity, _),
            head_problems,
            valid,
            unit,
            unit_problem,
            supplier,
            stored,
        ) = head
        if self._texts:
            # _cells for the four last cells, unrolled: this runs for every line of a file.
            memos = self._memos
            a, b, c, d = (
                memos[7].get(values[7]) or self._fill(7, values[7]),  # type: ignore[call-overload,arg-type]
                memos[8].get(values[8]) or self._fill(8, values[8]),  # type: ignore[call-overload,arg-type]
                memos[9].get(values[9]) or self._fill(9, values[9]),  # type: ignore[call-overload,arg-type]
                memos[10].get(values[10]) or self._fill(10, values[10]),  # type: ignore[call-overload,arg-type]
            )
            requested, requisition, solicited, purchased = a[0], b[0], c[0], d[0]
            tail_valid = a[2] and b[2] and c[2] and d[2]
            problems = [] if tail_valid else [h[1] for h in (a, b, c, d) if h[1] is not None]
        else:
            (requested, requisition, solicited, purchased), problems, tail_valid = self._cells(
                values[_HEAD_COLUMNS:], _HEAD_COLUMNS
            )
        valid = valid and tail_valid  # every field of the line's Consumption passes validate's own checks
        if head_problems:
            problems[:0] = head_problems
        if unit_problem is not None:
            problems.append(unit_problem)

        # Masters first, so that a consumer can insert them before the line that refers to them.
        flags: set[ConsumptionFlag] = set()
        stocked: bool | None = None
        if code is not None and name is not None and family is not None and unit is not None:
            seen = self.materials.get(code)
            if seen is None:
                stocked = not (is_service_unit(unit) or is_service_family(family))
                material = Material(code=code, name=name, family=family, unit=unit, stocked=stocked)
                bad = validate(material)
                if bad:
                    problems.extend(bad)
                else:
                    self.materials[code] = _SeenMaterial(name, family, unit, stocked)
                    out.append(Parsed(line_no, material))
            else:
                stocked = seen.stocked
                if seen.unit != unit:
                    flags.add(ConsumptionFlag.UNIT_VARIANT)
                if seen.name != name or seen.family != family:
                    flags.add(ConsumptionFlag.MASTER_CONFLICT)
        if site is not None and site not in self.sites:
            site_type, region = classify_site(site)
            site_record = Site(code=site, region=region, site_type=site_type)
            bad = validate(site_record)
            if bad:
                problems.extend(bad)
            else:
                self.sites.add(site)
                out.append(Parsed(line_no, site_record))
        if supplier is not None and supplier not in self.suppliers:
            supplier_record = Supplier(code=supplier, name=_WHITESPACE.sub(" ", supplier_name))
            bad = validate(supplier_record)
            if bad:
                problems.extend(bad)
            else:
                self.suppliers.add(supplier)
                out.append(Parsed(line_no, supplier_record))

        line_key = ""
        if requisition is not None and code is not None:
            # Counted even when the line is rejected, so fixing it later does not renumber its neighbours.
            line_key = f"{code}#{self.ordinals.next(_pair_id(requisition, code))}"
        if problems:
            out.append(ParseError.of(line_no, problems, self.raw_text(row)))
            return
        if valid:
            key_valid = self._line_keys.get(line_key)
            if key_valid is None:
                key_valid = _remember(
                    self._line_keys, line_key, consumption_field_valid("line_key", line_key)
                )
            # The rest of validate(): requested after solicited (both dates passed their own checks here).
            valid = key_valid and not (requested is not None and requested > solicited)
        if not valid:
            # Some check fails: validate() lists the violations, in its order.
            bad = validate(
                Consumption(
                    requisition_id=requisition,
                    line_key=line_key,
                    material_code=code,
                    site_code=site,
                    supplier_code=supplier,  # type: ignore[arg-type]
                    quantity=quantity,
                    unit=unit,  # type: ignore[arg-type]
                    solicited_date=solicited,
                    requested_date=requested,
                    purchase_date=purchased,
                    family=family,
                )
            )
            if bad:
                out.append(ParseError.of(line_no, bad, self.raw_text(row)))
                return
        flags.update(
            line_flags(
                unit=unit,  # type: ignore[arg-type]
                site_code=site,
                quantity=quantity,
                solicited_date=solicited,
                purchase_date=purchased,
                stocked=stocked,
            )
        )
        if stored is not None:
            # What record_key(), content_hash() and the wire form of the Consumption below would give,
            # from the parts of the head kept with it: the record itself is never needed.
            json_family, json_code, json_quantity, json_site, json_supplier, json_unit, wire, family_wire = (
                stored
            )
            e = encode_basestring
            text = consumption_json(
                json_family,
                e(line_key),
                json_code,
                json_value(purchased),
                json_quantity,
                json_value(requested),
                e(requisition),
                json_site,
                json_value(solicited),
                json_supplier,
                json_unit,
            )
            out.append(
                Stored(
                    line_no,
                    Consumption.record_type,
                    f"{Consumption.record_type}:{requisition}|{line_key}",
                    hashlib.sha256(text.encode()).hexdigest(),
                    consumption_wire(
                        requisition,
                        line_key,
                        wire,
                        requested,
                        solicited,
                        purchased,
                        family_wire,
                        tuple(sorted(flags)),
                    ),
                )
            )
            return
        out.append(
            Parsed(
                line_no,
                Consumption(
                    requisition_id=requisition,
                    line_key=line_key,
                    material_code=code,
                    site_code=site,
                    supplier_code=supplier,  # type: ignore[arg-type]
                    quantity=quantity,
                    unit=unit,  # type: ignore[arg-type]
                    solicited_date=solicited,
                    requested_date=requested,
                    purchase_date=purchased,
                    family=family,
                    flags=tuple(sorted(flags)),
                ),
            )
        )


def _header_index(header: Iterable[object]) -> dict[str, int] | list[str]:
    """Column name -> position, or the list of missing column names."""
    positions: dict[str, int] = {}
    for i, cell in enumerate(header):
        if isinstance(cell, str) and cell.strip() in COLUMNS and cell.strip() not in positions:
            positions[cell.strip()] = i
    missing = [c for c in COLUMNS if c not in positions]
    return missing if missing else positions


def _missing_columns_error(missing: list[str], raw: str) -> ParseError:
    return ParseError.of(
        0,
        [Violation(f"header.{m}", ReasonCode.INVALID_SCHEMA, f"column {m} is missing") for m in missing],
        raw,
    )


# ------------------------------------------------------------------------------------------------- xlsx


def _raw_cells(values: Iterable[object]) -> str:
    return " | ".join("" if v is None else str(v) for v in values)[:MAX_RAW]


class _UnreadableSheet(Exception):
    """openpyxl failed while parsing sheet XML lazily, in the middle of the rows."""


def _open_workbook(handle: BinaryIO) -> Any:
    """The workbook in read-only mode, or a file error."""
    try:
        return load_workbook(handle, read_only=True, data_only=True)
    except Exception as exc:
        # Opening parses an untrusted container (zip, XML parts, relationships): whatever openpyxl raises on
        # malformed input (BadZipFile, ParseError, KeyError, TypeError...) means "not a readable workbook".
        return file_error("file", ReasonCode.INVALID_FORMAT, f"not a readable xlsx workbook: {exc!r}"[:300])


def _sheet_rows(worksheet: Any) -> Iterator[tuple[object, ...]]:
    """The sheet's rows; a failure inside openpyxl's lazy XML parsing becomes ``_UnreadableSheet``."""
    rows = worksheet.iter_rows(values_only=True)
    while True:
        try:
            values = next(rows)
        except StopIteration:
            return
        except Exception as exc:  # malformed sheet XML, found only when the reader reaches it
            raise _UnreadableSheet(repr(exc)[:300]) from exc
        yield values


def read_sapiens_xlsx(source: Source, *, sheet: str = SHEET) -> Iterator[Outcome]:
    """Stream the requisition sheet of a Sapiens export workbook (openpyxl read-only mode)."""
    with open_binary(source) as handle:
        workbook = _open_workbook(handle)
        if isinstance(workbook, ParseError):
            yield workbook
            return
        try:
            if sheet not in workbook.sheetnames:
                yield file_error(
                    "file",
                    ReasonCode.INVALID_SCHEMA,
                    f"sheet {sheet!r} not found (sheets: {workbook.sheetnames})",
                )
                return
            yield from _read_sheet(workbook[sheet], _XlsxCells(workbook.epoch))
        except _UnreadableSheet as exc:
            yield file_error("file", ReasonCode.INVALID_FORMAT, f"unreadable sheet data: {exc}")
        finally:
            workbook.close()


def _read_sheet(worksheet: Any, cells: _XlsxCells) -> Iterator[Outcome]:
    rows = _sheet_rows(worksheet)
    header: tuple[object, ...] | None = None
    for values in rows:
        if any(not cells.is_empty(v) for v in values):
            header = values
            break
    if header is None:
        yield file_error("header", ReasonCode.INVALID_SCHEMA, "the sheet is empty")
        return
    index = _header_index(header)
    if isinstance(index, list):
        yield _missing_columns_error(index, _raw_cells(header))
        return
    last = max(index.values()) + 1
    assembler = _Assembler(cells, lambda values: _raw_cells(values[:last]))
    positions = [index[column] for column in LAYOUT_COLUMNS]
    out: list[Outcome] = []
    for line_no, values in enumerate(rows, start=1):
        if all(cells.is_empty(v) for v in values):
            yield Skipped(line_no, SkipReason.BLANK, "empty row")
            continue
        row = [values[i] if i < len(values) else None for i in positions]
        assembler.line(line_no, row, values, out)
        yield from out
        out.clear()


# -------------------------------------------------------------------------------------------------- csv


def read_sapiens_csv(
    source: Source,
    *,
    encoding: str = "utf-8-sig",
    delimiter: str | None = None,
    decimal_separator: str | None = None,
    stored_form: bool = False,
) -> Iterator[Outcome]:
    """Stream the CSV form of the export (see the module docstring for delimiter, decimals and dates).

    With ``stored_form``, valid requisition lines come as ``Stored`` (their masters still as ``Parsed``).
    """
    with open_binary(source) as handle:
        # surrogateescape: a bad byte becomes a marker on its own field instead of an exception mid-file.
        text = io.TextIOWrapper(handle, encoding=encoding, errors="surrogateescape", newline="")
        try:
            yield from _read_csv_text(text, delimiter, decimal_separator, stored_form)
        finally:
            text.detach()  # leave the caller's file object open


def _read_csv_text(
    text: io.TextIOWrapper, delimiter: str | None, decimal_separator: str | None, stored_form: bool
) -> Iterator[Outcome]:
    first = text.readline()
    if not first.strip():
        yield file_error("header", ReasonCode.INVALID_SCHEMA, "no header line")
        return
    if delimiter is None:
        delimiter = ";" if first.count(";") >= first.count(",") else ","
    if decimal_separator is None:
        decimal_separator = "," if delimiter == ";" else "."
    if decimal_separator not in (",", ".") or decimal_separator == delimiter:
        yield file_error(
            "header", ReasonCode.INVALID_SCHEMA, f"unusable decimal separator {decimal_separator!r}"
        )
        return
    try:
        header = next(csv.reader([first], delimiter=delimiter), [])
    except csv.Error as exc:
        yield file_error("header", ReasonCode.INVALID_FORMAT, f"unreadable header: {exc}", raw=first)
        return
    index = _header_index(header)
    if isinstance(index, list):
        yield _missing_columns_error(index, first)
        return
    sep = delimiter

    def raw_text(values: Sequence[object]) -> str:
        return sep.join(values)[:MAX_RAW]  # type: ignore[arg-type]

    assembler = _Assembler(_CsvCells(decimal_separator), raw_text, stored_form=stored_form)
    reader = csv.reader(text, delimiter=delimiter)
    width = len(header)
    pick = operator.itemgetter(*(index[column] for column in LAYOUT_COLUMNS))
    # Outcomes are handed on in runs of lines: one generator step per line costs more than the list.
    out: list[Outcome] = []
    for item in csv_rows(reader, delimiter, with_raw=False):
        if not isinstance(item, tuple):
            out.append(item)
            continue
        line_no, values, _ = item
        if len(values) != width and (len(values) < width or any(v.strip() for v in values[width:])):
            out.append(
                file_error(
                    "line",
                    ReasonCode.INVALID_SCHEMA,
                    f"expected {width} fields, got {len(values)}",
                    line_no=line_no,
                    raw=raw_text(values),
                )
            )
            continue
        assembler.line(line_no, pick(values), values, out)
        if len(out) >= 256:
            yield from out
            out.clear()
    yield from out


# ------------------------------------------------------------------------------------------------ DADOS


def _dados_rows(source: Source) -> Iterator[tuple[int, tuple[object, ...]] | ParseError]:
    """(line_no, row) of the DADOS sheet below its header row; line 1 is the row under the header."""
    with open_binary(source) as handle:
        workbook = _open_workbook(handle)
        if isinstance(workbook, ParseError):
            yield workbook
            return
        try:
            if DADOS_SHEET not in workbook.sheetnames:
                yield file_error("file", ReasonCode.INVALID_SCHEMA, f"sheet {DADOS_SHEET!r} not found")
                return
            offset: int | None = None  # position of the SITE column, known once the header row is seen
            line_no = 0
            for values in _sheet_rows(workbook[DADOS_SHEET]):
                if offset is None:
                    marks = [isinstance(v, str) and v.strip() == "SITE" for v in values]
                    offset = marks.index(True) if any(marks) else None
                    continue
                line_no += 1
                yield line_no, tuple(values[offset:])
            if offset is None:
                yield file_error("header.SITE", ReasonCode.INVALID_SCHEMA, "no SITE column in DADOS")
        except _UnreadableSheet as exc:
            yield file_error("file", ReasonCode.INVALID_FORMAT, f"unreadable sheet data: {exc}")
        finally:
            workbook.close()


def read_dados_sites(source: Source) -> Iterator[Outcome]:
    """Sites of the hidden DADOS list (column SITE), typed by ``classify_site``; client left empty.

    Codes are trimmed ("GNA " and "MDD001NX\\n" occur); a code repeated after trimming is ``Skipped``.
    """
    cells = _XlsxCells(datetime(1899, 12, 30))
    seen: dict[str, int] = {}
    for item in _dados_rows(source):
        if isinstance(item, ParseError):
            yield item
            continue
        line_no, values = item
        value = values[0] if values else None
        if cells.is_empty(value):
            yield Skipped(line_no, SkipReason.BLANK, "no site on this row")
            continue
        try:
            code = cells.text(value)
        except ValueProblem as problem:
            yield ParseError.of(
                line_no, [Violation("site.code", problem.reason, problem.description)], _raw_cells(values)
            )
            continue
        if code in seen:
            yield Skipped(
                line_no, SkipReason.DUPLICATE_LINE, f"site {code!r} already listed on line {seen[code]}"
            )
            continue
        seen[code] = line_no
        site_type, region = classify_site(code)
        record = Site(code=code, region=region, site_type=site_type)
        bad = validate(record)
        yield ParseError.of(line_no, bad, _raw_cells(values)) if bad else Parsed(line_no, record)


def read_dados_cost_centres(source: Source) -> list[tuple[str, str]]:
    """(ID CLIENTE, CLIENTE) pairs of the DADOS list, e.g. ("NC01", "ATC PREVENTIVA"); small, so a list."""
    centres: list[tuple[str, str]] = []
    for item in _dados_rows(source):
        if isinstance(item, ParseError):
            continue
        _, values = item
        if len(values) >= 4 and isinstance(values[2], str) and isinstance(values[3], str):
            if values[2].strip() and values[3].strip():
                centres.append((values[3].strip(), values[2].strip()))
    return centres
