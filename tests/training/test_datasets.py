"""Reading exports without losing "N/A", excluding services, and detecting censored weeks."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from ml_training.datasets import (
    Consumption,
    build_panel,
    detect_window,
    find_source,
    is_service,
    read_consumption,
)

from .conftest import synthetic_rows, write_csv

REAL = Path(__file__).resolve().parents[2] / "data" / "dadosSuprimentos.xlsx"


def _consumption(weekly_lines: list[int], lead_days: int = 3, end_gap: int = 0) -> Consumption:
    """Lines spread over weeks, every line bought ``lead_days`` after its request."""
    start = np.datetime64("2025-01-06")
    req = [start + np.timedelta64(7 * w + 1, "D") for w, n in enumerate(weekly_lines) for _ in range(n)]
    requested = np.array(req, dtype="datetime64[D]")
    purchased = requested + np.timedelta64(lead_days, "D")
    purchased[-1] += np.timedelta64(end_gap, "D")
    n = requested.size
    return Consumption(
        material=["010001"] * n,
        site=["N/A"] * n,
        family=["EPI"] * n,
        quantity=np.ones(n),
        unit=["UN"] * n,
        requested=requested,
        purchased=purchased,
        source="test",
    )


def test_censored_tail_and_thin_head_detected() -> None:
    lines = [2, 3, *([60] * 20), 50, 4, 2]
    cons = _consumption(lines, lead_days=3)
    window = detect_window(cons)
    assert window.first_week == np.datetime64("2025-01-20")  # two thin weeks dropped
    assert window.thin_head == ["2025-01-06", "2025-01-13"]
    # the last two weeks hold 4 and 2 lines against 60: censored; the week with 50 stays
    assert window.censored_tail == [str(np.datetime64("2025-01-06") + 7 * k) for k in (23, 24)]
    assert window.last_week == np.datetime64("2025-01-06") + 7 * 22


def test_tail_censored_by_lead_time_completeness() -> None:
    # Lead times spread over 0-40 days and an export cut at a date: a line is in the export only if it was
    # bought by then, so the last weeks fade out gradually and some still look normal by their counts.
    rng = np.random.default_rng(1)
    start, cut = np.datetime64("2025-01-06"), np.datetime64("2025-01-06") + np.timedelta64(7 * 20, "D")
    requested = start + rng.integers(0, 7 * 20, 1200).astype("timedelta64[D]")
    purchased = requested + rng.integers(0, 41, 1200).astype("timedelta64[D]")
    keep = purchased <= cut
    n = int(keep.sum())
    cons = Consumption(
        material=["010001"] * n,
        site=["N/A"] * n,
        family=["EPI"] * n,
        quantity=np.ones(n),
        unit=["UN"] * n,
        requested=requested[keep],
        purchased=purchased[keep],
        source="test",
    )
    window = detect_window(cons)
    median = float(np.median(list(window.weekly_lines.values())))
    assert 4 <= len(window.censored_tail) <= 7
    assert all(
        window.completeness[w] < 0.9
        for w in window.censored_tail[:-1]
        if window.weekly_lines[w] >= 0.35 * median
    )
    assert any(
        window.weekly_lines[w] >= 0.35 * median for w in window.censored_tail
    )  # counts alone would miss it
    assert window.completeness[str(window.last_week)] >= 0.9


def test_csv_keeps_na_strings_and_drops_services(tmp_path: Path) -> None:
    source = write_csv(tmp_path / "consumption.csv", synthetic_rows(weeks=12, materials=4))
    cons = read_consumption(source)
    assert "N/A" in cons.site  # "N/A" stays a site name, not a missing value
    assert cons.services_by_family == {"SERVIÇOS TOMADOS": 4}
    assert cons.dropped == {"request date N/A": 1}
    assert "0001" not in cons.material
    assert all(m.startswith("01") for m in cons.material)  # codes keep their leading zeros
    assert len(cons.fingerprint()) == 64 and cons.fingerprint() == read_consumption(source).fingerprint()


def test_is_service() -> None:
    assert is_service("SERVIÇOS PRESTADOS", "SR")
    assert is_service("HIGHLINE OBRAS CIVIS", "VB")
    assert not is_service("EPI", "UN")


def test_panel_levels_and_units(tmp_path: Path) -> None:
    rows = synthetic_rows(weeks=30, materials=6)
    rows.append({**rows[0], "unit": "CX", "quantity": 1.0})  # one material in two units -> two series
    cons = read_consumption(write_csv(tmp_path / "c.csv", rows))
    panel = build_panel(cons, detect_window(cons))
    levels = {s.level for s in panel.series}
    assert levels == {"material_site", "material", "family", "region", "national"}
    assert any(s.material.endswith("@CX") for s in panel.by_level("material"))
    assert all(s.y.shape == panel.weeks.shape for s in panel.series)
    materials_only = build_panel(cons, detect_window(cons), site_series=False)
    assert {s.level for s in materials_only.series} == levels - {"material_site"}
    assert len(materials_only.by_level("material")) == len(panel.by_level("material"))


@pytest.mark.skipif(not REAL.is_file(), reason="real export not present")
def test_real_export_keeps_na_sites() -> None:
    cons = read_consumption(find_source(REAL.parent))
    assert cons.site.count("N/A") == 608  # the goods lines whose site is the string N/A
    assert {"SERVIÇOS TOMADOS", "SERVIÇOS PRESTADOS"} <= set(cons.services_by_family)
    assert not any(f.startswith("SERV") for f in cons.family)
    window = detect_window(cons)
    assert "2025-10-20" in window.censored_tail and "2025-10-13" in window.censored_tail


def test_parquet_export_with_date_columns(tmp_path: Path) -> None:
    import datetime as dt

    import pyarrow as pa
    import pyarrow.parquet as pq

    rows = synthetic_rows(weeks=12, materials=4)
    for row in rows:
        for key in ("requested_date", "purchase_date"):
            row[key] = None if row[key] == "N/A" else dt.date.fromisoformat(str(row[key]))
    pq.write_table(pa.Table.from_pylist(rows), tmp_path / "consumption.parquet")
    cons = read_consumption(find_source(tmp_path))
    assert cons.source.endswith("consumption.parquet")
    assert cons.dropped == {"request date N/A": 1}
    assert "N/A" in cons.site
    csv_twin = read_consumption(write_csv(tmp_path / "c.csv", synthetic_rows(weeks=12, materials=4)))
    assert cons.fingerprint() == csv_twin.fingerprint()  # same rows, same fingerprint, whatever the format
