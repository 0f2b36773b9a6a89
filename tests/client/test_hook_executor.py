"""FuturesClient(executor=...): response hooks on any Executor, a process pool included."""

from __future__ import annotations

import asyncio
import concurrent.futures as cf
import hashlib
import json
import os
import pickle
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from aiohttp import web

import microcall
from microcall import Response
from microcall.transports import Transport
from tests.client._http_features import make_transport as make_transport  # the fixture
from tests.conftest import Serve

BOOKS = [{"id": n, "title": f"Book {n}", "tags": ["a", "b"]} for n in range(200)]


def parse_and_digest(response: Response) -> None:
    """A CPU-bound hook, as a process pool runs it: module-level, so it pickles by name."""
    books = response.json()
    response.parsed = books
    response.digest = hashlib.sha256(json.dumps(books, sort_keys=True).encode()).hexdigest()  # type: ignore[attr-defined]
    response.hook_pid = os.getpid()  # type: ignore[attr-defined]


def replace_with_summary(response: Response) -> Response:
    return Response(
        status_code=response.status_code,
        headers=response.headers,
        content=str(len(response.json())).encode(),
        url=response.url,
        request=response.request,
    )


def books_app() -> web.Application:
    async def books(request: web.Request) -> web.Response:
        response = web.json_response(BOOKS)
        response.set_cookie("session", "s1")
        return response

    app = web.Application()
    app.router.add_get("/books", books)
    return app


@pytest.fixture(scope="module")
def processes() -> Iterator[cf.ProcessPoolExecutor]:
    with cf.ProcessPoolExecutor(2) as pool:
        yield pool


async def test_a_process_pool_runs_the_hooks_and_the_response_comes_back(
    serve: Serve,
    make_transport: Callable[[], Transport],
    processes: cf.ProcessPoolExecutor,
) -> None:
    base = await serve(books_app())

    def work() -> list[Response]:
        with microcall.FuturesClient(
            base,
            transport=make_transport(),
            executor=processes,
            hooks={"response": parse_and_digest},
        ) as client:
            futures = [client.get("/books") for _ in range(4)]
            futures.append(client.get("/books", hooks={"response": replace_with_summary}))
            return [future.result() for future in futures]

    responses = await asyncio.to_thread(work)
    expected = hashlib.sha256(json.dumps(BOOKS, sort_keys=True).encode()).hexdigest()
    for response in responses[:4]:
        assert response.parsed == BOOKS
        assert response.digest == expected  # type: ignore[attr-defined]
        assert response.hook_pid != os.getpid()  # type: ignore[attr-defined]
        # Everything survived the trip: headers (still read-only), request, attempts.
        assert response.headers["Content-Type"].startswith("application/json")
        assert response.cookies == {"session": "s1"}
        assert response.request.url.path == "/books"
        assert [attempt.status for attempt in response.attempts] == [200]
    assert responses[4].content == b"200"
    # The pool was the caller's: still open after the client closed.
    assert processes.submit(os.getpid).result() != os.getpid()


async def test_a_thread_pool_of_the_callers_is_used_and_left_open(serve: Serve) -> None:
    base = await serve(books_app())
    threads = cf.ThreadPoolExecutor(1, thread_name_prefix="callers-pool")
    names: list[str] = []

    def hook(response: Response) -> None:
        import threading

        names.append(threading.current_thread().name)

    def work() -> None:
        with microcall.FuturesClient(base, executor=threads, hooks={"response": hook}) as client:
            client.get("/books").result()

    try:
        await asyncio.to_thread(work)
        assert names[0].startswith("callers-pool")
        assert threads.submit(lambda: 1).result() == 1
    finally:
        threads.shutdown()


def test_a_hook_a_process_pool_cannot_pickle_is_refused(processes: cf.ProcessPoolExecutor) -> None:
    def nested(response: Response) -> None:
        pass

    for hook in (nested, lambda response: None):
        with pytest.raises(microcall.ConfigurationError, match="module-level function"):
            microcall.FuturesClient(
                "http://127.0.0.1:9", executor=processes, hooks={"response": hook}
            )
    with (
        microcall.FuturesClient("http://127.0.0.1:9", executor=processes) as client,
        pytest.raises(microcall.UsageError, match="module-level function"),
    ):
        client.get("/", hooks={"response": nested})
    # A thread pool takes any callable.
    with microcall.FuturesClient(
        "http://127.0.0.1:9", executor=cf.ThreadPoolExecutor(1), hooks={"response": nested}
    ):
        pass


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"executor": object()}, "concurrent.futures.Executor"),
        ({"executor": cf.ThreadPoolExecutor(1), "hook_workers": 2}, "hook_workers"),
        ({"hook_workers": 0}, "hook_workers"),
    ],
)
def test_bad_executor_settings_are_refused(options: dict[str, Any], message: str) -> None:
    with pytest.raises(microcall.ConfigurationError, match=message):
        microcall.FuturesClient("http://127.0.0.1:9", **options)


def test_a_response_pickles_with_its_read_only_headers() -> None:
    from multidict import CIMultiDict, CIMultiDictProxy
    from yarl import URL

    headers = CIMultiDictProxy(CIMultiDict([("Set-Cookie", "a=1"), ("Set-Cookie", "b=2")]))
    request = microcall.Request("GET", URL("http://127.0.0.1/books"), {"Accept": "*/*"})
    response = Response(
        status_code=200, headers=headers, content=b"[]", url=request.url, request=request
    )
    response.parsed = {"kept": True}
    copy = pickle.loads(pickle.dumps(response))
    assert isinstance(copy.headers, CIMultiDictProxy)
    assert copy.headers.getall("set-cookie") == ["a=1", "b=2"]
    assert (copy.status_code, copy.content, copy.parsed) == (200, b"[]", {"kept": True})
    assert copy.request.headers == {"Accept": "*/*"}
