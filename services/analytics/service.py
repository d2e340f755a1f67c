"""Use cases of analytics-query, independent of gRPC and of the bus.

Reads: validate the request, look the answer up in the cache under a key made of the normalised request and
the watermarks of the data it depends on (``cache_keys``), else compute it on an engine thread from one
committed state, store the serialized answer, return it. The watermarks it is stored under are those of
that state: the writer's in-memory copy when no write job overlapped the read (two or three statements fewer
per answer), else read from the tables in the same DuckDB transaction. While writes are quiet
(``DuckEngine.quiet``) a read first runs without a transaction (two statements fewer again) and is run
again inside one if a write job overlapped it. A cached and a fresh answer are byte-identical but for
``from_cache`` and ``generated_at``. What the lookup needs from a request (its fingerprint and which
watermarks narrow it) is remembered by request bytes (``cache_keys.LookupPlans``), so a repeated request goes
from its bytes to the cache without being validated and normalised again.

Writes (from the bus): apply a batch in sequence order, catching up from ingestion's export first when the
batch leaves a gap; apply forecasts; then re-evaluate the alerts of the material x site pairs that changed
(of every pair with a stock count when demand lines moved the lead-time statistics or the data end, which
the fallback lead time and history demand rate of any pair read).
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import dataclasses
import datetime as dt
import hashlib
import json
import logging
import time
from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

import numpy as np
from google.protobuf.message import Message
from novacorrente.analytics.v1 import analytics_pb2
from novacorrente.common.v1 import common_pb2
from novacorrente.events.v1 import events_pb2

from services.analytics import converters as conv
from services.analytics import kpis as kpi_mod
from services.analytics import queries as q
from services.analytics.alert_stream import AlertHub
from services.analytics.alerts import (
    ACKNOWLEDGED,
    COVER_BELOW_LEAD_TIME,
    REORDER_POINT,
    RESOLVED,
    AlertCandidate,
    AlertQuery,
    AlertStore,
    Notification,
)
from services.analytics.cache_keys import (
    LookupPlan,
    LookupPlans,
    cache_key,
    data_version,
    data_watermark,
    fingerprint,
    load_versions,
    narrowed_versions,
    narrowing,
)
from services.analytics.engine import DuckEngine, Job, QueryCancelled, one
from services.analytics.export_client import ExportSource
from services.analytics.read_model import ApplyResult, ReadModel, forecast_series_key
from services.analytics.slices import Kind, Slice
from services.kit.auth import require_principal
from services.kit.errors import (
    Aborted,
    DeadlineExceeded,
    FieldViolation,
    InvalidArgument,
    NotFound,
    Unavailable,
)
from services.ports.cache import Cache
from services.ports.relay import OutboxRelay

__all__ = ["MAX_PAGE_SIZE", "AnalyticsService", "Limits"]

log = logging.getLogger(__name__)

T = TypeVar("T")
MAX_PAGE_SIZE = 1000
DEFAULT_PAGE_SIZE = 100
_GRAINS = {
    common_pb2.TIME_GRAIN_UNSPECIFIED: "week",
    common_pb2.TIME_GRAIN_DAY: "day",
    common_pb2.TIME_GRAIN_WEEK: "week",
    common_pb2.TIME_GRAIN_MONTH: "month",
}
_GRAIN_ENUM = {
    "day": common_pb2.TIME_GRAIN_DAY,
    "week": common_pb2.TIME_GRAIN_WEEK,
    "month": common_pb2.TIME_GRAIN_MONTH,
}
_ACCURACY_KPIS = frozenset({"forecast_wape", "forecast_bias", "forecast_interval_coverage"})
# Above this many changed pairs an evaluation looks at every pair in one query instead.
_ALL_PAIRS_THRESHOLD = 5000


@dataclass(frozen=True, slots=True)
class Limits:
    query_timeout_seconds: float = 30.0
    cache_ttl_seconds: float = 3600.0
    max_range_days: int = 3700
    max_series_per_call: int = 5000
    export_page_size: int = 5000
    catchup_chunk_records: int = 50_000
    catchup_timeout_seconds: float = 3600.0
    journal_retry_seconds: float = 2.0  # pause between two attempts to journal while its store is down


def _now_proto() -> Any:
    return conv.timestamp_proto(int(time.time() * 1_000_000))


def _from_cache(response_type: type[Message], data: bytes) -> Message:
    response = response_type.FromString(data)
    if "provenance" in response.DESCRIPTOR.fields_by_name:  # listings carry none
        response.provenance.from_cache = True  # type: ignore[attr-defined]
    return response


def _evaluation_version(seq: int, row: q.InventoryRow) -> tuple[int, int]:
    """The version an evaluation of ``row`` changes its episodes at (``alerts``): the records applied, then
    what forecast-serving published for the pair. A new forecast alone (no new record, no new policy) changes
    the demand rate, hence the cover, so it must move the version too. The policy's and the newest forecast's
    versions are generated_at timestamps (µs) that only grow per pair, so their sum grows whenever either
    does and stays far below the 64-bit limit."""
    return seq, row.policy_version + row.forecast_version


def _page_token(offset: int, bound: str, version: str | None) -> str:
    token: dict[str, object] = {"o": offset, "b": bound}
    if version is not None:
        token["w"] = version
    raw = json.dumps(token, separators=(",", ":")).encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


class AnalyticsService:
    """Every use case of the service; see the module docstring."""

    def __init__(
        self,
        *,
        engine: DuckEngine,
        model: ReadModel,
        cache: Cache,
        alerts: AlertStore,
        hub: AlertHub,
        relay: OutboxRelay[Notification] | None = None,
        export: ExportSource | None = None,
        limits: Limits = Limits(),
    ):
        self.engine = engine
        self.model = model
        self.cache = cache
        self.alerts = alerts
        self.hub = hub
        self.relay = relay
        self.export = export
        self.limits = limits
        self._apply_lock = asyncio.Lock()
        self._plans = LookupPlans()
        self._pending_pairs: set[tuple[str, str]] | None = set()
        self._evaluate_wake = asyncio.Event()
        self._evaluator: asyncio.Task[None] | None = None
        self._unjournaled: dict[str, bytes] = {}
        """Forecast events applied but not yet in the journal (its store was unreachable), oldest first."""
        self._journal_wake = asyncio.Event()
        self._journaler: asyncio.Task[None] | None = None
        self.caught_up = export is None
        """False until the first catch-up from the export succeeded (readiness)."""

    # == lifecycle ========================================================================================

    async def open(self) -> None:
        await self.engine.write(self.model.open)

    def start_background(self) -> None:
        if self._evaluator is None:
            self._evaluator = asyncio.create_task(self._evaluate_loop(), name="analytics-alert-evaluator")
        if self._journaler is None:
            self._journaler = asyncio.create_task(self._journal_loop(), name="analytics-forecast-journal")

    async def stop_background(self) -> None:
        for task in (self._evaluator, self._journaler):
            if task is not None:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
        self._evaluator = self._journaler = None
        if self._unjournaled:
            log.warning(
                "%d forecast events were never journaled: a rebuild waits for their re-forecast",
                len(self._unjournaled),
            )

    # == writes ===========================================================================================

    async def apply_batch(self, event: events_pb2.BatchCommitted) -> ApplyResult:
        """Apply a BatchCommitted event (idempotent; a gap in sequence triggers a catch-up first)."""
        async with self._apply_lock:
            if self.model.diverged(event.records):
                log.warning(
                    "batch %s starts another ingestion log than the read model's: rebuilding", event.batch_id
                )
                await self.engine.write(self.model.reset)
            watermark = self.model.applied_seq
            if event.sequence_from > watermark + 1:
                if self.export is not None:
                    log.info(
                        "gap before batch %s (seq %d..%d, applied %d): catching up from the export",
                        event.batch_id,
                        event.sequence_from,
                        event.sequence_to,
                        watermark,
                    )
                    await self._catch_up_locked()
                else:
                    log.warning(
                        "gap before batch %s (seq %d..%d, applied %d) and no export to catch up from",
                        event.batch_id,
                        event.sequence_from,
                        event.sequence_to,
                        watermark,
                    )
            result = await self.engine.write(self.model.apply_records, list(event.records), event.event_id)
            self._changed(result)
            # New tables (a new replica, a rebuild after another ingestion log, no export to catch up
            # from): the forecasts come after the records they are filed under.
            await self._replay_if_pending()
        return result

    async def apply_forecasts(self, event: events_pb2.ForecastsUpdated) -> ApplyResult:
        async with self._apply_lock:
            result = await self.engine.write(self.model.apply_forecasts, event)
        self._changed(result)
        # Journaled even when the read model had it: a redelivery after a crash between the two steps
        # journals what the first delivery could not.
        await self._journal(event.event_id, event.SerializeToString())
        return result

    async def _journal(self, event_id: str, body: bytes) -> None:
        try:
            await self.alerts.keep_forecasts(event_id, body)
        except Exception as exc:
            # The forecast is in the read model; only its copy for a future rebuild waits, in memory, for
            # the store to come back. Failing the delivery instead would, after the bus's delivery limit,
            # dead-letter the forecast during a short outage of PostgreSQL.
            log.warning("forecast event %s not journaled yet (%s); retrying in the background", event_id, exc)
            self._unjournaled[event_id] = body
            self._journal_wake.set()

    async def _journal_loop(self) -> None:
        while True:
            await self._journal_wake.wait()
            self._journal_wake.clear()
            while self._unjournaled:
                event_id, body = next(iter(self._unjournaled.items()))
                try:
                    await self.alerts.keep_forecasts(event_id, body)
                except Exception:
                    await asyncio.sleep(self.limits.journal_retry_seconds)
                    continue
                self._unjournaled.pop(event_id, None)

    async def _replay_if_pending(self) -> None:
        """Replay the journal into tables created since the last replay (the caller holds the apply lock).

        Best effort: it waits, still pending, until the tables hold materials (forecasts are filed under
        their material's family) and until the journal's store answers; a later batch or catch-up tries
        again. The records' own application never fails because of it."""
        if not self.model.forecast_replay_pending or not self.model.master.family:
            return
        try:
            replayed = await self._replay_kept_forecasts()
        except Exception as exc:
            log.warning("forecast journal not replayed yet (%s); the next batch tries again", exc)
            return
        await self.engine.write(self.model.forecasts_replayed)
        if replayed:
            log.info("replayed %d journaled forecast events into the new read model", replayed)

    async def _replay_kept_forecasts(self) -> int:
        """Apply the journaled forecasts to a new read model; returns how many events were new to it (the
        read model's inbox skips those it already has)."""
        replayed = 0
        async for body in self.alerts.kept_forecasts():
            event = events_pb2.ForecastsUpdated.FromString(body)
            result = await self.engine.write(self.model.apply_forecasts, event)
            if not result.duplicate_event:
                replayed += 1
                self._changed(result)
        return replayed

    async def catch_up(self) -> int:
        """Apply every record the export has beyond our watermark; returns how many were applied."""
        async with self._apply_lock:
            applied = await self._catch_up_locked()
        self.caught_up = True
        return applied

    async def _catch_up_locked(self) -> int:
        if self.export is None:
            return 0
        if self.model.applied_seq and await self._log_replaced():
            log.warning("the ingestion log is not the one the read model was built from: rebuilding")
            await self.engine.write(self.model.reset)
        since = self.model.applied_seq
        buffer: list[Any] = []
        applied = 0
        started = time.perf_counter()
        try:
            async for page in self.export.pages(
                since, self.limits.export_page_size, self.limits.catchup_timeout_seconds
            ):
                buffer.extend(page.records)
                if len(buffer) >= self.limits.catchup_chunk_records:
                    applied += await self._apply_chunk(buffer)
                    buffer = []
            if buffer:
                applied += await self._apply_chunk(buffer)
        except Unavailable:
            raise
        except Exception as exc:
            raise Unavailable(f"catch-up from the ingestion export failed: {exc}") from exc
        # After the records, so that the forecasts find the master data they are filed under.
        await self._replay_if_pending()
        if applied:
            log.info(
                "caught up %d records from seq %d to %d in %.1fs",
                applied,
                since,
                self.model.applied_seq,
                time.perf_counter() - started,
            )
        return applied

    async def _log_replaced(self) -> bool:
        """Whether ingestion's log now starts with another batch than ours (its database was reset)."""
        assert self.export is not None
        try:
            async for page in self.export.pages(0, 1, self.limits.catchup_timeout_seconds):
                return bool(page.records) and page.records[0].batch_id != self.model.lineage
            return True  # ingestion has nothing while we have data
        except Exception as exc:
            raise Unavailable(f"cannot read the ingestion export: {exc}") from exc

    async def _apply_chunk(self, records: Sequence[Any]) -> int:
        result = await self.engine.write(self.model.apply_records, records, None)
        self._changed(result)
        return result.applied

    def _changed(self, result: ApplyResult) -> None:
        if result.duplicate_event or not (result.pairs or result.every_pair):
            return
        if result.every_pair:
            # Other pairs' lines moved a fallback lead time or the data end: any counted pair can change.
            self._pending_pairs = None
        elif self._pending_pairs is not None:
            self._pending_pairs.update(result.pairs)
            if len(self._pending_pairs) > _ALL_PAIRS_THRESHOLD:
                self._pending_pairs = None
        self._evaluate_wake.set()

    # == alerts evaluation ================================================================================

    async def _evaluate_loop(self) -> None:
        while True:
            await self._evaluate_wake.wait()
            self._evaluate_wake.clear()
            try:
                await self.evaluate_alerts()
            except Exception:
                log.exception("alert evaluation failed; will retry")
                await asyncio.sleep(1.0)
                self._evaluate_wake.set()

    async def evaluate_alerts(self) -> int:
        """Evaluate the pairs changed since the last evaluation; returns how many alerts changed."""
        pairs, self._pending_pairs = self._pending_pairs, set()
        if pairs is not None and not pairs:
            return 0
        try:
            return await self._evaluate(None if pairs is None else sorted(pairs))
        except BaseException:
            # Not evaluated: keep them for the next attempt.
            if pairs is None or self._pending_pairs is None:
                self._pending_pairs = None
            else:
                self._pending_pairs.update(pairs)
            raise

    async def _evaluate(self, pairs: Sequence[tuple[str, str]] | None) -> int:
        def snapshot(job: Job) -> tuple[int, list[q.InventoryRow]]:
            job.cursor.execute("BEGIN TRANSACTION")
            row = one(job.cursor.execute("SELECT applied_seq FROM state WHERE id = 1"))
            rows = q.inventory_for_pairs(job, pairs)
            job.cursor.execute("COMMIT")
            return (int(row[0]) if row else 0), rows

        seq, rows = await self.engine.read(snapshot)
        active = await self.alerts.active_keys()
        seen: set[tuple[str, str, int]] = set()
        changed = 0
        for row in rows:
            conditions = (
                (REORDER_POINT, row.has_policy and row.stock_position <= row.reorder_point),
                (COVER_BELOW_LEAD_TIME, row.lead_time_days > 0 and row.days_of_cover < row.lead_time_days),
            )
            version = _evaluation_version(seq, row)
            for kind, holds in conditions:
                key = (row.material, row.site, kind)
                seen.add(key)
                if holds and key not in active:
                    if await self.alerts.raise_alert(self._candidate(kind, row, seq), version) is not None:
                        changed += 1
                elif not holds and key in active:
                    if await self.alerts.clear(row.material, row.site, kind, version) is not None:
                        changed += 1
        wanted = None if pairs is None else set(pairs)
        for key in active - seen:
            # The pair no longer has a stock position (or is no longer stocked): its episode ends.
            if wanted is None or key[:2] in wanted:
                if await self.alerts.clear(key[0], key[1], key[2], (seq, 0)) is not None:
                    changed += 1
        if changed and self.relay is not None:
            self.relay.notify()
        return changed

    def _candidate(self, kind: int, row: q.InventoryRow, seq: int) -> AlertCandidate:
        client, region = self.model.master.site.get(row.site, ("", ""))
        unit = f" {row.unit}" if row.unit else ""
        if kind == REORDER_POINT:
            message = (
                f"{row.material} at {row.site}: stock position {row.stock_position:g}{unit} "
                "reached the reorder "
                f"point {row.reorder_point:g}{unit}"
            )
        else:
            message = (
                f"{row.material} at {row.site}: {row.days_of_cover:.1f} days of cover, "
                "below the supplier lead "
                f"time of {row.lead_time_days:.1f} days"
            )
        return AlertCandidate(
            kind=kind,
            material=row.material,
            site=row.site,
            message=message,
            stock_position=row.stock_position,
            reorder_point=row.reorder_point,
            days_of_cover=row.days_of_cover,
            lead_time_days=row.lead_time_days,
            data_watermark=f"seq:{seq}",
            family=row.family,
            client=client,
            region=region,
        )

    def on_alert_event(self, event: events_pb2.AlertRaised) -> bool:
        """An alert change from the bus (any replica): hand it to this replica's watchers."""
        return self.hub.publish(event.event_id, event.alert)

    # == reads: plumbing ==================================================================================

    async def _run(self, fn: Callable[[Job], T], time_left: float | None) -> T:
        budget = (
            self.limits.query_timeout_seconds
            if time_left is None
            else min(time_left, self.limits.query_timeout_seconds)
        )
        if budget <= 0:
            raise DeadlineExceeded("deadline already passed")
        try:
            async with asyncio.timeout(budget):  # no extra task, unlike wait_for
                return await self.engine.read(fn)
        except TimeoutError:
            raise DeadlineExceeded(f"query did not finish within {budget:.3g}s") from None
        except QueryCancelled:
            raise DeadlineExceeded("query interrupted") from None

    async def _recall(self, method: str, request: Message) -> Message | None:
        """The cached answer to a request seen before, found through its lookup plan without validating and
        normalising it again; None when the request is new or its answer is not cached (the caller then takes
        the full path, which validates)."""
        plan = self._plans.get(method, request.SerializeToString())
        return None if plan is None else await self._lookup(plan)

    async def _lookup(self, plan: LookupPlan) -> Message | None:
        """The cached answer under ``plan``'s key at the current data versions, or None."""
        hit = await self._cache_get(plan.key_for(self.model.watermarks, self.model.lineage))
        return None if hit is None else _from_cache(plan.response_type, hit)

    async def _cached(
        self,
        method: str,
        request: Message,
        normalised: Message,
        kinds: Sequence[str],
        s: Slice,
        compute: Callable[[Job, str], Message],
        response_type: type[Message],
        time_left: float | None,
        page_version: str | None = None,
        *,
        overall: Sequence[str] = (),
    ) -> Message:
        """The cache-aside path shared by every cached read (see the module docstring), taken after
        ``_recall`` found no answer (a known request's key was looked up there); ``request`` is the request as
        received, ``normalised`` its normalised form. ``compute`` gets the job and the data
        version of its snapshot (``cache_keys.data_version``), which listings put in their page tokens;
        ``page_version`` is the version of the page token a listing was called with (None: first page).
        ``overall`` names the kinds the answer reads beyond the slice ``s``: they are keyed on their overall
        watermark (``cache_keys.narrowing``)."""
        request_bytes = request.SerializeToString()
        plan = self._plans.get(method, request_bytes)
        if plan is None:
            plan = LookupPlan(
                method, fingerprint(method, normalised), narrowing(kinds, s, overall), response_type
            )
            self._plans.add(method, request_bytes, plan)
            if (hit := await self._lookup(plan)) is not None:
                return hit
        # else ``_recall`` has just looked this plan's key up and missed: no second lookup.

        def stale(version: str) -> bool:
            return page_version is not None and page_version != version

        def in_snapshot(job: Job) -> tuple[dict[str, int], str, Message]:
            # The versions the answer is stored under must be those of the transaction's snapshot. The
            # writer's in-memory copy is, when no write job ran between reading it and the end of the
            # answer (``DuckEngine.writes``); otherwise they are read from the tables in the snapshot.
            mark = self.engine.writes
            job.cursor.execute("BEGIN TRANSACTION")
            response: Message | None = None
            if mark % 2 == 0:
                deps, lineage = self._known_versions(plan)
                version = data_version(deps, lineage)
                if not stale(version):
                    response = compute(job, version)
            if response is None or self.engine.writes != mark:
                stored = load_versions(job, plan.narrowing), self._stored_lineage(job)
                if response is None or stored != (deps, lineage):
                    deps, lineage = stored
                    version = data_version(deps, lineage)
                    if stale(version):
                        # An offset taken at another data version may skip or repeat rows.
                        raise Aborted(
                            "page.page_token: the data changed since the first page was listed; "
                            "restart the listing from the first page (without a page token)",
                            reason="PAGE_TOKEN_STALE",
                            metadata={"field": "page.page_token"},
                        )
                    response = compute(job, version)
            job.cursor.execute("COMMIT")
            return deps, lineage, response

        def without_transaction(job: Job) -> tuple[dict[str, int], str, Message] | None:
            # While writes are quiet, each statement's own snapshot is the same committed state, described
            # by the in-memory versions, unless a write job ran meanwhile: None then (and when stale).
            mark = self.engine.writes
            if not self.engine.quiet(mark):
                return None
            deps, lineage = self._known_versions(plan)
            version = data_version(deps, lineage)
            if stale(version):
                return None
            try:
                response = compute(job, version)
            except Exception:
                if self.engine.writes == mark:
                    raise
                # A write job overlapped (a reset drops tables): read again in a transaction.
                log.debug(
                    "read failed as a write overlapped it; reading again in a transaction", exc_info=True
                )
                return None
            return (deps, lineage, response) if self.engine.writes == mark else None

        def job(job: Job) -> tuple[str, Message, bytes]:
            answer = without_transaction(job)
            if answer is None:
                job.check()  # a read cancelled meanwhile does not start again
                answer = in_snapshot(job)
            deps, lineage, response = answer
            if "provenance" in response.DESCRIPTOR.fields_by_name:  # listings carry none
                provenance = response.provenance  # type: ignore[attr-defined]
                provenance.data_watermark = data_watermark(deps)
                provenance.generated_at.CopyFrom(_now_proto())
                provenance.from_cache = False
            stored_key = cache_key(method, plan.fingerprint, deps, lineage)
            return stored_key, response, response.SerializeToString(deterministic=True)

        stored_key, response, data = await self._run(job, time_left)
        await self._cache_set(stored_key, data)
        return response

    def _known_versions(self, plan: LookupPlan) -> tuple[dict[str, int], str]:
        """The plan's narrowed versions and the lineage, from the writer's in-memory copy."""
        dims, totals = self.model.watermarks.lookup()
        return narrowed_versions(plan.narrowing, dims, totals), self.model.lineage

    @staticmethod
    def _stored_lineage(job: Job) -> str:
        row = one(job.cursor.execute("SELECT value FROM meta WHERE key = 'lineage'"))
        return str(row[0]) if row else ""

    async def _cache_get(self, key: str) -> bytes | None:
        try:
            return await self.cache.get(key)
        except Exception:  # the port never raises for an outage; anything else still must not fail a read
            log.warning("cache get failed", exc_info=True)
            return None

    async def _cache_set(self, key: str, value: bytes) -> None:
        try:
            await self.cache.set(key, value, self.limits.cache_ttl_seconds)
        except Exception:
            log.warning("cache set failed", exc_info=True)

    def _slice(self, value: common_pb2.Filter, field: str = "filter") -> Slice:
        return conv.slice_of(value, field=field, max_range_days=self.limits.max_range_days)

    def _check_span(self, start: dt.date | None, end: dt.date | None, field: str) -> None:
        if start and end and (end - start).days + 1 > self.limits.max_range_days:
            raise InvalidArgument(
                [
                    FieldViolation(
                        field,
                        f"the range resolves to {start}..{end}, longer than the maximum of "
                        f"{self.limits.max_range_days} days",
                    )
                ]
            )

    @staticmethod
    def _page(page: common_pb2.PageRequest, bound: str, field: str = "page") -> tuple[int, int, str | None]:
        """(offset, limit, version) of a PageRequest; ``bound`` ties tokens to the request they came from,
        ``version`` is the data version the token was issued at ("" when it carries none, None on the first
        page; ``_cached`` checks it)."""
        if page.page_size < 0 or page.page_size > MAX_PAGE_SIZE:
            raise InvalidArgument(
                [FieldViolation(f"{field}.page_size", f"must be between 0 and {MAX_PAGE_SIZE}")]
            )
        limit = page.page_size or DEFAULT_PAGE_SIZE
        if not page.page_token:
            return 0, limit, None
        try:
            padded = page.page_token + "=" * (-len(page.page_token) % 4)
            token = json.loads(base64.urlsafe_b64decode(padded))
            offset = int(token["o"])
            version = token.get("w", "")
            if token["b"] != bound or offset < 0 or not isinstance(version, str):
                raise ValueError("token of another request")
        except (ValueError, KeyError, TypeError) as exc:
            raise InvalidArgument(
                [FieldViolation(f"{field}.page_token", "not a token of this request")]
            ) from exc
        return offset, limit, version

    @staticmethod
    def _page_key(offset: int, version: str | None) -> str:
        """The page part of a normalised listing request. The token's data version belongs to it: a page is
        then cached only under the version its token was issued at (the key also holds the current
        versions), so a stale token never finds a cached page and always reaches the version check in
        ``_cached``. The ``@`` keeps these keys apart from the bare offsets of earlier tokens, which carried
        no version."""
        return f"{offset}@{version or ''}"

    @staticmethod
    def _bound(method: str, normalised: Message) -> str:
        return hashlib.sha256(method.encode() + normalised.SerializeToString(deterministic=True)).hexdigest()[
            :16
        ]

    @staticmethod
    def _page_info(
        offset: int, limit: int, returned: int, total: int, bound: str, version: str | None = None
    ) -> common_pb2.PageInfo:
        following = offset + returned
        more = returned and following < total and returned >= limit
        token = _page_token(following, bound, version) if more else ""
        return common_pb2.PageInfo(next_page_token=token, total_size=total)

    # == reads ============================================================================================

    async def get_demand_series(
        self, request: analytics_pb2.GetDemandSeriesRequest, time_left: float | None = None
    ) -> analytics_pb2.GetDemandSeriesResponse:
        if (hit := await self._recall("GetDemandSeries", request)) is not None:
            return hit  # type: ignore[return-value]
        s = self._slice(request.filter)
        if request.grain not in _GRAINS:
            raise InvalidArgument([FieldViolation("grain", "unknown time grain")])
        grain = _GRAINS[request.grain]
        normalised = analytics_pb2.GetDemandSeriesRequest(
            filter=conv.filter_proto(s), grain=_GRAIN_ENUM[grain], include_forecast=request.include_forecast
        )
        kinds = [Kind.CONSUMPTION, *self._master_kinds(s)]
        if s.end is None:
            kinds.append(Kind.DATA_END)
        series_key = self._forecast_key(s) if request.include_forecast and grain == "week" else None
        if series_key is not None:
            kinds.append(Kind.FORECAST)

        def compute(job: Job, _version: str) -> analytics_pb2.GetDemandSeriesResponse:
            points, units, _ = q.demand_series(job, s, grain)
            if points:
                self._check_span(points[0].period, points[-1].period, "filter.date_range")
            response = analytics_pb2.GetDemandSeriesResponse(unit=units[0] if len(units) == 1 else "")
            index: dict[dt.date, analytics_pb2.DemandPoint] = {}
            for p in points:
                point = response.points.add(
                    period_start=conv.date_proto(p.period), quantity=p.quantity, lines=p.lines
                )
                index[p.period] = point
            if series_key is not None:
                weeks, model_name, model_version = q.latest_forecast(job, series_key)
                last = points[-1].period if points else None
                for week in weeks:
                    if s.end is not None and week.week_start > s.end:
                        continue
                    banded = index.get(week.week_start)
                    if banded is None:
                        if last is not None and week.week_start <= last:
                            continue  # before the series start or between periods: nothing to attach to
                        banded = response.points.add(
                            period_start=conv.date_proto(week.week_start), is_forecast=True
                        )
                    for level, value in zip(week.levels, week.values, strict=False):
                        banded.forecast.add(level=level, value=value)
                response.provenance.model_name = model_name
                response.provenance.model_version = model_version
            return response

        return await self._cached(  # type: ignore[return-value]
            "GetDemandSeries",
            request,
            normalised,
            kinds,
            s,
            compute,
            analytics_pb2.GetDemandSeriesResponse,
            time_left,
        )

    @staticmethod
    def _master_kinds(s: Slice) -> list[str]:
        """Master data an answer depends on only through the filter (family, client, region)."""
        kinds = []
        if s.families:
            kinds.append(Kind.MATERIAL)
        if s.clients or s.regions:
            kinds.append(Kind.SITE)
        return kinds

    @staticmethod
    def _forecast_key(s: Slice) -> str | None:
        """The forecast series a slice is, if it is one (material x site, material, family, region or
        national)."""
        if s.suppliers or s.clients:
            return None
        if s.is_single_series:
            return forecast_series_key(1, s.materials[0], s.sites[0], "", "")
        if len(s.materials) == 1 and not (s.sites or s.families or s.regions):
            return forecast_series_key(2, s.materials[0], "", "", "")
        if len(s.families) == 1 and not (s.materials or s.sites or s.regions):
            return forecast_series_key(3, "", "", s.families[0], "")
        if len(s.regions) == 1 and not (s.materials or s.sites or s.families):
            return forecast_series_key(4, "", "", "", s.regions[0])
        if not (s.materials or s.sites or s.families or s.regions):
            return forecast_series_key(5, "", "", "", "")
        return None

    async def get_series_history(
        self, request: analytics_pb2.GetSeriesHistoryRequest, time_left: float | None = None
    ) -> analytics_pb2.GetSeriesHistoryResponse:
        if (hit := await self._recall("GetSeriesHistory", request)) is not None:
            return hit  # type: ignore[return-value]
        if len(request.series) > self.limits.max_series_per_call:
            raise InvalidArgument(
                [FieldViolation("series", f"at most {self.limits.max_series_per_call} series per call")]
            )
        violations = []
        for i, key in enumerate(request.series):
            if not key.material_code:
                violations.append(FieldViolation(f"series[{i}].material_code", "required"))
            if not key.site_code:
                violations.append(FieldViolation(f"series[{i}].site_code", "required"))
        until = conv.date_of(request.until)
        if request.HasField("until") and until is None:
            violations.append(FieldViolation("until", "not a valid calendar date"))
        if violations:
            raise InvalidArgument(violations)
        keys = [(k.material_code, k.site_code) for k in request.series]
        s = Slice.of(materials=[k[0] for k in keys], sites=[k[1] for k in keys])
        normalised = analytics_pb2.GetSeriesHistoryRequest(series=request.series)
        if until is not None:
            normalised.until.CopyFrom(conv.date_proto(until))
        kinds = [Kind.CONSUMPTION, Kind.MATERIAL, Kind.SITE]
        if until is None:
            kinds.append(Kind.DATA_END)

        def compute(job: Job, _version: str) -> analytics_pb2.GetSeriesHistoryResponse:
            rows = q.series_history(job, keys, until)
            return analytics_pb2.GetSeriesHistoryResponse(series=[conv.history_proto(r) for r in rows])

        return await self._cached(  # type: ignore[return-value]
            "GetSeriesHistory",
            request,
            normalised,
            kinds,
            s,
            compute,
            analytics_pb2.GetSeriesHistoryResponse,
            time_left,
        )

    async def get_kpis(
        self, request: analytics_pb2.GetKpisRequest, time_left: float | None = None
    ) -> analytics_pb2.GetKpisResponse:
        if (hit := await self._recall("GetKpis", request)) is not None:
            return hit  # type: ignore[return-value]
        s = self._slice(request.filter)
        unknown = [
            FieldViolation(f"names[{i}]", f"unknown KPI {n!r}; see docs/kpis.md")
            for i, n in enumerate(request.names)
            if n not in kpi_mod.KPI_UNITS
        ]
        if unknown:
            raise InvalidArgument(unknown)
        names = list(request.names)
        normalised = analytics_pb2.GetKpisRequest(filter=conv.filter_proto(s), names=names)
        wanted = set(names or kpi_mod.KPI_NAMES)
        kinds = [
            Kind.CONSUMPTION,
            Kind.STOCK,
            Kind.PO,
            Kind.FORECAST,
            Kind.MATERIAL,
            Kind.SITE,
            Kind.DATA_END,
        ]
        # ABC classes rank every material against all the others: they depend on all demand.
        dep_slice = Slice() if wanted & {"abc_a_share", "abc_b_share", "abc_c_share"} else s
        if wanted & _ACCURACY_KPIS:
            # The actuals are every line of a forecast pair, whoever supplied it (the supplier filter only
            # picks the pairs): a line of another supplier changes them.
            dep_slice = dataclasses.replace(dep_slice, suppliers=())

        def compute(job: Job, _version: str) -> analytics_pb2.GetKpisResponse:
            values = kpi_mod.compute_kpis(job, s, names)
            return analytics_pb2.GetKpisResponse(kpis=[conv.kpi_proto(v) for v in values])

        return await self._cached(  # type: ignore[return-value]
            "GetKpis",
            request,
            normalised,
            kinds,
            dep_slice,
            compute,
            analytics_pb2.GetKpisResponse,
            time_left,
        )

    async def list_inventory_status(
        self, request: analytics_pb2.ListInventoryStatusRequest, time_left: float | None = None
    ) -> analytics_pb2.ListInventoryStatusResponse:
        if (hit := await self._recall("ListInventoryStatus", request)) is not None:
            return hit  # type: ignore[return-value]
        s = self._slice(request.filter)
        if request.min_status not in (0, 1, 2, 3):
            raise InvalidArgument([FieldViolation("min_status", "unknown stock status")])
        bound = self._bound(
            "ListInventoryStatus",
            analytics_pb2.ListInventoryStatusRequest(
                filter=conv.filter_proto(s), min_status=request.min_status
            ),
        )
        offset, limit, version = self._page(request.page, bound)
        normalised = analytics_pb2.ListInventoryStatusRequest(
            filter=conv.filter_proto(s),
            min_status=request.min_status,
            page=common_pb2.PageRequest(page_size=limit, page_token=self._page_key(offset, version)),
        )
        kinds = [
            Kind.CONSUMPTION,
            Kind.STOCK,
            Kind.PO,
            Kind.FORECAST,
            Kind.MATERIAL,
            Kind.SITE,
            Kind.DATA_END,
        ]

        def compute(job: Job, current: str) -> analytics_pb2.ListInventoryStatusResponse:
            rows, total = q.inventory_status(job, s, request.min_status, offset, limit)
            return analytics_pb2.ListInventoryStatusResponse(
                rows=[conv.inventory_proto(r) for r in rows],
                page=self._page_info(offset, limit, len(rows), total, bound, current),
            )

        return await self._cached(  # type: ignore[return-value]
            "ListInventoryStatus",
            request,
            normalised,
            kinds,
            s,
            compute,
            analytics_pb2.ListInventoryStatusResponse,
            time_left,
            version,
            # The lead-time fallbacks (the material at every site, its family, all lines) and the end of the
            # history window (the data end) read demand lines outside the slice.
            overall=(Kind.CONSUMPTION, Kind.DATA_END),
        )

    async def get_lead_times(
        self, request: analytics_pb2.GetLeadTimesRequest, time_left: float | None = None
    ) -> analytics_pb2.GetLeadTimesResponse:
        if (hit := await self._recall("GetLeadTimes", request)) is not None:
            return hit  # type: ignore[return-value]
        s = self._slice(request.filter)
        normalised = analytics_pb2.GetLeadTimesRequest(filter=conv.filter_proto(s))
        # The scope can widen to every line: the answer depends on all demand lines.
        kinds = [Kind.CONSUMPTION, Kind.MATERIAL, Kind.SITE]

        def compute(job: Job, _version: str) -> analytics_pb2.GetLeadTimesResponse:
            sample = q.lead_times(job, s)
            days = np.asarray(sample.days, dtype=np.float64)
            response = analytics_pb2.GetLeadTimesResponse(days=sample.days, scope=sample.scope)
            if days.size:
                response.mean_days = float(days.mean())
                response.p50_days = float(np.percentile(days, 50))
                response.p90_days = float(np.percentile(days, 90))
                response.std_days = float(days.std(ddof=1)) if days.size > 1 else 0.0
            return response

        return await self._cached(  # type: ignore[return-value]
            "GetLeadTimes",
            request,
            normalised,
            kinds,
            Slice(),
            compute,
            analytics_pb2.GetLeadTimesResponse,
            time_left,
        )

    async def _listing(
        self,
        method: str,
        request: analytics_pb2.ListMasterDataRequest,
        kinds: Sequence[str],
        fetch: Callable[[Job, str, int, int], tuple[list[tuple[object, ...]], int]],
        build: Callable[[list[tuple[object, ...]], common_pb2.PageInfo], Message],
        response_type: type[Message],
        time_left: float | None,
    ) -> Message:
        if (hit := await self._recall(method, request)) is not None:
            return hit
        query = request.query.strip()
        bound = self._bound(method, analytics_pb2.ListMasterDataRequest(query=query))
        offset, limit, version = self._page(request.page, bound)
        normalised = analytics_pb2.ListMasterDataRequest(
            query=query,
            page=common_pb2.PageRequest(page_size=limit, page_token=self._page_key(offset, version)),
        )

        def compute(job: Job, current: str) -> Message:
            rows, total = fetch(job, query, offset, limit)
            return build(rows, self._page_info(offset, limit, len(rows), total, bound, current))

        return await self._cached(
            method, request, normalised, kinds, Slice(), compute, response_type, time_left, version
        )

    async def list_materials(
        self, request: analytics_pb2.ListMasterDataRequest, time_left: float | None = None
    ) -> analytics_pb2.ListMaterialsResponse:
        def build(
            rows: list[tuple[Any, ...]], page: common_pb2.PageInfo
        ) -> analytics_pb2.ListMaterialsResponse:
            return analytics_pb2.ListMaterialsResponse(
                materials=[
                    analytics_pb2.MaterialInfo(
                        code=r[0],
                        name=r[1],
                        family=r[2],
                        unit=r[3],
                        criticality=r[4],
                        abc_class=r[5],
                        stocked=r[6],
                        total_quantity=float(r[7]),
                        lines=int(r[8]),
                    )
                    for r in rows
                ],
                page=page,
            )

        return await self._listing(  # type: ignore[return-value]
            "ListMaterials",
            request,
            [Kind.CONSUMPTION, Kind.MATERIAL],
            q.list_materials,
            build,  # type: ignore[arg-type]
            analytics_pb2.ListMaterialsResponse,
            time_left,
        )

    async def list_sites(
        self, request: analytics_pb2.ListMasterDataRequest, time_left: float | None = None
    ) -> analytics_pb2.ListSitesResponse:
        def build(rows: list[tuple[Any, ...]], page: common_pb2.PageInfo) -> analytics_pb2.ListSitesResponse:
            return analytics_pb2.ListSitesResponse(
                sites=[
                    analytics_pb2.SiteInfo(
                        code=r[0], client=r[1], region=r[2], site_type=r[3], criticality=r[4], lines=int(r[5])
                    )
                    for r in rows
                ],
                page=page,
            )

        return await self._listing(  # type: ignore[return-value]
            "ListSites",
            request,
            [Kind.CONSUMPTION, Kind.SITE],
            q.list_sites,
            build,  # type: ignore[arg-type]
            analytics_pb2.ListSitesResponse,
            time_left,
        )

    async def list_suppliers(
        self, request: analytics_pb2.ListMasterDataRequest, time_left: float | None = None
    ) -> analytics_pb2.ListSuppliersResponse:
        def build(
            rows: list[tuple[Any, ...]], page: common_pb2.PageInfo
        ) -> analytics_pb2.ListSuppliersResponse:
            return analytics_pb2.ListSuppliersResponse(
                suppliers=[
                    analytics_pb2.SupplierInfo(
                        code=r[0], name=r[1], lines=int(r[2]), lead_time_p50_days=float(r[3])
                    )
                    for r in rows
                ],
                page=page,
            )

        return await self._listing(  # type: ignore[return-value]
            "ListSuppliers",
            request,
            [Kind.CONSUMPTION, Kind.SUPPLIER],
            q.list_suppliers,
            build,  # type: ignore[arg-type]
            analytics_pb2.ListSuppliersResponse,
            time_left,
        )

    async def get_external_series(
        self, request: analytics_pb2.GetExternalSeriesRequest, time_left: float | None = None
    ) -> analytics_pb2.GetExternalSeriesResponse:
        if (hit := await self._recall("GetExternalSeries", request)) is not None:
            return hit  # type: ignore[return-value]
        wrapper = common_pb2.Filter(date_range=request.date_range)
        s = conv.slice_of(
            wrapper, field="request", max_range_days=self.limits.max_range_days, series=request.series_ids
        )
        if request.grain not in _GRAINS:
            raise InvalidArgument([FieldViolation("grain", "unknown time grain")])
        grain = _GRAINS[request.grain] if request.grain else "day"
        ids = list(dict.fromkeys(i.strip() for i in request.series_ids if i.strip()))
        normalised = analytics_pb2.GetExternalSeriesRequest(
            series_ids=ids, date_range=conv.filter_proto(s).date_range, grain=_GRAIN_ENUM[grain]
        )

        def compute(job: Job, _version: str) -> analytics_pb2.GetExternalSeriesResponse:
            response = analytics_pb2.GetExternalSeriesResponse()
            if not ids:
                for known in q.external_catalogue(job):
                    response.series.add(series_id=known.series_id, unit=known.unit, source=known.source)
                return response
            for series_id in ids:
                info, values = q.external_values(job, series_id, s.start, s.end, grain)
                if info is None:
                    raise NotFound(
                        f"no external series {series_id!r}",
                        resource_type="external_series",
                        resource_name=series_id,
                    )
                if values:
                    self._check_span(values[0][0], values[-1][0], "date_range")
                response.series.add(
                    series_id=info.series_id,
                    unit=info.unit,
                    source=info.source,
                    dates=[conv.date_proto(d) for d, _ in values],
                    values=[v for _, v in values],
                )
            return response

        return await self._cached(  # type: ignore[return-value]
            "GetExternalSeries",
            request,
            normalised,
            [Kind.EXTERNAL],
            s,
            compute,
            analytics_pb2.GetExternalSeriesResponse,
            time_left,
        )

    async def get_watermark(self) -> analytics_pb2.GetWatermarkResponse:
        seq = self.model.applied_seq
        return analytics_pb2.GetWatermarkResponse(sequence=seq, data_watermark=f"seq:{seq}")

    # == alerts ===========================================================================================

    async def list_alerts(self, request: analytics_pb2.ListAlertsRequest) -> analytics_pb2.ListAlertsResponse:
        s = self._slice(request.filter)
        states = tuple(sorted({int(x) for x in request.states}))
        if any(x not in (1, 2, 3) for x in states):
            raise InvalidArgument([FieldViolation("states", "unknown alert state")])
        bound = self._bound(
            "ListAlerts",
            analytics_pb2.ListAlertsRequest(filter=conv.filter_proto(s), states=states),  # type: ignore[arg-type]
        )
        # Alert tokens carry no data version: alerts are not cached, and they also change by
        # acknowledgement and resolution, which no data watermark follows.
        offset, limit, _ = self._page(request.page, bound)
        query = AlertQuery(
            materials=s.materials,
            families=s.families,
            sites=s.sites,
            clients=s.clients,
            regions=s.regions,
            states=states,
            start=s.start,
            end=s.end,
            offset=offset,
            limit=limit,
            bought_materials=await self._bought_from(s.suppliers) if s.suppliers else None,
        )
        records, total = await self.alerts.search(query)
        return analytics_pb2.ListAlertsResponse(
            alerts=[conv.alert_proto(r) for r in records],
            page=self._page_info(offset, limit, len(records), total, bound),
        )

    async def watch_alerts(
        self, request: analytics_pb2.WatchAlertsRequest
    ) -> AsyncIterator[analytics_pb2.Alert]:
        s = self._slice(request.filter)
        master = self.model.master

        def matches(alert: analytics_pb2.Alert) -> bool:
            client, region = master.site.get(alert.site_code, ("", ""))
            checks = (
                (s.materials, alert.material_code),
                (s.sites, alert.site_code),
                (s.families, master.family.get(alert.material_code, "")),
                (s.clients, client),
                (s.regions, region),
            )
            if any(values and value not in values for values, value in checks):
                return False
            raised = dt.datetime.fromtimestamp(alert.raised_at.seconds, dt.UTC).date()
            return not ((s.start and raised < s.start) or (s.end and raised > s.end))

        suppliers = narrowing([Kind.CONSUMPTION], Slice.of(suppliers=s.suppliers))
        bought: frozenset[str] = frozenset()
        bought_at = -1
        async for alert in self.hub.watch(matches):
            if s.suppliers:
                version = narrowed_versions(suppliers, *self.model.watermarks.lookup())[Kind.CONSUMPTION]
                if version != bought_at:  # lines of these suppliers were applied since: look again
                    bought, bought_at = frozenset(await self._bought_from(s.suppliers)), version
                if alert.material_code not in bought:
                    continue
            yield alert

    async def _bought_from(self, suppliers: Sequence[str]) -> tuple[str, ...]:
        """What a supplier filter keeps of alerts: the materials ever bought from ``suppliers``, as for stock
        (docs/kpis.md). Alerts are about a material's stock, not about one supplier's lines."""
        return await self._run(lambda job: q.materials_bought_from(job, suppliers), None)

    async def acknowledge_alert(self, request: analytics_pb2.AlertActionRequest) -> analytics_pb2.Alert:
        return await self._transition(request, ACKNOWLEDGED)

    async def resolve_alert(self, request: analytics_pb2.AlertActionRequest) -> analytics_pb2.Alert:
        return await self._transition(request, RESOLVED)

    async def _transition(self, request: analytics_pb2.AlertActionRequest, state: int) -> analytics_pb2.Alert:
        if not request.alert_id.strip():
            raise InvalidArgument([FieldViolation("alert_id", "required")])
        actor = require_principal().subject
        record = await self.alerts.transition(request.alert_id.strip(), state, actor, request.comment)
        if self.relay is not None:
            self.relay.notify()
        return conv.alert_proto(record)
