"""Regenerate the typed Python stubs of every .proto under protos/ into protos/python/.

Usage: python protos/generate.py [--out DIR]

The committed stubs must equal what this script produces (tests/test_protos.py checks it), so
run it (or `make protos`) after every change to a .proto file.
"""

from __future__ import annotations

import argparse
import shutil
import sys
from pathlib import Path

import grpc_tools
from grpc_tools import protoc

PROTO_ROOT = Path(__file__).resolve().parent
DEFAULT_OUT = PROTO_ROOT / "python"


def proto_files() -> list[Path]:
    return sorted(p for p in PROTO_ROOT.rglob("*.proto") if "python" not in p.relative_to(PROTO_ROOT).parts)


def generate(out: Path) -> None:
    if out.exists():
        shutil.rmtree(out)
    out.mkdir(parents=True)
    well_known = Path(grpc_tools.__file__).parent / "_proto"
    files = [str(p.relative_to(PROTO_ROOT)) for p in proto_files()]
    args = [
        "grpc_tools.protoc",
        f"-I{PROTO_ROOT}",
        f"-I{well_known}",
        f"--python_out={out}",
        f"--grpc_python_out={out}",
        f"--mypy_out={out}",
        f"--mypy_grpc_out={out}",
        *files,
    ]
    if protoc.main(args) != 0:
        raise SystemExit("protoc failed")
    # protoc writes modules, not packages: every generated folder becomes a package.
    for folder in [out, *(d for d in out.rglob("*") if d.is_dir())]:
        if folder != out:
            (folder / "__init__.py").touch()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT)
    ns = parser.parse_args(argv)
    generate(ns.out)
    print(f"generated stubs for {len(proto_files())} proto files into {ns.out}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
