"""A short soak: thousands of concurrent calls mixing good answers and faults, and nothing grows.

The long version is ``make soak`` (bench/soak.py), which runs the same
scenario with a hundred thousand calls and writes docs/reliability.md.
"""

from __future__ import annotations

import pytest

from tests.faults.scenarios import MARGIN, SOAK_MIX, STRATEGIES, run_soak
from tests.faultserver import fault_server

# Bounds on growth from the end of the warm-up to the end of the run: a leak
# of one descriptor, thread or task per failed call would pass them by far
# (there are hundreds of failed calls), and the allocator's own drift does not
# reach them.
MAX_FD_GROWTH = 5
MAX_THREAD_GROWTH = 2
MAX_TASK_GROWTH = 5
MAX_RSS_GROWTH = 20 * 1024 * 1024

CALLS = 3_000
WARMUP = 600


@pytest.mark.timeout(180)
async def test_a_soak_with_fault_injection_leaks_nothing_and_crosses_no_body() -> None:
    async with fault_server() as faults:
        report = await run_soak(faults, calls=CALLS, warmup=WARMUP)

    assert report.calls == CALLS + WARMUP
    assert report.wrong == []
    assert report.crossed == 0
    # The mix happened: every kind of call and every strategy, many faults.
    assert set(report.by_kind) == {ingredient.kind for ingredient in SOAK_MIX}
    assert set(report.by_strategy) == set(STRATEGIES)
    failed = sum(count for outcome, count in report.outcomes.items() if outcome != "200")
    assert failed > CALLS // 10
    # Calls that ran out of time ended near their deadline, not long after.
    assert report.overshoots
    assert max(report.overshoots) <= MARGIN

    growth = report.growth()
    assert growth["fds"] <= MAX_FD_GROWTH, growth
    assert growth["threads"] <= MAX_THREAD_GROWTH, growth
    assert growth["tasks"] <= MAX_TASK_GROWTH, growth
    assert growth["rss"] <= MAX_RSS_GROWTH, growth
    # Closing the client gives everything back.
    assert report.before is not None
    assert report.closed is not None
    assert report.closed.fds <= report.before.fds
    assert report.closed.tasks <= report.before.tasks
