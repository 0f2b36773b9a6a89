"""What the deployment files may rely on: the bookstore services' contract, in one place.

The services (``microcall.demo.bookstore``) are started as
``python -m microcall.demo.bookstore.<service> --host H --port P`` and find
their peers through the variables below; the deployment tests check every
manifest and the compose file against this list and nothing else.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parents[2]
DEPLOY = ROOT / "deploy"
K8S = DEPLOY / "k8s"
COMPOSE = DEPLOY / "compose.yaml"
DOCKERFILE = DEPLOY / "Dockerfile"
DOCKERIGNORE = DEPLOY / "Dockerfile.dockerignore"
PROMETHEUS = DEPLOY / "prometheus.yml"

IMAGE = "microcall-bookstore"
MODULE = "microcall.demo.bookstore"
SERVICES = ("catalog", "recommendations", "marketplace")
# The environment variables the services read (their --host/--port come as arguments).
ENVIRONMENT = frozenset(
    {
        "CATALOG_URL",
        "RECOMMENDATIONS_TARGETS",
        "REDIS_URL",
        "OTEL_EXPORTER_OTLP_ENDPOINT",
        "OTEL_SERVICE_NAME",
    }
)
# Extras the image installs, as the contract names them.
EXTRAS = "demo,grpc,prometheus,otel,redis"
# Where each service answers health checks: an HTTP path, or the gRPC health service.
HEALTH = {"catalog": "/healthz", "marketplace": "/healthz", "recommendations": "grpc"}


def load_all(path: Path) -> list[dict[str, Any]]:
    """Every YAML document of ``path`` (empty ones left out)."""
    return [doc for doc in yaml.safe_load_all(path.read_text()) if doc]


def manifests() -> list[dict[str, Any]]:
    """Every Kubernetes object of deploy/k8s/ (the kustomization left out)."""
    return [
        doc
        for path in sorted(K8S.glob("*.yaml"))
        for doc in load_all(path)
        if doc.get("kind") != "Kustomization"
    ]


def command_option(argv: list[str], option: str) -> str | None:
    """The value after ``option`` in a command line, or None."""
    for index, word in enumerate(argv[:-1]):
        if word == option:
            return argv[index + 1]
    return None


def service_of(argv: list[str]) -> str | None:
    """Which bookstore service a command line starts (``python -m MODULE.<service>``)."""
    module = command_option(argv, "-m") or ""
    prefix = f"{MODULE}."
    return module.removeprefix(prefix) if module.startswith(prefix) else None
