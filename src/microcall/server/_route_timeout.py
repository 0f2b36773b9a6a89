"""``@default_timeout(seconds)``: a route's own deadline for requests that bring none.

The middleware runs before the framework picks a route (in ASGI and WSGI it
cannot see the route at all), so a route's default is applied by the handler
itself: the decorator wraps it, and when the request has no caller deadline
it replaces the server default with the route's, counted from the request's
arrival, for as long as the handler runs. A caller's ``X-Request-Timeout``
always wins. The aiohttp middleware can see the route before the handler
runs, and applies the route's default up front, so the decorator has nothing
left to do there.
"""

from __future__ import annotations

import functools
import inspect
from collections.abc import Callable
from contextvars import Token
from typing import Any, TypeVar, cast

from microcall._durations import Seconds, to_seconds
from microcall.context import reset_deadline, set_deadline
from microcall.deadline import Deadline
from microcall.server._admission import current_admission

F = TypeVar("F", bound=Callable[..., Any])

ROUTE_TIMEOUT_ATTRIBUTE = "__microcall_default_timeout__"


def default_timeout(seconds: Seconds) -> Callable[[F], F]:
    """Give a route its own default deadline (for requests without ``X-Request-Timeout``).

    Put it under the framework's route decorator, so it wraps the handler::

        @app.get("/reports")
        @microcall.server.default_timeout(60)
        async def reports(): ...

    Works on async and plain functions (aiohttp, FastAPI / Starlette, Flask).
    """
    value = to_seconds(seconds, name="default_timeout")

    def decorate(handler: F) -> F:
        if inspect.iscoroutinefunction(handler):

            @functools.wraps(handler)
            async def run_async(*args: Any, **kwargs: Any) -> Any:
                token = _apply(value)
                try:
                    return await handler(*args, **kwargs)
                finally:
                    if token is not None:
                        reset_deadline(token)

            wrapper: Callable[..., Any] = run_async
        else:

            @functools.wraps(handler)
            def run(*args: Any, **kwargs: Any) -> Any:
                token = _apply(value)
                try:
                    return handler(*args, **kwargs)
                finally:
                    if token is not None:
                        reset_deadline(token)

            wrapper = run
        setattr(wrapper, ROUTE_TIMEOUT_ATTRIBUTE, value)
        return cast(F, wrapper)

    return decorate


def route_timeout_of(handler: object) -> float | None:
    """The ``@default_timeout`` of ``handler``, if it has one."""
    value = getattr(handler, ROUTE_TIMEOUT_ATTRIBUTE, None)
    return value if isinstance(value, float) else None


def _apply(seconds: float) -> Token[Deadline | None] | None:
    admission = current_admission()
    if admission is None or admission.from_header or admission.route_applied:
        return None
    admission.route_applied = True
    deadline = Deadline(admission.arrived_at + seconds, clock=admission.deadline.clock)
    admission.deadline = deadline
    if admission.reschedule is not None:
        admission.reschedule(deadline)
    return set_deadline(deadline)
