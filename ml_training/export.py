"""ONNX export: the quantile boosters combined into ONE graph with its post-processing, verified against the
native model with onnxruntime before anything is written, then laid out as
``<repo>/<name>/<version>/model.onnx`` + ``model.json``."""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
from pathlib import Path

import numpy as np

from ml_training.model import BASE_INDEX, POSITIVE_EPS, QuantileModel
from services.forecast import features as F

__all__ = [
    "INPUT_NAME",
    "OUTPUT_NAME",
    "ExportError",
    "next_version",
    "parity",
    "to_onnx",
    "write_version",
]

INPUT_NAME = "features"
OUTPUT_NAME = "quantiles"
OPSET = 15
ML_OPSET = 3
# Tree thresholds are float32 in ONNX and double in LightGBM; differences are expected around 1e-6 relative.
ABS_TOL = 1e-3
REL_TOL = 1e-4


class ExportError(RuntimeError):
    """The exported graph does not reproduce the native model: nothing is written."""


def _booster_graph(booster: object, n_features: int, prefix: str):  # -> onnx.GraphProto
    import onnx
    from onnxmltools import convert_lightgbm
    from onnxmltools.convert.common.data_types import FloatTensorType

    proto = convert_lightgbm(
        booster,
        initial_types=[("input", FloatTensorType([None, n_features]))],
        target_opset=OPSET,
        zipmap=False,
    )
    proto = onnx.compose.add_prefix(proto, prefix=prefix)
    return proto.graph


def to_onnx(
    model: QuantileModel,
    n_features: int = len(F.FEATURE_NAMES),
    name: str = "demand_forecast",
    description: str = "Weekly demand quantiles",
):
    """One graph: features [N, F] -> each booster -> Concat [N, Q] -> + base (the hist_q*_26 columns the
    boosting
    started from) -> + conformal offsets where positive -> max(0) -> TopK ascending (sort: non-crossing) ->
    * features[:, scale] -> quantiles [N, Q]."""
    import onnx
    from onnx import TensorProto, helper

    nodes, initializers = [], []
    outputs = []
    for j, booster in enumerate(model.boosters):
        graph = _booster_graph(booster, n_features, f"q{j}_")
        nodes.append(helper.make_node("Identity", [INPUT_NAME], [graph.input[0].name], name=f"q{j}_in"))
        nodes.extend(graph.node)
        initializers.extend(graph.initializer)
        outputs.append(graph.output[0].name)
    q = len(model.boosters)
    initializers += [
        helper.make_tensor("offsets", TensorProto.FLOAT, [1, q], model.offsets.astype(np.float32).tolist()),
        helper.make_tensor("zero", TensorProto.FLOAT, [], [0.0]),
        helper.make_tensor("positive_eps", TensorProto.FLOAT, [], [POSITIVE_EPS]),
        helper.make_tensor("k", TensorProto.INT64, [1], [q]),
        helper.make_tensor("scale_index", TensorProto.INT64, [1], [F.SCALE_INDEX]),
        # NaN base features are 0 natively (nan_to_num); the feature function never emits NaN for them.
        helper.make_tensor("base_index", TensorProto.INT64, [q], list(BASE_INDEX)),
    ]
    nodes += [
        helper.make_node("Concat", outputs, ["trees"], axis=1),
        helper.make_node("Gather", [INPUT_NAME, "base_index"], ["base_columns"], axis=1),
    ]
    if model.base_multiplier is None:
        nodes.append(helper.make_node("Identity", ["base_columns"], ["base"]))
    else:
        # The lead-time model starts from the weekly quantile columns times the window length column.
        initializers.append(
            helper.make_tensor("base_multiplier_index", TensorProto.INT64, [1], [model.base_multiplier])
        )
        nodes += [
            helper.make_node("Gather", [INPUT_NAME, "base_multiplier_index"], ["base_multiplier"], axis=1),
            helper.make_node("Mul", ["base_columns", "base_multiplier"], ["base"]),
        ]
    nodes += [
        helper.make_node("Add", ["trees", "base"], ["raw"]),
        helper.make_node("Greater", ["raw", "positive_eps"], ["positive_bool"]),
        helper.make_node("Cast", ["positive_bool"], ["positive"], to=TensorProto.FLOAT),
        helper.make_node("Mul", ["positive", "offsets"], ["shift"]),
        helper.make_node("Add", ["raw", "shift"], ["calibrated"]),
        helper.make_node("Max", ["calibrated", "zero"], ["clipped"]),
        helper.make_node("TopK", ["clipped", "k"], ["sorted", "sorted_idx"], axis=1, largest=0, sorted=1),
        helper.make_node("Gather", [INPUT_NAME, "scale_index"], ["scale"], axis=1),
        helper.make_node("Mul", ["sorted", "scale"], [OUTPUT_NAME]),
    ]
    graph = helper.make_graph(
        nodes,
        name,
        [helper.make_tensor_value_info(INPUT_NAME, TensorProto.FLOAT, ["N", n_features])],
        [helper.make_tensor_value_info(OUTPUT_NAME, TensorProto.FLOAT, ["N", q])],
        initializer=initializers,
    )
    proto = helper.make_model(
        graph,
        opset_imports=[helper.make_opsetid("", OPSET), helper.make_opsetid("ai.onnx.ml", ML_OPSET)],
        producer_name="ml_training",
        doc_string=description + " " + ", ".join(f"P{round(x * 100)}" for x in model.quantiles),
    )
    proto.ir_version = 8  # readable by onnxruntime >= 1.10
    onnx.checker.check_model(proto)
    return proto


