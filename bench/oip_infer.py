"""Open Inference Protocol ModelInfer throughput vs bare onnxruntime on the same model and threads.

For 1, 32 and 1,000 rows per request: rows/s through the full gRPC path (auth, validation, raw contents,
runner) with 4 requests in flight, against the same ``session.run`` called in a loop (same rows, same
intra-op threads), both measured in this run. Also p50/p99 request latency. Target: ratio >= 0.85 at 1,000
rows (at 1 and 32 rows the gRPC call itself dominates, which is what the ratio shows).

The model: ``NOVA_BENCH_MODEL_REPOSITORY`` (a trained repository), else ``models/``, else one trained now with
``python -m ml_training train --quick`` into a temporary folder.
"""

from __future__ import annotations

import asyncio
import json
import os
import secrets
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import grpc
import numpy as np
from inference import grpc_service_pb2 as pb
from inference import grpc_service_pb2_grpc as pb_grpc

from services.forecast.app import build_app
from services.forecast.repository import load_version
from services.forecast.settings import ForecastSettings
from services.kit.auth import Role, mint_token

ROOT = Path(__file__).resolve().parents[1]
MODEL = "demand_forecast"
THREADS = int(os.environ.get("NOVA_ONNX_INTRA_OP_THREADS", "1"))
IN_FLIGHT = 4


def model_repository() -> Path:
    for candidate in (os.environ.get("NOVA_BENCH_MODEL_REPOSITORY"), str(ROOT / "models")):
        if candidate and (Path(candidate) / MODEL).is_dir():
            return Path(candidate)
    out = Path(tempfile.mkdtemp(prefix="nova-bench-models-"))
    subprocess.run(
        [
            sys.executable,
            "-m",
            "ml_training",
            "train",
            "--data",
            str(ROOT / "data"),
            "--out",
            str(out),
            "--quick",
        ],
        check=True,
        cwd=ROOT,
        capture_output=True,
    )
    return out


def latest_version(repo: Path) -> str:
    return max((p.name for p in (repo / MODEL).iterdir() if p.name.isdigit()), key=int)


def rows_for(width: int, n: int) -> np.ndarray:
    rng = np.random.default_rng(n)
    rows = rng.random((n, width), dtype=np.float32)
    rows[:, 1] = 1.0 + 10 * rows[:, 1]  # the scale column
    return rows


def bare(repo: Path, rows: np.ndarray, seconds: float) -> float:
    """rows/s of session.run in a loop."""
    model = load_version(repo, MODEL, latest_version(repo), intra_op_threads=THREADS)
    feeds = {model.inputs[0].name: rows}
    names = [model.outputs[0].name]
    done, start = 0, time.perf_counter()
    while time.perf_counter() - start < seconds:
        model.session.run(names, feeds)
        done += rows.shape[0]
    return done / (time.perf_counter() - start)


async def served(address: str, token: str, rows: np.ndarray, seconds: float) -> tuple[float, list[float]]:
    request = pb.ModelInferRequest(model_name=MODEL)
    request.inputs.add(name="features", datatype="FP32", shape=list(rows.shape))
    request.raw_input_contents.append(rows.astype("<f4").tobytes())
    md = (("authorization", f"Bearer {token}"),)
    latencies: list[float] = []
    async with grpc.aio.insecure_channel(address) as channel:
        stub = pb_grpc.GRPCInferenceServiceStub(channel)
        for _ in range(20):  # warm-up
            await stub.ModelInfer(request, metadata=md)
        deadline = time.perf_counter() + seconds

        async def worker() -> int:
            n = 0
            while time.perf_counter() < deadline:
                t0 = time.perf_counter()
                await stub.ModelInfer(request, metadata=md)
                latencies.append(time.perf_counter() - t0)
                n += rows.shape[0]
            return n

        start = time.perf_counter()
        total = sum(await asyncio.gather(*(worker() for _ in range(IN_FLIGHT))))
        return total / (time.perf_counter() - start), latencies


async def main() -> None:
    repo = model_repository()
    key = secrets.token_bytes(32)
    settings = ForecastSettings(
        port=0,
        model_repository=repo,
        consume_events=False,
        repository_poll_seconds=0,
        onnx_intra_op_threads=THREADS,
        analytics_target="127.0.0.1:9",
    )
    app = await build_app(settings, jwt_key=key)
    await app.start()
    token = mint_token(key, "bench", Role.VIEWER, 600)
    width = app.repository.get(MODEL).inputs[0].shape[-1]
    results = {}
    try:
        for n in (1, 32, 1000):
            rows = rows_for(width, n)
            raw = await asyncio.to_thread(bare, repo, rows, 2.0)
            rate, lat = await served(app.address, token, rows, 3.0)
            q = statistics.quantiles(lat, n=100)
            results[n] = {
                "rows_per_s": round(rate, 1),
                "bare_rows_per_s": round(raw, 1),
                "ratio": round(rate / raw, 3),
                "p50_ms": round(q[49] * 1000, 3),
                "p99_ms": round(q[98] * 1000, 3),
            }
            print(f"rows={n}: {json.dumps(results[n])}", flush=True)
    finally:
        await app.stop()
    big = results[1000]
    print(
        json.dumps(
            {
                "name": "oip_infer",
                "value": big["rows_per_s"],
                "unit": "rows/s at 1000 rows per request",
                "baseline": big["bare_rows_per_s"],
                "ratio": big["ratio"],
                "target": 0.85,
                "threads": THREADS,
                "in_flight": IN_FLIGHT,
                "by_rows": results,
            }
        )
    )


if __name__ == "__main__":
    asyncio.run(main())
