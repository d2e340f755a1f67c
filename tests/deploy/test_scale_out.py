"""Scale-out, proven on one machine: the production topology as separate processes on loopback.

One ingestion, two analytics-query replicas and two forecast-serving replicas run as ``python -m ...`` against
PostgreSQL (a fresh database), RabbitMQ (a vhost of this test) and Redis. Clients reach each pair through one
round-robin gRPC channel (``services.kit.clients.open_channel``, retry policy from its service config), and
forecast-serving reaches analytics the same way (``NOVA_FORECAST_ANALYTICS_TARGET`` lists both replicas).

Under load (16 calls in flight, each with a 5 s deadline) while batches are ingested, one analytics replica
is killed with SIGKILL, and then one forecast replica: it is frozen (SIGSTOP) just after a batch is committed,
the broker is asked whether it holds re-forecast deliveries it has not acknowledged (if not, it is resumed and
the next batch tried), and it is killed with SIGKILL while frozen. The test asserts:

- every call succeeded: an attempt cut by the kill had received no response headers (the servers send the
  request id in trailing metadata, so headers only travel with the answer), hence gRPC retried it on the
  other replica within the call's deadline, as it does for a connection refused while the kill is noticed;
- the kills did cut calls in flight (client-side attempt counts exceed call counts, when grpcio's channelz
  can be read), both replicas of each pair served calls before the kill, client calls and forecast-serving's
  own calls to analytics alike (round robin, not pick-first), and calls kept succeeding after both kills;
- no event was lost: the surviving analytics replica's watermark reaches ingestion's, and its demand total
  equals what was ingested (its own queue received every BatchCommitted); every committed batch was
  re-forecast by some forecast replica (``forecast.reforecast`` is one competing-consumer queue, so the
  deliveries the killed replica held unacknowledged went back to the queue and to the survivor), which an
  observer on a queue of its own sees as a ``ForecastsUpdated`` naming each batch.

Not guaranteed, and not claimed:
- gRPC never retries an attempt that already received response headers. For the unary calls here the
  headers leave with the answer and the status, normally in one write, so the window is the instant that
  write is half done when the process dies; a call lost there would fail this test, not be excused.
- A server-streaming call (``WatchAlerts``, ``ExportRecords``) is committed by its first message: a kill
  after that ends it with UNAVAILABLE and its caller must call again. No streaming call is in this load.
- The retry policy allows 4 attempts per call, with backoff: a call whose deadline cannot cover the backoff
  plus the survivor's answer, or that meets more dead replicas than that, fails (DEADLINE_EXCEEDED or
  UNAVAILABLE). Every call here has 5 s and one replica of each pair survives.
- Events are at-least-once: the killed forecast replica may have published a re-forecast before it could
  acknowledge the batch, and the survivor publishes it again under the same event ids (consumers dedupe).
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import itertools
import signal
import statistics
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import aio_pika
import grpc
import pytest
from aio_pika.exceptions import ChannelClosed
from novacorrente.analytics.v1 import analytics_pb2 as apb
from novacorrente.analytics.v1 import analytics_pb2_grpc
from novacorrente.common.v1 import common_pb2 as cpb
from novacorrente.events.v1 import events_pb2
from novacorrente.forecast.v1 import forecast_pb2 as fpb
from novacorrente.forecast.v1 import forecast_pb2_grpc
from novacorrente.ingestion.v1 import ingestion_pb2 as ipb
from novacorrente.ingestion.v1 import ingestion_pb2_grpc
from novacorrente.ingestion.v1 import records_pb2 as rec
from replicas import Replica, channel_attempts, free_port, spawn, unacked_deliveries

from services.kit.clients import open_channel
from services.ports.bus import Delivery, open_bus
from tests.conftest import AMQP_HOST, REDIS_URL, fresh_pg_database, rabbitmqctl

pytestmark = [pytest.mark.integration, pytest.mark.slow]

FAMILY = "MATERIAL ELETRICO"
MATERIALS = ("910001", "910002", "910003")
SITES = ("SCALE-BA", "SCALE-SE")
FIRST_WEEK = dt.date(2024, 10, 7)  # a Monday; the seed spans 52 weeks from here
LOAD_DAY0 = dt.date(2025, 10, 6)
EVERYTHING = cpb.DateRange(
    start=cpb.Date(year=2024, month=1, day=1), end=cpb.Date(year=2026, month=12, day=31)
)

DEADLINE_SECONDS = 5.0
IN_FLIGHT = 16
LOAD_SECONDS = 12.0
KILL_ANALYTICS_AT = 3.5  # seconds into the load
KILL_FORECAST_AT = 5.0
BATCH_EVERY_SECONDS = 0.5
HOLD_ATTEMPTS = 10
LINES_PER_BATCH = 6
STARTUP_SECONDS = 60.0
CONVERGE_SECONDS = 45.0

# Methods only forecast-serving calls on analytics (this test calls GetWatermark itself): served by a replica,
# they show that forecast-serving's own channel round-robins too.
FORECAST_TO_ANALYTICS = ("GetSeriesHistory", "GetExternalSeries", "GetLeadTimes", "ListInventoryStatus")


@pytest.fixture
def broker_url() -> Iterator[str]:
    """A RabbitMQ vhost of this test alone: the services' exchange and queue names are fixed
    (``novacorrente.events``, ``forecast.reforecast``), so the session's shared vhost would mix other
    tests' events and consumers with these."""
    vhost = f"nova-scale-{uuid.uuid4().hex[:10]}"
    rabbitmqctl("add_vhost", vhost)
    try:
        rabbitmqctl("set_permissions", "-p", vhost, "guest", ".*", ".*", ".*")
        yield f"amqp://guest:guest@{AMQP_HOST}/{vhost}"
    finally:
        rabbitmqctl("delete_vhost", vhost)


