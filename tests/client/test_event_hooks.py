"""hooks= on all three front doors against real servers: order, per call, what a hook may change."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable
from typing import Any

import pytest
from aiohttp import web

import microcall
from microcall import OutgoingRequest, Response
from microcall.transports import Transport
from tests.client._http_features import echo
from tests.client._http_features import make_transport as make_transport  # the fixture
from tests.conftest import Serve


def app(statuses: list[int] | None = None) -> web.Application:
    pending = list(statuses or [])

    async def flaky(request: web.Request) -> web.Response:
        return web.Response(status=pending.pop(0) if pending else 200, text="done")

    async def login(request: web.Request) -> web.Response:
        response = web.json_response({})
        response.set_cookie("session", "s1")
        return response

    application = web.Application()
    application.router.add_get("/flaky", flaky)
    application.router.add_get("/login", login)
    application.router.add_get("/{tail:.*}", echo)
    return application


async def test_hooks_run_in_order_client_first_then_the_calls(
    serve: Serve, make_transport: Callable[[], Transport]
) -> None:
    base = await serve(app())
    order: list[str] = []

    def named(name: str) -> Callable[[Any], None]:
        return lambda _: order.append(name)

    async def async_request(request: OutgoingRequest) -> None:
        order.append("async-request")

    async def async_response(response: Response) -> None:
        order.append("async-response")

    hooks: microcall.EventHooks = {
        "request": [named("client-request-1"), async_request],
        "response": [named("client-response"), async_response],
    }
    async with microcall.AsyncClient(base, transport=make_transport(), hooks=hooks) as client:
        await client.get("/echo")
        assert order == [
            "client-request-1",
            "async-request",
            "client-response",
            "async-response",
        ]
        order.clear()
        await client.get(
            "/echo", hooks={"request": named("call-request"), "response": named("call-response")}
        )
        assert order == [
            "client-request-1",
            "async-request",
            "call-request",
            "client-response",
            "async-response",
            "call-response",
        ]
        order.clear()
        await client.get("/echo")  # a call's hooks were for that call only
        assert "call-request" not in order


async def test_a_request_hook_sees_cookies_and_credentials_and_may_change_headers(
    serve: Serve, make_transport: Callable[[], Transport]
) -> None:
    base = await serve(app())
    seen: list[dict[str, str]] = []

    def sign(request: OutgoingRequest) -> None:
        seen.append(dict(request.headers))
        request.headers["X-Signature"] = f"{request.method} {request.url.path}"
        del request.headers["X-Drop-Me"]
        # The engine writes its own deadline per attempt: a hook's is dropped.
        request.headers["X-Request-Timeout"] = "999"

    async with microcall.AsyncClient(
        base,
        transport=make_transport(),
        cookies=True,
        auth=microcall.BearerAuth("t1"),
        headers={"X-Drop-Me": "1"},
        hooks={"request": sign},
    ) as client:
        await client.get("/login")
        echoed = (await client.get("/echo")).json()
    assert seen[1]["Cookie"] == "session=s1"
    assert seen[1]["Authorization"] == "Bearer t1"
    assert echoed["headers"]["X-Signature"] == "GET /echo"
    assert "X-Drop-Me" not in echoed["headers"]
    assert float(echoed["headers"]["X-Request-Timeout"]) < 11


async def test_response_hooks_see_the_final_response_after_retries(serve: Serve) -> None:
    base = await serve(app(statuses=[503, 503]))
    seen: list[tuple[int, int]] = []

    def record(response: Response) -> Response:
        seen.append((response.status_code, len(response.attempts)))
        return Response(
            status_code=299,
            headers={},
            content=response.content.upper(),
            url=response.url,
            request=response.request,
        )

    strategy = microcall.retry(3, backoff=microcall.Backoff(base=0.001, cap=0.002))
    async with microcall.AsyncClient(base, strategy=strategy, hooks={"response": record}) as client:
        replaced = await client.get("/flaky")
    assert seen == [(200, 3)]  # once, on the answer that ended the call
    assert (replaced.status_code, replaced.content) == (299, b"DONE")


async def test_request_hooks_run_again_for_an_auth_resend(serve: Serve) -> None:
    tokens = {"current": "fresh"}

    async def private(request: web.Request) -> web.Response:
        expected = f"Bearer {tokens['current']}"
        return web.Response(status=200 if request.headers["Authorization"] == expected else 401)

    application = web.Application()
    application.router.add_get("/private", private)
    base = await serve(application)

    class Renewing(microcall.Auth):
        token = "stale"

        def apply(self, request: OutgoingRequest) -> None:
            request.headers["Authorization"] = f"Bearer {self.token}"

        async def refresh(self, response: Response) -> None:
            self.token = "fresh"

    sent: list[str] = []
    answered: list[int] = []
    hooks: microcall.EventHooks = {
        "request": lambda request: sent.append(request.headers["Authorization"]),
        "response": lambda response: answered.append(response.status_code),
    }
    async with microcall.AsyncClient(base, auth=Renewing(), hooks=hooks) as client:
        assert (await client.get("/private")).status_code == 200
    assert sent == ["Bearer stale", "Bearer fresh"]
    assert answered == [200]


async def test_an_exception_in_a_hook_is_the_calls(serve: Serve) -> None:
    base = await serve(app())

    class HookFailed(Exception):
        pass

    def broken(_: object) -> None:
        raise HookFailed

    async with microcall.AsyncClient(base) as client:
        with pytest.raises(HookFailed):
            await client.get("/echo", hooks={"request": broken})
        with pytest.raises(HookFailed):
            await client.get("/echo", hooks={"response": broken})


@pytest.mark.parametrize("raised", [KeyboardInterrupt, SystemExit])
@pytest.mark.parametrize("front_door", [microcall.Client, microcall.FuturesClient])
async def test_a_keyboard_interrupt_in_a_hook_is_the_calls_and_the_client_goes_on(
    serve: Serve, front_door: type[Any], raised: type[BaseException]
) -> None:
    """Request hooks run on the client's loop thread, where asyncio re-raises these out of the loop.

    The call whose hook raised gets it; the calls in flight beside it, the
    calls after it and ``close()`` are not touched (the loop thread used to
    die with it: the others got a bare CancelledError, every later call
    "this Client is closed", and close() a RuntimeError).
    """
    base = await serve(app())

    def hook(request: OutgoingRequest) -> None:
        if "X-Boom" in request.headers:
            raise raised("raised by a hook")

    def work() -> tuple[list[object], int]:
        client = front_door(base, timeout=5.0, hooks={"request": hook})

        def call(**options: Any) -> int:
            answer = client.get("/echo", **options)
            response = answer.result() if front_door is microcall.FuturesClient else answer
            return int(response.status_code)

        beside: list[object] = []
        threads = [threading.Thread(target=lambda: beside.append(call())) for _ in range(3)]
        for thread in threads:
            thread.start()
        with pytest.raises(raised, match="raised by a hook"):
            call(headers={"X-Boom": "1"})
        for thread in threads:
            thread.join()
        later = call()
        client.close()
        return beside, later

    beside, later = await asyncio.to_thread(work)
    assert (beside, later) == ([200, 200, 200], 200)


async def test_a_futures_client_closed_from_its_own_response_hook_says_so(serve: Serve) -> None:
    """close() waits for the calls running, the hook's among them: it hung for ever."""
    base = await serve(app())

    def work() -> BaseException | None:
        holder: list[microcall.FuturesClient] = []

        def stop_at_first_answer(response: Response) -> None:
            holder[0].close()

        client = microcall.FuturesClient(base, hooks={"response": stop_at_first_answer})
        holder.append(client)
        try:
            return client.get("/echo").exception(timeout=10)
        finally:
            client.close()  # from outside, it closes as usual

    refused = await asyncio.to_thread(work)
    assert isinstance(refused, RuntimeError)
    assert "inside its own response hook" in str(refused)


