"""grpc's interoperability test cases, on grpcio's channels and on microcall's: they must agree.

The cases are grpc's (doc/interop-test-descriptions.md in grpc/grpc), client
side, each reduced to what it observes (messages, sizes, status code and
details, metadata). Each runs on a plain grpcio channel, the reference, and on
microcall's channel of the same kind: AsyncChannel against a grpc.aio server,
Channel against a blocking grpc server, both behind microcall's interceptors.
Errors are compared through grpc's own API (``except grpc.RpcError as e:
e.code(), e.details()``), which code written for grpcio uses.
"""

from __future__ import annotations

import asyncio
import queue
from collections.abc import Iterator
from typing import Any

import grpc
import grpc.aio
import pytest

from microcall.grpc import AsyncChannel, Channel, ChannelOptions
from tests.grpc.interop.conftest import INITIAL_ECHO, TRAILING_ECHO, pb, pb_grpc

SPECIAL_MESSAGE = "\t\ntest with whitespace\r\nand Unicode BMP \u263a and non-BMP \U0001f608\t\n"
OPTIONS = ChannelOptions(timeout=10.0)

Observation = tuple[Any, ...]


def _failure(error: grpc.RpcError) -> Observation:
    failed: Any = error
    return ("error", failed.code(), failed.details())


def _agree(got: Observation, expected: Observation, case: str) -> None:
    if case == "timeout_on_sleeping_server":
        # The case checks the status only, as grpc's does: its details are
        # whoever enforced the deadline's (microcall's floor refuses a 1 ms
        # call before sending it, grpcio sends it and the server refuses it).
        assert got[:2] == expected[:2] == ("error", grpc.StatusCode.DEADLINE_EXCEEDED)
    else:
        assert got == expected


def _output_request(*sizes: int) -> Any:
    return pb.StreamingOutputCallRequest(
        response_parameters=[pb.ResponseParameters(size=size) for size in sizes],
        payload=pb.Payload(body=b"\0" * 8),
    )


def _sizes(responses: Any) -> list[int]:
    return [len(response.payload.body) for response in responses]


# ------------------------------------------------------------ grpc.aio


async def _aio(stub: Any, unimplemented: Any, case: str) -> Observation:
    try:
        if case == "empty_unary":
            return ("ok", await stub.EmptyCall(pb.Empty()))
        if case == "large_unary":
            request = pb.SimpleRequest(
                response_size=314159, payload=pb.Payload(body=b"\0" * 271828)
            )
            return ("ok", len((await stub.UnaryCall(request)).payload.body))
        if case == "client_streaming":
            sizes = (27182, 8, 1828, 45904)
            requests = [
                pb.StreamingInputCallRequest(payload=pb.Payload(body=b"\0" * n)) for n in sizes
            ]
            return ("ok", (await stub.StreamingInputCall(iter(requests))).aggregated_payload_size)
        if case == "server_streaming":
            call = stub.StreamingOutputCall(_output_request(31415, 9, 2653, 58979))
            return ("ok", _sizes([message async for message in call]), await call.code())
        if case == "ping_pong":
            call = stub.FullDuplexCall()
            got = []
            for size in (31415, 9, 2653, 58979):
                await call.write(_output_request(size))
                got.append(len((await call.read()).payload.body))
            await call.done_writing()
            return ("ok", got, await call.read() is grpc.aio.EOF, await call.code())
        if case == "empty_stream":
            call = stub.FullDuplexCall()
            await call.done_writing()
            return ("ok", [message async for message in call], await call.code())
        if case == "cancel_after_begin":
            call = stub.StreamingInputCall()
            call.cancel()
            with pytest.raises(asyncio.CancelledError):
                await call
            return ("cancelled", await call.code(), call.cancelled())
        if case == "cancel_after_first_response":
            call = stub.FullDuplexCall()
            await call.write(_output_request(31415))
            first = len((await call.read()).payload.body)
            call.cancel()
            return ("cancelled", first, await call.code(), call.cancelled())
        if case == "timeout_on_sleeping_server":
            call = stub.FullDuplexCall(timeout=0.001)
            await call.write(_output_request(27182))
            await call.read()
            return ("ok",)
        if case == "custom_metadata":
            metadata = (
                (INITIAL_ECHO, "test_initial_metadata_value"),
                (TRAILING_ECHO, b"\x0a\x0b" * 3),
            )
            request = pb.SimpleRequest(
                response_size=314159, payload=pb.Payload(body=b"\0" * 271828)
            )
            call = stub.UnaryCall(request, metadata=metadata)
            size = len((await call).payload.body)
            initial = dict(await call.initial_metadata())[INITIAL_ECHO]
            trailing = dict(await call.trailing_metadata())[TRAILING_ECHO]
            return ("ok", size, initial, trailing)
        if case in ("status_code_and_message", "special_status_message"):
            message = (
                "test status message" if case == "status_code_and_message" else SPECIAL_MESSAGE
            )
            status = pb.EchoStatus(code=2, message=message)
            await stub.UnaryCall(pb.SimpleRequest(response_status=status))
            return ("ok",)
        if case == "unimplemented_method":
            await stub.UnimplementedCall(pb.Empty())
            return ("ok",)
        if case == "unimplemented_service":
            await unimplemented.UnimplementedCall(pb.Empty())
            return ("ok",)
    except grpc.RpcError as error:
        return _failure(error)
    raise AssertionError(f"no such case: {case}")


