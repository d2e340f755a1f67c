"""Aggregate histories read two analytics answers (weekly totals, then the last week's days): they keep the
weeks of one data state even when a batch lands between the two reads."""

from __future__ import annotations

import datetime as dt
from typing import Any

import grpc
import numpy as np
from novacorrente.analytics.v1 import analytics_pb2 as apb
from novacorrente.common.v1 import common_pb2 as cpb

from services.forecast.history import AnalyticsReader

WEEKS = [dt.date(2024, 2, 26), dt.date(2024, 3, 4), dt.date(2024, 3, 11)]


def _date(day: dt.date) -> cpb.Date:
    return cpb.Date(year=day.year, month=day.month, day=day.day)


class _AnalyticsBetweenTwoBatches:
    """Answers as of data ending Wednesday 2024-03-13 (the week of 03-11 holds 1 unit so far) until the
    first day-grain read, which already sees a batch that ran the data to Monday 2024-03-18 (that week: 7)."""

    def __init__(self) -> None:
        self.batch_applied = False

    async def GetDemandSeries(self, request: apb.GetDemandSeriesRequest, timeout: Any = None) -> Any:
        if request.grain == cpb.TIME_GRAIN_WEEK:
            last, watermark = (7.0, "seq:2") if self.batch_applied else (1.0, "seq:1")
            weeks = [*WEEKS, dt.date(2024, 3, 18)] if self.batch_applied else WEEKS
            quantities = [10.0, 10.0, last, 2.0][: len(weeks)]
            points = [
                apb.DemandPoint(period_start=_date(w), quantity=q)
                for w, q in zip(weeks, quantities, strict=True)
            ]
        else:
            self.batch_applied = True
            start = request.filter.date_range.start
            day, end = dt.date(start.year, start.month, start.day), dt.date(2024, 3, 18)
            points = [
                apb.DemandPoint(period_start=_date(day + dt.timedelta(days=i)))
                for i in range((end - day).days + 1)
            ]
            watermark = "seq:2"
        return apb.GetDemandSeriesResponse(points=points, provenance=cpb.Provenance(data_watermark=watermark))


async def test_weeks_of_one_data_state_are_kept_when_a_batch_lands_between_the_reads() -> None:
    channel = grpc.aio.insecure_channel("127.0.0.1:1")  # never used: the stub below answers
    reader = AnalyticsReader(channel, None)
    reader._stub = _AnalyticsBetweenTwoBatches()  # type: ignore[assignment]
    first, values, _, watermark = await reader.demand_series(cpb.Filter(), use_lines=False)
    await channel.close()
    # Read again at seq:2: the week of 03-11 is complete (7 units), the week of 03-18 has begun (dropped).
    assert first == np.datetime64("2024-02-26")
    np.testing.assert_array_equal(values, [10.0, 10.0, 7.0])
    assert watermark == "seq:2"
