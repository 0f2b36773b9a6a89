"""The engine through AsyncClient over a scripted MockTransport: no network, real asyncio."""

from __future__ import annotations

import asyncio
import math
from decimal import Decimal
from typing import Any

import pytest
from yarl import URL

from microcall import (
    AsyncClient,
    AttemptKind,
    AttemptTimeout,
    Backoff,
    ConfigurationError,
    ConnectError,
    DeadlineExceeded,
    HTTPStatusError,
    ReadError,
    Response,
    UsageError,
    hedged,
    retry,
    single,
)
from microcall.testing import FakeClock, MockTransport, Reply

NO_WAIT = Backoff(base=0.0)
RETRY3 = retry(3, backoff=NO_WAIT)
# Far longer than any test waits: a reply this slow only ends by being cancelled.
NEVER = 30.0


def client_for(transport: MockTransport, **options: Any) -> AsyncClient:
    return AsyncClient("http://svc:8080", transport=transport, **options)


async def settle(transport: MockTransport, cancelled: int) -> None:
    """Let cancelled attempts run their cancellation (the engine does not wait for them)."""
    for _ in range(100):
        if transport.cancelled >= cancelled:
            return
        await asyncio.sleep(0)


# ---------------------------------------------------------------- retries


async def test_retries_then_success_records_every_attempt() -> None:
    transport = MockTransport([Reply(503), Reply(error=ConnectError), Reply(200, json={"ok": 1})])
    async with client_for(transport, strategy=RETRY3) as client:
        response = await client.get("/thing")
    assert response.status_code == 200
    assert response.json() == {"ok": 1}
    assert [a.kind for a in response.attempts] == [
        AttemptKind.FIRST,
        AttemptKind.RETRY,
        AttemptKind.RETRY,
    ]
    assert [a.index for a in response.attempts] == [0, 1, 2]
    assert [a.status for a in response.attempts] == [503, None, 200]
    failed = response.attempts[1].error
    assert failed is not None
    assert failed.startswith("ConnectError: ")
    assert all(a.endpoint == "svc:8080" for a in response.attempts)
    assert all(not a.cancelled for a in response.attempts)
    starts = [a.started for a in response.attempts]
    assert starts == sorted(starts)
    assert response.elapsed >= starts[-1]
    assert len(transport.sent) == 3


async def test_single_attempt_records_one_attempt() -> None:
    transport = MockTransport([Reply(503)])
    async with client_for(transport) as client:
        response = await client.get("/thing")
    assert response.status_code == 503
    assert [(a.kind, a.status) for a in response.attempts] == [(AttemptKind.FIRST, 503)]


async def test_the_final_failure_status_is_returned_not_raised() -> None:
    transport = MockTransport([Reply(503), Reply(502), Reply(503)])
    async with client_for(transport, strategy=RETRY3) as client:
        response = await client.get("/thing")
    assert response.status_code == 503
    assert [a.status for a in response.attempts] == [503, 502, 503]


async def test_exhausted_retries_raise_the_last_transport_error_with_all_attempts() -> None:
    errors = [ConnectError("refused"), ReadError("reset"), ConnectError("refused again")]
    transport = MockTransport([Reply(error=error) for error in errors])
    async with client_for(transport, strategy=RETRY3) as client:
        with pytest.raises(ConnectError) as caught:
            await client.get("/thing")
    assert caught.value is errors[-1]
    assert caught.value.request is not None
    assert caught.value.request.url.path == "/thing"
    assert [a.error for a in caught.value.attempts] == [
        "ConnectError: refused",
        "ReadError: reset",
        "ConnectError: refused again",
    ]
    assert [a.kind for a in caught.value.attempts] == [
        AttemptKind.FIRST,
        AttemptKind.RETRY,
        AttemptKind.RETRY,
    ]
    assert "refused again [attempts: #0 first svc:8080 ConnectError: refused" in str(caught.value)


async def test_single_attempt_error_carries_its_attempt() -> None:
    transport = MockTransport([Reply(error=ReadError)])
    async with client_for(transport) as client:
        with pytest.raises(ReadError) as caught:
            await client.get("/thing")
    assert len(caught.value.attempts) == 1
    assert caught.value.attempts[0].error is not None
    assert caught.value.attempts[0].error.startswith("ReadError")


