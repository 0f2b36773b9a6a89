"""Deadlines and priority: the values, the context that carries them, and what reaches the wire."""

from __future__ import annotations

import asyncio
from datetime import timedelta

import pytest

import microcall
from microcall import (
    AsyncClient,
    ConfigurationError,
    Deadline,
    DeadlineExceeded,
    Priority,
    current_deadline,
    current_priority,
    hedged,
    reset_deadline,
    reset_priority,
    retry,
    set_deadline,
    set_priority,
)
from microcall.testing import FakeClock, MockTransport, Reply

TIMEOUT_HEADER = "X-Request-Timeout"
PRIORITY_HEADER = "X-Request-Priority"


# ---------------------------------------------------------------- Deadline


def test_deadline_runs_down_with_the_clock() -> None:
    clock = FakeClock()
    deadline = Deadline.after(2.0, clock=clock)
    assert deadline.remaining() == 2.0
    assert not deadline.expired()
    clock.advance(1.5)
    assert deadline.remaining() == 0.5
    assert deadline.clock is clock


def test_remaining_is_never_negative() -> None:
    clock = FakeClock()
    deadline = Deadline.after(1.0, clock=clock)
    clock.advance(1.0)
    assert deadline.remaining() == 0.0
    assert deadline.expired()
    clock.advance(100.0)
    assert deadline.remaining() == 0.0
    assert deadline.expired()


def test_zero_is_already_expired() -> None:
    deadline = Deadline.after(0, clock=FakeClock())
    assert deadline.expired()
    assert deadline.remaining() == 0.0


def test_timedelta_is_accepted() -> None:
    clock = FakeClock()
    assert Deadline.after(timedelta(milliseconds=250), clock=clock).remaining() == 0.25


@pytest.mark.parametrize("seconds", [-1.0, float("nan"), float("inf"), "2"])
def test_bad_durations_are_refused(seconds: object) -> None:
    with pytest.raises(ConfigurationError, match="deadline"):
        Deadline.after(seconds, clock=FakeClock())  # type: ignore[arg-type]


def test_shorten_to_keeps_the_earlier() -> None:
    clock = FakeClock()
    near = Deadline.after(1.0, clock=clock)
    far = Deadline.after(5.0, clock=clock)
    assert far.shorten_to(near) is near
    assert near.shorten_to(far) is near
    assert near.shorten_to(None) is near


def test_repr_shows_what_remains() -> None:
    assert repr(Deadline.after(1.5, clock=FakeClock())) == "Deadline(remaining=1.500s)"


# ---------------------------------------------------------------- deadline() and priority()


def test_deadline_context_sets_and_restores() -> None:
    assert current_deadline() is None
    with microcall.deadline(1.0) as outer:
        assert current_deadline() is outer
        assert 0.0 < outer.remaining() <= 1.0
    assert current_deadline() is None


def test_nested_deadline_can_shorten() -> None:
    with microcall.deadline(10.0) as outer:
        with microcall.deadline(0.5) as inner:
            assert current_deadline() is inner
            assert inner.expires_at < outer.expires_at
        assert current_deadline() is outer


def test_nested_deadline_cannot_extend() -> None:
    with microcall.deadline(0.5) as outer, microcall.deadline(10.0) as inner:
        assert inner is outer
        assert current_deadline() is outer
        assert inner.remaining() <= 0.5


def test_deadline_is_restored_when_the_block_raises() -> None:
    with pytest.raises(KeyError), microcall.deadline(1.0):
        raise KeyError("x")
    assert current_deadline() is None


def test_set_and_reset_deadline() -> None:
    deadline = Deadline.after(3.0)
    token = set_deadline(deadline)
    try:
        assert current_deadline() is deadline
        inner = set_deadline(None)
        assert current_deadline() is None
        reset_deadline(inner)
        assert current_deadline() is deadline
    finally:
        reset_deadline(token)
    assert current_deadline() is None


def test_priority_context_sets_and_restores() -> None:
    assert current_priority() is None
    with microcall.priority("LOW") as chosen:
        assert chosen is Priority.LOW
        assert current_priority() is Priority.LOW
        with microcall.priority(Priority.HIGH):
            assert current_priority() is Priority.HIGH
        assert current_priority() is Priority.LOW
    assert current_priority() is None


