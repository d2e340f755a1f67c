"""The dashboard overview's API calls through the gateway at 16 in flight, vs the same calls made directly
to the analytics gRPC API in the same run.

One overview = the four analytics calls the overview page makes: GET /api/v1/kpis (eight names),
/api/v1/inventory?page_size=10, /api/v1/alerts?state=open and /api/v1/watermark; directly: GetKpis,
ListInventoryStatus, ListAlerts and GetWatermark with the same requests. 16 workers loop over them.

Processes: a synthetic AnalyticsService (answers of the real shapes and sizes, computed once, so the upstream
costs the same in every run), the gateway (``build_gateway``, default settings: JSON access log at INFO), the
floor (below), and this load generator. HTTP goes through a minimal keep-alive HTTP/1.1 client so that the
client's own cost is close to the gRPC client's; each side decodes the answer (JSON / protobuf). The runs
alternate (direct, gateway, floor, direct, gateway, floor) and the best of each side counts. Last line: one
JSON object;
value = gateway requests/s, baseline = direct gRPC requests/s, ratio = value / baseline (target 0.6),
p99_ms = gateway request latency p99, cpu_us_per_request = CPU time per request of each process in the
counted rounds (from /proc; where the time goes when the machine is shared and throughputs are noisy).

The floor is the least an HTTP hop costs with the gateway's own HTTP server and gRPC channel: a bare ASGI
app under the same uvicorn set-up that, per request, makes the gateway's gRPC call (same request, the
caller's token and a request id, on a channel from ``gateway.upstreams``) and returns the answer's protobuf
bytes as the body: no auth check, validation, JSON, metrics or logging (the client parses the protobuf, as
on the direct side). floor_ratio = its requests/s / direct gRPC requests/s, the most a gateway built on this
server and channel could keep here; the gateway's own work is what separates its ratio from that one.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import json
import os
import secrets
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import grpc
from google.protobuf import timestamp_pb2
from novacorrente.analytics.v1 import analytics_pb2 as apb
from novacorrente.analytics.v1 import analytics_pb2_grpc
from novacorrente.common.v1 import common_pb2 as cpb

from services.kit.auth import READ, MethodPolicy, mint_token

IN_FLIGHT = 16
SECONDS = 4.0
ROUNDS = 2
SERVICE = apb.DESCRIPTOR.services_by_name["AnalyticsService"].full_name
POLICY = MethodPolicy(
    {f"/{SERVICE}/{m}": READ for m in ("GetKpis", "ListInventoryStatus", "ListAlerts", "GetWatermark")}
)
KPIS = [
    "total_demand",
    "fill_rate",
    "stockout_rate",
    "days_of_cover",
    "lead_time_p90_days",
    "sla_risk_series",
    "forecast_wape",
    "forecast_interval_coverage",
]
ROOT = Path(__file__).resolve().parents[1]
# The overview's four calls: the gateway's path, and the gRPC method, request and answer type its route makes
# of it (gateway/api.py: the data routes always send a filter, the listings a page). The direct side and the
# floor send the same requests.
CALLS: list[tuple[str, str, Any, Any]] = [
    (
        "/api/v1/kpis?" + "&".join(f"name={n}" for n in KPIS),
        "GetKpis",
        apb.GetKpisRequest(filter=cpb.Filter(), names=KPIS),
        apb.GetKpisResponse,
    ),
    (
        "/api/v1/inventory?page_size=10",
        "ListInventoryStatus",
        apb.ListInventoryStatusRequest(filter=cpb.Filter(), page=cpb.PageRequest(page_size=10)),
        apb.ListInventoryStatusResponse,
    ),
    (
        "/api/v1/alerts?state=open",
        "ListAlerts",
        apb.ListAlertsRequest(filter=cpb.Filter(), page=cpb.PageRequest(), states=[apb.ALERT_STATE_OPEN]),
        apb.ListAlertsResponse,
    ),
    ("/api/v1/watermark", "GetWatermark", apb.GetWatermarkRequest(), apb.GetWatermarkResponse),
]


def _provenance() -> cpb.Provenance:
    ts = timestamp_pb2.Timestamp()
    ts.GetCurrentTime()
    return cpb.Provenance(data_watermark="seq:4207", generated_at=ts, from_cache=True)


class SyntheticAnalytics(analytics_pb2_grpc.AnalyticsServiceServicer):
    """Answers shaped like the real ones (sizes of a real overview), built once."""

    def __init__(self) -> None:
        self.kpis = apb.GetKpisResponse(
            kpis=[
                apb.Kpi(name=n, value=12.5 + i, unit="days", available=i % 4 != 1, note="")
                for i, n in enumerate(KPIS)
            ],
            provenance=_provenance(),
        )
        rows = [
            apb.InventoryStatus(
                material_code=f"0{10601 + i}",
                site_code="ALMOX-BA",
                on_hand=30 + i,
                on_order=10,
                stock_position=40 + i,
                safety_stock=20,
                reorder_point=45,
                days_of_cover=12.5,
                status=apb.STOCK_STATUS_ATTENTION,
                suggested_order_quantity=25,
                risk=2.0 - i / 10,
                family="MATERIAL ELETRICO",
                unit="UN",
            )
            for i in range(10)
        ]
        self.inventory = apb.ListInventoryStatusResponse(
            rows=rows, page=cpb.PageInfo(next_page_token="10", total_size=873), provenance=_provenance()
        )
        raised = timestamp_pb2.Timestamp()
        raised.GetCurrentTime()
        self.alerts = apb.ListAlertsResponse(
            alerts=[
                apb.Alert(
                    alert_id=f"a{i:04d}",
                    kind=apb.ALERT_KIND_REORDER_POINT,
                    material_code=f"0{10601 + i}",
                    site_code="ALMOX-BA",
                    state=apb.ALERT_STATE_OPEN,
                    message="CABO DE COBRE NU 16MM em ALMOX-BA: posição 40 UN ≤ ponto de pedido 45",
                    stock_position=40,
                    reorder_point=45,
                    days_of_cover=9.5,
                    lead_time_days=6.5,
                    raised_at=raised,
                    history=[apb.AlertEvent(state=apb.ALERT_STATE_OPEN, actor="system", at=raised)],
                    provenance=_provenance(),
                )
                for i in range(5)
            ],
            page=cpb.PageInfo(total_size=5),
        )
        self.watermark = apb.GetWatermarkResponse(sequence=4207, data_watermark="seq:4207")

    async def GetKpis(self, request, context):  # type: ignore[no-untyped-def]
        return self.kpis

    async def ListInventoryStatus(self, request, context):  # type: ignore[no-untyped-def]
        return self.inventory

    async def ListAlerts(self, request, context):  # type: ignore[no-untyped-def]
        return self.alerts

    async def GetWatermark(self, request, context):  # type: ignore[no-untyped-def]
        return self.watermark


# -- the server processes ---------------------------------------------------------------------------------


async def _serve_upstream(key: bytes, port_file: Path) -> None:
    from services.kit.server import GrpcServer
    from services.kit.settings import ServiceSettings

    server = GrpcServer(
        ServiceSettings(port=0, health_poll_seconds=3600), policy=POLICY, jwt_key=key, service_names=[SERVICE]
    )
    # The generated .pyi marks every servicer method abstract; the runtime base class answers UNIMPLEMENTED.
    server.add_servicer(
        analytics_pb2_grpc.add_AnalyticsServiceServicer_to_server,
        SyntheticAnalytics(),  # type: ignore[abstract]
    )
    await server.start()
    await asyncio.to_thread(port_file.write_text, str(server.port))
    await server.run_until_signal()


async def _serve_gateway(key: bytes, port_file: Path, upstream: str) -> None:
    import signal

    from gateway.server import build_gateway
    from gateway.settings import GatewaySettings
    from services.kit.logging import configure_logging

    settings = GatewaySettings(port=0, analytics_target=upstream, grace_seconds=1)
    configure_logging(settings.log_level)
    gateway = await build_gateway(settings, policy=POLICY, jwt_key=key)
    await gateway.start()
    await asyncio.to_thread(port_file.write_text, str(gateway.port))
    stop = asyncio.Event()
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, stop.set)
    await stop.wait()
    await gateway.stop()


async def _serve_floor(port_file: Path, upstream: str) -> None:
    """HTTP in, the gateway's gRPC call, the answer's bytes out: nothing else (see the module docstring)."""
    import signal

    import uvicorn

    from gateway.server import listening_socket
    from gateway.settings import GatewaySettings
    from gateway.upstreams import Upstreams
    from services.kit.interceptors import REQUEST_ID_HEADER
    from services.kit.logging import new_request_id

    upstreams = Upstreams(GatewaySettings(port=0, analytics_target=upstream))
    channel = upstreams.channel("analytics")
    # By path, query string aside: the requests are the gateway's for CALLS' paths.
    calls = {
        path.partition("?")[0]: (channel.unary_unary(f"/{SERVICE}/{method}"), request.SerializeToString())
        for path, method, request, _ in CALLS
    }

    async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
        assert scope["type"] == "http"
        call, request = calls[scope["path"]]
        token = dict(scope["headers"])[b"authorization"].decode()
        metadata = (("authorization", token), (REQUEST_ID_HEADER, new_request_id()))
        body = await call(request, metadata=metadata, timeout=10)
        headers = [(b"content-type", b"application/x-protobuf"), (b"content-length", b"%d" % len(body))]
        await send({"type": "http.response.start", "status": 200, "headers": headers})
        await send({"type": "http.response.body", "body": body})

    sock = listening_socket("127.0.0.1", 0)
    config = uvicorn.Config(app, lifespan="off", access_log=False, log_config=None, timeout_keep_alive=30)
    server = uvicorn.Server(config)
    task = asyncio.create_task(server.serve(sockets=[sock]))
    while not server.started:
        if task.done():
            task.result()  # raises the startup failure
            raise RuntimeError("floor HTTP server exited during startup")
        await asyncio.sleep(0.01)
    await asyncio.to_thread(port_file.write_text, str(sock.getsockname()[1]))
    stop = asyncio.Event()
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, stop.set)
    await stop.wait()
    server.should_exit = True
    await task
    await upstreams.close()


def _spawn(role: str, key: bytes, port_file: Path, *extra: str) -> subprocess.Popen[bytes]:
    env = {**os.environ, "NOVA_BENCH_KEY": key.hex()}
    return subprocess.Popen(
        [sys.executable, "-m", "bench.gateway_overview", role, str(port_file), *extra],
        cwd=ROOT,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )


def _wait_port(port_file: Path, proc: subprocess.Popen[bytes]) -> int:
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if port_file.exists() and port_file.read_text().strip():
            return int(port_file.read_text())
        if proc.poll() is not None:
            raise RuntimeError(f"server process exited with {proc.returncode}")
        time.sleep(0.05)
    raise RuntimeError("server did not start")


# -- load ---------------------------------------------------------------------------------------------------


class HttpConnection:
    """Keep-alive HTTP/1.1 GET with Content-Length bodies: as little client work as the gRPC side does."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, token: str):
        self.reader, self.writer = reader, writer
        self.auth = f"Authorization: Bearer {token}\r\n"

    @classmethod
    async def open(cls, port: int, token: str) -> HttpConnection:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        return cls(reader, writer, token)

    async def get(self, path: str, decode: Callable[[bytes], object] = json.loads) -> object:
        self.writer.write(f"GET {path} HTTP/1.1\r\nHost: bench\r\n{self.auth}\r\n".encode())
        status = await self.reader.readline()
        length = 0
        while (line := await self.reader.readline()) not in (b"\r\n", b""):
            name, _, value = line.partition(b":")
            if name.lower() == b"content-length":
                length = int(value)
        body = await self.reader.readexactly(length)
        if b" 200 " not in status:
            raise RuntimeError(f"{path}: {status!r} {body[:200]!r}")
        return decode(body)


