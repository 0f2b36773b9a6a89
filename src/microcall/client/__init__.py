"""The three front doors over one engine, and what they share: cookies, auth, event hooks."""

from microcall.client._async import AsyncClient
from microcall.client._auth import Auth, BasicAuth, BearerAuth
from microcall.client._event_hooks import EventHooks, OutgoingRequest, RequestHook, ResponseHook
from microcall.client._futures import FuturesClient
from microcall.client._options import CallOptions, ClientOptions
from microcall.client._stream import StreamResponse
from microcall.client._sync import Client

__all__ = [
    "AsyncClient",
    "Auth",
    "BasicAuth",
    "BearerAuth",
    "CallOptions",
    "Client",
    "ClientOptions",
    "EventHooks",
    "FuturesClient",
    "OutgoingRequest",
    "RequestHook",
    "ResponseHook",
    "StreamResponse",
]
