"""Priority load shedding at twice a server's capacity: ``python -m bench.shedding [--quick]``.

The server (aiohttp, in its own process, on the server core) has a known
capacity: its handler holds one of ``WORKERS`` slots for ``SERVICE`` seconds,
so it completes at most ``WORKERS / SERVICE`` requests per second however
many it accepts. A client process (on the client core) offers twice that, in
an open loop (Poisson arrivals that do not wait for answers, as independent
users do), one third each at high, normal and low priority. Each request is
a single attempt with a deadline of ``CLIENT_TIMEOUT``; no retries, so the
offered load stays exactly what it says.

The same server runs without microcall's middleware, then with it and each
kind of concurrency limit. A request succeeds when its 200 arrives within
its deadline; goodput is successful requests per second. Without the
middleware the server accepts everything, its queue grows without bound,
and it spends its capacity on requests whose callers have already given up
(aiohttp's default, as most servers': a handler is not cancelled when its
client disconnects).

``run(env)`` returns the markdown section for ``make bench``; the ``serve``
and ``load`` subcommands are the two processes it starts.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import random
import signal
import statistics
import subprocess
import sys
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from functools import partial
from typing import Any

from bench import BenchEnv
from bench._proc import ROOT, MeasurementFailed, run_json
from bench._stats import Spread, percentile

# Long service, many workers: a known capacity at a modest request rate, so
# the server process's own CPU (parsing, the event loop) is never the limit,
# even on a machine other work keeps busy. 200 requests/s.
WORKERS = 40
SERVICE = 0.2  # seconds a request holds a worker
CAPACITY = WORKERS / SERVICE  # requests per second
OFFERED = 2 * CAPACITY
CLIENT_TIMEOUT = 1.0
# The overload must have lasted a couple of deadlines before measuring, or a
# bare server's queue has not yet grown past them and an adaptive limit has
# not settled; so even a quick run warms up this long.
MIN_WARMUP = 2 * CLIENT_TIMEOUT
PRIORITIES = ("high", "normal", "low")

# Targets from the issue: what shedding must achieve at twice the capacity.
HIGH_SUCCESS_TARGET = 0.99
GOODPUT_TARGET = 0.90


def _configurations() -> dict[str, Any]:
    """Server set-ups by name: None is the bare server; the others are ServerOptions."""
    from microcall.server import (
        AIMDLimit,
        GradientLimit,
        ServerOptions,
        Shedding,
        StaticLimit,
        trust_all,
    )

    def protected(limit: Any) -> ServerOptions:
        # The load generator is trusted to send high priority, as an internal
        # caller would be.
        return ServerOptions(trust=trust_all, shedding=Shedding(limit=limit))

    return {
        "no middleware": None,
        # Normal may fill 80% of the limit: 50 lets it keep all 40 workers
        # busy, and leaves high ten slots no one else can take.
        "static limit 50": protected(StaticLimit(limit=50)),
        # Sized for high's demand at 2x (docs/server.md, the sizing rule): at
        # saturation high holds its share of the throughput times the whole
        # in-flight count, up to 2/3 of it in the 1/3-each mix; 100 keeps that
        # three standard deviations of its bursts under the limit.
        "static limit 100": protected(StaticLimit(limit=100)),
        "gradient (adaptive)": protected(GradientLimit()),
        "AIMD, 400 ms target": protected(AIMDLimit(latency_target=2 * SERVICE)),
    }


CONFIGURATIONS = tuple(_configurations())  # names, in the order they run and are reported

# Mixes of priorities (fractions of high, normal, low) offered at twice the
# capacity to MIX_CONFIGURATION: the targets must hold for each of them.
MIXES: dict[str, tuple[float, float, float]] = {
    "all low": (0.0, 0.0, 1.0),
    "all high": (1.0, 0.0, 0.0),
    "30% high / 70% low": (0.3, 0.0, 0.7),
    "1/3 each": (1 / 3, 1 / 3, 1 / 3),
}
EVEN = MIXES["1/3 each"]
MIX_CONFIGURATION = "static limit 100"


# ------------------------------------------------------------------ the server process


async def _serve(name: str) -> None:
    from aiohttp import web

    from microcall.server.aiohttp import AiohttpMiddleware

    options = _configurations()[name]
    protect = None if options is None else AiohttpMiddleware(options)
    workers = asyncio.Semaphore(WORKERS)

    async def work(request: web.Request) -> web.Response:
        async with workers:
            await asyncio.sleep(SERVICE)
        return web.Response(text="ok")

    app = web.Application(middlewares=[] if protect is None else [protect])
    app.router.add_get("/work", work)
    # Without the middleware thousands of handlers are still queued when the
    # run ends; nobody waits for them, so do not wait for them either.
    runner = web.AppRunner(app, access_log=None, shutdown_timeout=1.0)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0, backlog=4096)
    await site.start()
    port = runner.addresses[0][1]
    print(f"PORT {port}", flush=True)
    stop = asyncio.Event()
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, stop.set)
    await stop.wait()
    await runner.cleanup()
    counts: dict[str, Any] = {}
    if protect is not None:
        counts = dict(protect.stats.snapshot())
        counts["limit"] = None if protect.limiter is None else protect.limiter.limit
    print(json.dumps(counts), flush=True)


class _Server:
    """A server process: its URL while it runs, its counters once it has stopped."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.counts: dict[str, Any] = {}


