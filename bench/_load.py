"""Offer load to a backend with one client and strategy, in its own process; print JSON.

``python -m bench._load --url URL [--url URL ...] --client microcall --strategy hedged
--mode open --rate 800 --warmup 800 --requests 4000 --warmup-run 1 --run 2``

Two ways of offering load:

* ``open``: a fixed timetable of ``--rate`` requests per second. Request
  ``i`` is due at ``start + i / rate`` and is sent then whether or not the
  earlier ones have finished, so every strategy faces the same offered load;
  its latency runs from the time it was due (a late start counts against the
  client that caused it, rather than hiding as coordinated omission).
* ``closed``: ``--concurrency`` workers, each sending its next request when
  the previous one finished; latency runs from the send. A strategy that cuts
  latency raises its own request rate here.

The first ``--warmup`` requests (run ``--warmup-run``) open connections and
let a learned hedge delay fill; the next ``--requests`` (run ``--run``) are
measured. Request ``i`` calls ``/run/{run}/call/{first_call + i}`` (see
bench/_tail_backend.py: call numbers fix the backend's luck).

The JSON has the latency percentiles of the measured calls that succeeded
(ms; ``p50_all_ms`` counts the failed ones too), the calls
that failed (an exception, or a status other than 200), how late the open
loop's sends were, and for microcall what the attempt records say: attempts
sent by kind, refusals by reason, when hedges started, which endpoints the
attempts went to.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import resource
import statistics
import sys
import time
from collections import Counter
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from bench._stats import percentile

OK = 200
# Far above the slowest answer of any backend here (500 ms): the deadline is
# not what is measured, it only stops a stuck run.
CALL_TIMEOUT = 5.0
# A learned hedge delay is kept per route; all calls here are one route.
ROUTE = "GET /run/{run}/call/{call}"
# The open loop starts its timetable this long after the client is ready.
START_SLACK = 0.05


@dataclass(slots=True)
class Record:
    """What the measured calls did."""

    latencies: list[float] = field(default_factory=list)
    every_latency: list[float] = field(default_factory=list)  # failed calls too
    lags: list[float] = field(default_factory=list)
    failures: int = 0
    failure_kinds: Counter[str] = field(default_factory=Counter)
    warmup_failures: int = 0
    first_error: str = ""
    sent: Counter[str] = field(default_factory=Counter)
    refused: Counter[str] = field(default_factory=Counter)
    hedge_starts: list[float] = field(default_factory=list)
    endpoints: Counter[str] = field(default_factory=Counter)
    cpu_started: float = 0.0
    cpu_ended: float = 0.0
    wait_started: float | None = None
    wait_ended: float | None = None

    def failed(self, what: object, *, measured: bool) -> None:
        if not measured:
            self.warmup_failures += 1
            return
        self.failures += 1
        self.failure_kinds[type(what).__name__] += 1
        self.first_error = self.first_error or repr(what)[:300]

    def attempts(self, attempts: Sequence[Any]) -> None:
        for attempt in attempts:
            if not attempt.sent:
                self.refused[attempt.error or "refused"] += 1
                continue
            self.sent[str(attempt.kind)] += 1
            self.endpoints[attempt.endpoint] += 1
            if str(attempt.kind) == "hedge":
                self.hedge_starts.append(attempt.started)

    def result(self, seconds: float) -> dict[str, Any]:
        latencies = sorted(self.latencies)
        lags = sorted(self.lags)

        def ms(values: list[float], fraction: float) -> float | None:
            return percentile(values, fraction) * 1e3 if values else None

        return {
            "calls": len(latencies) + self.failures,
            "completed": len(latencies),
            "failures": self.failures,
            "failure_kinds": dict(self.failure_kinds),
            "warmup_failures": self.warmup_failures,
            "first_error": self.first_error,
            "seconds": seconds,
            "p50_ms": ms(latencies, 0.50),
            "p95_ms": ms(latencies, 0.95),
            "p99_ms": ms(latencies, 0.99),
            "p999_ms": ms(latencies, 0.999),
            "max_ms": latencies[-1] * 1e3 if latencies else None,
            "p50_all_ms": ms(sorted(self.every_latency), 0.50),
            "lag_p99_ms": ms(lags, 0.99),
            "lag_max_ms": lags[-1] * 1e3 if lags else None,
            "sent": dict(self.sent),
            "refused": dict(self.refused),
            "hedge_start_median_ms": statistics.median(self.hedge_starts) * 1e3
            if self.hedge_starts
            else None,
            "endpoints": dict(self.endpoints),
            "cpu_us_per_call": (self.cpu_ended - self.cpu_started) / len(latencies) * 1e6
            if latencies
            else None,
            "cpu_wait_share": (self.wait_ended - self.wait_started) / seconds
            if self.wait_started is not None and self.wait_ended is not None and seconds > 0
            else None,
        }


Call = Callable[[str, bool], Awaitable[None]]


@dataclass(frozen=True, slots=True, kw_only=True)
class Plan:
    """Which requests to send and how."""

    mode: str
    rate: float
    concurrency: int
    warmup: int
    requests: int
    warmup_run: int
    run: int
    first_call: int

    def path(self, index: int) -> tuple[str, bool]:
        measured = index >= self.warmup
        run = self.run if measured else self.warmup_run
        return f"run/{run}/call/{self.first_call + index}", measured


async def offer(plan: Plan, call: Call, record: Record) -> float:
    """Send every request of ``plan`` through ``call``; the measured window's length."""
    loop = asyncio.get_running_loop()
    window: list[float] = []

    async def one(index: int, due: float) -> None:
        path, measured = plan.path(index)
        if measured and not window:
            window.append(due)
            record.cpu_started = _process_cpu()
            record.wait_started = run_queue_wait()
        began = loop.time()
        if measured and plan.mode == "open":
            record.lags.append(began - due)
        try:
            await call(path, measured)
        except Exception as error:
            record.failed(error, measured=measured)
            if measured:
                record.every_latency.append(loop.time() - (due if plan.mode == "open" else began))
            return
        if measured:
            latency = loop.time() - (due if plan.mode == "open" else began)
            record.latencies.append(latency)
            record.every_latency.append(latency)

    total = plan.warmup + plan.requests
    if plan.mode == "open":
        interval = 1.0 / plan.rate
        start = loop.time() + START_SLACK
        tasks = []
        for index in range(total):
            due = start + index * interval
            wait = due - loop.time()
            if wait > 0:
                await asyncio.sleep(wait)
            tasks.append(loop.create_task(one(index, due)))
        await asyncio.gather(*tasks)
    else:
        numbers = iter(range(total))

        async def worker() -> None:
            for index in numbers:
                await one(index, loop.time())

        await asyncio.gather(*(worker() for _ in range(plan.concurrency)))
    record.cpu_ended = _process_cpu()
    record.wait_ended = run_queue_wait()
    return loop.time() - window[0] if window else 0.0


