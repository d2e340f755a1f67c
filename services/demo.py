"""`nova demo`: the whole platform in one process on the embedded profile, fed with the real data.

Each service still runs its own gRPC server on its own loopback port and they talk real gRPC;
only the bus (in-process) and the stores (DuckDB files under .nova/) are embedded. With
NOVA_DATABASE_URL / NOVA_BROKER_URL / NOVA_CACHE_URL set, the same demo uses PostgreSQL,
RabbitMQ and Redis instead. The data goes in through the ingestion API, as any client's would.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
import os
import signal
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

from services.cli import STATE_DIR, summarize, upload_file
from services.kit.logging import configure_logging

if TYPE_CHECKING:
    from services.ports.bus_memory import MemoryBus

__all__ = ["Demo", "run_demo"]

log = logging.getLogger("nova.demo")

PORTS = {"ingestion": 50051, "analytics": 50052, "forecast": 50053, "gateway": 8080}


def _file_key(path: Path) -> str:
    """A stable idempotency key per file content: re-running the demo replays instead of re-loading."""
    digest = hashlib.sha256(path.read_bytes()).hexdigest()[:32]
    return f"demo:{path.name}:{digest}"


def data_files(data: Path) -> list[Path]:
    # External factors first: the export's batches are re-forecast as they commit, and a forecast made
    # before the weather and market series arrive has those features missing (NaN).
    files = [*sorted((data / "external").glob("*.json")), data / "dadosSuprimentos.xlsx"]
    missing = [str(f) for f in files if not f.exists()]
    if missing:
        raise FileNotFoundError(f"missing data files: {', '.join(missing)}")
    return files


class Demo:
    """The four services composed in one process; `ports` override the defaults (0 = any free port)."""

    def __init__(self, *, models: Path, state: Path = STATE_DIR, ports: dict[str, int] | None = None) -> None:
        self.models = models
        self.state = state
        self.ports = {**PORTS, **(ports or {})}
        self.apps: list[object] = []
        self.gateway: object | None = None
        self.key = b""

    async def start(self) -> None:
        from gateway.server import build_gateway
        from gateway.settings import GatewaySettings
        from services.analytics.app import build_app as build_analytics
        from services.analytics.settings import AnalyticsSettings
        from services.forecast.app import build_app as build_forecast
        from services.forecast.settings import ForecastSettings
        from services.ingestion.app import build_app as build_ingestion
        from services.ingestion.settings import IngestionSettings

        self.state.mkdir(exist_ok=True)
        db_default = f"duckdb:///{self.state}/nova.duckdb"
        ingestion_settings = IngestionSettings(
            database_url=os.environ.get("NOVA_DATABASE_URL", db_default), port=self.ports["ingestion"]
        )
        self.key = ingestion_settings.jwt_key()
        ingestion = await build_ingestion(ingestion_settings, jwt_key=self.key)
        await ingestion.start()
        self.apps.append(ingestion)
        ingestion_target = f"127.0.0.1:{ingestion.server.port}"

        analytics = await build_analytics(
            AnalyticsSettings(
                port=self.ports["analytics"],
                duckdb_path=str(self.state / "analytics.duckdb"),
                alerts_duckdb_path=str(self.state / "analytics-alerts.duckdb"),
                ingestion_target=ingestion_target,
                replica_id="demo",
            ),
            jwt_key=self.key,
        )
        await analytics.start()
        self.apps.append(analytics)
        analytics_target = f"127.0.0.1:{analytics.server.port}"

        forecast = await build_forecast(
            ForecastSettings(
                port=self.ports["forecast"], model_repository=self.models, analytics_target=analytics_target
            ),
            jwt_key=self.key,
        )
        await forecast.start()
        self.apps.append(forecast)

        from gateway.users import create_dev_users

        users_file = self.state / "dev-users.json"
        self.passwords = create_dev_users(users_file)
        gateway = await build_gateway(
            GatewaySettings(
                port=self.ports["gateway"],
                ingestion_target=ingestion_target,
                analytics_target=analytics_target,
                forecast_target=f"127.0.0.1:{forecast.port}",
                users_file=users_file,
            )
        )
        await gateway.start()
        self.gateway = gateway
        self.analytics = analytics
        self.ingestion = ingestion
        self.forecast = forecast

    @property
    def url(self) -> str:
        return self.gateway.url  # type: ignore[union-attr]

    async def load(self, data: Path, *, echo: Callable[[str], None] = print) -> None:
        """Upload the external series and the real export through the ingestion API, then the
        simulated stock ledger, and wait for the read model to catch up."""
        from services.demo_ledger import submit_simulated_ledger
        from services.kit.auth import Role, mint_token

        token = mint_token(self.key, "nova-demo", Role.INGESTOR, 3600)
        target = f"127.0.0.1:{self.ingestion.server.port}"  # type: ignore[attr-defined]
        for path in data_files(data):
            # Hashed off the loop: the services of this process are already serving on it.
            key = await asyncio.to_thread(_file_key, path)
            answer = await upload_file(target, token, path, key=key, progress=False)
            echo("  " + summarize(path, answer))
        echo("  " + await submit_simulated_ledger(target, token, data / "dadosSuprimentos.xlsx"))
        await self.wait_caught_up()

    async def wait_caught_up(self, within: float = 120) -> None:
        target = await self.ingestion.cases.watermark()  # type: ignore[attr-defined]
        deadline = time.monotonic() + within
        while self.analytics.service.model.applied_seq < target.sequence:  # type: ignore[attr-defined]
            if time.monotonic() > deadline:
                raise TimeoutError("the read model did not catch up with ingestion")
            await asyncio.sleep(0.1)

    async def wait_settled(self, within: float = 900) -> int:
        """Wait until the events of the load are all handled (the re-forecast of every series the data
        touched, and its forecasts and policies applied by analytics); returns the number of material x
        site pairs with a reorder policy."""
        bus = self.memory_bus
        if bus is None:
            raise RuntimeError("only the in-process bus can tell when its queues are empty")
        deadline = time.monotonic() + within
        store = self.ingestion.store  # type: ignore[attr-defined]
        quiet = 0
        while quiet < 3:  # settled at three polls in a row: nothing left that a timer could still start
            if time.monotonic() > deadline:
                raise TimeoutError("the re-forecast of the loaded data did not finish")
            # Every committed batch published (the outbox is empty) and every event handled.
            settled = not await store.outbox_pending(1) and bus.idle()
            quiet = quiet + 1 if settled else 0
            await asyncio.sleep(0.2)
        engine = self.analytics.engine  # type: ignore[attr-defined]
        return int(
            await engine.read(lambda job: job.cursor.execute("SELECT count(*) FROM policies").fetchone()[0])
        )

    @property
    def memory_bus(self) -> MemoryBus | None:
        """The embedded profile's in-process bus (``memory://``), which ends with the process; None on a
        broker."""
        from services.ports.bus_memory import MemoryBus

        bus = self.analytics.bus  # type: ignore[attr-defined]
        return bus if isinstance(bus, MemoryBus) else None

    async def reforecast_missing(self) -> int:
        """Re-forecast the series with demand or stock but no forecast in the read model; returns how many.

        The in-process bus ends with the process: re-forecasts an earlier run left queued are lost with it,
        and reloading the same files commits nothing new that would queue them again. Run once the bus is
        idle (``wait_settled``), so that nothing queued now is counted as missing.
        """
        engine = self.analytics.engine  # type: ignore[attr-defined]
        missing = await engine.read(
            lambda job: job.cursor.execute(
                "SELECT material_code, site_code FROM consumption WHERE NOT list_contains(flags, 'service') "
                "UNION SELECT material_code, site_code FROM stock_snapshots "
                "EXCEPT SELECT material_code, site_code FROM forecasts WHERE level = 1 "
                "ORDER BY 1, 2"
            ).fetchall()
        )
        keys = [(str(m), str(s)) for m, s in missing if m and s]
        if keys:
            consumer = self.forecast.consumer  # type: ignore[attr-defined]
            assert consumer is not None, "the demo's forecast service consumes batches"
            await consumer.reforecast(keys, trigger=f"demo-start-{time.time_ns()}")
        return len(keys)

    async def stop(self) -> None:
        if self.gateway is not None:
            await self.gateway.stop()  # type: ignore[attr-defined]
        for app in reversed(self.apps):
            await app.stop()  # type: ignore[attr-defined]


async def _report_settled(demo: Demo, since: float) -> None:
    try:
        await demo.wait_settled()
        left = await demo.reforecast_missing()
        if left:
            print(f"re-forecast {left} series an earlier run left without a forecast", flush=True)
        pairs = await demo.wait_settled()
    except Exception as exc:  # the dashboard still serves: say what went wrong and carry on
        print(f"warning: the re-forecast of the loaded data did not complete: {exc}", flush=True)
        return
    took = time.monotonic() - since
    print(f"re-forecast done in {took:.0f}s: reorder policies for {pairs} material x site pairs", flush=True)


async def run_demo(*, models: Path, data: Path, exit_when_ready: bool = False) -> int:
    configure_logging(os.environ.get("NOVA_LOG_LEVEL", "WARNING"))
    if not await asyncio.to_thread(lambda: any(models.glob("*/*/model.json"))):
        print(f"no model in {models}: run `make models` (or `make demo`, which trains one) first")
        return 2
    demo = Demo(models=models)
    started = time.monotonic()
    print("starting ingestion, analytics, forecast and gateway (embedded profile) ...", flush=True)
    try:
        await demo.start()
        print("loading the real data through the ingestion API ...", flush=True)
        await demo.load(data)
        print(f"\nready in {time.monotonic() - started:.0f}s: dashboard at {demo.url}")
        print("development users (passwords change at every start):")
        for user, password in demo.passwords.items():
            print(f"  {user:<8} {password}")
        print("Ctrl-C stops.", flush=True)
        print(
            "re-forecasting the series the data touched; reorder points fill in as they land ...", flush=True
        )
        # A broker (NOVA_BROKER_URL) keeps queued re-forecasts across restarts and works through them on
        # its own; only the in-process bus is watched here, and what it lost made up for.
        settling = (
            asyncio.create_task(_report_settled(demo, time.monotonic()))
            if demo.memory_bus is not None
            else None
        )
        if exit_when_ready:
            if settling is not None:
                await settling  # the smoke test covers the re-forecast too
        else:
            stop = asyncio.Event()
            loop = asyncio.get_running_loop()
            for sig in (signal.SIGINT, signal.SIGTERM):
                loop.add_signal_handler(sig, stop.set)
            await stop.wait()
            if settling is not None:
                settling.cancel()
            print("\nstopping ...", flush=True)
    finally:
        with contextlib.suppress(Exception):
            await demo.stop()
    print("stopped.")
    return 0
