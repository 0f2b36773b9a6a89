"""The Marketplace's calls: its clients of Recommendations and the Catalog, and a page's call path.

Two modes. ``resilient`` is microcall as it is meant to be used: a hedged
``AsyncChannel`` balanced over the Recommendations replicas with breakers
and outlier ejection, and a Catalog ``AsyncClient`` with retries, a breaker
and a response cache (Redis when ``REDIS_URL`` is set, memory otherwise)
that serves stale answers while the Catalog fails. ``plain`` is the naive
client people write first: one attempt, round robin, no breaker, no cache.
Both run under the deadline of the browser's request.
"""

from __future__ import annotations

import asyncio
import ipaddress
import time
from dataclasses import asdict, dataclass, field
from typing import Any

from pydantic import BaseModel

import microcall
from microcall.cache import CachePolicy, MemoryBackend, RedisBackend, ResponseCache
from microcall.examples_pb.recommendations_pb2 import BookCategory, RecommendationRequest
from microcall.examples_pb.recommendations_pb2_grpc import RecommendationsStub
from microcall.grpc import AsyncChannel, ChannelOptions, ObserverAdapter, TargetDiscovery
from microcall.observe.prometheus import ClientMetrics
from microcall.observe.tracing import ClientTracing
from microcall.testing.services import SEEN_DEADLINE_HEADER, SEEN_DEADLINE_METADATA

MODES = ("resilient", "plain")
# When the Marketplace sends a second copy of a Recommend call to another replica.
HEDGE_DELAY = 0.05
# How many books a page shows.
PAGE_SIZE = 3


class Book(BaseModel):
    """A book as the Catalog describes it (validated from its JSON)."""

    id: int
    title: str
    author: str
    year: int
    category: str
    price_cents: int


def resolve_targets(spec: str) -> list[str]:
    """``RECOMMENDATIONS_TARGETS``: a comma-separated ``host:port`` list, or one ``name:port``.

    The entries as given: a single name is looked up by the channel itself
    (see :func:`channel_targets`), again and again, not once here.
    """
    return [part.strip() for part in spec.split(",") if part.strip()]


def channel_targets(targets: list[str]) -> list[str] | TargetDiscovery:
    """What the Recommendations channel is given for ``targets``.

    One ``name:port`` (a Kubernetes headless Service, compose's service
    name) becomes DNS discovery: one target per address, looked up every 10
    seconds, so replicas added or replaced later are balanced over too. A
    list, or a single address, is used as it is.
    """
    if len(targets) == 1 and _is_name(targets[0]):
        return TargetDiscovery(target=targets[0])
    return targets


def _is_name(target: str) -> bool:
    host = target.rpartition(":")[0].strip("[]")
    try:
        ipaddress.ip_address(host)
    except ValueError:
        return bool(host)
    return False


@dataclass(slots=True)
class AttemptView:
    """One attempt of one call, as the page shows it."""

    kind: str
    endpoint: str
    ms: float
    outcome: str


@dataclass(slots=True)
class Hop:
    """One call a page made: to which service, its attempts, and the deadline the callee saw."""

    service: str
    call: str
    ms: float
    ok: bool
    attempts: list[AttemptView] = field(default_factory=list)
    seen_deadline: float | None = None
    cache: str | None = None
    error: str | None = None


@dataclass(slots=True)
class Page:
    """What one page load did: the books it shows and the path of its calls."""

    user: int
    category: str
    deadline: float | None
    books: list[dict[str, Any]] = field(default_factory=list)
    hops: list[Hop] = field(default_factory=list)
    ms: float = 0.0
    error: str | None = None
    degraded: bool = False

    def to_json(self) -> dict[str, Any]:
        """The page as JSON (``/api/page``)."""
        return asdict(self)


def _attempts(records: Any) -> list[AttemptView]:
    views = []
    for record in records or ():
        if not record.sent:
            outcome = f"not sent: {record.error}"
        elif record.cancelled:
            outcome = "cancelled"
        else:
            outcome = str(
                getattr(record, "code", None) or record.status or record.error or "no outcome"
            )
        views.append(
            AttemptView(
                str(record.kind), record.endpoint, round(record.duration * 1000, 1), outcome
            )
        )
    return views


