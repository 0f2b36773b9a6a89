"""What a channel wrapper's calls share: options, targets, retry budget, learned delays, observers.

Both channel wrappers (grpc.aio and blocking) hold one :class:`ChannelCore`;
it answers the questions that are the channel's own before a call's first
attempt (its deadline and priority from the channel's defaults and the
context, its metadata, the error of a call too late to send, the error a
status becomes) and owns the state that lives longer than one call, among
it the decisions every call shares with HTTP's (:class:`~microcall._call.CallPolicies`).
Each call's attempts are the call driver's (:mod:`microcall._driver`, through
:mod:`._unary`). It never blocks and never awaits.
"""

from __future__ import annotations

import contextlib
import math
import random
import threading
import time
from collections.abc import Callable, Iterable, Sequence
from contextlib import AbstractContextManager
from functools import partial
from typing import Any, Generic, TypeVar

import grpc

from microcall._call import CallPolicies, Learner
from microcall._checks import checked_metadata
from microcall._clock import MONOTONIC
from microcall._durations import to_seconds
from microcall._validate import items
from microcall._wire import PRIORITY_METADATA
from microcall.context import inherit_deadline, inherit_priority
from microcall.errors import CallError, UsageError
from microcall.grpc._errors import AttemptTimeout, DeadlineExceeded, GrpcStatusError
from microcall.grpc._observe import RpcAttempt, RpcMethod, RpcObserver
from microcall.grpc._options import ChannelOptions
from microcall.grpc._targets import Targets
from microcall.policy.budget import RetryBudget
from microcall.policy.strategy import Plan, Strategy
from microcall.priority import Priority

C = TypeVar("C")

# The details of a call its channel's closing stopped.
CLOSED_DETAILS = "the channel was closed"
MetadataPairs = tuple[tuple[str, str | bytes], ...]


class ChannelCore(Generic[C]):
    """Per-channel state and the decisions made once per call."""

    __slots__ = (
        "_own",
        "_priority",
        "_wakers",
        "budget",
        "closed",
        "floor",
        "lock",
        "now",
        "observers",
        "options",
        "policies",
        "rng",
        "targets",
        "timeout",
    )

    def __init__(
        self,
        options: ChannelOptions,
        targets: Targets[C],
        observers: Sequence[RpcObserver],
        rng: random.Random | None = None,
        *,
        threaded: bool = False,
    ) -> None:
        self.options = options
        self.targets = targets
        self.observers = items("observers", observers)
        # The process's clock read directly: one call less on every call.
        self.now = time.monotonic if options.clock is MONOTONIC else options.clock.now
        self.timeout = to_seconds(options.timeout, name="timeout")
        self.floor = to_seconds(options.deadline_floor, name="deadline_floor", allow_zero=True)
        self.rng = rng or random.Random()
        self.budget = None if options.budget is None else RetryBudget(options.budget)
        # None: calls carry no priority of their own, and the server applies its default.
        self._priority = (
            None if options.priority is None else Priority.parse(options.priority).value
        )
        # The decisions HTTP and gRPC calls share (plans, learned delays, budgets).
        self.policies = CallPolicies(budget=self.budget, floor=self.floor, rng=self.rng)
        # The policies are plain objects told one thing at a time. A grpc.aio
        # channel tells them from its one event loop; a blocking channel's
        # calls come from many threads, which take turns through this lock
        # (held for a decision, never across I/O).
        self.lock: AbstractContextManager[object] = (
            threading.Lock() if threaded else contextlib.nullcontext()
        )
        # The metadata of a call given none, per priority: built once.
        self._own: dict[str | None, MetadataPairs] = {
            level.value: ((PRIORITY_METADATA, level.value),) for level in Priority
        }
        self._own[None] = ()
        self.closed = False
        # Calls waiting out a backoff, woken when the channel closes.
        self._wakers: set[Callable[[], None]] = set()

    # ------------------------------------------------------------ closing

    def close(self) -> None:
        """The channel is closing: calls made now are refused, calls in a backoff end."""
        self.closed = True
        for wake in list(self._wakers):
            wake()

    def check_open(self) -> None:
        if self.closed:
            raise UsageError("this channel is closed")

    def waking_on_close(self, wake: Callable[[], None]) -> Callable[[], None]:
        """Call ``wake`` if the channel closes; the returned function stops that."""
        self._wakers.add(wake)
        return partial(self._wakers.discard, wake)

    def closed_error(self, method: RpcMethod, attempts: Sequence[RpcAttempt]) -> CallError:
        """What a call stopped by its channel's closing raises: CANCELLED, as grpc's in flight do."""
        return status_error(
            method,
            self.targets.address_at(0),
            grpc.StatusCode.CANCELLED,
            CLOSED_DETAILS,
            (),
            by_deadline=False,
            attempts=attempts,
        )

    # ------------------------------------------------------------ per call

    def expires_at(self, timeout: float | None, now: float) -> float:
        """The call's deadline: its own ``timeout`` or the default, capped by the context's."""
        return inherit_deadline(now + (self.timeout if timeout is None else timeout))

    def priority(self, given: Priority | str | None) -> str | None:
        if given is not None:
            return Priority.parse(given).value
        return inherit_priority(self._priority)

    def own_priority(self) -> str | None:
        """The priority of a call that was given none: the context's, or the channel's (if any)."""
        return inherit_priority(self._priority)

    def own_metadata(self) -> MetadataPairs:
        """The metadata of a call that was given none."""
        return self._own[self.own_priority()]

    def metadata(
        self, priority: str | None, given: Iterable[tuple[str, str | bytes]] | None
    ) -> MetadataPairs:
        """The call's outgoing metadata: the caller's, then microcall's priority (if any).

        A call sends one priority. When microcall has one (``priority=``, the
        context's, the channel's), it replaces the caller's own entry, which
        would contradict it; when it has none, the caller's entry goes as
        given, and the server's trust rules decide whether to believe it.
        """
        ours = self._own[priority]
        if not given:
            return ours
        # Checked here, before any attempt: grpc would report bad metadata as an
        # INTERNAL status or a bare TypeError.
        pairs = checked_metadata(given)
        if priority is None:
            return pairs
        # The caller's own priority entry would contradict ours: drop it.
        kept = tuple(pair for pair in pairs if pair[0] != PRIORITY_METADATA)
        return kept + ours

    def plan(
        self, method: RpcMethod, strategy: Strategy, start: float, expires_at: float
    ) -> tuple[Plan, Learner | None]:
        """The call's plan (a single attempt for a method that is not idempotent)."""
        return self.policies.plan(
            strategy,
            replayable=method.idempotent,
            route=method.full_name,
            start=start,
            expires_at=expires_at,
        )

    def too_late(
        self, method: RpcMethod, remaining: float, attempts: Sequence[RpcAttempt]
    ) -> DeadlineExceeded:
        left_ms = max(remaining, 0.0) * 1000
        return DeadlineExceeded(
            f"deadline exceeded calling {method.full_name}: {left_ms:.1f} ms left, below the "
            f"{self.floor * 1000:.0f} ms needed to start an attempt",
            attempts=attempts,
        )


