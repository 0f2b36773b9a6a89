"""Event hooks: functions a client calls with each request it sends and each response it returns.

One typed definition serves the three front doors::

    hooks: EventHooks = {"request": [sign], "response": [log_status, parse]}

* A **request hook** is called with an :class:`OutgoingRequest` just before it
  is sent: after the cookie jar and the auth flow have set their headers, so
  it sees (and may sign) the headers that go out. It may change ``headers``
  and nothing else: the method, the URL (the balancer picks the replica later)
  and the body (replayed unchanged by every attempt) are read-only. What it
  returns is ignored. It runs once per logical send, not per attempt: a retry
  or a hedge resends the same headers; the resend after an auth refresh is a
  second send and runs the hooks again.
* A **response hook** is called with the final :class:`~microcall.Response`
  of the call (after retries and hedges, after an auth refresh's resend),
  once. A hook that returns a Response replaces it (requests' convention);
  any other return value is ignored.

Client-wide hooks run first, then the call's own, each list in its order.
An exception a hook raises is the call's: it propagates unchanged.

Where they run. ``AsyncClient``: on the caller's loop, and a hook may be an
``async def`` (awaited). ``Client`` and ``FuturesClient`` take plain
functions only: request hooks run on the client's loop thread (keep them
quick: every call of the client waits while one runs), response hooks in the
caller's thread (``Client``) or on the hook executor (``FuturesClient``).
"""

from __future__ import annotations

import inspect
from collections.abc import Awaitable, Callable, Iterable, Mapping, Sequence
from typing import Any, TypeAlias, TypedDict

from multidict import CIMultiDict
from yarl import URL

from microcall._request import Request
from microcall._response import Response
from microcall.errors import ConfigurationError, MicrocallError, UsageError


class OutgoingRequest:
    """A request about to be sent, as request hooks and auth flows see it.

    ``headers`` is a case-insensitive mutable mapping: set, replace or delete
    headers in place (``request.headers["X-Signature"] = sig``). ``method``,
    ``url`` and ``content`` are read-only. The engine's own per-attempt
    headers (``X-Request-Timeout``, ``X-Request-Priority``) are not here: they
    are written for each attempt, and a hook's value for them is dropped.
    """

    __slots__ = ("_request", "headers")

    def __init__(self, request: Request) -> None:
        self._request = request
        self.headers: CIMultiDict[str] = CIMultiDict(request.headers)

    @property
    def method(self) -> str:
        """The HTTP method, upper-case."""
        return self._request.method

    @property
    def url(self) -> URL:
        """The URL as the call names it (a replica may be chosen for each attempt)."""
        return self._request.url

    @property
    def content(self) -> bytes | None:
        """The encoded body (None: no body)."""
        body = self._request.body
        return body if isinstance(body, bytes) else None

    @property
    def request(self) -> Request:
        """The request as built from the call's arguments, before cookies, auth and hooks."""
        return self._request

    def __repr__(self) -> str:
        # The request's own repr: no header values, no user-info, no query.
        return f"<OutgoingRequest {self._request!r}>"


RequestHook: TypeAlias = Callable[[OutgoingRequest], Awaitable[None] | None]
"""``hook(request) -> None``: may change ``request.headers`` (async only on AsyncClient)."""

ResponseHook: TypeAlias = Callable[[Response], Response | Awaitable[Response | None] | None]
"""``hook(response)``: a Response returned replaces it (async only on AsyncClient)."""


class EventHooks(TypedDict, total=False):
    """The ``hooks=`` option of every front door and every call.

    Each entry is one callable or a sequence of them, called in order.
    """

    request: RequestHook | Sequence[RequestHook]
    response: ResponseHook | Sequence[ResponseHook]


_KINDS = ("request", "response")