def parity(onnx_bytes: bytes, model: QuantileModel, X: np.ndarray) -> dict[str, float]:
    """Max abs/rel difference between onnxruntime and the native model (same post-processing) on ``X``."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    session = ort.InferenceSession(onnx_bytes, options, providers=["CPUExecutionProvider"])
    X32 = np.ascontiguousarray(X, dtype=np.float32)
    got = session.run([OUTPUT_NAME], {INPUT_NAME: X32})[0].astype(np.float64)
    want = model.predict(X32)
    diff = np.abs(got - want)
    excess = diff - (ABS_TOL + REL_TOL * np.abs(want))
    return {
        "rows": int(X32.shape[0]),
        "max_abs_diff": float(diff.max(initial=0.0)),
        "max_rel_diff": float((diff / np.maximum(np.abs(want), 1e-9)).max(initial=0.0)),
        "abs_tolerance": ABS_TOL,
        "rel_tolerance": REL_TOL,
        "within_tolerance": bool((excess <= 0).all()),
        "non_crossing": bool((np.diff(got, axis=1) >= 0).all()),
    }


def next_version(repo: Path, name: str) -> int:
    root = repo / name
    versions = (
        [int(p.name) for p in root.iterdir() if p.is_dir() and p.name.isdigit()] if root.is_dir() else []
    )
    return max(versions, default=0) + 1


def write_version(
    repo: Path, name: str, version: int, onnx_bytes: bytes, sidecar: dict, extra: dict[str, bytes]
) -> Path:
    """Write the version directory atomically: everything goes to a temporary sibling that is renamed into
    place, so a reader scanning the repository never sees a half-written version."""
    root = repo / name
    root.mkdir(parents=True, exist_ok=True)
    final = root / str(version)
    if final.exists():
        raise ExportError(f"{final} already exists")
    tmp = Path(tempfile.mkdtemp(prefix=f".{version}-", dir=root))
    (tmp / "model.onnx").write_bytes(onnx_bytes)
    sidecar = {**sidecar, "sha256": hashlib.sha256(onnx_bytes).hexdigest()}
    for rel, data in extra.items():
        path = tmp / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
    (tmp / "model.json").write_text(
        json.dumps(sidecar, indent=2, ensure_ascii=False, default=_json_default) + "\n"
    )
    os.chmod(tmp, 0o755)
    tmp.rename(final)
    return final


def _json_default(value: object) -> object:
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, np.ndarray):
        return value.tolist()
    raise TypeError(f"not JSON serialisable: {type(value).__name__}")
