"""Running a load plan here, or spread over worker processes with their results merged exactly.

One process's event loop tops out at a few thousand calls a second; past
that its lag grows and the calls it starts late all look slow. ``--workers
N`` starts N processes (spawned, so none inherits this one's threads or
loop), each running its share of the plan (:meth:`Plan.share`). They start
together at a barrier, report their :class:`Stats` twice a second for the
live view and once at the end, and the parent merges them: the sketches
merge exactly, so the percentiles are those of every call.
"""

from __future__ import annotations

import asyncio
import contextlib
import multiprocessing
import os
import queue as queues
import signal
import time
from collections.abc import Callable
from multiprocessing.synchronize import Barrier
from typing import Any

from microcall.cli import _common
from microcall.cli._common import CliError
from microcall.cli.load._generator import Plan, fast_loop, run
from microcall.cli.load._stats import Stats

Update = Callable[[Stats], None]

# How often the live view hears of progress.
TICK = 0.25
WORKER_TICK = 0.5
# Spawning a Python process and importing microcall takes a second or two on
# a busy machine; far longer means a worker is stuck.
START_TIMEOUT = 60.0
# How long interrupted workers get to send what they measured.
INTERRUPT_GRACE = 3.0


class Interrupted(Exception):
    """Ctrl-C stopped the run; ``stats`` holds the calls that ended before it."""

    def __init__(self, stats: Stats) -> None:
        super().__init__("interrupted")
        self.stats = stats


def run_load(plan: Plan, workers: int, update: Update) -> Stats:
    """Run ``plan`` over ``workers`` processes (1: this one), calling ``update`` as it goes.

    Ctrl-C raises :class:`Interrupted` carrying what was measured until then.
    """
    if workers == 1:
        return _run_here(plan, update)
    return _run_spread(plan, workers, update)


def _run_here(plan: Plan, update: Update) -> Stats:
    stats = Stats()

    async def main() -> None:
        async def tick() -> None:
            while True:
                await asyncio.sleep(TICK)
                update(stats)

        ticker = asyncio.create_task(tick())
        try:
            await run(plan, stats)
        finally:
            ticker.cancel()

    try:
        with asyncio.Runner(loop_factory=fast_loop()) as runner:
            runner.run(main())
    except KeyboardInterrupt:
        stats.cut_short(time.monotonic())
        raise Interrupted(stats) from None
    update(stats)
    return stats


def _worker(plan: Plan, results: multiprocessing.Queue[Any], barrier: Barrier) -> None:
    """A worker process: run its share, report progress and the end result."""
    stats = Stats()

    async def main() -> None:
        async def tick() -> None:
            while True:
                await asyncio.sleep(WORKER_TICK)
                # Per-second sketches grow with the run; only the end result carries them.
                results.put(("progress", plan.worker, stats.without_seconds()))

        def ready() -> None:
            barrier.wait(START_TIMEOUT)

        ticker = asyncio.create_task(tick())
        try:
            await run(plan, stats, ready=ready)
        finally:
            ticker.cancel()

    try:
        with asyncio.Runner(loop_factory=fast_loop()) as runner:
            runner.run(main())
    except KeyboardInterrupt:  # what was measured so far goes to the parent as the result
        stats.cut_short(time.monotonic())
    except BaseException as error:
        barrier.abort()
        results.put(("error", plan.worker, f"{type(error).__name__}: {error}"))
        return
    results.put(("done", plan.worker, stats))


def _run_spread(plan: Plan, workers: int, update: Update) -> Stats:
    context = multiprocessing.get_context("spawn")
    results: multiprocessing.Queue[Any] = context.Queue()
    barrier = context.Barrier(workers + 1)
    processes = [
        context.Process(
            target=_worker, args=(plan.share(number, workers), results, barrier), daemon=True
        )
        for number in range(workers)
    ]
    for process in processes:
        process.start()
    latest: dict[int, Stats] = {}
    done: dict[int, Stats] = {}
    try:
        _collect(processes, results, barrier, update, latest, done)
    except KeyboardInterrupt:
        raise Interrupted(_after_interrupt(processes, results, latest, done)) from None
    finally:
        for process in processes:
            if process.is_alive():
                process.terminate()
    merged = merge(done.values())
    update(merged)
    return merged


def _after_interrupt(
    processes: list[Any],
    results: multiprocessing.Queue[Any],
    latest: dict[int, Stats],
    done: dict[int, Stats],
) -> Stats:
    """Stop the workers and gather what each measured (a Ctrl-C in a terminal reached them too)."""
    for process in processes:
        if process.is_alive() and process.pid is not None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(process.pid, signal.SIGINT)
    give_up = time.monotonic() + INTERRUPT_GRACE
    while len(done) < len(processes) and time.monotonic() < give_up:
        try:
            kind, number, payload = results.get(timeout=TICK)
        except queues.Empty:
            continue
        if kind in ("progress", "done"):
            latest[number] = payload
        if kind == "done":
            done[number] = payload
    return merge({**latest, **done}.values())


def _collect(
    processes: list[Any],
    results: multiprocessing.Queue[Any],
    barrier: Barrier,
    update: Update,
    latest: dict[int, Stats],
    done: dict[int, Stats],
) -> None:
    """Wait for every worker's end result, passing progress to ``update``."""
    workers = len(processes)
    with contextlib.suppress(Exception):
        barrier.wait(START_TIMEOUT)
    while len(done) < workers:
        try:
            kind, number, payload = results.get(timeout=TICK)
        except queues.Empty:
            if any(not p.is_alive() and n not in done for n, p in enumerate(processes)):
                _drain_errors(results)
                raise CliError("a load worker died", _common.EXIT_BUG) from None
            update(merge(latest.values()))
            continue
        if kind == "error":
            raise CliError(f"a load worker failed: {payload}", _common.EXIT_BUG)
        latest[number] = payload
        if kind == "done":
            done[number] = payload
    for process in processes:
        process.join(START_TIMEOUT)


def _drain_errors(results: multiprocessing.Queue[Any]) -> None:
    with contextlib.suppress(queues.Empty):
        while True:
            kind, _number, payload = results.get(timeout=0.1)
            if kind == "error":
                raise CliError(f"a load worker failed: {payload}", _common.EXIT_BUG)


def merge(parts: Any) -> Stats:
    """One Stats holding every call of ``parts``."""
    merged = Stats()
    for part in parts:
        merged.merge(part)
    return merged
