"""gRPC clients: what microcall costs on top of grpcio's own stubs, and what hedging buys.

``python -m bench.grpc_clients [--quick]`` runs this section on its own;
``make bench`` runs it with the others. Two measurements:

1. Client CPU per call and calls per second against a grpc.aio server on
   127.0.0.1 (its own process, pinned to the server core) answering a
   small ``Recommend`` at once: the generated stub over a plain grpc channel
   against the same stub over microcall's channel, grpc.aio at concurrency
   1 and 64 (tasks), the blocking API at 1 and 64 (threads). microcall's
   channel runs as configured by default: a deadline on every call (10 s),
   no priority metadata (none was chosen), the retry budget counting calls.
   The raw stub is called bare, with no timeout. The ratio checked against
   the target is the median over many short processes where the stubs take
   turns; a third side there, the raw stub given the same timeout, shows how
   much of the cost is grpc's own work for it, and a fourth, the raw stub
   again, how far apart two identical clients read.
2. Tail latency on a heavy-tailed gRPC backend (97% 2-4 ms, 2% 50 ms, 1%
   500 ms, drawn per request as in the HTTP tail benchmark), open loop at
   800 calls/s: a single attempt against microcall's learned hedging
   (``hedged()``, max_extra_load=0.05); extra load counted by the server.

Each measurement is a fresh client process on the client core: the
subcommands ``cost``, ``pair`` and ``tail`` below, run by the orchestrator;
the backends are the subcommand ``serve``.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import resource
import signal
import sys
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, cast

from bench import BenchEnv
from bench._load import Plan, Record, offer
from bench._proc import ServerProcess, answer_commands, run_json
from bench._stats import Spread, percentile
from microcall.demo.backend import LatencyProfile

CONCURRENCIES = (1, 64)
# The open loop of the HTTP tail benchmark: the same offered load.
RATE = 800.0
SEED = 1
CALLS_PER_REPEAT = 1_000_000
TARGET_RATIO = 1.15
# What microcall's channels give a call that names no deadline.
DEADLINE = 10.0
# How long each stub's turn lasts in a pair process, by concurrency. At one
# call in flight the machine's speed drifts over seconds (the same stub read
# 160 and 270 µs a call a second apart): 50 ms turns spread every side across
# the same drifts (the plain stub against itself over 12 s: 0.83-1.31 with 250 ms turns,
# 1.01-1.07 with 50 ms). At 64 in flight a turn must be long enough that the
# calls crossing into it from the previous side, up to 64, are few among its own.
SINGLE_SLICE = 0.05
SLICE = 0.25


def slice_for(concurrency: int) -> float:
    """Seconds per turn of a pair process at ``concurrency`` calls in flight."""
    return SINGLE_SLICE if concurrency == 1 else SLICE


# The verdict is the median of many short processes rather than of a few long
# ones: a reading that a process happened to take during a bad stretch of the
# machine then weighs one vote.
PAIRS_PER_REPEAT = 3
PAIR_SHARE = 0.4  # each side's time in one pair process, as a share of env.duration


@dataclass(frozen=True, slots=True)
class CostRow:
    key: str
    label: str
    api: str  # "aio" or "blocking"
    through: str  # "grpc" or "microcall"


COST_ROWS = (
    CostRow("aio-raw", "grpc.aio stub, plain channel", "aio", "grpc"),
    CostRow("aio-microcall", "grpc.aio stub, microcall `AsyncChannel`", "aio", "microcall"),
    CostRow("blocking-raw", "blocking stub, plain channel", "blocking", "grpc"),
    CostRow("blocking-microcall", "blocking stub, microcall `Channel`", "blocking", "microcall"),
)
APIS = ("aio", "blocking")
Costs = dict[tuple[str, int], list[dict[str, Any]]]
Pairs = dict[tuple[str, int], list[dict[str, dict[str, Any]]]]
TAIL_ROWS = (
    ("single", "single attempt (`single()`)"),
    ("hedged", "microcall `hedged()` (learned, max_extra_load=0.05)"),
)


# ================================================================= the orchestrator


def run(env: BenchEnv) -> str:
    """Measure both parts ``env.repeats`` times; return the markdown section."""
    costs: Costs = {(row.key, c): [] for row in COST_ROWS for c in CONCURRENCIES}
    pairs: Pairs = {(api, c): [] for api in APIS for c in CONCURRENCIES}
    timing = ["--warmup", str(env.warmup), "--duration", str(env.duration)]
    pair_timing = ["--warmup", str(env.warmup), "--duration", str(env.duration * PAIR_SHARE)]
    with Backend(env, profile=None) as backend:
        target = ["--target", backend.target]
        for repeat in range(env.repeats):
            rounds = f"[{repeat + 1}/{env.repeats}]"
            rows = COST_ROWS if repeat % 2 == 0 else tuple(reversed(COST_ROWS))
            for c in CONCURRENCIES:
                for row in rows:
                    result = run_json(
                        env,
                        "bench.grpc_clients",
                        ["cost", row.key, str(c), *target, *timing],
                        budget=env.warmup + env.duration,
                    )
                    costs[(row.key, c)].append(result)
                    _progress(f"{rounds} {row.key} c={c}", result)
                for _ in range(PAIRS_PER_REPEAT):
                    for api in APIS:
                        result = run_json(
                            env,
                            "bench.grpc_clients",
                            ["pair", api, str(c), *target, *pair_timing],
                            budget=env.warmup + len(Slices.SIDES) * env.duration * PAIR_SHARE,
                        )
                        pairs[(api, c)].append(result)
                        for side, figures in result.items():
                            _progress(f"{rounds} {api} c={c} turns: {side}", figures)
    tails: dict[str, list[dict[str, Any]]] = {key: [] for key, _ in TAIL_ROWS}
    requests = round(RATE * env.duration)
    warmup = round(RATE * env.warmup)
    run_ids = iter(range(1, 1_000_000, 2))
    with Backend(env, profile=LatencyProfile()) as backend:
        for repeat in range(env.repeats):
            order = TAIL_ROWS if repeat % 2 == 0 else tuple(reversed(TAIL_ROWS))
            for key, _ in order:
                run_id = next(run_ids)
                arguments = [
                    "tail",
                    key,
                    "--target",
                    backend.target,
                    "--rate",
                    str(RATE),
                    "--warmup",
                    str(warmup),
                    "--requests",
                    str(requests),
                    "--warmup-run",
                    str(run_id),
                    "--run",
                    str(run_id + 1),
                    "--first-call",
                    str(repeat * CALLS_PER_REPEAT),
                ]
                result = run_json(
                    env, "bench.grpc_clients", arguments, budget=(warmup + requests) / RATE + 1.0
                )
                result["server"] = backend.counts(run_id + 1)
                tails[key].append(result)
                _progress_tail(f"[{repeat + 1}/{env.repeats}] tail {key}", result)
    return _section(env, costs, pairs, tails, requests)


def _progress(what: str, result: dict[str, Any]) -> None:
    print(
        f"  {what:<40} {result['calls_per_second']:>8,.0f} calls/s  "
        f"{result['cpu_us_per_call'] or 0:6.1f} µs CPU/call"
        + (f"  {result['errors']} errors" if result.get("errors") else ""),
        file=sys.stderr,
        flush=True,
    )


def _progress_tail(what: str, result: dict[str, Any]) -> None:
    server = result["server"]
    print(
        f"  {what:<32} p99 {result['p99_ms']:7.1f} ms  p99.9 {result['p999_ms']:7.1f} ms  "
        f"extra load {_extra(result):.1%}  ({server['received']} received)",
        file=sys.stderr,
        flush=True,
    )


def _extra(result: dict[str, Any]) -> float:
    calls = result["calls"]
    return result["server"]["received"] / calls - 1.0 if calls else float("nan")


# ------------------------------------------------------------------ the section


def _section(
    env: BenchEnv, costs: Costs, pairs: Pairs, tails: dict[str, list[dict[str, Any]]], requests: int
) -> str:
    repeats = "one run" if env.repeats == 1 else f"median of {env.repeats} runs (min–max)"
    runs = f"{env.repeats * PAIRS_PER_REPEAT} processes"
    lines = [
        "## gRPC clients: microcall's channels over grpcio's stubs",
        "",
        "The generated `RecommendationsStub` calling `Recommend` (a 3-book reply) on a "
        "grpc.aio server on 127.0.0.1 in its own process, over one HTTP/2 connection. "
        "Each row is a fresh client process: "
        f"{env.warmup:g} s of warm-up, then a {env.duration:g} s timed window; {repeats}.",
        "",
        "- **calls/s**: calls completed in the window ÷ its length.",
        "- **CPU µs/call**: the client process's CPU time (user + system, grpc's own "
        "threads included) over the window ÷ calls completed.",
        "- **p50 / p99**: latency of each call, in ms.",
        "- grpc.aio: N tasks on one event loop, each awaiting one call after another; "
        "blocking: N threads sharing one channel.",
        "- The plain stub is called bare (no timeout, no metadata). Through microcall every "
        "call carries a deadline (the default 10 s: grpc then runs a timer and sends "
        "`grpc-timeout`) and counts in the retry budget; no priority was chosen, so no "
        "`x-request-priority` goes (one metadata entry costs grpc 5-10% more CPU per call "
        "at concurrency 1).",
        "",
        "| client | concurrency | calls/s | CPU µs/call | p50 ms | p99 ms |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    for row in COST_ROWS:
        for c in CONCURRENCIES:
            results = costs[(row.key, c)]
            lines.append(
                f"| {row.label} | {c} "
                f"| {Spread.of([r['calls_per_second'] for r in results]).cell()} "
                f"| {Spread.of([r['cpu_us_per_call'] for r in results]).cell(1)} "
                f"| {Spread.of([r['p50_ms'] for r in results]).cell(2)} "
                f"| {Spread.of([r['p99_ms'] for r in results]).cell(2)} |"
            )
    lines += [
        "",
        f"Target: microcall at most {TARGET_RATIO:.2f}x the plain stub's client CPU per call "
        "(µs per call below). Measured in client processes where the stubs take turns, "
        f"{SINGLE_SLICE * 1000:g} ms each at one call in flight and {SLICE * 1000:g} ms at "
        f"{max(CONCURRENCIES)}, in ABBA pairs of rounds, each pair starting one side later "
        f"({env.duration * PAIR_SHARE:g} s each in all, "
        f"after {env.warmup:g} s of warm-up), so that other work on the machine weighs on "
        f"all of them alike; {runs} per row. A process's ratio is its CPU per call over its "
        "turns; the verdict is the median over the processes (min–max in brackets, then how "
        "many processes read above the target). At one call in flight the machine's speed "
        "drifts over seconds: short turns spread every side across the same drifts. "
        "*plain + deadline* is the plain stub given what microcall sends "
        f"(`timeout={DEADLINE:g}`): its column of ratios is what microcall's own code adds "
        "on top of grpc's work for it. *plain ÷ plain* is the plain stub taking a second "
        "turn of its own in the same processes: two identical clients read that far apart, "
        "the resolution of the verdict.",
        "",
        "| API | concurrency | plain | plain + deadline | microcall "
        "| ratio to plain | above target | target | ratio to plain + deadline "
        "| plain ÷ plain |",
        "|---|---:|---:|---:|---:|---:|---:|---|---:|---:|",
    ]
    for api in APIS:
        for c in CONCURRENCIES:
            results = pairs[(api, c)]
            plain = [r["grpc"]["cpu_us_per_call"] for r in results]
            given = [r["grpc-deadline"]["cpu_us_per_call"] for r in results]
            ours = [r["microcall"]["cpu_us_per_call"] for r in results]
            again = [r["grpc-again"]["cpu_us_per_call"] for r in results]
            ratios = Spread.of([o / p for o, p in zip(ours, plain, strict=True)])
            own = Spread.of([o / g for o, g in zip(ours, given, strict=True)])
            resolution = Spread.of([a / p for a, p in zip(again, plain, strict=True)])
            above = sum(1 for o, p in zip(ours, plain, strict=True) if o / p > TARGET_RATIO)
            verdict = "PASS" if ratios.median <= TARGET_RATIO else "MISS"
            lines.append(
                f"| {'grpc.aio' if api == 'aio' else 'blocking'} | {c} "
                f"| {Spread.of(plain).cell(1)} | {Spread.of(given).cell(1)} "
                f"| {Spread.of(ours).cell(1)} | {ratios.cell(2)} | {above} of {len(results)} "
                f"| {verdict} | {own.cell(2)} | {resolution.cell(2)} |"
            )
    lines += [
        "",
        "### Hedging on a heavy-tailed gRPC backend",
        "",
        f"The backend answers each call after a latency drawn independently: "
        f"{LatencyProfile().describe()} (the HTTP tail benchmark's mix). Open loop: "
        f"{RATE:g} calls/s on a fixed timetable ({requests:,} measured calls after "
        f"{round(RATE * env.warmup):,} of warm-up per run, {repeats}); a call's latency runs "
        "from the moment it was due. Call n's first attempt meets the same latency under "
        "both rows. Extra load is calls received by the server ÷ calls made − 1. grpcio "
        "alone cannot do this: it ignores the hedging policy of gRPC's service config.",
        "",
        "| strategy | p50 ms | p99 ms | p99.9 ms | extra load | failures |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    for key, label in TAIL_ROWS:
        results = tails[key]
        lines.append(
            f"| {label} "
            f"| {Spread.of([r['p50_ms'] for r in results]).cell(1)} "
            f"| {Spread.of([r['p99_ms'] for r in results]).cell(1)} "
            f"| {Spread.of([r['p999_ms'] for r in results]).cell(1)} "
            f"| {Spread.of([_extra(r) * 100 for r in results]).cell(1)}% "
            f"| {sum(r['failures'] for r in results)} |"
        )
    return "\n".join(lines) + "\n"


# ================================================================= the backend


class Backend(ServerProcess):
    """A grpc.aio Recommendations server in its own process, pinned to the server cores."""

    def __init__(self, env: BenchEnv, *, profile: LatencyProfile | None) -> None:
        command = [env.python, "-m", "bench.grpc_clients", "serve", "--seed", str(SEED)]
        if profile is not None:
            command += ["--profile", profile.to_json()]
        super().__init__(env, command, address_prefix="127.0.0.1:")
        self.target = self.address

    def counts(self, run_id: int) -> dict[str, int]:
        """What the server saw of a run, once none of its handlers is still running."""
        return self.settled_stats(run_id)


def serve(profile: LatencyProfile | None, seed: int) -> None:
    """Serve until stdin ends; answer ``stats RUN`` lines with that run's counts."""
    import grpc.aio

    from microcall.demo.backend import latency
    from microcall.examples_pb.recommendations_pb2 import (
        BookRecommendation,
        RecommendationResponse,
    )
    from microcall.examples_pb.recommendations_pb2_grpc import (
        RecommendationsServicer,
        add_RecommendationsServicer_to_server,
    )

    reply = RecommendationResponse(
        recommendations=[BookRecommendation(id=n, title=f"Book {n}") for n in range(3)]
    )
    runs: dict[int, dict[str, int]] = {}
    arrivals: dict[tuple[int, int], int] = {}

    class Service(RecommendationsServicer):
        # In the tail runs the request's user_id is the call number and
        # max_results the run: what the latency draw and the counts need.
        async def Recommend(self, request: Any, context: Any) -> Any:
            if profile is None:
                return reply
            run_id, call = request.max_results, request.user_id
            counts = runs.setdefault(run_id, {"received": 0, "cancelled": 0, "in_flight": 0})
            arrival = arrivals.get((run_id, call), 0)
            arrivals[(run_id, call)] = arrival + 1
            counts["received"] += 1
            counts["in_flight"] += 1
            try:
                await asyncio.sleep(latency(profile, seed, call, arrival))
            except asyncio.CancelledError:
                counts["cancelled"] += 1
                raise
            finally:
                counts["in_flight"] -= 1
            return reply

    async def main() -> None:
        server = grpc.aio.server()
        # Only Recommend is measured; the streaming method stays unimplemented.
        add_RecommendationsServicer_to_server(Service(), server)  # type: ignore[abstract]
        port = server.add_insecure_port("127.0.0.1:0")
        await server.start()
        print(f"127.0.0.1:{port}", flush=True)
        empty = {"received": 0, "cancelled": 0, "in_flight": 0}
        try:
            await answer_commands({"stats": lambda run: runs.get(int(run), empty)})
        finally:
            await server.stop(None)

    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the orchestrator stops us
    asyncio.run(main())


