"""The errors of the HTTP/1.1 transport, and the one place they become microcall's.

Both ways of running an exchange, on the event loop (``h1``) and blocking
in the caller's thread (``_h1_direct``), raise the same low-level errors and
translate them here.
"""

from __future__ import annotations

import zlib

from microcall._attempt import mark_resent
from microcall._body import BodyFailed, body_error
from microcall._request import Request
from microcall.errors import (
    AttemptTimeout,
    ConnectError,
    ProtocolError,
    ReadError,
    RedirectError,
    TransportError,
)
from microcall.transports._h1_conn import ConnectionLost
from microcall.transports._h1_redirect import Redirected
from microcall.transports._h1_wire import TooLarge, WireError
from microcall.transports._proxy import ProxyFailed
from microcall.transports._settings import proxy_error, too_large


class ConnectFailed(Exception):
    """A connection could not be opened (refused, DNS, TLS handshake): the cause is chained."""


class Resent(Exception):
    """A failure of the resend on a fresh connection (the record says the request was resent)."""

    def __init__(self, error: Exception) -> None:
        super().__init__(str(error))
        self.error = error


class AtHop(Exception):
    """A failure on a redirect hop: ``error``, at the endpoint ``where`` (not the call's first)."""

    def __init__(self, error: Exception, where: str) -> None:
        super().__init__(str(error))
        self.error = error
        self.where = where


def map_error(exc: BaseException, request: Request, where: str | None = None) -> Exception | None:
    """The microcall exception for a failure of this transport; the single place they are translated.

    None means "not ours to translate" (a bug, say): the caller re-raises it as is.
    Messages name the endpoint, never the URL: it may carry credentials.
    ``where`` is the endpoint the attempt went to (a replica's, not the request's).
    """
    if isinstance(exc, AtHop):
        return map_error(exc.error, request, exc.where)
    if isinstance(exc, Resent):
        mapped = map_error(exc.error, request, where)
        if mapped is not None:
            mark_resent(mapped)
        return mapped
    where = request.endpoint if where is None else where
    if isinstance(exc, BodyFailed):
        return body_error(exc, request)
    error: TransportError
    if isinstance(exc, TimeoutError):  # the attempt's own guard
        error = AttemptTimeout(f"no response from {where} in time", request=request)
    elif isinstance(exc, ProxyFailed):
        return proxy_error(request, exc)
    elif isinstance(exc, ConnectFailed):
        cause = exc.__cause__
        error = ConnectError(f"cannot connect to {where}: {cause or exc}", request=request)
    elif isinstance(exc, ConnectionLost):
        if exc.received:
            error = ReadError(f"{where} closed the connection mid-response: {exc}", request=request)
        else:
            error = ReadError(f"{where} closed the connection before answering", request=request)
    elif isinstance(exc, WireError):
        error = ProtocolError(f"invalid HTTP from {where}: {exc}", request=request)
    elif isinstance(exc, TooLarge):
        how = f"declares {exc.declared} bytes" if exc.declared is not None else "sent more"
        return too_large(request, exc.cap, how)
    elif isinstance(exc, Redirected):
        return RedirectError(str(exc), request=request)
    elif isinstance(exc, (zlib.error, EOFError)):
        error = ProtocolError(f"invalid compressed body from {where}: {exc}", request=request)
    elif isinstance(exc, OSError):
        error = ReadError(f"connection to {where} failed: {exc}", request=request)
    else:
        return None
    return error
