"""One admitted request: its deadline, priority and permit, and the context it runs in.

While the handler runs, the request's deadline and priority are microcall's
call context (``microcall.context``), so every client call the handler makes
inherits them; the admission itself is in a context variable too, so a
route's ``@default_timeout`` can find it and the middleware can cancel at the
right moment.
"""

from __future__ import annotations

from collections.abc import Callable
from contextvars import ContextVar, Token

from microcall.context import reset_deadline, reset_priority, set_deadline, set_priority
from microcall.deadline import Deadline
from microcall.priority import Priority
from microcall.server._stats import ServerStats
from microcall.server.shedding import Permit

_current: ContextVar[Admission | None] = ContextVar("microcall_server_admission", default=None)


class Admission:
    """A request the gate let in.

    ``from_header``: the deadline is the caller's (``X-Request-Timeout``), not
    a server default. ``reschedule``, while the middleware is ready to cancel
    the handler, moves that cancellation to a new deadline. ``ran_out``: the
    handler let a call run out of this request's deadline, and the request
    was answered as expired (see ``Gate.ran_out``).
    """

    __slots__ = (
        "_tokens",
        "arrived_at",
        "deadline",
        "from_header",
        "permit",
        "priority",
        "ran_out",
        "reschedule",
        "route_applied",
        "stats",
    )

    def __init__(
        self,
        *,
        deadline: Deadline,
        priority: Priority,
        arrived_at: float,
        from_header: bool,
        route_applied: bool,
        permit: Permit | None,
        stats: ServerStats,
    ) -> None:
        self.deadline = deadline
        self.priority = priority
        self.arrived_at = arrived_at
        self.from_header = from_header
        self.route_applied = route_applied
        self.permit = permit
        self.stats = stats
        self.reschedule: Callable[[Deadline], None] | None = None
        self.ran_out = False
        self._tokens: tuple[Token[Deadline | None], Token[Priority | None], Token[Admission | None]]

    def enter(self) -> None:
        """Make this request's deadline and priority the current call context."""
        self._tokens = (
            set_deadline(self.deadline),
            set_priority(self.priority),
            _current.set(self),
        )

    def leave(self) -> None:
        """Restore the context as it was before :meth:`enter` (same thread, same context)."""
        deadline_token, priority_token, current_token = self._tokens
        try:
            _current.reset(current_token)
        except ValueError:
            # Another context than enter()'s: a response stream cancelled
            # mid-way is closed later by asyncio's finaliser of async
            # generators, in a context of its own, where nothing was set.
            return
        reset_priority(priority_token)
        reset_deadline(deadline_token)

    def finish(self, *, cancelled: bool = False) -> None:
        """The handler is done (or was cancelled at its deadline): count it, free its slot."""
        # Running out of time is counted as such, not again as an overrun.
        dropped = cancelled or self.ran_out
        overran = not dropped and self.deadline.expired()
        if overran:
            self.stats.add("overran")
        if self.permit is not None:
            self.permit.release(dropped=dropped or overran)

    def fail(self) -> None:
        """The handler raised: free its slot without telling the limit anything."""
        if self.permit is not None:
            self.permit.discard()


def current_admission() -> Admission | None:
    """The request being handled in this context, or None outside a protected handler."""
    return _current.get()
