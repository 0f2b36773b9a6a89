"""Fixtures for the gRPC tests: real grpc servers on 127.0.0.1:0 and a scripted Recommendations backend."""

from __future__ import annotations

import asyncio
import socket
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator, Sequence
from concurrent import futures
from dataclasses import dataclass, field
from typing import Any

import grpc
import grpc.aio
import pytest

import microcall
from microcall.examples_pb.recommendations_pb2 import (
    BookRecommendation,
    RecommendationRequest,
    RecommendationResponse,
)
from microcall.examples_pb.recommendations_pb2_grpc import (
    RecommendationsServicer,
    add_RecommendationsServicer_to_server,
)
from tests.server.conftest import serve_asgi  # noqa: F401  (uvicorn, for the cross-protocol chain)


@dataclass(frozen=True, slots=True)
class Step:
    """What the backend does for one call: wait ``delay``, then answer OK or ``code``."""

    delay: float = 0.0
    code: grpc.StatusCode | None = None
    details: str = ""
    trailing: tuple[tuple[str, str], ...] = ()
    messages: int | None = None  # streams: fail after this many messages


@dataclass(slots=True)
class Seen:
    """What one call carried, as its handler saw it."""

    remaining: float | None
    metadata: dict[str, Any]
    deadline: float | None  # microcall.current_deadline().remaining(), when set
    priority: str | None


@dataclass(slots=True)
class Backend(RecommendationsServicer):
    """A scripted backend: each call takes the next step of ``script`` (or answers at once)."""

    script: list[Step] = field(default_factory=list)
    calls: list[Seen] = field(default_factory=list)
    cancelled: int = 0
    finished: int = 0

    def _see(self, context: Any) -> Step:
        deadline = microcall.current_deadline()
        priority = microcall.current_priority()
        self.calls.append(
            Seen(
                remaining=context.time_remaining(),
                metadata=dict(context.invocation_metadata() or ()),
                deadline=None if deadline is None else deadline.remaining(),
                priority=None if priority is None else priority.value,
            )
        )
        return self.script.pop(0) if self.script else Step()

    async def Recommend(
        self, request: RecommendationRequest, context: grpc.aio.ServicerContext
    ) -> RecommendationResponse:
        step = self._see(context)
        number = len(self.calls)
        try:
            await asyncio.sleep(step.delay)
        except asyncio.CancelledError:
            self.cancelled += 1
            raise
        self.finished += 1
        if step.code is not None:
            await context.abort(step.code, step.details, step.trailing)
        return RecommendationResponse(
            recommendations=[BookRecommendation(id=number, title=f"call {number}")]
        )

    async def RecommendStream(
        self, request: RecommendationRequest, context: grpc.aio.ServicerContext
    ) -> AsyncIterator[BookRecommendation]:
        step = self._see(context)
        await asyncio.sleep(step.delay)
        for index in range(request.max_results):
            if step.messages is not None and index == step.messages and step.code is not None:
                await context.abort(step.code, step.details)
            yield BookRecommendation(id=index, title=f"book {index}")
        if step.code is not None and step.messages is None:
            await context.abort(step.code, step.details)


class BlockingBackend(RecommendationsServicer):
    """The same idea for a blocking server: answers at once, records what it saw."""

    def __init__(self, script: Sequence[Step] = ()) -> None:
        self.script = list(script)
        self.calls: list[Seen] = []

    def _see(self, context: Any) -> Step:
        deadline = microcall.current_deadline()
        priority = microcall.current_priority()
        self.calls.append(
            Seen(
                remaining=context.time_remaining(),
                metadata=dict(context.invocation_metadata() or ()),
                deadline=None if deadline is None else deadline.remaining(),
                priority=None if priority is None else priority.value,
            )
        )
        return self.script.pop(0) if self.script else Step()

    def Recommend(self, request: RecommendationRequest, context: Any) -> RecommendationResponse:
        step = self._see(context)
        if step.delay:
            import time

            time.sleep(step.delay)
        if step.code is not None:
            if step.trailing:
                context.set_trailing_metadata(step.trailing)
            context.abort(step.code, step.details)
        number = len(self.calls)
        return RecommendationResponse(
            recommendations=[BookRecommendation(id=number, title=f"call {number}")]
        )

    def RecommendStream(self, request: RecommendationRequest, context: Any) -> Iterator[Any]:
        step = self._see(context)
        for index in range(request.max_results):
            if step.messages is not None and index == step.messages and step.code is not None:
                context.abort(step.code, step.details)
            yield BookRecommendation(id=index, title=f"book {index}")


ServeGrpc = Callable[..., Awaitable[str]]


@pytest.fixture
async def serve_grpc() -> AsyncIterator[ServeGrpc]:
    """``target = await serve_grpc(servicer, interceptors=[...])``: grpc.aio on 127.0.0.1:0."""
    servers: list[grpc.aio.Server] = []

    async def start(servicer: RecommendationsServicer, *, interceptors: Sequence[Any] = ()) -> str:
        server = grpc.aio.server(interceptors=list(interceptors))
        add_RecommendationsServicer_to_server(servicer, server)
        port = server.add_insecure_port("127.0.0.1:0")
        await server.start()
        servers.append(server)
        return f"127.0.0.1:{port}"

    yield start
    for server in servers:
        await server.stop(None)


ServeBlocking = Callable[..., str]


@pytest.fixture
def serve_blocking_grpc() -> Iterator[ServeBlocking]:
    """``target = serve_blocking_grpc(servicer, interceptors=[...])``: a thread-pool grpc server."""
    servers: list[grpc.Server] = []

    def start(servicer: RecommendationsServicer, *, interceptors: Sequence[Any] = ()) -> str:
        server = grpc.server(futures.ThreadPoolExecutor(max_workers=8), interceptors=interceptors)
        add_RecommendationsServicer_to_server(servicer, server)
        port = server.add_insecure_port("127.0.0.1:0")
        server.start()
        servers.append(server)
        return f"127.0.0.1:{port}"

    yield start
    for server in servers:
        server.stop(None).wait(10)


@pytest.fixture
def refused_target() -> str:
    """A loopback address where nothing listens: connections are refused at once."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    return f"127.0.0.1:{port}"
