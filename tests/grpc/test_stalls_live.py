"""An AsyncChannel that stalls does not blame its targets: real grpc servers on 127.0.0.1.

The targets are blocking grpc servers with threads of their own, so they
keep answering while the test holds the client's event loop; the answers
wait in grpc's buffers until the loop runs again, as they would through a
long garbage collection or a container throttled by its CPU quota.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any, cast

from microcall.examples_pb.recommendations_pb2 import RecommendationRequest
from microcall.examples_pb.recommendations_pb2_grpc import RecommendationsStub
from microcall.grpc import AsyncChannel, Channel, UnaryUnaryCall
from tests.grpc.conftest import BlockingBackend, ServeBlocking

STALL = 0.5


async def _call(stub: RecommendationsStub) -> UnaryUnaryCall[Any, Any]:
    call = cast(UnaryUnaryCall[Any, Any], stub.Recommend(RecommendationRequest(max_results=1)))
    await call
    return call


async def test_a_stall_of_the_client_is_not_read_as_its_targets_latency(
    serve_blocking_grpc: ServeBlocking,
) -> None:
    targets = [serve_blocking_grpc(BlockingBackend()) for _ in range(3)]
    async with AsyncChannel(targets) as channel:
        stub = RecommendationsStub(channel)
        for _ in range(30):  # every target measured
            await _call(stub)
        calls = [asyncio.ensure_future(_call(stub)) for _ in range(6)]
        for _ in range(5):
            await asyncio.sleep(0)  # the calls go out
        time.sleep(STALL)  # noqa: ASYNC251  # the client stops (the point); the targets answer
        done = await asyncio.gather(*calls)

        # The attempts took the stall as it was: the caller sees it.
        assert max(call.attempts[-1].duration for call in done) >= STALL * 0.9
        # The balancer did not: no target's estimate jumped to the stall.
        now = time.monotonic()
        for endpoint in channel.targets.endpoints:
            estimate = endpoint.stats.latency(now)
            assert estimate is not None
            assert estimate < STALL / 2


def test_a_blocking_channel_has_no_loop_to_watch(serve_blocking_grpc: ServeBlocking) -> None:
    targets = [serve_blocking_grpc(BlockingBackend()) for _ in range(2)]
    with Channel(targets) as channel:
        stub = RecommendationsStub(channel)
        stub.Recommend(RecommendationRequest(max_results=1))  # no running loop: must not need one
        assert (
            sum(
                endpoint.stats.latency(time.monotonic()) is not None
                for endpoint in channel.targets.endpoints
            )
            == 1
        )
