"""microcall: fast, resilient calls between Python services.

Three front doors over one engine (``AsyncClient``, ``Client``,
``FuturesClient``); deadlines and priority that travel downstream; single,
retrying and hedged strategies chosen per client or per call, and for any
callable (``Resilience``, ``@resilient``).
"""

from microcall._attempt import Attempt, AttemptKind
from microcall._limits import Limits
from microcall._microrequests import init
from microcall._replicas import Discovery
from microcall._request import Request
from microcall._response import CacheStatus, Response
from microcall._sse import ServerSentEvent
from microcall._stream import AsyncStreamResponse
from microcall.cache import CachePolicy, ResponseCache
from microcall.client import (
    AsyncClient,
    Auth,
    BasicAuth,
    BearerAuth,
    CallOptions,
    Client,
    ClientOptions,
    EventHooks,
    FuturesClient,
    OutgoingRequest,
    RequestHook,
    ResponseHook,
    StreamResponse,
)
from microcall.context import (
    current_deadline,
    current_priority,
    deadline,
    priority,
    reset_deadline,
    reset_priority,
    set_deadline,
    set_priority,
)
from microcall.deadline import Deadline
from microcall.errors import (
    AttemptsExhausted,
    AttemptTimeout,
    AuthError,
    CallError,
    CircuitOpen,
    ClientClosed,
    ClientOverloaded,
    ConfigurationError,
    ConnectError,
    DeadlineExceeded,
    GrpcStatusError,
    HTTPStatusError,
    IdleTimeout,
    MicrocallError,
    ProtocolError,
    ProxyError,
    ReadError,
    RedirectError,
    RequestBodyError,
    ResponseTooLarge,
    ResponseValidationError,
    TransportError,
    UsageError,
)
from microcall.policy.backoff import Backoff
from microcall.policy.balancer import BalancerConfig
from microcall.policy.breaker import BreakerState, BreakerStateChange, CircuitBreakerConfig
from microcall.policy.budget import RetryBudget, RetryBudgetConfig
from microcall.policy.classify import Classifier, Verdict, default_classifier
from microcall.policy.ejection import Ejection, OutlierEjectionConfig
from microcall.policy.hedge_delay import LearnedDelayConfig
from microcall.policy.strategy import Hedged, Retry, SingleAttempt, Strategy, hedged, retry, single
from microcall.priority import Priority
from microcall.resilience import Resilience, resilient

__version__ = "0.1.0"

__all__ = [
    "AsyncClient",
    "AsyncStreamResponse",
    "Attempt",
    "AttemptKind",
    "AttemptTimeout",
    "AttemptsExhausted",
    "Auth",
    "AuthError",
    "Backoff",
    "BalancerConfig",
    "BasicAuth",
    "BearerAuth",
    "BreakerState",
    "BreakerStateChange",
    "CachePolicy",
    "CacheStatus",
    "CallError",
    "CallOptions",
    "CircuitBreakerConfig",
    "CircuitOpen",
    "Classifier",
    "Client",
    "ClientClosed",
    "ClientOptions",
    "ClientOverloaded",
    "ConfigurationError",
    "ConnectError",
    "Deadline",
    "DeadlineExceeded",
    "Discovery",
    "Ejection",
    "EventHooks",
    "FuturesClient",
    "GrpcStatusError",
    "HTTPStatusError",
    "Hedged",
    "IdleTimeout",
    "LearnedDelayConfig",
    "Limits",
    "MicrocallError",
    "OutgoingRequest",
    "OutlierEjectionConfig",
    "Priority",
    "ProtocolError",
    "ProxyError",
    "ReadError",
    "RedirectError",
    "Request",
    "RequestBodyError",
    "RequestHook",
    "Resilience",
    "Response",
    "ResponseCache",
    "ResponseHook",
    "ResponseTooLarge",
    "ResponseValidationError",
    "Retry",
    "RetryBudget",
    "RetryBudgetConfig",
    "ServerSentEvent",
    "SingleAttempt",
    "Strategy",
    "StreamResponse",
    "TransportError",
    "UsageError",
    "Verdict",
    "current_deadline",
    "current_priority",
    "deadline",
    "default_classifier",
    "hedged",
    "init",
    "priority",
    "reset_deadline",
    "reset_priority",
    "resilient",
    "retry",
    "set_deadline",
    "set_priority",
    "single",
]
