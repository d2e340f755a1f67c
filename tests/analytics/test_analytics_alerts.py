"""Alerts: the AlertStore contract on both adapters, and the end-to-end flow (raise once per episode, watch,
acknowledge with an audit trail, two replicas sharing PostgreSQL)."""

from __future__ import annotations

import asyncio
import datetime as dt
from collections.abc import AsyncIterator

import grpc
import pytest
from novacorrente.analytics.v1 import analytics_pb2 as a
from novacorrente.common.v1 import common_pb2 as c

from services.analytics.alerts import (
    ACKNOWLEDGED,
    COVER_BELOW_LEAD_TIME,
    OPEN,
    REORDER_POINT,
    RESOLVED,
    AlertCandidate,
    AlertQuery,
    AlertStore,
    DuckAlertStore,
    PostgresAlertStore,
)
from services.kit.errors import FailedPrecondition, NotFound
from tests.analytics.analytics_data import (
    forecast_event,
    line,
    material,
    pair_with_one_lead_time,
    site,
    slow_lines_at_s2,
    snapshot,
)
from tests.analytics.conftest import Replica, World, eventually
from tests.conftest import fresh_pg_database


def _candidate(
    material: str = "M1", site: str = "S1", kind: int = REORDER_POINT, **kw: object
) -> AlertCandidate:
    values: dict[str, object] = {
        "kind": kind,
        "material": material,
        "site": site,
        "message": f"{material} at {site}",
        "stock_position": 3.0,
        "reorder_point": 10.0,
        "days_of_cover": 4.0,
        "lead_time_days": 6.0,
        "data_watermark": "seq:10",
        "family": "EPI",
        "client": "ATC",
        "region": "BA",
    }
    values.update(kw)
    return AlertCandidate(**values)  # type: ignore[arg-type]


@pytest.fixture(params=["duckdb", pytest.param("postgresql", marks=pytest.mark.integration)])
async def store(request: pytest.FixtureRequest, tmp_path) -> AsyncIterator[AlertStore]:  # type: ignore[no-untyped-def]
    if request.param == "duckdb":
        duck = DuckAlertStore(str(tmp_path / "alerts.duckdb"))
        await duck.migrate()
        yield duck
        await duck.close()
        return
    async with fresh_pg_database() as url:
        pg = await PostgresAlertStore.connect(url)
        await pg.migrate()
        await pg.migrate()  # idempotent
        yield pg
        await pg.close()


async def test_store_journals_forecasts_once_each_in_arrival_order(store: AlertStore) -> None:
    bodies = {f"event-{i:03d}": f"body {i}".encode() * (i + 1) for i in range(7)}
    for event_id, body in bodies.items():
        await store.keep_forecasts(event_id, body)
    await store.keep_forecasts("event-002", b"a redelivery of a kept event changes nothing")
    kept = [body async for body in store.kept_forecasts(page_size=3)]  # pages of 3: 3 + 3 + 1
    assert kept == list(bodies.values())


async def test_store_lists_and_forgets_journaled_events(store: AlertStore) -> None:
    for i in range(5):
        await store.keep_forecasts(f"event-{i}", f"body {i}".encode())
    assert await store.kept_forecast_ids() == {f"event-{i}" for i in range(5)}
    assert await store.forget_kept_forecasts(["event-1", "event-3", "never-kept"]) == 2
    assert await store.forget_kept_forecasts([]) == 0
    assert await store.kept_forecast_ids() == {"event-0", "event-2", "event-4"}
    assert [b async for b in store.kept_forecasts()] == [b"body 0", b"body 2", b"body 4"]


