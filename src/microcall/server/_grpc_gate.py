"""The gRPC side of the server gate: admit an incoming call, or refuse it before its handler runs.

The decisions are the HTTP middleware's (:mod:`microcall.server._gate`):
the same :class:`~microcall.server.ServerOptions`, trust rules, priority
limiter and counters. Only the inputs and the refusals differ:

* the caller's deadline is grpc's own (``grpc-timeout``, read back as
  ``context.time_remaining()``). A caller that set none gets a remaining
  time of None from grpc.aio and about 9.2e18 seconds from the blocking
  server; both mean *no deadline*, so the server's default (or the method's
  ``@default_timeout``) applies, as for an HTTP request without the header;
* the priority is the metadata ``x-request-priority``;
* an expired call is refused with DEADLINE_EXCEEDED (no client retries it),
  a shed one with RESOURCE_EXHAUSTED and ``grpc-retry-pushback-ms`` (the
  limiter's Retry-After), a malformed priority in strict mode with
  INVALID_ARGUMENT.
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Sequence
from dataclasses import dataclass, replace
from functools import partial
from typing import Any
from urllib.parse import unquote

import grpc

from microcall._wire import MAX_HEADER_TIMEOUT, PRIORITY_METADATA, PUSHBACK_METADATA, pushback_text
from microcall.priority import Priority
from microcall.server._admission import Admission
from microcall.server._config import ServerOptions
from microcall.server._gate import Gate, GateReadings, Refusal
from microcall.server._grpc_watch import unknown_method
from microcall.server._route_timeout import route_timeout_of
from microcall.server._stats import ServerStats
from microcall.server._trust import Caller

# A load balancer's health probe must see the server as it is: never shed,
# never refused, never given a deadline (a Watch stream lasts as long as the
# server). Health checks pass through the interceptors untouched by default.
DEFAULT_EXEMPT = frozenset({"grpc.health.v1.Health"})

# Handlers are looked up per call; their wrapped twins are kept up to this
# many (a generic handler that made a new handler object per call would
# otherwise grow the cache without end: past it, wrapping is per call).
MAX_CACHED_HANDLERS = 4096


@dataclass(frozen=True, slots=True)
class RpcRefusal:
    """The status a refused call ends with, instead of running its handler.

    ``kind`` says why (``"expired"``, ``"shed"``, ``"malformed"``) and
    ``priority`` at which priority, for observers to count.
    """

    code: grpc.StatusCode
    details: str
    trailing_metadata: tuple[tuple[str, str], ...] = ()
    kind: str = ""
    priority: Priority | None = None


class RpcGate(GateReadings):
    """Admission for one interceptor: owns the gate (options, limiter, stats)."""

    __slots__ = ("_expired", "_gate", "_malformed", "_shed")
    _gate: Gate

    def __init__(self, options: ServerOptions | None, stats: ServerStats | None) -> None:
        self._gate = gate = Gate(options, stats=stats)
        shedding = gate.options.shedding
        pushback_ms = pushback_text(shedding.retry_after if shedding is not None else 1)
        self._expired = RpcRefusal(
            grpc.StatusCode.DEADLINE_EXCEEDED,
            "deadline expired: nobody is waiting for this answer",
            kind="expired",
        )
        self._shed = RpcRefusal(
            grpc.StatusCode.RESOURCE_EXHAUSTED,
            "overloaded: try again later or elsewhere",
            ((PUSHBACK_METADATA, pushback_ms),),
            kind="shed",
        )
        self._malformed = RpcRefusal(
            grpc.StatusCode.INVALID_ARGUMENT,
            f"malformed {PRIORITY_METADATA} metadata",
            kind="malformed",
        )

    @property
    def options(self) -> ServerOptions:
        return self._gate.options

    @property
    def expired(self) -> RpcRefusal:
        return self._expired

    def admit(self, context: Any, route_timeout: float | None) -> Admission | RpcRefusal:
        """Admit the call whose servicer context is ``context``, or say how to refuse it."""
        remaining = context.time_remaining()
        timeouts: Sequence[str] = ()
        if remaining is not None and remaining <= MAX_HEADER_TIMEOUT:
            timeouts = (f"{max(remaining, 0.0):.6f}",)
        metadata = context.invocation_metadata() or ()
        priorities = [value for key, value in metadata if key == PRIORITY_METADATA]
        outcome = self._gate.admit(
            timeouts, priorities, partial(_caller, context, metadata), route_timeout
        )
        if isinstance(outcome, Refusal):
            # Told apart by their fixed bodies: the expired status is the
            # operator's choice and may equal another refusal's.
            if outcome.body == self._gate.expired_refusal.body:
                refusal = self._expired
            else:
                refusal = self._shed if outcome.status == 503 else self._malformed
            if outcome.priority is not None:
                refusal = replace(refusal, priority=outcome.priority)
            return refusal
        return outcome


def route_timeout(behavior: Callable[..., Any]) -> float | None:
    """The method's ``@microcall.server.default_timeout``, if it has one."""
    return route_timeout_of(behavior)


