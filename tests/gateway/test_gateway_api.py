"""Each route maps its query to the one gRPC request and the answer back, provenance included."""

from __future__ import annotations

from collections.abc import Callable

import httpx
import pytest

from gateway import converters
from gateway import models as m
from tests.gateway.peers import Peers

Auth = Callable[[str], dict[str, str]]


async def test_kpis_with_names_and_provenance(client: httpx.AsyncClient, auth: Auth) -> None:
    r = await client.get(
        "/api/v1/kpis", params={"name": ["fill_rate", "lead_time_p90_days"]}, headers=auth("viewer")
    )
    assert r.status_code == 200
    body = m.KpisOut.model_validate(r.json())
    assert [k.name for k in body.kpis] == ["fill_rate", "lead_time_p90_days"]
    fill = body.kpis[0]
    assert fill.available is False and fill.value is None and fill.note
    assert body.provenance.data_watermark == "seq:4207"
    assert body.provenance.generated_at is not None and body.provenance.generated_at.tzinfo is not None
    assert r.headers["cache-control"] == "no-store"


async def test_demand_series_with_forecast_band(client: httpx.AsyncClient, auth: Auth) -> None:
    params = {"material": "010601", "site": "ALMOX-BA", "grain": "week", "start": "2025-01-01"}
    body = m.DemandSeriesOut.model_validate(
        (await client.get("/api/v1/demand", params=params, headers=auth("viewer"))).json()
    )
    actual = [p for p in body.points if not p.is_forecast]
    ahead = [p for p in body.points if p.is_forecast]
    assert len(actual) == 20 and len(ahead) == 8
    assert [q.level for q in ahead[0].forecast] == [0.5, 0.8, 0.9, 0.95]
    assert body.unit == "M"
    assert (body.provenance.model_name, body.provenance.model_version) == ("demand_forecast", "3")


async def test_inventory_filters_paging_and_unbounded_cover(
    client: httpx.AsyncClient, auth: Auth, peers: Peers
) -> None:
    r = await client.get("/api/v1/inventory", params={"min_status": "critical"}, headers=auth("viewer"))
    rows = m.InventoryPage.model_validate(r.json()).rows
    assert [(x.material_code, x.status) for x in rows] == [("020310", "critical")]

    first = (await client.get("/api/v1/inventory", params={"page_size": 3}, headers=auth("viewer"))).json()
    assert len(first["rows"]) == 3 and first["page"]["total_size"] == 4
    risks = [row["risk"] for row in first["rows"]]
    assert risks == sorted(risks, reverse=True)
    second = await client.get(
        "/api/v1/inventory",
        params={"page_size": 3, "page_token": first["page"]["next_page_token"]},
        headers=auth("viewer"),
    )
    assert len(second.json()["rows"]) == 1 and second.json()["page"]["next_page_token"] == ""

    peers.analytics.rows[0].weekly = 0  # no demand: infinite cover, which JSON cannot carry
    row = (
        await client.get("/api/v1/inventory", params={"material": "010601"}, headers=auth("viewer"))
    ).json()["rows"][0]
    assert row["days_of_cover"] is None and row["simulated"] is False
    peers.analytics.rows[0].simulated = True  # a position resting on simulated stock records says so
    row = (
        await client.get("/api/v1/inventory", params={"material": "010601"}, headers=auth("viewer"))
    ).json()["rows"][0]
    assert row["simulated"] is True


async def test_alert_lifecycle(
    client: httpx.AsyncClient, auth: Auth, peers: Peers, token_for: Callable[..., str]
) -> None:
    raised = peers.analytics.raise_alert("020310", "ALMOX-BA")
    listed = (await client.get("/api/v1/alerts", params={"state": "open"}, headers=auth("viewer"))).json()
    assert [a["alert_id"] for a in listed["alerts"]] == [raised.alert_id]

    planner = {"Authorization": f"Bearer {token_for('planner', subject='joana')}"}
    ack = await client.post(
        f"/api/v1/alerts/{raised.alert_id}/acknowledge", json={"comment": "pedido"}, headers=planner
    )
    assert ack.status_code == 200
    alert = m.AlertOut.model_validate(ack.json())
    assert alert.state == "acknowledged"
    assert (alert.history[-1].actor, alert.history[-1].comment) == ("joana", "pedido")

    resolved = await client.post(
        f"/api/v1/alerts/{raised.alert_id}/resolve", headers=planner
    )  # body optional
    assert resolved.json()["state"] == "resolved"
    again = await client.post(f"/api/v1/alerts/{raised.alert_id}/acknowledge", headers=planner)
    assert again.status_code == 409 and again.json()["error"]["reason"] == "ALERT_RESOLVED"
    missing = await client.post("/api/v1/alerts/nope/acknowledge", headers=planner)
    assert missing.status_code == 404
    too_long = await client.post(
        f"/api/v1/alerts/{raised.alert_id}/acknowledge", json={"comment": "x" * 2001}, headers=planner
    )
    assert too_long.status_code == 400
    assert (
        await client.get("/api/v1/alerts", params={"state": "closed"}, headers=auth("viewer"))
    ).status_code == 400


