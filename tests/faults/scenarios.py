"""The fault suite's scenarios, shared by the short tests (``make test``) and the long run (``make soak``).

Theory of operation. Everything here talks to the raw-socket
:class:`~tests.faultserver.FaultServer` on 127.0.0.1 and judges what a client
did with each misbehaviour. There are three scenarios, each a function the
short tests call with small counts and ``bench/soak.py`` calls with large ones:

* the misbehaviour matrix (:data:`MATRIX`, :func:`check_case`): each server
  fault must end in its typed error within the deadline plus :data:`MARGIN`,
  and each odd-but-valid answer must come back whole, with its own body;
* the soak (:func:`run_soak`): many concurrent calls mixing good answers and
  faults under the three strategies; it counts outcomes, checks that no body
  ever belongs to another request, measures how far past its deadline each
  timed-out call ended, and samples the process's resources after a warm-up
  and at the end;
* the cancellation storm (:func:`run_storm`): calls cancelled at random
  moments, from before the request is sent to the middle of a hedge.

Every answered body is the request target (``/soak/17``), so a crossed body
is seen at once. Counts are judged by the callers: the tests assert, the long
run reports.
"""

from __future__ import annotations

import asyncio
import gc
import random
import sys
import threading
import time
import warnings
from collections import Counter
from collections.abc import Awaitable, Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any, Literal

import psutil

import microcall
from microcall import CallError, Response
from microcall.transports.aiohttp import AiohttpTransport
from microcall.transports.h1 import H1Transport
from microcall.transports.httpx import HttpxTransport
from tests.faultserver import (
    HTTP10_FILLER,
    TRICKLE_BODY,
    Behaviour,
    Fault,
    FaultServer,
    Port,
)

TransportName = Literal["h1", "aiohttp", "httpx"]
TRANSPORTS: tuple[TransportName, ...] = ("h1", "aiohttp", "httpx")
# The one a client uses when given none (where httptools is installed, as in the tests).
DEFAULT_TRANSPORT: TransportName = "h1"

# A deadline short enough to keep the suite quick, long enough that a loaded
# two-core machine still gets the first response byte of a good answer.
FAULT_TIMEOUT = 0.3
# How long past its deadline a call may end: generous, since the machine is
# shared; the soak reports the real overshoot percentiles.
MARGIN = 2.0
# For the odd-but-valid answers: they must succeed, however slow the machine.
GENEROUS_TIMEOUT = 10.0
# For a fault that ends the call at once (refused, closed, reset, unparseable):
# the deadline is only a backstop there, and a short one would turn a stall
# of the loaded machine (a collector pass late in the suite) into a wrong
# DeadlineExceeded.
BACKSTOP_TIMEOUT = 5.0
# Retries and hedges that do not wait: the suite is about faults, not backoff.
QUICK_BACKOFF = microcall.Backoff(base=0.001, cap=0.005)


def make_client(
    transport: TransportName, base_url: str | None = None, **options: Any
) -> microcall.AsyncClient:
    """An AsyncClient on the named transport (``limits`` goes to the transport)."""
    limits = options.pop("limits", None)
    if transport == "httpx":
        options["transport"] = HttpxTransport(limits=limits)
    elif transport == "aiohttp":
        options["transport"] = AiohttpTransport(limits=limits)
    else:
        options["transport"] = H1Transport(limits=limits)
    return microcall.AsyncClient(base_url, **options)


# ------------------------------------------------------------ the matrix


def _echo(path: str) -> bytes:
    return path.encode()


@dataclass(frozen=True, slots=True)
class Case:
    """One misbehaviour and what a client must make of it.

    ``expected`` is the error type, or None for an answer that must succeed:
    then ``calls`` calls are made in turn on one client, each checked against
    ``body(path)``, so an answer that leaves bytes behind on a reused
    connection shows up in the next one. Each call's deadline follows from
    ``expected`` (:attr:`deadline`).
    """

    name: str
    port: Port
    expected: type[CallError] | None
    body: Callable[[str], bytes] = _echo
    calls: int = 3
    # The error is in what the message carries, not in its framing: the
    # connection is sound and may stay in the pool.
    framing_intact: bool = False

    @property
    def deadline(self) -> float:
        """Each call's deadline: short where the case is about it, a backstop elsewhere."""
        if self.expected is microcall.DeadlineExceeded:
            return FAULT_TIMEOUT
        if self.expected is None:
            return GENEROUS_TIMEOUT
        return BACKSTOP_TIMEOUT


