"""Log lines for breakers, ejections, budget exhaustion and shedding: structured and rate-limited."""

from __future__ import annotations

import logging

import pytest
from yarl import URL

import microcall
from microcall._replicas import Replicas
from microcall.observe import LogEvents, LogLimitConfig, LogLimiter, log_event, logs
from microcall.observe.hooks import InboundRequest
from microcall.policy.balancer import BalancerConfig
from microcall.policy.breaker import CircuitBreakerConfig
from microcall.policy.budget import RetryBudgetConfig
from microcall.server._serverwatch import ServerWatch
from microcall.testing import FakeClock, MockTransport, Reply

log = logging.getLogger("microcall.test")


@pytest.fixture(autouse=True)
def fresh_limiter(monkeypatch: pytest.MonkeyPatch) -> None:
    """Lines written by other tests must not use up this test's tokens."""
    monkeypatch.setattr(logs, "DEFAULT_LIMITER", LogLimiter())


def records(caplog: pytest.LogCaptureFixture, event: str) -> list[logging.LogRecord]:
    return [r for r in caplog.records if getattr(r, "microcall_event", None) == event]


def test_log_event_carries_extras_and_says_what_it_held_back(
    caplog: pytest.LogCaptureFixture,
) -> None:
    clock = FakeClock()
    limiter = LogLimiter(LogLimitConfig(burst=1, every=10))
    caplog.set_level(logging.INFO)
    for _ in range(4):
        log_event(
            log,
            logging.INFO,
            "k",
            "thing %s",
            "happened",
            extra={"microcall_event": "thing"},
            limiter=limiter,
            now=clock.now,
        )
    clock.advance(10)
    log_event(
        log,
        logging.INFO,
        "k",
        "thing %s",
        "happened",
        extra={"microcall_event": "thing"},
        limiter=limiter,
        now=clock.now,
    )
    lines = records(caplog, "thing")
    assert [r.getMessage() for r in lines] == [
        "thing happened",
        "thing happened (3 similar lines suppressed)",
    ]
    assert [vars(r)["suppressed"] for r in lines] == [0, 3]


def test_a_disabled_level_costs_no_token(caplog: pytest.LogCaptureFixture) -> None:
    limiter = LogLimiter(LogLimitConfig(burst=1))
    caplog.set_level(logging.WARNING)
    assert not log_event(log, logging.DEBUG, "k", "quiet", extra={}, limiter=limiter)
    assert log_event(log, logging.WARNING, "k", "loud", extra={}, limiter=limiter)


def test_a_flapping_breaker_writes_a_few_lines(caplog: pytest.LogCaptureFixture) -> None:
    replicas = Replicas(
        [URL("http://user:pw@10.0.0.7:8080/")],
        balancer=BalancerConfig(),
        breaker=CircuitBreakerConfig(minimum_throughput=1, break_duration=1),
        ejection=None,
    )
    caplog.set_level(logging.WARNING, logger="microcall")
    (endpoint,) = replicas.balancer.endpoints
    assert endpoint.breaker is not None
    now = 0.0
    for _ in range(100):  # open, half-open, open, ...: 200 state changes
        replicas.finished(endpoint, 0.01, False, now)
        now += 1.0
        endpoint.breaker.allow(now)
    lines = records(caplog, "breaker_state")
    assert 1 <= len(lines) <= 5
    assert lines[0].getMessage() == "circuit breaker for 10.0.0.7:8080: closed -> open"
    assert vars(lines[0])["endpoint"] == "10.0.0.7:8080"


async def test_budget_exhaustion_is_logged_once_per_burst(caplog: pytest.LogCaptureFixture) -> None:
    clock = FakeClock()
    events = LogEvents(limiter=LogLimiter(LogLimitConfig(burst=2, every=60)), now=clock.now)
    caplog.set_level(logging.WARNING, logger="microcall")
    async with microcall.AsyncClient(
        "http://catalog:8080",
        transport=MockTransport([Reply(503)] * 20),
        strategy=microcall.retry(3, backoff=microcall.Backoff(base=0.001, cap=0.002)),
        budget=RetryBudgetConfig(percent_can_retry=0.0, min_retries_per_second=0),
        observers=[events],
    ) as client:
        for _ in range(10):
            await client.get("/books")
    lines = records(caplog, "budget_exhausted")
    assert [r.getMessage() for r in lines] == [
        "retry to catalog:8080 not sent: retry budget empty"
    ] * 2
    assert {vars(r)["reason"] for r in lines} == {"retry_budget"}


def test_shed_and_expired_requests_are_logged_by_priority(caplog: pytest.LogCaptureFixture) -> None:
    events = LogEvents(limiter=LogLimiter(LogLimitConfig(burst=1, every=60)))
    caplog.set_level(logging.INFO, logger="microcall")
    request = InboundRequest(
        protocol="http", method="GET", path="/", scheme="http", header=lambda n: None
    )
    for kind, priority in [("shed", "low")] * 3 + [("shed", "normal"), ("expired", "high")]:
        watch = ServerWatch([events], request)
        watch.refused(kind, priority)
        watch.handler_done()
        watch.ended(503, None)
    shed = records(caplog, "shed")
    assert [(r.levelno, vars(r)["priority"]) for r in shed] == [
        (logging.WARNING, "low"),
        (logging.WARNING, "normal"),
    ]
    (expired,) = records(caplog, "expired")
    assert expired.levelno == logging.INFO
    assert expired.getMessage() == "refused a high priority request: its deadline had passed"
