"""Client- and bidirectional streams through both channels and both interceptors.

The bookstore proto has no such methods, so these use a small generic
service on raw bytes: ``Collect`` joins a stream of requests into one reply,
``Chat`` answers each request as it arrives.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Iterator
from concurrent import futures
from typing import Any

import grpc
import grpc.aio

import microcall
from microcall.examples_pb.recommendations_pb2 import RecommendationRequest
from microcall.examples_pb.recommendations_pb2_grpc import RecommendationsStub
from microcall.grpc import AsyncChannel, AsyncServerInterceptor, Channel, ServerInterceptor
from tests._observers import CallEnds
from tests.grpc.conftest import Backend, BlockingBackend, ServeBlocking, ServeGrpc
from tests.server._waiting import eventually

REQUEST = RecommendationRequest(user_id=1, max_results=3)


def _seen() -> bytes:
    deadline = microcall.current_deadline()
    priority = microcall.current_priority()
    # Under the 2 s the callers give: grpc rounds the remaining time up a
    # few milliseconds, and the server's default (10 s) would show as "long".
    left = "none" if deadline is None else ("short" if deadline.remaining() < 2.1 else "long")
    return f"{priority}/{left}".encode()


class AsyncChat:
    @staticmethod
    async def collect(requests: AsyncIterator[bytes], context: Any) -> bytes:
        parts = [part async for part in requests]
        return b"+".join(parts) + b" " + _seen()

    @staticmethod
    async def chat(requests: AsyncIterator[bytes], context: Any) -> AsyncIterator[bytes]:
        async for part in requests:
            yield part.upper() + b" " + _seen()


class BlockingChat:
    @staticmethod
    def collect(requests: Iterator[bytes], context: Any) -> bytes:
        return b"+".join(requests) + b" " + _seen()

    @staticmethod
    def chat(requests: Iterator[bytes], context: Any) -> Iterator[bytes]:
        for part in requests:
            yield part.upper() + b" " + _seen()


def handlers(service: Any) -> grpc.GenericRpcHandler:
    return grpc.method_handlers_generic_handler(
        "test.Chat",
        {
            "Collect": grpc.stream_unary_rpc_method_handler(service.collect),
            "Chat": grpc.stream_stream_rpc_method_handler(service.chat),
        },
    )


async def parts() -> AsyncIterator[bytes]:
    for part in (b"a", b"b", b"c"):
        yield part


async def test_client_and_bidirectional_streams_on_grpc_aio() -> None:
    protect = AsyncServerInterceptor()
    server = grpc.aio.server(interceptors=[protect])
    server.add_generic_rpc_handlers((handlers(AsyncChat),))
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    try:
        async with AsyncChannel(f"127.0.0.1:{port}") as channel:
            collect = channel.stream_unary("/test.Chat/Collect")
            chat = channel.stream_stream("/test.Chat/Chat")
            with microcall.deadline(2.0), microcall.priority("low"):
                joined = await collect(parts())
                answers = [answer async for answer in chat(parts())]
                call = chat()
                await call.write(b"x")
                first = await call.read()
                await call.done_writing()
                assert await call.read() is grpc.aio.EOF
    finally:
        await server.stop(None)
    assert joined == b"a+b+c low/short"
    assert answers == [b"A low/short", b"B low/short", b"C low/short"]
    assert first == b"X low/short"
    assert [a.code for a in call.attempts] == ["OK"]
    assert protect.stats.admitted == 3


def test_client_and_bidirectional_streams_on_the_blocking_api() -> None:
    protect = ServerInterceptor()
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=4), interceptors=[protect])
    server.add_generic_rpc_handlers((handlers(BlockingChat),))
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    try:
        with Channel(f"127.0.0.1:{port}") as channel:
            collect = channel.stream_unary("/test.Chat/Collect")
            chat = channel.stream_stream("/test.Chat/Chat")
            with microcall.deadline(2.0), microcall.priority("low"):
                joined = collect(iter([b"a", b"b"]))
                answer, call = collect.with_call(iter([b"c"]))
                later = collect.future(iter([b"d"]))
                # Its own longer timeout is capped by the context's, as any call's.
                capped = collect.future(iter([b"e"]), timeout=30)
                answers = list(chat(iter([b"a", b"b"])))
            assert later.result(timeout=5) == b"d low/short"
            assert capped.result(timeout=5) == b"e low/short"
    finally:
        server.stop(None).wait(10)
    assert joined == b"a+b low/short"
    assert answer == b"c low/short"
    assert call.code() is grpc.StatusCode.OK
    assert answers == [b"A low/short", b"B low/short"]
    assert protect.stats.admitted == 5


def all_cancelled(observer: CallEnds) -> bool:
    """Every call ended as cancelled (the caller left), none as a success."""
    return all(
        isinstance(error, asyncio.CancelledError | futures.CancelledError)
        for error in observer.errors
    )


async def test_a_response_stream_left_after_its_first_message_ends_its_call(
    serve_grpc: ServeGrpc,
) -> None:
    """A `break` out of `async for`: the targets' outstanding calls and the observers' calls end."""
    targets = [await serve_grpc(Backend()) for _ in range(2)]
    observer = CallEnds()
    async with AsyncChannel(targets, observers=[observer]) as channel:
        stub = RecommendationsStub(channel)
        for _ in range(6):
            async for _first in stub.RecommendStream(REQUEST):
                break
        await eventually(lambda: len(observer.errors) == 6)
        assert [endpoint.stats.outstanding for endpoint in channel.targets.endpoints] == [0, 0]
    assert all_cancelled(observer)


def test_a_blocking_response_stream_left_after_its_first_message_ends_its_call(
    serve_blocking_grpc: ServeBlocking,
) -> None:
    targets = [serve_blocking_grpc(BlockingBackend()) for _ in range(2)]
    observer = CallEnds()
    with Channel(targets, observers=[observer]) as channel:
        stub = RecommendationsStub(channel)
        for _ in range(6):
            for _first in stub.RecommendStream(REQUEST):
                break
        assert len(observer.errors) == 6  # at once: the stream is dropped as the loop is left
        assert [endpoint.stats.outstanding for endpoint in channel.targets.endpoints] == [0, 0]
    assert all_cancelled(observer)
