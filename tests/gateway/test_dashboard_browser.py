"""The dashboard in headless Chromium (DevTools protocol over a pipe, see cdp.py), against a running gateway.

Upstreams: the real ingestion service (DuckDB, in-memory bus) and the analytics/forecast doubles; the
analytics double raises an alert when an ingested stock count reaches a reorder point, so the alert a
planner sees arrives through ingestion -> bus -> WatchAlerts -> server-sent events, without a reload.

Screenshots go to a temporary directory; set NOVA_SCREENSHOT_DIR=docs/screenshots to refresh the committed
ones. Chromium comes from Debian (gateway/tests_browser_setup.sh installs it).
"""

from __future__ import annotations

import asyncio
import json
import os
import uuid
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from pathlib import Path

import grpc
import pytest
from novacorrente.common.v1 import common_pb2 as cpb
from novacorrente.ingestion.v1 import ingestion_pb2 as ipb
from novacorrente.ingestion.v1 import ingestion_pb2_grpc
from novacorrente.ingestion.v1 import records_pb2 as rec

from gateway.server import GatewayServer, build_gateway
from gateway.settings import GatewaySettings
from services.ingestion.app import build_app
from services.ingestion.settings import IngestionSettings
from services.kit.auth import MethodPolicy
from services.ports.bus import open_bus
from tests.conftest import bearer
from tests.gateway.cdp import CHROMIUM, Chromium, Page
from tests.gateway.peers import DOUBLE_POLICY, Peers, start_peers

pytestmark = pytest.mark.skipif(
    os.environ.get("NOVA_SKIP_BROWSER_TESTS") == "1", reason="NOVA_SKIP_BROWSER_TESTS=1"
)

LAPTOP = (1366, 900)
PHONE = (390, 844)


@dataclass
class Stack:
    gateway: GatewayServer
    peers: Peers
    ingestion: ingestion_pb2_grpc.IngestionServiceStub
    ingestor_token: str
    passwords: dict[str, str]


@pytest.fixture
async def stack(
    tmp_path: Path,
    jwt_key: bytes,
    token_for: Callable[..., str],
    users_file: tuple[Path, dict[str, str]],
) -> AsyncIterator[Stack]:
    from services.ingestion.app import policy as ingestion_policy

    bus = await open_bus(f"memory://gateway-browser-{uuid.uuid4().hex}")
    ingestion = await build_app(
        IngestionSettings(database_url=f"duckdb:///{tmp_path}/sor.duckdb", port=0, jwt_secret=jwt_key.hex()),
        bus=bus,
        jwt_key=jwt_key,
    )
    await ingestion.start()
    peers = await start_peers(jwt_key, ingestion=False)
    subscription = await peers.analytics.watch_bus(bus)
    ingestion_channel = grpc.aio.insecure_channel(f"127.0.0.1:{ingestion.server.port}")
    settings = GatewaySettings(
        host="127.0.0.1",
        port=0,
        jwt_secret=jwt_key.hex(),
        users_file=users_file[0],
        ingestion_target=f"127.0.0.1:{ingestion.server.port}",
        analytics_target=peers.target,
        forecast_target=peers.target,
        grace_seconds=1,
        sse_heartbeat_seconds=1,
    )
    policy = MethodPolicy(dict(DOUBLE_POLICY.rules)).merged(ingestion_policy())
    gateway = await build_gateway(settings, policy=policy, jwt_key=jwt_key)
    await gateway.start()
    try:
        yield Stack(
            gateway=gateway,
            peers=peers,
            ingestion=ingestion_pb2_grpc.IngestionServiceStub(ingestion_channel),
            ingestor_token=token_for("ingestor"),
            passwords=users_file[1],
        )
    finally:
        await gateway.stop()
        await subscription.stop()
        await ingestion_channel.close()
        await peers.stop()
        await ingestion.stop()
        await bus.close()


def _screenshot_dir(tmp_path: Path) -> Path:
    return Path(os.environ.get("NOVA_SCREENSHOT_DIR") or tmp_path)


