"""The deployment files validate offline: Kubernetes manifests against the
Kubernetes API schemas (kubernetes-validate, strict), the locked-down pod
settings every container needs, and the compose file's wiring."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import kubernetes_validate
import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
K8S = ROOT / "deploy" / "k8s"
K8S_VERSION = "1.30.0"


def documents(path: Path) -> list[dict]:
    return [d for d in yaml.safe_load_all(path.read_text()) if d]


def manifests():
    kustomization = yaml.safe_load((K8S / "kustomization.yaml").read_text())
    return [(name, doc) for name in kustomization["resources"] for doc in documents(K8S / name)]


def test_every_manifest_file_is_in_the_kustomization_or_is_a_crd():
    listed = set(yaml.safe_load((K8S / "kustomization.yaml").read_text())["resources"])
    for path in K8S.glob("*.yaml"):
        if path.name != "kustomization.yaml" and path.name not in listed:
            assert all("coreos.com" in d["apiVersion"] for d in documents(path)), path.name


@pytest.mark.parametrize("name, doc", manifests(), ids=lambda v: v if isinstance(v, str) else v["kind"])
def test_manifests_validate_against_the_kubernetes_schemas(name, doc):
    kubernetes_validate.validate(doc, K8S_VERSION, strict=True)


def test_the_policy_configmap_the_readme_creates_validates():
    configmap = {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "hir-policy"},
                 "data": {"policy.yaml": (ROOT / "policies" / "production.yaml").read_text()}}
    kubernetes_validate.validate(configmap, K8S_VERSION, strict=True)


def test_the_invalid_is_refused():   # the validator is live: a typo fails
    (doc,) = documents(K8S / "pdb.yaml")
    doc["spec"]["minAvailabel"] = 1
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(doc, K8S_VERSION, strict=True)


def test_every_container_is_locked_down_and_probed():
    for _, doc in manifests():
        if doc["kind"] != "Deployment":
            continue
        pod = doc["spec"]["template"]["spec"]
        assert pod["securityContext"]["runAsNonRoot"] is True
        for c in pod["containers"]:
            sc = c["securityContext"]
            assert sc["allowPrivilegeEscalation"] is False and sc["readOnlyRootFilesystem"] is True
            assert sc["capabilities"]["drop"] == ["ALL"]
            assert c["readinessProbe"] and c["livenessProbe"] and c["resources"]["limits"]
    router = next(d for _, d in manifests() if d["metadata"]["name"] == "hir-router" and d["kind"] == "Deployment")
    pod = router["spec"]["template"]["spec"]
    assert {c["name"] for c in pod["containers"]} == {"nginx", "sidecar"}
    assert pod["shareProcessNamespace"] is True     # the sidecar signals nginx on a policy change
    mounts = {c["name"]: {m["name"] for m in c["volumeMounts"]} for c in pod["containers"]}
    assert "run" in mounts["nginx"] & mounts["sidecar"] and "policy" in mounts["sidecar"]
    # A whole-directory ConfigMap mount (no subPath): kubelet updates it in place.
    assert all("subPath" not in m for c in pod["containers"] for m in c["volumeMounts"])


def test_the_servicemonitor_scrapes_the_metrics_port():
    (monitor,) = documents(K8S / "servicemonitor.yaml")
    (service,) = documents(K8S / "service.yaml")
    assert monitor["spec"]["endpoints"][0]["port"] in {p["name"] for p in service["spec"]["ports"]}


def test_compose_wires_two_routers_to_redis_prometheus_and_grafana():
    compose = yaml.safe_load((ROOT / "deploy" / "compose.yaml").read_text())
    services = compose["services"]
    for name in ("router-a", "router-b"):
        router = services[name]
        assert router["read_only"] is True and "healthcheck" in router
        assert "HIR_REDIS=redis://redis:6379/0" in router["environment"]
    for name in ("mock-a", "mock-b"):
        assert services[name]["profiles"] == ["demo"]
        assert services[name]["network_mode"] == f"service:router-{name[-1]}"
    for service in services.values():   # every file a service mounts is in the repo
        for volume in service.get("volumes", []):
            host = volume.split(":")[0]
            assert (ROOT / "deploy" / host).resolve().exists(), host
    prometheus = yaml.safe_load((ROOT / "deploy" / "compose" / "prometheus.yml").read_text())
    assert prometheus["scrape_configs"][0]["static_configs"][0]["targets"] == ["router-a:9200", "router-b:9200"]


@pytest.mark.skipif(not shutil.which("podman-compose"), reason="podman-compose is not installed")
def test_podman_compose_reads_the_file():
    run = subprocess.run(["podman-compose", "-f", str(ROOT / "deploy" / "compose.yaml"), "--dry-run", "up"],
                         capture_output=True, text=True, timeout=60)
    assert run.returncode == 0, run.stderr
    assert "router-a" in run.stdout and "router-b" in run.stdout
