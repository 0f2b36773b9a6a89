"""The call context: the deadline and priority that outgoing calls inherit.

Both live in contextvars, so they follow a request through ``await`` and into
tasks it creates. Server middleware restores them from the incoming request
(``set_deadline`` / ``set_priority``, then ``reset_*`` with the token when the
request ends); application code usually uses the ``microcall.deadline()`` and
``microcall.priority()`` context managers instead.

The blocking ``Client`` and ``FuturesClient`` copy the caller thread's context
into the background loop with each call, so a WSGI handler thread passes its
deadline on exactly as an async handler does.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar, Token

from microcall._durations import Seconds
from microcall.deadline import Deadline
from microcall.priority import Priority

_deadline: ContextVar[Deadline | None] = ContextVar("microcall_deadline", default=None)
_priority: ContextVar[Priority | None] = ContextVar("microcall_priority", default=None)


def current_deadline() -> Deadline | None:
    """The deadline inherited by calls made here, or None when there is none."""
    return _deadline.get()


def current_priority() -> Priority | None:
    """The priority inherited by calls made here, or None when there is none."""
    return _priority.get()


def inherit_deadline(expires_at: float) -> float:
    """``expires_at`` capped by the inherited deadline: the one rule every outgoing call follows.

    The inherited deadline (from an incoming request, or ``microcall.deadline()``)
    always caps: nobody upstream will wait for an answer after it.
    """
    inherited = _deadline.get()
    if inherited is not None and inherited.expires_at < expires_at:
        return inherited.expires_at
    return expires_at


def inherit_priority(own: str | None) -> str | None:
    """The priority an outgoing call sends when given none: the context's, else ``own``.

    ``own`` is the client's or channel's configured priority (None: send none,
    and the server applies its default).
    """
    inherited = _priority.get()
    return own if inherited is None else inherited.value


def set_deadline(value: Deadline | None) -> Token[Deadline | None]:
    """Make ``value`` the inherited deadline; pass the token to :func:`reset_deadline`."""
    return _deadline.set(value)


def reset_deadline(token: Token[Deadline | None]) -> None:
    _deadline.reset(token)


def set_priority(value: Priority | str | None) -> Token[Priority | None]:
    """Make ``value`` the inherited priority; pass the token to :func:`reset_priority`."""
    return _priority.set(None if value is None else Priority.parse(value))


def reset_priority(token: Token[Priority | None]) -> None:
    _priority.reset(token)


@contextmanager
def priority(value: Priority | str) -> Iterator[Priority]:
    """Run a block at a priority: calls made inside it send ``X-Request-Priority``.

    ::

        with microcall.priority("low"):
            client.get("/reports")   # shed first if the server is overloaded
    """
    token = set_priority(value)
    try:
        yield Priority.parse(value)
    finally:
        reset_priority(token)


@contextmanager
def deadline(seconds: Seconds) -> Iterator[Deadline]:
    """Run a block under a deadline: every call made inside it inherits what remains.

    An enclosing deadline that is earlier still wins; this can only shorten::

        with microcall.deadline(0.5):
            client.get("/a")   # gets at most 0.5 s
            client.get("/b")   # gets what is left of the same 0.5 s
    """
    chosen = Deadline.after(seconds).shorten_to(current_deadline())
    token = set_deadline(chosen)
    try:
        yield chosen
    finally:
        reset_deadline(token)
