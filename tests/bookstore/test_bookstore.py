"""The bookstore end to end: real processes on 127.0.0.1, faults injected through their switches.

The tests run in file order against one stack and the later ones break it
(a replica killed, the Catalog stopped), so each leaves what the next needs.
"""

from __future__ import annotations

import asyncio
import json
import re
import urllib.request
from typing import Any

import pytest

from microcall.demo.bookstore import books, scenario
from microcall.demo.bookstore.stack import Stack
from microcall.testing.otlp import OtlpCollector
from microcall.testing.services import ServiceGraph, http_get, inject, wait_until

pytestmark = pytest.mark.timeout(120)


def page(base: str, category: str, user: int = 1, headers: dict[str, str] | None = None) -> Any:
    request = urllib.request.Request(
        f"{base}/api/page?user={user}&category={category}", headers=headers or {}
    )
    with urllib.request.urlopen(request, timeout=5) as response:
        return json.loads(response.read())


def test_the_page_lists_books_and_the_path_of_its_calls(stack: Stack) -> None:
    status, body = http_get(stack.marketplace + "/?user=7&category=MYSTERY")
    assert status == 200
    text = body.decode()
    titles = [b.title for b in books.by_category(books.MYSTERY)]
    shown = [title for title in titles if title.replace("'", "&#39;") in text]
    assert len(shown) == 3
    assert 'id="call-path"' in text
    assert text.count('class="hop"') == 4  # Recommend, then three books from the Catalog
    assert re.search(r"first &rarr; 127\.0\.0\.1:\d+: OK", text)


@pytest.mark.parametrize(
    "query", ["user=abc", "user=-1", f"user={2**64}", "category=POETRY", "user=1&category=%00"]
)
def test_a_bad_query_is_a_400_not_a_failed_page(stack: Stack, query: str) -> None:
    status, body = http_get(f"{stack.marketplace}/api/page?{query}")
    assert status == 400, body


def test_the_deadline_shrinks_hop_by_hop(stack: Stack) -> None:
    # SELF_HELP is asked for here first, so the Catalog is called, not the cache.
    loaded = page(stack.marketplace, "SELF_HELP", headers={"X-Request-Timeout": "1.5"})
    assert loaded["deadline"] <= 1.5
    recommend, *details = loaded["hops"]
    assert recommend["service"] == "recommendations"
    # grpc-core rounds grpc-timeout up (10 ms steps between 1 and 10 s); the
    # channel gives it a value its round-up cannot lift past what is left.
    assert 0 < recommend["seen_deadline"] < loaded["deadline"]
    seen = [hop["seen_deadline"] for hop in details if hop["seen_deadline"] is not None]
    assert seen, details
    # The Catalog is called after Recommendations answered, by the Marketplace.
    assert all(0 < value < loaded["deadline"] for value in seen)


def test_one_trace_joins_every_hop(stack: Stack, collector: OtlpCollector) -> None:
    trace_id = "4bf92f3577b34da6a3ce929d0e0e4736"
    headers = {"traceparent": f"00-{trace_id}-00f067aa0ba902b7-01"}
    loaded = page(stack.marketplace, "SCIENCE_FICTION", user=2, headers=headers)
    assert any(hop["cache"] == "miss" for hop in loaded["hops"])

    def joined(spans: list[Any]) -> bool:
        ours = [span for span in spans if span.trace_id == trace_id]
        ids = {span.span_id for span in ours} | {"00f067aa0ba902b7"}  # the browser's
        # Every span hangs from another span of the same trace (processes
        # export in batches of their own, so a child may arrive first).
        orphans = [span for span in ours if span.parent_id not in ids]
        services = {span.service for span in ours}
        return not orphans and {"marketplace", "recommendations", "catalog"} <= services

    collector.wait_for(joined, timeout=15)
    spans = collector.trace(trace_id)
    names = {(span.service, span.name) for span in spans}
    assert ("recommendations", "bookstore.Recommendations/Recommend") in names
    assert any(service == "catalog" and "/books/" in name for service, name in names)


def _drive(stack: Stack, seconds: float, rate: float) -> dict[str, scenario.PhaseResult]:
    assert stack.plain is not None
    targets = {"microcall": stack.marketplace, "plain": stack.plain}
    results = asyncio.run(scenario.drive(targets, "test", seconds, rate))
    return {result.mode: result for result in results}


def test_a_slow_replica_leaves_the_page_fast_only_with_microcall(stack: Stack) -> None:
    _drive(stack, 1.0, 10.0)  # warm: connections open, a learned hedge delay
    inject(stack.admin("recommendations-1"), latency=scenario.SLOW_REPLICA_LATENCY)
    try:
        results = _drive(stack, 4.0, 10.0)
    finally:
        inject(stack.admin("recommendations-1"))
    hedged, plain = results["microcall"], results["plain"]
    assert hedged.errors == 0
    assert plain.errors == 0
    # Round robin sends half the pages to the slow replica: its p99 carries the fault.
    assert plain.percentile(0.99) >= scenario.SLOW_REPLICA_LATENCY

    # Hedging and balancing spare microcall's pages the fault. Counted, not
    # timed: on a loaded machine any page may be slow, but only the plain
    # client's pages wait for the slow replica as a rule.
    def waited(result: scenario.PhaseResult) -> int:
        return sum(sample.seconds >= scenario.SLOW_REPLICA_LATENCY for sample in result.samples)

    assert waited(plain) >= len(plain.samples) // 4
    assert waited(hedged) <= waited(plain) // 3


def test_a_dead_replica_is_routed_around_and_pages_keep_coming(stack: Stack) -> None:
    dead = stack.replicas[1]
    dead.kill()
    results = _drive(stack, 3.0, 10.0)
    assert results["microcall"].errors == 0
    assert results["plain"].errors > 0  # round robin keeps sending half the pages to it
    # The balancer prices a replica that failed out at once (a failure counts
    # as a second of latency); ejection or the breaker take it out as well
    # when it is tried often enough. Either way no page goes to it now.
    later = [page(stack.marketplace, "MYSTERY", user=n) for n in range(5)]
    assert all(loaded["error"] is None for loaded in later)
    for loaded in later:
        assert all(a["endpoint"] != dead.address for a in loaded["hops"][0]["attempts"])


def test_the_catalog_down_is_served_stale_from_the_cache(stack: Stack, graph: ServiceGraph) -> None:
    for user in range(12):  # every MYSTERY book in the Marketplace's cache
        page(stack.marketplace, "MYSTERY", user=user)
    stack.catalog.stop()
    wait_until(lambda: not _catalog_up(stack), 5, what="the Catalog stopped")
    asyncio.run(asyncio.sleep(1.2))  # past max-age=1: every entry stale
    loaded = page(stack.marketplace, "MYSTERY", user=3)
    assert loaded["error"] is None, loaded
    assert not loaded["degraded"], loaded
    caches = {hop["cache"] for hop in loaded["hops"][1:]}
    assert caches == {"stale"}, loaded["hops"]
    assert len(loaded["books"]) == 3
    plain = page(stack.plain, "MYSTERY", user=3) if stack.plain else None
    assert plain is not None
    assert plain["degraded"]


def _catalog_up(stack: Stack) -> bool:
    try:
        return http_get(stack.catalog.url + "/healthz", timeout=0.5)[0] == 200
    except OSError:
        return False