# ================================================================= the clients


def _cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


class Window:
    """Warm-up, then the timed window; each finished call reports here."""

    def __init__(self) -> None:
        self.measuring = False
        self.finished = False
        self.latencies: list[float] = []
        self.errors = 0
        self.first_error = ""
        self._times = (0.0, 0.0)
        self._cpu = (0.0, 0.0)

    def open(self) -> None:
        self._times = (time.perf_counter(), 0.0)
        self._cpu = (_cpu(), 0.0)
        self.measuring = True

    def close(self) -> None:
        self.measuring = False
        self._times = (self._times[0], time.perf_counter())
        self._cpu = (self._cpu[0], _cpu())
        self.finished = True

    def failed(self, error: BaseException) -> None:
        if self.measuring:
            self.errors += 1
            self.first_error = self.first_error or repr(error)[:300]

    def result(self) -> dict[str, Any]:
        latencies = sorted(self.latencies)
        seconds = self._times[1] - self._times[0]
        calls = len(latencies)
        return {
            "calls": calls,
            "errors": self.errors,
            "first_error": self.first_error,
            "seconds": seconds,
            "calls_per_second": calls / seconds if seconds else 0.0,
            "cpu_us_per_call": (self._cpu[1] - self._cpu[0]) / calls * 1e6 if calls else None,
            "p50_ms": percentile(latencies, 0.5) * 1e3,
            "p99_ms": percentile(latencies, 0.99) * 1e3,
        }