@contextmanager
def _server(env: BenchEnv, name: str) -> Iterator[_Server]:
    command = [env.python, "-m", "bench.shedding", "serve", name]
    process = subprocess.Popen(command, stdout=subprocess.PIPE, text=True, cwd=ROOT)
    env.pin_server(process.pid)
    assert process.stdout is not None
    line = process.stdout.readline()
    if not line.startswith("PORT "):
        process.kill()
        process.wait()
        raise MeasurementFailed(f"the {name!r} server did not start: {line!r}")
    server = _Server(f"http://127.0.0.1:{int(line.split()[1])}")
    try:
        yield server
    finally:
        process.terminate()
        try:
            rest, _ = process.communicate(timeout=30)
        except subprocess.TimeoutExpired:
            process.kill()
            rest, _ = process.communicate()
        lines = [line for line in rest.splitlines() if line.startswith("{")]
        server.counts = json.loads(lines[-1]) if lines else {}


# ------------------------------------------------------------------ the client process


async def _load(
    url: str, warmup: float, duration: float, seed: int, mix: tuple[float, float, float] = EVEN
) -> dict[str, Any]:
    import microcall

    limits = microcall.Limits(max_connections=8192)
    # Success rates count the requests sent in the window; goodput counts the
    # successes that arrived in it, so neither leaks past the window's edges.
    counts = {priority: Counter[str]() for priority in PRIORITIES}
    completed = 0
    latencies: list[float] = []
    loop = asyncio.get_running_loop()
    start = loop.time()
    opens, closes = start + warmup, start + warmup + duration

    async def one(client: microcall.AsyncClient, priority: str, sent_at: float) -> None:
        nonlocal completed
        try:
            response = await client.get("/work", priority=priority)
        except microcall.DeadlineExceeded:
            outcome = "timed out"
        except microcall.CallError as error:
            outcome = type(error).__name__
        else:
            status = response.status_code
            outcome = "ok" if status == 200 else "shed" if status == 503 else f"{status}"
        finished = loop.time()
        if outcome == "ok" and opens <= finished < closes:
            completed += 1
        if sent_at >= opens:
            counts[priority][outcome] += 1
            if outcome == "ok":
                latencies.append(finished - sent_at)

    rng = random.Random(seed)
    choose = random.Random(seed + 1)  # apart, so every mix sees the same arrival times
    # The even mix takes turns, as it always has; the others draw by weight.
    even = _mix_arg(mix) == _mix_arg(EVEN)
    running: set[asyncio.Task[None]] = set()
    async with microcall.AsyncClient(url, timeout=CLIENT_TIMEOUT, limits=limits) as client:
        arrival, sent = start, 0
        while arrival < closes:
            now = loop.time()
            if arrival > now:
                await asyncio.sleep(arrival - now)
            # Fire every arrival that is due: a late wake-up must not lower the rate.
            while arrival <= loop.time() and arrival < closes:
                if even:
                    priority = PRIORITIES[sent % len(PRIORITIES)]
                else:
                    priority = choose.choices(PRIORITIES, weights=mix)[0]
                task = loop.create_task(one(client, priority, loop.time()))
                running.add(task)
                task.add_done_callback(running.discard)
                sent += 1
                arrival += rng.expovariate(OFFERED)
        if running:
            await asyncio.wait(running)
    latencies.sort()
    return {
        "seconds": duration,
        "counts": {priority: dict(counter) for priority, counter in counts.items()},
        "completed": completed,
        "p50_ms": percentile(latencies, 0.5) * 1e3 if latencies else None,
        "p99_ms": percentile(latencies, 0.99) * 1e3 if latencies else None,
    }


# ------------------------------------------------------------------ orchestration and report


