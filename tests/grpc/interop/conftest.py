"""grpc.testing's TestService for the interop cases: generated at import, served on 127.0.0.1:0.

The code is generated from test_service.proto with grpcio-tools (a dev
dependency) into a temporary directory, so nothing generated is committed
and nothing of it reaches the package. The servers implement what grpc's
interop server does for the cases in test_interop.py, behind microcall's
server interceptors (UnimplementedCall is left as generated: it answers
UNIMPLEMENTED).
"""

from __future__ import annotations

import asyncio
import importlib
import sys
import tempfile
import time
from collections.abc import AsyncIterator, Iterator
from concurrent import futures
from pathlib import Path
from typing import Any

import grpc
import grpc.aio
import pytest
from grpc_tools import protoc

from microcall.grpc import AsyncServerInterceptor, ServerInterceptor

_OUT = tempfile.mkdtemp(prefix="microcall-interop-")
_PROTO = Path(__file__).with_name("test_service.proto")
if protoc.main(
    [
        "protoc",
        f"-I{_PROTO.parent}",
        f"--python_out={_OUT}",
        f"--grpc_python_out={_OUT}",
        str(_PROTO),
    ]
):
    raise RuntimeError(f"protoc failed on {_PROTO}")
sys.path.insert(0, _OUT)
pb: Any = importlib.import_module("test_service_pb2")
pb_grpc: Any = importlib.import_module("test_service_pb2_grpc")

INITIAL_ECHO = "x-grpc-test-echo-initial"
TRAILING_ECHO = "x-grpc-test-echo-trailing-bin"


def _payload(size: int) -> Any:
    return pb.Payload(body=b"\0" * size)


def _echo_metadata(context: Any) -> tuple[tuple[tuple[str, Any], ...], tuple[tuple[str, Any], ...]]:
    metadata = dict(context.invocation_metadata() or ())
    initial = tuple((k, metadata[k]) for k in (INITIAL_ECHO,) if k in metadata)
    trailing = tuple((k, metadata[k]) for k in (TRAILING_ECHO,) if k in metadata)
    return initial, trailing


class AsyncTestService(pb_grpc.TestServiceServicer):  # type: ignore[misc]
    """grpc's interop server, as far as the cases go, for grpc.aio."""

    async def EmptyCall(self, request: Any, context: Any) -> Any:
        return pb.Empty()

    async def UnaryCall(self, request: Any, context: Any) -> Any:
        initial, trailing = _echo_metadata(context)
        if initial:
            await context.send_initial_metadata(initial)
        if trailing:
            context.set_trailing_metadata(trailing)
        status = request.response_status
        if status.code:
            await context.abort(grpc.StatusCode(_code(status.code)), status.message)
        return pb.SimpleResponse(payload=_payload(request.response_size))

    async def StreamingOutputCall(self, request: Any, context: Any) -> AsyncIterator[Any]:
        for parameters in request.response_parameters:
            await asyncio.sleep(parameters.interval_us / 1e6)
            yield pb.StreamingOutputCallResponse(payload=_payload(parameters.size))

    async def StreamingInputCall(self, request_iterator: Any, context: Any) -> Any:
        size = 0
        async for request in request_iterator:
            size += len(request.payload.body)
        return pb.StreamingInputCallResponse(aggregated_payload_size=size)

    async def FullDuplexCall(self, request_iterator: Any, context: Any) -> AsyncIterator[Any]:
        async for request in request_iterator:
            for parameters in request.response_parameters:
                await asyncio.sleep(parameters.interval_us / 1e6)
                yield pb.StreamingOutputCallResponse(payload=_payload(parameters.size))


class BlockingTestService(pb_grpc.TestServiceServicer):  # type: ignore[misc]
    """The same for grpc's blocking server."""

    def EmptyCall(self, request: Any, context: Any) -> Any:
        return pb.Empty()

    def UnaryCall(self, request: Any, context: Any) -> Any:
        initial, trailing = _echo_metadata(context)
        if initial:
            context.send_initial_metadata(initial)
        if trailing:
            context.set_trailing_metadata(trailing)
        status = request.response_status
        if status.code:
            context.abort(grpc.StatusCode(_code(status.code)), status.message)
        return pb.SimpleResponse(payload=_payload(request.response_size))

    def StreamingOutputCall(self, request: Any, context: Any) -> Iterator[Any]:
        for parameters in request.response_parameters:
            time.sleep(parameters.interval_us / 1e6)
            yield pb.StreamingOutputCallResponse(payload=_payload(parameters.size))

    def StreamingInputCall(self, request_iterator: Any, context: Any) -> Any:
        size = sum(len(request.payload.body) for request in request_iterator)
        return pb.StreamingInputCallResponse(aggregated_payload_size=size)

    def FullDuplexCall(self, request_iterator: Any, context: Any) -> Iterator[Any]:
        for request in request_iterator:
            for parameters in request.response_parameters:
                time.sleep(parameters.interval_us / 1e6)
                yield pb.StreamingOutputCallResponse(payload=_payload(parameters.size))


def _code(number: int) -> tuple[int, str]:
    return next(code.value for code in grpc.StatusCode if code.value[0] == number)


@pytest.fixture
async def aio_target() -> AsyncIterator[str]:
    """A grpc.aio TestService behind microcall's AsyncServerInterceptor."""
    server = grpc.aio.server(interceptors=[AsyncServerInterceptor()])
    pb_grpc.add_TestServiceServicer_to_server(AsyncTestService(), server)
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    yield f"127.0.0.1:{port}"
    await server.stop(None)


@pytest.fixture
def blocking_target() -> Iterator[str]:
    """A blocking grpc TestService behind microcall's ServerInterceptor."""
    server = grpc.server(
        futures.ThreadPoolExecutor(max_workers=8), interceptors=[ServerInterceptor()]
    )
    pb_grpc.add_TestServiceServicer_to_server(BlockingTestService(), server)
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    yield f"127.0.0.1:{port}"
    server.stop(None).wait(10)
