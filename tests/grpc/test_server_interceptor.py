"""The server interceptors: context restored, expired calls refused, load shed by priority."""

from __future__ import annotations

import asyncio
import gc
import logging
from collections.abc import AsyncIterator
from typing import Any

import grpc
import grpc.aio
import pytest
from grpc_health.v1 import health, health_pb2, health_pb2_grpc

import microcall
from microcall.errors import ConfigurationError
from microcall.examples_pb.recommendations_pb2 import (
    BookRecommendation,
    RecommendationRequest,
    RecommendationResponse,
)
from microcall.examples_pb.recommendations_pb2_grpc import (
    RecommendationsServicer,
    RecommendationsStub,
    add_RecommendationsServicer_to_server,
)
from microcall.grpc import (
    PUSHBACK_METADATA,
    AsyncChannel,
    AsyncServerInterceptor,
    ServerInterceptor,
)
from microcall.server import (
    ServerOptions,
    ServerStats,
    Shedding,
    StaticLimit,
    default_timeout,
    trust_all,
)
from microcall.server._grpc_gate import peer_address
from tests.grpc.conftest import Backend, BlockingBackend, ServeBlocking, ServeGrpc
from tests.server._waiting import eventually

REQUEST = RecommendationRequest(user_id=1, max_results=2)


def priority(value: str) -> list[tuple[str, str]]:
    return [("x-request-priority", value)]


async def test_the_handler_runs_in_the_callers_deadline_and_priority(
    serve_grpc: ServeGrpc,
) -> None:
    backend = Backend()
    protect = AsyncServerInterceptor(ServerOptions(default_timeout=2.5))
    target = await serve_grpc(backend, interceptors=[protect])
    async with grpc.aio.insecure_channel(target) as channel:
        stub = RecommendationsStub(channel)
        await stub.Recommend(REQUEST, timeout=0.8, metadata=priority("low"))
        await stub.Recommend(REQUEST)  # no deadline: the server's default applies
        await stub.Recommend(REQUEST, metadata=priority("high"))  # not trusted
    given, default, claimed = backend.calls
    assert given.deadline is not None
    assert 0.5 < given.deadline < 0.85
    assert given.priority == "low"
    assert default.remaining is None  # what grpc.aio reports without a deadline
    assert default.deadline is not None
    assert 2.0 < default.deadline <= 2.5
    assert claimed.priority == "normal"
    assert protect.stats.admitted == 3
    assert protect.stats.downgraded == 1


async def test_a_trusted_caller_keeps_its_high_priority(serve_grpc: ServeGrpc) -> None:
    backend = Backend()
    target = await serve_grpc(
        backend, interceptors=[AsyncServerInterceptor(ServerOptions(trust=trust_all))]
    )
    async with grpc.aio.insecure_channel(target) as channel:
        await RecommendationsStub(channel).Recommend(REQUEST, metadata=priority("high"))
    assert backend.calls[0].priority == "high"


async def test_an_expired_call_is_refused_before_its_handler_runs(serve_grpc: ServeGrpc) -> None:
    backend = Backend()
    protect = AsyncServerInterceptor(ServerOptions(floor=0.5))
    target = await serve_grpc(backend, interceptors=[protect])
    async with grpc.aio.insecure_channel(target) as channel:
        stub = RecommendationsStub(channel)
        with pytest.raises(grpc.aio.AioRpcError) as raised:
            await stub.Recommend(REQUEST, timeout=0.3)
        assert raised.value.code() is grpc.StatusCode.DEADLINE_EXCEEDED
        assert "nobody is waiting" in (raised.value.details() or "")
        with pytest.raises(grpc.aio.AioRpcError):
            async for _book in stub.RecommendStream(REQUEST, timeout=0.3):
                pass
    assert backend.calls == []
    assert protect.stats.expired == 2


class Holding(RecommendationsServicer):
    """Holds every call until ``release`` is set: the server stays full while a test looks."""

    def __init__(self) -> None:
        self.release = asyncio.Event()
        self.entered = 0

    async def Recommend(
        self, request: RecommendationRequest, context: grpc.aio.ServicerContext
    ) -> RecommendationResponse:
        self.entered += 1
        await self.release.wait()
        return RecommendationResponse()


async def test_shedding_refuses_low_priority_first(serve_grpc: ServeGrpc) -> None:
    holding = Holding()
    # A limit of 2: normal is guaranteed 1 slot (80% of 2, rounded down) and
    # borrows the other; high may overrun the borrowed one.
    options = ServerOptions(shedding=Shedding(limit=StaticLimit(limit=2)), trust=trust_all)
    protect = AsyncServerInterceptor(options)
    target = await serve_grpc(holding, interceptors=[protect])
    async with grpc.aio.insecure_channel(target) as channel:
        stub = RecommendationsStub(channel)
        held = asyncio.gather(
            *(stub.Recommend(REQUEST, metadata=priority("normal")) for _ in range(2))
        )
        await eventually(lambda: holding.entered == 2)
        refused = {}
        for level in ("low", "normal"):
            with pytest.raises(grpc.aio.AioRpcError) as raised:
                await stub.Recommend(REQUEST, metadata=priority(level))
            refused[level] = raised.value
        high = asyncio.ensure_future(stub.Recommend(REQUEST, metadata=priority("high")))
        await eventually(lambda: holding.entered == 3)
        holding.release.set()
        await asyncio.gather(held, high)
    for error in refused.values():
        assert error.code() is grpc.StatusCode.RESOURCE_EXHAUSTED
        assert dict(error.trailing_metadata() or ())[PUSHBACK_METADATA] == "1000"
    assert protect.stats.shed_low == 1
    assert protect.stats.shed_normal == 1
    assert protect.stats.shed_high == 0
    assert protect.limiter is not None
    assert protect.limiter.inflight == 0


