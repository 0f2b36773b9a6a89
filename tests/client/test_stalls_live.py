"""A client that stalls does not blame its replicas: real servers on 127.0.0.1.

The replicas are werkzeug servers in threads of their own, so they keep
answering while the test holds the client's event loop; the answers wait
unread in the sockets, as they would through a long garbage collection or a
container throttled by its CPU quota.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Iterable
from typing import Any

import microcall
from tests.server.conftest import ServeWSGI, serve_wsgi

__all__ = ["serve_wsgi"]

STALL = 0.5


def ok(environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
    start_response("200 OK", [("Content-Type", "text/plain")])
    return [b"ok"]


async def test_a_stall_of_the_client_is_not_read_as_its_replicas_latency(
    serve_wsgi: ServeWSGI,
) -> None:
    bases = [serve_wsgi(ok) for _ in range(3)]
    async with microcall.AsyncClient(bases) as client:
        for _ in range(30):  # every replica measured
            await client.get("/book")
        calls = [asyncio.ensure_future(client.get("/book")) for _ in range(6)]
        for _ in range(5):
            await asyncio.sleep(0)  # the requests go out
        time.sleep(STALL)  # noqa: ASYNC251  # the client stops (the point); the replicas answer
        responses = await asyncio.gather(*calls)

        # The attempts took the stall as it was: the caller sees it.
        assert max(r.attempts[-1].duration for r in responses) >= STALL * 0.9
        # The balancer did not: no replica's estimate jumped to the stall.
        replicas = client.replicas
        assert replicas is not None
        now = time.monotonic()
        for endpoint in replicas.balancer.endpoints:
            estimate = endpoint.stats.latency(now)
            assert estimate is not None
            assert estimate < STALL / 2
