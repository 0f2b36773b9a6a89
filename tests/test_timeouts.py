"""Coalesced timeouts: never early, at most a tick late, and only their own cancellations."""

from __future__ import annotations

import asyncio
import random
import time

import pytest

from microcall._timeouts import LONG, MIN_TICK, PRECISION, Timeouts


async def test_a_block_past_its_time_raises_timeout_error_never_early() -> None:
    loop = asyncio.get_running_loop()
    timeouts = Timeouts(loop)
    started = loop.time()
    with pytest.raises(TimeoutError), timeouts.guard(0.05):
        await asyncio.sleep(5)
    assert loop.time() - started >= 0.05
    assert len(timeouts) == 0


async def test_a_block_that_finishes_in_time_leaves_nothing_behind() -> None:
    timeouts = Timeouts(asyncio.get_running_loop())
    for _ in range(100):
        with timeouts.guard(10.0):
            await asyncio.sleep(0)
    assert len(timeouts) == 0
    task = asyncio.current_task()
    assert task is not None
    assert task.cancelling() == 0


async def test_guards_due_in_one_tick_share_it_and_each_times_out() -> None:
    timeouts = Timeouts(asyncio.get_running_loop())

    async def bounded() -> str:
        try:
            with timeouts.guard(0.02):
                await asyncio.sleep(5)
        except TimeoutError:
            return "timed out"
        return "finished"

    results = await asyncio.gather(*(bounded() for _ in range(20)))
    assert results == ["timed out"] * 20


async def test_a_zero_timeout_stops_the_block_at_its_first_wait() -> None:
    timeouts = Timeouts(asyncio.get_running_loop())
    reached: list[bool] = []

    async def bounded() -> None:
        with timeouts.guard(0.0):
            await asyncio.sleep(0)
            reached.append(True)

    with pytest.raises(TimeoutError):
        await bounded()
    assert not reached


async def test_the_callers_cancellation_passes_through_as_such() -> None:
    timeouts = Timeouts(asyncio.get_running_loop())
    entered = asyncio.Event()

    async def bounded() -> None:
        with timeouts.guard(10.0):
            entered.set()
            await asyncio.sleep(5)

    task = asyncio.create_task(bounded())
    await entered.wait()
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert len(timeouts) == 0


async def test_a_cancellation_at_the_moment_of_expiry_stays_a_cancellation() -> None:
    timeouts = Timeouts(asyncio.get_running_loop())

    async def bounded() -> None:
        with timeouts.guard(0.0):  # fires: asks for one cancellation
            asyncio.current_task().cancel()  # type: ignore[union-attr]  # and the caller another
            await asyncio.sleep(1)

    with pytest.raises(asyncio.CancelledError):
        await asyncio.create_task(bounded())


async def test_an_inner_timeout_leaves_the_outer_one_running() -> None:
    timeouts = Timeouts(asyncio.get_running_loop())
    with timeouts.guard(10.0):
        with pytest.raises(TimeoutError), timeouts.guard(0.01):
            await asyncio.sleep(5)
        await asyncio.sleep(0)  # the outer block goes on
    task = asyncio.current_task()
    assert task is not None
    assert task.cancelling() == 0


async def test_long_timeouts_share_coarser_ticks() -> None:
    loop = asyncio.get_running_loop()
    timeouts = Timeouts(loop)
    with timeouts.guard(0.5) as short_guard, timeouts.guard(10.0) as long_guard:
        short, long = short_guard._key, long_guard._key  # the ticks they joined
    assert short is not None
    assert long is not None
    assert short[0] == MIN_TICK
    assert LONG <= 10.0
    assert 10.0 * PRECISION / 2 < long[0] <= 10.0 * PRECISION
    # Rounded up: the tick ends at or after the deadline, within one tick of it.
    deadline = loop.time() + 10.0
    assert deadline <= long[1] * long[0] < deadline + long[0] + 0.01


def test_a_guard_needs_a_running_task() -> None:
    loop = asyncio.new_event_loop()
    try:
        with pytest.raises(RuntimeError, match="task"):
            Timeouts(loop).guard(1.0)
    finally:
        loop.close()


def test_on_uvloop_no_guard_fires_before_its_expiry_on_the_monotonic_clock() -> None:
    # uvloop's loop.time() is a cached, millisecond clock that runs behind
    # time.monotonic(): a tick reckoned from it would fire before the
    # guards' real expiry. Expiry is measured as the caller sees it.
    uvloop = pytest.importorskip("uvloop")

    async def main() -> list[float]:
        timeouts = Timeouts(asyncio.get_running_loop())
        rng = random.Random(14)

        async def bounded(seconds: float) -> float:
            await asyncio.sleep(rng.random() * 0.01)  # arm at scattered moments
            armed = time.monotonic()
            try:
                with timeouts.guard(seconds):
                    await asyncio.sleep(5)
            except TimeoutError:
                return time.monotonic() - (armed + seconds)
            raise AssertionError("the guard did not fire")

        lateness = await asyncio.gather(*(bounded(0.002 + rng.random() * 0.03) for _ in range(400)))
        assert len(timeouts) == 0
        return lateness

    lateness = uvloop.run(main())
    early = [late for late in lateness if late < 0]
    assert not early, f"{len(early)} of {len(lateness)} fired early, by up to {-min(early):.6f} s"
