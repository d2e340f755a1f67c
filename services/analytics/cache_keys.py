"""Cache keys: the normalised request plus the watermarks of only the data the answer depends on.

    analytics:v2:<lineage>:<method>:<sha256 of the normalised request>:<kind>=<version>,...

The lineage is the batch id of ingestion's first record (see ``read_model``): versions are counted in one
ingestion log, and a replaced ingestion database starts counting again. The request part is the method name
and the deterministic serialization of the request after normalisation (filter lists sorted and
deduplicated, defaults made explicit), so equivalent requests share an entry. The version part lists, for
each record kind the method reads (demand lines, stock, purchase orders, forecasts, master data...), a
watermark narrowed by the request's filter:

    version(kind) = min over the filter's fields f that index the kind
                        of ( max over the values v of f of watermark(kind, f, v) )

and the kind's overall watermark when no filter field indexes it, or when the answer reads records of that
kind outside its slice (the caller says so: inventory status reads the lead times of every line, for
instance). ``watermark(kind, f, v)`` is the highest
sequence of a record of that kind that belonged (or, for a correction, used to belong) to value v (see
``read_model``). Why this is sound: any record that can change the answer matches every field of the filter,
so it bumped one of the values of each field; the minimum over fields is therefore at least its sequence once
it is applied. So new data changes exactly the keys of the answers it can change: a back-dated correction of
one material's line moves the keys of the queries on that material (or its family, site, client, region,
supplier) and of unfiltered ones, and leaves a query on another material a cache hit.
"""

from __future__ import annotations

import hashlib
from collections.abc import Collection, Iterable, Mapping
from dataclasses import dataclass
from typing import Protocol

from google.protobuf.message import Message

from services.analytics.engine import Job
from services.analytics.slices import DIMS_BY_KIND, INGESTION_KINDS, Slice

__all__ = [
    "KEY_PREFIX",
    "LookupPlan",
    "LookupPlans",
    "Narrowing",
    "cache_key",
    "data_version",
    "data_watermark",
    "fingerprint",
    "load_versions",
    "narrowed_versions",
    "narrowing",
    "versions",
]

KEY_PREFIX = "analytics:v2:"
"""Bump the version when an answer's meaning changes, so entries of the old code are never served."""


def fingerprint(method: str, request: Message) -> str:
    """Hash of the method and the deterministic serialization of an (already normalised) request."""
    digest = hashlib.sha256(method.encode())
    digest.update(b"\0")
    digest.update(request.SerializeToString(deterministic=True))
    return digest.hexdigest()


Narrowing = tuple[tuple[str, tuple[tuple[tuple[str, str, str], ...], ...]], ...]
"""Per kind, the watermark keys ``(kind, dim, value)`` of each filter field that indexes it."""


def narrowing(kinds: Iterable[str], s: Slice, overall: Collection[str] = ()) -> Narrowing:
    """What ``versions`` reads for ``kinds`` under slice ``s``, worked out once (see the module docstring);
    the kinds in ``overall`` are not narrowed."""
    out = []
    for kind in dict.fromkeys(kinds):
        fields = []
        for dim in () if kind in overall else sorted(DIMS_BY_KIND[kind]):
            values = s.values(dim)
            if values:
                fields.append(tuple((kind, dim, v) for v in values))
        out.append((kind, tuple(fields)))
    return tuple(out)


def narrowed_versions(
    plan: Narrowing, dims: Mapping[tuple[str, str, str], int], totals: Mapping[str, int]
) -> dict[str, int]:
    """The narrowed watermark of each kind of ``plan``: min over its fields of the max over their values."""
    return {
        kind: min(max(dims.get(key, 0) for key in field) for field in fields)
        if fields
        else totals.get(kind, 0)
        for kind, fields in plan
    }


def versions(
    kinds: Iterable[str],
    s: Slice,
    dims: Mapping[tuple[str, str, str], int],
    totals: Mapping[str, int],
) -> dict[str, int]:
    """The narrowed watermark of each kind (see the module docstring)."""
    return narrowed_versions(narrowing(kinds, s), dims, totals)


