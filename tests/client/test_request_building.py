"""Request building: a request HTTP can carry is sent exactly as given; any other is refused.

Every outcome of building a request from random methods, headers, JSON
values, query parameters, form fields and URLs is one of two: the request
reaches a real server on loopback and the server received exactly what was
given, or ``request()`` raised a UsageError (a ConfigurationError for a
client's own headers) before anything was sent, and the server saw nothing.
Never a TypeError, ValueError or UnicodeEncodeError from inside.

The oracle here is written from the rules (RFC 9110 tokens and field values,
JSON without NaN, UTF-8 text), not from microcall's own checks.
"""

from __future__ import annotations

import asyncio
import json
import math
import re
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qsl

import pytest
from aiohttp import web
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import microcall
from microcall import AsyncClient, Client, ConfigurationError, FuturesClient, UsageError

# Bounded and deterministic: the same examples on every run, quick enough for
# `make test` on a loaded machine.
FUZZ = settings(
    max_examples=120,
    deadline=None,
    derandomize=True,
    database=None,
    suppress_health_check=[HealthCheck.too_slow],
)

TOKEN = re.compile(r"[!#$%&'*+\-.^_`|~0-9A-Za-z]+")
TCHARS = "!#$%&'*+-.^_`|~0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"
# Characters that break things: controls, a lone surrogate of each half,
# non-ASCII of each UTF-8 length, separators.
NASTY = ["\x00", "\r", "\n", "\t", "\x7f", "\x1b", "\ud800", "\udfff", "é", "€", "😀", "\u2028"]
NASTY += [" ", ":", ";", ",", "=", "&", "+", "?", "#", "%", '"', "\\"]
nasty_text = st.text(
    alphabet=st.one_of(st.sampled_from(NASTY), st.characters(max_codepoint=0x7F)), max_size=12
)
# Methods aiohttp's server (llhttp) knows; it answers 400 to any other token.
SERVER_METHODS = ["GET", "POST", "PUT", "PATCH", "DELETE", "OPTIONS", "PROPFIND", "MKCOL", "PURGE"]
# Headers the client or the transport writes itself, or that frame the body:
# their own tests below say what happens to them.
OWNED = {
    "host",
    "content-length",
    "transfer-encoding",
    "content-type",
    "connection",
    "te",
    "upgrade",
    "expect",
    "keep-alive",
    "accept",
    "accept-encoding",
    "user-agent",
    "x-request-timeout",
    "x-request-priority",
    "trailer",
    "proxy-connection",
}


@dataclass
class Seen:
    method: str
    path: str
    query: list[tuple[str, str]]
    headers: list[tuple[str, str]]
    body: bytes


@dataclass
class EchoServer:
    """An aiohttp app on 127.0.0.1:0 in its own thread, recording every request it receives."""

    base: str = ""
    seen: list[Seen] = field(default_factory=list)

    async def _record(self, request: web.Request) -> web.Response:
        self.seen.append(
            Seen(
                method=request.method,
                path=request.path,
                query=list(request.query.items()),
                headers=[
                    (name.decode("latin-1"), value.decode("latin-1"))
                    for name, value in request.raw_headers
                ],
                body=await request.read(),
            )
        )
        return web.Response(text="seen")


@pytest.fixture(scope="module")
def echo() -> Iterator[EchoServer]:
    server = EchoServer()
    loop = asyncio.new_event_loop()
    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", server._record)
    runner = web.AppRunner(app, access_log=None)

    async def start() -> None:
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        host, port = runner.addresses[0][:2]
        server.base = f"http://{host}:{port}"

    thread = threading.Thread(target=loop.run_forever, daemon=True)
    thread.start()
    asyncio.run_coroutine_threadsafe(start(), loop).result(10)
    yield server
    asyncio.run_coroutine_threadsafe(runner.cleanup(), loop).result(10)
    loop.call_soon_threadsafe(loop.stop)
    thread.join(10)
    loop.close()


