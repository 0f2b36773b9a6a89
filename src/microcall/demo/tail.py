"""The tail-latency scenario: what a single attempt, retries and hedging do to p99.

A backend in its own process (:mod:`microcall.demo.backend`) answers most
calls in a few ms and 1% in 500 ms. For each strategy in :data:`STRATEGIES`
in turn, a fresh :class:`~microcall.AsyncClient` makes the same calls (call
``n`` meets the same backend latencies under every strategy) at a fixed
concurrency. Each call's latency is what its caller waited, from ``get()``
to the response; the extra load is what the backend received beyond one
request per call. :func:`run_against` makes the same calls to any URL
(one's own service), counting the load from the attempts sent.
:func:`run_scenario` returns one :class:`Row` per strategy
and prints nothing, so it can be tested; :mod:`microcall.demo.table` prints.
"""

from __future__ import annotations

import asyncio
import math
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field

import microcall
from microcall._validate import positive_int, whole
from microcall.demo.backend import BackendProcess, LatencyProfile
from microcall.errors import ConfigurationError
from microcall.policy.strategy import Strategy

# The strategies compared, as (label, strategy), one line each: trying another
# (a hedge with a learned delay, say) is changing that line. The fixed hedge
# delay sits just above the fast answers (2-4 ms), near the backend's p95, so
# only calls already slower than usual send a second copy.
STRATEGIES: tuple[tuple[str, Strategy], ...] = (
    ("single()", microcall.single()),
    ("retry(3, attempt_timeout=0.02)", microcall.retry(3, attempt_timeout=0.02)),
    ("hedged(0.01, attempts=2)", microcall.hedged(0.01, attempts=2)),
    ("hedged(max_extra_load=0.05)", microcall.hedged(max_extra_load=0.05)),
)

DEFAULT_REQUESTS = 3000
DEFAULT_CONCURRENCY = 16
DEFAULT_SEED = 1

# Far above the slowest backend answer (500 ms): the deadline is not what the
# scenario measures, it only guards against a stuck run.
CALL_TIMEOUT = 5.0


@dataclass(frozen=True, slots=True, kw_only=True)
class Scenario:
    """How many calls each strategy makes, how many at once, and the backend's luck."""

    requests: int = DEFAULT_REQUESTS
    concurrency: int = DEFAULT_CONCURRENCY
    seed: int = DEFAULT_SEED
    profile: LatencyProfile = field(default_factory=LatencyProfile)
    strategies: tuple[tuple[str, Strategy], ...] = STRATEGIES

    def __post_init__(self) -> None:
        positive_int("requests", self.requests, what="an int")
        positive_int("concurrency", self.concurrency, what="an int")
        whole("seed", self.seed, minimum=None, what="an int")
        if not self.strategies:
            raise ConfigurationError("a scenario needs at least one strategy")


@dataclass(frozen=True, slots=True, kw_only=True)
class Row:
    """What one strategy did: latency percentiles in seconds and the load it caused."""

    strategy: str
    calls: int
    p50: float
    p99: float
    p999: float
    failed: int
    server_requests: int
    server_cancelled: int

    @property
    def extra_load(self) -> float:
        """Requests the backend received beyond one per call, as a fraction of calls."""
        return self.server_requests / self.calls - 1.0


Progress = Callable[[str, int, int], None]
"""``progress(strategy, calls_done, calls_in_all)``, told as each call of a strategy ends."""


async def run_scenario(scenario: Scenario, progress: Progress | None = None) -> list[Row]:
    """Run every strategy of ``scenario`` in turn against the demo backend; one row each."""
    async with BackendProcess(scenario.profile, seed=scenario.seed) as backend:
        rows = []
        for run, (label, strategy) in enumerate(scenario.strategies):

            def path_of(call: int, run: int = run) -> str:
                return backend.call_path(run=run, call=call)

            counts = await _measure(backend.base_url, path_of, label, strategy, scenario, progress)
            # Read the backend's counts once the losers cancelled at the very end
            # (their connections closed with the client) have been torn down.
            stats = await backend.settled_stats(run=run)
            rows.append(counts.row(stats.received, stats.cancelled))
        return rows


async def run_against(url: str, scenario: Scenario, progress: Progress | None = None) -> list[Row]:
    """Run every strategy of ``scenario`` in turn against ``url`` (someone's own service).

    Nothing reports what that server received, so the load is counted from
    the attempts the client sent, and the cancelled ones are hedges the
    client stopped.
    """
    rows = []
    for label, strategy in scenario.strategies:
        counts = await _measure(None, lambda _call: url, label, strategy, scenario, progress)
        rows.append(counts.row(counts.sent, counts.cancelled))
    return rows


@dataclass(slots=True)
class _Counts:
    strategy: str
    calls: int
    latencies: list[float]
    failed: int = 0
    sent: int = 0
    cancelled: int = 0

    def row(self, server_requests: int, server_cancelled: int) -> Row:
        self.latencies.sort()
        return Row(
            strategy=self.strategy,
            calls=self.calls,
            p50=percentile(self.latencies, 0.50),
            p99=percentile(self.latencies, 0.99),
            p999=percentile(self.latencies, 0.999),
            failed=self.failed,
            server_requests=server_requests,
            server_cancelled=server_cancelled,
        )


async def _measure(
    base_url: str | None,
    path_of: Callable[[int], str],
    label: str,
    strategy: Strategy,
    scenario: Scenario,
    progress: Progress | None,
) -> _Counts:
    counts = _Counts(strategy=label, calls=scenario.requests, latencies=[])
    async with microcall.AsyncClient(base_url, strategy=strategy, timeout=CALL_TIMEOUT) as client:
        # One iterator shared by the workers: whoever is free takes the next
        # call, so exactly `concurrency` calls are in flight until the end.
        calls = iter(range(scenario.requests))

        async def worker(calls: Iterator[int]) -> None:
            for call in calls:
                started = time.perf_counter()
                attempts: tuple[microcall.Attempt, ...]
                try:
                    response = await client.get(path_of(call))
                except microcall.CallError as error:
                    counts.failed += 1
                    attempts = error.attempts
                else:
                    counts.failed += not response.ok
                    attempts = response.attempts
                counts.latencies.append(time.perf_counter() - started)
                counts.sent += sum(attempt.sent for attempt in attempts)
                counts.cancelled += sum(attempt.cancelled for attempt in attempts)
                if progress is not None:
                    progress(label, len(counts.latencies), scenario.requests)

        async with asyncio.TaskGroup() as group:
            for _ in range(scenario.concurrency):
                group.create_task(worker(calls))
    return counts


def percentile(ordered: Sequence[float], fraction: float) -> float:
    """The nearest-rank percentile of sorted values: a value that was actually observed."""
    if not ordered:
        raise ValueError("no values")
    rank = max(1, math.ceil(fraction * len(ordered)))
    return ordered[rank - 1]
