"""Reorder policy from the forecast distribution over the supplier's empirical lead-time distribution.

Method (see services/forecast/README.md for the full write-up):

1. Each forecast week is a distribution given by its quantiles. It becomes ``ATOMS`` equally likely values by
   reading the quantile function at the midpoints ``(j + 0.5) / ATOMS``: linear between the forecast levels,
   linear from 0 at level 0 up to the lowest level (demand is never negative and mostly zero), and beyond the
   highest level along the slope of the last two levels. Weeks past the forecast horizon repeat the last week.
2. Demand over a protection interval of ``T = L + R`` days (lead time plus review period) is the sum of the
   first ``floor(T / 7)`` weeks plus the fraction ``(T mod 7) / 7`` of the next week (weeks independent, a
   partial week proportional). The sum's distribution is computed exactly on a grid by FFT convolution.
3. Lead time ``L`` is not a constant: every observed lead time is one equally weighted scenario, so
   lead-time demand is the mixture over the observed ``L`` values.
4. Reorder point = the service-level quantile of that mixture; expected lead-time demand = its mean; safety
   stock = reorder point - expected. Decomposition, which adds up by construction:

       safety stock = demand part + lead-time-variability part
       demand part = Q(target | L fixed at its mean) - E[demand | L fixed at its mean]
       lead-time-variability part = safety stock - demand part

   The demand part is the safety stock the same demand forecast would need if every order took the mean
   lead time; the lead-time-variability part is everything that vanishes when lead times do not vary (the
   spread itself, and its interplay with forecast weeks of different means). Both quantiles are read on
   one grid (the mixture's), so the parts never differ by two different grid roundings. A part can be
   genuinely negative: the lead-time part when a few long outliers raise the mean lead time that the demand
   part assumes for every order while, at a modest target, most of the mixture's mass sits at the short
   lead times; the demand part when the target quantile lies below the mean, as it can for very
   intermittent demand (mostly zero, with rare large orders).
5. Order-up-to = reorder point + expected demand over one order cycle (the review period, or
   ``order_cycle_days`` under continuous review).
6. The suggested order date counts from the as-of date of the numbers: the end of the history the forecast
   starts from, or today when that is later (see :func:`as_of_date`).
"""

from __future__ import annotations

import datetime as dt
import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from novacorrente.common.v1 import common_pb2 as cpb

__all__ = [
    "ATOMS",
    "GRID",
    "MAX_DAYS_OF_COVER",
    "SERVICE_LEVELS",
    "PolicyNumbers",
    "as_of_date",
    "compute_policy",
    "lead_time_demand",
    "quantile_atoms",
    "target_service_level",
]

ATOMS = 200
"""Equally likely values representing one week's demand distribution."""
GRID = 4096
"""Grid points of the lead-time demand distribution (resolution: largest possible demand / GRID)."""
MAX_DAYS_OF_COVER = 3650.0
"""Cover reported when forecast demand is zero (ten years: 'will not run out')."""

_LOW, _MEDIUM, _HIGH = cpb.CRITICALITY_LOW, cpb.CRITICALITY_MEDIUM, cpb.CRITICALITY_HIGH
SERVICE_LEVELS: dict[tuple[int, int], float] = {
    # (material criticality, site criticality) -> target cycle service level
    (_LOW, _LOW): 0.85,
    (_LOW, _MEDIUM): 0.90,
    (_LOW, _HIGH): 0.92,
    (_MEDIUM, _LOW): 0.90,
    (_MEDIUM, _MEDIUM): 0.95,
    (_MEDIUM, _HIGH): 0.97,
    (_HIGH, _LOW): 0.95,
    (_HIGH, _MEDIUM): 0.97,
    (_HIGH, _HIGH): 0.99,
}
"""A stock-out of a critical material at a critical site delays a repair under an SLA fine; one of an office
supply at a warehouse costs little. Unspecified criticality counts as MEDIUM (common.v1.Criticality)."""


def target_service_level(material_criticality: int, site_criticality: int) -> float:
    def known(value: int) -> int:
        return value if value in (_LOW, _MEDIUM, _HIGH) else _MEDIUM

    return SERVICE_LEVELS[(known(material_criticality), known(site_criticality))]


