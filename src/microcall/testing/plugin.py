"""microcall's pytest plugin: fixtures for tests that start real services (docs/testing.md).

Loaded wherever microcall is installed (a ``pytest11`` entry point), it adds:

* ``service_graph``: a :class:`~microcall.testing.services.ServiceGraph`
  logging under the test's ``tmp_path``; every service it started is stopped
  when the test ends;
* ``otlp_collector``: a started :class:`~microcall.testing.otlp.OtlpCollector`
  (give ``otlp_collector.endpoint`` to services as ``OTEL_EXPORTER_OTLP_ENDPOINT``).

Nothing heavy is imported until a fixture is used.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

if TYPE_CHECKING:
    from microcall.testing.otlp import OtlpCollector
    from microcall.testing.services import ServiceGraph


@pytest.fixture
def service_graph(tmp_path: Path) -> Iterator[ServiceGraph]:
    """Services started as processes on 127.0.0.1, stopped after the test."""
    from microcall.testing.services import ServiceGraph

    with ServiceGraph(tmp_path / "services") as graph:
        yield graph


@pytest.fixture
def otlp_collector() -> Iterator[OtlpCollector]:
    """An OTLP/HTTP trace collector on loopback, for the duration of the test."""
    from microcall.testing.otlp import OtlpCollector

    with OtlpCollector() as collector:
        yield collector