@pytest.fixture(scope="module")
def run(echo: EchoServer) -> Iterator[Callable[..., Seen | UsageError]]:
    """``run(method, url, **options)``: the request the server saw, or the UsageError raised.

    A refusal must come from ``request()`` itself, before a coroutine exists,
    and leave the server untouched.
    """
    with asyncio.Runner() as runner:
        client = AsyncClient(echo.base, timeout=10.0)

        def send(method: str, url: Any, **options: Any) -> Seen | UsageError:
            before = len(echo.seen)
            try:
                call = client.request(method, url, **options)
            except UsageError as refused:
                assert len(echo.seen) == before
                return refused
            response = runner.run(call)
            assert response.status_code == 200, response.text
            assert len(echo.seen) == before + 1
            return echo.seen[-1]

        yield send
        runner.run(client.aclose())


# ------------------------------------------------------------------ the oracle


def field_value_ok(value: object) -> bool:
    return isinstance(value, str) and all(char == "\t" or " " <= char <= "~" for char in value)


def utf8_ok(text: str) -> bool:
    return not any("\ud800" <= char <= "\udfff" for char in text)


def query_ok(value: object) -> bool:
    if isinstance(value, (list, tuple)):
        return all(query_ok(one) for one in value)
    if isinstance(value, str):
        return utf8_ok(value)
    return value is None or isinstance(value, (int, float))  # bool is an int


def query_pairs(params: dict[str, Any]) -> list[tuple[str, str]]:
    pairs = []
    for name, value in params.items():
        for one in value if isinstance(value, (list, tuple)) else [value]:
            if one is None:
                continue
            text = ("true" if one else "false") if isinstance(one, bool) else str(one)
            pairs.append((name, text))
    return pairs


def received(seen: Seen, name: str) -> list[str]:
    return [value for key, value in seen.headers if key.lower() == name.lower()]


# ------------------------------------------------------------------ fuzzing

header_names = st.one_of(
    st.text(alphabet=TCHARS, min_size=1, max_size=10).filter(
        lambda name: name.lower() not in OWNED
    ),
    nasty_text,
    st.integers(),
    st.binary(max_size=3),
)
header_values = st.one_of(
    nasty_text,
    st.text(alphabet=TCHARS + " \t", max_size=10),
    st.integers(),
    st.floats(),
    st.binary(max_size=4),
    st.none(),
)
header_maps = st.lists(
    st.tuples(header_names, header_values),
    max_size=4,
    unique_by=lambda pair: str(pair[0]).lower(),
).map(dict)


@FUZZ
@given(headers=header_maps)
def test_headers_are_sent_as_given_or_refused(
    run: Callable[..., Seen | UsageError], headers: dict[Any, Any]
) -> None:
    outcome = run("GET", "/h", headers=headers)
    carriable = all(
        isinstance(name, str) and TOKEN.fullmatch(name) and field_value_ok(value)
        for name, value in headers.items()
    )
    if not carriable:
        assert isinstance(outcome, UsageError)
        return
    assert isinstance(outcome, Seen), outcome
    for name, value in headers.items():
        # Whitespace around a value is not part of it (RFC 9110 section 5.5).
        assert received(outcome, name) == [value.strip(" \t")]


@FUZZ
@given(
    method=st.one_of(
        st.sampled_from(SERVER_METHODS + [name.lower() for name in SERVER_METHODS]),
        nasty_text.filter(lambda text: not TOKEN.fullmatch(text.upper())),
    )
)
def test_methods_are_tokens(run: Callable[..., Seen | UsageError], method: str) -> None:
    for options in ({}, {"headers": {"X-Options": "1"}}):  # the bare path and the built one
        outcome = run(method, "/m", **options)
        if TOKEN.fullmatch(method.upper()):
            assert isinstance(outcome, Seen), outcome
            assert outcome.method == method.upper()
        else:
            assert isinstance(outcome, UsageError)


