"""auth= against real servers: Basic and Bearer as the server sees them, flows that refresh once.

A flow's refresh after a 401 resends once and never loops; a refresh that
raises ends the call with AuthError, one that outlives the deadline with
DeadlineExceeded; calls refused together share one refresh. No credential
shows in a repr or an error message.
"""

from __future__ import annotations

import asyncio
import base64
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

MARK = "SECRET"


class TokenService:
    """Accepts ``Bearer <current>`` only; answers 401 to anything else, counting each request."""

    def __init__(self, current: str = "fresh") -> None:
        self.current = current
        self.requests: list[str | None] = []
        self.statuses: list[int] = []  # /flaky answers these in turn, then 200
        self.arrivals: asyncio.Queue[str | None] = asyncio.Queue()
        self.app = web.Application()
        self.app.router.add_get("/private", self.private)
        self.app.router.add_get("/flaky", self.flaky)
        self.app.router.add_get("/{tail:.*}", echo)

    def _authorized(self, request: web.Request) -> bool:
        self.requests.append(request.headers.get("Authorization"))
        self.arrivals.put_nowait(request.headers.get("Authorization"))
        return request.headers.get("Authorization") == f"Bearer {self.current}"

    async def private(self, request: web.Request) -> web.Response:
        if not self._authorized(request):
            return web.json_response(
                {"error": "invalid_token"},
                status=401,
                headers={"WWW-Authenticate": 'Bearer error="invalid_token"'},
            )
        return web.json_response({"ok": True})

    async def flaky(self, request: web.Request) -> web.Response:
        if not self._authorized(request):
            return web.Response(status=401)
        status = self.statuses.pop(0) if self.statuses else 200
        return web.Response(status=status)


class RefreshingToken(microcall.Auth):
    """A token renewed by ``renew()`` (async, or a plain function) after a 401."""

    def __init__(self, token: str, renew: Callable[[], Any]) -> None:
        self.token = token
        self.renew = renew
        self.refreshed = 0
        self.refresh_threads: list[int] = []

    def apply(self, request: OutgoingRequest) -> None:
        request.headers["Authorization"] = f"Bearer {self.token}"


class AsyncRefresh(RefreshingToken):
    async def refresh(self, response: Response) -> None:
        self.refreshed += 1
        self.token = await self.renew()


class SyncRefresh(RefreshingToken):
    def refresh(self, response: Response) -> None:
        self.refreshed += 1
        self.refresh_threads.append(threading.get_ident())
        self.token = self.renew()


def basic(user: str, password: str) -> str:
    return "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()


@pytest.mark.parametrize(
    "auth", [microcall.BasicAuth("alice", "wonder:land é"), ("alice", "wonder:land é")]
)
async def test_basic_auth_is_what_the_server_sees(
    serve: Serve, make_transport: Callable[[], Transport], auth: Any
) -> None:
    base = await serve(TokenService().app)
    async with microcall.AsyncClient(base, transport=make_transport(), auth=auth) as client:
        seen = (await client.get("/echo")).json()["authorization"]
    assert seen == basic("alice", "wonder:land é")


async def test_bearer_auth_per_client_and_per_call(
    serve: Serve, make_transport: Callable[[], Transport]
) -> None:
    base = await serve(TokenService().app)
    async with microcall.AsyncClient(
        base, transport=make_transport(), auth=microcall.BearerAuth("client-token")
    ) as client:
        assert (await client.get("/echo")).json()["authorization"] == "Bearer client-token"
        call = microcall.BearerAuth("call-token")
        assert (await client.get("/echo", auth=call)).json()["authorization"] == (
            "Bearer call-token"
        )
        assert (await client.get("/echo", auth=("bob", "pw"))).json()["authorization"] == basic(
            "bob", "pw"
        )
        # auth=None: this call goes without the client's credentials.
        assert (await client.get("/echo", auth=None)).json()["authorization"] is None


