"""A material's optional unit cost: validation, content hash and wire form, and the generic readers.

Unset means unknown (not zero). Materials stored before the field existed carry no cost, so their content
hashes and wire bytes must be exactly what they were: a re-upload of them stays a duplicate.
"""

from __future__ import annotations

import io
import math
from dataclasses import replace
from decimal import Decimal

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from novacorrente.ingestion.v1 import records_pb2 as pb

from services.ingestion.converters import ConversionError, record_from_proto, record_payload, record_to_proto
from services.ingestion.formats import Parsed, ParseError
from services.ingestion.formats.generic import read_csv, read_parquet, write_csv
from services.ingestion.records import Criticality, Material, Novelty, novelty
from services.ingestion.validation import ReasonCode, validate

PLAIN = Material(code="010601", name="CAIXA ção", family="EPI", unit="CX")
CLASSIFIED = Material(
    code="0001",
    name="LUVA",
    family="EPI",
    unit="UN",
    criticality=Criticality.HIGH,
    abc_class="A",
    stocked=False,
)
# Content hashes and serialized records of these two materials as ingestion computed them before the unit
# cost existed (the values stored in core.current_records and core.record_versions of a running system).
STORED = {
    PLAIN: (
        "9db7656aa760fb013046c96ce98a5b6595bc93fa76ffcea549aa204e0c3d1945",
        "0a200a06303130363031120b434149584120c3a7c3a36f1a03455049220243583801",
    ),
    CLASSIFIED: (
        "8d61b69b8c7c180c9b3fd1c91f797a3096f94936197f0f85e3a342897d58da9d",
        "0a1a0a043030303112044c5556411a034550492202554e2803320141",
    ),
}


def test_materials_without_a_cost_keep_their_stored_hash_and_bytes() -> None:
    for material, (content_hash, payload) in STORED.items():
        assert material.unit_cost_brl is None
        assert material.content_hash() == content_hash
        assert record_payload(material).hex() == payload
        assert novelty(content_hash, material) is Novelty.DUPLICATE
        # Read back from the stored bytes: still no cost, still the same hash.
        back = record_from_proto(pb.Record.FromString(bytes.fromhex(payload)))
        assert back == material and back.content_hash() == content_hash


def test_a_cost_is_content_and_its_spelling_is_not() -> None:
    stored = PLAIN.content_hash()
    costed = replace(PLAIN, unit_cost_brl=Decimal("12.5"))
    assert novelty(stored, costed) is Novelty.SUPERSEDES  # a cost added later corrects the material
    assert novelty(costed.content_hash(), replace(PLAIN, unit_cost_brl=Decimal("12.50"))) is Novelty.DUPLICATE
    assert novelty(costed.content_hash(), replace(PLAIN, unit_cost_brl=Decimal("12.6"))) is Novelty.SUPERSEDES
    # Zero is a known cost, unlike an absent one.
    zero = replace(PLAIN, unit_cost_brl=Decimal(0))
    assert zero.content_hash() != stored
    assert costed.natural_key() == PLAIN.natural_key() == ("010601",)


@pytest.mark.parametrize(
    ("cost", "reason"),
    [
        (Decimal("-0.01"), ReasonCode.OUT_OF_RANGE),
        (Decimal("NaN"), ReasonCode.OUT_OF_RANGE),
        (Decimal("Infinity"), ReasonCode.OUT_OF_RANGE),
        (Decimal("-Infinity"), ReasonCode.OUT_OF_RANGE),
        (Decimal("1e16"), ReasonCode.OUT_OF_RANGE),
        ("12.5", ReasonCode.INVALID_FORMAT),
    ],
)
def test_a_bad_cost_names_the_field(cost: object, reason: ReasonCode) -> None:
    found = validate(replace(PLAIN, unit_cost_brl=cost))  # type: ignore[arg-type]
    assert [(v.field_path, v.reason_code) for v in found] == [("material.unit_cost_brl", reason)]


@pytest.mark.parametrize("cost", [None, Decimal(0), Decimal("0.01"), Decimal("1843.27")])
def test_absent_zero_and_positive_costs_are_valid(cost: Decimal | None) -> None:
    assert validate(replace(PLAIN, unit_cost_brl=cost)) == []