def test_a_bad_priority_leaves_the_context_alone() -> None:
    with microcall.priority("high"):
        with pytest.raises(ConfigurationError), microcall.priority("urgent"):
            pass
        assert current_priority() is Priority.HIGH


def test_set_and_reset_priority() -> None:
    token = set_priority(" Normal ")
    try:
        assert current_priority() is Priority.NORMAL
        inner = set_priority(None)
        assert current_priority() is None
        reset_priority(inner)
        assert current_priority() is Priority.NORMAL
    finally:
        reset_priority(token)
    assert current_priority() is None


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("high", Priority.HIGH),
        ("HIGH", Priority.HIGH),
        (" Low ", Priority.LOW),
        ("normal", Priority.NORMAL),
        (Priority.LOW, Priority.LOW),
    ],
)
def test_priority_parse(value: str, expected: Priority) -> None:
    assert Priority.parse(value) is expected


@pytest.mark.parametrize("value", ["urgent", "", "hi", None, 1, b"high"])
def test_priority_parse_refuses_other_values(value: object) -> None:
    with pytest.raises(ConfigurationError, match="priority"):
        Priority.parse(value)  # type: ignore[arg-type]


def test_priority_is_its_wire_value() -> None:
    assert [str(p) for p in Priority] == ["high", "normal", "low"]


# ---------------------------------------------------------------- reaching the wire


def sent_timeout(transport: MockTransport, index: int = 0) -> float:
    return float(transport.sent[index].headers[TIMEOUT_HEADER])


async def test_header_carries_the_client_timeout() -> None:
    clock = FakeClock()
    transport = MockTransport([Reply(200)])
    async with AsyncClient("http://svc", transport=transport, clock=clock, timeout=2.0) as client:
        await client.get("/a")
    # The fake clock did not move: exactly the whole budget goes downstream.
    assert transport.sent[0].headers[TIMEOUT_HEADER] == "2.000"
    assert transport.sent[0].timeout == 2.0
    # No priority chosen anywhere: none is sent, and the server's default applies.
    assert PRIORITY_HEADER not in transport.sent[0].headers


async def test_header_is_what_remains_of_an_explicit_deadline() -> None:
    clock = FakeClock()
    transport = MockTransport([Reply(200)])
    shared = Deadline.after(1.5, clock=clock)
    async with AsyncClient("http://svc", transport=transport, clock=clock) as client:
        clock.advance(0.25)
        await client.get("/a", deadline=shared)
    assert transport.sent[0].headers[TIMEOUT_HEADER] == "1.250"


async def test_per_call_timeout_and_deadline_take_the_earlier() -> None:
    clock = FakeClock()
    transport = MockTransport([Reply(200), Reply(200)])
    async with AsyncClient("http://svc", transport=transport, clock=clock) as client:
        await client.get("/a", timeout=0.5, deadline=Deadline.after(3.0, clock=clock))
        await client.get("/b", timeout=3.0, deadline=Deadline.after(0.25, clock=clock))
    assert [sent_timeout(transport, i) for i in (0, 1)] == [0.5, 0.25]


async def test_context_deadline_caps_the_header() -> None:
    transport = MockTransport([Reply(200)])
    async with AsyncClient("http://svc", transport=transport, timeout=10.0) as client:
        with microcall.deadline(0.5):
            await client.get("/a")
    assert 0.0 < sent_timeout(transport) <= 0.5
    assert transport.sent[0].timeout <= 0.5


async def test_per_call_timeout_cannot_extend_an_inherited_deadline() -> None:
    transport = MockTransport([Reply(200), Reply(200)])
    async with AsyncClient("http://svc", transport=transport) as client:
        with microcall.deadline(0.5):
            await client.get("/a", timeout=30.0)
            await client.get("/b", deadline=Deadline.after(30.0))
    for index in (0, 1):
        assert 0.0 < sent_timeout(transport, index) <= 0.5
        assert transport.sent[index].timeout <= 0.5


async def test_per_call_timeout_can_shorten_an_inherited_deadline() -> None:
    transport = MockTransport([Reply(200)])
    async with AsyncClient("http://svc", transport=transport) as client:
        with microcall.deadline(5.0):
            await client.get("/a", timeout=0.2)
    assert 0.0 < sent_timeout(transport) <= 0.2


