"""The domain error tree: the only exceptions a use case raises to signal a failure to its caller.

Every class carries the gRPC status code it maps to and knows how to render itself as a ``google.rpc.Status``
with machine-readable details, so that a single interceptor (``services.kit.interceptors``) is the one place
where errors become wire statuses:

    DomainError                         base; never raised directly
    ├── InvalidArgument                 INVALID_ARGUMENT   + google.rpc.BadRequest (field violations)
    ├── NotFound                        NOT_FOUND          + google.rpc.ResourceInfo
    ├── AlreadyExists                   ALREADY_EXISTS     + google.rpc.ResourceInfo
    ├── FailedPrecondition              FAILED_PRECONDITION
    ├── Aborted                         ABORTED            (conflict; retry the whole unit)
    ├── Unavailable                     UNAVAILABLE        + google.rpc.RetryInfo
    ├── ResourceExhausted               RESOURCE_EXHAUSTED + google.rpc.RetryInfo when a delay is known
    ├── Unauthenticated                 UNAUTHENTICATED
    ├── PermissionDenied                PERMISSION_DENIED
    └── DeadlineExceeded                DEADLINE_EXCEEDED

Every status also carries a ``google.rpc.ErrorInfo`` (reason, domain, metadata) so clients can branch on a
stable reason string rather than on the human message. ``from_status`` turns a received status back into the
matching class, which lets a service that calls another one re-raise the peer's error faithfully.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import ClassVar

import grpc
from google.protobuf import any_pb2, duration_pb2
from google.rpc import error_details_pb2, status_pb2

__all__ = [
    "ERROR_DOMAIN",
    "Aborted",
    "AlreadyExists",
    "DeadlineExceeded",
    "DomainError",
    "FailedPrecondition",
    "FieldViolation",
    "InvalidArgument",
    "NotFound",
    "PermissionDenied",
    "ResourceExhausted",
    "Unauthenticated",
    "Unavailable",
    "from_status",
]

ERROR_DOMAIN = "novacorrente"
"""``ErrorInfo.domain`` of every error raised by this platform."""


def _pack(message: object) -> any_pb2.Any:
    packed = any_pb2.Any()
    packed.Pack(message)  # type: ignore[arg-type]
    return packed


def _duration(seconds: float) -> duration_pb2.Duration:
    whole = int(seconds)
    return duration_pb2.Duration(seconds=whole, nanos=round((seconds - whole) * 1e9))


class DomainError(Exception):
    """Base of every expected failure of a use case.

    Args:
        message: human-readable text sent to the client as the status message; must not contain secrets.
        reason: stable UPPER_SNAKE_CASE identifier for ``ErrorInfo.reason``; defaults to the class's reason.
        metadata: extra string key/values for ``ErrorInfo.metadata`` (e.g. ``{"batch_id": "..."}``).
    """

    code: ClassVar[grpc.StatusCode] = grpc.StatusCode.UNKNOWN
    default_reason: ClassVar[str] = "UNKNOWN"

    def __init__(self, message: str, *, reason: str | None = None, metadata: Mapping[str, str] | None = None):
        super().__init__(message)
        self.message = message
        self.reason = reason or self.default_reason
        self.metadata: dict[str, str] = dict(metadata or {})

    def details(self) -> list[object]:
        """Detail messages packed into ``Status.details``; subclasses extend this."""
        return [error_details_pb2.ErrorInfo(reason=self.reason, domain=ERROR_DOMAIN, metadata=self.metadata)]

    def to_status(self) -> status_pb2.Status:
        """Render as the ``google.rpc.Status`` sent in the ``grpc-status-details-bin`` trailer."""
        return status_pb2.Status(
            code=self.code.value[0], message=self.message, details=[_pack(d) for d in self.details()]
        )

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.message!r}, reason={self.reason!r})"


@dataclass(frozen=True, slots=True)
class FieldViolation:
    """One invalid field of a request: ``field`` is a dotted path (``lines[3].quantity``)."""

    field: str
    description: str


class InvalidArgument(DomainError):
    """The request is malformed; it will fail the same way until the client changes it."""

    code = grpc.StatusCode.INVALID_ARGUMENT
    default_reason = "INVALID_ARGUMENT"

    def __init__(
        self,
        violations: Sequence[FieldViolation],
        message: str | None = None,
        *,
        reason: str | None = None,
        metadata: Mapping[str, str] | None = None,
    ):
        self.violations = list(violations)
        if message is None:
            message = "; ".join(f"{v.field}: {v.description}" for v in self.violations) or "invalid argument"
        super().__init__(message, reason=reason, metadata=metadata)

    def details(self) -> list[object]:
        bad_request = error_details_pb2.BadRequest(
            field_violations=[
                error_details_pb2.BadRequest.FieldViolation(field=v.field, description=v.description)
                for v in self.violations
            ]
        )
        return [*super().details(), bad_request]


class _ResourceError(DomainError):
    """An error about one named resource; adds ``google.rpc.ResourceInfo`` when the resource is given."""

    def __init__(
        self,
        message: str,
        *,
        resource_type: str = "",
        resource_name: str = "",
        reason: str | None = None,
        metadata: Mapping[str, str] | None = None,
    ):
        super().__init__(message, reason=reason, metadata=metadata)
        self.resource_type = resource_type
        self.resource_name = resource_name

    def details(self) -> list[object]:
        extra: list[object] = []
        if self.resource_type or self.resource_name:
            extra.append(
                error_details_pb2.ResourceInfo(
                    resource_type=self.resource_type, resource_name=self.resource_name
                )
            )
        return [*super().details(), *extra]


class NotFound(_ResourceError):
    """The addressed resource does not exist."""

    code = grpc.StatusCode.NOT_FOUND
    default_reason = "NOT_FOUND"


class AlreadyExists(_ResourceError):
    """The resource the client tried to create already exists."""

    code = grpc.StatusCode.ALREADY_EXISTS
    default_reason = "ALREADY_EXISTS"


class FailedPrecondition(DomainError):
    """The system is not in a state required for the operation (e.g. no model trained yet)."""

    code = grpc.StatusCode.FAILED_PRECONDITION
    default_reason = "FAILED_PRECONDITION"


class Aborted(DomainError):
    """A concurrency conflict (optimistic lock, transaction abort); retry the whole read-modify-write."""

    code = grpc.StatusCode.ABORTED
    default_reason = "ABORTED"


class _RetryableError(DomainError):
    """An error that may succeed later; adds ``google.rpc.RetryInfo`` when a delay is known."""

    def __init__(
        self,
        message: str,
        *,
        retry_after_seconds: float | None = None,
        reason: str | None = None,
        metadata: Mapping[str, str] | None = None,
    ):
        super().__init__(message, reason=reason, metadata=metadata)
        self.retry_after_seconds = retry_after_seconds

    def details(self) -> list[object]:
        extra: list[object] = []
        if self.retry_after_seconds is not None:
            extra.append(error_details_pb2.RetryInfo(retry_delay=_duration(self.retry_after_seconds)))
        return [*super().details(), *extra]


class Unavailable(_RetryableError):
    """A dependency (database, broker, peer service) is down; the client should back off and retry."""

    code = grpc.StatusCode.UNAVAILABLE
    default_reason = "UNAVAILABLE"

    def __init__(
        self,
        message: str = "service unavailable",
        *,
        retry_after_seconds: float | None = 1.0,
        reason: str | None = None,
        metadata: Mapping[str, str] | None = None,
    ):
        super().__init__(message, retry_after_seconds=retry_after_seconds, reason=reason, metadata=metadata)


class ResourceExhausted(_RetryableError):
    """A quota, rate limit or size limit was hit."""

    code = grpc.StatusCode.RESOURCE_EXHAUSTED
    default_reason = "RESOURCE_EXHAUSTED"


class Unauthenticated(DomainError):
    """No valid credentials: the bearer token is missing, malformed, expired or badly signed."""

    code = grpc.StatusCode.UNAUTHENTICATED
    default_reason = "UNAUTHENTICATED"


class PermissionDenied(DomainError):
    """Valid credentials whose role may not call this method."""

    code = grpc.StatusCode.PERMISSION_DENIED
    default_reason = "PERMISSION_DENIED"


class DeadlineExceeded(DomainError):
    """The operation could not finish within the caller's deadline or an internal time budget."""

    code = grpc.StatusCode.DEADLINE_EXCEEDED
    default_reason = "DEADLINE_EXCEEDED"


