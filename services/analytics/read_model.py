"""The DuckDB read model: schema, and how committed records and forecasts are applied to it.

Idempotency and order. Ingestion numbers every committed record with a global, gap-free sequence. The read
model keeps the highest sequence applied (``state.applied_seq``, the data watermark) and an inbox of the event
ids it applied; a record with a sequence at or below the watermark is skipped, so a redelivered event (or
an export page that overlaps one) changes nothing. Records are applied in sequence order, which is commit
order, hence in order per natural key. One event is one transaction: records, watermark, inbox and
dimension watermarks commit together or not at all.

Why no primary keys on the large tables: DuckDB maintains an ART index per key, which costs memory and
insert time at company scale, and its DELETE-then-INSERT of the same key inside one transaction is fragile.
A record that is new to ingestion (``supersedes`` false) cannot exist here, since sequences only grow; only
a correction replaces a row, and corrections are rare, so they are the only rows deleted by key.

Lead-time statistics. ``lead_time_stats`` holds, per material x site x family, the count and sum of the
consumption lines' non-negative lead times, so the lead-time fallbacks of the inventory computation (pair,
material, family, all) read one row per pair instead of every consumption line. Applying adds the lines it
inserts and takes away the lines it deletes, in the same transaction, and records in ``meta`` the sequence
the table is kept up to; ``rebuild_lead_time_stats`` derives the table from ``consumption`` whole when that
sequence is not the applied one (a file from before the table, records applied by a release that did not
keep it) and after a bulk load.

Dimension watermarks (what cached answers are keyed by, see ``cache_keys``). Each applied record "bumps"
the dimension values it belongs to (its material, site, family, supplier, and its site's client and region)
to its sequence, for its record kind; a correction also bumps the values of the version it replaces (a line
moved from site X to Y changes the answers about X). Dimensions reached through master data (the family of
a material, the client and region of a site) use the master data current when the record is applied, and a
master record bumps both its old and new family / client / region (and, when a material had no family in
the master before or has none after, the families its demand lines carry: those lines count under their own
family while the master gives the material none), so a key built from these watermarks moves whenever an
answer may have moved. Replaying the same sequence of records gives the same watermarks,
so replicas and rebuilt read models agree on keys.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field

import pyarrow as pa
from novacorrente.events.v1 import events_pb2
from novacorrente.ingestion.v1 import records_pb2

from services.analytics.converters import date_of, material_cost_of, micros_of, row_of
from services.analytics.engine import Job, one
from services.analytics.slices import Dim, Kind

__all__ = [
    "SCHEMA_VERSION",
    "ApplyResult",
    "MasterIndex",
    "ReadModel",
    "Watermarks",
    "forecast_series_key",
]

SCHEMA_VERSION = "1"
"""Bumped when a table changes in a way ``CREATE TABLE IF NOT EXISTS`` cannot bring an existing file to: a
read model of another version is dropped and rebuilt from the export, then the forecast journal. A new table
needs no bump (``material_costs`` was added in place: no record carried a cost before it existed)."""

_QTY = "DECIMAL(18, 6)"
"""Quantities and values are stored as exact decimals (the sources write decimal text): sums are then exact,
hence independent of the order rows are scanned in, so a rebuilt replica gives byte-identical answers.
Ingestion refuses magnitudes of 1e11 or more (``validation.MAX_MAGNITUDE``), so every committed value fits."""

# table -> (kind, key columns, [(column, duckdb type, arrow type)])
_S, _D, _F, _I, _B = pa.string(), pa.date32(), pa.float64(), pa.int64(), pa.bool_()
TABLES: dict[str, tuple[str, tuple[str, ...], tuple[tuple[str, str, pa.DataType], ...]]] = {
    "materials": (
        Kind.MATERIAL,
        ("code",),
        (
            ("code", "VARCHAR", _S),
            ("name", "VARCHAR", _S),
            ("family", "VARCHAR", _S),
            ("unit", "VARCHAR", _S),
            ("criticality", "INTEGER", _I),
            ("abc_class", "VARCHAR", _S),
            ("stocked", "BOOLEAN", _B),
        ),
    ),
    "sites": (
        Kind.SITE,
        ("code",),
        (
            ("code", "VARCHAR", _S),
            ("client", "VARCHAR", _S),
            ("region", "VARCHAR", _S),
            ("site_type", "INTEGER", _I),
            ("criticality", "INTEGER", _I),
        ),
    ),
    "suppliers": (Kind.SUPPLIER, ("code",), (("code", "VARCHAR", _S), ("name", "VARCHAR", _S))),
    "consumption": (
        Kind.CONSUMPTION,
        ("requisition_id", "line_key"),
        (
            ("requisition_id", "VARCHAR", _S),
            ("line_key", "VARCHAR", _S),
            ("material_code", "VARCHAR", _S),
            ("site_code", "VARCHAR", _S),
            ("supplier_code", "VARCHAR", _S),
            ("quantity", _QTY, _F),
            ("unit", "VARCHAR", _S),
            ("demand_date", "DATE", _D),
            ("requested_date", "DATE", _D),
            ("solicited_date", "DATE", _D),
            ("purchase_date", "DATE", _D),
            ("lead_time_days", "INTEGER", _I),
            ("family", "VARCHAR", _S),
            ("flags", "VARCHAR[]", pa.list_(_S)),
        ),
    ),
    "stock_snapshots": (
        Kind.STOCK,
        ("material_code", "site_code", "as_of"),
        (
            ("material_code", "VARCHAR", _S),
            ("site_code", "VARCHAR", _S),
            ("as_of", "DATE", _D),
            ("on_hand", _QTY, _F),
            ("simulated", "BOOLEAN", _B),
        ),
    ),
    "stock_movements": (
        Kind.STOCK,
        ("reference",),
        (
            ("reference", "VARCHAR", _S),
            ("kind", "INTEGER", _I),
            ("material_code", "VARCHAR", _S),
            ("site_code", "VARCHAR", _S),
            ("to_site_code", "VARCHAR", _S),
            ("quantity", _QTY, _F),
            ("moved_at", "TIMESTAMP", pa.timestamp("us")),
            ("day", "DATE", _D),
            ("simulated", "BOOLEAN", _B),
        ),
    ),
    "purchase_orders": (
        Kind.PO,
        ("po_id", "material_code"),
        (
            ("po_id", "VARCHAR", _S),
            ("material_code", "VARCHAR", _S),
            ("site_code", "VARCHAR", _S),
            ("supplier_code", "VARCHAR", _S),
            ("quantity", _QTY, _F),
            ("placed_date", "DATE", _D),
            ("expected_date", "DATE", _D),
            ("received_date", "DATE", _D),
            ("simulated", "BOOLEAN", _B),
        ),
    ),
    "external_observations": (
        Kind.EXTERNAL,
        ("series_id", "date"),
        (
            ("series_id", "VARCHAR", _S),
            ("date", "DATE", _D),
            ("value", _QTY, _F),
            ("unit", "VARCHAR", _S),
            ("source", "VARCHAR", _S),
        ),
    ),
}
_MASTER_TABLES = ("materials", "sites", "suppliers")

_COST_COLUMNS: tuple[tuple[str, str, pa.DataType], ...] = (
    ("code", "VARCHAR", _S),
    ("unit_cost_brl", "DOUBLE", _F),
    ("seq", "BIGINT", _I),
)
"""The unit cost (BRL per unit) of each material's current version, NULL when the master gives none (unknown,
never zero). A table of its own rather than a column of ``materials``: tools that load ``materials`` by
position (the company-scale generator of ``bench``) keep working, and a material without a row here simply
has no known cost. DOUBLE, as on the wire: a cost is only ever multiplied by an average (a double), and
no precision is gained by a decimal there."""

_FORECAST_COLUMNS: tuple[tuple[str, str, pa.DataType], ...] = (
    ("series_key", "VARCHAR", _S),
    ("level", "INTEGER", _I),
    ("material_code", "VARCHAR", _S),
    ("site_code", "VARCHAR", _S),
    ("family", "VARCHAR", _S),
    ("region", "VARCHAR", _S),
    ("origin", "DATE", _D),
    ("week_start", "DATE", _D),
    ("mean", "DOUBLE", _F),
    ("q_levels", "DOUBLE[]", pa.list_(_F)),
    ("q_values", "DOUBLE[]", pa.list_(_F)),
    ("method", "VARCHAR", _S),
    ("unit", "VARCHAR", _S),
    ("model_name", "VARCHAR", _S),
    ("model_version", "VARCHAR", _S),
    ("data_watermark", "VARCHAR", _S),
    ("generated_at_us", "BIGINT", _I),
    ("event_id", "VARCHAR", _S),
)
_POLICY_COLUMNS: tuple[tuple[str, str, pa.DataType], ...] = (
    ("material_code", "VARCHAR", _S),
    ("site_code", "VARCHAR", _S),
    ("safety_stock", "DOUBLE", _F),
    ("reorder_point", "DOUBLE", _F),
    ("order_up_to", "DOUBLE", _F),
    ("suggested_order_quantity", "DOUBLE", _F),
    ("lead_time_mean_days", "DOUBLE", _F),
    ("lead_time_p90_days", "DOUBLE", _F),
    ("lead_time_scope", "VARCHAR", _S),
    ("unit", "VARCHAR", _S),
    ("method", "VARCHAR", _S),
    ("model_name", "VARCHAR", _S),
    ("model_version", "VARCHAR", _S),
    ("data_watermark", "VARCHAR", _S),
    ("generated_at_us", "BIGINT", _I),
    # The ForecastsUpdated event the policy came from: the journal keeps that event while the policy is
    # current (``referenced_events``). Added after the table: NULL in rows stored before it.
    ("event_id", "VARCHAR", _S),
)
_POLICY_VERSION = [name for name, _, _ in _POLICY_COLUMNS].index("generated_at_us")


def _ddl() -> list[str]:
    statements = [
        "CREATE TABLE IF NOT EXISTS meta (key VARCHAR PRIMARY KEY, value VARCHAR)",
        "CREATE TABLE IF NOT EXISTS state (id INTEGER PRIMARY KEY, applied_seq BIGINT NOT NULL)",
        "INSERT INTO state VALUES (1, 0) ON CONFLICT DO NOTHING",
        "CREATE TABLE IF NOT EXISTS inbox (event_id VARCHAR PRIMARY KEY, applied_at TIMESTAMP)",
        "CREATE TABLE IF NOT EXISTS dim_watermarks (kind VARCHAR, dim VARCHAR, value VARCHAR, "
        "version BIGINT NOT NULL, PRIMARY KEY (kind, dim, value))",
        "CREATE TABLE IF NOT EXISTS kind_watermarks (kind VARCHAR PRIMARY KEY, version BIGINT NOT NULL)",
    ]
    for table, (_, key, columns) in TABLES.items():
        cols = ", ".join(f"{name} {sqltype}" for name, sqltype, _ in columns)
        primary = f", PRIMARY KEY ({', '.join(key)})" if table in _MASTER_TABLES else ""
        statements.append(f"CREATE TABLE IF NOT EXISTS {table} ({cols}, seq BIGINT NOT NULL{primary})")
    cols = ", ".join(f"{name} {sqltype}" for name, sqltype, _ in _COST_COLUMNS)
    statements.append(f"CREATE TABLE IF NOT EXISTS material_costs ({cols}, PRIMARY KEY (code))")
    cols = ", ".join(f"{name} {sqltype}" for name, sqltype, _ in _FORECAST_COLUMNS)
    statements.append(f"CREATE TABLE IF NOT EXISTS forecasts ({cols})")
    cols = ", ".join(f"{name} {sqltype}" for name, sqltype, _ in _POLICY_COLUMNS)
    statements.append(f"CREATE TABLE IF NOT EXISTS policies ({cols}, PRIMARY KEY (material_code, site_code))")
    # Brings a file from before the column to the table above (no schema bump: that would drop forecasts).
    statements.append("ALTER TABLE policies ADD COLUMN IF NOT EXISTS event_id VARCHAR")
    statements.append(
        "CREATE TABLE IF NOT EXISTS lead_time_stats (material_code VARCHAR, site_code VARCHAR, "
        "family VARCHAR, n BIGINT NOT NULL, total BIGINT NOT NULL)"
    )
    return statements


def _arrow(
    columns: Sequence[tuple[str, str, pa.DataType]], rows: Sequence[tuple[object, ...]], *, seq: bool
) -> pa.Table:
    names = [c[0] for c in columns] + (["seq"] if seq else [])
    types = [c[2] for c in columns] + ([_I] if seq else [])
    arrays = [pa.array([row[i] for row in rows], type=t) for i, t in enumerate(types)]
    return pa.Table.from_arrays(arrays, names=names)


def _key_arrow(table: str, keys: Sequence[tuple[object, ...]]) -> pa.Table:
    """Arrow table of natural keys, columns in key order."""
    _, key_cols, columns = TABLES[table]
    types = {name: arrow_type for name, _, arrow_type in columns}
    return pa.Table.from_arrays(
        [pa.array([k[i] for k in keys], type=types[c]) for i, c in enumerate(key_cols)], names=list(key_cols)
    )


_LEAD_TIME_KEY = "material_code, site_code, family"
_LEAD_TIME_COLUMNS = f"{_LEAD_TIME_KEY}, lead_time_days"
_CONSUMPTION_NAMES = [name for name, _, _ in TABLES["consumption"][2]]
_LEAD_TIME_INDEXES = [_CONSUMPTION_NAMES.index(c) for c in _LEAD_TIME_COLUMNS.split(", ")]
_LEAD_TIME_RETURNING = ", ".join(f"t.{c}" for c in _LEAD_TIME_COLUMNS.split(", "))


def _update_lead_time_stats(
    job: Job, inserted: Iterable[tuple[object, ...]], deleted: Iterable[tuple[object, ...]]
) -> bool:
    """Add the lead times of the consumption rows ``inserted`` to ``lead_time_stats`` and take those of the
    ``deleted`` ones (material, site, family, lead time) away, in the caller's transaction; False when no
    row had a lead time (the statistics did not change)."""
    m, s, f, lt = _LEAD_TIME_INDEXES
    deltas: dict[tuple[object, object, object], list[int]] = {}
    for rows, sign in (((r[m], r[s], r[f], r[lt]) for r in inserted), 1), (deleted, -1):
        for material, site, family, lead_time in rows:
            if lead_time is not None and int(lead_time) >= 0:  # type: ignore[call-overload]
                entry = deltas.setdefault((material, site, family), [0, 0])
                entry[0] += sign
                entry[1] += sign * int(lead_time)  # type: ignore[call-overload]
    if not deltas:
        return False
    keys = list(deltas)
    cur = job.cursor
    cur.register(
        "lead_time_deltas",
        pa.table(
            {
                "material_code": pa.array([k[0] for k in keys], pa.string()),
                "site_code": pa.array([k[1] for k in keys], pa.string()),
                "family": pa.array([k[2] for k in keys], pa.string()),
                "n": pa.array([deltas[k][0] for k in keys], pa.int64()),
                "total": pa.array([deltas[k][1] for k in keys], pa.int64()),
            }
        ),
    )
    same = " AND ".join(f"s.{c} IS NOT DISTINCT FROM d.{c}" for c in _LEAD_TIME_KEY.split(", "))
    try:
        # Each key's new row from its old one and its delta, then the old rows out and the new ones in (no
        # primary key to upsert on: see the module docstring); a key whose count reaches 0 has no row.
        cur.execute(
            "CREATE OR REPLACE TEMP TABLE lead_time_merged AS SELECT d.material_code, d.site_code, d.family, "
            "coalesce(s.n, 0) + d.n AS n, coalesce(s.total, 0) + d.total AS total "
            f"FROM lead_time_deltas d LEFT JOIN lead_time_stats s ON {same}"
        )
        cur.execute(f"DELETE FROM lead_time_stats s USING lead_time_deltas d WHERE {same}")
        cur.execute("INSERT INTO lead_time_stats SELECT * FROM lead_time_merged WHERE n > 0")
        cur.execute("DROP TABLE lead_time_merged")
    finally:
        cur.unregister("lead_time_deltas")
    return True


def forecast_series_key(level: int, material: str, site: str, family: str, region: str) -> str:
    """Identity of a forecast series: only the fields its level uses (a material x site forecast that also
    names its family is still the material x site series)."""
    level = level or 1
    keep = {
        1: (material, site, "", ""),
        2: (material, "", "", ""),
        3: ("", "", family, ""),
        4: ("", "", "", region),
    }.get(level, ("", "", "", ""))
    return f"{level}|" + "|".join(keep)


class MasterIndex:
    """Small in-memory maps the apply path needs: material -> family, site -> (client, region)."""

    def __init__(self) -> None:
        self.family: dict[str, str] = {}
        self.site: dict[str, tuple[str, str]] = {}

    def load(self, job: Job) -> None:
        cur = job.cursor
        self.family = dict(cur.execute("SELECT code, family FROM materials").fetchall())
        self.site = {
            code: (client, region)
            for code, client, region in cur.execute("SELECT code, client, region FROM sites").fetchall()
        }


class Watermarks:
    """Dimension and kind watermarks held in memory for cache lookups (the table is the durable copy)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._dims: dict[tuple[str, str, str], int] = {}
        self._kinds: dict[str, int] = {}
        self.generation = 0
        """Moves after every change of the maps (never before): keys computed from the maps can be reused
        while it stays put (``cache_keys.LookupPlan``)."""

    def load(self, job: Job) -> None:
        dims = {
            (k, d, v): int(s)
            for k, d, v, s in job.cursor.execute(
                "SELECT kind, dim, value, version FROM dim_watermarks"
            ).fetchall()
        }
        kinds = dict(job.cursor.execute("SELECT kind, version FROM kind_watermarks").fetchall())
        with self._lock:
            self._dims, self._kinds = dims, {k: int(v) for k, v in kinds.items()}
            self.generation += 1

    def update(
        self,
        dims: Mapping[tuple[str, str, str], int],
        kinds: Mapping[str, int],
        *,
        data_end: int | None = None,
    ) -> None:
        with self._lock:
            if data_end is not None:
                self._kinds[Kind.DATA_END] = data_end
            for key, version in dims.items():
                if version > self._dims.get(key, 0):
                    self._dims[key] = version
            for kind, version in kinds.items():
                if version > self._kinds.get(kind, 0):
                    self._kinds[kind] = version
            self.generation += 1

    def lookup(self) -> tuple[Mapping[tuple[str, str, str], int], Mapping[str, int]]:
        """The live maps, read without copying. A cache lookup may use a stale read (its key is then one
        nobody stores); a cold read trusts them only under ``DuckEngine.writes`` (``AnalyticsService``)."""
        return self._dims, self._kinds


