"""Reading a spooled upload chunk by chunk, in the thread executor or in a worker process.

Parsing and preparing a big file is Python CPU work. In a thread it shares one core with the event
loop (the GIL), which then waits for it at every database round trip of the commits. A worker
process reads the file on the other core and hands each chunk back as a few flat lists (cheap to
pickle), so the event loop only commits. Small files stay in the thread executor, where starting a
process hop would cost more than it saves.

Either way the following chunks are read while the current one commits (a few chunks of a few MB
at most), and a reader is closed only once no chunk of it is being read. Chunks, and so their
idempotency keys, are the same whichever way a file is read.
"""

from __future__ import annotations

import asyncio
import collections
import concurrent.futures
import contextlib
import gc
import multiprocessing
import os
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from concurrent.futures.process import BrokenProcessPool
from itertools import islice
from pathlib import Path
from typing import Any

from novacorrente.ingestion.v1 import ingestion_pb2 as pb

from services.ingestion.converters import record_payload
from services.ingestion.formats import Outcome, Parsed, Stored
from services.ingestion.preparation import Prepared, prepare_records, record_key
from services.ingestion.store import PreparedRecord
from services.ingestion.uploads import read_file
from services.kit.errors import Unavailable

__all__ = ["ChunkReader", "ReadingPool", "open_in_thread", "tune_collector"]

# Chunks a worker process reads ahead of the commits (a chunk is a few MB): enough to keep it busy while
# a commit waits on the database. Threads share one reader generator, so they read one chunk ahead.
_PROCESS_AHEAD = 3

_Packed = tuple[list[int], list[str], list[str], list[str], list[bytes], list[Any], list[Any]]


def _prepare(records: Iterator[Outcome], size: int) -> Prepared | None:
    chunk = list(islice(records, size))
    return prepare_records(chunk, base_path="line", from_file=True) if chunk else None


class ChunkReader:
    """The prepared chunks of one upload, in order, with up to ``ahead`` following ones read ahead."""

    def __init__(
        self,
        file_format: pb.FileFormat.ValueType,
        fetch: Callable[[], concurrent.futures.Future[Prepared | None]],
        release: Callable[[], None],
        ahead: int = 1,
    ) -> None:
        self.format = file_format
        self._fetch = fetch
        self._release = release
        self._ahead: collections.deque[concurrent.futures.Future[Prepared | None]] = collections.deque(
            fetch() for _ in range(ahead)
        )
        self._ended = False

    async def next(self) -> Prepared | None:
        """The next chunk, or None at the end of the file."""
        if self._ended:
            return None
        prepared = await asyncio.wrap_future(self._ahead.popleft())
        if prepared is None:
            self._ended = True  # the reads already queued behind this one find the end too
        else:
            self._ahead.append(self._fetch())
        return prepared

    def close(self) -> None:
        """Release the reader once the chunks being read ahead are done; never blocks."""
        ahead, self._ahead = self._ahead, collections.deque()
        if not ahead:
            self._release()
        else:
            ahead[-1].add_done_callback(lambda _: self._release())


def open_in_thread(
    executor: concurrent.futures.Executor, header: pb.UploadHeader, path: Path, size: int
) -> ChunkReader:
    parsed = read_file(header, path)  # lazy: opening reads nothing yet
    records = parsed.records
    close: Callable[[], None] = getattr(records, "close", lambda: None)
    return ChunkReader(parsed.format, lambda: executor.submit(_prepare, records, size), close)


# -- the worker process side --------------------------------------------------------------------

_READERS: dict[str, Iterator[Outcome]] = {}


def _start_worker() -> None:
    tune_collector()
    threading.Thread(target=_exit_with_parent, args=(os.getppid(),), daemon=True).start()


def _exit_with_parent(parent: int, every_seconds: float = 1.0) -> None:
    """End this worker once the service that started it is gone. A service killed outright (SIGKILL, the
    OOM killer) never shuts its pool down, and its idle worker, blocked reading the pool's queue, would
    otherwise live on as an orphan."""
    while os.getppid() == parent:
        time.sleep(every_seconds)
    os._exit(0)


def _warm() -> None:
    """Nothing: submitted once so the process has started and imported this module before an upload."""


def tune_collector() -> None:
    """For a process handling records by the thousand (the service, its file reader): what is loaded
    at start lives as long as the process, so it is put out of the collector's way; and a chunk
    allocates some hundred thousand objects, nearly none in reference cycles, so young objects are
    collected less often (each collection walks them all)."""
    gc.freeze()
    gc.set_threshold(20_000, 20, 20)


