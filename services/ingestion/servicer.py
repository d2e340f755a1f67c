"""gRPC adapter of the ingestion use cases: convert, call one use case, return."""

from __future__ import annotations

import asyncio
import os
import tempfile
from collections.abc import AsyncIterator
from pathlib import Path

import grpc
from novacorrente.ingestion.v1 import ingestion_pb2 as pb
from novacorrente.ingestion.v1 import ingestion_pb2_grpc

from services.ingestion.service import IngestionUseCases
from services.kit.auth import require_principal
from services.kit.errors import FieldViolation, InvalidArgument, ResourceExhausted

__all__ = ["IngestionServicer"]


class IngestionServicer(ingestion_pb2_grpc.IngestionServiceServicer):
    def __init__(self, cases: IngestionUseCases, *, max_upload_bytes: int, spool_dir: str = "") -> None:
        self._cases = cases
        self._max_upload = max_upload_bytes
        self._spool_dir = spool_dir or None

    async def SubmitBatch(
        self, request: pb.SubmitBatchRequest, context: grpc.aio.ServicerContext
    ) -> pb.SubmitBatchResponse:
        return await self._cases.submit_batch(require_principal().subject, request)

    async def UploadFile(
        self, request_iterator: AsyncIterator[pb.UploadFileRequest], context: grpc.aio.ServicerContext
    ) -> pb.UploadFileResponse:
        # Spool to disk: constant memory for any size, and the xlsx reader needs a seekable file.
        fd, name = tempfile.mkstemp(prefix="nova-upload-", dir=self._spool_dir)
        path = Path(name)
        try:
            header: pb.UploadHeader | None = None
            size = 0
            with os.fdopen(fd, "wb") as spool:
                async for part in request_iterator:
                    which = part.WhichOneof("part")
                    if which == "header":
                        if header is not None:
                            raise InvalidArgument(
                                [FieldViolation("header", "sent twice; only the first message")]
                            )
                        header = part.header
                    elif which == "chunk":
                        if header is None:
                            raise InvalidArgument([FieldViolation("header", "must be the first message")])
                        size += len(part.chunk)
                        if size > self._max_upload:
                            raise ResourceExhausted(
                                f"upload exceeds the maximum of {self._max_upload} bytes",
                                retry_after_seconds=None,
                            )
                        spool.write(part.chunk)
            if header is None:
                raise InvalidArgument([FieldViolation("header", "required")])
            return await self._cases.upload(require_principal().subject, header, path)
        finally:
            await asyncio.to_thread(path.unlink, missing_ok=True)

    async def ReplayQuarantine(
        self, request: pb.ReplayQuarantineRequest, context: grpc.aio.ServicerContext
    ) -> pb.SubmitBatchResponse:
        return await self._cases.replay_quarantine(require_principal().subject, request)

    async def ExportRecords(
        self, request: pb.ExportRecordsRequest, context: grpc.aio.ServicerContext
    ) -> AsyncIterator[pb.ExportRecordsResponse]:
        async for page in self._cases.export(request.since_sequence, request.page_size):
            yield page

    async def ListQuarantine(
        self, request: pb.ListQuarantineRequest, context: grpc.aio.ServicerContext
    ) -> pb.ListQuarantineResponse:
        return await self._cases.list_quarantine(request.page_size, request.page_token)

    async def GetWatermark(
        self, request: pb.GetWatermarkRequest, context: grpc.aio.ServicerContext
    ) -> pb.GetWatermarkResponse:
        return await self._cases.watermark()
