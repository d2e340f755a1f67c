"""The benchmarks' synthetic company history is written in the read model's own schema: a schema change
that the generator does not follow fails here, not in the next benchmark run."""

from __future__ import annotations

import asyncio
from pathlib import Path

from novacorrente.analytics.v1 import analytics_pb2 as a

from bench.gen_company_history import generate, start_replica


async def test_the_generated_history_opens_as_a_read_model_and_answers(tmp_path: Path) -> None:
    path = tmp_path / "readmodel.duckdb"
    stats = await asyncio.to_thread(generate, path, 0.0005)  # it runs an event loop of its own
    assert int(stats["lines"]) > 1000  # type: ignore[call-overload]
    app, stub, md = await start_replica(path)
    try:
        kpis = await stub.GetKpis(a.GetKpisRequest(names=["total_demand", "fill_rate"]), metadata=md)
        assert all(k.available for k in kpis.kpis), kpis
        inventory = await stub.ListInventoryStatus(a.ListInventoryStatusRequest(), metadata=md)
        assert inventory.rows and any(r.reorder_point > 0 for r in inventory.rows)
    finally:
        await app.stop()