def test_the_wire_form_keeps_unknown_apart_from_zero() -> None:
    assert not record_to_proto(PLAIN).material.HasField("unit_cost_brl")
    zero = record_to_proto(replace(PLAIN, unit_cost_brl=Decimal(0))).material
    assert zero.HasField("unit_cost_brl") and zero.unit_cost_brl == 0.0
    costed = replace(PLAIN, unit_cost_brl=Decimal("1643.4"))
    back = record_from_proto(record_to_proto(costed))
    assert back.unit_cost_brl == Decimal("1643.4")  # type: ignore[attr-defined]
    assert back.content_hash() == costed.content_hash()


@pytest.mark.parametrize("value", [math.nan, math.inf, -math.inf])
def test_a_non_finite_cost_on_the_wire_names_the_field(value: float) -> None:
    message = record_to_proto(PLAIN)
    message.material.unit_cost_brl = value
    with pytest.raises(ConversionError) as err:
        record_from_proto(message)
    assert [(v.field_path, v.reason_code) for v in err.value.violations] == [
        ("material.unit_cost_brl", ReasonCode.OUT_OF_RANGE)
    ]


def _csv(text: str) -> list[object]:
    return list(read_csv(io.BytesIO(text.encode()), "material"))


def test_the_generic_csv_cost_column_is_optional_and_an_empty_cell_is_unknown() -> None:
    without = _csv("code,name,family,unit\n010601,CAIXA ção,EPI,CX\n")
    assert [o.record for o in without if isinstance(o, Parsed)] == [PLAIN]
    assert without[0].record.content_hash() == STORED[PLAIN][0]  # type: ignore[attr-defined]
    outcomes = _csv(
        "code,name,family,unit,unit_cost_brl\n"
        "010601,CAIXA ção,EPI,CX,\n"
        "010602,LUVA,EPI,UN,12.50\n"
        "010603,BOTA,EPI,UN,0\n"
        "010604,CAPACETE,EPI,UN,-3\n"
        '010605,OCULOS,EPI,UN,"12,5"\n'
        "010606,CINTO,EPI,UN,NaN\n"
    )
    parsed = [o.record for o in outcomes if isinstance(o, Parsed)]
    assert [m.unit_cost_brl for m in parsed] == [None, Decimal("12.50"), Decimal(0)]  # type: ignore[attr-defined]
    errors = [o for o in outcomes if isinstance(o, ParseError)]
    assert [(e.line_no, [(v.field_path, v.reason_code) for v in e.violations]) for e in errors] == [
        (4, [("material.unit_cost_brl", ReasonCode.OUT_OF_RANGE)]),
        (5, [("material.unit_cost_brl", ReasonCode.INVALID_FORMAT)]),
        (6, [("material.unit_cost_brl", ReasonCode.INVALID_FORMAT)]),
    ]


def test_the_generic_csv_round_trips_a_cost() -> None:
    records = [PLAIN, replace(CLASSIFIED, unit_cost_brl=Decimal("7.125"))]
    sink = io.StringIO()
    write_csv(records, sink, "material")
    back = [o.record for o in _csv(sink.getvalue()) if isinstance(o, Parsed)]
    assert back == records
    assert [r.content_hash() for r in back] == [r.content_hash() for r in records]


def test_the_generic_parquet_reads_a_double_cost_column_with_nulls() -> None:
    table = pa.table(
        {
            "code": ["010601", "010602", "010603"],
            "name": ["CAIXA ção", "LUVA", "BOTA"],
            "family": ["EPI", "EPI", "EPI"],
            "unit": ["CX", "UN", "UN"],
            "unit_cost_brl": pa.array([None, 12.5, math.nan], type=pa.float64()),
        }
    )
    sink = io.BytesIO()
    pq.write_table(table, sink)
    outcomes = list(read_parquet(io.BytesIO(sink.getvalue()), "material"))
    parsed = [o.record for o in outcomes if isinstance(o, Parsed)]
    assert parsed[0] == PLAIN
    assert parsed[1].unit_cost_brl == Decimal("12.5")  # type: ignore[attr-defined]
    errors = [o for o in outcomes if isinstance(o, ParseError)]
    assert [(e.line_no, [v.field_path for v in e.violations]) for e in errors] == [
        (3, ["material.unit_cost_brl"])
    ]