async def test_store_raises_once_per_episode(store: AlertStore) -> None:
    first = await store.raise_alert(_candidate(), (10, 0))
    assert first is not None and first.state == OPEN
    assert [(e.state, e.actor) for e in first.history] == [(OPEN, "system")]
    assert await store.raise_alert(_candidate(), (11, 0)) is None  # same episode: still active
    assert await store.raise_alert(_candidate(kind=COVER_BELOW_LEAD_TIME), (11, 0)) is not None  # other kind
    assert await store.active_keys() == {("M1", "S1", REORDER_POINT), ("M1", "S1", COVER_BELOW_LEAD_TIME)}
    cleared = await store.clear("M1", "S1", REORDER_POINT, (12, 0))
    assert cleared is not None and cleared.alert_id == first.alert_id and cleared.state == RESOLVED
    assert [(e.state, e.actor) for e in cleared.history] == [(OPEN, "system"), (RESOLVED, "system")]
    again = await store.raise_alert(_candidate(), (13, 0))  # a new episode, a new alert
    assert again is not None and again.alert_id != first.alert_id


async def test_store_ignores_transitions_from_an_older_evaluation(store: AlertStore) -> None:
    assert await store.raise_alert(_candidate(), (10, 5)) is not None
    assert await store.clear("M1", "S1", REORDER_POINT, (9, 99)) is None  # a replica lagging behind
    assert await store.clear("M1", "S1", REORDER_POINT, (10, 5)) is None  # not newer
    assert await store.clear("M1", "S1", REORDER_POINT, (10, 6)) is not None  # same data, newer policy
    assert await store.raise_alert(_candidate(), (10, 6)) is None  # the clear at that version stands


async def test_store_filters_by_the_materials_bought_from_a_supplier(store: AlertStore) -> None:
    for code in ("M1", "M2", "M3"):
        assert await store.raise_alert(_candidate(material=code), (1, 0)) is not None
    alerts, total = await store.search(AlertQuery(bought_materials=("M1", "M3")))
    assert total == 2 and {x.material for x in alerts} == {"M1", "M3"}
    alerts, total = await store.search(AlertQuery(materials=("M1", "M2"), bought_materials=("M2", "M3")))
    assert total == 1 and [x.material for x in alerts] == ["M2"]
    assert await store.search(AlertQuery(bought_materials=())) == ([], 0)  # a supplier that sold nothing
    _, total = await store.search(AlertQuery(bought_materials=tuple(f"X{i}" for i in range(40_000))))
    assert total == 0  # one parameter however long the list


async def test_store_concurrent_raises_of_one_key_raise_one_alert(store: AlertStore) -> None:
    results = await asyncio.gather(*(store.raise_alert(_candidate(), (20, 0)) for _ in range(8)))
    assert sum(r is not None for r in results) == 1
    alerts, total = await store.search(AlertQuery())
    assert total == 1 and len(alerts) == 1


async def test_store_acknowledge_and_resolve_keep_an_audit_trail(store: AlertStore) -> None:
    raised = await store.raise_alert(_candidate(), (1, 0))
    assert raised is not None
    acked = await store.transition(raised.alert_id, ACKNOWLEDGED, "pat", "ordering today")
    assert acked.state == ACKNOWLEDGED
    assert [(e.state, e.actor, e.comment) for e in acked.history][1:] == [
        (ACKNOWLEDGED, "pat", "ordering today")
    ]
    same = await store.transition(raised.alert_id, ACKNOWLEDGED, "sam", "")
    assert len(same.history) == 2  # repeating the state changes nothing
    resolved = await store.transition(raised.alert_id, RESOLVED, "sam", "received")
    assert resolved.state == RESOLVED and resolved.history[-1].actor == "sam"
    assert resolved.history[0].at <= resolved.history[-1].at
    with pytest.raises(FailedPrecondition):
        await store.transition(raised.alert_id, ACKNOWLEDGED, "pat", "")
    with pytest.raises(NotFound):
        await store.transition("no-such-alert", RESOLVED, "pat", "")
    assert await store.get("no-such-alert") is None