@pytest.mark.parametrize("flow", [AsyncRefresh, SyncRefresh], ids=["async", "sync"])
async def test_a_flow_refreshes_on_401_and_resends_once(
    serve: Serve, make_transport: Callable[[], Transport], flow: type[RefreshingToken]
) -> None:
    service = TokenService(current="fresh")
    base = await serve(service.app)

    async def renew_async() -> str:
        return "fresh"

    auth = flow("stale", renew_async if flow is AsyncRefresh else lambda: "fresh")
    async with microcall.AsyncClient(base, transport=make_transport(), auth=auth) as client:
        response = await client.get("/private")
        assert response.status_code == 200
        assert service.requests == ["Bearer stale", "Bearer fresh"]
        # One call, two sends: both are in its record.
        assert [attempt.status for attempt in response.attempts] == [401, 200]
        assert auth.refreshed == 1
        # The renewed token serves the next call straight away.
        assert (await client.get("/private")).status_code == 200
        assert service.requests[2:] == ["Bearer fresh"]
    if flow is SyncRefresh:  # a plain-function refresh never blocks the loop's thread
        assert auth.refresh_threads
        assert threading.get_ident() not in auth.refresh_threads


async def test_a_second_401_after_the_refresh_is_the_answer(
    serve: Serve, make_transport: Callable[[], Transport]
) -> None:
    service = TokenService(current="never-issued")
    base = await serve(service.app)

    async def renew() -> str:
        return "still-wrong"

    auth = AsyncRefresh("stale", renew)
    async with microcall.AsyncClient(base, transport=make_transport(), auth=auth) as client:
        response = await client.get("/private")
    assert response.status_code == 401  # returned, not raised: status codes are answers
    assert service.requests == ["Bearer stale", "Bearer still-wrong"]  # no loop
    assert auth.refreshed == 1


async def test_a_refresh_that_raises_ends_the_call_with_auth_error(
    serve: Serve, make_transport: Callable[[], Transport]
) -> None:
    service = TokenService()
    base = await serve(service.app)

    async def renew() -> str:
        raise ConnectionError(f"token endpoint said no to {MARK}-client-secret")

    auth = AsyncRefresh("stale", renew)
    async with microcall.AsyncClient(base, transport=make_transport(), auth=auth) as client:
        with pytest.raises(microcall.AuthError) as failed:
            await client.get("/private")
    error = failed.value
    assert isinstance(error, microcall.CallError)
    assert isinstance(error.__cause__, ConnectionError)
    assert "AsyncRefresh.refresh() raised ConnectionError" in str(error)
    assert MARK not in str(error)  # the cause's text may hold a credential: not shown
    assert error.response is not None
    assert error.response.status_code == 401
    assert [attempt.status for attempt in error.attempts] == [401]
    assert service.requests == ["Bearer stale"]


async def test_a_refresh_that_outlives_the_deadline_ends_the_call_with_it(serve: Serve) -> None:
    base = await serve(TokenService().app)
    never = asyncio.Event()

    async def renew() -> str:
        await never.wait()
        return "too-late"

    loop = asyncio.get_running_loop()
    async with microcall.AsyncClient(base, auth=AsyncRefresh("stale", renew)) as client:
        started = loop.time()
        with pytest.raises(microcall.DeadlineExceeded, match="refresh"):
            await client.get("/private", timeout=0.5)
    assert loop.time() - started < 10  # ended by the deadline, not by the refresh


async def test_calls_refused_together_share_one_refresh(serve: Serve) -> None:
    service = TokenService(current="fresh")
    base = await serve(service.app)
    renewing = asyncio.Event()

    async def renew() -> str:
        await renewing.wait()
        return "fresh"

    auth = AsyncRefresh("stale", renew)
    async with microcall.AsyncClient(base, auth=auth, timeout=30) as client:
        calls = [asyncio.create_task(client.get("/private")) for _ in range(10)]
        for _ in range(10):  # every call sent its stale token (and gets its 401)
            assert await service.arrivals.get() == "Bearer stale"
        renewing.set()
        responses = await asyncio.gather(*calls)
    assert [response.status_code for response in responses] == [200] * 10
    assert auth.refreshed == 1
    assert service.requests.count("Bearer fresh") == 10


async def test_the_resend_has_the_calls_strategy_and_deadline(serve: Serve) -> None:
    service = TokenService(current="fresh")
    service.statuses = [503]
    base = await serve(service.app)

    async def renew() -> str:
        return "fresh"

    strategy = microcall.retry(3, backoff=microcall.Backoff(base=0.001, cap=0.002))
    async with microcall.AsyncClient(
        base, auth=AsyncRefresh("stale", renew), strategy=strategy
    ) as client:
        response = await client.get("/flaky")
    assert response.status_code == 200
    # The 401 is an answer (not retried by the strategy); the resend retries its 503.
    assert [attempt.status for attempt in response.attempts] == [401, 503, 200]


