"""gRPC statuses -> HTTP statuses, end to end: the double fails with a real status (details included) and the
gateway must answer with the mapped HTTP status, the shared error body and the headers."""

from __future__ import annotations

from collections.abc import Callable

import grpc
import httpx
import pytest

from gateway import converters
from gateway.app import create_app
from gateway.settings import GatewaySettings
from gateway.status import HTTP_STATUS, UNAVAILABLE_RETRY_AFTER_SECONDS
from services.kit.errors import (
    Aborted,
    AlreadyExists,
    DeadlineExceeded,
    FailedPrecondition,
    FieldViolation,
    InvalidArgument,
    NotFound,
    PermissionDenied,
    ResourceExhausted,
    Unauthenticated,
    Unavailable,
)
from tests.gateway.peers import DOUBLE_POLICY, FAIL, Failure

C = grpc.StatusCode

CASES: list[tuple[str, Failure, int]] = [
    ("invalid", InvalidArgument([FieldViolation("filter.date_range", "end is before start")]), 400),
    ("out_of_range", (C.OUT_OF_RANGE, "page past the end"), 400),
    ("unauthenticated", Unauthenticated("token expired", reason="TOKEN_EXPIRED"), 401),
    ("permission", PermissionDenied("no"), 403),
    ("not_found", NotFound("no such material", resource_type="material", resource_name="X"), 404),
    ("already_exists", AlreadyExists("exists"), 409),
    ("aborted", Aborted("conflict"), 409),
    ("precondition", FailedPrecondition("no model trained yet", reason="NO_MODEL"), 409),
    ("exhausted", ResourceExhausted("slow down", retry_after_seconds=2.2), 429),
    ("unavailable", Unavailable("database down", retry_after_seconds=7), 503),
    ("unavailable_bare", (C.UNAVAILABLE, "read model rebuilding"), 503),
    ("deadline", DeadlineExceeded("took too long"), 504),
    ("internal", (C.INTERNAL, "internal error (request id x)"), 502),
    ("unknown", (C.UNKNOWN, "?"), 502),
    ("unimplemented", (C.UNIMPLEMENTED, "no such method"), 502),
    ("data_loss", (C.DATA_LOSS, "lost"), 502),
]


def test_table_covers_every_status_code() -> None:
    assert set(HTTP_STATUS) == set(grpc.StatusCode)
    assert HTTP_STATUS[C.OK] == 200
    assert all(400 <= HTTP_STATUS[c] < 600 for c in grpc.StatusCode if c != C.OK)


@pytest.mark.parametrize(("name", "failure", "status"), CASES, ids=[c[0] for c in CASES])
async def test_status_mapping(
    client: httpx.AsyncClient, auth: Callable[[str], dict[str, str]], name: str, failure: Failure, status: int
) -> None:
    FAIL["GetKpis"] = failure
    response = await client.get("/api/v1/kpis", headers=auth("viewer"))
    assert response.status_code == status, response.text
    error = response.json()["error"]
    assert error["status"] == status
    assert error["request_id"] == response.headers["x-request-id"]
    expected_code = failure[0].name if isinstance(failure, tuple) else failure.code.name
    assert error["code"] == expected_code
    assert response.headers["cache-control"] == "no-store"
    if name == "invalid":
        assert error["field_violations"] == [
            {"field": "filter.date_range", "description": "end is before start"}
        ]
        assert error["reason"] == "INVALID_ARGUMENT"
    elif name == "exhausted":
        assert response.headers["retry-after"] == "3"  # rounded up
        assert error["retry_after_seconds"] == pytest.approx(2.2)
    elif name == "unavailable":
        assert response.headers["retry-after"] == "7"
    elif name == "unavailable_bare":  # no RetryInfo upstream: a 503 still says when to come back
        assert response.headers["retry-after"] == "1"
        assert error["retry_after_seconds"] == UNAVAILABLE_RETRY_AFTER_SECONDS == 1.0
    elif name == "precondition":
        assert error["reason"] == "NO_MODEL"
    else:
        assert "retry-after" not in response.headers
    if status == 401:
        assert "www-authenticate" in response.headers


