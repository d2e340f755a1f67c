"""Who may call what on IngestionService. Kept apart from the app so that a caller that only needs the
rules (the gateway) does not import the system-of-record drivers."""

from __future__ import annotations

from novacorrente.ingestion.v1 import ingestion_pb2

from services.kit.auth import ADMIN, READ, WRITE, MethodPolicy

__all__ = ["SERVICE_NAME", "policy"]

SERVICE_NAME = ingestion_pb2.DESCRIPTOR.services_by_name["IngestionService"].full_name


def policy() -> MethodPolicy:
    m = f"/{SERVICE_NAME}/"
    return MethodPolicy(
        {
            m + "SubmitBatch": WRITE,
            m + "UploadFile": WRITE,
            m + "ReplayQuarantine": WRITE,
            # Exporting every record is what a rebuilding read model does: service accounts only.
            m + "ExportRecords": WRITE | ADMIN,
            m + "ListQuarantine": WRITE | READ,
            m + "GetWatermark": WRITE | READ,
        }
    )
