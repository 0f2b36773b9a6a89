"""Test doubles for code that uses microcall: a fake clock and a scripted transport.

Test your own retry, hedging and deadline handling without a server::

    from microcall import AsyncClient, retry
    from microcall.testing import MockTransport, Reply

    async def test_retries_then_succeeds():
        transport = MockTransport([Reply(503), Reply(200, json={"ok": True})])
        async with AsyncClient(
            "http://svc", transport=transport, strategy=retry(3), priority="low"
        ) as client:
            response = await client.get("/thing")
        assert response.json() == {"ok": True}
        assert [a.status for a in response.attempts] == [503, 200]
        assert transport.sent[0].headers["X-Request-Priority"] == "low"

A ``Reply`` can also be a failure (``Reply(error=ConnectError)``) or slow
(``Reply(200, delay=0.05)``): a delay longer than the attempt's timeout ends
in AttemptTimeout, as a real slow server would. For logic that takes an
injected clock (strategies, and the breaker and budget), ``FakeClock`` moves
time by hand so tests never sleep.
"""

from __future__ import annotations

import asyncio
import json as _json
from collections.abc import Callable, Iterable, Mapping
from dataclasses import KW_ONLY, dataclass, field
from typing import Any

from multidict import CIMultiDict, CIMultiDictProxy
from yarl import URL

from microcall._request import Request
from microcall._response import Response
from microcall.errors import AttemptTimeout, TransportError, UsageError

__all__ = ["FakeClock", "MockTransport", "Reply", "SentRequest"]


class FakeClock:
    """A clock that moves only when told to: ``clock.advance(0.5)``."""

    def __init__(self, start: float = 1000.0) -> None:
        self._now = start

    def now(self) -> float:
        return self._now

    def advance(self, seconds: float) -> None:
        if seconds < 0:
            raise ValueError("a clock cannot go backwards")
        self._now += seconds


@dataclass(frozen=True, slots=True)
class Reply:
    """One scripted outcome: a response, or ``error`` (a TransportError class or instance)."""

    status: int = 200
    _: KW_ONLY
    headers: Mapping[str, str] = field(default_factory=dict)
    content: bytes = b""
    json: Any = None
    delay: float = 0.0
    error: type[TransportError] | TransportError | None = None


@dataclass(frozen=True, slots=True)
class SentRequest:
    """What the transport was asked to send, as the engine built it."""

    request: Request
    headers: Mapping[str, str]
    timeout: float
    url: URL


Handler = Callable[[Request], Reply]


class MockTransport:
    """A transport that answers from a script (a list of Replies, in order) or a handler.

    ``sent`` records every attempt; ``cancelled`` counts attempts stopped
    mid-delay (hedges that lost, calls abandoned).
    """

    def __init__(self, script: Iterable[Reply] | Handler) -> None:
        if callable(script):
            self._handler: Handler | None = script
            self._script: list[Reply] = []
        else:
            self._handler = None
            self._script = list(script)
        self.sent: list[SentRequest] = []
        self.cancelled = 0

    def _next(self, request: Request) -> Reply:
        if self._handler is not None:
            return self._handler(request)
        if not self._script:
            raise UsageError(f"MockTransport's script is used up ({len(self.sent)} attempts sent)")
        return self._script.pop(0)

    async def send(
        self, request: Request, url: URL, headers: Mapping[str, str], timeout: float
    ) -> Response:
        self.sent.append(SentRequest(request, dict(headers), timeout, url))
        reply = self._next(request)
        if reply.delay:
            try:
                await asyncio.sleep(min(reply.delay, timeout))
            except asyncio.CancelledError:
                self.cancelled += 1
                raise
            if reply.delay > timeout:
                raise AttemptTimeout(
                    f"no response from {request.endpoint} in time", request=request
                )
        if reply.error is not None:
            error = reply.error
            if isinstance(error, type):
                error = error(f"scripted {error.__name__} from {request.endpoint}")
            error.request = request
            raise error
        body = reply.content
        headers_out = CIMultiDict(reply.headers)
        if reply.json is not None:
            body = _json.dumps(reply.json).encode()
            headers_out.setdefault("Content-Type", "application/json")
        return Response(
            status_code=reply.status,
            headers=CIMultiDictProxy(headers_out),
            content=body,
            url=url,
            request=request,
        )

    async def aclose(self) -> None:
        pass
