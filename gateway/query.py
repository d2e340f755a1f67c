"""The data filter's query parameters, parsed by hand and documented in the OpenAPI document.

Every dashboard route takes the same eight filter parameters (six repeatable lists and a date range).
FastAPI's per-parameter machinery costs more per request than the rest of a route together (measured with
bench/gateway_overview.py), so these are read straight from the query string; the OpenAPI parameters below
describe them exactly as FastAPI would, and a bad value is the same 400 with a field violation.
"""

from __future__ import annotations

import datetime as dt
from typing import Any

import grpc
from fastapi import Request
from novacorrente.common.v1 import common_pb2 as cpb

from gateway.status import ApiError

__all__ = ["FILTER_PARAMETERS", "MAX_ITEM_LENGTH", "parse_filter"]

MAX_ITEM_LENGTH = 256

_LISTS = {
    "material": ("material_codes", "Material codes, e.g. 010601 (repeat for several)."),
    "site": ("site_codes", "Site or warehouse codes, e.g. ALMOX-BA."),
    "family": ("families", "Material families, e.g. MATERIAL ELETRICO."),
    "client": ("clients", "Clients (tower companies, utilities)."),
    "region": ("regions", "Regions or states, e.g. BA."),
    "supplier": ("suppliers", "Supplier names."),
}
_DATES = {
    "start": "First day of the period (inclusive), YYYY-MM-DD.",
    "end": "Last day of the period (inclusive), YYYY-MM-DD.",
}

FILTER_PARAMETERS: list[dict[str, Any]] = [
    *(
        {
            "name": name,
            "in": "query",
            "required": False,
            "description": description,
            "schema": {
                "type": "array",
                "items": {"type": "string", "maxLength": MAX_ITEM_LENGTH},
                "default": [],
            },
        }
        for name, (_, description) in _LISTS.items()
    ),
    *(
        {
            "name": name,
            "in": "query",
            "required": False,
            "description": description,
            "schema": {"anyOf": [{"type": "string", "format": "date"}, {"type": "null"}]},
        }
        for name, description in _DATES.items()
    ),
]
"""OpenAPI parameter objects of the filter (added to each route's operation through ``openapi_extra``)."""


def _date(raw: str, name: str, violations: list[tuple[str, str]]) -> cpb.Date | None:
    try:
        # fromisoformat alone would also take 20250101; the API promises YYYY-MM-DD.
        if len(raw) != 10:
            raise ValueError
        day = dt.date.fromisoformat(raw)
    except ValueError:
        violations.append((f"query.{name}", "must be a date YYYY-MM-DD"))
        return None
    return cpb.Date(year=day.year, month=day.month, day=day.day)


def parse_filter(request: Request) -> cpb.Filter:
    """The request's filter as a ``common.v1.Filter``; ApiError INVALID_ARGUMENT naming each bad parameter."""
    query = request.query_params
    out = cpb.Filter()
    violations: list[tuple[str, str]] = []
    for name, (field, _) in _LISTS.items():
        # getlist scans every parameter of the query; membership is a dictionary lookup.
        if name in query:
            values = query.getlist(name)
            for i, value in enumerate(values):
                if len(value) > MAX_ITEM_LENGTH:
                    violations.append((f"query.{name}.{i}", f"at most {MAX_ITEM_LENGTH} characters"))
            getattr(out, field).extend(values)
    for name in _DATES:
        raw = query.get(name)
        if raw:
            date = _date(raw, name, violations)
            if date is not None:
                getattr(out.date_range, name).CopyFrom(date)
    if violations:
        message = "; ".join(f"{f}: {d}" for f, d in violations)
        raise ApiError(
            grpc.StatusCode.INVALID_ARGUMENT, message, reason="INVALID_REQUEST", field_violations=violations
        )
    return out
