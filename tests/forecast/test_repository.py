"""Model repository: what is refused (and why, in the log) and what loads."""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path

import pytest

from services.forecast.repository import ModelRepository, RefusedVersion, load_version
from tests.forecast.conftest import tiny_onnx, tiny_sidecar, write_version

NAME = "tiny"


async def _repo(root: Path) -> ModelRepository:
    repo = ModelRepository(root)
    await repo.reload()
    return repo


def _refusal(repo: ModelRepository, version: str) -> str:
    record = next(r for r in repo.records() if r.version == version)
    assert record.state == "refused"
    return record.reason


async def test_valid_version_loads(tmp_path: Path) -> None:
    write_version(tmp_path, NAME, "1", tiny_onnx(1.0))
    repo = await _repo(tmp_path)
    model = repo.get(NAME)
    assert model.version == "1"
    assert [s.name for s in model.inputs] == ["features"]
    assert model.quantiles == (0.5, 0.9)


@pytest.mark.parametrize(
    ("damage", "kind", "words"),
    [
        ("bad_hash", "sha256", "sha256"),
        ("truncated", "sha256", "sha256"),
        ("truncated_rehashed", "truncated", "not a complete ONNX protobuf"),
        ("sized_truncated", "truncated", "bytes, sidecar says"),
        ("unknown_spec", "feature_spec", "feature spec version '0.1'"),
        ("sidecar_garbage", "sidecar", "does not parse"),
        ("wrong_signature", "signature", "graph"),
    ],
)
async def test_bad_candidate_refused_and_current_keeps_serving(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, damage: str, kind: str, words: str
) -> None:
    write_version(tmp_path, NAME, "1", tiny_onnx(1.0))
    repo = await _repo(tmp_path)
    good = tiny_onnx(2.0)
    side = tiny_sidecar(NAME, "2", good)
    payload = good
    if damage == "bad_hash":
        side["sha256"] = "0" * 64
    elif damage == "truncated":
        payload = good[: len(good) // 2]
    elif damage == "truncated_rehashed":
        payload = good[: len(good) - 7]
        side = tiny_sidecar(NAME, "2", payload)
    elif damage == "sized_truncated":
        payload = good[:-1]
        side["size_bytes"] = len(good)
    elif damage == "unknown_spec":
        side["feature_spec_version"] = "0.1"
    elif damage == "wrong_signature":
        side["inputs"] = [{"name": "features", "datatype": "FP32", "shape": [-1, 4]}]
    folder = write_version(tmp_path, NAME, "2", payload, side)
    if damage == "sidecar_garbage":
        (folder / "model.json").write_text("{not json")
    with caplog.at_level(logging.WARNING, logger="services.forecast.repository"):
        await repo.reload()
    reason = _refusal(repo, "2")
    assert words in reason
    assert repo.get(NAME).version == "1"  # the current version keeps serving
    logged = [r for r in caplog.records if getattr(r, "version", None) == "2"]
    assert logged and logged[0].kind == kind and words in logged[0].getMessage()


async def test_symlinked_model_file_refused(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    good = tiny_onnx(1.0)
    folder = write_version(tmp_path, NAME, "1", good)
    elsewhere = tmp_path.parent / f"{tmp_path.name}-outside.onnx"
    elsewhere.write_bytes(good)
    (folder / "model.onnx").unlink()
    (folder / "model.onnx").symlink_to(elsewhere)
    with caplog.at_level(logging.WARNING, logger="services.forecast.repository"):
        repo = await _repo(tmp_path)
    assert "symbolic link" in _refusal(repo, "1")
    assert not repo.ready()
    assert any("symbolic link" in r.getMessage() for r in caplog.records)


async def test_symlinked_version_folder_refused(tmp_path: Path) -> None:
    real = write_version(tmp_path / "real", NAME, "1", tiny_onnx(1.0))
    (tmp_path / NAME).mkdir()
    (tmp_path / NAME / "1").symlink_to(real, target_is_directory=True)
    repo = await _repo(tmp_path)
    assert "tiny/1 is a symbolic link" in _refusal(repo, "1")


@pytest.mark.parametrize("location", ["../../secret.bin", "/etc/passwd", "sub/../../x.bin"])
async def test_external_data_outside_folder_refused(tmp_path: Path, location: str) -> None:
    (tmp_path / "secret.bin").write_bytes(b"\0" * 24)
    payload = tiny_onnx(1.0, external=location)
    write_version(tmp_path, NAME, "1", payload)
    repo = await _repo(tmp_path)
    assert "outside the model folder" in _refusal(repo, "1")


async def test_external_data_inside_folder_loads(tmp_path: Path) -> None:
    payload = tiny_onnx(1.0, external="weights.bin")
    folder = write_version(tmp_path, NAME, "1", payload)
    (folder / "weights.bin").write_bytes(b"\0" * 24)  # 3 x 2 float32 zeros
    model = load_version(tmp_path, NAME, "1", intra_op_threads=1)
    import numpy as np

    out = model.run({"features": np.ones((2, 3), dtype=np.float32)})[0]
    assert out.tolist() == [[1.0, 2.0], [1.0, 2.0]]


async def test_refused_version_retried_only_when_its_files_change(tmp_path: Path) -> None:
    good = tiny_onnx(1.0)
    side = tiny_sidecar(NAME, "1", good)
    side["sha256"] = "f" * 64
    folder = write_version(tmp_path, NAME, "1", good, side)
    repo = await _repo(tmp_path)
    assert "sha256" in _refusal(repo, "1")
    await repo.reload()
    assert "sha256" in _refusal(repo, "1")
    (folder / "model.json").write_text(json.dumps(tiny_sidecar(NAME, "1", good)))
    os.utime(folder / "model.json", ns=(1, 1))
    await repo.reload()
    assert repo.get(NAME).version == "1"


def test_load_version_raises_with_kind(tmp_path: Path) -> None:
    write_version(tmp_path, NAME, "1", tiny_onnx(1.0), {"name": NAME, "version": "1"})
    with pytest.raises(RefusedVersion) as info:
        load_version(tmp_path, NAME, "1", intra_op_threads=1)
    assert info.value.kind == "feature_spec"


async def test_unload_then_load(tmp_path: Path) -> None:
    write_version(tmp_path, NAME, "1", tiny_onnx(1.0))
    repo = await _repo(tmp_path)
    await repo.unload(NAME)
    assert not repo.ready()
    await repo.reload()  # polling leaves an unloaded model alone
    assert not repo.ready()
    model = await repo.load(NAME)
    assert model.version == "1" and repo.ready()


async def test_a_pinned_version_is_served_instead_of_the_newest(tmp_path: Path) -> None:
    """Rolling back = pinning NOVA_FORECAST_MODEL_VERSION to the previous version."""
    from services.forecast.repository import ModelRepository

    for version in ("1", "2"):
        model = tiny_onnx(float(version))
        write_version(tmp_path, "m", version, model, tiny_sidecar("m", version, model))
    newest = ModelRepository(tmp_path)
    await newest.reload()
    pinned = ModelRepository(tmp_path, pinned_versions={"m": "1"})
    await pinned.reload()
    assert newest.serving("m").version == "2"
    assert pinned.serving("m").version == "1"