async def test_the_blocking_client_refreshes_too(serve: Serve) -> None:
    service = TokenService(current="fresh")
    base = await serve(service.app)
    auth = SyncRefresh("stale", lambda: "fresh")

    def work() -> int:
        with microcall.Client(base, auth=auth) as client:
            return client.get("/private").status_code

    assert await asyncio.to_thread(work) == 200
    assert service.requests == ["Bearer stale", "Bearer fresh"]


async def test_an_apply_that_raises_ends_the_call_before_sending(serve: Serve) -> None:
    service = TokenService()
    base = await serve(service.app)

    class Broken(microcall.Auth):
        def apply(self, request: OutgoingRequest) -> None:
            raise KeyError(f"{MARK}-key")

    async with microcall.AsyncClient(base, auth=Broken()) as client:
        with pytest.raises(microcall.AuthError, match=r"Broken.apply\(\) raised KeyError") as e:
            await client.get("/private")
    assert MARK not in str(e.value)
    assert e.value.response is None
    assert service.requests == []


async def test_an_auth_header_a_header_cannot_carry_is_refused_without_showing_it(
    serve: Serve,
) -> None:
    base = await serve(TokenService().app)

    class Newline(microcall.Auth):
        def apply(self, request: OutgoingRequest) -> None:
            request.headers["Authorization"] = f"Bearer {MARK}\r\nX-Injected: 1"

    async with microcall.AsyncClient(base, auth=Newline()) as client:
        with pytest.raises(microcall.UsageError, match="Authorization") as refused:
            await client.get("/echo")
    assert MARK not in str(refused.value)


def test_credentials_never_show_in_reprs_or_refusals() -> None:
    basic_auth = microcall.BasicAuth("alice", f"{MARK}-password")
    bearer = microcall.BearerAuth(f"{MARK}-token")
    assert MARK not in repr(basic_auth)
    assert "alice" in repr(basic_auth)
    assert MARK not in repr(bearer)
    assert MARK not in repr(AsyncRefresh(f"{MARK}-token", lambda: None))
    refusals: list[Callable[[], object]] = [
        lambda: microcall.BasicAuth("alice", f"{MARK}\n"),
        lambda: microcall.BearerAuth(f"{MARK} with spaces"),
        lambda: microcall.AsyncClient(auth=("alice", f"{MARK}\x00")),
        lambda: microcall.AsyncClient(auth=f"{MARK}-not-an-auth"),
    ]
    for refuse in refusals:
        with pytest.raises(microcall.ConfigurationError) as refused:
            refuse()
        assert MARK not in str(refused.value)


async def test_a_bad_call_auth_is_a_usage_error() -> None:
    async with microcall.AsyncClient("http://127.0.0.1:9") as client:
        with pytest.raises(microcall.UsageError, match="auth= takes"):
            client.get("/", auth="alice:password")  # type: ignore[arg-type]
        with pytest.raises(microcall.UsageError) as refused:
            client.get("/", auth=("al:ice", f"{MARK}"))
        assert MARK not in str(refused.value)


@pytest.mark.parametrize("front_door", [microcall.AsyncClient, microcall.Client])
async def test_user_info_in_a_url_is_sent_as_basic_credentials(
    serve: Serve, front_door: type[Any]
) -> None:
    """As requests and httpx do; it was dropped, silently (the service answered 401)."""
    base = await serve(TokenService().app)
    with_user = base.replace("http://", f"http://svc:{MARK}@")
    other_user = base.replace("http://", "http://other:p%40ss@")

    def calls() -> list[Any]:
        answers: list[Any] = []
        with front_door(with_user) as client:
            answers.append(client.get("/echo"))
        with front_door(base) as client:
            answers.append(client.get(f"{other_user}/echo"))
            answers.append(client.get(f"{other_user}/echo", auth=("call", "own")))
        return answers

    if front_door is microcall.AsyncClient:
        answers = []
        async with microcall.AsyncClient(with_user) as client:
            answers.append(await client.get("/echo"))
        async with microcall.AsyncClient(base) as client:
            answers.append(await client.get(f"{other_user}/echo"))
            answers.append(await client.get(f"{other_user}/echo", auth=("call", "own")))
    else:
        answers = await asyncio.to_thread(calls)
    seen = [answer.json()["authorization"] for answer in answers]
    assert seen == [basic("svc", MARK), basic("other", "p@ss"), basic("call", "own")]
    for answer in answers:
        assert answer.url.user is None  # the URL a response names has no credentials
        assert MARK not in repr(answer) + str(answer.url) + repr(answer.request)