async def test_attempt_timeout_is_retried() -> None:
    transport = MockTransport([Reply(200, delay=NEVER), Reply(200, json="second")])
    strategy = retry(2, attempt_timeout=0.05, backoff=NO_WAIT)
    async with client_for(transport, strategy=strategy, timeout=10.0) as client:
        response = await client.get("/thing")
    assert response.json() == "second"
    assert transport.sent[0].timeout == 0.05
    assert transport.sent[0].headers["X-Request-Timeout"] == "0.050"
    first, second = response.attempts
    assert first.error == "AttemptTimeout"
    assert first.duration >= 0.04
    assert (second.kind, second.status) == (AttemptKind.RETRY, 200)


async def test_attempt_timeouts_to_the_end_raise_attempt_timeout() -> None:
    transport = MockTransport([Reply(200, delay=NEVER), Reply(200, delay=NEVER)])
    strategy = retry(2, attempt_timeout=0.02, backoff=NO_WAIT)
    async with client_for(transport, strategy=strategy, timeout=10.0) as client:
        with pytest.raises(AttemptTimeout) as caught:
            await client.get("/thing")
    assert [a.error for a in caught.value.attempts] == ["AttemptTimeout", "AttemptTimeout"]


# ---------------------------------------------------------------- which timeout a caller gets
#
# The rule (docs/errors.md): the call ends with DeadlineExceeded whenever its
# deadline is what ended it; AttemptTimeout only when the strategy had no
# attempt left although time was. A fake clock moves exactly as each attempt
# "runs", so every case sits precisely where jitter used to decide.


def timing_out(clock: FakeClock) -> MockTransport:
    """Every attempt runs its full timeout, then times out."""

    def handler(request: Any) -> Reply:
        return Reply(error=AttemptTimeout)

    transport = MockTransport(handler)
    send = transport.send

    async def timed(request: Any, url: Any, headers: Any, timeout: float) -> Any:
        clock.advance(timeout)
        return await send(request, url, headers, timeout)

    transport.send = timed  # type: ignore[method-assign]
    return transport


@pytest.mark.parametrize("deadline", [0.399, 0.401, 0.404])
async def test_an_attempt_limit_that_ends_with_the_deadline_raises_deadline_exceeded(
    deadline: float,
) -> None:
    # Two attempts of 0.2 s: the second one's own limit and the deadline fall
    # within the 5 ms floor of each other. Which limit is a hair shorter must
    # not change the answer: no attempt could follow either way.
    clock = FakeClock()
    strategy = retry(2, attempt_timeout=0.2, backoff=NO_WAIT)
    transport = timing_out(clock)
    async with client_for(transport, strategy=strategy, clock=clock, timeout=deadline) as client:
        with pytest.raises(DeadlineExceeded) as caught:
            await client.get("/thing")
    assert isinstance(caught.value.__cause__, AttemptTimeout)
    assert [a.error for a in caught.value.attempts] == ["AttemptTimeout", "DeadlineExceeded"]


async def test_attempts_spent_with_time_left_raise_attempt_timeout() -> None:
    clock = FakeClock()
    strategy = retry(2, attempt_timeout=0.2, backoff=NO_WAIT)
    transport = timing_out(clock)
    async with client_for(transport, strategy=strategy, clock=clock, timeout=0.5) as client:
        with pytest.raises(AttemptTimeout) as caught:
            await client.get("/thing")
    assert [a.error for a in caught.value.attempts] == ["AttemptTimeout", "AttemptTimeout"]


async def test_a_retry_the_deadline_leaves_no_room_for_raises_deadline_exceeded() -> None:
    # One attempt times out with 80 ms left; the backoff before the next
    # would end past the deadline. The deadline stopped the call, not the
    # count of attempts.
    clock = FakeClock()
    strategy = retry(3, attempt_timeout=0.2, backoff=Backoff(base=0.1, jitter=False))
    transport = timing_out(clock)
    async with client_for(transport, strategy=strategy, clock=clock, timeout=0.28) as client:
        with pytest.raises(DeadlineExceeded):
            await client.get("/thing")
    assert len(transport.sent) == 1


async def test_the_timeout_sent_downstream_is_rounded_down_to_the_millisecond() -> None:
    clock = FakeClock()
    transport = MockTransport([Reply(200), Reply(200)])
    async with client_for(transport, clock=clock) as client:
        await client.get("/thing", timeout=1.2346)
        await client.get("/thing", timeout=0.0059999)
    assert [sent.headers["X-Request-Timeout"] for sent in transport.sent] == ["1.234", "0.005"]


# ---------------------------------------------------------------- idempotency


