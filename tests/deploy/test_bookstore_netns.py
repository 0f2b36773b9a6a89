"""The bookstore past one host: each service in its own network namespace, on its own address.

Catalog, two Recommendations replicas and the Marketplace each run in a
namespace of their own, bound to that namespace's address, and find each
other only through the environment (``CATALOG_URL``,
``RECOMMENDATIONS_TARGETS``), as they would in containers or pods. The test,
in the root namespace, opens the Marketplace's page and finds the Catalog's
books on it. Nothing here can be reached through 127.0.0.1, so a service
that assumed its peers on localhost fails this test.

Written against the services' contract (``python -m
microcall.demo.bookstore.<service> --host --port``, the peer variables);
skipped until the package is installed.
"""

from __future__ import annotations

import asyncio
import html
import importlib.util
import os
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import grpc
import grpc.aio
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

import microcall
from tests.deploy.contract import manifests
from tests.deploy.netns import Namespace, Network, wait_for_port

pytestmark = [
    pytest.mark.skipif(
        importlib.util.find_spec("microcall.demo.bookstore") is None,
        reason="microcall.demo.bookstore is not installed",
    ),
    pytest.mark.timeout(120),
]

MARKETPLACE_PORT = 8080
CATALOG_PORT = 8081
RECOMMENDATIONS_PORT = 50051
RECOMMENDATIONS_METRICS_PORT = 8082
STARTUP = 60.0


def environment(**peers: str) -> dict[str, str]:
    """This process's environment with the peers set and no tracing exporter inherited."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("OTEL_")}
    env.update(peers)
    return env


def start(namespace: Namespace, service: str, tmp: Path, *extra: str, **peers: str) -> None:
    argv = [sys.executable, "-m", f"microcall.demo.bookstore.{service}"]
    argv += ["--host", namespace.address, *extra]
    namespace.popen(argv, log=tmp / f"{namespace.label}.log", env=environment(**peers))


async def healthy_http(client: microcall.AsyncClient, namespace: Namespace, port: int) -> None:
    await asyncio.to_thread(
        wait_for_port, namespace.address, port, timeout=STARTUP, process=namespace.processes[-1]
    )
    deadline = asyncio.get_running_loop().time() + STARTUP
    while True:
        try:
            response = await client.get(f"http://{namespace.address}:{port}/healthz", timeout=5.0)
            if response.status_code == 200:
                return
        except microcall.CallError:
            pass
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError(f"{namespace.label} never became healthy")
        await asyncio.sleep(0.1)


async def serving_grpc(namespace: Namespace, port: int) -> None:
    await asyncio.to_thread(
        wait_for_port, namespace.address, port, timeout=STARTUP, process=namespace.processes[-1]
    )
    async with grpc.aio.insecure_channel(f"{namespace.address}:{port}") as channel:
        health = health_pb2_grpc.HealthStub(channel)
        for _ in range(int(STARTUP * 10)):
            reply = await health.Check(health_pb2.HealthCheckRequest(), timeout=5.0)
            if reply.status == health_pb2.HealthCheckResponse.SERVING:
                return
            await asyncio.sleep(0.1)
    raise AssertionError(f"{namespace.label} never said SERVING")


def titles(document: Any) -> Iterator[str]:
    """Every string under a ``title`` key, however the Catalog nests its books."""
    if isinstance(document, dict):
        for key, value in document.items():
            if key == "title" and isinstance(value, str):
                yield value
            else:
                yield from titles(value)
    elif isinstance(document, list):
        for item in document:
            yield from titles(item)


def deployment_peers() -> dict[str, str]:
    """The peer settings of deploy/k8s's ConfigMap (compose.yaml sets the same)."""
    (config,) = [doc for doc in manifests() if doc["kind"] == "ConfigMap"]
    return {key: config["data"][key] for key in ("CATALOG_URL", "RECOMMENDATIONS_TARGETS")}


@pytest.mark.parametrize("wiring", ["addresses", "deployment names"])
async def test_the_marketplace_page_lists_books_across_namespaces(
    network: Network, tmp_path: Path, wiring: str
) -> None:
    """Peers given as addresses, or by the deployment's own names.

    With names, the Marketplace's namespace resolves ``catalog`` and
    ``recommendations`` (to both replicas) as the cluster's DNS would for a
    Service and a headless Service, and the peer variables are read from
    deploy/k8s/configmap.yaml itself.
    """
    catalog = network.add("catalog")
    replicas = [network.add("recommendations1"), network.add("recommendations2")]
    marketplace = network.add("marketplace")
    if wiring == "addresses":
        peers = {
            "CATALOG_URL": f"http://{catalog.address}:{CATALOG_PORT}",
            "RECOMMENDATIONS_TARGETS": ",".join(
                f"{r.address}:{RECOMMENDATIONS_PORT}" for r in replicas
            ),
        }
    else:
        peers = deployment_peers()
        marketplace.resolve(
            {"catalog": [catalog.address], "recommendations": [r.address for r in replicas]}
        )

    start(catalog, "catalog", tmp_path, "--port", str(CATALOG_PORT))
    for replica in replicas:
        start(
            replica,
            "recommendations",
            tmp_path,
            "--port",
            str(RECOMMENDATIONS_PORT),
            "--metrics-port",
            str(RECOMMENDATIONS_METRICS_PORT),
        )
    start(
        marketplace,
        "marketplace",
        tmp_path,
        "--port",
        str(MARKETPLACE_PORT),
        **peers,
    )

    async with microcall.AsyncClient(timeout=10.0) as client:
        try:
            await healthy_http(client, catalog, CATALOG_PORT)
            for replica in replicas:
                await serving_grpc(replica, RECOMMENDATIONS_PORT)
            await healthy_http(client, marketplace, MARKETPLACE_PORT)

            books = await client.get(f"http://{catalog.address}:{CATALOG_PORT}/books")
            known = {html.escape(title, quote=False) for title in titles(books.json())}
            assert known, f"the Catalog's /books has no titles: {books.text[:500]}"

            page = await client.get(f"http://{marketplace.address}:{MARKETPLACE_PORT}/")
            assert page.status_code == 200, page.text[:2000]
            listed = {title for title in known if title in page.text}
            assert listed, f"no Catalog title on the page:\n{page.text[:2000]}"

            scraped = [
                (catalog, CATALOG_PORT),
                (marketplace, MARKETPLACE_PORT),
                *((replica, RECOMMENDATIONS_METRICS_PORT) for replica in replicas),
            ]
            for namespace, port in scraped:
                metrics = await client.get(f"http://{namespace.address}:{port}/metrics")
                assert metrics.status_code == 200, f"{namespace.label}: {metrics.status_code}"
        except BaseException as error:
            error.add_note(network.output())
            raise