# -- data -------------------------------------------------------------------------------------------------


def _date(day: dt.date) -> cpb.Date:
    return cpb.Date(year=day.year, month=day.month, day=day.day)


def _line(requisition: str, n: int, material: str, site: str, day: dt.date, quantity: int) -> rec.Record:
    return rec.Record(
        consumption=rec.Consumption(
            requisition_id=requisition,
            line_key=f"{material}#{n}",
            material_code=material,
            site_code=site,
            supplier_code="FORNECEDOR ESCALA",
            quantity=quantity,
            unit="UN",
            requested_date=_date(day),
            solicited_date=_date(day),
            family=FAMILY,
        )
    )


def seed_lines() -> list[rec.Record]:
    """A year of intermittent weekly demand for every material x site."""
    lines = []
    for (i, material), (j, site) in itertools.product(enumerate(MATERIALS), enumerate(SITES)):
        for week in range(52):
            if (week + i + j) % 3:
                day = FIRST_WEEK + dt.timedelta(weeks=week, days=week % 5)
                lines.append(_line(f"SEED-{i}{j}-{week}", 1, material, site, day, 1 + (7 * week + i + j) % 9))
    return lines


def load_lines(batch: int, prefix: str = "LOAD") -> list[rec.Record]:
    """New requisition lines touching every material x site."""
    return [
        _line(
            f"{prefix}-{batch}-{n}",
            n,
            MATERIALS[(batch + n) % len(MATERIALS)],
            SITES[n % len(SITES)],
            LOAD_DAY0 + dt.timedelta(days=(batch + n) % 14),
            1 + (batch + n) % 4,
        )
        for n in range(LINES_PER_BATCH)
    ]


@dataclass
class Ledger:
    """Batches ingestion committed during the test, and the demand they carried."""

    batch_ids: list[str] = field(default_factory=list)
    quantity: float = 0.0

    async def submit(
        self, stub: ingestion_pb2_grpc.IngestionServiceStub, key: str, lines: list[rec.Record]
    ) -> ipb.SubmitBatchResponse:
        answer = await stub.SubmitBatch(
            ipb.SubmitBatchRequest(idempotency_key=key, records=lines), timeout=15
        )
        assert answer.counts.accepted == len(lines), answer.counts
        self.batch_ids.append(answer.batch_id)
        self.quantity += sum(line.consumption.quantity for line in lines)
        return answer


# -- processes --------------------------------------------------------------------------------------------


