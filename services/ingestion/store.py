"""The ingestion system of record: versions, verdicts, sequences, outbox, idempotency, quarantine.

Written once over `SqlSession`, so PostgreSQL and the embedded DuckDB file behave the same.
"""

from __future__ import annotations

import datetime as dt
import enum
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # the reader process imports this module for its records, not the database drivers
    from services.ingestion.sql import SqlDatabase

__all__ = [
    "Claim",
    "ClaimState",
    "CommitOutcome",
    "Decision",
    "ExportRow",
    "IngestionStore",
    "OutboxEntry",
    "OutboxMessage",
    "PreparedRecord",
    "QuarantineEntry",
    "VerdictKind",
]


class VerdictKind(enum.IntEnum):
    # Values match novacorrente.ingestion.v1.Verdict.
    ACCEPTED = 1
    DUPLICATE = 2
    SUPERSEDED = 3
    REJECTED = 4


@dataclass(frozen=True, slots=True)
class PreparedRecord:
    """A valid record ready to commit. `record_key` is "<kind>:<natural key>"."""

    index: int
    kind: str
    record_key: str
    content_hash: str
    payload: bytes


@dataclass(frozen=True, slots=True)
class QuarantineEntry:
    origin: str
    record: bytes | None
    violations: str  # JSON list of {field, reason, description}
    raw: str


@dataclass(frozen=True, slots=True)
class Decision:
    index: int
    verdict: VerdictKind
    record_key: str
    sequence: int = 0


@dataclass(frozen=True, slots=True)
class OutboxMessage:
    event_id: str
    routing_key: str
    event_type: str
    body: bytes


@dataclass
class CommitOutcome:
    batch_id: str
    committed_at: dt.datetime
    decisions: list[Decision]
    # (sequence, record, supersedes) for every record written, in sequence order.
    written: list[tuple[int, PreparedRecord, bool]] = field(default_factory=list)
    watermark: int = 0


class ClaimState(enum.Enum):
    NEW = "new"  # the caller owns the key now
    REPLAY = "replay"  # same key, same payload, finished: `response` holds the first answer
    CONFLICT = "conflict"  # same key, another payload
    IN_PROGRESS = "in_progress"  # the first call is still running


@dataclass(frozen=True)
class Claim:
    state: ClaimState
    response: bytes | None = None


@dataclass(frozen=True, slots=True)
class ExportRow:
    sequence: int
    batch_id: str
    supersedes: bool
    payload: bytes
    committed_at: dt.datetime


@dataclass(frozen=True, slots=True)
class OutboxEntry:
    id: int
    message: OutboxMessage


def _now() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


