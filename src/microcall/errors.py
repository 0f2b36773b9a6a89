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
        │   │   └── ProxyError    the proxy refused, asked for credentials, or failed CONNECT
        │   ├── ReadError         the connection broke while the response was read
        │   ├── ProtocolError     the peer answered with something that is not HTTP
        │   ├── AttemptTimeout    one attempt ran out of its own time (retriable; also TimeoutError)
        │   └── IdleTimeout       a streamed body went quiet past its idle_timeout (also TimeoutError)
        ├── DeadlineExceeded      the call's total deadline passed (also TimeoutError)
        ├── AttemptsExhausted     a resilient callable failed on every attempt it was allowed
        ├── CircuitOpen           the endpoint's breaker is open: not sent
        ├── ClientOverloaded      the client holds all the calls it may: not sent
        ├── ClientClosed          the client was closed while the call was in flight
        ├── AuthError             an auth flow could not set or renew the call's credentials
        ├── RedirectError         a redirect that cannot be followed (bad Location, a loop)
        ├── RequestBodyError      the request body failed while it was sent (a generator raised...)
        ├── ResponseTooLarge      the body is larger than the client buffers
        ├── HTTPStatusError       raised by Response.raise_for_status() only
        ├── ResponseValidationError  the body does not fit the model it was read into
        └── GrpcStatusError       a gRPC call ended with a status other than OK (code kept)

A final response with a failure status (a 503 after the last retry, say) is
returned, not raised: status codes are answers. No status code is ever made up
for a failure that happened below HTTP.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import grpc

    from microcall._attempt import Attempt
    from microcall._request import Request
    from microcall._response import Response

