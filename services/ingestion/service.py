"""Ingestion use cases, transport-agnostic: batches, uploads, export, quarantine.

The gRPC servicer converts, calls one method here and returns the result. Requests and answers
are the contract's messages (the contract is the domain vocabulary here); conversion of records
to validated, normalised rows lives in `preparation`.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import hashlib
import json
import logging
import uuid
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator, Sequence
from dataclasses import dataclass
from itertools import islice
from pathlib import Path
from typing import TypeVar

import asyncpg
from google.protobuf import timestamp_pb2
from novacorrente.events.v1 import events_pb2
from novacorrente.ingestion.v1 import ingestion_pb2 as pb
from novacorrente.ingestion.v1 import records_pb2

from services.ingestion.formats import Outcome
from services.ingestion.preparation import Prepared, Rejected, prepare_records
from services.ingestion.reading import ChunkReader, ReadingPool, open_in_thread
from services.ingestion.store import (
    ClaimState,
    CommitOutcome,
    IngestionStore,
    OutboxMessage,
    QuarantineEntry,
    VerdictKind,
)
from services.ingestion.uploads import read_file
from services.ingestion.wire import length_delimited, varint
from services.kit.errors import (
    Aborted,
    FailedPrecondition,
    FieldViolation,
    InvalidArgument,
    ResourceExhausted,
    Unavailable,
)

__all__ = ["BATCH_COMMITTED", "IngestionUseCases", "Limits"]

log = logging.getLogger(__name__)

BATCH_COMMITTED = "ingestion.batch.committed"
T = TypeVar("T")


@dataclass(frozen=True)
class Limits:
    """Enforced sizes and lifetimes (see IngestionSettings for their meaning)."""

    max_batch_records: int = 10_000
    max_upload_bytes: int = 2_000_000_000
    upload_commit_records: int = 5_000
    process_read_min_bytes: int = 8_000_000
    idempotency_ttl_seconds: float = 7 * 24 * 3600
    idempotency_lease_seconds: float = 120
    export_page_size: int = 5_000


def _database_down(exc: BaseException) -> bool:
    return isinstance(
        exc,
        OSError
        | ConnectionError
        | asyncpg.PostgresConnectionError
        | asyncpg.InterfaceError
        | asyncpg.CannotConnectNowError
        | asyncpg.AdminShutdownError,
    )


def _hash(*parts: bytes) -> str:
    h = hashlib.sha256()
    for part in parts:
        h.update(part)
    return h.hexdigest()


def watermark_text(seq: int) -> str:
    return f"seq:{seq}"


class IngestionUseCases:
    def __init__(
        self,
        store: IngestionStore,
        limits: Limits,
        executor: concurrent.futures.Executor,
        on_commit: Callable[[], None] = lambda: None,
        reading: ReadingPool | None = None,
    ) -> None:
        self._store = store
        self._limits = limits
        self._executor = executor
        self._reading = reading  # worker processes for big uploads; None reads every file in threads
        self._on_commit = on_commit  # wakes the outbox relay

    # -- database guard ------------------------------------------------------------------------

    async def _guard(self, op: Awaitable[T]) -> T:
        """A database outage is UNAVAILABLE with a retry delay, never INTERNAL."""
        try:
            return await op
        except Exception as exc:
            if _database_down(exc):
                log.warning("system of record unavailable: %s", exc)
                raise Unavailable(
                    "system of record unavailable, retry later", retry_after_seconds=2.0
                ) from exc
            raise

    @contextlib.asynccontextmanager
    async def _idempotent(self, caller: str, key: str, request_hash: str) -> AsyncIterator[bytes | None]:
        """Yields None when the caller owns the key (and must commit), or the stored first answer."""
        if not key:
            raise InvalidArgument([FieldViolation("idempotency_key", "required")])
        claim = await self._guard(
            self._store.claim(
                caller,
                key,
                request_hash,
                ttl_seconds=self._limits.idempotency_ttl_seconds,
                lease_seconds=self._limits.idempotency_lease_seconds,
            )
        )
        if claim.state is ClaimState.CONFLICT:
            raise FailedPrecondition(
                f"idempotency key {key!r} was already used with a different payload",
                reason="IDEMPOTENCY_KEY_REUSED",
            )
        if claim.state is ClaimState.IN_PROGRESS:
            raise Aborted(f"a call with idempotency key {key!r} is still running; retry later")
        if claim.state is ClaimState.REPLAY:
            yield claim.response
            return
        try:
            yield None
        except BaseException:
            with contextlib.suppress(Exception):
                await self._store.release(caller, key)
            raise

    # -- batches -------------------------------------------------------------------------------

    async def submit_batch(self, caller: str, request: pb.SubmitBatchRequest) -> pb.SubmitBatchResponse:
        if len(request.records) > self._limits.max_batch_records:
            raise ResourceExhausted(
                f"batch has {len(request.records)} records; the maximum is {self._limits.max_batch_records}",
                retry_after_seconds=None,
            )
        request_hash = _hash(request.SerializeToString(deterministic=True))
        async with self._idempotent(caller, request.idempotency_key, request_hash) as stored:
            if stored is not None:
                response = pb.SubmitBatchResponse.FromString(stored)
                response.replayed = True
                return response
            prepared = prepare_records(request.records, base_path="records")
            return await self._commit(
                prepared,
                origin=f"batch:{request.idempotency_key}",
                all_or_nothing=request.all_or_nothing,
                idempotency=(caller, request.idempotency_key),
            )

    async def replay_quarantine(
        self, caller: str, request: pb.ReplayQuarantineRequest
    ) -> pb.SubmitBatchResponse:
        """Re-submit quarantined records, as they are or corrected. Verdict indexes follow `ids` order
        (then the corrected ids not listed in `ids`). An entry that passes leaves the quarantine in the
        same transaction as its rows; one rejected again stays, with its first reasons."""
        ids = list(dict.fromkeys([*request.ids, *request.corrections.keys()]))
        # Each id is named where the caller wrote it: its first place in `ids`, else its correction.
        listed = {text: f"ids[{i}]" for i, text in reversed(list(enumerate(request.ids)))}
        fields = [listed.get(text) or f"corrections[{json.dumps(text)}]" for text in ids]
        violations = []
        numbers: list[int] = []
        for text, field in zip(ids, fields, strict=True):
            if not text.isdigit():
                violations.append(FieldViolation(field, f"{text!r} is not a quarantine entry id"))
            else:
                numbers.append(int(text))
        if not ids:
            violations.append(FieldViolation("ids", "name at least one quarantine entry"))
        if violations:
            raise InvalidArgument(violations)
        request_hash = _hash(request.SerializeToString(deterministic=True))
        async with self._idempotent(caller, request.idempotency_key, request_hash) as stored:
            if stored is not None:
                response = pb.SubmitBatchResponse.FromString(stored)
                response.replayed = True
                return response
            entries = await self._guard(self._store.quarantined(numbers))
            records = []
            for text, field, number in zip(ids, fields, numbers, strict=True):
                if number not in entries:
                    # A correction too: it replaces a quarantined line, and there is none to replace.
                    violations.append(
                        FieldViolation(field, "no such entry in quarantine (or already replayed)")
                    )
                elif text in request.corrections:
                    records.append(request.corrections[text])
                elif (stored := entries[number].record) is None:
                    violations.append(FieldViolation(field, "the line could not be read: send a correction"))
                else:
                    records.append(records_pb2.Record.FromString(stored))
            if violations:
                raise InvalidArgument(violations)
            prepared = prepare_records(records, base_path="records")
            rejected = {r.index for r in prepared.rejected}
            passed = [numbers[i] for i in range(len(numbers)) if i not in rejected]
            return await self._commit(
                prepared,
                origin=f"replay:{request.idempotency_key}",
                all_or_nothing=False,
                idempotency=(caller, request.idempotency_key),
                replayed=passed,
                quarantine_rejected=False,
            )

    async def _commit(
        self,
        prepared: Prepared,
        *,
        origin: str,
        all_or_nothing: bool,
        idempotency: tuple[str, str] | None,
        replayed: Sequence[int] = (),
        quarantine_rejected: bool = True,
        accepted_verdicts: bool = True,
    ) -> pb.SubmitBatchResponse:
        if all_or_nothing and prepared.rejected:
            raise InvalidArgument(
                [
                    FieldViolation(v.field, f"{v.reason}: {v.description}")
                    for r in prepared.rejected
                    for v in r.violations
                ],
                "batch rejected as a whole (all_or_nothing): nothing was written",
            )
        quarantine = [
            QuarantineEntry(
                origin=f"{origin}#{r.index}",
                record=r.record,
                violations=json.dumps([v._asdict() for v in r.violations], ensure_ascii=False),
                raw=r.raw,
            )
            for r in prepared.rejected
            if quarantine_rejected
        ]

        answers: list[pb.SubmitBatchResponse] = []

        def finish(outcome: CommitOutcome) -> tuple[list[OutboxMessage], bytes]:
            answers.append(_response(outcome, prepared, accepted_verdicts=accepted_verdicts))
            messages = [_batch_committed(outcome)] if outcome.written else []
            return messages, answers[-1].SerializeToString()

        outcome = await self._guard(
            self._store.commit(
                prepared.records, quarantine, idempotency=idempotency, finish=finish, replayed=replayed
            )
        )
        if outcome.written:
            self._on_commit()
        return answers[-1]

    # -- uploads -------------------------------------------------------------------------------

    async def upload(self, caller: str, header: pb.UploadHeader, path: Path) -> pb.UploadFileResponse:
        """Reads a spooled upload in chunks of records, committing each chunk as a batch whose
        idempotency key derives from the upload's: a retried upload replays chunk by chunk and
        writes nothing twice."""
        if not header.idempotency_key:
            raise InvalidArgument([FieldViolation("header.idempotency_key", "required")])
        # The file's hash (in the chunks' request hashes) is computed while the reading starts.
        hashing = asyncio.get_running_loop().run_in_executor(self._executor, _file_hash, path)
        try:
            file_size = (await self._run(path.stat)).st_size
            reader = await self._open_reader(header, path, file_size)
        except BaseException:
            hashing.cancel()
            raise
        # What the bytes are read as belongs to the request as much as the bytes do: the same file sent
        # again under the same key as another record type or series is a different request, not a retry.
        reading_options = _reading_options(header)
        try:
            file_hash = await hashing
            answer = pb.UploadFileResponse(format=reader.format)
            chunk_no = 0
            while (prepared := await reader.next()) is not None:
                chunk_no += 1
                key = f"{header.idempotency_key}#{chunk_no}"
                chunk_hash = _hash(file_hash.encode(), reading_options, str(chunk_no).encode())
                async with self._idempotent(caller, key, chunk_hash) as stored:
                    if stored is not None:
                        response = pb.SubmitBatchResponse.FromString(stored)
                        answer.replayed = True
                    else:
                        # The upload's answer keeps the counts and the exceptions only, so the chunk's
                        # stored answer (what a retried upload replays) leaves accepted verdicts out.
                        response = await self._commit(
                            prepared,
                            origin=f"upload:{header.filename}",
                            all_or_nothing=False,
                            idempotency=(caller, key),
                            accepted_verdicts=False,
                        )
                _accumulate(answer, response)
        finally:
            reader.close()
        answer.data_watermark = watermark_text(await self._guard(self._store.watermark()))
        return answer

    async def _open_reader(self, header: pb.UploadHeader, path: Path, file_size: int) -> ChunkReader:
        if header.all_or_nothing:
            # Validate everything first (a second pass over the spooled file) so a bad line
            # anywhere rejects the file before any chunk commits.
            bad = await self._run(lambda: _first_rejections(read_file(header, path).records, 100))
            if bad:
                raise InvalidArgument(
                    [
                        # prepare_records already names the line: v.field is "line[N].<field>".
                        FieldViolation(v.field, f"{v.reason}: {v.description}")
                        for r in bad
                        for v in r.violations
                    ],
                    "file rejected as a whole (all_or_nothing): nothing was written",
                )
        size = self._limits.upload_commit_records
        if self._reading is not None and file_size >= self._limits.process_read_min_bytes:
            return await self._reading.open(header, path, size)
        return await self._run(lambda: open_in_thread(self._executor, header, path, size))

    async def _run(self, fn: Callable[[], T]) -> T:
        return await asyncio.get_running_loop().run_in_executor(self._executor, fn)

    # -- export, watermark, quarantine ---------------------------------------------------------

    async def export(self, since: int, page_size: int) -> AsyncIterator[pb.ExportRecordsResponse]:
        if since < 0:
            raise InvalidArgument([FieldViolation("since_sequence", "must be >= 0")])
        size = page_size or self._limits.export_page_size
        if size < 0 or size > 50_000:
            raise InvalidArgument([FieldViolation("page_size", "must be between 0 and 50000")])
        until = await self._guard(self._store.watermark())
        cursor = since
        while cursor < until:
            rows = await self._guard(self._store.export(cursor, until, size))
            if not rows:
                break
            page = pb.ExportRecordsResponse(last_sequence=rows[-1].sequence, watermark=until)
            for row in rows:
                committed = page.records.add(
                    sequence=row.sequence, batch_id=row.batch_id, supersedes=row.supersedes
                )
                committed.record.MergeFromString(row.payload)
                committed.committed_at.FromDatetime(row.committed_at)
            cursor = rows[-1].sequence
            yield page

    async def watermark(self) -> pb.GetWatermarkResponse:
        seq = await self._guard(self._store.watermark())
        return pb.GetWatermarkResponse(sequence=seq, data_watermark=watermark_text(seq))

    async def list_quarantine(self, page_size: int, page_token: str) -> pb.ListQuarantineResponse:
        size = page_size or 100
        if not 0 < size <= 1000:
            raise InvalidArgument([FieldViolation("page_size", "must be between 1 and 1000")])
        try:
            after = int(page_token or 0)
        except ValueError:
            raise InvalidArgument([FieldViolation("page_token", "not a token from this API")]) from None
        rows = await self._guard(self._store.quarantine(after, size + 1))
        answer = pb.ListQuarantineResponse()
        for entry_id, entry, at in rows[:size]:
            item = answer.records.add(id=str(entry_id), origin=entry.origin, raw=entry.raw)
            if entry.record:
                item.record.MergeFromString(entry.record)
            for v in json.loads(entry.violations):
                item.violations.add(**v)
            item.quarantined_at.FromDatetime(at)
        if len(rows) > size:
            answer.next_page_token = str(rows[size - 1][0])
        return answer


def _file_hash(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def _reading_options(header: pb.UploadHeader) -> bytes:
    """The header fields that decide what a file's lines become: all but the key and the size (progress
    only). The file name stays: it can pick the format, a PTAX file's currency or an Open-Meteo city."""
    options = pb.UploadHeader()
    options.CopyFrom(header)
    options.ClearField("idempotency_key")
    options.ClearField("size_bytes")
    return options.SerializeToString(deterministic=True)


