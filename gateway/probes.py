"""Process and readiness probes, and the Prometheus endpoint. Open: no token (probes run without one)."""

from __future__ import annotations

from typing import Literal

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse, Response
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from gateway import models as m

__all__ = ["router"]

router = APIRouter()


@router.get("/healthz", response_model=m.HealthOut, summary="The process is up (liveness)")
async def healthz() -> m.HealthOut:
    return m.HealthOut(status="ok")


@router.get(
    "/readyz",
    response_model=m.ReadyOut,
    summary="Every upstream answers grpc.health.v1 SERVING (readiness)",
    responses={503: {"model": m.ReadyOut, "description": "An upstream is not serving, or shutdown began."}},
)
async def readyz(request: Request) -> JSONResponse:
    state = request.app.state
    upstreams = await state.upstreams.health()
    status: Literal["ready", "not_ready", "draining"] = "ready"
    if state.shutdown.is_set():
        status = "draining"
    elif any(s != "SERVING" for s in upstreams.values()):
        status = "not_ready"
    body = m.ReadyOut(status=status, upstreams=upstreams)
    return JSONResponse(
        body.model_dump(),
        status_code=200 if status == "ready" else 503,
        headers={"Cache-Control": "no-store"},
    )


@router.get("/metrics", include_in_schema=False)
async def metrics(request: Request) -> Response:
    return Response(generate_latest(request.app.state.metrics.registry), media_type=CONTENT_TYPE_LATEST)
