"""Synthetic consumption exports: small, deterministic, with the real export's traps (censored tail, "N/A"
sites,
services, negative lead times)."""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
import pytest

COLUMNS = ("material", "site", "family", "quantity", "unit", "requested_date", "purchase_date")


def synthetic_rows(weeks: int = 40, materials: int = 24, seed: int = 5) -> list[dict[str, object]]:
    rng = np.random.default_rng(seed)
    start = np.datetime64("2025-01-06")
    export_end = start + np.timedelta64(7 * weeks - 3, "D")
    families = ["EPI", "MATERIAL ELETRICO", "FERRO E AÇO", "MATERIAL CIVIL"]
    sites = ["BAJSS002-3", "ALMOX-BA", "N/A", "GERPE", "SP4-UBA-00"]
    rows: list[dict[str, object]] = []
    for m in range(materials):
        rate = 0.15 + 0.6 * rng.random()
        size = rng.integers(1, 30)
        for w in range(weeks):
            for _ in range(rng.poisson(rate)):
                day = start + np.timedelta64(7 * w + int(rng.integers(0, 5)), "D")
                lead = int(rng.choice([0, 2, 5, 6, 9, 14, 21, 35, -3]))
                bought = day + np.timedelta64(lead, "D")
                if bought > export_end:  # the export only holds purchased requisitions
                    continue
                rows.append(
                    {
                        "material": f"01{m:04d}",
                        "site": sites[int(rng.integers(0, len(sites)))],
                        "family": families[m % len(families)],
                        "quantity": float(max(1, rng.poisson(size))),
                        "unit": "UN",
                        "requested_date": str(day),
                        "purchase_date": str(bought),
                    }
                )
    for w in range(0, weeks, 3):  # services: never stock
        day = start + np.timedelta64(7 * w, "D")
        rows.append(
            {
                "material": "0001",
                "site": "N/A",
                "family": "SERVIÇOS TOMADOS",
                "quantity": 1.0,
                "unit": "SR",
                "requested_date": str(day),
                "purchase_date": str(day),
            }
        )
    rows.append(
        {
            "material": "010999",
            "site": "ALMOX-BA",
            "family": "EPI",
            "quantity": 2.0,
            "unit": "UN",
            "requested_date": "N/A",
            "purchase_date": "N/A",
        }
    )
    return rows


def write_csv(path: Path, rows: list[dict[str, object]]) -> Path:
    with path.open("w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=COLUMNS)
        writer.writeheader()
        writer.writerows(rows)
    return path


@pytest.fixture
def synthetic_data(tmp_path: Path) -> Path:
    data = tmp_path / "data"
    data.mkdir()
    write_csv(data / "consumption.csv", synthetic_rows())
    return data