def _caller(context: Any, metadata: Sequence[tuple[str, Any]]) -> Caller:
    def header(name: str) -> str | None:
        wanted = name.lower()
        found = [value for key, value in metadata if key == wanted]
        return found[0] if len(found) == 1 and isinstance(found[0], str) else None

    return Caller(peer_address(context.peer()), header, context)


def peer_address(peer: str | None) -> str | None:
    """The IP address in a grpc peer string (``ipv4:10.0.0.7:5000``, ``ipv6:[::1]:5000``)."""
    if not peer:
        return None
    scheme, _, rest = peer.partition(":")
    if scheme not in ("ipv4", "ipv6"):
        return None  # a Unix socket or an in-process transport: no address to trust
    host, _, _ = unquote(rest).rpartition(":")
    return host.strip("[]") or None


class HandlerCache:
    """Wrapped handlers, keyed by the method and the handler grpc found for it.

    The method is part of the key because a wrapped handler reports it to the
    observers, and a generic handler may serve several methods with one object.
    """

    __slots__ = ("_wrapped",)

    def __init__(self) -> None:
        self._wrapped: dict[tuple[int, str], tuple[object, object]] = {}

    def get(self, handler: object, method: str) -> object | None:
        found = self._wrapped.get((id(handler), method))
        if found is not None and found[0] is handler:
            return found[1]
        return None

    def put(self, handler: object, method: str, wrapped: object) -> None:
        if len(self._wrapped) < MAX_CACHED_HANDLERS:
            # Holding the handler keeps its id from being reused by another.
            self._wrapped[(id(handler), method)] = (handler, wrapped)


def exempt_names(given: Collection[str]) -> frozenset[str]:
    """Method (``package.Service/Method``) and service names, without a leading slash."""
    names = (given,) if isinstance(given, str) else tuple(given)
    return frozenset(name.lstrip("/") for name in names)


def is_exempt(exempt: frozenset[str], method: str) -> bool:
    name = method.lstrip("/")
    return name in exempt or name.rpartition("/")[0] in exempt


def behavior_of(handler: Any) -> tuple[Callable[..., Any], Callable[..., Any]]:
    """The handler's function and the grpc factory that makes a handler of the same kind."""
    if handler.unary_unary is not None:
        return handler.unary_unary, grpc.unary_unary_rpc_method_handler
    if handler.unary_stream is not None:
        return handler.unary_stream, grpc.unary_stream_rpc_method_handler
    if handler.stream_unary is not None:
        return handler.stream_unary, grpc.stream_unary_rpc_method_handler
    return handler.stream_stream, grpc.stream_stream_rpc_method_handler


def unimplemented(behavior: Callable[..., Any]) -> bool:
    """True for a servicer method left as grpcio-tools generated it.

    The generated base class's methods set UNIMPLEMENTED and raise
    NotImplementedError; they are plain functions even on a grpc.aio server,
    where they are not a blocking handler to warn about. They live in the
    generated ``*_pb2_grpc`` module, a servicer's own methods never do.
    """
    function = getattr(behavior, "__func__", None)
    module = getattr(function, "__module__", None)
    return isinstance(module, str) and module.endswith("_pb2_grpc")


class InterceptorBase(GateReadings):
    """What the grpc.aio and the blocking interceptor share: gate, cache, exemptions.

    A subclass's ``intercept_service`` asks grpc for the handler (awaiting or
    not) and hands it to :meth:`_protected`; :meth:`_wrap` builds the
    protected handler, once per handler and method.
    """

    _gate: RpcGate

    def __init__(
        self,
        options: ServerOptions | None,
        stats: ServerStats | None,
        exempt: Collection[str],
    ) -> None:
        self._gate = RpcGate(options, stats)
        self._cache = HandlerCache()
        self._exempt = exempt_names(exempt)
        self._observers = self._gate.options.observers

    def _protected(
        self, handler: grpc.RpcMethodHandler[Any, Any] | None, details: grpc.HandlerCallDetails
    ) -> grpc.RpcMethodHandler[Any, Any] | None:
        method = details.method
        if handler is None or is_exempt(self._exempt, method):
            if handler is None and self._observers:
                unknown_method(self._observers, method, details.invocation_metadata)
            return handler
        wrapped = self._cache.get(handler, method)
        if wrapped is None:
            behavior, make = behavior_of(handler)
            if unimplemented(behavior):
                wrapped = self._unimplemented(handler, behavior, make, method)
            else:
                wrapped = self._wrap(handler, method)
            self._cache.put(handler, method, wrapped)
        return wrapped  # type: ignore[return-value]

    def _unimplemented(
        self, handler: Any, behavior: Callable[..., Any], make: Callable[..., Any], method: str
    ) -> Any:
        """A method the servicer left unimplemented: nothing to protect, grpc answers for it.

        It is not admitted (it holds no slot) and, for the observers, it is a
        call to a method the server does not have, as grpc says (UNIMPLEMENTED).
        """
        observers = self._observers
        if not observers:
            return handler

        def reported(request: Any, context: Any) -> Any:
            unknown_method(observers, method, context.invocation_metadata(), known=True)
            return behavior(request, context)

        return make(
            reported,
            request_deserializer=handler.request_deserializer,
            response_serializer=handler.response_serializer,
        )

    def _wrap(self, handler: Any, method: str) -> Any:
        raise NotImplementedError
