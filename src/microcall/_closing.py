"""A call stopped by its client's closing: the cancellation that stops it, and what it ends with.

``aclose()`` cancels the tasks running the client's calls with the message
:data:`CLOSING`; the caller then gets ClientClosed, and so do the call's
observers (:func:`as_reported`), not the cancellation itself: a span and a
metric say what the caller saw.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence

from microcall._attempt import Attempt
from microcall._redact import safe_url
from microcall._request import Request
from microcall.errors import ClientClosed

CLOSING = "the client was closed"


def closed_in_flight(request: Request, attempts: Sequence[Attempt]) -> ClientClosed:
    """What a call stopped by its client's closing raises."""
    return ClientClosed(
        # Scheme, host, port and path only: a query or user-info may hold a credential.
        f"the client was closed while {request.method} {safe_url(request.url)} was in flight",
        request=request,
        attempts=attempts,
    )


def as_reported(
    stopped: BaseException, request: Request, attempts: Sequence[Attempt]
) -> BaseException:
    """``stopped`` as a call's observers hear of it: ClientClosed for the closing's cancellation."""
    if isinstance(stopped, asyncio.CancelledError) and stopped.args == (CLOSING,):
        return closed_in_flight(request, attempts)
    return stopped