class HookLists:
    """Parsed hooks: a tuple per kind (empty when there are none)."""

    __slots__ = ("request", "response")

    def __init__(
        self, request: tuple[RequestHook, ...] = (), response: tuple[ResponseHook, ...] = ()
    ) -> None:
        self.request = request
        self.response = response

    def __bool__(self) -> bool:
        return bool(self.request or self.response)

    def __add__(self, other: HookLists) -> HookLists:
        if not other:
            return self
        if not self:
            return other
        return HookLists(self.request + other.request, self.response + other.response)

    def requests_only(self) -> EventHooks | None:
        """These request hooks as an ``hooks=`` value (None when there are none)."""
        return {"request": list(self.request)} if self.request else None


NO_HOOKS = HookLists()


def parse_hooks(
    given: Any,
    *,
    sync_only: str | None = None,
    error: type[MicrocallError] = ConfigurationError,
) -> HookLists:
    """``hooks=`` checked: a mapping of "request" / "response" to a callable or a sequence.

    ``sync_only`` names a front door that takes plain functions only (its
    response hooks run outside any event loop); an async hook is refused then.
    """
    if given is None:
        return NO_HOOKS
    if not isinstance(given, Mapping):
        raise error(
            'hooks= takes a mapping such as {"request": [...], "response": [...]}, '
            f"got {type(given).__name__}"
        )
    unknown = sorted(str(name) for name in given if name not in _KINDS)
    if unknown:
        raise error(f"hooks= takes 'request' and 'response' hooks, got {', '.join(unknown)}")
    lists = [_hook_tuple(kind, given.get(kind), sync_only, error) for kind in _KINDS]
    return HookLists(*lists)


def _hook_tuple(
    kind: str, value: Any, sync_only: str | None, error: type[MicrocallError]
) -> tuple[Any, ...]:
    if value is None:
        return ()
    hooks: Iterable[Any] = (value,) if callable(value) else value
    if isinstance(hooks, (str, bytes)) or not isinstance(hooks, Iterable):
        raise error(f"a {kind} hook must be callable (or a list of them), got {value!r}")
    chosen = tuple(hooks)
    for hook in chosen:
        if not callable(hook):
            raise error(f"a {kind} hook must be callable, got {hook!r}")
        if sync_only is not None and _is_async(hook):
            raise error(
                f"{sync_only} takes plain functions as hooks, not the async {kind} hook "
                f"{_name(hook)}; use microcall.AsyncClient for async hooks"
            )
    return chosen


def _is_async(hook: Any) -> bool:
    return inspect.iscoroutinefunction(hook) or inspect.iscoroutinefunction(
        getattr(hook, "__call__", None)  # noqa: B004  # an object with an async __call__
    )


def _name(hook: Any) -> str:
    return getattr(hook, "__qualname__", None) or repr(hook)


async def run_request_hooks(hooks: Sequence[RequestHook], request: OutgoingRequest) -> None:
    """Call each request hook in turn, awaiting those that return an awaitable."""
    for hook in hooks:
        result = hook(request)
        if result is not None and inspect.isawaitable(result):
            await result


async def run_response_hooks(hooks: Sequence[ResponseHook], response: Response) -> Response:
    """Call each response hook in turn (awaiting async ones); a returned Response replaces it."""
    for hook in hooks:
        result: Any = hook(response)
        if result is not None and inspect.isawaitable(result):
            result = await result
        if isinstance(result, Response):
            response = result
    return response


def apply_response_hooks(hooks: Sequence[ResponseHook], response: Response) -> Response:
    """The blocking doors' response hooks, called in order; a returned Response replaces it.

    Module-level, so that a process pool can run it (it is pickled by name).
    """
    for hook in hooks:
        result: Any = hook(response)
        if inspect.isawaitable(result):
            close = getattr(result, "close", None)
            if callable(close):
                close()  # never awaited: say so rather than leave a warning behind
            raise UsageError(
                f"response hook {_name(hook)} returned an awaitable; the blocking clients "
                "take plain functions as hooks (use microcall.AsyncClient for async ones)"
            )
        if isinstance(result, Response):
            response = result
    return response