json_values = st.recursive(
    st.one_of(
        st.none(),
        st.booleans(),
        st.integers(),
        st.floats(),  # NaN and both infinities included
        nasty_text,
    ),
    lambda inner: st.one_of(
        st.lists(inner, max_size=3), st.dictionaries(nasty_text, inner, max_size=3)
    ),
    max_leaves=8,
)
unserialisable = st.sampled_from([object(), {1, 2}, b"bytes", {(1, 2): "tuple key"}, 1j])


@FUZZ
@given(value=st.one_of(json_values, json_values.map(lambda v: [v, object()]), unserialisable))
def test_json_is_sent_as_json_or_refused(run: Callable[..., Seen | UsageError], value: Any) -> None:
    outcome = run("POST", "/j", json=value)
    if value is None:  # as in requests: json=None is no body, not "null"
        assert isinstance(outcome, Seen)
        assert outcome.body == b""
        return
    try:
        expected = json.dumps(
            value, separators=(",", ":"), ensure_ascii=False, allow_nan=False
        ).encode()
    except (TypeError, ValueError, UnicodeEncodeError):
        assert isinstance(outcome, UsageError)
        return
    assert isinstance(outcome, Seen), outcome
    assert outcome.body == expected
    assert received(outcome, "Content-Type") == ["application/json"]
    assert json.loads(outcome.body) == json.loads(expected)


query_values = st.one_of(
    nasty_text,
    st.integers(),
    st.floats(allow_nan=False),
    st.booleans(),
    st.none(),
    st.binary(max_size=3),
    st.sampled_from([object(), {"nested": 1}]),
)
query_maps = st.dictionaries(
    nasty_text,
    st.one_of(query_values, st.lists(query_values, max_size=3), st.tuples(query_values)),
    max_size=4,
)


@FUZZ
@given(params=query_maps)
def test_params_are_sent_as_given_or_refused(
    run: Callable[..., Seen | UsageError], params: dict[str, Any]
) -> None:
    outcome = run("GET", "/q", params=params)
    if not all(utf8_ok(name) and query_ok(value) for name, value in params.items()):
        assert isinstance(outcome, UsageError)
        return
    assert isinstance(outcome, Seen), outcome
    assert outcome.query == query_pairs(params)


@FUZZ
@given(form=query_maps)
def test_form_fields_are_sent_as_given_or_refused(
    run: Callable[..., Seen | UsageError], form: dict[str, Any]
) -> None:
    outcome = run("POST", "/f", data=form)
    if not form:  # an empty form is no body
        assert isinstance(outcome, Seen)
        assert outcome.body == b""
        return
    if not all(utf8_ok(name) and query_ok(value) for name, value in form.items()):
        assert isinstance(outcome, UsageError)
        return
    assert isinstance(outcome, Seen), outcome
    assert parse_qsl(outcome.body.decode(), keep_blank_values=True) == query_pairs(form)
    assert received(outcome, "Content-Type") == ["application/x-www-form-urlencoded"]


@FUZZ
@given(
    segment=st.text(
        alphabet=st.one_of(st.sampled_from(NASTY), st.characters(max_codepoint=0x7F)),
        max_size=12,
    ).filter(lambda text: not set(text) & set("/?#%\\.")),
    absolute=st.booleans(),
)
def test_urls_are_sent_as_given_or_refused(
    run: Callable[..., Seen | UsageError], echo: EchoServer, segment: str, absolute: bool
) -> None:
    url = f"{echo.base}/u/{segment}" if absolute else f"/u/{segment}"
    for options in ({}, {"headers": {"X-Options": "1"}}):  # the bare path and the built one
        outcome = run("GET", url, **options)
        if any(char < " " or char == "\x7f" for char in segment) or not utf8_ok(segment):
            assert isinstance(outcome, UsageError)
        else:
            assert isinstance(outcome, Seen), outcome
            assert outcome.path == f"/u/{segment}"


# ------------------------------------------------------------------ the rules, one by one

