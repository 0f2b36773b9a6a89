"""Credentials for a client's calls: Basic, Bearer, and flows that renew a token after a 401.

Theory of operation. An :class:`Auth` has two parts, in the spirit of
httpx's ``auth_flow``, split so that neither needs a generator:

* ``apply(request)`` puts credentials on every request just before it is
  sent (after the cookie jar, before request hooks);
* ``refresh(response)``, for flows that override it, renews them when a
  response refuses them (``should_refresh``: a 401 by default). The call is
  then sent once more with the new credentials, and whatever comes back is
  the answer: a second 401 is returned as it is, never refreshed again, so
  a flow can never loop.

The resend is a second logical send within the same call: it gets the
call's strategy afresh (its own retries and hedges, drawing on the retry
budget as any send does), only the time left of the call's deadline, and
its attempts follow the first send's in ``response.attempts``. A 401 is an
answer, not a failure, so the strategy itself never retries it.

A ``refresh`` that raises ends the call with :class:`~microcall.AuthError`
(the exception is its cause); one still running when the deadline passes
ends it with DeadlineExceeded. Calls of a loop that are refused at the same
time share one refresh: the first starts it, the others wait for it, and a
call whose credentials were already renewed by the time its 401 arrived
just resends. A plain-function ``refresh`` runs in a worker thread, so a
blocking token request never stalls the event loop; an ``async def`` one
runs on the loop.

Credentials are never shown: not in a repr, not in an error message (an
error names the exception type a flow raised, not its text).
"""

from __future__ import annotations

import asyncio
import base64
import inspect
import re
from collections.abc import Awaitable, Callable
from functools import partial
from typing import Any

from yarl import URL

from microcall._request import Request
from microcall._response import Response
from microcall.client._event_hooks import OutgoingRequest
from microcall.errors import AuthError, ConfigurationError, DeadlineExceeded, MicrocallError

# RFC 7617 2: neither part may hold a control character; the user-id no colon.
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")
# RFC 6750 2.1 allows token68 only; any visible ASCII is let through (some
# issuers' tokens are wider), nothing a header cannot carry.
_VISIBLE = re.compile(r"[\x21-\x7e]+")


class Auth:
    """How a client's calls prove who sends them; subclass it for a flow of your own.

    ::

        class ServiceToken(microcall.Auth):
            def __init__(self, issuer):
                self.issuer = issuer
                self.token = issuer.current()

            def apply(self, request):
                request.headers["Authorization"] = f"Bearer {self.token}"

            async def refresh(self, response):  # after a 401: renew, then resend once
                self.token = await self.issuer.renew()

    ``apply`` may be a plain function or ``async``; it runs on the client's
    event loop for every send, so it must be quick. ``refresh`` may be either
    too (a plain one runs in a worker thread). Override ``should_refresh`` to
    refresh on something else than a 401 (a 403 carrying
    ``WWW-Authenticate: ... error="invalid_token"``, say).
    """

    # Bumped after each refresh that succeeds: a call that was signed before
    # it need not refresh again (see ``renew``).
    _generation: int = 0
    _refreshing: asyncio.Task[None] | None = None

    def apply(self, request: OutgoingRequest) -> Awaitable[None] | None:
        """Put credentials on ``request`` (``request.headers[...] = ...``)."""
        raise NotImplementedError(f"{type(self).__name__} must implement apply(request)")

    def should_refresh(self, response: Response) -> bool:
        """Whether ``response`` refuses the credentials (asked only of flows with a ``refresh``)."""
        return response.status_code == 401

    def refresh(self, response: Response) -> Awaitable[None] | None:
        """Renew the credentials after ``response`` refused them; the call is then sent once more.

        Not overridden (as in BasicAuth and BearerAuth): nothing is renewed
        and a 401 is the call's answer.
        """
        return None

    @property
    def refreshes(self) -> bool:
        """True when this flow renews credentials (its class overrides ``refresh``)."""
        return type(self).refresh is not Auth.refresh

    def __repr__(self) -> str:
        return f"<{type(self).__name__}>"  # never a credential, whatever a subclass holds


class BasicAuth(Auth):
    """HTTP Basic authentication (RFC 7617): ``Authorization: Basic base64(user:password)``.

    ``auth=("user", "password")`` is the same. The user-id and the password
    are encoded as UTF-8.
    """

    def __init__(self, username: str, password: str) -> None:
        if not isinstance(username, str) or not isinstance(password, str):
            raise ConfigurationError("BasicAuth takes a str user name and a str password")
        if ":" in username or _CONTROL.search(username):
            raise ConfigurationError(
                f"BasicAuth user name {username!r} may hold neither a colon nor a control "
                "character (RFC 7617 2)"
            )
        if _CONTROL.search(password):
            raise ConfigurationError(
                "BasicAuth password holds a control character (RFC 7617 2; it is not shown)"
            )
        self.username = username
        token = base64.b64encode(f"{username}:{password}".encode()).decode("ascii")
        self._header = f"Basic {token}"

    def apply(self, request: OutgoingRequest) -> None:
        request.headers["Authorization"] = self._header

    @property
    def header(self) -> str:
        """The ``Authorization`` header's value."""
        return self._header

    def __repr__(self) -> str:
        return f"BasicAuth(username={self.username!r}, password=<hidden>)"


