"""Domain Forecast RPC throughput at 16 requests in flight, warm and cold history cache, vs a gRPC echo.

Warm: every request asks for one series whose history is already cached. Cold: every request asks for a
series never seen, so its history comes from analytics over gRPC first. The baseline is a bare grpc.aio echo
server on the same machine, same concurrency, measured in the same run. Targets: 0.7 warm, 0.3 cold.

The analytics peer is an in-process synthetic AnalyticsService (40 weeks of intermittent demand per series,
deterministic per key). The model is chosen as in bench/oip_infer.py.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import secrets
import statistics
import time
from collections.abc import Awaitable, Callable

import grpc
import numpy as np
from novacorrente.analytics.v1 import analytics_pb2 as apb
from novacorrente.analytics.v1 import analytics_pb2_grpc as apb_grpc
from novacorrente.common.v1 import common_pb2 as cpb
from novacorrente.forecast.v1 import forecast_pb2 as fpb
from novacorrente.forecast.v1 import forecast_pb2_grpc as fpb_grpc

from bench.oip_infer import THREADS, model_repository
from services.forecast.app import ForecastApp, build_app
from services.forecast.settings import ForecastSettings
from services.kit.auth import Role, mint_token

IN_FLIGHT = 16
SECONDS = 4.0
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
    apb_grpc.add_AnalyticsServiceServicer_to_server(SyntheticAnalytics(), server)
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    return server, port


async def start_forecast(key: bytes, peer_port: int, **overrides: object) -> ForecastApp:
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


async def echo_rate() -> float:
    def echo(request: bytes, context: object) -> bytes:
        return request

    server = grpc.aio.server()
    handler = grpc.method_handlers_generic_handler(
        "bench.Echo", {"Echo": grpc.unary_unary_rpc_method_handler(echo)}
    )
    server.add_generic_rpc_handlers((handler,))
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    payload = fpb.ForecastRequest(series=[fpb.SeriesRef(material_code="010601", site_code="BAJSS002-3")])
    body = payload.SerializeToString()
    async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
        call = channel.unary_unary("/bench.Echo/Echo")
        for _ in range(50):
            await call(body)
        value, _ = await rate(lambda i: call(body))
    await server.stop(None)
    return value


async def main() -> None:
    key = secrets.token_bytes(32)
    peer, peer_port = await start_peer()
    app = await start_forecast(key, peer_port, consume_events=False)
    md = (("authorization", f"Bearer {mint_token(key, 'bench', Role.VIEWER, 600)}"),)
    results: dict[str, dict[str, float]] = {}
    try:
        echo = await echo_rate()
        async with grpc.aio.insecure_channel(app.address) as channel:
            stub = fpb_grpc.ForecastServiceStub(channel)

            def request(material: str) -> fpb.ForecastRequest:
                return fpb.ForecastRequest(
                    series=[fpb.SeriesRef(material_code=material, site_code="BAJSS002-3")]
                )

            warm_keys = [f"W{i:04d}" for i in range(64)]
            for material in warm_keys:  # fill the cache
                await stub.Forecast(request(material), metadata=md)
            for label, make in (
                ("warm", lambda i: request(warm_keys[i % len(warm_keys)])),
                ("cold", lambda i: request(f"C{i:07d}")),
            ):
                value, lat = await rate(lambda i, make=make: stub.Forecast(make(i), metadata=md))
                q = statistics.quantiles(lat, n=100)
                results[label] = {
                    "requests_per_s": round(value, 1),
                    "ratio": round(value / echo, 3),
                    "p50_ms": round(q[49] * 1000, 2),
                    "p99_ms": round(q[98] * 1000, 2),
                }
                print(f"{label}: {json.dumps(results[label])}", flush=True)
    finally:
        await app.stop()
        await peer.stop(None)
    print(f"echo: {echo:.1f} requests/s", flush=True)
    print(
        json.dumps(
            {
                "name": "forecast_rpc",
                "value": results["warm"]["requests_per_s"],
                "unit": "Forecast requests/s (1 series, warm cache, 16 in flight)",
                "baseline": round(echo, 1),
                "ratio": results["warm"]["ratio"],
                "target": 0.7,
                "cold": results["cold"],
                "cold_target": 0.3,
                "warm": results["warm"],
            }
        )
    )


if __name__ == "__main__":
    asyncio.run(main())