def run(env: BenchEnv) -> str:
    """Measure each server set-up ``env.repeats`` times; return the markdown section."""
    results: dict[str, list[dict[str, Any]]] = {name: [] for name in CONFIGURATIONS}
    warmup = max(env.warmup, MIN_WARMUP)
    budget = warmup + env.duration + CLIENT_TIMEOUT + 10
    for repeat in range(env.repeats):
        for name in CONFIGURATIONS:
            with _server(env, name) as server:
                args = ["load", server.url, "--warmup", f"{warmup}"]
                args += ["--duration", f"{env.duration}", "--seed", f"{repeat}"]
                result = run_json(env, "bench.shedding", args, budget=budget)
            result["server"] = server.counts
            results[name].append(result)
            counts = server.counts
            served = f"server admitted {counts.get('admitted', '?')}, limit {counts.get('limit')}"
            print(
                f"[shedding] {repeat + 1}/{env.repeats} {name}: {_brief(result)}; {served}",
                file=sys.stderr,
            )
    mixed: dict[str, list[dict[str, Any]]] = {name: [] for name in MIXES}
    for repeat in range(env.repeats):
        for name, mix in MIXES.items():
            with _server(env, MIX_CONFIGURATION) as server:
                args = ["load", server.url, "--warmup", f"{warmup}", "--duration"]
                args += [f"{env.duration}", "--seed", f"{repeat}", "--mix", _mix_arg(mix)]
                result = run_json(env, "bench.shedding", args, budget=budget)
            result["server"] = server.counts
            mixed[name].append(result)
            print(
                f"[shedding] {repeat + 1}/{env.repeats} {name}: {_brief(result)}", file=sys.stderr
            )
    return _section(env, warmup, results) + "\n" + _mix_section(mixed)


def _mix_arg(mix: tuple[float, float, float]) -> str:
    return ",".join(f"{share:.6f}" for share in mix)


def _mix_section(results: dict[str, list[dict[str, Any]]]) -> str:
    """The table of mixes, with a verdict per target."""
    lines = [
        f"### Mixes of priorities at twice the capacity ({MIX_CONFIGURATION})",
        "",
        f"The same server and load, behind a {MIX_CONFIGURATION}, offered each mix of "
        "priorities. "
        "High's target holds where high's own demand fits inside the limit (the sizing rule in "
        f"docs/server.md); high alone offering {OFFERED:.0f} requests/s to a server that "
        f"completes {CAPACITY:.0f} can at best see {CAPACITY / OFFERED:.0%} succeed.",
        "",
        "| mix (high/normal/low) | high ok | normal ok | low ok | goodput req/s | of capacity "
        f"| high >= {HIGH_SUCCESS_TARGET:.0%} | goodput >= {GOODPUT_TARGET:.0%} |",
        "|---|---:|---:|---:|---:|---:|---|---|",
    ]
    for name, mix in MIXES.items():
        runs = results[name]
        high = _spread(runs, lambda r: _success(r, "high")).median if mix[0] else None
        goodput = _spread(runs, _goodput).median / CAPACITY
        if high is None:
            high_verdict = "no high traffic"
        elif mix[0] * OFFERED > CAPACITY:
            high_verdict = f"n/a: high alone offers {mix[0] * OFFERED / CAPACITY:.1f}x capacity"
        else:
            high_verdict = _verdict(high >= HIGH_SUCCESS_TARGET)
        row = [
            name,
            *(
                _percent(_spread(runs, partial(_success, priority=p))) if share else "–"
                for p, share in zip(PRIORITIES, mix, strict=True)
            ),
            _spread(runs, _goodput).cell(0),
            _percent(_spread(runs, lambda r: _goodput(r) / CAPACITY)),
            high_verdict,
            _verdict(goodput >= GOODPUT_TARGET),
        ]
        lines.append("| " + " | ".join(row) + " |")
    return "\n".join([*lines, ""]) + "\n"


def _success(result: dict[str, Any], priority: str) -> float:
    counts = result["counts"].get(priority, {})
    total = sum(counts.values())
    return counts.get("ok", 0) / total if total else float("nan")


def _goodput(result: dict[str, Any]) -> float:
    return float(result["completed"]) / float(result["seconds"])


def _offered(result: dict[str, Any]) -> float:
    sent = sum(sum(counts.values()) for counts in result["counts"].values())
    return float(sent) / float(result["seconds"])


def _brief(result: dict[str, Any]) -> str:
    rates = " ".join(
        f"{p} {_success(result, p):.1%}" for p in PRIORITIES if result["counts"].get(p)
    )
    return f"{rates}, goodput {_goodput(result):.0f}/s of {CAPACITY:.0f}"


def _spread(runs: list[dict[str, Any]], figure: Callable[[dict[str, Any]], float]) -> Spread:
    return Spread.of([figure(result) for result in runs])


def _percent(spread: Spread) -> str:
    scaled = Spread(spread.median * 100, spread.low * 100, spread.high * 100)
    return scaled.cell(1) + " %"