async def test_store_lists_newest_first_with_filters_and_paging(store: AlertStore) -> None:
    for i in range(5):
        alert = await store.raise_alert(
            _candidate(material=f"M{i}", family="EPI" if i % 2 else "CIVIL"), (i + 1, 0)
        )
        assert alert is not None
        await asyncio.sleep(0.002)
    alerts, total = await store.search(AlertQuery(limit=2))
    assert total == 5 and [x.material for x in alerts] == ["M4", "M3"]
    alerts, _ = await store.search(AlertQuery(limit=2, offset=2))
    assert [x.material for x in alerts] == ["M2", "M1"]
    alerts, total = await store.search(AlertQuery(families=("EPI",)))
    assert total == 2 and {x.material for x in alerts} == {"M1", "M3"}
    first, _ = await store.search(AlertQuery(materials=("M0",)))
    await store.transition(first[0].alert_id, RESOLVED, "pat", "")
    _, open_total = await store.search(AlertQuery(states=(OPEN,)))
    assert open_total == 4
    today = dt.datetime.now(dt.UTC).date()
    _, dated = await store.search(
        AlertQuery(start=today - dt.timedelta(days=1), end=today + dt.timedelta(days=1))
    )
    assert dated == 5
    _, none = await store.search(AlertQuery(end=today - dt.timedelta(days=2)))
    assert none == 0


async def test_store_outbox_lists_every_change_until_published(store: AlertStore) -> None:
    raised = await store.raise_alert(_candidate(), (1, 0))
    assert raised is not None
    await store.transition(raised.alert_id, ACKNOWLEDGED, "pat", "")
    pending = await store.pending(10)
    assert [n.alert.alert_id for n in pending] == [raised.alert_id] * 2
    assert len({n.event_id for n in pending}) == 2
    await store.mark_published([pending[0].event_id])
    assert [n.event_id for n in await store.pending(10)] == [pending[1].event_id]
    await store.mark_published([pending[1].event_id])
    assert await store.pending(10) == []
    assert await store.check()


# -- end to end ----------------------------------------------------------------------------------------

MATERIAL, SITE = "010932", "ALMOX-BA"


async def _policy(world: World, *, at: dt.datetime) -> None:
    await world.publish(
        forecast_event(
            MATERIAL,
            SITE,
            [(dt.date(2025, 11, 3) + dt.timedelta(weeks=i), 0.5, 1.0, 2.0) for i in range(4)],
            generated_at=at,
            safety_stock=5.0,
            reorder_point=30.0,
            order_up_to=60.0,
            lead_time_mean_days=6.0,
        )
    )


async def _alerts(replica: Replica, *states: int) -> list[a.Alert]:
    response = await replica.stub.ListAlerts(
        a.ListAlertsRequest(filter=c.Filter(material_codes=[MATERIAL]), states=states), metadata=replica.md()
    )
    return list(response.alerts)


async def _collect(replica: Replica, into: list[a.Alert]) -> None:
    call = replica.stub.WatchAlerts(
        a.WatchAlertsRequest(filter=c.Filter(site_codes=[SITE])), metadata=replica.md()
    )
    async for alert in call:
        into.append(alert)


