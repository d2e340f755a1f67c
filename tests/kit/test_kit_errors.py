"""The domain error tree renders to google.rpc.Status and back."""

from __future__ import annotations

import grpc
import pytest
from google.rpc import error_details_pb2

from services.kit import errors
from services.kit.errors import (
    DomainError,
    FieldViolation,
    InvalidArgument,
    NotFound,
    ResourceExhausted,
    Unavailable,
    from_status,
)

ALL = [
    errors.InvalidArgument,
    errors.NotFound,
    errors.AlreadyExists,
    errors.FailedPrecondition,
    errors.Aborted,
    errors.Unavailable,
    errors.ResourceExhausted,
    errors.Unauthenticated,
    errors.PermissionDenied,
    errors.DeadlineExceeded,
]


def make(cls: type[DomainError]) -> DomainError:
    if cls is InvalidArgument:
        return InvalidArgument([FieldViolation("a", "bad")])
    return cls("it failed", metadata={"k": "v"})


@pytest.mark.parametrize("cls", ALL)
def test_every_error_has_its_own_code_and_round_trips(cls: type[DomainError]) -> None:
    error = make(cls)
    status = error.to_status()
    assert status.code == cls.code.value[0] and cls.code not in (grpc.StatusCode.OK, grpc.StatusCode.UNKNOWN)
    assert status.message == error.message
    info = error_details_pb2.ErrorInfo()
    assert status.details[0].Unpack(info) and info.domain == "novacorrente" and info.reason == error.reason
    back = from_status(status)
    assert type(back) is cls and back.message == error.message and back.metadata == error.metadata
    assert len({c.code for c in ALL}) == len(ALL)


def test_details_specific_to_each_error() -> None:
    bad = from_status(InvalidArgument([FieldViolation("lines[0].qty", "must be > 0")]).to_status())
    assert isinstance(bad, InvalidArgument) and bad.violations == [
        FieldViolation("lines[0].qty", "must be > 0")
    ]
    assert bad.message == "lines[0].qty: must be > 0"

    down = from_status(Unavailable("db down", retry_after_seconds=1.5).to_status())
    assert isinstance(down, Unavailable) and down.retry_after_seconds == 1.5

    limited = ResourceExhausted("slow down")
    assert [d.DESCRIPTOR.name for d in limited.details()] == ["ErrorInfo"]  # no delay known, no RetryInfo

    missing = from_status(NotFound("no such item", resource_type="item", resource_name="M-1").to_status())
    assert isinstance(missing, NotFound) and (missing.resource_type, missing.resource_name) == ("item", "M-1")


def test_codes_outside_the_tree_are_not_rebuilt() -> None:
    from google.rpc import status_pb2

    assert from_status(status_pb2.Status(code=grpc.StatusCode.INTERNAL.value[0], message="x")) is None
