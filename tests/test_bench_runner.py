"""The benchmark runner's summary: every result prints, also one without a raw-limit ratio or target."""

from __future__ import annotations

import pytest

import bench.__main__ as runner


def test_summary_prints_results_with_null_ratio_and_target(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    results = {
        "reforecast": {"ratio": None, "target": None, "value": 512.0, "unit": "series/s"},
        "oip_infer": {"ratio": 0.97, "target": 0.85, "value": 5.0e5, "unit": "rows/s"},
    }
    monkeypatch.setattr(runner, "run", results.__getitem__)
    assert runner.main(["reforecast", "oip_infer"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert any(line.split()[:3] == ["reforecast", "None", "None"] for line in lines)
    assert any(line.split()[:3] == ["oip_infer", "0.97", "0.85"] for line in lines)


def test_a_failed_benchmark_fails_the_run(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(runner, "run", lambda name: None)
    assert runner.main(["oip_infer"]) == 1