CASES = [
    "empty_unary",
    "large_unary",
    "client_streaming",
    "server_streaming",
    "ping_pong",
    "empty_stream",
    "cancel_after_begin",
    "cancel_after_first_response",
    "timeout_on_sleeping_server",
    "custom_metadata",
    "status_code_and_message",
    "special_status_message",
    "unimplemented_method",
    "unimplemented_service",
]


async def _run_aio(channel: Any, case: str) -> Observation:
    stubs = pb_grpc.TestServiceStub(channel), pb_grpc.UnimplementedServiceStub(channel)
    return await asyncio.wait_for(_aio(*stubs, case), 20)


@pytest.mark.parametrize("case", CASES)
async def test_async_channel_agrees_with_grpc_aio(aio_target: str, case: str) -> None:
    async with grpc.aio.insecure_channel(aio_target) as plain:
        expected = await _run_aio(plain, case)
    async with AsyncChannel(aio_target, OPTIONS) as channel:
        got = await _run_aio(channel, case)
    _agree(got, expected, case)


# ------------------------------------------------------------ blocking


class _Requests:
    """A request stream fed one message at a time, as ping_pong needs."""

    _END = object()

    def __init__(self) -> None:
        self._queue: queue.SimpleQueue[Any] = queue.SimpleQueue()

    def send(self, message: Any) -> None:
        self._queue.put(message)

    def close(self) -> None:
        self._queue.put(self._END)

    def __iter__(self) -> Iterator[Any]:
        while (message := self._queue.get(timeout=20)) is not self._END:
            yield message


def _blocking(stub: Any, unimplemented: Any, case: str) -> Observation:
    try:
        if case == "empty_unary":
            return ("ok", stub.EmptyCall(pb.Empty()))
        if case == "large_unary":
            request = pb.SimpleRequest(
                response_size=314159, payload=pb.Payload(body=b"\0" * 271828)
            )
            return ("ok", len(stub.UnaryCall(request).payload.body))
        if case == "client_streaming":
            sizes = (27182, 8, 1828, 45904)
            requests = [
                pb.StreamingInputCallRequest(payload=pb.Payload(body=b"\0" * n)) for n in sizes
            ]
            return ("ok", stub.StreamingInputCall(iter(requests)).aggregated_payload_size)
        if case == "server_streaming":
            call = stub.StreamingOutputCall(_output_request(31415, 9, 2653, 58979))
            return ("ok", _sizes(call), call.code())
        if case == "ping_pong":
            requests = _Requests()
            call = stub.FullDuplexCall(iter(requests))
            got = []
            for size in (31415, 9, 2653, 58979):
                requests.send(_output_request(size))
                got.append(len(next(call).payload.body))
            requests.close()
            return ("ok", got, list(call), call.code())
        if case == "empty_stream":
            call = stub.FullDuplexCall(iter(()))
            return ("ok", list(call), call.code())
        if case == "cancel_after_begin":
            requests = _Requests()
            future = stub.StreamingInputCall.future(iter(requests))
            cancelled = future.cancel()
            requests.close()
            return ("cancelled", cancelled, future.code(), future.cancelled())
        if case == "cancel_after_first_response":
            requests = _Requests()
            call = stub.FullDuplexCall(iter(requests))
            requests.send(_output_request(31415))
            first = len(next(call).payload.body)
            call.cancel()
            requests.close()
            return ("cancelled", first, call.code())
        if case == "timeout_on_sleeping_server":
            requests = _Requests()
            call = stub.FullDuplexCall(iter(requests), timeout=0.001)
            requests.send(_output_request(27182))
            requests.close()
            next(call)
            return ("ok",)
        if case == "custom_metadata":
            metadata = (
                (INITIAL_ECHO, "test_initial_metadata_value"),
                (TRAILING_ECHO, b"\x0a\x0b" * 3),
            )
            request = pb.SimpleRequest(
                response_size=314159, payload=pb.Payload(body=b"\0" * 271828)
            )
            response, call = stub.UnaryCall.with_call(request, metadata=metadata)
            initial = dict(call.initial_metadata())[INITIAL_ECHO]
            trailing = dict(call.trailing_metadata())[TRAILING_ECHO]
            return ("ok", len(response.payload.body), initial, trailing)
        if case in ("status_code_and_message", "special_status_message"):
            message = (
                "test status message" if case == "status_code_and_message" else SPECIAL_MESSAGE
            )
            status = pb.EchoStatus(code=2, message=message)
            stub.UnaryCall(pb.SimpleRequest(response_status=status))
            return ("ok",)
        if case == "unimplemented_method":
            stub.UnimplementedCall(pb.Empty())
            return ("ok",)
        if case == "unimplemented_service":
            unimplemented.UnimplementedCall(pb.Empty())
            return ("ok",)
    except grpc.RpcError as error:
        return _failure(error)
    raise AssertionError(f"no such case: {case}")


def _run_blocking(channel: Any, case: str) -> Observation:
    return _blocking(
        pb_grpc.TestServiceStub(channel), pb_grpc.UnimplementedServiceStub(channel), case
    )


@pytest.mark.parametrize("case", CASES)
def test_channel_agrees_with_grpc(blocking_target: str, case: str) -> None:
    with grpc.insecure_channel(blocking_target) as plain:
        expected = _run_blocking(plain, case)
    with Channel(blocking_target, OPTIONS) as channel:
        got = _run_blocking(channel, case)
    _agree(got, expected, case)