async def test_alert_is_raised_once_streamed_acknowledged_and_ends_with_its_episode(
    world: World, real_records
) -> None:
    replica = await world.replica()
    await world.commit(real_records)
    streamed: list[a.Alert] = []
    watcher = asyncio.create_task(_collect(replica, streamed))
    await eventually(lambda: replica.app.service.hub.watchers == 1)

    await world.commit([snapshot(MATERIAL, SITE, 10.0, dt.date(2025, 10, 20))])
    await _policy(world, at=dt.datetime(2025, 10, 21, tzinfo=dt.UTC))
    await eventually(lambda: len(streamed) == 1)
    alert = streamed[0]
    assert alert.kind == a.ALERT_KIND_REORDER_POINT and alert.state == a.ALERT_STATE_OPEN
    assert alert.stock_position == 10.0 and alert.reorder_point == 30.0
    assert alert.provenance.data_watermark.startswith("seq:")

    # Later refreshes that still find the position below the reorder point raise nothing new.
    await world.commit([snapshot(MATERIAL, SITE, 8.0, dt.date(2025, 10, 21))])
    await _policy(world, at=dt.datetime(2025, 10, 22, tzinfo=dt.UTC))
    await asyncio.sleep(0.3)
    assert len(await _alerts(replica)) == 1

    with pytest.raises(grpc.aio.AioRpcError) as denied:
        await replica.stub.AcknowledgeAlert(
            a.AlertActionRequest(alert_id=alert.alert_id), metadata=replica.md()
        )
    assert denied.value.code() == grpc.StatusCode.PERMISSION_DENIED
    acked = await replica.stub.AcknowledgeAlert(
        a.AlertActionRequest(alert_id=alert.alert_id, comment="PO 123 placed"),
        metadata=replica.md("planner", subject="pat"),
    )
    assert acked.state == a.ALERT_STATE_ACKNOWLEDGED
    assert (acked.history[-1].actor, acked.history[-1].comment) == ("pat", "PO 123 placed")
    await eventually(lambda: len(streamed) == 2)
    assert streamed[1].state == a.ALERT_STATE_ACKNOWLEDGED

    # Stock recovers: the episode ends and the system resolves the alert; a new drop is a new episode.
    await world.commit([snapshot(MATERIAL, SITE, 100.0, dt.date(2025, 10, 22))])
    await eventually(lambda: len(streamed) == 3)
    assert streamed[2].state == a.ALERT_STATE_RESOLVED and streamed[2].history[-1].actor == "system"
    await world.commit([snapshot(MATERIAL, SITE, 4.0, dt.date(2025, 10, 23))])
    await eventually(lambda: len(streamed) >= 4)
    assert streamed[3].alert_id != alert.alert_id and streamed[3].state == a.ALERT_STATE_OPEN
    assert len(await _alerts(replica, a.ALERT_STATE_OPEN)) == 1
    watcher.cancel()


@pytest.mark.integration
async def test_two_replicas_sharing_postgresql_raise_the_alert_once(world: World, real_records) -> None:
    async with fresh_pg_database() as url:
        first = await world.replica(database_url=url)
        second = await world.replica(database_url=url)
        await world.commit(real_records)
        streamed: list[a.Alert] = []
        watcher = asyncio.create_task(_collect(second, streamed))
        await eventually(lambda: second.app.service.hub.watchers == 1)
        await world.commit([snapshot(MATERIAL, SITE, 10.0, dt.date(2025, 10, 20))])
        await _policy(world, at=dt.datetime(2025, 10, 21, tzinfo=dt.UTC))
        await eventually(lambda: len(streamed) == 1)
        await asyncio.sleep(0.5)  # both replicas evaluated: still one alert, streamed once
        assert len(streamed) == 1
        assert len(await _alerts(first)) == len(await _alerts(second)) == 1
        acked = await first.stub.AcknowledgeAlert(
            a.AlertActionRequest(alert_id=streamed[0].alert_id), metadata=first.md("admin", subject="ana")
        )
        assert acked.history[-1].actor == "ana"
        await eventually(lambda: len(streamed) == 2)  # seen through the other replica
        watcher.cancel()
        await world.stop(first)
        await world.stop(second)


async def test_cover_below_the_supplier_lead_time_raises_its_own_alert(world: World, real_records) -> None:
    replica = await world.replica()
    await world.commit(real_records)
    await world.commit([snapshot(MATERIAL, SITE, 12.0, dt.date(2025, 10, 20))])
    # 14 a week is 2 a day: 12 on hand cover 6 days, under the 10-day lead time; the position is above the
    # reorder point, so this is not a reorder-point alert.
    await world.publish(
        forecast_event(
            MATERIAL,
            SITE,
            [(dt.date(2025, 11, 3), 10.0, 14.0, 20.0)],
            generated_at=dt.datetime(2025, 10, 21, tzinfo=dt.UTC),
            safety_stock=1.0,
            reorder_point=5.0,
            lead_time_mean_days=10.0,
        )
    )
    await eventually(lambda: _alerts(replica))
    alerts = await _alerts(replica)
    assert [x.kind for x in alerts] == [a.ALERT_KIND_COVER_BELOW_LEAD_TIME]
    assert alerts[0].days_of_cover == pytest.approx(6.0) and alerts[0].lead_time_days == 10.0
    status = await replica.stub.ListInventoryStatus(
        a.ListInventoryStatusRequest(filter=c.Filter(material_codes=[MATERIAL], site_codes=[SITE])),
        metadata=replica.md(),
    )
    row = status.rows[0]
    assert row.status == a.STOCK_STATUS_CRITICAL and row.suggested_order_quantity == 0
    assert row.stock_position == 12.0 and row.days_of_cover == pytest.approx(6.0)