def _request() -> Any:
    from microcall.examples_pb.recommendations_pb2 import SCIENCE_FICTION, RecommendationRequest

    return RecommendationRequest(user_id=7, category=SCIENCE_FICTION, max_results=3)


async def _aio_cost(
    through: str, target: str, concurrency: int, warmup: float, duration: float
) -> dict[str, Any]:
    import grpc.aio

    from microcall.examples_pb.recommendations_pb2_grpc import RecommendationsStub
    from microcall.grpc import AsyncChannel

    channel: Any = grpc.aio.insecure_channel(target) if through == "grpc" else AsyncChannel(target)
    stub = RecommendationsStub(channel)
    request = _request()
    window = Window()
    await stub.Recommend(request)  # connected before anything is timed

    async def worker() -> None:
        recommend = stub.Recommend
        latencies = window.latencies
        clock = time.perf_counter
        while not window.finished:
            began = clock()
            try:
                await recommend(request)
            except Exception as error:
                window.failed(error)
                continue
            if window.measuring:
                latencies.append(clock() - began)

    tasks = [asyncio.ensure_future(worker()) for _ in range(concurrency)]
    await asyncio.sleep(warmup)
    window.open()
    await asyncio.sleep(duration)
    window.close()
    await asyncio.gather(*tasks)
    await channel.close()
    return window.result()