MATRIX: tuple[Case, ...] = (
    Case("refused", Fault.REFUSE, microcall.ConnectError),
    Case("never answers", Fault.HANG, microcall.DeadlineExceeded),
    Case("stalls in the headers", Behaviour.STALL_HEADERS, microcall.DeadlineExceeded),
    Case("stalls in the body", Behaviour.STALL_BODY, microcall.DeadlineExceeded),
    Case("trickles past the deadline", Fault.TRICKLE, microcall.DeadlineExceeded),
    Case(
        "trickles in time",
        Behaviour.TRICKLE_IN_TIME,
        None,
        body=lambda _: TRICKLE_BODY,
        calls=1,
    ),
    Case("closes before answering", Fault.CLOSE, microcall.ReadError),
    Case("closes mid-headers", Behaviour.CLOSE_HEADERS, microcall.ReadError),
    Case("resets mid-headers", Fault.RESET_HEADERS, microcall.ReadError),
    Case(
        "Content-Length longer than the body, then close",
        Fault.HALF_BODY,
        microcall.ReadError,
    ),
    Case("resets mid-body", Fault.RESET, microcall.ReadError),
    Case("bad status line", Behaviour.BAD_STATUS, microcall.ProtocolError),
    Case("garbage", Fault.GARBAGE, microcall.ProtocolError),
    Case("huge headers", Behaviour.HUGE_HEADERS, microcall.ProtocolError),
    Case("bad chunking", Behaviour.BAD_CHUNKING, microcall.ProtocolError),
    Case("switches protocols unasked", Behaviour.UPGRADE, microcall.ProtocolError),
    Case(
        "a gzip body cut short",
        Behaviour.CUT_GZIP,
        microcall.ProtocolError,
        framing_intact=True,
    ),
    Case("Content-Length shorter than the body", Behaviour.SHORT_LENGTH, None),
    Case(
        "HTTP/1.0 without a length",
        Behaviour.HTTP10,
        None,
        body=lambda path: path.encode() + HTTP10_FILLER,
    ),
    Case("1xx before the answer", Behaviour.INFORMATIONAL, None),
    Case("closes after answering", Behaviour.CLOSE_AFTER_ANSWER, None),
)

# Cases a transport gets wrong today; the tests mark them xfail(strict=True),
# so each flips to a failure (to be unmarked) the day it is fixed.
KNOWN_FAILURES: dict[tuple[TransportName, Port], str] = {
    ("httpx", Behaviour.SHORT_LENGTH): (
        "httpcore keeps a connection whose previous response left extra bytes "
        "behind and reads them as the next response: the next call gets a body "
        "that belongs to no request"
    ),
    ("aiohttp", Behaviour.CUT_GZIP): (
        "aiohttp checks that a deflate stream ended, not a gzip one: the prefix "
        "that arrived is returned as the whole body"
    ),
    ("httpx", Behaviour.CUT_GZIP): (
        "httpx's gzip decoder never checks that the stream ended: the prefix "
        "that arrived is returned as the whole body"
    ),
}

Get = Callable[[str, float], Awaitable[Response]]


async def check_case(get: Get, base_url: str, case: Case) -> str | None:
    """Run ``case`` through ``get(url, timeout)``; None if the client did right, else what it did."""
    if case.expected is None:
        for index in range(case.calls):
            path = f"/call/{index}"
            try:
                response = await get(base_url + path, case.deadline)
            except CallError as error:
                return f"call {index} failed: {error!r}"
            want = case.body(path)
            if response.status_code != 200 or response.content != want:
                return (
                    f"call {index} answered {response.status_code} "
                    f"{response.content[:60]!r}, expected 200 {want[:60]!r}"
                )
        return None
    began = time.monotonic()
    try:
        response = await get(base_url + "/call/0", case.deadline)
    except CallError as error:
        elapsed = time.monotonic() - began
        if type(error) is not case.expected:
            return f"{type(error).__name__} ({error}), expected {case.expected.__name__}"
        if elapsed > case.deadline + MARGIN:
            return f"ended {elapsed:.3f} s after it began, deadline {case.deadline} s"
        return None
    return f"answered {response.status_code}, expected {case.expected.__name__}"


