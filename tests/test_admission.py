"""The client's admission: slots, the queue's count and the handing over of slots, on their own.

No network and no clock of note: the loop's futures only, each step driven
by ``asyncio.sleep(0)``. The integration with the engine and a real server
is in tests/client/test_overload.py.
"""

from __future__ import annotations

import asyncio

import pytest
from yarl import URL

from microcall._admission import Admission
from microcall._request import Request
from microcall.errors import ClientOverloaded, DeadlineExceeded

REQUEST = Request("GET", URL("http://svc/a"), {})
LONG = 30.0  # a timeout no test reaches


async def queued_waiter(admission: Admission, timeout: float = LONG) -> asyncio.Task[None]:
    """A waiter in ``admission``'s queue (the one slot is held)."""
    task = asyncio.ensure_future(admission.wait(REQUEST, timeout))
    await asyncio.sleep(0)
    assert admission.queued >= 1
    return task


async def test_a_slot_handed_over_leaves_the_queue_at_once() -> None:
    admission = Admission(limit=2, slots=1)
    admission.busy = 1
    waiter = await queued_waiter(admission)
    assert admission.refuses()

    admission.release()
    # Not yet run, already out of the queue: the next call queues, not refused.
    assert (admission.busy, admission.queued) == (1, 0)
    assert not admission.refuses()
    await waiter
    assert (admission.busy, admission.queued) == (1, 0)


async def test_a_waiter_cancelled_after_its_slot_was_handed_over_passes_it_on() -> None:
    admission = Admission(limit=3, slots=1)
    admission.busy = 1
    first = await queued_waiter(admission)
    second = await queued_waiter(admission)

    admission.release()  # to ``first``, which is cancelled before it runs
    first.cancel()
    with pytest.raises(asyncio.CancelledError):
        await first
    await second  # the slot went on to the next in line
    assert (admission.busy, admission.queued) == (1, 0)
    admission.release()
    assert (admission.busy, admission.queued) == (0, 0)


async def test_a_waiter_cancelled_while_waiting_leaves_the_count() -> None:
    admission = Admission(limit=2, slots=1)
    admission.busy = 1
    waiter = await queued_waiter(admission)
    waiter.cancel()
    with pytest.raises(asyncio.CancelledError):
        await waiter
    assert (admission.busy, admission.queued) == (1, 0)
    admission.release()  # nobody waits any more: the slot is freed
    assert (admission.busy, admission.queued) == (0, 0)


async def test_a_waiter_past_its_time_gives_up_and_leaves_the_count() -> None:
    admission = Admission(limit=2, slots=1)
    admission.busy = 1
    with pytest.raises(DeadlineExceeded, match="queued"):
        await admission.wait(REQUEST, 0.0)
    assert (admission.busy, admission.queued) == (1, 0)


async def test_the_call_past_the_limit_is_refused_with_the_limit_named() -> None:
    admission = Admission(limit=2, slots=1)
    admission.busy = 1
    waiter = await queued_waiter(admission)
    with pytest.raises(ClientOverloaded, match=r"max_calls \(2\)"):
        await admission.wait(REQUEST, LONG)
    waiter.cancel()
    await asyncio.gather(waiter, return_exceptions=True)