def run_queue_wait() -> float | None:
    """Seconds this thread has waited for a CPU while runnable (Linux schedstat), if known.

    Other processes on the client's core show up here: a client that falls
    behind its timetable while this grows was starved, not slow.
    """
    try:
        with open("/proc/thread-self/schedstat", encoding="ascii") as stats:
            return int(stats.read().split()[1]) / 1e9
    except (OSError, IndexError, ValueError):
        return None


def _process_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


class Failed(Exception):
    """A call that ended with a status other than 200."""


# ------------------------------------------------------------------ clients


def microcall_strategy(name: str) -> Any:
    import microcall

    strategies = {
        "single": microcall.single(),
        "hedged": microcall.hedged(),  # learned delay, max_extra_load=0.05
        # The same with a second hedge (sent after twice the learned delay).
        "hedged3": microcall.hedged(attempts=3),
        "retry-timeout": microcall.retry(3, attempt_timeout=0.01),
        "retry2": microcall.retry(2),
        "retry3": microcall.retry(3),
    }
    return strategies[name]


def microcall_budget(name: str) -> dict[str, Any]:
    from microcall.policy.budget import RetryBudgetConfig

    if name == "default":
        return {}
    if name == "none":
        return {"budget": None}
    if name == "strict":  # no reserve: at most 20% of the calls, whatever the rate
        return {"budget": RetryBudgetConfig(min_retries_per_second=0)}
    raise SystemExit(f"unknown budget {name!r}")