__all__ = [
    "AttemptTimeout",
    "AttemptsExhausted",
    "AuthError",
    "CallError",
    "CircuitOpen",
    "ClientClosed",
    "ClientOverloaded",
    "ConfigurationError",
    "ConnectError",
    "DeadlineExceeded",
    "GrpcStatusError",
    "HTTPStatusError",
    "IdleTimeout",
    "MicrocallError",
    "ProtocolError",
    "ProxyError",
    "ReadError",
    "RedirectError",
    "RequestBodyError",
    "ResponseTooLarge",
    "ResponseValidationError",
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


class ProxyError(ConnectError):
    """The forward proxy failed the request: unreachable, 407, or a CONNECT it would not open.

    The message names the proxy by ``host:port``, never with its credentials.
    """


class ReadError(TransportError):
    """The connection broke, or the body ended early, while the response was being read."""


class ProtocolError(TransportError):
    """The peer sent something that is not valid HTTP."""


class AttemptTimeout(TransportError, TimeoutError):
    """One attempt used up its own time limit; the call's deadline may still allow another."""


class IdleTimeout(TransportError, TimeoutError):
    """No byte of a streamed body arrived for ``idle_timeout`` seconds (``client.stream(...)``).

    Raised where the body is read; the connection is closed. A stream is never
    retried once its head was handed over, so this ends the call.
    """


class DeadlineExceeded(CallError, TimeoutError):
    """The call's total deadline passed before an answer arrived, or too little was left to try."""


class AttemptsExhausted(CallError):
    """A callable run by :class:`microcall.Resilience` failed with a retriable error on every attempt.

    The strategy's attempts ran out, or the retry budget refused the next one
    (``attempts`` shows it, ``sent=False``). The last attempt's exception is
    ``__cause__``; each attempt's record names its exception's class only
    (messages may carry credentials). When the deadline is what stopped the
    attempts, :class:`DeadlineExceeded` is raised instead, with the same
    record and cause.
    """


class CircuitOpen(CallError):
    """The endpoint's circuit breaker is open; the call failed fast without touching the network."""


class ClientOverloaded(CallError):
    """The client already holds as many calls as it may (in flight plus queued).

    Raised at once, before anything is sent: a client that queued without
    bound would let its own backlog outlive every caller's deadline.
    """


class ClientClosed(CallError):
    """The client was closed while this call was in flight; its attempts were stopped."""


class AuthError(CallError):
    """An auth flow failed: its ``apply`` or ``refresh`` raised, so the call ended there.

    The flow's own exception is ``__cause__``; the message names its type,
    never its text (which may hold a credential). ``response`` is the
    response that asked for new credentials (a 401), or None when ``apply``
    failed before anything was sent.
    """

    def __init__(
        self,
        message: str,
        *,
        request: Request | None = None,
        attempts: Sequence[Attempt] = (),
        response: Response | None = None,
    ) -> None:
        super().__init__(message, request=request, attempts=attempts)
        self.response = response


class RedirectError(CallError):
    """A redirect that cannot be followed: a Location that is not an http(s) URL, or a loop."""


class RequestBodyError(CallError):
    """The request body could not be read while it was being sent; the cause is chained.

    A generator or an async iterator raised, a file was closed or came up
    shorter than its length, or a body gave more or fewer bytes than its
    ``Content-Length``. The server saw an incomplete request (the connection
    is closed). No retry or hedge follows: the body is what failed.
    """


class ResponseTooLarge(CallError):
    """The response body is larger than the client may buffer (``Limits.max_response_size``)."""


class HTTPStatusError(CallError):
    """Raised by :meth:`Response.raise_for_status` for a 4xx or 5xx response."""

    def __init__(self, message: str, *, response: Response) -> None:
        super().__init__(message, request=response.request, attempts=response.attempts)
        self.response = response


class ResponseValidationError(CallError):
    """A response body that does not fit the model it was read into.

    Raised by ``response.json(model=...)`` and by a call given
    ``response_model=``. ``response`` is the response (``body`` its bytes, as
    received), ``model`` what it was validated against, and ``errors``
    pydantic's details: one dict per problem, with ``loc``, ``type`` and ``msg``
    (``ValidationError.errors()``; a body that is not JSON at all is one
    ``json_invalid`` error).
    """

    def __init__(
        self,
        message: str,
        *,
        response: Response,
        model: Any,
        errors: Sequence[dict[str, Any]],
    ) -> None:
        super().__init__(message, request=response.request, attempts=response.attempts)
        self.response = response
        self.model = model
        self.errors: list[dict[str, Any]] = list(errors)

    @property
    def body(self) -> bytes:
        """The response body that failed validation."""
        return self.response.content


class GrpcStatusError(CallError):
    """A gRPC call ended with a status other than OK (``microcall.grpc`` raises it).

    It answers as grpcio's own errors do: ``code()`` is the ``grpc.StatusCode``,
    ``details()`` the server's message, ``trailing_metadata()`` and
    ``initial_metadata()`` the metadata as ``(key, value)`` pairs. What
    ``microcall.grpc`` raises is its subclass of the same name, which is also a
    ``grpc.RpcError`` (this module does not import grpc, an optional extra), so
    ``except grpc.RpcError as e: e.code()`` keeps working on microcall's channels.

    A status that is an answer (NOT_FOUND, INVALID_ARGUMENT, ...) ends the call
    at once; a retriable one (UNAVAILABLE, RESOURCE_EXHAUSTED) is raised once
    retries are spent. A deadline that passes raises DeadlineExceeded instead.
    """

    def __init__(
        self,
        message: str,
        *,
        code: grpc.StatusCode,
        details: str,
        trailing_metadata: Sequence[tuple[str, str | bytes]] = (),
        initial_metadata: Sequence[tuple[str, str | bytes]] = (),
        attempts: Sequence[Attempt] = (),
    ) -> None:
        super().__init__(message, attempts=attempts)
        self._code = code
        self._details = details
        self._trailing_metadata = tuple(trailing_metadata)
        self._initial_metadata = tuple(initial_metadata)

    def code(self) -> grpc.StatusCode:
        """The status the call ended with."""
        return self._code

    def details(self) -> str:
        """The server's message for the status."""
        return self._details

    def trailing_metadata(self) -> tuple[tuple[str, str | bytes], ...]:
        """The trailers the call ended with, as ``(key, value)`` pairs."""
        return self._trailing_metadata

    def initial_metadata(self) -> tuple[tuple[str, str | bytes], ...]:
        """The headers the server sent before its status, when known."""
        return self._initial_metadata

    def debug_error_string(self) -> str:
        """What failed, with the attempts made (grpcio's name for its own diagnostic)."""
        return str(self)
