"""Synthetic company-scale history written straight into an analytics read model (a DuckDB file).

    python -m bench.gen_company_history --out .nova/bench/company.duckdb [--scale 1.0]

Scale 1.0: 18,000 sites x 1,000 materials, three years (2022-11-01 .. 2025-10-31), 20 million requisition
lines; plus a simulated weekly stock ledger (counts) and purchase orders for the 20,000 busiest series, and a
forecast with its reorder policy for each of them. ``--scale`` multiplies the lines and the ledger series
(sites and materials stay at company size), so ``--scale 0.01`` runs in seconds.

Shape taken from the real export (data/dadosSuprimentos.xlsx), sampled in DuckDB SQL with a hash of the row
number (deterministic, parallel): each synthetic material copies a real material (its family, unit and the
empirical distribution of its quantities), in the real popularity order; lead times (solicitation to
purchase, negative ones included) are drawn from the real empirical distribution; popularity of materials and
sites is heavy-tailed, so most material x site series are empty and the busy ones are intermittent, as in the
export. The file has the read model's schema and watermarks: the service opens it as its own read model.

The last line printed is a JSON object with the generation figures (this is a generator, not a benchmark).
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import json
import os
import secrets
import shutil
import tempfile
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any, cast

import duckdb
import grpc
import pyarrow as pa
from novacorrente.analytics.v1 import analytics_pb2_grpc

from bench.common import real_lines
from services.analytics.app import AnalyticsApp, build_app
from services.analytics.engine import DuckEngine
from services.analytics.read_model import ReadModel
from services.analytics.settings import AnalyticsSettings
from services.kit.auth import Role, mint_token
from services.ports.cache import Cache

# The analytics benchmarks import their harness from here too: `python -m bench` runs every bench/*.py
# except gen_*, so a support module of their own would be taken for a benchmark.
__all__ = ["NoCache", "Recorder", "emit", "generate", "prepare_data", "start_replica"]

START = dt.date(2022, 11, 1)
DAYS = 3 * 365
SITES = 18_000
MATERIALS = 1_000
LINES = 20_000_000
LEDGER_SERIES = 20_000
REGIONS = ("BA", "PE", "CE", "SE", "AL", "PB", "RN", "PI", "MA", "SP", "RJ", "MG")
CLIENTS = ("American Tower", "IHS", "SBA", "Winity", "Highline", "TBSA", "Neoenergia")


_SALTS = {name: n for n, name in enumerate(("m", "s", "d", "q", "r", "l", "p", "oh", "ps", "pq", "pr"), 1)}


def _h(i: str, salt: str) -> str:
    """A pseudo-random 64-bit number from a row number and a salt: deterministic and parallel-safe. (DuckDB's
    multi-argument hash combines the arguments' hashes in a way that leaves draws with two salts correlated,
    so the salt goes into the hashed number instead.)"""
    return f"hash(({i}) * 64 + {_SALTS[salt]})"


def _u(i: str, salt: str) -> str:
    """A uniform number in [0, 1)."""
    return f"(({_h(i, salt)} >> 11)::DOUBLE / 9007199254740992.0)"


def _real_tables(con: duckdb.DuckDBPyConnection) -> dict[str, object]:
    """Real materials by popularity with their quantities, and the real lead times."""
    rows = real_lines()
    popularity = Counter(str(r[1]) for r in rows)
    ranked = [code for code, _ in popularity.most_common()]
    rank = {code: i for i, code in enumerate(ranked)}
    info: dict[str, tuple[str, str]] = {}
    quantities: list[tuple[int, int, float]] = []
    per_rank: Counter[int] = Counter()
    leads: list[int] = []
    for r in rows:
        code = str(r[1])
        info.setdefault(code, (str(r[3]), str(r[6])))
        k = rank[code]
        quantities.append((k, per_rank[k], float(r[5])))
        per_rank[k] += 1
        leads.append((r[10].date() - r[9].date()).days)
    con.register(
        "real_materials",
        pa.table(
            {
                "rank": list(range(len(ranked))),
                "family": [info[c][0] for c in ranked],
                "unit": [info[c][1] for c in ranked],
                "n": [per_rank[i] for i in range(len(ranked))],
            }
        ),
    )
    con.register(
        "real_quantities",
        pa.table(
            {
                "rank": [q[0] for q in quantities],
                "k": [q[1] for q in quantities],
                "quantity": [q[2] for q in quantities],
            }
        ),
    )
    con.register("real_leads", pa.table({"k": list(range(len(leads))), "lead": leads}))
    per_series = sorted(Counter((str(r[0]), str(r[1])) for r in rows).values(), reverse=True)
    weeks: dict[tuple[str, str], set[dt.date]] = {}
    for r in rows:
        day = r[9].date()
        weeks.setdefault((str(r[0]), str(r[1])), set()).add(day - dt.timedelta(days=day.weekday()))
    span = (max(max(w) for w in weeks.values()) - min(min(w) for w in weeks.values())).days // 7 + 1
    shares = sorted(len(w) / span for w in weeks.values())
    con.register("real_series", pa.table({"j": list(range(len(per_series))), "n": per_series}))
    return {
        "real_materials": len(ranked),
        "real_lines": len(rows),
        "real_leads": len(leads),
        "real_series": len(per_series),
        "real_mean_lines_per_series_year": round(sum(per_series) / len(per_series), 4),
        "real_weeks_with_demand_share_p50_p90_p99": [
            round(shares[min(len(shares) - 1, int(q * len(shares)))], 4) for q in (0.5, 0.9, 0.99)
        ],
        "real_negative_lead_time_share": round(sum(x < 0 for x in leads) / len(leads), 4),
    }


def generate(path: Path, scale: float = 1.0) -> dict[str, object]:
    """Write the synthetic read model to ``path`` (replaced); returns figures about it."""
    path.parent.mkdir(parents=True, exist_ok=True)
    for stale in path.parent.glob(path.name + "*"):
        stale.unlink()
    started = time.perf_counter()
    engine = DuckEngine(str(path), read_workers=1)
    engine.run_sync(ReadModel().open)  # the service's own schema
    asyncio.run(engine.close())
    con = duckdb.connect(str(path))
    real = _real_tables(con)
    n_real = real["real_materials"]
    lines = max(1000, int(LINES * scale))
    ledger = max(100, int(LEDGER_SERIES * scale))

    con.execute(
        f"""
