"""Observability: client CPU per request with Prometheus metrics and OpenTelemetry tracing on.

nginx answers a fixed 200 on the server core. One client process on the
client core holds seven ``AsyncClient`` s on one event loop, identical but
for their observers: none; ``ClientMetrics``; ``ClientTracing`` on an SDK
``TracerProvider`` whose ``SimpleSpanProcessor`` hands every span to an
exporter that discards it (so each call pays for a recorded call span and
attempt span, and a ``traceparent`` header); both; both with the SDK
sampling one trace in ten (``ParentBased(TraceIdRatioBased(0.1))``); and
two bare spans a call on the same provider, the floor under any tracer;
and the same two spans with the attributes the HTTP conventions require of
the attempt's span, the SDK's own cost of those. They
take turns in short slices, in ABBA order, 16 calls in flight each, so a
change in the machine's load falls on all of them alike; each
configuration's cost is the process CPU time over its slices divided by the
calls it completed, and each ratio is the median of the per-round ratios
(both configurations measured in the same round). Two targets: metrics at
most 1.10 times no observers, and tracing (every span recorded) at most 1.10
times the floor; the other rows are information.

``python -m bench.observability [--quick]`` runs it alone;
``python -m bench.observability --client URL C SECONDS`` is the measured
process (it prints one JSON line); ``--profile`` instead profiles one
client (``--observers NAME``, default "tracing") for SECONDS and prints
where its time goes. ``python -m bench.observability --instructions``
counts instead of timing: the instructions a call costs in each
configuration, under valgrind (bench/_instructions.py), and their ratios,
a reading that other work on the machine cannot move (the kernel's share
of a call is left out).
"""

from __future__ import annotations

import argparse
import asyncio
import cProfile
import io
import json
import math
import pstats
import statistics
import sys
import time
from collections.abc import Sequence
from typing import Any

from bench import BenchEnv
from bench._nginx import serve_ok
from bench._proc import run_json

CONCURRENCY = 16
SLICE = 0.25  # seconds per configuration per turn
TARGET = 1.10
# What each target divides: a configuration's cost over its baseline's.
TARGETS = {"metrics": "off", "tracing": "floor"}
SAMPLED = 0.1
CONFIGURATIONS = ("off", "metrics", "tracing", "both", "sampled", "floor", "required")
LABELS = {
    "off": "no observers",
    "metrics": "`ClientMetrics` (Prometheus)",
    "tracing": "`ClientTracing` (OpenTelemetry SDK, every span recorded, then discarded)",
    "both": "`ClientMetrics` + `ClientTracing`",
    "sampled": f"`ClientMetrics` + `ClientTracing`, {SAMPLED:.0%} of traces sampled",
    "floor": "SDK floor: two bare spans a call (no attributes, no `traceparent`), nothing else",
    "required": "SDK floor + the attributes the HTTP conventions require of the attempt span "
    "(method, server address and port, URL; the status at its end), nothing else",
}


# ------------------------------------------------------------------ the measured process


def _observers() -> dict[str, list[Any]]:
    from opentelemetry import trace
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import (
        SimpleSpanProcessor,
        SpanExporter,
        SpanExportResult,
    )
    from opentelemetry.sdk.trace.sampling import ParentBased, TraceIdRatioBased
    from prometheus_client import CollectorRegistry

    from microcall.observe.prometheus import ClientMetrics
    from microcall.observe.tracing import ClientTracing

    class Discard(SpanExporter):
        def export(self, spans: Sequence[Any]) -> SpanExportResult:
            return SpanExportResult.SUCCESS

    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(Discard()))
    # How production usually runs: a tenth of the traces recorded, the rest
    # only propagated.
    sampling = TracerProvider(sampler=ParentBased(TraceIdRatioBased(SAMPLED)))
    sampling.add_span_processor(SimpleSpanProcessor(Discard()))
    metrics = ClientMetrics(CollectorRegistry())
    tracing = ClientTracing(provider)
    return {
        "off": [],
        "metrics": [metrics],
        "tracing": [tracing],
        "both": [metrics, tracing],
        "sampled": [metrics, ClientTracing(sampling)],
        "floor": [_BareSpans(provider.get_tracer("bench"), trace.set_span_in_context)],
        "required": [
            _BareSpans(
                provider.get_tracer("bench"),
                trace.set_span_in_context,
                required=trace.SpanKind.CLIENT,
            )
        ],
    }


