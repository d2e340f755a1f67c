"""The shared feature module: numpy only, deterministic, causal, correct calendar."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest

from services.forecast import features as F

WEEKS = np.datetime64("2025-01-06") + 7 * np.arange(30)
STATIC = {"family": 2, "site_type": 1, "criticality": 3, "region": 4, "level": 1}


def _history(seed: int = 3) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return np.where(rng.random(30) < 0.3, rng.integers(1, 20, 30), 0).astype(np.float64)


def test_import_pulls_in_numpy_only() -> None:
    code = (
        "import sys; import services.forecast.features as f; "
        "bad = [m for m in ('pandas', 'lightgbm', 'sklearn', 'statsforecast', 'onnx', 'scipy', 'pyarrow') "
        "if m in sys.modules]; print(','.join(bad)); sys.exit(1 if bad else 0)"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, f"features imported {done.stdout.strip()} {done.stderr}"


def test_shape_dtype_and_names() -> None:
    X = F.build_features(_history(), WEEKS, STATIC, horizon=4)
    assert X.shape == (4, len(F.FEATURE_NAMES))
    assert X.dtype == np.float32
    assert len(set(F.FEATURE_NAMES)) == len(F.FEATURE_NAMES)
    assert list(X[:, F.FEATURE_NAMES.index("horizon")]) == [1, 2, 3, 4]
    for name, code in STATIC.items():
        assert np.all(X[:, F.FEATURE_NAMES.index(name)] == code)


def test_deterministic_and_matches_per_origin_calls() -> None:
    y = _history()
    origins = np.array([5, 12, 29])
    batch = F.build_features(y, WEEKS, STATIC, 3, origins=origins)
    again = F.build_features(y, WEEKS, STATIC, 3, origins=origins)
    assert np.array_equal(batch, again, equal_nan=True)
    # Serving computes the latest origin from the truncated history: it must equal the training row.
    for k, o in enumerate(origins):
        single = F.build_features(y[: o + 1], WEEKS[: o + 1], STATIC, 3)
        assert np.array_equal(single, batch[3 * k : 3 * k + 3], equal_nan=True)


def test_features_never_look_ahead() -> None:
    y = _history()
    changed = y.copy()
    changed[15:] = 999.0
    a = F.build_features(y, WEEKS, STATIC, 4, origins=np.arange(14))
    b = F.build_features(changed, WEEKS, STATIC, 4, origins=np.arange(14))
    assert np.array_equal(a, b, equal_nan=True)


def test_missing_externals_are_nan_and_present_ones_are_used() -> None:
    y = _history()
    X = F.build_features(y, WEEKS, STATIC, 2)
    ext_cols = [i for i, n in enumerate(F.FEATURE_NAMES) if n.startswith("ext_")]
    assert np.isnan(X[:, ext_cols]).all()
    precip = np.arange(30, dtype=np.float64)
    X = F.build_features(y, WEEKS, STATIC, 2, externals={"precip_mm": precip, "selic_pct": np.full(30, 15.0)})
    assert X[0, F.FEATURE_NAMES.index("ext_precip_4w")] == pytest.approx(26 + 27 + 28 + 29)
    assert X[0, F.FEATURE_NAMES.index("ext_selic")] == 15.0
    assert np.isnan(X[0, F.FEATURE_NAMES.index("ext_ptax_usd")])


def test_scaled_lags_and_demand_history() -> None:
    y = np.array([0, 4, 0, 0, 8, 0], dtype=np.float64)
    X = F.build_features(y, WEEKS[:6], STATIC, 1)[0]
    col = dict(zip(F.FEATURE_NAMES, X, strict=True))
    assert col["scale"] == pytest.approx(6.0)  # mean non-zero weekly demand
    assert col["lag_1"] == 0.0 and col["lag_2"] == pytest.approx(8 / 6)
    assert col["weeks_since_demand"] == 1.0
    assert col["demand_weeks"] == 2.0
    assert col["zero_share_4"] == pytest.approx(0.75)
    assert col["adi"] == pytest.approx(3.0)


@pytest.mark.parametrize(
    ("year", "easter", "carnival"),
    [
        (2024, "2024-03-31", "2024-02-13"),
        (2025, "2025-04-20", "2025-03-04"),
        (2026, "2026-04-05", "2026-02-17"),
    ],
)
def test_easter_and_carnival(year: int, easter: str, carnival: str) -> None:
    assert F.easter_sunday(year) == np.datetime64(easter)
    holidays = F.brazil_holidays(year)
    assert holidays[np.datetime64(carnival)] == "carnival"
    assert holidays[np.datetime64(easter)] == "easter"


def test_fixed_and_state_holidays() -> None:
    national = F.brazil_holidays(2025)
    assert national[np.datetime64("2025-04-18")] == "good_friday"
    assert national[np.datetime64("2025-06-19")] == "corpus_christi"
    assert national[np.datetime64("2025-11-20")] == "black_consciousness"
    assert np.datetime64("2025-07-02") not in national
    assert F.brazil_holidays(2025, "BA")[np.datetime64("2025-07-02")] == "state_ba"
    assert np.datetime64("2023-11-20") not in F.brazil_holidays(2023)  # national only from 2024


def test_week_calendar() -> None:
    weeks = np.array(["2025-03-03", "2025-04-14", "2025-09-29", "2025-12-29"], dtype="datetime64[D]")
    cal = F.week_calendar(weeks, "BA")
    woy, _month, hol, bdays, carnival, holy, year_end, rainy = cal.T
    assert list(carnival) == [1, 0, 0, 0]
    assert list(holy) == [0, 1, 0, 0]
    assert hol[0] == 2 and bdays[0] == 3  # carnival Monday + Tuesday
    assert list(woy) == [10, 16, 40, 1]  # ISO weeks: 2025-12-29 is week 1 of 2026
    assert list(year_end) == [0, 0, 0, 1]
    assert list(rainy) == [0, 1, 0, 0]  # Salvador rains April-July
    assert F.week_calendar(weeks[:1], "SP")[0, 7] == 1  # Sao Paulo rains in summer


def test_site_attributes_and_static_encoding() -> None:
    assert F.site_attributes("BAJSS002-3") == ("tower_site", "BA")
    assert F.site_attributes("SP4-UBA-00") == ("tower_site", "SP")
    assert F.site_attributes("ALMOX-BA") == ("warehouse", "BA")
    assert F.site_attributes("GERPE") == ("regional_base", "PE")
    assert F.site_attributes("N/A") == ("unknown", "UNKNOWN")
    assert F.site_attributes("ESCRITÓRIO") == ("office", "BA")
    attrs = F.static_attributes("EPI", "SAL031TM")
    assert attrs == {
        "family": "EPI",
        "site_type": "tower_site",
        "criticality": "high",
        "region": "BA",
        "level": "material_site",
    }
    vocab = {
        "family": [F.UNKNOWN, "EPI"],
        "site_type": [F.UNKNOWN, *F.SITE_TYPES],
        "criticality": [F.UNKNOWN, *F.CRITICALITIES],
        "region": [F.UNKNOWN, "BA"],
        "level": [F.UNKNOWN, *F.LEVELS],
    }
    codes = F.encode_static(attrs, vocab)
    assert codes == {"family": 1, "site_type": 1, "criticality": 3, "region": 1, "level": 1}
    assert F.encode_static({**attrs, "family": "NEW FAMILY"}, vocab)["family"] == 0


def test_rejects_bad_input() -> None:
    with pytest.raises(ValueError):
        F.build_features(np.zeros(3), WEEKS[:4], STATIC, 2)
    with pytest.raises(ValueError):
        F.build_features(np.zeros(4), WEEKS[:4], STATIC, 2, origins=np.array([4]))
