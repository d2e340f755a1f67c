"""The gateway is thin: importing it loads no store driver and no model runtime."""

from __future__ import annotations

import subprocess
import sys


def test_the_gateway_imports_no_store_or_model_runtime() -> None:
    code = (
        "import sys, gateway.app, gateway.server; "
        "print(sorted(m for m in ('duckdb', 'onnxruntime', 'asyncpg') if m in sys.modules))"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], check=True, capture_output=True, text=True
    ).stdout.strip()
    assert out == "[]", out
