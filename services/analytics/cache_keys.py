"""Cache keys: the normalised request plus the watermarks of only the data the answer depends on.

    analytics:v1:<lineage>:<method>:<sha256 of the normalised request>:<kind>=<version>,...

The lineage is the batch id of ingestion's first record (see ``read_model``): versions are counted in one
ingestion log, and a replaced ingestion database starts counting again. The request part is the method name
and the deterministic serialization of the request after normalisation (filter lists sorted and
deduplicated, defaults made explicit), so equivalent requests share an entry. The version part lists, for
each record kind the method reads (demand lines, stock, purchase orders, forecasts, master data...), a
watermark narrowed by the request's filter:

    version(kind) = min over the filter's fields f that index the kind
                        of ( max over the values v of f of watermark(kind, f, v) )

and the kind's overall watermark when no filter field indexes it. ``watermark(kind, f, v)`` is the highest
sequence of a record of that kind that belonged (or, for a correction, used to belong) to value v (see
``read_model``). Why this is sound: any record that can change the answer matches every field of the filter,
so it bumped one of the values of each field; the minimum over fields is therefore at least its sequence once
it is applied. So new data changes exactly the keys of the answers it can change: a back-dated correction of
one material's line moves the keys of the queries on that material (or its family, site, client, region,
supplier) and of unfiltered ones, and leaves a query on another material a cache hit.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Mapping

from google.protobuf.message import Message

from services.analytics.engine import Job
from services.analytics.slices import DIMS_BY_KIND, INGESTION_KINDS, Slice

__all__ = ["KEY_PREFIX", "cache_key", "data_watermark", "fingerprint", "load_versions", "versions"]

KEY_PREFIX = "analytics:v1:"
"""Bump the version when an answer's meaning changes, so entries of the old code are never served."""


def fingerprint(method: str, request: Message) -> str:
    """Hash of the method and the deterministic serialization of an (already normalised) request."""
    digest = hashlib.sha256(method.encode())
    digest.update(b"\0")
    digest.update(request.SerializeToString(deterministic=True))
    return digest.hexdigest()


def versions(
    kinds: Iterable[str],
    s: Slice,
    dims: Mapping[tuple[str, str, str], int],
    totals: Mapping[str, int],
) -> dict[str, int]:
    """The narrowed watermark of each kind (see the module docstring)."""
    out: dict[str, int] = {}
    for kind in kinds:
        narrowed: list[int] = []
        for dim in DIMS_BY_KIND[kind]:
            values = s.values(dim)
            if values:
                narrowed.append(max(dims.get((kind, dim, v), 0) for v in values))
        out[kind] = min(narrowed) if narrowed else totals.get(kind, 0)
    return out


def load_versions(job: Job, kinds: Iterable[str], s: Slice) -> dict[str, int]:
    """Same as ``versions`` read from the read model inside the caller's transaction (its snapshot)."""
    kinds = list(kinds)
    wanted = [(k, d, v) for k in kinds for d in DIMS_BY_KIND[k] for v in s.values(d)]
    dims: dict[tuple[str, str, str], int] = {}
    if wanted:
        marks = ", ".join("(?, ?, ?)" for _ in wanted)
        rows = job.cursor.execute(
            f"SELECT w.kind, w.dim, w.value, w.version FROM dim_watermarks w "
            f"JOIN (VALUES {marks}) AS t(kind, dim, value) USING (kind, dim, value)",
            [x for item in wanted for x in item],
        ).fetchall()
        dims = {(k, d, v): int(n) for k, d, v, n in rows}
    marks = ", ".join("?" for _ in kinds)
    totals = (
        dict(
            job.cursor.execute(
                f"SELECT kind, version FROM kind_watermarks WHERE kind IN ({marks})", kinds
            ).fetchall()
        )
        if kinds
        else {}
    )
    return versions(kinds, s, dims, {k: int(v) for k, v in totals.items()})


def cache_key(method: str, request_fingerprint: str, deps: Mapping[str, int], lineage: str = "") -> str:
    """``lineage`` names the ingestion log the versions count in (sequence numbers restart when an
    ingestion database is replaced), so entries of a previous log are never served."""
    parts = ",".join(f"{kind}={deps[kind]}" for kind in sorted(deps))
    return f"{KEY_PREFIX}{lineage}:{method}:{request_fingerprint}:{parts}"


def data_watermark(deps: Mapping[str, int]) -> str:
    """The provenance watermark of an answer: the highest ingestion sequence among the data it depends on.

    Using the narrowed versions (not the global watermark) makes a cached and a fresh answer identical, and
    two replicas at different global watermarks give the same answer the same provenance.
    """
    return f"seq:{max((v for k, v in deps.items() if k in INGESTION_KINDS), default=0)}"
