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

from collections.abc import Collection, Iterable
from typing import Final

import grpc

from microcall._wire import (
    DO_NOT_RETRY,
    MAX_PUSHBACK,
    PUSHBACK_METADATA,
    Pushback,
    parse_pushback,
    pushback_of,
)
from microcall.policy.classify import Verdict

__all__ = [
    "DO_NOT_RETRY",
    "MAX_PUSHBACK",
    "PUSHBACK_METADATA",
    "RETRYABLE_CODES",
    "Pushback",
    "classify",
    "parse_pushback",
    "pushback_of",
]

RETRYABLE_CODES: Final = frozenset(
    {grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.RESOURCE_EXHAUSTED}
)
"""The statuses another attempt may fix, by default."""


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
