"""Reading an uploaded (spooled) file: the wire format enum to the readers' and back."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from novacorrente.ingestion.v1 import ingestion_pb2 as pb

from services.ingestion import formats
from services.ingestion.formats import FileFormat, Outcome, detect_format, sniff

__all__ = ["ParsedFile", "read_file"]

# The proto's FileFormat names are the readers' names upper-cased.
_TO_READER = {
    value: FileFormat[pb.FileFormat.Name(value).removeprefix("FILE_FORMAT_")]
    for value in pb.FileFormat.values()
    if value != pb.FILE_FORMAT_UNSPECIFIED
}
_TO_WIRE = {reader: wire for wire, reader in _TO_READER.items()}


@dataclass
class ParsedFile:
    """The format used and the file's outcomes, one per line (read lazily: call in an executor)."""

    format: pb.FileFormat.ValueType
    records: Iterator[Outcome]


def read_file(header: pb.UploadHeader, path: Path, *, stored_form: bool = False) -> ParsedFile:
    fmt = _TO_READER.get(header.format) or detect_format(header.filename, sniff(path))
    records = formats.read_file(
        path,
        filename=header.filename,
        file_format=fmt,
        record_type=header.record_type or None,
        series_id=header.series_id or None,
        stored_form=stored_form,
    )
    return ParsedFile(format=_TO_WIRE.get(fmt, pb.FILE_FORMAT_UNSPECIFIED), records=records)
