"""Where a read model catches up from: ingestion's ExportRecords stream."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Mapping
from typing import Any, Protocol

import grpc
from grpc_status import rpc_status
from novacorrente.ingestion.v1 import ingestion_pb2, ingestion_pb2_grpc

from services.kit.clients import open_channel
from services.kit.errors import Unavailable, from_status

__all__ = ["ExportSource", "GrpcExportSource"]


class ExportSource(Protocol):
    def pages(
        self, since: int, page_size: int, deadline_seconds: float
    ) -> AsyncIterator[ingestion_pb2.ExportRecordsResponse]:
        """Pages of committed records with sequence > ``since``, in order, up to the watermark at the
        start of the stream."""
        ...

    async def close(self) -> None: ...


class GrpcExportSource:
    """ExportRecords over gRPC with a service token; peer errors come back as domain errors."""

    def __init__(
        self, target: str, token_provider: Callable[[], str], *, tls: Mapping[str, Any] | None = None
    ):
        self._channel = open_channel(
            target, token_provider=token_provider, max_message_bytes=64 * 1024 * 1024, **(tls or {})
        )
        self._stub = ingestion_pb2_grpc.IngestionServiceStub(self._channel)

    async def pages(
        self, since: int, page_size: int, deadline_seconds: float
    ) -> AsyncIterator[ingestion_pb2.ExportRecordsResponse]:
        request = ingestion_pb2.ExportRecordsRequest(since_sequence=since, page_size=page_size)
        call = self._stub.ExportRecords(request, timeout=deadline_seconds)
        try:
            async for page in call:
                yield page
        except grpc.aio.AioRpcError as exc:
            status = rpc_status.from_call(call)  # type: ignore[arg-type]
            error = from_status(status) if status is not None else None
            raise (
                error or Unavailable(f"ingestion export failed: {exc.code().name} {exc.details()}")
            ) from exc
        finally:
            call.cancel()

    async def close(self) -> None:
        await self._channel.close()
