"""Start the whole bookstore as processes on 127.0.0.1 free ports (``up``, the scenario, the tests).

::

    with ServiceGraph(log_dir) as graph:
        stack = start_stack(graph, replicas=2, plain=True)
        print(stack.marketplace)          # http://127.0.0.1:<port>
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

from microcall.testing.services import ServiceGraph, ServiceProcess, python_module

PACKAGE = "microcall.demo.bookstore"


@dataclass(slots=True)
class Stack:
    """The running bookstore: each service's process and the URLs a person or a test uses."""

    catalog: ServiceProcess
    replicas: list[ServiceProcess]
    marketplace_service: ServiceProcess
    plain_service: ServiceProcess | None = None
    extra: dict[str, str] = field(default_factory=dict)

    @property
    def marketplace(self) -> str:
        """The Marketplace (microcall's policies)."""
        return self.marketplace_service.url

    @property
    def plain(self) -> str | None:
        """The second Marketplace, with a plain client, when started."""
        return None if self.plain_service is None else self.plain_service.url

    def admin(self, name: str) -> str:
        """The chaos/metrics URL of ``catalog``, ``recommendations-N`` or ``marketplace``."""
        if name == "catalog":
            return self.catalog.url
        if name == "marketplace":
            return self.marketplace
        if name.startswith("recommendations-"):
            return self.replicas[int(name.rpartition("-")[2]) - 1].url_of("metrics_port")
        raise KeyError(f"no service {name!r}")

    def urls(self) -> dict[str, str]:
        """Every URL worth printing."""
        urls = {
            "marketplace": self.marketplace + "/",
            "dashboard": self.marketplace + "/dashboard",
            "catalog": self.catalog.url + "/books",
            "catalog API docs": self.catalog.url + "/docs/",
        }
        if self.plain is not None:
            urls["marketplace (plain client)"] = self.plain + "/"
        for index, replica in enumerate(self.replicas, 1):
            urls[f"recommendations-{index} (gRPC)"] = replica.address
            urls[f"recommendations-{index} metrics"] = replica.url_of("metrics_port") + "/metrics"
        return urls


def _grpc_health(service: ServiceProcess) -> bool:
    import grpc
    from grpc_health.v1 import health_pb2, health_pb2_grpc

    with grpc.insecure_channel(service.address) as channel:
        stub = health_pb2_grpc.HealthStub(channel)
        reply = stub.Check(health_pb2.HealthCheckRequest(service=""), timeout=1.0)
        return bool(reply.status == health_pb2.HealthCheckResponse.SERVING)


def start_replica(
    graph: ServiceGraph, index: int, env: Mapping[str, str] | None = None
) -> ServiceProcess:
    """Start (or restart) Recommendations replica ``index`` (from 1), on new free ports."""
    return graph.start(
        f"recommendations-{index}",
        python_module(
            f"{PACKAGE}.recommendations",
            "--host",
            "{host}",
            "--port",
            "{port}",
            "--metrics-port",
            "{metrics_port}",
        ),
        env={"OTEL_SERVICE_NAME": "recommendations", **(env or {})},
        health=_grpc_health,
    )


def start_marketplace(
    graph: ServiceGraph,
    name: str,
    catalog: ServiceProcess,
    replicas: list[ServiceProcess],
    *,
    plain: bool = False,
    env: Mapping[str, str] | None = None,
) -> ServiceProcess:
    """Start a Marketplace wired to ``catalog`` and ``replicas``."""
    peers = {
        "CATALOG_URL": catalog.url,
        "RECOMMENDATIONS_TARGETS": ",".join(replica.address for replica in replicas),
        "RECOMMENDATIONS_ADMIN": ",".join(r.url_of("metrics_port") for r in replicas),
        "MARKETPLACE_MODE": "plain" if plain else "resilient",
        "OTEL_SERVICE_NAME": name,
        **(env or {}),
    }
    return graph.start(
        name,
        python_module(f"{PACKAGE}.marketplace", "--host", "{host}", "--port", "{port}"),
        env=peers,
        port_names=(),
        health="/healthz",
    )


def start_stack(
    graph: ServiceGraph,
    *,
    replicas: int = 2,
    plain: bool = False,
    env: Mapping[str, str] | None = None,
) -> Stack:
    """Start the Catalog, ``replicas`` Recommendations and the Marketplace (and a plain one)."""
    catalog = graph.start(
        "catalog",
        python_module(f"{PACKAGE}.catalog", "--host", "{host}", "--port", "{port}"),
        env={"OTEL_SERVICE_NAME": "catalog", **(env or {})},
        port_names=(),
        health="/healthz",
    )
    started = [start_replica(graph, index, env) for index in range(1, replicas + 1)]
    marketplace = start_marketplace(graph, "marketplace", catalog, started, env=env)
    plain_service = (
        start_marketplace(graph, "marketplace-plain", catalog, started, plain=True, env=env)
        if plain
        else None
    )
    return Stack(catalog, started, marketplace, plain_service)
