"""`python -m bench [NAME ...]`: run the benchmarks under bench/ (all, or the named ones).

Each benchmark is a script `bench/<name>.py` that measures the project against the raw limit in
the same run and prints, as its last line, one JSON object with at least: name, value, unit,
baseline (the raw limit), ratio (project / raw limit, higher is better, 1.0 = the limit) and
target. This runner checks that contract and prints a summary; results also go to bench/out/.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
REQUIRED = ("name", "value", "unit", "baseline", "ratio", "target")
# Modules under bench/ that support benchmarks but are not benchmarks themselves.
SUPPORT = {"__init__", "__main__", "common", "echo_server"}


def benchmarks() -> list[str]:
    return sorted(
        p.stem for p in HERE.glob("*.py") if p.stem not in SUPPORT and not p.stem.startswith("gen_")
    )


def run(name: str) -> dict[str, object] | None:
    print(f"== {name}", flush=True)
    started = time.monotonic()
    proc = subprocess.run(
        [sys.executable, "-m", f"bench.{name}"],
        cwd=HERE.parent,
        stdout=subprocess.PIPE,
        text=True,
        check=False,
    )
    sys.stdout.write(proc.stdout)
    lines = [line for line in proc.stdout.strip().splitlines() if line.strip()]
    if proc.returncode != 0 or not lines:
        print(f"!! {name} failed (exit {proc.returncode})")
        return None
    try:
        result = json.loads(lines[-1])
    except json.JSONDecodeError:
        print(f"!! {name}: last line is not a JSON object")
        return None
    missing = [k for k in REQUIRED if k not in result]
    if missing:
        print(f"!! {name}: result lacks {missing}")
        return None
    result["seconds"] = round(time.monotonic() - started, 1)
    out = HERE / "out"
    out.mkdir(exist_ok=True)
    (out / f"{name}.json").write_text(json.dumps(result, indent=2) + "\n")
    return result


def main(argv: list[str]) -> int:
    names = argv or benchmarks()
    unknown = sorted(set(names) - set(benchmarks()))
    if unknown:
        print(f"unknown benchmark(s): {', '.join(unknown)}; available: {', '.join(benchmarks())}")
        return 2
    results = {name: run(name) for name in names}
    print("\nname                      ratio   target  value")
    for name, r in results.items():
        if r is None:
            print(f"{name:<25} FAILED")
        else:
            # str(): a benchmark without a raw-limit ratio or target reports null for it.
            ratio, target = str(r["ratio"]), str(r["target"])
            print(f"{name:<25} {ratio:<7} {target:<7} {r['value']} {r['unit']}")
    return 0 if all(results.values()) else 1


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
