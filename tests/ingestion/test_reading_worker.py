"""The upload reading worker ends with the service that started it, even when the service is killed."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]

SERVICE = """
import os, sys, time
from services.ingestion.reading import ReadingPool
pool = ReadingPool(1)
pool.warm()
print(pool._lane(0).submit(os.getpid).result(), flush=True)
time.sleep(120)
"""


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    status = Path(f"/proc/{pid}/status")
    return not (status.exists() and "State:\tZ" in status.read_text())


def test_a_killed_service_leaves_no_reading_worker_behind() -> None:
    with subprocess.Popen(
        [sys.executable, "-c", SERVICE], cwd=ROOT, stdout=subprocess.PIPE, text=True
    ) as service:
        try:
            assert service.stdout is not None
            worker = int(service.stdout.readline())
            assert _alive(worker)
            service.send_signal(signal.SIGKILL)  # no shutdown of the pool: the worker must notice by itself
            service.wait(timeout=10)
        finally:
            if service.poll() is None:
                service.kill()
    deadline = time.monotonic() + 15
    while _alive(worker) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not _alive(worker), f"reading worker {worker} outlived its service"