async def test_client_runs_response_hooks_in_the_callers_thread(serve: Serve) -> None:
    base = await serve(app())

    def work() -> tuple[int, list[int], list[int], Any]:
        request_threads: list[int] = []
        response_threads: list[int] = []
        hooks: microcall.EventHooks = {
            "request": lambda _: request_threads.append(threading.get_ident()),
            "response": lambda _: response_threads.append(threading.get_ident()),
        }
        with microcall.Client(base, hooks=hooks) as client:
            echoed = client.get(
                "/echo",
                hooks={"request": lambda request: request.headers.update({"X-Call": "1"})},
            ).json()
        return threading.get_ident(), request_threads, response_threads, echoed

    caller, request_threads, response_threads, echoed = await asyncio.to_thread(work)
    assert response_threads == [caller]
    assert len(request_threads) == 1
    assert request_threads != [caller]  # on the client's loop thread
    assert echoed["headers"]["X-Call"] == "1"


async def test_futures_client_gains_request_hooks(serve: Serve) -> None:
    base = await serve(app())

    def work() -> tuple[Any, list[int]]:
        statuses: list[int] = []
        with microcall.FuturesClient(
            base,
            hooks={
                "request": lambda request: request.headers.update({"X-Client": "1"}),
                "response": lambda response: statuses.append(response.status_code),
            },
        ) as client:
            future = client.get(
                "/echo", hooks={"request": lambda r: r.headers.update({"X-Call": "2"})}
            )
            return future.result().json(), statuses

    echoed, statuses = await asyncio.to_thread(work)
    assert (echoed["headers"]["X-Client"], echoed["headers"]["X-Call"]) == ("1", "2")
    assert statuses == [200]


async def async_hook(response: Response) -> None:
    pass


@pytest.mark.parametrize("front_door", [microcall.Client, microcall.FuturesClient])
def test_the_blocking_doors_refuse_async_hooks(front_door: type[Any]) -> None:
    with pytest.raises(microcall.ConfigurationError, match="AsyncClient"):
        front_door("http://127.0.0.1:9", hooks={"response": async_hook})
    with front_door("http://127.0.0.1:9") as client, pytest.raises(microcall.UsageError):
        client.get("/", hooks={"request": [async_hook]})


@pytest.mark.parametrize(
    ("hooks", "message"),
    [
        ({"send": print}, "'request' and 'response'"),
        ({"response": 3}, "must be callable"),
        ([print], "takes a mapping"),
    ],
)
def test_bad_hooks_are_refused_at_construction(hooks: Any, message: str) -> None:
    with pytest.raises(microcall.ConfigurationError, match=message):
        microcall.AsyncClient("http://127.0.0.1:9", hooks=hooks)
