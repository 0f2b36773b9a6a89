"""The transport seam: the only thing the engine knows about the network."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Protocol

from yarl import URL

from microcall._request import Request
from microcall._response import Response


class Transport(Protocol):
    """Sends one attempt.

    ``send`` returns the fully read response, or raises one of microcall's
    TransportError subclasses (AttemptTimeout when ``timeout`` seconds pass).
    For a request with ``stream`` set it may return at the response's head
    instead: an ``AsyncStreamResponse`` whose ``BodySource`` reads the rest
    (``microcall._stream``); ``timeout`` then bounds the head only. A
    transport that ignores ``stream`` still serves streamed calls: its whole
    response is handed over as a stream from memory.
    It must stop all work, and close or release its connection, when the task
    running it is cancelled: that is how a losing hedge is stopped.
    ``url`` is where this attempt goes: ``request.url``, or the same path on
    the replica the balancer chose. When its host differs from
    ``request.url``'s (a replica found by DNS), the request keeps the name in
    its Host header and TLS server name. ``headers`` are the request's headers
    plus the per-attempt deadline and priority headers the engine adds.
    """

    async def send(
        self, request: Request, url: URL, headers: Mapping[str, str], timeout: float
    ) -> Response: ...

    async def aclose(self) -> None: ...
