"""A client's session layer: its cookie jar, credentials and event hooks, around each call.

Transport-independent by construction: it works on the Request before the
engine (and the cache) sees it and on the Response after, never inside a
transport. A call passes through it so::

    Request built from the call's arguments
      -> Cookie header: the jar's cookies, then the call's ``cookies=``
         (and the same on each redirect hop the transport follows; see
         _cookies.HopCookies)
      -> auth.apply(request)
      -> request hooks                     (may change headers; see _event_hooks)
      -> send: cache -> engine (strategy, attempts, deadline)
      <- Set-Cookie kept in the jar        (a redirect's too, as it is followed)
      <- a refusal (401) and a flow that refreshes: refresh, then the same
         path once more, within the same deadline (see _auth)
      <- response hooks, on the final response

A client with no jar, no auth and no hooks, making a call that gives none
of them, skips all of it: the call goes straight to the engine.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import replace
from functools import partial
from http.cookiejar import CookieJar
from typing import Any

from yarl import URL

from microcall._body import Body, may_resend
from microcall._checks import check_headers
from microcall._request import Request
from microcall._response import Response, set_cookie_values
from microcall._stream import discard
from microcall.client._auth import Auth, apply_auth, renew, to_auth
from microcall.client._cookies import HopCookies, checked_pairs
from microcall.client._event_hooks import (
    HookLists,
    OutgoingRequest,
    parse_hooks,
    run_request_hooks,
    run_response_hooks,
)
from microcall.client._in_flight import Send
from microcall.client._options import CallOptions
from microcall.errors import AuthError, CallError, UsageError
from microcall.policy.strategy import Strategy

FinishHeaders = Callable[[dict[str, str], bytes | Body | None], dict[str, str]]


class Session:
    """One client's jar, auth and hooks; ``around(send, options)`` wraps a call's send in them."""

    __slots__ = ("_finish_headers", "_now", "_replica_bases", "active", "auth", "hooks", "jar")

    def __init__(
        self,
        *,
        jar: CookieJar | None,
        auth: Auth | None,
        hooks: HookLists,
        now: Callable[[], float],
        finish_headers: FinishHeaders,
        replica_bases: Callable[[], Iterable[str]],
    ) -> None:
        self.jar = jar
        self.auth = auth
        self.hooks = hooks
        # Anything to do for a call that brings nothing of its own.
        self.active = jar is not None or auth is not None or bool(hooks)
        self._now = now
        self._finish_headers = finish_headers
        self._replica_bases = replica_bases

    def around(self, send: Send, options: CallOptions | None) -> Send:
        """``send`` with this session's work around it; ``send`` itself when there is none.

        A call's own ``auth=`` replaces the client's (``auth=None``: none for
        this call); its ``hooks=`` run after the client's; its ``cookies=``
        are sent with the jar's (winning over a jar cookie of the same name)
        and never stored. Bad values raise UsageError here, before anything
        is sent.
        """
        auth, hooks, extra = self.auth, self.hooks, []
        if options:
            if "auth" in options:
                auth = to_auth(options["auth"], UsageError)
            given = options.get("hooks")
            if given is not None:
                hooks = hooks + parse_hooks(given, error=UsageError)
            cookies = options.get("cookies")
            if cookies is not None:
                extra = checked_pairs(cookies, UsageError)
        if self.jar is None and auth is None and not hooks and not extra:
            return send
        return partial(self._call, send, auth, hooks, extra)

    async def _call(
        self,
        send: Send,
        auth: Auth | None,
        hooks: HookLists,
        extra: list[tuple[str, str]],
        request: Request,
        *,
        expires_at: float,
        priority: str | None,
        strategy: Strategy,
    ) -> Response:
        started = self._now()
        signed = auth._generation if auth is not None else 0
        hops = None
        if self.jar is not None or extra:
            hops = HopCookies(self.jar, request.url, extra, partial(self._same_service, request))
        prepared = await self._prepare(request, auth, hooks, extra, hops)
        first = await send(prepared, expires_at=expires_at, priority=priority, strategy=strategy)
        self._keep(hops, first)
        response = first
        # A body read once (an iterator, a stream) cannot go again: its 401 is the answer.
        if auth is not None and may_resend(request.body) and _may_resend(auth, first, request):
            discard(first)  # a streamed 401's connection goes now, not when it is collected
            await renew(
                auth, first, signed=signed, expires_at=expires_at, now=self._now, request=request
            )
            prepared = await self._prepare(request, auth, hooks, extra, hops)
            try:
                response = await send(
                    prepared, expires_at=expires_at, priority=priority, strategy=strategy
                )
            except CallError as error:
                error.attempts = (*first.attempts, *error.attempts)
                raise
            # One call, two sends: its record covers both.
            response.attempts = (*first.attempts, *response.attempts)
            response.elapsed = self._now() - started
            self._keep(hops, response)
        if hooks.response:
            response = await run_response_hooks(hooks.response, response)
        return response

    async def _prepare(
        self,
        request: Request,
        auth: Auth | None,
        hooks: HookLists,
        extra: list[tuple[str, str]],
        hops: HopCookies | None,
    ) -> Request:
        """The request as sent: with its cookies and credentials, as the request hooks left it."""
        if hops is None and auth is None and not hooks.request:
            return request
        outgoing = OutgoingRequest(request)
        headers = outgoing.headers
        if "Cookie" in headers:  # the caller's own Cookie header wins over the jar
            if extra:
                raise UsageError("pass cookies= or a Cookie header, not both")
            hops = None  # and goes on as the transport carries any header
        elif hops is not None:
            value = hops.header_for(request.url)
            if value:
                headers["Cookie"] = value
        if auth is not None:
            await apply_auth(auth, outgoing)
        if hooks.request:
            await run_request_hooks(hooks.request, outgoing)
        return replace(
            request, headers=self._finished(outgoing, request.body), redirect_cookies=hops
        )

    def _finished(self, outgoing: OutgoingRequest, body: Any) -> dict[str, str]:
        headers = dict(outgoing.headers.items())
        try:
            return self._finish_headers(headers, body)
        except UsageError as refused:
            raise UsageError(_without_values(refused, headers)) from None

    @staticmethod
    def _keep(hops: HopCookies | None, response: Response) -> None:
        if hops is not None:
            hops.keep(response.url, set_cookie_values(response.headers))

    def _same_service(self, request: Request, answered: URL) -> bool:
        """Whether ``answered`` is the service the call named (one of its replicas), not a redirect's."""
        named = request.url
        if (answered.scheme, answered.host, answered.port) == (
            named.scheme,
            named.host,
            named.port,
        ):
            return True
        if request.path is None:  # an absolute URL: no replicas
            return False
        for base in self._replica_bases():
            replica = URL(base)
            if (answered.scheme, answered.host, answered.port) == (
                replica.scheme,
                replica.host,
                replica.port,
            ):
                return True
        return False


def _may_resend(auth: Auth, refused: Response, request: Request) -> bool:
    """Whether the call refreshes ``auth``'s credentials and sends once more."""
    if not auth.refreshes:
        return False
    try:
        return bool(auth.should_refresh(refused))
    except Exception as exc:
        raise AuthError(
            f"{type(auth).__name__}.should_refresh() raised {type(exc).__name__} "
            f"(the exception is the cause)",
            request=request,
            attempts=refused.attempts,
            response=refused,
        ) from exc


def _without_values(refused: UsageError, headers: dict[str, str]) -> str:
    """The refusal of a header the session set, naming it but never showing its value."""
    for name, value in headers.items():
        try:
            check_headers({name: value})
        except UsageError:
            return (
                f"header {name!r}, as the cookie jar, the auth flow or a request hook left it, "
                "cannot be sent: header values are visible ASCII, spaces and tabs (RFC 9110 "
                "5.5); the value is not shown, it may be a credential"
            )
    return str(refused)
