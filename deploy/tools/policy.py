"""Project policy over rendered deployment files, run by deploy/k8s-check.sh and deploy/compose-check.sh.

checkov covers the generic Kubernetes and Dockerfile hygiene; this module asserts what is specific to this
platform and must never regress: the restricted securityContext on every container (init and job
containers included), requests and limits, gRPC probes on the gRPC ports, a termination grace longer than
the service's own drain, the model volume read-only in forecast, default-deny network policy, no Secret
values, and the compose file's hardening and file-based secrets.

    python policy.py k8s RENDERED.yaml [--json OUT.json]
    python policy.py compose NORMALIZED.json

Exit status 1 and one line per violation when anything fails. Standard library plus PyYAML only.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

__all__ = ["compose_violations", "k8s_violations", "load_yaml_documents", "main"]

# The uid every image of this repository runs as (deploy/docker/*.Dockerfile).
NOVA_UID = 10001
POD_KINDS = {"Deployment", "StatefulSet", "DaemonSet", "ReplicaSet", "Job", "CronJob", "Pod"}
# Workloads that run to completion: no serving probes expected.
BATCH_KINDS = {"Job", "CronJob"}
GRACE_ENV = re.compile(r"^NOVA_[A-Z]+_GRACE_SECONDS$")
HEALTHCHECK_MODULE = "services.kit.healthcheck"
SECRETISH_NAME = re.compile(r"(PASSWORD|SECRET|TOKEN|PRIVATE_KEY)$")
CREDENTIALS_IN_URL = re.compile(r"://[^/@\s:]+:[^/@\s]+@")

Doc = dict[str, Any]


def load_yaml_documents(path: Path) -> list[Doc]:
    import yaml  # only in the tools venv; the compose mode needs none

    with path.open() as stream:
        return [doc for doc in yaml.safe_load_all(stream) if doc]


def _name(doc: Doc) -> str:
    return f"{doc.get('kind')}/{doc.get('metadata', {}).get('name')}"


def _pod_spec(doc: Doc) -> Doc | None:
    kind = doc.get("kind")
    if kind not in POD_KINDS:
        return None
    if kind == "Pod":
        return doc.get("spec", {})
    if kind == "CronJob":
        return doc["spec"]["jobTemplate"]["spec"]["template"]["spec"]
    return doc["spec"]["template"]["spec"]


def _containers(spec: Doc) -> Iterator[tuple[str, Doc]]:
    for field in ("initContainers", "containers", "ephemeralContainers"):
        for container in spec.get(field) or []:
            yield field, container


def _env(container: Doc) -> dict[str, Any]:
    return {item["name"]: item for item in container.get("env") or []}


def _config_maps(docs: Iterable[Doc]) -> dict[str, dict[str, str]]:
    return {d["metadata"]["name"]: d.get("data") or {} for d in docs if d.get("kind") == "ConfigMap"}


def _resolved_env(container: Doc, config_maps: dict[str, dict[str, str]]) -> dict[str, str]:
    """Plain env values as the container will see them (envFrom ConfigMaps first, env overrides)."""
    values: dict[str, str] = {}
    for source in container.get("envFrom") or []:
        ref = source.get("configMapRef")
        if ref:
            values.update(config_maps.get(ref["name"], {}))
    for name, item in _env(container).items():
        if "value" in item:
            values[name] = str(item["value"])
    return values


def _check_security_context(where: str, spec: Doc, container: Doc) -> Iterator[str]:
    pod_sc = spec.get("securityContext") or {}
    sc = container.get("securityContext") or {}
    if sc.get("runAsNonRoot") is not True:
        yield f"{where}: securityContext.runAsNonRoot must be true"
    uid = sc.get("runAsUser", pod_sc.get("runAsUser"))
    if not isinstance(uid, int) or uid <= 0:
        yield f"{where}: securityContext.runAsUser must be a fixed non-root uid"
    if sc.get("readOnlyRootFilesystem") is not True:
        yield f"{where}: securityContext.readOnlyRootFilesystem must be true"
    if sc.get("allowPrivilegeEscalation") is not False:
        yield f"{where}: securityContext.allowPrivilegeEscalation must be false"
    if sc.get("privileged"):
        yield f"{where}: privileged container"
    caps = sc.get("capabilities") or {}
    if "ALL" not in (caps.get("drop") or []):
        yield f"{where}: securityContext.capabilities.drop must include ALL"
    if caps.get("add"):
        yield f"{where}: securityContext.capabilities.add must be empty"
    if (sc.get("seccompProfile") or {}).get("type") != "RuntimeDefault":
        yield f"{where}: securityContext.seccompProfile.type must be RuntimeDefault"


def _check_resources(where: str, container: Doc) -> Iterator[str]:
    resources = container.get("resources") or {}
    for section in ("requests", "limits"):
        for resource in ("cpu", "memory"):
            if resource not in (resources.get(section) or {}):
                yield f"{where}: resources.{section}.{resource} missing"


def _check_image(where: str, container: Doc) -> Iterator[str]:
    image = str(container.get("image", ""))
    if "@sha256:" in image:
        return
    tag = image.rsplit("/", 1)[-1].partition(":")[2]
    if not tag or tag == "latest":
        yield f"{where}: image {image!r} needs a fixed tag or digest (not latest)"


def _probe_port(probe: Doc) -> int | None:
    """The gRPC port a probe checks: native grpc, or the healthcheck module run by exec."""
    if "grpc" in probe:
        return int(probe["grpc"]["port"])
    command = [str(part) for part in (probe.get("exec") or {}).get("command") or []]
    if HEALTHCHECK_MODULE in command:
        after = command[command.index(HEALTHCHECK_MODULE) + 1 :]
        if after and after[0].isdigit():
            return int(after[0])
    return None


def _check_probes(where: str, container: Doc) -> Iterator[str]:
    grpc_ports = [p["containerPort"] for p in container.get("ports") or [] if p.get("name") == "grpc"]
    for probe_name in ("readinessProbe", "livenessProbe"):
        probe = container.get(probe_name)
        if not probe:
            yield f"{where}: {probe_name} missing"
            continue
        for port in grpc_ports:
            if _probe_port(probe) != port:
                yield f"{where}: {probe_name} must be a gRPC health check on port {port}"


def _check_grace(where: str, spec: Doc, container: Doc, env: dict[str, str]) -> Iterator[str]:
    """SIGKILL must come after preStop sleep + shutdown delay + the drains: GRACE_SECONDS twice, as a service
    gives its bus consumers the grace, then its RPCs."""
    termination = spec.get("terminationGracePeriodSeconds", 30)
    pre_stop = ((container.get("lifecycle") or {}).get("preStop") or {}).get("sleep") or {}
    for name, value in env.items():
        if GRACE_ENV.match(name):
            delay = env.get(name.replace("_GRACE_SECONDS", "_SHUTDOWN_DELAY_SECONDS"), "0")
            needed = 2 * float(value) + float(delay) + float(pre_stop.get("seconds", 0))
            if termination <= needed:
                yield (
                    f"{where}: terminationGracePeriodSeconds {termination} must exceed {name} {value}"
                    f" twice (consumers, then RPCs) plus the shutdown delay and the preStop sleep"
                )


def _check_pod(doc: Doc, spec: Doc, config_maps: dict[str, dict[str, str]]) -> Iterator[str]:
    name = _name(doc)
    if spec.get("automountServiceAccountToken") is not False:
        yield f"{name}: automountServiceAccountToken must be false"
    pod_sc = spec.get("securityContext") or {}
    if pod_sc.get("runAsNonRoot") is not True:
        yield f"{name}: pod securityContext.runAsNonRoot must be true"
    if (pod_sc.get("seccompProfile") or {}).get("type") != "RuntimeDefault":
        yield f"{name}: pod securityContext.seccompProfile.type must be RuntimeDefault"
    for flag in ("hostNetwork", "hostPID", "hostIPC"):
        if spec.get(flag):
            yield f"{name}: {flag} is not allowed"
    for volume in spec.get("volumes") or []:
        if "hostPath" in volume:
            yield f"{name}: hostPath volume {volume['name']!r} is not allowed"
    for field, container in _containers(spec):
        where = f"{name} {field}/{container['name']}"
        yield from _check_security_context(where, spec, container)
        yield from _check_resources(where, container)
        yield from _check_image(where, container)
        if doc["kind"] not in BATCH_KINDS and field == "containers":
            yield from _check_probes(where, container)
        yield from _check_grace(where, spec, container, _resolved_env(container, config_maps))


def _check_forecast(doc: Doc, spec: Doc) -> Iterator[str]:
    name = _name(doc)
    claims = {
        v["name"]: v["persistentVolumeClaim"]
        for v in spec.get("volumes") or []
        if "persistentVolumeClaim" in v
    }
    server = next(c for _, c in _containers(spec) if c["name"] == "server")
    mounts = [m for m in server.get("volumeMounts") or [] if m["name"] in claims]
    if not mounts:
        yield f"{name}: the model repository volume is not mounted"
    for mount in mounts:
        if mount.get("readOnly") is not True or claims[mount["name"]].get("readOnly") is not True:
            yield f"{name}: the model repository must be mounted read-only (mount and claim)"
    threads = _env(server).get("NOVA_ONNX_INTRA_OP_THREADS", {})
    field = (threads.get("valueFrom") or {}).get("resourceFieldRef") or {}
    if field.get("resource") != "limits.cpu":
        yield f"{name}: NOVA_ONNX_INTRA_OP_THREADS must follow resourceFieldRef limits.cpu"


def _is_default_deny(doc: Doc) -> bool:
    spec = doc.get("spec") or {}
    return (
        doc.get("kind") == "NetworkPolicy"
        and spec.get("podSelector") in ({}, None)
        and {"Ingress", "Egress"} <= set(spec.get("policyTypes") or [])
        and not spec.get("ingress")
        and not spec.get("egress")
    )


def k8s_violations(docs: list[Doc]) -> list[str]:
    """Every policy violation in one rendered overlay."""
    problems: list[str] = []
    config_maps = _config_maps(docs)
    for doc in docs:
        kind = doc.get("kind")
        if kind == "Secret" and (doc.get("data") or doc.get("stringData")):
            problems.append(f"{_name(doc)}: Secret values must not be rendered from the repository")
        if kind == "Namespace":
            labels = doc.get("metadata", {}).get("labels") or {}
            if labels.get("pod-security.kubernetes.io/enforce") != "restricted":
                problems.append(f"{_name(doc)}: must enforce the restricted Pod Security Standard")
        spec = _pod_spec(doc)
        if spec is None:
            continue
        problems.extend(_check_pod(doc, spec, config_maps))
        if kind == "Deployment" and doc["metadata"]["name"] == "nova-forecast":
            problems.extend(_check_forecast(doc, spec))
    if not any(_is_default_deny(doc) for doc in docs):
        problems.append("no default-deny NetworkPolicy (empty podSelector, Ingress and Egress, no rules)")
    return problems


def _grace_seconds(value: Any) -> float:
    """Compose durations as normalised by `docker compose config` ("30s", "1m30s")."""
    total = 0.0
    for amount, unit in re.findall(r"(\d+(?:\.\d+)?)(h|ms|m|s|us|ns)", str(value)):
        total += float(amount) * {"h": 3600, "m": 60, "s": 1, "ms": 1e-3, "us": 1e-6, "ns": 1e-9}[unit]
    return total


def compose_violations(config: Doc) -> list[str]:
    """Every policy violation in `docker compose config --format json` output."""
    problems: list[str] = []
    for name, service in sorted(config.get("services", {}).items()):
        where = f"service {name}"
        if service.get("read_only") is not True:
            problems.append(f"{where}: read_only must be true")
        if "ALL" not in (service.get("cap_drop") or []):
            problems.append(f"{where}: cap_drop must include ALL")
        if service.get("cap_add"):
            problems.append(f"{where}: cap_add must be empty")
        if not any(opt.startswith("no-new-privileges") for opt in service.get("security_opt") or []):
            problems.append(f"{where}: security_opt must include no-new-privileges")
        user = str(service.get("user", ""))
        if not user or user.split(":")[0] in ("0", "root"):
            problems.append(f"{where}: must run as a fixed non-root user")
        if service.get("privileged"):
            problems.append(f"{where}: privileged")
        if not any(str(t).startswith("/tmp") for t in service.get("tmpfs") or []):
            problems.append(f"{where}: /tmp must be a tmpfs")
        for variable, value in (service.get("environment") or {}).items():
            if CREDENTIALS_IN_URL.search(str(value or "")):
                problems.append(f"{where}: {variable} carries credentials inline; use a secret file")
            elif SECRETISH_NAME.search(variable):
                problems.append(f"{where}: {variable} must come from a secret file ({variable}_FILE)")
        for volume in service.get("volumes") or []:
            if volume.get("type") == "bind" and not volume.get("read_only"):
                problems.append(f"{where}: bind mount {volume.get('target')} must be read-only")
        image = str(service.get("image", ""))
        if image.startswith("nova-corrente/"):
            if user != f"{NOVA_UID}:{NOVA_UID}":
                problems.append(f"{where}: must run as {NOVA_UID}:{NOVA_UID}")
            grace = [int(v) for k, v in (service.get("environment") or {}).items() if GRACE_ENV.match(k)]
            if grace and _grace_seconds(service.get("stop_grace_period", "10s")) <= 2 * max(grace):
                problems.append(f"{where}: stop_grace_period must exceed twice its GRACE_SECONDS")
            if service.get("restart") != "no" and "healthcheck" not in service:
                problems.append(f"{where}: a long-running service needs a healthcheck")
    for name, secret in (config.get("secrets") or {}).items():
        if "file" not in secret:
            problems.append(f"secret {name}: must come from a file, not inline")
    forecast = config.get("services", {}).get("forecast", {})
    models = [v for v in forecast.get("volumes") or [] if v.get("target") == "/models"]
    if not models or not all(v.get("read_only") for v in models):
        problems.append("service forecast: the models volume must be mounted read-only")
    return problems


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="mode", required=True)
    k8s = sub.add_parser("k8s", help="check one rendered overlay (multi-document YAML)")
    k8s.add_argument("rendered", type=Path)
    k8s.add_argument("--json", type=Path, help="also write the documents as a JSON list here")
    compose = sub.add_parser("compose", help="check `docker compose config --format json` output")
    compose.add_argument("normalized", type=Path)
    args = parser.parse_args(argv)

    if args.mode == "k8s":
        docs = load_yaml_documents(args.rendered)
        if args.json:
            args.json.write_text(json.dumps(docs, indent=1))
        problems = k8s_violations(docs)
        label = str(args.rendered)
    else:
        problems = compose_violations(json.loads(args.normalized.read_text()))
        label = str(args.normalized)
    for problem in problems:
        print(f"policy: {label}: {problem}", file=sys.stderr)
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
