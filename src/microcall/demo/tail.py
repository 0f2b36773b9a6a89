"""The tail-latency scenario: what a single attempt, retries and hedging do to p99.

A backend in its own process (:mod:`microcall.demo.backend`) answers most
calls in a few ms and 1% in 500 ms. For each strategy in :data:`STRATEGIES`
in turn, a fresh :class:`~microcall.AsyncClient` makes the same calls (call
``n`` meets the same backend latencies under every strategy) at a fixed
concurrency. Each call's latency is what its caller waited, from ``get()``
to the response; the extra load is what the backend received beyond one
request per call. :func:`run_scenario` returns one :class:`Row` per strategy
and prints nothing, so it can be tested; :mod:`microcall.demo.table` prints.
"""

from __future__ import annotations

import asyncio
import math
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field

import microcall
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
        for name in ("requests", "concurrency", "seed"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int):
                raise ConfigurationError(f"{name} must be an int, got {value!r}")
        if self.requests < 1 or self.concurrency < 1:
            raise ConfigurationError(
                f"requests and concurrency must be >= 1, got {self.requests} and {self.concurrency}"
            )
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


async def run_scenario(scenario: Scenario) -> list[Row]:
    """Run every strategy of ``scenario`` in turn; one row each, in order."""
    async with BackendProcess(scenario.profile, seed=scenario.seed) as backend:
        return [
            await _measure(backend, run, label, strategy, scenario)
            for run, (label, strategy) in enumerate(scenario.strategies)
        ]


async def _measure(
    backend: BackendProcess, run: int, label: str, strategy: Strategy, scenario: Scenario
) -> Row:
    latencies: list[float] = []
    failures = 0
    async with microcall.AsyncClient(
        backend.base_url, strategy=strategy, timeout=CALL_TIMEOUT
    ) as client:
        # One iterator shared by the workers: whoever is free takes the next
        # call, so exactly `concurrency` calls are in flight until the end.
        calls = iter(range(scenario.requests))

        async def worker(calls: Iterator[int]) -> None:
            nonlocal failures
            for call in calls:
                path = backend.call_path(run=run, call=call)
                started = time.perf_counter()
                try:
                    response = await client.get(path)
                except microcall.CallError:
                    failures += 1
                else:
                    failures += not response.ok
                latencies.append(time.perf_counter() - started)

        async with asyncio.TaskGroup() as group:
            for _ in range(scenario.concurrency):
                group.create_task(worker(calls))
    # Read the backend's counts once the losers cancelled at the very end
    # (their connections closed with the client) have been torn down.
    stats = await backend.settled_stats(run=run)
    latencies.sort()
    return Row(
        strategy=label,
        calls=scenario.requests,
        p50=percentile(latencies, 0.50),
        p99=percentile(latencies, 0.99),
        p999=percentile(latencies, 0.999),
        failed=failures,
        server_requests=stats.received,
        server_cancelled=stats.cancelled,
    )


def percentile(ordered: Sequence[float], fraction: float) -> float:
    """The nearest-rank percentile of sorted values: a value that was actually observed."""
    if not ordered:
        raise ValueError("no values")
    rank = max(1, math.ceil(fraction * len(ordered)))
    return ordered[rank - 1]
