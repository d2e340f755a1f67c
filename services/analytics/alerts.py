"""Alert store: raise-once episodes, acknowledge / resolve with an audit trail, and an outbox of changes;
also the journal of the forecasts analytics received (ingestion's export cannot give them back, so a read
model rebuilt after a loss replays them from here).

One small interface, two adapters chosen by NOVA_DATABASE_URL:

- ``PostgresAlertStore`` (``postgresql://``): schema ``analytics`` (migrations/001_alerts.sql, applied at
  start under an advisory lock), shared by every replica. Raise-once comes from the primary key of
  ``alert_episodes``: the statement that flips an episode to active is the only one that inserts an alert,
  and PostgreSQL serialises two replicas' statements on that key.
- ``DuckAlertStore`` (anything else): a DuckDB file of its own, for the embedded profile (one process, so
  one thread doing every operation is what makes each check-then-write atomic).

Episode versions are ``(data watermark, forecast version)`` of the evaluation, the second part moving with
the pair's reorder policy and newest forecast (``service._evaluation_version``); a transition needs a newer
one than the last, so a replica that lags behind cannot end an episode another replica just started.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import datetime as dt
import logging
import uuid
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol, runtime_checkable
from urllib.parse import urlsplit

import duckdb

from services.analytics.engine import one
from services.kit.errors import FailedPrecondition, NotFound, Unavailable

__all__ = [
    "ACKNOWLEDGED",
    "COVER_BELOW_LEAD_TIME",
    "MIGRATIONS",
    "OPEN",
    "REORDER_POINT",
    "RESOLVED",
    "SYSTEM_ACTOR",
    "AlertCandidate",
    "AlertEventRecord",
    "AlertQuery",
    "AlertRecord",
    "AlertStore",
    "DuckAlertStore",
    "Notification",
    "PostgresAlertStore",
    "open_alert_store",
]

log = logging.getLogger(__name__)

# Values of analytics.v1.AlertKind / AlertState, kept as ints so this module needs no protobuf.
REORDER_POINT, COVER_BELOW_LEAD_TIME = 1, 2
OPEN, ACKNOWLEDGED, RESOLVED = 1, 2, 3
SYSTEM_ACTOR = "system"
MIGRATIONS = Path(__file__).with_name("migrations")


@dataclass(frozen=True, slots=True)
class AlertCandidate:
    """An alert condition found true by an evaluation."""

    kind: int
    material: str
    site: str
    message: str
    stock_position: float
    reorder_point: float
    days_of_cover: float
    lead_time_days: float
    data_watermark: str
    family: str = ""
    client: str = ""
    region: str = ""


@dataclass(frozen=True, slots=True)
class AlertEventRecord:
    state: int
    actor: str
    at: dt.datetime
    comment: str = ""


@dataclass(frozen=True, slots=True)
class AlertRecord:
    alert_id: str
    kind: int
    material: str
    site: str
    state: int
    message: str
    stock_position: float
    reorder_point: float
    days_of_cover: float
    lead_time_days: float
    raised_at: dt.datetime
    data_watermark: str
    family: str = ""
    client: str = ""
    region: str = ""
    history: tuple[AlertEventRecord, ...] = ()


@dataclass(frozen=True, slots=True)
class AlertQuery:
    """Listing filter; lists OR-ed within, AND-ed across; dates bound the raise day (inclusive)."""

    materials: tuple[str, ...] = ()
    families: tuple[str, ...] = ()
    sites: tuple[str, ...] = ()
    clients: tuple[str, ...] = ()
    regions: tuple[str, ...] = ()
    states: tuple[int, ...] = ()
    start: dt.date | None = None
    end: dt.date | None = None
    offset: int = 0
    limit: int = 100
    bought_materials: tuple[str, ...] | None = None
    """A supplier filter, as the materials ever bought from those suppliers (empty: none, so no alert);
    None: no supplier filter."""


@dataclass(frozen=True, slots=True)
class Notification:
    """An audit event not yet published, with the alert as it is after it."""

    event_id: str
    alert: AlertRecord


@runtime_checkable
class AlertStore(Protocol):
    async def migrate(self) -> None: ...

    async def raise_alert(self, candidate: AlertCandidate, version: tuple[int, int]) -> AlertRecord | None:
        """Start an episode and raise its alert; None when an episode of that key is already active (or a
        newer evaluation already changed it)."""
        ...

    async def clear(
        self, material: str, site: str, kind: int, version: tuple[int, int]
    ) -> AlertRecord | None:
        """End the active episode; its alert, unless already resolved, is resolved by ``system``. Returns the
        alert when it was resolved here."""
        ...

    async def active_keys(self) -> set[tuple[str, str, int]]:
        """(material, site, kind) of every active episode."""
        ...

    async def transition(self, alert_id: str, state: int, actor: str, comment: str) -> AlertRecord:
        """Acknowledge (from open) or resolve (from open or acknowledged), recording who and why. Repeating
        the current state changes nothing; NotFound / FailedPrecondition otherwise."""
        ...

    async def get(self, alert_id: str) -> AlertRecord | None: ...

    async def search(self, query: AlertQuery) -> tuple[list[AlertRecord], int]:
        """Alerts newest first, and the total matching."""
        ...

    async def pending(self, limit: int) -> list[Notification]:
        """Audit events not yet published, oldest first."""
        ...

    async def mark_published(self, event_ids: Sequence[str]) -> None: ...

    async def keep_forecasts(self, event_id: str, body: bytes) -> None:
        """Journal one ForecastsUpdated event (serialised); an event id already kept is left as it is."""
        ...

    def kept_forecasts(self, page_size: int = 200) -> AsyncIterator[bytes]:
        """Every journaled event, in the order they were first kept."""
        ...

    async def kept_forecast_ids(self) -> set[str]:
        """The event ids of the journal."""
        ...

    async def forget_kept_forecasts(self, event_ids: Sequence[str]) -> int:
        """Delete these events from the journal (``housekeeping.py`` says which); returns how many."""
        ...

    async def check(self) -> bool: ...

    async def close(self) -> None: ...


_ALLOWED_FROM = {ACKNOWLEDGED: (OPEN,), RESOLVED: (OPEN, ACKNOWLEDGED)}
_ALERT_COLUMNS = (
    "alert_id, kind, material_code, site_code, state, message, stock_position, reorder_point, days_of_cover, "
    "lead_time_days, raised_at, data_watermark, family, client, region"
)


def _record(row: Sequence[object], history: Sequence[AlertEventRecord] = ()) -> AlertRecord:
    raised = row[10]
    assert isinstance(raised, dt.datetime)
    return AlertRecord(
        alert_id=str(row[0]),
        kind=int(row[1]),  # type: ignore[call-overload]
        material=str(row[2]),
        site=str(row[3]),
        state=int(row[4]),  # type: ignore[call-overload]
        message=str(row[5]),
        stock_position=float(row[6]),  # type: ignore[arg-type]
        reorder_point=float(row[7]),  # type: ignore[arg-type]
        days_of_cover=float(row[8]),  # type: ignore[arg-type]
        lead_time_days=float(row[9]),  # type: ignore[arg-type]
        raised_at=raised if raised.tzinfo else raised.replace(tzinfo=dt.UTC),
        data_watermark=str(row[11]),
        family=str(row[12]),
        client=str(row[13]),
        region=str(row[14]),
        history=tuple(history),
    )


def _event(row: Sequence[Any]) -> AlertEventRecord:
    at = row[2]
    assert isinstance(at, dt.datetime)
    return AlertEventRecord(
        int(row[0]), str(row[1]), at if at.tzinfo else at.replace(tzinfo=dt.UTC), str(row[3])
    )


def _now() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


def _new_id() -> str:
    return uuid.uuid4().hex


def _conditions(query: AlertQuery, mark: _Marks) -> tuple[str, list[object]]:
    conditions: list[str] = []
    params: list[object] = []
    for column, values in (
        ("material_code", query.materials),
        ("family", query.families),
        ("site_code", query.sites),
        ("client", query.clients),
        ("region", query.regions),
        ("state", query.states),
    ):
        if values:
            conditions.append(f"{column} IN ({', '.join(mark() for _ in values)})")
            params.extend(values)
    if query.bought_materials is not None:
        # One array parameter however many materials a supplier sold.
        conditions.append(mark.any_of("material_code"))
        params.append(list(query.bought_materials))
    if query.start:
        conditions.append(f"raised_at >= {mark()}")
        params.append(dt.datetime.combine(query.start, dt.time(), dt.UTC))
    if query.end:
        conditions.append(f"raised_at < {mark()}")
        params.append(dt.datetime.combine(query.end + dt.timedelta(days=1), dt.time(), dt.UTC))
    return (" AND ".join(conditions) or "TRUE"), params


class _Marks:
    """Placeholder generator: ``$1, $2, ...`` for asyncpg, ``?`` for DuckDB."""

    def __init__(self, numbered: bool):
        self.numbered = numbered
        self.n = 0

    def __call__(self) -> str:
        self.n += 1
        return f"${self.n}" if self.numbered else "?"

    def any_of(self, column: str) -> str:
        """``column`` equals one of the strings of a list parameter."""
        if self.numbered:
            return f"{column} = ANY({self()}::TEXT[])"
        return f"list_contains({self()}::VARCHAR[], {column})"


# -- PostgreSQL ----------------------------------------------------------------------------------------


class PostgresAlertStore:
    """The production adapter (asyncpg pool)."""

    def __init__(self, pool: object):
        self._pool = pool

    @classmethod
    async def connect(cls, url: str, *, min_size: int = 1, max_size: int = 4) -> PostgresAlertStore:
        import asyncpg

        pool = await asyncpg.create_pool(url, min_size=min_size, max_size=max_size, command_timeout=30)
        return cls(pool)

    @contextlib.asynccontextmanager
    async def _connection(self) -> AsyncIterator[Any]:
        """A pooled connection; PostgreSQL unreachable becomes Unavailable (retry later), not INTERNAL."""
        import asyncpg

        try:
            async with self._pool.acquire() as conn:  # type: ignore[attr-defined]
                yield conn
        except (OSError, TimeoutError, asyncpg.PostgresConnectionError, asyncpg.InterfaceError) as exc:
            raise Unavailable(f"alert store unavailable: {type(exc).__name__}") from exc

    async def migrate(self) -> None:
        async with self._connection() as conn, conn.transaction():
            # Replicas start together; the lock makes their idempotent DDL run one after the other.
            await conn.execute("SELECT pg_advisory_xact_lock(hashtext('novacorrente.analytics.migrations'))")
            for path in sorted(MIGRATIONS.glob("*.sql")):
                await conn.execute(path.read_text())

    async def _history(self, conn: object, alert_ids: Sequence[str]) -> dict[str, list[AlertEventRecord]]:
        rows = await conn.fetch(  # type: ignore[attr-defined]
            "SELECT alert_id, state, actor, changed_at, comment FROM analytics.alert_events "
            "WHERE alert_id = ANY($1::TEXT[]) ORDER BY id",
            list(alert_ids),
        )
        out: dict[str, list[AlertEventRecord]] = {}
        for r in rows:
            out.setdefault(r[0], []).append(_event(tuple(r)[1:]))
        return out

    async def _load(self, conn: object, alert_id: str) -> AlertRecord | None:
        row = await conn.fetchrow(  # type: ignore[attr-defined]
            f"SELECT {_ALERT_COLUMNS} FROM analytics.alerts WHERE alert_id = $1", alert_id
        )
        if row is None:
            return None
        history = await self._history(conn, [alert_id])
        return _record(tuple(row), history.get(alert_id, []))

    @staticmethod
    async def _audit(conn: object, alert_id: str, state: int, actor: str, comment: str) -> None:
        await conn.execute(  # type: ignore[attr-defined]
            "INSERT INTO analytics.alert_events (event_id, alert_id, state, actor, changed_at, comment) "
            "VALUES ($1, $2, $3, $4, $5, $6)",
            _new_id(),
            alert_id,
            state,
            actor,
            _now(),
            comment,
        )

    async def raise_alert(self, candidate: AlertCandidate, version: tuple[int, int]) -> AlertRecord | None:
        alert_id = _new_id()
        c = candidate
        async with self._connection() as conn, conn.transaction():
            won = await conn.fetchval(
                "INSERT INTO analytics.alert_episodes AS e VALUES ($1, $2, $3, TRUE, $4, $5, $6) "
                "ON CONFLICT (material_code, site_code, kind) DO UPDATE SET active = TRUE, "
                "alert_id = EXCLUDED.alert_id, changed_seq = EXCLUDED.changed_seq, "
                "changed_version = EXCLUDED.changed_version "
                "WHERE NOT e.active AND (e.changed_seq, e.changed_version) < "
                "(EXCLUDED.changed_seq, EXCLUDED.changed_version) RETURNING alert_id",
                c.material,
                c.site,
                c.kind,
                alert_id,
                version[0],
                version[1],
            )
            if won is None:
                return None
            await conn.execute(
                f"INSERT INTO analytics.alerts ({_ALERT_COLUMNS}) VALUES "
                "($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15)",
                alert_id,
                c.kind,
                c.material,
                c.site,
                OPEN,
                c.message,
                c.stock_position,
                c.reorder_point,
                c.days_of_cover,
                c.lead_time_days,
                _now(),
                c.data_watermark,
                c.family,
                c.client,
                c.region,
            )
            await self._audit(conn, alert_id, OPEN, SYSTEM_ACTOR, "raised")
            return await self._load(conn, alert_id)

    async def clear(
        self, material: str, site: str, kind: int, version: tuple[int, int]
    ) -> AlertRecord | None:
        async with self._connection() as conn, conn.transaction():
            alert_id = await conn.fetchval(
                "UPDATE analytics.alert_episodes SET active = FALSE, changed_seq = $4, changed_version = $5 "
                "WHERE material_code = $1 AND site_code = $2 AND kind = $3 AND active "
                "AND (changed_seq, changed_version) < ($4, $5) RETURNING alert_id",
                material,
                site,
                kind,
                version[0],
                version[1],
            )
            if alert_id is None:
                return None
            changed = await conn.fetchval(
                "UPDATE analytics.alerts SET state = $2 WHERE alert_id = $1 AND state <> $2 "
                "RETURNING alert_id",
                alert_id,
                RESOLVED,
            )
            if changed is None:
                return None
            await self._audit(conn, alert_id, RESOLVED, SYSTEM_ACTOR, "condition cleared")
            return await self._load(conn, alert_id)

    async def active_keys(self) -> set[tuple[str, str, int]]:
        async with self._connection() as conn:
            rows = await conn.fetch(
                "SELECT material_code, site_code, kind FROM analytics.alert_episodes WHERE active"
            )
        return {(r[0], r[1], int(r[2])) for r in rows}

    async def transition(self, alert_id: str, state: int, actor: str, comment: str) -> AlertRecord:
        async with self._connection() as conn, conn.transaction():
            changed = await conn.fetchval(
                "UPDATE analytics.alerts SET state = $2 WHERE alert_id = $1 AND state = ANY($3::SMALLINT[]) "
                "RETURNING alert_id",
                alert_id,
                state,
                list(_ALLOWED_FROM[state]),
            )
            if changed is not None:
                await self._audit(conn, alert_id, state, actor, comment)
            current = await self._load(conn, alert_id)
        return _checked_transition(current, alert_id, state, changed is not None)

    async def get(self, alert_id: str) -> AlertRecord | None:
        async with self._connection() as conn:
            return await self._load(conn, alert_id)

    async def search(self, query: AlertQuery) -> tuple[list[AlertRecord], int]:
        cond, params = _conditions(query, _Marks(numbered=True))
        n = len(params)
        async with self._connection() as conn:
            rows = await conn.fetch(
                f"SELECT {_ALERT_COLUMNS} FROM analytics.alerts WHERE {cond} "
                f"ORDER BY raised_at DESC, alert_id DESC LIMIT ${n + 1} OFFSET ${n + 2}",
                *params,
                query.limit,
                query.offset,
            )
            total = await conn.fetchval(f"SELECT count(*) FROM analytics.alerts WHERE {cond}", *params)
            history = await self._history(conn, [r[0] for r in rows])
        return [_record(tuple(r), history.get(r[0], [])) for r in rows], int(total)

    async def pending(self, limit: int) -> list[Notification]:
        async with self._connection() as conn:
            rows = await conn.fetch(
                "SELECT event_id, alert_id FROM analytics.alert_events WHERE published_at IS NULL "
                "ORDER BY id LIMIT $1",
                limit,
            )
            out = []
            for event_id, alert_id in rows:
                alert = await self._load(conn, alert_id)
                if alert is not None:
                    out.append(Notification(event_id, alert))
        return out

    async def mark_published(self, event_ids: Sequence[str]) -> None:
        async with self._connection() as conn:
            await conn.execute(
                "UPDATE analytics.alert_events SET published_at = now() WHERE event_id = ANY($1::TEXT[])",
                list(event_ids),
            )

    async def keep_forecasts(self, event_id: str, body: bytes) -> None:
        async with self._connection() as conn:
            await conn.execute(
                "INSERT INTO analytics.forecast_journal (event_id, body) VALUES ($1, $2) "
                "ON CONFLICT (event_id) DO NOTHING",
                event_id,
                body,
            )

    async def kept_forecasts(self, page_size: int = 200) -> AsyncIterator[bytes]:
        after = 0
        while True:
            async with self._connection() as conn:
                rows = await conn.fetch(
                    "SELECT position, body FROM analytics.forecast_journal WHERE position > $1 "
                    "ORDER BY position LIMIT $2",
                    after,
                    page_size,
                )
            for position, body in rows:
                after = position
                yield bytes(body)
            if len(rows) < page_size:
                return

    async def kept_forecast_ids(self) -> set[str]:
        async with self._connection() as conn:
            return {r[0] for r in await conn.fetch("SELECT event_id FROM analytics.forecast_journal")}

    async def forget_kept_forecasts(self, event_ids: Sequence[str]) -> int:
        if not event_ids:
            return 0
        async with self._connection() as conn:
            status = await conn.execute(
                "DELETE FROM analytics.forecast_journal WHERE event_id = ANY($1::TEXT[])", list(event_ids)
            )
        return int(status.split()[-1])  # "DELETE <n>"

    async def check(self) -> bool:
        try:
            async with self._connection() as conn:
                return await conn.fetchval("SELECT 1") == 1
        except Exception:
            return False

    async def close(self) -> None:
        await self._pool.close()  # type: ignore[attr-defined]


def _checked_transition(current: AlertRecord | None, alert_id: str, state: int, changed: bool) -> AlertRecord:
    if current is None:
        raise NotFound(f"alert {alert_id!r} does not exist", resource_type="alert", resource_name=alert_id)
    if not changed and current.state != state:
        raise FailedPrecondition(
            f"alert {alert_id} is {_STATE_NAMES[current.state]}; it cannot become {_STATE_NAMES[state]}",
            reason="ALERT_STATE",
            metadata={"alert_id": alert_id, "state": _STATE_NAMES[current.state]},
        )
    return current


_STATE_NAMES = {OPEN: "open", ACKNOWLEDGED: "acknowledged", RESOLVED: "resolved"}


# -- DuckDB (embedded) ---------------------------------------------------------------------------------

_DUCK_DDL = (
    "CREATE SCHEMA IF NOT EXISTS analytics",
    "CREATE TABLE IF NOT EXISTS analytics.alerts (alert_id VARCHAR PRIMARY KEY, kind SMALLINT, material_code "
    "VARCHAR, site_code VARCHAR, state SMALLINT, message VARCHAR, stock_position DOUBLE, "
    "reorder_point DOUBLE, "
    "days_of_cover DOUBLE, lead_time_days DOUBLE, raised_at TIMESTAMPTZ, data_watermark VARCHAR, "
    "family VARCHAR, client VARCHAR, region VARCHAR)",
    "CREATE TABLE IF NOT EXISTS analytics.alert_episodes (material_code VARCHAR, site_code VARCHAR, "
    "kind SMALLINT, "
    "active BOOLEAN, alert_id VARCHAR, changed_seq BIGINT, changed_version BIGINT, "
    "PRIMARY KEY (material_code, site_code, kind))",
    "CREATE SEQUENCE IF NOT EXISTS analytics.alert_event_ids",
    "CREATE TABLE IF NOT EXISTS analytics.alert_events (id BIGINT PRIMARY KEY DEFAULT "
    "nextval('analytics.alert_event_ids'), event_id VARCHAR UNIQUE, alert_id VARCHAR, state SMALLINT, "
    "actor VARCHAR, changed_at TIMESTAMPTZ, comment VARCHAR, published_at TIMESTAMPTZ)",
    "CREATE SEQUENCE IF NOT EXISTS analytics.forecast_journal_positions",
    "CREATE TABLE IF NOT EXISTS analytics.forecast_journal (position BIGINT PRIMARY KEY DEFAULT "
    "nextval('analytics.forecast_journal_positions'), event_id VARCHAR NOT NULL UNIQUE, "
    "kept_at TIMESTAMPTZ NOT NULL DEFAULT now(), body BLOB NOT NULL)",
)


class DuckAlertStore:
    """The embedded adapter: a DuckDB file used from one thread."""

    def __init__(self, path: str):
        if path != ":memory:":
            Path(path).parent.mkdir(parents=True, exist_ok=True)
        self._path = path
        self._executor = concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="analytics-alerts")
        self._con: duckdb.DuckDBPyConnection | None = None

    async def _run(self, fn, *args):  # type: ignore[no-untyped-def]
        return await asyncio.get_running_loop().run_in_executor(self._executor, fn, *args)

    def _conn(self) -> duckdb.DuckDBPyConnection:
        if self._con is None:
            self._con = duckdb.connect(self._path)
            self._con.execute("SET TimeZone = 'UTC'")
        return self._con

    def _tx(self, fn, *args):  # type: ignore[no-untyped-def]
        con = self._conn()
        con.execute("BEGIN")
        try:
            result = fn(con, *args)
        except BaseException:
            con.execute("ROLLBACK")
            raise
        con.execute("COMMIT")
        return result

    async def migrate(self) -> None:
        def run(con: duckdb.DuckDBPyConnection) -> None:
            for statement in _DUCK_DDL:
                con.execute(statement)

        await self._run(self._tx, run)

    @staticmethod
    def _load(con: duckdb.DuckDBPyConnection, alert_id: str) -> AlertRecord | None:
        row = one(
            con.execute(f"SELECT {_ALERT_COLUMNS} FROM analytics.alerts WHERE alert_id = ?", [alert_id])
        )
        if row is None:
            return None
        events = con.execute(
            "SELECT state, actor, changed_at, comment FROM analytics.alert_events WHERE alert_id = ? "
            "ORDER BY id",
            [alert_id],
        ).fetchall()
        return _record(row, [_event(e) for e in events])

    @staticmethod
    def _audit(con: duckdb.DuckDBPyConnection, alert_id: str, state: int, actor: str, comment: str) -> None:
        con.execute(
            "INSERT INTO analytics.alert_events (event_id, alert_id, state, actor, changed_at, comment) "
            "VALUES (?, ?, ?, ?, ?, ?)",
            [_new_id(), alert_id, state, actor, _now(), comment],
        )

    async def raise_alert(self, candidate: AlertCandidate, version: tuple[int, int]) -> AlertRecord | None:
        def run(con: duckdb.DuckDBPyConnection) -> AlertRecord | None:
            c = candidate
            row = one(
                con.execute(
                    "SELECT active, changed_seq, changed_version FROM analytics.alert_episodes "
                    "WHERE material_code = ? AND site_code = ? AND kind = ?",
                    [c.material, c.site, c.kind],
                )
            )
            if row is not None and (row[0] or (int(row[1]), int(row[2])) >= version):
                return None
            alert_id = _new_id()
            con.execute(
                "INSERT OR REPLACE INTO analytics.alert_episodes VALUES (?, ?, ?, TRUE, ?, ?, ?)",
                [c.material, c.site, c.kind, alert_id, version[0], version[1]],
            )
            con.execute(
                f"INSERT INTO analytics.alerts ({_ALERT_COLUMNS}) VALUES ({', '.join('?' * 15)})",
                [
                    alert_id,
                    c.kind,
                    c.material,
                    c.site,
                    OPEN,
                    c.message,
                    c.stock_position,
                    c.reorder_point,
                    c.days_of_cover,
                    c.lead_time_days,
                    _now(),
                    c.data_watermark,
                    c.family,
                    c.client,
                    c.region,
                ],
            )
            self._audit(con, alert_id, OPEN, SYSTEM_ACTOR, "raised")
            return self._load(con, alert_id)

        return await self._run(self._tx, run)

    async def clear(
        self, material: str, site: str, kind: int, version: tuple[int, int]
    ) -> AlertRecord | None:
        def run(con: duckdb.DuckDBPyConnection) -> AlertRecord | None:
            row = one(
                con.execute(
                    "SELECT active, changed_seq, changed_version, alert_id FROM analytics.alert_episodes "
                    "WHERE material_code = ? AND site_code = ? AND kind = ?",
                    [material, site, kind],
                )
            )
            if row is None or not row[0] or (int(row[1]), int(row[2])) >= version:
                return None
            alert_id = str(row[3])
            con.execute(
                "UPDATE analytics.alert_episodes SET active = FALSE, changed_seq = ?, changed_version = ? "
                "WHERE material_code = ? AND site_code = ? AND kind = ?",
                [version[0], version[1], material, site, kind],
            )
            state = one(con.execute("SELECT state FROM analytics.alerts WHERE alert_id = ?", [alert_id]))
            if state is None or int(state[0]) == RESOLVED:
                return None
            con.execute("UPDATE analytics.alerts SET state = ? WHERE alert_id = ?", [RESOLVED, alert_id])
            self._audit(con, alert_id, RESOLVED, SYSTEM_ACTOR, "condition cleared")
            return self._load(con, alert_id)

        return await self._run(self._tx, run)

    async def active_keys(self) -> set[tuple[str, str, int]]:
        def run(con: duckdb.DuckDBPyConnection) -> set[tuple[str, str, int]]:
            rows = con.execute(
                "SELECT material_code, site_code, kind FROM analytics.alert_episodes WHERE active"
            ).fetchall()
            return {(r[0], r[1], int(r[2])) for r in rows}

        return await self._run(self._tx, run)

    async def transition(self, alert_id: str, state: int, actor: str, comment: str) -> AlertRecord:
        def run(con: duckdb.DuckDBPyConnection) -> tuple[AlertRecord | None, bool]:
            row = one(con.execute("SELECT state FROM analytics.alerts WHERE alert_id = ?", [alert_id]))
            changed = row is not None and int(row[0]) in _ALLOWED_FROM[state]
            if changed:
                con.execute("UPDATE analytics.alerts SET state = ? WHERE alert_id = ?", [state, alert_id])
                self._audit(con, alert_id, state, actor, comment)
            return self._load(con, alert_id), changed

        current, changed = await self._run(self._tx, run)
        return _checked_transition(current, alert_id, state, changed)

    async def get(self, alert_id: str) -> AlertRecord | None:
        return await self._run(self._tx, self._load, alert_id)

    async def search(self, query: AlertQuery) -> tuple[list[AlertRecord], int]:
        def run(con: duckdb.DuckDBPyConnection) -> tuple[list[AlertRecord], int]:
            cond, params = _conditions(query, _Marks(numbered=False))
            ids = [
                r[0]
                for r in con.execute(
                    f"SELECT alert_id FROM analytics.alerts WHERE {cond} "
                    "ORDER BY raised_at DESC, alert_id DESC "
                    "LIMIT ? OFFSET ?",
                    [*params, query.limit, query.offset],
                ).fetchall()
            ]
            total = one(con.execute(f"SELECT count(*) FROM analytics.alerts WHERE {cond}", params))
            alerts = [a for a in (self._load(con, i) for i in ids) if a is not None]
            return alerts, int(total[0]) if total else 0

        return await self._run(self._tx, run)

    async def pending(self, limit: int) -> list[Notification]:
        def run(con: duckdb.DuckDBPyConnection) -> list[Notification]:
            rows = con.execute(
                "SELECT event_id, alert_id FROM analytics.alert_events WHERE published_at IS NULL "
                "ORDER BY id LIMIT ?",
                [limit],
            ).fetchall()
            out = []
            for event_id, alert_id in rows:
                alert = self._load(con, alert_id)
                if alert is not None:
                    out.append(Notification(event_id, alert))
            return out

        return await self._run(self._tx, run)

    async def mark_published(self, event_ids: Sequence[str]) -> None:
        def run(con: duckdb.DuckDBPyConnection) -> None:
            marks = ", ".join("?" for _ in event_ids)
            con.execute(
                f"UPDATE analytics.alert_events SET published_at = now() WHERE event_id IN ({marks})",
                list(event_ids),
            )

        if event_ids:
            await self._run(self._tx, run)

    async def keep_forecasts(self, event_id: str, body: bytes) -> None:
        def run(con: duckdb.DuckDBPyConnection) -> None:
            con.execute(
                "INSERT INTO analytics.forecast_journal (event_id, body) VALUES (?, ?) "
                "ON CONFLICT (event_id) DO NOTHING",
                [event_id, body],
            )

        await self._run(self._tx, run)

    async def kept_forecasts(self, page_size: int = 200) -> AsyncIterator[bytes]:
        def page(after: int) -> list[tuple[int, bytes]]:
            return (
                self._conn()
                .execute(
                    "SELECT position, body FROM analytics.forecast_journal WHERE position > ? "
                    "ORDER BY position LIMIT ?",
                    [after, page_size],
                )
                .fetchall()
            )

        after = 0
        while True:
            rows = await self._run(page, after)
            for position, body in rows:
                after = position
                yield bytes(body)
            if len(rows) < page_size:
                return

    async def kept_forecast_ids(self) -> set[str]:
        def run() -> set[str]:
            rows = self._conn().execute("SELECT event_id FROM analytics.forecast_journal").fetchall()
            return {str(r[0]) for r in rows}

        return await self._run(run)

    async def forget_kept_forecasts(self, event_ids: Sequence[str]) -> int:
        def run(con: duckdb.DuckDBPyConnection) -> int:
            return int(
                one(
                    con.execute(
                        "DELETE FROM analytics.forecast_journal "
                        "WHERE event_id IN (SELECT unnest(?::VARCHAR[]))",
                        [list(event_ids)],
                    )
                )[0]
            )

        return await self._run(self._tx, run) if event_ids else 0

    async def check(self) -> bool:
        try:
            await self._run(lambda: one(self._conn().execute("SELECT 1")))
            return True
        except Exception:
            return False

    async def close(self) -> None:
        def run() -> None:
            if self._con is not None:
                self._con.close()
                self._con = None

        await self._run(run)
        self._executor.shutdown(wait=True)


async def open_alert_store(database_url: str, duckdb_path: str) -> AlertStore:
    """PostgreSQL when ``database_url`` says so, else the embedded DuckDB store at ``duckdb_path``."""
    scheme = urlsplit(database_url).scheme.lower()
    store: AlertStore
    if scheme in ("postgresql", "postgres"):
        store = await PostgresAlertStore.connect(database_url)
    else:
        store = DuckAlertStore(duckdb_path)
    await store.migrate()
    return store
