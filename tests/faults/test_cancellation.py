"""A cancellation storm: thousands of calls cancelled at random moments, and nothing is left behind.

Under asyncio's debug mode, with every warning an error: the calls are
cancelled before they run, while connecting, while the response is read and
in the middle of a hedge (see ``CANCEL_MOMENTS`` in the scenarios). Afterwards
the client still works, no task of its own is left, nothing was reported to
the loop's exception handler (where "Task was destroyed but it is pending"
and "Unclosed ..." go), no warning was raised or went unraisable, and the
pool gave back every connection: the server side counts them.
"""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

import microcall
from tests.faults.scenarios import CANCEL_MOMENTS, everything_reported, run_storm, wait_until
from tests.faultserver import Behaviour, Fault, FaultServer, fault_server

CALLS = 2_000
POOL = 8


def client_tasks(faults: FaultServer) -> set[asyncio.Task[Any]]:
    return asyncio.all_tasks() - faults.handler_tasks - {asyncio.current_task()}  # type: ignore[operator]


@pytest.mark.timeout(180)
async def test_a_cancellation_storm_leaves_the_client_working_and_nothing_behind() -> None:
    loop = asyncio.get_running_loop()
    with everything_reported(loop) as reported:
        async with fault_server() as faults:
            limits = microcall.Limits(max_connections=POOL)
            async with microcall.AsyncClient(limits=limits) as client:
                report = await run_storm(client, faults, calls=CALLS)

                assert report.calls == CALLS
                assert report.wrong == []
                assert set(report.by_moment) == {str(moment) for moment in CANCEL_MOMENTS}
                # Most were cancelled; some finished first, which is fine.
                assert report.cancelled > CALLS // 2

                # No task of the client outlives its call.
                assert await wait_until(lambda: not client_tasks(faults)), client_tasks(faults)
                # Every cancelled attempt closed its connection: only answered
                # ones may stay in the pool.
                for port in (Fault.HANG, Fault.RESET):
                    assert await wait_until(lambda port=port: faults.open_connections_on(port) == 0)

                # The client still works...
                answer = await client.get(faults.url(Behaviour.ECHO) + "/after", timeout=5.0)
                assert answer.content == b"/after"
                # ...and its pool has every slot back: POOL calls at once all get a connection.
                hanging = [
                    asyncio.create_task(client.get(faults.url(Fault.HANG), timeout=30.0))
                    for _ in range(POOL)
                ]
                assert await wait_until(lambda: faults.open_connections_on(Fault.HANG) == POOL)
                for task in hanging:
                    task.cancel()
                await asyncio.gather(*hanging, return_exceptions=True)
            assert await wait_until(lambda: faults.open_connections == 0)
        await asyncio.sleep(0.05)
    assert reported == []
