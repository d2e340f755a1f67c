"""deploy/tools/policy.py flags each fault it exists for (mutations of the real rendered objects)."""

from __future__ import annotations

import copy
import importlib.util
from collections.abc import Callable
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

REPO_ROOT = Path(__file__).resolve().parents[2]
Doc = dict[str, Any]


def _load_policy() -> ModuleType:
    spec = importlib.util.spec_from_file_location(
        "deploy_policy", REPO_ROOT / "deploy" / "tools" / "policy.py"
    )
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


policy = _load_policy()


def _deployment(docs: list[Doc], name: str) -> Doc:
    return next(d for d in docs if d["kind"] == "Deployment" and d["metadata"]["name"] == name)


def _server(docs: list[Doc], name: str) -> Doc:
    return _deployment(docs, name)["spec"]["template"]["spec"]["containers"][0]


def _writable_root(docs: list[Doc]) -> None:
    _server(docs, "nova-gateway")["securityContext"]["readOnlyRootFilesystem"] = False


def _bare_init_container(docs: list[Doc]) -> None:
    spec = _deployment(docs, "nova-analytics")["spec"]["template"]["spec"]
    spec["initContainers"] = [{"name": "warm-up", "image": "nova-corrente/analytics:0.1.0"}]


def _no_limits(docs: list[Doc]) -> None:
    del _server(docs, "nova-ingestion")["resources"]["limits"]


def _probe_on_wrong_port(docs: list[Doc]) -> None:
    _server(docs, "nova-forecast")["readinessProbe"] = {"tcpSocket": {"port": 50053}}


def _short_grace(docs: list[Doc]) -> None:
    _deployment(docs, "nova-ingestion")["spec"]["template"]["spec"]["terminationGracePeriodSeconds"] = 10


def _writable_models(docs: list[Doc]) -> None:
    for mount in _server(docs, "nova-forecast")["volumeMounts"]:
        if mount["name"] == "models":
            mount["readOnly"] = False


def _no_default_deny(docs: list[Doc]) -> None:
    docs[:] = [d for d in docs if d["metadata"]["name"] != "default-deny-all"]


def _secret_values(docs: list[Doc]) -> None:
    docs.append({"kind": "Secret", "metadata": {"name": "nova-jwt"}, "data": {"jwt-secret": "c2VjcmV0"}})


def _latest_image(docs: list[Doc]) -> None:
    _server(docs, "nova-gateway")["image"] = "nova-corrente/gateway:latest"


def _host_path(docs: list[Doc]) -> None:
    spec = _deployment(docs, "nova-forecast")["spec"]["template"]["spec"]
    spec["volumes"].append({"name": "host", "hostPath": {"path": "/var/run"}})


def _token_mounted(docs: list[Doc]) -> None:
    _deployment(docs, "nova-gateway")["spec"]["template"]["spec"]["automountServiceAccountToken"] = True


def _threads_unbound(docs: list[Doc]) -> None:
    server = _server(docs, "nova-forecast")
    server["env"] = [e for e in server["env"] if e["name"] != "NOVA_ONNX_INTRA_OP_THREADS"]


MUTATIONS: dict[str, tuple[Callable[[list[Doc]], None], str]] = {
    "writable root": (_writable_root, "containers/server: securityContext.readOnlyRootFilesystem"),
    "init container": (_bare_init_container, "initContainers/warm-up: securityContext.runAsNonRoot"),
    "no limits": (_no_limits, "resources.limits.cpu missing"),
    "probe": (_probe_on_wrong_port, "readinessProbe must be a gRPC health check on port 50053"),
    "grace": (_short_grace, "terminationGracePeriodSeconds 10 must exceed NOVA_INGESTION_GRACE_SECONDS"),
    "models": (_writable_models, "model repository must be mounted read-only"),
    "default deny": (_no_default_deny, "no default-deny NetworkPolicy"),
    "secret": (_secret_values, "Secret values must not be rendered"),
    "latest": (_latest_image, "needs a fixed tag or digest"),
    "hostPath": (_host_path, "hostPath volume 'host' is not allowed"),
    "token": (_token_mounted, "automountServiceAccountToken must be false"),
    "threads": (_threads_unbound, "NOVA_ONNX_INTRA_OP_THREADS must follow resourceFieldRef limits.cpu"),
}


def test_rendered_overlays_are_clean(rendered: dict[str, list[Doc]]) -> None:
    for overlay, docs in rendered.items():
        assert policy.k8s_violations(docs) == [], overlay


@pytest.mark.parametrize("fault", MUTATIONS)
def test_each_k8s_fault_is_flagged(rendered: dict[str, list[Doc]], fault: str) -> None:
    mutate, expected = MUTATIONS[fault]
    docs = copy.deepcopy(rendered["prod"])
    mutate(docs)
    problems = policy.k8s_violations(docs)
    assert any(expected in p for p in problems), problems


@pytest.mark.parametrize(
    ("service", "key", "value", "expected"),
    [
        ("ingestion", "user", "0:0", "must run as a fixed non-root user"),
        ("analytics", "read_only", False, "read_only must be true"),
        ("gateway", "cap_drop", [], "cap_drop must include ALL"),
        ("forecast", "security_opt", [], "no-new-privileges"),
        ("forecast", "stop_grace_period", "5s", "stop_grace_period must exceed"),
        ("postgres", "tmpfs", [], "/tmp must be a tmpfs"),
    ],
)
def test_each_compose_fault_is_flagged(
    compose_model: dict[str, Any], service: str, key: str, value: object, expected: str
) -> None:
    assert policy.compose_violations(compose_model) == []
    model = copy.deepcopy(compose_model)
    model["services"][service][key] = value
    assert any(expected in p for p in policy.compose_violations(model))


def test_compose_credentials_in_an_url_are_flagged(compose_model: dict[str, Any]) -> None:
    model = copy.deepcopy(compose_model)
    model["services"]["ingestion"]["environment"]["NOVA_DATABASE_URL"] = "postgresql://nova:hunter2@db/nova"
    assert any("carries credentials inline" in p for p in policy.compose_violations(model))