async def _login(page: Page, stack: Stack, user: str = "planner") -> None:
    await page.goto(stack.gateway.url + "/")
    await page.wait_for("document.querySelector('#login-user') !== null")
    await page.fill("#login-user", user)
    await page.fill("#login-password", stack.passwords[user])
    await page.click("#login-submit")
    await page.wait_for("document.querySelectorAll('#kpis .card').length > 0")


async def test_planner_flow(stack: Stack, tmp_path: Path) -> None:
    assert os.access(CHROMIUM, os.X_OK), f"{CHROMIUM} missing: run gateway/tests_browser_setup.sh"
    shots = _screenshot_dir(tmp_path)
    async with Chromium.launch() as browser:
        page = await browser.new_page(width=LAPTOP[0], height=LAPTOP[1])
        await _login(page, stack)

        # Overview: KPI cards carry provenance; the risk table and freshness panel load.
        cards = await page.evaluate("document.querySelectorAll('#kpis .card').length")
        assert cards == 8
        provenance = await page.evaluate("document.querySelector('#kpis .card .provenance').textContent")
        assert "seq:4207" in provenance and "atualizado em" in provenance
        await page.wait_for("document.querySelectorAll('#overview-risk tbody tr').length > 0")
        await page.wait_for("document.querySelector('#overview-freshness').textContent.includes('seq:')")
        await page.wait_for("document.getElementById('live-dot').dataset.state === 'on'")
        await asyncio.sleep(0.3)  # let the layout settle before the picture
        png = await page.screenshot(shots / "overview.png")
        assert png.startswith(b"\x89PNG")

        # A material: the chart, the stock gauge and the reorder policy decomposition.
        await page.evaluate("window.__sameDocument = true")
        await page.evaluate(
            "[...document.querySelectorAll('#overview-risk tbody tr')]"
            ".find((tr) => tr.textContent.includes('010601')).click()"
        )
        await page.wait_for("location.hash.includes('material=010601')")
        await page.wait_for("document.querySelector('#demand-chart canvas') !== null")
        assert await page.evaluate("document.querySelector('#demand-chart canvas').width > 0")
        await page.wait_for("document.querySelector('#stock-gauge') !== null")
        await page.wait_for("document.querySelector('#rop-stack') !== null")
        await page.wait_for("document.querySelector('#series-forecast table') !== null")
        subtitle = await page.wait_for("document.querySelector('#series-subtitle').textContent")
        assert "CABO DE COBRE" in subtitle
        await page.screenshot(shots / "series.png")

        # An ingested stock count below the reorder point raises an alert that reaches the open page.
        before = await page.evaluate("Number(document.getElementById('bell-count').textContent)")
        reply = await stack.ingestion.SubmitBatch(
            ipb.SubmitBatchRequest(
                idempotency_key=uuid.uuid4().hex,
                source="browser-test",
                records=[
                    rec.Record(
                        stock_snapshot=rec.StockSnapshot(
                            material_code="010601",
                            site_code="ALMOX-BA",
                            on_hand=30,
                            as_of=cpb.Date(year=2025, month=10, day=20),
                            simulated=True,
                        )
                    )
                ],
            ),
            metadata=bearer(stack.ingestor_token),
        )
        assert reply.counts.accepted == 1, reply
        await page.wait_for(f"Number(document.getElementById('bell-count').textContent) === {before + 1}")
        assert await page.evaluate("window.__sameDocument === true"), "the page reloaded"
        await page.wait_for("document.querySelectorAll('#series-alerts .bell-item').length === 1")
        alert_id = next(iter(stack.peers.analytics.alerts))
        # Said in the page's language from the alert's fields (the service's own message is English).
        text = await page.evaluate("document.querySelector('#series-alerts .bell-item').textContent")
        assert "010601 em ALMOX-BA: posição de estoque 30 atingiu o ponto de pedido" in text, text

        # Acknowledge it from the bell.
        await page.click("#bell")
        await page.wait_for(
            f"document.querySelector('#bell-panel button.ack[data-alert=\"{alert_id}\"]') !== null"
        )
        await page.click(f'#bell-panel button.ack[data-alert="{alert_id}"]')
        await page.wait_for(f"Number(document.getElementById('bell-count').textContent) === {before}")
        alert = stack.peers.analytics.alerts[alert_id]
        assert alert.state == 2 and alert.history[-1].actor == "planner"

        # English switch, then the inventory, alerts, external factors and model pages.
        await page.click("#lang")
        await page.wait_for("document.querySelector('[data-route=overview]').textContent === 'Overview'")
        await page.evaluate("location.hash = '#/inventory'")
        await page.wait_for("document.querySelectorAll('#inventory-table tbody tr').length === 4")
        first = await page.evaluate("document.querySelector('#inventory-table tbody tr').textContent")
        assert "010601" in first  # highest risk first (the stock count above made it critical)
        # That count was marked simulated: the table says its positions are not counts.
        note = await page.evaluate("document.querySelector('#inventory-table .simulated-note')?.textContent")
        assert note and note.startswith("Simulated stock")
        await page.evaluate("location.hash = '#/alerts?state=acknowledged'")
        await page.wait_for(f"document.querySelector('#alerts-list [data-alert=\"{alert_id}\"]') !== null")
        await page.evaluate("location.hash = '#/external'")
        await page.wait_for("document.querySelectorAll('#external-charts canvas').length >= 1")
        await page.evaluate("location.hash = '#/models'")
        await page.wait_for("document.querySelectorAll('#backtest tbody tr').length === 3")
        assert "lightgbm-quantile" in await page.evaluate("document.querySelector('#backtest').textContent")

        assert page.errors() == []