def _first_rejections(records: Iterator[Outcome], limit: int) -> list[Rejected]:
    bad: list[Rejected] = []
    for batch in iter(lambda: list(islice(records, 5_000)), []):
        bad.extend(prepare_records(batch, base_path="line", from_file=True).rejected)
        if len(bad) >= limit:
            break
    return bad[:limit]


_COUNT_NAMES: dict[int, str] = {
    pb.VERDICT_ACCEPTED: "accepted",
    pb.VERDICT_DUPLICATE: "duplicate",
    pb.VERDICT_SUPERSEDED: "superseded",
    pb.VERDICT_REJECTED: "rejected",
    pb.VERDICT_SKIPPED: "skipped",
}


def _response(
    outcome: CommitOutcome, prepared: Prepared, *, accepted_verdicts: bool = True
) -> pb.SubmitBatchResponse:
    """The batch's answer; without `accepted_verdicts`, accepted records are counted but not listed."""
    response = pb.SubmitBatchResponse(
        batch_id=outcome.batch_id if outcome.written else "", data_watermark=watermark_text(outcome.watermark)
    )
    verdict = pb.RecordVerdict
    decisions = outcome.decisions
    # A file line can hold several records, so verdicts are ordered by (index, arrival), not keyed by
    # index; arrival numbers are unique, so sorting the tuples never compares two messages.
    verdicts: list[tuple[int, int, pb.RecordVerdict]] = [
        # VerdictKind's values are the wire enum's; an IntEnum is an int to protobuf.
        (d.index, n, verdict(index=d.index, verdict=d.verdict, natural_key=d.record_key, sequence=d.sequence))  # type: ignore[arg-type]
        for n, d in enumerate(decisions)
        if accepted_verdicts or d.verdict is not VerdictKind.ACCEPTED
    ]
    for n, r in enumerate(prepared.rejected, start=len(decisions)):
        verdicts.append(
            (
                r.index,
                n,
                verdict(
                    index=r.index,
                    verdict=pb.VERDICT_REJECTED,
                    natural_key=r.natural_key,
                    violations=[
                        pb.Violation(field=v.field, reason=v.reason, description=v.description)
                        for v in r.violations
                    ],
                ),
            )
        )
    for n, skipped in enumerate(prepared.skipped, start=len(decisions) + len(prepared.rejected)):
        verdicts.append(
            (
                skipped.line_no,
                n,
                verdict(
                    index=skipped.line_no,
                    verdict=pb.VERDICT_SKIPPED,
                    violations=[
                        pb.Violation(
                            field="line", reason=str(skipped.reason), description=skipped.description
                        )
                    ],
                ),
            )
        )
    verdicts.sort()
    response.verdicts.extend([v for _, _, v in verdicts])
    counts = Counter(int(d.verdict) for d in decisions)
    counts[pb.VERDICT_REJECTED] += len(prepared.rejected)
    counts[pb.VERDICT_SKIPPED] += len(prepared.skipped)
    for kind, total in counts.items():
        if total:
            setattr(response.counts, _COUNT_NAMES[kind], total)
    return response