async def test_context_deadline_reaches_every_attempt_of_a_retry() -> None:
    transport = MockTransport([Reply(503), Reply(503), Reply(200)])
    async with AsyncClient(
        "http://svc", transport=transport, strategy=retry(3, backoff=microcall.Backoff(base=0.0))
    ) as client:
        with microcall.deadline(0.5):
            await client.get("/a")
    timeouts = [sent_timeout(transport, i) for i in range(3)]
    assert all(0.0 < t <= 0.5 for t in timeouts)
    assert timeouts == sorted(timeouts, reverse=True)  # each attempt gets only what is left


async def test_context_reaches_calls_made_in_tasks() -> None:
    transport = MockTransport([Reply(200)])
    async with AsyncClient("http://svc", transport=transport) as client:
        with microcall.deadline(0.5), microcall.priority("low"):
            task = asyncio.create_task(client.get("/a"))
        await task
    assert 0.0 < sent_timeout(transport) <= 0.5
    assert transport.sent[0].headers[PRIORITY_HEADER] == "low"


async def test_priority_comes_from_call_then_context_then_client() -> None:
    transport = MockTransport(lambda request: Reply(200))
    async with AsyncClient("http://svc", transport=transport, priority="high") as client:
        await client.get("/client-default")
        with microcall.priority("low"):
            await client.get("/from-context")
            await client.get("/per-call", priority="NORMAL")
    assert [s.headers[PRIORITY_HEADER] for s in transport.sent] == ["high", "low", "normal"]


async def test_wire_headers_are_sent_once_whatever_the_case_given() -> None:
    transport = MockTransport(lambda request: Reply(200))
    given = {"x-request-priority": "low", "x-request-timeout": "99"}
    async with AsyncClient("http://svc", transport=transport) as client:
        await client.get("/a", headers=given)
        await client.get("/a", headers=given, priority="high")
    # The engine owns both headers: the caller's copies never go out.
    unset, chosen = ([name.lower() for name in sent.headers] for sent in transport.sent)
    assert unset.count("x-request-priority") == 0
    assert unset.count("x-request-timeout") == 1
    assert chosen.count("x-request-priority") == 1
    assert transport.sent[1].headers[PRIORITY_HEADER] == "high"


# ---------------------------------------------------------------- the floor


@pytest.mark.parametrize("strategy", [microcall.single(), retry(3), hedged(0.01)], ids=repr)
async def test_less_than_the_floor_left_fails_without_sending(strategy: microcall.Strategy) -> None:
    clock = FakeClock()
    transport = MockTransport([Reply(200)])
    async with AsyncClient(
        "http://svc", transport=transport, clock=clock, strategy=strategy
    ) as client:
        with pytest.raises(DeadlineExceeded) as caught:
            await client.get("/a", deadline=Deadline.after(0.004, clock=clock))
    assert transport.sent == []
    assert caught.value.attempts == ()
    assert caught.value.request is not None
    assert caught.value.request.url.path == "/a"
    assert "deadline" in str(caught.value)


async def test_a_custom_floor_is_honoured() -> None:
    clock = FakeClock()
    transport = MockTransport([Reply(200)])
    async with AsyncClient(
        "http://svc", transport=transport, clock=clock, deadline_floor=0.1
    ) as client:
        with pytest.raises(DeadlineExceeded):
            await client.get("/a", timeout=0.05)
        await client.get("/b", timeout=0.2)
    assert [s.request.url.path for s in transport.sent] == ["/b"]


async def test_an_expired_context_deadline_fails_without_sending() -> None:
    transport = MockTransport([Reply(200)])
    async with AsyncClient("http://svc", transport=transport) as client:
        with microcall.deadline(0), pytest.raises(DeadlineExceeded):
            await client.get("/a")
    assert transport.sent == []


async def test_a_zero_timeout_fails_without_sending() -> None:
    transport = MockTransport([Reply(200)])
    async with AsyncClient("http://svc", transport=transport) as client:
        with pytest.raises(DeadlineExceeded):
            await client.get("/a", timeout=0)
    assert transport.sent == []


def test_deadline_exceeded_is_a_timeout_error() -> None:
    assert issubclass(DeadlineExceeded, TimeoutError)
