"""The record of one attempt: where it went, how long it took, how it ended."""

from __future__ import annotations

import enum
from dataclasses import dataclass


class AttemptKind(enum.StrEnum):
    """Why an attempt was sent."""

    FIRST = "first"
    RETRY = "retry"  # sent after the previous attempt failed
    HEDGE = "hedge"  # sent while an earlier attempt was still running


class RefusalReason(enum.StrEnum):
    """Why an attempt was not sent (``Attempt.error`` when ``sent`` is False).

    A str, so a record compares equal to the text it has always shown.
    """

    RETRY_BUDGET = "retry budget empty"
    HEDGE_BUDGET = "hedge budget empty"
    CIRCUIT_OPEN = "CircuitOpen"
    # A body read once (an iterator, a stream) cannot go out a second time;
    # also a body whose source failed (a closed file).
    BODY_NOT_REPLAYABLE = "body cannot be replayed"


REFUSED_RETRY_BUDGET = RefusalReason.RETRY_BUDGET
REFUSED_HEDGE_BUDGET = RefusalReason.HEDGE_BUDGET
REFUSED_CIRCUIT_OPEN = RefusalReason.CIRCUIT_OPEN

# The attribute a transport sets on a Response, or on the TransportError it
# raises, when the attempt's request was sent a second time on a fresh
# connection (its reused one failed before any response byte arrived).
_RESENT = "microcall_resent"


def mark_resent(outcome: object) -> None:
    """Say that the attempt behind ``outcome`` resent its request on a fresh connection."""
    setattr(outcome, _RESENT, True)


def was_resent(outcome: object) -> bool:
    """Whether the attempt behind ``outcome`` (a Response or a CallError) resent its request.

    An error the engine made from the transport's (a DeadlineExceeded from
    an AttemptTimeout) carries the transport's as its cause.
    """
    if getattr(outcome, _RESENT, False):
        return True
    return isinstance(outcome, BaseException) and bool(getattr(outcome.__cause__, _RESENT, False))


@dataclass(slots=True)
class Attempt:
    """One attempt of a call.

    ``status`` is the HTTP status when a response arrived; ``error`` names the
    failure otherwise (``"ConnectError: ..."``). ``cancelled`` marks a hedge
    that lost the race and was stopped; ``sent`` False marks one the retry
    budget, an open breaker or a body that cannot be replayed refused, so it
    never reached the network (``error`` is the RefusalReason).
    ``started`` is seconds after the call began, when the attempt went out
    (a call that waited for one of its client's slots waited before its
    first attempt: the wait is in ``started``, not in ``duration``, which is
    the attempt's own time). ``resent`` marks an attempt
    whose request went out a second time on a fresh connection because the
    reused one it was first sent on failed before any response byte arrived
    (the server never saw it; no retry budget is spent on it).
    Read-only by convention (not ``frozen``, which would slow every call down).
    """

    index: int
    kind: AttemptKind
    endpoint: str
    started: float
    duration: float
    status: int | None = None
    error: str | None = None
    cancelled: bool = False
    sent: bool = True
    resent: bool = False

    def describe(self) -> str:
        if not self.sent:
            return f"#{self.index} {self.kind} not sent: {self.error}"
        if self.cancelled:
            outcome = "cancelled"
        elif self.status is not None:
            outcome = str(self.status)
        else:
            outcome = self.error or "no outcome"
        if self.resent:
            outcome += " (resent on a fresh connection)"
        return (
            f"#{self.index} {self.kind} {self.endpoint} {outcome} in {self.duration * 1000:.1f} ms"
        )