def _section(env: BenchEnv, warmup: float, results: dict[str, list[dict[str, Any]]]) -> str:
    lines = [
        "## Priority load shedding at twice the capacity",
        "",
        f"An aiohttp server whose handler holds one of {WORKERS} workers for "
        f"{SERVICE * 1000:.0f} ms: capacity {CAPACITY:.0f} requests/s. A client process offers "
        f"{OFFERED:.0f} requests/s in an open loop (Poisson arrivals), one third each high, "
        f"normal and low (trusted to send high), each a single attempt with a "
        f"{CLIENT_TIMEOUT:g} s deadline. Success: a 200 within the deadline (rates over the "
        "requests sent in the measured window); goodput: successes that arrived in the window, "
        "per second. Server and client each in their own process on their own core; "
        f"{warmup:g} s of overload before measuring (at least two deadlines, whatever the "
        f"mode), then {env.duration:g} s measured, "
        f"{env.repeats} repeat(s): median (min–max). The adaptive limits start at 20 and find "
        "the server's size themselves; the last column is where they ended.",
        "",
        "| server | offered req/s | high ok | normal ok | low ok | goodput req/s | "
        "of capacity | p99 ok latency | limit at the end |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for name in CONFIGURATIONS:
        runs = results[name]
        row = [
            name,
            _spread(runs, _offered).cell(0),
            *(_percent(_spread(runs, partial(_success, priority=p))) for p in PRIORITIES),
            _spread(runs, _goodput).cell(0),
            _percent(_spread(runs, lambda r: _goodput(r) / CAPACITY)),
            _latency(runs),
            _final_limit(runs),
        ]
        lines.append("| " + " | ".join(row) + " |")
    lines += ["", *_checks(results), ""]
    return "\n".join(lines)


def _final_limit(runs: list[dict[str, Any]]) -> str:
    limits = [r["server"].get("limit") for r in runs]
    if None in limits or not limits:
        return "–"
    return Spread.of([float(limit) for limit in limits]).cell(0)


def _latency(runs: list[dict[str, Any]]) -> str:
    values = [r["p99_ms"] for r in runs if r["p99_ms"] is not None]
    return f"{statistics.median(values):,.0f} ms" if values else "–"


def _checks(results: dict[str, list[dict[str, Any]]]) -> list[str]:
    lines = ["Targets, on the median of the repeats, for each set-up with the middleware:", ""]
    for name in CONFIGURATIONS[1:]:
        runs = results[name]
        high = _spread(runs, lambda r: _success(r, "high")).median
        low = _spread(runs, lambda r: _success(r, "low")).median
        normal = _spread(runs, lambda r: _success(r, "normal")).median
        goodput = _spread(runs, _goodput).median / CAPACITY
        verdicts = [
            f"high ok {high:.1%} (>= {HIGH_SUCCESS_TARGET:.0%}): {_verdict(high >= HIGH_SUCCESS_TARGET)}",
            f"low absorbs the shedding (low ok {low:.1%} <= normal ok {normal:.1%}): "
            f"{_verdict(low <= normal <= high)}",
            f"goodput {goodput:.1%} of capacity (>= {GOODPUT_TARGET:.0%}): "
            f"{_verdict(goodput >= GOODPUT_TARGET)}",
        ]
        lines.append(f"- {name}: " + "; ".join(verdicts))
    bare = _spread(results["no middleware"], _goodput).median / CAPACITY
    lines.append(
        f"- no middleware, for comparison: goodput {bare:.1%} of capacity; every priority alike."
    )
    return lines


def _verdict(passed: bool) -> str:
    return "PASS" if passed else "MISS"


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.shedding", description=__doc__)
    parser.add_argument("--quick", action="store_true", help="short runs, one repeat")
    commands = parser.add_subparsers(dest="command")
    serve = commands.add_parser("serve", help="(internal) run the server")
    serve.add_argument("name", choices=CONFIGURATIONS)
    load = commands.add_parser("load", help="(internal) offer the load and print JSON")
    load.add_argument("url")
    load.add_argument("--warmup", type=float, required=True)
    load.add_argument("--duration", type=float, required=True)
    load.add_argument("--seed", type=int, default=0)
    load.add_argument("--mix", default=_mix_arg(EVEN), help="fractions of high,normal,low")
    args = parser.parse_args(argv)
    if args.command == "serve":
        _run_loop(_serve(args.name))
    elif args.command == "load":
        high, normal, low = (float(share) for share in args.mix.split(","))
        mix = (high, normal, low)
        result = _run_loop(_load(args.url, args.warmup, args.duration, args.seed, mix))
        print(json.dumps(result))
    else:
        print(run(BenchEnv.create(quick=args.quick)))


def _run_loop(coro: Any) -> Any:
    try:
        import uvloop
    except ImportError:  # pragma: no cover
        return asyncio.run(coro)
    return uvloop.run(coro)


if __name__ == "__main__":
    main()
