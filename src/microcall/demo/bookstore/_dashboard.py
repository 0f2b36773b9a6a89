"""The dashboard's figures: each hop's rate, p50/p99, errors, extra load, breakers and shedding.

Read from the services' own ``/metrics`` (the Marketplace's from its
registry): every poll scrapes them all, and the figures are the
differences from the previous poll, so they describe the last few seconds.
"""

from __future__ import annotations

import asyncio
import time
from collections import defaultdict
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

import aiohttp
from prometheus_client import REGISTRY, generate_latest
from prometheus_client.parser import text_string_to_metric_families

Labels = tuple[tuple[str, str], ...]
Samples = dict[tuple[str, Labels], float]


def parse(text: str) -> Samples:
    """Prometheus text exposition as ``{(sample name, sorted labels): value}``."""
    samples: Samples = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            key = (sample.name, tuple(sorted(sample.labels.items())))
            samples[key] = samples.get(key, 0.0) + float(sample.value)
    return samples


def quantile(buckets: Mapping[float, float], q: float) -> float | None:
    """The ``q`` quantile of a histogram's cumulative buckets (upper bound, in seconds), or None."""
    bounds = sorted(buckets)
    if not bounds or buckets[bounds[-1]] <= 0:
        return None
    total = buckets[bounds[-1]]
    previous_bound, previous_count = 0.0, 0.0
    for bound in bounds:
        count = buckets[bound]
        if count >= q * total:
            if bound == float("inf"):
                return previous_bound
            span = count - previous_count
            share = (q * total - previous_count) / span if span > 0 else 1.0
            return previous_bound + (bound - previous_bound) * share
        previous_bound, previous_count = bound, count
    return None


Match = Callable[[Mapping[str, str]], bool]


@dataclass(frozen=True, slots=True)
class HopSpec:
    """Where one hop's figures come from: a source's histogram and its filters."""

    name: str
    source: str
    histogram: str
    match: Match = lambda labels: True
    attempts_server: str | None = None  # server_address of attempts counted as extra load
    shed: bool = False


@dataclass(slots=True)
class HopFigures:
    """One hop over the last interval."""

    name: str
    rate: float = 0.0
    p50_ms: float | None = None
    p99_ms: float | None = None
    errors: float = 0.0
    extra_load: float = 0.0
    shed: float = 0.0
    up: bool = True


@dataclass(slots=True)
class Snapshot:
    """The figures of one poll."""

    at: float
    hops: list[HopFigures] = field(default_factory=list)
    breakers: dict[str, str] = field(default_factory=dict)


def _delta(now: Samples, before: Samples, key: tuple[str, Labels]) -> float:
    return max(0.0, now.get(key, 0.0) - before.get(key, 0.0))


def figures(spec: HopSpec, now: Samples, before: Samples, seconds: float) -> HopFigures:
    """One hop's figures from two scrapes ``seconds`` apart."""
    result = HopFigures(spec.name)
    buckets: dict[float, float] = defaultdict(float)
    count = errors = 0.0
    for key in now:
        name, labels = key
        tags = dict(labels)
        if name == spec.histogram + "_bucket" and spec.match(tags):
            buckets[float(tags["le"])] += _delta(now, before, key)
        elif name == spec.histogram + "_count" and spec.match(tags):
            delta = _delta(now, before, key)
            count += delta
            failed = tags.get("error_type", "") != "" or tags.get(
                "rpc_grpc_status_code", "0"
            ) not in ("0", "")
            errors += delta if failed else 0.0
        elif name == "microcall_server_shed_total" and spec.shed:
            result.shed += _delta(now, before, key)
        elif (
            name == "microcall_client_attempts_total"
            and spec.attempts_server is not None
            and tags.get("server_address", "") in spec.attempts_server.split(",")
            and tags.get("attempt_kind") in ("retry", "hedge")
        ):
            result.extra_load += _delta(now, before, key)
    result.rate = count / seconds if seconds > 0 else 0.0
    result.errors = errors / seconds if seconds > 0 else 0.0
    result.shed = result.shed / seconds if seconds > 0 else 0.0
    result.extra_load = result.extra_load / count if count else 0.0
    p50, p99 = quantile(buckets, 0.5), quantile(buckets, 0.99)
    result.p50_ms = None if p50 is None else round(p50 * 1000, 1)
    result.p99_ms = None if p99 is None else round(p99 * 1000, 1)
    return result


def breakers(samples: Samples) -> dict[str, str]:
    """Each endpoint's breaker state (``host:port`` -> ``closed`` / ``open`` / ``half_open``)."""
    states: dict[str, str] = {}
    for (name, labels), value in samples.items():
        if name == "microcall_client_breaker_state" and value >= 1:
            tags = dict(labels)
            states[f"{tags.get('server_address')}:{tags.get('server_port')}"] = tags["state"]
    return dict(sorted(states.items()))


class Dashboard:
    """Polls every service's ``/metrics`` and keeps the figures of the last interval."""

    def __init__(self, sources: Mapping[str, str], specs: Iterable[HopSpec]) -> None:
        self.sources = dict(sources)  # name -> metrics URL ("" for this process's registry)
        self.specs = list(specs)
        self._before: dict[str, Samples] = {}
        self._at: float | None = None
        self._lock = asyncio.Lock()
        self.last = Snapshot(at=time.time())

    async def _scrape(self, session: aiohttp.ClientSession, url: str) -> Samples | None:
        if not url:
            return parse(generate_latest(REGISTRY).decode())
        try:
            timeout = aiohttp.ClientTimeout(total=1.0)
            async with session.get(url, timeout=timeout) as response:
                return parse(await response.text()) if response.status == 200 else None
        except (TimeoutError, aiohttp.ClientError):
            return None

    async def poll(self, session: aiohttp.ClientSession) -> Snapshot:
        """Scrape every source and compute the figures since the previous poll."""
        async with self._lock:
            names = list(self.sources)
            scraped = await asyncio.gather(
                *(self._scrape(session, self.sources[name]) for name in names)
            )
            now = time.monotonic()
            seconds = now - self._at if self._at is not None else 0.0
            current = {name: samples for name, samples in zip(names, scraped, strict=True)}
            snapshot = Snapshot(at=time.time())
            for spec in self.specs:
                samples = current.get(spec.source)
                if samples is None:
                    snapshot.hops.append(HopFigures(spec.name, up=False))
                    continue
                before = self._before.get(spec.source, samples)
                snapshot.hops.append(figures(spec, samples, before, seconds))
            own = current.get("marketplace")
            if own is not None:
                snapshot.breakers = breakers(own)
            self._before = {name: s for name, s in current.items() if s is not None}
            self._at = now
            self.last = snapshot
            return snapshot

    @staticmethod
    def to_json(snapshot: Snapshot) -> dict[str, Any]:
        """A snapshot as JSON for the page."""
        return {
            "at": snapshot.at,
            "hops": [vars_of(hop) for hop in snapshot.hops],
            "breakers": snapshot.breakers,
        }


def vars_of(hop: HopFigures) -> dict[str, Any]:
    """A hop's figures as a dict, rates rounded for display."""
    return {
        "name": hop.name,
        "rate": round(hop.rate, 2),
        "p50_ms": hop.p50_ms,
        "p99_ms": hop.p99_ms,
        "errors": round(hop.errors, 2),
        "extra_load": round(hop.extra_load, 3),
        "shed": round(hop.shed, 2),
        "up": hop.up,
    }
