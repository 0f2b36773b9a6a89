"""A scripted service for cache tests: replies chosen per request, every request recorded."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from email.utils import formatdate
from typing import Any

from microcall import AsyncClient
from microcall._request import Request
from microcall.cache import CachePolicy, MemoryBackend, ResponseCache
from microcall.cache._backend import CacheBackend
from microcall.testing import FakeClock, MockTransport, Reply

# An ordinary wall-clock time, so HTTP dates in the tests look like real ones.
EPOCH = 1_700_000_000.0


def http_date(seconds: float) -> str:
    return formatdate(seconds, usegmt=True)


class Service:
    """What the client talks to: ``reply(request) -> Reply``, changeable mid-test."""

    def __init__(self, reply: Callable[[Request], Reply] | Reply) -> None:
        self.reply = reply
        self.transport = MockTransport(self._answer)

    def _answer(self, request: Request) -> Reply:
        return self.reply(request) if callable(self.reply) else self.reply

    @property
    def count(self) -> int:
        return len(self.transport.sent)

    def last_headers(self) -> Mapping[str, str]:
        return self.transport.sent[-1].headers


def make_client(
    service: Service,
    *,
    clock: FakeClock | None = None,
    policy: CachePolicy | None = None,
    backend: CacheBackend | None = None,
    namespace: str = "microcall",
    **options: Any,
) -> tuple[AsyncClient, ResponseCache, FakeClock]:
    """A client of ``service`` with a cache on a fake clock (a memory backend unless given)."""
    clock = clock or FakeClock(EPOCH)
    cache = ResponseCache(
        backend or MemoryBackend(timer=clock.now), policy, clock=clock, namespace=namespace
    )
    client = AsyncClient("http://svc:8080", transport=service.transport, cache=cache, **options)
    return client, cache, clock