def _open(token: str, header: bytes, path: str) -> pb.FileFormat.ValueType:
    parsed = read_file(pb.UploadHeader.FromString(header), Path(path), stored_form=True)
    _READERS[token] = parsed.records
    return parsed.format


def _next(token: str, size: int) -> _Packed | None:
    chunk = list(islice(_READERS[token], size))
    if not chunk:
        return None
    # What prepare_records does, written as flat lists of str, bytes and ints (they pickle several
    # times faster than records): valid records here, the rest (rejected, skipped) by prepare_records.
    # Records arrive in stored form where the reader can give it, or parsed (master data).
    index, kind, key, content_hash, payload = [], [], [], [], []  # type: ignore[var-annotated]
    others = []
    for o in chunk:
        if type(o) is Stored:
            index.append(o.line_no)
            kind.append(o.kind)
            key.append(o.record_key)
            content_hash.append(o.content_hash)
            payload.append(o.payload)
        elif type(o) is Parsed:
            index.append(o.line_no)
            kind.append(o.record.record_type)
            key.append(record_key(o.record))
            content_hash.append(o.record.content_hash())
            payload.append(record_payload(o.record))
        else:
            others.append(o)
    rest = prepare_records(others, base_path="line", from_file=True)
    return index, kind, key, content_hash, payload, rest.rejected, rest.skipped


def _close(token: str) -> None:
    records = _READERS.pop(token, None)
    close = getattr(records, "close", None)
    if close is not None:
        close()


def _unpack(packed: _Packed | None) -> Prepared | None:
    if packed is None:
        return None
    index, kind, key, content_hash, payload, rejected, skipped = packed
    records = list(map(PreparedRecord, index, kind, key, content_hash, payload))
    return Prepared(records=records, rejected=rejected, skipped=skipped)


def _reader_died() -> Unavailable:
    return Unavailable("the file reader process stopped; retry the upload", retry_after_seconds=1.0)


class ReadingPool:
    """Worker processes for reading big uploads. A reader keeps state between chunks (masters already
    emitted, line ordinals), so each upload stays on one single-process lane."""

    def __init__(self, processes: int) -> None:
        self._lanes: list[concurrent.futures.ProcessPoolExecutor | None] = [None] * processes
        self._turn = 0

    def _lane(self, n: int) -> concurrent.futures.ProcessPoolExecutor:
        lane = self._lanes[n]
        if lane is None:
            # spawn: a fork of a process running gRPC and asyncio threads is not safe.
            lane = concurrent.futures.ProcessPoolExecutor(
                1, mp_context=multiprocessing.get_context("spawn"), initializer=_start_worker
            )
            self._lanes[n] = lane
        return lane

    def warm(self) -> None:
        """Start the worker processes now rather than at the first big upload."""
        for n in range(len(self._lanes)):
            self._lane(n).submit(_warm)

    async def open(self, header: pb.UploadHeader, path: Path, size: int) -> ChunkReader:
        n = self._turn % len(self._lanes)
        self._turn += 1
        lane = self._lane(n)
        token = uuid.uuid4().hex
        try:
            file_format = await asyncio.wrap_future(
                lane.submit(_open, token, header.SerializeToString(), str(path))
            )
        except BrokenProcessPool as exc:
            self._lanes[n] = None  # a new process next time
            raise _reader_died() from exc
        except BaseException:  # cancelled while opening: the worker may hold the reader already
            with contextlib.suppress(RuntimeError):
                lane.submit(_close, token)
            raise

        def fetch() -> concurrent.futures.Future[Prepared | None]:
            outer: concurrent.futures.Future[Prepared | None] = concurrent.futures.Future()

            def unpack(inner: concurrent.futures.Future[_Packed | None]) -> None:
                try:
                    outer.set_result(_unpack(inner.result()))
                except BrokenProcessPool:
                    self._lanes[n] = None  # a new process next time
                    outer.set_exception(_reader_died())
                except BaseException as exc:
                    outer.set_exception(exc)

            lane.submit(_next, token, size).add_done_callback(unpack)
            return outer

        def release() -> None:
            # Queued behind the lane's earlier tasks: runs once no chunk of this reader is being read.
            # A lane that stopped or was shut down took its readers with it.
            with contextlib.suppress(RuntimeError):
                lane.submit(_close, token)

        return ChunkReader(file_format, fetch, release, ahead=_PROCESS_AHEAD)

    def shutdown(self) -> None:
        for lane in self._lanes:
            if lane is not None:
                lane.shutdown(wait=True, cancel_futures=True)
        self._lanes = [None] * len(self._lanes)
