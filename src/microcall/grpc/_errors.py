"""The errors a gRPC call raises: microcall's, and grpc.RpcError as grpcio's are.

Code written against grpcio catches ``grpc.RpcError`` and asks ``e.code()``
and ``e.details()``; the generated stub keeps its shape on microcall's
channels, so its errors must too. Each class here is microcall's error of the
same name (``microcall.errors``, which does not import grpc) and a
``grpc.RpcError`` answering what grpc.aio's ``AioRpcError`` answers, with
the status grpc itself gives that failure:

=========================  ==================  =========================
class                      ``code()``          ``details()``
=========================  ==================  =========================
GrpcStatusError            the server's        the server's
DeadlineExceeded           DEADLINE_EXCEEDED   ``Deadline Exceeded``
AttemptTimeout             DEADLINE_EXCEEDED   ``Deadline Exceeded``
CircuitOpen                UNAVAILABLE         the message
=========================  ==================  =========================

The class names are the same as their bases' on purpose: metrics and spans
label an error by its class name, and that must not change with the channel.
"""

from __future__ import annotations

import asyncio
from concurrent import futures
from typing import ClassVar

import grpc

from microcall import errors

# grpcio's own texts: for a deadline it enforced, and for a call its caller cancelled.
DEADLINE_DETAILS = "Deadline Exceeded"
CANCELLED_DETAILS = "Locally cancelled by application!"


# grpc's typing stubs type trailing metadata as their own _Metadatum; grpcio
# itself returns tuples of (key, value), as these classes do.
class GrpcStatusError(errors.GrpcStatusError, grpc.RpcError):  # type: ignore[misc]
    """A gRPC status other than OK: microcall's GrpcStatusError, and a grpc.RpcError."""


class _LocalStatus(grpc.RpcError):
    """A failure grpc would report with a status of its own: ``code()`` and friends.

    When the status came from the server (a handler that aborted with
    DEADLINE_EXCEEDED, its own details and trailers), :meth:`answered` keeps
    what it sent, and ``details()`` and ``trailing_metadata()`` return it.
    """

    status: ClassVar[grpc.StatusCode]
    _sent: tuple[str, tuple[tuple[str, str | bytes], ...]] | None = None

    def answered(self, details: str, trailing: tuple[tuple[str, str | bytes], ...]) -> None:
        """The status's details and trailing metadata, as the server (or grpc) gave them."""
        self._sent = (details, trailing)

    def code(self) -> grpc.StatusCode:
        """The status grpc gives this failure."""
        return self.status

    def details(self) -> str:
        return self._sent[0] if self._sent and self._sent[0] else self._local_details()

    def _local_details(self) -> str:
        return str(self)

    def trailing_metadata(self) -> tuple[tuple[str, str | bytes], ...]:  # type: ignore[override]
        return self._sent[1] if self._sent else ()

    def initial_metadata(self) -> tuple[tuple[str, str | bytes], ...]:
        return ()

    def debug_error_string(self) -> str:
        return str(self)


class DeadlineExceeded(_LocalStatus, errors.DeadlineExceeded):
    """The call's deadline passed (or too little was left to send it): DEADLINE_EXCEEDED."""

    status = grpc.StatusCode.DEADLINE_EXCEEDED

    def _local_details(self) -> str:
        return DEADLINE_DETAILS


class AttemptTimeout(_LocalStatus, errors.AttemptTimeout):
    """The last attempt ran out of its own time limit: DEADLINE_EXCEEDED."""

    status = grpc.StatusCode.DEADLINE_EXCEEDED

    def _local_details(self) -> str:
        return DEADLINE_DETAILS


class CircuitOpen(_LocalStatus, errors.CircuitOpen):
    """The target's breaker is open, the call was not sent: UNAVAILABLE."""

    status = grpc.StatusCode.UNAVAILABLE


def details_of(error: BaseException | None) -> str:
    """The details a call that ended with ``error`` reports, as the error itself does."""
    if error is None:
        return ""
    details = getattr(error, "details", None)
    return str(details()) if callable(details) else str(error)


def code_of(error: BaseException | None) -> grpc.StatusCode:
    """The status a call that ended with ``error`` reports (OK for none), as grpc's would."""
    if error is None:
        return grpc.StatusCode.OK
    if isinstance(error, grpc.RpcError) and callable(code := getattr(error, "code", None)):
        return code()  # type: ignore[no-any-return]
    if isinstance(error, asyncio.CancelledError | futures.CancelledError):
        return grpc.StatusCode.CANCELLED
    return grpc.StatusCode.UNKNOWN
