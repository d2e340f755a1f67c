"""The one place where gRPC statuses become HTTP statuses, and the error body every failure shares.

Upstream errors (``grpc.aio.AioRpcError``), the gateway's own domain errors (auth, login) and request
validation all end in ``ApiError``, rendered by ``error_response`` as::

    {"error": {"status": 400, "code": "INVALID_ARGUMENT", "message": "...", "reason": "...",
               "request_id": "...", "field_violations": [{"field": "...", "description": "..."}],
               "retry_after_seconds": 1.0}}

``google.rpc`` details travel along: ``BadRequest`` becomes ``field_violations``, ``RetryInfo`` becomes
``retry_after_seconds`` and the ``Retry-After`` header, ``ErrorInfo.reason`` becomes ``reason``. A 503 always
carries Retry-After: ``UNAVAILABLE_RETRY_AFTER_SECONDS`` when the upstream gave no RetryInfo.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field

import grpc
from fastapi.responses import JSONResponse
from google.rpc import error_details_pb2, status_pb2
from grpc_status import rpc_status

from gateway.models import ErrorBody, ErrorDetail, FieldViolationOut
from services.kit.errors import DomainError
from services.kit.logging import request_id_var

__all__ = [
    "HTTP_STATUS",
    "UNAVAILABLE_RETRY_AFTER_SECONDS",
    "ApiError",
    "error_response",
    "from_domain_error",
    "from_rpc_error",
    "http_status",
]

C = grpc.StatusCode

HTTP_STATUS: Mapping[grpc.StatusCode, int] = {
    C.OK: 200,
    C.INVALID_ARGUMENT: 400,
    # google.rpc documents OUT_OF_RANGE as INVALID_ARGUMENT for a value that may become valid later.
    C.OUT_OF_RANGE: 400,
    C.UNAUTHENTICATED: 401,
    C.PERMISSION_DENIED: 403,
    C.NOT_FOUND: 404,
    C.ALREADY_EXISTS: 409,
    C.ABORTED: 409,
    C.FAILED_PRECONDITION: 409,
    C.RESOURCE_EXHAUSTED: 429,
    C.UNAVAILABLE: 503,
    C.DEADLINE_EXCEEDED: 504,
    # The upstream failed or does not know the method (version skew): the gateway itself is fine.
    C.INTERNAL: 502,
    C.UNKNOWN: 502,
    C.DATA_LOSS: 502,
    C.UNIMPLEMENTED: 502,
    C.CANCELLED: 502,
}
"""gRPC status code -> HTTP status. The gateway's own unexpected failures are 500 (see ``app``)."""


UNAVAILABLE_RETRY_AFTER_SECONDS = 1.0
"""Retry-After of a 503 whose cause named no delay (an unreachable upstream, a bare UNAVAILABLE): UNAVAILABLE
is the status gRPC calls retryable, and a short wait spares the upstream a burst of immediate retries."""


def http_status(code: grpc.StatusCode) -> int:
    return HTTP_STATUS.get(code, 500)


@dataclass
class ApiError(Exception):
    """A failure on its way to the client, whatever produced it."""

    code: grpc.StatusCode
    message: str
    reason: str = ""
    field_violations: list[tuple[str, str]] = field(default_factory=list)
    retry_after_seconds: float | None = None
    status: int | None = None
    """HTTP status when it differs from the table (only for errors that never were gRPC statuses)."""
    code_name: str | None = None
    """Code shown in the body when it is not a gRPC code name (e.g. METHOD_NOT_ALLOWED)."""

    def __post_init__(self) -> None:
        super().__init__(self.message)

    @property
    def http_status(self) -> int:
        return self.status if self.status is not None else http_status(self.code)

    @property
    def advised_retry_after(self) -> float | None:
        """Seconds a client should wait before retrying: the upstream's RetryInfo, else a default on 503."""
        if self.retry_after_seconds is None and self.http_status == 503:
            return UNAVAILABLE_RETRY_AFTER_SECONDS
        return self.retry_after_seconds


def _from_status_proto(code: grpc.StatusCode, message: str, status: status_pb2.Status | None) -> ApiError:
    error = ApiError(code=code, message=message)
    if status is None:
        return error
    for detail in status.details:
        if detail.Is(error_details_pb2.ErrorInfo.DESCRIPTOR):
            info = error_details_pb2.ErrorInfo()
            detail.Unpack(info)
            error.reason = info.reason
        elif detail.Is(error_details_pb2.BadRequest.DESCRIPTOR):
            bad = error_details_pb2.BadRequest()
            detail.Unpack(bad)
            error.field_violations = [(v.field, v.description) for v in bad.field_violations]
        elif detail.Is(error_details_pb2.RetryInfo.DESCRIPTOR):
            retry = error_details_pb2.RetryInfo()
            detail.Unpack(retry)
            error.retry_after_seconds = retry.retry_delay.seconds + retry.retry_delay.nanos / 1e9
    return error


def from_rpc_error(exc: grpc.aio.AioRpcError) -> ApiError:
    """An upstream call failed: keep its code, message and google.rpc details."""
    try:
        status = rpc_status.from_call(exc)  # type: ignore[arg-type]
    except ValueError:  # details that disagree with the code/message: use the plain status
        status = None
    return _from_status_proto(exc.code(), exc.details() or exc.code().name, status)


def from_domain_error(exc: DomainError) -> ApiError:
    """One of the platform's domain errors raised in the gateway itself (auth, login)."""
    return _from_status_proto(exc.code, exc.message, exc.to_status())


def error_response(error: ApiError, *, headers: Mapping[str, str] | None = None) -> JSONResponse:
    """The HTTP response for ``error``: the shared body, Retry-After and WWW-Authenticate as they apply."""
    status = error.http_status
    retry_after = error.advised_retry_after
    body = ErrorBody(
        error=ErrorDetail(
            status=status,
            code=error.code_name or error.code.name,
            message=error.message,
            reason=error.reason,
            request_id=request_id_var.get() or "",
            field_violations=[FieldViolationOut(field=f, description=d) for f, d in error.field_violations],
            retry_after_seconds=retry_after,
        )
    )
    out = dict(headers or {})
    if retry_after is not None and status in (429, 503):
        # Retry-After takes whole seconds; round up so a client never retries too early.
        out["Retry-After"] = str(max(0, math.ceil(retry_after)))
    if status == 401:
        # RFC 6750 §3: tell the client which scheme to use, and that an expired token needs replacing.
        out["WWW-Authenticate"] = (
            'Bearer error="invalid_token"'
            if error.reason.startswith("TOKEN_") and error.reason != "TOKEN_MISSING"
            else "Bearer"
        )
    out.setdefault("Cache-Control", "no-store")
    return JSONResponse(body.model_dump(mode="json"), status_code=status, headers=out)
