"""How a client's observers watch its calls: who is told of attempts, and who guards whom."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence

import pytest
from aiohttp import web
from prometheus_client import CollectorRegistry
from yarl import URL

import microcall
from microcall._attempt import Attempt, AttemptKind
from microcall._call_watch import Watching
from microcall._request import Request
from microcall._response import Response
from microcall.observe import LogLimiter, logs
from microcall.observe._client_metrics import _Target
from microcall.observe.prometheus import ClientMetrics
from microcall.testing import MockTransport, Reply
from tests.conftest import Serve
from tests.observe._metrics import value

LABELS = {"http_request_method": "GET", "server_address": "catalog", "server_port": "8080"}


@pytest.fixture(autouse=True)
def fresh_limiter(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(logs, "DEFAULT_LIMITER", LogLimiter())


class Recorder:
    """An observer that notes what it was told; ``follows_attempts`` as its instance says."""

    def __init__(self, *, follows_attempts: bool = True) -> None:
        self.follows_attempts = follows_attempts
        self.heard: list[str] = []

    def call_started(self, request: Request) -> Recorder:
        self.heard.append("call")
        return self

    def attempt_started(
        self, index: int, kind: AttemptKind, url: URL, headers: dict[str, str]
    ) -> Recorder:
        self.heard.append(f"attempt {index}")
        return self

    def attempt_ended(self, attempt: Attempt) -> None:
        self.heard.append(f"attempt {attempt.index} ended")

    def call_ended(
        self, response: Response | None, error: BaseException | None, attempts: object
    ) -> None:
        self.heard.append("call ended")


def test_metrics_alone_are_the_calls_watch_and_nothing_else_is(
    registry: CollectorRegistry,
) -> None:
    metrics = ClientMetrics(registry)
    assert Watching([metrics]).sole is metrics
    # Beside another observer, or unguarded, the engine's fan-out guards each.
    assert Watching([metrics, Recorder()]).sole is None
    assert Watching([Recorder(follows_attempts=False)]).sole is None


async def test_an_observer_that_follows_no_attempt_is_told_of_none() -> None:
    follows, counts = Recorder(), Recorder(follows_attempts=False)
    async with microcall.AsyncClient(
        "http://catalog:8080",
        transport=MockTransport([Reply(503), Reply(200)]),
        strategy=microcall.retry(2, backoff=microcall.Backoff(base=0.001, cap=0.002)),
        observers=[follows, counts],
    ) as client:
        await client.get("/books")
    assert follows.heard == [
        "call",
        "attempt 0",
        "attempt 0 ended",
        "attempt 1",
        "attempt 1 ended",
        "call ended",
    ]
    assert counts.heard == ["call", "call ended"]


@pytest.mark.parametrize("where", ["call start", "call end"])
async def test_metrics_that_break_are_logged_and_the_call_goes_on(
    registry: CollectorRegistry,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
    where: str,
) -> None:
    """Metrics guard themselves when they are a client's only observer."""

    def broken(*args: object) -> None:
        raise RuntimeError("a broken metric")

    if where == "call start":
        monkeypatch.setattr(ClientMetrics, "_target", broken)
    else:
        monkeypatch.setattr(_Target, "usual_cells", broken)
    metrics = ClientMetrics(registry)
    caplog.set_level(logging.ERROR, logger="microcall")
    async with microcall.AsyncClient(
        "http://catalog:8080",
        transport=MockTransport(lambda sent: Reply(200, content=b"ok")),
        observers=[metrics],
    ) as client:
        assert client._engine.watching is not None
        assert client._engine.watching.sole is metrics
        for _ in range(3):
            assert (await client.get("/books")).content == b"ok"
    failed = [r for r in caplog.records if getattr(r, "microcall_event", "") == "observer_failed"]
    assert failed
    assert f"failed at {where}" in failed[0].getMessage()
    assert "a broken metric" in (failed[0].exc_text or "")
    if where == "call end":
        # Each call that broke its metrics at the end is still counted in flight:
        # what was done before the fault stays done.
        assert value(registry, "http_client_active_requests", **LABELS) == 3


class EndsOnly:
    """A sole observer that guards itself and follows no attempt: its scope ends calls only."""

    follows_attempts = False
    guards_itself = True
    thread_safe = True

    def __init__(self) -> None:
        self.ended: list[int] = []

    def call_started(self, request: Request) -> EndsOnly:
        return self

    def attempt_started(
        self, index: int, kind: AttemptKind, url: URL, headers: dict[str, str]
    ) -> None:
        raise AssertionError("an observer that follows no attempt was told of one")

    def call_ended(
        self, response: Response | None, error: BaseException | None, attempts: Sequence[Attempt]
    ) -> None:
        self.ended.append(len(attempts))


async def test_no_path_tells_a_sole_observer_of_attempts_it_does_not_follow() -> None:
    observer = EndsOnly()
    retrying = microcall.retry(2, backoff=microcall.Backoff(base=0.0))
    async with microcall.AsyncClient(
        "http://catalog:8080",
        transport=MockTransport([Reply(200), Reply(503), Reply(200)]),
        strategy=retrying,
        observers=[observer],
    ) as client:
        await client.get("/books", strategy=microcall.single())  # the straight path
        await client.get("/books")  # the planned path
    resilience = microcall.Resilience(strategy=retrying, on=ConnectionError, observers=[observer])
    attempts = iter([ConnectionError("reset"), None])

    def flaky() -> str:
        error = next(attempts)
        if error is not None:
            raise error
        return "row"

    assert resilience.call(flaky) == "row"
    assert observer.ended == [1, 2, 2]


async def test_nor_do_a_blocking_clients_direct_calls(serve: Serve) -> None:
    answers = iter([503, 200, 200])

    async def flaky(request: web.Request) -> web.Response:
        return web.Response(status=next(answers))

    app = web.Application()
    app.router.add_get("/books", flaky)
    base = await serve(app)
    observer = EndsOnly()

    def calls() -> bool:
        with microcall.Client(
            base,
            strategy=microcall.retry(2, backoff=microcall.Backoff(base=0.0)),
            observers=[observer],
        ) as client:
            client.get("/books")  # 503, then 200
            client.get("/books", strategy=microcall.single())
            return client._loop.started

    assert not await asyncio.to_thread(calls)  # both calls ran in this thread, directly
    assert observer.ended == [2, 1]