async def test_post_is_not_retried_by_default() -> None:
    transport = MockTransport([Reply(503), Reply(200)])
    async with client_for(transport, strategy=RETRY3) as client:
        response = await client.post("/orders", json={"book": 1})
    assert response.status_code == 503
    assert len(transport.sent) == 1
    assert len(response.attempts) == 1


async def test_post_is_not_hedged_by_default() -> None:
    transport = MockTransport([Reply(200, delay=0.1), Reply(200)])
    async with client_for(transport, strategy=hedged(0.01)) as client:
        response = await client.post("/orders", json={"book": 1})
    assert response.status_code == 200
    assert len(transport.sent) == 1


async def test_post_retries_when_marked_idempotent() -> None:
    transport = MockTransport([Reply(503), Reply(200)])
    async with client_for(transport, strategy=RETRY3) as client:
        response = await client.post("/orders", json={"book": 1}, idempotent=True)
    assert response.status_code == 200
    assert len(transport.sent) == 2


async def test_post_retries_with_an_idempotency_key() -> None:
    transport = MockTransport([Reply(503), Reply(200)])
    async with client_for(transport, strategy=RETRY3) as client:
        response = await client.post("/orders", headers={"idempotency-key": "k-1"})
    assert response.status_code == 200
    assert len(transport.sent) == 2
    assert all(s.headers["idempotency-key"] == "k-1" for s in transport.sent)


async def test_an_idempotency_key_in_the_client_headers_counts_too() -> None:
    transport = MockTransport([Reply(503), Reply(200)])
    async with client_for(transport, strategy=RETRY3, headers={"Idempotency-Key": "k-2"}) as client:
        response = await client.patch("/orders/1", json={})
    assert response.status_code == 200


async def test_an_idempotency_key_in_the_client_headers_counts_for_a_bare_post() -> None:
    transport = MockTransport([Reply(503), Reply(200)])
    async with client_for(transport, strategy=RETRY3, headers={"Idempotency-Key": "k-3"}) as client:
        response = await client.post("/orders")
    assert response.status_code == 200


@pytest.mark.parametrize("method", ["GET", "HEAD", "OPTIONS", "PUT", "DELETE"])
async def test_idempotent_methods_retry(method: str) -> None:
    transport = MockTransport([Reply(503), Reply(200)])
    async with client_for(transport, strategy=RETRY3) as client:
        response = await client.request(method, "/thing")
    assert response.status_code == 200
    assert [s.request.method for s in transport.sent] == [method, method]


async def test_idempotent_false_stops_a_get_from_retrying() -> None:
    transport = MockTransport([Reply(503), Reply(200)])
    async with client_for(transport, strategy=RETRY3) as client:
        response = await client.get("/thing", idempotent=False)
    assert response.status_code == 503
    assert len(transport.sent) == 1


async def test_the_same_body_is_replayed_on_every_attempt() -> None:
    transport = MockTransport([Reply(503), Reply(200)])
    async with client_for(transport, strategy=RETRY3) as client:
        await client.put("/thing", json={"v": 1})
    assert [s.request.body for s in transport.sent] == [b'{"v":1}', b'{"v":1}']


# ---------------------------------------------------------------- hedging


async def test_the_faster_hedge_wins_and_the_loser_is_cancelled() -> None:
    transport = MockTransport([Reply(200, delay=NEVER, json="slow"), Reply(200, json="fast")])
    async with client_for(transport, strategy=hedged(0.02), timeout=10.0) as client:
        response = await client.get("/thing")
        await settle(transport, 1)
    assert response.json() == "fast"
    assert transport.cancelled == 1
    loser, winner = response.attempts
    assert (loser.index, loser.kind, loser.cancelled, loser.status) == (
        0,
        AttemptKind.FIRST,
        True,
        None,
    )
    assert (winner.index, winner.kind, winner.cancelled, winner.status) == (
        1,
        AttemptKind.HEDGE,
        False,
        200,
    )
    assert winner.started >= 0.015
    assert "cancelled" in loser.describe()


async def test_a_hedge_that_is_slower_loses() -> None:
    # 0.5 s leaves a loaded event loop ample time to send the hedge at 10 ms.
    transport = MockTransport([Reply(200, delay=0.5, json="first"), Reply(200, delay=NEVER)])
    async with client_for(transport, strategy=hedged(0.01), timeout=10.0) as client:
        response = await client.get("/thing")
        await settle(transport, 1)
    assert response.json() == "first"
    assert transport.cancelled == 1
    assert [a.cancelled for a in response.attempts] == [False, True]


