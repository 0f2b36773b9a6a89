"""deploy/k8s/: valid against the Kubernetes schemas (offline) and consistent with itself.

The schemas are kubernetes-validate's copies of the API's OpenAPI documents,
checked strictly (an unknown or misspelt field fails) for the oldest
Kubernetes the manifests claim (1.27: gRPC probes are GA there) and the
newest the package ships. Then the references the schemas cannot see:
selectors, ports, probes, the ConfigMap's variables against the services'
contract, the headless Service, the image.
"""

from __future__ import annotations

import shutil
import subprocess
from collections import Counter
from typing import Any
from urllib.parse import urlsplit

import kubernetes_validate
import pytest
import yaml

from tests.deploy.contract import (
    ENVIRONMENT,
    HEALTH,
    IMAGE,
    K8S,
    command_option,
    load_all,
    manifests,
    service_of,
)

OLDEST = "1.27"
VERSIONS = (OLDEST, kubernetes_validate.utils.latest_version())
OBJECTS = manifests()


def named(kind: str) -> dict[str, dict[str, Any]]:
    return {doc["metadata"]["name"]: doc for doc in OBJECTS if doc["kind"] == kind}


def containers() -> list[tuple[dict[str, Any], dict[str, Any]]]:
    """(Deployment, container) for every container of every Deployment."""
    return [
        (deployment, container)
        for deployment in named("Deployment").values()
        for container in deployment["spec"]["template"]["spec"]["containers"]
    ]


def selects(selector: dict[str, str], labels: dict[str, str]) -> bool:
    return bool(selector) and all(labels.get(key) == value for key, value in selector.items())


def port_numbers(container: dict[str, Any]) -> dict[str | int, int]:
    """A container's ports by name and by number."""
    ports: dict[str | int, int] = {}
    for port in container.get("ports", []):
        ports[port["containerPort"]] = port["containerPort"]
        if "name" in port:
            ports[port["name"]] = port["containerPort"]
    return ports


def test_there_is_one_of_each_thing_the_bookstore_needs() -> None:
    kinds = Counter(doc["kind"] for doc in OBJECTS)
    assert set(named("Deployment")) == {"catalog", "recommendations", "marketplace", "redis"}
    assert set(named("Service")) == set(named("Deployment"))
    assert kinds["ConfigMap"] == 1
    assert kinds["Namespace"] == 1
    assert {"recommendations", "catalog", "marketplace"} <= set(named("PodDisruptionBudget"))


@pytest.mark.parametrize("version", VERSIONS)
@pytest.mark.parametrize("doc", OBJECTS, ids=lambda d: f"{d['kind']}/{d['metadata']['name']}")
def test_every_object_is_valid_against_the_kubernetes_schema(
    doc: dict[str, Any], version: str
) -> None:
    kubernetes_validate.validate(doc, version, strict=True)


def test_a_misspelt_field_fails_the_strict_schema() -> None:
    """The check above would catch a typo, not only a missing field."""
    broken = yaml.safe_load(yaml.safe_dump(named("Deployment")["catalog"]))
    broken["spec"]["template"]["spec"]["containers"][0]["readinesProbe"] = {"grpc": {"port": 1}}
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(broken, OLDEST, strict=True)


def test_deployments_select_their_own_pods() -> None:
    for deployment in named("Deployment").values():
        labels = deployment["spec"]["template"]["metadata"]["labels"]
        assert selects(deployment["spec"]["selector"]["matchLabels"], labels), deployment[
            "metadata"
        ]["name"]


def test_every_service_selects_one_deployment_and_targets_its_ports() -> None:
    for name, service in named("Service").items():
        chosen = [
            deployment
            for deployment in named("Deployment").values()
            if selects(
                service["spec"]["selector"], deployment["spec"]["template"]["metadata"]["labels"]
            )
        ]
        assert [d["metadata"]["name"] for d in chosen] == [name]
        pod_ports = port_numbers(chosen[0]["spec"]["template"]["spec"]["containers"][0])
        for port in service["spec"]["ports"]:
            assert port.get("targetPort", port["port"]) in pod_ports, (name, port)
            assert pod_ports[port.get("targetPort", port["port"])] == port["port"], (name, port)


def test_disruption_budgets_select_a_deployment_and_leave_it_room() -> None:
    for name, budget in named("PodDisruptionBudget").items():
        deployment = named("Deployment")[name]
        assert selects(
            budget["spec"]["selector"]["matchLabels"],
            deployment["spec"]["template"]["metadata"]["labels"],
        )
        replicas = deployment["spec"]["replicas"]
        assert replicas >= 2, f"a budget on {name}'s single pod would block every drain"
        if "minAvailable" in budget["spec"]:
            assert budget["spec"]["minAvailable"] < replicas
        else:
            assert 0 < budget["spec"]["maxUnavailable"] < replicas


