"""The gate every middleware shares: admit a request, or refuse it before any handler runs.

Theory of operation. For each request the gate decides, in this order:

1. Parse ``X-Request-Timeout`` and ``X-Request-Priority``. A malformed value
   is counted and ignored, as if absent; in strict mode it is refused (400).
2. The deadline: the caller's remaining time, capped at ``max_timeout``; with
   no header, the route's default or the server's. A caller's deadline under
   ``floor`` means nobody will wait for the answer: refused as expired
   (``expired_status``, 408 by default, with ``X-Do-Not-Retry: 1``).
3. The priority: the caller's, unless it asks for more than it would get by
   saying nothing (or ``normal``, if that is more) and the trust predicate
   does not vouch for it; then it is served at that cap and counted.
4. The concurrency limit, when shedding is on: no permit for this priority
   means a 503 with ``Retry-After``.

Expired work is refused before the limit is consulted, so it never takes a
slot that live work could use.

After admission, one failure of the handler is answered by the gate too
(:meth:`Gate.ran_out`): a ``microcall.DeadlineExceeded`` that escapes the
handler once the request's own deadline has run out (less than ``floor``
left). The call that raised it inherited that deadline, so the request is
just as expired as one that arrived too late: the same answer (408 by
default, ``X-Do-Not-Retry: 1``), counted as ``deadline_exceeded`` and shown
to observers as ``refused="deadline"``, with no traceback. A
``DeadlineExceeded`` raised while the request still has more than ``floor``
left came from a shorter timeout the handler chose itself; that is the
handler's business, and it propagates like any other exception. Everything here is plain computation: the
framework adapters read headers in, and turn the answer into their own
response or run the handler.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from http import HTTPStatus
from typing import Protocol

from microcall._durations import to_seconds
from microcall.deadline import Deadline
from microcall.errors import DeadlineExceeded
from microcall.priority import Priority
from microcall.server._admission import Admission
from microcall.server._config import ServerOptions
from microcall.server._headers import (
    DO_NOT_RETRY_HEADER,
    MALFORMED,
    PRIORITY_HEADER,
    TIMEOUT_HEADER,
    parse_priority,
    parse_timeout,
)
from microcall.server._stats import ServerStats
from microcall.server._trust import Caller
from microcall.server.shedding import PriorityLimiter

_RANK = {Priority.LOW: 0, Priority.NORMAL: 1, Priority.HIGH: 2}
_TEXT = ("Content-Type", "text/plain; charset=utf-8")


@dataclass(frozen=True, slots=True)
class Refusal:
    """An answer given instead of running the handler.

    ``kind`` says why (``"expired"``, ``"malformed"``, ``"shed"``, or
    ``"deadline"``: a handler's call ran out of the request's deadline) and
    ``priority`` at which priority, for observers to count.
    """

    status: int
    reason: str
    headers: tuple[tuple[str, str], ...]
    body: bytes
    kind: str = ""
    priority: Priority | None = None


class _Readable(Protocol):
    @property
    def stats(self) -> ServerStats: ...

    @property
    def limiter(self) -> PriorityLimiter | None: ...


class GateReadings:
    """What an operator reads off a middleware or interceptor: its gate's counts and limiter."""

    __slots__ = ()
    _gate: _Readable

    @property
    def stats(self) -> ServerStats:
        """What it has admitted, refused and ignored (and, where it can cancel, cancelled)."""
        return self._gate.stats

    @property
    def limiter(self) -> PriorityLimiter | None:
        """The live concurrency limiter (None without shedding)."""
        return self._gate.limiter


