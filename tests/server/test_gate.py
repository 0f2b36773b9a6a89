"""The admission gate's decisions, with a fake clock and no server."""

from __future__ import annotations

from datetime import timedelta

import pytest
from hypothesis import given
from hypothesis import strategies as st

from microcall import current_deadline, current_priority
from microcall.errors import ConfigurationError
from microcall.priority import Priority
from microcall.server import (
    Caller,
    ServerOptions,
    Shedding,
    StaticLimit,
    default_timeout,
    trust_all,
    trust_header,
    trust_networks,
)
from microcall.server._admission import Admission
from microcall.server._gate import Gate, Refusal
from microcall.testing import FakeClock


def caller(address: str | None = "10.1.2.3", **headers: str) -> Caller:
    lowered = {name.lower(): value for name, value in headers.items()}
    return Caller(address, lambda name: lowered.get(name.lower()), None)


def admit(
    gate: Gate,
    timeout: list[str] | None = None,
    priority: list[str] | None = None,
    who: Caller | None = None,
    route: float | None = None,
) -> Admission | Refusal:
    return gate.admit(timeout or [], priority or [], lambda: who or caller(), route)


def admitted(outcome: Admission | Refusal) -> Admission:
    assert isinstance(outcome, Admission), outcome
    return outcome


def test_the_callers_remaining_time_becomes_the_deadline() -> None:
    clock = FakeClock()
    gate = Gate(ServerOptions(clock=clock))
    admission = admitted(admit(gate, ["1.5"]))
    assert admission.deadline.remaining() == pytest.approx(1.5)
    assert admission.from_header
    clock.advance(1.0)
    assert admission.deadline.remaining() == pytest.approx(0.5)


def test_without_a_header_the_route_or_server_default_applies() -> None:
    gate = Gate(ServerOptions(default_timeout=timedelta(seconds=3), clock=FakeClock()))
    assert admitted(admit(gate)).deadline.remaining() == pytest.approx(3.0)
    routed = admitted(admit(gate, route=30.0))
    assert routed.deadline.remaining() == pytest.approx(30.0)
    assert routed.route_applied
    assert not routed.from_header
    assert admitted(admit(gate, ["2"], route=30.0)).deadline.remaining() == pytest.approx(2.0)


def test_max_timeout_caps_the_callers_deadline() -> None:
    gate = Gate(ServerOptions(max_timeout=5, clock=FakeClock()))
    assert admitted(admit(gate, ["3600"])).deadline.remaining() == pytest.approx(5.0)
    assert admitted(admit(gate, ["4"])).deadline.remaining() == pytest.approx(4.0)


@pytest.mark.parametrize("value", ["0", "0.000", "0.004", "1e-9"])
def test_expired_or_nearly_expired_requests_are_refused_not_to_be_retried(value: str) -> None:
    gate = Gate(ServerOptions(clock=FakeClock()))
    refusal = admit(gate, [value])
    assert isinstance(refusal, Refusal)
    assert refusal.status == 408
    assert ("X-Do-Not-Retry", "1") in refusal.headers
    assert gate.stats.expired == 1
    assert gate.stats.admitted == 0


def test_the_expired_status_is_configurable() -> None:
    refusal = admit(Gate(ServerOptions(expired_status=504)), ["0"])
    assert isinstance(refusal, Refusal)
    assert refusal.status == 504


def test_malformed_values_are_ignored_and_counted() -> None:
    gate = Gate(ServerOptions(default_timeout=2, clock=FakeClock()))
    admission = admitted(admit(gate, ["nan"], ["urgent"]))
    assert admission.deadline.remaining() == pytest.approx(2.0)
    assert admission.priority is Priority.NORMAL
    assert not admission.from_header
    assert gate.stats.malformed_timeout == 1
    assert gate.stats.malformed_priority == 1
    admitted(admit(gate, ["1", "2"], ["low", "low"]))
    assert gate.stats.malformed_timeout == 2
    assert gate.stats.malformed_priority == 2


def test_strict_mode_answers_400() -> None:
    gate = Gate(ServerOptions(strict=True))
    refusal = admit(gate, ["-1"])
    assert isinstance(refusal, Refusal)
    assert refusal.status == 400
    assert gate.stats.rejected_malformed == 1
    assert isinstance(admit(gate, ["1"], ["HIGH "]), Admission)  # strict, not pedantic


def test_high_priority_needs_trust() -> None:
    untrusting = Gate(ServerOptions())
    assert admitted(admit(untrusting, priority=["high"])).priority is Priority.NORMAL
    assert untrusting.stats.downgraded == 1
    assert admitted(admit(untrusting, priority=["low"])).priority is Priority.LOW
    assert admitted(admit(untrusting, priority=["normal"])).priority is Priority.NORMAL

    trusting = Gate(ServerOptions(trust=trust_all))
    assert admitted(admit(trusting, priority=["high"])).priority is Priority.HIGH
    assert trusting.stats.downgraded == 0


def test_the_trust_predicate_runs_only_for_high_claims() -> None:
    asked: list[Caller] = []

    def trust(who: Caller) -> bool:
        asked.append(who)
        return False

    gate = Gate(ServerOptions(trust=trust))
    admit(gate, priority=["low"])
    admit(gate)
    assert asked == []
    admit(gate, priority=["high"])
    assert len(asked) == 1


