"""Dynamic batching: concurrent small runs of one model version are stacked into fewer onnxruntime runs,
and every caller gets exactly its own rows back."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path
from unittest import mock

import numpy as np
import pytest
from onnx import TensorProto, helper

from services.forecast.repository import LoadedModel, load_version
from services.forecast.runner import InferenceRunner
from tests.forecast.conftest import tiny_sidecar, write_version

WEIGHTS = np.array([[1.0, 10.0], [2.0, 20.0], [3.0, 30.0]], dtype=np.float32)


def _linear_onnx() -> bytes:
    """features [N, 3] -> quantiles [N, 2] = features @ WEIGHTS: each output row depends on its input row."""
    graph = helper.make_graph(
        [helper.make_node("MatMul", ["features", "w"], ["quantiles"])],
        "linear",
        [helper.make_tensor_value_info("features", TensorProto.FLOAT, ["N", 3])],
        [helper.make_tensor_value_info("quantiles", TensorProto.FLOAT, ["N", 2])],
        initializer=[helper.make_tensor("w", TensorProto.FLOAT, WEIGHTS.shape, WEIGHTS.ravel().tolist())],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 15)])
    model.ir_version = 8
    return model.SerializeToString()


@pytest.fixture
def linear_model(tmp_path: Path) -> LoadedModel:
    onnx_bytes = _linear_onnx()
    write_version(tmp_path, "linear", "1", onnx_bytes, tiny_sidecar("linear", "1", onnx_bytes))
    return load_version(tmp_path, "linear", "1", intra_op_threads=1)


async def _concurrent_runs(runner: InferenceRunner, model: LoadedModel, sizes: list[int]) -> int:
    """Run one call per size at once; check each answer against numpy; return how many onnxruntime runs."""
    rng = np.random.default_rng(7)
    inputs = [rng.normal(size=(n, 3)).astype(np.float32) for n in sizes]
    with mock.patch.object(LoadedModel, "run", autospec=True, side_effect=LoadedModel.run) as spy:
        answers = await asyncio.gather(*(runner.run(model, {"features": rows}) for rows in inputs))
    for rows, (quantiles,) in zip(inputs, answers, strict=True):
        np.testing.assert_allclose(quantiles, rows @ WEIGHTS, rtol=1e-5)
    return spy.call_count


async def test_concurrent_small_runs_share_one_onnxruntime_run(linear_model: LoadedModel) -> None:
    runner = InferenceRunner(dynamic_batching=True, batch_window_ms=20)
    try:
        runs = await _concurrent_runs(runner, linear_model, [1, 2, 3, 1, 1, 4, 2, 1])
    finally:
        runner.close()
    assert runs == 1


async def test_a_full_batch_runs_at_once_and_the_rest_waits_for_its_own_window(
    linear_model: LoadedModel,
) -> None:
    runner = InferenceRunner(dynamic_batching=True, batch_window_ms=20, max_batch_rows=4)
    try:
        runs = await _concurrent_runs(runner, linear_model, [1, 1, 1, 1, 1, 1])
    finally:
        runner.close()
    assert runs == 2


async def test_a_batch_that_filled_up_leaves_the_next_batch_its_own_window(linear_model: LoadedModel) -> None:
    """The full batch's window timer still fires later: it must not cut the next batch's window short."""
    window = 0.1
    runner = InferenceRunner(dynamic_batching=True, batch_window_ms=window * 1000, max_batch_rows=4)
    rows = np.ones((1, 3), dtype=np.float32)
    try:
        full = [asyncio.ensure_future(runner.run(linear_model, {"features": rows})) for _ in range(4)]
        await asyncio.gather(*full)  # four rows: flushed at once, its timer still pending
        await asyncio.sleep(window * 0.6)
        started = time.perf_counter()
        await runner.run(linear_model, {"features": rows})  # a new batch, opened after the first one
        waited = time.perf_counter() - started
    finally:
        runner.close()
    # A timer never fires early; had the first batch's timer flushed this one, it would have waited ~0.4 of
    # the window.
    assert waited >= window * 0.95


async def test_without_dynamic_batching_each_call_runs_alone(linear_model: LoadedModel) -> None:
    runner = InferenceRunner(dynamic_batching=False)
    try:
        runs = await _concurrent_runs(runner, linear_model, [1, 2, 3])
    finally:
        runner.close()
    assert runs == 3