def _cpu_seconds(pid: int | None) -> float:
    """CPU time (user + system) of process ``pid`` (this one when None); NaN where /proc is missing."""
    if pid is None:
        times = os.times()
        return times.user + times.system
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return float("nan")
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _cpu_per_request(before: list[float], after: list[float], n: int, names: list[str]) -> dict[str, float]:
    pairs = zip(names, before, after, strict=True)
    return {name: round((a - b) / max(n, 1) * 1e6, 1) for name, b, a in pairs}


async def _load(call: Callable[[int], Awaitable[object]], seconds: float) -> tuple[int, list[float]]:
    latencies: list[float] = []
    stop = time.perf_counter() + seconds

    async def worker() -> None:
        i = 0
        while time.perf_counter() < stop:
            started = time.perf_counter()
            await call(i % 4)
            latencies.append(time.perf_counter() - started)
            i += 1

    await asyncio.gather(*(worker() for _ in range(IN_FLIGHT)))
    return len(latencies), latencies


def _p99(latencies: list[float]) -> float:
    return statistics.quantiles(latencies, n=100)[98] * 1000


async def _measure(
    upstream_port: int, gateway_port: int, floor_port: int, token: str, pids: dict[str, int | None]
) -> dict[str, Any]:
    metadata = (("authorization", f"Bearer {token}"),)
    channel = grpc.aio.insecure_channel(f"127.0.0.1:{upstream_port}")
    stub = analytics_pb2_grpc.AnalyticsServiceStub(channel)
    direct_calls = [(getattr(stub, method), request) for _, method, request, _ in CALLS]
    connections: list[HttpConnection] = []

    async def direct(i: int) -> object:
        method, request = direct_calls[i]
        return await method(request, metadata=metadata, timeout=10)

    async def over_http(
        port: int, decoders: list[Callable[[bytes], object]]
    ) -> Callable[[int], Awaitable[object]]:
        free = [await HttpConnection.open(port, token) for _ in range(IN_FLIGHT)]
        connections.extend(free)

        async def call(i: int) -> object:
            conn = free.pop()
            try:
                return await conn.get(CALLS[i][0], decoders[i])
            finally:
                free.append(conn)

        return call

    try:
        via_gateway = await over_http(gateway_port, [json.loads] * len(CALLS))
        # The floor answers protobuf: parsed as on the direct side.
        via_floor = await over_http(floor_port, [answer.FromString for *_, answer in CALLS])

        sides = {"direct": direct, "gateway": via_gateway, "floor": via_floor}
        for i in range(4):  # warm every path (channels, connections, caches)
            for call in sides.values():
                await call(i)
        best = dict.fromkeys(sides, 0.0)
        latencies: dict[str, list[float]] = {}
        cpu: dict[str, dict[str, float]] = {}
        names = list(pids)
        for _ in range(ROUNDS):
            for side, call in sides.items():
                before = [_cpu_seconds(pids[name]) for name in names]
                n, lat = await _load(call, SECONDS)
                after = [_cpu_seconds(pids[name]) for name in names]
                if n / SECONDS > best[side]:
                    best[side] = n / SECONDS
                    cpu[side] = _cpu_per_request(before, after, n, names)
                    latencies[side] = lat
    finally:
        for conn in connections:
            conn.writer.close()
        await channel.close()
    return {
        **{f"{side}_rps": rps for side, rps in best.items()},
        **{f"{side}_p99_ms": _p99(lat) for side, lat in latencies.items()},
        "cpu_us_per_request": cpu,
    }


