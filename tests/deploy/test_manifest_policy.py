"""Properties of the rendered Kubernetes overlays that this platform relies on.

Read from the JSON that deploy/k8s-check.sh writes beside each rendered overlay (the same objects that
were schema-validated and scanned), so these assertions see exactly what `kubectl apply` would get.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

Doc = dict[str, Any]
Rendered = dict[str, list[Doc]]

GRPC_PORTS = {"nova-ingestion": 50051, "nova-analytics": 50052, "nova-forecast": 50053}
SERVICES = ("nova-ingestion", "nova-analytics", "nova-forecast", "nova-gateway")


def pod_spec(doc: Doc) -> Doc | None:
    kind = doc["kind"]
    if kind == "CronJob":
        return doc["spec"]["jobTemplate"]["spec"]["template"]["spec"]
    if kind in {"Deployment", "StatefulSet", "DaemonSet", "Job"}:
        return doc["spec"]["template"]["spec"]
    return None


def workloads(docs: list[Doc]) -> Iterator[tuple[Doc, Doc]]:
    for doc in docs:
        spec = pod_spec(doc)
        if spec is not None:
            yield doc, spec


def all_containers(spec: Doc) -> list[Doc]:
    return [*spec.get("initContainers", []), *spec["containers"]]


def find(docs: list[Doc], kind: str, name: str) -> Doc:
    matches = [d for d in docs if d["kind"] == kind and d["metadata"]["name"] == name]
    assert len(matches) == 1, f"{kind}/{name} not rendered exactly once"
    return matches[0]


def env_of(container: Doc) -> dict[str, Doc]:
    return {item["name"]: item for item in container.get("env", [])}


def test_every_container_has_the_restricted_security_context(rendered: Rendered) -> None:
    checked = 0
    for overlay, docs in rendered.items():
        for doc, spec in workloads(docs):
            assert spec["automountServiceAccountToken"] is False, (overlay, doc["metadata"]["name"])
            assert spec["securityContext"]["runAsNonRoot"] is True
            for container in all_containers(spec):
                sc = container["securityContext"]
                where = (overlay, doc["metadata"]["name"], container["name"])
                assert sc["runAsNonRoot"] is True, where
                assert isinstance(sc["runAsUser"], int) and sc["runAsUser"] > 0, where
                assert sc["readOnlyRootFilesystem"] is True, where
                assert sc["allowPrivilegeEscalation"] is False, where
                assert sc["capabilities"]["drop"] == ["ALL"] and "add" not in sc["capabilities"], where
                assert sc["seccompProfile"]["type"] == "RuntimeDefault", where
                checked += 1
    assert checked >= 3 * 6, "every overlay has at least the four services and the two jobs"


def test_project_images_run_as_the_image_uid(rendered: Rendered) -> None:
    for docs in rendered.values():
        for _, spec in workloads(docs):
            for container in all_containers(spec):
                if container["image"].startswith("nova-corrente/"):
                    assert container["securityContext"]["runAsUser"] == 10001


def test_every_container_has_requests_and_limits_and_a_fixed_image(rendered: Rendered) -> None:
    for docs in rendered.values():
        for _, spec in workloads(docs):
            for container in all_containers(spec):
                resources = container["resources"]
                assert {"cpu", "memory"} <= set(resources["requests"]), container["name"]
                assert {"cpu", "memory"} <= set(resources["limits"]), container["name"]
                image = container["image"]
                assert ":" in image.rsplit("/", 1)[-1] and not image.endswith(":latest"), image
    for docs in rendered.values():
        assert not any(v.get("hostPath") for _, s in workloads(docs) for v in s.get("volumes", []))


@pytest.mark.parametrize("overlay", ["dev", "prod"])
def test_grpc_services_use_native_grpc_probes(rendered: Rendered, overlay: str) -> None:
    for name, port in GRPC_PORTS.items():
        server = find(rendered[overlay], "Deployment", name)["spec"]["template"]["spec"]["containers"][0]
        # Readiness follows the dependency-driven overall status; startup and liveness only the process,
        # so that an outage of PostgreSQL or RabbitMQ never restarts pods.
        assert server["readinessProbe"]["grpc"] == {"port": port}, (overlay, name)
        for probe in ("startupProbe", "livenessProbe"):
            assert server[probe]["grpc"] == {"port": port, "service": "liveness"}, (overlay, name, probe)


def test_mtls_probes_call_the_health_check_over_tls(rendered: Rendered) -> None:
    # The kubelet's gRPC probe cannot present a client certificate.
    for name, port in GRPC_PORTS.items():
        server = find(rendered["prod-mtls"], "Deployment", name)["spec"]["template"]["spec"]["containers"][0]
        check = ["python", "-m", "services.kit.healthcheck", str(port)]
        assert server["readinessProbe"]["exec"]["command"] == check
        assert server["livenessProbe"]["exec"]["command"] == [*check, "127.0.0.1", "liveness"]
        assert {"NOVA_TLS_CERT_FILE", "NOVA_TLS_KEY_FILE", "NOVA_TLS_CA_FILE"} <= set(env_of(server))


def test_termination_grace_outlasts_the_service_drain(rendered: Rendered) -> None:
    for docs in rendered.values():
        for name in SERVICES:
            spec = find(docs, "Deployment", name)["spec"]["template"]["spec"]
            server = spec["containers"][0]
            prefix = f"NOVA_{name.removeprefix('nova-').upper()}"
            env = env_of(server)
            grace = float(env[f"{prefix}_GRACE_SECONDS"]["value"])
            delay = float(env.get(f"{prefix}_SHUTDOWN_DELAY_SECONDS", {}).get("value", 0))
            pre_stop = server.get("lifecycle", {}).get("preStop", {}).get("sleep", {}).get("seconds", 0)
            # A service may give its bus consumers the grace too, before its RPCs get theirs.
            assert spec["terminationGracePeriodSeconds"] > 2 * grace + delay + pre_stop, name
            if name in GRPC_PORTS:
                # gRPC clients follow the server's GOAWAY and the server delays its own refusal: no preStop
                # hook (and no shell to run one).
                assert "lifecycle" not in server, name
                assert delay > 0, name


def test_analytics_replicas_are_distinct_and_sized_to_their_limit(rendered: Rendered) -> None:
    for docs in rendered.values():
        env = env_of(find(docs, "Deployment", "nova-analytics")["spec"]["template"]["spec"]["containers"][0])
        assert env["NOVA_ANALYTICS_REPLICA_ID"]["valueFrom"]["fieldRef"]["fieldPath"] == "metadata.name"
        threads = env["NOVA_ANALYTICS_DUCKDB_THREADS"]["valueFrom"]["resourceFieldRef"]
        assert threads["resource"] == "limits.cpu"


def test_forecast_mounts_models_read_only_and_only_training_writes_them(rendered: Rendered) -> None:
    for overlay, docs in rendered.items():
        writers, readers = [], []
        for doc, spec in workloads(docs):
            claims = {
                v["name"]: v["persistentVolumeClaim"]
                for v in spec.get("volumes", [])
                if v.get("persistentVolumeClaim", {}).get("claimName") == "nova-models"
            }
            for container in all_containers(spec):
                for mount in container.get("volumeMounts", []):
                    if mount["name"] in claims:
                        read_only = mount.get("readOnly") and claims[mount["name"]].get("readOnly")
                        (readers if read_only else writers).append(doc["metadata"]["name"])
        assert readers == ["nova-forecast"], overlay
        assert writers == ["nova-training"], overlay


def test_onnx_threads_follow_the_cpu_limit(rendered: Rendered) -> None:
    for docs in rendered.values():
        server = find(docs, "Deployment", "nova-forecast")["spec"]["template"]["spec"]["containers"][0]
        field = env_of(server)["NOVA_ONNX_INTRA_OP_THREADS"]["valueFrom"]["resourceFieldRef"]
        assert field == {"containerName": "server", "resource": "limits.cpu", "divisor": "1"}
    prod = find(rendered["prod"], "Deployment", "nova-forecast")["spec"]["template"]["spec"]["containers"][0]
    assert prod["resources"]["limits"]["cpu"] == "2"


def test_secrets_are_referenced_never_rendered(rendered: Rendered) -> None:
    for overlay, docs in rendered.items():
        assert not [d for d in docs if d["kind"] == "Secret"], overlay
        referenced = {
            source["secret"]["name"]
            for _, spec in workloads(docs)
            for volume in spec.get("volumes", [])
            for source in volume.get("projected", {}).get("sources", [])
            if "secret" in source
        }
        assert {"nova-backing", "nova-jwt"} <= referenced, overlay
        # Least privilege: forecast has no database, the gateway no backing service at all.
        for name, keys in (
            ("nova-forecast", {"broker-url", "cache-url", "jwt-secret"}),
            ("nova-gateway", {"jwt-secret"}),
        ):
            volumes = find(docs, "Deployment", name)["spec"]["template"]["spec"]["volumes"]
            mounted = {
                item["key"]
                for volume in volumes
                for source in volume.get("projected", {}).get("sources", [])
                for item in source.get("secret", {}).get("items", [])
            }
            assert mounted == keys, (overlay, name)
        for _, spec in workloads(docs):
            for container in all_containers(spec):
                # Credentials travel as files, never as environment values.
                assert not any(
                    "secretKeyRef" in item.get("valueFrom", {}) for item in container.get("env", [])
                )


def _policies(docs: list[Doc]) -> dict[str, Doc]:
    return {d["metadata"]["name"]: d["spec"] for d in docs if d["kind"] == "NetworkPolicy"}


def _peers(rules: list[Doc], direction: str) -> set[tuple[str, int]]:
    peers = set()
    for rule in rules:
        for peer in rule.get(direction, []):
            label = peer.get("podSelector", {}).get("matchLabels", {}).get("app.kubernetes.io/name")
            for port in rule.get("ports", []):
                peers.add((label, port["port"]))
    return peers


@pytest.mark.parametrize("overlay", ["dev", "prod"])
def test_network_policies_deny_by_default_and_follow_the_data_flow(rendered: Rendered, overlay: str) -> None:
    policies = _policies(rendered[overlay])
    deny = policies["default-deny-all"]
    assert deny["podSelector"] == {} and set(deny["policyTypes"]) == {"Ingress", "Egress"}
    assert "ingress" not in deny and "egress" not in deny
    dns = policies["allow-dns-egress"]["egress"][0]
    assert {p["port"] for p in dns["ports"]} == {53}
    assert _peers(policies["gateway"]["egress"], "to") == {
        ("ingestion", 50051),
        ("analytics", 50052),
        ("forecast", 50053),
    }
    assert _peers(policies["forecast"]["egress"], "to") == {("analytics", 50052)}
    assert _peers(policies["analytics"]["ingress"], "from") == {("gateway", 50052), ("forecast", 50052)}
    assert _peers(policies["analytics"]["egress"], "to") == {("ingestion", 50051)}
    assert {("gateway", 50051), ("analytics", 50051)} <= _peers(policies["ingestion"]["ingress"], "from")
    assert _peers(policies["forecast"]["ingress"], "from") == {("gateway", 50053)}
    ingress_to_gateway = policies["gateway"]["ingress"][0]["from"][0]
    assert "namespaceSelector" in ingress_to_gateway
    backing = policies["allow-backing-egress"]
    selected = set(backing["podSelector"]["matchExpressions"][0]["values"])
    assert selected == {"ingestion", "analytics", "forecast", "migrate"}


def test_prod_scales_and_budgets_disruptions(rendered: Rendered) -> None:
    prod = rendered["prod"]
    hpas = {d["spec"]["scaleTargetRef"]["name"] for d in prod if d["kind"] == "HorizontalPodAutoscaler"}
    assert hpas == {"nova-forecast", "nova-gateway"}
    pdbs = {d["metadata"]["name"] for d in prod if d["kind"] == "PodDisruptionBudget"}
    assert pdbs == set(SERVICES)
    for name in SERVICES:
        assert find(prod, "Deployment", name)["spec"]["replicas"] >= 2
    # Managed backing services: nothing of the kind runs in the prod overlay.
    assert not [d for d in prod if d["kind"] == "StatefulSet"]


def test_dev_runs_its_own_backing_services(rendered: Rendered) -> None:
    dev = rendered["dev"]
    names = {d["metadata"]["name"] for d in dev if d["kind"] == "StatefulSet"}
    assert names == {"nova-postgres", "nova-rabbitmq", "nova-redis"}
    models = find(dev, "PersistentVolumeClaim", "nova-models")
    assert models["spec"]["accessModes"] == ["ReadWriteOnce"]
    assert find(rendered["prod"], "PersistentVolumeClaim", "nova-models")["spec"]["accessModes"] == [
        "ReadWriteMany"
    ]


def test_migration_job_and_training_cronjob(rendered: Rendered) -> None:
    for docs in rendered.values():
        job = find(docs, "Job", "nova-migrate")["spec"]["template"]["spec"]["containers"][0]
        assert job["image"].startswith("nova-corrente/ingestion:") and job["args"] == ["migrate"]
        cron = find(docs, "CronJob", "nova-training")
        assert cron["spec"]["concurrencyPolicy"] == "Forbid"
        spec = pod_spec(cron)
        assert spec is not None
        train = spec["containers"][0]
        assert train["image"].startswith("nova-corrente/training:")
        assert train["args"][:5] == ["train", "--data", "/data", "--out", "/models"]
        mounts = {m["mountPath"]: m for m in train["volumeMounts"]}
        assert mounts["/data"].get("readOnly") is True and not mounts["/models"].get("readOnly")
        # Training reads and writes volumes only: no Secret, no backing service.
        assert not any("projected" in v or "secret" in v for v in spec["volumes"])


def test_namespace_enforces_restricted_pod_security(rendered: Rendered) -> None:
    for docs in rendered.values():
        labels = find(docs, "Namespace", "nova")["metadata"]["labels"]
        assert labels["pod-security.kubernetes.io/enforce"] == "restricted"