async def wait_until(condition: Callable[[], bool], *, within: float = 5.0) -> bool:
    """Poll ``condition()`` until it is true or ``within`` seconds pass."""
    give_up = time.monotonic() + within
    while not condition():
        if time.monotonic() > give_up:
            return False
        await asyncio.sleep(0.01)
    return True


# ------------------------------------------------------------ resources


@dataclass(frozen=True, slots=True)
class Resources:
    """What the process holds, with the fault server's own share taken out.

    Each connection still open on the server is two descriptors in this
    process (its end and the client's), legitimately there while the client
    pools it; counting them apart keeps the figure about leaks, not about how
    many connections the pool happens to hold at that instant.
    """

    fds: int
    threads: int
    tasks: int
    rss: int

    def growth(self, later: Resources) -> dict[str, int]:
        return {
            "fds": later.fds - self.fds,
            "threads": later.threads - self.threads,
            "tasks": later.tasks - self.tasks,
            "rss": later.rss - self.rss,
        }


def sample(faults: FaultServer) -> Resources:
    """The process's resources now (call from inside the loop, after the calls ended)."""
    gc.collect()
    process = psutil.Process()
    current = asyncio.current_task()
    client_tasks = asyncio.all_tasks() - faults.handler_tasks - {current}
    return Resources(
        fds=process.num_fds() - 2 * faults.open_connections,
        threads=threading.active_count(),
        tasks=len(client_tasks),
        rss=process.memory_info().rss,
    )


# ------------------------------------------------------------ the soak


@dataclass(frozen=True, slots=True)
class Ingredient:
    """One kind of call in the soak's mix."""

    kind: str
    port: Port
    weight: int
    timeout: float
    # None: must answer 200 with its own body; else the error types allowed
    # (a breaker opened by the fault is a right answer too).
    errors: tuple[type[CallError], ...] | None


_FAULT_ERRORS = (microcall.CircuitOpen,)
SOAK_MIX: tuple[Ingredient, ...] = (
    Ingredient("good", Behaviour.ECHO, 60, 5.0, None),
    Ingredient("slow", Behaviour.SLOW, 8, 5.0, None),
    Ingredient("reset mid-body", Fault.RESET, 7, 5.0, (microcall.ReadError, *_FAULT_ERRORS)),
    Ingredient(
        "reset mid-headers", Fault.RESET_HEADERS, 4, 5.0, (microcall.ReadError, *_FAULT_ERRORS)
    ),
    Ingredient("half body", Fault.HALF_BODY, 4, 5.0, (microcall.ReadError, *_FAULT_ERRORS)),
    Ingredient("hang", Fault.HANG, 7, 0.1, (microcall.DeadlineExceeded, *_FAULT_ERRORS)),
    Ingredient("garbage", Fault.GARBAGE, 6, 5.0, (microcall.ProtocolError, *_FAULT_ERRORS)),
    Ingredient(
        "stall body", Behaviour.STALL_BODY, 4, 0.1, (microcall.DeadlineExceeded, *_FAULT_ERRORS)
    ),
)

STRATEGIES: dict[str, microcall.Strategy] = {
    "single": microcall.single(),
    "retry": microcall.retry(3, backoff=QUICK_BACKOFF),
    "hedged": microcall.hedged(0.01, attempts=2),
}


@dataclass(slots=True)
class SoakReport:
    """What a soak did and saw."""

    calls: int = 0
    warmup: int = 0
    by_kind: Counter[str] = field(default_factory=Counter)
    by_strategy: Counter[str] = field(default_factory=Counter)
    outcomes: Counter[str] = field(default_factory=Counter)
    # Each a description of a call that ended the wrong way: must stay empty.
    wrong: list[str] = field(default_factory=list)
    crossed: int = 0
    # Time to outcome minus deadline, for the calls that ended in DeadlineExceeded.
    overshoots: list[float] = field(default_factory=list)
    # Before the client existed, after the warm-up, at the end, after it closed.
    before: Resources | None = None
    warm: Resources | None = None
    end: Resources | None = None
    closed: Resources | None = None
    seconds: float = 0.0

    def growth(self) -> dict[str, int]:
        assert self.warm is not None
        assert self.end is not None
        return self.warm.growth(self.end)