@dataclass
class Topology:
    ingestion: Replica
    analytics: list[Replica]
    forecast: list[Replica]

    @property
    def all(self) -> list[Replica]:
        return [self.ingestion, *self.analytics, *self.forecast]

    @staticmethod
    def pair(replicas: list[Replica]) -> str:
        """A gRPC target naming every replica: round robin spreads the calls over them."""
        return "ipv4:" + ",".join(replica.address for replica in replicas)

    def logs(self) -> str:
        return "\n".join(replica.tail() for replica in self.all)


@contextlib.asynccontextmanager
async def topology(
    jwt_key: bytes, pg_url: str, broker_url: str, model_repository: Path, tmp: Path
) -> AsyncIterator[Topology]:
    """Start every process and wait until each is SERVING; all are killed on the way out, whatever happens."""
    run = uuid.uuid4().hex[:8]
    shared = {
        "NOVA_JWT_SECRET": jwt_key.decode(),
        "NOVA_DATABASE_URL": pg_url,
        "NOVA_BROKER_URL": broker_url,
        "NOVA_CACHE_URL": REDIS_URL,
        "NOVA_LOG_LEVEL": "INFO",
    }
    started: list[Replica] = []
    try:
        ingestion = spawn(
            "ingestion",
            "services.ingestion",
            free_port(),
            {**shared, "NOVA_INGESTION_HEALTH_POLL_SECONDS": "0.5"},
            tmp,
        )
        started.append(ingestion)
        analytics = []
        for n in (1, 2):
            env = {
                "NOVA_ANALYTICS_REPLICA_ID": f"scale-{run}-{n}",
                "NOVA_ANALYTICS_DUCKDB_PATH": str(tmp / f"analytics-{n}.duckdb"),
                "NOVA_ANALYTICS_INGESTION_TARGET": ingestion.address,
                "NOVA_ANALYTICS_HEALTH_POLL_SECONDS": "0.5",
                "NOVA_ANALYTICS_CATCHUP_RETRY_SECONDS": "0.5",
                "NOVA_ANALYTICS_QUEUE_EXPIRES_SECONDS": "120",
            }
            analytics.append(
                spawn(f"analytics-{n}", "services.analytics", free_port(), {**shared, **env}, tmp)
            )
            started.append(analytics[-1])
        forecast = []
        for n in (1, 2):
            env = {
                "NOVA_FORECAST_MODEL_REPOSITORY": str(model_repository),
                "NOVA_FORECAST_ANALYTICS_TARGET": Topology.pair(analytics),
                "NOVA_FORECAST_HISTORY_CACHE_PREFIX": f"scale:{run}:forecast:history:",
                "NOVA_FORECAST_REPOSITORY_POLL_SECONDS": "0",
                "NOVA_FORECAST_HEALTH_POLL_SECONDS": "0.5",
            }
            forecast.append(spawn(f"forecast-{n}", "services.forecast", free_port(), {**shared, **env}, tmp))
            started.append(forecast[-1])
        for replica in started:
            await replica.wait_serving(STARTUP_SECONDS)
        yield Topology(ingestion, analytics, forecast)
    finally:
        for replica in started:
            replica.kill()


async def reforecast_consumers(broker_url: str) -> int:
    """Consumers on the shared re-forecast queue (0 while it does not exist yet)."""
    connection = await aio_pika.connect(broker_url)
    try:
        channel = await connection.channel()
        try:
            queue = await channel.declare_queue("forecast.reforecast", passive=True)
        except ChannelClosed:
            return 0
        return int(queue.declaration_result.consumer_count or 0)
    finally:
        await connection.close()


async def until(check: Callable[[], Awaitable[bool]], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not await check():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what}")
        await asyncio.sleep(0.2)


def ok_calls(counts: dict[tuple[str, str], float], methods: tuple[str, ...]) -> float:
    return sum(value for (method, code), value in counts.items() if method in methods and code == "OK")


# -- load -------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Outcome:
    method: str
    code: str
    details: str
    started: float  # seconds since the load began
    seconds: float


