"""The load itself: calls at a fixed rate (open loop) or a fixed number in flight (closed loop).

Open loop, as wrk2 does it: call ``i`` is due at ``start + i / rate``
whatever happened to the calls before it, and its latency counts from when
it was due, not from when it was sent. A server that stalls for a second
cannot hide the calls that piled up behind the stall (the "coordinated
omission" of closed-loop tools), and neither can the generator: if its own
event loop runs late, the calls it starts late are measured from their due
time. How late it started each call is measured apart as its lag, so a
report can say when the generator, not the server, was the bottleneck.

Closed loop: ``concurrency`` callers each send a call as soon as their last
one ended. It measures what a client with that many calls in flight sees,
not what a server does at a rate; the latency counts from the send.

With ``workers > 1`` each process runs this with a share of the rate (its
calls interleaved with the others' by a phase offset) or of the concurrency.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import microcall
from microcall.cli._options import parse_strategy
from microcall.cli.load._stats import Stats
from microcall.errors import CallError, ClientClosed

# Calls a load client may hold: far more than its connections, so an open
# loop's backlog shows as latency (and deadline failures) rather than as
# ClientOverloaded refusals made by the generator itself.
MAX_HELD_CALLS = 100_000


@dataclass(frozen=True, slots=True, kw_only=True)
class Plan:
    """One worker's share of a load run; picklable, so it crosses to worker processes."""

    method: str
    bases: tuple[str, ...]
    path: str
    headers: dict[str, str] = field(default_factory=dict)
    params: list[tuple[str, str]] = field(default_factory=list)
    json: Any = None
    content: bytes | None = None
    deadline: float = 10.0
    priority: str | None = None
    strategy: str = "single"
    idempotent: bool = False
    rate: float | None = None
    concurrency: int | None = None
    duration: float = 10.0
    connections: int = 100
    worker: int = 0
    workers: int = 1

    def share(self, worker: int, workers: int) -> Plan:
        """This plan as worker ``worker`` of ``workers`` runs it."""
        from dataclasses import replace

        return replace(self, worker=worker, workers=workers)


def describe_outcome(outcome: microcall.Response | BaseException) -> str | None:
    """None for a success, else the kind of failure: ``"HTTP 503"``, ``"ConnectError"``."""
    if isinstance(outcome, microcall.Response):
        return None if outcome.status_code < 400 else f"HTTP {outcome.status_code}"
    return type(outcome).__name__


async def run(plan: Plan, stats: Stats, *, ready: Callable[[], None] | None = None) -> Stats:
    """Run ``plan``, recording into ``stats`` as calls end; ``ready()`` just before the start."""
    options: dict[str, Any] = {
        "timeout": plan.deadline,
        "strategy": parse_strategy(plan.strategy),
        "limits": microcall.Limits(max_connections=plan.connections),
        "max_calls": MAX_HELD_CALLS,
    }
    if plan.priority is not None:
        options["priority"] = plan.priority
    call: dict[str, Any] = {"headers": plan.headers, "params": plan.params}
    if plan.json is not None:
        call["json"] = plan.json
    elif plan.content is not None:
        call["content"] = plan.content
    if plan.idempotent:
        call["idempotent"] = True
    async with microcall.AsyncClient(list(plan.bases), **options) as client:
        if ready is not None:
            ready()
        start = stats.began = time.monotonic()
        stats.window = plan.duration

        async def one(due: float) -> None:
            began = time.monotonic()
            outcome: microcall.Response | BaseException
            try:
                outcome = await client.request(plan.method, plan.path, **call)
                attempts = outcome.attempts
            except ClientClosed:
                return  # cut short by the run's own end (Ctrl-C): not the server's failure
            except CallError as error:
                outcome, attempts = error, error.attempts
            now = time.monotonic()
            sent = [attempt for attempt in attempts if attempt.sent]
            from_send = waited = None
            if sent:
                # A call may wait in the client for one of its connections
                # before its first request goes out: the engine times the
                # attempts from then, so their span is the time on the wire.
                from_send = max(a.started + a.duration for a in sent) - min(a.started for a in sent)
                waited = max(0.0, now - began - from_send)
                stats.sent_until = max(stats.sent_until, now - from_send - start)
            stats.record(
                now - start, now - due, describe_outcome(outcome), len(sent), from_send, waited
            )
            stats.elapsed = now - start

        if plan.rate is not None:
            await _open_loop(plan, plan.rate, start, one, stats)
        else:
            await _closed_loop(plan, plan.concurrency or 1, start, one)
    return stats


async def _open_loop(
    plan: Plan, rate: float, start: float, one: Callable[[float], Any], stats: Stats
) -> None:
    # Worker k of n sends calls k, k + n, k + 2n... of the whole schedule.
    interval = plan.workers / rate
    offset = plan.worker / rate
    end = start + plan.duration
    running: set[asyncio.Task[None]] = set()

    async def timed(due: float) -> None:
        # The lag is taken when the call really starts: a backlog in the
        # event loop shows here as well as a late wake-up of the scheduler.
        stats.lag.add(max(0.0, time.monotonic() - due))
        await one(due)

    number = 0
    while True:
        due = start + offset + number * interval
        if due >= end:
            break
        now = time.monotonic()
        if due > now:
            await asyncio.sleep(due - now)
            continue
        # Every call already due starts now: a late wake-up never drops calls.
        while due <= now and due < end:
            task = asyncio.create_task(timed(due))
            running.add(task)
            task.add_done_callback(running.discard)
            number += 1
            due = start + offset + number * interval
    if running:
        await asyncio.gather(*running)


async def _closed_loop(
    plan: Plan, concurrency: int, start: float, one: Callable[[float], Any]
) -> None:
    share = concurrency // plan.workers + (plan.worker < concurrency % plan.workers)
    end = start + plan.duration

    async def caller() -> None:
        while time.monotonic() < end:
            await one(time.monotonic())

    async with asyncio.TaskGroup() as group:
        for _ in range(share):
            group.create_task(caller())


def fast_loop() -> Callable[[], asyncio.AbstractEventLoop] | None:
    """uvloop's event loop where installed: it roughly halves the generator's cost per call."""
    try:
        import uvloop
    except ImportError:  # pragma: no cover - depends on the platform
        return None
    return uvloop.new_event_loop
