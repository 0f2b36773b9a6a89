"""The record of one attempt: where it went, how long it took, how it ended."""

from __future__ import annotations

import enum
from dataclasses import dataclass


class AttemptKind(enum.StrEnum):
    """Why an attempt was sent."""

    FIRST = "first"
    RETRY = "retry"  # sent after the previous attempt failed
    HEDGE = "hedge"  # sent while an earlier attempt was still running


# Why an attempt was not sent (``Attempt.error`` when ``sent`` is False).
REFUSED_RETRY_BUDGET = "retry budget empty"
REFUSED_HEDGE_BUDGET = "hedge budget empty"
REFUSED_CIRCUIT_OPEN = "CircuitOpen"


@dataclass(slots=True)
class Attempt:
    """One attempt of a call.

    ``status`` is the HTTP status when a response arrived; ``error`` names the
    failure otherwise (``"ConnectError: ..."``). ``cancelled`` marks a hedge
    that lost the race and was stopped; ``sent`` False marks one the retry
    budget or an open breaker refused, so it never reached the network.
    ``started`` is seconds after the call began.
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

    def describe(self) -> str:
        if not self.sent:
            return f"#{self.index} {self.kind} not sent: {self.error}"
        if self.cancelled:
            outcome = "cancelled"
        elif self.status is not None:
            outcome = str(self.status)
        else:
            outcome = self.error or "no outcome"
        return (
            f"#{self.index} {self.kind} {self.endpoint} {outcome} in {self.duration * 1000:.1f} ms"
        )
