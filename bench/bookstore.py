"""The bookstore with one slow Recommendations replica: microcall's policies against a plain client.

The whole bookstore runs as processes on 127.0.0.1 (docs/bookstore.md), with
two Marketplaces in front of the same services: one with microcall's
policies (hedged, balanced gRPC; a cached Catalog client), one plain (one
attempt, round robin, no cache). Replica 1 answers 300 ms late. Both
Marketplaces are offered the same fixed rate of pages at the same time, so
the machine's load falls on both alike; the section reports pages served
per second and the page p50/p99 of each, over ``env.repeats`` windows.

Run alone: ``python -m bench --only bookstore``.
"""

from __future__ import annotations

import asyncio
import sys
import tempfile

from bench import BenchEnv
from bench._stats import Spread
from microcall.demo.bookstore import scenario
from microcall.demo.bookstore.stack import start_stack
from microcall.testing.services import ServiceGraph, inject

# Pages offered per second to each Marketplace: well under what one can
# serve, so the figures show latency under a fault, not saturation.
RATE = 25.0
MODES = ("microcall", "plain")


def run(env: BenchEnv) -> str:
    """Measure ``env.repeats`` windows of ``env.duration`` s; return the markdown section."""
    served: dict[str, list[float]] = {mode: [] for mode in MODES}
    p50: dict[str, list[float]] = {mode: [] for mode in MODES}
    p99: dict[str, list[float]] = {mode: [] for mode in MODES}
    errors: dict[str, list[float]] = {mode: [] for mode in MODES}
    with ServiceGraph(tempfile.mkdtemp(prefix="bench-bookstore-")) as graph:
        stack = start_stack(graph, replicas=2, plain=True)
        assert stack.plain is not None
        targets = {"microcall": stack.marketplace, "plain": stack.plain}
        asyncio.run(scenario.drive(targets, "warm-up", max(env.warmup, 1.0), RATE))
        inject(stack.admin("recommendations-1"), latency=scenario.SLOW_REPLICA_LATENCY)
        for repeat in range(env.repeats):
            results = asyncio.run(scenario.drive(targets, "slow", env.duration, RATE))
            for result in results:
                good = len(result.samples) - result.errors
                served[result.mode].append(good / env.duration)
                p50[result.mode].append(result.percentile(0.5) * 1000)
                p99[result.mode].append(result.percentile(0.99) * 1000)
                errors[result.mode].append(result.errors)
                print(
                    f"  [{repeat + 1}/{env.repeats}] {scenario.format_row(result.row())}",
                    file=sys.stderr,
                    flush=True,
                )
    lines = [
        "## The bookstore with a slow replica",
        "",
        "The whole bookstore as processes on 127.0.0.1 (docs/bookstore.md): the Catalog "
        "(gunicorn, 2 workers), two Recommendations replicas, and two Marketplaces, one with "
        "microcall's policies and one with a plain client (one attempt, round robin, no "
        f"cache). Replica 1 answers {scenario.SLOW_REPLICA_LATENCY * 1000:.0f} ms late. Each "
        f"Marketplace is offered {RATE:g} pages/s at the same time, {env.repeats} windows of "
        f"{env.duration:g} s. Services and load driver share the machine's cores (no pinning: "
        "five processes). Each cell: median (min–max).",
        "",
        "| client | pages served /s | page p50 ms | page p99 ms | failed pages |",
        "|---|---:|---:|---:|---:|",
    ]
    for mode in MODES:
        lines.append(
            f"| {mode} | {Spread.of(served[mode]).cell(1)} | {Spread.of(p50[mode]).cell(1)} "
            f"| {Spread.of(p99[mode]).cell(1)} | {Spread.of(errors[mode]).cell(0)} |"
        )
    ratio = max(p99["microcall"]) / min(p99["plain"]) if min(p99["plain"]) > 0 else 0.0
    lines += [
        "",
        f"Worst microcall p99 over best plain p99: {ratio:.2f}. The plain client sends every "
        "second page to the slow replica, so its p99 carries the whole added latency; "
        "microcall's hedges after 50 ms to the other replica and its balancer learns to "
        "avoid the slow one.",
    ]
    return "\n".join(lines)