# -- what an evaluation looks at ----------------------------------------------------------------------

DAY = dt.date(2024, 3, 1)


async def _listed(replica: Replica, material_code: str, **filter_fields: list[str]) -> list[a.Alert]:
    response = await replica.stub.ListAlerts(
        a.ListAlertsRequest(filter=c.Filter(material_codes=[material_code], **filter_fields)),
        metadata=replica.md(),
    )
    return list(response.alerts)


async def _cover_alert(world: World, replica: Replica, supplier: str = "SUP") -> a.Alert:
    """M1 at S1: 100 asked in the 91 days to the data end, so 10 on hand cover 9.1 days, under the 30-day
    lead time of its five lines: a cover alert."""
    weeks = [DAY + dt.timedelta(weeks=i) for i in range(5)]
    await world.commit(
        [material("M1", "FAM"), site("S1"), snapshot("M1", "S1", 10.0, DAY)]
        + [
            line(f"R{i}", "M1", "S1", 20.0, day, purchased=day + dt.timedelta(days=30), supplier=supplier)
            for i, day in enumerate(weeks)
        ]
    )
    await eventually(lambda: _listed(replica, "M1"))
    [alert] = await _listed(replica, "M1")
    assert alert.kind == a.ALERT_KIND_COVER_BELOW_LEAD_TIME and alert.state == a.ALERT_STATE_OPEN
    return alert


async def test_a_new_forecast_alone_ends_the_episode_it_clears(world: World) -> None:
    replica = await world.replica()
    raised = await _cover_alert(world, replica)
    # Almost no demand ahead, and nothing else new (no record, no policy): the cover is capped at ten years.
    await world.publish(
        forecast_event(
            "M1",
            "S1",
            [(dt.date(2024, 4, 8), 0.0, 0.01, 0.1)],
            generated_at=dt.datetime(2024, 4, 10, tzinfo=dt.UTC),
        )
    )

    async def resolved() -> bool:
        return [x.state for x in await _listed(replica, "M1")] == [a.ALERT_STATE_RESOLVED]

    await eventually(resolved)
    [alert] = await _listed(replica, "M1")
    assert alert.alert_id == raised.alert_id and alert.history[-1].actor == "system"
    # A forecast of demand again starts a new episode, still without a new record or policy.
    await world.publish(
        forecast_event(
            "M1",
            "S1",
            [(dt.date(2024, 4, 8), 10.0, 14.0, 20.0)],
            generated_at=dt.datetime(2024, 4, 11, tzinfo=dt.UTC),
        )
    )

    async def raised_again() -> bool:
        return len(await _listed(replica, "M1")) == 2

    await eventually(raised_again)
    newest = (await _listed(replica, "M1"))[0]
    assert newest.alert_id != raised.alert_id and newest.state == a.ALERT_STATE_OPEN
    assert newest.days_of_cover == pytest.approx(5.0)  # 14 a week is 2 a day


async def test_lines_of_another_site_that_lengthen_the_lead_time_raise_the_alert(world: World) -> None:
    replica = await world.replica()
    await world.commit(pair_with_one_lead_time(DAY))
    await world.commit(slow_lines_at_s2())
    await eventually(lambda: _listed(replica, "M1", site_codes=["S1"]))
    [alert] = await _listed(replica, "M1")
    assert alert.kind == a.ALERT_KIND_COVER_BELOW_LEAD_TIME
    assert alert.lead_time_days == pytest.approx(502 / 6) and alert.days_of_cover == pytest.approx(910 / 20)