class _BareSpans:
    """The least a tracer giving a span per call and one per attempt can cost.

    Spans with nothing on them, on the same SDK provider as "tracing": what
    is left of tracing's cost once every choice an instrumentation makes
    (attributes, propagation, status) is taken away. Its ratio is the
    floor under any instrumentation that meets the conventions.
    """

    def __init__(self, tracer: Any, set_span_in_context: Any, *, required: Any = None) -> None:
        self._tracer = tracer
        self._set_span_in_context = set_span_in_context
        # With ``required`` (a SpanKind: CLIENT), the attempt span is of that
        # kind and gets what the HTTP conventions require of a client span,
        # built once (the benchmark calls one URL): the SDK's own cost of
        # those attributes, beside the floor.
        self.required = required
        self.attributes: dict[str, Any] | None = None

    def call_started(self, request: Any) -> _BareCall:
        return _BareCall(self, self._tracer.start_span("call"))


class _BareCall:
    def __init__(self, spans: _BareSpans, span: Any) -> None:
        self._spans = spans
        self._span = span

    def attempt_started(self, index: int, kind: Any, url: Any, headers: Any) -> _BareAttempt:
        spans = self._spans
        context = spans._set_span_in_context(self._span)
        if spans.required is None:
            return _BareAttempt(spans._tracer.start_span("attempt", context=context))
        if spans.attributes is None:
            spans.attributes = {
                "http.request.method": "GET",
                "server.address": url.raw_host,
                "server.port": url.port,
                "url.full": str(url),
            }
        span = spans._tracer.start_span(
            "GET", context=context, kind=spans.required, attributes=spans.attributes
        )
        return _RequiredAttempt(span)

    def call_ended(self, response: Any, error: Any, attempts: Any) -> None:
        self._span.end()


class _BareAttempt:
    def __init__(self, span: Any) -> None:
        self._span = span

    def attempt_ended(self, attempt: Any) -> None:
        self._span.end()


class _RequiredAttempt(_BareAttempt):
    def attempt_ended(self, attempt: Any) -> None:
        self._span.set_attribute("http.response.status_code", attempt.status)
        self._span.end()


async def _burst(client: Any, concurrency: int, seconds: float) -> tuple[int, int, float]:
    """``concurrency`` tasks calling for ``seconds``, then drained: (calls, errors, CPU seconds)."""
    counts = [0, 0]
    stopping = False

    async def worker() -> None:
        while not stopping:
            try:
                response = await client.get("")
            except Exception:
                counts[1] += 1
                continue
            counts[0 if response.status_code == 200 else 1] += 1

    started = time.process_time()
    tasks = [asyncio.create_task(worker()) for _ in range(concurrency)]
    await asyncio.sleep(seconds)
    stopping = True
    await asyncio.gather(*tasks)
    return counts[0], counts[1], time.process_time() - started


async def _interleaved(url: str, concurrency: int, warmup: float, seconds: float) -> dict[str, Any]:
    import microcall

    observers = _observers()
    clients = {name: microcall.AsyncClient(url, observers=observers[name]) for name in observers}
    try:
        for client in clients.values():
            await _burst(client, concurrency, warmup / len(clients))
        totals = {name: [0, 0, 0.0] for name in clients}
        costs: dict[str, list[float]] = {name: [] for name in clients}
        rounds = max(1, round(seconds / len(clients) / SLICE))
        for number in range(rounds):
            order = list(clients) if number % 2 == 0 else list(reversed(clients))
            for name in order:
                calls, errors, cpu = await _burst(clients[name], concurrency, SLICE)
                total = totals[name]
                total[0] += calls
                total[1] += errors
                total[2] += cpu
                costs[name].append(cpu / calls if calls else 0.0)
    finally:
        for client in clients.values():
            await client.aclose()
    return {
        name: {
            "requests": calls,
            "errors": errors,
            "cpu_us_per_request": cpu / calls * 1e6 if calls else None,
            "rps": calls / (rounds * SLICE),
            "round_costs": costs[name],
        }
        for name, (calls, errors, cpu) in totals.items()
    }


def _round_ratios(result: dict[str, Any], name: str, base: str) -> list[float]:
    """``name``'s cost over ``base``'s, round by round (a round with no calls is left out)."""
    pairs = zip(result[name]["round_costs"], result[base]["round_costs"], strict=True)
    return [cost / base_cost for cost, base_cost in pairs if cost and base_cost]


