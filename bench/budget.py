"""Retry budget: attempts per logical call against a backend that fails every request.

The backend (bench/_tail_backend.py, server core) answers every request with
503 after 1-2 ms. Each row is a fresh client process (bench/_load.py, client
core) calling it with ``retry(3)`` on an open loop of a fixed rate; the
server counts the attempts it received for the measured calls.

Without a budget every call sends its three attempts. The default budget
(Finagle's and Linkerd's: 20% of the calls plus 10 retries a second over a
10 s window) allows ``0.2 + 10 / rate`` retries per call; with no per-second
reserve, 0.2 whatever the rate.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass
from typing import Any

from bench import BenchEnv
from bench._proc import run_json
from bench._stats import Spread
from bench._tail_backend import Backend
from microcall.demo.backend import LatencyProfile
from microcall.policy.budget import RetryBudgetConfig

# Without a budget every call sends three attempts; at this rate that is
# 600 requests a second, well within one client core, so the client's own
# retry storm does not starve it (at 800 calls/s it did, on a small machine).
RATE = 200.0
FAILING = LatencyProfile(fast=(0.001, 0.002), slow=())
STATUS = 503
DEFAULTS = RetryBudgetConfig()


@dataclass(frozen=True, slots=True)
class Row:
    label: str
    budget: str
    config: RetryBudgetConfig | None

    def bound(self, calls: int) -> float:
        """Attempts per call the budget allows over ``calls`` calls at RATE."""
        config = self.config
        if config is None:
            return 3.0
        # Within one window the reserve is min_retries_per_second x ttl retries
        # whatever the time elapsed; past a window it renews once per window.
        in_window = min(calls, RATE * config.ttl)
        return 1 + config.percent_can_retry + config.reserve / in_window


ROWS = (
    Row("`retry(3)`, `budget=None`", "none", None),
    Row("`retry(3)`, default budget (20% + 10/s over 10 s)", "default", DEFAULTS),
    Row(
        "`retry(3)`, `RetryBudgetConfig(min_retries_per_second=0)`",
        "strict",
        RetryBudgetConfig(min_retries_per_second=0),
    ),
)


def run(env: BenchEnv) -> str:
    """Measure every row ``env.repeats`` times; return the markdown section."""
    # No warm-up: the budget starts full, as a client's does, and every call counts.
    requests = round(RATE * (env.warmup + env.duration))
    results: dict[Row, list[dict[str, Any]]] = {row: [] for row in ROWS}
    run_ids = iter(range(1, 1_000_000, 2))
    with Backend(env, FAILING, status=STATUS) as backend:
        for repeat in range(env.repeats):
            for row in ROWS:
                run_id = next(run_ids)
                arguments = [
                    "--url", backend.url,
                    "--strategy", "retry3",
                    "--budget", row.budget,
                    "--mode", "open",
                    "--rate", str(RATE),
                    "--warmup", "0",
                    "--requests", str(requests),
                    "--warmup-run", str(run_id),
                    "--run", str(run_id + 1),
                ]  # fmt: skip
                budget = requests / RATE * 4 + 10
                result = run_json(env, "bench._load", arguments, budget=budget)
                received = backend.counts(run_id + 1).received
                result["per_call"] = received / result["calls"]
                # A call that never reached the server (its deadline passed while
                # the client stood without a CPU) would pull the figure down.
                result["unsent"] = result["failure_kinds"].get("DeadlineExceeded", 0)
                results[row].append(result)
                print(
                    f"  [{repeat + 1}/{env.repeats}] {row.budget:<8} "
                    f"{result['per_call']:.3f} attempts per call "
                    f"({received} for {result['calls']} calls; failures {result['failure_kinds']}; "
                    f"waited for CPU {result['cpu_wait_share']})",
                    file=sys.stderr,
                    flush=True,
                )
    return _section(env, results, requests)


def _section(env: BenchEnv, results: dict[Row, list[dict[str, Any]]], requests: int) -> str:
    repeats = (
        "one repeat (quick mode: a smoke check)" if env.repeats == 1 else f"{env.repeats} repeats"
    )
    lines = [
        "## Retry budget: a backend that fails every request",
        "",
        f"Every request is answered `{STATUS}` after 1-2 ms. Each row is a fresh client process "
        f"calling it with `retry(3)` (default backoff) on an open loop of {RATE:,.0f} calls/s: "
        f"{requests:,} calls from a fresh client (its budget starts full), {repeats}. Attempts "
        "are counted by the server. The bound is what the budget allows over these calls: 20% "
        "of them, plus the reserve (10/s x 10 s = 100 retries per window) spread over the calls "
        "of one window. Each cell: median (min–max).",
        "",
        "| client | attempts per call | bound at this rate | p50 ms until the call fails "
        "| client waited for CPU % |",
        "|---|---:|---:|---:|---:|",
    ]
    for row in ROWS:
        runs = results[row]
        per_call = Spread.of([run["per_call"] for run in runs]).cell(3)
        latency = Spread.of([run["p50_all_ms"] for run in runs if run["p50_all_ms"] is not None])
        waited = Spread.of(
            [run["cpu_wait_share"] * 100 for run in runs if run["cpu_wait_share"] is not None]
        )
        lines.append(
            f"| {row.label} | {per_call} | ≤ {row.bound(requests):.3f} | {latency.cell(1)} "
            f"| {waited.cell(0)} |"
        )
    lines += [""]
    for row in ROWS[1:]:
        worst = max(run["per_call"] for run in results[row])
        lines.append(
            f"- {row.label}: worst repeat {worst:.3f} attempts per call against a bound of "
            f"{row.bound(requests):.3f}: {'PASS' if worst <= row.bound(requests) + 1e-9 else 'MISS'}."
        )
    unsent = sum(run["unsent"] for runs in results.values() for run in runs)
    if unsent:
        lines.append(
            f"- {unsent} calls missed their 5 s deadline before an attempt reached the server "
            "(the client stood without a CPU): they lower the figures of their repeat."
        )
    lines += [
        "",
        "Every call fails (the backend never succeeds); with a budget the refused retries "
        "end the call at once with its last 503, so a retry storm cannot triple an outage's "
        "load. The default budget's per-second reserve lets a client with little traffic "
        "still retry; in a steady stream of calls at this rate it adds "
        f"{DEFAULTS.min_retries_per_second / RATE:.3f} attempts per call (1.2 + 10 / rate).",
        "",
    ]
    return "\n".join(lines)


if __name__ == "__main__":
    from bench._standalone import main

    sys.exit(main(run, "budget"))
