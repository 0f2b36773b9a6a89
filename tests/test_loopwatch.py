"""The loop watch on a real event loop: it sees the loop held, and stops when idle."""

from __future__ import annotations

import asyncio
import time

import pytest

from microcall._loopwatch import LoopWatch
from microcall.policy.stalls import DEFAULT_INTERVAL

HOLD = 0.1  # well past the 20 ms that counts as a stall


async def test_a_held_loop_is_a_stall_and_is_taken_out_of_latencies() -> None:
    watch = LoopWatch(lambda: True)
    start = time.monotonic()
    watch.started(start)
    time.sleep(HOLD)  # noqa: ASYNC251  # the loop cannot run: the point
    await asyncio.sleep(DEFAULT_INTERVAL * 3)  # the late timer runs, and the next one
    now = time.monotonic()
    stalled = watch.stalls.within(start, now)
    assert HOLD <= stalled <= now - start
    assert watch.own_latency(now - start, now) == pytest.approx(now - start - stalled)
    watch.close()


async def test_the_watch_stops_when_nothing_is_in_flight_and_starts_again() -> None:
    in_flight = [True]
    watch = LoopWatch(lambda: in_flight[0])
    watch.started(time.monotonic())
    await asyncio.sleep(DEFAULT_INTERVAL * 3)
    assert watch.watching  # still busy: still watching
    in_flight[0] = False
    await asyncio.sleep(DEFAULT_INTERVAL * 3)
    assert not watch.watching  # idle: no timer left on the loop
    in_flight[0] = True
    watch.started(time.monotonic())
    assert watch.watching
    watch.close()
    assert not watch.watching
