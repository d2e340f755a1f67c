"""What `make demo` runs, in-process: the embedded profile, the real data loaded through the
ingestion API, and a forecast for a real material answered through the gateway."""

from __future__ import annotations

import re
from pathlib import Path

import httpx
import pytest

from services.demo import Demo
from tests.conftest import DATA

pytestmark = pytest.mark.slow


@pytest.mark.timeout(300)
async def test_demo_loads_the_real_data_and_answers_a_forecast_through_the_gateway(
    tmp_path: Path, trained_repo: Path, jwt_key: bytes, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("NOVA_JWT_SECRET", jwt_key.decode())
    for name in ("NOVA_DATABASE_URL", "NOVA_BROKER_URL", "NOVA_CACHE_URL"):
        monkeypatch.delenv(name, raising=False)
    demo = Demo(
        models=trained_repo,
        state=tmp_path / ".nova",
        ports=dict.fromkeys(("ingestion", "analytics", "forecast", "gateway"), 0),
    )
    lines: list[str] = []
    try:
        await demo.start()
        await demo.load(DATA, echo=lines.append)
        export = next(line for line in lines if line.strip().startswith("dadosSuprimentos.xlsx:"))
        accepted = int(re.search(r"(\d+) accepted", export).group(1))  # type: ignore[union-attr]
        assert accepted > 4000, export
        assert any("simulated stock ledger" in line for line in lines)
        async with httpx.AsyncClient(base_url=demo.url, timeout=30) as http:
            login = await http.post(
                "/api/v1/login", json={"username": "planner", "password": demo.passwords["planner"]}
            )
            assert login.status_code == 200, login.text
            token = login.json()["access_token"]
            reply = await http.get(
                "/api/v1/forecast",
                params={"material": "010932", "site": "ALMOX-BA", "horizon": 4},
                headers={"authorization": f"Bearer {token}"},
            )
        assert reply.status_code == 200, reply.text
        body = reply.json()
        assert body["provenance"]["model_name"] == "demand_forecast"
        assert body["method"] and not body["fallback"]
        assert len(body["weeks"]) == 4

        # The re-forecast of the loaded data runs in the background: once settled, the read model holds a
        # reorder policy for most series and nothing is left without a forecast.
        pairs = await demo.wait_settled()
        assert pairs > 1000
        assert await demo.reforecast_missing() == 0
        # The in-process bus does not outlive a run: a series whose re-forecast was lost with it is found
        # and re-forecast by the next start.
        engine = demo.analytics.engine  # type: ignore[attr-defined]
        await engine.write(
            lambda job: job.cursor.execute(
                "DELETE FROM forecasts WHERE material_code = '010932' AND site_code = 'ALMOX-BA'"
            )
        )
        assert await demo.reforecast_missing() == 1
        await demo.wait_settled()
        count = "SELECT count(*) FROM forecasts WHERE material_code = '010932' AND site_code = 'ALMOX-BA'"
        assert await engine.read(lambda job: job.cursor.execute(count).fetchone()[0]) > 0
    finally:
        await demo.stop()
