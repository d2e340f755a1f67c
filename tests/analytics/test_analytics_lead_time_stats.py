"""``lead_time_stats`` (what the inventory computation's lead-time fallbacks read) always equals the same
aggregate over ``consumption``: after batches, after corrections that change, drop or move a line's lead
time, in a read-model file written before the table existed, and in one that a release without the table
applied records to."""

from __future__ import annotations

import dataclasses
import datetime as dt

import duckdb
import pytest

from services.analytics.engine import Job
from services.analytics.read_model import ReadModel
from tests.analytics.analytics_data import consumption_record, line_key_of
from tests.analytics.conftest import Replica, World

Stats = list[tuple[object, ...]]


async def _stored_and_derived(replica: Replica) -> tuple[Stats, Stats]:
    def read(job: Job) -> tuple[Stats, Stats]:
        cur = job.cursor
        stored = cur.execute("SELECT * FROM lead_time_stats ORDER BY ALL").fetchall()
        derived = cur.execute(
            "SELECT material_code, site_code, family, count(*), sum(lead_time_days) FROM consumption "
            "WHERE lead_time_days >= 0 GROUP BY ALL ORDER BY ALL"
        ).fetchall()
        return stored, derived

    return await replica.app.engine.read(read)


async def test_lead_time_stats_follow_batches_and_corrections(world: World, rows, real_records) -> None:
    replica = await world.replica()
    await world.commit(real_records)
    stored, derived = await _stored_and_derived(replica)
    assert stored and stored == derived

    purchased = [i for i, r in enumerate(rows) if r.purchased and r.purchased >= r.solicited]
    later, dropped, moved = purchased[:3]
    assert rows[moved].site != "ALMOX-SE"
    changes = {
        later: dataclasses.replace(rows[later], purchased=rows[later].purchased + dt.timedelta(days=17)),
        dropped: dataclasses.replace(rows[dropped], purchased=None),  # no lead time any more
        moved: dataclasses.replace(rows[moved], site="ALMOX-SE"),  # counted under another pair
    }
    corrections = [consumption_record(row, line_key_of(rows, i)) for i, row in changes.items()]
    await world.commit(corrections, supersedes=True)
    after, derived = await _stored_and_derived(replica)
    assert after == derived and after != stored
    assert sum(int(r[3]) for r in after) == sum(int(r[3]) for r in stored) - 1  # the dropped line


async def test_a_file_from_before_the_table_derives_it_at_start(world: World, real_records, tmp_path) -> None:
    path = tmp_path / "analytics.duckdb"
    first = await world.replica(duckdb_path=str(path))
    await world.commit(real_records)
    expected, _ = await _stored_and_derived(first)
    await world.stop(first)
    with duckdb.connect(str(path)) as con:  # as a release before the table left the file
        con.execute("DROP TABLE lead_time_stats")
        con.execute("DELETE FROM meta WHERE key = 'lead_time_stats_seq'")

    reopened = await world.replica(duckdb_path=str(path))
    stored, derived = await _stored_and_derived(reopened)
    assert stored == derived == expected and stored


async def test_records_applied_by_a_release_without_the_table_are_counted_at_start(
    world: World, real_records, tmp_path
) -> None:
    """A release that does not keep the table (after a rollback) applies records to the lines only; the
    sequence the table was kept up to then differs from the applied one, and the table is derived again."""
    path = tmp_path / "analytics.duckdb"
    half = len(real_records) // 2
    first = await world.replica(duckdb_path=str(path))
    await world.commit(real_records[:half])
    await world.stop(first)
    with duckdb.connect(str(path)) as con:
        # As the other release leaves the file: the applied sequence moved on, the table and the sequence it
        # was kept up to did not.
        con.execute("DELETE FROM lead_time_stats WHERE n % 2 = 1")
        con.execute("UPDATE state SET applied_seq = applied_seq + 1")

    reopened = await world.replica(duckdb_path=str(path))
    stored, derived = await _stored_and_derived(reopened)
    assert stored == derived and stored


async def test_a_file_kept_up_to_date_is_not_derived_again_at_start(
    world: World, real_records, tmp_path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "analytics.duckdb"
    first = await world.replica(duckdb_path=str(path))
    await world.commit(real_records)
    await world.stop(first)
    rebuilds = []
    monkeypatch.setattr(ReadModel, "rebuild_lead_time_stats", staticmethod(lambda job: rebuilds.append(job)))
    reopened = await world.replica(duckdb_path=str(path))
    stored, derived = await _stored_and_derived(reopened)
    assert not rebuilds and stored == derived and stored