async def test_unreachable_upstream_is_503(
    gateway_settings: GatewaySettings, jwt_key: bytes, auth: Callable[[str], dict[str, str]]
) -> None:
    # Nothing listens on port 9 (discard) on loopback: connection refused, retried, then UNAVAILABLE.
    settings = gateway_settings.model_copy(
        update={"analytics_target": "127.0.0.1:9", "request_timeout_seconds": 2}
    )
    app = create_app(settings, policy=DOUBLE_POLICY, jwt_key=jwt_key)
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://gw") as c:
        response = await c.get("/api/v1/kpis", headers=auth("viewer"))
        ready = await c.get("/readyz")
    await app.state.upstreams.close()
    assert response.status_code == 503
    assert response.json()["error"]["code"] == "UNAVAILABLE"
    assert response.headers["retry-after"] == "1"
    assert response.json()["error"]["retry_after_seconds"] == 1.0
    assert ready.status_code == 503
    assert ready.json()["status"] == "not_ready"
    assert ready.json()["upstreams"]["analytics"].startswith("UNREACHABLE")


async def test_gateway_bug_is_500_with_request_id(
    client: httpx.AsyncClient, auth: Callable[[str], dict[str, str]], monkeypatch: pytest.MonkeyPatch
) -> None:
    def broken(_: object) -> object:
        raise RuntimeError("converter bug")

    monkeypatch.setattr(converters, "kpis", broken)
    response = await client.get("/api/v1/kpis", headers=auth("viewer"), params={})
    assert response.status_code == 500
    body = response.json()["error"]
    assert body["code"] == "INTERNAL"
    assert response.headers["x-request-id"] in body["message"]
    assert "converter bug" not in response.text


async def test_request_id_is_kept_and_forwarded(
    client: httpx.AsyncClient, auth: Callable[[str], dict[str, str]]
) -> None:
    FAIL["GetKpis"] = (C.INTERNAL, "boom")
    response = await client.get("/api/v1/kpis", headers={**auth("viewer"), "X-Request-ID": "req-42"})
    assert response.headers["x-request-id"] == "req-42"
    assert response.json()["error"]["request_id"] == "req-42"
    unsafe = await client.get("/api/v1/kpis", headers={**auth("viewer"), "X-Request-ID": "bad id; x"})
    assert unsafe.headers["x-request-id"] != "bad id; x"


async def test_gateway_validation_errors_use_the_same_body(
    client: httpx.AsyncClient, auth: Callable[[str], dict[str, str]]
) -> None:
    response = await client.get("/api/v1/forecast", params={"horizon": "-1"}, headers=auth("viewer"))
    assert response.status_code == 400
    error = response.json()["error"]
    assert error["code"] == "INVALID_ARGUMENT"
    assert [v["field"] for v in error["field_violations"]] == ["query.horizon"]
    for params in ({"service_level": "nan"}, {"review_period_days": "inf"}):
        bad = await client.get("/api/v1/reorder-policy", params=params, headers=auth("viewer"))
        assert bad.status_code == 400, params
    assert (
        await client.get("/api/v1/inventory", params={"page_size": 2**31}, headers=auth("viewer"))
    ).status_code == 400
    assert (
        await client.get("/api/v1/demand", params={"grain": "year"}, headers=auth("viewer"))
    ).status_code == 400
    unknown = await client.get("/api/v1/nothing-here")
    assert unknown.status_code == 404
    assert unknown.json()["error"]["code"] == "NOT_FOUND"
    wrong_verb = await client.delete("/api/v1/kpis", headers=auth("viewer"))
    assert wrong_verb.status_code == 405
    assert wrong_verb.json()["error"]["code"] == "METHOD_NOT_ALLOWED"
