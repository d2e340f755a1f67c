"""No training stack in the service images: resolved from uv.lock exactly as the images install it.

The service images run `uv sync --frozen --no-dev --no-install-project` (base dependencies only) and the
training image adds `--extra training`. This walks the same lock file, transitively, and fails if a
training library, or any package that depends on one, could reach a service image.
"""

from __future__ import annotations

import tomllib
from pathlib import Path
from typing import Any

import pytest

REPO_ROOT = Path(__file__).resolve().parents[2]
PROJECT = "nova-corrente-platform"
# The libraries that train models or convert them: none may be importable in a service image.
FORBIDDEN = frozenset(
    {"lightgbm", "scikit-learn", "statsforecast", "torch", "xgboost", "catboost", "skl2onnx", "onnxmltools"}
)

Lock = dict[str, dict[str, Any]]


def _normalise(name: str) -> str:
    return name.lower().replace("_", "-").replace(".", "-")


def load_lock(path: Path) -> Lock:
    with path.open("rb") as stream:
        return {_normalise(p["name"]): p for p in tomllib.load(stream)["package"]}


def _edges(package: dict[str, Any], extras: list[str]) -> list[dict[str, Any]]:
    edges = list(package.get("dependencies", []))
    for extra in extras:
        edges.extend(package.get("optional-dependencies", {}).get(extra, []))
    return edges


def resolve(lock: Lock, root: str, extras: tuple[str, ...] = ()) -> dict[str, list[str]]:
    """Every package reachable from `root` with `extras`, mapped to one dependency path that reaches it.

    Markers are not evaluated: a dependency that applies only elsewhere still counts, so the check errs
    on the side of reporting (a training library behind any marker is still a finding). Dev groups are
    never followed, as `--no-dev` does.
    """
    paths: dict[str, list[str]] = {}
    stack: list[tuple[str, list[str], list[str]]] = [(_normalise(root), list(extras), [root])]
    seen: set[tuple[str, tuple[str, ...]]] = set()
    while stack:
        name, wanted, path = stack.pop()
        key = (name, tuple(sorted(wanted)))
        if key in seen:
            continue
        seen.add(key)
        for edge in _edges(lock[name], wanted):
            child = _normalise(edge["name"])
            child_path = [*path, edge["name"]]
            paths.setdefault(child, child_path)
            stack.append((child, list(edge.get("extra", [])), child_path))
    return paths


def forbidden_in(paths: dict[str, list[str]]) -> dict[str, str]:
    return {name: " -> ".join(path) for name, path in paths.items() if name in FORBIDDEN}


@pytest.fixture(scope="module")
def lock() -> Lock:
    return load_lock(REPO_ROOT / "uv.lock")


def test_service_images_resolve_without_the_training_stack(lock: Lock) -> None:
    base = resolve(lock, PROJECT)
    assert "grpcio" in base and "onnxruntime" in base, "the walk must reach the runtime dependencies"
    assert forbidden_in(base) == {}, "a training library reaches the service images"


def test_training_extra_brings_the_training_stack(lock: Lock) -> None:
    training = resolve(lock, PROJECT, ("training",))
    assert {"lightgbm", "scikit-learn", "statsforecast", "skl2onnx", "onnxmltools"} <= set(training)


def test_dev_group_is_not_followed(lock: Lock) -> None:
    # pytest and ruff are dev-only: if the walk followed dev groups, the base set would be wrong.
    assert {"pytest", "ruff", "mypy"}.isdisjoint(resolve(lock, PROJECT))


def test_a_transitive_training_dependency_is_reported_with_its_path() -> None:
    # A synthetic lock: the project needs `tool`, whose extra `ml` pulls a package depending on lightgbm.
    lock: Lock = {
        "app": {"name": "app", "dependencies": [{"name": "tool", "extra": ["ml"]}]},
        "tool": {"name": "tool", "optional-dependencies": {"ml": [{"name": "helper"}]}},
        "helper": {"name": "helper", "dependencies": [{"name": "LightGBM"}]},
        "lightgbm": {"name": "lightgbm", "dependencies": [{"name": "numpy"}]},
        "numpy": {"name": "numpy"},
    }
    assert forbidden_in(resolve(lock, "app")) == {"lightgbm": "app -> tool -> helper -> LightGBM"}


def test_service_dockerfiles_install_exactly_these_sets() -> None:
    # The sets checked above are only meaningful if the images install them this way.
    for name in ("ingestion", "analytics", "forecast", "gateway"):
        text = (REPO_ROOT / "deploy" / "docker" / f"{name}.Dockerfile").read_text()
        assert "uv sync --frozen --no-dev --no-install-project" in text, name
        assert "--extra" not in text and "--all-extras" not in text, name
    training = (REPO_ROOT / "deploy" / "docker" / "training.Dockerfile").read_text()
    assert "uv sync --frozen --no-dev --extra training --no-install-project" in training
