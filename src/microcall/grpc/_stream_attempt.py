"""The one attempt of a streaming call: its deadline, metadata, target, breaker and observers.

Shared by the grpc.aio and the blocking streaming calls, which only move the
messages. A stream is a call of one attempt, so it runs the call driver
(:mod:`microcall._driver`, as every call does) with a single attempt's plan:
opening asks it for the attempt (its target, its breaker, its timeout from
the deadline in context) and builds the metadata; the call's end is
reported exactly once, as an outcome (the stream finished, or failed with a
status) or as abandoned (the caller cancelled it, or stopped in the middle
with an exception of its own).
"""

from __future__ import annotations

import asyncio
from typing import Any, cast

import grpc

from microcall._attempt import Attempt
from microcall._driver import CallDriver, Start
from microcall.grpc._core import ChannelCore, MetadataPairs, status_error, wire_timeout
from microcall.grpc._errors import CANCELLED_DETAILS, CircuitOpen
from microcall.grpc._observe import Metadata, RpcAttempt, RpcMethod, RpcWatch
from microcall.grpc._unary import Answered, Failed, GrpcRules, Outcome
from microcall.observe.hooks import AttemptScope
from microcall.policy.strategy import SINGLE
from microcall.priority import Priority


class StreamAttempt:
    """Open with :meth:`open`; then report :meth:`ended`, :meth:`failed` or :meth:`abandoned`."""

    __slots__ = (
        "_core",
        "_driver",
        "_reported",
        "_scopes",
        "_start",
        "attempts",
        "method",
        "refusal",
        "target",
        "watch",
    )

    def __init__(self, core: ChannelCore[Any], method: RpcMethod) -> None:
        self._core = core
        self.method = method
        self._start = core.now()
        self._driver: CallDriver[Outcome] | None = None
        self._scopes: list[AttemptScope] | None = None
        self._reported = False
        self.target = ""
        self.refusal: BaseException | None = None
        self.watch: RpcWatch | None = None
        self.attempts: tuple[RpcAttempt, ...] = ()

    def open(
        self, timeout: float | None, metadata: Any, priority: Priority | str | None
    ) -> tuple[int, float, MetadataPairs] | None:
        """``(slot, timeout, metadata)`` to send with; None when refused (see ``refusal``)."""
        core = self._core
        core.check_open()
        now = self._start
        pairs = core.metadata(core.priority(priority), metadata)
        expires_at = core.expires_at(timeout, now)
        targets = core.targets
        driver: CallDriver[Outcome] = CallDriver(
            core.policies,
            GrpcRules(core.options.retryable_codes),
            SINGLE.plan(expires_at=expires_at, floor=core.floor, rng=core.rng),
            None,
            group=None if targets.single else targets,
            start=now,
            expires_at=expires_at,
            route=self.method.full_name,
            target=targets.address_at(0),
            strategy=SINGLE,
            replayable=False,
        )
        with core.lock:
            action = driver.next(now)
        if not isinstance(action, Start):
            # Too little time left, or the target's breaker is open: not sent.
            refused = driver.circuit_open
            self._refuse(
                core.too_late(self.method, expires_at - now, ())
                if refused is None
                else CircuitOpen(f"circuit open for {refused}: {self.method.full_name} not sent")
            )
            return None
        self._driver = driver
        self.target = action.target
        endpoint = action.endpoint
        slot = 0 if endpoint is None else targets.slot_of(endpoint)
        if core.observers:
            self.watch = RpcWatch(core.observers, self.method)
            extended: Metadata = list(pairs)
            self._scopes = self.watch.attempt_started(0, action.kind, self.target, extended)
            pairs = tuple(extended)
        return slot, wire_timeout(action.timeout), pairs

    def _refuse(self, error: BaseException) -> None:
        self.refusal = error
        self._reported = True
        if self._core.observers:
            RpcWatch(self._core.observers, self.method).call_ended(None, error, ())

    def failed(self, code: grpc.StatusCode, details: str, trailing: MetadataPairs) -> BaseException:
        """The stream ended with a status other than OK: microcall's error for it."""
        reported = self._report(Failed(code, details, trailing, None))
        error = status_error(
            self.method,
            self.target,
            code,
            details,
            trailing,
            by_deadline=True,
            attempts=self.attempts,
        )
        if self.watch is not None and reported:
            self.watch.call_ended(None, error, self.attempts)
        return error

    def ended(self, response: object | None) -> None:
        """The stream finished with OK (``response``: a client stream's one response)."""
        reported = self._report(Answered(response, None))
        if self.watch is not None and reported:
            self.watch.call_ended(response, None, self.attempts)

    def abandoned(self, error: BaseException | None = None) -> None:
        """The caller cancelled the stream, or left it in the middle (``error``: how; a cancellation).

        Its observers hear it end with ``error``, so a span and a metric say
        CANCELLED, never OK: no status came for them to say otherwise.
        """
        reported = self._report(None)
        if self.watch is not None and reported:
            ended = error if error is not None else asyncio.CancelledError(CANCELLED_DETAILS)
            self.watch.call_ended(None, ended, self.attempts)

    @property
    def reported(self) -> bool:
        """Whether the stream's end was reported (or it was never sent)."""
        return self._reported

    def _report(self, outcome: Outcome | None) -> bool:
        """Tell the driver how the attempt ended (None: abandoned); False if already told."""
        driver = self._driver
        if driver is None:
            return False
        core = self._core
        now = core.now()
        record: Attempt
        with core.lock:
            # Under the lock: a stream dropped in one thread may be reported
            # while its reader, in another, reaches the end.
            if self._reported:
                return False
            self._reported = True
            if outcome is None:
                record = driver.lost(0, now)
                driver.settled(0, None, now)
            else:
                record = driver.finished(0, outcome, now)
        rpc_record = cast(RpcAttempt, record)  # GrpcRules writes every record
        self.attempts = (rpc_record,)
        if self._scopes:
            RpcWatch.attempt_ended(self._scopes, rpc_record)
        return True
