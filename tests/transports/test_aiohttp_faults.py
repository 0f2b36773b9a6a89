"""The default transport against a server that misbehaves: every fault ends in its typed error.

The faults come from tests/faultserver.py (real sockets on 127.0.0.1). Each
call must end within its deadline plus a margin that a loaded two-core machine
can keep, and the error must say what was asked and every attempt made.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from typing import Any

import pytest

import microcall
from microcall import AttemptKind, CallError
from microcall.errors import ConfigurationError
from tests.faultserver import EXPECTED_ERROR, Fault, FaultServer, fault_server
from tests.faultserver import faults_fixture as faults_fixture  # provides the `faults` fixture

# How long past its deadline a call may still be running. The engine aims at a
# few milliseconds; this allows for a busy machine, not for a missed timer.
MARGIN = 0.25

FAULT_TIMEOUT = 0.3

QUICK_BACKOFF = microcall.Backoff(base=0.001, cap=0.002)

# Connections lost before the status line: aiohttp would resend a GET on a new
# connection by itself, below microcall's policies; the transport turns that off.
LOST_BEFORE_STATUS = (Fault.RESET_HEADERS, Fault.CLOSE)


def endpoint_of(url: str) -> str:
    return url.removeprefix("http://")


async def wait_until(condition: Callable[[], bool], *, within: float = 2.0) -> bool:
    """Poll ``condition()`` until it is true or ``within`` seconds pass."""
    give_up = time.monotonic() + within
    while not condition():
        if time.monotonic() > give_up:
            return False
        await asyncio.sleep(0.01)
    return True


@pytest.mark.parametrize("fault", list(Fault), ids=str)
async def test_each_fault_ends_in_its_typed_error_within_the_deadline(
    faults: FaultServer, fault: Fault
) -> None:
    url = faults.url(fault) + "/books?id=7"
    async with microcall.AsyncClient(timeout=FAULT_TIMEOUT) as client:
        began = time.monotonic()
        with pytest.raises(CallError) as caught:
            await client.get(url)
        elapsed = time.monotonic() - began

    error = caught.value
    assert type(error) is EXPECTED_ERROR[fault]
    assert elapsed <= FAULT_TIMEOUT + MARGIN
    assert error.request is not None
    assert error.request.method == "GET"
    assert str(error.request.url) == url
    [attempt] = error.attempts
    assert attempt.kind is AttemptKind.FIRST
    assert attempt.endpoint == endpoint_of(faults.url(fault))
    assert attempt.status is None
    assert attempt.error is not None
    assert attempt.error.startswith(type(error).__name__)
    assert not attempt.cancelled
    assert 0.0 <= attempt.duration <= elapsed
    assert attempt.endpoint in str(error)
    if isinstance(error, microcall.DeadlineExceeded):
        # It waited for the deadline, not less: the timer is the call's, not a guess.
        assert attempt.duration >= FAULT_TIMEOUT - 0.02


async def test_transport_errors_sit_in_the_documented_tree(faults: FaultServer) -> None:
    async with microcall.AsyncClient(timeout=FAULT_TIMEOUT) as client:
        with pytest.raises(microcall.TransportError):
            await client.get(faults.url(Fault.REFUSE))
        with pytest.raises(TimeoutError):
            await client.get(faults.url(Fault.HANG))


async def test_blocking_client_keeps_the_deadline_against_a_hanging_server(
    faults: FaultServer,
) -> None:
    def call() -> tuple[float, microcall.DeadlineExceeded]:
        with microcall.Client(faults.url(Fault.HANG), timeout=FAULT_TIMEOUT) as client:
            began = time.monotonic()
            try:
                client.get("/")
            except microcall.DeadlineExceeded as error:
                return time.monotonic() - began, error
        raise AssertionError("a hanging server produced a response")

    elapsed, error = await asyncio.to_thread(call)
    assert elapsed <= FAULT_TIMEOUT + MARGIN
    assert len(error.attempts) == 1


async def test_attempt_timeout_retries_a_hanging_server_and_records_each_attempt(
    faults: FaultServer,
) -> None:
    strategy = microcall.retry(3, attempt_timeout=0.1, backoff=QUICK_BACKOFF)
    async with microcall.AsyncClient(faults.url(Fault.HANG), timeout=2.0) as client:
        began = time.monotonic()
        with pytest.raises(microcall.AttemptTimeout) as caught:
            await client.get("/", strategy=strategy)
        elapsed = time.monotonic() - began

    attempts = caught.value.attempts
    assert [attempt.kind for attempt in attempts] == [
        AttemptKind.FIRST,
        AttemptKind.RETRY,
        AttemptKind.RETRY,
    ]
    assert [attempt.index for attempt in attempts] == [0, 1, 2]
    for attempt in attempts:
        assert attempt.error == "AttemptTimeout"
        assert attempt.endpoint == endpoint_of(faults.url(Fault.HANG))
        assert 0.1 - 0.02 <= attempt.duration <= 0.1 + MARGIN
    assert attempts[0].started < attempts[1].started < attempts[2].started
    assert elapsed < 2.0
    # Every attempt opened its own connection: a timed-out one is never reused.
    assert faults.accepted[Fault.HANG] == 3


async def test_retries_stop_at_the_deadline_against_a_hanging_server(
    faults: FaultServer,
) -> None:
    timeout = 0.5
    strategy = microcall.retry(10, attempt_timeout=0.2, backoff=QUICK_BACKOFF)
    async with microcall.AsyncClient(faults.url(Fault.HANG), timeout=timeout) as client:
        began = time.monotonic()
        with pytest.raises(microcall.DeadlineExceeded) as caught:
            await client.get("/", strategy=strategy)
        elapsed = time.monotonic() - began

    attempts = caught.value.attempts
    assert elapsed <= timeout + MARGIN
    assert 2 <= len(attempts) <= 3
    assert all(attempt.error == "AttemptTimeout" for attempt in attempts[:-1])
    assert attempts[-1].error == "DeadlineExceeded"
    assert all(attempt.started < timeout for attempt in attempts)


@pytest.mark.parametrize(
    ("fault", "expected"),
    [
        (Fault.REFUSE, microcall.ConnectError),
        (Fault.RESET, microcall.ReadError),
        (Fault.RESET_HEADERS, microcall.ReadError),
        (Fault.CLOSE, microcall.ReadError),
        (Fault.HALF_BODY, microcall.ReadError),
        (Fault.GARBAGE, microcall.ProtocolError),
    ],
    ids=str,
)
async def test_retries_against_a_fault_record_every_attempt(
    faults: FaultServer, fault: Fault, expected: type[CallError]
) -> None:
    strategy = microcall.retry(4, backoff=QUICK_BACKOFF)
    async with microcall.AsyncClient(faults.url(fault), timeout=2.0) as client:
        with pytest.raises(expected) as caught:
            await client.get("/", strategy=strategy)

    attempts = caught.value.attempts
    assert [attempt.kind for attempt in attempts] == [AttemptKind.FIRST] + [AttemptKind.RETRY] * 3
    for attempt in attempts:
        assert attempt.endpoint == endpoint_of(faults.url(fault))
        assert attempt.error is not None
        assert attempt.error.startswith(f"{expected.__name__}: ")
        assert attempt.duration >= 0.0
    starts = [attempt.started for attempt in attempts]
    assert starts == sorted(starts)
    if fault is not Fault.REFUSE:
        assert faults.accepted[fault] == 4


@pytest.mark.parametrize("fault", LOST_BEFORE_STATUS, ids=str)
async def test_one_attempt_is_one_request_on_the_wire(faults: FaultServer, fault: Fault) -> None:
    # Only the strategy decides whether a request is sent again: a hidden resend
    # is missing from the attempts, escapes any retry budget, and doubles the
    # load on a server that is already dropping connections.
    async with microcall.AsyncClient(faults.url(fault), timeout=2.0) as client:
        with pytest.raises(microcall.ReadError) as caught:
            await client.get("/")
    assert len(caught.value.attempts) == 1
    assert faults.accepted[fault] == 1


@pytest.mark.parametrize("fault", [Fault.RESET, Fault.CLOSE, Fault.HALF_BODY], ids=str)
async def test_a_post_that_broke_mid_response_is_not_sent_again(
    faults: FaultServer, fault: Fault
) -> None:
    # The server may have acted on it: sending it again could do the work twice.
    strategy = microcall.retry(4, backoff=QUICK_BACKOFF)
    async with microcall.AsyncClient(faults.url(fault), timeout=2.0) as client:
        with pytest.raises(microcall.ReadError) as caught:
            await client.post("/orders", json={"book": 7}, strategy=strategy)
    assert len(caught.value.attempts) == 1
    assert faults.accepted[fault] == 1


@pytest.mark.parametrize(
    "strategy", [microcall.single(), microcall.retry(3)], ids=["single", "retry"]
)
async def test_no_attempt_starts_below_the_deadline_floor(
    faults: FaultServer, strategy: microcall.Strategy
) -> None:
    async with microcall.AsyncClient(
        faults.url(Fault.HANG), deadline_floor=0.05, strategy=strategy
    ) as client:
        with pytest.raises(microcall.DeadlineExceeded) as caught:
            await client.get("/", timeout=0.01)
        with microcall.deadline(0), pytest.raises(microcall.DeadlineExceeded):
            await client.get("/")
    assert caught.value.attempts == ()
    assert caught.value.request is not None
    assert faults.accepted[Fault.HANG] == 0


async def test_hedges_against_a_hanging_server_end_at_the_deadline_and_let_go(
    faults: FaultServer,
) -> None:
    timeout = 0.4
    strategy = microcall.hedged(0.05, attempts=3)
    async with microcall.AsyncClient(faults.url(Fault.HANG), timeout=timeout) as client:
        began = time.monotonic()
        with pytest.raises(microcall.DeadlineExceeded) as caught:
            await client.get("/", strategy=strategy)
        elapsed = time.monotonic() - began
        attempts = caught.value.attempts
        assert elapsed <= timeout + MARGIN
        assert [attempt.kind for attempt in attempts] == [
            AttemptKind.FIRST,
            AttemptKind.HEDGE,
            AttemptKind.HEDGE,
        ]
        assert all(attempt.cancelled or attempt.error for attempt in attempts)
        assert faults.accepted[Fault.HANG] == 3
        # The client is still open, yet no connection of the call is left behind.
        assert await wait_until(lambda: faults.open_connections == 0)


async def test_a_call_waiting_for_a_pooled_connection_still_ends_at_its_deadline(
    faults: FaultServer,
) -> None:
    limits = microcall.Limits(max_connections=1)

    async def timed_call(client: microcall.AsyncClient, timeout: float) -> float:
        began = time.monotonic()
        with pytest.raises(microcall.DeadlineExceeded):
            await client.get("/", timeout=timeout)
        return time.monotonic() - began

    async with microcall.AsyncClient(faults.url(Fault.HANG), limits=limits) as client:
        holder = asyncio.create_task(timed_call(client, 2 * FAULT_TIMEOUT))
        # The holder has the pool's one connection before the waiter asks for it.
        assert await wait_until(lambda: faults.accepted[Fault.HANG] == 1)
        waiter_elapsed = await timed_call(client, FAULT_TIMEOUT)
        holder_elapsed = await holder
    assert waiter_elapsed <= FAULT_TIMEOUT + MARGIN
    assert holder_elapsed <= 2 * FAULT_TIMEOUT + MARGIN
    # The waiter never got a connection: the pool's one was busy until after its deadline.
    assert faults.accepted[Fault.HANG] == 1


async def test_a_slow_but_valid_trickle_completes() -> None:
    # The trickle is a valid response: given the time, it is read in full.
    async with (
        fault_server(trickle_interval=0.001) as faults,
        microcall.AsyncClient(faults.url(Fault.TRICKLE), timeout=5.0) as client,
    ):
        response = await client.get("/")
    assert response.status_code == 200
    assert response.text == "trickled ok"


async def test_the_client_lets_go_of_a_trickling_server_at_the_deadline(
    faults: FaultServer,
) -> None:
    async with microcall.AsyncClient(faults.url(Fault.TRICKLE), timeout=FAULT_TIMEOUT) as client:
        with pytest.raises(microcall.DeadlineExceeded):
            await client.get("/")
        assert await wait_until(lambda: faults.open_connections == 0)


@pytest.mark.parametrize(
    "options",
    [{"limits": 10}, {"verify": "yes"}, {"verify": None}, {"follow_redirects": 1}],
    ids=["limits-int", "verify-str", "verify-none", "redirects-int"],
)
def test_bad_settings_are_refused_when_the_client_is_built(options: dict[str, Any]) -> None:
    # Not at the first call, as a TypeError from inside aiohttp.
    with pytest.raises(ConfigurationError):
        microcall.AsyncClient("http://127.0.0.1:9", **options)
