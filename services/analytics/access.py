"""Who may call what on AnalyticsService. Kept apart from the app so that a caller that only needs the
rules (the gateway checks them per route) does not import DuckDB and the read model."""

from __future__ import annotations

from novacorrente.analytics.v1 import analytics_pb2

from services.kit.auth import PLAN, READ, MethodPolicy

__all__ = ["SERVICE_NAME", "policy"]

SERVICE_NAME = analytics_pb2.DESCRIPTOR.services_by_name["AnalyticsService"].full_name
_PLAN_METHODS = ("AcknowledgeAlert", "ResolveAlert")


def policy() -> MethodPolicy:
    methods = analytics_pb2.DESCRIPTOR.services_by_name["AnalyticsService"].methods
    return MethodPolicy(
        {f"/{SERVICE_NAME}/{m.name}": (PLAN if m.name in _PLAN_METHODS else READ) for m in methods}
    )
