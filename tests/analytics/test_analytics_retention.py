"""Retention (``services/analytics/housekeeping.py``): superseded forecast versions, the forecast journal
and old inbox entries are deleted without changing any answer, and a rebuild from the pruned journal gives
the same answers as the replica that pruned it."""

from __future__ import annotations

import datetime as dt

from novacorrente.analytics.v1 import analytics_pb2 as a_pb
from novacorrente.events.v1 import events_pb2

from tests.analytics.analytics_data import forecast_event
from tests.analytics.conftest import Replica, World, eventually
from tests.analytics.test_analytics_rebuild import _answers, _feed

WEEKS = [dt.date(2025, 3, 3) + dt.timedelta(weeks=i) for i in range(6)]


def _version(
    n: int, material: str = "010932", site: str = "ALMOX-BA", *, origin: int = 0
) -> events_pb2.ForecastsUpdated:
    """The n-th re-forecast of a series (generated on day n + 1): four weeks from week ``origin`` on,
    values that differ from every other version's, and its own policy."""
    weeks = WEEKS[origin : origin + 4]
    return forecast_event(
        material,
        site,
        [(w, 0.0, 2.0 + n + i, 6.0 + n + i) for i, w in enumerate(weeks)],
        generated_at=dt.datetime(2025, 3, 1 + n, tzinfo=dt.UTC),
        safety_stock=3.0 + n,
        reorder_point=8.0 + n,
        order_up_to=14.0 + n,
        lead_time_mean_days=9.5,
    )


async def _rows(replica: Replica, sql: str, *params: object) -> int:
    return int(await replica.app.engine.read(lambda j: j.cursor.execute(sql, list(params)).fetchone()[0]))


async def _publish(world: World, replica: Replica, events: list[events_pb2.ForecastsUpdated]) -> None:
    """Publish, and wait until each event is applied and journaled (the journal copy follows the apply)."""
    for event in events:
        await world.publish(event)

        async def settled(event_id: str = event.event_id) -> bool:
            applied = await _rows(replica, "SELECT count(*) FROM inbox WHERE event_id = ?", event_id)
            return bool(applied) and event_id in await replica.app.alerts.kept_forecast_ids()

        await eventually(settled)


async def test_retention_changes_no_answer_and_a_rebuild_from_the_pruned_journal_matches(
    world: World, rows, real_records, tmp_path
) -> None:
    await world.start_export()
    stores = {
        "duckdb_path": str(tmp_path / "analytics.duckdb"),
        "alerts_duckdb_path": str(tmp_path / "alerts.duckdb"),
        "inbox_retention_days": 1e-9,  # every entry is old enough
    }
    first = await world.replica(ingestion_target=world.export_target, **stores)
    await _feed(world, rows, real_records)
    # a: the first forecast from week 0; b: the same origin re-forecast (a gives way entirely); c: a
    # forecast from week 1, so b stays what accuracy reads for week 0 and c for weeks 1-4; d: another series.
    a, b, c = _version(0), _version(1), _version(2, origin=1)
    d = _version(0, "010323", "N/A")
    await _publish(world, first, [a, b, c, d])
    before = await _answers(first)
    kpis = {k.name: k for k in a_pb.GetKpisResponse.FromString(before[0]).kpis}
    assert kpis["forecast_wape"].available, "the test needs accuracy to read past forecasts"
    forecast_rows = await _rows(first, "SELECT count(*) FROM forecasts")
    inbox_rows = await _rows(first, "SELECT count(*) FROM inbox")

    done = await first.app.housekeeping.run_once()

    # a's four rows and b's weeks 1-3; b's week 0 is still read by accuracy.
    deleted = forecast_rows - await _rows(first, "SELECT count(*) FROM forecasts")
    assert done.forecast_rows == deleted == 4 + 3
    assert done.journal_events == 1
    assert await first.app.alerts.kept_forecast_ids() == {b.event_id, c.event_id, d.event_id}
    # Every entry but those of the events the tables still read: record batches are guarded by their
    # sequence numbers, and a is gone from the journal too.
    assert done.inbox_entries == inbox_rows - 3
    assert await _answers(first) == before
    again = await first.app.housekeeping.run_once()
    assert (again.forecast_rows, again.journal_events, again.inbox_entries) == (0, 0, 0)

    # A later round looks only at the series given rows since: e re-forecasts c's origin, c gives way.
    e = _version(3, origin=1)
    await _publish(world, first, [e])
    before = await _answers(first)
    done = await first.app.housekeeping.run_once()
    assert (done.forecast_rows, done.journal_events) == (4, 1)
    assert await first.app.alerts.kept_forecast_ids() == {b.event_id, d.event_id, e.event_id}
    assert await _answers(first) == before
    await world.stop(first)

    for leftover in tmp_path.glob("analytics.duckdb*"):
        leftover.unlink()
    rebuilt = await world.replica(ingestion_target=world.export_target, **stores)
    assert not rebuilt.app.service.model.forecast_replay_pending
    assert await _answers(rebuilt) == before


async def test_the_journal_keeps_everything_while_a_current_event_is_missing_from_it(
    world: World, tmp_path
) -> None:
    """An event applied here but not journaled (yet) is what a rebuild would lack: until it is journaled,
    the events it superseded stay, so a rebuild still gets their forecasts. Compaction goes on."""
    replica = await world.replica(alerts_duckdb_path=str(tmp_path / "alerts.duckdb"))
    old, new = _version(0), _version(1)
    await _publish(world, replica, [old, new])
    await replica.app.alerts.forget_kept_forecasts([new.event_id])  # as if its journaling were pending

    done = await replica.app.housekeeping.run_once()
    assert done.forecast_rows == 4 and done.journal_events == 0
    assert await replica.app.alerts.kept_forecast_ids() == {old.event_id}

    await replica.app.alerts.keep_forecasts(new.event_id, new.SerializeToString())
    assert (await replica.app.housekeeping.run_once()).journal_events == 1
    assert await replica.app.alerts.kept_forecast_ids() == {new.event_id}
