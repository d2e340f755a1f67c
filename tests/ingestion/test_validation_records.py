"""Record validation, natural keys and content hashes, and the unit table."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, date, datetime, timedelta, timezone
from decimal import Decimal

import pytest

from services.ingestion.records import (
    Consumption,
    ConsumptionFlag,
    ExternalObservation,
    Material,
    MovementKind,
    Novelty,
    PurchaseOrder,
    Site,
    StockMovement,
    StockSnapshot,
    Supplier,
    canonical_decimal,
    decimal_from_float,
    novelty,
)
from services.ingestion.units import (
    EXPORT_UNIT_SPELLINGS,
    UnitConversionError,
    UnknownUnitError,
    canonical_unit,
    convert,
    is_known_unit,
    is_service_unit,
)
from services.ingestion.validation import ReasonCode, Violation, at_index, field_path, quality_flags, validate

LINE = Consumption(
    requisition_id="95022",
    line_key="010601#1",
    material_code="010601",
    site_code="BAFRD016",
    supplier_code="FORTPEL",
    quantity=Decimal(1),
    unit="CX",
    solicited_date=date(2025, 3, 6),
    purchase_date=date(2025, 3, 12),
    family="EPI",
)
MOVE = StockMovement(
    "MV-1", MovementKind.ISSUE, "010825", "ALMOX-BA", Decimal(2), datetime(2025, 1, 2, tzinfo=UTC)
)
ORDER = PurchaseOrder("PO-1", "010825", "ALMOX-BA", "FORTPEL", Decimal(3), date(2025, 1, 2))


def reasons(record: object) -> set[tuple[str, ReasonCode]]:
    return {(v.field_path, v.reason_code) for v in validate(record)}  # type: ignore[arg-type]


def test_a_valid_line_has_no_violations() -> None:
    assert validate(LINE) == []


@pytest.mark.parametrize(
    ("change", "path", "reason"),
    [
        ({"quantity": Decimal(0)}, "consumption.quantity", ReasonCode.OUT_OF_RANGE),
        ({"quantity": Decimal("-1")}, "consumption.quantity", ReasonCode.OUT_OF_RANGE),
        ({"quantity": Decimal("NaN")}, "consumption.quantity", ReasonCode.OUT_OF_RANGE),
        ({"quantity": Decimal("Infinity")}, "consumption.quantity", ReasonCode.OUT_OF_RANGE),
        ({"quantity": Decimal("1e11")}, "consumption.quantity", ReasonCode.OUT_OF_RANGE),  # MAX_MAGNITUDE
        ({"quantity": "12"}, "consumption.quantity", ReasonCode.INVALID_FORMAT),
        ({"unit": "MT"}, "consumption.unit", ReasonCode.UNKNOWN_UNIT),  # records carry canonical units
        ({"unit": "UND"}, "consumption.unit", ReasonCode.UNKNOWN_UNIT),
        ({"unit": ""}, "consumption.unit", ReasonCode.REQUIRED),
        ({"requisition_id": ""}, "consumption.requisition_id", ReasonCode.REQUIRED),
        ({"requisition_id": " 95022"}, "consumption.requisition_id", ReasonCode.INVALID_FORMAT),
        ({"site_code": "BA\nFRD"}, "consumption.site_code", ReasonCode.INVALID_FORMAT),
        ({"material_code": "x" * 201}, "consumption.material_code", ReasonCode.OUT_OF_RANGE),
        ({"solicited_date": None}, "consumption.solicited_date", ReasonCode.REQUIRED),
        ({"solicited_date": datetime(2025, 3, 6)}, "consumption.solicited_date", ReasonCode.INVALID_FORMAT),
        ({"purchase_date": date(1899, 12, 30)}, "consumption.purchase_date", ReasonCode.OUT_OF_RANGE),
        ({"requested_date": date(2025, 3, 7)}, "consumption.requested_date", ReasonCode.INCONSISTENT),
        ({"flags": ("urgent",)}, "consumption.flags", ReasonCode.UNKNOWN_VALUE),
    ],
)
def test_consumption_violations_name_the_field(change: dict, path: str, reason: ReasonCode) -> None:
    assert (path, reason) in reasons(replace(LINE, **change))


def test_the_largest_magnitude_below_the_bound_is_valid() -> None:
    assert validate(replace(LINE, quantity=Decimal("99999999999.999999"))) == []


def test_negative_lead_time_is_not_a_violation_but_a_flag() -> None:
    late = replace(LINE, purchase_date=date(2025, 3, 1))
    assert validate(late) == []
    assert late.lead_time_days() == -5
    assert ConsumptionFlag.NEGATIVE_LEAD_TIME in quality_flags(late)


def test_quality_flags() -> None:
    assert quality_flags(LINE) == ()
    assert quality_flags(replace(LINE, unit="SR")) == (ConsumptionFlag.SERVICE,)
    assert quality_flags(LINE, stocked=False) == (ConsumptionFlag.SERVICE,)
    assert quality_flags(replace(LINE, site_code="N/A")) == (ConsumptionFlag.UNKNOWN_SITE,)
    assert quality_flags(replace(LINE, quantity=Decimal(10_000))) == ()
    assert quality_flags(replace(LINE, quantity=Decimal(11_650))) == (ConsumptionFlag.QUANTITY_OUTLIER,)
    assert quality_flags(replace(LINE, flags=(ConsumptionFlag.UNIT_VARIANT,))) == (
        ConsumptionFlag.UNIT_VARIANT,
    )


@pytest.mark.parametrize(
    ("record", "path", "reason"),
    [
        (Material("", "X", "EPI", "UN"), "material.code", ReasonCode.REQUIRED),
        (Material("01 06\t01", "X", "EPI", "UN"), "material.code", ReasonCode.INVALID_FORMAT),
        (Material("010601", "X", "EPI", "BOX"), "material.unit", ReasonCode.UNKNOWN_UNIT),
        (Material("010601", "X", "EPI", "UN", abc_class="D"), "material.abc_class", ReasonCode.UNKNOWN_VALUE),
        (
            Material("010601", "X", "EPI", "UN", criticality="vital"),
            "material.criticality",
            ReasonCode.UNKNOWN_VALUE,
        ),
        (Material("0001", "X", "SERVIÇOS", "SR", stocked=True), "material.stocked", ReasonCode.INCONSISTENT),
        (Site("X", region="XX"), "site.region", ReasonCode.UNKNOWN_VALUE),
        (Site("X", site_type="depot"), "site.site_type", ReasonCode.UNKNOWN_VALUE),
        (Supplier("", "name"), "supplier.code", ReasonCode.REQUIRED),
        (
            StockSnapshot("A", "B", Decimal(-1), date(2025, 1, 1)),
            "stock_snapshot.on_hand",
            ReasonCode.OUT_OF_RANGE,
        ),
        (replace(MOVE, quantity=Decimal(-2)), "stock_movement.quantity", ReasonCode.OUT_OF_RANGE),
        (
            replace(MOVE, kind=MovementKind.ADJUSTMENT, quantity=Decimal(0)),
            "stock_movement.quantity",
            ReasonCode.OUT_OF_RANGE,
        ),
        (replace(MOVE, at=datetime(2025, 1, 2)), "stock_movement.at", ReasonCode.INVALID_FORMAT),
        (replace(MOVE, kind=MovementKind.TRANSFER), "stock_movement.to_site_code", ReasonCode.REQUIRED),
        (
            replace(MOVE, kind=MovementKind.TRANSFER, to_site_code="ALMOX-BA"),
            "stock_movement.to_site_code",
            ReasonCode.INCONSISTENT,
        ),
        (replace(MOVE, to_site_code="BAFRD017"), "stock_movement.to_site_code", ReasonCode.INCONSISTENT),
        (replace(MOVE, kind="theft"), "stock_movement.kind", ReasonCode.UNKNOWN_VALUE),
        (
            replace(ORDER, received_date=date(2025, 1, 1)),
            "purchase_order.received_date",
            ReasonCode.INCONSISTENT,
        ),
        (
            replace(ORDER, expected_date=date(2024, 12, 1)),
            "purchase_order.expected_date",
            ReasonCode.INCONSISTENT,
        ),
        (
            ExternalObservation("PTAX USD", date(2025, 1, 1), Decimal(1), "BRL", "BCB"),
            "external_observation.series_id",
            ReasonCode.INVALID_FORMAT,
        ),
        (
            ExternalObservation("ptax.usd.sell", date(2025, 1, 1), Decimal("NaN"), "BRL", "BCB"),
            "external_observation.value",
            ReasonCode.OUT_OF_RANGE,
        ),
        (
            ExternalObservation("ptax.usd.sell", date(2025, 1, 1), Decimal(1), "", "BCB"),
            "external_observation.unit",
            ReasonCode.REQUIRED,
        ),
    ],
)
def test_every_record_type_names_its_bad_field(record: object, path: str, reason: ReasonCode) -> None:
    assert (path, reason) in reasons(record)


def test_valid_examples_of_each_type() -> None:
    for record in (
        MOVE,
        ORDER,
        replace(MOVE, kind=MovementKind.ADJUSTMENT, quantity=Decimal(-3)),
        replace(MOVE, kind=MovementKind.TRANSFER, to_site_code="BAFRD017"),
        Site("N/A"),
        Supplier("ATACADAO", "Atacadão"),
        StockSnapshot("010825", "ALMOX-BA", Decimal(0), date(2025, 1, 31)),
    ):
        assert validate(record) == [], record


def test_validate_refuses_non_records() -> None:
    with pytest.raises(TypeError):
        validate("consumption")  # type: ignore[arg-type]


def test_field_paths_and_batch_index() -> None:
    assert field_path("consumption", "purchase_date") == "consumption.purchase_date"
    found = validate(replace(LINE, purchase_date=date(1900, 1, 1)))
    assert at_index(found, 12) == [
        Violation("records[12].consumption.purchase_date", ReasonCode.OUT_OF_RANGE, found[0].description)
    ]


# ------------------------------------------------------------------------------------- keys and hashes


def test_duplicate_and_back_dated_correction() -> None:
    stored = LINE.content_hash()
    assert novelty(None, LINE) is Novelty.NEW
    assert novelty(stored, replace(LINE)) is Novelty.DUPLICATE
    corrected = replace(LINE, purchase_date=date(2025, 3, 10))  # same line, corrected later
    assert corrected.natural_key() == LINE.natural_key() == ("95022", "010601#1")
    assert novelty(stored, corrected) is Novelty.SUPERSEDES


def test_flags_are_not_content() -> None:
    flagged = replace(LINE, flags=(ConsumptionFlag.UNIT_VARIANT,))
    assert flagged.content_hash() == LINE.content_hash()


def test_hash_is_canonical_for_numbers_and_instants() -> None:
    assert replace(LINE, quantity=Decimal("1.000")).content_hash() == LINE.content_hash()
    assert replace(LINE, quantity=Decimal("1.5")).content_hash() != LINE.content_hash()
    later = replace(MOVE, at=datetime(2025, 1, 1, 21, tzinfo=timezone(timedelta(hours=-3))))
    assert later.content_hash() == MOVE.content_hash()  # the same instant in Brasília time
    assert canonical_decimal(Decimal("1E+2")) == "100"
    assert canonical_decimal(Decimal("-0.00")) == "0"


def test_keys_of_each_type() -> None:
    assert Material("010601", "X", "EPI", "CX").natural_key() == ("010601",)
    assert ExternalObservation(
        "ptax.usd.sell", date(2025, 1, 2), Decimal(6), "BRL/USD", "BCB"
    ).natural_key() == (
        "ptax.usd.sell",
        "2025-01-02",
    )
    assert ORDER.natural_key() == ("PO-1", "010825")
    assert MOVE.natural_key() == ("MV-1",)
    assert StockSnapshot("A", "B", Decimal(1), date(2025, 1, 1)).natural_key() == ("A", "B", "2025-01-01")
    assert Site("N/A").content_hash() != Supplier("N/A", "N/A").content_hash()


@pytest.mark.parametrize("text", ["1643.4", "0.58", "5.2645", "11650", "0.1", "1e-07"])
def test_decimal_survives_the_double_on_the_wire(text: str) -> None:
    assert decimal_from_float(float(Decimal(text))) == Decimal(text)


# ------------------------------------------------------------------------------------------------ units


def test_every_export_unit_is_known_and_aliases_resolve() -> None:
    assert len(EXPORT_UNIT_SPELLINGS) == 17
    assert all(is_known_unit(u) for u in EXPORT_UNIT_SPELLINGS)
    assert {canonical_unit(u) for u in EXPORT_UNIT_SPELLINGS} == {
        "UN",
        "SR",
        "M",
        "KG",
        "M3",
        "M2",
        "CJ",
        "PC",
        "CX",
        "PAR",
        "GL",
        "LT",
        "VB",
        "HR",
    }
    assert canonical_unit(" kg ") == "KG"


def test_unknown_units_are_never_guessed() -> None:
    for raw in ("UND", "UNID", "KGS", "", "CAIXA"):
        with pytest.raises(UnknownUnitError):
            canonical_unit(raw)


@pytest.mark.parametrize(
    ("quantity", "source", "target", "expected"),
    [
        ("1.5", "KG", "G", "1500"),
        ("250", "G", "KG", "0.25"),
        ("2", "T", "KG", "2000"),
        ("3", "M", "CM", "300"),
        ("3", "MT", "M", "3"),
        ("1", "M3", "LT", "1000"),
        ("1", "M³", "M3", "1"),
        ("7", "CX", "CX", "7"),
    ],
)
def test_real_conversions(quantity: str, source: str, target: str, expected: str) -> None:
    assert convert(Decimal(quantity), source, target) == Decimal(expected)


@pytest.mark.parametrize(
    ("source", "target"), [("CX", "UN"), ("GL", "LT"), ("PAR", "UN"), ("PC", "UN"), ("KG", "M"), ("HR", "SR")]
)
def test_conversions_that_do_not_exist(source: str, target: str) -> None:
    with pytest.raises(UnitConversionError):
        convert(Decimal(1), source, target)


def test_service_units() -> None:
    assert {u for u in EXPORT_UNIT_SPELLINGS if is_service_unit(u)} == {"SR", "VB", "HR"}
    assert not is_service_unit("UND")
