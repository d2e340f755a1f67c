"""Assumptions of the system-of-record code that nothing else would catch when they change."""

from __future__ import annotations

import re

from novacorrente.ingestion.v1 import ingestion_pb2 as pb

from services.ingestion.sql import MIGRATIONS
from services.ingestion.store import VerdictKind


def test_verdict_kinds_are_the_wire_verdicts() -> None:
    """Verdicts go to the wire as they are (an IntEnum is an int to protobuf): the values must agree."""
    for kind in VerdictKind:
        assert pb.Verdict.Value(f"VERDICT_{kind.name}") == kind.value


def test_migrations_leave_no_session_state_on_pooled_connections() -> None:
    """The pool skips asyncpg's reset query on release (``services.ingestion.sql``): a session-level SET,
    LISTEN or advisory lock run by a migration would leak to whoever takes the connection next."""
    session_level = re.compile(
        r"^\s*(SET\s+(?!LOCAL\b)|LISTEN\b|.*pg_advisory_lock\s*\()", re.IGNORECASE | re.MULTILINE
    )
    for path in sorted(MIGRATIONS.glob("*.sql")):
        found = session_level.findall(path.read_text())
        assert not found, f"{path.name}: session-level statement(s) {found}"
