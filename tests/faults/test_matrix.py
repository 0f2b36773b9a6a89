"""Every misbehaving server of the matrix, on both transports and through both kinds of front door.

A fault ends in its typed error within the deadline plus a generous margin,
an odd-but-valid answer comes back whole with its own body, and whatever
happened no socket is left open: the server counts its connections and the
process's descriptors return to where they were once the client is closed.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import psutil
import pytest

import microcall
from tests.faults.scenarios import (
    DEFAULT_TRANSPORT,
    FAULT_TIMEOUT,
    GENEROUS_TIMEOUT,
    KNOWN_FAILURES,
    MARGIN,
    MATRIX,
    QUICK_BACKOFF,
    TRANSPORTS,
    Case,
    TransportName,
    check_case,
    make_client,
    wait_until,
)
from tests.faultserver import Behaviour, Fault, FaultServer, fault_server


@pytest.fixture(name="faults")
async def faults_fixture() -> AsyncIterator[FaultServer]:
    async with fault_server() as server:
        yield server


def matrix_params() -> list[object]:
    params: list[object] = []
    for transport in TRANSPORTS:
        for case in MATRIX:
            reason = KNOWN_FAILURES.get((transport, case.port))
            marks = [pytest.mark.xfail(strict=True, reason=reason)] if reason else []
            params.append(pytest.param(transport, case, id=f"{transport}-{case.port}", marks=marks))
    return params


@pytest.mark.parametrize(("transport", "case"), matrix_params())
async def test_each_misbehaviour_ends_right_and_lets_go_of_its_socket(
    faults: FaultServer, transport: TransportName, case: Case
) -> None:
    process = psutil.Process()
    fds_before = process.num_fds()
    async with make_client(transport) as client:

        async def get(url: str, timeout: float) -> microcall.Response:
            return await client.get(url, timeout=timeout)

        wrong = await check_case(get, faults.url(case.port), case)
        assert wrong is None, f"{case.name}: {wrong}"
        if case.expected is not None and not case.framing_intact:
            # The client is still open, yet the broken connection is gone.
            assert await wait_until(lambda: faults.open_connections == 0)
    assert await wait_until(lambda: faults.open_connections == 0)
    assert await wait_until(lambda: process.num_fds() <= fds_before), (
        f"{process.num_fds() - fds_before} descriptors left open"
    )


async def test_the_whole_matrix_through_the_blocking_client(faults: FaultServer) -> None:
    # One Client for every case, as a long-lived program would have: a fault
    # must not spoil the client for the cases after it.
    known = {port for transport, port in KNOWN_FAILURES if transport == DEFAULT_TRANSPORT}
    cases = [case for case in MATRIX if case.port not in known]

    def run() -> list[str]:
        with microcall.Client() as client:
            loop = asyncio.new_event_loop()
            try:
                wrong = []
                for case in cases:

                    async def get(url: str, timeout: float) -> microcall.Response:
                        return await asyncio.to_thread(client.get, url, timeout=timeout)

                    outcome = loop.run_until_complete(check_case(get, faults.url(case.port), case))
                    if outcome is not None:
                        wrong.append(f"{case.name}: {outcome}")
                return wrong
            finally:
                loop.close()

    assert await asyncio.to_thread(run) == []
    assert await wait_until(lambda: faults.open_connections == 0)


@pytest.mark.parametrize("transport", TRANSPORTS)
async def test_a_server_that_closes_each_idle_connection_never_fails_the_next_call(
    transport: TransportName,
) -> None:
    # The server closes right after each answer, and the client calls again a
    # little later: the connection in its pool is dead by then, and a call
    # must never fail for it.
    async with fault_server() as faults, make_client(transport, timeout=GENEROUS_TIMEOUT) as client:
        url = faults.url(Behaviour.CLOSE_AFTER_ANSWER)
        failures = []
        for index in range(150):
            path = f"/call/{index}"
            try:
                response = await client.get(url + path)
            except microcall.CallError as error:
                failures.append(repr(error))
            else:
                assert response.content == path.encode()
            await asyncio.sleep(0.003)
        assert failures == []
    assert faults.accepted[Behaviour.CLOSE_AFTER_ANSWER] == 150


@pytest.mark.parametrize("transport", TRANSPORTS)
@pytest.mark.parametrize("port", [Behaviour.STALL_HEADERS, Behaviour.STALL_BODY], ids=str)
async def test_an_attempt_timeout_ends_each_stall_and_the_deadline_ends_the_call(
    faults: FaultServer, transport: TransportName, port: Behaviour
) -> None:
    strategy = microcall.retry(3, attempt_timeout=0.1, backoff=QUICK_BACKOFF)
    async with make_client(transport, timeout=FAULT_TIMEOUT + 1.0) as client:
        with pytest.raises(TimeoutError) as caught:
            await client.get(faults.url(port), strategy=strategy)
        assert isinstance(caught.value, microcall.AttemptTimeout | microcall.DeadlineExceeded)
        attempts = caught.value.attempts
        assert len(attempts) == 3
        assert all(attempt.error == "AttemptTimeout" for attempt in attempts[:2])
        assert all(attempt.duration <= 0.1 + MARGIN for attempt in attempts)
        assert await wait_until(lambda: faults.open_connections == 0)
    assert faults.accepted[port] == 3


@pytest.mark.parametrize("transport", TRANSPORTS)
async def test_an_error_names_the_replica_the_attempt_went_to(
    faults: FaultServer, transport: TransportName
) -> None:
    """Not the first base URL's: an operator reading it would look at the healthy one."""
    healthy, refusing = faults.url(Behaviour.ECHO), faults.url(Fault.REFUSE)
    async with make_client(
        transport,
        [healthy, refusing],
        balancer=microcall.BalancerConfig(mode="round_robin"),
        ejection=None,
    ) as client:
        answers = await asyncio.gather(
            *(client.get("/call/0") for _ in range(2)),  # one to each
            return_exceptions=True,
        )
    refused = next(answer for answer in answers if isinstance(answer, BaseException))
    assert isinstance(refused, microcall.ConnectError)
    where = refusing.removeprefix("http://")
    assert refused.attempts[0].endpoint == where
    assert str(refused).startswith(f"cannot connect to {where}:")
    assert healthy.removeprefix("http://") not in str(refused)