async def test_master_data_search(client: httpx.AsyncClient, auth: Auth) -> None:
    materials = (await client.get("/api/v1/materials", params={"q": "cabo"}, headers=auth("viewer"))).json()
    assert [x["code"] for x in materials["materials"]] == ["010601"]
    assert materials["materials"][0]["criticality"] == "high"
    sites = (await client.get("/api/v1/sites", params={"q": "torre"}, headers=auth("viewer"))).json()["sites"]
    assert [(s["code"], s["site_type"]) for s in sites] == [("TORRE-SSA-0042", "tower")]
    suppliers = (await client.get("/api/v1/suppliers", headers=auth("viewer"))).json()["suppliers"]
    assert suppliers[0]["lead_time_p50_days"] == 6


async def test_external_series(client: httpx.AsyncClient, auth: Auth) -> None:
    catalog = (await client.get("/api/v1/external-series", headers=auth("viewer"))).json()
    assert {s["series_id"] for s in catalog["series"]} >= {"ptax.usd.sell"}
    assert all(s["dates"] == [] for s in catalog["series"])
    one = (
        await client.get(
            "/api/v1/external-series", params={"series": "ptax.usd.sell"}, headers=auth("viewer")
        )
    ).json()
    series = one["series"][0]
    assert len(series["dates"]) == len(series["values"]) == 26 and series["unit"] == "BRL"
    unknown = await client.get("/api/v1/external-series", params={"series": "nope"}, headers=auth("viewer"))
    assert unknown.status_code == 404


async def test_forecast_policy_and_models(client: httpx.AsyncClient, auth: Auth) -> None:
    params = {"material": "010601", "site": "ALMOX-BA", "horizon": 12}
    forecast = m.ForecastOut.model_validate(
        (await client.get("/api/v1/forecast", params=params, headers=auth("viewer"))).json()
    )
    assert len(forecast.weeks) == 12
    assert forecast.series.level == "material_site" and forecast.series.material_code == "010601"
    assert forecast.demand_class == "intermittent"
    family = (
        await client.get(
            "/api/v1/forecast", params={"level": "family", "family": "EPI"}, headers=auth("viewer")
        )
    ).json()
    assert family["series"]["level"] == "family" and family["series"]["family"] == "EPI"

    policy = m.ReorderPolicyOut.model_validate(
        (
            await client.get(
                "/api/v1/reorder-policy",
                params={"material": "010601", "site": "ALMOX-BA"},
                headers=auth("viewer"),
            )
        ).json()
    )
    d = policy.decomposition
    assert d.expected_lead_time_demand + d.demand_part + d.lead_time_variability_part == policy.reorder_point
    assert policy.suggested_order_date is not None

    models = m.ModelsOut.model_validate(
        (await client.get("/api/v1/models", headers=auth("viewer"))).json()
    ).models
    assert models[0].serving and isinstance(models[0].metrics, dict)
    assert "lightgbm-quantile" in models[0].metrics["metrics"]  # type: ignore[index]
    assert models[1].state == "refused" and models[1].metrics is None


async def test_watermarks(client: httpx.AsyncClient, auth: Auth) -> None:
    read_model = (await client.get("/api/v1/watermark", headers=auth("viewer"))).json()
    committed = (await client.get("/api/v1/ingestion/watermark", headers=auth("viewer"))).json()
    assert read_model == {"sequence": 4207, "data_watermark": "seq:4207"}
    assert committed["sequence"] >= read_model["sequence"]


async def test_probes_and_metrics(client: httpx.AsyncClient, auth: Auth) -> None:
    assert (await client.get("/healthz")).json() == {"status": "ok"}
    ready = await client.get("/readyz")
    assert ready.status_code == 200
    assert ready.json() == {
        "status": "ready",
        "upstreams": {"ingestion": "SERVING", "analytics": "SERVING", "forecast": "SERVING"},
    }
    await client.get("/api/v1/kpis", headers=auth("viewer"))
    await client.get("/api/v1/this/does/not/exist")
    text = (await client.get("/metrics")).text
    assert 'nova_http_requests_total{method="GET",route="/api/v1/kpis",status="200"} 1.0' in text
    assert 'route="unmatched",status="404"' in text
    assert (
        'nova_gateway_upstream_calls_total{code="OK",method="/novacorrente.analytics.v1.AnalyticsService/GetKpis"}'
        in text
    )


async def test_dashboard_is_served_with_a_strict_policy(client: httpx.AsyncClient) -> None:
    index = await client.get("/")
    assert index.status_code == 200 and '<main id="view"' in index.text
    csp = index.headers["content-security-policy"]
    assert "script-src 'self'" in csp and "unsafe-inline" not in csp
    for asset in ("/static/js/app.js", "/static/app.css", "/static/vendor/uPlot.iife.min.js"):
        assert (await client.get(asset)).status_code == 200, asset
    # No CDN at run time: every script and stylesheet the page names is served from here.
    assert "http" not in "".join(
        line for line in index.text.splitlines() if "src=" in line or "href=" in line
    )


@pytest.mark.parametrize("kind", sorted(converters.ENUM_PREFIXES))
def test_enum_literals_match_the_protos(kind: str) -> None:
    wrapper, prefix = converters.ENUM_PREFIXES[kind]
    names = {n.removeprefix(prefix).lower() for n in wrapper.keys()}
    literal = {
        "stock_status": m.StockStatusName,
        "alert_kind": m.AlertKindName,
        "alert_state": m.AlertStateName,
        "criticality": m.CriticalityName,
        "site_type": m.SiteTypeName,
        "demand_class": m.DemandClassName,
        "aggregation_level": m.AggregationLevelName,
        "time_grain": m.TimeGrainName,
    }[kind]
    expected = names - {"unspecified"} if kind == "time_grain" else names
    assert set(literal.__args__) == expected  # type: ignore[attr-defined]