class Load:
    """Readers over the two round-robin channels, ``IN_FLIGHT`` calls at a time, each with its deadline."""

    def __init__(
        self,
        analytics: analytics_pb2_grpc.AnalyticsServiceStub,
        forecast: forecast_pb2_grpc.ForecastServiceStub,
    ):
        self._analytics = analytics
        self._forecast = forecast
        self.outcomes: list[Outcome] = []
        self.calls: list[tuple[str, Callable[[], Awaitable[None]]]] = [
            ("GetDemandSeries", self.demand_series),
            ("Forecast", self.forecast),
            ("GetKpis", self.kpis),
            ("Forecast", self.forecast),
        ]

    async def demand_series(self) -> None:
        request = apb.GetDemandSeriesRequest(
            filter=cpb.Filter(material_codes=[MATERIALS[0]], site_codes=[SITES[0]], date_range=EVERYTHING),
            grain=cpb.TIME_GRAIN_WEEK,
        )
        answer = await self._analytics.GetDemandSeries(request, timeout=DEADLINE_SECONDS)
        assert answer.points, "empty demand series"

    async def kpis(self) -> None:
        request = apb.GetKpisRequest(filter=cpb.Filter(families=[FAMILY], date_range=EVERYTHING))
        answer = await self._analytics.GetKpis(request, timeout=DEADLINE_SECONDS)
        assert answer.kpis, "no KPIs"

    async def forecast(self) -> None:
        # A material x site series (cached history) and a family (demand read from analytics on every call).
        request = fpb.ForecastRequest(
            series=[
                fpb.SeriesRef(
                    level=fpb.AGGREGATION_LEVEL_MATERIAL_SITE, material_code=MATERIALS[1], site_code=SITES[1]
                ),
                fpb.SeriesRef(level=fpb.AGGREGATION_LEVEL_FAMILY, family=FAMILY),
            ],
            horizon_weeks=4,
        )
        answer = await self._forecast.Forecast(request, timeout=DEADLINE_SECONDS)
        assert len(answer.forecasts) == 2 and all(f.weeks for f in answer.forecasts), "incomplete forecast"

    async def warm_up(self) -> None:
        for _, call in self.calls * 2:
            await call()

    async def run(self, start: float, stop_at: float) -> None:
        await asyncio.gather(*(self._caller(worker, start, stop_at) for worker in range(IN_FLIGHT)))

    async def _caller(self, worker: int, start: float, stop_at: float) -> None:
        for n in itertools.count(worker):
            if time.monotonic() >= stop_at:
                return
            await self.once(*self.calls[n % len(self.calls)], start)

    async def once(self, name: str, call: Callable[[], Awaitable[None]], start: float) -> None:
        began = time.monotonic()
        try:
            await call()
            code, details = "OK", ""
        except grpc.aio.AioRpcError as exc:
            code, details = exc.code().name, exc.details() or ""
        except AssertionError as exc:
            code, details = "BAD_ANSWER", str(exc)
        self.outcomes.append(Outcome(name, code, details, began - start, time.monotonic() - began))

    async def burst_around(self, kill: Callable[[], None], calls: list[str], start: float) -> None:
        """Send ``calls`` at once and ``kill`` while they are in flight. The caller froze the replica
        (SIGSTOP) first: the calls round robin sends it stay unanswered until the kill cuts them, however
        slowly a busy machine runs this process."""
        by_name = dict(self.calls)
        burst = [asyncio.create_task(self.once(name, by_name[name], start)) for name in calls]
        await asyncio.sleep(0.05)  # the calls leave the process
        kill()
        await asyncio.gather(*burst)


def retries(target: str) -> int | None:
    """Attempts beyond one per call on this process' channel to ``target`` (None: channelz unreadable)."""
    counted = channel_attempts(target)
    return None if counted is None else sum(counted[1].values()) - counted[0]


# -- the test ---------------------------------------------------------------------------------------------