class BearerAuth(Auth):
    """A bearer token (RFC 6750): ``Authorization: Bearer <token>``.

    For a token that expires, subclass :class:`Auth` (or this class) with a
    ``refresh``.
    """

    def __init__(self, token: str) -> None:
        if not isinstance(token, str) or not _VISIBLE.fullmatch(token):
            raise ConfigurationError(
                "BearerAuth takes a non-empty str token of visible ASCII characters "
                "(RFC 6750 2.1; it is not shown)"
            )
        self._header = f"Bearer {token}"

    def apply(self, request: OutgoingRequest) -> None:
        request.headers["Authorization"] = self._header

    def __repr__(self) -> str:
        return "BearerAuth(token=<hidden>)"


AuthOption = Auth | tuple[str, str] | None
"""``auth=``: an Auth, a ``(user, password)`` pair (Basic), or None (a call: no auth)."""


def url_credentials(url: URL, error: type[MicrocallError]) -> tuple[URL, BasicAuth | None]:
    """``url`` without its user-info, and that user-info as Basic credentials (None: it had none).

    ``http://user:password@host/`` sends ``user:password`` as requests and
    httpx do, never in the URL itself: a URL is logged, a header is not.
    """
    if url.raw_user is None:
        return url, None
    try:
        credentials = BasicAuth(url.user or "", url.password or "")
    except ConfigurationError as refused:
        raise error(f"the URL's user-info: {refused}") from None
    return url.with_user(None), credentials


def to_auth(given: Any, error: type[MicrocallError] = ConfigurationError) -> Auth | None:
    """``auth=`` as an Auth: an Auth as is, a ``(user, password)`` pair as BasicAuth, None."""
    if given is None or isinstance(given, Auth):
        return given
    if isinstance(given, tuple) and len(given) == 2:
        try:
            return BasicAuth(*given)
        except ConfigurationError as refused:
            raise error(str(refused)) from None
    raise error(
        "auth= takes a microcall.Auth (BasicAuth, BearerAuth, a flow of your own) or a "
        f"(user, password) tuple, got {type(given).__name__}"
    )


async def apply_auth(auth: Auth, outgoing: OutgoingRequest) -> None:
    """``auth.apply(outgoing)``; whatever it raises ends the call as AuthError."""
    try:
        result = auth.apply(outgoing)
        if result is not None and inspect.isawaitable(result):
            await result
    except Exception as exc:
        raise AuthError(
            f"{type(auth).__name__}.apply() raised {type(exc).__name__} before "
            f"{outgoing.method} to {outgoing.request.endpoint} was sent (the exception is the "
            "cause; its text is not shown, it may hold a credential)",
            request=outgoing.request,
        ) from exc


async def renew(
    auth: Auth,
    refused: Response,
    *,
    signed: int,
    expires_at: float,
    now: Callable[[], float],
    request: Request,
) -> None:
    """Have ``auth`` renew its credentials after ``refused``, within the call's deadline.

    ``signed`` is the generation the refused request was signed with: when
    the flow was renewed since, the call just resends. Calls on one loop
    that are refused together wait for the same refresh.
    """
    if auth._generation != signed:
        return
    loop = asyncio.get_running_loop()
    task = auth._refreshing
    if task is None or task.done() or task.get_loop() is not loop:
        # Bounded by the deadline of the call that starts it: a refresh that
        # hangs must not hold every later 401 of the client.
        task = loop.create_task(_refresh(auth, refused, expires_at - now()))
        task.add_done_callback(partial(_finished, auth))
        auth._refreshing = task
    timeout = asyncio.timeout(expires_at - now())
    try:
        async with timeout:
            await asyncio.shield(task)
    except Exception as exc:
        if timeout.expired():
            raise DeadlineExceeded(
                f"the call's deadline passed while {type(auth).__name__}.refresh() ran "
                f"after a {refused.status_code} from {request.endpoint}",
                request=request,
                attempts=refused.attempts,
            ) from None
        raise AuthError(
            f"{type(auth).__name__}.refresh() raised {type(exc).__name__} after a "
            f"{refused.status_code} from {request.endpoint}, so the call ends (the exception "
            "is the cause; its text is not shown, it may hold a credential)",
            request=request,
            attempts=refused.attempts,
            response=refused,
        ) from exc


async def _refresh(auth: Auth, refused: Response, budget: float) -> None:
    async with asyncio.timeout(budget):
        if _is_async(auth.refresh):
            await auth.refresh(refused)  # type: ignore[misc]
        else:
            result = await asyncio.to_thread(auth.refresh, refused)
            if result is not None and inspect.isawaitable(result):
                await result
    auth._generation += 1


def _is_async(method: Any) -> bool:
    return inspect.iscoroutinefunction(method)


def _finished(auth: Auth, task: asyncio.Task[None]) -> None:
    # The task (and the 401 it holds) is let go once done. Every waiter may
    # have given up (their deadlines passed) before a refresh failed: its
    # exception is read here, so none is reported as never retrieved.
    if auth._refreshing is task:
        auth._refreshing = None
    if not task.cancelled():
        task.exception()
