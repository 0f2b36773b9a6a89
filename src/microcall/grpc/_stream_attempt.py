"""The one attempt of a streaming call: its deadline, metadata, target, breaker and observers.

Shared by the grpc.aio and the blocking streaming calls, which only move the
messages. Opening picks the target (and asks its breaker), computes the
timeout from the deadline in context and the metadata; the call's end is
reported exactly once, as an outcome (the stream finished, or failed with a
status) or as abandoned (the caller cancelled it, or stopped in the middle
with an exception of its own).
"""

from __future__ import annotations

from typing import Any

import grpc

from microcall._attempt import AttemptKind
from microcall.grpc._core import ChannelCore, MetadataPairs, status_error
from microcall.grpc._errors import CircuitOpen
from microcall.grpc._observe import Metadata, RpcAttempt, RpcMethod, RpcWatch
from microcall.grpc._status import classify
from microcall.observe.hooks import AttemptScope
from microcall.policy.balancer import Endpoint
from microcall.policy.classify import Verdict
from microcall.priority import Priority


class StreamAttempt:
    """Open with :meth:`open`; then report :meth:`ended`, :meth:`failed` or :meth:`abandoned`."""

    __slots__ = (
        "_core",
        "_endpoint",
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
        self._endpoint: Endpoint | None = None
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
        now = self._start
        pairs = core.metadata(core.priority(priority), metadata)
        remaining = core.expires_at(timeout, now) - now
        if remaining < core.floor:
            self._refuse(core.too_late(self.method, remaining, ()))
            return None
        targets = core.targets
        slot = 0
        if not targets.single:
            with core.lock:
                endpoint = targets.pick(now, ())
                breaker = endpoint.breaker
                admitted = breaker is None or breaker.allow(now)
                if admitted:
                    targets.started(endpoint, now)
            if not admitted:
                self._refuse(
                    CircuitOpen(
                        f"circuit open for {endpoint.address}: {self.method.full_name} not sent"
                    )
                )
                return None
            self._endpoint = endpoint
            slot = targets.slot_of(endpoint)
        self.target = targets.address_at(slot)
        if core.observers:
            self.watch = RpcWatch(core.observers, self.method)
            extended: Metadata = list(pairs)
            self._scopes = self.watch.attempt_started(0, AttemptKind.FIRST, self.target, extended)
            pairs = tuple(extended)
        return slot, remaining, pairs

    def _refuse(self, error: BaseException) -> None:
        self.refusal = error
        self._reported = True
        if self._core.observers:
            RpcWatch(self._core.observers, self.method).call_ended(None, error, ())

    def failed(self, code: grpc.StatusCode, details: str, trailing: MetadataPairs) -> BaseException:
        """The stream ended with a status other than OK: microcall's error for it."""
        verdict, _ = classify(code, trailing, retryable=self._core.options.retryable_codes)
        record = self._report(code.name, verdict is Verdict.ACCEPT, cancelled=False)
        error = status_error(
            self.method,
            self.target,
            code,
            details,
            trailing,
            by_deadline=True,
            attempts=self.attempts,
        )
        if self.watch is not None and record is not None:
            self.watch.call_ended(None, error, self.attempts)
        return error

    def ended(self, response: object | None) -> None:
        """The stream finished with OK (``response``: a client stream's one response)."""
        record = self._report("OK", True, cancelled=False)
        if self.watch is not None and record is not None:
            self.watch.call_ended(response, None, self.attempts)

    def abandoned(self, error: BaseException | None = None) -> None:
        """The caller cancelled the stream, or left it in the middle."""
        record = self._report(None, False, cancelled=True)
        if self.watch is not None and record is not None:
            self.watch.call_ended(None, error, self.attempts)

    def _report(self, code: str | None, success: bool, *, cancelled: bool) -> RpcAttempt | None:
        if self._reported:
            return None
        self._reported = True
        core = self._core
        now = core.now()
        latency = now - self._start
        if self._endpoint is not None:
            with core.lock:
                if cancelled:
                    core.targets.abandoned(self._endpoint, latency, now)
                else:
                    core.targets.finished(self._endpoint, latency, success, now)
        record = RpcAttempt(
            0, AttemptKind.FIRST, self.target, 0.0, latency, code=code, cancelled=cancelled
        )
        self.attempts = (record,)
        if self._scopes:
            RpcWatch.attempt_ended(self._scopes, record)
        return record