@dataclass
class ApplyResult:
    """What one apply did."""

    applied: int = 0
    skipped: int = 0
    duplicate_event: bool = False
    watermark: int = 0
    pairs: set[tuple[str, str]] = field(default_factory=set)
    """(material, site) pairs whose stock, orders, demand or policy changed: the alert candidates."""
    every_pair: bool = False
    """The lead-time statistics, the data end, or a material's family or ``stocked`` flag moved: the fallback
    lead time (material, family, all lines), the history demand rate or the evaluation of any pair may have
    changed, not only those of ``pairs``."""


class _Bumps:
    def __init__(self) -> None:
        self.dims: dict[tuple[str, str, str], int] = {}
        self.kinds: dict[str, int] = {}
        self.data_end: int | None = None

    def add(self, kind: str, dims: Iterable[tuple[str, str]], version: int) -> None:
        for dim, value in dims:
            key = (kind, dim, value)
            if version > self.dims.get(key, 0):
                self.dims[key] = version
        if version > self.kinds.get(kind, 0):
            self.kinds[kind] = version


class _Masters:
    """The master maps as of the record being applied: committed state plus this batch's changes."""

    def __init__(self, base: MasterIndex):
        self.base = base
        self.family: dict[str, str] = {}
        self.site: dict[str, tuple[str, str]] = {}

    def family_of(self, material: str, fallback: str = "") -> str:
        if material in self.family:
            return self.family[material]
        return self.base.family.get(material, fallback) or fallback

    def geo_of(self, site: str) -> tuple[str, str]:
        if site in self.site:
            return self.site[site]
        return self.base.site.get(site, ("", ""))

    def geo_dims(self, site: str) -> list[tuple[str, str]]:
        client, region = self.geo_of(site)
        return [(Dim.SITE, site), (Dim.CLIENT, client), (Dim.REGION, region)]