def _blocking_cost(
    through: str, target: str, concurrency: int, warmup: float, duration: float
) -> dict[str, Any]:
    import grpc

    from microcall.examples_pb.recommendations_pb2_grpc import RecommendationsStub
    from microcall.grpc import Channel

    channel: Any = grpc.insecure_channel(target) if through == "grpc" else Channel(target)
    stub = RecommendationsStub(channel)
    request = _request()
    window = Window()
    stub.Recommend(request)
    lock = threading.Lock()

    def worker() -> None:
        recommend = stub.Recommend
        clock = time.perf_counter
        mine: list[float] = []
        while not window.finished:
            began = clock()
            try:
                recommend(request)
            except Exception as error:
                window.failed(error)
                continue
            if window.measuring:
                mine.append(clock() - began)
        with lock:
            window.latencies.extend(mine)

    threads = [threading.Thread(target=worker, daemon=True) for _ in range(concurrency)]
    for thread in threads:
        thread.start()
    time.sleep(warmup)
    window.open()
    time.sleep(duration)
    window.close()
    for thread in threads:
        thread.join(30)
    channel.close()
    return window.result()


class Slices:
    """Sides taking turns in slices of one process's time, each charged its own CPU.

    ``grpc`` is the plain stub called bare; ``grpc-deadline`` the plain stub
    given what microcall sends (a timeout), which shows how much of
    microcall's cost is grpc's own work for it; ``grpc-again`` the plain stub
    once more, whose ratio to ``grpc`` is what the method reads between two
    identical clients: the resolution of the verdict.
    """

    SIDES = ("grpc", "grpc-deadline", "microcall", "grpc-again")

    def __init__(self) -> None:
        self.side = self.SIDES[0]
        self.measuring = False
        self.finished = False
        self.calls = dict.fromkeys(self.SIDES, 0)
        self.cpu = dict.fromkeys(self.SIDES, 0.0)
        self.seconds = dict.fromkeys(self.SIDES, 0.0)

    def done(self) -> None:
        if self.measuring:
            # Charged to the side whose slice it ends in; the calls that cross
            # a turn cross it both ways alike.
            self.calls[self.side] += 1

    def turns(self, rounds: int) -> list[str]:
        """``rounds`` turns of every side, in pairs of rounds: one order, then the same
        backwards (ABBA); each pair starts one side later than the previous one.

        The pairs cancel a steady drift of the machine's speed; the rotation
        gives every side every place in a round alike, and so every
        neighbour, whose calls cross into its turn.
        """
        order: list[str] = []
        sides = len(self.SIDES)
        for number in range(rounds):
            start = (number // 2) % sides
            rotated = self.SIDES[start:] + self.SIDES[:start]
            order += rotated if number % 2 == 0 else tuple(reversed(rotated))
        return order

    def charge(self, side: str, cpu: float, seconds: float) -> None:
        self.cpu[side] += cpu
        self.seconds[side] += seconds

    def result(self) -> dict[str, Any]:
        return {
            side: {
                "calls": self.calls[side],
                "calls_per_second": self.calls[side] / self.seconds[side],
                "cpu_us_per_call": self.cpu[side] / self.calls[side] * 1e6
                if self.calls[side]
                else None,
            }
            for side in self.SIDES
        }


async def _aio_pair(
    target: str, concurrency: int, warmup: float, duration: float, slice_: float
) -> dict[str, Any]:

    from microcall.examples_pb.recommendations_pb2_grpc import RecommendationsStub
    from microcall.grpc import AsyncChannel

    ours = AsyncChannel(target)
    # The plain stub uses microcall's own grpc channel: one connection for all
    # sides, so none pays for waking a connection the others keep warm.
    plain = ours.targets.channels[0]
    stub, our_stub = RecommendationsStub(plain), RecommendationsStub(ours)
    request = _request()
    calls: dict[str, Callable[[], Any]] = {
        "grpc": lambda: stub.Recommend(request),
        "grpc-deadline": lambda: stub.Recommend(request, timeout=DEADLINE),
        "microcall": lambda: our_stub.Recommend(request),
        "grpc-again": lambda: stub.Recommend(request),
    }
    for call in calls.values():
        await call()
    slices = Slices()

    async def worker() -> None:
        while not slices.finished:
            await calls[slices.side]()
            slices.done()

    tasks = [asyncio.ensure_future(worker()) for _ in range(concurrency)]
    for side in slices.turns(max(1, round(warmup / slice_ / len(Slices.SIDES)))):
        slices.side = side
        await asyncio.sleep(slice_)
    slices.measuring = True
    for side in slices.turns(max(1, round(duration / slice_))):
        slices.side = side
        began, cpu = time.perf_counter(), _cpu()
        await asyncio.sleep(slice_)
        slices.charge(side, _cpu() - cpu, time.perf_counter() - began)
    slices.measuring = False
    slices.finished = True
    await asyncio.gather(*tasks)
    await ours.close()
    return slices.result()


def _blocking_pair(
    target: str, concurrency: int, warmup: float, duration: float, slice_: float
) -> dict[str, Any]:
    from microcall.examples_pb.recommendations_pb2_grpc import RecommendationsStub
    from microcall.grpc import Channel

    ours = Channel(target)
    plain = ours.targets.channels[0]  # one connection for all sides, as above
    stub, our_stub = RecommendationsStub(plain), RecommendationsStub(ours)
    request = _request()
    calls: dict[str, Callable[[], Any]] = {
        "grpc": lambda: stub.Recommend(request),
        "grpc-deadline": lambda: stub.Recommend(request, timeout=DEADLINE),
        "microcall": lambda: our_stub.Recommend(request),
        "grpc-again": lambda: stub.Recommend(request),
    }
    for call in calls.values():
        call()
    slices = Slices()
    lock = threading.Lock()

    def worker() -> None:
        while not slices.finished:
            calls[slices.side]()
            with lock:
                slices.done()

    threads = [threading.Thread(target=worker, daemon=True) for _ in range(concurrency)]
    for thread in threads:
        thread.start()
    for side in slices.turns(max(1, round(warmup / slice_ / len(Slices.SIDES)))):
        slices.side = side
        time.sleep(slice_)
    slices.measuring = True
    for side in slices.turns(max(1, round(duration / slice_))):
        slices.side = side
        began, cpu = time.perf_counter(), _cpu()
        time.sleep(slice_)
        slices.charge(side, _cpu() - cpu, time.perf_counter() - began)
    slices.measuring = False
    slices.finished = True
    for thread in threads:
        thread.join(30)
    ours.close()
    return slices.result()


async def _tail(arguments: argparse.Namespace) -> dict[str, Any]:
    import microcall
    from microcall.examples_pb.recommendations_pb2 import RecommendationRequest
    from microcall.examples_pb.recommendations_pb2_grpc import RecommendationsStub
    from microcall.grpc import AsyncChannel, ChannelOptions, UnaryUnaryCall

    strategy = microcall.hedged() if arguments.strategy == "hedged" else microcall.single()
    plan = Plan(
        mode="open",
        rate=arguments.rate,
        concurrency=1,
        warmup=arguments.warmup,
        requests=arguments.requests,
        warmup_run=arguments.warmup_run,
        run=arguments.run,
        first_call=arguments.first_call,
    )
    record = Record()
    # Far above the slowest answer (500 ms): the deadline only stops a stuck run.
    options = ChannelOptions(timeout=5.0, strategy=strategy)
    async with AsyncChannel(arguments.target, options) as channel:
        stub = RecommendationsStub(channel)

        async def call(path: str, measured: bool) -> None:
            _, run_id, _, number = path.split("/")
            # The stub's static type is grpc's; over an AsyncChannel the call is microcall's.
            reply = cast(
                UnaryUnaryCall[Any, Any],
                stub.Recommend(RecommendationRequest(user_id=int(number), max_results=int(run_id))),
            )
            await reply
            if measured:
                record.attempts(reply.attempts)

        seconds = await offer(plan, call, record)
    return record.result(seconds)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.grpc_clients")
    commands = parser.add_subparsers(dest="command")
    served = commands.add_parser("serve", help="run a backend (used by the orchestrator)")
    served.add_argument("--seed", type=int, default=SEED)
    served.add_argument("--profile", type=LatencyProfile.from_json, default=None)
    cost = commands.add_parser("cost", help="measure one client's CPU per call")
    cost.add_argument("row", choices=[row.key for row in COST_ROWS])
    cost.add_argument("concurrency", type=int)
    cost.add_argument("--target", required=True)
    cost.add_argument("--warmup", type=float, default=1.0)
    cost.add_argument("--duration", type=float, default=5.0)
    pair = commands.add_parser("pair", help="both stubs in one process, taking turns")
    pair.add_argument("api", choices=["aio", "blocking"])
    pair.add_argument("concurrency", type=int)
    pair.add_argument("--target", required=True)
    pair.add_argument("--warmup", type=float, default=1.0)
    pair.add_argument("--duration", type=float, default=5.0)
    pair.add_argument("--slice", type=float, default=None, help="default: by concurrency")
    tail = commands.add_parser("tail", help="offer the open-loop load with one strategy")
    tail.add_argument("strategy", choices=[key for key, _ in TAIL_ROWS])
    tail.add_argument("--target", required=True)
    tail.add_argument("--rate", type=float, default=RATE)
    tail.add_argument("--warmup", type=int, default=800)
    tail.add_argument("--requests", type=int, default=4000)
    tail.add_argument("--warmup-run", type=int, default=1)
    tail.add_argument("--run", type=int, default=2)
    tail.add_argument("--first-call", type=int, default=0)
    parser.add_argument("--quick", action="store_true", help="short runs, one repeat")
    arguments = parser.parse_args(argv)

    if arguments.command == "serve":
        serve(arguments.profile, arguments.seed)
        return 0
    if arguments.command == "cost":
        row = next(row for row in COST_ROWS if row.key == arguments.row)
        timing = (arguments.target, arguments.concurrency, arguments.warmup, arguments.duration)
        if row.api == "aio":
            result = asyncio.run(_aio_cost(row.through, *timing))
        else:
            result = _blocking_cost(row.through, *timing)
        print(json.dumps(result), flush=True)
        return 0
    if arguments.command == "pair":
        timing = (arguments.target, arguments.concurrency, arguments.warmup, arguments.duration)
        slice_ = arguments.slice or slice_for(arguments.concurrency)
        if arguments.api == "aio":
            result = asyncio.run(_aio_pair(*timing, slice_))
        else:
            result = _blocking_pair(*timing, slice_)
        print(json.dumps(result), flush=True)
        return 0
    if arguments.command == "tail":
        print(json.dumps(asyncio.run(_tail(arguments))), flush=True)
        return 0
    print(run(BenchEnv.create(quick=arguments.quick)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
