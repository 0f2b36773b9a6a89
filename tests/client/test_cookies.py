"""The opt-in cookie jar against real servers, on every transport.

Set, sent, expired, scoped by path, domain and Secure, never shared between
clients, never doubled by a transport's own jar.
"""

from __future__ import annotations

import asyncio
import http.cookiejar
import json
from collections.abc import Callable
from typing import Any

import pytest
from aiohttp import web
from yarl import URL

import microcall
from microcall.policy.balancer import BalancerConfig
from microcall.transports import Transport
from tests.client._http_features import echo
from tests.client._http_features import make_transport as make_transport  # the fixture
from tests.conftest import Serve

PAST = "Wed, 21 Oct 2015 07:28:00 GMT"


def cookie_app() -> web.Application:
    async def set_cookies(request: web.Request) -> web.Response:
        # /set?name=value&...: a cookie each; attributes with "name.path", "name.max_age",
        # "name.expires", "name.secure".
        response = web.json_response({"set": True})
        query = request.query
        for name, value in query.items():
            if "." in name:
                continue
            attributes: dict[str, Any] = {}
            if f"{name}.path" in query:
                attributes["path"] = query[f"{name}.path"]
            if f"{name}.max_age" in query:
                attributes["max_age"] = int(query[f"{name}.max_age"])
            if f"{name}.expires" in query:
                attributes["expires"] = query[f"{name}.expires"]
            if f"{name}.secure" in query:
                attributes["secure"] = True
            response.set_cookie(name, value, **attributes)
        return response

    async def login(request: web.Request) -> web.Response:
        # /login?name=value&...&to=URL: a cookie each, on a 302 to URL.
        response = web.Response(status=302, headers={"Location": request.query["to"]})
        for name, value in request.query.items():
            if name != "to":
                response.set_cookie(name, value)
        return response

    app = web.Application()
    app.router.add_get("/set", set_cookies)
    app.router.add_get("/login", login)
    app.router.add_get("/{tail:.*}", echo)
    return app


def login_path(to: str, **cookies: str) -> str:
    """The path of a call to /login that sets ``cookies`` and redirects to ``to``."""
    return str(URL("/login").with_query({**cookies, "to": to}))


async def sent(client: microcall.AsyncClient, path: str = "/echo", **options: Any) -> Any:
    response = await client.get(path, **options)
    assert response.status_code == 200
    return response.json()


async def test_without_a_jar_no_cookie_is_kept(
    serve: Serve, make_transport: Callable[[], Transport]
) -> None:
    base = await serve(cookie_app())
    async with microcall.AsyncClient(base, transport=make_transport()) as client:
        assert client.cookies is None
        answer = await client.get("/set", params={"session": "s1"})
        assert answer.cookies == {"session": "s1"}  # what the response set, jar or not
        # Neither the client nor the transport kept it.
        assert (await sent(client))["cookie_headers"] == []


async def test_a_jar_keeps_cookies_and_sends_them_once(
    serve: Serve, make_transport: Callable[[], Transport]
) -> None:
    base = await serve(cookie_app())
    async with microcall.AsyncClient(base, transport=make_transport(), cookies=True) as client:
        await client.get("/set", params={"session": "s1", "theme": "dark"})
        echoed = await sent(client)
        assert echoed["cookies"] == {"session": "s1", "theme": "dark"}
        # One Cookie header holding each cookie once: no transport added its own.
        assert len(echoed["cookie_headers"]) == 1
        assert sorted(echoed["cookie_headers"][0].split("; ")) == ["session=s1", "theme=dark"]
        assert {cookie.name for cookie in client.cookies or ()} == {"session", "theme"}
        # A new value replaces the old.
        await client.get("/set", params={"session": "s2"})
        assert (await sent(client))["cookies"] == {"session": "s2", "theme": "dark"}


async def test_cookies_set_on_a_redirect_are_kept_and_sent_on_the_next_hop(
    serve: Serve, make_transport: Callable[[], Transport]
) -> None:
    base = await serve(cookie_app())
    async with microcall.AsyncClient(base, transport=make_transport(), cookies=True) as client:
        # A login form's answer: a 302 that sets the session, followed by the transport.
        landed = await sent(client, login_path("/echo", session="s1"), cookies={"trace": "t1"})
        assert landed["path"] == "/echo"
        assert landed["cookies"] == {"session": "s1", "trace": "t1"}
        assert len(landed["cookie_headers"]) == 1
        assert [cookie.name for cookie in client.cookies or ()] == ["session"]
        assert (await sent(client))["cookies"] == {"session": "s1"}