def _dims_of(table: str, row: tuple[object, ...], masters: _Masters) -> list[tuple[str, str]]:
    """Dimension values a row belongs to (see the module docstring)."""
    v = [str(x) if x is not None else "" for x in row]
    if table == "consumption":
        material, site, supplier, family = v[2], v[3], v[4], v[12]
        return [
            (Dim.MATERIAL, material),
            (Dim.FAMILY, masters.family_of(material, family)),
            (Dim.SUPPLIER, supplier),
            *masters.geo_dims(site),
        ]
    if table == "stock_snapshots":
        return [(Dim.MATERIAL, v[0]), (Dim.FAMILY, masters.family_of(v[0])), *masters.geo_dims(v[1])]
    if table == "stock_movements":
        dims = [(Dim.MATERIAL, v[2]), (Dim.FAMILY, masters.family_of(v[2])), *masters.geo_dims(v[3])]
        if v[4]:
            dims.extend(masters.geo_dims(v[4]))
        return dims
    if table == "purchase_orders":
        return [
            (Dim.MATERIAL, v[1]),
            (Dim.FAMILY, masters.family_of(v[1])),
            (Dim.SUPPLIER, v[3]),
            *masters.geo_dims(v[2]),
        ]
    if table == "materials":
        return [(Dim.MATERIAL, v[0]), (Dim.FAMILY, v[2])]
    if table == "sites":
        return [(Dim.SITE, v[0]), (Dim.CLIENT, v[1]), (Dim.REGION, v[2])]
    if table == "suppliers":
        return [(Dim.SUPPLIER, v[0])]
    if table == "external_observations":
        return [(Dim.SERIES, v[0])]
    raise ValueError(table)


