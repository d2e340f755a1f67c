"""Re-forecast throughput: series/s for a committed batch touching 1,000 synthetic material x site series.

    python -m bench.reforecast [--series 1000]

Runs the consumer's whole path (read-model watermark check, cache invalidation, batched history reads over
gRPC, one onnxruntime run per chunk, a reorder policy per series, ForecastsUpdated published on the memory
bus). Baseline, measured in the same run: the bare model work for the same series (build_features for every
series and one onnxruntime run over all rows), so the ratio is the share of the pure model throughput left
after I/O and policies. The issue sets no target for this benchmark; ``target`` is null.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import secrets
import time

import numpy as np
from novacorrente.events.v1 import events_pb2 as epb
from novacorrente.ingestion.v1 import records_pb2 as rpb

from bench.forecast_rpc import WEEKS, start_forecast, start_peer, synthetic_weekly
from services.forecast import features

SERIES = 1000


def bare_rate(app, keys: list[tuple[str, str]]) -> float:  # type: ignore[no-untyped-def]
    model = app.repository.get(app.settings.model_name)
    weeks = np.datetime64("2025-01-06") + 7 * np.arange(WEEKS).astype("timedelta64[D]")
    start = time.perf_counter()
    blocks = []
    for material, site in keys:
        attrs = features.static_attributes("MATERIAL ELETRICO", site, "material_site")
        codes = features.encode_static(attrs, model.vocabularies)
        blocks.append(
            features.build_features(synthetic_weekly(material, site), weeks, codes, 4, region=attrs["region"])
        )
    model.run({model.inputs[0].name: np.concatenate(blocks)})
    return len(keys) / (time.perf_counter() - start)


async def main(series: int) -> None:
    peer, port = await start_peer()
    app = await start_forecast(secrets.token_bytes(32), port, reforecast_batch_size=200)
    keys = [(f"R{i:06d}", "BAJSS002-3") for i in range(series)]
    event = epb.BatchCommitted(event_id="bench-1", batch_id="bench", sequence_from=1, sequence_to=1)
    for i, (material, site) in enumerate(keys):
        event.records.add(
            sequence=i + 1,
            record=rpb.Record(
                consumption=rpb.Consumption(material_code=material, site_code=site, quantity=1)
            ),
        )
    try:
        assert app.consumer is not None
        start = time.perf_counter()
        published = await app.consumer.process(event)
        elapsed = time.perf_counter() - start
        policies = sum(len(p.policies) for p in published)
        baseline = await asyncio.to_thread(bare_rate, app, keys)
    finally:
        await app.stop()
        await peer.stop(None)
    value = series / elapsed
    print(f"{series} series, {len(published)} events, {policies} policies in {elapsed:.2f}s", flush=True)
    print(
        json.dumps(
            {
                "name": "reforecast",
                "value": round(value, 1),
                "unit": "series/s (forecast + reorder policy + event)",
                "baseline": round(baseline, 1),
                "ratio": round(value / baseline, 3),
                "target": None,
            }
        )
    )


if __name__ == "__main__":
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--series", type=int, default=SERIES, help="material x site series in the batch")
    asyncio.run(main(parser.parse_args().series))