def test_probes_ask_a_port_the_container_listens_on() -> None:
    for deployment, container in containers():
        ports = port_numbers(container)
        name = deployment["metadata"]["name"]
        probes = [
            container[kind]
            for kind in ("startupProbe", "readinessProbe", "livenessProbe")
            if kind in container
        ]
        assert {"readinessProbe", "livenessProbe"} <= set(container), name
        for probe in probes:
            action = next(key for key in ("httpGet", "grpc", "tcpSocket", "exec") if key in probe)
            if action != "exec":
                assert probe[action]["port"] in ports, (name, probe)


def test_bookstore_probes_are_on_the_health_endpoints_of_the_contract() -> None:
    for deployment, container in containers():
        service = service_of(container.get("command", []))
        if service is None:
            continue
        assert service == deployment["metadata"]["name"]
        listening = int(command_option(container["command"], "--port") or 0)
        assert listening in port_numbers(container).values()
        for kind in ("readinessProbe", "livenessProbe"):
            probe = container[kind]
            if HEALTH[service] == "grpc":
                assert probe["grpc"]["port"] == listening
            else:
                assert probe["httpGet"] == {"path": HEALTH[service], "port": listening}


def test_every_container_has_resource_requests_and_limits() -> None:
    for deployment, container in containers():
        resources = container["resources"]
        for kind in ("requests", "limits"):
            assert {"cpu", "memory"} <= set(resources[kind]), (deployment["metadata"]["name"], kind)


def test_bookstore_containers_run_the_one_image_as_a_non_root_user() -> None:
    images = {
        container["image"]
        for _, container in containers()
        if service_of(container.get("command", []))
    }
    assert images == {f"{IMAGE}:0.1.0"}
    for deployment, container in containers():
        pod = deployment["spec"]["template"]["spec"]["securityContext"]
        assert pod["runAsNonRoot"] is True
        assert pod["runAsUser"] != 0
        assert container["securityContext"]["allowPrivilegeEscalation"] is False


def test_bookstore_environment_is_only_what_the_services_read() -> None:
    config_maps = named("ConfigMap")
    for deployment, container in containers():
        if service_of(container.get("command", [])) is None:
            continue
        names = {variable["name"] for variable in container.get("env", [])}
        for source in container.get("envFrom", []):
            names |= set(config_maps[source["configMapRef"]["name"]]["data"])
        assert names <= ENVIRONMENT, (deployment["metadata"]["name"], names - ENVIRONMENT)


def test_the_peer_addresses_name_services_and_their_ports() -> None:
    (peers,) = named("ConfigMap").values()
    services = named("Service")

    def service_port(host: str, port: int) -> dict[str, Any]:
        assert host in services, f"no Service {host}"
        assert port in [p["port"] for p in services[host]["spec"]["ports"]], (
            f"{host} has no port {port}"
        )
        return services[host]

    catalog = urlsplit(peers["data"]["CATALOG_URL"])
    service_port(catalog.hostname or "", catalog.port or 80)
    redis = urlsplit(peers["data"]["REDIS_URL"])
    service_port(redis.hostname or "", redis.port or 6379)
    host, _, port = peers["data"]["RECOMMENDATIONS_TARGETS"].rpartition(":")
    recommendations = service_port(host, int(port))
    # One DNS name for every replica: only a headless Service resolves to each pod.
    assert recommendations["spec"]["clusterIP"] == "None"


def test_the_kustomization_lists_every_manifest() -> None:
    (kustomization,) = load_all(K8S / "kustomization.yaml")
    files = {path.name for path in K8S.glob("*.yaml")} - {"kustomization.yaml"}
    assert sorted(kustomization["resources"]) == sorted(files)
    assert [image["name"] for image in kustomization["images"]] == [IMAGE]


@pytest.mark.skipif(shutil.which("kubectl") is None, reason="kubectl is not installed")
def test_kubectl_kustomize_builds_valid_objects_in_one_namespace() -> None:
    built = subprocess.run(
        ["kubectl", "kustomize", str(K8S)], capture_output=True, text=True, timeout=60, check=False
    )
    assert built.returncode == 0, built.stderr
    docs = [doc for doc in yaml.safe_load_all(built.stdout) if doc]
    assert len(docs) == len(OBJECTS)
    for doc in docs:
        kubernetes_validate.validate(doc, OLDEST, strict=True)
        if doc["kind"] != "Namespace":
            assert doc["metadata"]["namespace"] == "bookstore"
