"""The three front doors over one engine."""

from microcall.client._async import AsyncClient
from microcall.client._futures import FuturesClient
from microcall.client._options import CallOptions, ClientOptions
from microcall.client._stream import StreamResponse
from microcall.client._sync import Client

__all__ = [
    "AsyncClient",
    "CallOptions",
    "Client",
    "ClientOptions",
    "FuturesClient",
    "StreamResponse",
]
