"""Metadata gRPC cannot carry is a UsageError before any attempt, on both channels.

Without the check grpc reports it as an INTERNAL status (a GrpcStatusError,
which a retry strategy would even retry), a raw ExecuteBatchError, a
TypeError or a UnicodeEncodeError, depending on the channel and the fault.
"""

from __future__ import annotations

from typing import Any

import pytest

from microcall import UsageError
from microcall.examples_pb.recommendations_pb2 import RecommendationRequest
from microcall.examples_pb.recommendations_pb2_grpc import RecommendationsStub
from microcall.grpc import AsyncChannel, Channel, ChannelOptions
from tests.grpc.conftest import Backend, BlockingBackend, ServeBlocking, ServeGrpc

REQUEST = RecommendationRequest(user_id=1, max_results=2)

BAD_METADATA: list[tuple[Any, str]] = [
    ([("X-Upper", "1")], "not lower-case"),
    ([("x space", "1")], "not lower-case"),
    ([("", "1")], "not lower-case"),
    ([(1, "1")], "not lower-case"),
    ([("x-count", 1)], "printable ASCII"),
    ([("x-none", None)], "printable ASCII"),
    ([("x-evil", "a\r\nb")], "printable ASCII"),
    ([("x-text", "é")], "printable ASCII"),
    ([("x-text", "\ud800")], "printable ASCII"),
    ([("x-raw", b"\x00")], "printable ASCII"),
    ([("x-blob-bin", "text")], "-bin key's value is bytes"),
    (["x"], r"\(key, value\) pairs"),
    ({"x-a": "1"}, r"sequence of \(key, value\) pairs"),
]
GOOD_METADATA = [("x-user", "7"), ("x-raw", b"ok"), ("x-blob-bin", b"\x00\xff")]


@pytest.mark.parametrize(("metadata", "message"), BAD_METADATA)
def test_blocking_channel_refuses_bad_metadata_before_sending(
    serve_blocking_grpc: ServeBlocking, metadata: Any, message: str
) -> None:
    backend = BlockingBackend()
    with Channel(serve_blocking_grpc(backend), ChannelOptions(timeout=5.0)) as channel:
        stub = RecommendationsStub(channel)
        with pytest.raises(UsageError, match=message):
            stub.Recommend(REQUEST, metadata=metadata)
        with pytest.raises(UsageError, match=message):
            list(stub.RecommendStream(REQUEST, metadata=metadata))
        assert backend.calls == []
        stub.Recommend(REQUEST, metadata=GOOD_METADATA)
    assert backend.calls[0].metadata["x-blob-bin"] == b"\x00\xff"


@pytest.mark.parametrize(("metadata", "message"), BAD_METADATA)
async def test_async_channel_refuses_bad_metadata_before_sending(
    serve_grpc: ServeGrpc, metadata: Any, message: str
) -> None:
    backend = Backend()
    async with AsyncChannel(await serve_grpc(backend), ChannelOptions(timeout=5.0)) as channel:
        stub = RecommendationsStub(channel)
        with pytest.raises(UsageError, match=message):
            await stub.Recommend(REQUEST, metadata=metadata)
        with pytest.raises(UsageError, match=message):
            [reply async for reply in stub.RecommendStream(REQUEST, metadata=metadata)]
        assert backend.calls == []
        await stub.Recommend(REQUEST, metadata=GOOD_METADATA)
    assert backend.calls[0].metadata["x-user"] == "7"
