"""deploy/compose.yaml and deploy/prometheus.yml: valid against the Compose Specification's schema, and consistent.

The schema is the compose-spec project's JSON schema, as check-jsonschema
vendors it (``check_jsonschema/builtin_schemas/vendor/compose-spec.json``,
Apache-2.0, its licence beside it in the package), validated with
jsonschema. No Docker engine runs here, so ``docker compose config`` cannot;
the references it would resolve are checked below instead.
"""

from __future__ import annotations

import json
from importlib import resources
from typing import Any
from urllib.parse import urlsplit

import jsonschema
import pytest
import yaml

from tests.deploy.contract import (
    COMPOSE,
    DEPLOY,
    ENVIRONMENT,
    HEALTH,
    IMAGE,
    PROMETHEUS,
    ROOT,
    SERVICES,
    command_option,
    service_of,
)

COMPOSE_FILE: dict[str, Any] = yaml.safe_load(COMPOSE.read_text())
SERVICES_OF_FILE: dict[str, dict[str, Any]] = COMPOSE_FILE["services"]


def compose_schema() -> dict[str, Any]:
    vendored = resources.files("check_jsonschema.builtin_schemas.vendor") / "compose-spec.json"
    return json.loads(vendored.read_text())


def ours() -> dict[str, dict[str, Any]]:
    """The compose services that run a bookstore service, by the bookstore service they run."""
    found: dict[str, dict[str, Any]] = {}
    for name, service in SERVICES_OF_FILE.items():
        if (which := service_of(service.get("command", []))) is not None:
            assert which == name, f"compose service {name} runs {which}"
            found[which] = service
    return found


def test_the_compose_file_is_valid_against_the_compose_specification() -> None:
    schema = compose_schema()
    validator = jsonschema.validators.validator_for(schema)(schema)
    errors = [
        f"{'/'.join(map(str, e.absolute_path))}: {e.message}"
        for e in validator.iter_errors(COMPOSE_FILE)
    ]
    assert not errors, "\n".join(errors)


def test_the_schema_check_catches_a_misspelt_key() -> None:
    schema = compose_schema()
    broken = json.loads(json.dumps(COMPOSE_FILE))
    broken["services"]["catalog"]["healtcheck"] = broken["services"]["catalog"].pop("healthcheck")
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validators.validator_for(schema)(schema).validate(broken)


def test_every_bookstore_service_runs_once_from_the_one_image() -> None:
    assert set(ours()) == set(SERVICES)
    for name, service in ours().items():
        assert service["image"] == f"{IMAGE}:0.1.0", name
        build = service["build"]
        assert (COMPOSE.parent / build["context"]).resolve() == ROOT
        assert (ROOT / build["dockerfile"]).resolve() == DEPLOY / "Dockerfile"


def test_recommendations_has_replicas_behind_one_name() -> None:
    assert ours()["recommendations"]["deploy"]["replicas"] >= 2
    target = ours()["marketplace"]["environment"]["RECOMMENDATIONS_TARGETS"]
    assert (
        target
        == f"recommendations:{command_option(ours()['recommendations']['command'], '--port')}"
    )


def test_bookstore_environment_is_only_what_the_services_read() -> None:
    for name, service in ours().items():
        extra = set(service.get("environment", {})) - ENVIRONMENT
        assert not extra, (name, extra)


def test_peer_urls_name_a_service_and_the_port_it_listens_on() -> None:
    environment = ours()["marketplace"]["environment"]
    catalog = urlsplit(environment["CATALOG_URL"])
    assert catalog.hostname == "catalog"
    assert str(catalog.port) == command_option(ours()["catalog"]["command"], "--port")
    for service in ours().values():
        for key, value in service.get("environment", {}).items():
            if key in ("REDIS_URL", "OTEL_EXPORTER_OTLP_ENDPOINT"):
                assert urlsplit(value).hostname in SERVICES_OF_FILE, (key, value)


def test_every_service_is_health_checked_where_it_listens() -> None:
    for name, service in ours().items():
        test = service["healthcheck"]["test"]
        assert test[:2] == ["CMD", "bookstore-healthcheck"], name
        port = command_option(service["command"], "--port")
        expected = (
            f"grpc://127.0.0.1:{port}"
            if HEALTH[name] == "grpc"
            else f"http://127.0.0.1:{port}{HEALTH[name]}"
        )
        assert test[2] == expected
        assert command_option(service["command"], "--host") == "0.0.0.0"


def test_healthy_conditions_wait_only_on_services_with_a_health_check() -> None:
    for name, service in SERVICES_OF_FILE.items():
        for dependency, condition in service.get("depends_on", {}).items():
            assert dependency in SERVICES_OF_FILE, (name, dependency)
            if condition["condition"] == "service_healthy":
                assert "healthcheck" in SERVICES_OF_FILE[dependency], (name, dependency)
    marketplace = ours()["marketplace"]["depends_on"]
    assert (
        marketplace["catalog"]["condition"]
        == marketplace["recommendations"]["condition"]
        == "service_healthy"
    )


def test_prometheus_scrapes_every_service_where_it_serves_metrics() -> None:
    config = yaml.safe_load(PROMETHEUS.read_text())
    mounted = SERVICES_OF_FILE["prometheus"]["volumes"]
    assert any(v.startswith("./prometheus.yml:") for v in mounted)
    scraped: dict[str, set[str]] = {}
    for job in config["scrape_configs"]:
        targets = {t for static in job.get("static_configs", []) for t in static["targets"]}
        targets |= {
            f"{name}:{dns['port']}"
            for dns in job.get("dns_sd_configs", [])
            for name in dns["names"]
        }
        scraped[job["job_name"]] = targets
    for name, service in ours().items():
        port = command_option(service["command"], "--metrics-port") or command_option(
            service["command"], "--port"
        )
        assert scraped.get(name) == {f"{name}:{port}"}, (name, scraped.get(name))
    replicas = next(job for job in config["scrape_configs"] if job["job_name"] == "recommendations")
    # Each replica scraped by itself, not one of them by chance through the shared name.
    assert replicas["dns_sd_configs"][0]["type"] == "A"
