"""DuckDB behind a bounded executor: thread-local cursors for reads, one writer thread, interruptible queries.

Why this shape: a DuckDB connection must not be used by two threads at once, and serialising every query
behind one lock would make one slow KPI stall every dashboard. ``connection.cursor()`` opens another
connection to the same database instance, so each executor thread gets its own (created once, reused).
DuckDB gives each transaction a snapshot (MVCC), so readers never wait for the writer and always see a
committed state. All writes go through a single writer thread: the read model has one writer (the event
consumer), and a single thread rules out write-write conflicts by construction.

``writes`` counts write jobs as a sequence lock: odd while one runs, even between them. A reader that reads
it even before its transaction's first statement, reads the writer's in-memory state (the read model's
watermarks) after that, and finds ``writes`` unchanged after its last statement knows no write committed in
between: that state describes its snapshot exactly. This holds only while a write job that commits also
updates the in-memory state before it ends; when a write job fails, ``resync`` (if set) reloads that state
from the tables, and if that fails too the lock stays odd, so readers fall back to reading the tables.
Readers rely on the GIL for the order of these reads; a free-threaded build would need a real lock.

The same lock lets a short read skip its transaction: when no write job ran while its statements did, each
statement's own snapshot was the same committed state. ``quiet`` says when that is likely enough to try
(no write job running, none ended in the last ``quiet_seconds``); a read that finds the lock moved runs again
inside a transaction. While writes come back to back (a catch-up), reads take the transaction first and never
run twice.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import logging
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import duckdb

__all__ = ["DuckEngine", "Job", "QueryCancelled", "one"]

log = logging.getLogger(__name__)

T = TypeVar("T")


def one(result: duckdb.DuckDBPyConnection) -> Any:
    """The first row of an executed query, or None. Fetches every row: a partly read result blocks other
    work (register, unregister) on the connection."""
    rows = result.fetchall()
    return rows[0] if rows else None


class QueryCancelled(Exception):
    """The caller went away before or while its query ran."""


class _Running:
    """Shares, between the awaiting task and the worker thread, which cursor runs the job."""

    __slots__ = ("cancelled", "cursor", "lock")

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.cursor: duckdb.DuckDBPyConnection | None = None
        self.cancelled = False

    def bind(self, cursor: duckdb.DuckDBPyConnection) -> None:
        with self.lock:
            if self.cancelled:
                raise QueryCancelled("cancelled before start")
            self.cursor = cursor

    def release(self) -> None:
        with self.lock:
            self.cursor = None

    def cancel(self) -> None:
        with self.lock:
            self.cancelled = True
            if self.cursor is not None:
                self.cursor.interrupt()

    def check(self) -> None:
        """Raise when cancelled; jobs call this between statements (an interrupt between two is lost)."""
        if self.cancelled:
            raise QueryCancelled("cancelled")


class Job:
    """What a job function receives: its cursor and a cancellation check."""

    __slots__ = ("_running", "cursor")

    def __init__(self, cursor: duckdb.DuckDBPyConnection, running: _Running):
        self.cursor = cursor
        self._running = running

    def check(self) -> None:
        self._running.check()


def _consume(future: asyncio.Future[Any]) -> None:
    if not future.cancelled():
        future.exception()


class DuckEngine:
    """One DuckDB database used from a read pool (``read_workers`` threads) and one writer thread."""

    def __init__(
        self,
        path: str,
        *,
        read_workers: int = 4,
        threads: int = 0,
        memory_limit: str = "",
        quiet_seconds: float = 1.0,
    ):
        if path != ":memory:":
            Path(path).parent.mkdir(parents=True, exist_ok=True)
        self.path = path
        self._root = duckdb.connect(path)
        if threads:
            self._root.execute(f"SET threads = {int(threads)}")
        if memory_limit:
            self._root.execute("SET memory_limit = ?", [memory_limit])
        self._local = threading.local()
        self._cursors: list[duckdb.DuckDBPyConnection] = []
        self._cursors_lock = threading.Lock()
        self._readers = concurrent.futures.ThreadPoolExecutor(
            read_workers, thread_name_prefix="analytics-read"
        )
        self._writer = concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="analytics-write")
        self.writes = 0
        """Sequence lock over write jobs (see the module docstring); only the writer thread moves it."""
        self.quiet_seconds = quiet_seconds
        self._last_write_end = time.monotonic()
        self.resync: Callable[[Job], None] | None = None
        """Reloads the writer's in-memory state from the tables after a failed write job."""
        self._closed = False

    def _cursor(self) -> duckdb.DuckDBPyConnection:
        cursor = getattr(self._local, "cursor", None)
        if cursor is None:
            cursor = self._root.cursor()
            self._local.cursor = cursor
            with self._cursors_lock:
                self._cursors.append(cursor)
        return cursor

    def _job(self, running: _Running, fn: Callable[..., T], args: tuple[Any, ...]) -> T:
        cursor = self._cursor()
        running.bind(cursor)
        try:
            return fn(Job(cursor, running), *args)
        except BaseException as exc:
            # A failed job may leave its transaction open; the next job on this thread must start clean.
            with contextlib.suppress(duckdb.Error):
                cursor.execute("ROLLBACK")
            if isinstance(exc, duckdb.InterruptException):
                raise QueryCancelled("interrupted") from exc
            raise
        finally:
            running.release()

    def _write_job(self, running: _Running, fn: Callable[..., T], args: tuple[Any, ...]) -> T:
        self.writes += 1
        try:
            result = self._job(running, fn, args)
        except BaseException:
            if self.resync is not None:
                try:
                    self._job(_Running(), self.resync, ())
                except Exception:
                    # Odd for good: readers read watermarks from the tables from now on.
                    log.exception("reloading the in-memory state after a failed write failed")
                    raise
            self._last_write_end = time.monotonic()
            self.writes += 1
            raise
        self._last_write_end = time.monotonic()
        self.writes += 1
        return result

    def quiet(self, mark: int) -> bool:
        """True when ``mark`` (a reading of ``writes``) shows no write job running and none ended within
        ``quiet_seconds``: a read starting now will most likely not overlap one (module docstring)."""
        return mark % 2 == 0 and time.monotonic() - self._last_write_end >= self.quiet_seconds

    async def _submit(
        self,
        pool: concurrent.futures.Executor,
        fn: Callable[..., T],
        args: tuple[Any, ...],
        interruptible: bool,
    ) -> T:
        if self._closed:
            raise RuntimeError("engine closed")
        running = _Running()
        run = self._write_job if pool is self._writer else self._job
        future = asyncio.get_running_loop().run_in_executor(pool, run, running, fn, args)
        try:
            return await asyncio.shield(future)
        except asyncio.CancelledError:
            if interruptible:
                running.cancel()
                # Nobody awaits the job any more: consume its outcome (QueryCancelled) when it ends.
                future.add_done_callback(_consume)
            else:
                # A write must finish (its transaction commits or rolls back as a whole): wait for it.
                with contextlib.suppress(Exception):
                    await future
            raise

    async def read(self, fn: Callable[..., T], *args: Any) -> T:
        """Run ``fn(job, *args)`` on a read thread; cancelling the awaiting task interrupts the query."""
        return await self._submit(self._readers, fn, args, interruptible=True)

    async def write(self, fn: Callable[..., T], *args: Any) -> T:
        """Run ``fn(job, *args)`` on the writer thread; cancellation waits for the write to end."""
        return await self._submit(self._writer, fn, args, interruptible=False)

    def run_sync(self, fn: Callable[..., T], *args: Any) -> T:
        """Run on the calling thread with its own cursor (start-up, before the loop serves anything); counts
        as a write job for ``writes``."""
        return self._write_job(_Running(), fn, args)

    async def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        loop = asyncio.get_running_loop()
        await loop.run_in_executor(None, self._shutdown)

    def _shutdown(self) -> None:
        self._readers.shutdown(wait=True, cancel_futures=True)
        self._writer.shutdown(wait=True)
        with self._cursors_lock:
            for cursor in self._cursors:
                with contextlib.suppress(duckdb.Error):
                    cursor.close()
            self._cursors.clear()
        with contextlib.suppress(duckdb.Error):
            self._root.execute("CHECKPOINT")
        self._root.close()
