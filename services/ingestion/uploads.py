"""Reading uploaded files: format detection and the record stream of each format."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from novacorrente.ingestion.v1 import ingestion_pb2 as pb

from services.ingestion.formats.outcome import Outcome
from services.kit.errors import FieldViolation, InvalidArgument

__all__ = ["ParsedFile", "read_file"]


@dataclass
class ParsedFile:
    format: int
    records: Iterator[Outcome]


def read_file(header: pb.UploadHeader, path: Path) -> ParsedFile:
    raise InvalidArgument([FieldViolation("header.format", "file formats are not wired yet")])
