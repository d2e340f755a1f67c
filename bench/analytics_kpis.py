"""analytics_kpis: cold KPI and series queries of analytics-query at company scale, against bare DuckDB.

    python -m bench.analytics_kpis [--scale 1.0] [--data company.duckdb] [--rounds 3]

Data: bench/gen_company_history.py (18,000 sites x 1,000 materials, three years, 20M requisition lines at
scale 1, plus a simulated ledger), generated into a temporary directory unless --data names a file. Project:
a replica opened on that file, called over gRPC on loopback with a cache that never hits, so every answer
is computed ("cold"): auth, validation, executor hop, the SQL, protobuf building. Raw limit, same run, same
process, same DuckDB database: the very SQL statements the replica executed for that request (recorded),
replayed on a bare connection. Rounds alternate project and bare (at least --rounds, more for short queries,
up to about two seconds of both); the median of each is kept.

value = requests/s of the project over the query set, baseline = the same for the bare SQL, so ratio =
bare time / project time (1.0 = no overhead); target 0.67. Also per query ratios, the replica's startup and
the process peak RSS.

Per query, also a ceiling: after the rounds, as many rounds of the bare SQL followed at once by a call to a
bare grpc.aio server in this process (no interceptors, nothing computed) that takes the query's request,
with the same metadata, and returns its answer, parsed and serialised on both sides. ``echo_ms`` is that
call's median and ``ceiling`` = bare / (bare + echo): the score of a service that added nothing to its SQL
but the gRPC call, not even a hop to another thread (the bare SQL runs on the event loop's thread). What
separates the project's ratio from it is the service's own work, the hop to its query thread included. The
call is timed right after the SQL because the project's call starts and ends there too: a call that follows
idle or a query costs more than one that follows another call (threads are woken on idle CPUs), and the
short queries show it most.
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import os
import statistics
import time
import types
from pathlib import Path
from typing import Any

import duckdb
import grpc
from google.protobuf.message import Message
from novacorrente.analytics.v1 import analytics_pb2 as a
from novacorrente.common.v1 import common_pb2 as c

from bench.common import bare_grpc_server, peak_rss_mb
from bench.gen_company_history import NoCache, Recorder, emit, prepare_data, start_replica

_STOCK = [
    "fill_rate",
    "stockout_rate",
    "stockout_days",
    "days_of_cover",
    "inventory_turnover",
    "average_inventory_units",
    "sla_risk_series",
    "critical_site_stockout_days",
]
_SKIP = ("BEGIN", "COMMIT", "ROLLBACK")
MAX_ROUNDS = 200


def _requests(busy: list[tuple[str, str]], family: str) -> list[tuple[str, str, Any]]:
    year = c.DateRange(start=c.Date(year=2024, month=11, day=1), end=c.Date(year=2025, month=10, day=31))
    m0, s0 = busy[0]
    return [
        ("kpi_demand", "GetKpis", a.GetKpisRequest(names=["total_demand", "demand_lines"])),
        (
            "kpi_demand_family_year",
            "GetKpis",
            a.GetKpisRequest(
                filter=c.Filter(families=[family], date_range=year), names=["total_demand", "demand_lines"]
            ),
        ),
        ("kpi_stock", "GetKpis", a.GetKpisRequest(names=_STOCK)),
        ("kpi_abc", "GetKpis", a.GetKpisRequest(names=["abc_a_share", "abc_b_share", "abc_c_share"])),
        (
            "kpi_lead_time",
            "GetKpis",
            a.GetKpisRequest(
                names=[
                    "lead_time_mean_days",
                    "lead_time_p50_days",
                    "lead_time_p90_days",
                    "lead_time_std_days",
                ]
            ),
        ),
        ("kpi_on_time", "GetKpis", a.GetKpisRequest(names=["on_time_rate"])),
        (
            "kpi_accuracy",
            "GetKpis",
            a.GetKpisRequest(names=["forecast_wape", "forecast_bias", "forecast_interval_coverage"]),
        ),
        ("kpi_all_region", "GetKpis", a.GetKpisRequest(filter=c.Filter(regions=["BA"]))),
        ("series_week_all", "GetDemandSeries", a.GetDemandSeriesRequest()),
        (
            "series_day_family",
            "GetDemandSeries",
            a.GetDemandSeriesRequest(
                filter=c.Filter(families=[family], date_range=year), grain=c.TIME_GRAIN_DAY
            ),
        ),
        (
            "series_one_with_forecast",
            "GetDemandSeries",
            a.GetDemandSeriesRequest(
                filter=c.Filter(material_codes=[m0], site_codes=[s0]), include_forecast=True
            ),
        ),
        (
            "history_500",
            "GetSeriesHistory",
            a.GetSeriesHistoryRequest(
                series=[a.SeriesKey(material_code=m, site_code=s) for m, s in busy[:500]]
            ),
        ),
        (
            "inventory_status",
            "ListInventoryStatus",
            a.ListInventoryStatusRequest(page=c.PageRequest(page_size=100)),
        ),
        (
            "inventory_one_pair",  # the material x site page
            "ListInventoryStatus",
            a.ListInventoryStatusRequest(filter=c.Filter(material_codes=[m0], site_codes=[s0])),
        ),
        ("lead_times_material", "GetLeadTimes", a.GetLeadTimesRequest(filter=c.Filter(material_codes=[m0]))),
        ("materials_page", "ListMaterials", a.ListMasterDataRequest(page=c.PageRequest(page_size=100))),
    ]


class AnswerEcho:
    """A bare grpc.aio server in this process whose one method answers every call with a set message.

    ``answering(request, answer)`` returns a call taking ``request``'s type and giving ``answer``'s: each side
    parses and serialises the real messages, as a service and its client must, and nothing else happens.
    """

    def __init__(self) -> None:
        self._request_type: Any = None
        self._answer: Message | None = None
        self._server: grpc.aio.Server | None = None
        self._channel: grpc.aio.Channel | None = None

    async def start(self) -> None:
        async def echo(request: bytes, context: grpc.aio.ServicerContext) -> bytes:
            self._request_type.FromString(request)
            assert self._answer is not None
            return self._answer.SerializeToString()

        self._server, port = await bare_grpc_server("bench.Echo", {"Echo": echo})
        big = 256 * 1024 * 1024
        self._channel = grpc.aio.insecure_channel(
            f"127.0.0.1:{port}", options=[("grpc.max_receive_message_length", big)]
        )

    def answering(self, request: Message, answer: Message) -> Any:
        assert self._channel is not None
        self._request_type, self._answer = type(request), answer
        return self._channel.unary_unary(
            "/bench.Echo/Echo",
            request_serializer=type(request).SerializeToString,
            response_deserializer=type(answer).FromString,
        )

    async def stop(self) -> None:
        try:
            if self._channel is not None:
                await self._channel.close()
        finally:
            if self._server is not None:
                await self._server.stop(None)


def _replay(con: duckdb.DuckDBPyConnection, log: list[tuple[str, Any]]) -> float:
    """Run the recorded statements bare; returns seconds (BEGIN/COMMIT and cache-key lookups left out)."""
    started = time.perf_counter()
    for kind, (name, arg) in log:
        if kind == "register":
            con.register(name, arg)
        elif kind == "unregister":
            con.unregister(name)
        else:
            sql = name
            if sql.startswith(_SKIP) or "dim_watermarks" in sql or "kind_watermarks" in sql:
                continue
            con.execute(sql, arg).fetchall() if arg is not None else con.execute(sql).fetchall()
    return time.perf_counter() - started


async def run(path: Path, rounds: int) -> dict[str, Any]:
    started = time.perf_counter()
    app, stub, md = await start_replica(path, cache=NoCache(), query_workers=1)
    startup = time.perf_counter() - started
    engine = app.engine
    bare = duckdb.connect(str(path))  # the same database instance, a plain connection
    echo = AnswerEcho()
    try:
        await echo.start()
        busy = [
            tuple(r)
            for r in bare.execute(
                "SELECT material_code, site_code FROM policies ORDER BY material_code, site_code LIMIT 500"
            ).fetchall()
        ]
        family = bare.execute(
            "SELECT family FROM materials GROUP BY 1 ORDER BY count(*) DESC LIMIT 1"
        ).fetchall()[0][0]
        results: dict[str, dict[str, float]] = {}
        for label, method, request in _requests(busy, family):  # type: ignore[arg-type]
            log: list[tuple[str, Any]] = []
            original = engine._cursor

            def recording(self: Any, _log: list[tuple[str, Any]] = log, _orig: Any = original) -> Any:
                return Recorder(_orig(), _log)

            engine._cursor = types.MethodType(recording, engine)  # type: ignore[method-assign]
            # Records the SQL (and warms up).
            answer = await getattr(stub, method)(request, metadata=md, timeout=600)
            engine._cursor = original  # type: ignore[method-assign]
            echo_call = echo.answering(request, answer)
            await echo_call(request, metadata=md, timeout=600)  # warm, as the recording call warmed
            project: list[float] = []
            raw: list[float] = []
            # Short queries get more rounds (up to about a second of each side): the median of three
            # 5 ms timings is mostly noise of the machine.
            while len(project) < rounds or (sum(project) + sum(raw) < 2.0 and len(project) < MAX_ROUNDS):
                t0 = time.perf_counter()
                await getattr(stub, method)(request, metadata=md, timeout=600)
                project.append(time.perf_counter() - t0)
                raw.append(_replay(bare, log))
            echoes: list[float] = []
            for _ in project:
                _replay(bare, log)
                t0 = time.perf_counter()
                await echo_call(request, metadata=md, timeout=600)
                echoes.append(time.perf_counter() - t0)
            p, b, e = statistics.median(project), statistics.median(raw), statistics.median(echoes)
            results[label] = {
                "project_ms": round(p * 1000, 2),
                "bare_ms": round(b * 1000, 2),
                "ratio": round(b / p, 3),
                "echo_ms": round(e * 1000, 3),
                "ceiling": round(b / (b + e), 3),
                "rounds": len(project),
            }
            print(
                f"{label:28s} project {p * 1000:9.1f} ms   bare {b * 1000:9.1f} ms   ratio {b / p:.3f}"
                f"   echo {e * 1000:6.2f} ms   ceiling {b / (b + e):.3f}   ({len(project)} rounds)",
                flush=True,
            )
        return {"results": results, "startup_s": round(startup, 2)}
    finally:
        await echo.stop()
        bare.close()
        await app.stop()


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--scale", type=float, default=float(os.environ.get("NOVA_BENCH_SCALE", "1.0")))
    parser.add_argument("--data", type=Path, default=None)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    path, stats, cleanup = prepare_data(args.scale, args.data)
    try:
        print(f"data: {stats}", flush=True)
        outcome = asyncio.run(run(path, args.rounds))
    finally:
        cleanup()
    results = outcome["results"]
    project = sum(r["project_ms"] for r in results.values()) / 1000
    bare = sum(r["bare_ms"] for r in results.values()) / 1000
    n = len(results)
    emit(
        {
            "name": "analytics_kpis",
            "value": round(n / project, 3),
            "unit": "requests/s (cold)",
            "baseline": round(n / bare, 3),
            "ratio": round(bare / project, 3),
            "target": 0.67,
            "min_query_ratio": min(r["ratio"] for r in results.values()),
            "min_query_ceiling": min(r["ceiling"] for r in results.values()),
            "scale": args.scale,
            "lines": stats.get("lines"),
            "startup_s": outcome["startup_s"],
            "peak_rss_mb": round(peak_rss_mb(os.getpid()), 1),
            "queries": results,
            "date": dt.date.today().isoformat(),
        }
    )


if __name__ == "__main__":
    main()
