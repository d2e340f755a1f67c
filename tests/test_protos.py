"""The committed stubs must be exactly what protos/generate.py produces from the .proto files."""

from __future__ import annotations

import filecmp
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _tree(folder: Path) -> dict[str, Path]:
    return {
        str(p.relative_to(folder)): p
        for p in folder.rglob("*")
        if p.is_file() and "__pycache__" not in p.parts
    }


def test_committed_stubs_match_the_protos(tmp_path: Path) -> None:
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}"}
    subprocess.run(
        [sys.executable, str(ROOT / "protos" / "generate.py"), "--out", str(tmp_path)],
        check=True,
        env=env,
        capture_output=True,
    )
    fresh, committed = _tree(tmp_path), _tree(ROOT / "protos" / "python")
    assert sorted(fresh) == sorted(committed), "stub files differ: run `make protos`"
    drifted = [name for name in fresh if not filecmp.cmp(fresh[name], committed[name], shallow=False)]
    assert not drifted, f"stale stubs (run `make protos`): {drifted}"


def test_every_rpc_and_message_is_commented() -> None:
    """Contracts first: an uncommented rpc, message, enum or field is a contract nobody can read."""
    missing = []
    for proto in sorted((ROOT / "protos").rglob("*.proto")):
        lines = proto.read_text().splitlines()
        for i, line in enumerate(lines):
            text = line.strip()
            if not text or text.startswith(("//", "}", "syntax", "package", "import", "option", "oneof")):
                continue
            previous = lines[i - 1].strip() if i else ""
            if not previous.startswith("//") and not text.startswith("reserved"):
                missing.append(f"{proto.relative_to(ROOT)}:{i + 1}: {text}")
    assert not missing, "uncommented declarations:\n" + "\n".join(missing)
