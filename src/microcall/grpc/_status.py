"""Status classification: is a gRPC status an answer, a failure worth retrying, or the end?

gRPC's own retry design (gRFC A6) is the model, with microcall's vocabulary:

* OK is an answer, and so is every status not listed below (NOT_FOUND,
  INVALID_ARGUMENT, PERMISSION_DENIED, INTERNAL...): the server said
  something, and asking again would get the same answer. The call ends with
  it (raised as :class:`~microcall.errors.GrpcStatusError` unless OK).
* UNAVAILABLE and RESOURCE_EXHAUSTED are retriable failures (the channel
  could not reach the server, or the server shed the call): another attempt,
  on another replica if there is one, may succeed.
* DEADLINE_EXCEEDED ends the call: nobody is waiting any more. When the
  attempt had a shorter time limit of its own than the call, only that
  attempt ran out, so it is retriable like a timed-out HTTP attempt.

A server may steer retries with the trailer ``grpc-retry-pushback-ms``: a
non-negative integer is the least time to wait before the next attempt, and
anything else (negative, not a number, repeated) means *do not retry*, exactly
as gRFC A6 says. The trailer is read only on a retriable status.
"""

from __future__ import annotations

import enum
from collections.abc import Collection, Iterable
from typing import Final, Literal

import grpc

from microcall.policy.classify import Verdict

PUSHBACK_METADATA: Final = "grpc-retry-pushback-ms"

RETRYABLE_CODES: Final = frozenset(
    {grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.RESOURCE_EXHAUSTED}
)
"""The statuses another attempt may fix, by default."""

# A pushback beyond an hour is as good as "never": no deadline we would set
# is that long (the same cap as for Retry-After).
MAX_PUSHBACK = 3600.0
# Enough digits for an hour in milliseconds and then some; bounds the work a
# hostile value can cause.
_MAX_PUSHBACK_TEXT = 12


class Pushback(enum.Enum):
    """The marker for a pushback that says: do not retry."""

    DO_NOT_RETRY = "do not retry"

    def __repr__(self) -> str:
        return "DO_NOT_RETRY"


DO_NOT_RETRY: Final = Pushback.DO_NOT_RETRY

Parsed = float | Literal[Pushback.DO_NOT_RETRY] | None


def parse_pushback(values: Iterable[str | bytes]) -> Parsed:
    """Seconds to wait from ``grpc-retry-pushback-ms`` values; None if absent; DO_NOT_RETRY.

    >>> parse_pushback(["250"]), parse_pushback([]), parse_pushback(["-1"]) is DO_NOT_RETRY
    (0.25, None, True)
    """
    found = list(values)
    if not found:
        return None
    if len(found) != 1:
        return DO_NOT_RETRY
    value = found[0]
    text = value.decode("ascii", "replace") if isinstance(value, bytes) else value
    text = text.strip()
    if not text or len(text) > _MAX_PUSHBACK_TEXT or not (text.isascii() and text.isdigit()):
        return DO_NOT_RETRY
    return min(int(text) / 1000.0, MAX_PUSHBACK)


def pushback_of(trailing_metadata: Iterable[tuple[str, str | bytes]] | None) -> Parsed:
    """The pushback in a call's trailing metadata (see :func:`parse_pushback`)."""
    if not trailing_metadata:
        return None
    return parse_pushback(value for key, value in trailing_metadata if key == PUSHBACK_METADATA)


def classify(
    code: grpc.StatusCode,
    trailing_metadata: Iterable[tuple[str, str | bytes]] | None,
    *,
    retryable: Collection[grpc.StatusCode] = RETRYABLE_CODES,
    attempt_limited: bool = False,
) -> tuple[Verdict, float | None]:
    """The verdict on an attempt that ended with ``code``, and how long to wait before another.

    ``attempt_limited``: the attempt's own time limit was shorter than the
    call's deadline, so a DEADLINE_EXCEEDED ends only the attempt.
    """
    if code is grpc.StatusCode.OK:
        return Verdict.ACCEPT, None
    if code is grpc.StatusCode.DEADLINE_EXCEEDED:
        return (Verdict.RETRY if attempt_limited else Verdict.STOP), None
    if code not in retryable:
        return Verdict.ACCEPT, None
    pushback = pushback_of(trailing_metadata)
    if pushback is DO_NOT_RETRY:
        return Verdict.STOP, None
    return Verdict.RETRY, pushback
