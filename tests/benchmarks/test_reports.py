"""The benchmarks' own arithmetic and verdicts, on made-up results (no measurement).

A benchmark's figures are only as good as the code that summarises them:
these pin the statistics, the ratios and where PASS turns into MISS, so that
a change to a report cannot quietly move a target.
"""

from __future__ import annotations

import math
from typing import Any

import pytest

from bench import BenchEnv, observability, overload, shedding
from bench._stats import Spread, percentile

ENV = BenchEnv(quick=True, repeats=1, warmup=0.5, duration=1.0)


def test_a_spread_is_the_median_with_the_range_of_the_repeats() -> None:
    spread = Spread.of([3.0, 1.0, 2.0])
    assert (spread.median, spread.low, spread.high) == (2.0, 1.0, 3.0)
    assert spread.cell() == "2 (1–3)"
    assert Spread.of([1234.5]).cell(1) == "1,234.5"  # one repeat: no range
    assert Spread.of([]).cell() == "n/a"


def test_a_percentile_is_the_nearest_rank() -> None:
    values = [float(v) for v in range(1, 101)]
    assert percentile(values, 0.99) == 99.0
    assert percentile(values, 0.5) == 50.0
    assert percentile(values, 0.0) == 1.0  # the rank is at least the first
    assert percentile(values, 1.0) == 100.0
    assert math.isnan(percentile([], 0.5))


# ------------------------------------------------------------------ the client's overload


def overload_run(
    goodput: float, *, load_share: float = 0.25, overshoot: float = -0.9
) -> dict[str, Any]:
    return {
        "offered": 30_000.0,
        "goodput": goodput,
        "capacity": 10_000.0,
        "load_cost_us": 8.0,
        "load_share": load_share,
        "overshoot_p99": overshoot,
        "overshoot_max": overshoot,
        "peak_held": 1000,
        "peak_rss_mb": 60.0,
        "lag_p99": 0.02,
        "outcomes": {"ClientOverloaded": 25_000, "ok": int(goodput)},
    }


def overload_section(bounded: dict[str, Any]) -> str:
    unbounded = overload_run(0.0, overshoot=5.0)
    results = {overload.CONFIGURATIONS[0]: [bounded], overload.CONFIGURATIONS[1]: [unbounded]}
    return overload._section(ENV, 2.0, [10_000.0], results)


def test_overload_goodput_is_judged_against_what_the_load_leaves_of_the_capacity() -> None:
    # A quarter of the core goes to the arrivals: 7,500 calls/s are left, half is 3,750.
    assert overload._of_room(overload_run(3_750.0)) == pytest.approx(0.5)
    assert (
        "goodput 50% of what the load leaves of the capacity (>= 50%, does not collapse): PASS"
        in (overload_section(overload_run(3_750.0)))
    )
    assert "(>= 50%, does not collapse): MISS" in overload_section(overload_run(3_700.0))
    assert overload._of_room(overload_run(100.0, load_share=1.0)) == 0.0  # no room: no ratio


def test_overload_overshoot_must_stay_under_its_target() -> None:
    assert "ms (< 50 ms): PASS" in overload_section(overload_run(5_000.0, overshoot=0.049))
    assert "ms (< 50 ms): MISS" in overload_section(overload_run(5_000.0, overshoot=0.051))


def test_the_overload_table_has_a_row_per_configuration() -> None:
    lines = overload_section(overload_run(5_000.0)).splitlines()
    first = next(n for n, line in enumerate(lines) if line.startswith("|---")) + 1
    rows = lines[first : lines.index("", first)]
    assert [row.split(" | ")[0].removeprefix("| ") for row in rows] == list(overload.CONFIGURATIONS)


# ------------------------------------------------------------------ priority shedding


def shedding_run(high: float, normal: float, low: float, goodput: float) -> dict[str, Any]:
    """Out of 1,000 requests of each priority, the share that succeeded."""
    counts = {
        name: {"ok": round(share * 1000), "refused": 1000 - round(share * 1000)}
        for name, share in (("high", high), ("normal", normal), ("low", low))
    }
    return {
        "counts": counts,
        "completed": goodput * shedding.CAPACITY,
        "seconds": 1.0,
        "p99_ms": 300.0,
        "server": {"limit": 100},
    }


def shedding_checks(run: dict[str, Any]) -> str:
    results = {name: [run] for name in shedding.CONFIGURATIONS}
    line = next(
        line for line in shedding._checks(results) if line.startswith("- static limit 100:")
    )
    return line


def test_shedding_passes_when_high_succeeds_low_absorbs_and_goodput_holds() -> None:
    line = shedding_checks(shedding_run(1.0, 0.51, 0.0, 1.0))
    assert line.count("PASS") == 3


@pytest.mark.parametrize(
    ("run", "missed"),
    [
        (shedding_run(0.989, 0.5, 0.0, 1.0), "high ok 98.9% (>= 99%): MISS"),
        (shedding_run(1.0, 0.25, 0.26, 1.0), "low ok 26.0% <= normal ok 25.0%): MISS"),
        (shedding_run(0.99, 0.995, 0.0, 1.0), "normal ok 99.5%): MISS"),  # normal above high
        (shedding_run(1.0, 0.5, 0.0, 0.899), "goodput 89.9% of capacity (>= 90%): MISS"),
    ],
)
def test_shedding_misses_each_target_on_its_own(run: dict[str, Any], missed: str) -> None:
    line = shedding_checks(run)
    assert missed in line
    assert line.count("MISS") == 1


def test_a_mix_where_high_alone_exceeds_the_capacity_has_no_high_verdict() -> None:
    results = {name: [shedding_run(0.5, 0.5, 0.5, 1.0)] for name in shedding.MIXES}
    section = shedding._mix_section(results)
    all_high = next(line for line in section.splitlines() if line.startswith("| all high"))
    assert "n/a: high alone offers 2.0x capacity" in all_high
    all_low = next(line for line in section.splitlines() if line.startswith("| all low"))
    assert "no high traffic" in all_low


# ------------------------------------------------------------------ observability's cost


def observability_results(metrics: float, tracing: float) -> list[dict[str, Any]]:
    """One process's rounds: each configuration's cost a fixed multiple of its base's."""
    costs = {name: 10.0 for name in observability.CONFIGURATIONS}
    costs["metrics"] = 10.0 * metrics
    costs["tracing"] = costs["floor"] * tracing
    return [
        {
            name: {
                "requests": 1000,
                "errors": 0,
                "cpu_us_per_request": cost,
                "rps": 1000.0,
                "round_costs": [cost * 1e-6] * 4,
            }
            for name, cost in costs.items()
        }
    ]


def observability_row(section: str, label: str) -> str:
    return next(line for line in section.splitlines() if line.startswith(f"| {label}"))


@pytest.mark.parametrize(
    ("metrics", "tracing", "verdicts"),
    [(1.10, 1.10, ("PASS", "PASS")), (1.11, 1.0, ("MISS (over by 1%)", "PASS"))],
)
def test_observability_judges_metrics_on_no_observers_and_tracing_on_the_floor(
    metrics: float, tracing: float, verdicts: tuple[str, str]
) -> None:
    section = observability._section(ENV, observability_results(metrics, tracing))
    metrics_row = observability_row(section, observability.LABELS["metrics"])
    tracing_row = observability_row(section, observability.LABELS["tracing"])
    assert f"≤ 1.10 ÷ no observers | {verdicts[0]}" in metrics_row
    assert f"≤ 1.10 ÷ SDK floor | {verdicts[1]}" in tracing_row
