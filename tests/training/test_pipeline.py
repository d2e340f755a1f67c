"""End to end: a quick train + export into a temporary repository, then the artefact checked with onnxruntime
alone (no training dependency imported), as serving will."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from ml_training import export
from ml_training.pipeline import RunConfig, train

CHECK = r"""
import hashlib, json, sys
from pathlib import Path
import numpy as np
import onnxruntime as ort
from services.forecast import features as F

version = Path(sys.argv[1])
side = json.loads((version / "model.json").read_text())
blob = (version / "model.onnx").read_bytes()
assert hashlib.sha256(blob).hexdigest() == side["sha256"], "sha256 mismatch"
sess = ort.InferenceSession(blob, providers=["CPUExecutionProvider"])
(inp,), (out,) = sess.get_inputs(), sess.get_outputs()
assert [inp.name, out.name] == [side["inputs"][0]["name"], side["outputs"][0]["name"]]
assert inp.type == out.type == "tensor(float)"
assert inp.shape[1] == side["inputs"][0]["shape"][1] == len(side["feature_names"])
assert out.shape[1] == side["outputs"][0]["shape"][1] == len(side["quantiles"])
assert side["feature_spec_version"] == F.FEATURE_SPEC_VERSION
assert side["feature_names"] == list(F.FEATURE_NAMES)
rng = np.random.default_rng(0)
weeks = np.datetime64("2025-01-06") + 7 * np.arange(30)
y = np.where(rng.random(30) < 0.4, rng.integers(1, 30, 30), 0).astype(float)
codes = F.encode_static(F.static_attributes("EPI", "ALMOX-BA"), side["vocabularies"])
X = F.build_features(y, weeks, codes, side["horizon_weeks"], region="BA")
X = np.concatenate([X, F.build_features(np.zeros(30), weeks, codes, side["horizon_weeks"])])
q = sess.run([out.name], {inp.name: X})[0]
assert q.shape == (X.shape[0], len(side["quantiles"])) and q.dtype == np.float32
assert np.all(np.diff(q, axis=1) >= 0), "quantiles cross"
assert np.all(q >= 0) and np.all(np.isfinite(q))
heavy = ("lightgbm", "sklearn", "pandas", "statsforecast", "onnx", "onnxmltools")
heavy = [m for m in heavy if m in sys.modules]
assert not heavy, heavy
print("ok")
"""


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    from .conftest import synthetic_rows, write_csv

    root = tmp_path_factory.mktemp("e2e")
    data = root / "data"
    data.mkdir()
    write_csv(data / "consumption.csv", synthetic_rows())
    result = train(RunConfig(data=data, out=root / "repo", quick=True))
    return result.version_dir, data


def test_layout_and_sidecar(trained: tuple[Path, Path]) -> None:
    version, _ = trained
    assert version.parent.name == "demand_forecast" and version.name == "1"
    side = json.loads((version / "model.json").read_text())
    for key in (
        "name",
        "version",
        "created_at",
        "inputs",
        "outputs",
        "feature_spec_version",
        "feature_names",
        "quantiles",
        "vocabularies",
        "training_data",
        "backtest",
        "model_choice",
        "conformal",
        "parity",
        "sha256",
        "intermittent_models",
    ):
        assert key in side, key
    assert side["quantiles"] == [0.5, 0.8, 0.9, 0.95]
    assert side["parity"]["within_tolerance"] and side["parity"]["max_abs_diff"] <= 0.01
    assert len(side["training_data"]["sha256"]) == 64
    assert side["training_data"]["window"]["censored_tail"], "synthetic export has a censored tail"
    choice = json.loads((version / "model_choice.json").read_text())
    assert set(choice["class_choice"].values()) <= set(choice["candidates"])
    assert (version / "model-card.md").read_text().startswith("# Model card")
    assert (version / "series.png").stat().st_size > 1000


def test_onnxruntime_alone_matches_sidecar(trained: tuple[Path, Path]) -> None:
    version, _ = trained
    done = subprocess.run(
        [sys.executable, "-c", CHECK, str(version)],
        capture_output=True,
        text=True,
        timeout=90,
        cwd=Path(__file__).resolve().parents[2],
    )
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.strip() == "ok"


def test_second_run_gets_next_version_and_refuses_bad_parity(
    trained: tuple[Path, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    version, data = trained

    def broken(onnx_bytes: bytes, model: object, X: np.ndarray) -> dict:
        return {"rows": 1, "max_abs_diff": 1.0, "within_tolerance": False, "non_crossing": True}

    assert export.next_version(version.parent.parent, "demand_forecast") == 2
    monkeypatch.setattr(export, "parity", broken)
    with pytest.raises(export.ExportError):
        train(RunConfig(data=data, out=version.parent.parent, quick=True, quick_materials=10))
    assert sorted(p.name for p in version.parent.iterdir() if not p.name.startswith(".")) == ["1"]


CHECK_LEAD_TIME = r"""
import hashlib, json, sys
from pathlib import Path
import numpy as np
import onnxruntime as ort
from services.forecast import features as F

