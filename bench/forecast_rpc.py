"""Domain Forecast RPC throughput at 16 requests in flight, warm and cold, vs a gRPC echo.

Warm: every request asks for one of 64 series already forecast, so the answer comes from the forecast cache
(same history generation, external points, model version and options). Cold: every request asks for a
series never seen, so its history comes from analytics over gRPC and the forecast is computed. History
(informational, no target): the forecast is computed from a cached history, as after a new model version or
new external points; it is what "warm" measured before computed forecasts were cached. The baseline is a
bare grpc.aio echo server on the same machine, same concurrency.

Every case runs in ``ROUNDS`` short rounds interleaved with the echo (echo, warm, cold, history, echo, ...)
and its ratio is the median of the rounds' ratios to their own echo: on a machine shared with other work the
load drifts during a run, and a single echo window measured before the others compared numbers taken under
different loads. Targets: 0.7 warm, 0.3 cold.

The analytics peer is an in-process synthetic AnalyticsService (40 weeks of intermittent demand per series,
deterministic per key). The model is chosen as in bench/oip_infer.py; ``methods`` reports how the measured
series were forecast (the model, or the intermittent method its training recorded for their demand class).
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import secrets
import statistics
import time
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import grpc
import numpy as np
from novacorrente.analytics.v1 import analytics_pb2 as apb
from novacorrente.analytics.v1 import analytics_pb2_grpc as apb_grpc
from novacorrente.common.v1 import common_pb2 as cpb
from novacorrente.forecast.v1 import forecast_pb2 as fpb
from novacorrente.forecast.v1 import forecast_pb2_grpc as fpb_grpc

from bench.common import bare_grpc_server
from bench.oip_infer import THREADS, model_repository
from services.forecast.app import ForecastApp, build_app
from services.forecast.settings import ForecastSettings
from services.kit.auth import Role, mint_token

IN_FLIGHT = 16
SECONDS = 5.0  # per case, split over the rounds
ROUNDS = 5
WEEKS = 40


def synthetic_weekly(material: str, site: str) -> np.ndarray:
    seed = int.from_bytes(hashlib.sha256(f"{material}|{site}".encode()).digest()[:8], "little")
    rng = np.random.default_rng(seed)
    occurs = rng.random(WEEKS) < 0.2 + 0.5 * rng.random()
    return np.where(occurs, rng.poisson(3 + 20 * rng.random(), WEEKS) + 1, 0).astype(float)


class SyntheticAnalytics(apb_grpc.AnalyticsServiceServicer):
    """Histories and lead times for any series key, deterministic per key."""

    async def GetSeriesHistory(self, request, context):  # type: ignore[no-untyped-def]
        out = apb.GetSeriesHistoryResponse(provenance=cpb.Provenance(data_watermark="seq:1"))
        for key in request.series:
            out.series.add(
                key=key,
                first_week=cpb.Date(year=2025, month=1, day=6),
                weekly_quantity=synthetic_weekly(key.material_code, key.site_code).tolist(),
                family="MATERIAL ELETRICO",
                unit="UN",
                material_criticality=cpb.CRITICALITY_HIGH,
                site_criticality=cpb.CRITICALITY_MEDIUM,
            )
        return out

    async def GetLeadTimes(self, request, context):  # type: ignore[no-untyped-def]
        days = [2.0, 4, 5, 6, 6, 7, 9, 12, 15, 21, 35]
        return apb.GetLeadTimesResponse(days=days, scope="material", mean_days=float(np.mean(days)))

    async def ListInventoryStatus(self, request, context):  # type: ignore[no-untyped-def]
        return apb.ListInventoryStatusResponse()

    async def GetWatermark(self, request, context):  # type: ignore[no-untyped-def]
        return apb.GetWatermarkResponse(sequence=1, data_watermark="seq:1")


async def start_peer() -> tuple[grpc.aio.Server, int]:
    server = grpc.aio.server()
    # The generated .pyi marks every servicer method abstract; the runtime base class answers UNIMPLEMENTED.
    apb_grpc.add_AnalyticsServiceServicer_to_server(SyntheticAnalytics(), server)  # type: ignore[abstract]
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    return server, port


async def start_forecast(key: bytes, peer_port: int, **overrides: Any) -> ForecastApp:
    settings = ForecastSettings(
        **{
            "port": 0,
            "model_repository": model_repository(),
            "repository_poll_seconds": 0,
            "onnx_intra_op_threads": THREADS,
            "analytics_target": f"127.0.0.1:{peer_port}",
            "broker_url": f"memory://bench-{secrets.token_hex(4)}",
            "cache_url": f"memory://bench-{secrets.token_hex(4)}",
            **overrides,
        }
    )
    app = await build_app(settings, jwt_key=key)
    await app.start()
    return app


async def rate(
    call: Callable[[int], Awaitable[object]], seconds: float = SECONDS
) -> tuple[float, list[float]]:
    latencies: list[float] = []
    counter = iter(range(10**9))
    deadline = time.perf_counter() + seconds

    async def worker() -> int:
        n = 0
        while time.perf_counter() < deadline:
            t0 = time.perf_counter()
            await call(next(counter))
            latencies.append(time.perf_counter() - t0)
            n += 1
        return n

    start = time.perf_counter()
    total = sum(await asyncio.gather(*(worker() for _ in range(IN_FLIGHT))))
    return total / (time.perf_counter() - start), latencies


@contextlib.asynccontextmanager
async def echo_call() -> AsyncIterator[Callable[[int], Awaitable[object]]]:
    """A call of a bare echo server with a ForecastRequest-sized body."""

    def echo(request: bytes, context: grpc.aio.ServicerContext) -> bytes:
        return request

    server, port = await bare_grpc_server("bench.Echo", {"Echo": echo})
    payload = fpb.ForecastRequest(series=[fpb.SeriesRef(material_code="010601", site_code="BAJSS002-3")])
    body = payload.SerializeToString()
    try:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
            call = channel.unary_unary("/bench.Echo/Echo")
            for _ in range(50):
                await call(body)
            yield lambda i: call(body)
    finally:
        await server.stop(None)


async def echo_rate(seconds: float = SECONDS) -> float:
    async with echo_call() as call:
        value, _ = await rate(call, seconds)
    return value


def request(material: str) -> fpb.ForecastRequest:
    return fpb.ForecastRequest(series=[fpb.SeriesRef(material_code=material, site_code="BAJSS002-3")])


class Case:
    """One measured case: per-round rates and ratios, latencies, and (measured apart) the methods answered."""

    def __init__(self, call: Callable[[int], Awaitable[object]]):
        self.rates: list[float] = []
        self.ratios: list[float] = []
        self.latencies: list[float] = []
        self.calls: list[int] = []
        self.methods: Counter[str] = Counter()
        self._call = call

    async def measure(self, seconds: float, echo: float) -> None:
        value, latencies = await rate(self._call, seconds)
        self.rates.append(value)
        self.ratios.append(value / echo)
        self.latencies += latencies
        self.calls.append(len(latencies))

    def summary(self) -> dict[str, object]:
        q = statistics.quantiles(self.latencies, n=100)
        return {
            "requests_per_s": round(statistics.median(self.rates), 1),
            "ratio": round(statistics.median(self.ratios), 3),
            "round_ratios": [round(r, 3) for r in self.ratios],
            "p50_ms": round(q[49] * 1000, 2),
            "p99_ms": round(q[98] * 1000, 2),
            "methods": dict(self.methods.most_common()),
        }


def cold_key(round_number: int, i: int) -> str:
    return f"C{round_number}{i:07d}"


async def main() -> None:
    key = secrets.token_bytes(32)
    peer, peer_port = await start_peer()
    app = await start_forecast(key, peer_port, consume_events=False)
    uncached = await start_forecast(key, peer_port, consume_events=False, result_cache=False)
    md = (("authorization", f"Bearer {mint_token(key, 'bench', Role.VIEWER, 600)}"),)
    echoes: list[float] = []
    seconds = SECONDS / ROUNDS
    try:
        async with (
            echo_call() as echo,
            grpc.aio.insecure_channel(app.address) as channel,
            grpc.aio.insecure_channel(uncached.address) as plain_channel,
        ):
            stub = fpb_grpc.ForecastServiceStub(channel)
            plain = fpb_grpc.ForecastServiceStub(plain_channel)
            warm_requests = [request(f"W{i:04d}") for i in range(64)]
            warm_methods: Counter[str] = Counter()
            for message in warm_requests:  # fill the caches
                answer = await stub.Forecast(message, metadata=md)
                await plain.Forecast(message, metadata=md)
                warm_methods[answer.forecasts[0].method] += 1
            cases = {
                "warm": Case(lambda i: stub.Forecast(warm_requests[i % 64], metadata=md)),
                "cold": Case(lambda i: stub.Forecast(request(cold_key(len(echoes), i)), metadata=md)),
                "history": Case(lambda i: plain.Forecast(warm_requests[i % 64], metadata=md)),
            }
            for _ in range(ROUNDS):
                echoes.append((await rate(echo, seconds))[0])
                for case in cases.values():
                    await case.measure(seconds, echoes[-1])
            # Methods, apart from the timing: the warm keys are asked equally often; the cold keys measured
            # are sampled (asked again, they are answered from the cache as they were computed).
            cases["warm"].methods = cases["history"].methods = warm_methods
            cold = cases["cold"]
            for number, calls in enumerate(cold.calls, start=1):
                for i in range(0, calls, max(calls // 100, 1)):
                    answer = await stub.Forecast(request(cold_key(number, i)), metadata=md)
                    cold.methods[answer.forecasts[0].method] += 1
    finally:
        await app.stop()
        await uncached.stop()
        await peer.stop(None)
    results = {label: case.summary() for label, case in cases.items()}
    for label, summary in results.items():
        print(f"{label}: {json.dumps(summary)}", flush=True)
    echo_value = statistics.median(echoes)
    print(f"echo: {echo_value:.1f} requests/s (rounds: {', '.join(f'{e:.0f}' for e in echoes)})", flush=True)
    print(
        json.dumps(
            {
                "name": "forecast_rpc",
                "value": results["warm"]["requests_per_s"],
                "unit": "Forecast requests/s (1 series, forecast cached, 16 in flight)",
                "baseline": round(echo_value, 1),
                "ratio": results["warm"]["ratio"],
                "target": 0.7,
                "cold": results["cold"],
                "cold_target": 0.3,
                "warm": results["warm"],
                "history": results["history"],
            }
        )
    )


if __name__ == "__main__":
    asyncio.run(main())