def _record_wrong(report: SoakReport, text: str) -> None:
    # Keep a few for the message; the count is what the assertion reads.
    if len(report.wrong) < 20:
        report.wrong.append(text)
    else:
        report.wrong.append("...")
        del report.wrong[20:-1]


async def _one_soak_call(
    client: microcall.AsyncClient,
    faults: FaultServer,
    ingredient: Ingredient,
    strategy: str,
    index: int,
    report: SoakReport,
) -> None:
    path = f"/soak/{index}"
    began = time.monotonic()
    report.calls += 1
    report.by_kind[ingredient.kind] += 1
    report.by_strategy[strategy] += 1
    try:
        response = await client.get(
            faults.url(ingredient.port) + path,
            timeout=ingredient.timeout,
            strategy=STRATEGIES[strategy],
        )
    except CallError as error:
        name = type(error).__name__
        report.outcomes[name] += 1
        if isinstance(error, microcall.DeadlineExceeded):
            report.overshoots.append(time.monotonic() - began - ingredient.timeout)
        if ingredient.errors is None or not isinstance(error, ingredient.errors):
            _record_wrong(report, f"{ingredient.kind} with {strategy}: {error!r}")
        return
    report.outcomes[f"{response.status_code}"] += 1
    if response.content != path.encode():
        if response.content.startswith(b"/"):
            report.crossed += 1
        _record_wrong(report, f"{ingredient.kind} with {strategy}: body {response.content[:40]!r}")
    elif ingredient.errors is not None:
        _record_wrong(report, f"{ingredient.kind} with {strategy}: answered {response.status_code}")


async def _soak_batch(
    client: microcall.AsyncClient,
    faults: FaultServer,
    calls: int,
    concurrency: int,
    rng: random.Random,
    report: SoakReport,
    first_index: int,
) -> None:
    kinds = rng.choices(SOAK_MIX, weights=[i.weight for i in SOAK_MIX], k=calls)
    strategies = rng.choices(list(STRATEGIES), k=calls)
    queue = iter(enumerate(zip(kinds, strategies, strict=True), start=first_index))

    async def worker() -> None:
        for index, (ingredient, strategy) in queue:
            await _one_soak_call(client, faults, ingredient, strategy, index, report)

    await asyncio.gather(*(worker() for _ in range(concurrency)))


async def run_soak(
    faults: FaultServer,
    *,
    calls: int,
    warmup: int,
    concurrency: int = 32,
    transport: TransportName = DEFAULT_TRANSPORT,
    seed: int = 14,
) -> SoakReport:
    """``warmup`` calls, a resource sample, ``calls`` more calls, a sample; all on one client."""
    rng = random.Random(seed)
    report = SoakReport(warmup=warmup)
    began = time.monotonic()
    report.before = sample(faults)
    async with make_client(transport) as client:
        await _soak_batch(client, faults, warmup, concurrency, rng, report, 0)
        report.warm = await _settled_sample(faults)
        warm_calls = report.calls
        await _soak_batch(client, faults, calls, concurrency, rng, report, warm_calls)
        report.end = await _settled_sample(faults)
    await wait_until(lambda: faults.open_connections == 0)
    report.closed = await _settled_sample(faults)
    report.seconds = time.monotonic() - began
    return report


async def _settled_sample(faults: FaultServer) -> Resources:
    # Connections the client dropped are closed on the server's next read;
    # only the pooled ones (to the good servers) may stay.
    fault_ports = [i.port for i in SOAK_MIX if i.errors is not None]
    await wait_until(lambda: all(faults.open_connections_on(p) == 0 for p in fault_ports))
    await asyncio.sleep(0.05)
    return sample(faults)


# ------------------------------------------------------------ the cancellation storm


