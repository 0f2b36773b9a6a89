"""microcall for gRPC: deadlines, priority, retries, hedging and breakers on grpcio's stubs.

Client side, a channel wrapper the generated stub takes unchanged::

    from microcall.grpc import AsyncChannel, ChannelOptions

    channel = AsyncChannel("recommendations:50051",
                           ChannelOptions(strategy=microcall.hedged(),
                                          idempotent={"bookstore.Recommendations"}))
    stub = RecommendationsStub(channel)
    reply = await stub.Recommend(request)    # timeout = the deadline left in this context

:class:`Channel` is the same for the blocking API. ``AsyncChannel(TargetDiscovery(
target="recommendations:50051"))`` balances over the addresses of a DNS name,
re-resolved periodically (a Kubernetes headless Service). Server side, an
interceptor restores the caller's deadline and priority into microcall's
context, refuses expired calls and sheds load by priority::

    server = grpc.aio.server(interceptors=[AsyncServerInterceptor(ServerOptions())])

See docs/grpc.md for the whole story.
"""

from microcall._wire import PRIORITY_METADATA
from microcall.grpc._adapter import ObserverAdapter
from microcall.grpc._aio import AsyncChannel
from microcall.grpc._aio_streams import AsyncStreamCall, StreamingCallable
from microcall.grpc._aio_unary import UnaryUnary, UnaryUnaryCall
from microcall.grpc._discovery import TargetDiscovery
from microcall.grpc._errors import AttemptTimeout, CircuitOpen, DeadlineExceeded, GrpcStatusError
from microcall.grpc._observe import RpcAttempt, RpcCallScope, RpcMethod, RpcObserver
from microcall.grpc._options import ChannelOptions
from microcall.grpc._status import (
    DO_NOT_RETRY,
    PUSHBACK_METADATA,
    RETRYABLE_CODES,
    classify,
    parse_pushback,
)
from microcall.grpc._sync import BlockingUnaryUnary, Channel
from microcall.grpc._sync_streams import BlockingStreamCall, BlockingStreaming, CallFuture
from microcall.grpc._targets import Targets

# The server side lives with the other server adapters; kept importable from here.
from microcall.server.grpc_aio import AsyncServerInterceptor
from microcall.server.grpc_blocking import ServerInterceptor

__all__ = [
    "DO_NOT_RETRY",
    "PRIORITY_METADATA",
    "PUSHBACK_METADATA",
    "RETRYABLE_CODES",
    "AsyncChannel",
    "AsyncServerInterceptor",
    "AsyncStreamCall",
    "AttemptTimeout",
    "BlockingStreamCall",
    "BlockingStreaming",
    "BlockingUnaryUnary",
    "CallFuture",
    "Channel",
    "ChannelOptions",
    "CircuitOpen",
    "DeadlineExceeded",
    "GrpcStatusError",
    "ObserverAdapter",
    "RpcAttempt",
    "RpcCallScope",
    "RpcMethod",
    "RpcObserver",
    "ServerInterceptor",
    "StreamingCallable",
    "TargetDiscovery",
    "Targets",
    "UnaryUnary",
    "UnaryUnaryCall",
    "classify",
    "parse_pushback",
]
