"""Mutual TLS across the stack: the gateway serves HTTPS and reaches forecast-serving with its client
certificate; a gateway without a certificate, or with one from another CA, is refused by the service."""

from __future__ import annotations

import ssl
from collections.abc import Callable
from pathlib import Path

import httpx

from gateway.server import build_gateway
from gateway.settings import GatewaySettings
from services.forecast.app import build_app as build_forecast
from services.forecast.settings import ForecastSettings
from tests.kit.test_kit_mtls import pki  # noqa: F401  (the certificate fixture)


async def _list_models(settings: GatewaySettings, ca: Path, token: str) -> httpx.Response:
    gateway = await build_gateway(settings)
    await gateway.start()
    try:
        async with httpx.AsyncClient(
            base_url=gateway.url, verify=ssl.create_default_context(cafile=ca), timeout=30
        ) as http:
            return await http.get("/api/v1/models", headers={"authorization": f"Bearer {token}"})
    finally:
        await gateway.stop()


async def test_gateway_reaches_forecast_only_with_a_certificate_from_the_platform_ca(
    pki: Path,  # noqa: F811
    trained_repo: Path,
    jwt_key: bytes,
    token_for: Callable[..., str],
) -> None:
    forecast = await build_forecast(
        ForecastSettings(
            port=0,
            model_repository=trained_repo,
            consume_events=False,
            tls_cert_file=pki / "server.crt",
            tls_key_file=pki / "server.key",
            tls_ca_file=pki / "ca.crt",
        ),
        jwt_key=jwt_key,
    )
    await forecast.start()
    planner = token_for("planner")

    def gateway(cert: str | None, ca: str = "ca") -> GatewaySettings:
        tls = {"tls_ca_file": pki / f"{ca}.crt"}
        if cert:
            tls |= {"tls_cert_file": pki / f"{cert}.crt", "tls_key_file": pki / f"{cert}.key"}
        return GatewaySettings(
            port=0,
            host="localhost",
            forecast_target=f"localhost:{forecast.port}",
            jwt_secret=jwt_key.decode(),
            request_timeout_seconds=5,
            **tls,
        )

    try:
        served = await _list_models(gateway("gateway"), pki / "ca.crt", planner)
        assert served.status_code == 200, served.text
        assert served.json()["models"][0]["name"] == "demand_forecast"
        async with httpx.AsyncClient(verify=False, timeout=30) as http:  # plaintext gateway, no client cert
            gw = await build_gateway(gateway(None))
            await gw.start()
            try:
                refused = await http.get(
                    f"{gw.url}/api/v1/models", headers={"authorization": f"Bearer {planner}"}
                )
            finally:
                await gw.stop()
        assert refused.status_code in (502, 503), refused.text
        intruder = await _list_models(gateway("intruder", ca="other-ca"), pki / "other-ca.crt", planner)
        assert intruder.status_code in (502, 503), intruder.text
    finally:
        await forecast.stop()