_BY_CODE: dict[int, type[DomainError]] = {
    cls.code.value[0]: cls
    for cls in (
        InvalidArgument,
        NotFound,
        AlreadyExists,
        FailedPrecondition,
        Aborted,
        Unavailable,
        ResourceExhausted,
        Unauthenticated,
        PermissionDenied,
        DeadlineExceeded,
    )
}


def from_status(status: status_pb2.Status) -> DomainError | None:
    """Rebuild the domain error a peer sent, or None for a code outside the tree (OK, INTERNAL...)."""
    cls = _BY_CODE.get(status.code)
    if cls is None:
        return None
    reason: str | None = None
    metadata: dict[str, str] = {}
    violations: list[FieldViolation] = []
    retry_after: float | None = None
    resource = error_details_pb2.ResourceInfo()
    for detail in status.details:
        if detail.Is(error_details_pb2.ErrorInfo.DESCRIPTOR):
            info = error_details_pb2.ErrorInfo()
            detail.Unpack(info)
            reason, metadata = info.reason or None, dict(info.metadata)
        elif detail.Is(error_details_pb2.BadRequest.DESCRIPTOR):
            bad = error_details_pb2.BadRequest()
            detail.Unpack(bad)
            violations = [FieldViolation(v.field, v.description) for v in bad.field_violations]
        elif detail.Is(error_details_pb2.RetryInfo.DESCRIPTOR):
            retry = error_details_pb2.RetryInfo()
            detail.Unpack(retry)
            retry_after = retry.retry_delay.seconds + retry.retry_delay.nanos / 1e9
        elif detail.Is(error_details_pb2.ResourceInfo.DESCRIPTOR):
            detail.Unpack(resource)
    if cls is InvalidArgument:
        return InvalidArgument(violations, status.message, reason=reason, metadata=metadata)
    if issubclass(cls, _ResourceError):
        return cls(
            status.message,
            resource_type=resource.resource_type,
            resource_name=resource.resource_name,
            reason=reason,
            metadata=metadata,
        )
    if cls is Unavailable:
        return Unavailable(status.message, retry_after_seconds=retry_after, reason=reason, metadata=metadata)
    if cls is ResourceExhausted:
        return ResourceExhausted(
            status.message, retry_after_seconds=retry_after, reason=reason, metadata=metadata
        )
    return cls(status.message, reason=reason, metadata=metadata)