class Gate:
    """Admission decisions for one middleware instance; owns its stats and limiter."""

    __slots__ = (
        "_ceiling",
        "_clock",
        "_deadline_at",
        "_default_priority",
        "_default_timeout",
        "_expired",
        "_expired_at",
        "_floor",
        "_malformed",
        "_max_timeout",
        "_shed",
        "_shed_at",
        "_strict",
        "_trust",
        "limiter",
        "options",
        "stats",
    )

    def __init__(
        self, options: ServerOptions | None = None, *, stats: ServerStats | None = None
    ) -> None:
        self.options = options = options or ServerOptions()
        self.stats = ServerStats() if stats is None else stats
        # Normalised once: the options hold what the user gave (a timedelta, say).
        self._clock = options.clock
        self._floor = to_seconds(options.floor, name="floor", allow_zero=True)
        self._default_timeout = to_seconds(options.default_timeout, name="default_timeout")
        cap = options.max_timeout
        self._max_timeout = None if cap is None else to_seconds(cap, name="max_timeout")
        self._default_priority = Priority.parse(options.default_priority)
        # An untrusted caller may ask for what it would get by saying nothing,
        # or normal if that is more; never above.
        self._ceiling = max(self._default_priority, Priority.NORMAL, key=_RANK.__getitem__)
        self._trust = options.trust
        self._strict = options.strict
        shedding = options.shedding
        self.limiter: PriorityLimiter | None = (
            None if shedding is None else shedding.new_limiter(options.clock)
        )
        self._expired = Refusal(
            options.expired_status,
            _phrase(options.expired_status),
            ((DO_NOT_RETRY_HEADER, "1"), _TEXT),
            b"deadline expired: nobody is waiting for this answer\n",
            "expired",
        )
        # Sending the same malformed header again cannot succeed either.
        self._malformed = Refusal(
            400,
            "Bad Request",
            ((DO_NOT_RETRY_HEADER, "1"), _TEXT),
            f"malformed {TIMEOUT_HEADER} or {PRIORITY_HEADER} header\n".encode(),
            "malformed",
        )
        retry_after = str(shedding.retry_after if shedding is not None else 1)
        self._shed = Refusal(
            503,
            "Service Unavailable",
            (("Retry-After", retry_after), _TEXT),
            b"overloaded: try again later or elsewhere\n",
            "shed",
        )
        # One of each per priority, built once: observers count refusals by
        # priority, and a refusal under overload must cost nothing extra.
        self._expired_at = {level: replace(self._expired, priority=level) for level in Priority}
        self._shed_at = {level: replace(self._shed, priority=level) for level in Priority}
        # The request ran out of time inside the handler: answered as if it
        # had arrived expired, since that is what it now is.
        self._deadline_at = {
            level: replace(self._expired, kind="deadline", priority=level) for level in Priority
        }

    @property
    def expired_refusal(self) -> Refusal:
        """The answer for a request whose deadline has passed (also after cancellation)."""
        return self._expired

    def ran_out(self, admission: Admission, error: BaseException) -> Refusal | None:
        """The answer for ``error`` escaping the handler, if it is the request's deadline running out.

        None: the error is not a ``DeadlineExceeded``, or the request still
        has more than ``floor`` left (a shorter timeout of the handler's own
        ran out, not the request's); let it propagate. Otherwise the request
        is marked, counted, and answered as expired.
        """
        if not isinstance(error, DeadlineExceeded) or admission.deadline.remaining() > self._floor:
            return None
        admission.ran_out = True
        self.stats.add("deadline_exceeded")
        return self._deadline_at[admission.priority]

    def admit(
        self,
        timeout_values: Sequence[str],
        priority_values: Sequence[str],
        caller: Callable[[], Caller],
        route_timeout: float | None = None,
    ) -> Admission | Refusal:
        """Admit the request (the caller must then ``finish()`` or ``fail()`` it) or refuse it."""
        stats = self.stats
        now = self._clock.now()

        remaining: float | None
        claimed: Priority | None
        parsed_timeout = parse_timeout(timeout_values)
        parsed_priority = parse_priority(priority_values)
        if parsed_timeout is MALFORMED or parsed_priority is MALFORMED:
            if parsed_timeout is MALFORMED:
                stats.add("malformed_timeout")
            if parsed_priority is MALFORMED:
                stats.add("malformed_priority")
            if self._strict:
                stats.add("rejected_malformed")
                return self._malformed
        remaining = None if parsed_timeout is MALFORMED else parsed_timeout
        claimed = None if parsed_priority is MALFORMED else parsed_priority

        if remaining is None:
            seconds = self._default_timeout if route_timeout is None else route_timeout
        elif remaining < self._floor:
            stats.add("expired")
            return self._expired_at[self._default_priority if claimed is None else claimed]
        else:
            cap = self._max_timeout
            seconds = remaining if cap is None or remaining <= cap else cap

        priority = self._default_priority if claimed is None else claimed
        if claimed is not None and _RANK[claimed] > _RANK[self._ceiling]:
            trust = self._trust
            if trust is None or not trust(caller()):
                stats.add("downgraded")
                priority = self._ceiling

        permit = None
        if self.limiter is not None:
            permit = self.limiter.try_acquire(priority, now=now)
            if permit is None:
                stats.add_shed(priority)
                return self._shed_at[priority]

        stats.add("admitted")
        return Admission(
            deadline=Deadline(now + seconds, clock=self._clock),
            priority=priority,
            arrived_at=now,
            from_header=remaining is not None,
            route_applied=route_timeout is not None,
            permit=permit,
            stats=stats,
        )


def _phrase(status: int) -> str:
    try:
        return HTTPStatus(status).phrase
    except ValueError:  # a status the standard does not name (499, say)
        return "Deadline Expired"
