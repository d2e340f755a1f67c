"""What forecast-serving reads from analytics-query: weekly histories (cached), lead times, stock positions.

Histories travel many series to a call (``GetSeriesHistory``, ``history_batch_size`` per call; reads that
concurrent forecast calls need while one is on the wire travel together in the next, see ``coalesce``) and
are cached per series in the cache port. The port has no delete, and a replica that did not consume a batch
event must still stop using what the batch made stale, so invalidation goes through a per-series
*generation* entry:

    gen:<material>|<site>            -> token of the series' current generation
    hist:<material>|<site>@<token>   -> the cached history of that generation

The re-forecast consumer writes a new token (the batch's last sequence) for every series a batch touched;
every replica then misses on the old entry and fetches again. A missing generation entry (evicted, or never
written) is a miss that starts a fresh random generation, so an eviction can never resurrect old data.

External series (weather, PTAX, SELIC, IPCA) travel the same way, all the series a forecast call needs in one
``GetExternalSeries`` call at day grain, cached as one entry under one generation for all of them:

    extgen                           -> token, renewed for every batch carrying external observations
    ext:<token>:<end>:<ids digest>   -> first day covered | the response (points, the data watermark)
"""

from __future__ import annotations

import asyncio
import hashlib
import uuid
from collections.abc import Awaitable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import TypeVar

import grpc
import numpy as np
from grpc_status import rpc_status
from novacorrente.analytics.v1 import analytics_pb2 as apb
from novacorrente.analytics.v1 import analytics_pb2_grpc as apb_grpc
from novacorrente.common.v1 import common_pb2 as cpb

from services.forecast.coalesce import Coalescer
from services.forecast.metrics import ForecastMetrics
from services.kit.errors import DomainError, NotFound, Unavailable, from_status
from services.ports.cache import Cache

__all__ = [
    "A_MONDAY",
    "AnalyticsReader",
    "ExternalObservations",
    "History",
    "LeadTimes",
    "SeriesKey",
    "StockPosition",
    "await_all",
    "parse_watermark",
]

T = TypeVar("T")

SeriesKey = tuple[str, str]
"""(material_code, site_code)."""


async def await_all(awaitables: Sequence[Awaitable[T]]) -> list[T]:
    """``asyncio.gather`` for the common one-item case without its task per item: an in-process cache
    answers without suspending, so the task machinery would be most of the cost of a one-series call."""
    if len(awaitables) == 1:
        return [await awaitables[0]]
    return list(await asyncio.gather(*awaitables))


def parse_watermark(text: str) -> int | None:
    """``"seq:4207"`` -> 4207; None when the watermark is not in that form."""
    _, _, number = text.partition(":")
    return int(number) if number.isdigit() else None


@dataclass(frozen=True, slots=True)
class History:
    """Weekly history of one series with its static attributes and the watermark it reflects."""

    material_code: str
    site_code: str
    first_week: np.datetime64
    weekly: np.ndarray
    family: str
    unit: str
    material_criticality: int
    site_criticality: int
    unknown: bool
    watermark: str
    from_cache: bool = False
    generation: str = ""
    """Token of the history-cache generation this history is stored under; "" when it is not cached (an
    unknown series, or no cache). A forecast computed from it is valid exactly as long as this token is."""

    @property
    def week_starts(self) -> np.ndarray:
        return self.first_week + 7 * np.arange(self.weekly.size).astype("timedelta64[D]")

    @property
    def last_week(self) -> np.datetime64 | None:
        return None if self.weekly.size == 0 else self.week_starts[-1]


@dataclass(frozen=True, slots=True)
class ExternalObservations:
    """Points of external series as analytics holds them (daily; monthly ones on the month's first day)."""

    series: dict[str, tuple[np.ndarray, np.ndarray]]  # series id -> (days datetime64[D], values)
    missing: tuple[str, ...]  # asked for, but analytics holds no such series
    watermark: str
    from_cache: bool = False
    generation: str = ""  # the ``extgen`` token the points are cached under ("" without a cache)