async def test_a_streamed_call_keeps_and_sends_the_cookies_of_its_redirects(
    serve: Serve, make_transport: Callable[[], Transport]
) -> None:
    base = await serve(cookie_app())
    async with microcall.AsyncClient(base, transport=make_transport(), cookies=True) as client:
        async with client.stream("GET", login_path("/echo", session="s1")) as response:
            landed = json.loads(await response.aread())
        assert landed["path"] == "/echo"
        assert landed["cookies"] == {"session": "s1"}
        assert [cookie.name for cookie in client.cookies or ()] == ["session"]


async def test_a_redirect_not_followed_is_the_answer_whose_cookies_are_kept(serve: Serve) -> None:
    base = await serve(cookie_app())
    async with microcall.AsyncClient(base, cookies=True, follow_redirects=False) as client:
        answer = await client.get(login_path("/echo", session="s1"))
        assert answer.status_code == 302
        assert answer.headers["Location"] == "/echo"
        assert (await sent(client))["cookies"] == {"session": "s1"}


async def test_a_redirect_to_another_origin_carries_only_its_own_cookies(
    serve: Serve, make_transport: Callable[[], Transport]
) -> None:
    # Two origins by name (127.0.0.1 and localhost): cookies are kept per host.
    here = (await serve(cookie_app())).rstrip("/")
    there = (await serve(cookie_app())).rstrip("/").replace("127.0.0.1", "localhost")
    async with microcall.AsyncClient(here, transport=make_transport(), cookies=True) as client:
        await client.get("/set", params={"session": "here"})
        # Away to the other origin: neither this origin's cookies nor the call's own go there.
        away = await sent(client, login_path(f"{there}/echo", step="1"), cookies={"trace": "t1"})
        assert away["cookie_headers"] == []
        # There and back: each origin gets the cookies it set, on the hop to it.
        back = login_path(f"{here}/echo", theirs="t")
        landed = await sent(client, login_path(f"{there}{back}", step="2"))
        assert landed["cookies"] == {"session": "here", "step": "2"}
        kept = {(cookie.domain, cookie.name, cookie.value) for cookie in client.cookies or ()}
        assert kept == {
            ("127.0.0.1", "session", "here"),
            ("127.0.0.1", "step", "2"),
            ("localhost.local", "theirs", "t"),
        }


async def test_expired_and_deleted_cookies_are_not_sent(
    serve: Serve, make_transport: Callable[[], Transport]
) -> None:
    base = await serve(cookie_app())
    async with microcall.AsyncClient(base, transport=make_transport(), cookies=True) as client:
        await client.get(
            "/set", params={"kept": "1", "kept.max_age": "3600", "doomed": "1", "stale": "1"}
        )
        assert (await sent(client))["cookies"] == {"kept": "1", "doomed": "1", "stale": "1"}
        # Max-Age=0 deletes; an Expires in the past deletes too.
        await client.get(
            "/set", params={"doomed": "", "doomed.max_age": "0", "stale": "", "stale.expires": PAST}
        )
        assert (await sent(client))["cookies"] == {"kept": "1"}
        # One that arrives already expired is never kept.
        await client.get("/set", params={"late": "1", "late.expires": PAST})
        assert (await sent(client))["cookies"] == {"kept": "1"}


async def test_a_cookie_goes_only_where_its_path_domain_and_secure_allow(
    serve: Serve, make_transport: Callable[[], Transport]
) -> None:
    base = await serve(cookie_app())
    port = base.rsplit(":", 1)[1]
    async with microcall.AsyncClient(base, transport=make_transport(), cookies=True) as client:
        await client.get(
            "/set",
            params={"scoped": "x", "scoped.path": "/x", "everywhere": "1", "tls": "1"}
            | {"tls.secure": "1"},
        )
        assert (await sent(client, "/x/echo"))["cookies"] == {"scoped": "x", "everywhere": "1"}
        assert (await sent(client, "/x"))["cookies"] == {"scoped": "x", "everywhere": "1"}
        # Path matching is by segment: /xy is not under /x.
        assert (await sent(client, "/xy/echo"))["cookies"] == {"everywhere": "1"}
        assert (await sent(client, "/y/echo"))["cookies"] == {"everywhere": "1"}
        # Host-only cookies of 127.0.0.1 do not go to another name of the same server.
        other_host = await client.get(f"http://localhost:{port}/echo")
        assert other_host.json()["cookies"] == {}
    # The Secure cookie never went over plain HTTP (it is kept, for https).


async def test_two_clients_given_the_same_cookies_never_share_them(
    serve: Serve, make_transport: Callable[[], Transport]
) -> None:
    base = await serve(cookie_app())
    initial = {"tenant": "acme"}
    first = microcall.AsyncClient(base, transport=make_transport(), cookies=initial)
    second = microcall.AsyncClient(base, transport=make_transport(), cookies=initial)
    async with first, second:
        assert first.cookies is not second.cookies
        await first.get("/set", params={"session": "first-only"})
        assert (await sent(first))["cookies"] == {"tenant": "acme", "session": "first-only"}
        assert (await sent(second))["cookies"] == {"tenant": "acme"}
    assert initial == {"tenant": "acme"}