async def test_no_hedge_when_the_first_answers_in_time() -> None:
    transport = MockTransport([Reply(200, json="only")])
    async with client_for(transport, strategy=hedged(0.5)) as client:
        response = await client.get("/thing")
    assert response.json() == "only"
    assert len(transport.sent) == 1
    assert transport.cancelled == 0


async def test_a_failed_attempt_is_replaced_at_once() -> None:
    transport = MockTransport([Reply(error=ConnectError), Reply(200, json="second")])
    async with client_for(transport, strategy=hedged(5.0)) as client:
        response = await client.get("/thing")
    assert response.json() == "second"
    assert [a.kind for a in response.attempts] == [AttemptKind.FIRST, AttemptKind.RETRY]
    # Far less than the 5 s hedge delay: the retry did not wait for it.
    assert response.attempts[1].started < 2.5


async def test_hedged_attempts_never_exceed_the_configured_count() -> None:
    transport = MockTransport(
        [Reply(200, delay=0.5), Reply(200, delay=NEVER), Reply(200, delay=NEVER)]
    )
    async with client_for(transport, strategy=hedged(0.01, attempts=3), timeout=10.0) as client:
        response = await client.get("/thing")
        await settle(transport, 2)
    assert len(transport.sent) == 3
    assert [a.kind for a in response.attempts] == [
        AttemptKind.FIRST,
        AttemptKind.HEDGE,
        AttemptKind.HEDGE,
    ]
    assert sum(a.cancelled for a in response.attempts) == 2


# ---------------------------------------------------------------- Response


async def test_raise_for_status_raises_with_the_response() -> None:
    transport = MockTransport([Reply(404), Reply(503), Reply(200), Reply(304)])
    async with client_for(transport) as client:
        not_found = await client.get("/missing")
        unavailable = await client.get("/busy")
        ok = await client.get("/fine")
        not_modified = await client.get("/same")
    with pytest.raises(HTTPStatusError, match=r"404.*client error") as caught:
        not_found.raise_for_status()
    assert caught.value.response is not_found
    assert caught.value.request is not_found.request
    assert caught.value.attempts == not_found.attempts
    with pytest.raises(HTTPStatusError, match=r"503.*server error"):
        unavailable.raise_for_status()
    assert ok.raise_for_status() is ok
    assert not_modified.raise_for_status() is not_modified
    assert (not_found.ok, ok.ok) == (False, True)


async def test_text_uses_the_declared_charset() -> None:
    transport = MockTransport(
        [
            Reply(
                200,
                content="héllo".encode("latin-1"),
                headers={"Content-Type": 'text/plain; charset="ISO-8859-1"'},
            ),
            Reply(200, content="héllo".encode()),
            Reply(
                200, content=b"caf\xc3\xa9", headers={"Content-Type": "text/plain; charset=nope"}
            ),
            Reply(200, content=b"\xff ok"),
        ]
    )
    async with client_for(transport) as client:
        declared = await client.get("/a")
        default = await client.get("/b")
        unknown = await client.get("/c")
        broken = await client.get("/d")
    assert (declared.encoding, declared.text) == ("ISO-8859-1", "héllo")
    assert (default.encoding, default.text) == ("utf-8", "héllo")
    assert (unknown.encoding, unknown.text) == ("nope", "café")
    assert broken.text == "\ufffd ok"


async def test_json_body_and_keyword_arguments() -> None:
    transport = MockTransport([Reply(200, json={"price": 1.5, "tags": ["a"]})])
    async with client_for(transport) as client:
        response = await client.get("/book")
    assert response.headers["content-type"] == "application/json"
    assert response.json() == {"price": 1.5, "tags": ["a"]}
    assert response.json(parse_float=Decimal)["price"] == Decimal("1.5")
    assert repr(response) == "<Response [200]>"
    assert response.url == URL("http://svc:8080/book")


# ---------------------------------------------------------------- configuration


@pytest.mark.parametrize(
    "options",
    [
        {"timeout": -1.0},
        {"timeout": 0},
        {"timeout": math.nan},
        {"timeout": math.inf},
        {"timeout": "10"},
        {"strategy": "retry"},
        {"strategy": retry},  # the factory itself, not called
        {"strategy": None},
        {"priority": "urgent"},
        {"deadline_floor": -0.001},
        {"retries": 3},
        {"time_out": 1.0},
    ],
    ids=repr,
)
def test_bad_client_options_raise_at_construction(options: dict[str, Any]) -> None:
    with pytest.raises(ConfigurationError):
        AsyncClient("http://svc", transport=MockTransport([]), **options)