@dataclass(frozen=True, slots=True)
class LeadTimes:
    """Observed supplier lead times (days) of a series' slice, as analytics chose it."""

    days: np.ndarray
    scope: str
    watermark: str


_INVENTORY_PAGE = 1000  # analytics' largest page of inventory status


@dataclass(frozen=True, slots=True)
class StockPosition:
    """Stock position of a series; ``known`` is False when analytics has no inventory row for it."""

    value: float
    known: bool
    note: str


def _date(value: cpb.Date) -> np.datetime64:
    return np.datetime64(f"{value.year:04d}-{value.month:02d}-{value.day:02d}", "D")


def _history(series: apb.SeriesHistory, watermark: str, from_cache: bool, generation: str = "") -> History:
    first = _date(series.first_week) if series.first_week.year else np.datetime64("1970-01-05", "D")
    return History(
        material_code=series.key.material_code,
        site_code=series.key.site_code,
        first_week=first,
        weekly=np.asarray(series.weekly_quantity, dtype=np.float64),
        family=series.family,
        unit=series.unit,
        material_criticality=series.material_criticality,
        site_criticality=series.site_criticality,
        unknown=series.unknown or len(series.weekly_quantity) == 0,
        watermark=watermark,
        from_cache=from_cache,
        generation=generation,
    )


def _external(
    response: apb.GetExternalSeriesResponse, wanted: Sequence[str], from_cache: bool, generation: str
) -> ExternalObservations:
    series: dict[str, tuple[np.ndarray, np.ndarray]] = {}
    for item in response.series:
        if len(item.dates) != len(item.values):
            raise Unavailable(
                f"analytics answered {len(item.dates)} dates and {len(item.values)} values for "
                f"{item.series_id}",
                reason="ANALYTICS_CONTRACT",
            )
        days = np.array([_date(d) for d in item.dates], dtype="datetime64[D]")
        series[item.series_id] = (days, np.asarray(item.values, dtype=np.float64))
    missing = tuple(i for i in wanted if i not in series)
    return ExternalObservations(series, missing, response.provenance.data_watermark, from_cache, generation)


A_MONDAY = np.datetime64("1970-01-05", "D")
"""A Monday: weeks start on Mondays, so a day is a week start when its distance to this one divides by 7."""
_CONSISTENT_READ_ATTEMPTS = 3
"""Reads of an aggregate's weekly series and its last days until both come from one data state (a batch
lands between them rarely; after the last attempt the weeks are kept as read)."""