def test_an_untrusted_caller_may_ask_for_the_servers_default() -> None:
    gate = Gate(ServerOptions(default_priority="high"))
    assert admitted(admit(gate)).priority is Priority.HIGH
    assert admitted(admit(gate, priority=["high"])).priority is Priority.HIGH
    assert admitted(admit(gate, priority=["low"])).priority is Priority.LOW


def test_trust_by_network() -> None:
    trust = trust_networks("10.0.0.0/8", "::1/128")
    assert trust(caller("10.200.0.1"))
    assert trust(caller("::ffff:10.0.0.7"))  # an IPv4 peer on a dual-stack socket
    assert trust(caller("::1"))
    assert not trust(caller("192.168.1.1"))
    assert not trust(caller(None))
    assert not trust(caller("not an address"))
    with pytest.raises(ConfigurationError):
        trust_networks("10.0.0.0/33")
    with pytest.raises(ConfigurationError):
        trust_networks()


def test_trust_by_header() -> None:
    trust = trust_header("X-Mesh-Internal", "yes")
    assert trust(caller(**{"x-mesh-internal": "yes"}))
    assert not trust(caller(**{"x-mesh-internal": "no"}))
    assert not trust(caller())


def test_shedding_refuses_with_503_and_retry_after() -> None:
    gate = Gate(ServerOptions(shedding=Shedding(limit=StaticLimit(limit=2), retry_after=3)))
    first = admitted(admit(gate, priority=["low"]))
    second = admitted(admit(gate, priority=["low"]))  # borrowed: nobody else wants it
    refusal = admit(gate, priority=["low"])
    assert isinstance(refusal, Refusal)
    assert refusal.status == 503
    assert ("Retry-After", "3") in refusal.headers
    assert gate.stats.shed_low == 1
    first.finish()
    second.finish()
    assert gate.limiter is not None
    assert gate.limiter.inflight == 0


def test_expired_work_never_takes_a_slot() -> None:
    gate = Gate(ServerOptions(shedding=Shedding(limit=StaticLimit(limit=1))))
    assert isinstance(admit(gate, ["0"]), Refusal)
    assert gate.limiter is not None
    assert gate.limiter.inflight == 0
    assert gate.stats.shed == 0


def test_admission_sets_and_restores_the_call_context() -> None:
    clock = FakeClock()
    admission = admitted(admit(Gate(ServerOptions(clock=clock)), ["2"], ["low"]))
    assert current_deadline() is None
    admission.enter()
    try:
        assert current_deadline() is admission.deadline
        assert current_priority() is Priority.LOW
    finally:
        admission.leave()
    assert current_deadline() is None
    assert current_priority() is None


def test_a_request_finishing_after_its_deadline_counts_as_a_drop() -> None:
    clock = FakeClock()
    gate = Gate(ServerOptions(clock=clock, shedding=Shedding(limit=StaticLimit(limit=4))))
    admission = admitted(admit(gate, ["0.5"]))
    clock.advance(1.0)
    admission.finish()
    assert gate.stats.overran == 1


def test_route_default_timeout_replaces_the_server_default_while_the_handler_runs() -> None:
    clock = FakeClock()
    gate = Gate(ServerOptions(default_timeout=1, clock=clock))

    @default_timeout(20)
    def handler() -> float | None:
        deadline = current_deadline()
        return None if deadline is None else deadline.remaining()

    for headers, expected in (([], 20.0), (["3"], 3.0)):
        admission = admitted(admit(gate, headers))
        admission.enter()
        try:
            assert handler() == pytest.approx(expected)
            remaining = current_deadline()
            assert remaining is not None
            assert remaining.remaining() == pytest.approx(1.0 if not headers else 3.0)
        finally:
            admission.leave()
    assert handler() is None  # outside any request it changes nothing


async def test_route_default_timeout_on_coroutines() -> None:
    gate = Gate(ServerOptions(default_timeout=1, clock=FakeClock()))

    @default_timeout(timedelta(seconds=7))
    async def handler() -> float:
        deadline = current_deadline()
        assert deadline is not None
        return deadline.remaining()

    admission = admitted(admit(gate))
    admission.enter()
    try:
        assert await handler() == pytest.approx(7.0)
    finally:
        admission.leave()


@pytest.mark.parametrize(
    "settings",
    [
        {"default_timeout": 0},
        {"default_timeout": 0.001},
        {"max_timeout": float("inf")},
        {"floor": -1},
        {"default_priority": "urgent"},
        {"trust": "everyone"},
        {"expired_status": 200},
        {"expired_status": True},
        {"shedding": StaticLimit(limit=3)},
    ],
)
def test_options_are_validated(settings: dict[str, object]) -> None:
    with pytest.raises(ConfigurationError):
        ServerOptions(**settings)  # type: ignore[arg-type]


@given(
    st.lists(st.binary(max_size=40).map(lambda raw: raw.decode("latin-1")), max_size=3),
    st.lists(st.binary(max_size=20).map(lambda raw: raw.decode("latin-1")), max_size=3),
    st.booleans(),
)
def test_the_gate_never_raises_on_any_header_bytes(
    timeouts: list[str], priorities: list[str], strict: bool
) -> None:
    gate = Gate(ServerOptions(strict=strict, trust=trust_all, clock=FakeClock()))
    outcome = admit(gate, timeouts, priorities)
    if isinstance(outcome, Refusal):
        assert outcome.status in (400, 408)
    else:
        assert 0.0 <= outcome.deadline.remaining() <= 86_400.0
        outcome.finish()