async def test_health_checks_are_never_shed(serve_grpc: ServeGrpc) -> None:
    holding = Holding()
    options = ServerOptions(shedding=Shedding(limit=StaticLimit(limit=1)))
    protect = AsyncServerInterceptor(options)
    server = grpc.aio.server(interceptors=[protect])
    add_RecommendationsServicer_to_server(holding, server)
    checks = health.aio.HealthServicer()
    health_pb2_grpc.add_HealthServicer_to_server(checks, server)
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    try:
        await checks.set("", health_pb2.HealthCheckResponse.SERVING)
        async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
            held = asyncio.ensure_future(RecommendationsStub(channel).Recommend(REQUEST))
            await eventually(lambda: holding.entered == 1)
            answer = await health_pb2_grpc.HealthStub(channel).Check(
                health_pb2.HealthCheckRequest(service="")
            )
            holding.release.set()
            await held
        assert answer.status == health_pb2.HealthCheckResponse.SERVING
    finally:
        await server.stop(None)


class Slow(RecommendationsServicer):
    """A method with its own default deadline, and one that runs past any deadline."""

    def __init__(self) -> None:
        self.deadlines: list[float] = []

    @default_timeout(0.4)
    async def Recommend(
        self, request: RecommendationRequest, context: grpc.aio.ServicerContext
    ) -> RecommendationResponse:
        deadline = microcall.current_deadline()
        assert deadline is not None
        self.deadlines.append(deadline.remaining())
        if request.user_id == 2:
            await asyncio.sleep(5)
        return RecommendationResponse()

    async def RecommendStream(
        self, request: RecommendationRequest, context: grpc.aio.ServicerContext
    ) -> AsyncIterator[BookRecommendation]:
        deadline = microcall.current_deadline()
        assert deadline is not None
        self.deadlines.append(deadline.remaining())
        yield BookRecommendation(id=1)


async def test_a_methods_default_timeout_and_cancellation_at_the_deadline(
    serve_grpc: ServeGrpc,
) -> None:
    slow = Slow()
    protect = AsyncServerInterceptor(ServerOptions(default_timeout=3.0, cancel_on_deadline=True))
    target = await serve_grpc(slow, interceptors=[protect])
    async with grpc.aio.insecure_channel(target) as channel:
        stub = RecommendationsStub(channel)
        await stub.Recommend(REQUEST)
        [book async for book in stub.RecommendStream(REQUEST)]
        with pytest.raises(grpc.aio.AioRpcError) as raised:
            await stub.Recommend(RecommendationRequest(user_id=2))
    assert raised.value.code() is grpc.StatusCode.DEADLINE_EXCEEDED
    own, stream, _ = slow.deadlines
    assert own <= 0.4  # the method's @default_timeout
    assert 2.5 < stream <= 3.0  # the server's default
    assert protect.stats.cancelled == 1


async def test_malformed_priority_is_ignored_or_refused_in_strict_mode(
    serve_grpc: ServeGrpc,
) -> None:
    lenient = AsyncServerInterceptor()
    strict = AsyncServerInterceptor(ServerOptions(strict=True))
    backend = Backend()
    lenient_target = await serve_grpc(backend, interceptors=[lenient])
    strict_target = await serve_grpc(Backend(), interceptors=[strict])
    async with grpc.aio.insecure_channel(lenient_target) as channel:
        await RecommendationsStub(channel).Recommend(REQUEST, metadata=priority("urgent!"))
    async with grpc.aio.insecure_channel(strict_target) as channel:
        with pytest.raises(grpc.aio.AioRpcError) as raised:
            await RecommendationsStub(channel).Recommend(REQUEST, metadata=priority("urgent!"))
    assert backend.calls[0].priority == "normal"
    assert lenient.stats.malformed_priority == 1
    assert raised.value.code() is grpc.StatusCode.INVALID_ARGUMENT
    assert strict.stats.rejected_malformed == 1


