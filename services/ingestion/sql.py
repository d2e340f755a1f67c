"""One small SQL surface over the two system-of-record adapters: asyncpg and DuckDB.

The ingestion logic (verdicts, sequences, outbox, idempotency) is written once against
`SqlSession`; only connection handling and bulk copy differ per adapter. Both engines accept the
same `$n` parameters and the portable SQL in deploy/migrations/.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
from collections.abc import AsyncIterator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol
from urllib.parse import urlparse

import asyncpg

if TYPE_CHECKING:
    import duckdb

__all__ = ["DuckDbDatabase", "PostgresDatabase", "SqlDatabase", "SqlSession", "open_database"]

MIGRATIONS = Path(__file__).resolve().parents[2] / "deploy" / "migrations"


class SqlSession(Protocol):
    """A transaction (or an autocommit session) on the system of record."""

    async def fetch(self, sql: str, *args: Any) -> list[tuple[Any, ...]]: ...
    async def execute(self, sql: str, *args: Any) -> None: ...
    async def copy(self, table: str, columns: Sequence[str], rows: Sequence[tuple[Any, ...]]) -> None: ...


class SqlDatabase(Protocol):
    dialect: str

    def transaction(self) -> contextlib.AbstractAsyncContextManager[SqlSession]: ...
    async def migrate(self) -> None: ...
    async def check(self) -> bool: ...
    async def close(self) -> None: ...


def _migration_files() -> list[Path]:
    return sorted(MIGRATIONS.glob("*.sql"))


class _PgSession:
    def __init__(self, conn: asyncpg.Connection) -> None:
        self._conn = conn

    async def fetch(self, sql: str, *args: Any) -> list[tuple[Any, ...]]:
        return [tuple(r) for r in await self._conn.fetch(sql, *args)]

    async def execute(self, sql: str, *args: Any) -> None:
        await self._conn.execute(sql, *args)

    async def copy(self, table: str, columns: Sequence[str], rows: Sequence[tuple[Any, ...]]) -> None:
        schema, name = table.split(".")
        await self._conn.copy_records_to_table(name, schema_name=schema, columns=list(columns), records=rows)


async def _session_settings(url: str) -> dict[str, str]:
    """Settings of every pooled session (given at connection, so a pool's RESET ALL keeps them).

    Outbox bodies (a committed chunk's event, up to a few MB) are compressed when stored: lz4 does it
    several times faster than the default pglz, where the server has it (PostgreSQL 14+ built with
    lz4). Reading a value does not depend on how it was compressed.
    """
    conn = await asyncpg.connect(url)
    try:
        await conn.execute("SET default_toast_compression = 'lz4'")
        return {"default_toast_compression": "lz4"}
    except asyncpg.PostgresError:
        return {}
    finally:
        await conn.close()


async def _keep_session(conn: asyncpg.Connection) -> None:
    """What a pooled connection needs on release beyond asyncpg's own rollback of an open transaction:
    nothing. Every use is one transaction (``transaction()``), with transaction-scoped locks only and no
    session settings, cursors or LISTEN left behind, so the default reset query (advisory unlock, CLOSE
    ALL, UNLISTEN, RESET ALL) would be one more round trip per transaction for nothing."""


class PostgresDatabase:
    """PostgreSQL through an asyncpg pool (the production system of record)."""

    dialect = "postgresql"

    def __init__(self, pool: asyncpg.Pool) -> None:
        self._pool = pool

    @classmethod
    async def connect(cls, url: str, *, min_size: int = 1, max_size: int = 10) -> PostgresDatabase:
        pool = await asyncpg.create_pool(
            url,
            min_size=min_size,
            max_size=max_size,
            command_timeout=60,
            server_settings=await _session_settings(url),
            reset=_keep_session,
        )
        return cls(pool)

    @contextlib.asynccontextmanager
    async def transaction(self) -> AsyncIterator[SqlSession]:
        # READ COMMITTED whatever the server's default: the store is written for statements that each see
        # what committed before them (a claim reads again the key a concurrent call just inserted).
        async with self._pool.acquire() as conn, conn.transaction(isolation="read_committed"):
            yield _PgSession(conn)

    async def migrate(self) -> None:
        async with self._pool.acquire() as conn, conn.transaction():
            # One migrator at a time across replicas.
            await conn.execute("SELECT pg_advisory_xact_lock(727001)")
            await conn.execute(
                "CREATE TABLE IF NOT EXISTS public.nova_schema_migrations "
                "(version TEXT PRIMARY KEY, applied_at TIMESTAMPTZ NOT NULL DEFAULT now())"
            )
            done = {
                r["version"] for r in await conn.fetch("SELECT version FROM public.nova_schema_migrations")
            }
            for path in _migration_files():
                if path.name not in done:
                    await conn.execute(path.read_text())
                    await conn.execute(
                        "INSERT INTO public.nova_schema_migrations (version) VALUES ($1)", path.name
                    )

    async def check(self) -> bool:
        try:
            async with self._pool.acquire(timeout=2) as conn:
                await conn.fetchval("SELECT 1", timeout=2)
            return True
        except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError, TimeoutError):
            return False

    async def close(self) -> None:
        await self._pool.close()


class _DuckSession:
    def __init__(self, db: DuckDbDatabase) -> None:
        self._db = db

    async def fetch(self, sql: str, *args: Any) -> list[tuple[Any, ...]]:
        return await self._db.run(lambda c: c.execute(sql, list(args)).fetchall())

    async def execute(self, sql: str, *args: Any) -> None:
        await self._db.run(lambda c: c.execute(sql, list(args)))

    async def copy(self, table: str, columns: Sequence[str], rows: Sequence[tuple[Any, ...]]) -> None:
        if not rows:
            return
        # DuckDB's executemany runs row by row; a columnar Arrow scan inserts a batch in one statement.
        import pyarrow as pa  # the embedded profile's only: ~50 MB a PostgreSQL service does not load

        data = pa.table({name: [r[i] for r in rows] for i, name in enumerate(columns)})

        def insert(c: duckdb.DuckDBPyConnection) -> None:
            c.register("nova_copy_rows", data)
            try:
                c.execute(f"INSERT INTO {table} ({', '.join(columns)}) SELECT * FROM nova_copy_rows")
            finally:
                c.unregister("nova_copy_rows")

        await self._db.run(insert)


class DuckDbDatabase:
    """A DuckDB file (the embedded profile). DuckDB calls block, so they run on one dedicated
    thread; an asyncio lock gives one transaction at a time, as DuckDB has a single writer."""

    dialect = "duckdb"

    def __init__(self, path: str) -> None:
        if path != ":memory:":
            Path(path).parent.mkdir(parents=True, exist_ok=True)
        import duckdb  # imported by the embedded profile only (see _DuckSession.copy)

        self._conn = duckdb.connect(path)
        self._executor = concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="duckdb-sor")
        self._lock = asyncio.Lock()
        self._closed = False

    async def run(self, fn: Any) -> Any:
        return await asyncio.get_running_loop().run_in_executor(self._executor, fn, self._conn)

    @contextlib.asynccontextmanager
    async def transaction(self) -> AsyncIterator[SqlSession]:
        async with self._lock:
            await self.run(lambda c: c.execute("BEGIN TRANSACTION"))
            try:
                yield _DuckSession(self)
            except BaseException:
                await self.run(lambda c: c.execute("ROLLBACK"))
                raise
            await self.run(lambda c: c.execute("COMMIT"))

    async def migrate(self) -> None:
        async with self.transaction() as s:
            await s.execute(
                "CREATE TABLE IF NOT EXISTS nova_schema_migrations "
                "(version TEXT PRIMARY KEY, applied_at TIMESTAMPTZ NOT NULL DEFAULT now())"
            )
            done = {r[0] for r in await s.fetch("SELECT version FROM nova_schema_migrations")}
            for path in _migration_files():
                if path.name not in done:
                    sql = path.read_text()
                    await self.run(lambda c, sql=sql: c.execute(sql))
                    await s.execute("INSERT INTO nova_schema_migrations (version) VALUES ($1)", path.name)

    async def check(self) -> bool:
        # An in-process file has no server to lose; a query would only queue behind long commits.
        return not self._closed

    async def close(self) -> None:
        self._closed = True
        await self.run(lambda c: c.close())
        self._executor.shutdown(wait=True)


async def open_database(url: str) -> SqlDatabase:
    """`postgresql://...` (asyncpg) or `duckdb:///path/file.duckdb` / `duckdb:///:memory:`."""
    scheme = urlparse(url).scheme
    if scheme in ("postgresql", "postgres"):
        return await PostgresDatabase.connect(url)
    if scheme == "duckdb":
        # SQLAlchemy's convention: duckdb:///relative/path, duckdb:////absolute/path, duckdb:///:memory:
        path = url.removeprefix("duckdb:///")
        return DuckDbDatabase(path or ":memory:")
    raise ValueError(f"NOVA_DATABASE_URL: unsupported scheme {scheme!r} (use postgresql:// or duckdb:///)")
