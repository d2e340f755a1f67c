"""The walking skeleton on the production back ends: PostgreSQL, RabbitMQ and Redis.

A requisition line pushed to ingestion over gRPC lands in PostgreSQL; its event crosses RabbitMQ;
analytics answers a demand series that includes it; forecast-serving, on a model trained by
ml_training from the real export, answers a forecast for that series; and the gateway returns it
as JSON. Each service is a real gRPC server on loopback; nothing is faked.
"""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from collections.abc import Callable
from pathlib import Path

import httpx
import pytest
from novacorrente.analytics.v1 import analytics_pb2 as apb
from novacorrente.analytics.v1 import analytics_pb2_grpc
from novacorrente.common.v1 import common_pb2
from novacorrente.ingestion.v1 import ingestion_pb2 as ipb
from novacorrente.ingestion.v1 import ingestion_pb2_grpc
from novacorrente.ingestion.v1 import records_pb2 as rec

from gateway.server import build_gateway
from gateway.settings import GatewaySettings
from services.analytics.app import build_app as build_analytics
from services.analytics.settings import AnalyticsSettings
from services.cli import upload_file
from services.forecast.app import build_app as build_forecast
from services.forecast.settings import ForecastSettings
from services.ingestion.app import build_app as build_ingestion
from services.ingestion.settings import IngestionSettings
from services.kit.clients import open_channel
from services.ports.bus import open_bus
from services.ports.cache import open_cache
from tests.conftest import DATA, REDIS_URL, fresh_pg_database

pytestmark = [pytest.mark.integration, pytest.mark.slow]

MATERIAL, SITE = "010932", "ALMOX-BA"  # a material with repeated real demand at the Bahia warehouse


@pytest.mark.timeout(300)
async def test_a_line_travels_from_ingestion_to_a_forecast_through_the_gateway(
    jwt_key: bytes, token_for: Callable[..., str], amqp_url: str, trained_repo: Path
) -> None:
    exchange = f"e2e.{uuid.uuid4().hex[:8]}"
    secret = {"jwt_secret": jwt_key.decode()}
    async with contextlib.AsyncExitStack() as stack:
        pg = await stack.enter_async_context(fresh_pg_database())
        bus = await open_bus(amqp_url, exchange=exchange)
        stack.push_async_callback(bus.close)
        cache = open_cache(REDIS_URL, prefix=f"e2e:{uuid.uuid4().hex}:")
        stack.push_async_callback(cache.close)

        ingestion = await build_ingestion(
            IngestionSettings(database_url=pg, port=0, **secret), bus=bus, jwt_key=jwt_key
        )
        await ingestion.start()
        stack.push_async_callback(ingestion.stop)
        ingestion_target = f"127.0.0.1:{ingestion.server.port}"

        analytics = await build_analytics(
            AnalyticsSettings(
                database_url=pg,
                port=0,
                duckdb_path=":memory:",
                ingestion_target=ingestion_target,
                replica_id=f"e2e-{uuid.uuid4().hex[:6]}",
                **secret,
            ),
            bus=bus,
            cache=cache,
            jwt_key=jwt_key,
        )
        await analytics.start()
        stack.push_async_callback(analytics.stop)
        analytics_target = f"127.0.0.1:{analytics.server.port}"

        forecast = await build_forecast(
            ForecastSettings(
                port=0, model_repository=trained_repo, analytics_target=analytics_target, **secret
            ),
            bus=bus,
            cache=cache,
            jwt_key=jwt_key,
        )
        await forecast.start()
        stack.push_async_callback(forecast.stop)

        gateway = await build_gateway(
            GatewaySettings(
                port=0,
                ingestion_target=ingestion_target,
                analytics_target=analytics_target,
                forecast_target=f"127.0.0.1:{forecast.port}",
                **secret,
            )
        )
        await gateway.start()
        stack.push_async_callback(gateway.stop)

        # The real export first, through the upload API, then one new requisition line.
        ingestor = token_for("ingestor")
        loaded = await upload_file(ingestion_target, ingestor, DATA / "dadosSuprimentos.xlsx", progress=False)
        assert loaded.counts.accepted > 4000
        line = rec.Record(
            consumption=rec.Consumption(
                requisition_id="E2E-1",
                line_key=f"{MATERIAL}#1",
                material_code=MATERIAL,
                site_code=SITE,
                supplier_code="FORNECEDOR E2E",
                quantity=37,
                unit="UN",
                solicited_date=common_pb2.Date(year=2025, month=9, day=3),
                purchase_date=common_pb2.Date(year=2025, month=9, day=10),
                family="MATERIAL ELETRICO",
            )
        )
        channel = open_channel(ingestion_target, token=ingestor)
        stack.push_async_callback(channel.close)
        answer = await ingestion_pb2_grpc.IngestionServiceStub(channel).SubmitBatch(
            ipb.SubmitBatchRequest(idempotency_key="e2e-line", records=[line])
        )
        assert answer.verdicts[0].verdict == ipb.VERDICT_ACCEPTED
        sequence = answer.verdicts[0].sequence

        # The event crossed RabbitMQ: analytics' demand series includes the line.
        planner = token_for("planner")
        achannel = open_channel(analytics_target, token=planner)
        stack.push_async_callback(achannel.close)
        analytics_stub = analytics_pb2_grpc.AnalyticsServiceStub(achannel)
        request = apb.GetDemandSeriesRequest(
            filter=common_pb2.Filter(
                material_codes=[MATERIAL],
                site_codes=[SITE],
                date_range=common_pb2.DateRange(
                    start=common_pb2.Date(year=2025, month=9, day=1),
                    end=common_pb2.Date(year=2025, month=9, day=7),
                ),
            ),
            grain=common_pb2.TIME_GRAIN_WEEK,
        )
        for _ in range(200):
            series = await analytics_stub.GetDemandSeries(request)
            if int(series.provenance.data_watermark.removeprefix("seq:")) >= sequence:
                break
            await asyncio.sleep(0.05)
        assert int(series.provenance.data_watermark.removeprefix("seq:")) >= sequence
        week = [p for p in series.points if (p.period_start.month, p.period_start.day) == (9, 1)]
        assert week and week[0].quantity >= 37

        # Forecast-serving answers through the gateway, with the model's provenance.
        async with httpx.AsyncClient(base_url=gateway.url, timeout=30) as http:
            reply = await http.get(
                "/api/v1/forecast",
                params={"material": MATERIAL, "site": SITE, "horizon": 4},
                headers={"authorization": f"Bearer {planner}"},
            )
        assert reply.status_code == 200, reply.text
        body = reply.json()
        assert body["provenance"]["model_name"] == "demand_forecast"
        assert body["provenance"]["model_version"] == "1"
        assert int(body["provenance"]["data_watermark"].removeprefix("seq:")) >= sequence
        assert len(body["weeks"]) == 4
        for week_forecast in body["weeks"]:
            values = [q["value"] for q in week_forecast["quantiles"]]
            assert values == sorted(values) and values[-1] >= 0