REFUSED: list[tuple[str, dict[str, Any], str]] = [
    ("GET", {"deadline": 2}, "deadline= takes a microcall.Deadline (seconds go in timeout=)"),
    ("GET", {"headers": {"X-Count": 1}}, "a header value is a str, got int"),
    ("GET", {"headers": {"X-Raw": b"x"}}, "a header value is a str, got bytes"),
    ("GET", {"headers": {1: "x"}}, "a header name is a str"),
    ("GET", {"headers": {"X-Evil": "a\r\nX-Injected: 1"}}, "control character"),
    ("GET", {"headers": {"X-Nul": "a\x00b"}}, "control character"),
    ("GET", {"headers": {"Bad Name": "x"}}, "not a token"),
    ("GET", {"headers": {"": "x"}}, "not a token"),
    ("GET", {"headers": {"X-Text": "é"}}, "non-ASCII"),
    ("GET", {"headers": {"X-Text": "\ud800"}}, "lone surrogate"),
    ("GET", {"headers": [("X-A", "1")]}, "mapping"),
    ("", {"headers": {"X-A": "1"}}, "method is a token"),
    ("GE T", {"headers": {"X-A": "1"}}, "method is a token"),
    ("POST", {"json": math.nan}, "Out of range float"),
    ("POST", {"json": {"x": -math.inf}}, "Out of range float"),
    ("POST", {"json": {"when": object()}}, "not JSON serializable"),
    ("POST", {"json": ["\udfff"]}, "lone surrogate"),
    ("POST", {"content": "\ud800"}, "content= holds a lone surrogate"),
    ("POST", {"data": {"a": "\ud800"}}, "lone surrogate"),
    ("POST", {"data": {"a": {"nested": 1}}}, "is a dict"),
    ("POST", {"content": b"abc", "headers": {"Transfer-Encoding": "chunked"}}, "Transfer-Encoding"),
    ("GET", {"headers": {"Transfer-Encoding": "chunked"}}, "Transfer-Encoding"),
    ("POST", {"content": b"abc", "headers": {"Content-Length": "10"}}, "Content-Length: 10"),
    ("GET", {"headers": {"Content-Length": "5"}}, "Content-Length: 5"),
    ("POST", {"content": b"abc", "headers": {"Content-Length": "+3"}}, "Content-Length"),
    ("GET", {"params": "a=b"}, "mapping or a list"),
    ("GET", {"params": [("a",)]}, "(name, value)"),
    ("GET", {"params": {1: "x"}}, "names are str"),
    ("GET", {"params": {"a": b"x"}}, "is a bytes"),
    ("GET", {"params": {"a": "\ud800"}}, "lone surrogate"),
]


@pytest.mark.parametrize(
    ("method", "options", "message"),
    [pytest.param(*case, id=f"{index}-{case[2]}") for index, case in enumerate(REFUSED)],
)
def test_refused_before_sending(
    run: Callable[..., Seen | UsageError], method: str, options: dict[str, Any], message: str
) -> None:
    outcome = run(method, "/r", **options)
    assert isinstance(outcome, UsageError)
    assert message in str(outcome)


@pytest.mark.parametrize(
    "url",
    [
        "/a\r\nb",
        "/a\tb",
        "/\ud800",
        "/a?q=\udfff",
        "http:///x",
        "ftp://127.0.0.1/",
        "http://h:99999/",
    ],
)
def test_urls_refused_before_sending(run: Callable[..., Seen | UsageError], url: str) -> None:
    assert isinstance(run("GET", url), UsageError)
    assert isinstance(run("GET", url, headers={"X-A": "1"}), UsageError)
    assert isinstance(run("GET", 42), UsageError)


