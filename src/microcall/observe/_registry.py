"""Registering a metrics object in a prometheus-client registry, with an error that says what to do."""

from __future__ import annotations

import prometheus_client
from prometheus_client import CollectorRegistry
from prometheus_client.registry import Collector

from microcall.errors import ConfigurationError


def registry_or_global(registry: CollectorRegistry | None) -> CollectorRegistry:
    """``registry``, or prometheus-client's global one when None.

    The global one is looked up when a metrics object is built, not when this
    module is imported, so whoever swaps ``prometheus_client.REGISTRY`` (a test
    giving each run a registry of its own) swaps it for microcall too.
    """
    return prometheus_client.REGISTRY if registry is None else registry


def register(registry: CollectorRegistry, collector: Collector) -> None:
    """Register ``collector``; a second one with the same families is a ConfigurationError."""
    try:
        registry.register(collector)
    except ValueError as exc:  # prometheus_client: "Duplicated timeseries in CollectorRegistry"
        raise ConfigurationError(
            f"{exc}: build one metrics object per registry and share it between clients "
            "(or middlewares), or pass a registry of your own"
        ) from exc