@pytest.mark.timeout(150)
async def test_killing_a_replica_of_each_under_load_loses_no_call_and_no_event(
    jwt_key: bytes, token_for: Callable[..., str], broker_url: str, trained_repo: Path, tmp_path: Path
) -> None:
    async with contextlib.AsyncExitStack() as stack:
        pg_url = await stack.enter_async_context(fresh_pg_database())
        nodes = await stack.enter_async_context(topology(jwt_key, pg_url, broker_url, trained_repo, tmp_path))
        ingestion, (analytics_1, analytics_2), (forecast_1, forecast_2) = (
            nodes.ingestion,
            nodes.analytics,
            nodes.forecast,
        )

        async def both_consume() -> bool:
            return await reforecast_consumers(broker_url) == 2

        # Health is SERVING a moment before forecast-serving subscribes its queue, and a batch committed
        # before the queue exists is routed nowhere: wait for both consumers.
        await until(both_consume, 20, "both forecast replicas consuming forecast.reforecast")

        observed: set[str] = set()

        async def observe(delivery: Delivery) -> None:
            observed.add(events_pb2.ForecastsUpdated.FromString(delivery.body).trigger_batch_id)

        bus = await open_bus(broker_url)
        stack.push_async_callback(bus.close)
        await bus.subscribe(f"scale-observer-{uuid.uuid4().hex[:8]}", ["forecast.forecasts.updated"], observe)

        def channel(target: str, role: str, load_balancing: str = "round_robin") -> grpc.aio.Channel:
            opened = open_channel(
                target, token=token_for(role), default_timeout=DEADLINE_SECONDS, load_balancing=load_balancing
            )
            stack.push_async_callback(opened.close)
            return opened

        ingest = ingestion_pb2_grpc.IngestionServiceStub(channel(ingestion.address, "ingestor"))
        ledger = Ledger()
        seed = await ledger.submit(ingest, f"scale-seed-{uuid.uuid4().hex}", seed_lines())
        seed_seq = int(seed.data_watermark.removeprefix("seq:"))
        direct = {
            replica.name: analytics_pb2_grpc.AnalyticsServiceStub(
                channel(replica.address, "viewer", load_balancing="pick_first")
            )
            for replica in nodes.analytics
        }
        for name, stub in direct.items():

            async def seeded(stub: analytics_pb2_grpc.AnalyticsServiceStub = stub) -> bool:
                return (await stub.GetWatermark(apb.GetWatermarkRequest(), timeout=5)).sequence >= seed_seq

            await until(seeded, 20, f"{name} to apply the seed batch")

        analytics_target = Topology.pair(nodes.analytics)
        forecast_target = Topology.pair(nodes.forecast)
        load = Load(
            analytics_pb2_grpc.AnalyticsServiceStub(channel(analytics_target, "planner")),
            forecast_pb2_grpc.ForecastServiceStub(channel(forecast_target, "planner")),
        )
        await load.warm_up()

        start = time.monotonic()
        stop_at = start + LOAD_SECONDS
        served_before_kill: dict[str, dict[tuple[str, str], float]] = {}
        held_at_kill: list[int] = []  # per attempt: deliveries the forecast replica held unacknowledged
        vhost = broker_url.rsplit("/", 1)[1]

        async def ingest_batches() -> None:
            for batch in itertools.count():
                if time.monotonic() >= stop_at:
                    return
                await ledger.submit(ingest, f"scale-load-{uuid.uuid4().hex}", load_lines(batch))
                await asyncio.sleep(BATCH_EVERY_SECONDS)

        async def kill_analytics(replica: Replica, at: float) -> None:
            await asyncio.sleep(max(0.0, start + at - time.monotonic()))
            served_before_kill[replica.name] = await replica.served()
            replica.proc.send_signal(signal.SIGSTOP)
            await load.burst_around(replica.kill, ["GetDemandSeries", "GetKpis"] * 4, start)

        async def kill_forecast(replica: Replica, at: float) -> None:
            """Kill the replica while it holds re-forecast deliveries it has not acknowledged: freeze it
            (SIGSTOP) right after committing a batch, ask the broker what it holds, and kill it if anything,
            else let it run on and try again with the next batch."""
            await asyncio.sleep(max(0.0, start + at - time.monotonic()))
            served_before_kill[replica.name] = await replica.served()
            for attempt in range(HOLD_ATTEMPTS):
                await ledger.submit(ingest, f"scale-kill-{uuid.uuid4().hex}", load_lines(attempt, "KILL"))
                await asyncio.sleep(0.1)  # the batch reaches a consumer, which is busy with it for a while
                replica.proc.send_signal(signal.SIGSTOP)
                held_at_kill.append(await asyncio.to_thread(unacked_deliveries, replica.proc.pid, vhost))
                if held_at_kill[-1]:
                    break
                replica.proc.send_signal(signal.SIGCONT)
            await load.burst_around(replica.kill, ["Forecast"] * 8, start)

        await asyncio.gather(
            load.run(start, stop_at),
            ingest_batches(),
            kill_analytics(analytics_2, KILL_ANALYTICS_AT),
            kill_forecast(forecast_2, KILL_FORECAST_AT),
        )

        # -- calls: none lost ----------------------------------------------------------------------------
        outcomes = load.outcomes
        failures = [o for o in outcomes if o.code != "OK"]
        after_kills = [o for o in outcomes if o.started > KILL_FORECAST_AT + 0.5]
        latencies = sorted(o.seconds for o in outcomes)
        retried = {"analytics": retries(analytics_target), "forecast": retries(forecast_target)}
        figures = {
            "calls": len(outcomes),
            "failures": len(failures),
            "by_method": {
                m: sum(o.method == m for o in outcomes) for m in ("GetDemandSeries", "GetKpis", "Forecast")
            },
            "calls_started_after_both_kills": len(after_kills),
            "retried_attempts": retried,
            "latency_s": {
                "p50": round(statistics.median(latencies), 3),
                "p99": round(latencies[int(0.99 * (len(latencies) - 1))], 3),
                "max": round(latencies[-1], 3),
            },
            "batches_with_seed": len(ledger.batch_ids),
            "reforecast_deliveries_held_by_killed_replica": held_at_kill,
        }
        print(f"\nscale-out figures: {figures}")
        assert not failures, (
            f"{len(failures)} of {len(outcomes)} calls failed: {failures[:10]}\n{nodes.logs()}"
        )
        assert len(outcomes) >= 100 and len(after_kills) >= 20, figures
        assert analytics_2.proc.returncode == -9 and forecast_2.proc.returncode == -9
        assert all(r.proc.poll() is None for r in (ingestion, analytics_1, forecast_1)), nodes.logs()
        # The kills cut calls in flight (else the test would prove nothing): their attempts were retried.
        for pair, count in retried.items():
            assert count is None or count > 0, f"no {pair} call was in flight at the kill: {figures}"
        assert held_at_kill[-1] > 0, f"the forecast replica never held a delivery when frozen: {figures}"

        # -- round robin: both replicas of each pair served before the kill, the survivors after it -------
        killed_analytics, killed_forecast = (
            served_before_kill["analytics-2"],
            served_before_kill["forecast-2"],
        )
        survivor_analytics, survivor_forecast = await analytics_1.served(), await forecast_1.served()
        for served in (killed_analytics, survivor_analytics):
            assert ok_calls(served, ("GetDemandSeries", "GetKpis")) > 0, served
            assert ok_calls(served, FORECAST_TO_ANALYTICS) > 0, served
        for served in (killed_forecast, survivor_forecast):
            assert ok_calls(served, ("Forecast",)) > 0, served

        # -- events: the surviving read model holds every batch --------------------------------------------
        ingestion_seq = (await ingest.GetWatermark(ipb.GetWatermarkRequest(), timeout=5)).sequence
        survivor = direct["analytics-1"]

        async def read_model_current() -> bool:
            return (
                await survivor.GetWatermark(apb.GetWatermarkRequest(), timeout=5)
            ).sequence >= ingestion_seq

        await until(read_model_current, CONVERGE_SECONDS, f"analytics-1 to reach seq {ingestion_seq}")
        demand = await survivor.GetDemandSeries(
            apb.GetDemandSeriesRequest(filter=cpb.Filter(families=[FAMILY], date_range=EVERYTHING)),
            timeout=10,
        )
        assert sum(p.quantity for p in demand.points if not p.is_forecast) == ledger.quantity

        # -- events: every committed batch was re-forecast by some forecast replica -----------------------
        async def all_reforecast() -> bool:
            return set(ledger.batch_ids) <= observed

        try:
            await until(all_reforecast, CONVERGE_SECONDS, "a ForecastsUpdated for every committed batch")
        except AssertionError as exc:
            missing = sorted(set(ledger.batch_ids) - observed)
            raise AssertionError(
                f"{exc}: {len(missing)} never re-forecast: {missing[:5]}\n{nodes.logs()}"
            ) from exc
        print(f"scale-out events: {len(ledger.batch_ids)} batches re-forecast; read model at {ingestion_seq}")
