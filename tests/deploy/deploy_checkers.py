"""Runs the deployment checkers as a developer would (bash deploy/<script>), for the tests in this folder."""

from __future__ import annotations

import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

__all__ = ["REPO_ROOT", "CheckRun", "run_check"]

REPO_ROOT = Path(__file__).resolve().parents[2]


@dataclass(frozen=True)
class CheckRun:
    returncode: int
    output: str
    seconds: float


def run_check(script: str, *args: str | Path) -> CheckRun:
    started = time.monotonic()
    completed = subprocess.run(
        ["bash", str(REPO_ROOT / "deploy" / script), *map(str, args)],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=110,
        check=False,
    )
    return CheckRun(completed.returncode, completed.stdout + completed.stderr, time.monotonic() - started)
