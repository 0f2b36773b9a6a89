"""The client's own overload: offered three times what it can issue. ``python -m bench.overload``.

nginx on loopback answers a small 200 far faster than one Python process can
ask, so the client's own CPU is the bottleneck, as in the issue's report
(offered 3,000 calls/s, a client that could issue ~2,400/s held 12,000-15,000
calls, its loop lagged by seconds and 1 s deadlines failed after 4-12 s).

First the client's capacity is measured: a closed loop of ``WORKERS`` callers
that each call again as soon as an answer arrives, on one ``AsyncClient``.
Then a fresh process offers ``OVERLOAD`` times that capacity in an open loop
at a fixed rate (arrivals are due at exact intervals and do not wait for
answers), each call a single attempt with a ``DEADLINE`` deadline, once with
the default ``max_calls`` and once with no bound to speak of (``max_calls`` a
billion: the client as it was, except that it now reads the clock when a
call starts). Reported, over the calls made in the measured window:

- overshoot: p99 (and max) of (time of the outcome - the call's deadline)
  for the calls that failed; target: under ``OVERSHOOT_TARGET``;
- goodput: successful calls per second, against the measured capacity and
  against what the load leaves of it: the capacity times the share of the
  core the arrivals themselves (a task each, the tally; measured first, in
  the same process, around a call that fails at once) leave to the client;
  target: at least ``GOODPUT_TARGET`` of the latter;
- peak calls held and peak RSS of the client process (bounded);
- loop lag: p99 of how late a 10 ms ticker ran.

``run(env)`` returns the markdown section for ``make bench``; the
``capacity`` and ``load`` subcommands are the client processes it starts.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import math
import resource
import sys
import time
from collections import Counter
from collections.abc import Awaitable, Callable
from functools import partial
from typing import Any

import microcall
from bench import BenchEnv
from bench._nginx import serve_ok
from bench._proc import run_json
from bench._stats import Spread, percentile

WORKERS = 100  # callers of the closed loop: the default pool's size
OVERLOAD = 3.0
DEADLINE = 1.0
UNBOUNDED = 1_000_000_000
# The overload must last a few deadlines before measuring: an unbounded
# client's backlog grows for as long as the overload lasts.
MIN_WARMUP = 2 * DEADLINE
TICK = 0.01  # the loop-lag ticker's period
OVERSHOOT_TARGET = 0.050
# Of the goodput the load leaves room for: the capacity, scaled by the share
# of the core the arrivals themselves do not take (a task each, the tally;
# measured in the same process, ``_load_cost``). At three times the
# capacity that share is a third or more of the core on any client, CPU the
# closed-loop capacity run never pays; what is left is the client's, and a
# client that does not collapse turns at least half of it into successes,
# its refusals costing the rest. Without the bound goodput fell to 0.
GOODPUT_TARGET = 0.5
LOAD_COST_SECONDS = 0.4
LOAD_COST_PROBES = 3


def _configurations() -> dict[str, int | None]:
    """max_calls by name (None: the client's default)."""
    return {"default max_calls": None, "unbounded (before)": UNBOUNDED}


CONFIGURATIONS = tuple(_configurations())


# ------------------------------------------------------------------ client processes


async def _capacity(url: str, warmup: float, duration: float) -> dict[str, Any]:
    done = 0
    loop = asyncio.get_running_loop()
    opens = loop.time() + warmup
    closes = opens + duration

    async def caller(client: microcall.AsyncClient) -> None:
        nonlocal done
        while (now := loop.time()) < closes:
            await client.get("/")
            if now >= opens:
                done += 1

    async with microcall.AsyncClient(url, timeout=DEADLINE) as client:
        await asyncio.gather(*(caller(client) for _ in range(WORKERS)))
    return {"calls_per_second": done / duration}


class _Tally:
    """Outcomes of the calls made in the measured window, and the successes that ended in it."""

    def __init__(self, opens: float, closes: float) -> None:
        self.opens, self.closes = opens, closes
        self.outcomes: Counter[str] = Counter()
        self.overshoot: list[float] = []  # failed calls: outcome time - deadline
        self.completed = 0

    def record(self, made: float, finished: float, outcome: str) -> None:
        if self.opens <= made < self.closes:
            self.outcomes[outcome] += 1
            if outcome != "ok":
                self.overshoot.append(finished - (made + DEADLINE))
        if outcome == "ok" and self.opens <= finished < self.closes:
            self.completed += 1


async def _offer(
    rate: float,
    closes: float,
    call: Callable[[], Awaitable[object]],
    tally: _Tally,
    held: Callable[[], int] = lambda: 0,
) -> tuple[int, int]:
    """Start ``call()`` ``rate`` times a second until ``closes``, then wait for all: (sent, peak held).

    Open loop at fixed intervals: every arrival due by now goes out now, so a
    late wake-up does not lower the offered rate.
    """
    loop = asyncio.get_running_loop()
    start = loop.time()

    async def one(made: float) -> None:
        try:
            await call()
        except microcall.CallError as error:
            outcome = type(error).__name__
        else:
            outcome = "ok"
        tally.record(made, loop.time(), outcome)

    running: set[asyncio.Task[None]] = set()
    sent = peak_held = 0
    while (now := loop.time()) < closes:
        due = int((now - start) * rate)
        while sent < due:
            task = loop.create_task(one(now))
            running.add(task)
            task.add_done_callback(running.discard)
            sent += 1
        peak_held = max(peak_held, held())
        await asyncio.sleep(0.001)
    if running:
        await asyncio.wait(running)
    return sent, peak_held


async def _refuse() -> None:
    raise microcall.ClientOverloaded("refused by the load's own cost probe")


async def _load_cost(rate: float) -> float:
    """CPU seconds the open loop itself costs an arrival, whatever the client does.

    The same tasks and tallying, offered at the same rate, around a call
    that fails at once without a client: what any client behind this load
    generator pays before its own work. The least of ``LOAD_COST_PROBES``
    short probes: a neighbour's work on the machine only ever adds, and the
    least cost leaves the client the most room, the stricter reading.
    """
    loop = asyncio.get_running_loop()
    costs = []
    for _ in range(LOAD_COST_PROBES):
        tally = _Tally(0.0, math.inf)  # every outcome tallied, as in the measured window
        began = time.process_time()
        sent, _ = await _offer(rate, loop.time() + LOAD_COST_SECONDS, _refuse, tally)
        costs.append((time.process_time() - began) / max(sent, 1))
    return min(costs)


async def _load(
    url: str, rate: float, max_calls: int | None, warmup: float, duration: float
) -> dict[str, Any]:
    load_cost = await _load_cost(rate)
    loop = asyncio.get_running_loop()
    start = loop.time()
    opens, closes = start + warmup, start + warmup + duration
    tally = _Tally(opens, closes)
    lags: list[float] = []

    async def ticker() -> None:
        expected = loop.time() + TICK
        while loop.time() < closes:
            await asyncio.sleep(TICK)
            now = loop.time()
            if now >= opens:
                lags.append(now - expected)
            expected = now + TICK

    options: dict[str, Any] = {} if max_calls is None else {"max_calls": max_calls}
    async with microcall.AsyncClient(url, timeout=DEADLINE, **options) as client:
        watch = loop.create_task(ticker())
        _, peak_held = await _offer(
            rate, closes, partial(client.get, "/"), tally, lambda: client.held
        )
        await watch
    overshoot = sorted(tally.overshoot)
    lags.sort()
    offered = sum(tally.outcomes.values()) / duration
    return {
        "seconds": duration,
        "offered": offered,
        "outcomes": dict(tally.outcomes),
        "goodput": tally.completed / duration,
        "load_cost_us": load_cost * 1e6,
        # Of one core: what the arrivals themselves take, before any client's work.
        "load_share": offered * load_cost,
        "overshoot_p99": percentile(overshoot, 0.99) if overshoot else None,
        "overshoot_max": overshoot[-1] if overshoot else None,
        "peak_held": peak_held,
        # ru_maxrss is in KiB on Linux.
        "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
        "lag_p99": percentile(lags, 0.99) if lags else None,
    }


# ------------------------------------------------------------------ orchestration and report


def run(env: BenchEnv) -> str:
    """Measure the capacity, then each configuration at three times it; the markdown section."""
    warmup = max(env.warmup, MIN_WARMUP)
    capacities: list[float] = []
    results: dict[str, list[dict[str, Any]]] = {name: [] for name in CONFIGURATIONS}
    with serve_ok(env) as url:
        for repeat in range(env.repeats):
            args = ["capacity", url, "--warmup", f"{env.warmup}", "--duration", f"{env.duration}"]
            measured = run_json(env, "bench.overload", args, budget=env.warmup + env.duration)
            capacity = float(measured["calls_per_second"])
            capacities.append(capacity)
            rate = OVERLOAD * capacity
            for name, max_calls in _configurations().items():
                args = ["load", url, "--rate", f"{rate:.0f}", "--warmup", f"{warmup}"]
                args += ["--duration", f"{env.duration}"]
                if max_calls is not None:
                    args += ["--max-calls", f"{max_calls}"]
                # An unbounded backlog takes a while to drain after the window.
                budget = warmup + env.duration + 60
                result = run_json(env, "bench.overload", args, budget=budget)
                result["capacity"] = capacity
                results[name].append(result)
                print(
                    f"[overload] {repeat + 1}/{env.repeats} {name}: capacity {capacity:.0f}/s, "
                    f"{_brief(result)}",
                    file=sys.stderr,
                )
    return _section(env, warmup, capacities, results)


def _ms(value: float | None) -> str:
    return "–" if value is None else f"{value * 1000:,.0f} ms"


def _brief(result: dict[str, Any]) -> str:
    return (
        f"offered {result['offered']:.0f}/s, goodput {result['goodput']:.0f}/s, "
        f"overshoot p99 {_ms(result['overshoot_p99'])}, held {result['peak_held']}, "
        f"rss {result['peak_rss_mb']:.0f} MB, lag p99 {_ms(result['lag_p99'])}, "
        f"{result['outcomes']}"
    )


def _median_ms(runs: list[dict[str, Any]], key: str) -> str:
    values = [r[key] for r in runs if r[key] is not None]
    return _ms(Spread.of(values).median) if values else "–"


def _section(
    env: BenchEnv,
    warmup: float,
    capacities: list[float],
    results: dict[str, list[dict[str, Any]]],
) -> str:
    capacity = Spread.of(capacities)
    lines = [
        "## The client's own overload: three times what it can issue",
        "",
        f"nginx on loopback answers faster than one client process can ask. The client's "
        f"capacity, measured first ({WORKERS} callers in a closed loop on one AsyncClient): "
        f"{capacity.cell(0)} calls/s. A fresh client process then offers {OVERLOAD:g}x that "
        f"in an open loop at a fixed rate, each call a single attempt with a {DEADLINE:g} s "
        f"deadline; {warmup:g} s of overload before measuring, {env.duration:g} s measured, "
        f"{env.repeats} repeat(s): median (min–max). Overshoot: time of the outcome minus "
        "the deadline, over the calls that failed (refused ones fail at once, far before it). "
        "Goodput: successes per second, against the capacity, and against what the load "
        "leaves of it. The arrivals themselves cost the client process CPU whatever the "
        "client does (a task each, and the tally): that cost is measured first in the same "
        f"process, the least of {LOAD_COST_PROBES} probes of {LOAD_COST_SECONDS:g} s of the "
        "same arrivals around a call that fails at once, and what the load leaves is the "
        "capacity times the share of the core those arrivals do not take: the goodput of a "
        "client whose refusals cost nothing. "
        "Unbounded: `max_calls` of a billion, the client as it was before the bound (it does "
        "read the clock when a call starts, so it fares better than the issue's report of "
        "4-12 s).",
        "",
        "| max_calls | offered calls/s | load's own CPU µs/arrival (share of the core) "
        "| goodput calls/s | of capacity | of what the load leaves | failed p99 overshoot | "
        "failed max overshoot | peak held | peak RSS | loop lag p99 | outcomes (last run) |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|",
    ]
    for name in CONFIGURATIONS:
        runs = results[name]
        row = [
            name,
            Spread.of([r["offered"] for r in runs]).cell(0),
            f"{Spread.of([r['load_cost_us'] for r in runs]).cell(1)} "
            f"({Spread.of([r['load_share'] for r in runs]).median:.0%})",
            Spread.of([r["goodput"] for r in runs]).cell(0),
            f"{Spread.of([r['goodput'] / r['capacity'] for r in runs]).median:.0%}",
            f"{Spread.of([_of_room(r) for r in runs]).median:.0%}",
            _median_ms(runs, "overshoot_p99"),
            _median_ms(runs, "overshoot_max"),
            Spread.of([float(r["peak_held"]) for r in runs]).cell(0),
            Spread.of([r["peak_rss_mb"] for r in runs]).cell(0) + " MB",
            _median_ms(runs, "lag_p99"),
            ", ".join(f"{k} {v:,}" for k, v in sorted(runs[-1]["outcomes"].items())),
        ]
        lines.append("| " + " | ".join(row) + " |")
    bounded = results[CONFIGURATIONS[0]]
    overshoot = Spread.of([r["overshoot_p99"] or 0.0 for r in bounded]).median
    goodput = Spread.of([_of_room(r) for r in bounded]).median
    lines += [
        "",
        "Targets, on the median of the repeats, with the default bound:",
        "",
        f"- p99 overshoot of failed calls {overshoot * 1000:.0f} ms (< "
        f"{OVERSHOOT_TARGET * 1000:.0f} ms): {_verdict(overshoot < OVERSHOOT_TARGET)}",
        f"- goodput {goodput:.0%} of what the load leaves of the capacity (>= "
        f"{GOODPUT_TARGET:.0%}, does not collapse): {_verdict(goodput >= GOODPUT_TARGET)}",
        "",
    ]
    return "\n".join(lines)


def _of_room(result: dict[str, Any]) -> float:
    """Goodput over what the load leaves: the capacity on the share of the core arrivals do not take."""
    room = result["capacity"] * (1.0 - result["load_share"])
    return result["goodput"] / room if room > 0 else 0.0


def _verdict(passed: bool) -> str:
    return "PASS" if passed else "MISS"


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.overload", description=__doc__)
    parser.add_argument("--quick", action="store_true", help="short runs, one repeat")
    commands = parser.add_subparsers(dest="command")
    capacity = commands.add_parser("capacity", help="(internal) measure calls/s, print JSON")
    capacity.add_argument("url")
    capacity.add_argument("--warmup", type=float, required=True)
    capacity.add_argument("--duration", type=float, required=True)
    load = commands.add_parser("load", help="(internal) offer the load and print JSON")
    load.add_argument("url")
    load.add_argument("--rate", type=float, required=True)
    load.add_argument("--max-calls", type=int)
    load.add_argument("--warmup", type=float, required=True)
    load.add_argument("--duration", type=float, required=True)
    args = parser.parse_args(argv)
    if args.command == "capacity":
        print(json.dumps(_run_loop(_capacity(args.url, args.warmup, args.duration))))
    elif args.command == "load":
        coro = _load(args.url, args.rate, args.max_calls, args.warmup, args.duration)
        print(json.dumps(_run_loop(coro)))
    else:
        print(run(BenchEnv.create(quick=args.quick)))


def _run_loop(coro: Any) -> Any:
    try:
        import uvloop
    except ImportError:  # pragma: no cover
        return asyncio.run(coro)
    began = time.monotonic()
    try:
        return uvloop.run(coro)
    finally:
        print(f"[overload] process ran {time.monotonic() - began:.1f} s", file=sys.stderr)


if __name__ == "__main__":
    main()
