"""microcall.testing works as its documentation says: the docstring example runs as written."""

from __future__ import annotations

import asyncio
import textwrap
from typing import Any

import pytest
from yarl import URL

import microcall.testing
from microcall import (
    AsyncClient,
    AttemptTimeout,
    Backoff,
    ConnectError,
    DeadlineExceeded,
    Request,
    UsageError,
    retry,
)
from microcall.testing import FakeClock, MockTransport, Reply, SentRequest


def docstring_example() -> str:
    """The literal block of the module docstring (the part after ``::``), dedented."""
    doc = microcall.testing.__doc__ or ""
    _, marker, after = doc.partition("::\n")
    assert marker, "the testing docstring lost its example"
    block: list[str] = []
    for line in after.splitlines():
        if line and not line.startswith(" "):
            break
        block.append(line)
    return textwrap.dedent("\n".join(block))


async def test_the_docstring_example_runs_as_written() -> None:
    namespace: dict[str, Any] = {}
    exec(compile(docstring_example(), "microcall.testing docstring", "exec"), namespace)
    tests = [value for name, value in namespace.items() if name.startswith("test_")]
    assert len(tests) == 1
    await tests[0]()


def test_fake_clock_moves_only_when_told() -> None:
    clock = FakeClock()
    assert clock.now() == 1000.0
    clock.advance(0.5)
    assert clock.now() == 1000.5
    clock.advance(0)
    assert clock.now() == 1000.5
    assert FakeClock(start=0.0).now() == 0.0


def test_fake_clock_refuses_to_go_backwards() -> None:
    clock = FakeClock()
    with pytest.raises(ValueError, match="backwards"):
        clock.advance(-0.001)
    assert clock.now() == 1000.0


async def test_a_used_up_script_is_a_usage_error() -> None:
    transport = MockTransport([Reply(200)])
    async with AsyncClient("http://svc", transport=transport) as client:
        await client.get("/one")
        with pytest.raises(UsageError, match="used up"):
            await client.get("/two")
    assert len(transport.sent) == 2


async def test_a_used_up_script_is_a_usage_error_under_a_strategy_too() -> None:
    transport = MockTransport([Reply(503)])
    async with AsyncClient(
        "http://svc", transport=transport, strategy=retry(3, backoff=Backoff(base=0.0))
    ) as client:
        with pytest.raises(UsageError, match="used up"):
            await client.get("/one")


async def test_handler_form_answers_every_request() -> None:
    def handler(request: Request) -> Reply:
        return Reply(200, json={"path": request.url.path, "method": request.method})

    transport = MockTransport(handler)
    async with AsyncClient("http://svc", transport=transport) as client:
        for path in ("/a", "/b", "/c"):
            response = await client.post(path)
            assert response.json() == {"path": path, "method": "POST"}
    assert [s.request.url.path for s in transport.sent] == ["/a", "/b", "/c"]
    assert all(isinstance(s, SentRequest) for s in transport.sent)


async def test_reply_error_as_a_class_or_an_instance() -> None:
    refused = ConnectError("no route")
    transport = MockTransport([Reply(error=ConnectError), Reply(error=refused)])
    async with AsyncClient("http://svc", transport=transport) as client:
        with pytest.raises(ConnectError, match="scripted ConnectError from svc:80"):
            await client.get("/a")
        with pytest.raises(ConnectError) as caught:
            await client.get("/b")
    assert caught.value is refused
    assert caught.value.request is not None
    assert caught.value.request.url.path == "/b"


async def test_reply_headers_and_content() -> None:
    transport = MockTransport([Reply(201, headers={"Location": "/x/1"}, content=b"made")])
    async with AsyncClient("http://svc", transport=transport) as client:
        response = await client.put("/x/1")
    assert response.status_code == 201
    assert response.headers["location"] == "/x/1"
    assert response.content == b"made"


async def test_a_slow_reply_is_slow() -> None:
    transport = MockTransport([Reply(200, delay=0.05)])
    async with AsyncClient("http://svc", transport=transport) as client:
        response = await client.get("/a")
    assert response.elapsed >= 0.04


async def test_a_delay_longer_than_the_attempt_timeout_is_an_attempt_timeout() -> None:
    transport = MockTransport([Reply(200, delay=30.0)])
    async with AsyncClient(
        "http://svc", transport=transport, strategy=retry(1, attempt_timeout=0.02)
    ) as client:
        with pytest.raises(AttemptTimeout):
            await client.get("/a")


async def test_a_delay_past_the_deadline_is_deadline_exceeded() -> None:
    transport = MockTransport([Reply(200, delay=30.0)])
    async with AsyncClient("http://svc", transport=transport, timeout=0.02) as client:
        with pytest.raises(DeadlineExceeded):
            await client.get("/a")


async def test_send_directly_times_out_with_attempt_timeout() -> None:
    transport = MockTransport([Reply(200, delay=30.0)])
    request = Request("GET", URL("http://svc/a"), {})
    with pytest.raises(AttemptTimeout, match="svc:80"):
        await transport.send(request, request.url, {}, timeout=0.01)
    assert transport.cancelled == 0
    assert transport.sent[0].timeout == 0.01


async def test_cancelling_a_slow_reply_is_counted() -> None:
    transport = MockTransport([Reply(200, delay=30.0)])
    request = Request("GET", URL("http://svc/a"), {})
    task = asyncio.create_task(transport.send(request, request.url, {}, timeout=60.0))
    await asyncio.sleep(0.01)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert transport.cancelled == 1


def test_testing_exports() -> None:
    assert sorted(microcall.testing.__all__) == [
        "FakeClock",
        "MockTransport",
        "Reply",
        "SentRequest",
    ]