def test_unknown_options_are_named() -> None:
    with pytest.raises(ConfigurationError, match="retries"):
        AsyncClient("http://svc", transport=MockTransport([]), retries=3)  # type: ignore[call-arg]


@pytest.mark.parametrize("base_url", ["ftp://svc", "svc:8080", "/api", "localhost", ""])
def test_bad_base_url_raises_at_construction(base_url: str) -> None:
    with pytest.raises(ConfigurationError, match="base_url"):
        AsyncClient(base_url, transport=MockTransport([]))


@pytest.mark.parametrize(
    "options",
    [{"priority": "urgent"}, {"timeout": -1}, {"timeot": 1.0}, {"strategy_name": "retry"}],
    ids=repr,
)
async def test_bad_call_options_raise_before_sending(options: dict[str, Any]) -> None:
    transport = MockTransport([Reply(200)])
    async with client_for(transport) as client:
        with pytest.raises(ConfigurationError):
            await client.get("/thing", **options)
    assert transport.sent == []


async def test_a_closed_client_refuses_calls() -> None:
    transport = MockTransport([Reply(200)])
    client = client_for(transport)
    await client.aclose()
    with pytest.raises(UsageError, match="closed"):
        await client.get("/thing")


# ---------------------------------------------------------------- building requests


async def sent_request(**options: Any) -> tuple[bytes | None, dict[str, str]]:
    transport = MockTransport([Reply(200)])
    async with client_for(transport, headers={"User-Agent": "tests"}) as client:
        await client.post("/orders", **options)
    sent = transport.sent[0]
    return sent.request.body, {k.lower(): v for k, v in sent.headers.items()}


async def test_json_body() -> None:
    body, headers = await sent_request(json={"title": "é", "n": [1, 2]})
    assert body == '{"title":"é","n":[1,2]}'.encode()
    assert headers["content-type"] == "application/json"
    assert headers["user-agent"] == "tests"


async def test_form_body() -> None:
    body, headers = await sent_request(data={"q": "a b", "tag": ["x", "y"]})
    assert body == b"q=a+b&tag=x&tag=y"
    assert headers["content-type"] == "application/x-www-form-urlencoded"


@pytest.mark.parametrize(
    ("options", "expected"),
    [
        ({"content": b"raw"}, b"raw"),
        ({"content": bytearray(b"raw")}, b"raw"),
        ({"content": "café"}, "café".encode()),
        ({"data": b"raw"}, b"raw"),
        ({"data": "text"}, b"text"),
    ],
    ids=repr,
)
async def test_raw_bodies(options: dict[str, Any], expected: bytes) -> None:
    body, headers = await sent_request(**options)
    assert body == expected
    assert "content-type" not in headers


async def test_no_body() -> None:
    body, headers = await sent_request()
    assert body is None
    assert "content-type" not in headers


async def test_an_explicit_content_type_wins() -> None:
    body, headers = await sent_request(json=[1], headers={"content-type": "application/vnd.x+json"})
    assert body == b"[1]"
    assert headers["content-type"] == "application/vnd.x+json"


@pytest.mark.parametrize(
    "options",
    [
        {"json": {}, "data": {}},
        {"data": b"x", "content": b"y"},
        {"json": 1, "content": b"y"},
        {"content": 123},
    ],
    ids=repr,
)
async def test_bad_bodies_are_usage_errors(options: dict[str, Any]) -> None:
    transport = MockTransport([Reply(200)])
    async with client_for(transport) as client:
        with pytest.raises(UsageError):
            await client.post("/orders", **options)
    assert transport.sent == []


async def sent_url(url: str | URL, base: str | None = "http://svc:8080", **options: Any) -> URL:
    transport = MockTransport([Reply(200)])
    async with AsyncClient(base, transport=transport) as client:
        await client.get(url, **options)
    return transport.sent[0].request.url


async def test_params_merge_with_the_query() -> None:
    url = await sent_url(
        "/books?a=1",
        params={"skip": None, "tag": [1, None, "two"], "new": True, "old": False, "price": 1.5},
    )
    assert list(url.query.items()) == [
        ("a", "1"),
        ("tag", "1"),
        ("tag", "two"),
        ("new", "true"),
        ("old", "false"),
        ("price", "1.5"),
    ]


async def test_params_as_pairs() -> None:
    url = await sent_url("/books", params=[("id", 1), ("id", 2), ("x", None)])
    assert list(url.query.items()) == [("id", "1"), ("id", "2")]


