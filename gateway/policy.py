"""Which roles may call which upstream method: the services' own policies, not a copy.

Each HTTP route names the one gRPC method it maps to; the gateway authorizes the caller with the very
``MethodPolicy`` the service enforces, so the two cannot drift, and a 403 from the gateway means the same as
a PERMISSION_DENIED from the service (which is still checked upstream: the gateway forwards the caller's own
token and never calls with privileges of its own).
"""

from __future__ import annotations

from novacorrente.analytics.v1 import analytics_pb2
from novacorrente.forecast.v1 import forecast_pb2
from novacorrente.ingestion.v1 import ingestion_pb2

from services.analytics.access import policy as analytics_policy
from services.forecast.access import policy as forecast_policy
from services.ingestion.access import policy as ingestion_policy
from services.kit.auth import MethodPolicy

__all__ = ["ANALYTICS", "FORECAST", "INGESTION", "method", "upstream_policy"]

ANALYTICS = analytics_pb2.DESCRIPTOR.services_by_name["AnalyticsService"].full_name
FORECAST = forecast_pb2.DESCRIPTOR.services_by_name["ForecastService"].full_name
INGESTION = ingestion_pb2.DESCRIPTOR.services_by_name["IngestionService"].full_name


def method(service: str, name: str) -> str:
    """Full gRPC method name, checked against the service descriptor so a typo fails at import."""
    for module in (analytics_pb2, forecast_pb2, ingestion_pb2):
        for descriptor in module.DESCRIPTOR.services_by_name.values():
            if descriptor.full_name == service:
                if name not in descriptor.methods_by_name:
                    raise ValueError(f"{service} has no method {name}")
                return f"/{service}/{name}"
    raise ValueError(f"unknown service {service}")


def upstream_policy() -> MethodPolicy:
    """The union of the ingestion, analytics and forecast policies (each service's `access` module, which
    imports no store or model runtime)."""
    return ingestion_policy().merged(analytics_policy()).merged(forecast_policy())