@contextmanager
def everything_reported(loop: asyncio.AbstractEventLoop) -> Iterator[list[str]]:
    """Debug mode, warnings as errors, and a list of whatever the loop or the GC had to report."""
    reported: list[str] = []

    def on_loop_error(loop: asyncio.AbstractEventLoop, context: dict[str, Any]) -> None:
        reported.append(f"loop: {context.get('message')} {context.get('exception')!r}")

    def on_unraisable(unraisable: Any) -> None:
        reported.append(f"unraisable: {unraisable.exc_value!r} in {unraisable.object!r}")

    previous_handler = loop.get_exception_handler()
    previous_hook = sys.unraisablehook
    was_debug = loop.get_debug()
    loop.set_exception_handler(on_loop_error)
    loop.set_debug(True)
    sys.unraisablehook = on_unraisable
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error")
            yield reported
    finally:
        sys.unraisablehook = previous_hook
        loop.set_debug(was_debug)
        loop.set_exception_handler(previous_handler)


# Where a call is when it is cancelled: the number of loop turns it gets first
# (0: cancelled before it ran, so before anything is sent; a few: connecting or
# writing; more: reading, waiting for a hedge, or the hedge itself), or a delay.
CANCEL_MOMENTS: tuple[int | float, ...] = (
    0,
    1,
    2,
    3,
    5,
    8,
    13,
    0.002,
    0.005,
    0.015,
    0.03,
    0.06,
    0.1,
)

STORM_TARGETS: tuple[tuple[Port, str], ...] = (
    (Behaviour.ECHO, "single"),
    (Behaviour.ECHO, "hedged"),
    (Behaviour.SLOW, "single"),
    (Behaviour.SLOW, "hedged"),
    (Behaviour.SLOW, "retry"),
    (Fault.HANG, "hedged"),
    (Fault.HANG, "single"),
    (Fault.RESET, "retry"),
)


@dataclass(slots=True)
class StormReport:
    """What a cancellation storm did."""

    calls: int = 0
    cancelled: int = 0
    finished: Counter[str] = field(default_factory=Counter)
    wrong: list[str] = field(default_factory=list)
    by_moment: Counter[str] = field(default_factory=Counter)


async def _cancel_one(
    client: microcall.AsyncClient,
    faults: FaultServer,
    target: tuple[Port, str],
    moment: int | float,
    index: int,
    report: StormReport,
) -> None:
    port, strategy = target
    path = f"/storm/{index}"
    task = asyncio.create_task(
        client.get(faults.url(port) + path, timeout=1.0, strategy=STRATEGIES[strategy])
    )
    if isinstance(moment, int):
        for _ in range(moment):
            await asyncio.sleep(0)
    else:
        await asyncio.sleep(moment)
    task.cancel()
    report.calls += 1
    report.by_moment[str(moment)] += 1
    try:
        response = await task
    except asyncio.CancelledError:
        report.cancelled += 1
        return
    except CallError as error:
        report.finished[type(error).__name__] += 1
        return
    report.finished[str(response.status_code)] += 1
    if response.content != path.encode():
        report.wrong.append(f"{port} with {strategy}: body {response.content[:40]!r}")


async def run_storm(
    client: microcall.AsyncClient,
    faults: FaultServer,
    *,
    calls: int,
    concurrency: int = 32,
    seed: int = 14,
) -> StormReport:
    """``calls`` calls on ``client``, each cancelled at a random moment."""
    rng = random.Random(seed)
    report = StormReport()
    plan = iter(
        enumerate(
            zip(
                rng.choices(STORM_TARGETS, k=calls),
                rng.choices(CANCEL_MOMENTS, k=calls),
                strict=True,
            )
        )
    )

    async def worker() -> None:
        for index, (target, moment) in plan:
            await _cancel_one(client, faults, target, moment, index, report)

    await asyncio.gather(*(worker() for _ in range(concurrency)))
    return report


def percentile(values: list[float], q: float) -> float:
    """The ``q``-quantile (0..1) by nearest rank; 0.0 for no values."""
    if not values:
        return 0.0
    ordered = sorted(values)
    rank = min(len(ordered) - 1, max(0, round(q * (len(ordered) - 1))))
    return ordered[rank]