async def test_a_material_moved_to_a_slower_family_raises_the_alert(world: World) -> None:
    replica = await world.replica()
    # M1@S1 has one lead-time observation, its material no more: it falls back to its family's mean lead
    # time. Family SLOW buys in 100 days, FAST in 1 (five lines each, at another site).
    records = [
        material("M1", "FAST"),
        site("S1"),
        site("S2"),
        snapshot("M1", "S1", 10.0, DAY),
        line("R0", "M1", "S1", 20.0, dt.date(2024, 3, 10), purchased=dt.date(2024, 3, 12), family="FAST"),
    ]
    for i in range(5):
        day = dt.date(2024, 1, 2) + dt.timedelta(days=i)
        for family, days in (("SLOW", 100), ("FAST", 1)):
            code = f"{family}{i}"
            records.append(material(code, family))
            records.append(
                line(f"R{code}", code, "S2", 1.0, day, purchased=day + dt.timedelta(days=days), family=family)
            )
    await world.commit(records)
    # Evaluated (nothing pending, no wake-up left), with no alert: 45.5 days of cover over FAST's lead time.
    service = replica.app.service
    await eventually(lambda: service._pending_pairs == set() and not service._evaluate_wake.is_set())
    await asyncio.sleep(0.2)  # the evaluation that took them ends
    assert await _listed(replica, "M1") == []
    # The master moves M1 to SLOW: 45.5 days of cover are now under its pairs' lead time.
    await world.commit([material("M1", "SLOW")])
    await eventually(lambda: _listed(replica, "M1"))
    [alert] = await _listed(replica, "M1")
    assert alert.kind == a.ALERT_KIND_COVER_BELOW_LEAD_TIME


async def test_alerts_are_listed_and_watched_by_the_materials_bought_from_a_supplier(world: World) -> None:
    replica = await world.replica()
    streams: dict[str, list[a.Alert]] = {"ACME": [], "OTHER": []}

    async def watch(supplier: str) -> None:
        call = replica.stub.WatchAlerts(
            a.WatchAlertsRequest(filter=c.Filter(suppliers=[supplier])), metadata=replica.md()
        )
        async for alert in call:
            streams[supplier].append(alert)

    # OTHER sold something else: the filter keeps no material of this alert.
    await world.commit(
        [material("M2", "FAM"), site("S2"), line("R9", "M2", "S2", 1.0, DAY, supplier="OTHER")]
    )
    watchers = [asyncio.create_task(watch(supplier)) for supplier in streams]
    await eventually(lambda: replica.app.service.hub.watchers == 2)
    raised = await _cover_alert(world, replica, supplier="ACME")
    await eventually(lambda: len(streams["ACME"]) == 1)
    assert streams["ACME"][0].alert_id == raised.alert_id
    assert [x.alert_id for x in await _listed(replica, "M1", suppliers=["ACME", "NOBODY"])] == [
        raised.alert_id
    ]
    assert await _listed(replica, "M1", suppliers=["OTHER"]) == []
    assert await _listed(replica, "M1", suppliers=["NOBODY"]) == []
    # Later lines of OTHER for M1: M1 is now also bought from OTHER.
    await world.commit([line("R8", "M1", "S2", 1.0, DAY, supplier="OTHER")])
    assert len(await _listed(replica, "M1", suppliers=["OTHER"])) == 1
    await replica.stub.AcknowledgeAlert(
        a.AlertActionRequest(alert_id=raised.alert_id), metadata=replica.md("planner", subject="pat")
    )
    await eventually(lambda: len(streams["OTHER"]) == 1 and len(streams["ACME"]) == 2)
    assert streams["OTHER"][0].state == a.ALERT_STATE_ACKNOWLEDGED
    for watcher in watchers:
        watcher.cancel()