def quantile_atoms(levels: Sequence[float], values: np.ndarray, atoms: int = ATOMS) -> np.ndarray:
    """[H, atoms] equally likely demand values per week from quantiles ``values`` [H, K] at ``levels``.

    All weeks share the knots' levels, so the segment of every atom is found once and the weeks are read in
    one pass, with ``np.interp``'s arithmetic (slope times offset plus left value; a knot's own value at the
    knot): the numbers are the ones a per-week ``np.interp`` gives."""
    p = np.asarray(levels, dtype=np.float64)
    v = np.maximum(np.asarray(values, dtype=np.float64), 0.0)
    v = np.maximum.accumulate(v, axis=1)  # non-crossing, whatever the source
    u = (np.arange(atoms) + 0.5) / atoms
    top = v[:, -1]
    if p.size >= 2 and p[-1] > p[-2]:
        top = v[:, -1] + (v[:, -1] - v[:, -2]) / (p[-1] - p[-2]) * (1.0 - p[-1])
    knots_p = np.concatenate(([0.0], p, [1.0]))
    knots_v = np.concatenate((np.zeros((v.shape[0], 1)), v, top[:, None]), axis=1)
    slopes = (knots_v[:, 1:] - knots_v[:, :-1]) / (knots_p[1:] - knots_p[:-1])
    j = np.clip(np.searchsorted(knots_p, u, side="right") - 1, 0, knots_p.size - 2)
    out = slopes[:, j] * (u - knots_p[j]) + knots_v[:, j]
    on_knot = u == knots_p[j]
    if on_knot.any():
        out[:, on_knot] = knots_v[:, j[on_knot]]
    return out


def _histogram(values: np.ndarray, step: float, size: int) -> np.ndarray:
    """Equal-mass atoms on the grid, each split linearly between its two neighbours (mean preserved)."""
    pos = values / step
    lo = np.minimum(np.floor(pos).astype(np.int64), size - 2)
    w = pos - lo
    pmf = np.zeros(size)
    np.add.at(pmf, lo, (1.0 - w) / values.size)
    np.add.at(pmf, lo + 1, w / values.size)
    return pmf


@dataclass(frozen=True, slots=True)
class _Distribution:
    grid: np.ndarray
    pmf: np.ndarray
    mean: float
    step: float = 0.0  # grid spacing (0 for the degenerate all-zero distribution)

    def quantile(self, level: float) -> float:
        cdf = np.cumsum(self.pmf)
        index = int(np.searchsorted(cdf, level - 1e-12, side="left"))
        return float(self.grid[min(index, self.grid.size - 1)])


