"""The offline checkers pass on the repository and fail on a broken copy of it (so they can fail)."""

from __future__ import annotations

import re
import shutil
from pathlib import Path
from typing import Any

from deploy_checkers import REPO_ROOT, CheckRun, run_check


def test_k8s_check_passes(k8s_check: tuple[CheckRun, dict[str, Any]]) -> None:
    run, rendered = k8s_check
    assert run.returncode == 0, run.output
    assert set(rendered) == {p.name for p in (REPO_ROOT / "k8s" / "overlays").iterdir() if p.is_dir()}
    assert "k8s-check: OK" in run.output
    # Both checkov frameworks ran and found nothing (the skips are deliberate and documented).
    assert run.output.count("Failed checks: 0") == 2, run.output


def test_compose_check_passes(compose_check: tuple[CheckRun, dict[str, Any]]) -> None:
    run, model = compose_check
    assert run.returncode == 0, run.output
    assert "compose-check: OK" in run.output
    assert "training" in model["services"], "the training profile must be validated too"


def _broken_k8s_copy(tmp_path: Path, relative: str, old: str, new: str) -> Path:
    copy = tmp_path / "k8s"
    shutil.copytree(REPO_ROOT / "k8s", copy)
    target = copy / relative
    text = target.read_text()
    assert old in text, f"{old!r} not in {relative}"
    target.write_text(text.replace(old, new, 1))
    return copy


def test_k8s_check_fails_on_a_broken_copy(tmp_path: Path) -> None:
    # Two independent faults in one run (the checker reports every failure before exiting): a writable
    # root filesystem, which the policy and checkov must both flag, and a misspelt field, which only the
    # strict schema validation can see.
    copy = _broken_k8s_copy(
        tmp_path, "base/ingestion.yaml", "readOnlyRootFilesystem: true", "readOnlyRootFilesystem: false"
    )
    forecast = copy / "base" / "forecast.yaml"
    forecast.write_text(
        forecast.read_text().replace("terminationGracePeriodSeconds", "terminationGraceSeconds", 1)
    )
    run = run_check("k8s-check.sh", "--k8s-dir", copy)
    assert run.returncode != 0
    assert "Deployment/nova-ingestion containers/server: securityContext.readOnlyRootFilesystem" in run.output
    assert re.search(r"CKV_K8S_22", run.output), "checkov must flag the writable root filesystem too"
    assert "'terminationGraceSeconds' was unexpected" in run.output
    assert "k8s-check: OK" not in run.output


def test_compose_check_fails_on_an_invalid_file(tmp_path: Path) -> None:
    broken = tmp_path / "docker-compose.yml"
    text = (REPO_ROOT / "docker-compose.yml").read_text()
    broken.write_text(text.replace("cap_drop:", "cap_drops:", 1))
    run = run_check("compose-check.sh", "--file", broken)
    assert run.returncode != 0
    assert "cap_drops" in run.output, run.output


def test_compose_check_fails_on_an_inline_secret(tmp_path: Path) -> None:
    broken = tmp_path / "docker-compose.yml"
    text = (REPO_ROOT / "docker-compose.yml").read_text()
    broken.write_text(
        text.replace("NOVA_JWT_SECRET_FILE: /run/secrets/jwt_secret", "NOVA_JWT_SECRET: not-a-file", 1)
    )
    run = run_check("compose-check.sh", "--file", broken)
    assert run.returncode != 0
    assert "NOVA_JWT_SECRET must come from a secret file" in run.output, run.output