version = Path(sys.argv[1])
side = json.loads((version / "model.json").read_text())
blob = (version / "model.onnx").read_bytes()
assert hashlib.sha256(blob).hexdigest() == side["sha256"], "sha256 mismatch"
sess = ort.InferenceSession(blob, providers=["CPUExecutionProvider"])
(inp,), (out,) = sess.get_inputs(), sess.get_outputs()
assert [inp.name, out.name] == [side["inputs"][0]["name"], side["outputs"][0]["name"]]
assert side["feature_spec_version"] == F.FEATURE_SPEC_VERSION
assert side["feature_names"] == list(F.FEATURE_NAMES)
col = F.FEATURE_NAMES.index(side["window_feature"])
rng = np.random.default_rng(0)
weeks = np.datetime64("2025-01-06") + 7 * np.arange(30)
y = np.where(rng.random(30) < 0.4, rng.integers(1, 30, 30), 0).astype(float)
codes = F.encode_static(F.static_attributes("EPI", "ALMOX-BA"), side["vocabularies"])
rows = []
for L in (1, 2, 4, 8):
    X = F.build_features(y, weeks, codes, 1, region="BA")
    X[:, col] = L
    rows.append(X)
q = sess.run([out.name], {inp.name: np.concatenate(rows)})[0]
assert q.shape == (4, len(side["quantiles"])) and q.dtype == np.float32
assert np.all(np.diff(q, axis=1) >= 0), "quantiles cross"
assert np.all(q >= 0) and np.all(np.isfinite(q))
assert side["lead_time_weeks"]["default"] >= 1
print("ok")
"""


def test_lead_time_model_exported_beside_weekly(trained: tuple[Path, Path]) -> None:
    version, _ = trained
    lead = version.parent.parent / "lead_time_demand" / "1"
    side = json.loads((lead / "model.json").read_text())
    assert side["name"] == "lead_time_demand" and side["version"] == "1"
    assert side["parity"]["within_tolerance"] and side["parity"]["non_crossing"]
    assert side["companion"] == {"model": "demand_forecast", "version": "1"}
    metrics = side["backtest"]["metrics"]
    assert {"lead_time_demand", "tsb_window_conformal", "reference_empirical_26w_totals"} <= set(metrics)
    assert "weekly_sampled_nova_selected" in metrics
    weekly = json.loads((version / "model.json").read_text())
    assert weekly["lead_time_demand"]["version"] == "1"
    done = subprocess.run(
        [sys.executable, "-c", CHECK_LEAD_TIME, str(lead)],
        capture_output=True,
        text=True,
        timeout=90,
        cwd=Path(__file__).resolve().parents[2],
    )
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.strip() == "ok"