def test_the_blocking_interceptor_restores_the_context_and_refuses_expired_calls(
    serve_blocking_grpc: ServeBlocking,
) -> None:
    backend = BlockingBackend()
    protect = ServerInterceptor(ServerOptions(default_timeout=2.0, floor=0.3))
    target = serve_blocking_grpc(backend, interceptors=[protect])
    with grpc.insecure_channel(target) as channel:
        stub = RecommendationsStub(channel)
        stub.Recommend(REQUEST, timeout=0.9, metadata=priority("low"))
        stub.Recommend(REQUEST)
        assert [book.id for book in stub.RecommendStream(REQUEST, metadata=priority("low"))] == [
            0,
            1,
        ]
        with pytest.raises(grpc.RpcError) as raised:
            stub.Recommend(REQUEST, timeout=0.2)
    assert raised.value.code() is grpc.StatusCode.DEADLINE_EXCEEDED  # type: ignore[attr-defined]
    given, default, streamed = backend.calls
    assert given.deadline is not None
    assert 0.6 < given.deadline < 0.95
    assert given.priority == "low"
    assert default.remaining is not None
    assert default.remaining > 1e9  # grpcio's "no deadline"
    assert default.deadline is not None
    assert 1.5 < default.deadline <= 2.0
    assert streamed.priority == "low"
    assert protect.stats.expired == 1
    assert protect.stats.admitted == 3


def test_the_blocking_interceptor_cannot_cancel_threads() -> None:
    with pytest.raises(ConfigurationError):
        ServerInterceptor(ServerOptions(cancel_on_deadline=True))


@pytest.mark.parametrize(
    ("peer", "address"),
    [
        ("ipv4:10.1.2.3:5000", "10.1.2.3"),
        ("ipv6:[::1]:5000", "::1"),
        ("ipv6:%5B::1%5D:5000", "::1"),
        ("unix:/tmp/socket", None),
        ("", None),
    ],
)
def test_peer_addresses(peer: str, address: Any) -> None:
    assert peer_address(peer) == address


class _Unimplemented(RecommendationsServicer):
    """Implements Recommend only: RecommendStream stays as grpcio-tools generated it."""

    async def Recommend(self, request: Any, context: Any) -> RecommendationResponse:
        return RecommendationResponse()


async def test_an_unimplemented_method_answers_unimplemented_without_a_warning(
    serve_grpc: ServeGrpc, caplog: pytest.LogCaptureFixture
) -> None:
    stats = ServerStats()
    caplog.set_level(logging.WARNING, logger="microcall")
    target = await serve_grpc(_Unimplemented(), interceptors=[AsyncServerInterceptor(stats=stats)])
    async with grpc.aio.insecure_channel(target) as channel:
        stub = RecommendationsStub(channel)
        await stub.Recommend(REQUEST)
        with pytest.raises(grpc.aio.AioRpcError) as raised:
            async for _ in stub.RecommendStream(REQUEST):
                pass
    assert raised.value.code() is grpc.StatusCode.UNIMPLEMENTED
    assert [r.getMessage() for r in caplog.records if r.name == "microcall"] == []
    assert stats.snapshot()["admitted"] == 1  # the implemented call only


def test_an_unimplemented_method_on_a_blocking_server_is_no_failure(
    serve_blocking_grpc: ServeBlocking,
) -> None:
    stats = ServerStats()
    target = serve_blocking_grpc(
        RecommendationsServicer(), interceptors=[ServerInterceptor(stats=stats)]
    )
    with grpc.insecure_channel(target) as channel, pytest.raises(grpc.RpcError) as raised:
        RecommendationsStub(channel).Recommend(REQUEST)
    assert raised.value.code() is grpc.StatusCode.UNIMPLEMENTED  # type: ignore[attr-defined]
    assert stats.snapshot()["admitted"] == 0  # nothing to admit: grpc answers for it


class EndlessFeed(RecommendationsServicer):
    def __init__(self) -> None:
        self.stopped = 0

    async def RecommendStream(
        self, request: RecommendationRequest, context: Any
    ) -> AsyncIterator[BookRecommendation]:
        number = 0
        try:
            while True:
                number += 1
                yield BookRecommendation(id=number, title="t" * 1000)
        finally:
            self.stopped += 1


async def test_a_response_stream_cancelled_mid_way_ends_quietly_and_frees_its_slot(
    serve_grpc: ServeGrpc,
) -> None:
    """asyncio closes the protected stream later, in a context of its own: no error from it.

    (Restoring the handler's deadline and priority there failed: "Token was
    created in a different Context", logged as a task exception, per stream.)
    """
    loop = asyncio.get_running_loop()
    errors: list[object] = []
    loop.set_exception_handler(lambda _, context: errors.append(context.get("exception")))
    protect = AsyncServerInterceptor(ServerOptions(shedding=Shedding(limit=StaticLimit(limit=1))))
    limiter = protect.limiter
    assert limiter is not None
    feed = EndlessFeed()
    target = await serve_grpc(feed, interceptors=[protect])
    try:
        async with AsyncChannel(target) as channel:
            stub = RecommendationsStub(channel)
            for _ in range(3):  # one slot: each stream must have given it back
                call = stub.RecommendStream(REQUEST)
                for _ in range(3):
                    await call.read()
                call.cancel()
                await eventually(lambda: limiter.inflight == 0)
            await eventually(lambda: feed.stopped == 3)
            gc.collect()
            await asyncio.sleep(0.05)
    finally:
        loop.set_exception_handler(None)
    assert errors == []