CREATE TEMP TABLE syn_materials AS
SELECT i AS idx, printf('%06d', 100000 + i) AS code, 'SYNTHETIC MATERIAL ' || i AS name, r.family, r.unit,
       r.rank AS template, r.n AS template_lines,
       CASE WHEN r.family LIKE 'SERVI%' THEN FALSE ELSE TRUE END AS stocked
FROM range({MATERIALS}) t(i) JOIN real_materials r ON r.rank = i % {n_real}
"""
    )
    con.execute(
        f"""
CREATE TEMP TABLE syn_sites AS
SELECT i AS idx,
       list_extract({list(REGIONS)}, 1 + i % {len(REGIONS)}) || printf('%05d', i) || '-1' AS code,
       list_extract({list(CLIENTS)}, 1 + (i // 7) % {len(CLIENTS)}) AS client,
       list_extract({list(REGIONS)}, 1 + i % {len(REGIONS)}) AS region,
       CASE WHEN i % 10 = 0 THEN 3 ELSE 2 END AS criticality
FROM range({SITES}) t(i)
"""
    )
    con.execute(
        "CREATE TEMP TABLE syn_suppliers AS SELECT i AS idx, 'SUPPLIER ' || i AS code FROM range(400) t(i)"
    )
    seq = 0
    con.execute(
        "INSERT INTO materials SELECT code, name, family, unit, 0, '', stocked, 1 + idx FROM syn_materials"
    )
    seq += MATERIALS
    con.execute(
        f"INSERT INTO sites SELECT code, client, region, 1, criticality, {seq} + 1 + idx FROM syn_sites"
    )
    seq += SITES
    con.execute(f"INSERT INTO suppliers SELECT code, code, {seq} + 1 + idx FROM syn_suppliers")
    seq += 400
    n_leads = real["real_leads"]
    n_series = real["real_series"]
    # Intermittency as in the export: every active material x site series draws its yearly number of lines
    # from the export's own series (median 1, busiest 114), for three years; enough series are active to
    # reach the target number of lines. Lines fall on uniform days; lead times and quantities are real draws.
    mean_lines = 3 * float(cast(float, real["real_mean_lines_per_series_year"]))
    active = int(lines / mean_lines * 1.02) + 1
    con.execute(
        f"""
CREATE TEMP TABLE syn_series AS
SELECT k,
       least(floor({MATERIALS} * pow({_u("k", "m")}, 1.15))::BIGINT, {MATERIALS - 1}) AS m,
       least(floor({SITES} * pow({_u("k", "s")}, 1.0))::BIGINT, {SITES - 1}) AS s,
       3 * r.n AS lines
FROM range({active}) t(k) JOIN real_series r ON r.j = {_h("k", "r")} % {n_series}
"""
    )
    con.execute(
        f"""
INSERT INTO consumption
WITH expanded AS (SELECT k, m, s, unnest(range(lines)) AS x FROM syn_series),
draws AS (
    SELECT k * 1000 + x AS i, m, s,
           floor({DAYS} * {_u("k * 1000 + x", "d")})::BIGINT AS day,
           ({_h("k * 1000 + x", "l")} % {n_leads})::BIGINT AS lk,
           {_u("k * 1000 + x", "q")} AS uq,
           ({_h("k", "p")} % 400)::BIGINT AS sup
    FROM expanded
)
SELECT 'R' || d.i AS requisition_id, m.code || '#1' AS line_key,
       m.code, s.code, 'SUPPLIER ' || d.sup, q.quantity, m.unit,
       DATE '{START}' + d.day::INTEGER, NULL, DATE '{START}' + d.day::INTEGER,
       DATE '{START}' + d.day::INTEGER + l.lead::INTEGER, l.lead, m.family,
       CASE WHEN l.lead < 0 THEN ['negative_lead_time'] ELSE []::VARCHAR[] END,
       {seq} + row_number() OVER (ORDER BY d.i)
FROM draws d
JOIN syn_materials m ON m.idx = d.m
JOIN syn_sites s ON s.idx = d.s
JOIN real_leads l ON l.k = d.lk
JOIN real_quantities q ON q.rank = m.template AND q.k = least(floor(d.uq * m.template_lines)::BIGINT,
                                                              m.template_lines - 1)
"""
    )
    lines = int(con.execute("SELECT count(*) FROM consumption").fetchall()[0][0])
    seq += lines
    generated_lines = time.perf_counter() - started
    # The simulated ledger: weekly counts and orders for the busiest stocked series.
    con.execute(
        f"""
CREATE TEMP TABLE busy AS
SELECT material_code, site_code, n, row_number() OVER (ORDER BY n DESC, material_code, site_code) - 1 AS idx
FROM (SELECT c.material_code, c.site_code, count(*) AS n
      FROM consumption c JOIN materials m ON m.code = c.material_code AND m.stocked GROUP BY ALL)
ORDER BY n DESC, material_code, site_code LIMIT {ledger}
"""
    )
    weeks = DAYS // 7
    con.execute(
        f"""
INSERT INTO stock_snapshots
SELECT b.material_code, b.site_code, DATE '{START}' + (7 * w)::INTEGER,
       greatest(0, ({_h("b.idx * 1000 + w", "oh")} % 60)::INTEGER - 12), TRUE,
       {seq} + 1 + b.idx * {weeks} + w
FROM busy b, range({weeks}) t(w)
"""
    )
    seq += ledger * weeks
    con.execute(
        f"""
INSERT INTO purchase_orders
SELECT 'PO' || b.idx || '-' || k, b.material_code, b.site_code, 'SUPPLIER ' || ({_h("b.idx", "ps")} % 400),
       5 + {_h("b.idx * 100 + k", "pq")} % 40, DATE '{START}' + (90 * k)::INTEGER,
       DATE '{START}' + (90 * k + 10)::INTEGER,
       CASE WHEN k < 11 THEN DATE '{START}' + (90 * k + 7 + {_h("b.idx * 100 + k", "pr")} % 8)::INTEGER END,
       TRUE,
       {seq} + 1 + b.idx * 12 + k
FROM busy b, range(12) t(k)
"""
    )
    seq += ledger * 12
    generated_at = int(dt.datetime(2025, 10, 31, tzinfo=dt.UTC).timestamp() * 1_000_000)
    con.execute(
        f"""
INSERT INTO forecasts
SELECT '1|' || b.material_code || '|' || b.site_code || '||', 1, b.material_code, b.site_code, '', '',
       DATE '{START}' + (7 * ({weeks} - 12))::INTEGER, DATE '{START}' + (7 * ({weeks} - 12 + w))::INTEGER,
       b.n / {weeks}.0, [0.1, 0.5, 0.9], [0.0, b.n / {weeks}.0, 3 * b.n / {weeks}.0],
       'lightgbm-quantile', 'UN',
       'demand_forecast', 'bench', 'seq:{seq}', {generated_at}, 'bench'
FROM busy b, range(20) t(w)
"""
    )
    con.execute(
        f"""
INSERT INTO policies
SELECT b.material_code, b.site_code, b.n / {weeks}.0, 3 * b.n / {weeks}.0, 6 * b.n / {weeks}.0, 0, 6.0, 14.0,
       'material', 'UN', 'lightgbm-quantile', 'demand_forecast', 'bench', 'seq:{seq}', {generated_at}, 'bench'
FROM busy b
"""
    )
    _watermarks(con, seq)
    con.execute("CHECKPOINT")
    stats = {
        "lines": lines,
        "ledger_series": ledger,
        "stock_counts": ledger * weeks,
        "sequence": seq,
        "seconds": round(time.perf_counter() - started, 1),
        "lines_seconds": round(generated_lines, 1),
        **real,
        **_intermittency(con),
    }
    con.close()
    # The lead-time statistics of the lines loaded above, as applying them would have kept.
    engine = DuckEngine(str(path), read_workers=1)
    engine.run_sync(ReadModel.rebuild_lead_time_stats)
    asyncio.run(engine.close())
    stats["file_mb"] = round(path.stat().st_size / 1e6, 1)
    return stats


def _watermarks(con: duckdb.DuckDBPyConnection, seq: int) -> None:
    """The watermarks the read model would have after applying these records in sequence order."""
    con.execute(
        """
INSERT INTO dim_watermarks
WITH c AS (SELECT c.material_code, c.site_code, c.supplier_code, m.family, s.client, s.region, c.seq
           FROM consumption c LEFT JOIN materials m ON m.code = c.material_code
           LEFT JOIN sites s ON s.code = c.site_code),
st AS (SELECT x.material_code, x.site_code, m.family, s.client, s.region, x.seq FROM stock_snapshots x
       LEFT JOIN materials m ON m.code = x.material_code LEFT JOIN sites s ON s.code = x.site_code),
po AS (SELECT x.material_code, x.site_code, x.supplier_code, m.family, s.client, s.region, x.seq
       FROM purchase_orders x LEFT JOIN materials m ON m.code = x.material_code
       LEFT JOIN sites s ON s.code = x.site_code)
SELECT 'consumption', 'material', material_code, max(seq) FROM c GROUP BY 3
UNION ALL SELECT 'consumption', 'site', site_code, max(seq) FROM c GROUP BY 3
UNION ALL SELECT 'consumption', 'supplier', supplier_code, max(seq) FROM c GROUP BY 3
UNION ALL SELECT 'consumption', 'family', family, max(seq) FROM c GROUP BY 3
UNION ALL SELECT 'consumption', 'client', client, max(seq) FROM c GROUP BY 3
UNION ALL SELECT 'consumption', 'region', region, max(seq) FROM c GROUP BY 3
UNION ALL SELECT 'stock', 'material', material_code, max(seq) FROM st GROUP BY 3
UNION ALL SELECT 'stock', 'site', site_code, max(seq) FROM st GROUP BY 3
UNION ALL SELECT 'stock', 'family', family, max(seq) FROM st GROUP BY 3
UNION ALL SELECT 'stock', 'client', client, max(seq) FROM st GROUP BY 3
UNION ALL SELECT 'stock', 'region', region, max(seq) FROM st GROUP BY 3
UNION ALL SELECT 'po', 'material', material_code, max(seq) FROM po GROUP BY 3
UNION ALL SELECT 'po', 'site', site_code, max(seq) FROM po GROUP BY 3
UNION ALL SELECT 'po', 'supplier', supplier_code, max(seq) FROM po GROUP BY 3
UNION ALL SELECT 'po', 'family', family, max(seq) FROM po GROUP BY 3
UNION ALL SELECT 'po', 'client', client, max(seq) FROM po GROUP BY 3
UNION ALL SELECT 'po', 'region', region, max(seq) FROM po GROUP BY 3
UNION ALL SELECT 'material_master', 'material', code, max(seq) FROM materials GROUP BY 3
UNION ALL SELECT 'material_master', 'family', family, max(seq) FROM materials GROUP BY 3
UNION ALL SELECT 'site_master', 'site', code, max(seq) FROM sites GROUP BY 3
UNION ALL SELECT 'site_master', 'client', client, max(seq) FROM sites GROUP BY 3
UNION ALL SELECT 'site_master', 'region', region, max(seq) FROM sites GROUP BY 3
UNION ALL SELECT 'supplier_master', 'supplier', code, max(seq) FROM suppliers GROUP BY 3
"""
    )
    con.execute(
        """
INSERT INTO kind_watermarks
SELECT 'consumption', max(seq) FROM consumption
UNION ALL SELECT 'stock', max(seq) FROM stock_snapshots
UNION ALL SELECT 'po', max(seq) FROM purchase_orders
UNION ALL SELECT 'material_master', max(seq) FROM materials
UNION ALL SELECT 'site_master', max(seq) FROM sites
UNION ALL SELECT 'supplier_master', max(seq) FROM suppliers
UNION ALL SELECT 'forecast', max(generated_at_us) FROM forecasts
UNION ALL SELECT 'data_end', (max(demand_date) - DATE '0001-01-01') + 1 FROM consumption
"""
    )
    con.execute("UPDATE state SET applied_seq = ? WHERE id = 1", [seq])


def _intermittency(con: duckdb.DuckDBPyConnection) -> dict[str, object]:
    """How intermittent the series are: share of weeks with demand of the median, p90, p99 active series."""
    row = con.execute(
        f"""
WITH per AS (
    SELECT count(DISTINCT date_trunc('week', demand_date)) / {DAYS / 7} AS share FROM consumption GROUP BY
    material_code, site_code
)
SELECT count(*), quantile_cont(share, [0.5, 0.9, 0.99]),
       (SELECT avg((lead_time_days < 0)::INTEGER) FROM consumption)
FROM per
"""
    ).fetchall()[0]
    return {
        "active_series": int(row[0]),
        "weeks_with_demand_share_p50_p90_p99": [round(float(x), 4) for x in row[1]],
        "negative_lead_time_share": round(float(row[2]), 4),
    }


# -- harness of the analytics benchmarks ---------------------------------------------------------------


class NoCache:
    """A cache that never hits: every call computes (a "cold" answer)."""

    async def get(self, key: str) -> bytes | None:
        return None

    async def set(self, key: str, value: bytes, ttl_seconds: float) -> None:
        return None

    async def check(self) -> bool:
        return True

    async def close(self) -> None:
        return None


def prepare_data(scale: float, data: Path | None) -> tuple[Path, dict[str, object], Callable[[], None]]:
    """A copy of ``data`` (or a freshly generated file) in a temporary directory, and its clean-up."""
    folder = Path(tempfile.mkdtemp(prefix="nova-bench-analytics-"))
    path = folder / "readmodel.duckdb"
    if data is not None:
        shutil.copy(data, path)
        stats: dict[str, object] = {"data": str(data)}
    else:
        stats = generate(path, scale)
    return path, stats, lambda: shutil.rmtree(folder, ignore_errors=True)


async def start_replica(
    path: Path, *, cache: Cache | None = None, **overrides: Any
) -> tuple[AnalyticsApp, Any, Any]:
    """A started replica on ``path``; returns (app, stub, metadata)."""
    key = secrets.token_bytes(32)
    values: dict[str, Any] = {
        "host": "127.0.0.1",
        "port": 0,
        "duckdb_path": str(path),
        "alerts_duckdb_path": ":memory:",
        "database_url": "duckdb:///unused",
        "broker_url": f"memory://bench-{secrets.token_hex(4)}",
        "cache_url": "memory://",
        "query_timeout_seconds": 600,
        "grace_seconds": 1,
    }
    values.update(overrides)
    app = await build_app(AnalyticsSettings(**values), cache=cache, jwt_key=key)
    await app.start()
    channel = grpc.aio.insecure_channel(
        app.address, options=[("grpc.max_receive_message_length", 256 * 1024 * 1024)]
    )
    stub = analytics_pb2_grpc.AnalyticsServiceStub(channel)
    metadata = (("authorization", f"Bearer {mint_token(key, 'bench', Role.VIEWER, 3600)}"),)
    return app, stub, metadata


class Recorder:
    """Wraps a DuckDB cursor and records what a job executes, so the same SQL can be replayed bare."""

    def __init__(self, inner: Any, log: list[tuple[str, Any]]):
        self._inner = inner
        self._log = log

    def execute(self, sql: str, params: Any = None) -> Recorder:
        self._log.append(("execute", (sql, params)))
        if params is None:
            self._inner.execute(sql)
        else:
            self._inner.execute(sql, params)
        return self

    def register(self, name: str, table: Any) -> Any:
        self._log.append(("register", (name, table)))
        return self._inner.register(name, table)

    def unregister(self, name: str) -> Any:
        self._log.append(("unregister", (name, None)))
        return self._inner.unregister(name)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._inner, name)


def emit(payload: dict[str, object]) -> None:
    """Print the benchmark's last line."""
    print(json.dumps({**payload, "cpus": os.cpu_count()}, default=str))


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--out", type=Path, default=Path(".nova/bench/company.duckdb"))
    parser.add_argument("--scale", type=float, default=1.0)
    args = parser.parse_args()
    stats = generate(args.out, args.scale)
    print(json.dumps({"name": "gen_company_history", "path": str(args.out), "scale": args.scale, **stats}))


if __name__ == "__main__":
    main()
