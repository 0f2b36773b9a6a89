"""One bookstore for the whole module: started once as processes on 127.0.0.1, with an OTLP stub."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

pytest.importorskip("flask_smorest", reason="the bookstore needs the [demo] extra")

from microcall.demo.bookstore.stack import Stack, start_stack
from microcall.testing.otlp import OtlpCollector
from microcall.testing.services import ServiceGraph

# Catalog answers go stale in the Marketplace's cache after a second, so the
# stale-if-error test needs no long wait.
CATALOG_MAX_AGE = "1"


@pytest.fixture(scope="package")
def collector() -> Iterator[OtlpCollector]:
    with OtlpCollector() as running:
        yield running


@pytest.fixture(scope="package")
def graph(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServiceGraph]:
    with ServiceGraph(Path(tmp_path_factory.mktemp("bookstore"))) as services:
        yield services


@pytest.fixture(scope="package")
def stack(graph: ServiceGraph, collector: OtlpCollector) -> Stack:
    env = {
        "OTEL_EXPORTER_OTLP_ENDPOINT": collector.endpoint,
        "OTEL_BSP_SCHEDULE_DELAY": "100",
        "CATALOG_MAX_AGE": CATALOG_MAX_AGE,
        # A page's own deadline when the browser sends none: generous, so a
        # loaded machine's slowness is not counted as the faults' doing.
        "PAGE_TIMEOUT": "5",
    }
    return start_stack(graph, replicas=2, plain=True, env=env)
