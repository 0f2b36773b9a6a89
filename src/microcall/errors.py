"""microcall's exceptions: one tree, raised only at the front doors.

Inside the engine an outcome is data (a response or a transport failure); it
becomes an exception only when a front door has to hand a failure to the
caller. Every call error carries the request and the attempts that were made,
so a failure always says what was tried and why it did not work::

    MicrocallError
    ├── ConfigurationError        bad settings, raised at construction (also ValueError)
    ├── UsageError                the API used the wrong way (also RuntimeError)
    └── CallError                 a call that did not produce an answer
        ├── TransportError        the bytes did not make it there and back
        │   ├── ConnectError      no connection (refused, unreachable, DNS, TLS)
        │   ├── ReadError         the connection broke while the response was read
        │   ├── ProtocolError     the peer answered with something that is not HTTP
        │   └── AttemptTimeout    one attempt ran out of its own time (retriable)
        ├── DeadlineExceeded      the call's total deadline passed (also TimeoutError)
        ├── CircuitOpen           the endpoint's breaker is open: not sent
        └── HTTPStatusError       raised by Response.raise_for_status() only

A final response with a failure status (a 503 after the last retry, say) is
returned, not raised: status codes are answers. No status code is ever made up
for a failure that happened below HTTP.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from microcall._attempt import Attempt
    from microcall._request import Request
    from microcall._response import Response

__all__ = [
    "AttemptTimeout",
    "CallError",
    "CircuitOpen",
    "ConfigurationError",
    "ConnectError",
    "DeadlineExceeded",
    "HTTPStatusError",
    "MicrocallError",
    "ProtocolError",
    "ReadError",
    "TransportError",
    "UsageError",
]


class MicrocallError(Exception):
    """The root of every exception microcall raises."""


class ConfigurationError(MicrocallError, ValueError):
    """A setting is invalid; raised when the object is built, never mid-call."""


class UsageError(MicrocallError, RuntimeError):
    """The API was used in a way that cannot work (a blocking call inside an event loop...)."""


class CallError(MicrocallError):
    """A call that did not produce an answer.

    ``request`` is what was asked and ``attempts`` every attempt made, in the
    order they started, each with its endpoint, outcome and duration.
    """

    def __init__(
        self,
        message: str,
        *,
        request: Request | None = None,
        attempts: Sequence[Attempt] = (),
    ) -> None:
        super().__init__(message)
        self.message = message
        self.request = request
        self.attempts: tuple[Attempt, ...] = tuple(attempts)

    def __str__(self) -> str:
        if not self.attempts:
            return self.message
        tried = "; ".join(attempt.describe() for attempt in self.attempts)
        return f"{self.message} [attempts: {tried}]"


class TransportError(CallError):
    """The request or its response did not make it across the network."""


class ConnectError(TransportError):
    """No connection could be made: refused, unreachable, name not resolved, TLS failed."""


class ReadError(TransportError):
    """The connection broke, or the body ended early, while the response was being read."""


class ProtocolError(TransportError):
    """The peer sent something that is not valid HTTP."""


class AttemptTimeout(TransportError):
    """One attempt used up its own time limit; the call's deadline may still allow another."""


class DeadlineExceeded(CallError, TimeoutError):
    """The call's total deadline passed before an answer arrived, or too little was left to try."""


class CircuitOpen(CallError):
    """The endpoint's circuit breaker is open; the call failed fast without touching the network."""


class HTTPStatusError(CallError):
    """Raised by :meth:`Response.raise_for_status` for a 4xx or 5xx response."""

    def __init__(self, message: str, *, response: Response) -> None:
        super().__init__(message, request=response.request, attempts=response.attempts)
        self.response = response
