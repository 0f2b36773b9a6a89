"""Reading a registry back in tests: one sample, or every series of a family."""

from __future__ import annotations

import time
from collections.abc import Callable

from prometheus_client import CollectorRegistry


def value(registry: CollectorRegistry, name: str, **labels: str) -> float:
    """The sample ``name{labels}``, 0 when it does not exist."""
    found = registry.get_sample_value(name, labels)
    return 0.0 if found is None else found


def series(registry: CollectorRegistry, family: str) -> set[tuple[tuple[str, str], ...]]:
    """The distinct label sets of a family's samples (a histogram counts once per label set)."""
    seen: set[tuple[tuple[str, str], ...]] = set()
    for metric in registry.collect():
        if metric.name != family:
            continue
        for sample in metric.samples:
            labels = {key: val for key, val in sample.labels.items() if key != "le"}
            seen.add(tuple(sorted(labels.items())))
    return seen


def label_values(registry: CollectorRegistry, family: str, label: str) -> set[str]:
    """Every value ``label`` takes in ``family``."""
    return {dict(labels)[label] for labels in series(registry, family) if label in dict(labels)}


def settled(read: Callable[[], float], expected: float, timeout: float = 10.0) -> float:
    """``read()`` once it equals ``expected`` (or after ``timeout``).

    A WSGI server closes the response (which ends the request for the
    observers) after its last byte is on the wire: the client may see the
    answer a moment before the metric moves.
    """
    give_up = time.monotonic() + timeout
    found = read()
    while found != expected and time.monotonic() < give_up:
        time.sleep(0.005)
        found = read()
    return found
