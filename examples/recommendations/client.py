"""A client of the Recommendations service: the generated stub over microcall's AsyncChannel.

Start the server, then run (from the repository root)::

    python -m examples.recommendations.client --target 127.0.0.1:50051

It checks the server's health, then asks for recommendations with a
deadline and a priority taken from microcall's context, hedging the unary
call (``Recommend`` is declared free of side effects in the proto, so the
channel may send it twice) and streaming the same books one by one.
"""

from __future__ import annotations

import argparse
import asyncio

from grpc_health.v1 import health_pb2, health_pb2_grpc

import microcall
from microcall.examples_pb.recommendations_pb2 import SCIENCE_FICTION, RecommendationRequest
from microcall.examples_pb.recommendations_pb2_grpc import RecommendationsStub
from microcall.grpc import AsyncChannel, ChannelOptions


async def run(targets: list[str], user_id: int) -> None:
    options = ChannelOptions(timeout=2.0, strategy=microcall.hedged())
    async with AsyncChannel(targets, options) as channel:
        checks = health_pb2_grpc.HealthStub(channel)
        status = await checks.Check(
            health_pb2.HealthCheckRequest(service="bookstore.Recommendations")
        )
        print("health:", health_pb2.HealthCheckResponse.ServingStatus.Name(status.status))

        stub = RecommendationsStub(channel)
        request = RecommendationRequest(user_id=user_id, category=SCIENCE_FICTION, max_results=3)
        with microcall.deadline(0.5), microcall.priority("high"):
            reply = await stub.Recommend(request)
            for book in reply.recommendations:
                print(f"recommended: {book.title} (#{book.id})")
            async for book in stub.RecommendStream(request):
                print(f"streamed: {book.title}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--target", action="append", help="host:port of a replica (repeat for several)"
    )
    parser.add_argument("--user-id", type=int, default=1)
    arguments = parser.parse_args()
    asyncio.run(run(arguments.target or ["127.0.0.1:50051"], arguments.user_id))


if __name__ == "__main__":
    main()