class IngestionStore:
    def __init__(self, db: SqlDatabase) -> None:
        self.db = db

    # -- idempotency ---------------------------------------------------------------------------

    async def claim(
        self, caller: str, key: str, request_hash: str, *, ttl_seconds: float, lease_seconds: float
    ) -> Claim:
        """Take ownership of (caller, key), or say why not. Expired keys are forgotten; an
        in-progress claim older than the lease is taken over (its owner died)."""
        now = _now()
        async with self.db.transaction() as s:
            # Two rounds at most: a second call with the same new key can insert between this one's
            # read and insert. Its insert then wins, and this one decides on the claim it made (read
            # again: on PostgreSQL each statement of the transaction sees what committed before it).
            for _ in range(2):
                rows = await s.fetch(
                    "SELECT request_hash, state, response, created_at, expires_at "
                    "FROM support.idempotency_keys WHERE caller = $1 AND key = $2",
                    caller,
                    key,
                )
                if rows:
                    stored_hash, state, response, created_at, expires_at = rows[0]
                    expired = _aware(expires_at) <= now
                    stale = state == "in_progress" and _aware(created_at) <= now - dt.timedelta(
                        seconds=lease_seconds
                    )
                    if not expired and not stale:
                        if stored_hash != request_hash:
                            return Claim(ClaimState.CONFLICT)
                        if state == "done":
                            return Claim(ClaimState.REPLAY, bytes(response))
                        return Claim(ClaimState.IN_PROGRESS)
                    await s.execute(
                        "DELETE FROM support.idempotency_keys WHERE caller = $1 AND key = $2", caller, key
                    )
                inserted = await s.fetch(
                    "INSERT INTO support.idempotency_keys "
                    "(caller, key, request_hash, state, created_at, expires_at) "
                    "VALUES ($1, $2, $3, 'in_progress', $4, $5) "
                    "ON CONFLICT (caller, key) DO NOTHING RETURNING 1",
                    caller,
                    key,
                    request_hash,
                    now,
                    now + dt.timedelta(seconds=ttl_seconds),
                )
                if inserted:
                    return Claim(ClaimState.NEW)
        # Claimed by another call twice over (a takeover raced too): that call is running.
        return Claim(ClaimState.IN_PROGRESS)

    async def forget_expired_keys(self, now: dt.datetime | None = None) -> int:
        """Delete the idempotency keys past their expiry; returns how many. A claim of an expired key
        forgets it too, but keys that are never used again would otherwise stay for good."""
        async with self.db.transaction() as s:
            rows = await s.fetch(
                "DELETE FROM support.idempotency_keys WHERE expires_at <= $1 RETURNING key", now or _now()
            )
        return len(rows)

    async def release(self, caller: str, key: str) -> None:
        """Forget an in-progress claim whose call failed, so that a retry can run."""
        async with self.db.transaction() as s:
            await s.execute(
                "DELETE FROM support.idempotency_keys "
                "WHERE caller = $1 AND key = $2 AND state = 'in_progress'",
                caller,
                key,
            )

    # -- commit --------------------------------------------------------------------------------

    async def commit(
        self,
        records: Sequence[PreparedRecord],
        quarantine: Sequence[QuarantineEntry],
        *,
        idempotency: tuple[str, str] | None,
        finish: Callable[[CommitOutcome], tuple[list[OutboxMessage], bytes]],
        replayed: Sequence[int] = (),
    ) -> CommitOutcome:
        """Decide each record's verdict against the current versions, write the new versions,
        the outbox messages and the stored answer in one transaction.

        `finish` turns the outcome into the outbox messages and the serialized answer; it runs
        inside the transaction, so the answer, the rows and the events commit together.
        """
        outcome = CommitOutcome(batch_id=str(uuid.uuid4()), committed_at=_now(), decisions=[])
        async with self.db.transaction() as s:
            # Locking the counter row serialises commits: verdicts see every earlier commit, and
            # sequence order equals commit order.
            lock = " FOR UPDATE" if self.db.dialect == "postgresql" else ""
            last_seq = (await s.fetch(f"SELECT last_seq FROM support.sequence_counter WHERE id = 1{lock}"))[
                0
            ][0]
            keys = sorted({r.record_key for r in records})
            current: dict[str, str] = {}
            if keys:
                rows = await s.fetch(
                    "SELECT record_key, content_hash FROM core.current_records "
                    "WHERE record_key IN (SELECT unnest($1::TEXT[]))",
                    keys,
                )
                current = {k: h for k, h in rows}
            existed = set(current)
            seq = last_seq
            for rec in records:
                known = current.get(rec.record_key)
                if known == rec.content_hash:
                    outcome.decisions.append(Decision(rec.index, VerdictKind.DUPLICATE, rec.record_key))
                    continue
                seq += 1
                supersedes = known is not None
                verdict = VerdictKind.SUPERSEDED if supersedes else VerdictKind.ACCEPTED
                outcome.decisions.append(Decision(rec.index, verdict, rec.record_key, seq))
                outcome.written.append((seq, rec, supersedes))
                current[rec.record_key] = rec.content_hash
            outcome.watermark = seq
            if outcome.written:
                await s.copy(
                    "core.record_versions",
                    (
                        "seq",
                        "batch_id",
                        "kind",
                        "record_key",
                        "content_hash",
                        "supersedes",
                        "payload",
                        "committed_at",
                    ),
                    [
                        (
                            q,
                            outcome.batch_id,
                            r.kind,
                            r.record_key,
                            r.content_hash,
                            sup,
                            r.payload,
                            outcome.committed_at,
                        )
                        for q, r, sup in outcome.written
                    ],
                )
                latest = {r.record_key: (q, r.content_hash) for q, r, _ in outcome.written}
                fresh = [k for k in latest if k not in existed]
                changed = [k for k in latest if k in existed]
                await s.copy(
                    "core.current_records",
                    ("record_key", "seq", "content_hash"),
                    [(k, *latest[k]) for k in fresh],
                )
                if changed:
                    await s.execute(
                        "UPDATE core.current_records AS c SET seq = u.seq, content_hash = u.content_hash "
                        "FROM (SELECT unnest($1::TEXT[]) AS record_key, unnest($2::BIGINT[]) AS seq, "
                        "unnest($3::TEXT[]) AS content_hash) AS u WHERE c.record_key = u.record_key",
                        changed,
                        [latest[k][0] for k in changed],
                        [latest[k][1] for k in changed],
                    )
                await s.execute("UPDATE support.sequence_counter SET last_seq = $1 WHERE id = 1", seq)
            if quarantine:
                await s.copy(
                    "support.quarantine",
                    ("origin", "record", "violations", "raw", "quarantined_at"),
                    [(q.origin, q.record, q.violations, q.raw, outcome.committed_at) for q in quarantine],
                )
            if replayed:
                # Quarantine entries that passed this time leave the quarantine with the rows they became.
                await s.execute(
                    "UPDATE support.quarantine SET replayed_at = $2 "
                    "WHERE id IN (SELECT unnest($1::BIGINT[]))",
                    list(replayed),
                    outcome.committed_at,
                )
            messages, response = finish(outcome)
            if messages:
                await s.copy(
                    "support.outbox",
                    ("event_id", "routing_key", "event_type", "body", "created_at"),
                    [
                        (m.event_id, m.routing_key, m.event_type, m.body, outcome.committed_at)
                        for m in messages
                    ],
                )
            if idempotency is not None:
                await s.execute(
                    "UPDATE support.idempotency_keys SET state = 'done', response = $3 "
                    "WHERE caller = $1 AND key = $2",
                    *idempotency,
                    response,
                )
        return outcome

    # -- reads ---------------------------------------------------------------------------------

    async def watermark(self) -> int:
        async with self.db.transaction() as s:
            return int((await s.fetch("SELECT last_seq FROM support.sequence_counter WHERE id = 1"))[0][0])

    async def export(self, since: int, until: int, limit: int) -> list[ExportRow]:
        async with self.db.transaction() as s:
            rows = await s.fetch(
                "SELECT seq, batch_id, supersedes, payload, committed_at FROM core.record_versions "
                "WHERE seq > $1 AND seq <= $2 ORDER BY seq LIMIT $3",
                since,
                until,
                limit,
            )
        return [ExportRow(int(q), b, bool(sup), bytes(p), _aware(t)) for q, b, sup, p, t in rows]

    async def quarantine(self, after_id: int, limit: int) -> list[tuple[int, QuarantineEntry, dt.datetime]]:
        async with self.db.transaction() as s:
            rows = await s.fetch(
                "SELECT id, origin, record, violations, raw, quarantined_at FROM support.quarantine "
                "WHERE id > $1 AND replayed_at IS NULL ORDER BY id LIMIT $2",
                after_id,
                limit,
            )
        return [
            (int(i), QuarantineEntry(o, bytes(r) if r is not None else None, v, raw), _aware(t))
            for i, o, r, v, raw, t in rows
        ]

    async def quarantined(self, ids: Sequence[int]) -> dict[int, QuarantineEntry]:
        """The entries among `ids` still in quarantine (not replayed yet)."""
        async with self.db.transaction() as s:
            rows = await s.fetch(
                "SELECT id, origin, record, violations, raw FROM support.quarantine "
                "WHERE id IN (SELECT unnest($1::BIGINT[])) AND replayed_at IS NULL",
                list(ids),
            )
        return {
            int(i): QuarantineEntry(o, bytes(r) if r is not None else None, v, raw)
            for i, o, r, v, raw in rows
        }

    # -- outbox --------------------------------------------------------------------------------

    async def outbox_pending(self, limit: int) -> list[OutboxEntry]:
        async with self.db.transaction() as s:
            rows = await s.fetch(
                "SELECT id, event_id, routing_key, event_type, body FROM support.outbox "
                "WHERE published_at IS NULL ORDER BY id LIMIT $1",
                limit,
            )
        return [OutboxEntry(int(i), OutboxMessage(e, rk, t, bytes(b))) for i, e, rk, t, b in rows]

    async def outbox_published(self, ids: Sequence[int]) -> None:
        """Confirmed by the broker: the entries are no longer needed."""
        async with self.db.transaction() as s:
            await s.execute("DELETE FROM support.outbox WHERE id IN (SELECT unnest($1::BIGINT[]))", list(ids))

    async def outbox_size(self) -> int:
        async with self.db.transaction() as s:
            return int(
                (await s.fetch("SELECT count(*) FROM support.outbox WHERE published_at IS NULL"))[0][0]
            )


def _aware(t: dt.datetime) -> dt.datetime:
    return t if t.tzinfo else t.replace(tzinfo=dt.UTC)
