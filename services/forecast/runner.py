"""Where an onnxruntime run executes: inline, in the bounded executor, or merged into a dynamic batch.

A run of a few rows takes tens of microseconds, less than an executor hop (thread hand-off plus the loop
wake-up), so small runs execute on the event loop; bigger runs go to a bounded thread pool (onnxruntime
releases the GIL, so they overlap with the loop). ``bench/oip_infer.py`` measures the crossover that
``inline_max_rows`` encodes. With dynamic batching on, concurrent small runs of the same model version and
the same single 2-D input are stacked into one run and split back, which amortises the per-run overhead.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

import numpy as np

from services.forecast.metrics import ForecastMetrics
from services.forecast.repository import LoadedModel
from services.kit.errors import ResourceExhausted

__all__ = ["InferenceRunner"]


@dataclass
class _Pending:
    rows: np.ndarray
    future: asyncio.Future[list[np.ndarray]]


@dataclass
class _Batch:
    model: LoadedModel
    input_name: str
    output_names: tuple[str, ...]
    items: list[_Pending] = field(default_factory=list)


def _rows(feeds: Mapping[str, np.ndarray]) -> int:
    return max((int(a.shape[0]) if a.ndim else 1 for a in feeds.values()), default=0)


class InferenceRunner:
    """Runs loaded models; one instance per process, shared by the OIP and the domain APIs."""

    def __init__(
        self,
        *,
        inline_max_rows: int = 64,
        workers: int = 2,
        queue_limit: int = 64,
        dynamic_batching: bool = False,
        batch_window_ms: float = 0.5,
        max_batch_rows: int = 1024,
        metrics: ForecastMetrics | None = None,
    ):
        self.inline_max_rows = inline_max_rows
        self._executor = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="onnx")
        self._slots = asyncio.Semaphore(workers + queue_limit)
        self._queue_limit = workers + queue_limit
        self._waiting = 0
        self._dynamic = dynamic_batching
        self._window = batch_window_ms / 1000.0
        self._max_batch_rows = max_batch_rows
        self._metrics = metrics
        self._batches: dict[tuple[int, str, tuple[str, ...]], _Batch] = {}
        # The loop keeps only weak references to tasks: these keep running batches alive until they end.
        self._running: set[asyncio.Task[None]] = set()

    def _observe(self, model: LoadedModel, mode: str, rows: int, seconds: float) -> None:
        if self._metrics is not None:
            self._metrics.inference_rows.labels(model.name, model.version, mode).observe(rows)
            self._metrics.inference_latency.labels(model.name, model.version, mode).observe(seconds)

    async def run(
        self, model: LoadedModel, feeds: Mapping[str, np.ndarray], output_names: Sequence[str] | None = None
    ) -> list[np.ndarray]:
        """Run ``model`` on ``feeds``; the caller has validated them."""
        rows = _rows(feeds)
        outputs = tuple(output_names) if output_names else tuple(spec.name for spec in model.outputs)
        if rows <= self.inline_max_rows:
            if self._dynamic and len(feeds) == 1:
                ((input_name, array),) = feeds.items()
                if array.ndim == 2:
                    return await self._batched(model, input_name, array, outputs)
            start = time.perf_counter()
            result = model.run(feeds, outputs)
            self._observe(model, "inline", rows, time.perf_counter() - start)
            return result
        return await self._offload(model, feeds, outputs, rows, "executor")

    async def _offload(
        self,
        model: LoadedModel,
        feeds: Mapping[str, np.ndarray],
        outputs: Sequence[str],
        rows: int,
        mode: str,
    ) -> list[np.ndarray]:
        if self._waiting >= self._queue_limit:
            raise ResourceExhausted(
                "inference queue is full", retry_after_seconds=0.1, reason="INFERENCE_QUEUE_FULL"
            )
        self._waiting += 1
        start = time.perf_counter()
        try:
            async with self._slots:
                loop = asyncio.get_running_loop()
                result = await loop.run_in_executor(self._executor, model.run, feeds, list(outputs))
        finally:
            self._waiting -= 1
        self._observe(model, mode, rows, time.perf_counter() - start)
        return result

    async def _batched(
        self, model: LoadedModel, input_name: str, rows: np.ndarray, outputs: tuple[str, ...]
    ) -> list[np.ndarray]:
        key = (id(model), input_name, outputs)
        batch = self._batches.get(key)
        future: asyncio.Future[list[np.ndarray]] = asyncio.get_running_loop().create_future()
        if batch is None:
            batch = self._batches[key] = _Batch(model, input_name, outputs)
            batch.items.append(_Pending(rows, future))
            asyncio.get_running_loop().call_later(self._window, self._flush, key, batch)
        else:
            batch.items.append(_Pending(rows, future))
            if sum(item.rows.shape[0] for item in batch.items) >= self._max_batch_rows:
                self._flush(key, batch)
        return await future

    def _flush(self, key: tuple[int, str, tuple[str, ...]], batch: _Batch) -> None:
        # A batch flushed early because it filled up must not take its successor with it when its
        # window timer fires: only the batch the timer was set for is flushed.
        if self._batches.get(key) is not batch:
            return
        del self._batches[key]
        task = asyncio.get_running_loop().create_task(self._execute(batch))
        self._running.add(task)
        task.add_done_callback(self._running.discard)

    async def _execute(self, batch: _Batch) -> None:
        stacked = np.concatenate([item.rows for item in batch.items], axis=0)
        try:
            if stacked.shape[0] <= self.inline_max_rows:
                start = time.perf_counter()
                results = batch.model.run({batch.input_name: stacked}, batch.output_names)
                self._observe(batch.model, "batched", stacked.shape[0], time.perf_counter() - start)
            else:
                results = await self._offload(
                    batch.model, {batch.input_name: stacked}, batch.output_names, stacked.shape[0], "batched"
                )
        except BaseException as exc:
            for item in batch.items:
                if not item.future.done():
                    item.future.set_exception(exc)
            return
        offset = 0
        for item in batch.items:
            n = item.rows.shape[0]
            if not item.future.done():
                item.future.set_result([out[offset : offset + n] for out in results])
            offset += n

    def close(self) -> None:
        self._executor.shutdown(wait=True, cancel_futures=True)