async def with_microcall(arguments: argparse.Namespace, plan: Plan, record: Record) -> float:
    import microcall
    from microcall.policy.balancer import BalancerConfig

    urls = arguments.url if len(arguments.url) > 1 else arguments.url[0]
    async with microcall.AsyncClient(
        urls,
        timeout=CALL_TIMEOUT,
        strategy=microcall_strategy(arguments.strategy),
        balancer=BalancerConfig(mode=arguments.balancer),
        **microcall_budget(arguments.budget),
    ) as client:
        stalling = (
            asyncio.get_running_loop().create_task(_stall_every_second(arguments.stall))
            if arguments.stall
            else None
        )

        async def call(path: str, measured: bool) -> None:
            try:
                response = await client.get(path, route=ROUTE)
            except microcall.CallError as error:
                if measured:
                    record.attempts(error.attempts)
                raise
            if measured:
                record.attempts(response.attempts)
            if response.status_code != OK:
                raise Failed(response.status_code)

        try:
            return await offer(plan, call, record)
        finally:
            if stalling is not None:
                stalling.cancel()


async def _stall_every_second(seconds: float) -> None:
    """Hold the event loop for ``seconds`` once a second, as a long GC pause would."""
    while True:
        await asyncio.sleep(1.0)
        time.sleep(seconds)  # noqa: ASYNC251  # blocking is the point


async def with_aio_request(arguments: argparse.Namespace, plan: Plan, record: Record) -> float:
    import aio_request
    import aiohttp
    import yarl

    strategy = aio_request.parallel_strategy(
        attempts_count=2, delays_provider=aio_request.constant_delays(delay=arguments.delay)
    )
    async with aiohttp.ClientSession() as session:
        client = aio_request.setup(
            transport=aio_request.AioHttpTransport(session),
            endpoint=arguments.url[0],
            safe_method_strategy=strategy,
        )

        async def call(path: str, measured: bool) -> None:
            async with client.request(
                aio_request.get(yarl.URL(path)),
                deadline=aio_request.Deadline.from_timeout(CALL_TIMEOUT),
            ) as response:
                await response.read()
                if response.status != OK:
                    raise Failed(response.status)

        return await offer(plan, call, record)


CLIENTS = {"microcall": with_microcall, "aio-parallel": with_aio_request}


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench._load")
    parser.add_argument("--url", action="append", required=True)
    parser.add_argument("--client", choices=sorted(CLIENTS), default="microcall")
    parser.add_argument("--strategy", default="single")
    parser.add_argument("--budget", default="default")
    parser.add_argument("--balancer", default="peak_ewma")
    parser.add_argument("--delay", type=float, default=0.005, help="aio-request's fixed delay")
    parser.add_argument("--mode", choices=("open", "closed"), default="open")
    parser.add_argument("--rate", type=float, default=800.0)
    parser.add_argument("--concurrency", type=int, default=16)
    parser.add_argument("--warmup", type=int, default=800)
    parser.add_argument("--requests", type=int, default=4000)
    parser.add_argument("--warmup-run", type=int, default=0)
    parser.add_argument("--run", type=int, default=1)
    parser.add_argument("--first-call", type=int, default=0)
    parser.add_argument(
        "--stall", type=float, default=0.0, help="hold the loop this long once a second"
    )
    arguments = parser.parse_args(argv)
    plan = Plan(
        mode=arguments.mode,
        rate=arguments.rate,
        concurrency=arguments.concurrency,
        warmup=arguments.warmup,
        requests=arguments.requests,
        warmup_run=arguments.warmup_run,
        run=arguments.run,
        first_call=arguments.first_call,
    )
    record = Record()
    began = time.perf_counter()
    seconds = asyncio.run(CLIENTS[arguments.client](arguments, plan, record))
    result = record.result(seconds)
    result["process_seconds"] = time.perf_counter() - began
    print(json.dumps(result), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