def _last_complete_monday(last_day: np.datetime64) -> np.datetime64:
    """Monday of the last week that ends on or before ``last_day`` (the rule of material x site
    histories: a week is complete once its Sunday holds data)."""
    after = last_day.astype("datetime64[D]") + np.timedelta64(1, "D")
    monday = A_MONDAY + 7 * ((after - A_MONDAY).astype(np.int64) // 7)
    return monday - np.timedelta64(7, "D")


def _date_pb(value: np.datetime64) -> cpb.Date:
    year, month, day = (int(x) for x in str(value.astype("datetime64[D]")).split("-"))
    return cpb.Date(year=year, month=month, day=day)


def _peer_error(exc: grpc.aio.AioRpcError, what: str) -> DomainError:
    """Re-raise a peer's status faithfully (its domain error), or UNAVAILABLE for transport failures."""
    status = rpc_status.from_call(exc)  # type: ignore[arg-type]
    if status is not None:
        error = from_status(status)
        if error is not None:
            return error
    return Unavailable(
        f"analytics {what} failed: {exc.code().name} {exc.details()}", reason="ANALYTICS_UNAVAILABLE"
    )


class AnalyticsReader:
    """Client of analytics-query for forecast-serving, with the per-series history cache."""

    def __init__(
        self,
        channel: grpc.aio.Channel,
        cache: Cache | None,
        *,
        batch_size: int = 500,
        ttl_seconds: float = 6 * 3600.0,
        timeout_seconds: float = 5.0,
        metrics: ForecastMetrics | None = None,
        read_concurrency: int = 1,
    ):
        self._stub = apb_grpc.AnalyticsServiceStub(channel)
        self._cache = cache
        self._batch = batch_size
        self._ttl = ttl_seconds
        self._timeout = timeout_seconds
        self._metrics = metrics
        # Concurrent calls' history reads share GetSeriesHistory calls (see ``coalesce``).
        self._fetch = Coalescer(self._fetch_now, max_in_flight=read_concurrency, max_keys=batch_size)

    # -- histories -----------------------------------------------------------------------------------

    async def generations(self, keys: Sequence[SeriesKey]) -> dict[SeriesKey, str]:
        """The current history-cache generation token of each series ("" when it has none yet)."""
        if self._cache is None:
            return {}
        unique = list(dict.fromkeys(keys))
        found = await await_all([self._cache.get(f"gen:{m}|{s}") for m, s in unique])
        return {k: t.decode() if t is not None else "" for k, t in zip(unique, found, strict=True)}

    async def external_generation(self) -> str:
        """The current ``extgen`` token ("" when none is set yet or there is no cache)."""
        if self._cache is None:
            return ""
        token = await self._cache.get("extgen")
        return token.decode() if token is not None else ""

    async def _cached(self, key: SeriesKey, token: str | None = None) -> tuple[str, History | None]:
        """(generation token, cached history or None); ``token`` when the caller has just read it."""
        assert self._cache is not None
        series = f"{key[0]}|{key[1]}"
        if token is None:
            found = await self._cache.get(f"gen:{series}")
            token = found.decode() if found is not None else ""
        if not token:
            return "", None
        blob = await self._cache.get(f"hist:{series}@{token}")
        if blob is None:
            return token, None
        response = apb.GetSeriesHistoryResponse.FromString(blob)
        return token, _history(response.series[0], response.provenance.data_watermark, True, token)

    async def _store(
        self, key: SeriesKey, token: str, series: apb.SeriesHistory, provenance: cpb.Provenance
    ) -> str:
        """Cache ``series`` under generation ``token`` (a fresh one when empty); returns the token used."""
        assert self._cache is not None
        name = f"{key[0]}|{key[1]}"
        if not token:
            token = uuid.uuid4().hex
            await self._cache.set(f"gen:{name}", token.encode(), self._ttl)
        blob = apb.GetSeriesHistoryResponse(series=[series], provenance=provenance).SerializeToString()
        await self._cache.set(f"hist:{name}@{token}", blob, self._ttl)
        return token

    async def _fetch_now(self, keys: list[SeriesKey]) -> tuple[list[apb.SeriesHistory], cpb.Provenance]:
        out: list[apb.SeriesHistory] = []
        provenance = cpb.Provenance()
        for start in range(0, len(keys), self._batch):
            chunk = keys[start : start + self._batch]
            request = apb.GetSeriesHistoryRequest(
                series=[apb.SeriesKey(material_code=m, site_code=s) for m, s in chunk]
            )
            try:
                response = await self._stub.GetSeriesHistory(request, timeout=self._timeout)
            except grpc.aio.AioRpcError as exc:
                raise _peer_error(exc, "GetSeriesHistory") from exc
            if len(response.series) != len(chunk):
                raise Unavailable(
                    f"analytics answered {len(response.series)} histories for {len(chunk)} series",
                    reason="ANALYTICS_CONTRACT",
                )
            out.extend(response.series)
            provenance = response.provenance
        return out, provenance

    async def histories(
        self, keys: Sequence[SeriesKey], tokens: Mapping[SeriesKey, str] | None = None
    ) -> list[History]:
        """Histories of ``keys`` in order: cached ones from the cache, the rest in batched calls.

        ``tokens``: generation tokens the caller has just read (``generations``), so they are not read
        twice; series missing from it are looked up."""
        found: dict[SeriesKey, History] = {}
        known: dict[SeriesKey, str] = {}
        unique = list(dict.fromkeys(keys))
        if self._cache is not None:
            given = tokens or {}
            results = await await_all([self._cached(k, given.get(k)) for k in unique])
            for key, (token, history) in zip(unique, results, strict=True):
                known[key] = token
                if history is not None:
                    found[key] = history
        missing = [k for k in unique if k not in found]
        if self._metrics is not None:
            self._metrics.history_cache.labels("hit").inc(len(found))
            self._metrics.history_cache.labels("miss").inc(len(missing))
        if missing:
            fetched, provenance = await self._fetch(missing)
            storable = [
                (key, series)
                for key, series in zip(missing, fetched, strict=True)
                if self._cache is not None and not series.unknown
            ]
            used = await await_all(
                [self._store(key, known.get(key, ""), series, provenance) for key, series in storable]
            )
            generation = {key: token for (key, _), token in zip(storable, used, strict=True)}
            for key, series in zip(missing, fetched, strict=True):
                found[key] = _history(series, provenance.data_watermark, False, generation.get(key, ""))
        return [found[k] for k in keys]

    async def invalidate(self, keys: Iterable[SeriesKey], token: str) -> None:
        """Start generation ``token`` for every series in ``keys``: cached histories of them go stale."""
        if self._cache is None:
            return
        await asyncio.gather(
            *(self._cache.set(f"gen:{m}|{s}", token.encode(), self._ttl) for m, s in dict.fromkeys(keys))
        )

    # -- external series ---------------------------------------------------------------------------

    async def external_observations(
        self, series_ids: Iterable[str], start: np.datetime64, end: np.datetime64
    ) -> ExternalObservations:
        """Daily points of ``series_ids`` from ``start`` to ``end`` (inclusive): from the cache, else from one
        ``GetExternalSeries`` call. Series analytics does not hold come back in ``missing`` (their features
        are NaN), as do all of them when analytics does not implement the method.

        One entry per generation, end day and set of series; it records the first day it covers and serves
        every later start, so calls whose series begin at different weeks share it."""
        ids = sorted(set(series_ids))
        first, last = start.astype("datetime64[D]"), end.astype("datetime64[D]")
        digest = hashlib.sha256("\n".join(ids).encode()).hexdigest()[:20]
        token = ""
        if self._cache is not None:
            found = await self._cache.get("extgen")
            if found is not None:
                token = found.decode()
                blob = await self._cache.get(f"ext:{token}:{last}:{digest}")
                if blob is not None:
                    covered, _, payload = blob.partition(b"|")
                    if np.asarray(covered.decode(), dtype="datetime64[D]") <= first:
                        return _external(apb.GetExternalSeriesResponse.FromString(payload), ids, True, token)
        response = await self._fetch_external(ids, first, last)
        if self._cache is not None:
            if not token:
                token = uuid.uuid4().hex
                await self._cache.set("extgen", token.encode(), self._ttl)
            await self._cache.set(
                f"ext:{token}:{last}:{digest}",
                f"{first}|".encode() + response.SerializeToString(),
                self._ttl,
            )
        return _external(response, ids, False, token)

    async def _fetch_external(
        self, ids: list[str], start: np.datetime64, end: np.datetime64
    ) -> apb.GetExternalSeriesResponse:
        """One call in the normal case. Analytics answers NOT_FOUND for the whole call when one series is
        unknown: then its catalogue says which exist, and only those are asked for."""
        window = cpb.DateRange(start=_date_pb(start), end=_date_pb(end))
        response = await self._call_external(ids, window)
        asked = ids
        if response is None:
            known = await self._external_catalogue()
            asked = [i for i in ids if i in known]
            response = await self._call_external(asked, window) if asked else apb.GetExternalSeriesResponse()
            if response is None:
                raise Unavailable(
                    "analytics lists external series it then does not find", reason="ANALYTICS_CONTRACT"
                )
        if [s.series_id for s in response.series] != asked and len(response.series) != 0:
            raise Unavailable(
                f"analytics answered {len(response.series)} external series for {len(asked)}",
                reason="ANALYTICS_CONTRACT",
            )
        return response

    async def _call_external(
        self, ids: list[str], window: cpb.DateRange
    ) -> apb.GetExternalSeriesResponse | None:
        """The response; an empty one when analytics does not implement the method; None on NOT_FOUND."""
        request = apb.GetExternalSeriesRequest(series_ids=ids, date_range=window, grain=cpb.TIME_GRAIN_DAY)
        try:
            return await self._stub.GetExternalSeries(request, timeout=self._timeout)
        except grpc.aio.AioRpcError as exc:
            if exc.code() == grpc.StatusCode.UNIMPLEMENTED:
                return apb.GetExternalSeriesResponse()
            error = _peer_error(exc, "GetExternalSeries")
            if isinstance(error, NotFound):
                return None
            raise error from exc

    async def _external_catalogue(self) -> set[str]:
        try:
            response = await self._stub.GetExternalSeries(
                apb.GetExternalSeriesRequest(), timeout=self._timeout
            )
        except grpc.aio.AioRpcError as exc:
            raise _peer_error(exc, "GetExternalSeries") from exc
        return {s.series_id for s in response.series}

    async def invalidate_externals(self, token: str) -> None:
        """Start generation ``token`` of the external series: cached points go stale."""
        if self._cache is not None:
            await self._cache.set("extgen", token.encode(), self._ttl)

    async def watermark(self) -> int | None:
        """Highest ingestion sequence the read model has applied."""
        try:
            response = await self._stub.GetWatermark(apb.GetWatermarkRequest(), timeout=self._timeout)
        except grpc.aio.AioRpcError as exc:
            raise _peer_error(exc, "GetWatermark") from exc
        return int(response.sequence)

    # -- aggregates ----------------------------------------------------------------------------------

    async def demand_series(
        self, filter_: cpb.Filter, use_lines: bool
    ) -> tuple[np.datetime64, np.ndarray, str, str]:
        """(first week, weekly values, unit, watermark) of a slice: quantities, or requisition lines, up to
        the last complete week of data, where material x site histories end too."""
        for _ in range(_CONSISTENT_READ_ATTEMPTS):
            response = await self._demand_points(filter_, cpb.TIME_GRAIN_WEEK)
            points = [p for p in response.points if not p.is_forecast]
            if not points:
                break
            first = _date(points[0].period_start)
            complete, seen_at = await self._complete_weeks(filter_, first, len(points))
            # The two reads saw one state (a batch between them could have completed the week the first
            # read saw partial): otherwise both are read again.
            if seen_at == response.provenance.data_watermark:
                break
        values = np.array([p.lines if use_lines else p.quantity for p in points], dtype=np.float64)
        first = _date(points[0].period_start) if points else np.datetime64("1970-01-05", "D")
        if points:
            values = values[:complete]
        unit = "lines" if use_lines else response.unit
        return first, values, unit, response.provenance.data_watermark

    async def _complete_weeks(self, filter_: cpb.Filter, first: np.datetime64, weeks: int) -> tuple[int, str]:
        """How many of ``weeks`` weeks from ``first`` end on or before the last day of data, and the data
        watermark that answer was read at.

        Analytics' weekly demand series runs to the week holding the last demand day, which is partial
        until its Sunday: a partial week reads as a drop in demand at the very origin of the forecast.
        The last day comes from the same slice at day grain, from the last week's Monday on."""
        last_monday = first + np.timedelta64(7 * (weeks - 1), "D")
        probe = cpb.Filter()
        probe.CopyFrom(filter_)
        probe.date_range.CopyFrom(cpb.DateRange(start=_date_pb(last_monday)))
        response = await self._demand_points(probe, cpb.TIME_GRAIN_DAY)
        seen_at = response.provenance.data_watermark
        days = [_date(p.period_start) for p in response.points if not p.is_forecast]
        if not days:
            return weeks, seen_at
        complete = _last_complete_monday(days[-1])
        return max(0, min(weeks, int((complete - first).astype(np.int64)) // 7 + 1)), seen_at

    async def _demand_points(self, filter_: cpb.Filter, grain: int) -> apb.GetDemandSeriesResponse:
        request = apb.GetDemandSeriesRequest(filter=filter_, grain=grain)  # type: ignore[arg-type]
        try:
            return await self._stub.GetDemandSeries(request, timeout=self._timeout)
        except grpc.aio.AioRpcError as exc:
            raise _peer_error(exc, "GetDemandSeries") from exc

    async def material_family(self, material_code: str) -> str:
        try:
            response = await self._stub.ListMaterials(
                apb.ListMasterDataRequest(query=material_code), timeout=self._timeout
            )
        except grpc.aio.AioRpcError as exc:
            raise _peer_error(exc, "ListMaterials") from exc
        return next((m.family for m in response.materials if m.code == material_code), "")

    # -- policy inputs -------------------------------------------------------------------------------

    async def lead_times(self, material_code: str, site_code: str) -> LeadTimes:
        request = apb.GetLeadTimesRequest(
            filter=cpb.Filter(material_codes=[material_code], site_codes=[site_code] if site_code else [])
        )
        try:
            response = await self._stub.GetLeadTimes(request, timeout=self._timeout)
        except grpc.aio.AioRpcError as exc:
            raise _peer_error(exc, "GetLeadTimes") from exc
        days = np.asarray(response.days, dtype=np.float64)
        return LeadTimes(
            days[np.isfinite(days) & (days >= 0)], response.scope, response.provenance.data_watermark
        )

    async def stock_positions(self, keys: Iterable[tuple[str, str]]) -> dict[tuple[str, str], StockPosition]:
        """Stock positions of material x site pairs, from as few inventory-status calls as paging allows:
        one listing filtered by the pairs' materials and sites (each call computes the whole inventory
        status, so a call per pair costs the same as one for hundreds of them)."""
        wanted = set(keys)
        if not wanted:
            return {}
        query = cpb.Filter(
            material_codes=sorted({m for m, _ in wanted}), site_codes=sorted({s for _, s in wanted})
        )
        found: dict[tuple[str, str], float] = {}
        token = ""
        for attempt in range(3):
            try:
                while True:
                    request = apb.ListInventoryStatusRequest(
                        filter=query, page=cpb.PageRequest(page_size=_INVENTORY_PAGE, page_token=token)
                    )
                    response = await self._stub.ListInventoryStatus(request, timeout=self._timeout)
                    for row in response.rows:
                        if (row.material_code, row.site_code) in wanted:
                            found[(row.material_code, row.site_code)] = float(row.stock_position)
                    token = response.page.next_page_token
                    if not token:
                        break
                break
            except grpc.aio.AioRpcError as exc:
                if exc.code() in (grpc.StatusCode.UNIMPLEMENTED, grpc.StatusCode.NOT_FOUND):
                    note = "no inventory status in analytics: stock position taken as 0"
                    return {key: StockPosition(0.0, False, note) for key in wanted}
                if exc.code() != grpc.StatusCode.ABORTED or attempt == 2:
                    raise _peer_error(exc, "ListInventoryStatus") from exc
                # A batch changed the listing between two pages: read it again from the first page.
                found, token = {}, ""
        missing = "no inventory row for this series: stock position taken as 0"
        return {
            key: StockPosition(found[key], True, "from analytics inventory status")
            if key in found
            else StockPosition(0.0, False, missing)
            for key in wanted
        }