@pytest.mark.parametrize(
    "url",
    [
        "http://svc:s3cret@127.0.0.1:70000/x",  # a port out of range
        "http://127.0.0.1:1/x?api_key=s3cret\r",  # a control character in the query
        "ftp://svc:s3cret@127.0.0.1/x?token=s3cret",  # not http(s)
        "http://svc:s3cret@/x",  # no host
    ],
)
def test_a_refused_url_is_named_without_its_credentials(
    run: Callable[..., Seen | UsageError], url: str
) -> None:
    """Errors get logged: they show the URL without user-info or query, as errors.md says."""
    for options in ({}, {"headers": {"X-A": "1"}}):
        refused = run("GET", url, **options)
        assert isinstance(refused, UsageError)
        assert "s3cret" not in str(refused)
        assert "127.0.0.1" in str(refused) or "no host" in str(refused)


def test_what_the_rules_allow_is_sent(run: Callable[..., Seen | UsageError]) -> None:
    outcome = run(
        "POST",
        "/ok",
        content=b"abc",
        headers={"Content-Length": "3", "X-Tab": "a\tb", "TE": "trailers", "X-Empty": ""},
    )
    assert isinstance(outcome, Seen), outcome
    assert outcome.body == b"abc"
    assert received(outcome, "X-Tab") == ["a\tb"]
    assert received(outcome, "X-Empty") == [""]
    assert isinstance(run("POST", "/ok", json={"x": 1.5, "y": None, "z": "é😀"}), Seen)


@pytest.mark.parametrize(
    "headers",
    [
        {"X-Count": 1},
        {"Bad Name": "x"},
        {"X-Evil": "a\nb"},
        {"Transfer-Encoding": "chunked"},
        {"Content-Length": "0"},
        [("X-A", "1")],
    ],
)
def test_a_clients_own_bad_headers_are_a_configuration_error(headers: Any) -> None:
    for front_door in (AsyncClient, Client, FuturesClient):
        with pytest.raises(ConfigurationError):
            front_door("http://127.0.0.1:9", headers=headers)


def test_the_engines_own_headers_given_by_a_caller_are_still_dropped(
    run: Callable[..., Seen | UsageError],
) -> None:
    outcome = run("GET", "/e", headers={"X-Request-Timeout": "999", "X-Mine": "1"})
    assert isinstance(outcome, Seen)
    assert received(outcome, "X-Request-Timeout") != ["999"]
    assert received(outcome, "X-Mine") == ["1"]


# ------------------------------------------------------------------ the other front doors


def test_the_blocking_client_raises_the_same_usage_errors(echo: EchoServer) -> None:
    before = len(echo.seen)
    with Client(echo.base, timeout=5.0) as client:
        for method, options, message in REFUSED:
            with pytest.raises(UsageError, match=re.escape(message)):
                client.request(method, "/r", **options)
        assert client.get("/fine").status_code == 200
    assert len(echo.seen) == before + 1


def test_the_futures_client_sets_the_same_usage_errors_on_its_futures(echo: EchoServer) -> None:
    # As in requests-futures, a call's arguments are looked at when it runs, so
    # what is wrong with them is raised by future.result(), like every other
    # failure of the call: one place to handle them.
    before = len(echo.seen)
    with FuturesClient(echo.base, timeout=5.0) as client:
        futures = [client.request(method, "/r", **options) for method, options, _ in REFUSED]
        for future, (_, _, message) in zip(futures, REFUSED, strict=True):
            with pytest.raises(UsageError, match=re.escape(message)):
                future.result(10)
        assert client.get("/fine").result(10).status_code == 200
    assert len(echo.seen) == before + 1


def test_usage_errors_are_part_of_the_one_tree() -> None:
    assert issubclass(UsageError, microcall.MicrocallError)
    assert not issubclass(UsageError, (TypeError, ValueError, UnicodeError))


@pytest.mark.parametrize("method", [None, b"GET", 42])
def test_a_method_that_is_not_text_is_refused(method: object) -> None:
    client = microcall.AsyncClient("http://127.0.0.1:9")
    with pytest.raises(UsageError, match="method must be a str"):
        client.request(method, "/")  # type: ignore[arg-type]