def main() -> None:
    key = secrets.token_bytes(32)
    with tempfile.TemporaryDirectory() as tmp:
        files = {role: Path(tmp) / role for role in ("upstream", "gateway", "floor")}
        procs: dict[str, subprocess.Popen[bytes]] = {}
        try:
            procs["upstream"] = _spawn("upstream", key, files["upstream"])
            upstream = f"127.0.0.1:{_wait_port(files['upstream'], procs['upstream'])}"
            for role in ("gateway", "floor"):
                procs[role] = _spawn(role, key, files[role], upstream)
            ports = {role: _wait_port(files[role], proc) for role, proc in procs.items()}
            token = mint_token(key, "bench", "viewer", 600)
            pids: dict[str, int | None] = {"client": None, **{role: p.pid for role, p in procs.items()}}
            result = asyncio.run(_measure(ports["upstream"], ports["gateway"], ports["floor"], token, pids))
        finally:
            for proc in procs.values():
                proc.terminate()
            for proc in procs.values():
                try:
                    proc.wait(30)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait()
    ratio = result["gateway_rps"] / result["direct_rps"]
    floor_ratio = result["floor_rps"] / result["direct_rps"]
    print(
        f"{dt.datetime.now():%H:%M:%S} overview calls at {IN_FLIGHT} in flight: "
        f"gateway {result['gateway_rps']:.0f} req/s (p99 {result['gateway_p99_ms']:.1f} ms), "
        f"direct gRPC {result['direct_rps']:.0f} req/s (p99 {result['direct_p99_ms']:.1f} ms), "
        f"floor (bare ASGI + gRPC) {result['floor_rps']:.0f} req/s (p99 {result['floor_p99_ms']:.1f} ms)"
    )
    print(
        json.dumps(
            {
                "name": "gateway_overview",
                "value": round(result["gateway_rps"], 1),
                "unit": "req/s",
                "baseline": round(result["direct_rps"], 1),
                "ratio": round(ratio, 3),
                "target": 0.6,
                "p99_ms": round(result["gateway_p99_ms"], 2),
                "direct_p99_ms": round(result["direct_p99_ms"], 2),
                "floor_rps": round(result["floor_rps"], 1),
                "floor_ratio": round(floor_ratio, 3),
                "floor_p99_ms": round(result["floor_p99_ms"], 2),
                "in_flight": IN_FLIGHT,
                "cpu_us_per_request": result["cpu_us_per_request"],
            }
        )
    )


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] in ("upstream", "gateway", "floor"):
        bench_key = bytes.fromhex(os.environ["NOVA_BENCH_KEY"])
        if sys.argv[1] == "upstream":
            asyncio.run(_serve_upstream(bench_key, Path(sys.argv[2])))
        elif sys.argv[1] == "gateway":
            asyncio.run(_serve_gateway(bench_key, Path(sys.argv[2]), sys.argv[3]))
        else:
            asyncio.run(_serve_floor(Path(sys.argv[2]), sys.argv[3]))
    else:
        main()
