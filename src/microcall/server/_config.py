"""ServerOptions: how a server middleware treats inbound deadlines, priorities and load."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from microcall._clock import MONOTONIC, Clock
from microcall._durations import Seconds, to_seconds
from microcall._validate import flag, items, whole
from microcall.errors import ConfigurationError
from microcall.observe.hooks import ServerObserver
from microcall.priority import Priority
from microcall.server._trust import TrustPredicate
from microcall.server.shedding import Shedding

# The same as a microcall client's default deadline: a request nobody gave a
# deadline to gets as long as a call nobody gave one to would wait for it.
DEFAULT_SERVER_TIMEOUT = 10.0

# Below this much time left, a request cannot do useful work; the same floor
# under which a microcall (or aio-request) client does not even send.
DEFAULT_FLOOR = 0.005

# aio-request answers an expired request with 408 too, so fleets mixing the
# two libraries see one status for it; X-Do-Not-Retry stops either client
# from retrying it (see docs/server.md).
DEFAULT_EXPIRED_STATUS = 408


@dataclass(frozen=True, slots=True, kw_only=True)
class ServerOptions:
    """Settings shared by the aiohttp, ASGI and WSGI middleware.

    default_timeout     deadline of a request without ``X-Request-Timeout`` (a route may
                        override it with ``@microcall.server.default_timeout(...)``)
    max_timeout         cap on any incoming deadline (None: no cap)
    floor               a request arriving with less than this left is refused at once
    default_priority    priority of a request without ``X-Request-Priority``
    trust               who may ask for high priority (default: nobody; see ``_trust``)
    strict              answer 400 to a malformed header instead of ignoring it
    cancel_on_deadline  cancel an async handler when its deadline passes (off by default)
    shedding            priority load shedding (None: no concurrency limit)
    expired_status      status for a request refused as expired (default 408)
    clock               the clock deadlines and the limiter read (tests pass a FakeClock)
    observers           metrics, tracing and logging hooks (``microcall.observe``), told of
                        every request, refused ones included

    ::

        ServerOptions(default_timeout=5.0, max_timeout=30.0,
                      trust=trust_networks("10.0.0.0/8"),
                      shedding=Shedding(limit=GradientLimit()))
    """

    default_timeout: Seconds = DEFAULT_SERVER_TIMEOUT
    max_timeout: Seconds | None = None
    floor: Seconds = DEFAULT_FLOOR
    default_priority: Priority | str = Priority.NORMAL
    trust: TrustPredicate | None = None
    strict: bool = False
    cancel_on_deadline: bool = False
    shedding: Shedding | None = None
    expired_status: int = DEFAULT_EXPIRED_STATUS
    clock: Clock = MONOTONIC
    observers: Sequence[ServerObserver] = ()

    def __post_init__(self) -> None:
        floor = to_seconds(self.floor, name="floor", allow_zero=True)
        default = to_seconds(self.default_timeout, name="default_timeout")
        cap = None if self.max_timeout is None else to_seconds(self.max_timeout, name="max_timeout")
        for name, value in (("default_timeout", default), ("max_timeout", cap)):
            if value is not None and value <= floor:
                raise ConfigurationError(f"{name} ({value} s) must exceed floor ({floor} s)")
        set_field = object.__setattr__
        set_field(self, "floor", floor)
        set_field(self, "default_timeout", default)
        set_field(self, "max_timeout", cap)
        set_field(self, "default_priority", Priority.parse(self.default_priority))
        if self.trust is not None and not callable(self.trust):
            raise ConfigurationError(f"trust must be a predicate on a Caller, got {self.trust!r}")
        if self.shedding is not None and not isinstance(self.shedding, Shedding):
            raise ConfigurationError(f"shedding must be a Shedding, got {self.shedding!r}")
        flag("strict", self.strict)
        flag("cancel_on_deadline", self.cancel_on_deadline)
        whole("expired_status", self.expired_status, minimum=400, maximum=599, what="a status")
        if not callable(getattr(self.clock, "now", None)):
            raise ConfigurationError(f"clock must have a now() method, got {self.clock!r}")
        observers = items("observers", self.observers)
        for observer in observers:
            if not callable(getattr(observer, "request_started", None)):
                raise ConfigurationError(
                    f"observers must have a request_started() method, got {observer!r}"
                )
        set_field(self, "observers", observers)
