"""Open Inference Protocol: tritonclient compatibility, input validation, repository RPCs, hot swaps."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
from collections import Counter
from pathlib import Path

import grpc
import numpy as np
import pytest
from inference import grpc_service_pb2 as pb
from inference import grpc_service_pb2_grpc as pb_grpc
from novacorrente.forecast.v1 import forecast_pb2 as fpb
from novacorrente.forecast.v1 import forecast_pb2_grpc as fpb_grpc

from services.forecast import features
from tests.conftest import MODEL_NAME, bad_request_fields, bearer
from tests.forecast.conftest import tiny_onnx, tiny_sidecar, write_version

PROBE = Path(__file__).with_name("triton_probe.py")


def _infer_request(model: str, rows: np.ndarray, raw: bool = True) -> pb.ModelInferRequest:
    request = pb.ModelInferRequest(model_name=model, id="r1")
    tensor = request.inputs.add(name="features", datatype="FP32", shape=list(rows.shape))
    if raw:
        request.raw_input_contents.append(rows.astype("<f4").tobytes())
    else:
        tensor.contents.fp32_contents.extend(rows.ravel().tolist())
    return request


def _output(response: pb.ModelInferResponse) -> np.ndarray:
    shape = list(response.outputs[0].shape)
    return np.frombuffer(response.raw_output_contents[0], dtype="<f4").reshape(shape)


async def test_tritonclient_lists_reads_metadata_and_matches_domain_api(
    make_harness, trained_repo: Path, token_for, panel, tmp_path: Path
) -> None:
    async with make_harness(trained_repo) as h:
        token = token_for("viewer")
        async with grpc.aio.insecure_channel(h.address) as channel:
            stub = fpb_grpc.ForecastServiceStub(channel)
            # Series the model itself answers (not a training-chosen intermittent method, not a fallback).
            candidates = sorted(panel.series, key=lambda k: -int((panel.series[k][1] > 0).sum()))[:12]
            refs = [fpb.SeriesRef(material_code=m, site_code=s) for m, s in candidates]
            response = await stub.Forecast(
                fpb.ForecastRequest(series=refs, horizon_weeks=4), metadata=bearer(token)
            )
        chosen = next(f for f in response.forecasts if f.method == "lightgbm-quantile" and not f.fallback)
        key = (chosen.series.material_code, chosen.series.site_code)
        family, weekly = panel.series[key]
        sidecar = json.loads((trained_repo / MODEL_NAME / "1" / "model.json").read_text())
        attrs = features.static_attributes(family, key[1], "material_site")
        codes = features.encode_static(attrs, sidecar["vocabularies"])
        rows = features.build_features(weekly, panel.weeks, codes, 4, region=attrs["region"])
        np.save(tmp_path / "rows.npy", rows)
        proc = await asyncio.create_subprocess_exec(
            sys.executable,
            str(PROBE),
            h.address,
            token,
            MODEL_NAME,
            str(tmp_path / "rows.npy"),
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
        )
        out, err = await asyncio.wait_for(proc.communicate(), 60)
        assert proc.returncode == 0, err.decode()
    seen = json.loads(out.decode().strip().splitlines()[-1])
    assert seen["live"] and seen["ready"] and seen["model_ready"]
    assert {"name": MODEL_NAME, "version": "1", "state": "READY"}.items() <= seen["index"]["models"][
        0
    ].items()
    width = str(len(features.FEATURE_NAMES))
    assert seen["metadata"]["inputs"][0] == {"name": "features", "datatype": "FP32", "shape": ["-1", width]}
    assert seen["metadata"]["outputs"][0]["name"] == "quantiles"
    assert seen["version"] == "1" == chosen.provenance.model_version
    domain = np.array([[q.value for q in week.quantiles] for week in chosen.weeks])
    np.testing.assert_allclose(np.array(seen["quantiles"]), domain, rtol=1e-6, atol=1e-6)
    assert seen["inf_error"]["status"] == "StatusCode.INVALID_ARGUMENT"
    assert "features" in seen["inf_error"]["message"]


async def test_nan_refused_naming_the_input(make_harness, tmp_path: Path, token_for) -> None:
    write_version(tmp_path / "repo", "tiny", "1", tiny_onnx(1.0))
    async with make_harness(tmp_path / "repo") as h:
        async with grpc.aio.insecure_channel(h.address) as channel:
            stub = pb_grpc.GRPCInferenceServiceStub(channel)
            rows = np.ones((4, 3), dtype=np.float32)
            rows[2, 1] = np.nan
            for raw in (True, False):
                with pytest.raises(grpc.aio.AioRpcError) as info:
                    await stub.ModelInfer(
                        _infer_request("tiny", rows, raw), metadata=bearer(token_for("viewer"))
                    )
                assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT
                assert "'features'" in info.value.details() and "NaN" in info.value.details()
                assert bad_request_fields(info.value) == ["inputs[features].contents"]


@pytest.mark.parametrize(
    ("mutate", "field"),
    [
        (lambda r: setattr(r.inputs[0], "datatype", "FP64"), "inputs[features].datatype"),
        (lambda r: r.inputs[0].shape.__setitem__(1, 4), "inputs[features].shape"),
        (lambda r: setattr(r.inputs[0], "name", "other"), "inputs[other]"),
        (lambda r: r.raw_input_contents.__setitem__(0, b"\0" * 5), "inputs[features].raw_input_contents"),
    ],
)
async def test_malformed_inputs_refused(make_harness, tmp_path: Path, token_for, mutate, field: str) -> None:
    write_version(tmp_path / "repo", "tiny", "1", tiny_onnx(1.0))
    async with make_harness(tmp_path / "repo") as h:
        async with grpc.aio.insecure_channel(h.address) as channel:
            stub = pb_grpc.GRPCInferenceServiceStub(channel)
            request = _infer_request("tiny", np.ones((2, 3), dtype=np.float32))
            mutate(request)
            with pytest.raises(grpc.aio.AioRpcError) as info:
                await stub.ModelInfer(request, metadata=bearer(token_for("viewer")))
            assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT
            assert field in bad_request_fields(info.value)


async def test_raw_and_typed_contents_agree_and_large_runs_offloaded(
    make_harness, tmp_path: Path, token_for
) -> None:
    write_version(tmp_path / "repo", "tiny", "1", tiny_onnx(3.0))
    async with make_harness(tmp_path / "repo", inline_max_rows=8) as h:
        async with grpc.aio.insecure_channel(h.address) as channel:
            stub = pb_grpc.GRPCInferenceServiceStub(channel)
            md = bearer(token_for("planner"))
            for n in (1, 100):
                rows = np.random.default_rng(1).random((n, 3), dtype=np.float32)
                a = _output(await stub.ModelInfer(_infer_request("tiny", rows, True), metadata=md))
                b = _output(await stub.ModelInfer(_infer_request("tiny", rows, False), metadata=md))
                assert a.shape == (n, 2) and np.array_equal(a, b)
                assert np.allclose(a, [[3.0, 4.0]] * n)
        samples = {
            (s.labels["mode"], s.name)
            for metric in h.app.metrics.inference_rows.collect()
            for s in metric.samples
            if s.name.endswith("_count") and s.value > 0
        }
        assert ("inline", "nova_forecast_inference_rows_count") in samples
        assert ("executor", "nova_forecast_inference_rows_count") in samples


async def test_repository_rpcs_need_admin(make_harness, tmp_path: Path, token_for) -> None:
    write_version(tmp_path / "repo", "tiny", "1", tiny_onnx(1.0))
    async with make_harness(tmp_path / "repo") as h:
        async with grpc.aio.insecure_channel(h.address) as channel:
            stub = pb_grpc.GRPCInferenceServiceStub(channel)
            request = pb.RepositoryModelUnloadRequest(model_name="tiny")
            with pytest.raises(grpc.aio.AioRpcError) as info:
                await stub.RepositoryModelUnload(request, metadata=bearer(token_for("planner")))
            assert info.value.code() == grpc.StatusCode.PERMISSION_DENIED
            admin = bearer(token_for("admin"))
            await stub.RepositoryModelUnload(request, metadata=admin)
            ready = await stub.ModelReady(pb.ModelReadyRequest(name="tiny"), metadata=admin)
            assert not ready.ready
            await stub.RepositoryModelLoad(pb.RepositoryModelLoadRequest(model_name="tiny"), metadata=admin)
            assert (await stub.ModelReady(pb.ModelReadyRequest(name="tiny"), metadata=admin)).ready
            with pytest.raises(grpc.aio.AioRpcError) as info:
                await stub.RepositoryModelLoad(
                    pb.RepositoryModelLoadRequest(model_name="nope"), metadata=admin
                )
            assert info.value.code() == grpc.StatusCode.NOT_FOUND


async def test_five_versions_swapped_under_load(make_harness, tmp_path: Path, token_for) -> None:
    """Versions 2..5 arrive while clients infer in a loop; 3 (bad hash) and 4 (truncated) are refused."""
    repo = tmp_path / "repo"
    write_version(repo, "tiny", "1", tiny_onnx(100.0))
    async with make_harness(repo, repository_poll_seconds=0.02) as h:
        md = bearer(token_for("viewer"))
        seen: Counter[str] = Counter()
        failures: list[str] = []
        stop = asyncio.Event()

        async def client(channel: grpc.aio.Channel) -> None:
            stub = pb_grpc.GRPCInferenceServiceStub(channel)
            rows = np.ones((2, 3), dtype=np.float32)
            while not stop.is_set():
                try:
                    response = await stub.ModelInfer(_infer_request("tiny", rows), metadata=md)
                except grpc.aio.AioRpcError as exc:
                    failures.append(f"{exc.code().name}: {exc.details()}")
                    continue
                out = _output(response)
                # Each version's graph answers 100 x its version: the tag and the numbers must agree.
                assert np.all(out[:, 0] == 100.0 * int(response.model_version)), response.model_version
                seen[response.model_version] += 1

        async with grpc.aio.insecure_channel(h.address) as channel:
            clients = [asyncio.create_task(client(channel)) for _ in range(8)]
            for version in ("2", "3", "4", "5"):
                await asyncio.sleep(0.15)
                payload = tiny_onnx(100.0 * int(version))
                side = tiny_sidecar("tiny", version, payload)
                if version == "3":
                    side["sha256"] = "ab" * 32
                if version == "4":
                    payload = payload[: len(payload) // 3]
                write_version(repo, "tiny", version, payload, side)
            for _ in range(100):
                if h.app.repository.serving("tiny").version == "5":
                    break
                await asyncio.sleep(0.02)
            await asyncio.sleep(0.15)
            stop.set()
            await asyncio.gather(*clients)
            index = await pb_grpc.GRPCInferenceServiceStub(channel).RepositoryIndex(
                pb.RepositoryIndexRequest(), metadata=md
            )
    assert failures == []
    assert set(seen) <= {"1", "2", "5"} and seen["5"] > 0 and seen["1"] > 0 and sum(seen.values()) > 50
    states = {m.version: (m.state, m.reason) for m in index.models}
    assert states["5"][0] == "READY"
    assert states["3"][0] == "UNAVAILABLE" and "sha256" in states["3"][1]
    assert states["4"][0] == "UNAVAILABLE" and "sha256" in states["4"][1]