def _profile(url: str, concurrency: int, seconds: float, observers: str) -> str:
    import microcall

    async def run() -> None:
        async with microcall.AsyncClient(url, observers=_observers()[observers]) as client:
            await _burst(client, concurrency, 0.5)
            profiler = cProfile.Profile()
            profiler.enable()
            await _burst(client, concurrency, seconds)
            profiler.disable()
            out = io.StringIO()
            stats = pstats.Stats(profiler, stream=out).sort_stats("tottime")
            stats.print_stats(35)
            print(out.getvalue())

    asyncio.run(run())
    return ""


async def _calls(url: str, observers: str, calls: int) -> None:
    """``calls`` calls of one configuration, 16 in flight, after a warm-up: what is counted."""
    import microcall

    async with microcall.AsyncClient(url, observers=_observers()[observers]) as client:

        async def worker(count: int) -> None:
            for _ in range(count):
                await client.get("")

        await asyncio.gather(*(worker(50) for _ in range(CONCURRENCY)))
        await asyncio.gather(*(worker(calls // CONCURRENCY) for _ in range(CONCURRENCY)))


def _instructions(calls: int, runs: int) -> str:
    """Instructions a call costs in each configuration, two counted at a time; a markdown table."""
    from concurrent.futures import ThreadPoolExecutor

    from bench._instructions import per_unit
    from bench._proc import ROOT

    env = BenchEnv.create(quick=True)
    calls -= calls % CONCURRENCY
    with serve_ok(env) as url, ThreadPoolExecutor(2) as pool:

        def count(name: str) -> float:
            def command(units: int) -> list[str]:
                return [env.python, "-m", "bench.observability", "--calls", url, name, str(units)]

            return per_unit(command, calls, cwd=str(ROOT))

        counted = {name: pool.map(count, [name] * runs) for name in CONFIGURATIONS}
        per_call = {name: statistics.median(counts) for name, counts in counted.items()}
    lines = [
        f"Instructions a call costs (user space; {calls} calls, {CONCURRENCY} in flight, "
        f"median of {runs} count(s)):",
        "",
        "| observers | instructions/call | ÷ no observers | ÷ SDK floor | ÷ floor + required |",
        "|---|---:|---:|---:|---:|",
    ]
    for name in CONFIGURATIONS:
        ratios = [f"{per_call[name] / per_call[base]:.3f}" for base in ("off", "floor", "required")]
        lines.append(f"| {LABELS[name]} | {per_call[name]:,.0f} | {' | '.join(ratios)} |")
    return "\n".join(lines)


# ------------------------------------------------------------------ the section


def run(env: BenchEnv) -> str:
    """Measure ``env.repeats`` client processes against nginx; return the markdown section."""
    results: list[dict[str, Any]] = []
    with serve_ok(env) as url:
        for _ in range(env.repeats):
            arguments = [
                "--client",
                url,
                str(CONCURRENCY),
                str(env.duration * len(CONFIGURATIONS)),
                "--warmup",
                str(env.warmup),
            ]
            results.append(
                run_json(
                    env,
                    "bench.observability",
                    arguments,
                    budget=env.warmup + env.duration * len(CONFIGURATIONS) + 10,
                )
            )
    return _section(env, results)


DESCRIPTION = (
    "nginx answers a fixed 200 on the server core. One client process on the client core "
    "holds seven `AsyncClient`s on one event loop, identical but for their observers: none; "
    "`ClientMetrics`; `ClientTracing` on an SDK `TracerProvider` whose `SimpleSpanProcessor` "
    "hands every span to an exporter that discards it (so each call pays for a recorded call "
    "span and attempt span, and a `traceparent` header); both; both with the SDK sampling "
    f"one trace in {round(1 / SAMPLED)} (`ParentBased(TraceIdRatioBased({SAMPLED}))`); and, "
    "as the floor under any instrumentation that gives a span per call and one per attempt, "
    "an observer that starts and ends two spans with nothing on them on the same provider; "
    "and the same two spans, the attempt's a CLIENT span with the attributes the HTTP "
    "conventions require of it (`http.request.method`, `server.address`, `server.port`, "
    "`url.full`, and `http.response.status_code` at its end), built once: what the SDK "
    "itself charges for those, whoever instruments. They "
    "take turns in short slices, in ABBA order, so a change in the machine's load falls on all "
    "of them alike. A configuration's cost is the process CPU time over its slices divided by "
    "the calls it completed; a ratio, the median of the per-round ratios of two configurations "
    "measured in the same rounds. Two targets: metrics at most "
    f"{TARGET:.2f} times no observers, and tracing with every span recorded at most "
    f"{TARGET:.2f} times the SDK floor (what microcall's tracing adds to the two spans a "
    "call the conventions ask for); the other rows are information. The last ratio divides "
    "by the floor with the required attributes on it: what tracing costs once the SDK's own "
    "charge for those is taken out. Where the time goes: "
    "docs/observability.md, section Cost."
)


def _section(env: BenchEnv, results: list[dict[str, Any]]) -> str:
    from bench._stats import Spread

    lines = [
        "## Observability: client CPU with metrics and tracing on",
        "",
        DESCRIPTION,
        "",
        f"{CONCURRENCY} calls in flight per configuration, slices of {SLICE:g} s, "
        f"{env.duration * len(CONFIGURATIONS):g} s per process in all after "
        f"{env.warmup:g} s of warm-up, {len(results)} process(es). Each cell: median over "
        "the processes (min–max); each ratio: median of the per-round ratios over all "
        "processes (min–max).",
        "",
        "| observers | calls/s | CPU µs/call | ÷ no observers | ÷ SDK floor "
        "| ÷ SDK floor + required attributes | target | |",
        "|---|---:|---:|---:|---:|---:|---:|---|",
    ]
    for name in CONFIGURATIONS:
        rows = [result[name] for result in results]
        cost = Spread.of([row["cpu_us_per_request"] for row in rows if row["cpu_us_per_request"]])
        rate = Spread.of([row["rps"] for row in rows])
        errors = sum(row["errors"] for row in rows)
        cells = []
        for base in ("off", "floor", "required"):
            if name == base:
                cells.append("1")
            elif base != "off" and name in ("off", "metrics"):
                cells.append("")  # no spans to compare with two bare ones
            elif base == "required" and name == "floor":
                cells.append("")
            else:
                ratios = [
                    ratio for result in results for ratio in _round_ratios(result, name, base)
                ]
                cells.append(Spread.of(ratios).cell(2))
        target = verdict = ""
        goal = TARGETS.get(name)
        if goal is not None:
            ratios = [ratio for result in results for ratio in _round_ratios(result, name, goal)]
            median = statistics.median(ratios) if ratios else math.nan
            target = f"≤ {TARGET:.2f} ÷ {'no observers' if goal == 'off' else 'SDK floor'}"
            verdict = "PASS" if median <= TARGET else f"MISS (over by {median / TARGET - 1:.0%})"
            if len(ratios) >= 4:
                quartiles = statistics.quantiles(ratios, n=4)
                verdict += f", rounds' quartiles {quartiles[0]:.2f}–{quartiles[2]:.2f}"
        label = LABELS[name] + (f" ({errors} errors)" if errors else "")
        lines.append(
            f"| {label} | {rate.cell()} | {cost.cell(1)} | {cells[0]} | {cells[1]} | {cells[2]} "
            f"| {target} | {verdict} |"
        )
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    arguments = sys.argv[1:] if argv is None else argv
    if arguments and arguments[0] == "--calls":
        parser = argparse.ArgumentParser(prog="python -m bench.observability --calls")
        parser.add_argument("url")
        parser.add_argument("observers", choices=CONFIGURATIONS)
        parser.add_argument("calls", type=int)
        options = parser.parse_args(arguments[1:])
        asyncio.run(_calls(options.url, options.observers, options.calls))
        return 0
    if arguments and arguments[0] == "--instructions":
        parser = argparse.ArgumentParser(prog="python -m bench.observability --instructions")
        parser.add_argument("--calls", type=int, default=3200)
        parser.add_argument("--runs", type=int, default=1, help="counts per configuration")
        options = parser.parse_args(arguments[1:])
        if options.calls < CONCURRENCY or options.runs < 1:
            parser.error(f"--calls must be at least {CONCURRENCY}, --runs at least 1")
        print(_instructions(options.calls, options.runs))
        return 0
    if arguments and arguments[0] in ("--client", "--profile"):
        mode, rest = arguments[0], arguments[1:]
        parser = argparse.ArgumentParser(prog=f"python -m bench.observability {mode}")
        parser.add_argument("url")
        parser.add_argument("concurrency", type=int)
        parser.add_argument("seconds", type=float)
        parser.add_argument("--warmup", type=float, default=1.0)
        parser.add_argument("--observers", choices=CONFIGURATIONS, default="tracing")
        options = parser.parse_args(rest)
        if mode == "--profile":
            _profile(options.url, options.concurrency, options.seconds, options.observers)
            return 0
        result = asyncio.run(
            _interleaved(options.url, options.concurrency, options.warmup, options.seconds)
        )
        print(json.dumps(result), flush=True)
        return 0
    from bench._standalone import main as standalone

    return standalone(run, "observability", arguments)


if __name__ == "__main__":
    sys.exit(main())