async def test_a_calls_cookies_go_with_it_and_win_over_the_jar(serve: Serve) -> None:
    base = await serve(cookie_app())
    async with microcall.AsyncClient(base, cookies=True) as client:
        await client.get("/set", params={"session": "from-jar", "theme": "dark"})
        echoed = await sent(client, cookies={"session": "mine", "trace": "t1"})
        assert echoed["cookies"] == {"session": "mine", "theme": "dark", "trace": "t1"}
        assert (await sent(client))["cookies"] == {"session": "from-jar", "theme": "dark"}
        with pytest.raises(microcall.UsageError, match="not both"):
            await client.get("/echo", cookies={"a": "1"}, headers={"Cookie": "b=2"})
        # The caller's own Cookie header wins over the jar.
        assert (await sent(client, headers={"Cookie": "b=2"}))["cookie_headers"] == ["b=2"]
    # A client without a jar sends a call's cookies all the same, and keeps none.
    async with microcall.AsyncClient(base) as client:
        assert (await sent(client, cookies={"trace": "t1"}))["cookies"] == {"trace": "t1"}


async def test_cookies_set_by_one_replica_go_to_the_others(serve: Serve) -> None:
    # Two replicas under different names: the jar keeps cookies for the name
    # the client calls the service by, whichever replica set them.
    first, second = await serve(cookie_app()), await serve(cookie_app())
    second_by_name = second.replace("127.0.0.1", "localhost")
    async with microcall.AsyncClient(
        [first, second_by_name],
        cookies=True,
        balancer=BalancerConfig(mode="round_robin"),
    ) as client:
        # Round robin: the two calls go one to each replica; one sets, both see.
        setters = [await client.get("/set", params={"session": "s1"}) for _ in range(2)]
        assert {str(response.url.host) for response in setters} == {"127.0.0.1", "localhost"}
        seen = [await sent(client) for _ in range(4)]
        assert [answer["cookies"] for answer in seen] == [{"session": "s1"}] * 4
        # A redirect on either replica: its cookie is kept for the name, and the
        # hop back to the same replica carries it.
        landed = [await sent(client, login_path("/echo", session="s2")) for _ in range(2)]
        assert [answer["cookies"] for answer in landed] == [{"session": "s2"}] * 2


async def test_a_jar_of_the_callers_own_is_used_as_given(serve: Serve) -> None:
    base = await serve(cookie_app())
    jar = http.cookiejar.CookieJar()
    async with microcall.AsyncClient(base, cookies=jar) as client:
        assert client.cookies is jar
        await client.get("/set", params={"session": "s1"})
    assert [(cookie.name, cookie.value) for cookie in jar] == [("session", "s1")]


async def test_blocking_front_doors_keep_cookies_too(serve: Serve) -> None:
    base = await serve(cookie_app())

    def work() -> tuple[Any, Any]:
        with microcall.Client(base, cookies=True) as client:
            client.get("/set", params={"session": "blocking"})
            blocking = client.get("/echo").json()["cookies"]
        with microcall.FuturesClient(base, cookies={"tenant": "acme"}) as futures:
            futures.get("/set", params={"session": "futures"}).result()
            assert futures.cookies is not None
            answer = futures.get("/echo").result().json()["cookies"]
        return blocking, answer

    blocking, answer = await asyncio.to_thread(work)
    assert blocking == {"session": "blocking"}
    assert answer == {"tenant": "acme", "session": "futures"}


@pytest.mark.parametrize(
    ("given", "message"),
    [
        ({"a": "1"}, "needs a base_url"),
        ("session=1", "cookies= takes True"),
    ],
)
def test_bad_client_cookies_are_refused_at_construction(given: Any, message: str) -> None:
    with pytest.raises(microcall.ConfigurationError, match=message):
        microcall.AsyncClient(cookies=given)


def test_a_bad_cookie_value_is_refused_without_showing_it() -> None:
    with pytest.raises(microcall.ConfigurationError) as refused:
        microcall.AsyncClient("http://127.0.0.1:9", cookies={"session": "SECRET; injected=1"})
    assert "SECRET" not in str(refused.value)
    assert "session" in str(refused.value)
    with pytest.raises(microcall.ConfigurationError, match="not a token"):
        microcall.AsyncClient("http://127.0.0.1:9", cookies={"bad name": "1"})


async def test_a_bad_call_cookie_is_refused_before_sending() -> None:
    async with microcall.AsyncClient("http://127.0.0.1:9") as client:
        with pytest.raises(microcall.UsageError) as refused:
            client.get("/", cookies={"session": "SECRET\n"})
        assert "SECRET" not in str(refused.value)
