"""Streaming readers of the files ingestion accepts; each yields one ``Outcome`` per line.

=====================  ===========================================  =========================================
format                 reader                                       records
=====================  ===========================================  =========================================
Sapiens export xlsx    ``sapiens.read_sapiens_xlsx``                Consumption + Material/Site/Supplier
Sapiens export CSV     ``sapiens.read_sapiens_csv``                 same
DADOS hidden sheet     ``sapiens.read_dados_sites``                 Site
generic CSV/Parquet    ``generic.read_csv`` / ``generic.read_parquet``  any one record type per file
BCB PTAX OData JSON    ``bcb_ptax.read_ptax``                       ExternalObservation ptax.<ccy>.sell/buy
BCB SGS JSON           ``bcb_sgs.read_sgs``                         ExternalObservation (e.g. SELIC)
IBGE SIDRA JSON        ``ibge_sidra.read_sidra``                    ExternalObservation ipca.monthly_pct
Open-Meteo hourly      ``openmeteo.read_openmeteo``                 ExternalObservation weather.<city>.*
=====================  ===========================================  =========================================

``read_file`` detects the format (``detect_format``) and dispatches. Readers never raise on bad content: an
unreadable file is one ``ParseError`` on line 0. Readers are synchronous generators doing file I/O and CPU
work: run them in an executor, not on the event loop.
"""

from __future__ import annotations

import os
from collections.abc import Iterator

from services.ingestion.formats.detect import SNIFF_BYTES, FileFormat, detect_format
from services.ingestion.formats.outcome import (
    Outcome,
    Parsed,
    ParseError,
    Skipped,
    SkipReason,
    Source,
    Stored,
    file_error,
    source_name,
)
from services.ingestion.records import Record
from services.ingestion.validation import ReasonCode

__all__ = [
    "FileFormat",
    "Outcome",
    "ParseError",
    "Parsed",
    "SkipReason",
    "Skipped",
    "Source",
    "Stored",
    "detect_format",
    "read_file",
    "sniff",
]


def sniff(source: Source) -> bytes:
    """The first ``SNIFF_BYTES`` of a path or of a seekable file object (whose position is restored)."""
    if isinstance(source, str | os.PathLike):
        with open(source, "rb") as handle:
            return handle.read(SNIFF_BYTES)
    position = source.tell()
    head = source.read(SNIFF_BYTES)
    source.seek(position)
    return head


def read_file(
    source: Source,
    *,
    filename: str | None = None,
    file_format: FileFormat | None = None,
    record_type: str | type[Record] | None = None,
    series_id: str | None = None,
    stored_form: bool = False,
) -> Iterator[Outcome]:
    """Read any supported file. ``file_format`` None (or UNKNOWN) means detect from name and content.

    ``record_type`` is required for generic CSV/Parquet; ``series_id`` overrides the SGS series; the PTAX
    currency and the Open-Meteo city come from ``filename`` (or the path's name). With ``stored_form``,
    readers that can yield valid records as ``Stored`` rather than ``Parsed`` (the Sapiens CSV's lines).
    """
    # Imported here so that reading one JSON feed does not import openpyxl and pyarrow.
    from services.ingestion.formats import bcb_ptax, bcb_sgs, generic, ibge_sidra, openmeteo, sapiens

    name = filename or source_name(source)
    if file_format is None or file_format is FileFormat.UNKNOWN:
        file_format = detect_format(name, sniff(source))
    if file_format is FileFormat.SAPIENS_XLSX:
        yield from sapiens.read_sapiens_xlsx(source)
    elif file_format is FileFormat.SAPIENS_CSV:
        yield from sapiens.read_sapiens_csv(source, stored_form=stored_form)
    elif file_format in (FileFormat.CSV, FileFormat.PARQUET):
        if not record_type:
            yield file_error(
                "record_type", ReasonCode.REQUIRED, f"a record type is needed to read {file_format}"
            )
            return
        reader = generic.read_csv if file_format is FileFormat.CSV else generic.read_parquet
        yield from reader(source, record_type)
    elif file_format is FileFormat.BCB_PTAX_JSON:
        yield from bcb_ptax.read_ptax(source, filename=name)
    elif file_format is FileFormat.BCB_SGS_JSON:
        yield from bcb_sgs.read_sgs(source, series_id=series_id, filename=name)
    elif file_format is FileFormat.IBGE_SIDRA_JSON:
        yield from ibge_sidra.read_sidra(source)
    elif file_format is FileFormat.OPEN_METEO_JSON:
        yield from openmeteo.read_openmeteo(source, filename=name)
    else:
        yield file_error("file", ReasonCode.UNKNOWN_VALUE, f"cannot tell the format of {name!r}")
