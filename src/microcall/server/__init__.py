"""Server side of microcall's wire protocol: deadlines and priority in, expired work and overload out.

A middleware for each kind of Python web server restores the caller's
deadline (``X-Request-Timeout``) and priority (``X-Request-Priority``) into
microcall's call context, so every call a handler makes inherits them; it
answers a request whose deadline has already passed without running the
handler, and, with shedding on, refuses low priority first when the server
is full.

* :mod:`microcall.server.aiohttp`: ``AiohttpMiddleware``
* :mod:`microcall.server.asgi`: ``ASGIMiddleware`` (FastAPI, Starlette, ...)
* :mod:`microcall.server.wsgi`: ``WSGIMiddleware`` (Flask, Django, ...)
* :mod:`microcall.server.grpc_aio`: ``AsyncServerInterceptor`` (grpc.aio servers)
* :mod:`microcall.server.grpc_blocking`: ``ServerInterceptor`` (blocking grpc servers)
  (both also importable from :mod:`microcall.grpc`)

They share :class:`ServerOptions`. See docs/server.md for the whole story.
"""

from microcall._wire import MALFORMED, parse_priority, parse_timeout
from microcall.server._config import ServerOptions
from microcall.server._route_timeout import default_timeout
from microcall.server._stats import ServerStats
from microcall.server._trust import Caller, TrustPredicate, trust_all, trust_header, trust_networks
from microcall.server.aimd import AIMDLimit
from microcall.server.gradient import GradientLimit
from microcall.server.limits import ConcurrencyLimit, LimitEstimator, StaticLimit
from microcall.server.shedding import Permit, PriorityLimiter, PriorityShares, Shedding

__all__ = [
    "MALFORMED",
    "AIMDLimit",
    "Caller",
    "ConcurrencyLimit",
    "GradientLimit",
    "LimitEstimator",
    "Permit",
    "PriorityLimiter",
    "PriorityShares",
    "ServerOptions",
    "ServerStats",
    "Shedding",
    "StaticLimit",
    "TrustPredicate",
    "default_timeout",
    "parse_priority",
    "parse_timeout",
    "trust_all",
    "trust_header",
    "trust_networks",
]