MAX_UPLOAD_EXCEPTIONS = 10_000
"""Verdicts an upload's answer lists (ingestion.proto, UploadFileResponse.exceptions). Sending a large
file again makes every line a duplicate: listed whole, 440,000 such lines would already pass the default
16 MiB message limit, and the answer, committed but unsendable, would fail every retry too."""


def _accumulate(answer: pb.UploadFileResponse, batch: pb.SubmitBatchResponse) -> None:
    if batch.batch_id:
        answer.batch_ids.append(batch.batch_id)
    for name in ("accepted", "duplicate", "superseded", "rejected", "skipped"):
        setattr(answer.counts, name, getattr(answer.counts, name) + getattr(batch.counts, name))
    exceptions = [v for v in batch.verdicts if v.verdict != VerdictKind.ACCEPTED]
    room = max(MAX_UPLOAD_EXCEPTIONS - len(answer.exceptions), 0)
    answer.exceptions.extend(exceptions[:room])
    answer.exceptions_omitted += len(exceptions) - min(room, len(exceptions))


def _batch_committed(outcome: CommitOutcome) -> OutboxMessage:
    """The BatchCommitted event of a commit. Its records are the stored payloads, already serialized:
    the event's bytes are written around them rather than parsing each one into the message to
    serialize it again (the bytes are the same)."""
    head = events_pb2.BatchCommitted(
        event_id=str(uuid.uuid4()),
        batch_id=outcome.batch_id,
        sequence_from=outcome.written[0][0],
        sequence_to=outcome.written[-1][0],
    )
    stamp = timestamp_pb2.Timestamp()
    stamp.FromDatetime(outcome.committed_at)
    stamp_bytes = stamp.SerializeToString()
    # CommittedRecord: sequence = 1, batch_id = 2, record = 3, supersedes = 4, committed_at = 5.
    batch = length_delimited(0x12, outcome.batch_id.encode())
    committed_at = length_delimited(0x2A, stamp_bytes)
    records = [
        length_delimited(
            0x2A,  # BatchCommitted.records = 5
            b"".join(
                (
                    b"\x08" + varint(seq),
                    batch,
                    length_delimited(0x1A, rec.payload),
                    b"\x20\x01" if supersedes else b"",
                    committed_at,
                )
            ),
        )
        for seq, rec, supersedes in outcome.written
    ]
    # Fields 1-4, the records (5), then committed_at (6): the order SerializeToString writes.
    body = head.SerializeToString() + b"".join(records) + length_delimited(0x32, stamp_bytes)
    return OutboxMessage(
        event_id=head.event_id,
        routing_key=BATCH_COMMITTED,
        event_type=head.DESCRIPTOR.full_name,
        body=body,
    )