def lead_time_demand(
    weekly_atoms: np.ndarray, interval_days: np.ndarray, grid: int = GRID, step: float = 0.0
) -> _Distribution:
    """Distribution of demand over a random interval: the mixture over ``interval_days`` (equal weights).

    ``step``: the grid spacing to use, so that quantiles of two distributions can be compared on one grid;
    widened when the demand would not fit the grid with it."""
    intervals = np.asarray(interval_days, dtype=np.float64)
    weeks_needed = math.floor(intervals.max() / 7.0) + 1
    atoms = weekly_atoms
    if atoms.shape[0] < weeks_needed:
        atoms = np.vstack([atoms, np.repeat(atoms[-1:], weeks_needed - atoms.shape[0], axis=0)])
    atoms = atoms[:weeks_needed]
    means = atoms.mean(axis=1)
    total_max = float(atoms.max(axis=1).sum())
    distinct, counts = np.unique(intervals, return_counts=True)
    weights = counts / counts.sum()
    full = np.floor(distinct / 7.0).astype(np.int64)
    frac = distinct / 7.0 - full
    expected = float(
        sum(w * (means[:n].sum() + f * means[n]) for w, n, f in zip(weights, full, frac, strict=True))
    )
    if total_max <= 0:
        return _Distribution(np.zeros(1), np.ones(1), 0.0)
    step = max(step, total_max / (grid - 2))
    spectra = [np.fft.rfft(_histogram(atoms[h], step, grid)) for h in range(weeks_needed)]
    prefix = [np.ones(grid // 2 + 1, dtype=np.complex128)]
    for spectrum in spectra:
        prefix.append(prefix[-1] * spectrum)
    pmf = np.zeros(grid)
    for w, n, f in zip(weights, full, frac, strict=True):
        spectrum = prefix[n]
        if f > 1e-12:
            spectrum = spectrum * np.fft.rfft(_histogram(atoms[n] * f, step, grid))
        pmf += w * np.fft.irfft(spectrum, grid)
    pmf = np.clip(pmf, 0.0, None)
    pmf /= pmf.sum()
    return _Distribution(np.arange(grid) * step, pmf, expected, step)


@dataclass(frozen=True, slots=True)
class PolicyNumbers:
    """A reorder policy and its decomposition, in the series' unit."""

    safety_stock: float
    reorder_point: float
    order_up_to: float
    suggested_order_quantity: float
    suggested_order_date: dt.date | None
    days_of_cover: float
    stock_position: float
    expected_lead_time_demand: float
    demand_part: float
    lead_time_variability_part: float
    service_target: float
    lead_time_mean_days: float
    lead_time_p90_days: float
    lead_time_observations: int
    mean_daily_demand: float


def as_of_date(today: dt.date, first_forecast_week: dt.date | None) -> dt.date:
    """The date a policy's numbers describe: the day the forecast's history ends (the first forecast week's
    Monday), or ``today`` when that is later, i.e. when the history reaches the current week.

    The demand the policy projects starts at the forecast origin, and the stock position is the one recorded
    with that same data: when the data stops in the past (a replayed export, a feed that stalled), counting
    "days until the reorder point" from the wall clock would date the order by data it never saw."""
    if first_forecast_week is None:
        return today
    return min(today, first_forecast_week)


def compute_policy(
    levels: Sequence[float],
    weekly_quantiles: np.ndarray,
    lead_days: np.ndarray,
    *,
    service_level: float,
    stock_position: float,
    today: dt.date,
    review_period_days: float = 0.0,
    order_cycle_days: float = 14.0,
    weekly_means: np.ndarray | None = None,
) -> PolicyNumbers:
    """Policy numbers for one series. ``weekly_quantiles`` is [H, K] at ``levels``; ``lead_days`` the observed
    lead times (at least one). ``weekly_means`` overrides the mean of each week's atoms (the method's own
    mean, e.g. an intermittent model's point forecast) for days of cover and the suggested order date.
    ``today``: the as-of date the suggested order date counts from (:func:`as_of_date`).
    """
    lead = np.asarray(lead_days, dtype=np.float64)
    if lead.size == 0:
        raise ValueError("no lead-time observations")
    atoms = quantile_atoms(levels, weekly_quantiles)
    review = max(float(review_period_days), 0.0)
    mixture = lead_time_demand(atoms, lead + review)
    reorder_point = mixture.quantile(service_level)
    expected = mixture.mean
    fixed = lead_time_demand(atoms, np.array([lead.mean() + review]), step=mixture.step)
    demand_part = fixed.quantile(service_level) - fixed.mean
    safety_stock = reorder_point - expected
    cycle_days = review if review > 0 else order_cycle_days
    horizon_means = atoms.mean(axis=1)
    daily = float(horizon_means.mean() / 7.0)
    cycle = lead_time_demand(atoms, np.array([cycle_days])).mean
    order_up_to = reorder_point + cycle
    cover_daily = float(np.mean(weekly_means) / 7.0) if weekly_means is not None else daily
    if stock_position <= reorder_point:
        quantity = max(order_up_to - stock_position, 0.0)
        order_date: dt.date | None = today
    else:
        quantity = 0.0
        order_date = (
            today + dt.timedelta(days=math.floor((stock_position - reorder_point) / cover_daily))
            if cover_daily > 0 and (stock_position - reorder_point) / cover_daily < MAX_DAYS_OF_COVER
            else None
        )
    if stock_position <= 0:
        cover = 0.0
    elif cover_daily <= 0:
        cover = MAX_DAYS_OF_COVER
    else:
        cover = min(stock_position / cover_daily, MAX_DAYS_OF_COVER)
    return PolicyNumbers(
        safety_stock=safety_stock,
        reorder_point=reorder_point,
        order_up_to=order_up_to,
        suggested_order_quantity=quantity,
        suggested_order_date=order_date,
        days_of_cover=cover,
        stock_position=stock_position,
        expected_lead_time_demand=expected,
        demand_part=demand_part,
        lead_time_variability_part=safety_stock - demand_part,
        service_target=service_level,
        lead_time_mean_days=float(lead.mean()),
        lead_time_p90_days=float(np.quantile(lead, 0.9)),
        lead_time_observations=int(lead.size),
        mean_daily_demand=daily,
    )
