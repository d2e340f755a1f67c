"""Which reader a file needs, from its first bytes (content first, the file name only as a tie-breaker)."""

from __future__ import annotations

import os
from enum import StrEnum

__all__ = ["SNIFF_BYTES", "FileFormat", "detect_format"]

SNIFF_BYTES = 4096
"""How many leading bytes ``detect_format`` needs to see."""


class FileFormat(StrEnum):
    """File formats ingestion reads (the proto's ``FileFormat`` names, plus UNKNOWN)."""

    UNKNOWN = "unknown"
    SAPIENS_XLSX = "sapiens_xlsx"
    SAPIENS_CSV = "sapiens_csv"
    CSV = "csv"
    PARQUET = "parquet"
    BCB_PTAX_JSON = "bcb_ptax_json"
    BCB_SGS_JSON = "bcb_sgs_json"
    IBGE_SIDRA_JSON = "ibge_sidra_json"
    OPEN_METEO_JSON = "open_meteo_json"


def _json_kind(head: str, name: str) -> FileFormat:
    if "CotacaoMoeda" in head or '"tipoBoletim"' in head or '"cotacaoVenda"' in head:
        return FileFormat.BCB_PTAX_JSON
    if '"hourly"' in head and ('"hourly_units"' in head or '"latitude"' in head):
        return FileFormat.OPEN_METEO_JSON
    if '"D3C"' in head or ('"NC"' in head and '"V"' in head):
        return FileFormat.IBGE_SIDRA_JSON
    if '"valor"' in head and '"data"' in head:
        return FileFormat.BCB_SGS_JSON
    for marker, kind in (
        ("ptax", FileFormat.BCB_PTAX_JSON),
        ("sgs", FileFormat.BCB_SGS_JSON),
        ("sidra", FileFormat.IBGE_SIDRA_JSON),
        ("meteo", FileFormat.OPEN_METEO_JSON),
    ):
        if marker in name:
            return kind
    return FileFormat.UNKNOWN


def detect_format(filename: str, first_bytes: bytes) -> FileFormat:
    """The format of a file given its name and its first ``SNIFF_BYTES`` bytes (fewer is fine)."""
    name = os.path.basename(filename or "").lower()
    if first_bytes.startswith(b"PAR1"):
        return FileFormat.PARQUET
    if first_bytes.startswith(b"PK\x03\x04"):
        # Only xlsx workbooks are read among zip containers; another zip fails in the reader, with a reason.
        return FileFormat.SAPIENS_XLSX
    head = first_bytes.decode("utf-8", errors="ignore").lstrip("\ufeff \t\r\n")
    if head.startswith(("{", "[")):
        return _json_kind(head, name)
    first_line = head.split("\n", 1)[0]
    if "QUANTIDADE" in first_line and ("DEPÓSITO" in first_line or "SOLICITAÇÃO" in first_line):
        return FileFormat.SAPIENS_CSV
    if name.endswith(".xlsx"):
        return FileFormat.SAPIENS_XLSX
    if name.endswith(".parquet"):
        return FileFormat.PARQUET
    if name.endswith(".json"):
        return _json_kind(head, name)
    if name.endswith(".csv") or ("," in first_line and head):
        return FileFormat.CSV
    return FileFormat.UNKNOWN