def load_versions(job: Job, plan: Narrowing) -> dict[str, int]:
    """Same as ``narrowed_versions`` read from the read model inside the caller's transaction (its
    snapshot)."""
    kinds = [kind for kind, _ in plan]
    wanted = [key for _, fields in plan for values in fields for key in values]
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
    return narrowed_versions(plan, dims, {k: int(v) for k, v in totals.items()})


def _version_part(deps: Mapping[str, int]) -> str:
    return ",".join(f"{kind}={deps[kind]}" for kind in sorted(deps))


def cache_key(method: str, request_fingerprint: str, deps: Mapping[str, int], lineage: str = "") -> str:
    """``lineage`` names the ingestion log the versions count in (sequence numbers restart when an
    ingestion database is replaced), so entries of a previous log are never served."""
    return f"{KEY_PREFIX}{lineage}:{method}:{request_fingerprint}:{_version_part(deps)}"


def data_version(deps: Mapping[str, int], lineage: str = "") -> str:
    """A short digest of what ``cache_key`` adds to the request: the lineage and the narrowed versions. It
    changes exactly when the cache key of the same request does, so data that cannot change the answer
    leaves it alone. Page tokens carry it to tell whether the data moved under a listing."""
    return hashlib.sha256(f"{lineage}:{_version_part(deps)}".encode()).hexdigest()[:16]


def data_watermark(deps: Mapping[str, int]) -> str:
    """The provenance watermark of an answer: the highest ingestion sequence among the data it depends on.

    Using the narrowed versions (not the global watermark) makes a cached and a fresh answer identical, and
    two replicas at different global watermarks give the same answer the same provenance.
    """
    return f"seq:{max((v for k, v in deps.items() if k in INGESTION_KINDS), default=0)}"


class Watermarks(Protocol):
    """The in-memory watermarks (``read_model.Watermarks``) as a lookup plan reads them."""

    @property
    def generation(self) -> int: ...

    def lookup(self) -> tuple[Mapping[tuple[str, str, str], int], Mapping[str, int]]: ...


@dataclass(slots=True)
class LookupPlan:
    """What a cache lookup needs from one request, worked out once: validating and normalising the request,
    hashing it and narrowing the watermarks by its filter is most of the work of a cache hit."""

    method: str
    fingerprint: str
    narrowing: Narrowing
    response_type: type[Message]
    generation: int = -1
    lineage: str | None = None
    key: str = ""

    def key_for(self, watermarks: Watermarks, lineage: str) -> str:
        """The cache key at the current watermarks, recomputed only when they (or the lineage) moved."""
        # The generation is read before the maps: a key is never recorded under a generation newer than
        # the maps it was computed from, so a recorded key is never older than its generation says.
        generation = watermarks.generation
        if generation != self.generation or lineage != self.lineage:
            dims, totals = watermarks.lookup()
            deps = narrowed_versions(self.narrowing, dims, totals)
            self.key = cache_key(self.method, self.fingerprint, deps, lineage)
            self.generation, self.lineage = generation, lineage
        return self.key


class LookupPlans:
    """Lookup plans by method and request bytes, so a repeated request goes straight to the cache.

    A plan depends only on the request (validation and normalisation are pure functions of it), so the
    request's serialized bytes identify it. Bounded: past ``max_entries`` the oldest plan goes, and requests
    longer than ``max_request_bytes`` (long series lists) are not remembered.
    """

    def __init__(self, max_entries: int = 4096, max_request_bytes: int = 2048) -> None:
        self._plans: dict[tuple[str, bytes], LookupPlan] = {}
        self._max_entries = max_entries
        self._max_request_bytes = max_request_bytes

    def get(self, method: str, request: bytes) -> LookupPlan | None:
        return self._plans.get((method, request))

    def add(self, method: str, request: bytes, plan: LookupPlan) -> None:
        if len(request) > self._max_request_bytes:
            return
        if len(self._plans) >= self._max_entries:
            del self._plans[next(iter(self._plans))]
        self._plans[(method, request)] = plan

    def __len__(self) -> int:
        return len(self._plans)
