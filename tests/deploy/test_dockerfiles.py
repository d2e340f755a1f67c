"""Static properties of deploy/docker/*.Dockerfile (no engine here: nothing is built by these tests)."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[2]
DOCKER = REPO_ROOT / "deploy" / "docker"
IMAGES = {
    "ingestion": ("services.ingestion", "50051"),
    "analytics": ("services.analytics", "50052"),
    "forecast": ("services.forecast", "50053"),
    "gateway": ("gateway", "8080"),
    "training": ("ml_training", None),
}


def instructions(path: Path) -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) with continuation lines joined and comments dropped."""
    joined = re.sub(r"\\\n", " ", path.read_text())
    result = []
    for line in joined.splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            keyword, _, rest = line.partition(" ")
            result.append((keyword.upper(), rest.strip()))
    return result


@pytest.mark.parametrize("name", IMAGES)
def test_multi_stage_dependencies_before_code(name: str) -> None:
    steps = instructions(DOCKER / f"{name}.Dockerfile")
    froms = [args for keyword, args in steps if keyword == "FROM"]
    assert froms == ["python:3.11-slim-bookworm AS builder", "python:3.11-slim-bookworm AS runtime"]
    text = [f"{k} {a}" for k, a in steps]
    lock_copy = text.index("COPY pyproject.toml uv.lock ./")
    deps = next(i for i, t in enumerate(text) if "--no-install-project" in t)
    first_code = next(i for i, t in enumerate(text) if t.startswith("COPY services/"))
    assert lock_copy < deps < first_code, "dependencies must be installed before any code is copied"
    assert "uv sync --frozen --no-dev" in text[deps]


@pytest.mark.parametrize("name", IMAGES)
def test_runtime_stage_is_non_root_and_read_only_friendly(name: str) -> None:
    steps = instructions(DOCKER / f"{name}.Dockerfile")
    runtime = steps[[k for k, _ in steps].index("FROM", 1) :]
    users = [args for keyword, args in runtime if keyword == "USER"]
    assert users == ["10001:10001"], "a fixed numeric uid, so runAsNonRoot can verify it"
    env = " ".join(args for keyword, args in runtime if keyword == "ENV")
    assert "PYTHONDONTWRITEBYTECODE=1" in env
    assert "HOME=/tmp" in env
    copies = [args for keyword, args in runtime if keyword == "COPY"]
    assert copies[:2] == ["--from=builder /opt/venv /opt/venv", "--from=builder /app /app"]
    # services/ingestion/sql.py finds the migrations beside the code, as in a checkout.
    assert ("deploy/migrations/ /app/deploy/migrations/" in copies) == (name == "ingestion")
    entrypoint = [args for keyword, args in runtime if keyword == "ENTRYPOINT"]
    module, port = IMAGES[name]
    assert json.loads(entrypoint[0]) == ["python", "-m", module], "exec form, no shell"
    commands = [json.loads(args) for keyword, args in runtime if keyword == "CMD"]
    assert commands == (
        [["train", "--data", "/data", "--out", "/models", "--publish-card", "/tmp/model-card"]]
        if name == "training"
        else []
    )
    assert not any(keyword == "RUN" for keyword, _ in runtime[runtime.index(("USER", "10001:10001")) :])
    if port:
        assert ("EXPOSE", port) in runtime
        healthcheck = next(args for keyword, args in runtime if keyword == "HEALTHCHECK")
        assert json.loads(healthcheck[healthcheck.index("CMD") + 4 :])[0] == "python"


@pytest.mark.parametrize("name", IMAGES)
def test_build_context_is_an_allow_list(name: str) -> None:
    ignore = (DOCKER / f"{name}.Dockerfile.dockerignore").read_text().splitlines()
    assert ignore[[line.startswith("#") for line in ignore].index(False)] == "*"
    assert not any(".nova" in line and line.startswith("!") for line in ignore), "development secrets"
    assert ("!deploy/migrations/" in ignore) == (name == "ingestion")