async def test_phone_layout_and_viewer_role(stack: Stack, tmp_path: Path) -> None:
    async with Chromium.launch() as browser:
        page = await browser.new_page(width=PHONE[0], height=PHONE[1], mobile=True)
        await _login(page, stack, "viewer")
        # Nothing wider than the screen, and the menu collapses behind its toggle.
        assert await page.evaluate("document.documentElement.scrollWidth <= window.innerWidth")
        assert await page.evaluate("getComputedStyle(document.getElementById('nav')).display") == "none"
        await page.click("#menu-toggle")
        assert await page.evaluate("getComputedStyle(document.getElementById('nav')).display") == "flex"
        await page.screenshot(_screenshot_dir(tmp_path) / "overview-phone.png")

        # A viewer sees alerts but gets no acknowledge button.
        stack.peers.analytics.raise_alert("040220", "ALMOX-BA")
        await page.wait_for("Number(document.getElementById('bell-count').textContent) === 1")
        await page.click("#bell")
        await page.wait_for("document.querySelectorAll('#bell-panel .bell-item').length === 1")
        assert await page.evaluate("document.querySelectorAll('#bell-panel button.ack').length") == 0

        # Signing out ends the session and the stream.
        await page.click("#logout")
        await page.wait_for("document.querySelector('#login-user') !== null")
        assert await page.evaluate("sessionStorage.getItem('nova.session')") is None
        assert page.errors() == []


async def test_wrong_password_shows_error(stack: Stack) -> None:
    async with Chromium.launch() as browser:
        page = await browser.new_page()
        await page.goto(stack.gateway.url + "/")
        await page.wait_for("document.querySelector('#login-user') !== null")
        await page.fill("#login-user", "planner")
        await page.fill("#login-password", "not-the-password")
        await page.click("#login-submit")
        text = await page.wait_for(
            "(() => { const e = document.querySelector('.login .error');"
            " return e && !e.hidden && e.textContent })()"
        )
        assert text == "Usuário ou senha incorretos."
        # The failed login is an expected 401 the page handles; only that resource error may be logged.
        assert all("401" in e for e in page.errors()), json.dumps(page.errors())