async def test_base_url_path_prefix_is_kept() -> None:
    assert (await sent_url("books", base="http://svc/api")).path == "/api/books"
    assert (await sent_url("/books", base="http://svc/api/")).path == "/api/books"


async def test_absolute_url_overrides_the_base() -> None:
    url = await sent_url("http://other:9000/x")
    assert (url.host, url.port, url.path) == ("other", 9000, "/x")


async def test_absolute_url_without_a_base() -> None:
    url = await sent_url("http://other:9000/x", base=None)
    assert str(url) == "http://other:9000/x"


@pytest.mark.parametrize("url", ["/thing", "thing", URL("/thing")], ids=repr)
async def test_relative_url_without_a_base_is_a_usage_error(url: str | URL) -> None:
    transport = MockTransport([Reply(200)])
    async with AsyncClient(transport=transport) as client:
        with pytest.raises(UsageError, match="base_url"):
            await client.get(url)
    assert transport.sent == []


async def test_call_headers_override_client_headers() -> None:
    transport = MockTransport([Reply(200)])
    async with client_for(transport, headers={"X-Team": "a", "Accept": "*/*"}) as client:
        await client.get("/thing", headers={"x-team": "b"})
    headers = {k.lower(): v for k, v in transport.sent[0].headers.items()}
    assert headers["x-team"] == "b"
    assert headers["accept"] == "*/*"


async def test_verbs_send_their_method() -> None:
    transport = MockTransport(lambda request: Reply(200))
    async with client_for(transport, strategy=single()) as client:
        for verb in ("get", "head", "options", "post", "put", "patch", "delete"):
            response: Response = await getattr(client, verb)("/thing")
            assert response.request.method == verb.upper()
        await client.request("purge", "/thing")
    assert transport.sent[-1].request.method == "PURGE"


@pytest.mark.parametrize(
    "options",
    [{"budget": "20%"}, {"observers": [object()]}],
    ids=["budget", "observers"],
)
def test_bad_resilience_and_observer_options_are_refused_at_construction(
    options: dict[str, object],
) -> None:
    with pytest.raises(ConfigurationError):
        AsyncClient("http://svc", **options)  # type: ignore[arg-type]


# ---------------------------------------------------------------- observers


class Recorder:
    """An observer that keeps how each call and attempt ended."""

    def __init__(self) -> None:
        self.calls: list[tuple[BaseException | None, tuple[Any, ...]]] = []
        self.attempts: list[Any] = []

    def call_started(self, request: object) -> Recorder:
        return self

    def attempt_started(self, index: int, kind: object, url: object, headers: object) -> Recorder:
        return self

    def attempt_ended(self, attempt: object) -> None:
        self.attempts.append(attempt)

    def call_ended(self, response: object, error: BaseException | None, attempts: Any) -> None:
        self.calls.append((error, tuple(attempts)))


@pytest.mark.parametrize("strategy", [single(), RETRY3], ids=["straight path", "planned path"])
async def test_observers_hear_a_call_its_caller_cancelled(strategy: Any) -> None:
    transport = MockTransport([Reply(200, delay=NEVER)])
    recorder = Recorder()
    async with client_for(transport, strategy=strategy, observers=[recorder]) as client:
        call = asyncio.create_task(client.get("/slow"))
        for _ in range(100):  # until the attempt is on its way
            if transport.sent:
                break
            await asyncio.sleep(0)
        call.cancel()
        with pytest.raises(asyncio.CancelledError):
            await call
    [(error, attempts)] = recorder.calls
    assert isinstance(error, asyncio.CancelledError)
    [attempt] = recorder.attempts
    assert attempt.cancelled
    assert attempts in ((), (attempt,))


async def test_calls_given_only_a_url_reuse_their_request_and_keep_it_apart() -> None:
    transport = MockTransport(lambda request: Reply(200))
    async with client_for(transport, headers={"X-Team": "books"}) as client:
        first = await client.get("/a")
        again = await client.get("/a")
        other = await client.get("/b")
        posted = await client.post("/a")
        given = await client.get("/a", headers={"X-Extra": "1"})
    assert again.request is first.request
    assert other.request.url.path == "/b"
    assert posted.request.method == "POST"
    assert not posted.request.replayable
    assert given.request is not first.request
    assert "X-Extra" not in first.request.headers
    assert [sent.headers.get("X-Extra") for sent in transport.sent] == [None, None, None, None, "1"]
