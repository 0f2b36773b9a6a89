"""The observer interface: how metrics and traces see calls and attempts.

One small protocol underneath every backend (Prometheus, OpenTelemetry, a
test's recorder): the engine tells each observer when a call starts, when
each attempt starts and ends, and when the call ends. An observer returns a
scope object for each, so it can keep its own state (a start time, a span)
without the engine knowing what it is.

::

    class Observer(Protocol):
        def call_started(self, request) -> CallScope | None

    class CallScope(Protocol):
        def attempt_started(self, index, kind, url, headers) -> AttemptScope | None
        def call_ended(self, response, error, attempts) -> None

    class AttemptScope(Protocol):
        def attempt_ended(self, attempt) -> None

``headers`` is the attempt's outgoing header dict: a tracer adds
``traceparent`` there. ``attempts`` at the end includes the attempts that were
refused (``sent=False``: retry budget, breaker), so budget refusals are
counted from it. Breaker state changes and ejections are events on the
client's replica group (``client.replicas.breaker_events`` /
``ejection_events``, lists of callables), which an observer may subscribe to.

With no observers configured the engine skips all of this: it costs one
attribute check per call.

Observers run inside the call, on the event loop: keep them cheap and never
let them raise (an exception from an observer is logged and dropped).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol

from yarl import URL

from microcall._attempt import Attempt, AttemptKind
from microcall._request import Request
from microcall._response import Response
from microcall.errors import CallError


class AttemptScope(Protocol):
    def attempt_ended(self, attempt: Attempt) -> None:
        """The attempt ended (answered, failed, or was cancelled: see ``attempt``)."""


class CallScope(Protocol):
    def attempt_started(
        self, index: int, kind: AttemptKind, url: URL, headers: dict[str, str]
    ) -> AttemptScope | None:
        """An attempt is about to be sent to ``url``; ``headers`` may be added to."""

    def call_ended(
        self, response: Response | None, error: CallError | None, attempts: Sequence[Attempt]
    ) -> None:
        """The call ended with ``response`` or ``error`` after ``attempts``."""


class Observer(Protocol):
    def call_started(self, request: Request) -> CallScope | None:
        """A logical call starts; return a scope to follow it, or None to ignore it."""
