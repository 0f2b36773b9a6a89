"""The tail-latency demo: its scenario's invariants, its backend's draws, its printing, its command.

Latencies here are real and the machine may be busy, so nothing asserts a
speed; the invariants are counts that hold however slow the run is.
"""

from __future__ import annotations

import random

import pytest

from microcall import ConfigurationError
from microcall.cli import main
from microcall.demo.backend import LatencyProfile, latency
from microcall.demo.table import EXPLANATION, render_plain
from microcall.demo.tail import STRATEGIES, Row, Scenario, percentile, run_scenario

SEED = 3
REQUESTS = 300
PROFILE = LatencyProfile()
SLOWEST = max(seconds for _, seconds in PROFILE.slow)
HEDGE_DELAY = 0.01
ATTEMPT_TIMEOUT = 0.02


def slow_first_calls(requests: int) -> list[int]:
    """Calls whose first attempt takes longer than any hedge delay or attempt timeout."""
    return [call for call in range(requests) if latency(PROFILE, SEED, call, 0) > ATTEMPT_TIMEOUT]


async def test_scenario_measures_every_strategy_and_its_load() -> None:
    slow = slow_first_calls(REQUESTS)
    # Preconditions on the seed, so the invariants below are about microcall, not luck:
    # some first attempts are slow, a 500 ms one among them with a fast second try,
    # and no call is slow three times running (retry(3) would run out of attempts).
    assert slow
    assert any(
        latency(PROFILE, SEED, call, 0) == SLOWEST and latency(PROFILE, SEED, call, 1) < HEDGE_DELAY
        for call in slow
    )
    assert not any(
        all(latency(PROFILE, SEED, call, arrival) > ATTEMPT_TIMEOUT for arrival in range(3))
        for call in slow
    )

    rows = await run_scenario(Scenario(requests=REQUESTS, concurrency=8, seed=SEED))

    assert [row.strategy for row in rows] == [label for label, _ in STRATEGIES]
    single, retried, hedged, learned = rows
    for row in rows:
        assert row.calls == REQUESTS
        assert 0 < row.p50 <= row.p99 <= row.p999
    # Only the retry row can fail a call: three 20 ms attempt timeouts in a row
    # happen on a starved machine. The others have the whole 10 s deadline.
    assert single.failed == hedged.failed == learned.failed == 0
    assert single.server_requests == REQUESTS
    assert single.extra_load == 0.0
    # Every slow first attempt outlives the attempt timeout and the hedge delay,
    # so each costs at least one more request; two attempts at most per hedged call.
    assert retried.server_requests >= REQUESTS + len(slow)
    assert retried.server_requests <= 3 * REQUESTS
    assert hedged.server_requests >= REQUESTS + len(slow)
    assert 0 < hedged.extra_load <= 1.0
    # The 500 ms first attempt lost to its hedge, and the backend stopped working on it.
    assert hedged.server_cancelled >= 1
    assert single.server_cancelled == 0
    # Learned hedging draws on a hedge budget of max_extra_load (5%) of the calls.
    assert learned.server_requests <= REQUESTS * 1.05 + 1


def test_latency_draws_depend_only_on_seed_call_and_arrival() -> None:
    first = [latency(PROFILE, SEED, call, arrival) for call in range(50) for arrival in range(3)]
    again = [latency(PROFILE, SEED, call, arrival) for call in range(50) for arrival in range(3)]
    assert first == again
    assert first != [latency(PROFILE, SEED + 1, c, a) for c in range(50) for a in range(3)]


def test_profile_draws_follow_its_tiers() -> None:
    rng = random.Random(0)
    draws = [PROFILE.draw(rng) for _ in range(20_000)]
    share = {seconds: draws.count(seconds) / len(draws) for _, seconds in PROFILE.slow}
    assert share[0.5] == pytest.approx(0.01, abs=0.004)
    assert share[0.05] == pytest.approx(0.02, abs=0.005)
    low, high = PROFILE.fast
    assert all(low <= d <= high for d in draws if d not in share)
    assert PROFILE.describe() == "97% 2-4 ms, 2% 50 ms, 1% 500 ms"
    assert LatencyProfile.from_json(PROFILE.to_json()) == PROFILE


@pytest.mark.parametrize(
    "options",
    [
        {"fast": (0.004, 0.002)},
        {"fast": (-0.001, 0.002)},
        {"slow": ((1.5, 0.5),)},
        {"slow": ((0.6, 0.5), (0.6, 0.05))},
        {"slow": ((0.01, float("inf")),)},
    ],
)
def test_bad_profile_is_refused(options: dict[str, object]) -> None:
    with pytest.raises(ConfigurationError):
        LatencyProfile(**options)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    "options",
    [{"requests": 0}, {"concurrency": 0}, {"seed": 1.5}, {"requests": True}, {"strategies": ()}],
)
def test_bad_scenario_is_refused(options: dict[str, object]) -> None:
    with pytest.raises(ConfigurationError):
        Scenario(**options)  # type: ignore[arg-type]


def test_percentile_is_nearest_rank() -> None:
    values = [float(n) for n in range(1, 1001)]
    assert percentile(values, 0.5) == 500.0
    assert percentile(values, 0.99) == 990.0
    assert percentile(values, 0.999) == 999.0
    assert percentile([7.0], 0.999) == 7.0
    with pytest.raises(ValueError, match="no values"):
        percentile([], 0.5)


def test_plain_table_aligns_columns() -> None:
    rows = [
        Row(
            strategy="single()",
            calls=10,
            p50=0.003,
            p99=0.5,
            p999=0.5012,
            failed=0,
            server_requests=10,
            server_cancelled=0,
        ),
        Row(
            strategy="hedged(0.01, attempts=2)",
            calls=10,
            p50=0.0031,
            p99=0.0121,
            p999=0.0152,
            failed=1,
            server_requests=11,
            server_cancelled=1,
        ),
    ]
    lines = render_plain(rows).splitlines()
    assert lines[0].split()[:3] == ["strategy", "p50", "ms"]
    assert lines[1].split() == ["single()", "3.0", "500.0", "501.2", "0.0%", "0"]
    assert lines[2].split() == ["hedged(0.01,", "attempts=2)", "3.1", "12.1", "15.2", "10.0%", "1"]
    assert len({len(line) for line in lines}) == 1


def test_demo_command_prints_the_table(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["demo", "--requests", "40", "--concurrency", "4", "--seed", str(SEED)]) == 0
    out = capsys.readouterr().out
    for label, _ in STRATEGIES:
        assert label in out
    assert "p99.9 ms" in out
    assert "extra load" in out
    assert out.rstrip().splitlines()[-2:] == list(EXPLANATION)


def test_demo_command_refuses_bad_options(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_info:
        main(["demo", "--requests", "0"])
    assert exit_info.value.code == 2
    assert "--requests" in capsys.readouterr().err