class Calls:
    """The clients of one Marketplace, made in the event loop that uses them."""

    def __init__(
        self,
        mode: str,
        catalog_url: str,
        recommendation_targets: list[str],
        *,
        redis_url: str | None = None,
    ) -> None:
        if mode not in MODES:
            raise microcall.ConfigurationError(f"mode must be one of {MODES}, got {mode!r}")
        self.mode = mode
        self.metrics = ClientMetrics()
        tracing = ClientTracing()
        self.cache: ResponseCache | None = None
        if mode == "resilient":
            backend = RedisBackend(redis_url) if redis_url else MemoryBackend()
            self.cache = ResponseCache(backend, CachePolicy(stale_if_error=300))
            channel_options = ChannelOptions(
                timeout=2.0,
                # The bookstore's services speak plaintext gRPC to each other
                # (compose's network, a cluster's pod network or a mesh doing
                # the TLS); microcall would otherwise ask for TLS to any
                # target that is not on this machine.
                insecure=True,
                # A fixed delay rather than a learned one: it works from the first
                # page, before there is a latency distribution to learn from. Far
                # above a healthy call (a few ms), and the retry budget caps the
                # extra load if the whole service slows down.
                strategy=microcall.hedged(HEDGE_DELAY),
                breaker=microcall.CircuitBreakerConfig(),
            )
            self.catalog = microcall.AsyncClient(
                catalog_url,
                timeout=2.0,
                strategy=microcall.retry(2),
                breaker=microcall.CircuitBreakerConfig(),
                cache=self.cache,
                observers=[self.metrics, tracing],
            )
        else:
            channel_options = ChannelOptions(
                timeout=2.0,
                insecure=True,  # as above
                budget=None,
                ejection=None,
                balancer=microcall.BalancerConfig(mode="round_robin"),
            )
            self.catalog = microcall.AsyncClient(
                catalog_url,
                timeout=2.0,
                budget=None,
                ejection=None,
                observers=[self.metrics, tracing],
            )
        self.channel = AsyncChannel(
            channel_targets(recommendation_targets),
            channel_options,
            observers=[ObserverAdapter(self.metrics), ObserverAdapter(tracing)],
        )
        self.metrics.watch(self.channel.targets)
        self.recommendations = RecommendationsStub(self.channel)

    async def aclose(self) -> None:
        """Close both clients and the cache."""
        await self.channel.close()
        await self.catalog.aclose()
        if self.cache is not None:
            await self.cache.aclose()

    async def _recommend(self, page: Page, category: BookCategory.ValueType) -> list[int]:
        started = time.perf_counter()
        request = RecommendationRequest(user_id=page.user, category=category, max_results=PAGE_SIZE)
        # microcall's call object (the stub's type hints name grpc's): it lists the attempts.
        call: Any = self.recommendations.Recommend(request)
        hop = Hop("recommendations", "Recommend", 0.0, ok=False)
        page.hops.append(hop)
        try:
            reply = await call
        except microcall.CallError as error:
            hop.error = type(error).__name__
            hop.attempts = _attempts(error.attempts)
            raise
        finally:
            hop.ms = round((time.perf_counter() - started) * 1000, 1)
        hop.ok = True
        hop.attempts = _attempts(call.attempts)
        trailers = dict(await call.trailing_metadata() or ())
        seen = trailers.get(SEEN_DEADLINE_METADATA)
        hop.seen_deadline = float(seen) if seen else None
        return [book.id for book in reply.recommendations]

    async def _book(self, page: Page, book_id: int) -> dict[str, Any] | None:
        started = time.perf_counter()
        hop = Hop("catalog", f"GET /books/{book_id}", 0.0, ok=False)
        page.hops.append(hop)
        try:
            response = await self.catalog.get(
                f"/books/{book_id}", route="GET /books/{id}", response_model=Book
            )
        except microcall.CallError as error:
            hop.error = type(error).__name__
            hop.attempts = _attempts(error.attempts)
            return None
        finally:
            hop.ms = round((time.perf_counter() - started) * 1000, 1)
        hop.attempts = _attempts(response.attempts)
        hop.cache = str(response.cache_status) if response.cache_status is not None else None
        # A stored answer's header is what the Catalog saw for an earlier page.
        seen = None if response.from_cache else response.headers.get(SEEN_DEADLINE_HEADER)
        hop.seen_deadline = float(seen) if seen else None
        if response.status_code != 200:
            hop.error = f"HTTP {response.status_code}"
            return None
        hop.ok = True
        book: Book = response.parsed
        return book.model_dump()

    async def page(self, user: int, category: str) -> Page:
        """Load one page: recommendations first, then each book's details from the Catalog."""
        started = time.perf_counter()
        deadline = microcall.current_deadline()
        page = Page(user, category, round(deadline.remaining(), 4) if deadline else None)
        try:
            ids = await self._recommend(page, BookCategory.Value(category))
        except microcall.CallError as error:
            page.error = f"recommendations failed: {type(error).__name__}"
        else:
            details = await asyncio.gather(*(self._book(page, book_id) for book_id in ids))
            page.books = [book for book in details if book is not None]
            page.degraded = len(page.books) < len(ids)
        page.ms = round((time.perf_counter() - started) * 1000, 1)
        return page