def status_error(
    method: RpcMethod,
    target: str,
    code: grpc.StatusCode,
    details: str,
    trailing_metadata: MetadataPairs,
    *,
    by_deadline: bool,
    attempts: Sequence[RpcAttempt],
) -> CallError:
    """The one place a gRPC status becomes microcall's error."""
    if code is grpc.StatusCode.DEADLINE_EXCEEDED:
        timed_out: DeadlineExceeded | AttemptTimeout = (
            DeadlineExceeded(
                f"deadline exceeded calling {method.full_name} on {target}", attempts=attempts
            )
            if by_deadline
            else AttemptTimeout(
                f"attempt timed out calling {method.full_name} on {target}", attempts=attempts
            )
        )
        # The status's own words: grpc's "Deadline Exceeded", or a server's
        # that gave up on its own deadline ("inventory lookup timed out").
        timed_out.answered(details, trailing_metadata)
        return timed_out
    return GrpcStatusError(
        f"{method.full_name} on {target} ended with {code.name}: {details}",
        code=code,
        details=details,
        trailing_metadata=trailing_metadata,
        attempts=attempts,
    )


def status_of(
    error: grpc.RpcError,
) -> tuple[grpc.StatusCode, str, MetadataPairs]:
    """The status of a failed blocking call (grpcio's errors are also its Call)."""
    # Typed as a plain RpcError; at run time it is the call's object.
    call: Any = error
    if callable(getattr(call, "code", None)):
        return call.code(), call.details() or "", tuple(call.trailing_metadata() or ())
    return grpc.StatusCode.UNKNOWN, str(error), ()


# How grpc writes a timeout on the wire (grpc-timeout): to the millisecond
# under a second, then in tens of milliseconds to 10 s, tenths to 100 s,
# seconds beyond, each rounded up. (seconds below, step) pairs.
_WIRE_STEPS = ((1.0, 0.001), (10.0, 0.01), (100.0, 0.1), (math.inf, 1.0))
# grpc reads the time left against a clock it caches for a moment, so the
# time it encodes can be a millisecond or so more than the time given.
_CLOCK_SLACK = 0.002
_LEAST = 0.001  # a timeout grpc still sends as such


def wire_timeout(seconds: float) -> float:
    """``seconds``, less what grpc's rounding would add on the wire.

    grpc rounds the time left up to its unit, from a clock it caches: a call
    with 1.0 s left gave its callee 1.0095 s, more than its caller had. Given
    a timeout on a step, short of the slack, its round-up adds nothing, and
    each hop sees less time than the one before. (The call ends up to one
    step sooner here: the safe side.)
    """
    for below, step in _WIRE_STEPS:
        if seconds < below:
            return max(math.floor(seconds / step) * step - _CLOCK_SLACK, _LEAST)
    return seconds