def _pairs_of(table: str, row: tuple[object, ...]) -> list[tuple[str, str]]:
    if table == "consumption":
        return [(str(row[2]), str(row[3]))]
    if table == "stock_snapshots":
        return [(str(row[0]), str(row[1]))]
    if table == "stock_movements":
        pairs = [(str(row[2]), str(row[3]))]
        if row[4]:
            pairs.append((str(row[2]), str(row[4])))
        return pairs
    if table == "purchase_orders":
        return [(str(row[1]), str(row[2]))]
    return []


class ReadModel:
    """Schema and apply logic; every method taking a ``Job`` runs on an engine thread."""

    def __init__(self) -> None:
        self.master = MasterIndex()
        self.watermarks = Watermarks()
        self.applied_seq = 0
        self.lineage = ""
        """Batch id of the record with sequence 1: identifies the ingestion log this model was built from
        (sequence numbers mean something only within one log: a reset ingestion database starts again)."""
        self.forecast_replay_pending = False
        """True from the creation of the tables until the journaled forecasts were replayed into them
        (``AnalyticsService._replay_if_pending``); kept in ``meta``, so a rebuild cut short replays them."""
        self._uncompacted: set[str] | None = None
        """Forecast series given new rows since ``compact_forecasts`` last ran; None: all of them (nothing
        has been compacted since the model was opened). Used on the writer thread only."""
        self._lock = threading.Lock()

    # -- start-up -------------------------------------------------------------------------------------

    def open(self, job: Job, *, drop: bool = False) -> None:
        """Create or check the schema and load the in-memory state. A schema from another version (or any,
        with ``drop``) is dropped: the read model is derived data, the caller rebuilds it from the export."""
        cur = job.cursor
        cur.execute("CREATE TABLE IF NOT EXISTS meta (key VARCHAR PRIMARY KEY, value VARCHAR)")
        found = one(cur.execute("SELECT value FROM meta WHERE key = 'schema_version'"))
        stale = drop or (found is not None and found[0] != SCHEMA_VERSION)
        if stale:
            for (name,) in cur.execute("SELECT table_name FROM duckdb_tables()").fetchall():
                cur.execute(f'DROP TABLE IF EXISTS "{name}"')
            cur.execute("CREATE TABLE IF NOT EXISTS meta (key VARCHAR PRIMARY KEY, value VARCHAR)")
        cur.execute("BEGIN")
        had_stats = one(cur.execute("SELECT 1 FROM duckdb_tables() WHERE table_name = 'lead_time_stats'"))
        for statement in _ddl():
            cur.execute(statement)
        kept_at = one(cur.execute("SELECT value FROM meta WHERE key = 'lead_time_stats_seq'"))
        applied = one(cur.execute("SELECT applied_seq FROM state WHERE id = 1"))
        if not had_stats or kept_at is None or applied is None or kept_at[0] != str(applied[0]):
            # A file from before the table, or records applied by a release that did not keep it.
            self.rebuild_lead_time_stats(job)
        cur.execute("INSERT OR REPLACE INTO meta VALUES ('schema_version', ?)", [SCHEMA_VERSION])
        self._uncompacted = None
        if stale or found is None:  # new tables: the forecasts received so far are not in them
            cur.execute("INSERT OR REPLACE INTO meta VALUES ('forecast_replay', 'pending')")
        cur.execute("COMMIT")
        self.reload(job)

    def reload(self, job: Job) -> None:
        self.master.load(job)
        self.watermarks.load(job)
        row = one(job.cursor.execute("SELECT applied_seq FROM state WHERE id = 1"))
        self.applied_seq = int(row[0]) if row else 0
        lineage = one(job.cursor.execute("SELECT value FROM meta WHERE key = 'lineage'"))
        self.lineage = str(lineage[0]) if lineage else ""
        replay = one(job.cursor.execute("SELECT value FROM meta WHERE key = 'forecast_replay'"))
        self.forecast_replay_pending = bool(replay) and replay[0] == "pending"

    def forecasts_replayed(self, job: Job) -> None:
        """Record that the journaled forecasts are in the tables."""
        job.cursor.execute("INSERT OR REPLACE INTO meta VALUES ('forecast_replay', 'done')")
        self.forecast_replay_pending = False

    def reset(self, job: Job) -> None:
        """Forget everything (the ingestion log it came from is gone); the caller catches up from 0."""
        self.open(job, drop=True)

    @staticmethod
    def rebuild_lead_time_stats(job: Job) -> None:
        """Derive ``lead_time_stats`` from ``consumption`` whole (see the module docstring)."""
        cur = job.cursor
        cur.execute("DELETE FROM lead_time_stats")
        cur.execute(
            f"INSERT INTO lead_time_stats SELECT {_LEAD_TIME_KEY}, count(*), sum(lead_time_days) "
            "FROM consumption WHERE lead_time_days >= 0 GROUP BY ALL"
        )
        cur.execute(
            "INSERT OR REPLACE INTO meta "
            "SELECT 'lead_time_stats_seq', applied_seq::VARCHAR FROM state WHERE id = 1"
        )

    def diverged(self, records: Sequence[records_pb2.CommittedRecord]) -> bool:
        """True when ``records`` start another ingestion log than the one applied (sequence 1 differs)."""
        return any(r.sequence == 1 and self.lineage and r.batch_id != self.lineage for r in records)

    # -- ingestion records ----------------------------------------------------------------------------

    def apply_records(
        self, job: Job, records: Sequence[records_pb2.CommittedRecord], event_id: str | None = None
    ) -> ApplyResult:
        """Apply committed records (sequence order) in one transaction; see the module docstring."""
        cur = job.cursor
        result = ApplyResult()
        if event_id is not None:
            if one(cur.execute("SELECT 1 FROM inbox WHERE event_id = ?", [event_id])):
                result.duplicate_event = True
                result.watermark = self.applied_seq
                return result
        watermark = self.applied_seq
        fresh = sorted((r for r in records if r.sequence > watermark), key=lambda r: r.sequence)
        result.skipped = len(records) - len(fresh)
        rows: dict[str, dict[tuple[object, ...], tuple[object, ...]]] = {t: {} for t in TABLES}
        superseding: dict[str, set[tuple[object, ...]]] = {t: set() for t in TABLES}
        converted: list[tuple[str, tuple[object, ...], bool]] = []
        costs: dict[str, tuple[object, ...]] = {}
        for committed in fresh:
            cost = material_cost_of(committed)
            if cost is not None:
                costs[str(cost[0])] = cost  # sequence order: the last version of the batch wins
            item = row_of(committed)
            if item is None:
                continue
            table, row = item
            converted.append((table, row, committed.supersedes))
            if committed.supersedes or table in _MASTER_TABLES:
                superseding[table].add(self._key(table, row))
        previous = self._previous_rows(job, superseding)
        line_families = self._line_families(
            job,
            {
                str(row[0])
                for table, row, _ in converted
                if table == "materials" and (not self.master.family.get(str(row[0])) or not row[2])
            },
        )
        masters = _Masters(self.master)
        bumps = _Bumps()
        for table, row, _ in converted:
            kind = TABLES[table][0]
            key = self._key(table, row)
            seq = int(row[-1])  # type: ignore[call-overload]
            old = previous.get(table, {}).get(key)
            if old is not None:
                bumps.add(kind, _dims_of(table, old, masters), seq)
                result.pairs.update(_pairs_of(table, old))
            if table == "materials":
                material, family = str(row[0]), str(row[2])
                if not masters.family_of(material) or not family:
                    # Lines of a material the master gives no family count under their own family
                    # (``sql_filters.demand_where``): they leave those families now, or join them.
                    bumps.add(kind, [(Dim.FAMILY, f) for f in line_families.get(material, ())], seq)
                masters.family[material] = family
                if old is None or (old[2], old[6]) != (row[2], row[6]):
                    # The family picks the lead time the material's pairs fall back to, and ``stocked``
                    # whether they are evaluated at all: its pairs' alerts may change, and the record names
                    # none of them.
                    result.every_pair = True
            elif table == "sites":
                masters.site[str(row[0])] = (str(row[1]), str(row[2]))
            bumps.add(kind, _dims_of(table, row, masters), seq)
            result.pairs.update(_pairs_of(table, row))
            previous.setdefault(table, {})[key] = row
            rows[table][key] = row
            watermark = seq
        job.check()
        cur.execute("BEGIN")
        for table, by_key in rows.items():
            if not by_key:
                continue
            _, key_cols, columns = TABLES[table]
            staged = _arrow(columns, list(by_key.values()), seq=True)
            cur.register("staged_rows", staged)
            if table in _MASTER_TABLES:
                cur.execute(f"INSERT OR REPLACE INTO {table} SELECT * FROM staged_rows")
            else:
                replaced = [k for k in by_key if k in superseding[table]]
                deleted: list[tuple[object, ...]] = []
                if replaced:
                    cur.register("staged_keys", _key_arrow(table, replaced))
                    match = " AND ".join(f"t.{c} = k.{c}" for c in key_cols)
                    returning = f" RETURNING {_LEAD_TIME_RETURNING}" if table == "consumption" else ""
                    result_set = cur.execute(
                        f"DELETE FROM {table} t USING staged_keys k WHERE {match}{returning}"
                    )
                    deleted = result_set.fetchall() if returning else []
                    cur.unregister("staged_keys")
                cur.execute(f"INSERT INTO {table} SELECT * FROM staged_rows")
                if table == "consumption" and _update_lead_time_stats(job, by_key.values(), deleted):
                    result.every_pair = True
            cur.unregister("staged_rows")
            result.applied += len(by_key)
        if costs:
            # Every material version writes its cost, NULL included: a correction that drops the cost makes
            # it unknown again instead of leaving the old one in place.
            cur.register("staged_costs", _arrow(_COST_COLUMNS, list(costs.values()), seq=False))
            cur.execute("INSERT OR REPLACE INTO material_costs SELECT * FROM staged_costs")
            cur.unregister("staged_costs")
        if rows["consumption"]:
            # Open-ended date ranges end at the last demand date: answers that use it depend on it.
            end = one(cur.execute("SELECT max(demand_date) FROM consumption"))
            bumps.data_end = end[0].toordinal() if end and end[0] else 0
            if bumps.data_end != self.watermarks.lookup()[1].get(Kind.DATA_END):
                result.every_pair = True
        self._write_bumps(job, bumps)
        if watermark > self.applied_seq:
            cur.execute("UPDATE state SET applied_seq = ? WHERE id = 1", [watermark])
            # The sequence the lead-time statistics were kept up to: a file that a release without them
            # applied records to is told apart (``open`` derives them again).
            cur.execute("INSERT OR REPLACE INTO meta VALUES ('lead_time_stats_seq', ?)", [str(watermark)])
        if event_id is not None:
            cur.execute("INSERT INTO inbox VALUES (?, now()::TIMESTAMP)", [event_id])
        lineage = next((r.batch_id for r in fresh if r.sequence == 1), None)
        if lineage is not None:
            cur.execute("INSERT OR REPLACE INTO meta VALUES ('lineage', ?)", [lineage])
        cur.execute("COMMIT")
        if lineage is not None:
            self.lineage = lineage
        self._committed(masters, bumps, watermark)
        result.watermark = watermark
        return result

    @staticmethod
    def _key(table: str, row: tuple[object, ...]) -> tuple[object, ...]:
        _, key_cols, columns = TABLES[table]
        names = [c[0] for c in columns]
        return tuple(row[names.index(k)] for k in key_cols)

    def _previous_rows(
        self, job: Job, keys: Mapping[str, set[tuple[object, ...]]]
    ) -> dict[str, dict[tuple[object, ...], tuple[object, ...]]]:
        """Current rows of the keys about to be replaced (their dimensions are bumped too)."""
        found: dict[str, dict[tuple[object, ...], tuple[object, ...]]] = {}
        cur = job.cursor
        for table, wanted in keys.items():
            if not wanted:
                continue
            key_cols = TABLES[table][1]
            cur.register("wanted_keys", _key_arrow(table, list(wanted)))
            match = " AND ".join(f"t.{c} = k.{c}" for c in key_cols)
            rows = cur.execute(f"SELECT t.* FROM {table} t JOIN wanted_keys k ON {match}").fetchall()
            cur.unregister("wanted_keys")
            found[table] = {self._key(table, r): tuple(r) for r in rows}
        return found

    @staticmethod
    def _line_families(job: Job, materials: set[str]) -> dict[str, set[str]]:
        """The families the committed demand lines of ``materials`` carry themselves."""
        if not materials:
            return {}
        found: dict[str, set[str]] = {}
        for material, family in job.cursor.execute(
            "SELECT DISTINCT material_code, family FROM consumption "
            "WHERE material_code IN (SELECT unnest(?::VARCHAR[])) AND family <> ''",
            [sorted(materials)],
        ).fetchall():
            found.setdefault(str(material), set()).add(str(family))
        return found

    def _write_bumps(self, job: Job, bumps: _Bumps) -> None:
        cur = job.cursor
        if bumps.dims:
            keys = list(bumps.dims)
            table = pa.table(
                {
                    "kind": [k[0] for k in keys],
                    "dim": [k[1] for k in keys],
                    "value": [k[2] for k in keys],
                    "version": [bumps.dims[k] for k in keys],
                }
            )
            cur.register("bumps", table)
            cur.execute(
                "INSERT INTO dim_watermarks SELECT kind, dim, value, version FROM bumps "
                "ON CONFLICT (kind, dim, value) DO UPDATE SET version = greatest(version, excluded.version)"
            )
            cur.unregister("bumps")
        for kind, version in bumps.kinds.items():
            cur.execute(
                "INSERT INTO kind_watermarks VALUES (?, ?) "
                "ON CONFLICT (kind) DO UPDATE SET version = greatest(version, excluded.version)",
                [kind, version],
            )
        if bumps.data_end is not None:
            cur.execute(
                "INSERT OR REPLACE INTO kind_watermarks VALUES (?, ?)", [Kind.DATA_END, bumps.data_end]
            )

    def _committed(self, masters: _Masters, bumps: _Bumps, watermark: int) -> None:
        # Called right after COMMIT, in the same write job: cold reads key answers by these maps when no
        # write job overlapped them (``DuckEngine.writes``), so they must match the tables when a job ends.
        with self._lock:
            self.master.family.update(masters.family)
            self.master.site.update(masters.site)
            self.watermarks.update(bumps.dims, bumps.kinds, data_end=bumps.data_end)
            self.applied_seq = max(self.applied_seq, watermark)

    # -- forecasts ------------------------------------------------------------------------------------

    def apply_forecasts(self, job: Job, event: events_pb2.ForecastsUpdated) -> ApplyResult:
        """Store the forecasts (all versions: accuracy needs the past ones) and keep the newest policy per
        material x site. Versions are the forecasts' generated_at, in microseconds."""
        cur = job.cursor
        result = ApplyResult(watermark=self.applied_seq)
        if one(cur.execute("SELECT 1 FROM inbox WHERE event_id = ?", [event.event_id])):
            result.duplicate_event = True
            return result
        masters = _Masters(self.master)
        bumps = _Bumps()
        received = int(time.time() * 1_000_000)
        forecast_rows: list[tuple[object, ...]] = []
        for fc in event.forecasts:
            ref = fc.series
            level = int(ref.level) or 1
            version = micros_of(fc.provenance.generated_at) or received
            family = ref.family or (masters.family_of(ref.material_code) if ref.material_code else "")
            client, region = masters.geo_of(ref.site_code) if ref.site_code else ("", "")
            region = ref.region or region
            key = forecast_series_key(level, ref.material_code, ref.site_code, ref.family, ref.region)
            origin = min(
                (d for d in (date_of(w.week_start) for w in fc.weeks) if d is not None), default=None
            )
            for week in fc.weeks:
                forecast_rows.append(
                    (
                        key,
                        level,
                        ref.material_code,
                        ref.site_code,
                        ref.family,
                        ref.region,
                        origin,
                        date_of(week.week_start),
                        week.mean,
                        [q.level for q in week.quantiles],
                        [q.value for q in week.quantiles],
                        fc.method,
                        fc.unit,
                        fc.provenance.model_name,
                        fc.provenance.model_version,
                        fc.provenance.data_watermark,
                        version,
                        event.event_id,
                    )
                )
            dims = [(Dim.FAMILY, family), (Dim.REGION, region)]
            if ref.material_code:
                dims.append((Dim.MATERIAL, ref.material_code))
            if ref.site_code:
                dims.extend([(Dim.SITE, ref.site_code), (Dim.CLIENT, client)])
            bumps.add(Kind.FORECAST, dims, version)
            if ref.material_code and ref.site_code:
                result.pairs.add((ref.material_code, ref.site_code))
        policy_rows: dict[tuple[str, str], tuple[object, ...]] = {}
        for policy in event.policies:
            ref = policy.series
            if not (ref.material_code and ref.site_code):
                continue
            version = micros_of(policy.provenance.generated_at) or received
            d = policy.decomposition
            row = (
                ref.material_code,
                ref.site_code,
                policy.safety_stock,
                policy.reorder_point,
                policy.order_up_to,
                policy.suggested_order_quantity,
                d.lead_time_mean_days,
                d.lead_time_p90_days,
                d.lead_time_scope,
                policy.unit,
                policy.method,
                policy.provenance.model_name,
                policy.provenance.model_version,
                policy.provenance.data_watermark,
                version,
                event.event_id,
            )
            pair = (ref.material_code, ref.site_code)
            if pair not in policy_rows or version >= int(policy_rows[pair][_POLICY_VERSION]):  # type: ignore[call-overload]
                policy_rows[pair] = row
            client, region = masters.geo_of(ref.site_code)
            bumps.add(
                Kind.FORECAST,
                [
                    (Dim.MATERIAL, ref.material_code),
                    (Dim.FAMILY, masters.family_of(ref.material_code)),
                    (Dim.SITE, ref.site_code),
                    (Dim.CLIENT, client),
                    (Dim.REGION, region),
                ],
                version,
            )
            result.pairs.add(pair)
        job.check()
        cur.execute("BEGIN")
        if forecast_rows:
            if self._uncompacted is not None:
                self._uncompacted.update(str(row[0]) for row in forecast_rows)
            cur.register("staged_forecasts", _arrow(_FORECAST_COLUMNS, forecast_rows, seq=False))
            cur.execute("INSERT INTO forecasts SELECT * FROM staged_forecasts")
            cur.unregister("staged_forecasts")
        if policy_rows:
            cur.register("staged_policies", _arrow(_POLICY_COLUMNS, list(policy_rows.values()), seq=False))
            # Keep whichever version is newer: an older policy delivered late must not win.
            cur.execute(
                "INSERT INTO policies SELECT * FROM staged_policies ON CONFLICT (material_code, site_code) "
                "DO UPDATE SET "
                + ", ".join(
                    f"{name} = CASE WHEN excluded.generated_at_us >= policies.generated_at_us "
                    f"THEN excluded.{name} ELSE policies.{name} END"
                    for name, _, _ in _POLICY_COLUMNS[2:]
                )
            )
            cur.unregister("staged_policies")
        self._write_bumps(job, bumps)
        cur.execute("INSERT INTO inbox VALUES (?, now()::TIMESTAMP)", [event.event_id])
        cur.execute("COMMIT")
        self._committed(masters, bumps, 0)
        return result

    # -- retention (``housekeeping.py`` runs these) ------------------------------------------------------

    def compact_forecasts(self, job: Job) -> int:
        """Delete the forecast rows no answer reads; returns how many.

        Forecasts are kept in every version because accuracy compares past forecasts with actuals, but it
        reads only one per series and week: the latest origin, then the latest version, then the smallest
        event id (``kpis._accuracy``); series bands and the inventory status read the series' newest
        version only. A row that is neither is dead weight. Deleting them changes no answer, so the
        watermarks do not move and cached answers stay valid; the table then grows with series x weeks,
        not with re-forecasts.

        The first round after opening looks at every series, later ones only at the series given rows
        since (a full pass over a company-scale table holds the writer for seconds).
        """
        touched, self._uncompacted = self._uncompacted, set()
        if touched is not None and not touched:
            return 0
        only = "" if touched is None else "WHERE series_key IN (SELECT unnest(?::VARCHAR[]))"
        cur = job.cursor
        try:
            cur.execute("BEGIN")
            deleted = one(
                cur.execute(
                    f"""
                    DELETE FROM forecasts WHERE rowid IN (
                        SELECT rowid FROM (
                            SELECT rowid,
                                   row_number() OVER (PARTITION BY series_key, week_start
                                                      ORDER BY origin DESC, generated_at_us DESC, event_id)
                                       AS rank,
                                   generated_at_us = max(generated_at_us) OVER (PARTITION BY series_key)
                                       AS newest
                            FROM forecasts {only})
                        WHERE rank > 1 AND NOT newest)
                    """,
                    [] if touched is None else [sorted(touched)],
                )
            )[0]
            cur.execute("COMMIT")
        except BaseException:  # the next round looks at these series again
            if touched is None or self._uncompacted is None:
                self._uncompacted = None
            else:
                self._uncompacted |= touched
            raise
        return int(deleted)

    def journal_prunable(self, job: Job, journaled: set[str]) -> set[str]:
        """Which of the ``journaled`` forecast events a rebuilt read model no longer needs: events applied
        here whose forecasts and policies all gave way to newer ones (after ``compact_forecasts``).

        Empty unless every event the tables still read is itself journaled, so that a rebuild replaying the
        journal ends with these tables (an event applied here but not journaled yet, or a policy stored
        before policies named their event, holds the pruning back). One snapshot: an event applied while
        this runs is either seen as referenced or not applied.
        """
        cur = job.cursor
        cur.execute("BEGIN")
        try:
            unknown = one(cur.execute("SELECT count(*) FROM policies WHERE event_id IS NULL"))[0]
            referenced = {
                str(r[0])
                for r in cur.execute(
                    "SELECT DISTINCT event_id FROM forecasts UNION SELECT DISTINCT event_id FROM policies "
                    "WHERE event_id IS NOT NULL"
                ).fetchall()
            }
            if unknown or not referenced <= journaled:
                return set()
            candidates = sorted(journaled - referenced)
            applied = cur.execute(
                "SELECT event_id FROM inbox WHERE event_id IN (SELECT unnest(?::VARCHAR[]))", [candidates]
            ).fetchall()
            return {str(r[0]) for r in applied}
        finally:
            cur.execute("ROLLBACK")  # a read: ending it so does not hide an error raised inside

    def forget_inbox(self, job: Job, older_than_seconds: float, keep: set[str]) -> int:
        """Delete inbox entries applied more than ``older_than_seconds`` ago; returns how many.

        A redelivery comes within minutes of the delivery it repeats, and batches are also deduplicated by
        their sequence numbers, so an old entry guards nothing. Kept regardless: the entries of events the
        tables still read (a late copy of such an event must not be applied twice) and ``keep`` (journaled
        events not pruned yet, which ``journal_prunable`` recognises by their entry).
        """
        cur = job.cursor
        cur.execute("BEGIN")
        deleted = one(
            cur.execute(
                "DELETE FROM inbox WHERE applied_at < now()::TIMESTAMP - to_seconds(?) "
                "AND event_id NOT IN (SELECT unnest(?::VARCHAR[])) "
                "AND event_id NOT IN (SELECT event_id FROM forecasts) "
                "AND event_id NOT IN (SELECT event_id FROM policies WHERE event_id IS NOT NULL)",
                [older_than_seconds, sorted(keep)],
            )
        )[0]
        cur.execute("COMMIT")
        return int(deleted)

    # -- misc -----------------------------------------------------------------------------------------

    def is_empty(self, job: Job) -> bool:
        """True for a new (or lost and recreated) read model: nothing applied yet."""
        row = one(job.cursor.execute("SELECT applied_seq FROM state WHERE id = 1"))
        return not row or int(row[0]) == 0
